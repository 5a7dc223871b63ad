//! `bgfuzz kernel`: the script's operations on this machine's real btrfs,
//! a loop-mounted sparse image, with the kernel log, the btrfs tracepoints,
//! the block group items on disk and `btrfs check` as oracles, and real
//! device faults (`--fault eio`). See docs/kernel.md.

pub mod compare;
pub mod ops;
pub mod oracles;
pub mod report;
pub mod setup;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::mount::MountFlags;

use self::ops::{Counters, Plan, Worker};
use self::oracles::{parse_trace_line, Kmsg, TraceEvent, TraceLine};
use self::report::{FaultReport, KernelReport};
use self::setup::{LoopDev, Mounted, Refusal, Rig, Tracing};
use crate::scenario::Scenario;

/// The smallest image: mkfs.btrfs makes separate data and metadata block
/// groups from 1 GiB on, and the kernel sizes chunks at 10% of the device,
/// so a 1 GiB image gets ~100 MiB data block groups that fill, empty and
/// are recreated within seconds.
pub const MIN_IMAGE: u64 = 1 << 30;
/// The largest image: the script's `device` is clamped to it so that
/// block groups stay small (chunks scale with the device).
pub const MAX_IMAGE: u64 = 4 << 30;
/// The default mount options: the v1 free space cache, whose writeout is
/// what block group creation raced with in ff1f8250 (mkfs is told not to
/// create a free space tree), and no discard, as v4.1's default: with
/// async discard (this kernel's default on a non-rotational device, which
/// a loop device is) an emptied block group only goes on the unused list
/// once discarded, which delays its deletion by seconds. If the kernel
/// refuses these options, its defaults are used and the report says so.
pub const DEFAULT_MOUNT_OPTIONS: &str = "space_cache=v1,nodiscard";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The image sits on a tmpfs this run creates; partway through, the
    /// tmpfs is filled, so the loop device's writes to new blocks fail and
    /// btrfs sees write errors.
    Eio,
}

impl Fault {
    pub fn parse(s: &str) -> Result<Fault, String> {
        match s {
            "eio" => Ok(Fault::Eio),
            _ => Err(format!("unknown fault `{s}` (known: eio)")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct KernelOptions {
    pub script: Option<PathBuf>,
    pub time: Duration,
    /// Threads; default: one per script task, or 4 for the built-in mix.
    pub threads: Option<usize>,
    pub fault: Option<Fault>,
    pub keep_trace: Option<PathBuf>,
    pub seed: u64,
    /// Most sleep between two operations of a thread.
    pub jitter: Duration,
    pub mount_options: Option<String>,
    pub progress: bool,
    /// Panics the run's main thread this long after the start, with
    /// everything set up: shows (tests, `--panic-after`) that the guards
    /// undo it all on a panic.
    pub panic_after: Option<Duration>,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions {
            script: None,
            time: Duration::from_secs(10),
            threads: None,
            fault: None,
            keep_trace: None,
            seed: 0,
            jitter: Duration::from_millis(2),
            mount_options: None,
            progress: false,
            panic_after: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Cannot run on this machine: exit 2.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Bad script or option: exit 2.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Setup(String),
}

fn setup_err(what: &str) -> impl FnOnce(io::Error) -> KernelError + '_ {
    move |e| KernelError::Setup(format!("{what}: {e}"))
}

/// Reads `mount WORD...` header lines and returns the script with them
/// blanked (line numbers kept, for a parser that does not know them), and
/// the kernel mount options they stand for: `space_cache` is the
/// v1 cache (`space_cache=v1`), `discard` replaces the default
/// `nodiscard`, `fitrim` and `chunk_cost` (model options: the kernel
/// needs none) are dropped, anything else is passed as written.
pub fn take_mount_lines(bytes: &[u8]) -> (Vec<u8>, Option<String>) {
    let mut words: Vec<String> = Vec::new();
    let mut seen = false;
    let mut out = Vec::with_capacity(bytes.len());
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        let text = String::from_utf8_lossy(line);
        let text = text.split('#').next().unwrap_or("").trim();
        match text.split_whitespace().next() {
            Some("mount") => {
                seen = true;
                words.extend(
                    text.split_whitespace()
                        .skip(1)
                        .flat_map(|w| w.split(','))
                        .filter(|w| !w.is_empty() && !matches!(*w, "fitrim" | "chunk_cost"))
                        .map(|w| match w {
                            "space_cache" => "space_cache=v1".to_string(),
                            w => w.to_string(),
                        }),
                );
            }
            _ => out.extend_from_slice(line),
        }
    }
    if !seen {
        return (bytes.to_vec(), None);
    }
    if !words
        .iter()
        .any(|w| w.starts_with("discard") || w == "nodiscard")
    {
        words.push("nodiscard".into());
    }
    (out, Some(words.join(",")))
}

/// Reads a script for a kernel run: the scenario, its operations, and the
/// mount options of its `mount` lines, if any.
pub fn load_plan(path: &Path) -> Result<(Scenario, Plan, Option<String>), KernelError> {
    let bytes = std::fs::read(path)
        .map_err(|e| KernelError::Invalid(format!("{}: {e}", path.display())))?;
    let (stripped, mount) = take_mount_lines(&bytes);
    // The model reads the `mount` lines too where its parser knows them
    // (they change its steps); a parser that does not gets them blanked.
    let scn = Scenario::parse(&bytes)
        .or_else(|e| Scenario::parse(&stripped).map_err(|_| e))
        .map_err(|e| KernelError::Invalid(format!("{}:{e}", path.display())))?;
    let plan = Plan::from_scenario(&scn);
    if plan.tasks.is_empty() {
        return Err(KernelError::Invalid(format!(
            "{}: no step lines: nothing to run on the kernel",
            path.display()
        )));
    }
    Ok((scn, plan, mount))
}

/// The image size for a script's `device` line.
pub fn image_size(device: Option<u64>) -> u64 {
    device.unwrap_or(MIN_IMAGE).clamp(MIN_IMAGE, MAX_IMAGE)
}

/// What the trace reader thread shares while it runs.
#[derive(Default)]
struct Live {
    created: AtomicU64,
    removed: AtomicU64,
    commits: AtomicU64,
    lost: AtomicU64,
    /// Block groups added (at mount or created) and chunks freed so far,
    /// for the commit probes.
    bgs: Mutex<(BTreeSet<u64>, BTreeSet<u64>)>,
}

impl Live {
    fn bgs(&self) -> std::sync::MutexGuard<'_, (BTreeSet<u64>, BTreeSet<u64>)> {
        self.bgs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One commit probe: the block groups the trace shows alive now, a commit
/// (`BTRFS_IOC_SYNC` waits for the running transaction and commits it, so
/// every block group created before is through both phases), then the
/// block group items in the tree (`BTRFS_IOC_TREE_SEARCH`). A bg alive
/// before the commit and missing from the tree is a finding unless the
/// trace shows it freed meanwhile. `None` when the commit or the search
/// failed (after an abort).
fn probe(root: &File, live: &Live) -> Option<Vec<u64>> {
    let before: BTreeSet<u64> = {
        let g = live.bgs();
        g.0.difference(&g.1).copied().collect()
    };
    ops::ioc_sync(root).ok()?;
    let items = ops::bg_items(root).ok()?;
    // Let the trace reader catch up with frees that raced the search.
    std::thread::sleep(Duration::from_millis(200));
    let g = live.bgs();
    Some(
        before
            .into_iter()
            .filter(|b| !items.contains(b) && !g.1.contains(b))
            .collect(),
    )
}

fn trace_reader(
    pipe: PathBuf,
    fsid: String,
    stop: Arc<AtomicBool>,
    live: Arc<Live>,
) -> io::Result<Vec<TraceEvent>> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(pipe)?;
    let mut events = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut partial = String::new();
    let mut idle_after_stop = 0;
    loop {
        match f.read(&mut buf) {
            Ok(n) if n > 0 => {
                partial.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(i) = partial.find('\n') {
                    let line: String = partial.drain(..=i).collect();
                    match parse_trace_line(line.trim_end(), &fsid) {
                        TraceLine::Event(e) => {
                            match e.event.as_str() {
                                "btrfs_add_block_group" | "btrfs_chunk_free" => {
                                    let mut g = live.bgs();
                                    let off = e.get("offset").unwrap_or(0);
                                    if e.event == "btrfs_chunk_free" {
                                        g.1.insert(off);
                                    } else {
                                        g.0.insert(off);
                                    }
                                }
                                _ => {}
                            }
                            match e.event.as_str() {
                                "btrfs_add_block_group" if e.get("create") == Some(1) => {
                                    live.created.fetch_add(1, Ordering::Relaxed);
                                }
                                "btrfs_remove_block_group" => {
                                    live.removed.fetch_add(1, Ordering::Relaxed);
                                }
                                "btrfs_transaction_commit" => {
                                    live.commits.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {}
                            }
                            events.push(e);
                        }
                        TraceLine::Lost(n) => {
                            live.lost.fetch_add(n, Ordering::Relaxed);
                        }
                        TraceLine::Other => {}
                    }
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Relaxed) {
                    idle_after_stop += 1;
                    if idle_after_stop > 5 {
                        return Ok(events);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Fills what is left of the tmpfs under the image, so the loop device's
/// writes to blocks not yet backed by tmpfs pages fail. In steps, as the
/// image keeps growing meanwhile: ENOSPC is where it stops.
fn fill_tmpfs(dir: &Path) -> io::Result<u64> {
    const STEP: u64 = 4 << 20;
    let f = File::create(dir.join("filler"))?;
    let mut len = 0;
    loop {
        let step = match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), len, STEP) {
            Ok(()) => STEP,
            // The last few pages.
            Err(rustix::io::Errno::NOSPC) => {
                let st = rustix::fs::statvfs(dir)?;
                let rest = st.f_bavail * st.f_frsize;
                if rest == 0
                    || rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), len, rest)
                        .is_err()
                {
                    return Ok(len);
                }
                rest
            }
            Err(e) => return Err(e.into()),
        };
        len += step;
    }
}

fn read_fsid(image: &Path) -> Result<String, KernelError> {
    let (ok, out) = setup::run_tool(
        "btrfs",
        &["inspect-internal", "dump-super", &image.to_string_lossy()],
    )
    .map_err(setup_err("btrfs inspect-internal dump-super"))?;
    out.lines()
        .find_map(|l| l.strip_prefix("fsid").map(|r| r.trim().to_string()))
        .filter(|_| ok)
        .ok_or_else(|| KernelError::Setup(format!("no fsid in dump-super output: {out}")))
}

/// Runs a script (or the built-in mix) on the kernel.
pub fn run(opts: &KernelOptions) -> Result<KernelReport, KernelError> {
    setup::preflight()?;
    let (scn, plan, script_name, script_mount) = match &opts.script {
        Some(p) => {
            let (s, plan, mount) = load_plan(p)?;
            (Some(s), plan, Some(p.display().to_string()), mount)
        }
        None => (None, Plan::builtin(opts.threads.unwrap_or(4)), None, None),
    };
    // --mount-options, else the script's `mount` lines, else the default.
    let mount_opts = opts.mount_options.clone().or(script_mount);
    // The built-in mix has one thread per task (--threads sized it).
    let threads = match scn {
        Some(_) => opts.threads.unwrap_or(plan.tasks.len()).max(1),
        None => plan.tasks.len(),
    };
    let image_bytes = image_size(scn.as_ref().and_then(|s| s.device));
    let mut notes = plan.notes.clone();
    if let Some(d) = scn.as_ref().and_then(|s| s.device) {
        if d != image_bytes {
            notes.push(format!(
                "the script's device {} is clamped to a {} image",
                bgfuzz_engine::fmt_size(d),
                bgfuzz_engine::fmt_size(image_bytes)
            ));
        }
    }
    if scn
        .as_ref()
        .is_some_and(|s| s.fails.iter().any(|p| p.injects()))
    {
        notes.push(
            "the script's `fail` lines are model failpoints: the kernel run ignores them (use --fault)"
                .into(),
        );
    }

    let stop: Arc<AtomicBool> = Arc::new(AtomicBool::new(false));
    let sig_ids: Vec<_> = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
        .into_iter()
        .filter_map(|s| signal_hook::flag::register(s, Arc::clone(&stop)).ok())
        .collect();
    let result = run_inner(
        opts,
        &plan,
        threads,
        image_bytes,
        &stop,
        notes,
        script_name,
        mount_opts,
    );
    for id in sig_ids {
        signal_hook::low_level::unregister(id);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn run_inner(
    opts: &KernelOptions,
    plan: &Plan,
    threads: usize,
    image_bytes: u64,
    stop: &Arc<AtomicBool>,
    mut notes: Vec<String>,
    script_name: Option<String>,
    mount_opts: Option<String>,
) -> Result<KernelReport, KernelError> {
    let mut rig = Rig::default();
    let dir = tempfile::Builder::new()
        .prefix("bgfuzz-kernel-")
        .tempdir()
        .map_err(setup_err("creating a temporary directory"))?;
    let base = dir.path().to_path_buf();
    rig.dir = Some(dir);

    // The image, on a tmpfs of our own for a fault run.
    let image_dir = if opts.fault.is_some() {
        let t = base.join("tmpfs");
        let size = image_bytes + (64 << 20);
        rig.tmpfs = Some(
            Mounted::mount(
                "bgfuzz-tmpfs",
                &t,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV,
                &format!("size={size},mode=0700"),
                "tmpfs",
            )
            .map_err(setup_err("mounting a tmpfs for --fault eio"))?,
        );
        t
    } else {
        base.clone()
    };
    let image = image_dir.join("image");
    File::create(&image)
        .and_then(|f| f.set_len(image_bytes))
        .map_err(setup_err("creating the sparse image"))?;
    let img = image.to_string_lossy().into_owned();
    let mut mkfs_args = vec!["-q", "-f", "-R", "^free-space-tree", &img];
    let wants_v1 = mount_opts
        .as_deref()
        .unwrap_or(DEFAULT_MOUNT_OPTIONS)
        .contains("space_cache=v1");
    if !wants_v1 {
        mkfs_args.drain(2..4);
    }
    let (ok, out) = setup::run_tool("mkfs.btrfs", &mkfs_args).map_err(setup_err("mkfs.btrfs"))?;
    if !ok {
        return Err(KernelError::Setup(format!(
            "mkfs.btrfs failed: {}",
            out.trim()
        )));
    }
    let fsid = read_fsid(&image)?;

    // Tracing before the mount, so the mount's block groups are seen.
    let trace_live = Arc::new(Live::default());
    let trace_stop = Arc::new(AtomicBool::new(false));
    let mut trace_missing = Vec::new();
    let mut trace_unavailable = None;
    let mut reader = None;
    let mut reader_running = false;
    if setup::has_tracefs() {
        let name = format!(
            "bgfuzz-{}-{}",
            std::process::id(),
            base.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        match Tracing::start(&base.join("tracing"), &name) {
            Ok((mut t, missing)) => {
                trace_missing = missing;
                t.reader_stop = Some(Arc::clone(&trace_stop));
                let pipe = t.pipe();
                rig.tracing = Some(t);
                let (fsid, s, l) = (
                    fsid.clone(),
                    Arc::clone(&trace_stop),
                    Arc::clone(&trace_live),
                );
                reader = Some(std::thread::spawn(move || trace_reader(pipe, fsid, s, l)));
                reader_running = true;
            }
            Err(e) => trace_unavailable = Some(format!("tracefs: {e}")),
        }
    } else {
        trace_unavailable = Some("this kernel has no tracefs".into());
    }

    let mut kmsg = Kmsg::open().map_err(setup_err("opening /dev/kmsg"))?;
    let mut records = Vec::new();
    let mut kmsg_lost = 0;

    let loopdev = LoopDev::attach(&image, false).map_err(setup_err("setting up a loop device"))?;
    let device = format!("loop{}", loopdev.number);
    let devpath = loopdev.path.to_string_lossy().into_owned();
    rig.loopdev = Some(loopdev);
    let mnt = base.join("mnt");
    let mut mount_options = mount_opts
        .clone()
        .unwrap_or_else(|| DEFAULT_MOUNT_OPTIONS.to_string());
    let mounted = match Mounted::mount(
        &devpath,
        &mnt,
        "btrfs",
        MountFlags::empty(),
        &mount_options,
        "btrfs",
    ) {
        Ok(m) => m,
        Err(e) if mount_opts.is_none() => {
            notes.push(format!(
                "mount -o {mount_options} failed ({e}): mounted with the kernel's defaults"
            ));
            mount_options = String::new();
            Mounted::mount(&devpath, &mnt, "btrfs", MountFlags::empty(), "", "btrfs")
                .map_err(setup_err("mounting the image"))?
        }
        Err(e) => return Err(setup_err("mounting the image")(e)),
    };
    rig.fs = Some(mounted);

    // The run.
    let counters = Counters::default();
    let started = Instant::now();
    let deadline = started + opts.time;
    let fault_at = opts
        .fault
        .map(|_| (opts.time / 3).max(Duration::from_secs(1)));
    let mut fault = opts.fault.map(|_| FaultReport {
        kind: "eio",
        ..Default::default()
    });
    let mut fault_from = None;
    let mut abort_seen_at: Option<Instant> = None;
    let pb = opts.progress.then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} kernel {elapsed} {msg}")
                .expect("static template"),
        );
        pb
    });
    let worker_stop = AtomicBool::new(false);
    let mut probes = 0usize;
    let mut probe_failures: Vec<oracles::Nonconformance> = Vec::new();
    let mut last_probe = started;
    let files = ops::Files::default();
    // Live data kept by all threads together: ~40% of the image, so block
    // groups fill, empty out and are recreated.
    let retain_bytes = image_bytes * 4 / 10 / threads as u64;
    let mut interrupted = false;
    std::thread::scope(|s| {
        // Stops the workers however the scope is left (a panic included).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop_guard = StopOnDrop(&worker_stop);
        // Closed when the scope ends, before the unmount.
        let probe_root = ops::open_root(&mnt).ok();
        for i in 0..threads {
            let (name, ops) = &plan.tasks[i % plan.tasks.len()];
            let w = Worker {
                root: &mnt,
                name: if threads > plan.tasks.len() {
                    format!("{name}{}", i / plan.tasks.len())
                } else {
                    name.clone()
                },
                ops: ops.clone(),
                seed: opts.seed,
                index: i,
                jitter: opts.jitter,
                stop: &worker_stop,
                counters: &counters,
                // A fault run may go on past --time waiting for the abort.
                retain_bytes,
                files: &files,
                deadline: deadline
                    + if opts.fault.is_some() {
                        Duration::from_secs(30)
                    } else {
                        Duration::ZERO
                    },
            };
            s.spawn(move || w.run());
        }
        loop {
            std::thread::sleep(Duration::from_millis(100));
            kmsg.read_new(&mut records, &mut kmsg_lost);
            let now = Instant::now();
            if let (Some(at), Some(f)) = (fault_at, fault.as_mut()) {
                if f.armed_at_s.is_none() && now >= started + at {
                    let t = image_dir.clone();
                    match fill_tmpfs(&t) {
                        Ok(bytes) => f.filler_bytes = bytes,
                        Err(e) => f.error = Some(format!("filling the tmpfs: {e}")),
                    }
                    f.armed_at_s = Some(now.duration_since(started).as_secs_f64());
                    fault_from = Some(records.len());
                }
            }
            if abort_seen_at.is_none()
                && records.iter().any(|r| {
                    r.contains(&format!("(device {device}"))
                        && (r.contains("Transaction aborted") || r.contains("errno="))
                })
            {
                abort_seen_at = Some(now);
            }
            if let Some(pb) = &pb {
                let c = counters.snapshot();
                let el = started.elapsed().as_secs_f64().max(1e-3);
                pb.set_message(format!(
                    "ops {} ({:.0}/s), commits {}, bgs +{} -{}, {}",
                    c.ops,
                    c.ops as f64 / el,
                    trace_live.commits.load(Ordering::Relaxed),
                    trace_live.created.load(Ordering::Relaxed),
                    trace_live.removed.load(Ordering::Relaxed),
                    if abort_seen_at.is_some() {
                        "ABORTED"
                    } else {
                        "no abort"
                    }
                ));
                pb.tick();
            }
            // A commit probe a second, while there is a trace to read and
            // no fault or abort in the way.
            if reader_running
                && fault_from.is_none()
                && abort_seen_at.is_none()
                && now >= last_probe + Duration::from_secs(1)
            {
                if let Some(root) = &probe_root {
                    if let Some(missing) = probe(root, &trace_live) {
                        probes += 1;
                        for b in missing {
                            probe_failures.push(oracles::Nonconformance {
                                invariant: "bg-not-in-tree-after-commit".into(),
                                event: None,
                                message: format!(
                                    "block group {b} was created before commit probe {probes} but has no item in the tree after it"
                                ),
                            });
                        }
                    }
                }
                last_probe = Instant::now();
            }
            if opts.panic_after.is_some_and(|d| now >= started + d) {
                panic!("--panic-after: a deliberate panic with everything mounted");
            }
            if stop.load(Ordering::Relaxed) {
                interrupted = true;
                break;
            }
            // After an abort the filesystem is read-only: a second is enough
            // for the log to settle.
            if abort_seen_at.is_some_and(|t| now >= t + Duration::from_secs(1)) {
                break;
            }
            let end = if opts.fault.is_some() && abort_seen_at.is_none() {
                deadline + Duration::from_secs(30)
            } else {
                deadline
            };
            if now >= end {
                break;
            }
        }
        worker_stop.store(true, Ordering::Relaxed);
        // A balance can run for seconds; ask it to stop.
        if let Ok(root) = ops::open_root(&mnt) {
            let _ = ops::cancel_balance(&root);
        }
    });
    let run_time = started.elapsed();
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }

    // The final commit, then unmount (the last commit and the cleaner's
    // last pass happen in close_ctree).
    if abort_seen_at.is_none() {
        if let Ok(root) = ops::open_root(&mnt) {
            let _ = ops::ioc_sync(&root);
        }
    }
    let mut cleanup = rig.unmount_fs();
    std::thread::sleep(Duration::from_millis(100));
    kmsg.read_new(&mut records, &mut kmsg_lost);

    // Stop the trace reader before removing the instance.
    trace_stop.store(true, Ordering::Relaxed);
    let mut events = Vec::new();
    if let Some(h) = reader {
        match h.join() {
            Ok(Ok(ev)) => events = ev,
            Ok(Err(e)) => trace_unavailable = Some(format!("reading trace_pipe: {e}")),
            Err(_) => trace_unavailable = Some("the trace reader panicked".into()),
        }
    }
    if let Some(mut t) = rig.tracing.take() {
        cleanup.extend(t.stop());
    }

    // A fault run: what was committed must still mount (read-only).
    if let Some(f) = fault.as_mut() {
        f.abort_seen = abort_seen_at.is_some();
        match LoopDev::attach(&image, true) {
            Ok(mut l) => {
                let p = l.path.to_string_lossy().into_owned();
                // The tree log holds fsyncs not yet committed; replaying it
                // would write. What was committed must mount without it.
                match Mounted::mount(
                    &p,
                    &base.join("ro"),
                    "btrfs",
                    MountFlags::RDONLY,
                    "ro,rescue=nologreplay",
                    "btrfs (ro)",
                ) {
                    Ok(mut m) => {
                        f.ro_mount_ok = true;
                        f.files_after =
                            std::fs::read_dir(&m.target).map(|d| d.count()).unwrap_or(0);
                        cleanup.extend(m.unmount());
                    }
                    Err(e) => f.ro_mount_error = Some(e.to_string()),
                }
                cleanup.extend(l.detach());
            }
            Err(e) => f.ro_mount_error = Some(format!("loop device: {e}")),
        }
        std::thread::sleep(Duration::from_millis(100));
        kmsg.read_new(&mut records, &mut kmsg_lost);
    }

    let check = oracles::btrfs_check(&image);
    let disk: Result<BTreeSet<u64>, String> = oracles::disk_bgs(&image);
    let log = {
        let mut l = oracles::parse_kmsg(&records, &device, fault_from);
        l.lost_records = kmsg_lost;
        l
    };
    let conformance = trace_unavailable.is_none().then(|| {
        let mut c = oracles::check_trace(&events, disk.as_ref().ok(), opts.fault.is_some());
        c.lost_events = trace_live.lost.load(Ordering::Relaxed);
        c.commit_probes = probes;
        c.failures.extend(probe_failures);
        c
    });
    if let Err(e) = &disk {
        notes.push(format!("block group items on disk not read: {e}"));
    }
    if !trace_missing.is_empty() {
        notes.push(format!(
            "tracepoints this kernel lacks: {}",
            trace_missing.join(", ")
        ));
    }
    if let Some(path) = &opts.keep_trace {
        let text: String = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default() + "\n")
            .collect();
        if let Err(e) = crate::write_atomic(path, &text) {
            notes.push(format!("--keep-trace {}: {e:#}", path.display()));
        }
    }

    cleanup.extend(rig.teardown());
    let leftovers = setup::leftovers(&base);

    Ok(report::build(report::Inputs {
        kernel: setup::kernel_version(),
        script: script_name,
        threads,
        tasks: plan.tasks.iter().map(|(n, _)| n.clone()).collect(),
        image_bytes,
        mount_options,
        fsid,
        device,
        run_time,
        counters: counters.snapshot(),
        log,
        check,
        conformance,
        trace_unavailable,
        fault,
        interrupted,
        cleanup,
        leftovers,
        notes,
        seed: opts.seed,
    }))
}
