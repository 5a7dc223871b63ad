//! `bgfuzz check`: replay scripts against their `expect` lines.

use std::path::{Path, PathBuf};

use crate::variant::Variant;

use crate::oracles::ViolationKind;
use crate::run::{run, Mode};
use crate::scenario::Scenario;

/// One script under one variant.
#[derive(Clone, Debug)]
pub struct CheckLine {
    pub path: PathBuf,
    pub variant: Variant,
    pub expected: Option<ViolationKind>,
    pub got: Option<ViolationKind>,
}

impl CheckLine {
    pub fn ok(&self) -> bool {
        self.expected == self.got
    }
}

/// A script that could not be checked: `FILE:LINE: message`.
#[derive(Clone, Debug)]
pub struct CheckError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    pub lines: Vec<CheckLine>,
    pub errors: Vec<CheckError>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.errors.is_empty() && self.lines.iter().all(CheckLine::ok)
    }
}

/// The `.scn` files under the given paths, sorted, so output is stable.
/// Each real file is visited once, and each real directory: symlinks are
/// followed, but a link back to a directory already walked (`ln -s .`) is
/// not walked again. In directories, only regular files count: a FIFO or a
/// device named `x.scn` is skipped, never opened. A path named on the
/// command line is kept whatever it is, for `check_file` to report.
pub fn collect_scripts(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut seen, &mut out)?;
        } else if seen.insert(real(p)) {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The canonical path, which names the real file; the path itself when it
/// cannot be resolved (a missing file is reported by `check_file`).
fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn walk(
    dir: &Path,
    seen: &mut std::collections::BTreeSet<PathBuf>,
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    if !seen.insert(real(dir)) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for e in entries {
        // Follows symlinks; a dangling one is skipped.
        let Ok(meta) = std::fs::metadata(&e) else {
            continue;
        };
        if meta.is_dir() {
            walk(&e, seen, out)?;
        } else if meta.is_file()
            && e.extension().is_some_and(|x| x == "scn")
            && seen.insert(real(&e))
        {
            out.push(e);
        }
    }
    Ok(())
}

/// Checks one script: runs it under each variant named in its `expect`
/// lines.
pub fn check_file(path: &Path, report: &mut CheckReport) {
    let fail = |report: &mut CheckReport, message: String| {
        report.errors.push(CheckError {
            path: path.to_path_buf(),
            message,
        })
    };
    let bytes = match crate::read_input(path) {
        Ok(b) => b,
        Err(e) => return fail(report, format!("{e:#}")),
    };
    let scn = match Scenario::parse(&bytes) {
        Ok(s) => s,
        Err(e) => return fail(report, format!("{}:{e}", path.display())),
    };
    if scn.expects.is_empty() {
        return fail(
            report,
            format!("{}: no `expect` lines to check", path.display()),
        );
    }
    // An invalid script is invalid under every variant: reported and
    // counted once, and none of its lines count.
    let mut lines = Vec::new();
    for exp in &scn.expects {
        match run(&scn, exp.variant, Mode::Strict) {
            Ok(r) => lines.push(CheckLine {
                path: path.to_path_buf(),
                variant: exp.variant,
                expected: exp.outcome,
                got: r.violation.map(|v| v.finding.kind),
            }),
            Err(e) => return fail(report, format!("{}:{e}", path.display())),
        }
    }
    report.lines.extend(lines);
}

pub fn check_paths(paths: &[PathBuf]) -> std::io::Result<CheckReport> {
    let mut report = CheckReport::default();
    for p in collect_scripts(paths)? {
        check_file(&p, &mut report);
    }
    Ok(report)
}

pub fn outcome_name(k: Option<ViolationKind>) -> &'static str {
    k.map_or("pass", |k| k.name())
}
