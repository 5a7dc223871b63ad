//! `bgfuzz campaign`: a night of `cargo fuzz` over the targets, made safe to
//! kill and resume, ending in a report a person reads in a minute.
//!
//! Per target: fuzz in fork mode (`-fork=N -ignore_crashes=1`, so one crash
//! does not end the night) with new inputs going to `OUT/<target>/new/` and
//! crashes to `OUT/<target>/artifacts/`; then merge what adds coverage into
//! `corpus/<target>/` with libFuzzer's `-merge=1`, which only adds files
//! (`cargo fuzz cmin` would rewrite the directory, deleting files we did
//! not add); then triage every artifact: decode, replay, minimize,
//! deduplicate by kind and minimized script, and match against the
//! regressions in `corpus/scripts/`. Nothing in `OUT` or `corpus/` is ever
//! deleted, so a campaign killed at any point loses nothing, and the next
//! one fuzzes from, merges and triages what the last one left.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::variant::Variant;
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::generate::decode;
use crate::minimize::minimize;
use crate::run::{run, Mode};
use crate::scenario::Scenario;

pub const TARGETS: [&str; 2] = ["scenario", "script"];

#[derive(Clone, Debug)]
pub struct CampaignConfig {
    pub targets: Vec<String>,
    pub time: Duration,
    pub jobs: usize,
    pub variant: Variant,
    pub out: PathBuf,
    /// Holds `<target>/` seed corpora and `scripts/` regressions.
    pub corpus: PathBuf,
    /// The project root: where `fuzz/` is.
    pub root: PathBuf,
    pub coverage: bool,
}

/// libFuzzer's last status line, parsed.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct FuzzStats {
    pub executions: u64,
    pub coverage: u64,
    pub features: u64,
    pub crashes: u64,
}

impl FuzzStats {
    /// Parses `#27634: cov: 1386 ft: 5708 corp: 582 exec/s: 0
    /// oom/timeout/crash: 0/0/84 ...` (fork mode) and `#123 pulse cov: ...`.
    pub fn parse_line(line: &str) -> Option<FuzzStats> {
        let rest = line.strip_prefix('#')?;
        let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let executions = n.parse().ok()?;
        let mut s = FuzzStats {
            executions,
            ..FuzzStats::default()
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        for w in words.windows(2) {
            match w[0] {
                "cov:" => s.coverage = w[1].parse().unwrap_or(0),
                "ft:" => s.features = w[1].parse().unwrap_or(0),
                "oom/timeout/crash:" => {
                    s.crashes = w[1]
                        .rsplit('/')
                        .next()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0)
                }
                _ => {}
            }
        }
        Some(s)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub seconds: f64,
    pub executions: u64,
    pub exec_per_sec: u64,
    pub coverage: u64,
    pub features: u64,
    pub corpus_before: usize,
    pub corpus_after: usize,
    pub artifacts: usize,
    pub fuzz_exit: Option<i32>,
    pub log: String,
    pub coverage_report: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum CrashStatus {
    New,
    Known,
    /// libFuzzer kept it, but replaying it shows nothing (a timeout or an
    /// out-of-memory in the harness itself): read its log.
    Unreproduced,
}

#[derive(Clone, Debug, Serialize)]
pub struct CrashReport {
    pub target: String,
    pub status: CrashStatus,
    pub kind: String,
    /// The minimized script (scenario target) or the panic (script target).
    pub script: String,
    /// The regression it matches, for a known crash.
    pub known_as: Option<String>,
    pub artifacts: Vec<String>,
    /// The artifact whose minimized script is shown.
    pub representative: String,
    pub reproduce: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct CampaignReport {
    pub variant: String,
    pub seconds_per_target: u64,
    pub jobs: usize,
    pub targets: Vec<TargetReport>,
    pub crashes: Vec<CrashReport>,
    pub new_crashes: usize,
    /// Where kept regressions go (`<--corpus>/scripts`).
    pub scripts_dir: String,
}

/// A path as the report shows it: relative to the working directory when
/// it is under it, so a report reads the same on every machine.
fn display(p: &Path) -> String {
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|d| d.canonicalize().ok());
    match cwd.as_deref().and_then(|d| p.strip_prefix(d).ok()) {
        Some(rel) => rel.display().to_string(),
        None => p.display().to_string(),
    }
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .count()
        })
        .unwrap_or(0)
}

fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn abs(p: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    p.canonicalize()
        .with_context(|| format!("resolving {}", p.display()))
}

/// Runs `cargo fuzz` with a progress line fed by libFuzzer's status lines;
/// everything it prints goes to `log`. Returns the last stats and the exit
/// code.
fn cargo_fuzz(
    cfg: &CampaignConfig,
    args: &[String],
    log: &Path,
    label: &str,
) -> anyhow::Result<(FuzzStats, Option<i32>)> {
    let mut logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = Command::new("cargo");
    cmd.arg("fuzz")
        .args(args)
        .current_dir(&cfg.root)
        .env("BGFUZZ_VARIANT", cfg.variant.name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    writeln!(logf, "$ cargo fuzz {}", args.join(" "))?;
    let mut child = cmd
        .spawn()
        .context("running `cargo fuzz` (install it: cargo install cargo-fuzz --locked)")?;
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {prefix:>10} {elapsed:>4} {msg}")
            .expect("static template"),
    );
    pb.set_prefix(label.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    let stdout = child.stdout.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut last = FuzzStats::default();
    let stderr = child.stderr.take().expect("piped");
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let _ = writeln!(logf, "{line}");
        if let Some(s) = FuzzStats::parse_line(&line) {
            pb.set_message(format!(
                "{} execs, cov {}, ft {}, crashes {}",
                s.executions, s.coverage, s.features, s.crashes
            ));
            last = s;
        }
    }
    for line in out_thread.join().unwrap_or_default() {
        let _ = writeln!(logf, "{line}");
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    pb.finish_and_clear();
    Ok((last, status.code()))
}

/// One artifact, replayed and minimized.
struct Triaged {
    status: CrashStatus,
    kind: String,
    /// Where it failed: the abort's call trace, if any. Artifacts with the
    /// same kind and signature are one crash, as a crash's stack is in
    /// ClusterFuzz.
    signature: String,
    script: String,
    /// (faults, step lines): the best representative of a crash is one
    /// that needs no injected fault, then the shortest.
    rank: (usize, usize),
    reproduce: String,
}

/// Turns a target's artifacts into crash reports: one per kind and
/// signature, shown by its best minimized script, known if any of its
/// minimized scripts is a regression in `corpus/scripts/`.
fn triage(
    cfg: &CampaignConfig,
    target: &str,
    artifacts: &[PathBuf],
    known: &[(String, String)],
) -> Vec<CrashReport> {
    let mut groups: BTreeMap<(String, String), (Triaged, CrashReport)> = BTreeMap::new();
    for a in artifacts {
        let Ok(bytes) = std::fs::read(a) else {
            continue;
        };
        let shown = display(a);
        let t = match target {
            "scenario" => triage_scenario(&bytes, cfg.variant, &shown),
            _ => triage_script(&bytes, target, &shown),
        };
        let known_as = known
            .iter()
            .find(|(k, _)| *k == crash_key(&t.kind, &t.script))
            .map(|(_, name)| name.clone());
        let key = (t.kind.clone(), t.signature.clone());
        match groups.get_mut(&key) {
            None => {
                let report = CrashReport {
                    target: target.to_string(),
                    status: t.status,
                    kind: t.kind.clone(),
                    script: t.script.clone(),
                    known_as: None,
                    artifacts: Vec::new(),
                    representative: shown.clone(),
                    reproduce: t.reproduce.clone(),
                };
                groups.insert(key.clone(), (t, report));
            }
            Some((best, report)) => {
                if (t.rank, &t.script) < (best.rank, &best.script) {
                    report.script = t.script.clone();
                    report.reproduce = t.reproduce.clone();
                    report.representative = shown.clone();
                    *best = t;
                }
            }
        }
        let (_, report) = groups.get_mut(&key).expect("inserted above");
        report.artifacts.push(shown);
        if report.known_as.is_none() {
            report.known_as = known_as;
        }
    }
    groups
        .into_values()
        .map(|(_, mut r)| {
            if r.known_as.is_some() {
                r.status = CrashStatus::Known;
            }
            r
        })
        .collect()
}

/// The identity of a minimized crash: its kind and its steps and headers,
/// without `expect` lines.
fn crash_key(kind: &str, script: &str) -> String {
    let body: Vec<&str> = script
        .lines()
        .filter(|l| !l.starts_with("expect "))
        .collect();
    format!("{kind}\n{}", body.join("\n"))
}

fn triage_scenario(bytes: &[u8], variant: Variant, shown: &str) -> Triaged {
    let reproduce = format!("bgfuzz repro --artifact {shown} --variant {variant}");
    let unreproduced = |script: String| Triaged {
        status: CrashStatus::Unreproduced,
        kind: "unreproduced".into(),
        signature: String::new(),
        script,
        rank: (0, 0),
        reproduce: reproduce.clone(),
    };
    let scn = decode(bytes);
    let Ok(r) = run(&scn, variant, Mode::Loose) else {
        return unreproduced(String::new());
    };
    if r.violation.is_none() {
        return unreproduced(r.scenario.print());
    }
    match minimize(&r.scenario, variant) {
        Some(m) => {
            let signature = m
                .run
                .violation
                .as_ref()
                .and_then(|v| v.finding.abort.as_ref())
                .map(|a| a.stack.join(" > "))
                .unwrap_or_default();
            Triaged {
                status: CrashStatus::New,
                kind: m.kind.name().to_string(),
                signature,
                rank: (m.scenario.fails.len(), m.scenario.steps.len()),
                script: m.scenario.print(),
                reproduce,
            }
        }
        None => unreproduced(r.scenario.print()),
    }
}

fn triage_script(bytes: &[u8], target: &str, shown: &str) -> Triaged {
    let reproduce = format!("cargo fuzz run -s none {target} {shown}");
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let res = std::panic::catch_unwind(|| crate::targets::script(bytes));
    std::panic::set_hook(hook);
    let (status, kind, script) = match res {
        Ok(()) => (
            CrashStatus::Unreproduced,
            "unreproduced".to_string(),
            String::new(),
        ),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            let first = msg.lines().next().unwrap_or("panic").to_string();
            (CrashStatus::New, "script-target-panic".to_string(), first)
        }
    };
    Triaged {
        status,
        signature: script.clone(),
        kind,
        script,
        rank: (0, 0),
        reproduce,
    }
}

/// The regressions in `corpus/scripts/` with a violation under the
/// variant, keyed as [`crash_key`] keys a minimized crash.
fn known_crashes(cfg: &CampaignConfig) -> Vec<(String, String)> {
    let dir = cfg.corpus.join("scripts");
    let Ok(paths) = crate::check::collect_scripts(&[dir]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in paths {
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        let Ok(s) = Scenario::parse(&bytes) else {
            continue;
        };
        let Ok(r) = run(&s, cfg.variant, Mode::Strict) else {
            continue;
        };
        if let Some(v) = r.violation {
            let mut norm = r.scenario.clone();
            norm.expects.clear();
            out.push((crash_key(v.finding.kind.name(), &norm.print()), display(&p)));
        }
    }
    out
}

/// One target: fuzz, merge, optionally coverage. Artifacts are triaged by
/// the caller once every target has run.
fn run_target(cfg: &CampaignConfig, target: &str) -> anyhow::Result<TargetReport> {
    let work = abs(&cfg.out.join(target))?;
    let new = abs(&work.join("new"))?;
    let artifacts = abs(&work.join("artifacts"))?;
    let corpus = abs(&cfg.corpus.join(target))?;
    let log = work.join("fuzz.log");
    let corpus_before = count_files(&corpus);
    let started = Instant::now();
    let secs = cfg.time.as_secs().max(1);
    let fuzz_args: Vec<String> = vec![
        "run".into(),
        "-s".into(),
        "none".into(),
        target.into(),
        new.display().to_string(),
        corpus.display().to_string(),
        "--".into(),
        format!("-fork={}", cfg.jobs.max(1)),
        "-ignore_crashes=1".into(),
        "-ignore_timeouts=1".into(),
        "-ignore_ooms=1".into(),
        format!("-max_total_time={secs}"),
        "-timeout=10".into(),
        "-rss_limit_mb=2048".into(),
        format!("-artifact_prefix={}/", artifacts.display()),
        "-print_final_stats=1".into(),
    ];
    let (stats, code) = cargo_fuzz(cfg, &fuzz_args, &log, target)?;
    let seconds = started.elapsed().as_secs_f64();
    if stats.executions == 0 {
        let code = code.map_or("a signal".to_string(), |c| format!("status {c}"));
        bail!(
            "cargo fuzz ran no input for {target} (it exited with {code}); see {}. Run `bgfuzz campaign` from the repository root, with cargo-fuzz installed",
            log.display()
        );
    }
    // Add-only merge of what adds coverage; the control file lets a merge
    // killed half-way resume.
    let merge_args: Vec<String> = vec![
        "run".into(),
        "-s".into(),
        "none".into(),
        target.into(),
        corpus.display().to_string(),
        new.display().to_string(),
        "--".into(),
        "-merge=1".into(),
        format!("-merge_control_file={}", work.join("merge.ctl").display()),
        "-timeout=10".into(),
        "-rss_limit_mb=2048".into(),
        format!("-artifact_prefix={}/", artifacts.display()),
    ];
    cargo_fuzz(
        cfg,
        &merge_args,
        &work.join("merge.log"),
        &format!("{target} merge"),
    )?;
    let coverage_report = if cfg.coverage {
        Some(coverage(cfg, target, &corpus, &work)?)
    } else {
        None
    };
    Ok(TargetReport {
        target: target.to_string(),
        seconds,
        executions: stats.executions,
        exec_per_sec: (stats.executions as f64 / seconds.max(1e-3)) as u64,
        coverage: stats.coverage,
        features: stats.features,
        corpus_before,
        corpus_after: count_files(&corpus),
        artifacts: count_files(&artifacts),
        fuzz_exit: code,
        log: display(&log),
        coverage_report: coverage_report.map(|p| display(&p)),
    })
}

/// `cargo fuzz coverage` over the merged corpus, then llvm-cov: an HTML
/// report, and a table of the engine's steps and the oracles' checks with
/// how often the corpus reaches them.
fn coverage(
    cfg: &CampaignConfig,
    target: &str,
    corpus: &Path,
    work: &Path,
) -> anyhow::Result<PathBuf> {
    let args: Vec<String> = vec![
        "coverage".into(),
        "-s".into(),
        "none".into(),
        target.into(),
        corpus.display().to_string(),
    ];
    let (_, code) = cargo_fuzz(
        cfg,
        &args,
        &work.join("coverage.log"),
        &format!("{target} cov"),
    )?;
    if code != Some(0) {
        bail!(
            "cargo fuzz coverage failed; see {}",
            work.join("coverage.log").display()
        );
    }
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let host = crate::coverage::host_triple()?;
    let llvm_cov = Path::new(&sysroot).join(format!("lib/rustlib/{host}/bin/llvm-cov"));
    if !llvm_cov.exists() {
        bail!(
            "llvm-cov not found at {}: rustup component add llvm-tools-preview",
            llvm_cov.display()
        );
    }
    let bin = cfg
        .root
        .join(format!("target/{host}/coverage/{host}/release/{target}"));
    let profdata = cfg
        .root
        .join(format!("fuzz/coverage/{target}/coverage.profdata"));
    let html = work.join("coverage");
    let ignore = "--ignore-filename-regex=(\\.cargo/registry|/rustc/)";
    let status = Command::new(&llvm_cov)
        .arg("show")
        .arg(&bin)
        .arg(format!("-instr-profile={}", profdata.display()))
        .args(["-format=html", ignore])
        .arg(format!("-output-dir={}", html.display()))
        .status()?;
    if !status.success() {
        bail!("llvm-cov show failed");
    }
    let export = Command::new(&llvm_cov)
        .arg("export")
        .arg(&bin)
        .arg(format!("-instr-profile={}", profdata.display()))
        .args(["-format=text", "-skip-expansions", ignore])
        .output()?;
    if !export.status.success() {
        bail!("llvm-cov export failed");
    }
    let table = crate::coverage::summarize(&export.stdout)?;
    std::fs::write(html.join("reached.md"), &table)?;
    Ok(html)
}

/// Runs the whole campaign. `Ok(report)`; the caller exits non-zero when
/// `report.new_crashes > 0`.
pub fn campaign(cfg: &CampaignConfig) -> anyhow::Result<CampaignReport> {
    for t in &cfg.targets {
        if !TARGETS.contains(&t.as_str()) {
            bail!("unknown target `{t}` (known: {})", TARGETS.join(", "));
        }
    }
    let out = abs(&cfg.out)?;
    let cfg = CampaignConfig {
        out,
        corpus: abs(&cfg.corpus)?,
        ..cfg.clone()
    };
    let mut targets = Vec::new();
    for t in &cfg.targets {
        targets.push(run_target(&cfg, t)?);
    }
    let known = known_crashes(&cfg);
    let mut crashes = Vec::new();
    for t in &cfg.targets {
        let arts: Vec<PathBuf> = sorted_files(&cfg.out.join(t).join("artifacts"))
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
            })
            .collect();
        crashes.extend(triage(&cfg, t, &arts, &known));
    }
    crashes.sort_by(|a, b| (a.status, &a.target, &a.kind).cmp(&(b.status, &b.target, &b.kind)));
    let new_crashes = crashes
        .iter()
        .filter(|c| c.status == CrashStatus::New)
        .count();
    let report = CampaignReport {
        variant: cfg.variant.name().to_string(),
        seconds_per_target: cfg.time.as_secs(),
        jobs: cfg.jobs,
        targets,
        crashes,
        new_crashes,
        scripts_dir: display(&cfg.corpus.join("scripts")),
    };
    crate::write_atomic(
        &cfg.out.join("report.json"),
        &serde_json::to_string_pretty(&report)?,
    )?;
    crate::write_atomic(&cfg.out.join("report.md"), &markdown(&report))?;
    crate::html::write_index(&cfg.out, &report)?;
    Ok(report)
}

/// The report a CI maintainer reads.
pub fn markdown(r: &CampaignReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# bgfuzz campaign: {}\n",
        if r.new_crashes > 0 {
            "NEW CRASHES"
        } else {
            "no new crash"
        }
    );
    let _ = writeln!(
        s,
        "Variant `{}`, {} s per target, {} job(s). New crashes: **{}**; known: {}; unreproduced: {}.\n",
        r.variant,
        r.seconds_per_target,
        r.jobs,
        r.new_crashes,
        r.crashes.iter().filter(|c| c.status == CrashStatus::Known).count(),
        r.crashes.iter().filter(|c| c.status == CrashStatus::Unreproduced).count()
    );
    let _ = writeln!(s, "| target | executions | exec/s | coverage | features | corpus before | corpus after | artifacts |");
    let _ = writeln!(
        s,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for t in &r.targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            t.target,
            t.executions,
            t.exec_per_sec,
            t.coverage,
            t.features,
            t.corpus_before,
            t.corpus_after,
            t.artifacts
        );
    }
    for c in &r.crashes {
        let _ = writeln!(
            s,
            "\n## {} crash in `{}`: {}\n",
            match c.status {
                CrashStatus::New => "New",
                CrashStatus::Known => "Known",
                CrashStatus::Unreproduced => "Unreproduced",
            },
            c.target,
            c.kind
        );
        if let Some(k) = &c.known_as {
            let _ = writeln!(s, "Matches the regression `{k}`.\n");
        }
        let _ = writeln!(
            s,
            "{} artifact(s); the script below is `{}`'s, minimized.\n",
            c.artifacts.len(),
            c.representative
        );
        if !c.script.is_empty() {
            let _ = writeln!(
                s,
                "```\n{}```\n",
                if c.script.ends_with('\n') {
                    c.script.clone()
                } else {
                    format!("{}\n", c.script)
                }
            );
        }
        let _ = writeln!(s, "Reproduce: `{}`", c.reproduce);
        if c.status == CrashStatus::New && c.target == "scenario" {
            let _ = writeln!(
                s,
                "\nKeep it as a regression: `bgfuzz minimize --artifact {} --variant {} -o {}/<name>.scn`",
                c.representative, r.variant, r.scripts_dir
            );
        }
    }
    for t in &r.targets {
        if let Some(c) = &t.coverage_report {
            let _ = writeln!(s, "\nCoverage of `{}`: `{c}/index.html`; engine steps and oracle checks reached: `{c}/reached.md`.", t.target);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libfuzzer_status_lines() {
        let fork = "#27634: cov: 1386 ft: 5708 corp: 582 exec/s: 0 oom/timeout/crash: 0/0/84 time: 8s job: 85 dft_time: 0";
        assert_eq!(
            FuzzStats::parse_line(fork),
            Some(FuzzStats {
                executions: 27634,
                coverage: 1386,
                features: 5708,
                crashes: 84
            })
        );
        let plain =
            "#198102\tDONE   cov: 1478 ft: 6496 corp: 871/157Kb lim: 403 exec/s: 18009 rss: 48Mb";
        let s = FuzzStats::parse_line(plain).unwrap();
        assert_eq!((s.executions, s.coverage, s.features), (198102, 1478, 6496));
        assert_eq!(FuzzStats::parse_line("INFO: Seed: 1"), None);
    }

    fn cfg(dir: &Path, variant: Variant) -> CampaignConfig {
        CampaignConfig {
            targets: vec!["scenario".into()],
            time: Duration::from_secs(1),
            jobs: 1,
            variant,
            out: dir.join("out"),
            corpus: dir.join("corpus"),
            root: PathBuf::from("."),
            coverage: false,
        }
    }

    /// Violating inputs of the bug variant, as libFuzzer would save them.
    fn artifacts(dir: &Path, n: usize) -> Vec<PathBuf> {
        let (_, found) =
            crate::search::search_hits(3, Variant::BUG_FF1F8250, n, |t| t.cases < 100_000);
        let mut buf = Vec::new();
        found
            .iter()
            .map(|f| {
                crate::search::case_bytes(3, f.case, &mut buf);
                let p = dir.join(format!("crash-{:04}", f.case));
                std::fs::write(&p, &buf).unwrap();
                p
            })
            .collect()
    }

    #[test]
    fn triage_makes_one_crash_of_many_witnesses_and_knows_a_kept_one() {
        let dir = tempfile::tempdir().unwrap();
        let arts = artifacts(dir.path(), 6);
        assert_eq!(arts.len(), 6);
        let c = cfg(dir.path(), Variant::BUG_FF1F8250);
        let crashes = triage(&c, "scenario", &arts, &[]);
        assert_eq!(crashes.len(), 1, "{crashes:#?}");
        let crash = &crashes[0];
        assert_eq!(crash.status, CrashStatus::New);
        assert_eq!(crash.kind, "abort-enoent-outside-critical");
        assert_eq!(crash.artifacts.len(), 6);
        // Kept as a regression, the same crash is known.
        let scripts = dir.path().join("corpus/scripts");
        std::fs::create_dir_all(&scripts).unwrap();
        std::fs::write(scripts.join("kept.scn"), &crash.script).unwrap();
        let known = known_crashes(&c);
        assert_eq!(known.len(), 1);
        let again = triage(&c, "scenario", &arts, &known);
        assert_eq!(again[0].status, CrashStatus::Known);
        assert!(again[0].known_as.as_deref().unwrap().ends_with("kept.scn"));
        // Under the fixed engine the same inputs reproduce nothing.
        let fixed = triage(&cfg(dir.path(), Variant::FIXED), "scenario", &arts, &[]);
        assert!(fixed.iter().all(|c| c.status == CrashStatus::Unreproduced));
    }

    #[test]
    fn the_report_names_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let arts = artifacts(dir.path(), 2);
        let c = cfg(dir.path(), Variant::BUG_FF1F8250);
        let report = CampaignReport {
            variant: "bug-ff1f8250".into(),
            seconds_per_target: 60,
            jobs: 1,
            targets: vec![],
            crashes: triage(&c, "scenario", &arts, &[]),
            new_crashes: 1,
            scripts_dir: "corpus/scripts".into(),
        };
        let md = markdown(&report);
        assert!(md.starts_with("# bgfuzz campaign: NEW CRASHES"));
        assert!(md.contains("## New crash in `scenario`: abort-enoent-outside-critical"));
        assert!(md.contains("Reproduce: `bgfuzz repro --artifact "));
        assert!(md.contains("bgfuzz minimize --artifact"));
    }
}
