//! bgfuzz: a fault-injection and fuzzing harness for the btrfs transaction
//! and block-group machinery of Linux v4.1, built around the race fixed by
//! ff1f8250a9e4 ("Btrfs: fix race between block group creation and their
//! cache writeout").
//!
//! Data flow: a [`scenario::Scenario`] (parsed from a script, or generated)
//! is [`run::run`] on the engine under a variant; the [`oracles`] judge
//! every step; [`report`] prints what happened.

pub mod bench;
pub mod campaign;
pub mod check;
pub mod coverage;
pub mod generate;
pub mod minimize;
pub mod oracles;
pub mod report;
pub mod run;
pub mod scenario;
pub mod search;
pub mod targets;

pub use bgfuzz_engine as engine;
pub use bgfuzz_failpoints as failpoints;
