//! `minimize` keeps the violation kind, never grows a scenario, is
//! deterministic, and writes a script that replays strictly.

use bgfuzz::minimize::minimize;
use bgfuzz::run::{run, Mode};
use bgfuzz::search::search_hits;
use bgfuzz::variant::Variant;

#[test]
fn minimize_keeps_the_kind_shrinks_and_is_deterministic() {
    for seed in 0..4 {
        let (_, found) = search_hits(seed, Variant::BUG_FF1F8250, 3, |t| t.cases < 50_000);
        assert_eq!(found.len(), 3, "seed {seed}");
        for f in &found {
            let kind = f.run.violation.as_ref().unwrap().finding.kind;
            let a = minimize(&f.run.scenario, Variant::BUG_FF1F8250).expect("minimizes");
            let b = minimize(&f.run.scenario, Variant::BUG_FF1F8250).expect("minimizes");
            assert_eq!(a.scenario.print(), b.scenario.print(), "not deterministic");
            assert_eq!(a.kind, kind);
            assert!(a.scenario.steps.len() <= f.run.scenario.steps.len());
            // The printed script replays strictly to the same kind, and its
            // expect lines are what each variant really does.
            let parsed = bgfuzz::scenario::Scenario::parse(a.scenario.print().as_bytes()).unwrap();
            for e in &parsed.expects {
                let r = run(&parsed, e.variant, Mode::Strict).unwrap();
                assert_eq!(
                    r.violation.map(|v| v.finding.kind),
                    e.outcome,
                    "{}",
                    a.scenario.print()
                );
            }
        }
    }
}

#[test]
fn nothing_to_minimize_without_a_violation() {
    let s =
        bgfuzz::scenario::Scenario::parse(&std::fs::read("corpus/scripts/seed-race.scn").unwrap())
            .unwrap();
    assert!(minimize(&s, Variant::FIXED).is_none());
    let m = minimize(&s, Variant::BUG_FF1F8250).unwrap();
    assert!(m.scenario.steps.len() <= 10, "{}", m.scenario.print());
}

/// Item 13: a long script stops at the step-line budget with a strict
/// script of the same kind, and the budget is counted, not timed: the
/// same result twice.
#[test]
fn a_long_script_stops_at_the_step_budget() {
    use bgfuzz::minimize::{minimize_with, Budget};
    let mut text = String::from("variant bug-ff1f8250\nD: start\n");
    for i in 1..=500 {
        text.push_str(&format!("D: alloc data 4K\nD: free e{i}\n"));
    }
    text.push_str("D: end\n");
    let race = std::fs::read_to_string("corpus/scripts/seed-race.scn").unwrap();
    text.extend(
        race.lines()
            .filter(|l| l.as_bytes().get(1) == Some(&b':'))
            .map(|l| format!("{l}\n")),
    );
    let s = bgfuzz::scenario::Scenario::parse(text.as_bytes()).unwrap();
    let budget = Budget {
        max_tries: usize::MAX,
        max_steps: 20_000,
        deadline: None,
    };
    let a = minimize_with(&s, Variant::BUG_FF1F8250, budget).expect("minimizes");
    let b = minimize_with(&s, Variant::BUG_FF1F8250, budget).expect("minimizes");
    assert!(a.exhausted);
    assert!(
        a.tries < 200,
        "{} candidates within 20000 step lines",
        a.tries
    );
    assert_eq!(a.scenario.print(), b.scenario.print());
    assert!(a.scenario.steps.len() < s.steps.len());
    let r = run(&a.scenario, Variant::BUG_FF1F8250, Mode::Strict).unwrap();
    assert_eq!(r.violation.map(|v| v.finding.kind), Some(a.kind));
}

/// A witness greedy shrinking cannot shorten (what `bgfuzz run --variant
/// bug-7785a663 --seed 7` minimized to before the polish): no single
/// step, operation or task goes, because the short witness is another
/// interleaving. The exploration around it finds that one.
#[test]
fn the_exploration_around_a_witness_finds_a_shorter_interleaving() {
    let stuck = "\
variant bug-7785a663
mount space_cache discard
fail extent_tree_lookup 3*off->2*return(ENOENT)

A: start
A: alloc data 4K
A: commit
B: start
B: free e1
A: continue
B: alloc system 4K
B: end
B: delete_unused
C: endio
C: continue
B: continue
A: continue
A: continue
A: continue
B: endio
B: continue
A: continue
A: continue
B: endio
A: continue
A: continue
";
    let s = bgfuzz::scenario::Scenario::parse(stuck.as_bytes()).unwrap();
    let m = minimize(&s, Variant::parse("bug-7785a663").unwrap()).unwrap();
    assert_eq!(
        m.kind,
        bgfuzz::oracles::ViolationKind::BgRefcount,
        "{}",
        m.scenario.print()
    );
    assert!(m.scenario.steps.len() <= 7, "{}", m.scenario.print());
    // Only the headers the new interleaving needs.
    assert!(!m.scenario.mount.space_cache, "{}", m.scenario.print());
    assert!(m.scenario.device.is_none(), "{}", m.scenario.print());
}
