//! Structure-aware shrinking: fewer tasks, faults and steps, smaller sizes,
//! default sizes, the same violation kind. Deterministic: the same input
//! always gives the same result.
//!
//! Candidates run in loose mode (a removed step may leave a `continue`
//! meaning nothing), and the normalized script of each accepted run is what
//! shrinking goes on from, so the result is always a strict script that
//! replays to the same violation.

use crate::variant::Variant;
use bgfuzz_engine::{Kind, MountOpts, Op, MAX_TASKS};

use crate::engine::Patches;
use crate::explore::{explore, Bounds, FaultBounds, Letter, Limits, Verdict, MAX_FAULTS};
use crate::oracles::ViolationKind;
use crate::run::{run, run_patched, Mode, Run};
use crate::scenario::{Action, Expect, Scenario, Step};

/// How big a scenario is, compared lexicographically: step lines first.
fn size(s: &Scenario) -> (usize, usize, usize, u64, usize) {
    let tasks = (0..MAX_TASKS)
        .filter(|&t| s.steps.iter().any(|st| st.task == t))
        .count();
    let bytes: u64 = s
        .steps
        .iter()
        .map(|st| match st.action {
            Action::Begin(Op::Alloc { size, .. }) => size,
            _ => 0,
        })
        .sum();
    let headers =
        usize::from(s.device.is_some()) + s.chunk.iter().flatten().count() + s.mount.names().len();
    (s.steps.len(), tasks, s.fails.len(), bytes, headers)
}

/// The outcome of a successful shrink.
#[derive(Clone, Debug)]
pub struct Minimized {
    pub kind: ViolationKind,
    pub before_steps: usize,
    pub scenario: Scenario,
    pub run: Run,
    /// Candidates tried.
    pub tries: usize,
    /// The budget ran out: a larger one may shrink the script further.
    pub exhausted: bool,
}

/// How much shrinking may cost. Candidates and their step lines are
/// counted, so the result is the same on every machine; a deadline
/// (outside the runs, like `run --time`) is there for those who prefer
/// time, at the price of that determinism.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub max_tries: usize,
    /// Step lines of all candidates together: what bounds the time on a
    /// long script, where each candidate is a long run.
    pub max_steps: usize,
    pub deadline: Option<std::time::Instant>,
}

impl Budget {
    /// Enough for every generated case and corpus script (they take a few
    /// hundred candidates).
    pub const DEFAULT_TRIES: usize = 5_000;
    /// A few seconds of a release build; a 40k-step script stops here with
    /// what it has.
    pub const DEFAULT_STEPS: usize = 5_000_000;
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_tries: Budget::DEFAULT_TRIES,
            max_steps: Budget::DEFAULT_STEPS,
            deadline: None,
        }
    }
}

/// One shrinking pass; true if it made progress.
type Pass<'a> = fn(&mut Shrinker<'a>) -> bool;

struct Shrinker<'a> {
    variant: Variant,
    /// What the engine runs with: the variant's, or more (a hunt's fixes
    /// found so far).
    patches: Patches,
    /// Besides the kind, what a candidate must still show (a hunt: the
    /// same fixes remove it).
    accept: &'a dyn Fn(&Run) -> bool,
    kind: ViolationKind,
    best: Run,
    tries: usize,
    /// Candidates and step lines left; with the deadline, ends shrinking
    /// early.
    left: usize,
    steps_left: usize,
    deadline: Option<std::time::Instant>,
    exhausted: bool,
}

impl<'a> Shrinker<'a> {
    /// Takes one candidate of `steps` step lines from the budget; false
    /// when it is spent.
    fn spend(&mut self, steps: usize) -> bool {
        let steps = steps.max(1);
        if self.left == 0
            || self.steps_left < steps
            || self
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
        {
            self.exhausted = true;
            return false;
        }
        self.left -= 1;
        self.steps_left -= steps;
        self.tries += 1;
        true
    }

    /// The candidate's run, if it still shows the violation: the same
    /// kind, and what `accept` asks.
    fn check(&self, cand: &Scenario) -> Option<Run> {
        let r = run_patched(cand, self.variant, self.patches, Mode::Loose).ok()?;
        let same = r.violation.as_ref().map(|v| v.finding.kind) == Some(self.kind);
        (same && (self.accept)(&r)).then_some(r)
    }

    /// Runs a candidate; keeps it if it shows the same kind and is smaller.
    fn try_candidate(&mut self, cand: &Scenario) -> bool {
        if !self.spend(cand.steps.len()) {
            return false;
        }
        let Some(r) = self.check(cand) else {
            return false;
        };
        if size(&r.scenario) < size(&self.best.scenario) {
            self.best = r;
            return true;
        }
        false
    }

    /// Runs a candidate; keeps it if it shows the same kind, is no bigger,
    /// and is `better` (a strict order, so canonicalizing terminates).
    fn try_canonical(&mut self, cand: &Scenario, better: fn(&Scenario, &Scenario) -> bool) -> bool {
        if !self.spend(cand.steps.len()) {
            return false;
        }
        let Some(r) = self.check(cand) else {
            return false;
        };
        if size(&r.scenario) <= size(&self.best.scenario)
            && better(&r.scenario, &self.best.scenario)
        {
            self.best = r;
            return true;
        }
        false
    }

    /// Canonical forms, so that witnesses of one bug tend to minimize to
    /// the same script (which is how a campaign recognizes a kept
    /// regression): `join` becomes `start` where that changes nothing, and
    /// steps of lower task letters move earlier where that changes nothing.
    fn canonicalize(&mut self) {
        fn joins(s: &Scenario) -> usize {
            s.steps
                .iter()
                .filter(|st| st.action == Action::Begin(Op::Join))
                .count()
        }
        fn tasks(s: &Scenario) -> Vec<usize> {
            s.steps.iter().map(|st| st.task).collect()
        }
        // Task letters in order of first appearance, where that changes
        // nothing (the drain goes in letter order).
        let mut cand = self.current();
        relabel(&mut cand);
        if !self.spend(cand.steps.len()) {
            return;
        }
        if let Some(r) = self.check(&cand) {
            if size(&r.scenario) <= size(&self.best.scenario) {
                self.best = r;
            }
        }
        for i in 0..self.best.scenario.steps.len() {
            if self.exhausted
                || self.best.scenario.steps.get(i).map(|s| s.action)
                    != Some(Action::Begin(Op::Join))
            {
                continue;
            }
            let mut cand = self.current();
            cand.steps[i].action = Action::Begin(Op::Start);
            self.try_canonical(&cand, |a, b| joins(a) < joins(b));
        }
        // Allocations of one kind become data allocations, with that kind's
        // chunk size, where that changes nothing.
        for kind in [Kind::Metadata, Kind::System] {
            let mut cand = self.current();
            let mut any = false;
            for st in &mut cand.steps {
                if let Action::Begin(Op::Alloc { kind: k, .. }) = &mut st.action {
                    if *k == kind {
                        *k = Kind::Data;
                        any = true;
                    }
                }
            }
            if any {
                cand.chunk[Kind::Data.index()] =
                    cand.chunk[kind.index()].or(cand.chunk[Kind::Data.index()]);
                cand.chunk[kind.index()] = None;
                self.try_canonical(&cand, |a, b| non_data(a) < non_data(b));
            }
        }
        // A chunk size and the allocations that fill it scaled down to the
        // smallest chunk the generator uses.
        for kind in Kind::ALL {
            let mut cand = self.current();
            let Some(c) = cand.chunk[kind.index()] else {
                continue;
            };
            let small = 16 * bgfuzz_engine::SZ_1M;
            if c <= small {
                continue;
            }
            cand.chunk[kind.index()] = Some(small);
            for st in &mut cand.steps {
                if let Action::Begin(Op::Alloc { kind: k, size }) = &mut st.action {
                    if *k == kind && *size > small {
                        *size = small;
                    }
                }
            }
            self.try_canonical(&cand, |a, b| chunk_sum(a) < chunk_sum(b));
        }
        let mut moved = true;
        while moved && !self.exhausted {
            moved = false;
            for i in 1..self.best.scenario.steps.len() {
                let steps = &self.best.scenario.steps;
                if i >= steps.len() || steps[i - 1].task <= steps[i].task || self.exhausted {
                    continue;
                }
                let mut cand = self.current();
                cand.steps.swap(i - 1, i);
                moved |= self.try_canonical(&cand, |a, b| tasks(a) < tasks(b));
            }
        }
    }

    /// `passes`, then the ones every order ends with, until none makes
    /// progress; then the canonical forms. Bounded: every accepted
    /// candidate is strictly smaller.
    fn shrink(&mut self, passes: &[Pass<'a>]) {
        loop {
            let mut progress = false;
            let tail: [Pass<'a>; 3] = [
                Shrinker::simplify_commits,
                Shrinker::drop_faults_and_headers,
                Shrinker::shrink_sizes,
            ];
            for pass in passes.iter().chain(tail.iter()) {
                progress |= pass(self);
            }
            if !progress || self.exhausted {
                break;
            }
        }
        self.canonicalize();
    }

    fn current(&self) -> Scenario {
        self.best.scenario.clone()
    }

    /// ddmin-style: drop chunks of steps, halving the chunk size.
    fn drop_steps(&mut self) -> bool {
        let mut progress = false;
        let mut chunk = self.best.scenario.steps.len().div_ceil(2).max(1);
        loop {
            let mut i = 0;
            while i < self.best.scenario.steps.len() && !self.exhausted {
                let mut cand = self.current();
                let end = (i + chunk).min(cand.steps.len());
                cand.steps.drain(i..end);
                if self.try_candidate(&cand) {
                    progress = true;
                } else {
                    i += chunk;
                }
            }
            if chunk == 1 || self.exhausted {
                return progress;
            }
            chunk = chunk.div_ceil(2);
        }
    }

    /// Drops whole operations: a begin line with the `continue`s of its
    /// task up to that task's next begin.
    fn drop_ops(&mut self) -> bool {
        let mut progress = false;
        let mut i = 0;
        while i < self.best.scenario.steps.len() && !self.exhausted {
            if !matches!(self.best.scenario.steps[i].action, Action::Begin(_)) {
                i += 1;
                continue;
            }
            let mut cand = self.current();
            cand.steps = replace_op(&cand.steps, i, None);
            if self.try_candidate(&cand) {
                progress = true;
            } else {
                i += 1;
            }
        }
        progress
    }

    /// A commit whose only use was to run the delayed refs becomes a
    /// `run_delayed_refs`.
    fn simplify_commits(&mut self) -> bool {
        let mut progress = false;
        for i in 0..self.best.scenario.steps.len() {
            let Some(step) = self.best.scenario.steps.get(i).copied() else {
                break;
            };
            if step.action != Action::Begin(Op::Commit) || self.exhausted {
                continue;
            }
            let mut cand = self.current();
            let with = Step::new(step.task, Action::Begin(Op::RunDelayedRefs));
            cand.steps = replace_op(&cand.steps, i, Some(with));
            progress |= self.try_candidate(&cand);
        }
        progress
    }

    fn drop_tasks(&mut self) -> bool {
        let mut progress = false;
        for t in 0..MAX_TASKS {
            let mut cand = self.current();
            if !cand.steps.iter().any(|s| s.task == t) {
                continue;
            }
            cand.steps.retain(|s| s.task != t);
            progress |= self.try_candidate(&cand);
        }
        progress
    }

    /// Gives one task's steps to another: two tasks that never needed to
    /// be apart become one.
    fn merge_tasks(&mut self) -> bool {
        let mut progress = false;
        for from in 0..MAX_TASKS {
            for to in 0..MAX_TASKS {
                let mut cand = self.current();
                if from == to
                    || !cand.steps.iter().any(|s| s.task == from)
                    || !cand.steps.iter().any(|s| s.task == to)
                {
                    continue;
                }
                for s in &mut cand.steps {
                    if s.task == from {
                        s.task = to;
                    }
                }
                progress |= self.try_candidate(&cand);
            }
        }
        progress
    }

    fn drop_faults_and_headers(&mut self) -> bool {
        let mut progress = false;
        for i in (0..self.best.scenario.fails.len()).rev() {
            let mut cand = self.current();
            if i < cand.fails.len() {
                cand.fails.remove(i);
                progress |= self.try_candidate(&cand);
            }
        }
        let mut cand = self.current();
        if cand.device.take().is_some() {
            progress |= self.try_candidate(&cand);
        }
        for k in 0..3 {
            let mut cand = self.current();
            if cand.chunk[k].take().is_some() {
                progress |= self.try_candidate(&cand);
            }
        }
        // Each mount option the witness does not need: a reader should see
        // only the ones that matter.
        for name in self.best.scenario.mount.names() {
            let mut cand = self.current();
            let mut mount = MountOpts::default();
            for other in cand.mount.names() {
                if other != name {
                    mount.set(other);
                }
            }
            if mount != cand.mount {
                cand.mount = mount;
                progress |= self.try_candidate(&cand);
            }
        }
        progress
    }

    /// Each allocation down to 4K, else down by one power of two.
    fn shrink_sizes(&mut self) -> bool {
        let mut progress = false;
        for i in 0..self.best.scenario.steps.len() {
            if self.exhausted {
                break;
            }
            if !matches!(
                self.best.scenario.steps.get(i).map(|s| s.action),
                Some(Action::Begin(Op::Alloc { .. }))
            ) {
                continue;
            }
            for target in [bgfuzz_engine::SZ_4K, 0] {
                let mut cand = self.current();
                let Some(Step {
                    action: Action::Begin(Op::Alloc { size, .. }),
                    ..
                }) = cand.steps.get_mut(i)
                else {
                    break;
                };
                let new = if target == 0 { *size / 2 } else { target };
                if new < bgfuzz_engine::SZ_4K
                    || new >= *size
                    || !new.is_multiple_of(bgfuzz_engine::SZ_4K)
                {
                    continue;
                }
                *size = new;
                if self.try_candidate(&cand) {
                    progress = true;
                    break;
                }
            }
        }
        progress
    }
}

/// Distinct states an exploration around a minimized witness may visit:
/// a few tenths of a second.
pub const POLISH_STATES: u64 = 100_000;

/// Greedy shrinking keeps the witness's interleaving, and a shorter
/// witness of the same bug often needs another one. Explore is
/// breadth-first: within the witness's own configuration, tasks, operations
/// per task and alphabet (its operations, `free` of any extent), it returns
/// the shortest script that shows a violation, if it finds one within
/// [`POLISH_STATES`]. Kept only if it is this violation's kind.
fn polish(sh: &Shrinker) -> Option<Run> {
    // Explore runs a variant's patches; a hunt's extra fixes it cannot.
    if sh.patches != sh.variant.patches() {
        return None;
    }
    let (s, variant) = (&sh.best.scenario, sh.variant);
    let mut per_task = [0u8; MAX_TASKS];
    let mut alphabet = Vec::new();
    for st in &s.steps {
        let Action::Begin(op) = st.action else {
            continue;
        };
        // The endio worker is free in explore whenever an IO is in flight.
        if op == Op::Endio {
            continue;
        }
        per_task[st.task] = per_task[st.task].saturating_add(1);
        let letter = match op {
            Op::Free { .. } => Letter::FreeAny,
            op => Letter::Op(op),
        };
        if !alphabet.contains(&letter) {
            alphabet.push(letter);
        }
    }
    let ops = per_task.iter().copied().max().unwrap_or(0);
    let tasks = per_task.iter().rposition(|&n| n > 0)? + 1;
    let injected: u32 = s
        .fails
        .iter()
        .flat_map(|p| &p.actions)
        .filter(|a| matches!(a.task, bgfuzz_failpoints::Task::Return(_)))
        .map(|a| a.count.unwrap_or(1))
        .sum();
    let faults = (injected > 0).then(|| FaultBounds {
        max: injected.min(u32::from(MAX_FAULTS)) as u8,
        hits: None,
    });
    let bounds = Bounds {
        variant,
        tasks,
        ops,
        alphabet,
        config: s.config(),
        symmetry: true,
        faults,
    };
    let limits = Limits {
        max_states: Some(POLISH_STATES),
        ..Limits::default()
    };
    let x = explore(&bounds, limits, |_| {}).ok()?;
    match x.verdict {
        Verdict::Violation(c) => {
            let mut scenario = c.run.scenario.clone();
            scenario.expects.clear();
            sh.check(&scenario)
        }
        _ => None,
    }
}

fn non_data(s: &Scenario) -> usize {
    s.steps
        .iter()
        .filter(
            |st| matches!(st.action, Action::Begin(Op::Alloc { kind, .. }) if kind != Kind::Data),
        )
        .count()
}

fn chunk_sum(s: &Scenario) -> u64 {
    s.chunk.iter().flatten().sum()
}

/// The steps with the operation begun at `i` (its begin line and the
/// `continue`s of its task up to that task's next begin) replaced by
/// `with`, or dropped.
fn replace_op(steps: &[Step], i: usize, with: Option<Step>) -> Vec<Step> {
    let t = steps[i].task;
    let mut out = Vec::with_capacity(steps.len());
    out.extend_from_slice(&steps[..i]);
    out.extend(with);
    let mut in_op = true;
    for s in &steps[i + 1..] {
        if in_op && s.task == t {
            if s.action == Action::Continue {
                continue;
            }
            in_op = false;
        }
        out.push(*s);
    }
    out
}

/// Renames tasks A, B, C, ... in order of first appearance.
fn relabel(s: &mut Scenario) {
    let mut map = [usize::MAX; MAX_TASKS];
    let mut next = 0;
    for st in &mut s.steps {
        if map[st.task] == usize::MAX {
            map[st.task] = next;
            next += 1;
        }
        st.task = map[st.task];
    }
}

/// Shrinks `scenario` keeping its first violation's kind under `variant`,
/// within the default [`Budget`]. `None` if the scenario shows no
/// violation there.
pub fn minimize(scenario: &Scenario, variant: Variant) -> Option<Minimized> {
    minimize_with(scenario, variant, Budget::default())
}

/// [`minimize`] within `budget`; what it has when the budget runs out is
/// still a strict script with the same violation kind.
pub fn minimize_with(scenario: &Scenario, variant: Variant, budget: Budget) -> Option<Minimized> {
    minimize_where(scenario, variant, variant.patches(), budget, &|_| true)
}

/// [`minimize_with`] on an engine built with `patches` (see
/// [`run_patched`]), keeping only candidates `accept` takes as well: a
/// hunt's witness stays the bug that the same fixes remove, where the
/// kind alone would let it wander onto another bug of that kind.
pub fn minimize_where<'a>(
    scenario: &Scenario,
    variant: Variant,
    patches: Patches,
    budget: Budget,
    accept: &'a dyn Fn(&Run) -> bool,
) -> Option<Minimized> {
    let first = run_patched(scenario, variant, patches, Mode::Loose).ok()?;
    let kind = first.violation.as_ref()?.finding.kind;
    if !accept(&first) {
        return None;
    }
    let before_steps = first.scenario.steps.len();
    // Greedy shrinking stops in local minima that depend on the order of
    // the passes; three orders, the smallest result wins.
    let orders: [&[Pass<'a>]; 3] = [
        &[
            Shrinker::drop_tasks,
            Shrinker::drop_steps,
            Shrinker::merge_tasks,
        ],
        &[
            Shrinker::drop_ops,
            Shrinker::drop_tasks,
            Shrinker::drop_steps,
            Shrinker::merge_tasks,
        ],
        &[
            Shrinker::merge_tasks,
            Shrinker::drop_ops,
            Shrinker::drop_steps,
            Shrinker::drop_tasks,
        ],
    ];
    // A shrinker from `best`, with what is left of the budget.
    let shrinker = |best: Run, tries: usize, steps_left: usize| Shrinker {
        variant,
        patches,
        accept,
        kind,
        best,
        tries: 0,
        left: budget.max_tries - tries.min(budget.max_tries),
        steps_left,
        deadline: budget.deadline,
        exhausted: false,
    };
    let mut tries = 0;
    let mut steps_left = budget.max_steps;
    let mut exhausted = false;
    let mut best: Option<Run> = None;
    for passes in orders {
        if exhausted {
            break;
        }
        let mut sh = shrinker(first.clone(), tries, steps_left);
        sh.shrink(passes);
        tries += sh.tries;
        steps_left = sh.steps_left;
        exhausted |= sh.exhausted;
        if best
            .as_ref()
            .is_none_or(|b| size(&sh.best.scenario) < size(&b.scenario))
        {
            best = Some(sh.best);
        }
    }
    let best = best.expect("at least one order");
    let mut sh = shrinker(best, tries, steps_left);
    if let Some(r) = polish(&sh) {
        if size(&r.scenario) < size(&sh.best.scenario) {
            // Explore prints every header and keeps the witness's; drop
            // what this interleaving does not need.
            sh.best = r;
            sh.shrink(&[]);
            tries += sh.tries;
            exhausted |= sh.exhausted;
        }
    }
    let best = sh.best;
    // Tasks renamed A, B, ... unless that changes the run (the drain goes
    // in letter order).
    let mut out = best.scenario.clone();
    let mut relabeled = out.clone();
    relabel(&mut relabeled);
    if let Ok(r) = run_patched(&relabeled, variant, patches, Mode::Loose) {
        if r.violation.as_ref().map(|v| v.finding.kind) == Some(kind)
            && accept(&r)
            && r.scenario.steps.len() <= out.steps.len()
        {
            out = r.scenario;
        }
    }
    out.expects.clear();
    let final_run = run_patched(&out, variant, patches, Mode::Strict).ok()?;
    if final_run.violation.as_ref().map(|v| v.finding.kind) != Some(kind) || !accept(&final_run) {
        return None;
    }
    // State what each variant does with it, so it is a regression as is.
    // A variant under which the script does not replay gets no line.
    for v in Variant::ALL {
        if let Ok(r) = run(&out, v, Mode::Strict) {
            let outcome = r.violation.map(|x| x.finding.kind);
            out.expects.push(Expect {
                variant: v,
                outcome,
            });
        }
    }
    Some(Minimized {
        kind,
        before_steps,
        scenario: out,
        run: final_run,
        tries,
        exhausted,
    })
}
