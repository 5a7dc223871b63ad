//! Integration tests of the `bgfuzz` command line (`repro`, `check`), run
//! against the built binary, plus a seeded "nothing panics" sweep of the
//! script parser and the runner through the library.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bgfuzz::run::{run, Mode, Run};
use bgfuzz::scenario::Scenario;
use bgfuzz::variant::Variant;
use serde_json::Value;

const SEED_RACE: &str = "corpus/scripts/seed-race.scn";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `bgfuzz ARGS` from the crate root, so corpus paths are relative.
fn bgfuzz(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bgfuzz"))
        .args(args)
        .current_dir(manifest_dir())
        .output()
        .expect("spawn bgfuzz")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("bgfuzz exited normally (no signal)")
}

/// Writes `bytes` to `name` in `dir` and returns its path.
fn write_script(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write script");
    p
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp path is UTF-8")
}

fn corpus_scripts() -> Vec<PathBuf> {
    let mut v = bgfuzz::check::collect_scripts(&[manifest_dir().join("corpus/scripts")])
        .expect("corpus/scripts");
    v.sort();
    assert!(!v.is_empty(), "no corpus scripts");
    v
}

// ---------------------------------------------------------------- repro

#[test]
fn repro_seed_race_bug_variant_reports_abort() {
    let o = bgfuzz(&["repro", SEED_RACE, "--variant", "bug-ff1f8250"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 1, "stdout:\n{out}\nstderr:\n{}", stderr(&o));
    for needle in [
        "abort-enoent-outside-critical",
        "BTRFS: Transaction aborted (error -2)",
        "Call Trace:",
        "write_one_cache_group",
        "btrfs_start_dirty_block_groups",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // The call trace names both functions, innermost first.
    let trace = &out[out.find("Call Trace:").unwrap()..];
    let frames: Vec<&str> = trace
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .map(str::trim)
        .collect();
    let w = frames.iter().position(|f| *f == "write_one_cache_group");
    let s = frames
        .iter()
        .position(|f| *f == "btrfs_start_dirty_block_groups");
    assert!(
        matches!((w, s), (Some(w), Some(s)) if w < s),
        "call trace frames: {frames:?}"
    );
    assert!(o.stderr.is_empty(), "stderr: {}", stderr(&o));
}

#[test]
fn repro_seed_race_fixed_variant_passes() {
    let o = bgfuzz(&["repro", SEED_RACE, "--variant", "fixed"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "stdout:\n{out}\nstderr:\n{}", stderr(&o));
    assert!(out.contains("no violation"), "{out}");
    assert!(!out.contains("VIOLATION"), "{out}");
    assert!(!out.contains("Transaction aborted"), "{out}");
}

#[test]
fn repro_without_variant_uses_fixed() {
    // seed-race.scn has no `variant` line: the default is `fixed`.
    let o = bgfuzz(&["repro", SEED_RACE]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).starts_with("# variant fixed"), "{}", stdout(&o));
}

fn repro_json(variant: &str) -> (i32, Value) {
    let o = bgfuzz(&["repro", SEED_RACE, "--variant", variant, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("--json output does not parse: {e}\n{}", stdout(&o)));
    (code(&o), v)
}

fn object_keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

#[test]
fn repro_json_bug_variant() {
    let (code, v) = repro_json("bug-ff1f8250");
    assert_eq!(code, 1);
    assert_eq!(object_keys(&v), ["steps", "variant", "violation"]);
    assert_eq!(v["variant"], "bug-ff1f8250");
    let steps = v["steps"].as_u64().expect("steps is a number");
    // The run stops at the abort: C's second `continue` (line 10 of the
    // script's steps) writes X out before A's phase 2.
    assert_eq!(steps, 10, "{v}");
    let viol = &v["violation"];
    assert_eq!(object_keys(viol), ["kind", "message", "removed_by", "step"]);
    assert_eq!(viol["kind"], "abort-enoent-outside-critical");
    let step = viol["step"].as_u64().expect("violation.step is a number");
    assert!(step >= 1 && step <= steps + 1, "{v}");
    assert_eq!(step, 10, "{v}");
    let msg = viol["message"].as_str().expect("message is a string");
    assert!(msg.contains("ENOENT"), "{msg}");
    assert!(msg.contains("write_one_cache_group"), "{msg}");
}

#[test]
fn repro_json_fixed_variant() {
    let (code, v) = repro_json("fixed");
    assert_eq!(code, 0);
    assert_eq!(object_keys(&v), ["steps", "variant", "violation"]);
    assert_eq!(v["variant"], "fixed");
    assert!(v["violation"].is_null(), "{v}");
    // Every line of the script runs, plus the drain.
    let steps = v["steps"].as_u64().expect("steps is a number");
    assert!(steps >= 12, "{v}");
}

#[test]
fn repro_json_steps_match_print_script() {
    // `steps` counts exactly the step lines of the normalized script.
    for variant in ["fixed", "bug-ff1f8250"] {
        let (_, v) = repro_json(variant);
        let o = bgfuzz(&["repro", SEED_RACE, "--variant", variant, "--print-script"]);
        let n = stdout(&o)
            .lines()
            .filter(|l| {
                l.len() > 2 && l.as_bytes()[1] == b':' && l.as_bytes()[0].is_ascii_uppercase()
            })
            .count() as u64;
        assert_eq!(v["steps"].as_u64(), Some(n), "{variant}");
    }
}

/// `repro --print-script` of `src` (with `extra` args), as bytes.
fn print_script(src: &str, extra: &[&str]) -> Output {
    let mut args = vec!["repro", src, "--print-script"];
    args.extend_from_slice(extra);
    bgfuzz(&args)
}

/// Prints `src`, replays the print, prints that again: the exit codes agree
/// and the second print is byte-identical to the first.
fn assert_print_round_trip(src: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let first = print_script(src, extra);
    assert!(
        matches!(code(&first), 0 | 1),
        "{src} {extra:?}: {}",
        stderr(&first)
    );
    let p = write_script(dir.path(), "printed.scn", &first.stdout);
    let mut args = vec!["repro", path_str(&p)];
    args.extend_from_slice(extra);
    let replay = bgfuzz(&args);
    assert_eq!(
        code(&replay),
        code(&first),
        "{src} {extra:?}: replay of the printed script exits differently\n{}\n{}",
        stdout(&first),
        stderr(&replay)
    );
    let second = print_script(path_str(&p), extra);
    assert_eq!(code(&second), code(&first), "{src} {extra:?}");
    assert_eq!(
        stdout(&second),
        stdout(&first),
        "{src} {extra:?}: printing is not idempotent"
    );
}

#[test]
fn print_script_round_trips_seed_race() {
    assert_print_round_trip(SEED_RACE, &["--variant", "fixed"]);
    assert_print_round_trip(SEED_RACE, &["--variant", "bug-ff1f8250"]);
    assert_print_round_trip(SEED_RACE, &[]);
}

#[test]
fn print_script_round_trips_corpus() {
    for p in corpus_scripts() {
        for v in ["fixed", "bug-ff1f8250"] {
            assert_print_round_trip(path_str(&p), &["--variant", v]);
        }
    }
}

#[test]
fn print_script_bug_variant_shape() {
    let o = print_script(SEED_RACE, &["--variant", "bug-ff1f8250"]);
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    // The normalized script has no annotations, and keeps the header.
    assert!(!out.contains('#'), "{out}");
    assert!(out.contains("expect bug-ff1f8250: abort-enoent-outside-critical"));
    assert!(out.ends_with("C: continue\n"), "{out}");
}

#[test]
fn print_script_records_the_overriding_variant() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::fs::read_to_string(manifest_dir().join(SEED_RACE)).unwrap();
    let with_header = write_script(
        dir.path(),
        "with-header.scn",
        format!("variant bug-ff1f8250\n{seed}").as_bytes(),
    );
    let cases: [(&str, &str, i32); 2] = [
        (SEED_RACE, "bug-ff1f8250", 1),
        (path_str(&with_header), "fixed", 0),
    ];
    for (i, (src, variant, want)) in cases.into_iter().enumerate() {
        let first = print_script(src, &["--variant", variant]);
        assert_eq!(code(&first), want, "{src}");
        let p = write_script(dir.path(), &format!("printed{i}.scn"), &first.stdout);
        // Kept as a regression: replayed without --variant.
        let replay = bgfuzz(&["repro", path_str(&p)]);
        assert_eq!(
            code(&replay),
            want,
            "{src} --variant {variant}; printed:\n{}",
            stdout(&first)
        );
    }
}

#[test]
fn loose_print_script_gives_a_strict_script() {
    let dir = tempfile::tempdir().unwrap();
    // `continue` on an idle task and `free` of a missing extent: errors in a
    // script, mapped or dropped in loose mode.
    let src = write_script(
        dir.path(),
        "sketch.scn",
        b"A: continue\nA: start\nB: free e7\nA: alloc data 4K\nA: end\n",
    );
    let strict = bgfuzz(&["repro", path_str(&src)]);
    assert_eq!(code(&strict), 2, "{}", stdout(&strict));
    let loose = bgfuzz(&["repro", path_str(&src), "--loose", "--print-script"]);
    assert_eq!(code(&loose), 0, "{}", stderr(&loose));
    let p = write_script(dir.path(), "strict.scn", &loose.stdout);
    let replay = bgfuzz(&["repro", path_str(&p), "--print-script"]);
    assert_eq!(code(&replay), 0, "{}", stderr(&replay));
    assert_eq!(stdout(&replay), stdout(&loose));
}

// ---------------------------------------------------------- invalid input

/// Scripts that must be rejected with exit 2 and `bgfuzz: FILE:LINE: ...`.
const INVALID: &[(&str, &[u8], usize, &str)] = &[
    (
        "unknown op",
        b"A: start\nA: frobnicate\n",
        2,
        "unknown operation",
    ),
    (
        "unknown header",
        b"# c\nbogus 1\nA: start\n",
        2,
        "unknown line",
    ),
    (
        "unknown mount option",
        b"mount space_cache bogus\nA: start\n",
        1,
        "unknown mount option `bogus` (known: space_cache, discard, fitrim, chunk_cost)",
    ),
    (
        "mount without options",
        b"\nmount\nA: start\n",
        2,
        "`mount` needs options (known: space_cache, discard, fitrim, chunk_cost)",
    ),
    (
        "bad size (not 4K)",
        b"A: start\nA: alloc data 5K\n",
        2,
        "multiple of 4K",
    ),
    (
        "bad size (zero)",
        b"\n\nA: alloc data 0\n",
        3,
        "multiple of 4K",
    ),
    ("bad size (garbage)", b"A: alloc data lots\n", 1, "bad size"),
    ("task Z", b"A: start\n\nZ: start\n", 3, "out of range"),
    (
        "p% failpoint",
        b"fail trans_end 50%return(EIO)\n",
        1,
        "not deterministic",
    ),
    (
        "unknown variant header",
        b"# x\nvariant bug-nope\n",
        2,
        "unknown variant",
    ),
    (
        "continue on idle task",
        b"A: start\nB: continue\n",
        2,
        "no operation in progress",
    ),
    (
        "free of a missing extent",
        b"A: start\nA: alloc data 4K # e1\nA: free e9\n",
        3,
        "e9",
    ),
    // e2 would be the next one: it does not exist yet either.
    (
        "free of the next extent",
        b"A: start\nA: alloc data 4K\nA: free e2\n",
        3,
        "e2",
    ),
    // B holds a handle, so A's commit blocks on num_extwriters; A cannot
    // begin another operation, nor continue.
    (
        "begin on a blocked task",
        b"A: start\nB: start\nA: commit\nA: continue\nA: start\n",
        5,
        "blocks before it ends",
    ),
    (
        "continue on a blocked task",
        b"A: start\nB: start\nA: commit\nA: continue\n# x\nA: continue\n",
        6,
        "blocked",
    ),
    ("invalid UTF-8", b"A: start\n\xff\xfe\nA: end\n", 2, "UTF-8"),
    (
        "invalid UTF-8 in a comment",
        b"A: start # caf\xe9\n",
        1,
        "UTF-8",
    ),
    ("NUL byte", b"A: start\nA: end\nB: st\0art\n", 3, "NUL"),
    ("NUL byte, CRLF", b"A: start\r\n\0\r\n", 2, "NUL"),
    (
        "header after a step",
        b"A: start\nvariant fixed\n",
        2,
        "after the first step",
    ),
];

#[test]
fn invalid_scripts_exit_2_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, (what, bytes, line, needle)) in INVALID.iter().enumerate() {
        let p = write_script(dir.path(), &format!("bad{i}.scn"), bytes);
        let o = bgfuzz(&["repro", path_str(&p)]);
        let err = stderr(&o);
        let prefix = format!("bgfuzz: {}:{line}: ", p.display());
        if code(&o) != 2
            || !err.starts_with(&prefix)
            || !err.contains(needle)
            || !o.stdout.is_empty()
        {
            failures.push(format!(
                "{what}: {bytes:?}\n  want exit 2, stderr starting {prefix:?} containing {needle:?}, empty stdout\n  got exit {:?}, stderr {err:?}, stdout {:?}",
                o.status.code(),
                stdout(&o)
            ));
        }
        // The same with the other output modes: still exit 2, nothing on stdout.
        for extra in ["--json", "--print-script"] {
            let o = bgfuzz(&["repro", path_str(&p), extra]);
            if code(&o) != 2 || !o.stdout.is_empty() || !stderr(&o).starts_with(&prefix) {
                failures.push(format!(
                    "{what} {extra}: exit {:?}, stderr {:?}",
                    o.status.code(),
                    stderr(&o)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn crlf_scripts_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(manifest_dir().join(SEED_RACE)).unwrap();
    let p = write_script(dir.path(), "crlf.scn", src.replace('\n', "\r\n").as_bytes());
    let o = bgfuzz(&["repro", path_str(&p), "--variant", "bug-ff1f8250", "--json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["violation"]["kind"], "abort-enoent-outside-critical");
}

#[test]
fn unknown_variant_flag_exits_2() {
    let o = bgfuzz(&["repro", SEED_RACE, "--variant", "bug-nope"]);
    assert_eq!(code(&o), 2);
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("bug-nope"), "{err}");
    assert!(
        err.contains("fixed") && err.contains("v4.1") && err.contains("bug-ff1f8250"),
        "{err}"
    );
}

#[test]
fn missing_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("does-not-exist.scn");
    let o = bgfuzz(&["repro", path_str(&p)]);
    assert_eq!(code(&o), 2);
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.starts_with("bgfuzz: "), "{err}");
    assert!(err.contains("does-not-exist.scn"), "{err}");
}

// ---------------------------------------------------------------- check

#[test]
fn check_corpus_passes() {
    let o = bgfuzz(&["check", "corpus/scripts"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "{out}\n{}", stderr(&o));
    let last = out.lines().last().expect("a summary line");
    assert!(last.contains(" 0 failed"), "{last}");
    assert!(last.contains(" 0 invalid"), "{last}");
    // One line per script and expected variant.
    let scripts = corpus_scripts();
    let expects: usize = scripts
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter(|l| l.trim_start().starts_with("expect "))
                .count()
        })
        .sum();
    assert!(
        last.starts_with(&format!("{expects} checked, {expects} passed")),
        "{last}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        expects,
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");
    for p in &scripts {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(out.contains(name), "{name} not checked:\n{out}");
    }
}

#[test]
fn check_wrong_expectation_fails() {
    let dir = tempfile::tempdir().unwrap();
    write_script(
        dir.path(),
        "wrong.scn",
        b"expect fixed: deadlock\nexpect bug-ff1f8250: pass\nA: start\nA: alloc data 4K\nA: end\n",
    );
    let o = bgfuzz(&["check", path_str(dir.path())]);
    let out = stdout(&o);
    assert_ne!(code(&o), 0, "{out}");
    let fail: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fail.len(), 1, "{out}");
    assert!(fail[0].contains("wrong.scn"), "{out}");
    assert!(fail[0].contains("deadlock"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok ") && l.contains("bug-ff1f8250")),
        "{out}"
    );
    assert!(out.lines().last().unwrap().contains(" 1 failed"), "{out}");
}

#[test]
fn check_script_without_expect_lines_fails() {
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path(), "noexpect.scn", b"A: start\nA: end\n");
    let o = bgfuzz(&["check", path_str(dir.path())]);
    let out = stdout(&o);
    assert_ne!(code(&o), 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("noexpect.scn") && l.contains("expect")),
        "{out}"
    );
    assert!(out.lines().last().unwrap().contains(" 1 invalid"), "{out}");
}

#[test]
fn check_reports_invalid_scripts_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path(), "a-bad.scn", b"expect fixed: pass\nA: frob\n");
    write_script(
        dir.path(),
        "b-good.scn",
        b"expect fixed: pass\nA: start\nA: end\n",
    );
    // Not a script: ignored in a directory walk.
    write_script(dir.path(), "notes.txt", b"garbage\n");
    let o = bgfuzz(&["check", path_str(dir.path())]);
    let out = stdout(&o);
    assert_ne!(code(&o), 0, "{out}");
    assert!(out.contains("a-bad.scn:2:"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok ") && l.contains("b-good.scn")),
        "{out}"
    );
    assert!(!out.contains("notes.txt"), "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("1 checked, 1 passed, 0 failed, 1 invalid"),
        "{out}"
    );
}

#[test]
fn check_needs_a_path() {
    let o = bgfuzz(&["check"]);
    assert_eq!(code(&o), 2);
    assert!(o.stdout.is_empty());
}

// ------------------------------------------------------ nothing panics

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

const HEADERS: &[&str] = &[
    "variant bug-ff1f8250",
    "variant fixed",
    "device 16G",
    "device 4G",
    "device 2G",
    "chunk data 1G",
    "chunk metadata 256M",
    "chunk system 32M",
    "chunk data 64M",
    "fail extent_tree_lookup 2*off->1*return(ENOENT)",
    "fail extent_tree_lookup 1*return(EIO)",
    "fail trans_end 1*return(EIO)",
    "fail bg_create 1*return(ENOSPC)->1*return(ENOMEM)",
    "fail bg_insert_item 1*return(ENOSPC)",
    "expect fixed: pass",
    "expect bug-ff1f8250: abort-enoent-outside-critical",
    "# a comment",
    "",
];

const OPS: &[&str] = &[
    "start",
    "start",
    "join",
    "alloc data 1G",
    "alloc data 4K",
    "alloc data 64M",
    "alloc metadata 16K",
    "alloc system 4K",
    "free e1",
    "free e2",
    "free e3",
    "run_delayed_refs",
    "end",
    "end",
    "commit",
    "delete_unused",
    "continue",
    "continue",
    "continue",
];

const TASKS: &[&str] = &["A", "A", "B", "B", "C", "D", "H"];

/// One pseudo-random script: mostly valid lines, some mangled.
fn random_script(rng: &mut Rng) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for _ in 0..rng.below(4) {
        lines.push(rng.pick(HEADERS).as_bytes().to_vec());
    }
    for _ in 0..rng.below(16) {
        let line = format!("{}: {}", rng.pick(TASKS), rng.pick(OPS));
        lines.push(line.into_bytes());
    }
    // Damage: a few lines mangled, swapped, spliced, or replaced by noise.
    let damage = match rng.below(10) {
        0..=3 => 0,
        4..=7 => 1,
        _ => 1 + rng.below(4),
    };
    for _ in 0..damage {
        if lines.is_empty() {
            lines.push(Vec::new());
        }
        let i = rng.below(lines.len());
        match rng.below(7) {
            0 => {
                // Replace a byte.
                let l = &mut lines[i];
                if !l.is_empty() {
                    let j = rng.below(l.len());
                    l[j] = rng.next() as u8;
                }
            }
            1 => {
                // Insert a byte, sometimes a special one.
                let b = rng.pick(&[0u8, b'#', b':', b'\r', 0xff, b' ', b'%']);
                let b = if rng.below(2) == 0 {
                    b
                } else {
                    rng.next() as u8
                };
                let l = &mut lines[i];
                let j = rng.below(l.len() + 1);
                l.insert(j, b);
            }
            2 => {
                // Truncate.
                let l = &mut lines[i];
                let j = rng.below(l.len() + 1);
                l.truncate(j);
            }
            3 => {
                // Pure noise.
                let n = rng.below(24);
                lines[i] = (0..n).map(|_| rng.next() as u8).collect();
            }
            4 => {
                // Splice two lines.
                let j = rng.below(lines.len());
                let (a, b) = (lines[i].clone(), lines[j].clone());
                let mut l = a[..a.len() / 2].to_vec();
                l.extend_from_slice(&b[b.len() / 2..]);
                lines[i] = l;
            }
            5 => {
                // Move a line (headers after steps, steps before headers).
                let l = lines.remove(i);
                let j = rng.below(lines.len() + 1);
                lines.insert(j, l);
            }
            _ => {
                // A header-ish word with a random argument.
                let word = rng.pick(&["device", "chunk data", "alloc data", "fail trans_end"]);
                let arg = rng.pick(&[
                    "0",
                    "1",
                    "4095",
                    "4K",
                    "7K",
                    "1P",
                    "2P",
                    "99999999999999999999G",
                    "1*return(EIO)",
                    "-1",
                    "K",
                    "",
                ]);
                lines[i] = format!("{word} {arg}").into_bytes();
            }
        }
    }
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(&l);
        out.extend_from_slice(if rng.below(8) == 0 { b"\r\n" } else { b"\n" });
    }
    out
}

/// The run as a replay should see it: each step's task, action, op,
/// outcome and events (line numbers and drain marks differ by design).
fn run_key(r: &Run) -> Vec<String> {
    let mut k: Vec<String> = r
        .steps
        .iter()
        .map(|s| {
            format!(
                "{:?} {:?} {:?} {:?} {:?}",
                s.step.task, s.step.action, s.op, s.outcome, s.events
            )
        })
        .collect();
    k.push(format!("{:?}", r.violation));
    k
}

#[test]
fn random_bytes_never_panic_and_round_trip() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut parsed, mut ran, mut rejected) = (0, 0, 0);
    for case in 0..300 {
        let bytes = random_script(&mut rng);
        let outcome = std::panic::catch_unwind(|| check_one(&bytes));
        match outcome {
            Ok(Some(n)) => {
                parsed += 1;
                ran += n;
            }
            Ok(None) => rejected += 1,
            Err(_) => panic!(
                "case {case}: panicked on {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    // The sweep means something only if both paths are exercised.
    assert!(parsed >= 60, "only {parsed} of 300 parsed");
    assert!(rejected >= 30, "only {rejected} of 300 rejected");
    assert!(ran >= 60, "only {ran} runs succeeded");
}

/// Parses, prints and reparses one input; runs it strictly and loosely under
/// both variants; replays each normalized run strictly. `None` when it does
/// not parse; else how many runs succeeded.
fn check_one(bytes: &[u8]) -> Option<usize> {
    let scn = match Scenario::parse(bytes) {
        Ok(s) => s,
        Err(e) => {
            assert!(e.line >= 1, "error line 0 for {bytes:?}: {e}");
            assert!(!e.message.is_empty());
            return None;
        }
    };
    let printed = scn.print();
    let again = Scenario::parse(printed.as_bytes())
        .unwrap_or_else(|e| panic!("print does not parse ({e}):\n{printed}\nfrom {bytes:?}"));
    assert_eq!(again, scn, "print/parse changed the scenario:\n{printed}");
    assert_eq!(again.print(), printed, "printing is not idempotent");
    let mut ok = 0;
    for variant in Variant::ALL {
        for mode in [Mode::Strict, Mode::Loose] {
            let Ok(r) = run(&scn, variant, mode) else {
                assert_eq!(mode, Mode::Strict, "loose run failed on {bytes:?}");
                continue;
            };
            ok += 1;
            // The normalized scenario is a strict script that replays
            // exactly, also after a print/parse.
            let text = r.scenario.print();
            let norm = Scenario::parse(text.as_bytes())
                .unwrap_or_else(|e| panic!("normalized script does not parse ({e}):\n{text}"));
            assert_eq!(norm, r.scenario);
            let replay = run(&norm, variant, Mode::Strict).unwrap_or_else(|e| {
                panic!("normalized script fails to replay ({e}), {variant} {mode:?}:\n{text}")
            });
            assert_eq!(
                run_key(&replay),
                run_key(&r),
                "replay differs, {variant} {mode:?}:\n{text}"
            );
            assert_eq!(replay.scenario, r.scenario);
        }
    }
    Some(ok)
}

#[test]
fn variants_lists_each_variant_with_its_patches() {
    let o = bgfuzz(&["variants"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    for v in Variant::ALL {
        assert!(
            out.contains(&format!("{}: ", v.name())),
            "{v} missing:\n{out}"
        );
    }
    assert!(out.contains("ff1f8250a9e4"), "{out}");
    assert!(
        out.contains("Btrfs: fix race between block group creation and their cache writeout"),
        "{out}"
    );
    assert!(
        out.contains("expected oracle: abort-enoent-outside-critical"),
        "{out}"
    );

    let o = bgfuzz(&["variants", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("variants --json is JSON");
    let rows = v.as_array().expect("an array of variants");
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names[..3], ["fixed", "v4.1", "bug-ff1f8250"]);
    assert_eq!(names.len(), Variant::ALL.len());
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap();
    let fixed = row("fixed");
    assert_eq!(fixed["patches"][0]["id"], "ff1f8250a9e4");
    assert_eq!(fixed["patches"][0]["kernel"], "v4.1");
    assert_eq!(fixed["patches"][0]["kind"], "fix");
    assert_eq!(fixed["expected_violation"], Value::Null);
    let bug = row("bug-ff1f8250");
    assert_eq!(
        bug["patches"].as_array().map(Vec::len),
        Some(fixed["patches"].as_array().unwrap().len() - 1)
    );
    assert!(bug["patches"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["id"] != "ff1f8250a9e4"));
    assert_eq!(bug["missing_fix"], "ff1f8250a9e4");
    assert_eq!(bug["expected_violation"], "abort-enoent-outside-critical");
    assert_eq!(row("v4.1")["patches"][0]["id"], "ff1f8250a9e4");
}

#[test]
fn variant_help_lists_the_known_names() {
    let o = bgfuzz(&["repro", "--help"]);
    let out = stdout(&o);
    for v in Variant::ALL {
        assert!(out.contains(v.name()), "{v} missing from --help:\n{out}");
    }
}

/// `run_patched` runs a script as written under one variant with another
/// patch set: the bug variant plus its missing fix no longer aborts, which
/// is how a witness is attributed to the fix that removes it.
#[test]
fn a_patch_override_attributes_a_witness_to_its_fix() {
    use bgfuzz::engine::FF1F8250;
    let bytes = std::fs::read(manifest_dir().join(SEED_RACE)).expect("seed race");
    let s = Scenario::parse(&bytes).expect("seed race parses");
    let bug = Variant::BUG_FF1F8250;
    let r = run(&s, bug, Mode::Strict).unwrap();
    assert_eq!(
        r.violation.map(|v| v.finding.kind.name()),
        Some("abort-enoent-outside-critical")
    );
    let patched = bug.patches().with(FF1F8250);
    let r = bgfuzz::run::run_patched(&s, bug, patched, Mode::Strict).unwrap();
    assert!(r.violation.is_none(), "{}", bgfuzz::report::full(&r));
    assert_eq!(r.patches, patched);
    assert_eq!(
        r.scenario.variant,
        Some(bug),
        "the script keeps its variant"
    );
    let text = bgfuzz::report::full(&r);
    assert!(text.contains("# patches: ff1f8250a9e4"), "{text}");
}
