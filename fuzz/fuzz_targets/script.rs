//! Arbitrary bytes into the script parser: it never panics, and any text
//! that parses prints to a script that parses to the same scenario.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bgfuzz::targets::script(data);
});
