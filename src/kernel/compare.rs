//! From the model to the kernel: a witness script run on the model under
//! every variant and on this machine's kernel, side by side.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::Variant;
use serde::Serialize;

use super::report::KernelReport;
use super::{KernelError, KernelOptions};
use crate::run::{run, Mode};

#[derive(Clone, Debug, Serialize)]
pub struct ModelRow {
    pub variant: &'static str,
    /// `pass` or the violation kind.
    pub outcome: String,
    /// The step after which the violation fired.
    pub step: Option<usize>,
    pub message: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SideBySide {
    pub script: String,
    pub model: Vec<ModelRow>,
    pub kernel: KernelReport,
}

/// What the model says under each variant ([`Variant::ALL`]).
pub fn model_rows(scn: &crate::scenario::Scenario) -> Result<Vec<ModelRow>, KernelError> {
    Variant::ALL
        .iter()
        .map(|&v| {
            let r = run(scn, v, Mode::Loose).map_err(|e| KernelError::Invalid(e.to_string()))?;
            Ok(ModelRow {
                variant: v.name(),
                outcome: r
                    .violation
                    .as_ref()
                    .map_or("pass".into(), |x| x.finding.kind.name().to_string()),
                step: r.violation.as_ref().map(|x| x.step + 1),
                message: r.violation.map(|x| x.finding.message),
            })
        })
        .collect()
}

/// Runs the script's model variants, then the kernel.
pub fn side_by_side(opts: &KernelOptions) -> Result<SideBySide, KernelError> {
    let path = opts
        .script
        .as_ref()
        .ok_or_else(|| KernelError::Invalid("a script is needed to compare".into()))?;
    let (scn, _, _) = super::load_plan(path)?;
    let model = model_rows(&scn)?;
    let kernel = super::run(opts)?;
    Ok(SideBySide {
        script: path.display().to_string(),
        model,
        kernel,
    })
}

pub fn table(s: &SideBySide) -> String {
    let k = &s.kernel;
    let mut o = String::new();
    let _ = writeln!(o, "{}: the v4.1 model and Linux {}\n", s.script, k.kernel);
    let _ = writeln!(o, "{:<34} outcome", "model variant");
    for m in &s.model {
        let _ = writeln!(
            o,
            "{:<34} {}{}",
            m.variant,
            m.outcome,
            m.step
                .map_or(String::new(), |n| format!(" (after step {n})"))
        );
    }
    let kernel_outcome = if k.findings.is_empty() {
        "pass".to_string()
    } else {
        format!("FINDING: {}", k.findings[0])
    };
    let _ = writeln!(
        o,
        "{:<34} {kernel_outcome}",
        format!(
            "kernel {}",
            k.kernel.split_whitespace().next().unwrap_or("")
        )
    );
    let _ = writeln!(
        o,
        "{:<34} {:.1}s, {} ops, {} commits, bgs +{} -{}, aborts {} ({} injected), btrfs check {}, conformance {}",
        "",
        k.seconds,
        k.ops,
        k.commits.map_or("n/a".into(), |c| c.to_string()),
        k.bgs_created.map_or("n/a".into(), |c| c.to_string()),
        k.bgs_removed.map_or("n/a".into(), |c| c.to_string()),
        k.aborts,
        k.aborts_injected,
        if k.btrfs_check.clean { "clean" } else { "ERRORS" },
        k.conformance
            .as_ref()
            .map_or("n/a".into(), |c| format!("{} failures", c.failures.len()))
    );
    let _ = writeln!(
        o,
        "\n(the model runs the script's interleaving exactly; the kernel runs each task's operations in a loop with jitter and cannot be made to take one interleaving: see docs/kernel.md)"
    );
    o
}

/// `campaign --kernel D`: each crash's minimized script (the `scenario`
/// target's; the `script` target's crashes are panics, not scripts) on the
/// kernel for `time`, side by side with the model, into OUT/kernel.md and
/// OUT/kernel.json. A machine that cannot run the kernel gets a note, not
/// a failed campaign.
pub fn campaign_on_kernel(
    crashes: &[(String, String)],
    out: &Path,
    time: Duration,
) -> anyhow::Result<String> {
    let mut md = String::from("\n# The crashes on this machine's kernel\n\n");
    if let Err(why) = super::setup::preflight() {
        let _ = writeln!(md, "not run: {why}");
        return Ok(md);
    }
    let dir = out.join("kernel");
    let mut results = Vec::new();
    for (i, (target, script)) in crashes.iter().enumerate() {
        if target != "scenario" || crate::scenario::Scenario::parse(script.as_bytes()).is_err() {
            continue;
        }
        let path = dir.join(format!("crash-{}.scn", i + 1));
        crate::write_atomic(&path, script)?;
        let opts = KernelOptions {
            script: Some(path.clone()),
            time,
            ..Default::default()
        };
        match side_by_side(&opts) {
            Ok(s) => {
                md.push_str("```\n");
                md.push_str(&table(&s));
                md.push_str("```\n\n");
                results.push(s);
            }
            Err(e) => {
                let _ = writeln!(md, "{}: not run: {e}\n", path.display());
            }
        }
    }
    if results.is_empty() {
        md.push_str("no crash script to run\n");
    }
    crate::write_atomic(&out.join("kernel.md"), &md)?;
    crate::write_atomic(
        &out.join("kernel.json"),
        &serde_json::to_string_pretty(&results)?,
    )?;
    Ok(md)
}
