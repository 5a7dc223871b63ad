//! The kernel run's report: a table for people, JSON for machines, and the
//! verdict (exit 0: nothing found; 1: a finding; 130: interrupted).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::ops::CounterSnapshot;
use super::oracles::{CheckVerdict, Conformance, KernelLog};

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FaultReport {
    pub kind: &'static str,
    /// Seconds into the run when the device started failing writes.
    pub armed_at_s: Option<f64>,
    pub filler_bytes: u64,
    pub abort_seen: bool,
    pub ro_mount_ok: bool,
    pub ro_mount_error: Option<String>,
    /// Entries in the root directory of the read-only mount.
    pub files_after: usize,
    pub error: Option<String>,
}

pub struct Inputs {
    pub kernel: String,
    pub script: Option<String>,
    pub threads: usize,
    pub tasks: Vec<String>,
    pub image_bytes: u64,
    pub mount_options: String,
    pub fsid: String,
    pub device: String,
    pub run_time: Duration,
    pub counters: CounterSnapshot,
    pub log: KernelLog,
    pub check: CheckVerdict,
    pub conformance: Option<Conformance>,
    pub trace_unavailable: Option<String>,
    pub fault: Option<FaultReport>,
    pub interrupted: bool,
    pub cleanup: Vec<String>,
    pub leftovers: Vec<String>,
    pub notes: Vec<String>,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelReport {
    /// `uname -r` and `uname -v`.
    pub kernel: String,
    pub script: Option<String>,
    pub seed: u64,
    pub threads: usize,
    pub tasks: Vec<String>,
    pub image_bytes: u64,
    pub mount_options: String,
    pub fsid: String,
    pub device: String,
    pub seconds: f64,
    /// Passes over the script (each thread's complete rounds).
    pub runs: u64,
    pub ops: u64,
    pub ops_per_s: f64,
    /// Commits the kernel made (btrfs_transaction_commit), whoever asked.
    pub commits: Option<usize>,
    pub commits_per_s: Option<f64>,
    pub bgs_created: Option<usize>,
    pub bgs_removed: Option<usize>,
    pub bgs_created_per_min: Option<f64>,
    pub aborts: usize,
    pub aborts_injected: usize,
    pub counters: CounterSnapshot,
    pub kernel_log: KernelLog,
    pub btrfs_check: CheckVerdict,
    pub conformance: Option<Conformance>,
    pub trace_unavailable: Option<String>,
    pub fault: Option<FaultReport>,
    pub interrupted: bool,
    /// Problems undoing the setup, and anything left mounted or attached.
    pub cleanup: Vec<String>,
    pub leftovers: Vec<String>,
    pub notes: Vec<String>,
    /// Why the run is a finding; empty when it is not.
    pub findings: Vec<String>,
}

impl KernelReport {
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            130
        } else if self.findings.is_empty() {
            0
        } else {
            1
        }
    }
}

pub fn build(i: Inputs) -> KernelReport {
    let secs = i.run_time.as_secs_f64().max(1e-3);
    let c = i.conformance.as_ref();
    let mut findings = Vec::new();
    for a in i.log.aborts.iter().filter(|a| !a.injected) {
        findings.push(format!(
            "transaction abort not injected: errno {} in {}: {}",
            a.errno.map_or("?".into(), |e| e.to_string()),
            a.function.as_deref().unwrap_or("?"),
            a.line
        ));
    }
    for l in &i.log.critical {
        findings.push(format!("BTRFS critical: {l}"));
    }
    for l in &i.log.warnings {
        findings.push(format!("kernel warning: {l}"));
    }
    if !i.check.clean {
        findings.push("btrfs check --readonly found errors".into());
    }
    if let Some(c) = c {
        if c.complete() {
            for f in &c.failures {
                findings.push(format!(
                    "tracepoint conformance: {}: {}",
                    f.invariant, f.message
                ));
            }
        }
    }
    if let Some(f) = &i.fault {
        if !f.abort_seen {
            findings
                .push("--fault: the device failed writes but the kernel logged no abort".into());
        }
        if !f.ro_mount_ok {
            findings.push(format!(
                "--fault: the filesystem did not mount read-only afterwards: {}",
                f.ro_mount_error.as_deref().unwrap_or("?")
            ));
        }
        if let Some(e) = &f.error {
            findings.push(format!("--fault: {e}"));
        }
    }
    if !i.leftovers.is_empty() {
        findings.push(format!("left behind: {}", i.leftovers.join("; ")));
    }
    let aborts_injected = i.log.aborts.iter().filter(|a| a.injected).count();
    KernelReport {
        kernel: i.kernel,
        script: i.script,
        seed: i.seed,
        threads: i.threads,
        tasks: i.tasks,
        image_bytes: i.image_bytes,
        mount_options: i.mount_options,
        fsid: i.fsid,
        device: i.device,
        seconds: secs,
        runs: i.counters.passes,
        ops: i.counters.ops,
        ops_per_s: i.counters.ops as f64 / secs,
        commits: c.map(|c| c.commits),
        commits_per_s: c.map(|c| c.commits as f64 / secs),
        bgs_created: c.map(|c| c.bgs_created),
        bgs_removed: c.map(|c| c.bgs_removed),
        bgs_created_per_min: c.map(|c| c.bgs_created as f64 * 60.0 / secs),
        aborts: i.log.aborts.len(),
        aborts_injected,
        counters: i.counters,
        kernel_log: i.log,
        btrfs_check: i.check,
        conformance: i.conformance,
        trace_unavailable: i.trace_unavailable,
        fault: i.fault,
        interrupted: i.interrupted,
        cleanup: i.cleanup,
        leftovers: i.leftovers,
        notes: i.notes,
        findings,
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("n/a".into(), |v| v.to_string())
}

/// The table a person reads.
pub fn table(r: &KernelReport) -> String {
    let mut o = String::new();
    let w = |o: &mut String, k: &str, v: String| {
        let _ = writeln!(o, "  {k:<26} {v}");
    };
    let _ = writeln!(o, "bgfuzz kernel on Linux {}", r.kernel);
    w(
        &mut o,
        "script",
        r.script.clone().unwrap_or_else(|| "built-in mix".into()),
    );
    w(
        &mut o,
        "threads (tasks)",
        format!("{} ({})", r.threads, r.tasks.join(" ")),
    );
    w(
        &mut o,
        "image",
        format!(
            "{} MiB sparse on /dev/{}, mount -o {}",
            r.image_bytes >> 20,
            r.device,
            if r.mount_options.is_empty() {
                "(defaults)"
            } else {
                &r.mount_options
            }
        ),
    );
    w(&mut o, "time", format!("{:.1}s", r.seconds));
    w(&mut o, "passes over the script", r.runs.to_string());
    w(
        &mut o,
        "operations",
        format!(
            "{} ({:.0}/s), {} MiB written",
            r.ops,
            r.ops_per_s,
            r.counters.bytes_written >> 20
        ),
    );
    w(
        &mut o,
        "commits (kernel)",
        format!(
            "{} ({}/s; {} sync ioctls)",
            opt(r.commits),
            opt(r.commits_per_s.map(|v| format!("{v:.1}"))),
            r.counters.commit_ioctls
        ),
    );
    w(
        &mut o,
        "block groups created",
        format!(
            "{} ({}/min), removed {}",
            opt(r.bgs_created),
            opt(r.bgs_created_per_min.map(|v| format!("{v:.0}"))),
            opt(r.bgs_removed)
        ),
    );
    w(
        &mut o,
        "errors seen by the ops",
        format!(
            "ENOSPC {}, EROFS {}, EIO {}, other {}; balances {} (busy {}), trims {}",
            r.counters.enospc,
            r.counters.erofs,
            r.counters.eio,
            r.counters.other_errors,
            r.counters.balances,
            r.counters.balance_busy,
            r.counters.trims
        ),
    );
    w(
        &mut o,
        "aborts",
        format!("{} ({} injected)", r.aborts, r.aborts_injected),
    );
    w(
        &mut o,
        "btrfs check --readonly",
        if r.btrfs_check.clean {
            "clean".into()
        } else {
            "ERRORS".into()
        },
    );
    let conf = match (&r.conformance, &r.trace_unavailable) {
        (Some(c), _) => format!(
            "{} events, {} commit probes, {} failures{}{}",
            c.events,
            c.commit_probes,
            c.failures.len(),
            if c.complete() {
                String::new()
            } else {
                format!(", INCOMPLETE: {} events lost", c.lost_events)
            },
            c.bgs_on_disk
                .map_or(String::new(), |n| format!(", {n} bg items on disk"))
        ),
        (None, Some(why)) => format!("unavailable: {why}"),
        (None, None) => "unavailable".into(),
    };
    w(&mut o, "tracepoint conformance", conf);
    if let Some(f) = &r.fault {
        w(
            &mut o,
            "fault",
            format!(
                "{} from {}s: abort {}, read-only mount {}",
                f.kind,
                opt(f.armed_at_s.map(|s| format!("{s:.1}"))),
                if f.abort_seen { "seen" } else { "NOT seen" },
                if f.ro_mount_ok {
                    "ok".to_string()
                } else {
                    format!("FAILED ({})", f.ro_mount_error.as_deref().unwrap_or("?"))
                }
            ),
        );
    }
    w(
        &mut o,
        "cleanup",
        if r.cleanup.is_empty() && r.leftovers.is_empty() {
            "nothing left mounted, attached or enabled".into()
        } else {
            [r.cleanup.clone(), r.leftovers.clone()].concat().join("; ")
        },
    );
    for a in &r.kernel_log.aborts {
        let _ = writeln!(
            o,
            "\nabort{}: errno {} in {}\n  {}",
            if a.injected { " (injected)" } else { "" },
            opt(a.errno),
            a.function.as_deref().unwrap_or("?"),
            a.line
        );
    }
    if !r.findings.is_empty() || !r.kernel_log.aborts.is_empty() {
        let _ = writeln!(
            o,
            "\nthe kernel's lines (info lines left out; all in --json):"
        );
        for l in r
            .kernel_log
            .lines
            .iter()
            .filter(|l| !l.contains("BTRFS info"))
            .take(60)
        {
            let _ = writeln!(o, "  {l}");
        }
    }
    if let Some(c) = &r.conformance {
        for f in c.failures.iter().take(20) {
            let _ = writeln!(
                o,
                "\nnonconformance {} (event {}): {}",
                f.invariant,
                opt(f.event),
                f.message
            );
        }
    }
    if !r.btrfs_check.clean {
        let _ = writeln!(o, "\nbtrfs check:");
        for l in r.btrfs_check.output.iter().take(40) {
            let _ = writeln!(o, "  {l}");
        }
    }
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    let _ = writeln!(
        o,
        "\n{}",
        if r.interrupted {
            "INTERRUPTED (everything set up was undone)".to_string()
        } else if r.findings.is_empty() {
            "verdict: nothing found".to_string()
        } else {
            format!("verdict: FINDING\n  {}", r.findings.join("\n  "))
        }
    );
    o
}
