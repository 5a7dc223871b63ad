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
pub mod html;
pub mod kernel;
pub mod minimize;
pub mod oracles;
pub mod report;
pub mod run;
pub mod scenario;
pub mod search;
pub mod snapshot;
pub mod targets;
pub mod variant;

pub use variant::Variant;

pub use bgfuzz_engine as engine;
pub use bgfuzz_failpoints as failpoints;

use std::path::Path;

use anyhow::Context;

/// Writes through a temporary file in the same directory and a rename, so
/// a killed run never leaves half a script or report behind. Creates the
/// directory.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
