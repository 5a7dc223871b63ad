//! The engine's state after every step of a run, for the picture
//! (`repro --html`) and for machines (`repro --json --events`).
//!
//! [`capture`] runs a scenario with an observer on the runner and copies
//! what the engine's read-only accessors show after each step into plain
//! serde structs. To show more state, add a field to [`BgState`],
//! [`TransState`] or [`State`] and fill it in [`State::of`]: the JSON
//! carries it at once, the page's hover panel lists every field it is
//! given (a new list of objects wants an entry in page.js's `LISTS`), and a
//! new lane track is one entry in `html.rs`'s `BG_TRACKS`.

use std::collections::BTreeSet;

use bgfuzz_engine::{
    fmt_size, task_name, BgId, BgList, DirtyList, Done, Engine, Event, ExtentState, Key, Status,
    StepOutcome, TransType, MAX_TASKS,
};
use serde::Serialize;

use crate::report::describe;
use crate::run::{run_observed, Mode, RanStep, Run, RunError};
use crate::scenario::{step_text, Action, Scenario};

/// One step and the engine's state after it.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// 1-based step number; 0 is the filesystem as mkfs left it.
    pub step: usize,
    /// The step as a script line (`C: continue`); empty for step 0.
    pub text: String,
    pub task: Option<char>,
    /// The operation the step belongs to.
    pub op: Option<String>,
    /// Whether the step began its operation (else it continued it).
    pub begins: bool,
    /// `yielded`, `blocked`, `finished` or `error`.
    pub outcome: String,
    /// What a blocked task waits for, or the errno an operation returned.
    pub detail: Option<String>,
    /// Script line; 0 for a step the drain took after the last line.
    pub line: usize,
    pub drain: bool,
    /// What the step did, in words (as the annotated script says).
    pub what: String,
    pub events: Vec<EventRecord>,
    #[serde(flatten)]
    pub state: State,
}

/// One engine event of a step.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EventRecord {
    /// `bg_created`, `bg_item_inserted`, `bg_dirtied`, `bg_written`,
    /// `bg_requeued`, `bg_removed`, `abort`, `trans_started`,
    /// `roots_switched`, `super_written`, `trans_cleaned_up`,
    /// `ref_underflow`, `use_after_free`.
    pub kind: &'static str,
    pub bg: Option<String>,
    pub transid: Option<u64>,
    pub task: Option<char>,
    /// `write_one_cache_group` ran in the critical section (`bg_written`).
    pub critical: Option<bool>,
    /// The function, for `ref_underflow`/`use_after_free`; the errno for
    /// `abort`.
    pub detail: Option<String>,
}

/// The engine's state, as its accessors show it.
#[derive(Clone, Debug, Serialize)]
pub struct State {
    pub running_transaction: Option<u64>,
    /// `BTRFS_FS_STATE_ERROR`.
    pub fs_error: bool,
    /// Superblock generation of the last completed commit.
    pub committed_generation: u64,
    /// Transactions not yet completed, and one completed at this step.
    pub transactions: Vec<TransState>,
    /// Tasks with an operation in progress or a handle.
    pub tasks: Vec<TaskState>,
    /// Every block group ever created, in creation order.
    pub block_groups: Vec<BgState>,
    /// `fs_info->unused_bgs`.
    pub unused_bgs: Vec<String>,
    /// Free-space cache IO in flight (`mount -o space_cache`).
    pub cache_io: Vec<CacheIoState>,
    /// How many extents are neither freed nor failed.
    pub extents_live: usize,
    /// The first [`LISTED`] of them.
    pub extents: Vec<ExtentRecord>,
}

/// Long lists in a snapshot are cut to this many entries (their length is
/// given): a snapshot stays small however long the run.
pub const LISTED: usize = 256;

/// `struct btrfs_transaction`.
#[derive(Clone, Debug, Serialize)]
pub struct TransState {
    pub transid: u64,
    /// `RUNNING`, `COMMIT_START`, `COMMIT_DOING`, `UNBLOCKED`, `COMPLETED`
    /// (`TRANS_STATE_*`).
    pub state: &'static str,
    pub num_writers: u32,
    pub num_extwriters: u32,
    pub dirty_bgs: Vec<String>,
    pub io_bgs: Vec<String>,
    /// `btrfs_start_dirty_block_groups`' local list.
    pub writeout: Vec<String>,
    pub dirty_bg_run: bool,
    /// How many delayed refs are queued.
    pub delayed_refs_queued: usize,
    /// The first [`LISTED`] of them: `e3 add`, `e1 drop`.
    pub delayed_refs: Vec<String>,
    /// `cur_trans->aborted`: the errno and who raised it.
    pub aborted: Option<String>,
    pub committer: Option<char>,
    /// The committer is past `num_writers == 1`, before UNBLOCKED.
    pub in_critical: bool,
}

/// A bg's free-space cache IO, started by `btrfs_write_out_cache`.
#[derive(Clone, Debug, Serialize)]
pub struct CacheIoState {
    pub bg: String,
    pub transid: u64,
    /// The task running its endio worker, once one took it.
    pub worker: Option<char>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TaskState {
    pub task: char,
    /// `idle`, `runnable` or `blocked`.
    pub status: &'static str,
    pub waiting: Option<String>,
    /// The operation in progress.
    pub op: Option<String>,
    pub handle: Option<HandleState>,
}

/// `struct btrfs_trans_handle`.
#[derive(Clone, Debug, Serialize)]
pub struct HandleState {
    pub transid: u64,
    /// `start` or `join`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Block groups whose phase 2 has not run.
    pub new_bgs: Vec<String>,
}

/// `struct btrfs_block_group_cache` and where it is.
#[derive(Clone, Debug, Serialize)]
pub struct BgState {
    /// `bg 1313M`: the bg starting at logical 1313M.
    pub name: String,
    pub kind: String,
    pub start: u64,
    pub len: u64,
    pub used: u64,
    pub reserved: u64,
    pub refs: i64,
    /// The refs its list memberships call for.
    pub expected_refs: i64,
    /// In `fs_info->block_group_cache_tree`.
    pub in_cache_tree: bool,
    /// On a handle's `new_bgs` (phase 2 not run): that task.
    pub new_bgs: Option<char>,
    /// Its block group item is in the running extent tree.
    pub item: bool,
    /// Its item is in the last committed extent tree.
    pub item_committed: bool,
    /// `dirty_bgs` or `writeout`, and of which transaction.
    pub dirty_list: Option<String>,
    pub dirty_transid: Option<u64>,
    pub on_io_list: bool,
    pub unused: bool,
    /// The last step whose `write_one_cache_group` wrote it.
    pub written_step: Option<usize>,
    pub ro: bool,
    pub removed: bool,
    pub freed: bool,
    pub created_transid: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExtentRecord {
    pub name: String,
    pub kind: String,
    pub bg: Option<String>,
    pub start: u64,
    pub len: u64,
    /// `pending`, `reserved`, `allocated`, `dropping`.
    pub state: &'static str,
}

/// What the observer keeps between steps.
#[derive(Default)]
struct Capture {
    /// The last `keep` states.
    states: std::collections::VecDeque<State>,
    keep: usize,
    /// States observed so far (mkfs's included).
    seen: usize,
    /// States before the window: not computed at all.
    skip: usize,
    /// Transactions shown completed once; later snapshots leave them out.
    completed: BTreeSet<u64>,
    /// Per bg: the last step that wrote it.
    written: Vec<Option<usize>>,
    ops: [Option<String>; MAX_TASKS],
}

impl Capture {
    fn observe(&mut self, e: &Engine, step: Option<&RanStep>) {
        let n = self.seen;
        self.seen += 1;
        if let Some(s) = step {
            for ev in &s.events {
                if let Event::BgWritten { bg, .. } = ev {
                    let i = bg.0 as usize;
                    if self.written.len() <= i {
                        self.written.resize(i + 1, None);
                    }
                    self.written[i] = Some(n);
                }
            }
            self.ops[s.step.task] = match s.outcome {
                StepOutcome::Finished(_) => None,
                _ => Some(s.op.to_string()),
            };
        }
        if n < self.skip {
            if n + 1 == self.skip {
                // Transactions completed before the window stay out of it.
                self.completed = e
                    .transactions()
                    .iter()
                    .filter(|t| t.state == bgfuzz_engine::TransState::Completed)
                    .map(|t| t.transid)
                    .collect();
            }
            return;
        }
        let state = State::of(e, &self.completed, &self.written, &self.ops);
        for t in &state.transactions {
            if t.state == "COMPLETED" {
                self.completed.insert(t.transid);
            }
        }
        if self.states.len() == self.keep {
            self.states.pop_front();
        }
        self.states.push_back(state);
    }
}

fn bg_name(e: &Engine, id: BgId) -> String {
    e.bg(id).name()
}

fn names(e: &Engine, ids: impl IntoIterator<Item = BgId>) -> Vec<String> {
    ids.into_iter().map(|id| bg_name(e, id)).collect()
}

impl State {
    fn of(
        e: &Engine,
        completed: &BTreeSet<u64>,
        written: &[Option<usize>],
        ops: &[Option<String>; MAX_TASKS],
    ) -> State {
        let transactions = e
            .transactions()
            .iter()
            .filter(|t| !completed.contains(&t.transid))
            .map(|t| TransState {
                transid: t.transid,
                state: t.state.name().trim_start_matches("TRANS_STATE_"),
                num_writers: t.num_writers,
                num_extwriters: t.num_extwriters,
                dirty_bgs: names(e, t.dirty_bgs.iter().copied()),
                io_bgs: names(e, t.io_bgs.iter().copied()),
                writeout: names(e, t.writeout.iter().copied()),
                dirty_bg_run: t.dirty_bg_run,
                delayed_refs_queued: t.delayed_refs.len(),
                delayed_refs: t
                    .delayed_refs
                    .iter()
                    .take(LISTED)
                    .map(|r| {
                        let a = match r.action {
                            bgfuzz_engine::RefAction::Add => "add",
                            bgfuzz_engine::RefAction::Drop => "drop",
                        };
                        format!("{} {a}", r.extent)
                    })
                    .collect(),
                aborted: t
                    .aborted
                    .as_ref()
                    .map(|a| format!("-{} ({})", a.errno, a.origin)),
                committer: t.committer.map(task_name),
                in_critical: t.in_critical,
            })
            .collect();
        let tasks = (0..MAX_TASKS)
            .filter_map(|t| {
                let status = e.status(t);
                let handle = e.handle(t);
                if status == Status::Idle && handle.is_none() {
                    return None;
                }
                let (status, waiting) = match status {
                    Status::Idle => ("idle", None),
                    Status::Runnable => ("runnable", None),
                    Status::Blocked(w) => ("blocked", Some(w.to_string())),
                };
                Some(TaskState {
                    task: task_name(t),
                    status,
                    waiting,
                    op: ops[t].clone(),
                    handle: handle.map(|h| HandleState {
                        transid: h.transid,
                        ty: match h.ty {
                            TransType::Start => "start",
                            TransType::Join => "join",
                            TransType::JoinNolock => "join_nolock",
                        },
                        new_bgs: names(e, h.new_bgs.iter().copied()),
                    }),
                })
            })
            .collect();
        let committed = &e.committed().extent_tree;
        let block_groups = e
            .block_groups()
            .iter()
            .map(|bg| {
                let key = Key::block_group(bg.start, bg.len);
                let (dirty_list, dirty_transid) = match bg.dirty_list {
                    DirtyList::None => (None, None),
                    DirtyList::DirtyBgs(t) => (Some("dirty_bgs".to_string()), Some(t)),
                    DirtyList::Writeout(t) => (Some("writeout".to_string()), Some(t)),
                };
                BgState {
                    name: bg.name(),
                    kind: bg.kind.to_string(),
                    start: bg.start,
                    len: bg.len,
                    used: bg.used,
                    reserved: bg.reserved,
                    refs: bg.refs,
                    expected_refs: e.expected_refs(bg),
                    in_cache_tree: e.cache_tree().get(&bg.start) == Some(&bg.id),
                    new_bgs: match bg.bg_list {
                        BgList::NewBgs(t) => Some(task_name(t)),
                        _ => None,
                    },
                    item: e.extent_tree().contains_key(&key),
                    item_committed: committed.contains_key(&key),
                    dirty_list,
                    dirty_transid,
                    on_io_list: bg.on_io_list,
                    unused: bg.bg_list == BgList::UnusedBgs,
                    written_step: written.get(bg.id.0 as usize).copied().flatten(),
                    ro: bg.ro,
                    removed: bg.removed,
                    freed: bg.freed,
                    created_transid: bg.created_transid,
                }
            })
            .collect();
        let mut extents_live = 0;
        let mut extents = Vec::new();
        for x in e.extents() {
            let state = match x.state {
                ExtentState::Pending => "pending",
                ExtentState::Reserved => "reserved",
                ExtentState::Allocated => "allocated",
                ExtentState::Dropping => "dropping",
                ExtentState::Failed | ExtentState::Freed => continue,
            };
            extents_live += 1;
            if extents.len() < LISTED {
                extents.push(ExtentRecord {
                    name: x.id.to_string(),
                    kind: x.kind.to_string(),
                    bg: x.bg.map(|b| bg_name(e, b)),
                    start: x.start,
                    len: x.len,
                    state,
                });
            }
        }
        State {
            running_transaction: e.running_transaction(),
            fs_error: e.fs_error(),
            committed_generation: e.committed().generation,
            transactions,
            tasks,
            block_groups,
            unused_bgs: names(e, e.unused_bgs().iter().copied()),
            cache_io: e
                .cache_io()
                .iter()
                .map(|c| CacheIoState {
                    bg: bg_name(e, c.bg),
                    transid: c.transid,
                    worker: c.worker.map(task_name),
                })
                .collect(),
            extents_live,
            extents,
        }
    }
}

fn event_record(run: &Run, ev: &Event) -> EventRecord {
    let bg = |id: &BgId| Some(run.engine.bg(*id).name());
    let mut r = EventRecord {
        kind: "",
        bg: None,
        transid: None,
        task: None,
        critical: None,
        detail: None,
    };
    match ev {
        Event::TransStarted { transid } => (r.kind, r.transid) = ("trans_started", Some(*transid)),
        Event::BgCreated { bg: b, task } => {
            (r.kind, r.bg, r.task) = ("bg_created", bg(b), Some(task_name(*task)))
        }
        Event::BgItemInserted { bg: b } => (r.kind, r.bg) = ("bg_item_inserted", bg(b)),
        Event::BgDirtied { bg: b } => (r.kind, r.bg) = ("bg_dirtied", bg(b)),
        Event::BgWritten { bg: b, critical } => {
            (r.kind, r.bg, r.critical) = ("bg_written", bg(b), Some(*critical))
        }
        Event::BgRequeued { bg: b } => (r.kind, r.bg) = ("bg_requeued", bg(b)),
        Event::BgWriteSkipped { bg: b } => (r.kind, r.bg) = ("bg_write_skipped", bg(b)),
        Event::BgRemoved { bg: b } => (r.kind, r.bg) = ("bg_removed", bg(b)),
        Event::CacheIoStarted { bg: b } => (r.kind, r.bg) = ("cache_io_started", bg(b)),
        Event::CacheIoDone { bg: b } => (r.kind, r.bg) = ("cache_io_done", bg(b)),
        Event::BgKeptForSpace { bg: b } => (r.kind, r.bg) = ("bg_kept_for_space", bg(b)),
        Event::SystemChunkForced { bg: b } => (r.kind, r.bg) = ("system_chunk_forced", bg(b)),
        Event::Abort(a) => {
            r.kind = "abort";
            r.transid = Some(a.transid);
            r.task = Some(task_name(a.task));
            r.critical = Some(a.in_critical);
            r.detail = Some(format!("-{} ({})", a.error.errno, a.error.origin));
        }
        Event::RootsSwitched { transid } => {
            (r.kind, r.transid) = ("roots_switched", Some(*transid))
        }
        Event::SuperWritten { transid } => (r.kind, r.transid) = ("super_written", Some(*transid)),
        Event::TransCleanedUp { transid } => {
            (r.kind, r.transid) = ("trans_cleaned_up", Some(*transid))
        }
        Event::RefUnderflow { bg: b, site } => {
            (r.kind, r.bg, r.detail) = ("ref_underflow", bg(b), Some(site.to_string()))
        }
        Event::UseAfterFree { bg: b, site } => {
            (r.kind, r.bg, r.detail) = ("use_after_free", bg(b), Some(site.to_string()))
        }
        Event::KernelAssert { site, what } => {
            (r.kind, r.detail) = ("kernel_assert", Some(format!("{site}: {what}")))
        }
        Event::NullSpaceInfo { bg: b, site } => {
            (r.kind, r.bg, r.detail) = ("null_space_info", bg(b), Some(site.to_string()))
        }
    }
    r
}

/// Runs `scenario` like [`crate::run::run`] and returns, with the run, one
/// snapshot for the filesystem before the first step and one per step.
pub fn capture(
    scenario: &Scenario,
    variant: crate::variant::Variant,
    mode: Mode,
) -> Result<(Run, Vec<Snapshot>), RunError> {
    capture_last(scenario, variant, mode, usize::MAX)
}

/// [`capture`], keeping only the last `keep` snapshots (a picture draws a
/// bounded number of rows; a million-step script must not hold a million
/// copies of the engine's state).
pub fn capture_last(
    scenario: &Scenario,
    variant: crate::variant::Variant,
    mode: Mode,
    keep: usize,
) -> Result<(Run, Vec<Snapshot>), RunError> {
    // A first, plain run counts the steps, so that the second computes
    // only the states it keeps (runs are deterministic).
    let skip = if keep == usize::MAX {
        0
    } else {
        (crate::run::run(scenario, variant, mode)?.steps.len() + 1).saturating_sub(keep)
    };
    let mut cap = Capture {
        keep: keep.max(1),
        skip,
        ..Capture::default()
    };
    let run = run_observed(scenario, variant, variant.patches(), mode, &mut |e, s| {
        cap.observe(e, s)
    })?;
    let mut snaps = Vec::with_capacity(cap.states.len());
    let dropped = cap.seen - cap.states.len();
    for (k, state) in cap.states.into_iter().enumerate() {
        let i = dropped + k;
        let snap = match i.checked_sub(1).and_then(|j| run.steps.get(j)) {
            None => Snapshot {
                step: 0,
                text: String::new(),
                task: None,
                op: None,
                begins: false,
                outcome: "mkfs".to_string(),
                detail: None,
                line: 0,
                drain: false,
                what: format!(
                    "mkfs: {} block groups, committed at generation {}",
                    state.block_groups.len(),
                    state.committed_generation
                ),
                events: Vec::new(),
                state,
            },
            Some(s) => {
                let (outcome, detail) = match s.outcome {
                    StepOutcome::Yielded => ("yielded", None),
                    StepOutcome::Blocked(w) => ("blocked", Some(w.to_string())),
                    StepOutcome::Finished(Ok(d)) => ("finished", done_text(&run, d)),
                    StepOutcome::Finished(Err(err)) => ("error", Some(format!("-{}", err.errno))),
                };
                Snapshot {
                    step: i,
                    text: step_text(&s.step),
                    task: Some(task_name(s.step.task)),
                    op: Some(s.op.to_string()),
                    begins: matches!(s.step.action, Action::Begin(_)),
                    outcome: outcome.to_string(),
                    detail,
                    line: s.step.line,
                    drain: s.drain,
                    what: describe(&run, s),
                    events: s.events.iter().map(|ev| event_record(&run, ev)).collect(),
                    state,
                }
            }
        };
        snaps.push(snap);
    }
    Ok((run, snaps))
}

fn done_text(run: &Run, d: Done) -> Option<String> {
    Some(match d {
        Done::Handle { transid } => format!("handle on transaction {transid}"),
        Done::Extent { id, bg, start } => format!(
            "{id} at {} in {}",
            fmt_size(start),
            run.engine.bg(bg).name()
        ),
        Done::Freed { id } => format!("{id} freed"),
        Done::RanRefs { count } => format!("{count} delayed ref(s) run"),
        Done::Ended => "handle ended".to_string(),
        Done::Committed { transid } => format!("transaction {transid} committed"),
        Done::Deleted { count } => format!("{count} bg(s) deleted"),
        Done::IoDone { bg } => format!("cache IO of {} done", run.engine.bg(bg).name()),
        Done::NoIo => "no cache IO in flight".to_string(),
        Done::Relocated { start } => format!("chunk {} relocated and removed", fmt_size(start)),
        Done::NoChunk => "no chunk there: nothing to relocate".to_string(),
        Done::Trimmed => "trimmed every bg in the cache tree".to_string(),
    })
}

/// `repro --json --events`: the run's JSON and `events`, one snapshot per
/// step, in order (the mkfs state left out).
#[derive(Serialize)]
pub struct JsonWithEvents<'a> {
    #[serde(flatten)]
    pub run: crate::report::JsonRun,
    pub events: &'a [Snapshot],
}

pub fn with_events(run: crate::report::JsonRun, snaps: &[Snapshot]) -> JsonWithEvents<'_> {
    JsonWithEvents {
        run,
        events: snaps.get(1..).unwrap_or(&[]),
    }
}
