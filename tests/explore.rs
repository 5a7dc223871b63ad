//! `bgfuzz explore`: shortest counterexamples that replay, clean verdicts,
//! determinism, symmetry reduction, fingerprints, budgets and bad bounds.

use std::path::Path;
use std::process::{Command, Output};

use bgfuzz::engine::{BgList, Engine, Kind, Op, SZ_1M};
use bgfuzz::engine::{Origin, StepOutcome};
use bgfuzz::explore::{
    explore, parse_letter, Bounds, Exploration, FaultBounds, Letter, Limits, Verdict,
    DEFAULT_FAULTS,
};
use bgfuzz::oracles::{Oracles, ViolationKind};
use bgfuzz::report::violation_report;
use bgfuzz::run::{run, run_engine_faults, Mode};
use bgfuzz::scenario::{Action, Scenario};
use bgfuzz::variant::Variant;
use serde_json::Value;

fn go(b: &Bounds) -> Exploration {
    explore(b, Limits::default(), |_| {}).expect("valid bounds")
}

fn bgfuzz(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bgfuzz"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("spawn bgfuzz")
}

#[test]
fn bug_variant_shortest_counterexample_replays() {
    let x = go(&Bounds::new(Variant::BUG_FF1F8250, 2, 4));
    let Verdict::Violation(c) = &x.verdict else {
        panic!("no violation: {:?}", x.stats)
    };
    assert_eq!(c.kind, ViolationKind::AbortEnoentOutsideCritical);
    let steps = c.scenario.steps.len();
    assert!(steps <= 8, "{steps} step lines:\n{}", c.scenario.print());
    assert_eq!(x.stats.depth, steps);
    // The printed script is what `repro` reads; replay it from its text.
    let text = c.scenario.print();
    let parsed = Scenario::parse(text.as_bytes()).expect("explore prints a valid script");
    let r = run(&parsed, Variant::BUG_FF1F8250, Mode::Strict).expect("strict replay");
    let v = r.violation.expect("the replay violates");
    assert_eq!(v.finding.kind, ViolationKind::AbortEnoentOutsideCritical);
    assert_eq!(v.step + 1, steps, "the violation fires at the last step");
    // Attribution: the fix makes the same script pass.
    let f = run(&parsed, Variant::FIXED, Mode::Strict).expect("strict replay");
    assert!(f.violation.is_none(), "{:?}", f.violation);
    assert!(text.contains("expect fixed: pass"));
    assert!(text.contains("expect bug-ff1f8250: abort-enoent-outside-critical"));
}

/// `alloc KIND fill` as a letter: explore takes the same size the runner
/// does (the first hole), so its counterexample keeps `fill` and replays;
/// and the minimizer's exploration around a witness with `fill` (the main
/// job's seed-race witness) keeps it too.
#[test]
fn fill_letters_explore_and_replay() {
    let mut b = Bounds::new(Variant::BUG_FF1F8250, 2, 4);
    b.alphabet = ["start", "alloc data fill", "end", "commit"]
        .iter()
        .map(|l| parse_letter(l).unwrap())
        .collect();
    let x = go(&b);
    let Verdict::Violation(c) = &x.verdict else {
        panic!("no violation: {:?}", x.stats)
    };
    let text = c.scenario.print();
    assert!(text.contains("alloc data fill"), "{text}");
    let parsed = Scenario::parse(text.as_bytes()).unwrap();
    let r = run(&parsed, Variant::BUG_FF1F8250, Mode::Strict).expect("strict replay");
    assert_eq!(
        r.violation.map(|v| v.finding.kind),
        Some(ViolationKind::AbortEnoentOutsideCritical)
    );
    let witness = "A: start\nA: alloc data fill\nA: alloc data fill\nA: continue\n\
        B: start\nB: alloc data 4K\nB: commit\nB: continue\nB: continue\nA: end\n";
    let s = Scenario::parse(witness.as_bytes()).unwrap();
    let m = bgfuzz::minimize::minimize(&s, Variant::BUG_FF1F8250).expect("minimizes");
    assert!(m.scenario.steps.len() <= 8, "{}", m.scenario.print());
    assert!(m.scenario.print().contains("alloc data fill"));
}

#[test]
fn fixed_is_clean_exhaustively_and_deterministic() {
    let b = Bounds::new(Variant::FIXED, 2, 3);
    let x = go(&b);
    assert!(matches!(x.verdict, Verdict::Clean), "{:?}", x.verdict);
    assert!(x.stats.states > 100, "{:?}", x.stats);
    assert!(x.stats.transitions >= x.stats.states - 1);
    let y = go(&b);
    assert_eq!(
        (x.stats.states, x.stats.transitions, x.stats.depth),
        (y.stats.states, y.stats.transitions, y.stats.depth)
    );
}

#[test]
fn same_bounds_same_script() {
    let b = Bounds::new(Variant::BUG_FF1F8250, 2, 4);
    let (x, y) = (go(&b), go(&b));
    let (Verdict::Violation(c), Verdict::Violation(d)) = (&x.verdict, &y.verdict) else {
        panic!("no violation")
    };
    assert_eq!(c.scenario.print(), d.scenario.print());
    assert_eq!(x.stats.states, y.stats.states);
    assert_eq!(x.stats.transitions, y.stats.transitions);
}

#[test]
fn symmetry_reduces_states_with_the_same_verdict() {
    let mut b = Bounds::new(Variant::FIXED, 3, 2);
    let with = go(&b);
    b.symmetry = false;
    let without = go(&b);
    assert!(matches!(with.verdict, Verdict::Clean));
    assert!(matches!(without.verdict, Verdict::Clean));
    assert_eq!(with.stats.depth, without.stats.depth);
    // 3 interchangeable tasks: up to 6 renamings of each state.
    assert!(
        with.stats.states * 3 < without.stats.states,
        "{} with symmetry, {} without",
        with.stats.states,
        without.stats.states
    );
    let mut b = Bounds::new(Variant::BUG_FF1F8250, 2, 4);
    b.symmetry = false;
    let Verdict::Violation(c) = go(&b).verdict else {
        panic!("no violation without symmetry")
    };
    assert_eq!(c.scenario.steps.len(), 8);
}

/// The engine right after a script's steps (no drain, unlike `run`).
fn engine_after(script: &str) -> Engine {
    let scn = Scenario::parse(script.as_bytes()).unwrap();
    let mut e = Engine::new(scn.config(), Variant::FIXED.patches(), false).unwrap();
    for st in &scn.steps {
        match st.action {
            Action::Begin(op) => e.begin(st.task, op),
            Action::Continue => e.step(st.task),
        }
        .unwrap_or_else(|err| panic!("line {}: {err}", st.line));
    }
    e
}

#[test]
fn fingerprint_is_invariant_under_task_renaming_only_with_symmetry() {
    // A holds a handle with a new bg on its new_bgs; B holds a handle; C is
    // committing, so bg_list and committer both name tasks.
    let mut e = engine_after(
        "chunk data 16M\nA: start\nA: alloc data 16M\nA: alloc data 4K\n\
         B: start\nC: start\nC: commit\nC: continue\n",
    );
    e.drain_events();
    assert_eq!(e.transactions()[0].committer, Some(2));
    assert!(e
        .block_groups()
        .iter()
        .any(|bg| bg.bg_list == BgList::NewBgs(0)));
    let o = Oracles::new();
    let salt = [3u64, 2, 1];
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let s = e.testing_swap_tasks(a, b);
        let mut swapped_salt = salt;
        swapped_salt.swap(a, b);
        assert_eq!(
            e.fingerprint(&salt, &o, true),
            s.fingerprint(&swapped_salt, &o, true),
            "swap {a} {b}"
        );
        assert_ne!(
            e.fingerprint(&salt, &o, false),
            s.fingerprint(&swapped_salt, &o, false),
            "swap {a} {b} without symmetry"
        );
    }
    // Budgets are part of the state: the same engine with a different
    // budget is a different state.
    assert_ne!(
        e.fingerprint(&salt, &o, true),
        e.fingerprint(&[3, 2, 0], &o, true)
    );
}

#[test]
fn fingerprint_sees_behaviour_not_the_event_log() {
    let base = engine_after("A: start\n");
    let mut logged = base.clone();
    let o = Oracles::new();
    // Same state, one with its events drained: same fingerprint.
    let mut drained = base.clone();
    drained.drain_events();
    assert_eq!(
        logged.fingerprint(&[1], &o, true),
        drained.fingerprint(&[1], &o, true)
    );
    // A step in progress (a pc) is behaviour.
    let mut e = engine_after("chunk data 16M\nA: start\nA: alloc data 16M\n");
    let before = e.fingerprint(&[1], &o, true);
    e.begin(
        0,
        Op::Alloc {
            kind: Kind::Data,
            size: 4096,
        },
    )
    .unwrap();
    assert_ne!(before, e.fingerprint(&[1], &o, true));
    // A handle is behaviour.
    logged.begin(1, Op::Start).unwrap();
    assert_ne!(
        logged.fingerprint(&[1, 1], &o, false),
        drained.fingerprint(&[1, 1], &o, false)
    );
    // The oracles' memory (the first abort) is part of the state.
    let scn = Scenario::parse(
        b"chunk data 16M\nA: start\nA: alloc data 16M\nA: alloc data 4K\n\
          A: continue\nB: start\nB: commit\nB: continue\nB: continue\n",
    )
    .unwrap();
    let r = run(&scn, Variant::BUG_FF1F8250, Mode::Strict).unwrap();
    assert!(r.violation.is_some());
    let events: Vec<_> = r.steps.iter().flat_map(|s| s.events.clone()).collect();
    let mut seen = Oracles::new();
    let _ = seen.after_step(&r.engine, &events);
    assert_ne!(seen, o);
    assert_ne!(
        r.engine.fingerprint(&[0, 0], &seen, true),
        r.engine.fingerprint(&[0, 0], &o, true)
    );
}

#[test]
fn budget_gives_an_honest_incomplete_verdict() {
    let limits = Limits {
        max_states: Some(50),
        ..Limits::default()
    };
    let x = explore(&Bounds::new(Variant::FIXED, 2, 4), limits, |_| {}).unwrap();
    assert!(matches!(x.verdict, Verdict::Incomplete { .. }));
    assert_eq!(x.stats.states, 50);
    let s = bgfuzz::explore::summary(&x);
    assert!(s.starts_with("INCOMPLETE"), "{s}");
    assert!(s.contains("not exhausted"), "{s}");
}

#[test]
fn alphabet_items_parse_in_script_syntax() {
    assert_eq!(parse_letter("free").unwrap(), Letter::FreeAny);
    assert_eq!(
        parse_letter(" alloc data 1M ").unwrap(),
        Letter::Op(Op::Alloc {
            kind: Kind::Data,
            size: SZ_1M
        })
    );
    for bad in ["frob", "continue", "free e1", "alloc data 3K", ""] {
        assert!(parse_letter(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn free_and_delete_unused_in_the_alphabet() {
    // Dropping an extent's ref puts its bg on unused_bgs; delete_unused
    // removes it. Nothing may violate under fixed.
    let mut b = Bounds::new(Variant::FIXED, 1, 5);
    b.alphabet = [
        "start",
        "alloc data 4K",
        "free",
        "commit",
        "delete_unused",
        "end",
    ]
    .iter()
    .map(|s| parse_letter(s).unwrap())
    .collect();
    let x = go(&b);
    assert!(matches!(x.verdict, Verdict::Clean), "{:?}", x.verdict);
    assert!(x.stats.states > 20);
}

#[test]
fn cli_counterexample_is_written_and_repro_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = bgfuzz(
        &[
            "explore",
            "--variant",
            "bug-ff1f8250",
            "--json",
            "--out",
            "found",
        ],
        dir.path(),
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["verdict"], "abort-enoent-outside-critical");
    assert_eq!(j["complete"], true);
    assert!(j["steps"].as_u64().unwrap() <= 8);
    let files: Vec<_> = std::fs::read_dir(dir.path().join("found"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let r = bgfuzz(&["repro", files[0].to_str().unwrap()], dir.path());
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stdout).contains("abort-enoent-outside-critical"));
    let c = bgfuzz(&["check", files[0].to_str().unwrap()], dir.path());
    assert_eq!(
        c.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&c.stdout)
    );
}

#[test]
fn cli_clean_verdict_names_its_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let o = bgfuzz(&["explore", "--tasks", "2", "--ops", "2"], dir.path());
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("no violation within BOUNDS: "), "{out}");
    assert!(out.contains("distinct states"), "{out}");
    assert!(out.contains("2 tasks x 2 ops"), "{out}");
    assert!(out.contains("collision probability"), "{out}");
    let e = bgfuzz(
        &[
            "explore", "--tasks", "2", "--ops", "2", "--expect", "deadlock",
        ],
        dir.path(),
    );
    assert_eq!(e.status.code(), Some(1));
    let i = bgfuzz(&["explore", "--budget", "10"], dir.path());
    assert_eq!(i.status.code(), Some(3));
    let t = bgfuzz(
        &[
            "explore", "--tasks", "3", "--ops", "4", "--budget", "1ms", "--json",
        ],
        dir.path(),
    );
    assert_eq!(t.status.code(), Some(3));
    let j: Value = serde_json::from_slice(&t.stdout).unwrap();
    assert_eq!(j["complete"], false);
    assert_eq!(j["verdict"], "incomplete");
    assert!(
        j["incomplete"].as_str().unwrap().contains("time budget"),
        "{j}"
    );
}

#[test]
fn cli_bad_bounds_exit_2_before_running() {
    let dir = tempfile::tempdir().unwrap();
    for (args, what) in [
        (vec!["--tasks", "0"], "--tasks 0"),
        (vec!["--tasks", "9"], "--tasks 9"),
        (vec!["--ops", "0"], "--ops 0"),
        (vec!["--ops", "1000"], "--ops 1000"),
        (vec!["--alphabet", "start,frobnicate"], "unknown operation"),
        (vec!["--alphabet", "continue"], "not an operation"),
        (vec!["--device", "4K"], "too small"),
        (vec!["--chunk-data", "5K"], "multiple of 4K"),
        (vec!["--budget", "0"], "at least 1"),
        (vec!["--budget", "soon"], "--budget"),
        (vec!["--budget", "100000000000"], "memory"),
        (
            vec!["--max-memory", "100000G"],
            "more than this machine has",
        ),
        (vec!["--faults", "--fault-hits", "0"], "--fault-hits 0"),
        (vec!["--faults", "--fault-hits", "300"], "--fault-hits 300"),
        (vec!["--faults", "--max-faults", "9"], "--max-faults 9"),
        (vec!["--fault-hits", "3"], "--faults"),
    ] {
        let mut a = vec!["explore"];
        a.extend(args.iter().copied());
        let o = bgfuzz(&a, dir.path());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
        assert!(
            o.stdout.is_empty(),
            "{args:?} ran: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(!dir.path().join("bgfuzz-out").exists());
    }
}

#[test]
fn every_bug_variant_has_a_shortest_counterexample() {
    for v in Variant::BUGS {
        let b = Bounds::for_variant(v);
        let x = go(&b);
        let Verdict::Violation(c) = &x.verdict else {
            panic!("{v}: {:?}", x.verdict)
        };
        assert_eq!(Some(c.kind.name()), v.expected_violation(), "{v}");
        let parsed = Scenario::parse(c.scenario.print().as_bytes()).unwrap();
        let r = run(&parsed, v, Mode::Strict).unwrap();
        assert_eq!(r.violation.map(|x| x.finding.kind), Some(c.kind), "{v}");
        let f = run(&parsed, Variant::FIXED, Mode::Strict).unwrap();
        assert!(f.violation.is_none(), "{v}: fixed violates too");
    }
    // The race of e44081ef6118 needs the free-space cache path.
    let x = go(&Bounds::for_variant(
        Variant::parse("bug-e44081ef").expect("the variant exists"),
    ));
    let Verdict::Violation(c) = &x.verdict else {
        panic!("bug-e44081ef not found")
    };
    assert!(c.scenario.print().contains("mount space_cache"));
    assert!(c.scenario.steps.len() <= 12, "{}", c.scenario.print());
}

#[test]
fn who_committed_a_completed_transaction_is_history() {
    let a = engine_after("A: start\nA: commit\nA: continue\nA: continue\nA: continue\n");
    let b = engine_after("B: start\nB: commit\nB: continue\nB: continue\nB: continue\n");
    assert_eq!(
        a.transactions()[0].state,
        bgfuzz::engine::TransState::Completed
    );
    assert_eq!(a.transactions()[0].committer, Some(0));
    assert_eq!(b.transactions()[0].committer, Some(1));
    let o = Oracles::new();
    // Without symmetry the tasks keep their names, and still: same state.
    assert_eq!(
        a.fingerprint(&[0, 0], &o, false),
        b.fingerprint(&[0, 0], &o, false)
    );
    // While the commit is in progress, the committer is state.
    let c = engine_after("A: start\nA: commit\n");
    let d = engine_after("B: start\nB: commit\n");
    assert_ne!(
        c.fingerprint(&[0, 0], &o, false),
        d.fingerprint(&[0, 0], &o, false)
    );
}

/// The fingerprint is exactly as fine as the state: over every state of a
/// small exploration (without symmetry), two states share a fingerprint if
/// and only if their full `Debug` forms agree, once the one deliberate
/// abstraction (who committed a transaction that is over) is applied. A
/// field left out of the fingerprint (one the rest of the state does not
/// imply: leaving out the budgets fails it, leaving out `bg.used`, implied
/// by the extents, does not), or a hash that confuses two values, fails
/// this.
#[test]
fn fingerprint_is_injective_on_explored_states() {
    use bgfuzz::engine::{Status, TransState};
    use std::collections::{HashMap, VecDeque};

    let letters = [
        Op::Start,
        Op::Alloc {
            kind: Kind::Data,
            size: 16 * SZ_1M,
        },
        Op::Alloc {
            kind: Kind::Data,
            size: 4096,
        },
        Op::End,
        Op::Commit,
    ];
    let scn = Scenario::parse(b"device 57M\nchunk data 16M\nchunk metadata 16M\nchunk system 8M\n")
        .unwrap();
    let root = Engine::new(scn.config(), Variant::FIXED.patches(), false).unwrap();
    let normalized = |e: &Engine, left: &[u64; 2]| {
        let mut n = e.clone();
        let handles: Vec<u64> = (0..2)
            .filter_map(|t| e.handle(t).map(|h| h.transid))
            .collect();
        for tr in e.transactions() {
            if tr.state == TransState::Completed && !handles.contains(&tr.transid) {
                n.testing_trans_mut(tr.transid).committer = None;
            }
        }
        format!("{n:?} {left:?}")
    };
    let o = Oracles::new();
    let mut by_fp: HashMap<u128, String> = HashMap::new();
    let mut by_text: HashMap<String, u128> = HashMap::new();
    let mut queue = VecDeque::from([(root, [3u64, 3])]);
    while let Some((e, left)) = queue.pop_front() {
        let fp = e.fingerprint(&left, &o, false);
        let text = normalized(&e, &left);
        match (by_fp.get(&fp), by_text.get(&text)) {
            (Some(t), _) => {
                assert_eq!(t, &text, "two states share a fingerprint");
                continue;
            }
            (None, Some(_)) => panic!("one state, two fingerprints:\n{text}"),
            (None, None) => {}
        }
        by_fp.insert(fp, text.clone());
        by_text.insert(text, fp);
        for t in 0..2 {
            let mut next = |f: &dyn Fn(&mut Engine), cost: u64| {
                let mut c = e.clone();
                f(&mut c);
                c.drain_events();
                let mut l = left;
                l[t] -= cost;
                queue.push_back((c, l));
            };
            match e.status(t) {
                Status::Runnable => next(
                    &|c| {
                        c.step(t).unwrap();
                    },
                    0,
                ),
                Status::Blocked(_) => {}
                Status::Idle => {
                    let h = e.handle(t).is_some();
                    if left[t] == 0 {
                        if h {
                            next(
                                &|c| {
                                    c.begin(t, Op::End).unwrap();
                                },
                                0,
                            );
                        }
                        continue;
                    }
                    for op in letters {
                        if (op == Op::Start) != h {
                            next(
                                &|c| {
                                    c.begin(t, op).unwrap();
                                },
                                1,
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(by_fp.len() > 1000, "{} states", by_fp.len());
}

/// `bgfuzz run`'s minimized witnesses (seed 0, the kill matrix) for the
/// bugs only an injected fault reaches: explore's may be no longer.
const FAULT_WITNESS_STEPS: [(&str, usize); 3] = [
    ("bug-c79a1751", 5),
    ("bug-acaeedb1", 8),
    ("bug-7785a663", 7),
];

#[test]
fn faults_reach_the_error_path_bugs_in_at_most_the_fuzz_witness_steps() {
    for (name, witness) in FAULT_WITNESS_STEPS {
        let v = Variant::parse(name).unwrap();
        let b = Bounds::for_variant(v);
        assert!(b.faults.is_some(), "{v}: its bug needs a fault");
        let x = go(&b);
        let Verdict::Violation(c) = &x.verdict else {
            panic!("{v}: {:?}", x.verdict)
        };
        let text = c.scenario.print();
        assert_eq!(Some(c.kind.name()), v.expected_violation(), "{v}\n{text}");
        assert!(c.scenario.steps.len() <= witness, "{v}: {text}");
        assert_eq!(x.stats.depth, c.scenario.steps.len());
        // The fault is a `fail` header, and the script replays through
        // fail-rs's registry as `repro` runs it.
        assert!(!c.scenario.fails.is_empty(), "{v}: no fault in\n{text}");
        assert!(text.contains("\nfail "), "{text}");
        let parsed = Scenario::parse(text.as_bytes()).unwrap();
        let r = run(&parsed, v, Mode::Strict).unwrap();
        assert_eq!(r.violation.map(|x| x.finding.kind), Some(c.kind), "{v}");
        let f = run(&parsed, Variant::FIXED, Mode::Strict).unwrap();
        assert!(f.violation.is_none(), "{v}: fixed violates too");
        // The fault is what reaches the bug: the script without it passes.
        let mut unfaulted = parsed.clone();
        unfaulted.fails.clear();
        let r = run(&unfaulted, v, Mode::Loose).unwrap();
        assert_eq!(r.violation, None, "{v}: violates without its fault");
    }
    // And for one of them, the whole space within its bounds is clean
    // without faults (the others take seconds of a release build).
    let mut b = Bounds::for_variant(Variant::parse("bug-c79a1751").unwrap());
    b.faults = None;
    assert!(matches!(go(&b).verdict, Verdict::Clean));
}

#[test]
fn fixed_is_clean_with_faults_and_faults_add_states() {
    let mut b = Bounds::new(Variant::FIXED, 2, 3);
    let without = go(&b);
    b.faults = Some(DEFAULT_FAULTS);
    let with = go(&b);
    assert!(matches!(with.verdict, Verdict::Clean), "{:?}", with.verdict);
    assert!(
        with.stats.states > 2 * without.stats.states,
        "{} states with faults, {} without",
        with.stats.states,
        without.stats.states
    );
    // A hit bound makes hit counts state: one fault among the first 2
    // hits of each site reaches fewer states than among any (the
    // faulted ones), yet takes more distinct states to explore.
    b.faults = Some(FaultBounds {
        max: 1,
        hits: Some(2),
    });
    let bounded = go(&b);
    assert!(matches!(bounded.verdict, Verdict::Clean));
    assert!(bounded.stats.states > with.stats.states);
    // Two faults: more states, and still deterministic.
    b.faults = Some(FaultBounds {
        max: 2,
        hits: Some(3),
    });
    let more = go(&b);
    assert!(matches!(more.verdict, Verdict::Clean), "{:?}", more.verdict);
    assert!(more.stats.states > bounded.stats.states);
    let again = go(&b);
    assert_eq!(
        (more.stats.states, more.stats.transitions, more.stats.depth),
        (
            again.stats.states,
            again.stats.transitions,
            again.stats.depth
        )
    );
}

#[test]
fn same_bounds_with_faults_same_script() {
    let b = Bounds::for_variant(Variant::parse("bug-acaeedb1").unwrap());
    let (x, y) = (go(&b), go(&b));
    let (Verdict::Violation(c), Verdict::Violation(d)) = (&x.verdict, &y.verdict) else {
        panic!("no violation")
    };
    assert_eq!(c.scenario.print(), d.scenario.print());
    assert_eq!(
        (x.stats.states, x.stats.transitions),
        (y.stats.states, y.stats.transitions)
    );
    // Two failing lookups, printed as one plan for the site.
    assert_eq!(c.scenario.fails.len(), 1, "{}", c.scenario.print());
    assert_eq!(c.scenario.fails[0].config(), "2*return(EIO)");
}

/// Every script with a `fail` header in the corpus, and generated cases
/// with faults, under every variant: the in-engine evaluator gives the same
/// steps, events, outcomes, violation and report as fail-rs's registry.
#[test]
fn in_engine_faults_replay_as_the_fail_rs_registry() {
    fn scripts(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                scripts(&p, out);
            } else if p.extension().is_some_and(|x| x == "scn") {
                out.push(p);
            }
        }
    }
    let same = |scn: &Scenario, v: Variant, mode: Mode, what: &str| -> bool {
        let a = run(scn, v, mode);
        let b = run_engine_faults(scn, v, mode);
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "{what} {v}");
                return false;
            }
            (a, b) => panic!("{what} {v}: {:?} vs {:?}", a.err(), b.err()),
        };
        assert_eq!(a.steps, b.steps, "{what} {v}");
        assert_eq!(a.violation, b.violation, "{what} {v}");
        assert_eq!(a.scenario.print(), b.scenario.print(), "{what} {v}");
        assert_eq!(violation_report(&a), violation_report(&b), "{what} {v}");
        assert!(b.engine.faults().is_some());
        // Did a fault fire?
        a.steps.iter().any(|s| {
            matches!(
                s.outcome,
                StepOutcome::Finished(Err(e)) if matches!(e.origin, Origin::Injected(_))
            ) || s
                .events
                .iter()
                .any(|e| format!("{e:?}").contains("Injected"))
        })
    };
    let mut paths = Vec::new();
    scripts(Path::new("corpus/scripts"), &mut paths);
    paths.sort();
    let (mut files, mut fired) = (0, 0);
    for p in &paths {
        let scn = Scenario::parse(&std::fs::read(p).unwrap()).unwrap();
        if scn.fails.is_empty() {
            continue;
        }
        files += 1;
        for v in Variant::ALL {
            fired += usize::from(same(&scn, v, Mode::Strict, &p.display().to_string()));
        }
    }
    assert!(files >= 7, "{files} corpus scripts with faults");
    assert!(fired >= 7 * Variant::ALL.len() / 2, "{fired} runs injected");
    let (mut cases, mut gen_fired) = (0, 0);
    let mut buf = Vec::new();
    for case in 0..3000u64 {
        bgfuzz::search::case_bytes(3, case, &mut buf);
        let scn = bgfuzz::generate::decode(&buf);
        if !scn.fails.iter().any(|f| f.injects()) {
            continue;
        }
        cases += 1;
        for v in Variant::ALL {
            gen_fired += usize::from(same(&scn, v, Mode::Loose, &format!("case {case}")));
        }
    }
    assert!(cases >= 500, "{cases} generated cases with faults");
    assert!(gen_fired >= 300, "{gen_fired} generated runs injected");
}

#[test]
fn fault_counters_are_engine_state() {
    use bgfuzz::failpoints::{FaultPlan, Faults, Site};
    let scn = Scenario::parse(b"A: start\nA: alloc data 4K\n").unwrap();
    let plan = |c: &str| FaultPlan::parse(Site::ExtentTreeLookup, c).unwrap();
    let mk = |plans: &[FaultPlan]| {
        let mut e = Engine::with_faults(scn.config(), Variant::FIXED.patches(), Faults::new(plans))
            .unwrap();
        for st in &scn.steps {
            let Action::Begin(op) = st.action else {
                unreachable!()
            };
            e.begin(st.task, op).unwrap();
        }
        e
    };
    let fp = |e: &Engine| e.fingerprint(&[0, 0], &(), true);
    // The commit's first writeout looks up the one dirty bg once.
    let commit = |mut e: Engine| {
        e.begin(0, Op::Commit).unwrap();
        while e.status(0) == bgfuzz::engine::Status::Runnable {
            e.step(0).unwrap();
        }
        e.transactions()[0].aborted
    };
    let (a, b) = (
        mk(&[plan("1*return(EIO)")]),
        mk(&[plan("1*off->1*return(EIO)")]),
    );
    assert_ne!(fp(&a), fp(&b), "plans that fail different hits");
    assert_eq!(
        fp(&mk(&[plan("1*off->1*off")])),
        fp(&mk(&[])),
        "plans that never fail"
    );
    // A clone carries the remaining counts: each clone of `a` fails its
    // commit, and no clone of `b` does (its second lookup never comes).
    for _ in 0..2 {
        let err = commit(a.clone()).expect("the planned EIO aborts");
        assert_eq!(err.origin, Origin::Injected(Site::ExtentTreeLookup));
        assert_eq!(commit(b.clone()), None);
    }
}

#[test]
fn cli_faults_counterexample_replays_with_its_fail_header() {
    let dir = tempfile::tempdir().unwrap();
    let o = bgfuzz(
        &[
            "explore",
            "--variant",
            "bug-c79a1751",
            "--faults",
            "--mount",
            "space_cache",
            "--chunk-data",
            "128M",
            "--device",
            "256M",
            "--alphabet",
            "start,alloc data 4K,end,commit",
            "--out",
            "found",
        ],
        dir.path(),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let j = bgfuzz(
        &[
            "explore",
            "--faults",
            "--max-faults",
            "2",
            "--fault-hits",
            "3",
            "--ops",
            "2",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(j.status.code(), Some(0));
    let j: Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(
        (j["max_faults"].as_u64(), j["fault_hits"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("VIOLATION bg-refcount within BOUNDS"), "{out}");
    assert!(
        out.contains("faults at most 1 per run, at any evaluation"),
        "{out}"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("found"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.contains("\nfail extent_tree_lookup 1*return(EIO)\n"),
        "{text}"
    );
    assert_eq!(Scenario::parse(text.as_bytes()).unwrap().steps.len(), 5);
    let r = bgfuzz(&["repro", files[0].to_str().unwrap()], dir.path());
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stdout).contains("VIOLATION bg-refcount"));
    let c = bgfuzz(&["check", files[0].to_str().unwrap()], dir.path());
    assert_eq!(
        c.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&c.stdout)
    );
}
