//! Invariant checks over the engine's read-only view and event stream
//! (docs/model.md, "Oracles"). Checked after every step and at the end of a
//! run, in a fixed order; the first that fires names the violation.

use std::fmt;

use std::collections::VecDeque;

use bgfuzz_engine::{
    task_name, AbortInfo, BgId, BgList, DelayedRef, DirtyList, Engine, Errno, Event, Extent,
    ExtentState, Item, Key, Kind, Origin, Status, TransState, MAX_TASKS,
};

/// A violation's stable name, used for deduplication and `expect` lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    AbortEnoentOutsideCritical,
    BgItemMissingAtCommit,
    UnjustifiedAbort,
    BgRefcount,
    SpaceAccounting,
    Deadlock,
    WriteAfterAbort,
    KernelAssert,
    BgHalfInitialized,
}

impl ViolationKind {
    pub const ALL: [ViolationKind; 9] = [
        ViolationKind::AbortEnoentOutsideCritical,
        ViolationKind::BgItemMissingAtCommit,
        ViolationKind::UnjustifiedAbort,
        ViolationKind::BgRefcount,
        ViolationKind::SpaceAccounting,
        ViolationKind::Deadlock,
        ViolationKind::WriteAfterAbort,
        ViolationKind::KernelAssert,
        ViolationKind::BgHalfInitialized,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::AbortEnoentOutsideCritical => "abort-enoent-outside-critical",
            ViolationKind::BgItemMissingAtCommit => "bg-item-missing-at-commit",
            ViolationKind::UnjustifiedAbort => "unjustified-abort",
            ViolationKind::BgRefcount => "bg-refcount",
            ViolationKind::SpaceAccounting => "space-accounting",
            ViolationKind::Deadlock => "deadlock",
            ViolationKind::WriteAfterAbort => "write-after-abort",
            ViolationKind::KernelAssert => "kernel-assert",
            ViolationKind::BgHalfInitialized => "bg-half-initialized",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an oracle found: its kind, a one-paragraph explanation, and the
/// abort behind it when there is one (for the kernel-style report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: ViolationKind,
    pub message: String,
    pub abort: Option<AbortInfo>,
}

fn finding(kind: ViolationKind, message: String) -> Option<Finding> {
    Some(Finding {
        kind,
        message,
        abort: None,
    })
}

/// The oracles' memory across steps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Oracles {
    /// The first aborted transaction, and the committed state then.
    first_abort: Option<(u64, u64, u64)>,
    space: SpaceLedger,
}

impl Oracles {
    pub fn new() -> Self {
        Oracles {
            space: SpaceLedger::with_full_walk_up_to(64),
            ..Self::default()
        }
    }

    /// Judges one step: the events it produced and the state after it.
    pub fn after_step(&mut self, engine: &Engine, events: &[Event]) -> Option<Finding> {
        // Oracle 8, first: a BUG_ON or ASSERT stops the kernel there, so
        // nothing after it in the step means anything.
        for e in events {
            match e {
                Event::KernelAssert { site, what } => {
                    return finding(
                        ViolationKind::KernelAssert,
                        format!("the kernel BUGs in {site}: {what}"),
                    );
                }
                Event::NullSpaceInfo { bg, site } => {
                    return finding(
                        ViolationKind::BgHalfInitialized,
                        format!(
                            "{site} read {}'s ->space_info before its phase 1 (btrfs_make_block_group) set it: a NULL pointer dereference",
                            engine.bg(*bg).name()
                        ),
                    );
                }
                _ => {}
            }
        }
        for e in events {
            if let Event::Abort(a) = e {
                if self.first_abort.is_none() {
                    let c = engine.committed();
                    self.first_abort = Some((a.transid, c.roots_transid, c.generation));
                }
            }
        }
        let mut checks: [Option<Finding>; 7] = Default::default();
        for e in events {
            match e {
                Event::Abort(a) => {
                    if a.error.errno == Errno::ENOENT && !a.in_critical && checks[0].is_none() {
                        checks[0] = Some(Finding {
                            kind: ViolationKind::AbortEnoentOutsideCritical,
                            message: format!(
                                "transaction {} aborted with -ENOENT ({}) by task {} in {}, outside the commit's critical section: other writers could still hold handles whose new block groups have no item yet",
                                a.transid,
                                a.error.origin,
                                task_name(a.task),
                                a.stack.last().copied().unwrap_or("?")
                            ),
                            abort: Some(a.clone()),
                        });
                    }
                    // An ENOSPC with no device hole left for a system chunk
                    // is the filesystem being full: even a kernel with
                    // every fix aborts there (phase 2 has nothing to
                    // reserve from).
                    if a.error.origin == Origin::Model && !a.device_full && checks[2].is_none() {
                        checks[2] = Some(Finding {
                            kind: ViolationKind::UnjustifiedAbort,
                            message: format!(
                                "transaction {} aborted with -{} in {} although no fault was injected",
                                a.transid,
                                a.error.errno,
                                a.stack.last().copied().unwrap_or("?")
                            ),
                            abort: Some(a.clone()),
                        });
                    }
                }
                Event::RootsSwitched { transid } => {
                    if checks[1].is_none() {
                        checks[1] = check_items_at_commit(engine, *transid);
                    }
                    if checks[6].is_none() {
                        checks[6] = self.check_write_after_abort(
                            engine,
                            *transid,
                            "switched its commit roots",
                        );
                    }
                }
                Event::SuperWritten { transid } if checks[6].is_none() => {
                    checks[6] =
                        self.check_write_after_abort(engine, *transid, "wrote its superblock");
                }
                Event::RefUnderflow { bg, site } if checks[3].is_none() => {
                    checks[3] = finding(
                        ViolationKind::BgRefcount,
                        format!(
                            "{}: btrfs_put_block_group below zero in {site}",
                            engine.bg(*bg).name()
                        ),
                    );
                }
                Event::UseAfterFree { bg, site } if checks[3].is_none() => {
                    checks[3] = finding(
                        ViolationKind::BgRefcount,
                        format!(
                            "{}: used after it was freed, in {site}",
                            engine.bg(*bg).name()
                        ),
                    );
                }
                _ => {}
            }
        }
        checks[4] = self.space.check(engine);
        checks[5] = check_deadlock(engine);
        if checks[6].is_none() {
            checks[6] = self.check_committed_after_abort(engine);
        }
        checks.into_iter().flatten().next()
    }

    /// The end of a run, all tasks done: also the refcounts of live bgs.
    pub fn at_end(&mut self, engine: &Engine) -> Option<Finding> {
        let refs = check_refcounts(engine);
        let deadlock = check_deadlock(engine);
        refs.or(deadlock)
    }

    fn check_write_after_abort(
        &self,
        engine: &Engine,
        transid: u64,
        what: &str,
    ) -> Option<Finding> {
        let aborted = engine.transaction(transid).and_then(|t| t.aborted)?;
        finding(
            ViolationKind::WriteAfterAbort,
            format!(
                "transaction {transid} {what} after it was aborted with -{}",
                aborted.errno
            ),
        )
    }

    fn check_committed_after_abort(&self, engine: &Engine) -> Option<Finding> {
        let (transid, roots, gen) = self.first_abort?;
        let c = engine.committed();
        if (c.roots_transid != roots && c.roots_transid >= transid)
            || (c.generation != gen && c.generation >= transid)
        {
            return finding(
                ViolationKind::WriteAfterAbort,
                format!(
                    "the committed state moved to transaction {} (generation {}) after transaction {transid} was aborted",
                    c.roots_transid, c.generation
                ),
            );
        }
        None
    }
}

/// Oracle 2: at `switch_commit_roots`, every bg created in a transaction
/// <= this one and not removed has an item equal to it; removed bgs have
/// none; the transaction's dirty and io lists are empty.
fn check_items_at_commit(engine: &Engine, transid: u64) -> Option<Finding> {
    for bg in engine.block_groups() {
        let key = Key::block_group(bg.start, bg.len);
        let item = engine.extent_tree().get(&key);
        if bg.removed {
            if item.is_some() {
                return finding(
                    ViolationKind::BgItemMissingAtCommit,
                    format!(
                        "transaction {transid} committed an item for removed {}",
                        bg.name()
                    ),
                );
            }
            continue;
        }
        if bg.created_transid > transid {
            continue;
        }
        match item {
            None => {
                return finding(
                    ViolationKind::BgItemMissingAtCommit,
                    format!(
                        "transaction {transid} committed without the block group item of {} (created in transaction {}, {})",
                        bg.name(),
                        bg.created_transid,
                        match bg.bg_list {
                            BgList::NewBgs(t) => format!("still on task {}'s new_bgs", task_name(t)),
                            _ => "not on any handle's new_bgs".to_string(),
                        }
                    ),
                )
            }
            Some(Item::BlockGroup { used, flags, .. }) if *used != bg.used || *flags != bg.kind.flags() => {
                return finding(
                    ViolationKind::BgItemMissingAtCommit,
                    format!(
                        "transaction {transid} committed a stale item for {}: used {} flags {:#x}, in memory used {} flags {:#x}",
                        bg.name(),
                        used,
                        flags,
                        bg.used,
                        bg.kind.flags()
                    ),
                )
            }
            Some(_) => {}
        }
    }
    let tr = engine.transaction(transid)?;
    if !tr.dirty_bgs.is_empty() || !tr.io_bgs.is_empty() {
        return finding(
            ViolationKind::BgItemMissingAtCommit,
            format!(
                "transaction {transid} committed with {} bg(s) still on dirty_bgs and {} on io_bgs",
                tr.dirty_bgs.len(),
                tr.io_bgs.len()
            ),
        );
    }
    None
}

/// Oracle 4 at the end: a live bg's refs equal its list memberships.
fn check_refcounts(engine: &Engine) -> Option<Finding> {
    if let Some(f) = check_list_membership(engine) {
        return Some(f);
    }
    for bg in engine.block_groups() {
        let want = if bg.freed {
            0
        } else {
            engine.expected_refs(bg)
        };
        if bg.refs != want || (bg.refs == 0 && !bg.removed) {
            let dead = |t: u64| {
                engine
                    .transaction(t)
                    .is_some_and(|tr| tr.state == TransState::Completed)
            };
            let dirty = match bg.dirty_list {
                DirtyList::None => "none".to_string(),
                DirtyList::DirtyBgs(t) if dead(t) => {
                    format!("dirty_bgs of transaction {t}, which is gone")
                }
                DirtyList::Writeout(t) if dead(t) => format!(
                    "btrfs_start_dirty_block_groups' local list of transaction {t}, which is gone"
                ),
                DirtyList::DirtyBgs(t) => format!("dirty_bgs of transaction {t}"),
                DirtyList::Writeout(t) => format!("the local writeout list of transaction {t}"),
            };
            let lists = format!(
                "cache tree: {}, dirty_list: {dirty}, io_list: {}, unused_bgs: {}",
                !bg.removed,
                bg.on_io_list,
                bg.bg_list == BgList::UnusedBgs
            );
            let what = if bg.refs > want { "leaks" } else { "holds" };
            return finding(
                ViolationKind::BgRefcount,
                format!(
                    "{} {what} {} ref(s), its lists account for {want} ({lists})",
                    bg.name(),
                    bg.refs
                ),
            );
        }
    }
    None
}

/// Part of oracle 4: a bg's list fields agree with the lists: on the list
/// its field names, exactly once, and on no other. Refcounts are checked
/// against the fields, so the fields must be checked against the lists.
fn check_list_membership(engine: &Engine) -> Option<Finding> {
    let mut dirty: Vec<(DirtyList, usize)> =
        vec![(DirtyList::None, 0); engine.block_groups().len()];
    for tr in engine.transactions() {
        for (list, which) in [
            (&tr.dirty_bgs, DirtyList::DirtyBgs(tr.transid)),
            (&tr.writeout, DirtyList::Writeout(tr.transid)),
        ] {
            for id in list {
                let d = &mut dirty[id.0 as usize];
                d.0 = which;
                d.1 += 1;
            }
        }
    }
    let mut unused = vec![0usize; engine.block_groups().len()];
    for id in engine.unused_bgs() {
        unused[id.0 as usize] += 1;
    }
    let mut io = vec![0usize; engine.block_groups().len()];
    let mut deleted: Vec<Vec<u64>> = vec![Vec::new(); engine.block_groups().len()];
    for tr in engine.transactions() {
        for id in &tr.io_bgs {
            io[id.0 as usize] += 1;
        }
        for id in &tr.deleted_bgs {
            deleted[id.0 as usize].push(tr.transid);
        }
    }
    for (i, bg) in engine.block_groups().iter().enumerate() {
        let want: Vec<u64> = match bg.bg_list {
            BgList::DeletedBgs(t) => vec![t],
            _ => Vec::new(),
        };
        if deleted[i] != want {
            return finding(
                ViolationKind::BgRefcount,
                format!(
                    "{}: bg_list says {:?} but it is on deleted_bgs of {:?}",
                    bg.name(),
                    bg.bg_list,
                    deleted[i]
                ),
            );
        }
    }
    for (i, bg) in engine.block_groups().iter().enumerate() {
        if io[i] != usize::from(bg.on_io_list) {
            return finding(
                ViolationKind::BgRefcount,
                format!(
                    "{}: on_io_list says {} but it is on io_bgs {} time(s)",
                    bg.name(),
                    bg.on_io_list,
                    io[i]
                ),
            );
        }
        let (on, times) = dirty[i];
        let dirty_ok = if bg.dirty_list == DirtyList::None {
            times == 0
        } else {
            times == 1 && on == bg.dirty_list
        };
        let unused_ok = unused[i] == usize::from(bg.bg_list == BgList::UnusedBgs);
        if !dirty_ok || !unused_ok {
            return finding(
                ViolationKind::BgRefcount,
                format!(
                    "{}: dirty_list says {:?} but it is on {} dirty list(s); bg_list says {:?} but it is on unused_bgs {} time(s)",
                    bg.name(),
                    bg.dirty_list,
                    times,
                    bg.bg_list,
                    unused[i]
                ),
            );
        }
    }
    None
}

/// Oracle 5, incrementally: per-bg sums of the extents' bytes, kept up to
/// date from the few extents a step can change, so a step costs the number
/// of block groups and of refs queued or run, not the number of extents
/// ever allocated (a full walk made a long script quadratic).
///
/// Which extents a step can change, from the engine's transitions: a new
/// one (`alloc` begins); a `Pending` one (its alloc reserves or fails);
/// and one whose delayed ref is queued (`free`, or the reservation) or
/// runs. Refs are queued at the back of a transaction's `delayed_refs` and
/// run from the front, so a mirror of each queue shows both. `Freed` and
/// `Failed` hold no bytes and never change. Whenever the sums disagree
/// with a bg, the verdict is the full walk's and the ledger is rebuilt
/// from it: the fast path can only say "consistent".
#[derive(Clone, Debug, Default)]
pub struct SpaceLedger {
    /// Per extent (index = id - 1): its bg, used and reserved bytes as last
    /// counted.
    seen: Vec<(Option<BgId>, u64, u64)>,
    used: Vec<u64>,
    reserved: Vec<u64>,
    /// `Pending` extents.
    pending: std::collections::BTreeSet<usize>,
    /// Each transaction's `delayed_refs` as last seen (non-empty ones, and
    /// those a handle may queue onto).
    queues: std::collections::BTreeMap<u64, VecDeque<DelayedRef>>,
    full_walks: u64,
    /// Up to this many extents the full walk is cheaper than the
    /// bookkeeping (a generated case has a few dozen); the ledger is
    /// rebuilt when a run grows past it.
    small: usize,
    /// The full walk judged last: the sums are not up to date.
    stale: bool,
    /// Reused between steps.
    todo: Vec<usize>,
}

/// The ledger is a cache of sums the engine's state determines, and the
/// verdict is always the full walk's: two ledgers never make two runs
/// behave differently. So they compare equal and hash to nothing, which
/// keeps `bgfuzz explore`'s state fingerprints (which hash [`Oracles`])
/// free of it.
impl PartialEq for SpaceLedger {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for SpaceLedger {}
impl std::hash::Hash for SpaceLedger {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

fn contribution(e: &Extent) -> (Option<BgId>, u64, u64) {
    (e.bg, e.used_bytes(), e.reserved_bytes())
}

impl SpaceLedger {
    fn recount(&mut self, i: usize, e: &Extent) {
        let now = contribution(e);
        if i >= self.seen.len() {
            self.seen.resize(i + 1, (None, 0, 0));
        }
        let was = self.seen[i];
        if was != now {
            if let Some(bg) = was.0 {
                self.used[bg.0 as usize] -= was.1;
                self.reserved[bg.0 as usize] -= was.2;
            }
            if let Some(bg) = now.0 {
                self.used[bg.0 as usize] += now.1;
                self.reserved[bg.0 as usize] += now.2;
            }
            self.seen[i] = now;
        }
        if e.state == ExtentState::Pending {
            self.pending.insert(i);
        } else {
            self.pending.remove(&i);
        }
    }

    /// A ledger that leaves runs of at most `small` extents to the full
    /// walk. `SpaceLedger::default()` is incremental from the first step.
    pub fn with_full_walk_up_to(small: usize) -> Self {
        SpaceLedger {
            small,
            ..SpaceLedger::default()
        }
    }

    /// How often the verdict needed the full walk (the sums disagreed
    /// with a bg): never on a consistent engine.
    pub fn full_walks(&self) -> u64 {
        self.full_walks
    }

    /// Brings one transaction's mirror up to date; pushes the extents of
    /// the refs that ran, were dropped or were queued since onto `todo`.
    fn sync_queue(&mut self, transid: u64, now: &VecDeque<DelayedRef>, todo: &mut Vec<usize>) {
        let mirror = self.queues.entry(transid).or_default();
        // Refs are unique (one add and one drop per extent): where the
        // queue's front stands in the mirror says how many ran.
        let ran = match now.front() {
            None => mirror.len(),
            Some(f) => mirror.iter().position(|r| r == f).unwrap_or(mirror.len()),
        };
        let kept = mirror.len() - ran;
        let consistent = now.len() >= kept
            && (kept == 0
                || (now.front() == mirror.get(ran) && now.get(kept - 1) == mirror.back()));
        if !consistent {
            todo.extend(
                mirror
                    .iter()
                    .chain(now.iter())
                    .map(|r| r.extent.0 as usize - 1),
            );
            *mirror = now.clone();
            return;
        }
        for r in mirror.drain(..ran) {
            todo.push(r.extent.0 as usize - 1);
        }
        for r in now.iter().skip(kept) {
            todo.push(r.extent.0 as usize - 1);
            mirror.push_back(*r);
        }
    }

    /// Brings the sums up to date and judges; the same verdict as
    /// [`check_space_accounting`].
    pub fn check(&mut self, engine: &Engine) -> Option<Finding> {
        let extents = engine.extents();
        let nbg = engine.block_groups().len();
        if extents.len() <= self.small {
            self.stale = true;
            return check_space_accounting(engine);
        }
        // Another engine than last time (the engine's lists only grow), or
        // the first step past `small`.
        if self.stale || extents.len() < self.seen.len() || nbg < self.used.len() {
            return self.rebuild(engine);
        }
        self.used.resize(nbg, 0);
        self.reserved.resize(nbg, 0);
        let mut todo = std::mem::take(&mut self.todo);
        todo.clear();
        todo.extend(self.pending.iter().copied());
        todo.extend(self.seen.len()..extents.len());
        let mut transids: Vec<u64> = self.queues.keys().copied().collect();
        transids.extend((0..MAX_TASKS).filter_map(|t| engine.handle(t).map(|h| h.transid)));
        transids.sort_unstable();
        transids.dedup();
        let empty = VecDeque::new();
        for transid in transids {
            let now = engine
                .transaction(transid)
                .map_or(&empty, |tr| &tr.delayed_refs);
            self.sync_queue(transid, now, &mut todo);
            if now.is_empty()
                && !(0..MAX_TASKS).any(|t| engine.handle(t).is_some_and(|h| h.transid == transid))
            {
                self.queues.remove(&transid);
            }
        }
        for &i in &todo {
            if let Some(e) = extents.get(i) {
                if e.bg.is_some_and(|b| b.0 as usize >= nbg) {
                    return self.rebuild(engine);
                }
                self.recount(i, e);
            }
        }
        self.todo = todo;
        let consistent = engine.block_groups().iter().enumerate().all(|(i, bg)| {
            bg.used == self.used[i]
                && bg.reserved == self.reserved[i]
                && bg.used + bg.reserved <= bg.len
        });
        if !consistent {
            return self.rebuild(engine);
        }
        check_space_info(engine)
    }

    /// The full walk's verdict, and the ledger recounted from scratch.
    fn rebuild(&mut self, engine: &Engine) -> Option<Finding> {
        *self = SpaceLedger {
            full_walks: self.full_walks + 1,
            small: self.small,
            ..SpaceLedger::default()
        };
        let nbg = engine.block_groups().len();
        self.used.resize(nbg, 0);
        self.reserved.resize(nbg, 0);
        for (i, e) in engine.extents().iter().enumerate() {
            if e.bg.is_none_or(|b| (b.0 as usize) < nbg) {
                self.recount(i, e);
            }
        }
        for tr in engine.transactions() {
            if !tr.delayed_refs.is_empty() {
                self.queues.insert(tr.transid, tr.delayed_refs.clone());
            }
        }
        check_space_accounting(engine)
    }
}

/// Oracle 5 by a full walk: bg counters against the extents in them,
/// space_info against its bgs. The reference for [`SpaceLedger`].
pub fn check_space_accounting(engine: &Engine) -> Option<Finding> {
    let n = engine.block_groups().len();
    // Runs after every step: no allocation for the usual few bgs.
    let (mut used_buf, mut reserved_buf) = ([0u64; 16], [0u64; 16]);
    let (mut used_heap, mut reserved_heap) = (Vec::new(), Vec::new());
    let (used, reserved): (&mut [u64], &mut [u64]) = if n <= 16 {
        (&mut used_buf[..n], &mut reserved_buf[..n])
    } else {
        used_heap.resize(n, 0);
        reserved_heap.resize(n, 0);
        (&mut used_heap, &mut reserved_heap)
    };
    for e in engine.extents() {
        let Some(bg) = e.bg else { continue };
        used[bg.0 as usize] += e.used_bytes();
        reserved[bg.0 as usize] += e.reserved_bytes();
    }
    for (i, bg) in engine.block_groups().iter().enumerate() {
        if bg.used != used[i] || bg.reserved != reserved[i] || bg.used + bg.reserved > bg.len {
            return finding(
                ViolationKind::SpaceAccounting,
                format!(
                    "{}: used {} reserved {} (len {}), its extents account for used {} reserved {}",
                    bg.name(),
                    bg.used,
                    bg.reserved,
                    bg.len,
                    used[i],
                    reserved[i]
                ),
            );
        }
    }
    check_space_info(engine)
}

fn check_space_info(engine: &Engine) -> Option<Finding> {
    for kind in Kind::ALL {
        let si = engine.space_info(kind);
        let (mut total, mut u, mut r) = (0, 0, 0);
        for &id in &si.block_groups {
            let bg = engine.bg(id);
            total += bg.len;
            u += bg.used;
            r += bg.reserved;
        }
        if (si.total_bytes, si.bytes_used, si.bytes_reserved) != (total, u, r) {
            return finding(
                ViolationKind::SpaceAccounting,
                format!(
                    "space_info {kind}: total {} used {} reserved {}, its bgs sum to {total} {u} {r}",
                    si.total_bytes, si.bytes_used, si.bytes_reserved
                ),
            );
        }
    }
    // 4fbcdf669454: the system space_info's `bytes_may_use` is the sum of
    // the handles' `chunk_bytes_reserved`.
    let si = engine.space_info(Kind::System);
    let held: u64 = (0..MAX_TASKS)
        .filter_map(|t| engine.handle(t))
        .map(|h| h.chunk_bytes_reserved)
        .sum();
    if si.bytes_may_use != held {
        return finding(
            ViolationKind::SpaceAccounting,
            format!(
                "space_info system: bytes_may_use {}, the handles' chunk_bytes_reserved sum to {held}",
                si.bytes_may_use
            ),
        );
    }
    None
}

/// Oracle 6: no task can take a step, no idle task holds a handle it could
/// end or could run an endio worker for a cache IO in flight, and some task
/// is blocked.
fn check_deadlock(engine: &Engine) -> Option<Finding> {
    let mut blocked = Vec::new();
    for t in 0..MAX_TASKS {
        match engine.status(t) {
            Status::Runnable => return None,
            Status::Idle if engine.handle(t).is_some() => return None,
            Status::Idle if engine.io_to_complete() => return None,
            Status::Blocked(w) => blocked.push(format!("{} {w}", task_name(t))),
            Status::Idle => {}
        }
    }
    if blocked.is_empty() {
        return None;
    }
    finding(
        ViolationKind::Deadlock,
        format!("no task can take a step: {}", blocked.join("; ")),
    )
}
