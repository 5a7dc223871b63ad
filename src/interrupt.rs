//! Ctrl-C, SIGTERM and SIGHUP on a campaign stop every process it started.
//!
//! A group-wide SIGINT (Ctrl-C in a terminal) does not stop libFuzzer's
//! fork mode by itself. The parent runs each job with `system(3)`
//! (FuzzerUtilLinux.cpp `ExecuteCommand`), and `system` ignores SIGINT in
//! its caller while the job runs, so only the jobs see it. A job started
//! by another worker thread just after the signal does not, and the
//! parent then waits for it, or goes on starting jobs, until
//! `-max_total_time`, long after `cargo fuzz` and bgfuzz are gone. CI saw
//! one live 60 s after the SIGINT.
//!
//! So a campaign makes itself the child subreaper (`PR_SET_CHILD_SUBREAPER`,
//! so the orphans of a `cargo fuzz` that died stay its descendants) and
//! turns these signals into a teardown: SIGTERM to every descendant
//! (libFuzzer handles it even inside `system`, removing its own temp dir),
//! SIGKILL to what is left after [`GRACE`], then the stale libFuzzer temp
//! dirs, then exit `128 + signal`. Only descendants are signalled: nothing
//! the campaign did not start. SIGKILL cannot be caught; a group-wide one
//! takes the fuzzers with it, since they stay in the campaign's group.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the descendants get to handle SIGTERM before SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// Held across every spawn: once the teardown holds it, nothing new starts
/// that it would miss. `true` once a signal has arrived.
static SPAWN: Mutex<bool> = Mutex::new(false);

/// Spawns `cmd` unless the campaign is being torn down.
pub fn spawn(cmd: &mut Command) -> anyhow::Result<Child> {
    let stopping = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    if *stopping {
        anyhow::bail!("interrupted");
    }
    Ok(cmd.spawn()?)
}

/// Catches SIGINT, SIGTERM and SIGHUP for as long as it lives.
pub struct Guard {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Guard {
    pub fn install() -> anyhow::Result<Guard> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        // Without it, orphans go to init and out of reach; still better
        // than nothing, so a refusal (old kernel, seccomp) is not fatal.
        let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let handle = signals.handle();
        let thread = std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let mut stopping = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
                *stopping = true;
                let name = match sig {
                    SIGINT => "SIGINT",
                    SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                eprintln!(
                    "{name}: stopping the fuzzers; nothing is lost, the same command resumes"
                );
                let (termed, killed) = teardown(GRACE);
                let removed = crate::campaign::remove_stale_libfuzzer_temps(&std::env::temp_dir());
                eprintln!(
                    "stopped {termed} process(es), {killed} of them with SIGKILL; removed {} libFuzzer temp dir(s)",
                    removed.len()
                );
                std::process::exit(128 + sig);
            }
        });
        Ok(Guard {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = rustix::process::set_child_subreaper(None);
    }
}

/// Signals every live descendant of this process: SIGTERM at once, SIGKILL
/// to those still alive after `grace`. Returns how many were signalled and
/// how many of them needed SIGKILL.
pub fn teardown(grace: Duration) -> (usize, usize) {
    use rustix::process::{kill_process, Pid, Signal};
    let me = std::process::id();
    let started = Instant::now();
    let mut termed = std::collections::BTreeSet::new();
    let mut killed = std::collections::BTreeSet::new();
    loop {
        let live = descendants(me);
        if live.is_empty() {
            break;
        }
        let late = started.elapsed() >= grace;
        for pid in live {
            let Some(p) = Pid::from_raw(pid as i32) else {
                continue;
            };
            if late {
                if killed.insert(pid) {
                    let _ = kill_process(p, Signal::KILL);
                }
            } else if termed.insert(pid) {
                let _ = kill_process(p, Signal::TERM);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (termed.union(&killed).count(), killed.len())
}

/// The live (not zombie) descendants of `root`, from `/proc/*/stat`.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut live = std::collections::BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in entries.filter_map(Result::ok) {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Some(stat) = crate::campaign::proc_stat(pid) else {
            continue;
        };
        children.entry(stat.ppid).or_default().push(pid);
        if stat.live {
            live.insert(pid);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            todo.push(c);
            if live.contains(&c) {
                out.push(c);
            }
        }
    }
    out.sort_unstable();
    out
}
