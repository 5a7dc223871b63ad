//! What `bgfuzz kernel` sets up on the machine, each piece a guard that
//! undoes itself: a tmpfs (fault runs), a loop device, the btrfs mount, a
//! private tracefs mount with a trace instance of its own. [`Rig`] tears
//! them down in reverse order on every way out: normal end, Ctrl-C/SIGTERM
//! (the signal only sets a flag; the run then ends normally) and panic
//! (unwinding runs the `Drop`s).
//!
//! It never touches what it did not create: the loop device is the one
//! `LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE` gave this process, and it is only
//! cleared while its backing file is still this run's image.

use std::ffi::{c_void, CString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};
use rustix::mount::{MountFlags, UnmountFlags};

/// Why `bgfuzz kernel` cannot run here (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// `uname -r` and `uname -v`: every result names the kernel it ran on.
pub fn kernel_version() -> String {
    let u = rustix::system::uname();
    format!(
        "{} {}",
        u.release().to_string_lossy(),
        u.version().to_string_lossy()
    )
}

/// Checks, in order, what a kernel run needs; the first missing thing is
/// the refusal.
pub fn preflight() -> Result<(), Refusal> {
    if !rustix::process::geteuid().is_root() {
        return Err(Refusal(
            "bgfuzz kernel needs root (it creates a loop device and mounts btrfs); run it as root"
                .into(),
        ));
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("btrfs"))
    {
        return Err(Refusal(
            "this kernel has no btrfs (not in /proc/filesystems; try `modprobe btrfs`)".into(),
        ));
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err(Refusal(
            "no loop devices: /dev/loop-control is missing (try `modprobe loop`)".into(),
        ));
    }
    for tool in ["mkfs.btrfs", "btrfs"] {
        if which(tool).is_none() {
            return Err(Refusal(format!(
                "`{tool}` not found in PATH: install btrfs-progs (apt-get install -y btrfs-progs)"
            )));
        }
    }
    Ok(())
}

/// Whether the kernel offers tracefs; without it the run goes on with the
/// trace oracle marked unavailable.
pub fn has_tracefs() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some("tracefs"))
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs a tool, returning (success, stdout + stderr).
pub fn run_tool(tool: &str, args: &[&str]) -> io::Result<(bool, String)> {
    let exe = which(tool).unwrap_or_else(|| tool.into());
    let out = Command::new(exe).args(args).output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// An ioctl with a raw opcode and a pointer (or integer) argument whose
/// return value is the result: the loop and btrfs ioctls are not all
/// encoded the way rustix's typed wrappers expect (LOOP_CTL_GET_FREE returns
/// the device number; BTRFS_IOC_BALANCE_CTL takes an integer).
pub struct RawIoctl {
    pub opcode: Opcode,
    pub arg: *mut c_void,
}

// SAFETY: callers pass an opcode and an argument matching the kernel's
// definition of that ioctl (each use site says which).
unsafe impl Ioctl for RawIoctl {
    type Output = i32;
    const IS_MUTATING: bool = true;
    fn opcode(&self) -> Opcode {
        self.opcode
    }
    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }
    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<i32> {
        Ok(out)
    }
}

/// # Safety
/// `arg` must be what the kernel's ioctl `opcode` expects.
pub unsafe fn ioctl_raw<F: AsFd>(fd: F, opcode: u32, arg: *mut c_void) -> io::Result<i32> {
    rustix::ioctl::ioctl(
        fd,
        RawIoctl {
            opcode: opcode as Opcode,
            arg,
        },
    )
    .map_err(io::Error::from)
}

// include/uapi/linux/loop.h
const LOOP_CTL_GET_FREE: u32 = 0x4C82;
const LOOP_CONFIGURE: u32 = 0x4C0A;
const LOOP_CLR_FD: u32 = 0x4C01;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A loop device this process configured over its image.
pub struct LoopDev {
    pub number: u32,
    pub path: PathBuf,
    backing: PathBuf,
    fd: Option<OwnedFd>,
}

impl LoopDev {
    /// Gets a free loop device and binds `image` to it, with autoclear (the
    /// kernel detaches it by itself once the last user, the mount, is gone:
    /// a safety net even if this process is killed with SIGKILL after
    /// unmounting). Retries when another process grabs the same device.
    pub fn attach(image: &Path, read_only: bool) -> io::Result<LoopDev> {
        let backing = image.canonicalize()?;
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
            .open(&backing)?;
        let ctl = File::open("/dev/loop-control")?;
        let mut last = None;
        for _ in 0..20 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument.
            let n = unsafe { ioctl_raw(&ctl, LOOP_CTL_GET_FREE, std::ptr::null_mut())? };
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = match OpenOptions::new().read(true).write(!read_only).open(&path) {
                Ok(d) => d,
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            let mut cfg = LoopConfig {
                fd: std::os::fd::AsRawFd::as_raw_fd(&file) as u32,
                block_size: 0,
                // SAFETY: all-zero is a valid loop_info64.
                info: unsafe { std::mem::zeroed() },
                reserved: [0; 8],
            };
            cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
            let name = backing.as_os_str().as_encoded_bytes();
            let k = name.len().min(63);
            cfg.info.lo_file_name[..k].copy_from_slice(&name[..k]);
            // SAFETY: LOOP_CONFIGURE takes a struct loop_config.
            match unsafe { ioctl_raw(&dev, LOOP_CONFIGURE, (&mut cfg as *mut LoopConfig).cast()) } {
                Ok(_) => {
                    return Ok(LoopDev {
                        number: n as u32,
                        path,
                        backing,
                        fd: Some(dev.into()),
                    })
                }
                // Someone else configured it between GET_FREE and here.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free loop device")))
    }

    /// `/sys/block/loopN/loop/backing_file`: the device is still ours only
    /// while this names our image.
    pub fn is_ours(&self) -> bool {
        let f = format!("/sys/block/loop{}/loop/backing_file", self.number);
        std::fs::read_to_string(f)
            .map(|s| {
                let s = s.trim_end();
                let s = s.strip_suffix(" (deleted)").unwrap_or(s);
                Path::new(s) == self.backing
            })
            .unwrap_or(false)
    }

    /// Drops our handle; the kernel autoclears it once unmounted. If it is
    /// still bound to our image, LOOP_CLR_FD (deferred by the kernel while
    /// mounted). Returns a problem, if any.
    pub fn detach(&mut self) -> Option<String> {
        let fd = self.fd.take()?;
        let mut problem = None;
        if self.is_ours() {
            // SAFETY: LOOP_CLR_FD takes no argument.
            if let Err(e) = unsafe { ioctl_raw(&fd, LOOP_CLR_FD, std::ptr::null_mut()) } {
                // ENXIO: already detached (autoclear won the race).
                if e.raw_os_error() != Some(rustix::io::Errno::NXIO.raw_os_error()) {
                    problem = Some(format!("{}: LOOP_CLR_FD: {e}", self.path.display()));
                }
            }
        }
        drop(fd);
        // Autoclear runs on the last close; give it a moment, then say if
        // the device still points at our image.
        for _ in 0..50 {
            if !self.is_ours() {
                return problem;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(problem.unwrap_or_else(|| {
            format!(
                "{} is still bound to {}",
                self.path.display(),
                self.backing.display()
            )
        }))
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        if let Some(p) = self.detach() {
            eprintln!("bgfuzz kernel: cleanup: {p}");
        }
    }
}

/// A mount this process made; unmounted on drop.
pub struct Mounted {
    pub target: PathBuf,
    pub what: &'static str,
    active: bool,
}

impl Mounted {
    pub fn mount(
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &str,
        what: &'static str,
    ) -> io::Result<Mounted> {
        std::fs::create_dir_all(target)?;
        let data = CString::new(data).map_err(io::Error::other)?;
        rustix::mount::mount(source, target, fstype, flags, Some(data.as_c_str()))?;
        Ok(Mounted {
            target: target.to_path_buf(),
            what,
            active: true,
        })
    }

    /// Unmounts, retrying while busy (a worker finishing a syscall), then
    /// lazily as a last resort so nothing stays mounted.
    pub fn unmount(&mut self) -> Option<String> {
        if !self.active {
            return None;
        }
        self.active = false;
        let mut last = None;
        for _ in 0..100 {
            match rustix::mount::unmount(&self.target, UnmountFlags::empty()) {
                Ok(()) => return None,
                Err(rustix::io::Errno::BUSY) => {
                    last = Some(rustix::io::Errno::BUSY);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Some(format!("umount {}: {e}", self.target.display())),
            }
        }
        let lazy = rustix::mount::unmount(&self.target, UnmountFlags::DETACH);
        Some(format!(
            "umount {} ({}): busy ({last:?}) for 10s; lazy unmount: {lazy:?}",
            self.target.display(),
            self.what
        ))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(p) = self.unmount() {
            eprintln!("bgfuzz kernel: cleanup: {p}");
        }
    }
}

/// A trace instance of our own in a private tracefs mount: its own event
/// switches and buffer, so nothing global (`/sys/kernel/tracing`'s own
/// `enable` files) is changed, and removing the instance removes every
/// switch we turned on.
pub struct Tracing {
    pub instance: PathBuf,
    /// Tells the reader of `trace_pipe` to close it (an open file keeps the
    /// instance from being removed).
    pub reader_stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    enabled: Vec<PathBuf>,
    mount: Option<Mounted>,
}

/// The btrfs tracepoints the oracle reads, where this kernel has them.
pub const EVENTS: &[&str] = &[
    "btrfs_add_block_group",
    "btrfs_add_unused_block_group",
    "btrfs_remove_block_group",
    "btrfs_skip_unused_block_group",
    "btrfs_chunk_alloc",
    "btrfs_chunk_free",
    "btrfs_transaction_commit",
    "btrfs_reserve_extent",
];

impl Tracing {
    pub fn start(dir: &Path, name: &str) -> io::Result<(Tracing, Vec<String>)> {
        let mount = Mounted::mount(
            "nodev",
            dir,
            "tracefs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            "",
            "tracefs",
        )?;
        let instance = dir.join("instances").join(name);
        std::fs::create_dir(&instance)?;
        let mut t = Tracing {
            instance,
            reader_stop: None,
            enabled: Vec::new(),
            mount: Some(mount),
        };
        // Per-CPU buffer; a full buffer loses events, which the report counts.
        let _ = std::fs::write(t.instance.join("buffer_size_kb"), "16384");
        let mut missing = Vec::new();
        for ev in EVENTS {
            let f = t.instance.join("events/btrfs").join(ev).join("enable");
            if !f.exists() {
                missing.push(ev.to_string());
                continue;
            }
            std::fs::write(&f, "1")?;
            t.enabled.push(f);
        }
        std::fs::write(t.instance.join("tracing_on"), "1")?;
        Ok((t, missing))
    }

    pub fn pipe(&self) -> PathBuf {
        self.instance.join("trace_pipe")
    }

    /// Switches the events off, removes the instance, unmounts tracefs.
    /// The trace_pipe must be closed first (an open file keeps the
    /// instance busy).
    pub fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(s) = &self.reader_stop {
            s.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        for f in self.enabled.drain(..) {
            if let Err(e) = std::fs::write(&f, "0") {
                problems.push(format!("{}: {e}", f.display()));
            }
        }
        if self.instance.exists() {
            let mut ok = false;
            for _ in 0..50 {
                if std::fs::remove_dir(&self.instance).is_ok() {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !ok {
                problems.push(format!(
                    "trace instance {} could not be removed",
                    self.instance.display()
                ));
            }
        }
        if let Some(mut m) = self.mount.take() {
            problems.extend(m.unmount());
        }
        problems
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        for p in self.stop() {
            eprintln!("bgfuzz kernel: cleanup: {p}");
        }
    }
}

/// Everything a run set up, torn down in reverse: the btrfs mount, the loop
/// device, the trace instance and its tracefs, the tmpfs, the directory.
/// `teardown` is idempotent; `Drop` calls it for the panic path.
#[derive(Default)]
pub struct Rig {
    pub fs: Option<Mounted>,
    pub loopdev: Option<LoopDev>,
    pub tracing: Option<Tracing>,
    pub tmpfs: Option<Mounted>,
    pub dir: Option<tempfile::TempDir>,
}

impl Rig {
    pub fn unmount_fs(&mut self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(mut m) = self.fs.take() {
            p.extend(m.unmount());
        }
        if let Some(mut l) = self.loopdev.take() {
            p.extend(l.detach());
        }
        p
    }

    pub fn teardown(&mut self) -> Vec<String> {
        let mut p = self.unmount_fs();
        if let Some(mut t) = self.tracing.take() {
            p.extend(t.stop());
        }
        if let Some(mut m) = self.tmpfs.take() {
            p.extend(m.unmount());
        }
        if let Some(d) = self.dir.take() {
            let path = d.path().to_path_buf();
            if let Err(e) = d.close() {
                p.push(format!("removing {}: {e}", path.display()));
            }
        }
        p
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for p in self.teardown() {
            eprintln!("bgfuzz kernel: cleanup: {p}");
        }
    }
}

/// What is left on the machine that names `needle` (our temp dir): mounts
/// in /proc/mounts and loop devices backed by files under it. Empty after a
/// clean teardown; tests and the report check it.
pub fn leftovers(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    let mut out = Vec::new();
    if let Ok(m) = std::fs::read_to_string("/proc/mounts") {
        out.extend(
            m.lines()
                .filter(|l| l.contains(&needle))
                .map(|l| format!("mount: {l}")),
        );
    }
    if let Ok(rd) = std::fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            let f = e.path().join("loop/backing_file");
            if let Ok(b) = std::fs::read_to_string(&f) {
                if b.contains(&needle) {
                    out.push(format!(
                        "loop: {} -> {}",
                        e.file_name().to_string_lossy(),
                        b.trim()
                    ));
                }
            }
        }
    }
    out
}
