//! The `bgfuzz` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bgfuzz::check::{check_paths, outcome_name};
use bgfuzz::generate::decode;
use bgfuzz::minimize::{minimize, Minimized};
use bgfuzz::variant::Variant;

use bgfuzz::report;
use bgfuzz::run::{run, Mode};
use bgfuzz::scenario::Scenario;
use bgfuzz::search::{shortest, witnesses, Tally};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

#[derive(Parser)]
#[command(
    name = "bgfuzz",
    version,
    about = "Fuzz the btrfs v4.1 transaction/block-group model for the ff1f8250 race and its kin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a script; print it annotated, a timeline, and any violation.
    /// Exit 0: no violation, 1: a violation, 2: invalid input.
    Repro {
        file: PathBuf,
        #[arg(long, value_parser = parse_variant,
              help = variant_help("Overrides the script's `variant` line."))]
        variant: Option<Variant>,
        /// Print {"variant","steps","violation"} instead.
        #[arg(long)]
        json: bool,
        /// Print only the normalized script (every step spelled out, the
        /// drain included), to keep as a regression.
        #[arg(long, conflicts_with = "json")]
        print_script: bool,
        /// Read the script as a fuzzer's loose input: a step that cannot run
        /// as written is mapped onto one that can, or dropped, instead of
        /// being an error. With --print-script this turns a sketch into a
        /// strict script.
        #[arg(long)]
        loose: bool,
        /// Also draw the run as one self-contained HTML page in FILE: a lane
        /// per task, per block group and per transaction, a row per step;
        /// hovering a step shows the engine's state after it.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// With --json: add "events", an array with the engine's state
        /// after each step (one object per step).
        #[arg(long, requires = "json")]
        events: bool,
        #[command(flatten)]
        input: InputKind,
        /// Also run the script on this machine's kernel (`bgfuzz kernel`,
        /// as root) and print the model under every variant and the
        /// kernel side by side. Exit 1 when the kernel run has a finding.
        #[arg(long, conflicts_with_all = ["print_script", "loose", "html", "events"])]
        kernel: bool,
        /// With --kernel: how long the kernel runs the script.
        #[arg(long, value_parser = parse_duration, default_value = "10s", requires = "kernel")]
        kernel_time: Duration,
    },
    /// Shrink a failing script or libFuzzer artifact: fewer tasks, steps and
    /// faults, smaller sizes, the same violation kind.
    Minimize {
        file: PathBuf,
        /// Write the minimized script here (it carries `expect` lines for
        /// every variant, ready for corpus/scripts/).
        #[arg(short, long)]
        out: Option<PathBuf>,
        #[arg(long, value_parser = parse_variant,
              help = variant_help("Overrides the script's `variant` line."))]
        variant: Option<Variant>,
        #[command(flatten)]
        input: InputKind,
    },
    /// In-process search with the fuzz targets' generator. With no
    /// arguments: the fixed engine for a short budget, then each bug variant
    /// until it is found, and a table.
    Run {
        #[arg(long, value_parser = parse_variant,
              help = variant_help("Search this variant only (default: fixed, then each bug variant)."))]
        variant: Option<Variant>,
        /// Wall-clock budget per variant, e.g. 30s, 5m (outside the runs:
        /// each case stays reproducible from its seed and index).
        #[arg(long, value_parser = parse_duration, conflicts_with = "cases")]
        time: Option<Duration>,
        /// Case budget per variant.
        #[arg(long)]
        cases: Option<u64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where minimized scripts of what is found go.
        #[arg(long, default_value = "bgfuzz-out")]
        out: PathBuf,
    },
    /// The performance table: search throughput, time to detect each bug
    /// variant over 20 seeds, minimized size, engine replay speed.
    Bench {
        #[arg(long)]
        json: bool,
        /// Rounds for the throughput medians.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 20)]
        seeds: usize,
    },
    /// A nightly campaign: `cargo fuzz` over the targets, corpus merged
    /// (add-only), crashes minimized, deduplicated and matched against
    /// corpus/scripts, a report in OUT/report.md and OUT/report.json.
    /// Exit 1 on a new crash. Safe to kill; the next run resumes.
    Campaign {
        /// Comma-separated: scenario, script.
        #[arg(long, value_delimiter = ',', default_value = "scenario,script")]
        targets: Vec<String>,
        /// Fuzzing time per target, e.g. 60s, 30m.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        time: Duration,
        /// Parallel fuzzing processes per target (libFuzzer -fork).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        #[arg(long, value_parser = parse_variant,
              help = variant_help("The engine the `scenario` target judges; default BGFUZZ_VARIANT, else fixed."))]
        variant: Option<Variant>,
        #[arg(long, default_value = "campaign-out")]
        out: PathBuf,
        /// Seed corpora (<target>/) and regressions (scripts/).
        #[arg(long, default_value = "corpus")]
        corpus: PathBuf,
        /// Also run `cargo fuzz coverage` and write an llvm-cov HTML report.
        #[arg(long)]
        coverage: bool,
        /// Then run each crash's minimized script on this machine's kernel
        /// for this long (as root; as `repro --kernel`), side by side with
        /// the model, into OUT/kernel.md and OUT/kernel.json.
        #[arg(long, value_parser = parse_duration)]
        kernel: Option<Duration>,
    },
    /// Drive this machine's btrfs (a loop-mounted sparse image, as root)
    /// through a script's operations, or a built-in mix, with the kernel
    /// log, tracepoints and `btrfs check` as oracles. Exit 0: nothing
    /// found, 1: a finding, 2: cannot run here or invalid input. See
    /// docs/kernel.md.
    Kernel {
        script: Option<PathBuf>,
        #[command(flatten)]
        args: KernelArgs,
    },
    /// Replay scripts (files or directories of .scn) against their
    /// `expect` lines.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List the variants: each one's patches (upstream commit, title,
    /// kernel version, fix or feature) and, for a bug variant, the oracle
    /// expected to catch it.
    Variants {
        #[arg(long)]
        json: bool,
    },
}

/// Whether FILE is a script or a libFuzzer input. By default a `.scn`
/// file is a script and anything else (crash-*, corpus files) an input.
#[derive(clap::Args, Clone, Copy)]
struct InputKind {
    /// Read FILE as a libFuzzer input, decoded as the `scenario` target does.
    #[arg(long, conflicts_with = "script")]
    artifact: bool,
    /// Read FILE as a script whatever its name.
    #[arg(long)]
    script: bool,
}

impl InputKind {
    fn is_artifact(self, file: &Path) -> bool {
        self.artifact || (!self.script && file.extension().is_none_or(|x| x != "scn"))
    }
}

/// Reads a script or decodes an artifact; the bool says it was an artifact.
fn load(file: &Path, kind: InputKind) -> anyhow::Result<(Scenario, bool)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if kind.is_artifact(file) {
        return Ok((decode(&bytes), true));
    }
    let scn = Scenario::parse(&bytes).map_err(|e| Invalid(format!("{}:{e}", file.display())))?;
    Ok((scn, false))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration `{s}`: e.g. 500ms, 30s, 5m, 1h"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("bad duration unit in `{s}`: ms, s, m or h")),
    })
}

/// A `--variant` help text: `what`, then the known names.
fn variant_help(what: &str) -> String {
    format!(
        "{what} One of: {} (see `bgfuzz variants`)",
        Variant::known_names()
    )
}

fn parse_variant(s: &str) -> Result<Variant, String> {
    Variant::parse(s)
        .ok_or_else(|| format!("unknown variant `{s}` (known: {})", Variant::known_names()))
}

/// Invalid input: the message names the file and line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Invalid(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Repro {
            file,
            variant,
            json,
            print_script,
            loose,
            html,
            events,
            input,
            kernel,
            kernel_time,
        } => {
            if kernel {
                repro_kernel(&file, kernel_time, json)
            } else {
                repro(
                    &file,
                    variant,
                    json,
                    print_script,
                    loose,
                    input,
                    Picture { html, events },
                )
            }
        }
        Command::Check { paths } => check(&paths),
        Command::Variants { json } => variants_cmd(json),
        Command::Kernel { script, args } => kernel_cmd(script, &args),
        Command::Minimize {
            file,
            out,
            variant,
            input,
        } => minimize_cmd(&file, out.as_deref(), variant, input),
        Command::Run {
            variant,
            time,
            cases,
            seed,
            out,
        } => run_cmd(variant, time, cases, seed, &out),
        Command::Bench {
            json,
            rounds,
            seeds,
        } => bench_cmd(json, rounds, seeds),
        Command::Campaign {
            targets,
            time,
            jobs,
            variant,
            out,
            corpus,
            coverage,
            kernel,
        } => campaign_cmd(
            kernel,
            bgfuzz::campaign::CampaignConfig {
                targets,
                time,
                jobs,
                variant: match variant {
                    Some(v) => v,
                    None => match env_variant() {
                        Ok(v) => v.unwrap_or(Variant::FIXED),
                        Err(e) => {
                            eprintln!("bgfuzz: {e}");
                            return ExitCode::from(2);
                        }
                    },
                },
                out,
                corpus,
                root: PathBuf::from("."),
                coverage,
            },
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<Invalid>() {
                Some(Invalid(m)) => eprintln!("bgfuzz: {m}"),
                None => eprintln!("bgfuzz: {e:#}"),
            }
            ExitCode::from(2)
        }
    }
}

fn repro(
    file: &Path,
    variant: Option<Variant>,
    json: bool,
    print_script: bool,
    loose: bool,
    input: InputKind,
    picture: Picture,
) -> anyhow::Result<ExitCode> {
    let (scn, artifact) = load(file, input)?;
    let variant = input_variant(&scn, variant, artifact)?;
    if artifact && !print_script && !json {
        println!(
            "# {}: a libFuzzer input, decoded as the `scenario` target decodes it",
            file.display()
        );
    }
    // An artifact is a loose input by construction.
    let mode = if loose || artifact {
        Mode::Loose
    } else {
        Mode::Strict
    };
    let (r, snaps) = if picture.events {
        bgfuzz::snapshot::capture(&scn, variant, mode)
    } else if picture.html.is_some() {
        bgfuzz::snapshot::capture_last(&scn, variant, mode, bgfuzz::html::MAX_ROWS)
    } else {
        run(&scn, variant, mode).map(|r| (r, Vec::new()))
    }
    .map_err(|e| Invalid(format!("{}:{e}", file.display())))?;
    if let Some(out) = &picture.html {
        let page = bgfuzz::html::page(&file.display().to_string(), &r, &snaps);
        bgfuzz::write_atomic(out, &page)?;
        eprintln!("wrote {}", out.display());
    }
    if print_script {
        print!("{}", r.scenario.print());
    } else if json && picture.events {
        let j = bgfuzz::snapshot::with_events(report::json(&r), &snaps);
        println!("{}", serde_json::to_string(&j)?);
    } else if json {
        println!("{}", serde_json::to_string(&report::json(&r))?);
    } else {
        print!("{}", report::full(&r));
    }
    Ok(if r.violation.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `repro --html FILE` and `--events`: what to draw besides the report.
struct Picture {
    html: Option<PathBuf>,
    events: bool,
}

fn check(paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let rep = check_paths(paths).context("reading scripts")?;
    for l in &rep.lines {
        println!(
            "{:<4} {:<48} {:<14} expected {:<32} got {}",
            if l.ok() { "ok" } else { "FAIL" },
            l.path.display(),
            l.variant.name(),
            outcome_name(l.expected),
            outcome_name(l.got)
        );
    }
    for e in &rep.errors {
        println!("ERR  {}", e.message);
    }
    let failed = rep.lines.iter().filter(|l| !l.ok()).count();
    println!(
        "{} checked, {} passed, {} failed, {} invalid",
        rep.lines.len(),
        rep.lines.len() - failed,
        failed,
        rep.errors.len()
    );
    // 2 if a script is invalid (as for `repro`), 1 if one is unmet.
    Ok(if !rep.errors.is_empty() {
        ExitCode::from(2)
    } else if rep.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `BGFUZZ_VARIANT`, as the fuzz target reads it. An unknown name is an
/// error, not a silent `fixed`: a typo in a nightly job must not fuzz the
/// wrong engine and stay green.
fn env_variant() -> anyhow::Result<Option<Variant>> {
    match std::env::var("BGFUZZ_VARIANT") {
        Err(_) => Ok(None),
        Ok(v) => parse_variant(&v)
            .map(Some)
            .map_err(|e| Invalid(format!("BGFUZZ_VARIANT: {e}")).into()),
    }
}

/// The variant for an input: `--variant`, else (for a libFuzzer input, as
/// the target decodes it) `BGFUZZ_VARIANT`, else the script's header, else
/// `fixed`.
fn input_variant(scn: &Scenario, flag: Option<Variant>, artifact: bool) -> anyhow::Result<Variant> {
    let env = if artifact { env_variant()? } else { None };
    Ok(scn.variant_or(flag.or(env)))
}

fn minimize_cmd(
    file: &Path,
    out: Option<&Path>,
    variant: Option<Variant>,
    input: InputKind,
) -> anyhow::Result<ExitCode> {
    let (scn, artifact) = load(file, input)?;
    let variant = input_variant(&scn, variant, artifact)?;
    let before =
        run(&scn, variant, Mode::Loose).map_err(|e| Invalid(format!("{}:{e}", file.display())))?;
    let Some(m) = minimize(&before.scenario, variant) else {
        eprintln!(
            "bgfuzz: {}: no violation under {variant}: nothing to minimize",
            file.display()
        );
        return Ok(ExitCode::from(1));
    };
    let text = m.scenario.print();
    print!("{text}");
    eprintln!(
        "minimized {} under {variant}: {} -> {} step lines ({} candidates tried), kind {}",
        file.display(),
        m.before_steps,
        m.scenario.steps.len(),
        m.tries,
        m.kind
    );
    if let Some(out) = out {
        bgfuzz::write_atomic(out, &text)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The name a found script is kept under: its kind and a hash of the text.
fn script_name(m: &Minimized) -> String {
    let digest = Sha256::digest(m.scenario.print().as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}.scn", m.kind)
}

fn progress(label: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {prefix} {msg}").expect("static template"),
    );
    pb.set_prefix(label);
    pb
}

fn tally_msg(t: &Tally, started: Instant) -> String {
    let rate = t.cases as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let kinds: Vec<String> = t.by_kind.iter().map(|(k, n)| format!("{k}={n}")).collect();
    format!(
        "{} cases, {rate:.0} cases/s, violations: {}",
        t.cases,
        if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join(" ")
        }
    )
}

struct Outcome {
    variant: Variant,
    /// Cases and time to the first violation, or of the whole search.
    cases: u64,
    elapsed: Duration,
    witnesses: usize,
    found: Option<(Minimized, PathBuf)>,
}

/// Searches one variant within a budget; on a violation, minimizes it and
/// keeps the script.
fn search_variant(
    variant: Variant,
    time: Option<Duration>,
    cases: Option<u64>,
    seed: u64,
    out: &Path,
) -> anyhow::Result<Outcome> {
    let pb = progress(format!("{variant} seed {seed}"));
    let started = Instant::now();
    // (cases, time) at the first violation: the time to detect.
    let mut first: Option<(u64, Duration)> = None;
    let (tally, hits) = witnesses(seed, variant, |t| {
        if t.cases % 512 == 0 {
            pb.set_message(tally_msg(t, started));
            pb.tick();
        }
        if first.is_none() && !t.by_kind.is_empty() {
            first = Some((t.cases, started.elapsed()));
        }
        match (time, cases) {
            (Some(d), _) => started.elapsed() < d,
            (None, Some(n)) => t.cases < n,
            (None, None) => unreachable!("a budget is always set"),
        }
    });
    pb.finish_with_message(tally_msg(&tally, started));
    let found = match shortest(&hits, variant) {
        None if hits.is_empty() => None,
        None => anyhow::bail!(
            "case {} of seed {seed} violates under {variant} but did not replay while minimizing: a determinism bug, please report it",
            hits[0].case
        ),
        Some((_, m)) => {
            let path = out.join(script_name(&m));
            bgfuzz::write_atomic(&path, &m.scenario.print())?;
            Some((m, path))
        }
    };
    let (cases, elapsed) = first.unwrap_or((tally.cases, started.elapsed()));
    Ok(Outcome {
        variant,
        cases,
        elapsed,
        witnesses: hits.len(),
        found,
    })
}

fn print_found(o: &Outcome, seed: u64) {
    let Some((m, path)) = &o.found else { return };
    println!(
        "\n{} under {} after {} cases, {:.3}s (seed {seed}); the best of {} witnesses, minimized from {} to {} step lines:\n",
        m.kind,
        o.variant,
        o.cases,
        o.elapsed.as_secs_f64(),
        o.witnesses,
        m.before_steps,
        m.scenario.steps.len()
    );
    print!("{}", m.scenario.print());
    if let Some(v) = &m.run.violation {
        println!("\n{}", v.finding.message);
    }
    println!("\nreproduce: bgfuzz repro {}", path.display());
}

fn run_cmd(
    variant: Option<Variant>,
    time: Option<Duration>,
    cases: Option<u64>,
    seed: u64,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    if let Some(v) = variant {
        let budget = if time.is_none() && cases.is_none() {
            Some(DEFAULT_CASES)
        } else {
            cases
        };
        let o = search_variant(v, time, budget, seed, out)?;
        print_found(&o, seed);
        if o.found.is_none() {
            println!(
                "{v}: no violation in {} cases ({:.2}s, seed {seed})",
                o.cases,
                o.elapsed.as_secs_f64()
            );
        }
        return Ok(if o.found.is_some() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    // The main job: the fixed engine for a budget, each bug until found.
    let mut rows = vec![search_variant(
        Variant::FIXED,
        time,
        cases.or(Some(DEFAULT_CASES)),
        seed,
        out,
    )?];
    for v in Variant::BUGS {
        rows.push(search_variant(v, None, Some(BUG_CAP_CASES), seed, out)?);
    }
    for o in &rows {
        print_found(o, seed);
    }
    println!(
        "\n{:<14} {:>9} {:>10} {:<32} {:>9}",
        "variant", "cases", "time", "violation", "minimized"
    );
    let mut ok = true;
    for o in &rows {
        let (kind, steps) = match &o.found {
            Some((m, _)) => (
                m.kind.name().to_string(),
                m.scenario.steps.len().to_string(),
            ),
            None => ("none".to_string(), "-".to_string()),
        };
        ok &= kind == o.variant.expected_violation().unwrap_or("none");
        println!(
            "{:<14} {:>9} {:>9.3}s {:<32} {:>9}",
            o.variant.name(),
            o.cases,
            o.elapsed.as_secs_f64(),
            kind,
            steps
        );
    }
    println!("(cases and time: the whole search for a clean variant, to the first violation for the others)");
    println!(
        "\n{}",
        if ok {
            "as expected: fixed is clean, every bug variant caught"
        } else {
            "UNEXPECTED: see the rows above"
        }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The fixed engine's default budget in `bgfuzz run`.
const DEFAULT_CASES: u64 = 200_000;
/// A bug variant not found within this many cases is reported as missed.
const BUG_CAP_CASES: u64 = 1_000_000;

fn bench_cmd(json: bool, rounds: usize, seeds: usize) -> anyhow::Result<ExitCode> {
    let replay = std::fs::read("corpus/scripts/btrfs-078-like.scn")
        .ok()
        .and_then(|b| Scenario::parse(&b).ok())
        .map(|s| ("corpus/scripts/btrfs-078-like.scn".to_string(), s));
    let b = bgfuzz::bench::bench(&bgfuzz::bench::BenchConfig {
        rounds,
        cases_per_round: 5_000,
        seeds,
        cap_cases: BUG_CAP_CASES,
        replay_script: replay,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        print!("{}", bgfuzz::bench::table(&b));
    }
    Ok(ExitCode::SUCCESS)
}

/// `bgfuzz variants`: the variant table and the patch table it is built on.
fn variants_cmd(json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let rows: Vec<serde_json::Value> = Variant::ALL
            .iter()
            .map(|v| {
                let patches: Vec<serde_json::Value> = v
                    .patches()
                    .iter()
                    .map(|p| {
                        let p = p.patch();
                        serde_json::json!({
                            "id": p.id,
                            "title": p.title,
                            "kernel": p.kernel,
                            "kind": p.kind.name(),
                            "file": p.file,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "name": v.name(),
                    "description": v.description(),
                    "patches": patches,
                    "missing_fix": v.bug_patch().map(|p| p.patch().id),
                    "expected_violation": v.expected_violation(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    for v in Variant::ALL {
        println!("{}: {}", v.name(), v.description());
        if v.patches().is_empty() {
            println!("  patches: none");
        }
        for p in v.patches().iter() {
            let p = p.patch();
            println!(
                "  {} {:<7} {:<5} \"{}\" ({})",
                p.id,
                p.kind.name(),
                p.kernel,
                p.title,
                p.file
            );
        }
        if let (Some(p), Some(kind)) = (v.bug_patch(), v.expected_violation()) {
            println!(
                "  lacks {} (\"{}\"); expected oracle: {kind}",
                p.patch().id,
                p.patch().title
            );
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

fn campaign_cmd(
    kernel: Option<Duration>,
    cfg: bgfuzz::campaign::CampaignConfig,
) -> anyhow::Result<ExitCode> {
    let report = bgfuzz::campaign::campaign(&cfg)?;
    print!("{}", bgfuzz::campaign::markdown(&report));
    eprintln!(
        "\nreport: {}/report.md, {}/report.json",
        cfg.out.display(),
        cfg.out.display()
    );
    if let Some(time) = kernel {
        let crashes: Vec<(String, String)> = report
            .crashes
            .iter()
            .map(|c| (c.target.clone(), c.script.clone()))
            .collect();
        print!(
            "{}",
            bgfuzz::kernel::compare::campaign_on_kernel(&crashes, &cfg.out, time)?
        );
    }
    Ok(if report.new_crashes > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The options of `bgfuzz kernel` (also taken by `repro --kernel`).
#[derive(clap::Args, Clone)]
struct KernelArgs {
    /// How long the operations run, e.g. 10s, 2m.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    time: Duration,
    /// Threads (default: one per script task; 4 for the built-in mix).
    #[arg(long)]
    threads: Option<usize>,
    /// A real device fault: `eio` fails the loop device's writes partway.
    #[arg(long, value_parser = bgfuzz::kernel::Fault::parse)]
    fault: Option<bgfuzz::kernel::Fault>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Keep the btrfs tracepoint stream as JSON lines.
    #[arg(long)]
    keep_trace: Option<PathBuf>,
    /// Seed of the per-thread jitter.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Mount options (default: space_cache=v1).
    #[arg(long)]
    mount_options: Option<String>,
    /// Panic this long into the run (to check the cleanup).
    #[arg(long, value_parser = parse_duration, hide = true)]
    panic_after: Option<Duration>,
}

impl KernelArgs {
    fn options(&self, script: Option<PathBuf>) -> bgfuzz::kernel::KernelOptions {
        bgfuzz::kernel::KernelOptions {
            script,
            time: self.time,
            threads: self.threads,
            fault: self.fault,
            keep_trace: self.keep_trace.clone(),
            seed: self.seed,
            mount_options: self.mount_options.clone(),
            progress: !self.json,
            panic_after: self.panic_after,
            ..Default::default()
        }
    }
}

fn kernel_cmd(script: Option<PathBuf>, args: &KernelArgs) -> anyhow::Result<ExitCode> {
    let r = match bgfuzz::kernel::run(&args.options(script)) {
        Ok(r) => r,
        Err(e) => return Err(kernel_error(e)),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", bgfuzz::kernel::report::table(&r));
    }
    Ok(ExitCode::from(r.exit_code()))
}

/// Refusals and bad input exit 2 with their message; setup failures too.
fn kernel_error(e: bgfuzz::kernel::KernelError) -> anyhow::Error {
    Invalid(format!("kernel: {e}")).into()
}

/// `repro --kernel`: the model under every variant and the kernel.
fn repro_kernel(file: &Path, time: Duration, json: bool) -> anyhow::Result<ExitCode> {
    let opts = bgfuzz::kernel::KernelOptions {
        script: Some(file.to_path_buf()),
        time,
        progress: !json,
        ..Default::default()
    };
    let s = bgfuzz::kernel::compare::side_by_side(&opts).map_err(kernel_error)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", bgfuzz::kernel::compare::table(&s));
    }
    Ok(ExitCode::from(s.kernel.exit_code()))
}
