//! `bgfuzz bench --cargo-fuzz`. The tests that run libFuzzer need
//! cargo-fuzz installed and build the `scenario` target, so they are
//! `#[ignore]`d under plain `cargo test`; `.ci/run` runs them
//! (`--ignored`) once it has installed cargo-fuzz. The others run always.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bgfuzz::bench::FinalStats;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The end of a real `-print_final_stats=1` run of the `scenario` target
/// under bug-ff1f8250 that crashed, status lines before it.
const CRASH_LOG: &str = "\
#5861\tNEW    cov: 858 ft: 1344 corp: 58/1100b lim: 33 exec/s: 0 rss: 28Mb L: 30/33 MS: 2 ChangeByte-InsertRepeatedBytes-
==15520== ERROR: libFuzzer: deadly signal
SUMMARY: libFuzzer: deadly signal
artifact_prefix='/tmp/tmp.Z9FQCIpFBo/'; Test unit written to /tmp/tmp.Z9FQCIpFBo/crash-8574103d5f0b41ea324107ae1bec829bc6acf57b
Base64: k5MSAAAAgYH///////+TEgAAAP8XABYAAAAAAAAACv86AP//Ogo=
stat::number_of_executed_units: 13218
stat::average_exec_per_sec:     0
stat::new_units_added:          163
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              89
";

#[test]
fn parses_libfuzzer_final_stats() {
    let s = FinalStats::parse(CRASH_LOG).expect("the log has stat:: lines");
    assert_eq!(
        s,
        FinalStats {
            executed_units: 13218,
            average_exec_per_sec: 0,
            new_units_added: 163,
            peak_rss_mb: 89,
        }
    );
    // A run that ended at -max_total_time: libFuzzer's own rate is there.
    let done =
        "#1048576\tDONE   cov: 901 ft: 2301 corp: 210/9Kb lim: 4096 exec/s: 17476 rss: 60Mb\n\
                Done 1048576 runs in 60 second(s)\n\
                stat::number_of_executed_units: 1048576\n\
                stat::average_exec_per_sec:     17476\n\
                stat::new_units_added:          1210\n\
                stat::slowest_unit_time_sec:    0\n\
                stat::peak_rss_mb:              60\n";
    let s = FinalStats::parse(done).unwrap();
    assert_eq!(s.executed_units, 1048576);
    assert_eq!(s.average_exec_per_sec, 17476);
    assert_eq!(s.new_units_added, 1210);
}

#[test]
fn no_final_stats_is_none_not_zero() {
    // A libFuzzer killed before it printed them.
    assert_eq!(
        FinalStats::parse("#2\tINITED cov: 333 ft: 334 corp: 1/1b exec/s: 0 rss: 28Mb\n"),
        None
    );
    assert_eq!(
        FinalStats::parse("stat::number_of_executed_units: lots\n"),
        None
    );
}

fn bgfuzz(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bgfuzz"));
    c.current_dir(dir).stdin(Stdio::null());
    c
}

#[test]
fn outside_the_repository_it_says_where_to_run_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = bgfuzz(dir.path())
        .args(["bench", "--only-cargo-fuzz"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fuzz/Cargo.toml"), "{err}");
    assert!(err.contains("repository root"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn without_cargo_fuzz_it_says_what_to_install() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fuzz")).unwrap();
    std::fs::write(dir.path().join("fuzz/Cargo.toml"), "").unwrap();
    // A `cargo` that knows no `fuzz` subcommand, as cargo does without
    // cargo-fuzz.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let cargo = bin.join("cargo");
    std::fs::write(
        &cargo,
        "#!/bin/sh\necho \"error: no such command: \\`$1\\`\" >&2\nexit 101\n",
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = bgfuzz(dir.path())
        .args(["bench", "--cargo-fuzz"])
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cargo install cargo-fuzz --locked"), "{err}");
    // It stopped before any in-process figure was taken.
    assert!(out.stdout.is_empty());
}

#[test]
fn a_fuzz_cap_under_a_second_is_refused() {
    let out = bgfuzz(&root())
        .args(["bench", "--only-cargo-fuzz", "--fuzz-cap", "500ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fuzz-cap"));
}

/// `bgfuzz bench --only-cargo-fuzz` from the repository root, with its
/// own TMPDIR so the test can see what it leaves there.
fn fuzz_bench(tmp: &Path, args: &[&str]) -> Command {
    let mut c = bgfuzz(&root());
    c.args(["bench", "--only-cargo-fuzz"])
        .args(args)
        .env("TMPDIR", tmp);
    c
}

fn leftovers(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("bgfuzz-bench-"))
        })
        .collect()
}

#[test]
#[ignore = "needs cargo-fuzz; run by .ci/run"]
fn cargo_fuzz_finds_the_race_from_an_empty_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let out = fuzz_bench(
        tmp.path(),
        &[
            "--json",
            "--fuzz-variants",
            "bug-ff1f8250",
            "--fuzz-seeds",
            "1",
            "--fuzz-cap",
            "30s",
        ],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &v["cargo_fuzz"];
    assert_eq!(f["target"], "scenario");
    assert_eq!(f["seeds"], 1);
    let d = &f["detect"][0];
    assert_eq!(d["variant"], "bug-ff1f8250");
    assert_eq!(d["crashed"], 1, "{err}");
    assert_eq!(d["found"], 1, "{err}");
    assert_eq!(d["kinds"][0], "abort-enoent-outside-critical");
    let run = &d["runs"][0];
    assert_eq!(run["seed"], 1);
    let t = run["crash_seconds"].as_f64().expect("a crash time");
    assert!(t > 0.0 && t <= run["seconds"].as_f64().unwrap());
    assert!(run["executions"].as_u64().unwrap() > 0);
    assert!(run["minimized_steps"].as_u64().unwrap() > 0);
    // libFuzzer's first crash sometimes needs an injected ENOENT (which
    // `fixed` forgives); then it fuzzes on for one without.
    match run["needs_fault"].as_bool().expect("the crash was triaged") {
        false => {
            assert!(run["fault_free_seconds"].as_f64().unwrap() >= t);
            assert_eq!(d["without_faults"], 1);
        }
        true => {
            assert!(run["fault_free_seconds"].is_null());
            assert_eq!(d["without_faults"], 0);
        }
    }
    assert!(run["crashes"].as_u64().unwrap() >= 1);
    assert!(d["exec_per_sec"]["median"].as_f64().unwrap() > 0.0);
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

#[test]
#[ignore = "needs cargo-fuzz; run by .ci/run"]
fn a_terminated_fuzz_bench_removes_its_temporary_directory() {
    let tmp = tempfile::tempdir().unwrap();
    // `fixed` never crashes: libFuzzer runs until the signal.
    let mut child = fuzz_bench(
        tmp.path(),
        &[
            "--fuzz-variants",
            "fixed",
            "--fuzz-seeds",
            "1",
            "--fuzz-cap",
            "120s",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let started = Instant::now();
    // The corpus fills once libFuzzer runs.
    while !leftovers(tmp.path())
        .iter()
        .any(|d| std::fs::read_dir(d.join("corpus")).is_ok_and(|mut e| e.next().is_some()))
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "libFuzzer never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}
