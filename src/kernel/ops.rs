//! The real counterpart of each script operation, and the worker threads
//! that run a task's operations in a loop with seeded jitter.
//!
//! | script op          | on the mounted btrfs                                      |
//! |--------------------|-----------------------------------------------------------|
//! | `start`, `join`    | a setattr on the task's file (one transaction handle)     |
//! | `alloc data N`     | write min(N, 64M) into file `eK`, fsync                   |
//! | `alloc metadata N` | N/4K (at most 64) small files with xattrs in `mK/`       |
//! | `alloc system N`   | as metadata (user space cannot aim at the chunk tree)     |
//! | `free eK`          | delete what `alloc` K wrote                               |
//! | `run_delayed_refs` | fsync of the task's directory                             |
//! | `end`, `continue`  | nothing: the syscall ended its handle; the kernel steps   |
//! | `commit`           | `BTRFS_IOC_SYNC`                                          |
//! | `delete_unused`    | `BTRFS_IOC_SYNC` (it wakes the cleaner), then 20ms        |
//! | `relocate [P]`     | `BTRFS_IOC_BALANCE_V2`, data+metadata with usage <= P (30) |
//! | `trim`             | `FITRIM` on the whole filesystem                          |

use std::collections::{BTreeMap, VecDeque};
use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::Serialize;

use super::setup::ioctl_raw;
use crate::scenario::{Action, Scenario};

/// Largest write for one `alloc data` (a script's `alloc data 1G` on a
/// 1 GiB image would just fill it).
pub const DATA_CAP: u64 = 64 << 20;
/// Most small files one `alloc metadata` creates.
pub const META_FILES_CAP: u64 = 64;

/// One operation as the kernel run performs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KOp {
    Handle,
    AllocData { id: u32, bytes: u64 },
    AllocMeta { id: u32, files: u64 },
    Free { id: u32 },
    RunDelayedRefs,
    Nothing,
    Commit,
    DeleteUnused,
    Relocate { usage: u64 },
    Trim,
}

impl KOp {
    /// Maps an operation by its script text, so operations added to the
    /// script language later (`relocate`, `trim`) are understood by name
    /// and an unknown one becomes a no-op instead of an error. `next_id`
    /// numbers allocations in script order, as the model names extents.
    pub fn from_text(text: &str, next_id: &mut u32) -> (KOp, Option<String>) {
        let mut w = text.split_whitespace();
        let op = w.next().unwrap_or("");
        let args: Vec<&str> = w.collect();
        // `fill` (a block group exactly full in the model): as much as an
        // alloc does here, its cap.
        let size = |s: &str| match s {
            "fill" => u64::MAX,
            s => crate::scenario::parse_size(s, 0).unwrap_or(4096),
        };
        let k = match op {
            "start" | "join" => KOp::Handle,
            "end" | "continue" => KOp::Nothing,
            "run_delayed_refs" => KOp::RunDelayedRefs,
            "commit" => KOp::Commit,
            "delete_unused" => KOp::DeleteUnused,
            "trim" => KOp::Trim,
            "relocate" | "balance" => KOp::Relocate {
                usage: args
                    .iter()
                    .find_map(|a| a.trim_end_matches('%').parse().ok())
                    .filter(|u| *u <= 100)
                    .unwrap_or(30),
            },
            "alloc" => {
                *next_id += 1;
                let bytes = args.get(1).map_or(4096, |s| size(s));
                match args.first() {
                    Some(&"data") => KOp::AllocData {
                        id: *next_id,
                        bytes: bytes.min(DATA_CAP),
                    },
                    _ => KOp::AllocMeta {
                        id: *next_id,
                        files: (bytes / 4096).clamp(1, META_FILES_CAP),
                    },
                }
            }
            "free" => match args
                .first()
                .and_then(|a| a.strip_prefix('e'))
                .and_then(|n| n.parse().ok())
            {
                Some(id) => KOp::Free { id },
                None => return (KOp::Nothing, Some(format!("`{text}`: no extent to free"))),
            },
            _ => {
                return (
                    KOp::Nothing,
                    Some(format!(
                        "`{text}` has no kernel counterpart here: run as a no-op"
                    )),
                )
            }
        };
        (k, None)
    }
}

/// Each task's operations in script order, and notes on what was mapped
/// to nothing.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub tasks: Vec<(String, Vec<KOp>)>,
    pub notes: Vec<String>,
}

impl Plan {
    pub fn from_scenario(scn: &Scenario) -> Plan {
        let mut per: Vec<Vec<KOp>> = vec![Vec::new(); bgfuzz_engine::MAX_TASKS];
        let mut next_id = 0;
        let mut notes = Vec::new();
        for s in &scn.steps {
            let Action::Begin(op) = s.action else {
                continue;
            };
            let (k, note) = KOp::from_text(&op.to_string(), &mut next_id);
            if let Some(n) = note {
                if !notes.contains(&n) {
                    notes.push(n);
                }
            }
            per[s.task].push(k);
        }
        let tasks = per
            .into_iter()
            .enumerate()
            .filter(|(_, ops)| !ops.is_empty())
            .map(|(t, ops)| (bgfuzz_engine::task_name(t).to_string(), ops))
            .collect();
        Plan { tasks, notes }
    }

    /// The built-in mix, aimed at block group creation racing commits:
    /// writers fill the small filesystem with large files and delete the
    /// older ones (data bgs fill, empty out, get deleted by the cleaner and
    /// created again), metadata writers add files and xattrs, one task
    /// commits back to back, one relocates nearly empty bgs and trims.
    pub fn builtin(threads: usize) -> Plan {
        let threads = threads.max(3);
        let mut tasks = Vec::new();
        let writers = threads - 2;
        for w in 0..writers {
            let base = (w as u32 + 1) * 1000;
            let mut ops = Vec::new();
            for k in 0..8u32 {
                let id = base + k;
                if w % 2 == 1 && k % 2 == 1 {
                    ops.push(KOp::AllocMeta { id, files: 48 });
                } else {
                    let mb = [48u64, 16, 32, 8][k as usize % 4];
                    ops.push(KOp::AllocData {
                        id,
                        bytes: mb << 20,
                    });
                }
                ops.push(KOp::Free {
                    id: base + (k + 5) % 8,
                });
            }
            tasks.push((format!("writer{w}"), ops));
        }
        tasks.push((
            "committer".into(),
            vec![KOp::Commit, KOp::Handle, KOp::Commit, KOp::DeleteUnused],
        ));
        tasks.push((
            "balancer".into(),
            vec![
                KOp::Relocate { usage: 20 },
                KOp::Commit,
                KOp::Trim,
                KOp::DeleteUnused,
            ],
        ));
        Plan {
            tasks,
            notes: Vec::new(),
        }
    }
}

/// Counters the workers share with the progress line and the report.
#[derive(Default, Debug)]
pub struct Counters {
    pub ops: AtomicU64,
    pub commits: AtomicU64,
    pub bytes_written: AtomicU64,
    pub enospc: AtomicU64,
    pub erofs: AtomicU64,
    pub eio: AtomicU64,
    pub other_errors: AtomicU64,
    pub balances: AtomicU64,
    pub balance_busy: AtomicU64,
    pub trims: AtomicU64,
    pub noops: AtomicU64,
    pub passes: AtomicU64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub ops: u64,
    pub commit_ioctls: u64,
    pub bytes_written: u64,
    pub enospc: u64,
    pub erofs: u64,
    pub eio: u64,
    pub other_errors: u64,
    pub balances: u64,
    pub balance_busy: u64,
    pub trims: u64,
    pub noops: u64,
    pub passes: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            ops: g(&self.ops),
            commit_ioctls: g(&self.commits),
            bytes_written: g(&self.bytes_written),
            enospc: g(&self.enospc),
            erofs: g(&self.erofs),
            eio: g(&self.eio),
            other_errors: g(&self.other_errors),
            balances: g(&self.balances),
            balance_busy: g(&self.balance_busy),
            trims: g(&self.trims),
            noops: g(&self.noops),
            passes: g(&self.passes),
        }
    }

    fn error(&self, e: &io::Error) {
        use rustix::io::Errno;
        let c = match e.raw_os_error().map(Errno::from_raw_os_error) {
            Some(Errno::NOSPC) => &self.enospc,
            Some(Errno::ROFS) => &self.erofs,
            Some(Errno::IO) => &self.eio,
            _ => &self.other_errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

// fs/btrfs ioctls (include/uapi/linux/btrfs.h) and FITRIM (linux/fs.h).
const BTRFS_IOC_SYNC: u32 = 0x9408; // _IO(0x94, 8)
const BTRFS_IOC_BALANCE_V2: u32 = 0xC400_9420; // _IOWR(0x94, 32, 1024 bytes)
const BTRFS_IOC_BALANCE_CTL: u32 = 0x4004_9421; // _IOW(0x94, 33, int)
const BTRFS_BALANCE_CTL_CANCEL: usize = 2;
const FITRIM: u32 = 0xC018_5879; // _IOWR('X', 121, struct fstrim_range)
const BTRFS_BALANCE_DATA: u64 = 1 << 0;
const BTRFS_BALANCE_METADATA: u64 = 1 << 2;
const BTRFS_BALANCE_ARGS_USAGE: u64 = 1 << 1;

pub fn ioc_sync(root: &File) -> io::Result<()> {
    // SAFETY: BTRFS_IOC_SYNC takes no argument.
    unsafe { ioctl_raw(root, BTRFS_IOC_SYNC, std::ptr::null_mut()) }.map(|_| ())
}

/// `struct btrfs_ioctl_balance_args` (1024 bytes) as u64 words: flags,
/// state, then data, meta, sys `btrfs_balance_args` (17 words each: usage
/// is word 1, flags word 8), progress, padding.
pub fn balance(root: &File, usage: u64) -> io::Result<()> {
    let mut args = [0u64; 128];
    args[0] = BTRFS_BALANCE_DATA | BTRFS_BALANCE_METADATA;
    for base in [2, 19] {
        args[base + 1] = usage;
        args[base + 8] = BTRFS_BALANCE_ARGS_USAGE;
    }
    // SAFETY: BTRFS_IOC_BALANCE_V2 takes a 1024-byte balance_args.
    unsafe { ioctl_raw(root, BTRFS_IOC_BALANCE_V2, args.as_mut_ptr().cast()) }.map(|_| ())
}

/// Cancels a running balance; ENOTCONN when none runs.
pub fn cancel_balance(root: &File) -> io::Result<()> {
    // SAFETY: BTRFS_IOC_BALANCE_CTL takes the command as its integer arg.
    unsafe {
        ioctl_raw(
            root,
            BTRFS_IOC_BALANCE_CTL,
            BTRFS_BALANCE_CTL_CANCEL as *mut c_void,
        )
    }
    .map(|_| ())
}

pub fn fitrim(root: &File) -> io::Result<()> {
    // struct fstrim_range { start, len, minlen }
    let mut range = [0u64, u64::MAX, 0];
    // SAFETY: FITRIM takes a struct fstrim_range.
    unsafe { ioctl_raw(root, FITRIM, range.as_mut_ptr().cast()) }.map(|_| ())
}

/// What one worker needs.
pub struct Worker<'a> {
    pub root: &'a Path,
    pub name: String,
    pub ops: Vec<KOp>,
    pub seed: u64,
    pub index: usize,
    /// Most jitter between two operations.
    pub jitter: Duration,
    pub stop: &'a AtomicBool,
    pub counters: &'a Counters,
    pub deadline: Instant,
    /// Bytes this thread keeps written before deleting its oldest passes'
    /// files: the loop must churn, not fill the image once and stop.
    pub retain_bytes: u64,
    pub files: &'a Files,
}

/// What each `alloc` K currently has on disk, across threads, so `free eK`
/// deletes it whoever wrote it.
#[derive(Default)]
pub struct Files {
    by_id: Mutex<BTreeMap<u32, Vec<PathBuf>>>,
}

impl Files {
    fn add(&self, id: u32, p: PathBuf) {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .push(p);
    }

    fn take(&self, id: u32) -> Vec<PathBuf> {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
            .unwrap_or_default()
    }
}

fn remove_any(p: &Path) -> io::Result<()> {
    let r = if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// One thread's files by pass, oldest first.
#[derive(Default)]
struct Retained {
    passes: VecDeque<Vec<(PathBuf, u64)>>,
    bytes: u64,
}

impl Retained {
    fn push(&mut self, p: PathBuf, bytes: u64) {
        if let Some(cur) = self.passes.back_mut() {
            cur.push((p, bytes));
            self.bytes += bytes;
        }
    }

    /// Deletes the oldest pass's files; false when there is none.
    fn drop_oldest(&mut self) -> bool {
        if self.passes.len() <= 1 {
            return false;
        }
        for (p, b) in self.passes.pop_front().unwrap_or_default() {
            let _ = remove_any(&p);
            self.bytes -= b;
        }
        true
    }
}

static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

impl Worker<'_> {
    /// Runs the task's operations in a loop until the deadline or the stop
    /// flag. Errors from the filesystem are counted, not fatal: ENOSPC is
    /// the point of a small image; EROFS/EIO follow an abort, which the
    /// kernel-log oracle judges.
    pub fn run(self) {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ (self.index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let root = match File::open(self.root) {
            Ok(f) => f,
            Err(_) => return,
        };
        let task_file = self.root.join(format!("t-{}", self.name));
        let task_dir = self.root.join(format!("d-{}", self.name));
        let _ = std::fs::create_dir_all(&task_dir);
        let jitter_us = self.jitter.as_micros().max(1) as u64;
        let live = || !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline;
        let mut kept = Retained::default();
        let mut pass = 0u64;
        while live() {
            kept.passes.push_back(Vec::new());
            while kept.bytes > self.retain_bytes && kept.drop_oldest() {}
            for op in &self.ops {
                if !live() {
                    return;
                }
                let mut r = self.one(op, pass, &mut kept, &root, &task_file, &task_dir);
                // Full: delete this thread's oldest files and try once more.
                if r.as_ref().is_err_and(|e| {
                    e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
                }) {
                    self.counters.enospc.fetch_add(1, Ordering::Relaxed);
                    if kept.drop_oldest() {
                        r = self.one(op, pass, &mut kept, &root, &task_file, &task_dir);
                    }
                }
                self.counters.ops.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = r {
                    self.counters.error(&e);
                    // A filesystem gone read-only after an abort: no point
                    // hammering it; the main thread ends the run.
                    if e.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                std::thread::sleep(Duration::from_micros(rng.next_u64() % jitter_us));
            }
            self.counters.passes.fetch_add(1, Ordering::Relaxed);
            pass += 1;
        }
    }

    fn one(
        &self,
        op: &KOp,
        pass: u64,
        kept: &mut Retained,
        root: &File,
        task_file: &Path,
        task_dir: &Path,
    ) -> io::Result<()> {
        match *op {
            KOp::Handle => {
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(task_file)?;
                f.set_modified(
                    std::time::SystemTime::UNIX_EPOCH
                        + Duration::from_secs(self.counters.ops.load(Ordering::Relaxed)),
                )
            }
            KOp::AllocData { id, bytes } => {
                let path = self.path('e', id, pass);
                self.files.add(id, path.clone());
                kept.push(path.clone(), bytes);
                let mut f = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(&path)?;
                let mut left = bytes;
                while left > 0 && !self.stop.load(Ordering::Relaxed) {
                    let n = left.min(ZEROS.len() as u64) as usize;
                    f.write_all(&ZEROS[..n])?;
                    left -= n as u64;
                    self.counters
                        .bytes_written
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                f.sync_all()
            }
            KOp::AllocMeta { id, files } => {
                let dir = self.path('m', id, pass);
                self.files.add(id, dir.clone());
                kept.push(dir.clone(), files * 4096);
                std::fs::create_dir_all(&dir)?;
                let value = [b'x'; 2048];
                for i in 0..files {
                    let p = dir.join(format!("f{i}"));
                    std::fs::write(&p, b"bgfuzz metadata\n")?;
                    rustix::fs::setxattr(
                        &p,
                        "user.bgfuzz",
                        &value,
                        rustix::fs::XattrFlags::empty(),
                    )?;
                }
                Ok(())
            }
            KOp::Free { id } => {
                let mut r = Ok(());
                for p in self.files.take(id) {
                    if let Err(e) = remove_any(&p) {
                        r = Err(e);
                    }
                }
                r
            }
            KOp::RunDelayedRefs => File::open(task_dir)?.sync_all(),
            KOp::Nothing => {
                self.counters.noops.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            KOp::Commit => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                ioc_sync(root)
            }
            KOp::DeleteUnused => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                let r = ioc_sync(root);
                std::thread::sleep(Duration::from_millis(20));
                r
            }
            KOp::Relocate { usage } => match balance(root, usage) {
                Ok(()) => {
                    self.counters.balances.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                // Another task's balance is running, or ours was cancelled
                // at the end of the run.
                Err(e)
                    if matches!(
                        e.raw_os_error().map(rustix::io::Errno::from_raw_os_error),
                        Some(rustix::io::Errno::INPROGRESS | rustix::io::Errno::CANCELED)
                    ) =>
                {
                    self.counters.balance_busy.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            KOp::Trim => {
                self.counters.trims.fetch_add(1, Ordering::Relaxed);
                fitrim(root)
            }
        }
    }

    /// `e12-A-7`: what alloc 12 wrote in task A's pass 7 (`m` for a
    /// metadata directory).
    fn path(&self, kind: char, id: u32, pass: u64) -> PathBuf {
        self.root.join(format!("{kind}{id}-{}-{pass}", self.name))
    }
}

/// Keeps the workers' fds from pinning the mount (used by the main thread
/// to cancel a balance at the end).
pub fn open_root(root: &Path) -> io::Result<File> {
    File::open(root)
}

const BTRFS_IOC_TREE_SEARCH: u32 = 0xD000_9411; // _IOWR(0x94, 17, 4096 bytes)
const BTRFS_EXTENT_TREE_OBJECTID: u64 = 2;
const BTRFS_BLOCK_GROUP_TREE_OBJECTID: u64 = 11;
const BTRFS_BLOCK_GROUP_ITEM_KEY: u32 = 192;

/// The block group items of the mounted filesystem's extent tree (or its
/// block group tree), by `BTRFS_IOC_TREE_SEARCH`: their logical offsets.
pub fn bg_items(root: &File) -> io::Result<std::collections::BTreeSet<u64>> {
    let mut found = std::collections::BTreeSet::new();
    for tree in [BTRFS_EXTENT_TREE_OBJECTID, BTRFS_BLOCK_GROUP_TREE_OBJECTID] {
        match search_tree(root, tree, &mut found) {
            // No block group tree on this filesystem.
            Err(e)
                if tree == BTRFS_BLOCK_GROUP_TREE_OBJECTID
                    && e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) => {}
            r => r?,
        }
    }
    Ok(found)
}

/// Walks a whole tree with the search ioctl, keeping BLOCK_GROUP_ITEMs.
/// `struct btrfs_ioctl_search_args`: a 104-byte key (tree_id, min/max
/// objectid, min/max offset, min/max transid as u64; min/max type and
/// nr_items as u32; padding), then 3992 bytes of results, each a 32-byte
/// header (transid, objectid, offset: u64; type, len: u32) and `len` bytes.
fn search_tree(
    root: &File,
    tree: u64,
    found: &mut std::collections::BTreeSet<u64>,
) -> io::Result<()> {
    let (mut objectid, mut ty, mut offset) = (0u64, 0u32, 0u64);
    loop {
        let mut args = [0u8; 4096];
        let put64 =
            |a: &mut [u8; 4096], at: usize, v: u64| a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        let put32 =
            |a: &mut [u8; 4096], at: usize, v: u32| a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        put64(&mut args, 0, tree);
        put64(&mut args, 8, objectid);
        put64(&mut args, 16, u64::MAX);
        put64(&mut args, 24, offset);
        put64(&mut args, 32, u64::MAX);
        put64(&mut args, 40, 0);
        put64(&mut args, 48, u64::MAX);
        put32(&mut args, 56, ty);
        put32(&mut args, 60, u32::MAX);
        put32(&mut args, 64, 4096);
        // SAFETY: BTRFS_IOC_TREE_SEARCH takes a 4096-byte search_args.
        unsafe { ioctl_raw(root, BTRFS_IOC_TREE_SEARCH, args.as_mut_ptr().cast()) }?;
        let n = u32::from_ne_bytes(args[64..68].try_into().expect("4 bytes"));
        if n == 0 {
            return Ok(());
        }
        let mut at = 104;
        let get64 =
            |a: &[u8], at: usize| u64::from_ne_bytes(a[at..at + 8].try_into().expect("8 bytes"));
        let get32 =
            |a: &[u8], at: usize| u32::from_ne_bytes(a[at..at + 4].try_into().expect("4 bytes"));
        for _ in 0..n {
            if at + 32 > args.len() {
                break;
            }
            let (oid, off, t, len) = (
                get64(&args, at + 8),
                get64(&args, at + 16),
                get32(&args, at + 24),
                get32(&args, at + 28),
            );
            if t == BTRFS_BLOCK_GROUP_ITEM_KEY {
                found.insert(oid);
            }
            (objectid, ty, offset) = (oid, t, off);
            at += 32 + len as usize;
        }
        // The next key after the last one returned.
        if offset < u64::MAX {
            offset += 1;
        } else if ty < u32::MAX {
            (ty, offset) = (ty + 1, 0);
        } else if objectid < u64::MAX {
            (objectid, ty, offset) = (objectid + 1, 0, 0);
        } else {
            return Ok(());
        }
    }
}
