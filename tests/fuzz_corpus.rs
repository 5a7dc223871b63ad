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

#[test]
fn scenario_corpus_runs_clean_on_fixed() {
    let corpus = files("corpus/scenario");
    assert!(
        corpus.len() >= 10,
        "seed corpus too small: {}",
        corpus.len()
    );
    for (name, bytes) in corpus {
        let s = decode(&bytes);
        assert!(!s.steps.is_empty(), "{name} decodes to nothing");
        targets::scenario(&s, Variant::FIXED);
    }
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
