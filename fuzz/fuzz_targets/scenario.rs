//! Generated scenarios against the engine and every oracle. Any violation
//! panics with the script and the report. The variant comes from
//! `BGFUZZ_VARIANT` (default `fixed`).
#![no_main]

use bgfuzz::generate::Generated;
use bgfuzz::targets;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        targets::variant_from_env();
    },
    |input: Generated| {
        targets::scenario(&input.0, targets::variant_from_env());
    }
);
