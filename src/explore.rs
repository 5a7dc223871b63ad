//! `bgfuzz explore`: bounded exhaustive exploration of the engine, in the
//! manner of TLC (breadth-first, fingerprints, shortest counterexamples)
//! and loom (every interleaving of real code within bounds).
//!
//! A state is an engine, the oracles' memory and each task's remaining
//! operation budget. From a state, each task in play may:
//! - take the next step of its operation in progress, if it is runnable
//!   (`T: continue`; free);
//! - begin any operation of the alphabet, if it is idle and has budget left
//!   (one unit of budget). Operations that can only return EINVAL are not
//!   tried (`start`, `join`, `delete_unused` holding a handle; `alloc`,
//!   `free`, `run_delayed_refs`, `end`, `commit` without one): they change
//!   nothing but the budget. `free` in the alphabet means "free any live
//!   extent", one choice per extent;
//! - begin `end`, if it is idle, holds a handle and has no budget left
//!   (free): as `repro`'s drain does, a task never stays holding a handle
//!   because its budget ran out;
//! - begin `endio`, if it is idle, holds no handle and a free-space cache
//!   IO (`mount space_cache`) awaits a worker (free, whatever the alphabet:
//!   the worker is a kernel thread, not a program's choice).
//!
//! The choice of operation is made lazily, when a task is idle, so states
//! reached by different programs are deduplicated. Levels are explored in
//! order of step count, so the first violation found is one with the fewest
//! step lines; it is printed as a `.scn` script that `bgfuzz repro` replays.
//!
//! With `--faults`, a step that evaluates failpoints is also taken with
//! each of those evaluations failing (each errno of its site), while the
//! run has faults left: faults are chosen where they happen, each costs no
//! step line, and a counterexample carries them as `fail` headers. The
//! engine evaluates them itself ([`Faults`]), so their counters are part
//! of a state. See docs/explore.md.
//!
//! The oracles run after every transition, as the runner runs them after
//! every step; the end-of-run checks run at every quiescent state (no
//! operation in progress, no handle, no cache IO awaiting a worker), where
//! `repro`'s drain has nothing to do. The state space is finite: budgets only decrease, and `continue`
//! steps of one operation are bounded by the engine.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use bgfuzz_engine::{
    fmt_size, Config, Engine, ExtentId, ExtentState, Kind, MountOpts, Op, Status, TaskId,
    MAX_TASKS, SZ_1M, SZ_4K,
};
use bgfuzz_failpoints::{Action as FailAction, Errno, FaultPlan, Faults, Site, Task as FailTask};
use serde::Serialize;

use crate::oracles::{Finding, Oracles, ViolationKind};
use crate::run::{run, Mode, Run};
use crate::scenario::{Action, Expect, Scenario, Step};
use crate::variant::Variant;

/// One letter of the alphabet: an operation, or `free` of any live extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Letter {
    Op(Op),
    FreeAny,
}

impl std::fmt::Display for Letter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Letter::Op(op) => write!(f, "{op}"),
            Letter::FreeAny => f.write_str("free"),
        }
    }
}

/// Everything that bounds an exploration; printed with every verdict.
#[derive(Clone, Debug)]
pub struct Bounds {
    pub variant: Variant,
    pub tasks: usize,
    /// Operations each task may begin (a closing `end` is free).
    pub ops: u8,
    pub alphabet: Vec<Letter>,
    pub config: Config,
    /// Identify states that differ only by a renaming of tasks.
    pub symmetry: bool,
    /// `--faults`: also branch on injected faults. `None`: no faults.
    pub faults: Option<FaultBounds>,
}

/// Which faults `--faults` tries: any evaluation among the first `hits` of
/// each failpoint site may fail, with each errno the site understands, up
/// to `max` faults in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultBounds {
    pub max: u8,
    /// `None`: any evaluation (`--fault-hits any`).
    pub hits: Option<u8>,
}

/// `--max-faults` and `--fault-hits` when `--faults` is given alone: one
/// fault, at any evaluation. Any is the cheaper bound as well as the
/// wider: without a hit bound, hit counts are not state, so states that
/// differ only in how often a site was evaluated merge.
pub const DEFAULT_FAULTS: FaultBounds = FaultBounds { max: 1, hits: None };
/// The largest `--fault-hits` and `--max-faults`: beyond them the fault
/// choices alone outgrow any exhaustive search.
pub const MAX_FAULT_HITS: u8 = 16;
pub const MAX_FAULTS: u8 = 4;

/// The defaults: small chunks, so a data chunk fills with one `alloc`, and
/// a device with room for exactly one more data chunk after mkfs's three
/// (1M reserved + 16M + 16M + 8M + 16M), so ENOSPC is one chunk away and
/// no smaller tail chunk multiplies the states.
pub const DEFAULT_DEVICE: u64 = 57 * SZ_1M;
pub const DEFAULT_CHUNK: [u64; 3] = [16 * SZ_1M, 16 * SZ_1M, 8 * SZ_1M];

impl Bounds {
    /// The default alphabet for a data chunk size: enough to reach the
    /// ff1f8250 race (an alloc that fills the mkfs data bg, then a small one
    /// that creates a bg) and every commit path. Left to `--alphabet`:
    /// `run_delayed_refs` (the commit runs them anyway; with it, 3 tasks x
    /// 4 ops has 2.5 million states instead of 1.3), `join` (as `start` but
    /// for the commit's blocking), `delete_unused` (does nothing without
    /// `free`: only a dropped ref puts a bg on `unused_bgs`) and `free` (one
    /// choice per live extent).
    pub fn default_alphabet(config: &Config) -> Vec<Letter> {
        let data = config.chunk(Kind::Data);
        vec![
            Letter::Op(Op::Start),
            Letter::Op(Op::Alloc {
                kind: Kind::Data,
                size: data,
            }),
            Letter::Op(Op::Alloc {
                kind: Kind::Data,
                size: SZ_4K,
            }),
            Letter::Op(Op::End),
            Letter::Op(Op::Commit),
        ]
    }

    pub fn new(variant: Variant, tasks: usize, ops: u8) -> Bounds {
        let config = Config {
            device_size: DEFAULT_DEVICE,
            chunk_size: DEFAULT_CHUNK,
            mount: MountOpts::default(),
        };
        Bounds {
            variant,
            tasks,
            ops,
            alphabet: Bounds::default_alphabet(&config),
            config,
            symmetry: true,
            faults: None,
        }
    }

    /// Bounds that reach the bug of a `bug-*` variant (with `--faults`
    /// for the bugs on error paths): the defaults, or for a bug in
    /// the free-space cache path (e44081ef6118) `mount space_cache` with a
    /// data chunk large enough to get a cache (100M) and an alloc that fills
    /// the metadata bg, so the endio worker creates one, or for balance
    /// against the cleaner (67c5e7d464bc) three tasks and an alphabet with
    /// `free`, `delete_unused` and `relocate`.
    pub fn for_variant(variant: Variant) -> Bounds {
        let mut b = Bounds::new(variant, 2, 4);
        if variant.bug_patch() == Some(bgfuzz_engine::E44081EF6118) {
            b.config.mount.space_cache = true;
            b.config.chunk_size[Kind::Data.index()] = 128 * SZ_1M;
            b.config.device_size = 256 * SZ_1M;
            b.alphabet = letters(&[
                "start",
                "alloc data 4K",
                "alloc metadata 16M",
                "end",
                "commit",
            ]);
        }
        if variant.bug_patch() == Some(bgfuzz_engine::F675DFE1223A6) {
            // The stale item needs a new bg's extents freed (and their
            // refs run) between phase 2 and the commit. Balance of the
            // empty mkfs data bg (at 25M) makes the next alloc create one
            // in a step fewer than filling it; one task needs 7 ops.
            b.ops = 7;
            b.alphabet = letters(&[
                "start",
                "alloc data 4K",
                "relocate 25M",
                "run_delayed_refs",
                "free",
                "end",
                "commit",
            ]);
        }
        // 67c5e7d464bc: an empty bg on unused_bgs (alloc, free, and the
        // commit's refs), the cleaner blocked by that commit, and balance of
        // the mkfs data bg (at 25M with these chunk sizes).
        if variant.bug_patch() == Some(bgfuzz_engine::F67C5E7D464BC) {
            b.tasks = 3;
            b.alphabet = letters(&[
                "start",
                "alloc data 4K",
                "free",
                "commit",
                "delete_unused",
                "relocate 25M",
            ]);
        }
        // Bugs on error paths: only an injected fault reaches them. Each
        // gets the smallest bounds under which explore's counterexample is
        // no longer than `bgfuzz run`'s minimized witness.
        // c79a175175d5: an EIO in the commit's first writeout with a cache
        // IO in flight (mount space_cache, as e44081ef6118's bounds).
        if variant.bug_patch() == Some(bgfuzz_engine::C79A175175D5) {
            b.config.mount.space_cache = true;
            b.config.chunk_size[Kind::Data.index()] = 128 * SZ_1M;
            b.config.device_size = 256 * SZ_1M;
            b.alphabet = letters(&["start", "alloc data 4K", "end", "commit"]);
            b.faults = Some(DEFAULT_FAULTS);
        }
        // acaeedb193a5: a writeout error with bgs still on the local list;
        // the shortest way needs two failing lookups, so two faults.
        if variant.bug_patch() == Some(bgfuzz_engine::ACAEEDB193A5) {
            b.ops = 5;
            b.alphabet = letters(&[
                "start",
                "alloc data 4K",
                "alloc metadata 4K",
                "alloc data 16M",
                "end",
                "commit",
            ]);
            b.faults = Some(FaultBounds { max: 2, hits: None });
        }
        // 7785a663c4be: under -o discard, a bg the cleaner removed waits on
        // deleted_bgs when the commit aborts.
        if variant.bug_patch() == Some(bgfuzz_engine::F7785A663C4BE) {
            b.ops = 5;
            b.config.mount.discard = true;
            b.alphabet = letters(&[
                "start",
                "alloc data 4K",
                "alloc metadata 4K",
                "free",
                "end",
                "commit",
                "delete_unused",
            ]);
            b.faults = Some(DEFAULT_FAULTS);
        }
        // 4fbcdf669454: a chunk allocation passes the system-space check
        // (a 1M system chunk under `chunk_cost`), then something else takes
        // that space before its phase 2 (here a system allocation; other
        // handles' phase 2s do the same with more steps).
        if variant.bug_patch() == Some(bgfuzz_engine::F4FBCDF669454) {
            b.config.mount.chunk_cost = true;
            b.config.chunk_size[Kind::System.index()] = SZ_1M;
            b.config.device_size = 200 * SZ_1M;
            b.alphabet = letters(&["start", "alloc data 16M", "alloc system 1M", "end"]);
        }
        // 2e6e518335f8: a phase 1 stopped halfway (`mount fitrim`) and a
        // trim walking the cache tree.
        if variant.bug_patch() == Some(bgfuzz_engine::F2E6E518335F8) {
            b.config.mount.fitrim = true;
            b.alphabet.push(Letter::Op(Op::Trim));
        }
        b
    }

    /// One line: what was explored.
    pub fn describe(&self) -> String {
        let alphabet: Vec<String> = self.alphabet.iter().map(|l| l.to_string()).collect();
        format!(
            "variant {}, {} tasks x {} ops, alphabet {{{}}}, device {}, chunk data {} metadata {} system {}, mount {}, symmetry {}, faults {}",
            self.variant,
            self.tasks,
            self.ops,
            alphabet.join(", "),
            fmt_size(self.config.device_size),
            fmt_size(self.config.chunk(Kind::Data)),
            fmt_size(self.config.chunk(Kind::Metadata)),
            fmt_size(self.config.chunk(Kind::System)),
            match self.config.mount.names() {
                n if n.is_empty() => "-".to_string(),
                n => n.join(","),
            },
            if self.symmetry { "on" } else { "off" },
            match self.faults {
                None => "off".to_string(),
                Some(f) => format!(
                    "at most {} per run, at {}",
                    f.max,
                    match f.hits {
                        Some(k) => format!("hits 1..={k} of each site"),
                        None => "any evaluation".to_string(),
                    }
                ),
            }
        )
    }
}

/// Bad bounds, refused before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    #[error("--tasks {0}: at least 1 and at most {MAX_TASKS} (A to H)")]
    Tasks(usize),
    #[error("--ops {0}: at least 1 and at most {MAX_OPS}")]
    Ops(u64),
    #[error("--fault-hits {0}: at least 1 and at most {MAX_FAULT_HITS}, or `any`")]
    FaultHits(u64),
    #[error("--max-faults {0}: at least 1 and at most {MAX_FAULTS}")]
    MaxFaults(u64),
    #[error("--alphabet is empty")]
    EmptyAlphabet,
    #[error("--alphabet `{item}`: {why}")]
    Letter { item: String, why: String },
    #[error("device/chunk sizes: {0}")]
    Config(String),
    #[error("{0}")]
    Memory(String),
}

/// More operations per task than this is far beyond what any machine can
/// explore exhaustively.
pub const MAX_OPS: u64 = 64;

/// Parses one alphabet item in script syntax (`alloc data 4K`, `commit`)
/// or `free` (any live extent).
/// A built-in alphabet, from script syntax that is known to parse.
fn letters(items: &[&str]) -> Vec<Letter> {
    items
        .iter()
        .map(|i| parse_letter(i).expect("a valid letter"))
        .collect()
}

pub fn parse_letter(item: &str) -> Result<Letter, BoundsError> {
    let item = item.trim();
    let bad = |why: String| BoundsError::Letter {
        item: item.to_string(),
        why,
    };
    if item == "free" {
        return Ok(Letter::FreeAny);
    }
    if item.starts_with("free ") {
        return Err(bad(
            "name no extent: `free` frees each live extent in turn".to_string()
        ));
    }
    if item.is_empty() {
        return Err(bad("empty operation".to_string()));
    }
    let scn = Scenario::parse(format!("A: {item}\n").as_bytes())
        .map_err(|e| bad(e.message.replace("`A: ", "`")))?;
    match scn.steps.first().map(|s| s.action) {
        Some(Action::Begin(op)) => Ok(Letter::Op(op)),
        _ => Err(bad(
            "`continue` is not an operation: explore tries it whenever a task can take a step"
                .to_string(),
        )),
    }
}

/// Checks bounds that can be checked before running.
pub fn validate(b: &Bounds) -> Result<(), BoundsError> {
    if b.tasks == 0 || b.tasks > MAX_TASKS {
        return Err(BoundsError::Tasks(b.tasks));
    }
    if b.ops == 0 || u64::from(b.ops) > MAX_OPS {
        return Err(BoundsError::Ops(u64::from(b.ops)));
    }
    if b.alphabet.is_empty() {
        return Err(BoundsError::EmptyAlphabet);
    }
    if let Some(f) = b.faults {
        if let Some(k) = f.hits.filter(|&k| k == 0 || k > MAX_FAULT_HITS) {
            return Err(BoundsError::FaultHits(u64::from(k)));
        }
        if f.max == 0 || f.max > MAX_FAULTS {
            return Err(BoundsError::MaxFaults(u64::from(f.max)));
        }
        if !bgfuzz_failpoints::ENABLED {
            return Err(BoundsError::Config(
                "--faults: this build has no failpoints (build with the `failpoints` feature): its counterexamples could not be replayed".to_string(),
            ));
        }
    }
    Engine::new(b.config, b.variant.patches(), false)
        .map_err(|e| BoundsError::Config(e.to_string()))?;
    Ok(())
}

/// When to stop before the bounds are exhausted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    pub max_states: Option<u64>,
    pub max_time: Option<Duration>,
    /// Resident memory (bytes) at which to stop; checked every few
    /// thousand states.
    pub max_memory: Option<u64>,
}

/// Bytes per distinct state held for the whole run: its fingerprint in the
/// set (16 bytes, with the table's slack about 32) and its trace entry (8).
pub const BYTES_PER_STATE: u64 = 40;

/// Refuses limits that cannot fit in memory.
pub fn validate_limits(l: &Limits) -> Result<(), BoundsError> {
    if let (Some(states), Some(mem)) = (l.max_states, l.max_memory) {
        let need = states.saturating_mul(BYTES_PER_STATE);
        if need > mem {
            return Err(BoundsError::Memory(format!(
                "a budget of {states} states needs at least {} MiB for fingerprints and traces alone, over the memory limit of {} MiB",
                need >> 20,
                mem >> 20
            )));
        }
    }
    if let Some(mem) = l.max_memory {
        if let Some(total) = mem_total() {
            if mem > total {
                return Err(BoundsError::Memory(format!(
                    "--max-memory {} MiB is more than this machine has ({} MiB)",
                    mem >> 20,
                    total >> 20
                )));
            }
        }
    }
    Ok(())
}

/// `MemTotal` of /proc/meminfo, in bytes.
pub fn mem_total() -> Option<u64> {
    meminfo("MemTotal:")
}

/// `MemAvailable` of /proc/meminfo, in bytes.
pub fn mem_available() -> Option<u64> {
    meminfo("MemAvailable:")
}

fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Resident set size of this process, in bytes.
pub fn rss() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// CPU time this thread has used, in seconds (utime + stime of
/// /proc/thread-self/stat, in USER_HZ = 100 ticks): on a shared machine
/// the rate per CPU second says more about the code than wall time.
pub fn thread_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Counts so far; what the progress bar shows.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Stats {
    /// Distinct states (after symmetry reduction), the initial one included.
    pub states: u64,
    pub transitions: u64,
    /// The deepest level with a new state, in step lines from mkfs.
    pub depth: usize,
    /// States waiting in the next level.
    pub queue: usize,
    pub seconds: f64,
}

/// Why an exploration stopped.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// Every state within the bounds was explored; no oracle fired.
    Clean,
    /// A shortest counterexample.
    Violation(Box<Counterexample>),
    /// A limit stopped it first: no violation so far, bounds not exhausted.
    Incomplete { why: String },
}

#[derive(Clone, Debug)]
pub struct Counterexample {
    pub kind: ViolationKind,
    /// The script, with `expect` lines for every variant (each replayed).
    pub scenario: Scenario,
    /// Its replay by the runner under the explored variant.
    pub run: Run,
}

#[derive(Clone, Debug)]
pub struct Exploration {
    pub bounds: Bounds,
    pub stats: Stats,
    pub verdict: Verdict,
}

/// A step as the trace stores it: `0` continue, `1..` alphabet letter + 1,
/// `FORCED_END`, or `FREE | n` for `free en`.
type Code = u16;
const FORCED_END: Code = 0x7fff;
const FORCED_ENDIO: Code = 0x7ffe;
const FREE: Code = 0x8000;

#[derive(Clone, Copy)]
struct TraceEntry {
    parent: u32,
    /// The task (top 3 bits) and the index in [`Explorer::fault_sets`] of
    /// the faults this step injected (0: none).
    task_faults: u16,
    code: Code,
}

const TASK_SHIFT: u32 = 13;
const FAULT_SETS: usize = 1 << TASK_SHIFT;

impl TraceEntry {
    fn task(self) -> usize {
        usize::from(self.task_faults >> TASK_SHIFT)
    }
    fn faults(self) -> usize {
        usize::from(self.task_faults & (FAULT_SETS as u16 - 1))
    }
}

/// A fault a step injected: the site's `nth` evaluation in the step
/// returned `errno`.
type Fault = (Site, u32, Errno);

/// Arms the plans that fail the chosen evaluations of one step.
fn arm(faults: &mut Faults, chosen: &[Fault]) {
    for site in Site::ALL {
        let nths: Vec<(u32, Errno)> = chosen
            .iter()
            .filter(|f| f.0 == site)
            .map(|&(_, n, e)| (n, e))
            .collect();
        if !nths.is_empty() {
            faults.set_plan(&fault_plan(site, &nths));
        }
    }
}

/// The index in `log` of the `nth` evaluation of `site`.
fn nth_of(log: &[Site], site: Site, nth: u32) -> usize {
    log.iter()
        .enumerate()
        .filter(|(_, &s)| s == site)
        .nth(nth as usize - 1)
        .map(|(i, _)| i)
        .expect("a chosen fault's evaluation is in the log")
}

const ROOT: u32 = u32::MAX;

#[derive(Clone)]
struct Node {
    engine: Engine,
    oracles: Oracles,
    left: [u8; MAX_TASKS],
    /// Faults that may still be injected on the way on.
    faults_left: u8,
    trace: u32,
}

/// Fingerprints are already uniform: the set uses them as their own hash.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u128 fingerprints are hashed")
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = (i as u64) ^ ((i >> 64) as u64);
    }
}

type FpSet = HashSet<u128, BuildHasherDefault<Identity>>;

/// TLC's estimate of the probability that two distinct states among `n`
/// shared a fingerprint of `bits` bits: n^2 / 2^(bits+1).
pub fn collision_probability(n: u64, bits: u32) -> f64 {
    (n as f64) * (n as f64) / 2f64.powi(bits as i32 + 1)
}

/// A plan that fails exactly the given evaluations of `site` (1-based,
/// increasing, from now on), each with its errno: `2*off->1*return(EIO)`.
fn fault_plan(site: Site, hits: &[(u32, Errno)]) -> FaultPlan {
    let mut actions = Vec::new();
    let mut done = 0;
    for &(hit, errno) in hits {
        if hit > done + 1 {
            actions.push(FailAction {
                count: Some(hit - done - 1),
                task: FailTask::Off,
            });
        }
        actions.push(FailAction {
            count: Some(1),
            task: FailTask::Return(errno),
        });
        done = hit;
    }
    FaultPlan { site, actions }
}

struct Explorer<'a, P: FnMut(&Stats)> {
    bounds: &'a Bounds,
    limits: Limits,
    started: Instant,
    seen: FpSet,
    trace: Vec<TraceEntry>,
    stats: Stats,
    progress: P,
    /// (trace index, finding) of the first violation.
    found: Option<(u32, Finding)>,
    stop: Option<String>,
    /// Reused for each node's transitions.
    choices: Vec<(TaskId, Code)>,
    /// The initial state, from which a counterexample's faults are
    /// numbered.
    root: Engine,
    /// The sets of faults steps injected, each stored once (the first is
    /// empty); a trace entry names one by index.
    fault_sets: Vec<Vec<Fault>>,
    fault_set_index: HashMap<Vec<Fault>, u16>,
}

/// Explores `bounds` breadth-first. `progress` is called every few
/// thousand states and once per level.
pub fn explore<P: FnMut(&Stats)>(
    bounds: &Bounds,
    limits: Limits,
    progress: P,
) -> Result<Exploration, BoundsError> {
    validate(bounds)?;
    validate_limits(&limits)?;
    let engine = match bounds.faults {
        None => Engine::new(bounds.config, bounds.variant.patches(), false),
        Some(f) => {
            let mut faults = Faults::default();
            faults.set_hit_cap(u32::from(f.hits.unwrap_or(0)));
            faults.set_logging(true);
            Engine::with_faults(bounds.config, bounds.variant.patches(), faults)
        }
    }
    .map_err(|e| BoundsError::Config(e.to_string()))?;
    let mut left = [0u8; MAX_TASKS];
    left[..bounds.tasks].fill(bounds.ops);
    let root = Node {
        engine,
        oracles: Oracles::new(),
        left,
        faults_left: bounds.faults.map_or(0, |f| f.max),
        trace: ROOT,
    };
    let mut x = Explorer {
        bounds,
        limits,
        started: Instant::now(),
        seen: FpSet::default(),
        trace: Vec::new(),
        stats: Stats::default(),
        progress,
        found: None,
        stop: None,
        choices: Vec::with_capacity(32),
        root: root.engine.clone(),
        fault_sets: vec![Vec::new()],
        fault_set_index: HashMap::new(),
    };
    x.seen.insert(x.fp(&root));
    x.stats.states = 1;
    // Boxed: a level's vector grows by moving pointers, not engines.
    let mut level = vec![Box::new(root)];
    let mut next: Vec<Box<Node>> = Vec::new();
    while !level.is_empty() && x.found.is_none() && x.stop.is_none() {
        for node in level.drain(..) {
            x.expand(node, &mut next);
            if x.found.is_some() || x.stop.is_some() {
                break;
            }
        }
        if !next.is_empty() && x.found.is_none() {
            x.stats.depth += 1;
        }
        std::mem::swap(&mut level, &mut next);
        x.stats.queue = level.len();
        x.stats.seconds = x.started.elapsed().as_secs_f64();
        (x.progress)(&x.stats);
    }
    x.stats.queue = level.len() + next.len();
    x.stats.seconds = x.started.elapsed().as_secs_f64();
    let verdict = if let Some((idx, finding)) = x.found.take() {
        x.stats.depth = x.depth_of(idx);
        Verdict::Violation(Box::new(x.counterexample(idx, finding)))
    } else if let Some(why) = x.stop.take() {
        Verdict::Incomplete { why }
    } else {
        Verdict::Clean
    };
    Ok(Exploration {
        bounds: bounds.clone(),
        stats: x.stats,
        verdict,
    })
}

impl<P: FnMut(&Stats)> Explorer<'_, P> {
    fn fp(&self, n: &Node) -> u128 {
        let mut salt = [0u64; MAX_TASKS];
        for (s, &l) in salt.iter_mut().zip(&n.left) {
            *s = u64::from(l);
        }
        n.engine.fingerprint(
            &salt[..self.bounds.tasks],
            &(&n.oracles, n.faults_left),
            self.bounds.symmetry,
        )
    }

    fn depth_of(&self, mut idx: u32) -> usize {
        let mut d = 0;
        while idx != ROOT {
            d += 1;
            idx = self.trace[idx as usize].parent;
        }
        d
    }

    /// The transitions out of `node`, as (task, code).
    fn choices(&self, node: &Node, out: &mut Vec<(TaskId, Code)>) {
        let e = &node.engine;
        for t in 0..self.bounds.tasks {
            match e.status(t) {
                Status::Runnable => out.push((t, 0)),
                Status::Blocked(_) => {}
                Status::Idle => {
                    let has_handle = e.handle(t).is_some();
                    if !has_handle && e.io_to_complete() {
                        // A free-space endio worker is a kernel thread, not
                        // a program's choice: free, as `continue` is.
                        out.push((t, FORCED_ENDIO));
                    }
                    if node.left[t] == 0 {
                        if has_handle {
                            out.push((t, FORCED_END));
                        }
                        continue;
                    }
                    for (i, letter) in self.bounds.alphabet.iter().enumerate() {
                        let needs_handle = match letter {
                            Letter::FreeAny => true,
                            Letter::Op(op) => op.needs_handle(),
                        };
                        if needs_handle != has_handle {
                            continue;
                        }
                        // Tried above whenever it can do something.
                        if *letter == Letter::Op(Op::Endio) {
                            continue;
                        }
                        match letter {
                            Letter::Op(_) => out.push((t, i as Code + 1)),
                            Letter::FreeAny => {
                                for x in e.extents() {
                                    if matches!(
                                        x.state,
                                        ExtentState::Reserved | ExtentState::Allocated
                                    ) && x.id.0 < u32::from(FREE)
                                    {
                                        out.push((t, FREE | x.id.0 as Code));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn action(&self, code: Code) -> Action {
        match code {
            0 => Action::Continue,
            FORCED_END => Action::Begin(Op::End),
            FORCED_ENDIO => Action::Begin(Op::Endio),
            c if c & FREE != 0 => Action::Begin(Op::Free {
                extent: ExtentId(u32::from(c & !FREE)),
            }),
            c => match self.bounds.alphabet[c as usize - 1] {
                Letter::Op(op) => Action::Begin(op),
                Letter::FreeAny => unreachable!("free is stored with its extent"),
            },
        }
    }

    /// Takes the step `(t, code)` on `child`.
    fn apply(&mut self, child: &mut Node, t: TaskId, code: Code) {
        let out = match self.action(code) {
            Action::Begin(op) => {
                if code != FORCED_END && code != FORCED_ENDIO {
                    child.left[t] -= 1;
                }
                let op = crate::run::resolve_fill(&child.engine, op);
                child.engine.begin(t, op)
            }
            Action::Continue => child.engine.step(t),
        };
        if let Err(e) = out {
            panic!("explore chose a step the engine refuses ({e}): a bug in explore");
        }
        self.stats.transitions += 1;
    }

    // A node is over a kilobyte inline (the engine's task array): boxed, a
    // level's vector grows by moving pointers.
    #[allow(clippy::vec_box)]
    fn expand(&mut self, node: Box<Node>, next: &mut Vec<Box<Node>>) {
        let mut choices = std::mem::take(&mut self.choices);
        choices.clear();
        self.choices(&node, &mut choices);
        let branching = node.faults_left > 0;
        let last = choices.len().saturating_sub(1);
        let mut node = Some(node);
        for (i, &(t, code)) in choices.iter().enumerate() {
            if branching {
                let parent = node.as_ref().expect("kept while branching");
                if self.step_with_faults(parent, t, code, &mut Vec::new(), next) {
                    return;
                }
                continue;
            }
            let mut child = if i == last {
                node.take()
                    .expect("the node is moved only into its last child")
            } else {
                node.as_ref()
                    .expect("node kept until its last child")
                    .clone()
            };
            self.apply(&mut child, t, code);
            if self.admit(child, t, code, 0, next) {
                return;
            }
        }
        self.choices = choices;
    }

    /// The step `(t, code)` from `parent` with the faults `chosen` (in the
    /// order the step evaluates them), then, while faults are left, the
    /// same step with each later evaluation it makes failing too. A step
    /// with a fault runs the same code as without it up to the evaluation
    /// that fails, so it makes the same evaluations up to there: every
    /// set of at most `faults_left` failing evaluations (among the first
    /// `hits` of each site) is tried once. True when exploration stops.
    #[allow(clippy::vec_box)]
    fn step_with_faults(
        &mut self,
        parent: &Node,
        t: TaskId,
        code: Code,
        chosen: &mut Vec<Fault>,
        next: &mut Vec<Box<Node>>,
    ) -> bool {
        let mut child = Box::new(parent.clone());
        let faults = child
            .engine
            .faults_mut()
            .expect("explore --faults arms the engine");
        arm(faults, chosen);
        self.apply(&mut child, t, code);
        let faults = child.engine.faults_mut().expect("armed");
        let log = faults.take_log();
        assert!(faults.spent(), "a chosen fault did not fire: {chosen:?}");
        child.faults_left -= chosen.len() as u8;
        if child.faults_left == 0 {
            // No more branching: the hits counted so far no longer matter,
            // and nothing reads the log.
            faults.set_hit_cap(0);
            faults.set_logging(false);
        }
        // Evaluations after the last chosen one may fail too.
        let later = match chosen.last() {
            None => 0,
            Some(&(site, nth, _)) => nth_of(&log, site, nth) + 1,
        };
        let more = child.faults_left > 0;
        let Some(set) = self.fault_set(chosen) else {
            return true;
        };
        if self.admit(child, t, code, set, next) {
            return true;
        }
        if !more {
            return false;
        }
        let base = parent.engine.faults().expect("armed");
        for j in later..log.len() {
            let site = log[j];
            let nth = log[..=j].iter().filter(|&&s| s == site).count() as u32;
            // Within the first `hits` of the site since mkfs (counted
            // exactly below the cap).
            let eligible = self
                .bounds
                .faults
                .and_then(|f| f.hits)
                .is_none_or(|k| base.hits(site) + nth <= u32::from(k));
            if !eligible {
                continue;
            }
            for &errno in site.errnos() {
                chosen.push((site, nth, errno));
                if self.step_with_faults(parent, t, code, chosen, next) {
                    return true;
                }
                chosen.pop();
            }
        }
        false
    }

    /// The index of a set of faults in `fault_sets`, added if new; `None`
    /// (and a stop) when the table is full.
    fn fault_set(&mut self, faults: &[Fault]) -> Option<u16> {
        if faults.is_empty() {
            return Some(0);
        }
        if let Some(&i) = self.fault_set_index.get(faults) {
            return Some(i);
        }
        if self.fault_sets.len() >= FAULT_SETS {
            self.stop = Some(format!(
                "the table of fault sets ({FAULT_SETS}) is full: lower --fault-hits or --max-faults"
            ));
            return None;
        }
        let i = self.fault_sets.len() as u16;
        self.fault_sets.push(faults.to_vec());
        self.fault_set_index.insert(faults.to_vec(), i);
        Some(i)
    }

    /// Checks a new state and queues it if it is new; true when the
    /// exploration stops (a violation or a limit).
    #[allow(clippy::vec_box)]
    fn admit(
        &mut self,
        mut child: Box<Node>,
        t: TaskId,
        code: Code,
        faults: u16,
        next: &mut Vec<Box<Node>>,
    ) -> bool {
        let finding = child
            .oracles
            .after_step(&child.engine, child.engine.events());
        child.engine.drain_events();
        let entry = TraceEntry {
            parent: child.trace,
            task_faults: (t as u16) << TASK_SHIFT | faults,
            code,
        };
        if let Some(f) = finding {
            self.trace.push(entry);
            self.found = Some((self.trace.len() as u32 - 1, f));
            return true;
        }
        let fp = self.fp(&child);
        if !self.seen.insert(fp) {
            return false;
        }
        self.trace.push(entry);
        child.trace = self.trace.len() as u32 - 1;
        self.stats.states += 1;
        // Nothing left for `repro`'s drain: its verdict is the end-of-run
        // checks' on this very state.
        let quiescent = !child.engine.io_to_complete()
            && (0..self.bounds.tasks).all(|u| {
                child.engine.status(u) == Status::Idle && child.engine.handle(u).is_none()
            });
        if quiescent {
            if let Some(f) = child.oracles.at_end(&child.engine) {
                self.found = Some((child.trace, f));
                return true;
            }
        }
        next.push(child);
        if self.trace.len() >= (ROOT - 1) as usize {
            self.stop = Some("the trace index (32 bits) is full".to_string());
            return true;
        }
        if self
            .limits
            .max_states
            .is_some_and(|n| self.stats.states >= n)
        {
            self.stop = Some(format!(
                "the state budget ({} states) ran out",
                self.stats.states
            ));
            return true;
        }
        if self.stats.states.is_multiple_of(8192) {
            self.check_limits(next.len());
            if self.stop.is_some() {
                return true;
            }
        }
        false
    }

    fn check_limits(&mut self, queue: usize) {
        self.stats.seconds = self.started.elapsed().as_secs_f64();
        self.stats.queue = queue;
        (self.progress)(&self.stats);
        if let Some(d) = self.limits.max_time {
            if self.started.elapsed() >= d {
                self.stop = Some(format!("the time budget ({:.1}s) ran out", d.as_secs_f64()));
            }
        }
        if let (Some(max), Some(now)) = (self.limits.max_memory, rss()) {
            if now >= max {
                self.stop = Some(format!(
                    "resident memory reached the limit ({} MiB)",
                    max >> 20
                ));
            }
        }
    }

    /// The path to trace entry `idx` as a script, replayed by the runner.
    fn counterexample(&self, idx: u32, finding: Finding) -> Counterexample {
        let mut path = Vec::new();
        let mut i = idx;
        while i != ROOT {
            let e = self.trace[i as usize];
            path.push(e);
            i = e.parent;
        }
        path.reverse();
        let steps: Vec<Step> = path
            .iter()
            .map(|e| Step::new(e.task(), self.action(e.code)))
            .collect();
        // A fault is stored as "the nth evaluation in its step": replay the
        // path, counting every evaluation, for its number since mkfs.
        let mut fails: Vec<Fault> = Vec::new();
        if self.bounds.faults.is_some() {
            let mut e = self.root.clone();
            e.faults_mut().expect("armed").set_hit_cap(u32::MAX);
            for (entry, step) in path.iter().zip(&steps) {
                let chosen = &self.fault_sets[entry.faults()];
                let faults = e.faults_mut().expect("armed");
                let before = Site::ALL.map(|s| faults.hits(s));
                arm(faults, chosen);
                match step.action {
                    Action::Begin(op) => {
                        let op = crate::run::resolve_fill(&e, op);
                        e.begin(step.task, op)
                    }
                    Action::Continue => e.step(step.task),
                }
                .expect("the path replays");
                e.drain_events();
                for &(site, nth, errno) in chosen {
                    let i = Site::ALL.iter().position(|&s| s == site).expect("a site");
                    fails.push((site, before[i] + nth, errno));
                }
            }
        }
        // Hit numbers count from mkfs, as fail-rs counts from the start of
        // the run: one `fail` header per site.
        let fails: Vec<FaultPlan> = Site::ALL
            .into_iter()
            .filter_map(|site| {
                let mut hits: Vec<(u32, Errno)> = fails
                    .iter()
                    .filter(|f| f.0 == site)
                    .map(|&(_, h, e)| (h, e))
                    .collect();
                hits.sort_unstable();
                (!hits.is_empty()).then(|| fault_plan(site, &hits).simplified())
            })
            .collect();
        let c = self.bounds.config;
        let mut scenario = Scenario {
            variant: Some(self.bounds.variant),
            device: Some(c.device_size),
            chunk: [
                Some(c.chunk_size[0]),
                Some(c.chunk_size[1]),
                Some(c.chunk_size[2]),
            ],
            mount: c.mount,
            fails,
            expects: Vec::new(),
            steps,
        };
        // A variant under which the script does not replay as written (an
        // injected fault can end an operation sooner there) gets no line,
        // as a minimized witness's.
        for v in Variant::ALL {
            if let Ok(r) = run(&scenario, v, Mode::Strict) {
                scenario.expects.push(Expect {
                    variant: v,
                    outcome: r.violation.map(|x| x.finding.kind),
                });
            }
        }
        let run =
            run(&scenario, self.bounds.variant, Mode::Strict).expect("explore's script is valid");
        let replayed = run.violation.as_ref().map(|v| v.finding.kind);
        assert_eq!(
            replayed,
            Some(finding.kind),
            "explore's counterexample does not replay: a determinism bug\n{}",
            scenario.print()
        );
        Counterexample {
            kind: finding.kind,
            scenario,
            run,
        }
    }
}

/// The verdict line(s) a person reads.
pub fn summary(x: &Exploration) -> String {
    let s = &x.stats;
    let rate = s.states as f64 / s.seconds.max(1e-9);
    let mut out = String::new();
    let counts = format!(
        "{} distinct states, {} transitions, depth {}",
        s.states, s.transitions, s.depth
    );
    match &x.verdict {
        Verdict::Clean => {
            let _ = writeln!(out, "no violation within BOUNDS: {counts}");
        }
        Verdict::Incomplete { why } => {
            let _ = writeln!(
                out,
                "INCOMPLETE: {why}; no violation in {counts} explored, but the bounds are not exhausted"
            );
        }
        Verdict::Violation(c) => {
            let _ = writeln!(
                out,
                "VIOLATION {} within BOUNDS, shortest counterexample: {} step lines ({counts} explored)",
                c.kind,
                c.scenario.steps.len()
            );
        }
    }
    let _ = writeln!(out, "BOUNDS: {}", x.bounds.describe());
    let _ = writeln!(
        out,
        "{:.2}s, {rate:.0} distinct states/s; 128-bit fingerprints: collision probability ~ n^2/2^129 = {:.1e}",
        s.seconds,
        collision_probability(s.states, 128)
    );
    out
}

/// The counterexample in full: script, replay report, attribution.
pub fn counterexample_text(c: &Counterexample, variant: Variant) -> String {
    let mut out = String::new();
    out.push_str(&c.scenario.print());
    out.push('\n');
    if let Some(v) = crate::report::violation_report(&c.run) {
        out.push_str(&v);
    }
    let passes: Vec<&str> = c
        .scenario
        .expects
        .iter()
        .filter(|e| e.outcome.is_none())
        .map(|e| e.variant.name())
        .collect();
    let _ = writeln!(
        out,
        "\nattribution: {variant} is {}; the same script {}",
        variant.description(),
        if passes.is_empty() {
            "violates under every variant".to_string()
        } else {
            format!("passes under {}", passes.join(", "))
        }
    );
    out
}

#[derive(Serialize)]
pub struct JsonExploration {
    pub bounds: String,
    pub variant: String,
    pub tasks: usize,
    pub ops: u8,
    pub alphabet: Vec<String>,
    pub symmetry: bool,
    /// Faults a run may inject (0: `--faults` off).
    pub max_faults: u8,
    /// `--fault-hits`; null: any evaluation.
    pub fault_hits: Option<u8>,
    pub complete: bool,
    pub states: u64,
    pub transitions: u64,
    pub depth: usize,
    pub seconds: f64,
    pub states_per_sec: f64,
    pub collision_probability: f64,
    /// `none`, `incomplete` or a violation kind.
    pub verdict: String,
    pub incomplete: Option<String>,
    pub script: Option<String>,
    pub steps: Option<usize>,
}

pub fn json(x: &Exploration) -> JsonExploration {
    let s = &x.stats;
    let (verdict, incomplete, script, steps) = match &x.verdict {
        Verdict::Clean => ("none".to_string(), None, None, None),
        Verdict::Incomplete { why } => ("incomplete".to_string(), Some(why.clone()), None, None),
        Verdict::Violation(c) => (
            c.kind.name().to_string(),
            None,
            Some(c.scenario.print()),
            Some(c.scenario.steps.len()),
        ),
    };
    JsonExploration {
        bounds: x.bounds.describe(),
        variant: x.bounds.variant.name().to_string(),
        tasks: x.bounds.tasks,
        ops: x.bounds.ops,
        alphabet: x.bounds.alphabet.iter().map(|l| l.to_string()).collect(),
        symmetry: x.bounds.symmetry,
        max_faults: x.bounds.faults.map_or(0, |f| f.max),
        fault_hits: x.bounds.faults.and_then(|f| f.hits),
        complete: !matches!(x.verdict, Verdict::Incomplete { .. }),
        states: s.states,
        transitions: s.transitions,
        depth: s.depth,
        seconds: s.seconds,
        states_per_sec: s.states as f64 / s.seconds.max(1e-9),
        collision_probability: collision_probability(s.states, 128),
        verdict,
        incomplete,
        script,
        steps,
    }
}
