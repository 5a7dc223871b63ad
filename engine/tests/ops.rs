//! Unit tests for each engine operation, against docs/model.md.

use bgfuzz_engine::*;

const A: TaskId = 0;
const B: TaskId = 1;
const C: TaskId = 2;
const D: TaskId = 3;

/// `fixed`: every fix applied.
const FIXED: Patches = Patches::FIXES;
/// `bug-ff1f8250`: every fix but ff1f8250a9e4.
const BUG_FF1F8250: Patches = Patches::FIXES.without(FF1F8250);

fn engine(patches: Patches) -> Engine {
    Engine::new(Config::default(), patches, false).expect("default config")
}

fn free(n: u32) -> Op {
    Op::Free {
        extent: ExtentId(n),
    }
}

fn data(size: u64) -> Op {
    Op::Alloc {
        kind: Kind::Data,
        size,
    }
}

/// Steps a task while it is runnable; returns the last outcome, or the
/// wait it is blocked on.
fn finish(e: &mut Engine, t: TaskId, mut out: StepOutcome) -> StepOutcome {
    while e.status(t) == Status::Runnable {
        out = e.step(t).expect("runnable task steps");
    }
    match e.status(t) {
        Status::Blocked(w) => StepOutcome::Blocked(w),
        _ => out,
    }
}

/// Begins `op` and steps it while runnable.
fn run(e: &mut Engine, t: TaskId, op: Op) -> StepOutcome {
    let out = e.begin(t, op).expect("valid op");
    finish(e, t, out)
}

/// Runs `op` to completion and expects success.
fn ok(e: &mut Engine, t: TaskId, op: Op) -> Done {
    match run(e, t, op) {
        StepOutcome::Finished(Ok(d)) => d,
        o => panic!("{op} on task {t}: {o:?}"),
    }
}

/// Runs `op` to completion and expects it to fail with `errno`.
fn fails(e: &mut Engine, t: TaskId, op: Op, errno: Errno) {
    match run(e, t, op) {
        StepOutcome::Finished(Err(err)) => assert_eq!(err.errno, errno, "{op}"),
        o => panic!("{op} on task {t}: expected {errno}, got {o:?}"),
    }
}

fn fin(d: Done) -> StepOutcome {
    StepOutcome::Finished(Ok(d))
}

fn committed(transid: u64) -> StepOutcome {
    fin(Done::Committed { transid })
}

fn bg_item(tree: &std::collections::BTreeMap<Key, Item>, bg: &BlockGroup) -> Option<Item> {
    tree.get(&Key::block_group(bg.start, bg.len)).copied()
}

fn data_bg(e: &Engine) -> BgId {
    e.block_groups()[2].id
}

fn has_item(e: &Engine, id: BgId) -> bool {
    bg_item(e.extent_tree(), e.bg(id)).is_some()
}

fn assert_refs(e: &Engine) {
    for bg in e.block_groups().iter().filter(|b| !b.freed) {
        assert_eq!(bg.refs, e.expected_refs(bg), "{}", bg.name());
    }
}

/// A: start, alloc data 1G (fills the mkfs data bg), alloc data 4K (phase 1
/// makes X). Returns X.
fn fill_and_grow(e: &mut Engine) -> BgId {
    ok(e, A, Op::Start);
    ok(e, A, data(SZ_1G));
    match ok(e, A, data(SZ_4K)) {
        Done::Extent { bg, .. } => bg,
        d => panic!("{d:?}"),
    }
}

/// The seed race of docs/model.md up to C's second `continue`.
fn seed_race(patches: Patches) -> (Engine, BgId) {
    let mut e = engine(patches);
    let x = fill_and_grow(&mut e);
    assert!(e.handle(A).unwrap().new_bgs.contains(&x));
    ok(&mut e, B, Op::Start);
    assert!(matches!(ok(&mut e, B, data(SZ_4K)), Done::Extent { bg, .. } if bg == x));
    ok(&mut e, B, Op::RunDelayedRefs);
    assert_eq!(e.bg(x).dirty_list, DirtyList::DirtyBgs(2));
    ok(&mut e, C, Op::Start);
    e.drain_events().for_each(drop);
    assert_eq!(e.begin(C, Op::Commit), Ok(StepOutcome::Yielded)); // steps 1-2
    assert_eq!(e.step(C), Ok(StepOutcome::Yielded)); // the mkfs data bg
    let (bg, critical) = (data_bg(&e), false);
    assert!(e.events().contains(&Event::BgWritten { bg, critical }));
    e.step(C).unwrap(); // ... then X
    (e, x)
}

#[test]
fn fresh_engine() {
    let e = engine(FIXED);
    let bgs = e.block_groups();
    assert_eq!(bgs.len(), 3);
    assert!(bgs.iter().map(|b| b.kind).eq(Kind::MKFS_ORDER));
    assert!(bgs[0].end() <= bgs[1].start && bgs[1].end() <= bgs[2].start);
    for bg in bgs {
        assert_eq!(bg.len, Config::default().chunk(bg.kind));
        assert_eq!((bg.used, bg.reserved, bg.refs), (0, 0, 1));
        assert_eq!(e.cache_tree().get(&bg.start), Some(&bg.id));
        let (used, chunk_objectid, flags) = (0, FIRST_CHUNK_TREE_OBJECTID, bg.kind.flags());
        let want = Item::BlockGroup {
            used,
            chunk_objectid,
            flags,
        };
        assert_eq!(bg_item(e.extent_tree(), bg), Some(want));
        assert!(e.chunk_tree().contains_key(&bg.start));
        assert_eq!(e.space_info(bg.kind).total_bytes, bg.len);
    }
    assert_eq!(e.committed().generation, 1);
    assert_eq!(&e.committed().extent_tree, e.extent_tree());
    assert_eq!(e.running_transaction(), None);
    assert!(e.transactions().is_empty() && e.unused_bgs().is_empty());
    assert!(!e.fs_error() && e.events().is_empty());
}

#[test]
fn start_and_join() {
    let mut e = engine(FIXED);
    assert_eq!(ok(&mut e, A, Op::Start), Done::Handle { transid: 2 });
    assert_eq!(ok(&mut e, B, Op::Join), Done::Handle { transid: 2 });
    assert_eq!(ok(&mut e, C, Op::Start), Done::Handle { transid: 2 });
    let tr = e.transaction(2).unwrap();
    assert_eq!((tr.num_writers, tr.num_extwriters), (3, 2));
    assert_eq!(
        (tr.state, e.running_transaction()),
        (TransState::Running, Some(2))
    );
    assert_eq!(e.handle(B).unwrap().ty, TransType::Join);
    fails(&mut e, A, Op::Start, Errno::EINVAL);
    fails(&mut e, B, Op::Join, Errno::EINVAL);
    let tr = e.transaction(2).unwrap();
    assert_eq!((tr.num_writers, tr.num_extwriters), (3, 2));
}

#[test]
fn alloc_first_fit() {
    let mut e = engine(FIXED);
    let d = data_bg(&e);
    let start = e.bg(d).start;
    ok(&mut e, A, Op::Start);
    for i in 0..2 {
        let want = Done::Extent {
            id: ExtentId(i + 1),
            bg: d,
            start: start + u64::from(i) * SZ_4K,
        };
        assert_eq!(ok(&mut e, A, data(SZ_4K)), want);
    }
    assert_eq!((e.bg(d).reserved, e.bg(d).used), (2 * SZ_4K, 0));
    assert_eq!(e.space_info(Kind::Data).bytes_reserved, 2 * SZ_4K);
    assert_eq!(e.transaction(2).unwrap().delayed_refs.len(), 2);
    // Not dirtied until the delayed ref runs.
    assert_eq!(e.bg(d).dirty_list, DirtyList::None);
    // Freed bytes are allocatable again at once: the first hole is reused.
    ok(&mut e, A, free(1));
    ok(&mut e, A, Op::RunDelayedRefs);
    assert!(matches!(ok(&mut e, A, data(SZ_4K)), Done::Extent { start: s, .. } if s == start));
}

#[test]
fn alloc_two_steps_with_phase_1() {
    let mut e = engine(FIXED);
    ok(&mut e, A, Op::Start);
    ok(&mut e, A, data(SZ_1G));
    e.drain_events().for_each(drop);
    assert_eq!(e.begin(A, data(SZ_4K)), Ok(StepOutcome::Yielded));
    let x = *e.handle(A).unwrap().new_bgs.last().expect("phase 1 ran");
    let bg = e.bg(x);
    let highest = e.block_groups()[..3].iter().map(|b| b.end()).max();
    assert_eq!(Some(bg.start), highest);
    assert_eq!((bg.kind, bg.len, bg.refs), (Kind::Data, SZ_1G, 1));
    assert_eq!(bg.bg_list, BgList::NewBgs(A));
    assert_eq!(bg.created_transid, 2);
    assert_eq!(e.cache_tree().get(&bg.start), Some(&x));
    assert!(e.space_info(Kind::Data).block_groups.contains(&x));
    assert!(!has_item(&e, x));
    assert_eq!(e.events(), &[Event::BgCreated { bg: x, task: A }]);
    let start = e.bg(x).start;
    let want = Done::Extent {
        id: ExtentId(2),
        bg: x,
        start,
    };
    assert_eq!(e.step(A), Ok(StepOutcome::Finished(Ok(want))));
    assert_eq!(e.bg(x).reserved, SZ_4K);
}

#[test]
fn alloc_enospc_on_small_device() {
    let m = SZ_1M;
    let cfg = |dev| Config {
        device_size: dev,
        chunk_size: [8 * m, 4 * m, 4 * m],
        mount: Default::default(),
    };
    let small = Engine::new(cfg(16 * m), FIXED, false);
    assert!(matches!(small, Err(ConfigError::DeviceTooSmall { .. })));
    // Room for mkfs's chunks only.
    let mut e = Engine::new(cfg(17 * m), FIXED, false).unwrap();
    ok(&mut e, A, Op::Start);
    fails(&mut e, A, data(16 * m), Errno::ENOSPC);
    ok(&mut e, A, data(8 * m));
    fails(&mut e, A, data(SZ_4K), Errno::ENOSPC);
    assert_eq!(e.block_groups().len(), 3);
    assert!(!e.fs_error() && e.transaction(2).unwrap().aborted.is_none());
    let failed = ExtentId(3);
    assert_eq!(e.extent(failed).unwrap().state, ExtentState::Failed);
    let r = e.begin(A, Op::Free { extent: failed });
    assert_eq!(r, Err(UsageError::FailedExtent(failed)));
    // Room for one more data chunk: phase 1 succeeds once, then ENOSPC.
    let mut e = Engine::new(cfg(25 * m), FIXED, false).unwrap();
    ok(&mut e, A, Op::Start);
    ok(&mut e, A, data(8 * m));
    assert_eq!(e.begin(A, data(8 * m)), Ok(StepOutcome::Yielded));
    let out = finish(&mut e, A, StepOutcome::Yielded);
    assert!(matches!(out, StepOutcome::Finished(Ok(_))));
    assert_eq!(e.block_groups()[3].dev_offset, 17 * m);
    fails(&mut e, A, data(SZ_4K), Errno::ENOSPC);
    assert!(!e.fs_error());
}

#[test]
fn free_and_run_delayed_refs() {
    let mut e = engine(FIXED);
    let d = data_bg(&e);
    ok(&mut e, A, Op::Start);
    ok(&mut e, A, data(SZ_4K));
    ok(&mut e, A, data(2 * SZ_4K));
    // The standalone op yields between refs.
    assert_eq!(e.begin(A, Op::RunDelayedRefs), Ok(StepOutcome::Yielded));
    assert_eq!(e.bg(d).used, SZ_4K);
    let out = e.step(A).unwrap();
    assert!(matches!(out, StepOutcome::Finished(Ok(_))));
    let start = e.bg(d).start;
    let bg = e.bg(d);
    assert_eq!((bg.used, bg.reserved), (3 * SZ_4K, 0));
    let si = e.space_info(Kind::Data);
    assert_eq!((si.bytes_used, si.bytes_reserved), (3 * SZ_4K, 0));
    let item = e.extent_tree().get(&Key::extent(start + SZ_4K, 2 * SZ_4K));
    assert_eq!(item, Some(&Item::Extent { refs: 1 }));
    assert_eq!(bg.dirty_list, DirtyList::DirtyBgs(2));
    assert_eq!(e.transaction(2).unwrap().dirty_bgs, [d]);
    assert_eq!(bg.refs, 2);
    // Free: a queued drop, nothing changes until it runs.
    assert_eq!(ok(&mut e, A, free(1)), Done::Freed { id: ExtentId(1) });
    assert_eq!(e.bg(d).used, 3 * SZ_4K);
    ok(&mut e, A, Op::RunDelayedRefs);
    assert_eq!(e.bg(d).used, 2 * SZ_4K);
    assert!(!e.extent_tree().contains_key(&Key::extent(start, SZ_4K)));
    assert!(e.unused_bgs().is_empty());
    ok(&mut e, A, free(2));
    ok(&mut e, A, Op::RunDelayedRefs);
    let bg = e.bg(d);
    assert_eq!((bg.used, bg.bg_list, bg.refs), (0, BgList::UnusedBgs, 3));
    assert_eq!(e.unused_bgs(), &[d]);
    assert_eq!(e.transaction(2).unwrap().dirty_bgs, [d]); // only once
    assert_eq!(e.space_info(Kind::Data).bytes_used, 0);
    let r = e.begin(A, free(2));
    assert_eq!(r, Err(UsageError::AlreadyFreed(ExtentId(2))));
    assert_refs(&e);
}

#[test]
fn end_runs_phase_2() {
    let mut e = engine(FIXED);
    fails(&mut e, A, Op::End, Errno::EINVAL);
    ok(&mut e, A, Op::Start);
    ok(&mut e, A, data(SZ_1G));
    ok(&mut e, A, data(SZ_1G)); // X, filled
    ok(&mut e, A, data(SZ_1G)); // Y
    let new_bgs = e.handle(A).unwrap().new_bgs.clone();
    assert_eq!(new_bgs.len(), 2);
    e.drain_events().for_each(drop);
    // One bg a step.
    assert_eq!(e.begin(A, Op::End), Ok(StepOutcome::Yielded));
    assert!(has_item(&e, new_bgs[0]) && !has_item(&e, new_bgs[1]));
    assert_eq!(e.step(A), Ok(StepOutcome::Finished(Ok(Done::Ended))));
    for &id in &new_bgs {
        let bg = e.bg(id);
        assert_eq!(bg.bg_list, BgList::None);
        let item = bg_item(e.extent_tree(), bg);
        assert!(matches!(item, Some(Item::BlockGroup { flags: 1, .. })));
        assert!(e.chunk_tree().contains_key(&bg.start));
    }
    assert!(e.handle(A).is_none());
    let tr = e.transaction(2).unwrap();
    assert_eq!((tr.num_writers, tr.num_extwriters), (0, 0));
    let inserted = new_bgs.iter().map(|&bg| Event::BgItemInserted { bg });
    assert!(e.events().iter().cloned().eq(inserted));
}

#[test]
fn commit_single_task() {
    let mut e = engine(FIXED);
    let x = fill_and_grow(&mut e);
    e.drain_events().for_each(drop);
    assert_eq!(ok(&mut e, A, Op::Commit), Done::Committed { transid: 2 });
    let events: Vec<Event> = e.drain_events().collect();
    let pos = |ev: Event| events.iter().position(|x| *x == ev).expect("event");
    assert!(pos(Event::RootsSwitched { transid: 2 }) < pos(Event::SuperWritten { transid: 2 }));
    assert!(!events.iter().any(|e| matches!(e, Event::Abort(_))));
    assert_eq!(
        (e.committed().generation, e.committed().roots_transid),
        (2, 2)
    );
    let tr = e.transaction(2).unwrap();
    assert_eq!(tr.state, TransState::Completed);
    assert!(tr.dirty_bgs.is_empty() && tr.io_bgs.is_empty());
    assert_eq!((tr.num_writers, tr.num_extwriters), (0, 0));
    assert!(e.handle(A).is_none() && e.running_transaction().is_none());
    assert_refs(&e);
    // X's item, written with its used, is in the committed extent tree.
    let item = bg_item(&e.committed().extent_tree, e.bg(x));
    assert!(matches!(item, Some(Item::BlockGroup { used, .. }) if used == SZ_4K));
    assert_eq!(ok(&mut e, A, Op::Start), Done::Handle { transid: 3 });
}

#[test]
fn start_blocked_in_commit_start_join_is_not() {
    let mut e = engine(FIXED);
    ok(&mut e, A, Op::Start);
    ok(&mut e, B, Op::Start);
    // Commit waits for num_extwriters == 0 (B's START handle).
    let out = run(&mut e, A, Op::Commit);
    assert_eq!(out, StepOutcome::Blocked(Wait::ExtWriters(2)));
    let tr = e.transaction(2).unwrap();
    assert_eq!((tr.state, tr.num_extwriters), (TransState::CommitStart, 1));
    let r = e.step(A);
    assert_eq!(r, Err(UsageError::Blocked('A', Wait::ExtWriters(2))));
    // START blocks in COMMIT_START; JOIN joins.
    let c = e.begin(C, Op::Start);
    assert_eq!(c, Ok(StepOutcome::Blocked(Wait::Unblocked(2))));
    assert_eq!(e.status(C), Status::Blocked(Wait::Unblocked(2)));
    assert_eq!(ok(&mut e, D, Op::Join), Done::Handle { transid: 2 });
    assert_eq!(e.transaction(2).unwrap().num_extwriters, 1);
    ok(&mut e, B, Op::End);
    assert_eq!(e.status(A), Status::Runnable);
    // COMMIT_DOING waits for num_writers == 1 (D's JOIN handle).
    let out = finish(&mut e, A, StepOutcome::Yielded);
    assert_eq!(out, StepOutcome::Blocked(Wait::Writers(2)));
    assert_eq!(e.transaction(2).unwrap().state, TransState::CommitDoing);
    assert!(matches!(e.status(C), Status::Blocked(_)));
    // COMMIT_DOING blocks JOIN too.
    let j = e.begin(4, Op::Join);
    assert_eq!(j, Ok(StepOutcome::Blocked(Wait::Unblocked(2))));
    // D's commit finds A's commit started: drops its handle and waits.
    let d = run(&mut e, D, Op::Commit);
    assert_eq!(d, StepOutcome::Blocked(Wait::CommitDone(2)));
    assert!(e.handle(D).is_none());
    // Roots switched: UNBLOCKED, C wakes into a new transaction.
    assert_eq!(e.step(A), Ok(StepOutcome::Yielded));
    assert_eq!(e.transaction(2).unwrap().state, TransState::Unblocked);
    assert_eq!(e.status(C), Status::Runnable);
    assert_eq!(e.step(C), Ok(fin(Done::Handle { transid: 3 })));
    assert_eq!(finish(&mut e, A, StepOutcome::Yielded), committed(2));
    assert_eq!(finish(&mut e, D, StepOutcome::Yielded), committed(2));
    assert_eq!(e.step(4), Ok(fin(Done::Handle { transid: 3 })));
}

#[test]
fn commit_waits_for_previous_transaction() {
    let mut e = engine(FIXED);
    ok(&mut e, A, Op::Start);
    assert_eq!(e.begin(A, Op::Commit), Ok(StepOutcome::Yielded));
    while e.transaction(2).unwrap().state != TransState::Unblocked {
        e.step(A).unwrap();
    }
    ok(&mut e, B, Op::Start);
    let out = run(&mut e, B, Op::Commit);
    assert_eq!(out, StepOutcome::Blocked(Wait::CommitDone(2)));
    assert!(matches!(e.step(A), Ok(StepOutcome::Finished(Ok(_)))));
    assert_eq!(e.status(B), Status::Runnable);
    assert_eq!(finish(&mut e, B, StepOutcome::Yielded), committed(3));
    assert_eq!(e.committed().generation, 3);
}

#[test]
fn seed_race_bug_aborts_with_enoent() {
    let (mut e, x) = seed_race(BUG_FF1F8250);
    let abort = e.events().iter().find_map(|ev| match ev {
        Event::Abort(a) => Some(a.clone()),
        _ => None,
    });
    let abort = abort.expect("an abort");
    assert_eq!(abort.error, Error::model(Errno::ENOENT));
    assert_eq!((abort.transid, abort.task), (2, C));
    assert!(!abort.in_critical);
    assert!(abort.stack.contains(&"write_one_cache_group"));
    assert!(e.fs_error());
    // v4.1: `ret` of btrfs_start_dirty_block_groups is overwritten by
    // btrfs_run_delayed_refs (0 on an aborted handle), so C goes on; then
    // btrfs_run_delayed_items returns -EIO on its aborted handle and
    // cleanup_transaction waits for num_writers == 1, not the extwriters.
    let out = finish(&mut e, C, StepOutcome::Yielded);
    assert_eq!(out, StepOutcome::Blocked(Wait::Writers(2)));
    assert_eq!(e.transaction(2).unwrap().state, TransState::CommitDoing);
    // Handles of other tasks go on as in v4.1: find_free_extent and
    // btrfs_free_extent check no abort, btrfs_run_delayed_refs checks only
    // its own handle. New handles get EROFS.
    assert!(matches!(ok(&mut e, A, data(SZ_4K)), Done::Extent { .. }));
    assert_eq!(ok(&mut e, A, free(1)), Done::Freed { id: ExtentId(1) });
    assert!(matches!(
        ok(&mut e, B, Op::RunDelayedRefs),
        Done::RanRefs { .. }
    ));
    fails(&mut e, D, Op::Start, Errno::EROFS);
    // __btrfs_end_transaction runs phase 2 whatever another handle did,
    // and returns EIO.
    fails(&mut e, A, Op::End, Errno::EIO);
    assert!(has_item(&e, x));
    assert_eq!(e.bg(x).bg_list, BgList::None);
    fails(&mut e, D, Op::DeleteUnused, Errno::EROFS);
    // commit step 1 on an aborted transaction: the abort's errno.
    fails(&mut e, B, Op::Commit, Errno::ENOENT);
    assert!(e.handle(B).is_none());
    let out = finish(&mut e, C, StepOutcome::Yielded);
    assert!(matches!(out, StepOutcome::Finished(Err(err)) if err.errno == Errno::ENOENT));
    let events: Vec<Event> = e.drain_events().collect();
    assert!(events.contains(&Event::TransCleanedUp { transid: 2 }));
    let switched = |e: &Event| matches!(e, Event::RootsSwitched { .. });
    assert!(!events.iter().any(switched));
    assert_eq!(e.committed().generation, 1);
    assert_eq!(e.transaction(2).unwrap().state, TransState::Completed);
    assert_refs(&e);
}

#[test]
fn seed_race_fixed_requeues_and_commits() {
    let (mut e, x) = seed_race(FIXED);
    assert!(e.events().contains(&Event::BgRequeued { bg: x }));
    assert!(!e.events().iter().any(|ev| matches!(ev, Event::Abort(_))));
    let out = finish(&mut e, C, StepOutcome::Yielded);
    assert_eq!(out, StepOutcome::Blocked(Wait::ExtWriters(2)));
    assert_eq!(e.bg(x).dirty_list, DirtyList::DirtyBgs(2));
    ok(&mut e, A, Op::End);
    assert!(has_item(&e, x));
    assert_eq!(e.status(C), Status::Blocked(Wait::ExtWriters(2)));
    ok(&mut e, B, Op::End);
    let out = finish(&mut e, C, StepOutcome::Yielded);
    assert_eq!(out, committed(2));
    let events: Vec<Event> = e.drain_events().collect();
    let critical = true;
    assert!(events.contains(&Event::BgWritten { bg: x, critical }));
    assert!(!events.iter().any(|ev| matches!(ev, Event::Abort(_))));
    assert_eq!(e.committed().generation, 2);
    let item = bg_item(&e.committed().extent_tree, e.bg(x));
    assert!(matches!(item, Some(Item::BlockGroup { used, .. }) if used == 2 * SZ_4K));
    assert_refs(&e);
}

#[test]
fn delete_unused_removes_emptied_bg() {
    let mut e = engine(FIXED);
    let x = fill_and_grow(&mut e); // e2 is the 4K in X
    ok(&mut e, A, Op::Commit);
    assert!(has_item(&e, x));
    ok(&mut e, A, Op::Start);
    fails(&mut e, A, Op::DeleteUnused, Errno::EINVAL);
    ok(&mut e, A, free(2));
    ok(&mut e, A, Op::RunDelayedRefs);
    assert_eq!(e.unused_bgs(), &[x]);
    assert_eq!(e.bg(x).refs, 3);
    ok(&mut e, A, Op::End);
    e.drain_events().for_each(drop);
    assert_eq!(ok(&mut e, B, Op::DeleteUnused), Done::Deleted { count: 1 });
    assert!(e.events().contains(&Event::BgRemoved { bg: x }));
    let bg = e.bg(x);
    assert!(bg.removed && bg.freed && bg.ro);
    assert_eq!(bg.refs, 0);
    assert_eq!((bg.dirty_list, bg.bg_list), (DirtyList::None, BgList::None));
    assert!(!has_item(&e, x));
    assert!(!e.cache_tree().contains_key(&bg.start));
    assert!(!e.chunk_tree().contains_key(&bg.start));
    assert!(!e.space_info(Kind::Data).block_groups.contains(&x));
    assert_eq!(e.space_info(Kind::Data).total_bytes, SZ_1G);
    assert!(e.unused_bgs().is_empty() && e.handle(B).is_none());
    assert!(!e.transaction(3).unwrap().dirty_bgs.contains(&x));
    ok(&mut e, A, Op::Start);
    assert_eq!(ok(&mut e, A, Op::Commit), Done::Committed { transid: 3 });
    let uaf = |ev: &Event| matches!(ev, Event::UseAfterFree { .. });
    assert!(!e.events().iter().any(uaf));
    assert_refs(&e);
}

#[test]
fn usage_errors() {
    let mut e = engine(FIXED);
    let r = e.begin(A, free(7));
    assert_eq!(r, Err(UsageError::NoSuchExtent(ExtentId(7))));
    assert_eq!(e.step(A), Err(UsageError::NotInProgress('A')));
    assert_eq!(e.step(MAX_TASKS), Err(UsageError::NoSuchTask(MAX_TASKS)));
    for op in [data(SZ_4K), Op::RunDelayedRefs, Op::End, Op::Commit] {
        fails(&mut e, A, op, Errno::EINVAL);
    }
    // e1 was taken by the failed alloc.
    let r = e.begin(A, free(1));
    assert_eq!(r, Err(UsageError::FailedExtent(ExtentId(1))));
    ok(&mut e, A, Op::Start);
    ok(&mut e, A, data(SZ_1G));
    assert_eq!(e.begin(A, data(SZ_4K)), Ok(StepOutcome::Yielded));
    let r = e.begin(B, free(3));
    assert_eq!(r, Err(UsageError::PendingExtent(ExtentId(3))));
    assert_eq!(e.begin(A, Op::End), Err(UsageError::InProgress('A')));
    finish(&mut e, A, StepOutcome::Yielded);
    // Freeing without a handle is EINVAL.
    ok(&mut e, A, Op::End);
    fails(&mut e, A, free(2), Errno::EINVAL);
}

#[test]
fn delete_unused_skips_a_bg_used_again() {
    let mut e = engine(FIXED);
    let d = data_bg(&e);
    ok(&mut e, A, Op::Start);
    ok(&mut e, A, data(SZ_4K));
    ok(&mut e, A, Op::RunDelayedRefs);
    ok(&mut e, A, free(1));
    ok(&mut e, A, Op::RunDelayedRefs);
    assert_eq!(e.unused_bgs(), &[d]);
    ok(&mut e, A, data(SZ_4K));
    ok(&mut e, A, Op::RunDelayedRefs);
    ok(&mut e, A, Op::End);
    assert_eq!(ok(&mut e, B, Op::DeleteUnused), Done::Deleted { count: 0 });
    let bg = e.bg(d);
    assert!(!bg.removed && !bg.ro && has_item(&e, d));
    assert_eq!(bg.bg_list, BgList::None);
    assert_refs(&e);
}
