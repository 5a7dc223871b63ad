//! The kernel's own oracles: its log (`/dev/kmsg` from the run's start),
//! the btrfs tracepoints (checked against the model's invariants that are
//! visible at that level), the block group items on disk after unmount,
//! and `btrfs check --readonly`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- kmsg

/// `/dev/kmsg`, opened non-blocking and positioned at its end: only what
/// the kernel logs from now on is read.
pub struct Kmsg {
    file: File,
}

impl Kmsg {
    pub fn open() -> io::Result<Kmsg> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open("/dev/kmsg")?;
        rustix::fs::seek(&file, rustix::fs::SeekFrom::End(0))?;
        Ok(Kmsg { file })
    }

    /// Every record logged since the last call (one record per read; EPIPE
    /// means records were overwritten before we read them: counted).
    pub fn read_new(&mut self, out: &mut Vec<String>, lost: &mut u64) {
        let mut buf = vec![0u8; 8192];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    // "prio,seq,usec,flags[,...];message\n[ KEY=value\n]"
                    let first = rec.lines().next().unwrap_or("");
                    if let Some((_, msg)) = first.split_once(';') {
                        out.push(msg.to_string());
                    }
                }
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PIPE.raw_os_error()) => {
                    *lost += 1
                }
                Err(_) => return,
            }
        }
    }
}

/// A transaction abort or filesystem error as the kernel logged it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Abort {
    /// Negative errno, e.g. -5.
    pub errno: Option<i32>,
    /// The function the kernel names (`in FUNC:LINE: errno=...`).
    pub function: Option<String>,
    pub line: String,
    /// After `--fault` started failing the device: the expected outcome.
    pub injected: bool,
}

/// What the kernel log says about the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KernelLog {
    pub aborts: Vec<Abort>,
    /// `BTRFS critical` lines.
    pub critical: Vec<String>,
    /// `WARNING:` and `BUG:` lines (the first line of each splat).
    pub warnings: Vec<String>,
    /// Every line that names the device or is part of a splat, for the
    /// report (capped).
    pub lines: Vec<String>,
    pub lost_records: u64,
}

impl KernelLog {
    /// Findings: aborts, criticals and warnings the run did not inject.
    pub fn findings(&self) -> usize {
        self.aborts.iter().filter(|a| !a.injected).count()
            + if self.aborts.iter().any(|a| a.injected) {
                0
            } else {
                self.critical.len() + self.warnings.len()
            }
    }
}

/// Parses `errno=-5` or `(error -5)`.
fn errno_in(line: &str) -> Option<i32> {
    let tail = line
        .split_once("errno=")
        .map(|(_, t)| t)
        .or_else(|| line.split_once("(error ").map(|(_, t)| t))?;
    let num: String = tail
        .chars()
        .take_while(|c| *c == '-' || c.is_ascii_digit())
        .collect();
    num.parse().ok()
}

/// `... in __btrfs_free_extent:3233: errno=-5 IO failure` -> the function;
/// `WARNING: CPU: 0 PID: 1 at fs/btrfs/x.c:12 func+0x1/0x2` -> `func`.
fn function_in(line: &str) -> Option<String> {
    if let Some((_, t)) = line.split_once(") in ") {
        return t.split(':').next().map(str::to_string);
    }
    if line.contains("WARNING:") {
        let (_, at) = line.split_once(" at ")?;
        let f = at.split_whitespace().nth(1)?;
        return Some(f.split('+').next().unwrap_or(f).to_string());
    }
    None
}

/// Sorts the records read during the run. `device` is `loopN`; records
/// from index `fault_from` on were logged after the fault started.
pub fn parse_kmsg(records: &[String], device: &str, fault_from: Option<usize>) -> KernelLog {
    let mut log = KernelLog::default();
    let dev = format!("(device {device}");
    let mut splat = 0usize;
    let mut noisy_seen = 0usize;
    for (i, r) in records.iter().enumerate() {
        let ours = r.contains(&dev) || r.contains(&format!("dev {device},"));
        let injected = fault_from.is_some_and(|f| i >= f);
        let is_warn = r.starts_with("WARNING:")
            || r.contains("BUG:")
            || r.starts_with("------------[ cut here");
        if is_warn {
            splat = 40;
        }
        // The block layer's per-request errors under a fault: a few are
        // enough to show.
        let noisy = r.contains("critical space allocation error") || r.contains("I/O error, dev");
        if noisy {
            noisy_seen += 1;
        }
        if (ours || splat > 0) && !(noisy && noisy_seen > 3) {
            if log.lines.len() < 400 {
                log.lines.push(r.clone());
            }
            splat = splat.saturating_sub(1);
        }
        // A warning names its source file; only btrfs's count (any BUG
        // does). A btrfs abort's WARN is recorded here and as an abort.
        if ((r.starts_with("WARNING:") && r.contains("btrfs")) || r.contains("BUG:")) && !injected {
            log.warnings.push(r.clone());
        }
        if !ours {
            continue;
        }
        if r.contains("BTRFS critical") && !injected {
            log.critical.push(r.clone());
        }
        let abort_line = r.contains("Transaction aborted")
            || (r.contains("BTRFS: error (device") && r.contains("errno="));
        if abort_line {
            let a = Abort {
                errno: errno_in(r),
                function: function_in(r),
                line: r.clone(),
                injected,
            };
            // One abort logs "Transaction aborted (error E)" then "error in
            // FUNC: errno=E": merge them into one, keeping the function.
            match log.aborts.last_mut() {
                Some(prev) if prev.function.is_none() && prev.errno == a.errno => {
                    prev.function = a.function;
                    prev.line = format!("{} / {}", prev.line, a.line);
                }
                _ => log.aborts.push(a),
            }
        }
    }
    log
}

// ---------------------------------------------------------------- trace

/// One btrfs tracepoint hit, filtered to this run's filesystem: the
/// numeric `key=value` fields of its text form (`flags=1(DATA)` -> 1).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceEvent {
    /// Seconds since boot, as the trace clock printed it.
    pub ts: String,
    pub event: String,
    pub fields: BTreeMap<String, u64>,
}

impl TraceEvent {
    pub fn get(&self, k: &str) -> Option<u64> {
        self.fields.get(k).copied()
    }
}

/// A line of `trace_pipe`.
#[derive(Debug, PartialEq, Eq)]
pub enum TraceLine {
    Event(TraceEvent),
    /// `CPU:N [LOST M EVENTS]`
    Lost(u64),
    /// Another filesystem's event, or not an event.
    Other,
}

/// Parses `  task-123  [001] ..... 12.345678: btrfs_x: FSID: k=v k=v(..)`.
/// Only events whose fsid is `fsid` are kept.
pub fn parse_trace_line(line: &str, fsid: &str) -> TraceLine {
    if let Some(rest) = line.split_once("[LOST ").map(|(_, r)| r) {
        let n = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        return TraceLine::Lost(n.unwrap_or(1));
    }
    let Some(pos) = line.find(": btrfs_") else {
        return TraceLine::Other;
    };
    let ts = line[..pos].rsplit(' ').next().unwrap_or("").to_string();
    let rest = &line[pos + 2..];
    let Some((event, rest)) = rest.split_once(": ") else {
        return TraceLine::Other;
    };
    let Some((fs, body)) = rest.split_once(": ") else {
        return TraceLine::Other;
    };
    if !fs.trim().eq_ignore_ascii_case(fsid) {
        return TraceLine::Other;
    }
    let mut fields = BTreeMap::new();
    for tok in body.split_whitespace() {
        let Some((k, v)) = tok.split_once('=') else {
            continue;
        };
        let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(n) = digits.parse() {
            fields.insert(k.to_string(), n);
        }
    }
    TraceLine::Event(TraceEvent {
        ts,
        event: event.to_string(),
        fields,
    })
}

/// An invariant the trace broke.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Nonconformance {
    /// Short name of the invariant.
    pub invariant: String,
    /// Index of the event in the trace (JSON line number - 1); `None` for
    /// the end-of-run comparison with the disk.
    pub event: Option<usize>,
    pub message: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Conformance {
    pub events: usize,
    /// Events by tracepoint name.
    pub by_event: BTreeMap<String, u64>,
    pub bgs_at_mount: usize,
    pub bgs_created: usize,
    pub bgs_removed: usize,
    pub commits: usize,
    pub reserves_checked: usize,
    pub lost_events: u64,
    /// Commits made during the run to check that every block group created
    /// before is in the tree after it (`bg-not-in-tree-after-commit`).
    pub commit_probes: usize,
    /// Block group items on disk after unmount, when they were read.
    pub bgs_on_disk: Option<usize>,
    /// Their logical offsets.
    pub disk_offsets: Vec<u64>,
    pub failures: Vec<Nonconformance>,
}

impl Conformance {
    /// With lost events the trace is incomplete: a failure may be an
    /// artefact of what is missing, so none is claimed.
    pub fn complete(&self) -> bool {
        self.lost_events == 0
    }
}

#[derive(Clone, Copy, Debug)]
struct Bg {
    len: u64,
}

/// Checks a trace against the invariants the model states that this
/// kernel's tracepoints can show:
///
/// - `bg-created-without-chunk`: a block group created at runtime
///   (`btrfs_add_block_group create=1`) has a chunk allocated for it at the
///   same logical offset and size (`btrfs_chunk_alloc`), phase 1 of the
///   two-phase creation;
/// - `bg-created-twice`: no block group is added over a live one;
/// - `reserve-outside-live-bg`: an extent is reserved
///   (`btrfs_reserve_extent`) only in a block group that exists and has not
///   been removed, and lies inside it;
/// - `unused-not-empty`: a block group goes on the unused list
///   (`btrfs_add_unused_block_group`) only with `used=0`;
/// - `unused-unknown`: only a live block group goes on the unused list;
/// - `chunk-free-unknown`: a chunk is freed (`btrfs_chunk_free`, the start
///   of `btrfs_remove_chunk`) only for a live block group; from then on
///   nothing may be reserved in it;
/// - `remove-not-empty` / `remove-unknown`: a block group is removed
///   (`btrfs_remove_block_group`, by the cleaner or after relocation) only
///   when live or being removed, and with `used=0`;
/// - `commit-generation`: committed generations increase;
/// - `bg-not-on-disk` / `bg-on-disk-not-live`: after the final commit
///   (unmount) the block group items in the extent tree are exactly the
///   block groups the trace left alive. With `committed_only` (a fault
///   run: what the abort threw away is not on disk) only the second
///   direction, and only for bgs never seen.
pub fn check_trace(
    events: &[TraceEvent],
    on_disk: Option<&BTreeSet<u64>>,
    committed_only: bool,
) -> Conformance {
    let mut c = Conformance {
        events: events.len(),
        ..Default::default()
    };
    let mut live: BTreeMap<u64, Bg> = BTreeMap::new();
    let mut dying: BTreeMap<u64, Bg> = BTreeMap::new();
    let mut ever: BTreeSet<u64> = BTreeSet::new();
    let mut chunks: BTreeMap<u64, u64> = BTreeMap::new();
    let mut last_gen = 0u64;
    let fail = |c: &mut Conformance, inv: &str, i: usize, msg: String| {
        c.failures.push(Nonconformance {
            invariant: inv.into(),
            event: Some(i),
            message: msg,
        })
    };
    for (i, e) in events.iter().enumerate() {
        *c.by_event.entry(e.event.clone()).or_default() += 1;
        let f = |k: &str| e.get(k).unwrap_or(0);
        match e.event.as_str() {
            "btrfs_chunk_alloc" => {
                chunks.insert(f("offset"), f("size"));
            }
            "btrfs_add_block_group" => {
                let (off, size) = (f("offset"), f("size"));
                if f("create") == 1 {
                    c.bgs_created += 1;
                    if chunks.get(&off) != Some(&size) {
                        fail(&mut c, "bg-created-without-chunk", i, format!(
                            "block group {off} (size {size}) created without btrfs_chunk_alloc at that offset and size"
                        ));
                    }
                } else {
                    c.bgs_at_mount += 1;
                }
                if live.contains_key(&off) {
                    fail(
                        &mut c,
                        "bg-created-twice",
                        i,
                        format!("block group {off} added while already live"),
                    );
                }
                live.insert(off, Bg { len: size });
                ever.insert(off);
            }
            "btrfs_reserve_extent" => {
                c.reserves_checked += 1;
                let (bg, start, len) = (f("block_group"), f("start"), f("len"));
                match live.get(&bg) {
                    None => fail(
                        &mut c,
                        "reserve-outside-live-bg",
                        i,
                        format!(
                            "extent {start}+{len} reserved in block group {bg}, which {}",
                            if dying.contains_key(&bg) {
                                "is being removed"
                            } else if ever.contains(&bg) {
                                "was removed"
                            } else {
                                "does not exist"
                            }
                        ),
                    ),
                    Some(b) if start < bg || start + len > bg + b.len => fail(
                        &mut c,
                        "reserve-outside-live-bg",
                        i,
                        format!(
                            "extent {start}+{len} lies outside block group {bg}+{}",
                            b.len
                        ),
                    ),
                    Some(_) => {}
                }
            }
            "btrfs_add_unused_block_group" => {
                let (bg, used) = (f("bytenr"), f("used"));
                if used != 0 {
                    fail(
                        &mut c,
                        "unused-not-empty",
                        i,
                        format!("block group {bg} put on the unused list with used={used}"),
                    );
                }
                if !live.contains_key(&bg) {
                    fail(
                        &mut c,
                        "unused-unknown",
                        i,
                        format!("block group {bg} marked unused but not live"),
                    );
                }
            }
            "btrfs_chunk_free" => {
                // btrfs_remove_chunk: the chunk goes first, then the block
                // group (btrfs_remove_block_group); from here on the bg is
                // read-only and nothing may be reserved in it.
                let off = f("offset");
                match live.remove(&off) {
                    Some(b) => {
                        dying.insert(off, b);
                    }
                    None => fail(
                        &mut c,
                        "chunk-free-unknown",
                        i,
                        format!("chunk {off} freed without a live block group"),
                    ),
                }
                chunks.remove(&off);
            }
            "btrfs_remove_block_group" => {
                let (bg, used) = (f("bytenr"), f("used"));
                if used != 0 {
                    fail(
                        &mut c,
                        "remove-not-empty",
                        i,
                        format!("block group {bg} removed with used={used}"),
                    );
                }
                if dying.remove(&bg).is_some() || live.remove(&bg).is_some() {
                    c.bgs_removed += 1;
                } else {
                    fail(
                        &mut c,
                        "remove-unknown",
                        i,
                        format!("block group {bg} removed but not live"),
                    );
                }
            }
            "btrfs_transaction_commit" => {
                c.commits += 1;
                let g = f("gen");
                if g < last_gen {
                    fail(
                        &mut c,
                        "commit-generation",
                        i,
                        format!("transaction {g} committed after {last_gen}"),
                    );
                }
                last_gen = g;
            }
            _ => {}
        }
    }
    if let Some(disk) = on_disk {
        c.bgs_on_disk = Some(disk.len());
        c.disk_offsets = disk.iter().copied().collect();
        for off in disk {
            let bad = if committed_only {
                !ever.contains(off)
            } else {
                !live.contains_key(off)
            };
            if bad {
                c.failures.push(Nonconformance {
                    invariant: "bg-on-disk-not-live".into(),
                    event: None,
                    message: format!(
                        "block group item {off} is in the extent tree, but the trace {}",
                        if ever.contains(off) {
                            "removed it"
                        } else {
                            "never added it"
                        }
                    ),
                });
            }
        }
        if !committed_only {
            for off in live.keys().filter(|o| !disk.contains(o)) {
                c.failures.push(Nonconformance {
                    invariant: "bg-not-on-disk".into(),
                    event: None,
                    message: format!(
                        "block group {off} is live in the trace but has no item in the extent tree after the final commit"
                    ),
                });
            }
        }
    }
    c
}

/// Reads JSON lines written by `--keep-trace`.
pub fn read_trace(text: &str) -> Result<Vec<TraceEvent>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

// ---------------------------------------------------------------- disk

/// The logical offsets of the BLOCK_GROUP_ITEMs in `dump-tree` output:
/// `item 1 key (13631488 BLOCK_GROUP_ITEM 8388608) itemoff ...`.
pub fn parse_bg_items(dump: &str) -> BTreeSet<u64> {
    dump.lines()
        .filter_map(|l| {
            let (_, k) = l.split_once("key (")?;
            let mut w = k.split_whitespace();
            let off = w.next()?.parse().ok()?;
            (w.next()? == "BLOCK_GROUP_ITEM").then_some(off)
        })
        .collect()
}

/// The block group items of an unmounted image: the extent tree, or the
/// block group tree where the filesystem has one.
pub fn disk_bgs(image: &Path) -> Result<BTreeSet<u64>, String> {
    let img = image.to_string_lossy();
    let mut all = BTreeSet::new();
    for tree in ["extent", "block-group"] {
        match super::setup::run_tool(
            "btrfs",
            &["inspect-internal", "dump-tree", "-t", tree, &img],
        ) {
            Ok((true, out)) => all.extend(parse_bg_items(&out)),
            Ok((false, out)) if tree == "extent" => {
                return Err(format!(
                    "btrfs inspect-internal dump-tree -t extent: {}",
                    out.trim()
                ))
            }
            Err(e) if tree == "extent" => return Err(e.to_string()),
            _ => {}
        }
    }
    Ok(all)
}

/// `btrfs check --readonly` on the unmounted image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckVerdict {
    pub clean: bool,
    /// Its last lines (all of them when it found something).
    pub output: Vec<String>,
}

pub fn btrfs_check(image: &Path) -> CheckVerdict {
    match super::setup::run_tool("btrfs", &["check", "--readonly", &image.to_string_lossy()]) {
        Ok((ok, out)) => {
            let lines: Vec<String> = out.lines().map(str::to_string).collect();
            let keep = if ok { lines.len().saturating_sub(3) } else { 0 };
            CheckVerdict {
                clean: ok,
                output: lines[keep..].iter().take(200).cloned().collect(),
            }
        }
        Err(e) => CheckVerdict {
            clean: false,
            output: vec![format!("could not run btrfs check: {e}")],
        },
    }
}
