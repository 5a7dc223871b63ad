//! The regression scripts meet their `expect` lines; runs are deterministic;
//! failpoint runs in parallel threads do not leak into each other.

use std::path::PathBuf;

use bgfuzz::check::check_paths;
use bgfuzz::run::{run, Mode, Run};
use bgfuzz::scenario::Scenario;
use bgfuzz::variant::Variant;

fn scripts() -> Vec<(PathBuf, Scenario)> {
    bgfuzz::check::collect_scripts(&[PathBuf::from("corpus/scripts")])
        .unwrap()
        .into_iter()
        .map(|p| {
            let s = Scenario::parse(&std::fs::read(&p).unwrap()).unwrap();
            (p, s)
        })
        .collect()
}

#[test]
fn corpus_scripts_meet_their_expectations() {
    let rep = check_paths(&[PathBuf::from("corpus/scripts")]).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(rep.lines.len() >= 20, "expected >= 10 scripts x 2 variants");
    for l in &rep.lines {
        assert!(
            l.ok(),
            "{}: {}: expected {:?}, got {:?}",
            l.path.display(),
            l.variant,
            l.expected,
            l.got
        );
    }
    // Every script states what `fixed` must do, and what at least one
    // other variant must do (a regression that no variant fails would
    // guard nothing).
    for (p, s) in scripts() {
        assert!(
            s.expects.iter().any(|e| e.variant == Variant::FIXED),
            "{}: no expect line for fixed",
            p.display()
        );
        assert!(
            s.expects.iter().any(|e| e.variant != Variant::FIXED),
            "{}: no expect line for any variant but fixed",
            p.display()
        );
    }
}

fn fingerprint(r: &Run) -> String {
    format!("{:?}\n{:?}\n{}", r.steps, r.violation, r.scenario.print())
}

#[test]
fn the_same_script_gives_the_same_run() {
    for (p, s) in scripts() {
        for v in Variant::ALL {
            let a = run(&s, v, Mode::Strict).unwrap();
            let b = run(&s, v, Mode::Strict).unwrap();
            assert_eq!(fingerprint(&a), fingerprint(&b), "{}: {v}", p.display());
        }
    }
}

#[test]
fn the_normalized_script_replays_the_same_run() {
    for (p, s) in scripts() {
        for v in Variant::ALL {
            let a = run(&s, v, Mode::Strict).unwrap();
            let again = Scenario::parse(a.scenario.print().as_bytes()).unwrap();
            assert_eq!(again, a.scenario, "{}: print/parse", p.display());
            let b = run(&again, v, Mode::Strict).unwrap();
            assert_eq!(
                format!("{:?}", a.violation),
                format!("{:?}", b.violation),
                "{}: {v}",
                p.display()
            );
            // The replay takes exactly the recorded steps: no drain left.
            assert_eq!(a.steps.len(), b.steps.len(), "{}: {v}", p.display());
        }
    }
}

#[test]
fn failpoints_do_not_leak_between_parallel_runs() {
    let all = scripts();
    let expected: Vec<String> = all
        .iter()
        .map(|(_, s)| fingerprint(&run(s, Variant::FIXED, Mode::Strict).unwrap()))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..5 {
                    for ((p, s), want) in all.iter().zip(&expected) {
                        let got = fingerprint(&run(s, Variant::FIXED, Mode::Strict).unwrap());
                        assert_eq!(&got, want, "{}", p.display());
                    }
                }
            });
        }
    });
}

/// Every bug variant but the seed race (`corpus/scripts/seed-race.scn`) has
/// a zoo script that shows its bug under its own variant, passes under
/// `fixed`, and says what `v4.1` gives.
#[test]
fn every_bug_variant_has_a_zoo_script() {
    for v in Variant::BUGS {
        if v.name() == "bug-ff1f8250" {
            continue;
        }
        let path = PathBuf::from(format!("corpus/scripts/zoo/{}.scn", v.name()));
        let s = Scenario::parse(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap();
        let expects = |name: &str| s.expects.iter().any(|e| e.variant.name() == name);
        assert!(
            expects("fixed") && expects("v4.1") && expects(v.name()),
            "{}",
            path.display()
        );
        let r = run(&s, v, Mode::Strict).unwrap();
        assert_eq!(
            r.violation.map(|x| x.finding.kind.name()),
            v.expected_violation(),
            "{}",
            path.display()
        );
    }
}
