//! What the fuzz targets do, as library functions: the targets in `fuzz/`
//! only glue libFuzzer to these, and `cargo test` runs them on stable too.

use std::sync::OnceLock;

use crate::variant::Variant;

use crate::report;
use crate::run::{run, Mode};
use crate::scenario::Scenario;

/// `BGFUZZ_VARIANT`, read once. An unknown name ends the process with a
/// clear message at start-up, before libFuzzer runs a single input.
pub fn variant_from_env() -> Variant {
    static VARIANT: OnceLock<Variant> = OnceLock::new();
    *VARIANT.get_or_init(|| match std::env::var("BGFUZZ_VARIANT") {
        Err(_) => Variant::FIXED,
        Ok(name) => Variant::parse(&name).unwrap_or_else(|| {
            eprintln!(
                "bgfuzz: BGFUZZ_VARIANT={name}: unknown variant (known: {})",
                Variant::known_names()
            );
            std::process::exit(2)
        }),
    })
}

/// Runs a generated scenario; a violation panics with the normalized
/// script and the report, which is what libFuzzer records as a crash.
pub fn scenario(scn: &Scenario, variant: Variant) {
    let r = run(scn, variant, Mode::Loose).expect("a generated scenario always runs in loose mode");
    if r.violation.is_some() {
        panic!(
            "bgfuzz violation under {variant}\n\n{}\n--- script (save as .scn, replay with `bgfuzz repro`) ---\n{}",
            report::violation_report(&r).unwrap_or_default(),
            r.scenario.print()
        );
    }
}

/// Parses arbitrary bytes; what parses must print to a script that parses
/// to the same scenario.
pub fn script(data: &[u8]) {
    if let Ok(s) = Scenario::parse(data) {
        let printed = s.print();
        let again = Scenario::parse(printed.as_bytes()).unwrap_or_else(|e| {
            panic!("the print of a parsed script does not parse: {e}\n{printed}")
        });
        assert_eq!(again, s, "print/parse changed the scenario:\n{printed}");
    }
}
