//! Issue 10, items 8-17: the CLI as a new user and a hostile input meet it.
//! One section per item; each test failed before its fix.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bgfuzz::failpoints::Site;
use bgfuzz::oracles::ViolationKind;
use bgfuzz::Variant;

const SEED_RACE: &str = "corpus/scripts/seed-race.scn";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bgfuzz"));
    c.args(args).current_dir(manifest_dir());
    c
}

fn bgfuzz(args: &[&str]) -> Output {
    cmd(args).output().expect("spawn bgfuzz")
}

/// Runs bgfuzz, killing it after `secs`: a hang is a failure, not a stuck
/// test run.
fn bgfuzz_within(args: &[&str], secs: u64) -> Output {
    let child = cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bgfuzz");
    wait_within(child, secs, args)
}

fn wait_within(mut child: Child, secs: u64, what: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bgfuzz {what:?} still running after {secs}s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally, not by a signal")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn seed_race() -> Vec<u8> {
    std::fs::read(manifest_dir().join(SEED_RACE)).unwrap()
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("mkfifo");
    assert!(st.success());
}

// ------------------------------------------------ 8: script or input by content

#[test]
fn item8_a_script_is_a_script_whatever_its_name() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["race.txt", "race.SCN", "race"] {
        let p = write(dir.path(), name, &seed_race());
        let o = bgfuzz(&["repro", s(&p), "--variant", "bug-ff1f8250"]);
        assert_eq!(code(&o), 1, "{name}: {}{}", out(&o), err(&o));
        assert!(out(&o).contains("read as a script"), "{name}: {}", out(&o));
        assert!(out(&o).contains("abort-enoent-outside-critical"));
        let o = bgfuzz(&["repro", s(&p), "--variant", "bug-ff1f8250", "--json"]);
        assert_eq!(code(&o), 1, "{name} --json: {}", out(&o));
        assert!(err(&o).contains("read as a script"), "{}", err(&o));
        // minimize reads it the same way.
        let o = bgfuzz(&["minimize", s(&p), "--variant", "bug-ff1f8250"]);
        assert_eq!(code(&o), 0, "{name}: {}", err(&o));
        assert!(err(&o).contains("read as a script"), "{}", err(&o));
    }
}

#[test]
fn item8_flags_force_the_reading_and_bytes_are_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "race.txt", &seed_race());
    let o = bgfuzz(&["repro", s(&p), "--artifact"]);
    assert!(out(&o).contains("read as a libFuzzer input"), "{}", out(&o));
    assert!(out(&o).contains("--artifact"), "{}", out(&o));
    // Fuzzer bytes, whatever the name, are decoded.
    let p = write(
        dir.path(),
        "crash-1.scn.bin",
        &[0xff, 0x00, 0x13, 0x37, 0x80, 0x01],
    );
    let o = bgfuzz(&["repro", s(&p)]);
    assert!(matches!(code(&o), 0 | 1), "{}", err(&o));
    assert!(out(&o).contains("read as a libFuzzer input"), "{}", out(&o));
    // --script on bytes: an error at its line, never a decode.
    let o = bgfuzz(&["repro", s(&p), "--script"]);
    assert_eq!(code(&o), 2);
    assert!(err(&o).starts_with(&format!("bgfuzz: {}:1: ", p.display())));
    // A broken script with any name is reported at its line.
    let p = write(dir.path(), "race.txt", b"A: start\nA: frobnicate\n");
    let o = bgfuzz(&["repro", s(&p)]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(err(&o).starts_with(&format!("bgfuzz: {}:2: unknown operation", p.display())));
}

// ------------------------------------------------ 9: strict misuse, lines

#[test]
fn item9_misuse_in_a_strict_script_is_an_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, usize, &str)] = &[
        ("A: end\n", 1, "holds no transaction handle"),
        ("A: commit\n", 1, "holds no transaction handle"),
        (
            "A: start\nA: end\nA: run_delayed_refs\n",
            3,
            "holds no transaction handle",
        ),
        (
            "A: start\nA: start\n",
            2,
            "already holds a handle on transaction 2, from line 1",
        ),
        ("A: start\n# x\nA: join\n", 3, "already holds a handle"),
        ("A: start\nA: delete_unused\n", 2, "already holds a handle"),
        // A `continue` error names the line of the op that already ended.
        (
            "A: start\nA: alloc data 4K\nA: continue\n",
            3,
            "of line 2 already ended",
        ),
        // Implicit completion that blocks names the op's own line too.
        (
            "A: start\nB: start\nA: commit\nA: end\n",
            4,
            "(commit, line 3) blocks",
        ),
    ];
    for (i, (text, line, needle)) in cases.iter().enumerate() {
        let p = write(dir.path(), &format!("m{i}.scn"), text.as_bytes());
        let o = bgfuzz(&["repro", s(&p)]);
        let prefix = format!("bgfuzz: {}:{line}: ", p.display());
        assert_eq!(code(&o), 2, "{text:?}: {}", out(&o));
        assert!(err(&o).starts_with(&prefix), "{text:?}: {}", err(&o));
        assert!(err(&o).contains(needle), "{text:?}: {}", err(&o));
        // The fuzzer's loose reading still maps it.
        let o = bgfuzz(&["repro", s(&p), "--loose"]);
        assert_eq!(code(&o), 0, "{text:?} --loose: {}", err(&o));
    }
    // `check` agrees: the script is invalid, not passing.
    let p = write(dir.path(), "c.scn", b"expect fixed: pass\nA: commit\n");
    let o = bgfuzz(&["check", s(&p)]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(out(&o).contains(":2: `A: commit`"), "{}", out(&o));
}

// ------------------------------------------------ 10: minimize -o

fn failing_script(dir: &Path) -> PathBuf {
    let mut text = b"variant bug-ff1f8250\n".to_vec();
    text.extend_from_slice(&seed_race());
    write(dir, "race.scn", &text)
}

#[test]
fn item10_minimize_keeps_an_existing_output_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let input = failing_script(dir.path());
    let original = std::fs::read(&input).unwrap();
    // -o onto its own hand-written input: refused, nothing touched.
    let o = bgfuzz(&["minimize", s(&input), "-o", s(&input)]);
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(err(&o).contains("--force"), "{}", err(&o));
    assert_eq!(std::fs::read(&input).unwrap(), original);
    assert!(o.stdout.is_empty(), "refused before minimizing");
    // With --force it is replaced.
    let o = bgfuzz(&["minimize", s(&input), "-o", s(&input), "--force"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_ne!(std::fs::read(&input).unwrap(), original);
    // A new path is written as before.
    let new = dir.path().join("sub/min.scn");
    let o = bgfuzz(&["minimize", s(&input), "-o", s(&new)]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(std::fs::read_to_string(&new).unwrap().contains("expect"));
    let names: Vec<String> = std::fs::read_dir(dir.path().join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["min.scn"], "no temporary file left");
}

#[test]
fn item10_minimize_never_replaces_what_is_not_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = failing_script(dir.path());
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let target = write(dir.path(), "target.scn", b"# kept\n");
    let link = dir.path().join("link.scn");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for (p, what) in [(&fifo, "a FIFO"), (&link, "a symlink")] {
        for force in [false, true] {
            let mut args = vec!["minimize", s(&input), "-o", s(p)];
            if force {
                args.push("--force");
            }
            let o = bgfuzz_within(&args, 60);
            assert_eq!(code(&o), 2, "{what}: {}", err(&o));
            assert!(err(&o).contains(what), "{what}: {}", err(&o));
        }
    }
    let ft = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&ft),
        "the FIFO stays"
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"# kept\n");
    // The device node case, without touching a real device: the check the
    // command runs first.
    let e = bgfuzz::check_output(Path::new("/dev/null"), true).unwrap_err();
    assert!(e.to_string().contains("a device"), "{e}");
    let e = bgfuzz::write_atomic(Path::new("/dev/null"), "x").unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn item10_a_failed_write_leaves_no_temporary_file() {
    // The rename fails (the target's directory is not writable as a
    // file's parent: it is a file), which is where a full disk fails too.
    let dir = tempfile::tempdir().unwrap();
    let blocker = write(dir.path(), "plain", b"");
    let e = bgfuzz::write_atomic(&blocker.join("x.scn"), "text").unwrap_err();
    assert!(format!("{e:#}").contains("plain"), "{e:#}");
    // A write that fails after the temporary file exists: writing over a
    // directory entry that is a directory.
    let sub = dir.path().join("d");
    std::fs::create_dir(&sub).unwrap();
    let target = sub.join("t.scn");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("inside"), b"").unwrap();
    assert!(bgfuzz::write_atomic(&target, "text").is_err());
    let left: Vec<_> = std::fs::read_dir(&sub)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("t.scn")], "{left:?}");
}

// ------------------------------------------------ 11: check DIR, symlink cycles

#[test]
fn item11_check_visits_each_real_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a.scn"), b"expect fixed: pass\nA: start\n").unwrap();
    std::os::unix::fs::symlink(".", d.join("loop1")).unwrap();
    std::os::unix::fs::symlink(".", d.join("loop2")).unwrap();
    std::os::unix::fs::symlink("a.scn", d.join("same.scn")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::os::unix::fs::symlink("..", d.join("sub/up")).unwrap();
    let o = bgfuzz_within(&["check", s(d)], 30);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(out(&o).contains("1 checked, 1 passed"), "{}", out(&o));
    // Named twice on the command line: still once.
    let a = d.join("a.scn");
    let o = bgfuzz_within(&["check", s(&a), s(&d.join("same.scn")), s(d)], 30);
    assert!(out(&o).contains("1 checked"), "{}", out(&o));
}

// ------------------------------------------------ 12: bounded reads

#[test]
fn item12_reads_are_bounded_and_never_block() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("race.scn");
    mkfifo(&fifo);
    for args in [
        vec!["repro", s(&fifo)],
        vec!["minimize", s(&fifo)],
        vec!["check", s(&fifo)],
    ] {
        let o = bgfuzz_within(&args, 30);
        assert_eq!(code(&o), 2, "{args:?}");
        assert!(
            format!("{}{}", out(&o), err(&o)).contains("a FIFO"),
            "{}",
            err(&o)
        );
    }
    let o = bgfuzz_within(&["repro", "/dev/zero"], 30);
    assert_eq!(code(&o), 2);
    assert!(err(&o).contains("a device"), "{}", err(&o));
    // A file past the limit, sparse so the test stays cheap.
    let big = dir.path().join("big.scn");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(bgfuzz::MAX_INPUT_BYTES + 1).unwrap();
    let o = bgfuzz_within(&["repro", s(&big)], 30);
    assert_eq!(code(&o), 2);
    assert!(err(&o).contains("64 MiB limit"), "{}", err(&o));
    // In a directory, the FIFO and the big file are skipped or reported,
    // never waited on: the FIFO is skipped, the big file reported.
    write(dir.path(), "ok.scn", b"expect fixed: pass\nA: start\n");
    let o = bgfuzz_within(&["check", s(dir.path())], 30);
    assert!(out(&o).contains("1 passed"), "{}", out(&o));
    assert!(out(&o).contains("1 invalid"), "{}", out(&o));
    assert!(!out(&o).contains("race.scn"), "{}", out(&o));
}

// ------------------------------------------------ 13: minimize budget

#[test]
fn item13_minimize_stops_at_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let input = failing_script(dir.path());
    let o = bgfuzz(&["minimize", s(&input), "--budget", "3"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(err(&o).contains("(3 candidates tried)"), "{}", err(&o));
    assert!(err(&o).contains("budget ran out"), "{}", err(&o));
    // What it has is still a failing strict script.
    let min = write(dir.path(), "min.scn", &o.stdout);
    let o = bgfuzz(&["repro", s(&min), "--variant", "bug-ff1f8250"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    for bad in ["0", "-1", "5x", "0s"] {
        let o = bgfuzz(&["minimize", s(&input), "--budget", bad]);
        assert_eq!(code(&o), 2, "--budget {bad}");
    }
    let o = bgfuzz(&["minimize", s(&input), "--budget", "30s"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
}

// ------------------------------------------------ 14: durations

#[test]
fn item14_out_of_range_durations_are_rejected() {
    for t in ["307445734561825861m", "18446744073709551615s", "9000h"] {
        let o = bgfuzz_within(&["run", "--time", t, "--variant", "fixed"], 30);
        assert_eq!(code(&o), 2, "--time {t}: {}", err(&o));
        assert!(err(&o).contains("out of range"), "{}", err(&o));
    }
    let o = bgfuzz(&[
        "run",
        "--time",
        "1s",
        "--variant",
        "fixed",
        "--out",
        "/nonexistent/x",
    ]);
    assert_ne!(code(&o), 101);
}

// ------------------------------------------------ 15: stdout failures

#[test]
fn item15_a_closed_stdout_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for _ in 0..20_000 {
        text.push_str("A: start\nA: alloc data 4K\nA: end\n");
    }
    let p = write(dir.path(), "big.scn", text.as_bytes());
    // `| head -1`: read one line, close the pipe.
    let mut child = cmd(&["repro", "--print-script", s(&p)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let o = wait_within(child, 60, &["repro --print-script"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(
        err(&o).lines().all(|l| l.contains("read as a script")),
        "{}",
        err(&o)
    );
}

#[test]
fn item15_a_full_stdout_is_an_error_not_a_panic() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = cmd(&["repro", SEED_RACE]).stdout(full).output().unwrap();
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(err(&o).contains("writing to stdout"), "{}", err(&o));
    assert!(!err(&o).contains("panicked"), "{}", err(&o));
}

// ------------------------------------------------ 16: smaller things

#[test]
fn item16_script_messages() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[u8], usize, &str)] = &[
        (b"device 16G\ndevice 8G\n", 2, "second `device` line"),
        (
            b"chunk data 1G\nchunk metadata 1G\nchunk data 2G\n",
            3,
            "second `chunk data` line",
        ),
        (b"A: start\rA: end\r", 1, "CR-only line ends"),
        (b"A: alloc data 2000000G\n", 1, "at most 1048576G"),
    ];
    for (i, (bytes, line, needle)) in cases.iter().enumerate() {
        let p = write(dir.path(), &format!("s{i}.scn"), bytes);
        let o = bgfuzz(&["repro", s(&p)]);
        assert_eq!(code(&o), 2, "{bytes:?}");
        let e = err(&o);
        assert!(
            e.starts_with(&format!("bgfuzz: {}:{line}: ", p.display())),
            "{e}"
        );
        assert!(e.contains(needle), "{bytes:?}: {e}");
        assert!(!e.contains("1P"), "{e}");
    }
    // A byte order mark is skipped.
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend_from_slice(&seed_race());
    let p = write(dir.path(), "bom.scn", &bom);
    let o = bgfuzz(&["repro", s(&p), "--variant", "bug-ff1f8250"]);
    assert_eq!(code(&o), 1, "{}", err(&o));
    // A huge bad token is not echoed whole.
    for prefix in ["", "A: ", "A: alloc data ", "variant ", "fail "] {
        let mut text = prefix.as_bytes().to_vec();
        text.extend(std::iter::repeat_n(b'x', 1 << 20));
        let p = write(dir.path(), "long.scn", &text);
        let o = bgfuzz(&["repro", s(&p)]);
        assert_eq!(code(&o), 2, "{prefix:?}");
        assert!(err(&o).len() < 500, "{prefix:?}: {} bytes", err(&o).len());
    }
}

#[test]
fn item16_an_invalid_script_is_reported_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.scn",
        b"expect fixed: pass\nexpect bug-ff1f8250: pass\nA: end\n",
    );
    let o = bgfuzz(&["check", s(&p)]);
    assert_eq!(code(&o), 2);
    assert_eq!(out(&o).matches("ERR").count(), 1, "{}", out(&o));
    assert!(
        out(&o).contains("0 checked, 0 passed, 0 failed, 1 invalid"),
        "{}",
        out(&o)
    );
}

#[test]
fn item16_report_layout() {
    let dir = tempfile::tempdir().unwrap();
    // An empty input: no bare timeline header.
    let p = write(dir.path(), "empty.scn", b"# nothing\n");
    let o = bgfuzz(&["repro", s(&p)]);
    assert_eq!(code(&o), 0);
    assert!(!out(&o).contains("step |"), "{}", out(&o));
    assert!(out(&o).contains("(no steps)"), "{}", out(&o));
    // The kernel-style line names the file.
    let o = bgfuzz(&["repro", SEED_RACE, "--variant", "bug-ff1f8250"]);
    assert!(
        out(&o).contains("WARNING: at fs/btrfs/extent-tree.c in write_one_cache_group"),
        "{}",
        out(&o)
    );
    // Every timeline row has its column bars where the header has them,
    // over the corpus and a generated sample, under every variant.
    let mut runs = Vec::new();
    for p in bgfuzz::check::collect_scripts(&[manifest_dir().join("corpus/scripts")]).unwrap() {
        let scn = bgfuzz::scenario::Scenario::parse(&std::fs::read(p).unwrap());
        runs.push(scn.unwrap());
    }
    let mut buf = Vec::new();
    for case in 0..300 {
        bgfuzz::search::case_bytes(3, case, &mut buf);
        runs.push(bgfuzz::generate::decode(&buf));
    }
    let mut long_cells = 0;
    for scn in &runs {
        for v in Variant::ALL {
            let r = bgfuzz::run::run(scn, v, bgfuzz::run::Mode::Loose).unwrap();
            let t = bgfuzz::report::timeline(&r);
            let mut lines = t.lines();
            let bars = |l: &str| -> Vec<usize> {
                l.char_indices()
                    .filter(|(_, c)| *c == '|')
                    .map(|(i, _)| i)
                    .collect()
            };
            let head = bars(lines.next().unwrap());
            for l in lines.skip(1) {
                assert_eq!(bars(l), head, "\n{t}");
                long_cells += usize::from(l.contains("[blocked] ABORT"));
            }
        }
    }
    assert!(long_cells > 0, "the sample never shows a long cell");
}

#[test]
fn item16_bench_arguments() {
    for bad in [["--rounds", "0"], ["--seeds", "0"]] {
        let o = bgfuzz(&["bench", bad[0], bad[1]]);
        assert_eq!(code(&o), 2, "{bad:?}");
    }
    // Outside the repository the replay figure is dropped, and said so.
    let dir = tempfile::tempdir().unwrap();
    let o = cmd(&[
        "bench",
        "--rounds",
        "1",
        "--seeds",
        "1",
        "--cap-cases",
        "200",
    ])
    .current_dir(dir.path())
    .output()
    .unwrap();
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(err(&o).contains("no replay figure"), "{}", err(&o));
}

// ------------------------------------------------ 17: help

#[test]
fn item17_list_names_everything_a_script_may_name() {
    let o = bgfuzz(&["list"]);
    assert_eq!(code(&o), 0);
    let text = out(&o);
    for v in Variant::ALL {
        assert!(text.contains(v.name()), "{}", v.name());
    }
    for site in Site::ALL {
        assert!(text.contains(site.name()), "{}", site.name());
        for e in site.errnos() {
            assert!(text.contains(&e.to_string()));
        }
    }
    for k in ViolationKind::ALL {
        assert!(text.contains(k.name()), "{}", k.name());
    }
    for op in [
        "start",
        "join",
        "alloc",
        "free",
        "run_delayed_refs",
        "end",
        "commit",
        "delete_unused",
        "continue",
    ] {
        assert!(text.contains(&format!("\n  {op}")), "{op}");
    }
}

#[test]
fn item17_every_argument_described_and_every_exit_code_given() {
    let o = bgfuzz(&["--help"]);
    assert!(out(&o).contains("bgfuzz list"), "{}", out(&o));
    assert!(out(&o).contains("Exit codes"), "{}", out(&o));
    for sub in ["repro", "minimize", "run", "bench", "check", "list"] {
        let o = bgfuzz(&[sub, "--help"]);
        assert_eq!(code(&o), 0);
        let help = out(&o);
        assert!(help.contains("Exit 0"), "{sub}: {help}");
        // Every argument and option line has words after its name.
        let mut in_args = false;
        for l in help.lines() {
            if l.ends_with(':') && !l.starts_with(' ') {
                in_args = matches!(l, "Arguments:" | "Options:");
                continue;
            }
            if in_args && l.starts_with("  ") && !l.starts_with("      ") {
                let spec = l.trim_start();
                // `--name <VALUE>  text` or `<FILE>  text`, or the text on
                // the next lines (long help).
                let described = spec.split("  ").filter(|x| !x.trim().is_empty()).count() > 1;
                let next_is_text = help
                    .lines()
                    .skip_while(|x| *x != l)
                    .nth(1)
                    .is_some_and(|n| n.starts_with("          "));
                assert!(
                    described || next_is_text,
                    "{sub}: undescribed `{spec}`\n{help}"
                );
            }
        }
    }
    let o = bgfuzz(&["run", "--help"]);
    assert!(out(&o).contains("200000"), "run's default case count");
}

// ------------------------------------------------ 18: the README

#[test]
fn item18_readme_commands_are_bounded_and_stay_in_the_repo() {
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    assert!(!readme.contains("../"), "a pointer outside the repository");
    assert!(
        !readme.contains("shared/design"),
        "a pointer to the design notes"
    );
    assert!(readme.contains("cargo install --path . --locked"));
    assert!(manifest_dir().join("docs/scripts.md").exists());
    let mut fuzz_runs = 0;
    for l in readme.lines().filter(|l| l.contains("cargo fuzz run ")) {
        if l.trim_start().starts_with('`') || !l.contains(" -s ") {
            continue; // prose, not a command line
        }
        fuzz_runs += 1;
        assert!(l.contains("-max_total_time="), "unbounded: {l}");
        if l.contains("from nothing") {
            assert!(l.contains("\"$(mktemp -d)\""), "not a fresh corpus: {l}");
        }
    }
    assert!(fuzz_runs >= 3, "{fuzz_runs} cargo fuzz run lines");
    assert!(
        readme.contains("__sanitizer_"),
        "libFuzzer's warnings explained"
    );
    assert!(readme.contains("measured)"), "first-build times");
}
