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
pub fn collect_scripts(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.sort();
            for e in entries {
                if e.is_dir() {
                    out.extend(collect_scripts(&[e])?);
                } else if e.extension().is_some_and(|x| x == "scn") {
                    out.push(e);
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
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
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return fail(report, format!("{}: {e}", path.display())),
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
    for exp in &scn.expects {
        match run(&scn, exp.variant, Mode::Strict) {
            Ok(r) => report.lines.push(CheckLine {
                path: path.to_path_buf(),
                variant: exp.variant,
                expected: exp.outcome,
                got: r.violation.map(|v| v.finding.kind),
            }),
            Err(e) => fail(report, format!("{}:{e}", path.display())),
        }
    }
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
