//! `bgfuzz kernel`: the oracles on recorded kernel output (no root needed),
//! and, as root on a kernel with btrfs and loop devices, real runs: the
//! seed race, `--fault eio`, SIGTERM and a panic mid-run, each leaving
//! nothing mounted, attached or enabled.
//!
//! Without root (or btrfs, loop devices, btrfs-progs) the real runs print
//! why they skipped; with BGFUZZ_KERNEL_TESTS=require (CI) they fail
//! instead.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use bgfuzz::kernel::ops::{KOp, Plan};
use bgfuzz::kernel::oracles::{
    check_trace, parse_kmsg, parse_trace_line, read_trace, TraceEvent, TraceLine,
};
use bgfuzz::scenario::Scenario;

fn fixture() -> Vec<TraceEvent> {
    read_trace(include_str!("data/kernel-trace.jsonl")).unwrap()
}

fn fixture_disk() -> BTreeSet<u64> {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("data/kernel-disk-bgs.json")).unwrap();
    v["disk_offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn invariants(events: &[TraceEvent], disk: &BTreeSet<u64>) -> Vec<String> {
    check_trace(events, Some(disk), false)
        .failures
        .into_iter()
        .map(|f| f.invariant)
        .collect()
}

#[test]
fn recorded_trace_conforms() {
    let ev = fixture();
    let c = check_trace(&ev, Some(&fixture_disk()), false);
    assert!(c.failures.is_empty(), "{:?}", c.failures);
    assert!(c.bgs_created >= 10, "the fixture churns block groups");
    assert!(c.bgs_removed >= 10);
    assert!(c.reserves_checked > 0 && c.commits > 0);
    assert_eq!(c.bgs_on_disk, Some(fixture_disk().len()));
}

fn index_of(ev: &[TraceEvent], pred: impl Fn(&TraceEvent) -> bool) -> usize {
    ev.iter()
        .position(pred)
        .expect("the fixture has such an event")
}

/// One event changed, one invariant reported.
#[test]
fn one_changed_event_breaks_its_invariant() {
    let disk = fixture_disk();
    let base = fixture();
    // The offset of a block group that is removed somewhere in the trace.
    let removed = base[index_of(&base, |e| e.event == "btrfs_remove_block_group")]
        .get("bytenr")
        .unwrap();
    let last_remove = base
        .iter()
        .rposition(|e| e.event == "btrfs_remove_block_group" && e.get("bytenr") == Some(removed))
        .unwrap();
    type Edit = Box<dyn Fn(&mut Vec<TraceEvent>)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "reserve-outside-live-bg",
            // A reservation after the bg was removed now names it.
            Box::new(move |ev: &mut Vec<TraceEvent>| {
                let i = (last_remove..ev.len())
                    .find(|&i| ev[i].event == "btrfs_reserve_extent")
                    .expect("a reservation after the removal");
                ev[i].fields.insert("block_group".into(), removed);
            }),
        ),
        (
            "unused-not-empty",
            Box::new(|ev: &mut Vec<TraceEvent>| {
                let i = index_of(ev, |e| e.event == "btrfs_add_unused_block_group");
                ev[i].fields.insert("used".into(), 4096);
            }),
        ),
        (
            "remove-not-empty",
            Box::new(|ev: &mut Vec<TraceEvent>| {
                let i = index_of(ev, |e| e.event == "btrfs_remove_block_group");
                ev[i].fields.insert("used".into(), 16384);
            }),
        ),
        (
            "bg-created-without-chunk",
            Box::new(|ev: &mut Vec<TraceEvent>| {
                let i = index_of(ev, |e| e.event == "btrfs_chunk_alloc");
                ev[i].fields.insert("size".into(), 1 << 20);
            }),
        ),
        (
            "commit-generation",
            Box::new(|ev: &mut Vec<TraceEvent>| {
                let i = ev
                    .iter()
                    .rposition(|e| e.event == "btrfs_transaction_commit")
                    .unwrap();
                ev[i].fields.insert("gen".into(), 1);
            }),
        ),
        (
            "bg-not-on-disk",
            // The last block group created is never removed: dropping its
            // chunk_free elsewhere is not needed; renaming its creation is.
            Box::new(|ev: &mut Vec<TraceEvent>| {
                let i = ev
                    .iter()
                    .rposition(|e| e.event == "btrfs_chunk_alloc")
                    .unwrap();
                let j = ev
                    .iter()
                    .rposition(|e| e.event == "btrfs_add_block_group")
                    .unwrap();
                for k in [i, j] {
                    ev[k].fields.insert("offset".into(), 1 << 40);
                }
            }),
        ),
    ];
    for (want, edit) in cases {
        let mut ev = base.clone();
        edit(&mut ev);
        let got = invariants(&ev, &disk);
        if want == "bg-not-on-disk" {
            // Renaming a bg also strands its old item and reservations.
            assert!(got.iter().any(|g| g == want), "{want}: reported {got:?}");
        } else {
            assert_eq!(got, vec![want], "exactly the broken invariant");
        }
    }
}

#[test]
fn disk_and_trace_must_agree() {
    let ev = fixture();
    let mut disk = fixture_disk();
    let first = *disk.iter().next().unwrap();
    disk.remove(&first);
    assert_eq!(invariants(&ev, &disk), vec!["bg-not-on-disk"]);
    let mut disk = fixture_disk();
    disk.insert(12345 << 20);
    assert_eq!(invariants(&ev, &disk), vec!["bg-on-disk-not-live"]);
    // A fault run: only what was never seen is wrong.
    let mut disk = fixture_disk();
    disk.remove(&first);
    assert!(check_trace(&ev, Some(&disk), true).failures.is_empty());
}

#[test]
fn trace_lines_parse_and_filter_by_fsid() {
    let fsid = "3d608fa7-d3a7-4c30-bf27-762253141a00";
    let line = format!(
        "     kworker/u8:3-123     [001] ..... 740.129727: btrfs_add_block_group: {fsid}: block_group offset=201523200 size=117440512 flags=1(DATA) bytes_used=0 bytes_super=0 create=1"
    );
    let TraceLine::Event(e) = parse_trace_line(&line, fsid) else {
        panic!("not parsed: {line}")
    };
    assert_eq!(e.event, "btrfs_add_block_group");
    assert_eq!(e.ts, "740.129727");
    assert_eq!(e.get("offset"), Some(201523200));
    assert_eq!(e.get("flags"), Some(1));
    assert_eq!(e.get("create"), Some(1));
    let other = line.replace(fsid, "00000000-0000-0000-0000-000000000000");
    assert_eq!(parse_trace_line(&other, fsid), TraceLine::Other);
    assert_eq!(
        parse_trace_line("CPU:1 [LOST 42 EVENTS]", fsid),
        TraceLine::Lost(42)
    );
}

/// Lines this kernel (6.18) logged in a `--fault eio` run.
const FAULT_LOG: &[&str] = &[
    "BTRFS info (device loop0): first mount of filesystem 3d608fa7-d3a7-4c30-bf27-762253141a00",
    "critical space allocation error, dev loop0, sector 1167400 op 0x1:(WRITE) flags 0x4800 phys_seg 21 prio class 2",
    "BTRFS: error (device loop0) in btrfs_commit_transaction:2546: errno=-5 IO failure (Error while writing out transaction)",
    "BTRFS info (device loop0 state E): forced readonly",
    "BTRFS error (device loop0 state EA): Transaction aborted (error -5)",
    "BTRFS: error (device loop0 state EA) in cleanup_transaction:2038: errno=-5 IO failure",
];

#[test]
fn kernel_log_aborts_name_errno_and_function() {
    let recs: Vec<String> = FAULT_LOG.iter().map(|s| s.to_string()).collect();
    let injected = parse_kmsg(&recs, "loop0", Some(1));
    assert_eq!(injected.aborts.len(), 2);
    assert!(injected
        .aborts
        .iter()
        .all(|a| a.injected && a.errno == Some(-5)));
    assert_eq!(
        injected.aborts[0].function.as_deref(),
        Some("btrfs_commit_transaction")
    );
    assert_eq!(
        injected.aborts[1].function.as_deref(),
        Some("cleanup_transaction")
    );
    assert_eq!(injected.findings(), 0);
    // The same lines without a fault: every abort is a finding.
    let found = parse_kmsg(&recs, "loop0", None);
    assert_eq!(found.findings(), 2);
    // Another device's abort is not ours.
    assert!(parse_kmsg(&recs, "loop1", None).aborts.is_empty());
    let warn = vec![
        "WARNING: CPU: 1 PID: 77 at fs/btrfs/block-group.c:3330 btrfs_write_dirty_block_groups+0x3a/0x400".to_string(),
    ];
    let w = parse_kmsg(&warn, "loop0", None);
    assert_eq!(w.warnings.len(), 1);
    assert_eq!(w.findings(), 1);
}

/// An abort nobody injected: a finding, exit 1, the kernel's own lines in
/// the report.
#[test]
fn an_abort_not_injected_is_a_finding_with_the_kernels_lines() {
    use bgfuzz::kernel::oracles::CheckVerdict;
    use bgfuzz::kernel::report::{build, table, Inputs};
    let recs: Vec<String> = FAULT_LOG.iter().map(|s| s.to_string()).collect();
    let inputs = |log| Inputs {
        kernel: "6.18.0 #1".into(),
        script: None,
        threads: 4,
        tasks: vec!["A".into()],
        image_bytes: 1 << 30,
        mount_options: "space_cache=v1".into(),
        fsid: "x".into(),
        device: "loop0".into(),
        run_time: Duration::from_secs(10),
        counters: Default::default(),
        log,
        check: CheckVerdict {
            clean: true,
            output: vec![],
        },
        conformance: Some(check_trace(&fixture(), None, false)),
        trace_unavailable: None,
        fault: None,
        interrupted: false,
        cleanup: vec![],
        leftovers: vec![],
        notes: vec![],
        seed: 0,
    };
    let r = build(inputs(parse_kmsg(&recs, "loop0", None)));
    assert_eq!(r.exit_code(), 1);
    assert_eq!((r.aborts, r.aborts_injected), (2, 0));
    let t = table(&r);
    assert!(t.contains("verdict: FINDING"), "{t}");
    assert!(
        t.contains("in cleanup_transaction:2038: errno=-5 IO failure"),
        "{t}"
    );
    assert!(t.contains("Linux 6.18.0"), "{t}");
    // The same log with everything after the fault injected: nothing found.
    let r = build(inputs(parse_kmsg(&recs, "loop0", Some(1))));
    assert_eq!(r.exit_code(), 0, "{:?}", r.findings);
    // A warning from elsewhere in the kernel is shown, not a finding.
    let other = vec!["WARNING: CPU: 0 PID: 9 at drivers/gpu/x.c:1 f+0x1/0x2".to_string()];
    assert_eq!(parse_kmsg(&other, "loop0", None).findings(), 0);
}

/// `mount` header lines are the kernel run's, whether or not the script
/// parser knows them: taken out (line numbers kept) and mapped.
#[test]
fn mount_lines_become_mount_options() {
    use bgfuzz::kernel::take_mount_lines;
    let (rest, m) = take_mount_lines(b"mount space_cache # v1\nA: start\nA: frobnicate\n");
    assert_eq!(m.as_deref(), Some("space_cache=v1,nodiscard"));
    // The parser still names line 3 for the bad step.
    assert_eq!(Scenario::parse(&rest).unwrap_err().line, 3);
    let (_, m) = take_mount_lines(b"mount discard,commit=5\nA: start\n");
    assert_eq!(m.as_deref(), Some("discard,commit=5"));
    let (_, m) = take_mount_lines(b"mount space_cache fitrim\nA: trim\n");
    assert_eq!(m.as_deref(), Some("space_cache=v1,nodiscard"));
    let (rest, m) = take_mount_lines(b"A: start\n");
    assert_eq!((rest.as_slice(), m), (&b"A: start\n"[..], None));
}

#[test]
fn scripts_map_onto_kernel_operations() {
    let text = "A: start\nA: alloc data 1G\nA: alloc metadata 64K\nB: start\nB: free e1\nB: run_delayed_refs\nC: start\nC: commit\nC: continue\nC: delete_unused\nA: end\n";
    let scn = Scenario::parse(text.as_bytes()).unwrap();
    let plan = Plan::from_scenario(&scn);
    let names: Vec<&str> = plan.tasks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["A", "B", "C"]);
    assert_eq!(
        plan.tasks[0].1,
        vec![
            KOp::Handle,
            KOp::AllocData {
                id: 1,
                bytes: bgfuzz::kernel::ops::DATA_CAP
            },
            KOp::AllocMeta { id: 2, files: 16 },
            KOp::Nothing,
        ]
    );
    assert_eq!(
        plan.tasks[1].1,
        vec![KOp::Handle, KOp::Free { id: 1 }, KOp::RunDelayedRefs]
    );
    assert_eq!(
        plan.tasks[2].1,
        vec![KOp::Handle, KOp::Commit, KOp::DeleteUnused],
        "`continue` is the kernel's own stepping: no operation"
    );
    // Operations the script language may grow are understood by name, and
    // an unknown one is a no-op with a note, not an error.
    let mut id = 0;
    assert_eq!(
        KOp::from_text("relocate 50", &mut id).0,
        KOp::Relocate { usage: 50 }
    );
    assert_eq!(KOp::from_text("trim", &mut id).0, KOp::Trim);
    let (k, note) = KOp::from_text("frobnicate", &mut id);
    assert_eq!(k, KOp::Nothing);
    assert!(note.unwrap().contains("no kernel counterpart"));
    assert_eq!(bgfuzz::kernel::image_size(None), 1 << 30);
    assert_eq!(bgfuzz::kernel::image_size(Some(64 << 30)), 4 << 30);
    assert_eq!(bgfuzz::kernel::image_size(Some(16 << 20)), 1 << 30);
}

// ------------------------------------------------------------ real runs

/// Real runs one at a time: they share the machine's loop devices and the
/// "nothing left behind" checks look at the whole machine.
static REAL: Mutex<()> = Mutex::new(());

/// Whether this machine can run `bgfuzz kernel`; prints why not.
fn can_run(test: &str) -> bool {
    match bgfuzz::kernel::setup::preflight() {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("BGFUZZ_KERNEL_TESTS").as_deref() == Ok("require") {
                panic!("{test}: BGFUZZ_KERNEL_TESTS=require but: {why}");
            }
            // Past the test harness's capture, so it shows without
            // --nocapture.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{test}: SKIPPED: {why}");
            false
        }
    }
}

fn bgfuzz(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bgfuzz"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Nothing on the machine from a `bgfuzz kernel` run: no mount and no
/// loop device under a bgfuzz-kernel- directory, no trace instance.
fn assert_nothing_left() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains("bgfuzz-kernel-") && !mounts.contains("bgfuzz-tmpfs"),
        "{mounts}"
    );
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            assert!(!b.contains("bgfuzz-kernel-"), "loop device left: {b}");
        }
    }
    // Trace instances: look through a tracefs mount of our own.
    let d = tempfile::tempdir().unwrap();
    if rustix::mount::mount(
        "nodev",
        d.path(),
        "tracefs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .is_ok()
    {
        let left: Vec<String> = std::fs::read_dir(d.path().join("instances"))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("bgfuzz-"))
                    .collect()
            })
            .unwrap_or_default();
        rustix::mount::unmount(d.path(), rustix::mount::UnmountFlags::empty()).unwrap();
        assert!(left.is_empty(), "trace instances left: {left:?}");
    }
}

#[test]
fn seed_race_on_the_kernel() {
    if !can_run("seed_race_on_the_kernel") {
        return;
    }
    let _g = REAL.lock().unwrap_or_else(|e| e.into_inner());
    let trace = tempfile::NamedTempFile::new().unwrap();
    let out = bgfuzz(&[
        "kernel",
        "corpus/scripts/seed-race.scn",
        "--time",
        "5s",
        "--json",
        "--keep-trace",
        &trace.path().to_string_lossy(),
    ]);
    let r = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert!(r["kernel"].as_str().unwrap().contains(
        &rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned()
    ));
    assert!(r["bgs_created"].as_u64().unwrap() >= 1, "{r:#}");
    assert!(r["commits"].as_u64().unwrap() >= 1);
    assert_eq!(r["aborts"], 0);
    assert_eq!(r["btrfs_check"]["clean"], true);
    assert_eq!(r["conformance"]["failures"].as_array().unwrap().len(), 0);
    // A probe that read no items would have reported every live bg.
    assert!(
        r["conformance"]["commit_probes"].as_u64().unwrap() >= 1,
        "{r:#}"
    );
    assert!(r["leftovers"].as_array().unwrap().is_empty());
    assert!(r["cleanup"].as_array().unwrap().is_empty());
    // The kept trace is the one that was checked, and checks again.
    let ev = read_trace(&std::fs::read_to_string(trace.path()).unwrap()).unwrap();
    assert_eq!(
        ev.len() as u64,
        r["conformance"]["events"].as_u64().unwrap()
    );
    assert!(check_trace(&ev, None, false).failures.is_empty());
    assert_nothing_left();
}

#[test]
fn fault_eio_aborts_and_what_was_committed_survives() {
    if !can_run("fault_eio_aborts_and_what_was_committed_survives") {
        return;
    }
    let _g = REAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = bgfuzz(&["kernel", "--time", "6s", "--fault", "eio", "--json"]);
    let r = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert!(r["aborts"].as_u64().unwrap() >= 1, "{r:#}");
    assert_eq!(r["aborts"], r["aborts_injected"]);
    assert_eq!(r["fault"]["abort_seen"], true);
    assert_eq!(r["fault"]["ro_mount_ok"], true);
    assert_eq!(r["btrfs_check"]["clean"], true);
    let errnos: Vec<i64> = r["kernel_log"]["aborts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["errno"].as_i64())
        .collect();
    assert!(errnos.contains(&-5), "an I/O error abort: {errnos:?}");
    assert_nothing_left();
}

fn signal_mid_run(sig: rustix::process::Signal) {
    let child = Command::new(env!("CARGO_BIN_EXE_bgfuzz"))
        .args(["kernel", "--time", "60s", "--json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_of(&out);
    assert_eq!(r["interrupted"], true);
    assert!(r["seconds"].as_f64().unwrap() < 30.0);
    assert_nothing_left();
}

#[test]
fn sigterm_and_sigint_undo_everything() {
    if !can_run("sigterm_and_sigint_undo_everything") {
        return;
    }
    let _g = REAL.lock().unwrap_or_else(|e| e.into_inner());
    signal_mid_run(rustix::process::Signal::TERM);
    signal_mid_run(rustix::process::Signal::INT);
}

#[test]
fn a_panic_undoes_everything() {
    if !can_run("a_panic_undoes_everything") {
        return;
    }
    let _g = REAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = bgfuzz(&["kernel", "--time", "30s", "--panic-after", "3s", "--json"]);
    assert_eq!(out.status.code(), Some(101));
    assert!(String::from_utf8_lossy(&out.stderr).contains("deliberate panic"));
    assert_nothing_left();
}

#[test]
fn refuses_without_root_and_on_bad_scripts() {
    // Not root: exit 2 with the reason. As root, drop to nobody to see it.
    let is_root = rustix::process::geteuid().is_root();
    let out = if is_root {
        match Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_bgfuzz"))
            .args(["kernel", "--time", "1s"])
            .output()
        {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!(
                    "refuses_without_root: setpriv unavailable ({e}): root refusal not checked"
                );
                None
            }
        }
    } else {
        Some(bgfuzz(&["kernel", "--time", "1s"]))
    };
    if let Some(out) = out {
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("needs root"));
    }
    if is_root && Path::new("/dev/loop-control").exists() && can_run("bad script") {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.scn");
        std::fs::write(&bad, "A: start\nA: frobnicate\n").unwrap();
        let out = bgfuzz(&["kernel", &bad.to_string_lossy(), "--time", "1s"]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.scn:2"), "{err}");
    }
}
