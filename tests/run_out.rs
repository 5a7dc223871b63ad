//! `bgfuzz run --out`: a directory that cannot be written fails before the
//! search, and a witness whose script cannot be kept is printed anyway
//! (issue 10, item 6).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bgfuzz(args: &[&str], out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bgfuzz"));
    c.arg("run")
        .args(args)
        .arg("--out")
        .arg(out)
        .env_remove("BGFUZZ_VARIANT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits at most `limit` for the command; `None` (killed) if it runs on.
fn output_within(mut c: Command, limit: Duration) -> Option<Output> {
    let mut child = c.spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child.wait_with_output().unwrap())
}

#[test]
fn an_out_that_cannot_be_created_fails_before_the_search() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = file.join("sub");
    // A hundred million cases would take hours: only a check made before
    // the search ends this in time.
    let c = bgfuzz(&["--variant", "fixed", "--cases", "100000000"], &out);
    let res = output_within(c, Duration::from_secs(60))
        .expect("still searching after 60 s: --out was not checked first");
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains(&format!("--out {}", out.display())), "{err}");
    assert!(res.stdout.is_empty());
}

#[test]
fn a_witness_that_cannot_be_written_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    // Where the witness goes (its name is its kind and a hash of its text).
    let first = dir.path().join("first");
    let res = output_within(
        bgfuzz(&["--variant", "bug-ff1f8250"], &first),
        Duration::from_secs(300),
    )
    .unwrap();
    assert_eq!(res.status.code(), Some(1));
    let kept: Vec<_> = std::fs::read_dir(&first)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let script = std::fs::read_to_string(&kept[0]).unwrap();
    // Now a non-empty directory stands where that file would go.
    let second = dir.path().join("second");
    let blocker = second.join(kept[0].file_name().unwrap());
    std::fs::create_dir_all(&blocker).unwrap();
    std::fs::write(blocker.join("x"), "").unwrap();
    let res = output_within(
        bgfuzz(&["--variant", "bug-ff1f8250"], &second),
        Duration::from_secs(300),
    )
    .unwrap();
    assert_eq!(res.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains(&script), "witness not printed:\n{stdout}");
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("(printed above)"), "{err}");
}
