//! The `bgfuzz` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bgfuzz::check::{check_paths, outcome_name};
use bgfuzz::explore::{Bounds, Limits};
use bgfuzz::generate::decode;
use bgfuzz::minimize::{minimize_where, minimize_with, Budget, Minimized};
use bgfuzz::variant::Variant;

use bgfuzz::report;
use bgfuzz::run::{run, run_patched, Mode};
use bgfuzz::scenario::Scenario;
use bgfuzz::search::{shortest, witnesses, Tally};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

#[derive(Parser)]
#[command(
    name = "bgfuzz",
    version,
    about = "Fuzz the btrfs v4.1 transaction/block-group model for the ff1f8250 race and its kin",
    after_help = "`bgfuzz list` prints the variants, script operations, failpoint sites and \
violation kinds. Script format: docs/scripts.md.\n\n\
Exit codes: 0 nothing found (or all met), 1 a violation or an unmet expectation, \
2 invalid input or usage, and for explore 3 when a budget stopped it first; \
`bgfuzz COMMAND --help` says which for each."
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
        /// A script (`.scn`) or a libFuzzer input (crash-*, a corpus file):
        /// see --script/--artifact for how it is told apart.
        file: PathBuf,
        #[arg(long, value_parser = parse_variant,
              help = variant_help("The engine to run; overrides the script's `variant` line [default: the script's, else BGFUZZ_VARIANT for an input, else fixed]."))]
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
    /// faults, smaller sizes, the same violation kind. Prints the result.
    /// Exit 0: minimized, 1: no violation to keep, 2: invalid input or an
    /// output it will not write.
    Minimize {
        /// A script or a libFuzzer input, told apart as for `repro`.
        file: PathBuf,
        /// Also write the minimized script here (it carries `expect` lines
        /// for every variant, ready for corpus/scripts/). An existing file
        /// is kept unless --force; anything but a regular file never is
        /// replaced.
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Overwrite an existing regular file given to -o.
        #[arg(long, requires = "out")]
        force: bool,
        /// How much to try: a number of candidate runs (the same result
        /// on every machine), or a wall-clock limit such as 60s or 5m.
        /// When it runs out, the smallest script so far is the result
        /// [default: 5000 candidates or 5000000 step lines of candidates
        /// in all, whichever comes first: seconds, even for a long script].
        #[arg(long, value_parser = parse_budget)]
        budget: Option<BudgetArg>,
        #[arg(long, value_parser = parse_variant,
              help = variant_help("The engine to shrink under [default: as for `repro`]."))]
        variant: Option<Variant>,
        #[command(flatten)]
        input: InputKind,
    },
    /// In-process search with the fuzz targets' generator. With no
    /// arguments: the fixed engine for 200000 cases, then each bug variant
    /// until it is found (at most 4000000 cases each), and a table.
    /// Exit 0: as expected (no --variant: fixed clean and every bug
    /// variant caught; with --variant: nothing found), 1: otherwise, 2:
    /// invalid arguments.
    Run {
        #[arg(long, value_parser = parse_variant,
              help = variant_help("Search only this variant, for 200000 cases unless --time or --cases says otherwise; v4.1, which lacks several fixes, is hunted (every distinct bug, each fixed as found) for 6000000 cases [default: fixed, then each bug variant]."))]
        variant: Option<Variant>,
        /// Wall-clock budget per variant, e.g. 30s, 5m, at most a year
        /// (outside the runs: each case stays reproducible from its seed
        /// and index). With no --variant, the fixed engine's budget.
        #[arg(long, value_parser = parse_duration, conflicts_with = "cases")]
        time: Option<Duration>,
        /// Case budget per variant [default: 200000]; with no --variant,
        /// the fixed engine's budget.
        #[arg(long)]
        cases: Option<u64>,
        /// Seed of the case generator: the same seed gives the same cases.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where minimized scripts of what is found go (created).
        #[arg(long, default_value = "bgfuzz-out")]
        out: PathBuf,
    },
    /// The performance table: search throughput, time to detect each bug
    /// variant over 20 seeds, minimized size, engine replay speed (of
    /// corpus/scripts/btrfs-078-like.scn, so run it from the repository).
    /// With --cargo-fuzz, also libFuzzer's time to each bug variant.
    /// Exit 0, or 2 on invalid arguments or when --cargo-fuzz cannot build
    /// or run the fuzz target (the message says what to install).
    Bench {
        /// Print the table as JSON.
        #[arg(long)]
        json: bool,
        /// Rounds for the throughput medians (at least 1).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        rounds: u64,
        /// Seeds per bug variant for the time to detect (at least 1).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        seeds: u64,
        /// Cases each seed may take to find a bug variant's bug (at least 1).
        #[arg(long, default_value_t = BUG_CAP_CASES, value_parser = clap::value_parser!(u64).range(1..))]
        cap_cases: u64,
        /// Also time `cargo fuzz` on the `scenario` target from an empty
        /// corpus for each bug variant: built once (`cargo fuzz build -s
        /// none scenario`, from the repository root; needs cargo-fuzz),
        /// then run with -seed=1..N; the median time to the first crash,
        /// whether it needs an injected fault, exec/s.
        #[arg(long)]
        cargo_fuzz: bool,
        /// Only the --cargo-fuzz figures (implies --cargo-fuzz).
        #[arg(long)]
        only_cargo_fuzz: bool,
        /// libFuzzer seeds per variant for --cargo-fuzz (at least 1).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        fuzz_seeds: u64,
        /// Fuzzing time a seed may take for --cargo-fuzz, e.g. 60s, 5m
        /// (whole seconds, at least 1s).
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        fuzz_cap: Duration,
        /// Variants for --cargo-fuzz, comma-separated [default: every bug
        /// variant].
        #[arg(long, value_delimiter = ',', value_parser = parse_variant)]
        fuzz_variants: Vec<Variant>,
    },
    /// A nightly campaign: `cargo fuzz` over the targets, new inputs merged
    /// (add-only) into a working corpus under OUT, crashes minimized,
    /// grouped (kind, call trace, whether an injected fault is needed) and
    /// matched against CORPUS/scripts; a report in OUT/report.md and
    /// OUT/report.json. Run it from the repository root (it drives
    /// `cargo fuzz` on fuzz/). Safe to kill; the next run into the same
    /// OUT resumes.
    ///
    /// Exit status: 0 no new crash; 1 a new crash; 2 an error: bad
    /// arguments, not in the repository root, llvm-tools missing for
    /// --coverage, OUT in use by another campaign, or a step that failed
    /// (fuzzing, the corpus merge, coverage: the report says which);
    /// 130, 143 or 129 after SIGINT, SIGTERM or SIGHUP, which stop every
    /// process the campaign started first.
    Campaign {
        /// Fuzz targets to run, comma-separated: scenario, script.
        #[arg(long, value_delimiter = ',', default_value = "scenario,script")]
        targets: Vec<String>,
        /// Fuzzing time per target, e.g. 60s, 30m.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        time: Duration,
        /// Parallel fuzzing processes per target (libFuzzer -fork=N).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        #[arg(long, value_parser = parse_variant,
              help = variant_help("The engine the `scenario` target judges [default: BGFUZZ_VARIANT, else fixed]."))]
        variant: Option<Variant>,
        /// Where everything the campaign writes goes: OUT/<target>/corpus
        /// (the working corpus, carried from run to run), new/, artifacts/,
        /// logs, and the report. Locked while a campaign runs.
        #[arg(long, default_value = "campaign-out")]
        out: PathBuf,
        /// Read-only inputs: seed corpora (<target>/) and kept regressions
        /// (scripts/). Never written.
        #[arg(long, default_value = "corpus")]
        corpus: PathBuf,
        /// Also run `cargo fuzz coverage` and write an llvm-cov HTML report
        /// (needs `rustup component add llvm-tools-preview`).
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
    /// Bounded exhaustive exploration: every program over the alphabet and
    /// every interleaving within the bounds, breadth-first, so a violation
    /// found is a shortest one (kept as a .scn for `repro`). Exit 0: no
    /// violation within the bounds, 1: a violation, 2: bad bounds, 3: a
    /// budget or memory limit stopped it first (incomplete).
    Explore(ExploreArgs),
    /// Replay scripts (files or directories of .scn) against their
    /// `expect` lines. Exit 0: all met, 1: one unmet, 2: one invalid.
    Check {
        /// Scripts, or directories searched for `*.scn` (symlinks followed,
        /// each real file once; only regular files).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List the variants: each one's patches (upstream commit, title,
    /// kernel version, fix or feature) and, for a bug variant, the oracle
    /// expected to catch it. Exit 0.
    Variants {
        /// Print the table as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List what scripts and flags may name: variants, operations,
    /// failpoint sites with their errnos, mount options, violation kinds.
    /// Exit 0.
    List,
}

#[derive(clap::Args)]
struct ExploreArgs {
    #[arg(long, value_parser = parse_variant, default_value = "fixed")]
    variant: Variant,
    /// Tasks in play (A, B, ...); tasks with equal bounds are
    /// interchangeable for symmetry reduction.
    #[arg(long, default_value_t = 2)]
    tasks: usize,
    /// Operations each task may begin (an `end` it needs after its budget
    /// ran out is free).
    #[arg(long, default_value_t = 4)]
    ops: u64,
    /// Comma-separated operations in script syntax, `free` for any live
    /// extent. Default: start, alloc data <chunk-data>, alloc data 4K, end,
    /// commit (add run_delayed_refs, join, delete_unused, free here).
    #[arg(long, value_delimiter = ',')]
    alphabet: Option<Vec<String>>,
    /// Default: room for exactly one more data chunk after mkfs.
    #[arg(long, default_value = "57M")]
    device: String,
    #[arg(long, default_value = "16M")]
    chunk_data: String,
    #[arg(long, default_value = "16M")]
    chunk_metadata: String,
    #[arg(long, default_value = "8M")]
    chunk_system: String,
    /// Comma-separated mount options, as a script's `mount` line (e.g.
    /// space_cache, with `endio` in the alphabet for its workers).
    #[arg(long, value_delimiter = ',')]
    mount: Vec<String>,
    /// Keep states that differ only by a renaming of tasks apart (to
    /// measure what symmetry reduction saves).
    #[arg(long)]
    no_symmetry: bool,
    /// Also inject faults: every step that evaluates a failpoint is also
    /// tried with that evaluation failing, with each errno the site
    /// understands (`bgfuzz list`), up to --max-faults per run. A fault
    /// costs no step line, so counterexamples stay shortest; their `fail`
    /// headers replay them.
    #[arg(long)]
    faults: bool,
    /// With --faults: only the first K evaluations of each site since
    /// mkfs may fail [default: any evaluation].
    #[arg(long, value_name = "K|any", requires = "faults")]
    fault_hits: Option<String>,
    /// With --faults: at most N faults in one run [default: 1].
    #[arg(long, value_name = "N", requires = "faults")]
    max_faults: Option<u64>,
    /// Stop after a time (30s, 5m) or a number of distinct states (a plain
    /// number); the verdict then says "incomplete".
    #[arg(long)]
    budget: Option<String>,
    /// Stop (incomplete) when resident memory reaches this (e.g. 4G);
    /// default 80% of the memory available at start.
    #[arg(long)]
    max_memory: Option<String>,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
    /// For CI: exit 0 if the verdict is this (`none` or a violation kind),
    /// 1 otherwise (an incomplete run is never as expected).
    #[arg(long, value_parser = parse_expect)]
    expect: Option<Expected>,
    /// Where a counterexample's script goes.
    #[arg(long, default_value = "bgfuzz-out")]
    out: PathBuf,
}

/// Whether FILE is a script or a libFuzzer input. By default the content
/// decides: a file that parses as a script is one; text that starts like a
/// script but does not parse is reported as a broken script; anything else
/// is a libFuzzer input. Output says which reading was used.
#[derive(clap::Args, Clone, Copy)]
struct InputKind {
    /// Read FILE as a libFuzzer input, decoded as the `scenario` target
    /// does, even if it parses as a script.
    #[arg(long, conflicts_with = "script")]
    artifact: bool,
    /// Read FILE as a script even if it does not look like one (its errors
    /// are then reported, never decoded as bytes).
    #[arg(long)]
    script: bool,
}

/// Which reading of FILE was used, and why.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    Script(&'static str),
    Artifact(&'static str),
}

impl Reading {
    fn is_artifact(self) -> bool {
        matches!(self, Reading::Artifact(_))
    }

    fn describe(self, file: &Path) -> String {
        match self {
            Reading::Script(why) => format!("{}: read as a script ({why})", file.display()),
            Reading::Artifact(why) => format!(
                "{}: read as a libFuzzer input, decoded as the `scenario` target decodes it ({why})",
                file.display()
            ),
        }
    }
}

/// Reads a script or decodes an artifact, and says which it did.
fn load(file: &Path, kind: InputKind) -> anyhow::Result<(Scenario, Reading)> {
    let bytes = bgfuzz::read_input(file).map_err(|e| Invalid(format!("{e:#}")))?;
    if kind.artifact {
        return Ok((decode(&bytes), Reading::Artifact("--artifact")));
    }
    let invalid = |e: bgfuzz::scenario::ParseError| Invalid(format!("{}:{e}", file.display()));
    if kind.script {
        let scn = Scenario::parse(&bytes).map_err(invalid)?;
        return Ok((scn, Reading::Script("--script")));
    }
    match Scenario::parse(&bytes) {
        Ok(scn) => Ok((scn, Reading::Script("it parses as one"))),
        Err(e)
            if file.extension().is_some_and(|x| x == "scn")
                || bgfuzz::scenario::looks_like_script(&bytes) =>
        {
            let mut err = invalid(e);
            err.0.push_str(
                "\n(read as a script because it looks like one; pass --artifact to decode it as a libFuzzer input)",
            );
            Err(err.into())
        }
        Err(_) => Ok((decode(&bytes), Reading::Artifact("it is not a script"))),
    }
}

/// A budget for `minimize`: a number of candidates, or a duration.
#[derive(Clone, Copy, Debug)]
enum BudgetArg {
    Tries(usize),
    Time(Duration),
}

impl std::fmt::Display for BudgetArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetArg::Tries(n) => write!(f, "{n}"),
            BudgetArg::Time(d) => write!(f, "{}ms", d.as_millis()),
        }
    }
}

fn parse_budget(s: &str) -> Result<BudgetArg, String> {
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        return match s.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!(
                "bad budget `{s}`: a positive number of candidates, or a duration such as 60s"
            )),
            Ok(n) => Ok(BudgetArg::Tries(n)),
        };
    }
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("bad budget `{s}`: it must be more than zero")),
        d => Ok(BudgetArg::Time(d)),
    }
}

/// The longest duration accepted: a year, which also fits libFuzzer's
/// `-max_total_time` (a C int of seconds).
const MAX_DURATION_SECS: u64 = 366 * 24 * 3600;

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration `{s}`: e.g. 500ms, 30s, 5m, 1h"))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" | "" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("bad duration unit in `{s}`: ms, s, m or h")),
    };
    match n.checked_mul(ms_per_unit) {
        Some(ms) if ms <= MAX_DURATION_SECS * 1_000 => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "duration `{s}` out of range: at most {}h (a year)",
            MAX_DURATION_SECS / 3600
        )),
    }
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

/// stdout for every command. A reader that went away (`| head -1`) ends
/// the output quietly, and the command still exits with its own code; any
/// other write failure (`> /dev/full`) is an error, never a panic.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static CLOSED: AtomicBool = AtomicBool::new(false);
    if CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("writing to stdout: {e}")),
    }
}

macro_rules! out {
    ($($arg:tt)*) => { emit(&format!($($arg)*))? };
}

macro_rules! outln {
    () => { emit("\n")? };
    ($($arg:tt)*) => { emit(&format!("{}\n", format_args!($($arg)*)))? };
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
        Command::Explore(args) => explore_cmd(args),
        Command::List => list(),
        Command::Variants { json } => variants_cmd(json),
        Command::Kernel { script, args } => kernel_cmd(script, &args),
        Command::Minimize {
            file,
            out,
            force,
            budget,
            variant,
            input,
        } => minimize_cmd(&file, out.as_deref(), force, budget, variant, input),
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
            cap_cases,
            cargo_fuzz,
            only_cargo_fuzz,
            fuzz_seeds,
            fuzz_cap,
            fuzz_variants,
        } => {
            let fuzz = (cargo_fuzz || only_cargo_fuzz).then(|| bgfuzz::bench::FuzzBenchConfig {
                variants: if fuzz_variants.is_empty() {
                    Variant::BUGS.to_vec()
                } else {
                    fuzz_variants
                },
                seeds: fuzz_seeds as usize,
                cap: fuzz_cap,
            });
            bench_cmd(
                json,
                rounds as usize,
                seeds as usize,
                cap_cases,
                fuzz,
                only_cargo_fuzz,
            )
        }
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
    let (scn, reading) = load(file, input)?;
    let variant = input_variant(&scn, variant, reading.is_artifact())?;

    // An artifact is a loose input by construction.
    let mode = if loose || reading.is_artifact() {
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
    // Which reading was used: on stderr where stdout is a script or one
    // JSON object, else under the report's first line.
    if print_script {
        eprintln!("bgfuzz: {}", reading.describe(file));
        out!("{}", r.scenario.print());
    } else if json && picture.events {
        eprintln!("bgfuzz: {}", reading.describe(file));
        let j = bgfuzz::snapshot::with_events(report::json(&r), &snaps);
        outln!("{}", serde_json::to_string(&j)?);
    } else if json {
        eprintln!("bgfuzz: {}", reading.describe(file));
        outln!("{}", serde_json::to_string(&report::json(&r))?);
    } else {
        let full = report::full(&r);
        let (first, rest) = full.split_once('\n').unwrap_or((&full, ""));
        outln!("{first}");
        outln!("# {}", reading.describe(file));
        out!("{rest}");
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
        outln!(
            "{:<4} {:<48} {:<14} expected {:<32} got {}",
            if l.ok() { "ok" } else { "FAIL" },
            l.path.display(),
            l.variant.name(),
            outcome_name(l.expected),
            outcome_name(l.got)
        );
    }
    for e in &rep.errors {
        outln!("ERR  {}", e.message);
    }
    let failed = rep.lines.iter().filter(|l| !l.ok()).count();
    outln!(
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
    force: bool,
    budget: Option<BudgetArg>,
    variant: Option<Variant>,
    input: InputKind,
) -> anyhow::Result<ExitCode> {
    // Refused before the work, not after it.
    if let Some(out) = out {
        bgfuzz::check_output(out, force)?;
    }
    let (scn, reading) = load(file, input)?;
    eprintln!("bgfuzz: {}", reading.describe(file));
    let variant = input_variant(&scn, variant, reading.is_artifact())?;
    let before =
        run(&scn, variant, Mode::Loose).map_err(|e| Invalid(format!("{}:{e}", file.display())))?;
    let budget = match budget {
        None => Budget::default(),
        Some(BudgetArg::Tries(n)) => Budget {
            max_tries: n,
            max_steps: usize::MAX,
            deadline: None,
        },
        Some(BudgetArg::Time(d)) => Budget {
            max_tries: usize::MAX,
            max_steps: usize::MAX,
            deadline: Some(Instant::now() + d),
        },
    };
    let Some(m) = minimize_with(&before.scenario, variant, budget) else {
        eprintln!(
            "bgfuzz: {}: no violation under {variant}: nothing to minimize",
            file.display()
        );
        return Ok(ExitCode::from(1));
    };
    let text = m.scenario.print();
    out!("{text}");
    eprintln!(
        "minimized {} under {variant}: {} -> {} step lines ({} candidates tried), kind {}",
        file.display(),
        m.before_steps,
        m.scenario.steps.len(),
        m.tries,
        m.kind
    );
    if m.exhausted {
        eprintln!("the budget ran out: a larger --budget may shrink it further");
    }
    if let Some(line) = bgfuzz::attribution::report_line(&m.run) {
        eprintln!("{line}");
    }
    if let Some(out) = out {
        // Checked again: the file may have appeared while minimizing.
        bgfuzz::check_output(out, force)?;
        bgfuzz::write_atomic(out, &text)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The name a found script is kept under: its kind and a hash of the text.
fn script_name(m: &Minimized) -> String {
    kept_name("", m.kind, &m.scenario.print())
}

/// `PREFIXKIND-HASH.scn`: a kept script's name, stable for the same text.
fn kept_name(prefix: &str, kind: impl std::fmt::Display, text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{kind}-{hex}.scn")
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
            if let Err(e) = bgfuzz::write_atomic(&path, &m.scenario.print()) {
                // The witness is never lost to a failed write.
                out!("{}", m.scenario.print());
                return Err(e.context(format!(
                    "keeping the {} witness found under {variant} (printed above)",
                    m.kind
                )));
            }
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

fn print_found(o: &Outcome, seed: u64) -> anyhow::Result<()> {
    let Some((m, path)) = &o.found else {
        return Ok(());
    };
    outln!(
        "\n{} under {} after {} cases, {:.3}s (seed {seed}); the best of {} witnesses, minimized from {} to {} step lines:\n",
        m.kind,
        o.variant,
        o.cases,
        o.elapsed.as_secs_f64(),
        o.witnesses,
        m.before_steps,
        m.scenario.steps.len()
    );
    out!("{}", m.scenario.print());
    if let Some(v) = &m.run.violation {
        outln!("\n{}", v.finding.message);
    }
    if let Some(line) = bgfuzz::attribution::report_line(&m.run) {
        outln!("{line}");
    }
    outln!("\nreproduce: bgfuzz repro {}", path.display());
    Ok(())
}

fn run_cmd(
    variant: Option<Variant>,
    time: Option<Duration>,
    cases: Option<u64>,
    seed: u64,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    check_out_dir(out)?;
    if let Some(v) = variant.filter(|v| v.missing_fixes().iter().count() > 1) {
        return hunt_cmd(v, time, cases, seed, out);
    }
    if let Some(v) = variant {
        let budget = if time.is_none() && cases.is_none() {
            Some(DEFAULT_CASES)
        } else {
            cases
        };
        let o = search_variant(v, time, budget, seed, out)?;
        print_found(&o, seed)?;
        if o.found.is_none() {
            outln!(
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
        print_found(o, seed)?;
    }
    outln!(
        "\n{:<14} {:>9} {:>10} {:<32} {:>9}  {}",
        "variant",
        "cases",
        "time",
        "violation",
        "minimized",
        "removed upstream by"
    );
    let mut ok = true;
    for o in &rows {
        let (kind, steps, fix) = match &o.found {
            Some((m, _)) => {
                let fixes = bgfuzz::attribution::attribute_run(&m.run);
                let fix = fixes
                    .iter()
                    .map(|p| format!("{} ({})", p.patch().id, p.patch().kernel))
                    .collect::<Vec<_>>()
                    .join(", ");
                // A bug variant's witness must be removed by its own fix.
                ok &= o.variant.bug_patch().is_none_or(|p| fixes.contains(&p));
                (
                    m.kind.name().to_string(),
                    m.scenario.steps.len().to_string(),
                    fix,
                )
            }
            None => ("none".to_string(), "-".to_string(), "-".to_string()),
        };
        ok &= kind == o.variant.expected_violation().unwrap_or("none");
        outln!(
            "{:<14} {:>9} {:>9.3}s {:<32} {:>9}  {}",
            o.variant.name(),
            o.cases,
            o.elapsed.as_secs_f64(),
            kind,
            steps,
            fix
        );
    }
    outln!("(cases and time: the whole search for a clean variant, to the first violation for the others)");
    // "every" only where there are several.
    let caught = match Variant::BUGS.as_slice() {
        [one] => format!("{one} caught"),
        _ => "every bug variant caught".to_string(),
    };
    if ok {
        outln!("\nas expected: fixed is clean, {caught}");
    } else {
        outln!("\nUNEXPECTED: see the rows above");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `bgfuzz run --variant V` where V lacks several fixes (`v4.1`): a hunt.
/// The search goes on to the end of its budget and keeps each distinct bug
/// (distinct by the fixes that remove it), each minimized and attributed.
fn hunt_cmd(
    variant: Variant,
    time: Option<Duration>,
    cases: Option<u64>,
    seed: u64,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    use bgfuzz::attribution::{attribute, bug_variant, line};
    let cases = if time.is_none() {
        cases.or(Some(HUNT_CASES))
    } else {
        cases
    };
    let pb = progress(format!("{variant} seed {seed}, hunting"));
    let started = Instant::now();
    let mut times = Vec::new();
    let (tally, bugs) = bgfuzz::search::hunt(
        seed,
        variant,
        |t| {
            if t.cases % 512 == 0 {
                pb.set_message(tally_msg(t, started));
                pb.tick();
            }
            match (time, cases) {
                (Some(d), _) => started.elapsed() < d,
                (None, Some(n)) => t.cases < n,
                (None, None) => unreachable!("a budget is always set"),
            }
        },
        |_| times.push(started.elapsed()),
    );
    pb.finish_with_message(tally_msg(&tally, started));
    let mut rows = Vec::new();
    for (b, at) in bugs.iter().zip(&times) {
        let kind = b
            .run
            .violation
            .as_ref()
            .expect("a hunted run violates")
            .finding
            .kind;
        // Minimize where only this bug exists (its bug variant), so the
        // shrinking cannot wander onto another bug of the same kind; keep
        // the result only if it is still this bug under the hunted variant.
        let under = match b.fixes.as_slice() {
            [p] => bug_variant(*p).unwrap_or(variant),
            _ => variant,
        };
        let budget = Budget::default();
        // Checked with the patches the hunt found it under (the variant's
        // and the fixes of the bugs found before).
        let found_with = b.run.patches;
        let same_bug =
            |r: &bgfuzz::run::Run| attribute(&r.scenario, variant, found_with) == b.fixes;
        let check = |m: Minimized| {
            let again = run_patched(&m.scenario, variant, found_with, Mode::Strict).ok()?;
            let same =
                again.violation.as_ref().map(|v| v.finding.kind) == Some(kind) && same_bug(&again);
            same.then_some((m.scenario, again))
        };
        // Where the bug variant does not show it (it needs a bug the hunt
        // has not fixed yet) or its result is another bug, shrinking goes
        // on under the hunted patches, every candidate still the bug that
        // the same fixes remove.
        let m = minimize_with(&b.run.scenario, under, budget)
            .filter(|m| m.kind == kind)
            .and_then(check)
            .or_else(|| {
                minimize_where(&b.run.scenario, variant, found_with, budget, &same_bug)
                    .and_then(check)
            });
        let (scn, r) = m.unwrap_or_else(|| (b.run.scenario.clone(), b.run.clone()));
        let mut scn = scn;
        // The script names a variant that shows it as written: the hunted
        // one where it does, else the bug variant it was minimized under.
        let shows = |v: Variant| {
            let mut s = scn.clone();
            s.variant = Some(v);
            bgfuzz::run::run(&s, v, Mode::Strict)
                .ok()
                .and_then(|r| r.violation)
                .map(|x| x.finding.kind)
                == Some(kind)
        };
        scn.variant = Some(if shows(variant) { variant } else { under });
        let text = scn.print();
        let path = out.join(kept_name("", kind, &text));
        if let Err(e) = bgfuzz::write_atomic(&path, &text) {
            out!("{text}");
            return Err(e.context(format!("keeping the {kind} witness (printed above)")));
        }
        let applied = found_with.minus(variant.patches());
        outln!(
            "\n{kind} under {variant}{}, first at case {} ({:.3}s), {} step lines:\n",
            if applied.is_empty() {
                String::new()
            } else {
                format!(" with the fixes found so far applied ({applied})")
            },
            b.case,
            at.as_secs_f64(),
            scn.steps.len()
        );
        out!("{text}");
        if let Some(v) = &r.violation {
            outln!("\n{}", v.finding.message);
        }
        outln!("{}", line(&r, &b.fixes));
        outln!("reproduce: bgfuzz repro {}", path.display());
        rows.push((b, kind, *at, scn.steps.len(), path));
    }
    outln!(
        "\n{variant}: {} distinct bug(s) in {} cases ({:.1}s, seed {seed})\n",
        rows.len(),
        tally.cases,
        started.elapsed().as_secs_f64()
    );
    outln!(
        "{:<14} {:<8} {:<32} {:>9} {:>9} {:>9}",
        "removed by",
        "kernel",
        "violation",
        "case",
        "time",
        "minimized"
    );
    for (b, kind, at, steps, _) in &rows {
        let (id, kernel) = if b.fixes.is_empty() {
            ("(none alone)".to_string(), "-".to_string())
        } else {
            // Several fixes each remove it alone: "a / b".
            let ids: Vec<&str> = b.fixes.iter().map(|p| p.patch().id).collect();
            let ks: Vec<&str> = b.fixes.iter().map(|p| p.patch().kernel).collect();
            (ids.join(" / "), ks.join(" / "))
        };
        outln!(
            "{:<14} {:<8} {:<32} {:>9} {:>8.3}s {:>9}",
            id,
            kernel,
            kind.name(),
            b.case,
            at.as_secs_f64(),
            steps
        );
    }
    // Only the bugs this variant can have: a fix whose feature it lacks
    // removes nothing here.
    let missing: Vec<_> = variant
        .missing_fixes()
        .iter()
        .filter(|p| {
            p.patch()
                .needs
                .is_none_or(|f| variant.patches().contains(f))
        })
        .filter(|p| !rows.iter().any(|(b, ..)| b.fixes.contains(p)))
        .map(|p| p.patch().id)
        .collect();
    if !missing.is_empty() {
        outln!(
            "not seen in this budget: the bugs removed by {}",
            missing.join(", ")
        );
    }
    Ok(if rows.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A hunt's default budget: enough for every bug `v4.1` carries, about a
/// minute of a release build.
const HUNT_CASES: u64 = 6_000_000;

/// Creates `run --out` and checks that a file can be written there, before
/// a search whose result would otherwise have nowhere to go.
fn check_out_dir(out: &Path) -> anyhow::Result<()> {
    let probe = out.join(format!(".bgfuzz-probe-{}", std::process::id()));
    std::fs::create_dir_all(out)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| Invalid(format!("--out {}: cannot write there: {e}", out.display())).into())
}

/// The fixed engine's default budget in `bgfuzz run`.
const DEFAULT_CASES: u64 = 200_000;
/// A bug variant not found within this many cases is reported as missed.
const BUG_CAP_CASES: u64 = 4_000_000;

/// `bgfuzz list`: everything a script or a flag may name, from the code
/// itself, so it cannot drift.
fn list() -> anyhow::Result<ExitCode> {
    use bgfuzz::failpoints::Site;
    use bgfuzz::oracles::ViolationKind;
    outln!("variants (--variant, `variant` and `expect` lines; patches: `bgfuzz variants`):");
    for v in Variant::ALL {
        outln!(
            "  {:<14} {} (expected violation: {})",
            v.name(),
            v.description(),
            v.expected_violation().unwrap_or("none")
        );
    }
    outln!("\noperations (script lines `T: OP`, tasks A to H):");
    for (op, what) in OPERATIONS {
        outln!("  {op:<22} {what}");
    }
    outln!("\nfailpoint sites (`fail SITE CONFIG`, e.g. `fail extent_tree_lookup 1*off->1*return(ENOENT)`):");
    for site in Site::ALL {
        let errnos: Vec<String> = site.errnos().iter().map(|e| e.to_string()).collect();
        outln!("  {:<20} errnos: {}", site.name(), errnos.join(", "));
    }
    outln!("\nmount options (`mount OPT...`):");
    for o in bgfuzz::engine::MountOpts::NAMES {
        outln!("  {o}");
    }
    outln!("\nviolation kinds (`expect VARIANT: KIND`, or `pass`):");
    for k in ViolationKind::ALL {
        outln!("  {k}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The script operations, as `bgfuzz list` shows them.
const OPERATIONS: [(&str, &str); 12] = [
    ("start", "btrfs_start_transaction: take a handle"),
    (
        "join",
        "btrfs_join_transaction: take a handle; not held back in COMMIT_START, as start is",
    ),
    (
        "alloc KIND SIZE",
        "find_free_extent (KIND data, metadata or system; SIZE like 4K, 16M, 1G, or fill: the first hole, leaving its bg exactly full)",
    ),
    (
        "free eN",
        "drop extent N (numbered in alloc order): queue its drop ref",
    ),
    (
        "run_delayed_refs",
        "btrfs_run_delayed_refs: run the handle's queued refs",
    ),
    (
        "end",
        "btrfs_end_transaction: phase 2 of its new bgs, then drop the handle",
    ),
    ("commit", "btrfs_commit_transaction with the task's handle"),
    (
        "delete_unused",
        "btrfs_delete_unused_bgs, as the cleaner (no handle held)",
    ),
    (
        "endio",
        "a free-space cache endio worker completes the oldest cache IO (no handle held)",
    ),
    (
        "relocate START",
        "balance one chunk by logical start (e.g. 289M): btrfs_relocate_chunk of an empty bg (no handle held)",
    ),
    (
        "trim",
        "FITRIM: btrfs_trim_fs walks the cache tree, one bg a step (no handle held)",
    ),
    (
        "continue",
        "one more step of the task's operation in progress",
    ),
];

fn bench_cmd(
    json: bool,
    rounds: usize,
    seeds: usize,
    cap_cases: u64,
    fuzz: Option<bgfuzz::bench::FuzzBenchConfig>,
    only_fuzz: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(cfg) = &fuzz {
        if cfg.cap < Duration::from_secs(1) {
            return Err(Invalid(
                "--fuzz-cap: at least 1s (libFuzzer's -max_total_time is in whole seconds)".into(),
            )
            .into());
        }
    }
    // Build before any figure is taken, so a missing cargo-fuzz fails at once.
    let target = match &fuzz {
        Some(_) => Some(bgfuzz::bench::prepare_cargo_fuzz(Path::new("."))?),
        None => None,
    };
    let run_fuzz = || -> anyhow::Result<Option<bgfuzz::bench::FuzzBench>> {
        match (&target, &fuzz) {
            (Some(t), Some(cfg)) => Ok(Some(bgfuzz::bench::fuzz_bench(t, cfg)?)),
            _ => Ok(None),
        }
    };
    if only_fuzz {
        let f = run_fuzz()?.expect("--only-cargo-fuzz implies --cargo-fuzz");
        if json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "cargo_fuzz": f }))?
            );
        } else {
            out!("{}", bgfuzz::bench::fuzz_table(&f));
        }
        return Ok(ExitCode::SUCCESS);
    }
    const REPLAY: &str = "corpus/scripts/btrfs-078-like.scn";
    let replay = match std::fs::read(REPLAY).map(|b| Scenario::parse(&b)) {
        Ok(Ok(s)) => Some((REPLAY.to_string(), s)),
        Ok(Err(e)) => {
            eprintln!("bgfuzz: {REPLAY}:{e}: no replay figure");
            None
        }
        Err(e) => {
            eprintln!(
                "bgfuzz: {REPLAY}: {e}: no replay figure (run bench from the repository root)"
            );
            None
        }
    };
    let b = bgfuzz::bench::bench(&bgfuzz::bench::BenchConfig {
        rounds,
        cases_per_round: 5_000,
        seeds,
        cap_cases,
        replay_script: replay,
    });
    let mut b = b;
    b.cargo_fuzz = run_fuzz()?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        out!("{}", bgfuzz::bench::table(&b));
        if let Some(f) = &b.cargo_fuzz {
            out!("{}", bgfuzz::bench::fuzz_table(f));
        }
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
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    for v in Variant::ALL {
        outln!("{}: {}", v.name(), v.description());
        if v.patches().is_empty() {
            outln!("  patches: none");
        }
        for p in v.patches().iter() {
            let p = p.patch();
            outln!(
                "  {} {:<7} {:<5} \"{}\" ({})",
                p.id,
                p.kind.name(),
                p.kernel,
                p.title,
                p.file
            );
        }
        if let (Some(p), Some(kind)) = (v.bug_patch(), v.expected_violation()) {
            outln!(
                "  lacks {} (\"{}\"); expected oracle: {kind}",
                p.patch().id,
                p.patch().title
            );
        }
        outln!();
    }
    Ok(ExitCode::SUCCESS)
}

fn campaign_cmd(
    kernel: Option<Duration>,
    cfg: bgfuzz::campaign::CampaignConfig,
) -> anyhow::Result<ExitCode> {
    let report = bgfuzz::campaign::campaign(&cfg)?;
    out!("{}", bgfuzz::campaign::markdown(&report));
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
        out!(
            "{}",
            bgfuzz::kernel::compare::campaign_on_kernel(&crashes, &cfg.out, time)?
        );
    }
    Ok(ExitCode::from(report.exit_code()))
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
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        out!("{}", bgfuzz::kernel::report::table(&r));
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
        outln!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        out!("{}", bgfuzz::kernel::compare::table(&s));
    }
    Ok(ExitCode::from(s.kernel.exit_code()))
}

fn explore_bounds(a: &ExploreArgs) -> Result<(Bounds, Limits), Invalid> {
    use bgfuzz::explore::{parse_letter, Bounds, BoundsError, Limits};
    let size = |flag: &str, s: &str| {
        bgfuzz::scenario::parse_size(s, 0).map_err(|e| Invalid(format!("--{flag}: {}", e.message)))
    };
    let config = bgfuzz::engine::Config {
        device_size: size("device", &a.device)?,
        chunk_size: [
            size("chunk-data", &a.chunk_data)?,
            size("chunk-metadata", &a.chunk_metadata)?,
            size("chunk-system", &a.chunk_system)?,
        ],
        mount: {
            let mut m = bgfuzz::engine::MountOpts::default();
            for name in &a.mount {
                if !m.set(name.trim()) {
                    return Err(Invalid(format!(
                        "--mount: unknown option `{name}` (known: {})",
                        bgfuzz::engine::MountOpts::NAMES.join(", ")
                    )));
                }
            }
            m
        },
    };
    let invalid = |e: BoundsError| Invalid(e.to_string());
    let ops = u8::try_from(a.ops)
        .ok()
        .filter(|&o| u64::from(o) <= bgfuzz::explore::MAX_OPS)
        .ok_or_else(|| invalid(BoundsError::Ops(a.ops)))?;
    let alphabet = match &a.alphabet {
        None => Bounds::default_alphabet(&config),
        Some(items) => items
            .iter()
            .map(|i| parse_letter(i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?,
    };
    let faults = if a.faults {
        let d = bgfuzz::explore::DEFAULT_FAULTS;
        let hits = match a.fault_hits.as_deref() {
            None => d.hits,
            Some("any") => None,
            Some(k) => {
                let n: u64 = k.parse().map_err(|_| {
                    Invalid(format!(
                        "--fault-hits {k}: a number of hits (e.g. 2) or `any`"
                    ))
                })?;
                Some(u8::try_from(n).map_err(|_| invalid(BoundsError::FaultHits(n)))?)
            }
        };
        let max = match a.max_faults {
            None => d.max,
            Some(n) => u8::try_from(n).map_err(|_| invalid(BoundsError::MaxFaults(n)))?,
        };
        Some(bgfuzz::explore::FaultBounds { max, hits })
    } else {
        None
    };
    let bounds = Bounds {
        variant: a.variant,
        tasks: a.tasks,
        ops,
        alphabet,
        config,
        symmetry: !a.no_symmetry,
        faults,
    };
    bgfuzz::explore::validate(&bounds).map_err(invalid)?;
    let mut limits = Limits::default();
    if let Some(b) = &a.budget {
        if b.bytes().all(|c| c.is_ascii_digit()) {
            let n: u64 = b
                .parse()
                .map_err(|_| Invalid(format!("--budget {b}: too large")))?;
            if n == 0 {
                return Err(Invalid(
                    "--budget 0: a state budget must be at least 1".into(),
                ));
            }
            limits.max_states = Some(n);
        } else {
            limits.max_time = Some(parse_duration(b).map_err(|e| {
                Invalid(format!(
                    "--budget: {e}; or a number of distinct states such as 1000000"
                ))
            })?);
        }
    }
    limits.max_memory = match &a.max_memory {
        Some(m) => Some(parse_mem(m).map_err(|e| Invalid(format!("--max-memory: {e}")))?),
        None => bgfuzz::explore::mem_available().map(|m| m / 10 * 8),
    };
    bgfuzz::explore::validate_limits(&limits).map_err(invalid)?;
    Ok((bounds, limits))
}

/// `--expect`: no violation (`none`) or a kind.
#[derive(Clone, Copy)]
struct Expected(Option<bgfuzz::oracles::ViolationKind>);

fn parse_expect(s: &str) -> Result<Expected, String> {
    use bgfuzz::oracles::ViolationKind;
    if s == "none" {
        return Ok(Expected(None));
    }
    ViolationKind::parse(s)
        .map(|k| Expected(Some(k)))
        .ok_or_else(|| {
            format!(
                "unknown verdict `{s}` (known: none, {})",
                ViolationKind::ALL.map(|k| k.name()).join(", ")
            )
        })
}

/// Bytes with an optional K, M or G suffix.
fn parse_mem(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'K') => (&s[..s.len() - 1], 10),
        Some(b'M') => (&s[..s.len() - 1], 20),
        Some(b'G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("bad size `{s}`: e.g. 512M, 4G"))
}

fn explore_cmd(a: ExploreArgs) -> anyhow::Result<ExitCode> {
    use bgfuzz::explore::{counterexample_text, explore, json, summary, Verdict};
    let (bounds, limits) = explore_bounds(&a)?;
    let pb = progress(format!("explore {}", bounds.variant));
    if a.json {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let x = explore(&bounds, limits, |s| {
        pb.set_message(format!(
            "{} states, {:.0} states/s, depth {}, queue {}",
            s.states,
            s.states as f64 / s.seconds.max(1e-9),
            s.depth,
            s.queue
        ));
        pb.tick();
    })
    .map_err(|e| Invalid(e.to_string()))?;
    pb.finish_and_clear();
    let mut path = None;
    if let Verdict::Violation(c) = &x.verdict {
        let text = c.scenario.print();
        let p = a.out.join(kept_name("explore-", c.kind, &text));
        bgfuzz::write_atomic(&p, &text)?;
        path = Some(p);
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&json(&x))?);
    } else {
        if let Verdict::Violation(c) = &x.verdict {
            outln!("{}", counterexample_text(c, bounds.variant));
        }
        out!("{}", summary(&x));
        if let Some(p) = &path {
            outln!("reproduce: bgfuzz repro {}", p.display());
        }
    }
    if let Some(Expected(want)) = a.expect {
        let got = match &x.verdict {
            Verdict::Clean => Some(None),
            Verdict::Violation(c) => Some(Some(c.kind)),
            Verdict::Incomplete { .. } => None,
        };
        let ok = got == Some(want);
        if !a.json {
            outln!(
                "{}: expected {}",
                if ok { "as expected" } else { "UNEXPECTED" },
                want.map_or("none", |k| k.name())
            );
        }
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    Ok(match x.verdict {
        Verdict::Clean => ExitCode::SUCCESS,
        Verdict::Violation(_) => ExitCode::from(1),
        Verdict::Incomplete { .. } => ExitCode::from(3),
    })
}
