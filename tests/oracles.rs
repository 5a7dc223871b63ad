//! Every oracle fires on a state or run that breaks it: none is vacuous.
//! States that a correct engine never reaches are made with the engine's
//! `testing` hooks.

use bgfuzz::engine::{
    BgId, Config, Engine, Errno, Error, Event, ExtentId, Kind, Op, Patches, Status, StepOutcome,
};
use bgfuzz::oracles::{Oracles, ViolationKind};
use bgfuzz::run::{run, Mode};
use bgfuzz::scenario::Scenario;
use bgfuzz::variant::Variant;

const A: usize = 0;
const ALLOC_4K: Op = Op::Alloc {
    kind: Kind::Data,
    size: 4096,
};
const B: usize = 1;

fn engine() -> Engine {
    Engine::new(Config::default(), Patches::FIXES, false).unwrap()
}

/// Runs an operation to its end (or until it blocks), judging every step.
fn op(e: &mut Engine, o: &mut Oracles, t: usize, op: Op) -> Option<ViolationKind> {
    let mut out = e.begin(t, op).unwrap();
    loop {
        let ev: Vec<Event> = e.drain_events().collect();
        if let Some(f) = o.after_step(e, &ev) {
            return Some(f.kind);
        }
        match out {
            StepOutcome::Yielded if e.status(t) == Status::Runnable => out = e.step(t).unwrap(),
            _ => return None,
        }
    }
}

fn data_bg(e: &Engine) -> BgId {
    e.block_groups()
        .iter()
        .find(|b| b.kind == Kind::Data)
        .unwrap()
        .id
}

#[test]
fn kind_names_round_trip() {
    for k in ViolationKind::ALL {
        assert_eq!(ViolationKind::parse(k.name()), Some(k));
    }
}

#[test]
fn abort_enoent_outside_critical_fires_on_the_seed_race() {
    let s = Scenario::parse(&std::fs::read("corpus/scripts/seed-race.scn").unwrap()).unwrap();
    let r = run(&s, Variant::BUG_FF1F8250, Mode::Strict).unwrap();
    let v = r.violation.unwrap();
    assert_eq!(v.finding.kind, ViolationKind::AbortEnoentOutsideCritical);
    let a = v.finding.abort.unwrap();
    assert_eq!(a.error, Error::model(Errno::ENOENT));
    assert!(!a.in_critical);
    assert_eq!(a.stack.last(), Some(&"write_one_cache_group"));
}

#[test]
fn bg_item_missing_at_commit_fires_for_a_missing_or_stale_item() {
    let mut e = engine();
    let mut o = Oracles::new();
    assert_eq!(op(&mut e, &mut o, A, Op::Start), None);
    assert_eq!(op(&mut e, &mut o, A, ALLOC_4K), None);
    // The data bg's item vanishes; judge a commit switching roots now.
    let bg = e.bg(data_bg(&e)).clone();
    e.testing_extent_tree_mut()
        .remove(&bgfuzz::engine::Key::block_group(bg.start, bg.len));
    let ev = [Event::RootsSwitched { transid: 2 }];
    assert_eq!(
        o.after_step(&e, &ev).map(|f| f.kind),
        Some(ViolationKind::BgItemMissingAtCommit)
    );

    // A stale `used` in the item is as bad as no item.
    let mut e = engine();
    let mut o = Oracles::new();
    let id = data_bg(&e);
    e.testing_bg_mut(id).created_transid = 1;
    let key = {
        let b = e.bg(id);
        bgfuzz::engine::Key::block_group(b.start, b.len)
    };
    if let Some(bgfuzz::engine::Item::BlockGroup { used, .. }) =
        e.testing_extent_tree_mut().get_mut(&key)
    {
        *used = 4096;
    }
    let f = o
        .after_step(&e, &[Event::RootsSwitched { transid: 1 }])
        .unwrap();
    assert_eq!(f.kind, ViolationKind::BgItemMissingAtCommit);
    assert!(f.message.contains("stale"), "{}", f.message);
}

#[test]
fn unjustified_abort_fires_when_the_model_raises_the_error() {
    let mut e = engine();
    let mut o = Oracles::new();
    // Empty a fresh data bg so it lands on unused_bgs, commit it.
    op(&mut e, &mut o, A, Op::Start);
    op(&mut e, &mut o, A, ALLOC_4K);
    op(&mut e, &mut o, A, Op::RunDelayedRefs);
    op(
        &mut e,
        &mut o,
        A,
        Op::Free {
            extent: ExtentId(1),
        },
    );
    op(&mut e, &mut o, A, Op::RunDelayedRefs);
    assert_eq!(op(&mut e, &mut o, A, Op::Commit), None);
    let id = data_bg(&e);
    assert!(e.unused_bgs().contains(&id));
    // Its item disappears behind the engine's back: removal hits -EIO.
    let b = e.bg(id).clone();
    e.testing_extent_tree_mut()
        .remove(&bgfuzz::engine::Key::block_group(b.start, b.len));
    e.drain_events().for_each(drop);
    assert_eq!(
        op(&mut e, &mut o, B, Op::DeleteUnused),
        Some(ViolationKind::UnjustifiedAbort)
    );
}

#[test]
fn bg_refcount_fires_on_underflow_and_on_a_leak() {
    let mut e = engine();
    let mut o = Oracles::new();
    op(&mut e, &mut o, A, Op::Start);
    op(&mut e, &mut o, A, ALLOC_4K);
    op(&mut e, &mut o, A, Op::RunDelayedRefs);
    // The bg is dirty (2 refs); pretend its dirty ref was already put.
    let id = data_bg(&e);
    e.testing_bg_mut(id).refs = 0;
    assert_eq!(
        op(&mut e, &mut o, A, Op::Commit),
        Some(ViolationKind::BgRefcount)
    );

    // A leaked ref shows at the end of the run.
    let mut e = engine();
    let mut o = Oracles::new();
    assert!(o.at_end(&e).is_none());
    let id = data_bg(&e);
    e.testing_bg_mut(id).refs += 1;
    assert_eq!(
        o.at_end(&e).map(|f| f.kind),
        Some(ViolationKind::BgRefcount)
    );
}

#[test]
fn space_accounting_fires_on_a_bg_or_space_info_mismatch() {
    let mut e = engine();
    let mut o = Oracles::new();
    assert!(o.after_step(&e, &[]).is_none());
    let id = data_bg(&e);
    e.testing_bg_mut(id).used += 4096;
    assert_eq!(
        o.after_step(&e, &[]).map(|f| f.kind),
        Some(ViolationKind::SpaceAccounting)
    );
    let mut e = engine();
    e.testing_space_info_mut(Kind::Metadata).total_bytes += 4096;
    assert_eq!(
        o.after_step(&e, &[]).map(|f| f.kind),
        Some(ViolationKind::SpaceAccounting)
    );
}

#[test]
fn deadlock_fires_when_every_task_waits() {
    let mut e = engine();
    let mut o = Oracles::new();
    op(&mut e, &mut o, A, Op::Start);
    // A phantom START writer that no task holds: the commit waits forever.
    e.testing_trans_mut(2).num_extwriters += 1;
    assert_eq!(
        op(&mut e, &mut o, A, Op::Commit),
        Some(ViolationKind::Deadlock)
    );
    assert!(matches!(e.status(A), Status::Blocked(_)));
}

#[test]
fn write_after_abort_fires_when_committed_state_moves() {
    let mut e = engine();
    let mut o = Oracles::new();
    op(&mut e, &mut o, A, Op::Start);
    let abort = bgfuzz::engine::AbortInfo {
        transid: 2,
        error: Error::injected(Errno::EIO, bgfuzz::failpoints::Site::TransEnd),
        task: A,
        stack: &["__btrfs_end_transaction"],
        in_critical: false,
        device_full: false,
    };
    assert!(o.after_step(&e, &[Event::Abort(abort)]).is_none());
    e.testing_committed_mut().roots_transid = 2;
    assert_eq!(
        o.after_step(&e, &[]).map(|f| f.kind),
        Some(ViolationKind::WriteAfterAbort)
    );
    // And a superblock written for an aborted transaction.
    let mut e = engine();
    let mut o = Oracles::new();
    op(&mut e, &mut o, A, Op::Start);
    e.testing_trans_mut(2).aborted = Some(Error::injected(
        Errno::EIO,
        bgfuzz::failpoints::Site::TransEnd,
    ));
    assert_eq!(
        o.after_step(&e, &[Event::SuperWritten { transid: 2 }])
            .map(|f| f.kind),
        Some(ViolationKind::WriteAfterAbort)
    );
}

#[test]
fn bg_refcount_fires_when_a_list_field_lies() {
    // Claims to be on dirty_bgs, holds the ref for it, is on no list.
    let mut e = engine();
    let mut o = Oracles::new();
    let id = data_bg(&e);
    let bg = e.testing_bg_mut(id);
    bg.dirty_list = bgfuzz::engine::DirtyList::DirtyBgs(2);
    bg.refs += 1;
    let f = o.at_end(&e).unwrap();
    assert_eq!(f.kind, ViolationKind::BgRefcount);
    assert!(f.message.contains("dirty list"), "{}", f.message);
}

/// Every patch names its oracle by a kind that exists: a typo in the patch
/// table would otherwise only show up as a bug variant reported missed.
#[test]
fn every_patch_expected_kind_parses() {
    for p in bgfuzz::engine::PATCHES {
        if let Some(kind) = p.expected {
            assert!(
                ViolationKind::parse(kind).is_some(),
                "{}: expected `{kind}` is no violation kind",
                p.id
            );
        }
    }
    for v in Variant::BUGS {
        let kind = v
            .expected_violation()
            .expect("a bug variant names its oracle");
        assert!(ViolationKind::parse(kind).is_some(), "{v}: `{kind}`");
    }
}

/// Item 13: the incremental space-accounting oracle gives the full walk's
/// verdict, word for word, after every step of generated runs under every
/// variant, faults included, and on states broken behind the engine's back.
#[test]
fn incremental_space_accounting_agrees_with_the_full_walk() {
    use bgfuzz::oracles::{check_space_accounting, SpaceLedger};
    use bgfuzz::scenario::Action;
    let mut buf = Vec::new();
    let mut steps_checked = 0;
    let mut broken_checked = 0;
    for case in 0..300u64 {
        bgfuzz::search::case_bytes(7, case, &mut buf);
        let scn = bgfuzz::generate::decode(&buf);
        for v in Variant::ALL {
            let norm = run(&scn, v, Mode::Loose).unwrap().scenario;
            let armed = norm.fails.iter().any(|p| p.injects());
            let _guard = armed.then(|| bgfuzz::failpoints::FailGuard::new(&norm.fails).unwrap());
            let mut e = Engine::new(norm.config(), v.patches(), armed).unwrap();
            let mut ledger = SpaceLedger::default();
            // The oracles' own: the full walk for small runs, then the
            // ledger once a run grows past the threshold.
            let mut mixed = SpaceLedger::with_full_walk_up_to(3);
            for (i, s) in norm.steps.iter().enumerate() {
                let r = match s.action {
                    Action::Begin(op) => e.begin(s.task, bgfuzz::run::resolve_fill(&e, op)),
                    Action::Continue => e.step(s.task),
                };
                r.unwrap();
                e.drain_events().for_each(drop);
                let want = check_space_accounting(&e);
                assert_eq!(ledger.check(&e), want, "case {case} {v} step {i}");
                assert_eq!(mixed.check(&e), want, "case {case} {v} step {i}");
                steps_checked += 1;
                // Now and then, a counter goes wrong and is put right.
                if i % 7 == 3 {
                    if let Some(id) = e.block_groups().iter().rev().map(|b| b.id).next() {
                        e.testing_bg_mut(id).reserved += 4096;
                        let want = check_space_accounting(&e);
                        assert!(want.is_some());
                        assert_eq!(ledger.check(&e), want, "case {case} {v} step {i}");
                        assert_eq!(mixed.check(&e), want, "case {case} {v} step {i}");
                        e.testing_bg_mut(id).reserved -= 4096;
                        assert_eq!(ledger.check(&e), check_space_accounting(&e));
                        assert_eq!(mixed.check(&e), check_space_accounting(&e));
                        broken_checked += 1;
                    }
                }
            }
            // The fast path kept up on its own: the full walk ran once
            // for the first step and once per broken counter, no more.
            let broken = norm.steps.len().saturating_sub(3).div_ceil(7) as u64;
            assert!(
                ledger.full_walks() <= 1 + broken,
                "case {case} {v}: {} full walks",
                ledger.full_walks()
            );
        }
    }
    assert!(steps_checked > 10_000, "{steps_checked} steps");
    assert!(broken_checked > 1_000, "{broken_checked}");
}

#[test]
fn kernel_assert_fires_when_balance_and_the_cleaner_remove_one_chunk() {
    let s =
        Scenario::parse(&std::fs::read("corpus/scripts/zoo/bug-67c5e7d4.scn").unwrap()).unwrap();
    let bug = Variant::parse("bug-67c5e7d4").unwrap();
    let r = run(&s, bug, Mode::Strict).unwrap();
    let v = r.violation.unwrap();
    assert_eq!(v.finding.kind, ViolationKind::KernelAssert);
    assert!(
        v.finding.message.contains("btrfs_remove_chunk"),
        "{}",
        v.finding.message
    );
    // The second removal is the cleaner's (task D), after balance's (B).
    assert_eq!(r.steps[v.step].step.task, 3);
    // With the fix, balance waits on delete_unused_bgs_mutex and then finds
    // no chunk: no violation.
    let r = run(&s, Variant::FIXED, Mode::Strict).unwrap();
    assert!(r.violation.is_none());
    assert!(r.steps.iter().any(|st| matches!(
        st.outcome,
        StepOutcome::Blocked(bgfuzz::engine::Wait::DeleteUnusedBgsMutex)
    )));
}

#[test]
fn kernel_assert_is_judged_before_every_other_oracle() {
    let mut o = Oracles::new();
    let e = engine();
    let ev = [
        Event::RefUnderflow {
            bg: data_bg(&e),
            site: "here",
        },
        Event::KernelAssert {
            site: "btrfs_remove_block_group",
            what: "BUG_ON(!block_group)".into(),
        },
    ];
    let f = o.after_step(&e, &ev).unwrap();
    assert_eq!(f.kind, ViolationKind::KernelAssert);
    assert!(f.message.contains("BUG_ON(!block_group)"));
}

#[test]
fn bg_half_initialized_fires_when_trim_reaches_a_bg_mid_phase_1() {
    let s =
        Scenario::parse(&std::fs::read("corpus/scripts/zoo/bug-2e6e5183.scn").unwrap()).unwrap();
    let bug = Variant::parse("bug-2e6e5183").unwrap();
    let r = run(&s, bug, Mode::Strict).unwrap();
    let v = r.violation.unwrap();
    assert_eq!(v.finding.kind, ViolationKind::BgHalfInitialized);
    assert!(
        v.finding.message.contains("do_trimming"),
        "{}",
        v.finding.message
    );
    // The trim's fourth bg (B's last step), while A's phase 1 is halfway.
    assert_eq!(r.steps[v.step].step.task, B);
    assert_eq!(v.step, r.steps.len() - 1);
    // With the fix the bg's ->space_info is set before the cache-tree
    // insert: the same interleaving is clean.
    let r = run(&s, Variant::FIXED, Mode::Strict).unwrap();
    assert!(r.violation.is_none());
    // Without `mount fitrim` phase 1 never stops halfway: the same steps
    // under v4.1 pass (the script's B lines then outrun the walk).
    let mut whole = s.clone();
    whole.mount.fitrim = false;
    let r = run(&whole, Variant::parse("v4.1").unwrap(), Mode::Loose).unwrap();
    assert!(r.violation.is_none());
}

#[test]
fn unjustified_abort_forgives_enospc_only_on_a_full_device() {
    let abort = |device_full| {
        Event::Abort(bgfuzz::engine::AbortInfo {
            transid: 2,
            error: Error::model(Errno::ENOSPC),
            task: A,
            stack: &[
                "__btrfs_end_transaction",
                "btrfs_create_pending_block_groups",
            ],
            in_critical: false,
            device_full,
        })
    };
    let e = engine();
    let f = Oracles::new().after_step(&e, &[abort(false)]).unwrap();
    assert_eq!(f.kind, ViolationKind::UnjustifiedAbort);
    assert!(Oracles::new().after_step(&e, &[abort(true)]).is_none());
    // The engine sets it: the 4fbcdf66 witness aborts with room on the
    // device for a system chunk, so the abort is not forgiven.
    let s =
        Scenario::parse(&std::fs::read("corpus/scripts/zoo/bug-4fbcdf66.scn").unwrap()).unwrap();
    let r = run(&s, Variant::parse("v4.1").unwrap(), Mode::Strict).unwrap();
    let v = r.violation.unwrap();
    assert_eq!(v.finding.kind, ViolationKind::UnjustifiedAbort);
    assert!(!v.finding.abort.unwrap().device_full);
    // The same interleaving on a device with no room left after the three
    // chunks: the abort is the filesystem being full.
    let mut full = s.clone();
    full.device = Some(1024 * 1024 + 640 * 1024 + 5 * 16 * 1024 * 1024);
    let r = run(&full, Variant::parse("v4.1").unwrap(), Mode::Loose).unwrap();
    assert!(
        r.violation.is_none(),
        "{:?}",
        r.violation.map(|v| v.finding)
    );
    assert!(r.steps.iter().flat_map(|s| &s.events).any(|ev| matches!(
        ev,
        Event::Abort(a) if a.error.errno == Errno::ENOSPC && a.device_full
    )));
}
