//! Properties under `cargo test`, with the fuzz targets' generator as a
//! proptest strategy (bytes in, scenario out; shrinking keeps them valid).

use bgfuzz::generate::scenarios;
use bgfuzz::oracles::ViolationKind;
use bgfuzz::report;
use bgfuzz::run::{run, Mode};
use bgfuzz::variant::Variant;
use proptest::prelude::*;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestError, TestRng, TestRunner,
};

proptest! {
    #![proptest_config(Config {
        cases: 1000,
        // Failures found are kept, and replayed first on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/properties.txt",
        ))),
        ..Config::default()
    })]

    /// The fixed engine meets every oracle on every generated scenario,
    /// faults included.
    #[test]
    fn fixed_meets_every_oracle(g in scenarios()) {
        let r = run(&g.0, Variant::FIXED, Mode::Loose).unwrap();
        prop_assert!(r.violation.is_none(), "{}", report::full(&r));
    }

    /// A generated scenario's normalized script replays to the same run.
    #[test]
    fn normalized_scripts_replay_exactly(g in scenarios()) {
        for v in Variant::ALL {
            let a = run(&g.0, v, Mode::Loose).unwrap();
            let b = run(&a.scenario, v, Mode::Strict).unwrap();
            // Identical but for the drain flag: the replay spells the
            // drain out as script lines.
            let key = |r: &bgfuzz::run::Run| -> Vec<_> {
                r.steps.iter().map(|s| (s.step, s.op, s.outcome, s.events.clone())).collect()
            };
            prop_assert_eq!(key(&a), key(&b));
            prop_assert_eq!(&a.violation, &b.violation);
        }
    }
}

/// proptest finds the ff1f8250 race in the bug variant and shrinks it to a
/// short scenario. A fixed RNG seed keeps the test deterministic.
#[test]
fn proptest_finds_and_shrinks_the_ff1f8250_race() {
    let config = Config {
        cases: 5_000,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let result = runner.run(&scenarios(), |g| {
        let r = run(&g.0, Variant::BUG_FF1F8250, Mode::Loose).unwrap();
        prop_assert!(r.violation.is_none());
        Ok(())
    });
    let Err(TestError::Fail(_, minimal)) = result else {
        panic!("proptest did not find the bug: {result:?}");
    };
    let r = run(&minimal.0, Variant::BUG_FF1F8250, Mode::Loose).unwrap();
    let v = r.violation.expect("the shrunk case still fails");
    assert_eq!(v.finding.kind, ViolationKind::AbortEnoentOutsideCritical);
    assert!(
        r.scenario.steps.len() <= 16,
        "shrunk to {} steps:\n{}",
        r.scenario.steps.len(),
        r.scenario.print()
    );
    // And the fixed engine passes the very same scenario.
    assert!(run(&minimal.0, Variant::FIXED, Mode::Loose)
        .unwrap()
        .violation
        .is_none());
}
