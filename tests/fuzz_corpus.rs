//! The fuzz targets' seed corpora, on stable under `cargo test`: every
//! `corpus/scenario/` input decodes and runs clean on `fixed` (the target's
//! own function, which panics on a violation), and every `corpus/script/`
//! input survives the `script` target.

use std::path::Path;

use bgfuzz::generate::decode;
use bgfuzz::targets;
use bgfuzz::variant::Variant;

fn files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(Path::new(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// Every input of a scenario corpus runs clean on `fixed`. An input that
/// decodes to no step at all (an empty file, a header cut short) is as
/// valid a corpus entry as any: libFuzzer keeps such inputs, and the target
/// runs them.
fn runs_clean_on_fixed(dir: &str) -> usize {
    let corpus = files(dir);
    for (_, bytes) in &corpus {
        targets::scenario(&decode(bytes), Variant::FIXED);
    }
    corpus.len()
}

#[test]
fn scenario_corpus_runs_clean_on_fixed() {
    let n = runs_clean_on_fixed("corpus/scenario");
    assert!(n >= 10, "seed corpus too small: {n}");
}

/// Issue 10, item 2: inputs that decode to nothing are valid seeds.
#[test]
fn an_input_that_decodes_to_nothing_is_a_valid_seed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty"), b"").unwrap();
    std::fs::write(dir.path().join("header-only"), [7u8; 10]).unwrap();
    for (name, _) in files(dir.path().to_str().unwrap()) {
        assert!(
            decode(&std::fs::read(&name).unwrap()).steps.is_empty(),
            "{name}"
        );
    }
    assert_eq!(runs_clean_on_fixed(dir.path().to_str().unwrap()), 2);
}

#[test]
fn script_corpus_survives_the_script_target() {
    let corpus = files("corpus/script");
    assert!(!corpus.is_empty());
    for (_, bytes) in corpus {
        targets::script(&bytes);
    }
}

#[test]
#[should_panic(expected = "abort-enoent-outside-critical")]
fn the_scenario_target_panics_on_a_violation() {
    let s =
        bgfuzz::scenario::Scenario::parse(&std::fs::read("corpus/scripts/seed-race.scn").unwrap())
            .unwrap();
    targets::scenario(&s, Variant::BUG_FF1F8250);
}

/// The scenario target's state feedback reaches the abstract states of
/// e44081ef's race one milestone at a time: a commit in its critical
/// section while an endio worker's JOIN_NOLOCK handle holds a pending bg.
#[test]
fn state_feedback_sees_the_e44081ef_milestones() {
    use bgfuzz::run::{run_observed, Mode};
    use bgfuzz::scenario::Scenario;
    use bgfuzz::targets::abstract_state;
    use bgfuzz::variant::Variant;
    let s =
        Scenario::parse(&std::fs::read("corpus/scripts/zoo/bug-e44081ef.scn").unwrap()).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let v = Variant::parse("bug-e44081ef").unwrap();
    run_observed(&s, v, v.patches(), Mode::Strict, &mut |e, _| {
        seen.insert(abstract_state(e));
    })
    .unwrap();
    // Critical section (3), worker holds a handle (bit 3) with a pending
    // bg (bit 4).
    assert!(
        seen.iter().any(|&x| x & 3 == 3 && x & 0b1_1000 == 0b1_1000),
        "{seen:?}"
    );
    // A dirty bg with no item (bit 5) before the abort (bit 7).
    assert!(
        seen.iter().any(|&x| x & 0b10_0000 != 0 && x & 0x80 == 0),
        "{seen:?}"
    );
    assert!(seen.iter().any(|&x| x & 0x80 != 0), "{seen:?}");
    assert!(seen.len() >= 6, "{seen:?}");
}
