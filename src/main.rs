//! The `bgfuzz` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bgfuzz::check::{check_paths, outcome_name};
use bgfuzz::engine::Variant;
use bgfuzz::report;
use bgfuzz::run::{run, Mode};
use bgfuzz::scenario::Scenario;
use clap::{Parser, Subcommand};

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
        /// Overrides the script's `variant` line.
        #[arg(long, value_parser = parse_variant)]
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
    },
    /// Replay scripts (files or directories of .scn) against their
    /// `expect` lines.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn parse_variant(s: &str) -> Result<Variant, String> {
    Variant::parse(s).ok_or_else(|| {
        format!(
            "unknown variant `{s}` (known: {})",
            Variant::ALL.map(|v| v.name()).join(", ")
        )
    })
}

/// Invalid input: the message names the file and line.
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
        } => repro(&file, variant, json, print_script, loose),
        Command::Check { paths } => check(&paths),
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

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::fmt::Debug for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Invalid {}

fn repro(
    file: &PathBuf,
    variant: Option<Variant>,
    json: bool,
    print_script: bool,
    loose: bool,
) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let scn = Scenario::parse(&bytes).map_err(|e| Invalid(format!("{}:{e}", file.display())))?;
    let variant = scn.variant_or(variant);
    let mode = if loose { Mode::Loose } else { Mode::Strict };
    let r = run(&scn, variant, mode).map_err(|e| Invalid(format!("{}:{e}", file.display())))?;
    if print_script {
        print!("{}", r.scenario.print());
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
    Ok(if rep.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
