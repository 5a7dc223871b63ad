//! The runner: scheduler + engine + failpoints -> a [`Run`].
//!
//! A run is a pure function of its scenario and variant. The runner records
//! the steps that actually ran, so any input (a loose fuzzer choice, a
//! hand-written script that relies on implicit completion) comes out as a
//! strict script that replays exactly.

use bgfuzz_engine::{
    task_name, BgList, Engine, Event, ExtentState, Op, Patches, Status, StepOutcome, TaskId,
    UsageError, FILL, MAX_TASKS, SZ_4K,
};
use bgfuzz_failpoints::FailGuard;

use crate::oracles::{Finding, Oracles};
use crate::scenario::{Action, Scenario, Step};
use crate::variant::Variant;

/// How the runner treats a step it cannot take as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A script: such a step is an error at its line.
    Strict,
    /// A generated scenario: such a step is mapped onto one that can run
    /// (a `continue` for a blocked task goes to a runnable one, a `free`
    /// names a live extent) or dropped.
    Loose,
}

/// One step that ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RanStep {
    pub step: Step,
    /// The operation this step belongs to.
    pub op: Op,
    pub outcome: StepOutcome,
    pub events: Vec<Event>,
    /// Taken by the drain after the last line.
    pub drain: bool,
}

/// The first violation of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub finding: Finding,
    /// Index into [`Run::steps`] of the step after which it fired; equal to
    /// `steps.len()` for one found at the end of the run.
    pub step: usize,
}

#[derive(Clone, Debug)]
pub struct Run {
    pub variant: Variant,
    /// The patches the engine ran with: the variant's, unless
    /// [`run_patched`] overrode them.
    pub patches: Patches,
    /// The normalized scenario: the input's header with the variant that
    /// ran, and exactly the steps that ran.
    pub scenario: Scenario,
    pub steps: Vec<RanStep>,
    pub violation: Option<Violation>,
    /// The engine as the run left it.
    pub engine: Engine,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// A step that cannot run as written (strict mode).
    #[error("{line}: {message}")]
    Script { line: usize, message: String },
    #[error("{0}")]
    Config(String),
    #[error("this build has no failpoints (build with the `failpoints` feature)")]
    NoFailpoints,
    #[error("failpoints: {0}")]
    Failpoints(String),
}

struct Runner<'o> {
    engine: Engine,
    oracles: Oracles,
    mode: Mode,
    steps: Vec<RanStep>,
    /// The op in progress per task, for the record.
    ops: [Option<Op>; MAX_TASKS],
    /// Per task, the last op begun and its script line, for errors that
    /// come from it.
    last: [Option<(Op, usize)>; MAX_TASKS],
    /// Per task, the line of its last `start` or `join`.
    started: [usize; MAX_TASKS],
    violation: Option<Violation>,
    observer: Observer<'o>,
}

/// Sees the engine before the first step (`None`) and after each step:
/// how [`crate::snapshot`] records the state a picture shows.
pub type Observer<'o> = &'o mut dyn FnMut(&Engine, Option<&RanStep>);

/// `alloc KIND fill` (size 0) fills a bg: the size of the first hole the
/// allocator meets, or of a whole new chunk when none has room. Scripts
/// keep `fill`; every replay takes the same size again.
pub fn resolve_fill(engine: &Engine, op: Op) -> Op {
    match op {
        Op::Alloc { kind, size: FILL } => Op::Alloc {
            kind,
            size: engine
                .first_free_hole(kind)
                .unwrap_or_else(|| engine.config().chunk(kind)),
        },
        op => op,
    }
}

/// Runs a scenario under a variant.
pub fn run(scenario: &Scenario, variant: Variant, mode: Mode) -> Result<Run, RunError> {
    run_patched(scenario, variant, variant.patches(), mode)
}

/// Runs a scenario under a variant, with the engine built with `patches`
/// instead of the variant's (e.g. the variant plus one fix, to see which
/// fix removes a witness). The script means what it means under `variant`;
/// only the engine's patch set differs.
pub fn run_patched(
    scenario: &Scenario,
    variant: Variant,
    patches: Patches,
    mode: Mode,
) -> Result<Run, RunError> {
    run_observed(scenario, variant, patches, mode, &mut |_, _| {})
}

/// [`run_patched`], calling `observer` before the first step and after
/// each step.
pub fn run_observed(
    scenario: &Scenario,
    variant: Variant,
    patches: Patches,
    mode: Mode,
    observer: Observer<'_>,
) -> Result<Run, RunError> {
    run_with(scenario, variant, patches, mode, observer, false)
}

/// [`run`], with the script's `fail` plans evaluated inside the engine
/// ([`bgfuzz_failpoints::Faults`]) instead of fail-rs's registry: what
/// `explore --faults` relies on. It must give the same run; a test replays
/// the corpus both ways.
pub fn run_engine_faults(
    scenario: &Scenario,
    variant: Variant,
    mode: Mode,
) -> Result<Run, RunError> {
    run_with(
        scenario,
        variant,
        variant.patches(),
        mode,
        &mut |_, _| {},
        true,
    )
}

fn run_with(
    scenario: &Scenario,
    variant: Variant,
    patches: Patches,
    mode: Mode,
    observer: Observer<'_>,
    in_engine: bool,
) -> Result<Run, RunError> {
    let armed = !in_engine && scenario.fails.iter().any(|p| p.injects());
    if armed && !bgfuzz_failpoints::ENABLED {
        return Err(RunError::NoFailpoints);
    }
    // Held for the whole run: fail-rs's registry is global.
    let _guard = if armed {
        Some(FailGuard::new(&scenario.fails).map_err(|e| RunError::Failpoints(e.to_string()))?)
    } else {
        None
    };
    let engine = if in_engine {
        let faults = bgfuzz_failpoints::Faults::new(&scenario.fails);
        Engine::with_faults(scenario.config(), patches, faults)
    } else {
        Engine::new(scenario.config(), patches, armed)
    }
    .map_err(|e| RunError::Config(e.to_string()))?;
    let mut r = Runner {
        engine,
        oracles: Oracles::new(),
        mode,
        steps: Vec::new(),
        ops: [None; MAX_TASKS],
        last: [None; MAX_TASKS],
        started: [0; MAX_TASKS],
        violation: None,
        observer,
    };
    (r.observer)(&r.engine, None);
    r.run_steps(&scenario.steps)?;
    if r.violation.is_none() {
        r.drain();
    }
    if r.violation.is_none() {
        if let Some(finding) = r.oracles.at_end(&r.engine) {
            r.violation = Some(Violation {
                finding,
                step: r.steps.len(),
            });
        }
    }
    let mut normalized = scenario.clone();
    normalized.variant = Some(variant);
    normalized.steps = r
        .steps
        .iter()
        .map(|s| Step::new(s.step.task, s.step.action))
        .collect();
    Ok(Run {
        variant,
        patches,
        scenario: normalized,
        steps: r.steps,
        violation: r.violation,
        engine: r.engine,
    })
}

impl Runner<'_> {
    fn script_error<T>(&self, line: usize, message: String) -> Result<T, RunError> {
        Err(RunError::Script { line, message })
    }

    fn run_steps(&mut self, steps: &[Step]) -> Result<(), RunError> {
        for step in steps {
            if self.violation.is_some() {
                break;
            }
            let t = step.task;
            match step.action {
                // Loose: free-space endio workers are kernel threads of
                // their own, so an `endio` runs on the lowest idle task
                // that holds no handle, whichever task the input named.
                Action::Begin(Op::Endio) if self.mode == Mode::Loose => {
                    let worker = (0..MAX_TASKS).find(|&u| {
                        self.engine.status(u) == Status::Idle && self.engine.handle(u).is_none()
                    });
                    if let Some(u) = worker.filter(|_| self.engine.io_to_complete()) {
                        self.take_step(u, Action::Begin(Op::Endio), false, step.line)?;
                    }
                }
                Action::Begin(op) => {
                    // Implicit completion of the operation in progress.
                    while self.violation.is_none() && self.engine.status(t) != Status::Idle {
                        match self.engine.status(t) {
                            Status::Blocked(w) => {
                                if self.mode == Mode::Loose {
                                    break;
                                }
                                return self.script_error(
                                    step.line,
                                    format!(
                                        "`{}` begins an operation on task {} whose operation in progress ({}{}) blocks before it ends ({w})",
                                        crate::scenario::step_text(step),
                                        task_name(t),
                                        self.ops[t].map(|o| o.to_string()).unwrap_or_default(),
                                        match self.last[t] {
                                            Some((_, l)) if l > 0 => format!(", line {l}"),
                                            _ => String::new(),
                                        }
                                    ),
                                );
                            }
                            _ => self.take_step(t, Action::Continue, false, step.line)?,
                        }
                    }
                    if self.violation.is_some() || self.engine.status(t) != Status::Idle {
                        continue;
                    }
                    // Loose: an operation that needs a handle on a task
                    // without one begins `start` first.
                    if self.mode == Mode::Loose
                        && op.needs_handle()
                        && self.engine.handle(t).is_none()
                    {
                        self.take_step(t, Action::Begin(Op::Start), false, step.line)?;
                        if self.violation.is_some()
                            || self.engine.status(t) != Status::Idle
                            || self.engine.handle(t).is_none()
                        {
                            continue;
                        }
                    }
                    let op = match self.map_op(t, op) {
                        Some(op) => op,
                        None => continue,
                    };
                    if self.mode == Mode::Strict {
                        self.check_misuse(step, op)?;
                    }
                    self.last[t] = Some((op, step.line));
                    if matches!(op, Op::Start | Op::Join) {
                        self.started[t] = step.line;
                    }
                    self.take_step(t, Action::Begin(op), false, step.line)?;
                }
                Action::Continue => {
                    let t = match self.engine.status(t) {
                        Status::Runnable => t,
                        _ if self.mode == Mode::Loose => match self.next_runnable(t) {
                            Some(u) => u,
                            None => continue,
                        },
                        Status::Idle => {
                            return self.script_error(
                                step.line,
                                format!(
                                    "`continue` on task {}, which has no operation in progress{}",
                                    task_name(t),
                                    match self.last[t] {
                                        Some((op, 0)) => format!(" (its `{op}` already ended)"),
                                        Some((op, l)) =>
                                            format!(" (its `{op}` of line {l} already ended)"),
                                        None => String::new(),
                                    }
                                ),
                            )
                        }
                        Status::Blocked(w) => {
                            return self.script_error(
                                step.line,
                                format!(
                                    "`continue` on task {}, which is blocked in `{}` ({w})",
                                    task_name(t),
                                    self.ops[t].map(|o| o.to_string()).unwrap_or_default()
                                ),
                            )
                        }
                    };
                    self.take_step(t, Action::Continue, false, step.line)?;
                }
            }
        }
        Ok(())
    }

    /// Strict mode: an operation the engine would refuse as misuse (it
    /// returns -EINVAL, as the kernel does for a NULL or second handle) is
    /// a mistake in the script, not a run that passes. Loose mode maps such
    /// steps instead (`run_steps`, `map_op`).
    fn check_misuse(&self, step: &Step, op: Op) -> Result<(), RunError> {
        let t = step.task;
        let what = crate::scenario::step_text(step);
        match self.engine.handle(t) {
            None if op.needs_handle() => self.script_error(
                step.line,
                format!(
                    "`{what}`: task {} holds no transaction handle (begin one with `{}: start` or `{}: join`)",
                    task_name(t),
                    task_name(t),
                    task_name(t)
                ),
            ),
            Some(h) if !op.needs_handle() => self.script_error(
                step.line,
                format!(
                    "`{what}`: task {} already holds a handle on transaction {}{} (end it first with `{}: end`)",
                    task_name(t),
                    h.transid,
                    match self.started[t] {
                        0 => String::new(),
                        l => format!(", from line {l}"),
                    },
                    task_name(t)
                ),
            ),
            _ => Ok(()),
        }
    }

    /// In loose mode, an operation that cannot mean anything here is mapped
    /// onto one that can or dropped (one that needs a handle was preceded by
    /// `start` in `run_steps`): `start`, `join` or
    /// `delete_unused` on a task holding a handle is dropped; a `free` of an
    /// extent that is not live names a live one. A normalized script, where
    /// every step is valid, replays the same in either mode.
    fn map_op(&self, t: TaskId, op: Op) -> Option<Op> {
        if self.mode == Mode::Strict {
            return Some(op);
        }
        let has_handle = self.engine.handle(t).is_some();
        match op {
            _ if has_handle && !op.needs_handle() => None,
            Op::Endio if !self.engine.io_to_complete() => None,
            Op::Free { extent }
                if self.engine.extent(extent).is_some_and(|e| {
                    matches!(e.state, ExtentState::Reserved | ExtentState::Allocated)
                }) =>
            {
                Some(op)
            }
            Op::Free { extent } => {
                let live: Vec<_> = self
                    .engine
                    .extents()
                    .iter()
                    .filter(|e| matches!(e.state, ExtentState::Reserved | ExtentState::Allocated))
                    .collect();
                if live.is_empty() {
                    return None;
                }
                let e = live[(extent.0 as usize).saturating_sub(1) % live.len()];
                Some(Op::Free { extent: e.id })
            }
            // A start that names no bg is taken as an index into the cache
            // tree (in logical order): the generator cannot know the starts.
            Op::Relocate { start } if self.engine.cache_tree().contains_key(&start) => Some(op),
            // Read-only bgs and those on `unused_bgs` (the cleaner's) come
            // first: that is where balance meets the cleaner.
            Op::Relocate { start } => {
                let tree = self.engine.cache_tree();
                let contested: Vec<u64> = tree
                    .iter()
                    .filter(|(_, &id)| {
                        let bg = self.engine.bg(id);
                        bg.ro || bg.bg_list == BgList::UnusedBgs
                    })
                    .map(|(&s, _)| s)
                    .collect();
                let starts = if contested.is_empty() {
                    tree.keys().copied().collect()
                } else {
                    contested
                };
                let i = (start / SZ_4K) as usize % starts.len().max(1);
                starts.get(i).map(|&start| Op::Relocate { start })
            }
            op => Some(op),
        }
    }

    /// The first runnable task after `t`, cyclically.
    fn next_runnable(&self, t: TaskId) -> Option<TaskId> {
        (1..=MAX_TASKS)
            .map(|i| (t + i) % MAX_TASKS)
            .find(|&u| self.engine.status(u) == Status::Runnable)
    }

    fn take_step(
        &mut self,
        t: TaskId,
        action: Action,
        drain: bool,
        line: usize,
    ) -> Result<(), RunError> {
        let res = match action {
            Action::Begin(op) => {
                self.ops[t] = Some(op);
                self.engine.begin(t, resolve_fill(&self.engine, op))
            }
            Action::Continue => self.engine.step(t),
        };
        let outcome = match res {
            Ok(o) => o,
            Err(e) => return self.script_error(line, usage_message(&e)),
        };
        let op = self.ops[t].expect("a step belongs to an op");
        if matches!(outcome, StepOutcome::Finished(_)) {
            self.ops[t] = None;
        }
        let events: Vec<Event> = self.engine.drain_events().collect();
        let finding = self.oracles.after_step(&self.engine, &events);
        self.steps.push(RanStep {
            step: Step {
                task: t,
                action,
                line,
            },
            op,
            outcome,
            events,
            drain,
        });
        (self.observer)(&self.engine, self.steps.last());
        if let Some(finding) = finding {
            self.violation = Some(Violation {
                finding,
                step: self.steps.len() - 1,
            });
        }
        Ok(())
    }

    /// After the last line: the lowest runnable task in progress steps;
    /// when none, the lowest idle task holding a handle begins `end`; when
    /// none, and a free-space cache IO is in flight, the lowest idle task
    /// without a handle runs its endio worker (`endio`).
    fn drain(&mut self) {
        let mut taken = 0u64;
        while self.violation.is_none() {
            taken += 1;
            if taken > MAX_DRAIN_STEPS {
                // No kernel path loops this long in the model's sizes: a
                // livelock is a liveness failure, like a deadlock.
                self.violation = Some(Violation {
                    finding: crate::oracles::Finding {
                        kind: crate::oracles::ViolationKind::Deadlock,
                        message: format!(
                            "livelock: the drain took {MAX_DRAIN_STEPS} steps and the tasks have not finished"
                        ),
                        abort: None,
                    },
                    step: self.steps.len().saturating_sub(1),
                });
                break;
            }
            let idle = |t: TaskId| self.engine.status(t) == Status::Idle;
            let runnable = (0..MAX_TASKS).find(|&t| self.engine.status(t) == Status::Runnable);
            let r = if let Some(t) = runnable {
                self.take_step(t, Action::Continue, true, 0)
            } else if let Some(t) =
                (0..MAX_TASKS).find(|&t| idle(t) && self.engine.handle(t).is_some())
            {
                self.take_step(t, Action::Begin(Op::End), true, 0)
            } else if let Some(t) = (0..MAX_TASKS).find(|&t| {
                idle(t) && self.engine.io_to_complete() && self.engine.handle(t).is_none()
            }) {
                self.take_step(t, Action::Begin(Op::Endio), true, 0)
            } else {
                break;
            };
            debug_assert!(r.is_ok(), "the drain only takes steps that can run");
        }
    }
}

/// The drain's bound: far beyond any run that ends (a generated case takes
/// at most a few hundred steps), small enough that a livelock is reported
/// in well under a second.
const MAX_DRAIN_STEPS: u64 = 100_000;

/// Operations that return EINVAL without a handle.
fn usage_message(e: &UsageError) -> String {
    match e {
        UsageError::NoSuchExtent(x) => format!("`free {x}`: extent {x} does not exist yet"),
        e => e.to_string(),
    }
}
