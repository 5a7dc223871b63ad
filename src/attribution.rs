//! Attribution: which upstream fix removes a witness. The witness is
//! replayed under its variant's patches plus one missing fix at a time;
//! the fixes under which it no longer violates are the ones that removed
//! the bug upstream. `git bisect` over the patch table, in microseconds.

use std::fmt::Write as _;

use serde::Serialize;

use crate::engine::{PatchId, Patches};
use crate::run::{run_patched, Mode, Run};
use crate::scenario::Scenario;
use crate::variant::Variant;

/// One fix that removes a witness, as reports print it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fix {
    pub id: &'static str,
    pub title: &'static str,
    pub kernel: &'static str,
}

impl Fix {
    fn of(p: PatchId) -> Fix {
        let p = p.patch();
        Fix {
            id: p.id,
            title: p.title,
            kernel: p.kernel,
        }
    }
}

/// The fixes missing from `patches` that, each applied alone, make the
/// strict script `scenario` run without a violation under `variant`.
/// Empty when no single fix does (or the variant lacks none). A fix that
/// adds a wait (67c5e7d464bc's mutex) can make the witness invalid as
/// written (a `continue` on a task that now blocks): it is then replayed
/// loosely, as the fuzzer ran it.
pub fn attribute(scenario: &Scenario, variant: Variant, patches: Patches) -> Vec<PatchId> {
    Patches::FIXES
        .minus(patches)
        .iter()
        .filter(|&p| {
            let with = patches.with(p);
            match run_patched(scenario, variant, with, Mode::Strict) {
                Ok(r) => r.violation.is_none(),
                Err(_) => run_patched(scenario, variant, with, Mode::Loose)
                    .is_ok_and(|r| r.violation.is_none()),
            }
        })
        .collect()
}

/// [`attribute`] for a run that violated (its normalized script).
pub fn attribute_run(run: &Run) -> Vec<PatchId> {
    if run.violation.is_none() {
        return Vec::new();
    }
    attribute(&run.scenario, run.variant, run.patches)
}

/// The fixes as structs, for JSON.
pub fn fixes(ps: &[PatchId]) -> Vec<Fix> {
    ps.iter().map(|&p| Fix::of(p)).collect()
}

/// The report's line: "removed upstream by 0657b20c5a76 (v6.5, "...")".
pub fn line(run: &Run, ps: &[PatchId]) -> String {
    if ps.is_empty() {
        let missing = Patches::FIXES.minus(run.patches);
        return if missing.is_empty() {
            "every modelled fix is applied: a bug no upstream fix in the table removes".to_string()
        } else {
            format!("no single missing fix ({missing}) removes it alone")
        };
    }
    let mut s = String::from("removed upstream by ");
    for (i, p) in ps.iter().enumerate() {
        if i > 0 {
            s.push_str(", or by ");
        }
        let p = p.patch();
        let _ = write!(s, "{} ({}, \"{}\")", p.id, p.kernel, p.title);
    }
    s
}

/// The report's attribution line for a run that violated, or `None` when
/// its patches lack no fix (nothing to attribute).
pub fn report_line(run: &Run) -> Option<String> {
    if run.violation.is_none() || Patches::FIXES.minus(run.patches).is_empty() {
        return None;
    }
    Some(line(run, &attribute_run(run)))
}

/// The bug variant that lacks only `p`, where the table has one.
pub fn bug_variant(p: PatchId) -> Option<Variant> {
    Variant::BUGS.into_iter().find(|v| v.bug_patch() == Some(p))
}
