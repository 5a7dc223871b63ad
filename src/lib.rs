//! bgfuzz: a fault-injection and fuzzing harness for the btrfs transaction
//! and block-group machinery of Linux v4.1, built around the race fixed by
//! ff1f8250a9e4 ("Btrfs: fix race between block group creation and their
//! cache writeout").
//!
//! Data flow: a [`scenario::Scenario`] (parsed from a script, or generated)
//! is [`run::run`] on the engine under a variant; the [`oracles`] judge
//! every step; [`report`] prints what happened.

pub mod attribution;
pub mod bench;
pub mod campaign;
pub mod check;
pub mod coverage;
pub mod explore;
pub mod generate;
pub mod html;
pub mod interrupt;
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
/// directory. Replaces only a regular file: a rename over a device node, a
/// FIFO or a symlink would replace that node, not write through it. A
/// failed write (a full disk) removes its temporary file.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(what) = not_regular(path) {
        anyhow::bail!(
            "refusing to replace {}: it is {what}, not a regular file",
            path.display()
        );
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    // The pid keeps two writers of one path from sharing a temporary file.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, text)
        .with_context(|| format!("writing {}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Checks that `path` may be written by a command's `-o`: it does not exist,
/// or (with `force`) is a regular file. Called before the work, so a
/// refusal costs nothing.
pub fn check_output(path: &Path, force: bool) -> anyhow::Result<()> {
    if let Some(what) = not_regular(path) {
        anyhow::bail!(
            "refusing to write {}: it is {what}, not a regular file",
            path.display()
        );
    }
    if !force && std::fs::symlink_metadata(path).is_ok() {
        anyhow::bail!("{} exists; pass --force to overwrite it", path.display());
    }
    Ok(())
}

/// What an existing path is when it is not a regular file; `None` for a
/// regular file or nothing. Symlinks are not followed.
fn not_regular(path: &Path) -> Option<&'static str> {
    let ft = std::fs::symlink_metadata(path).ok()?.file_type();
    file_type_name(ft)
}

fn file_type_name(ft: std::fs::FileType) -> Option<&'static str> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return Some("a FIFO");
        }
        if ft.is_char_device() || ft.is_block_device() {
            return Some("a device");
        }
        if ft.is_socket() {
            return Some("a socket");
        }
    }
    if ft.is_symlink() {
        Some("a symlink")
    } else if ft.is_dir() {
        Some("a directory")
    } else if ft.is_file() {
        None
    } else {
        Some("a special file")
    }
}

/// The most a script or fuzzer input may be. A 1M-line script is about
/// 18 MiB; libFuzzer inputs are a few hundred bytes.
pub const MAX_INPUT_BYTES: u64 = 64 << 20;

/// Reads a script or fuzzer input: a regular file (symlinks followed) of at
/// most [`MAX_INPUT_BYTES`]. The type is checked before opening, so a FIFO
/// never blocks and `/dev/zero` is never read.
pub fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if let Some(what) = file_type_name(meta.file_type()) {
        anyhow::bail!(
            "{}: it is {what}; scripts and inputs are read from regular files only",
            path.display()
        );
    }
    let too_big = || {
        anyhow::anyhow!(
            "{}: larger than the {} MiB limit on a script or input",
            path.display(),
            MAX_INPUT_BYTES >> 20
        )
    };
    if meta.len() > MAX_INPUT_BYTES {
        return Err(too_big());
    }
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    // The file may grow after the check.
    f.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(too_big());
    }
    Ok(bytes)
}
