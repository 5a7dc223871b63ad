//! `bgfuzz campaign` around a stand-in for `cargo fuzz` (a shell script
//! first on PATH that speaks libFuzzer's status lines and writes where
//! libFuzzer writes), so what the campaign does with the corpus, the lock,
//! a failed step, the progress lines and leftover temp dirs is tested in
//! plain `cargo test`, in seconds, without cargo-fuzz. `tests/campaign.rs`
//! runs the real thing.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The stand-in: records its arguments in $FAKE_LOG; `fuzz run` prints two
/// status lines and writes three inputs into its first corpus directory
/// (sleeping $FAKE_SLEEP seconds between, and with $FAKE_ORPHAN set,
/// first waiting on a background `sleep` that ignores SIGINT, its pid in
/// that file and a fork-mode temp dir in its name); `-merge=1` copies the other
/// directories' files into the first (or exits $FAKE_MERGE_EXIT);
/// `fuzz coverage` exits $FAKE_COVERAGE_EXIT.
const FAKE_CARGO: &str = r##"#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
[ "$1" = fuzz ] || exit 99
sub="$2"
shift 2
if [ "$sub" = coverage ]; then
  echo "fake coverage" >&2
  exit "${FAKE_COVERAGE_EXIT:-0}"
fi
target=""
dirs=()
merge=0
while [ $# -gt 0 ]; do
  case "$1" in
    -s) shift ;;
    --) ;;
    -merge=1) merge=1 ;;
    -*) ;;
    *) if [ -z "$target" ]; then target="$1"; else dirs+=("$1"); fi ;;
  esac
  shift
done
if [ "$merge" = 1 ]; then
  echo "#1	INITED exec/s: 0 rss: 30Mb" >&2
  echo "MERGE-OUTER: 3 new files with 5 new features added; 5 new coverage edges" >&2
  [ "${FAKE_MERGE_EXIT:-0}" = 0 ] || exit "$FAKE_MERGE_EXIT"
  for d in "${dirs[@]:1}"; do
    for f in "$d"/*; do
      [ -f "$f" ] || continue
      [ -e "${dirs[0]}/$(basename "$f")" ] || cp "$f" "${dirs[0]}/"
    done
  done
  exit 0
fi
echo "INFO: Seed: 1" >&2
echo "#100: cov: 10 ft: 20 corp: 5 exec/s: 0 oom/timeout/crash: 0/0/0 time: 2s job: 1 dft_time: 0" >&2
for i in 1 2 3; do printf 'new %s %s' "$target" "$i" > "${dirs[0]}/fake-$target-$i"; done
if [ -n "$FAKE_ORPHAN" ]; then
  # What libFuzzer's fork-mode parent is to a Ctrl-C: a background job of
  # a non-interactive shell ignores SIGINT, as system(3)'s caller does.
  sleep 120 &
  mkdir -p "$TMPDIR/libFuzzerTemp.FuzzWithFork$!.dir"
  echo $! > "$FAKE_ORPHAN"
  wait
fi
sleep "${FAKE_SLEEP:-0}"
echo "#200: cov: 12 ft: 25 corp: 7 exec/s: 0 oom/timeout/crash: 0/0/1 time: 4s job: 2 dft_time: 0" >&2
exit 0
"##;

fn real_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn host() -> String {
    let out = Command::new("rustc").arg("-vV").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .unwrap()
}

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A repository-shaped directory (fuzz/Cargo.toml, a copy of the seeds and
/// regressions), the stand-in `cargo`, a `rustc` whose sysroot is
/// `sysroot/`, and a private TMPDIR.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let f = Fake { dir };
        std::fs::create_dir_all(f.root().join("fuzz")).unwrap();
        std::fs::write(f.root().join("fuzz/Cargo.toml"), "").unwrap();
        for sub in ["scenario", "script", "scripts"] {
            common::copy_tree(
                &real_root().join("corpus").join(sub),
                &f.root().join("corpus").join(sub),
            );
        }
        let bin = f.path("bin");
        std::fs::create_dir_all(&bin).unwrap();
        write_exe(&bin.join("cargo"), FAKE_CARGO);
        write_exe(
            &bin.join("rustc"),
            &format!(
                "#!/bin/sh\ncase \"$*\" in\n  *sysroot*) echo \"$FAKE_SYSROOT\" ;;\n  *) echo 'host: {}' ;;\nesac\n",
                host()
            ),
        );
        std::fs::create_dir_all(f.path("sysroot")).unwrap();
        std::fs::create_dir_all(f.path("tmp")).unwrap();
        f
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn root(&self) -> PathBuf {
        self.path("repo")
    }

    /// Where the fake llvm-tools go for `--coverage`.
    fn tools_dir(&self) -> PathBuf {
        self.path("sysroot")
            .join("lib/rustlib")
            .join(host())
            .join("bin")
    }

    fn campaign(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bgfuzz"));
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.current_dir(self.root())
            .args(["campaign", "--time", "1s"])
            .args(args)
            .env("PATH", path)
            .env("FAKE_LOG", self.path("cargo.log"))
            .env("FAKE_SYSROOT", self.path("sysroot"))
            .env("TMPDIR", self.path("tmp"))
            .env_remove("BGFUZZ_VARIANT")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.campaign(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn cargo_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("cargo.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn report(&self) -> serde_json::Value {
        let p = self.root().join("campaign-out/report.json");
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    }

    fn report_md(&self) -> String {
        std::fs::read_to_string(self.root().join("campaign-out/report.md")).unwrap()
    }
}

/// Every file under `dir` and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Issue 10, item 2: the tracked seeds are inputs only; the working corpus
/// is under --out, and it is what the merge grows.
#[test]
fn the_seeds_stay_as_they_are_and_the_working_corpus_grows() {
    let f = Fake::new();
    let seeds = snapshot(&f.root().join("corpus"));
    let out = f.run(&[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(snapshot(&f.root().join("corpus")), seeds, "corpus/ changed");
    let r = f.report();
    for (i, target) in ["scenario", "script"].iter().enumerate() {
        let t = &r["targets"][i];
        assert_eq!(t["target"], *target);
        assert_eq!(t["corpus"], format!("campaign-out/{target}/corpus"));
        assert_eq!(t["corpus_before"], 0);
        assert!(t["corpus_after"].as_u64().unwrap() >= 3, "{t:#}");
        assert_eq!(t["seeds"], format!("corpus/{target}"));
        let work = f.root().join("campaign-out").join(target).join("corpus");
        assert!(work.join(format!("fake-{target}-1")).is_file());
    }
    // The seeds are passed to libFuzzer, never first (where it writes).
    let calls = f.cargo_calls();
    assert!(calls.iter().any(|c| c.contains("/corpus/scenario")));
    for c in &calls {
        let dirs: Vec<&str> = c
            .split(" -- ")
            .next()
            .unwrap()
            .split(' ')
            .filter(|w| w.starts_with('/'))
            .collect();
        assert!(
            !dirs[0].contains("/repo/corpus/"),
            "libFuzzer writes into the seeds: {c}"
        );
    }
    // A second run resumes from the working corpus.
    let out = f.run(&[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(f.report()["targets"][0]["corpus_before"].as_u64().unwrap() >= 3);
    assert_eq!(snapshot(&f.root().join("corpus")), seeds);
}

/// Issue 10, item 4: progress while fuzzing, also into a log (stderr not a
/// terminal): per target, execs, exec/s, corpus, crashes.
#[test]
fn progress_shows_execs_rate_corpus_and_crashes_per_target() {
    let f = Fake::new();
    let out = f.run(&[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    for target in ["scenario", "script"] {
        assert!(
            err.contains(&format!("{target}: building and fuzzing for 1s")),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "{target}: 100 execs, 50 exec/s, corpus 5, crashes 0\n"
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "{target}: 200 execs, 50 exec/s, corpus 7, crashes 1 (exit 0)"
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!("{target} merge: merging new inputs")),
            "{err}"
        );
        // A merge's status lines count its replay, not fuzzing: its
        // summary is libFuzzer's MERGE-OUTER line.
        assert!(
            err.contains(&format!(
                "{target} merge: MERGE-OUTER: 3 new files with 5 new features added; 5 new coverage edges (exit 0)"
            )),
            "{err}"
        );
        assert!(!err.contains(&format!("{target} merge: 1 execs")), "{err}");
    }
}

/// Issue 10, item 3: without llvm-tools, `--coverage` fails at once, before
/// building or creating anything, and says how to install them.
#[test]
fn coverage_without_llvm_tools_fails_before_anything_is_built() {
    let f = Fake::new();
    let out = f.run(&["--coverage"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("--coverage needs llvm-tools"), "{err}");
    assert!(
        err.contains("rustup component add llvm-tools-preview"),
        "{err}"
    );
    assert!(f.cargo_calls().is_empty(), "{:?}", f.cargo_calls());
    assert!(!f.root().join("campaign-out").exists());
}

/// Issue 10, item 3: a coverage step that fails is in the report, which is
/// written, and the campaign exits 2.
#[test]
fn a_failed_coverage_is_reported_and_the_report_is_written() {
    let f = Fake::new();
    std::fs::create_dir_all(f.tools_dir()).unwrap();
    for t in ["llvm-cov", "llvm-profdata"] {
        write_exe(&f.tools_dir().join(t), "#!/bin/sh\nexit 1\n");
    }
    let out = f.run(
        &["--coverage", "--targets", "scenario"],
        &[("FAKE_COVERAGE_EXIT", "1")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let r = f.report();
    let errors = r["targets"][0]["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("coverage failed")),
        "{r:#}"
    );
    let md = f.report_md();
    assert!(md.contains("## Errors"), "{md}");
    assert!(md.contains("scenario: coverage failed"), "{md}");
    // cargo fuzz coverage succeeding but llvm-cov failing: also reported.
    let out = f.run(&["--coverage", "--targets", "scenario"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(f.report_md().contains("llvm-cov show failed"));
}

/// Issue 10, item 5: a failed merge is an error: exit 2, said in the report.
#[test]
fn a_failed_merge_is_an_error() {
    let f = Fake::new();
    let out = f.run(&["--targets", "scenario"], &[("FAKE_MERGE_EXIT", "1")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let r = f.report();
    assert_eq!(r["targets"][0]["merge_exit"], 1);
    let md = f.report_md();
    assert!(
        md.starts_with("# bgfuzz campaign: no new crash; ERRORS"),
        "{md}"
    );
    assert!(
        md.contains("scenario: the corpus merge failed (cargo fuzz exited with status 1)"),
        "{md}"
    );
}

/// Issue 10, item 5: a second campaign into the same --out refuses at once
/// (exit 2, naming the first one's pid) and leaves the first one be; once
/// the first is done, the next one runs.
#[test]
fn a_second_campaign_into_the_same_out_refuses() {
    let f = Fake::new();
    let mut first = f
        .campaign(&["--targets", "scenario"])
        .env("FAKE_SLEEP", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while f.cargo_calls().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = f.run(&["--targets", "scenario"], &[]);
    assert_eq!(second.status.code(), Some(2));
    let err = text(&second.stderr);
    assert!(
        err.contains(&format!(
            "is in use by another campaign (pid {})",
            first.id()
        )),
        "{err}"
    );
    // The second never ran cargo.
    assert_eq!(f.cargo_calls().len(), 1, "{:?}", f.cargo_calls());
    assert_eq!(first.wait().unwrap().code(), Some(0));
    let third = f.run(&["--targets", "scenario"], &[]);
    assert_eq!(third.status.code(), Some(0), "{}", text(&third.stderr));
}

/// Issue 10, item 7: fork-mode temp dirs that a killed run left behind are
/// removed; a live process's are not.
#[test]
fn leftover_libfuzzer_temp_dirs_of_dead_runs_are_removed() {
    let f = Fake::new();
    let tmp = f.path("tmp");
    let dead = tmp.join("libFuzzerTemp.FuzzWithFork99999999.dir");
    std::fs::create_dir_all(dead.join("C")).unwrap();
    std::fs::write(dead.join("C/42"), vec![0u8; 4096]).unwrap();
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let live = tmp.join(format!("libFuzzerTemp.FuzzWithFork{}.dir", sleeper.id()));
    std::fs::create_dir_all(&live).unwrap();
    let out = f.run(&["--targets", "scenario"], &[]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!dead.exists(), "a dead run's temp dir is left");
    assert!(live.exists(), "a live run's temp dir was removed");
    assert_eq!(f.report()["stale_temp_dirs_removed"], 1);
    assert!(text(&out.stderr).contains("removed 1 libFuzzer temp dir(s)"));
}

/// Ctrl-C (SIGINT to the whole group) and SIGTERM (to bgfuzz alone) stop
/// every process the campaign started, including one that ignores SIGINT
/// and whose parent died first (libFuzzer's fork-mode parent inside
/// `system`), remove its temp dir, keep every file, and exit 128 + signal.
#[test]
fn an_interrupted_campaign_stops_every_process_it_started() {
    use std::os::unix::process::CommandExt;
    for (signal, group, code) in [("INT", true, 130), ("TERM", false, 143)] {
        let f = Fake::new();
        let pidfile = f.path("orphan.pid");
        let child = f
            .campaign(&["--targets", "scenario"])
            .env("FAKE_ORPHAN", &pidfile)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let started = Instant::now();
        let orphan: u32 = loop {
            if let Some(p) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            assert!(started.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(50));
        };
        let temp = f
            .path("tmp")
            .join(format!("libFuzzerTemp.FuzzWithFork{orphan}.dir"));
        assert!(temp.exists());
        let corpus = snapshot(&f.root().join("corpus"));
        let target = if group {
            format!("-{}", child.id())
        } else {
            child.id().to_string()
        };
        let kill = Command::new("bash")
            .args(["-c", &format!("kill -{signal} -- {target}")])
            .status()
            .unwrap();
        assert!(kill.success());
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "SIG{signal}: {err}");
        assert!(
            err.contains(&format!("SIG{signal}: stopping the fuzzers")),
            "{err}"
        );
        assert!(
            !bgfuzz::campaign::alive(orphan),
            "SIG{signal}: the orphan lives on"
        );
        assert!(!temp.exists(), "SIG{signal}: its temp dir is left");
        assert_eq!(snapshot(&f.root().join("corpus")), corpus);
        // The next run resumes.
        let again = f.run(&["--targets", "scenario"], &[]);
        assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    }
}

/// Issue 10, item 16: outside the repository, the campaign fails before it
/// creates anything (it made `./corpus` and `./campaign-out`).
#[test]
fn outside_the_repository_it_fails_and_creates_nothing() {
    let f = Fake::new();
    let empty = f.path("elsewhere");
    std::fs::create_dir_all(&empty).unwrap();
    let out = f.campaign(&[]).current_dir(&empty).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("repository root"), "{err}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    assert!(f.cargo_calls().is_empty());
    // In the repository, a --corpus that does not exist is an error too.
    let out = f.run(&["--corpus", "no-such-dir"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--corpus no-such-dir: no such directory"));
    assert!(!f.root().join("no-such-dir").exists());
    assert!(!f.root().join("campaign-out").exists());
}

/// Issue 10, item 17 (campaign): `--help` describes every argument, its
/// default, and the exit codes.
#[test]
fn campaign_help_describes_every_argument_and_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_bgfuzz"))
        .args(["campaign", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for flag in [
        "--targets",
        "--time",
        "--jobs",
        "--variant",
        "--out",
        "--corpus",
        "--coverage",
    ] {
        let at = help
            .find(&format!("      {flag}"))
            .unwrap_or_else(|| panic!("{flag} missing:\n{help}"));
        let described = help[at..].lines().nth(1).unwrap_or("").trim();
        assert!(!described.is_empty(), "{flag} has no description:\n{help}");
    }
    for default in [
        "[default: scenario,script]",
        "[default: 60s]",
        "[default: 1]",
        "[default: BGFUZZ_VARIANT, else fixed]",
        "[default: campaign-out]",
        "[default: corpus]",
    ] {
        assert!(help.contains(default), "{default}:\n{help}");
    }
    assert!(help.contains("Exit status: 0 no new crash; 1 a new crash; 2 an error"));
    assert!(
        help.contains("130, 143 or 129 after SIGINT, SIGTERM or SIGHUP"),
        "{help}"
    );
}
