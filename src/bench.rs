//! `bgfuzz bench`: the performance table. Wall-clock figures are measured
//! here and only here, around deterministic work; medians, because these
//! machines are shared and noisy.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::variant::Variant;
use anyhow::{bail, Context};
use serde::Serialize;

use crate::generate::decode;
use crate::minimize::minimize;
use crate::run::{run, Mode};
use crate::scenario::Scenario;
use crate::search::{search, shortest, witnesses};

#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut xs: Vec<f64>) -> Spread {
        xs.sort_by(|a, b| a.total_cmp(b));
        let n = xs.len();
        let median = if n == 0 {
            0.0
        } else if n % 2 == 1 {
            xs[n / 2]
        } else {
            (xs[n / 2 - 1] + xs[n / 2]) / 2.0
        };
        Spread {
            median,
            min: xs.first().copied().unwrap_or(0.0),
            max: xs.last().copied().unwrap_or(0.0),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub rounds: usize,
    pub cases_per_round: u64,
    pub cases_per_sec: Spread,
    pub steps_per_sec: Spread,
}

#[derive(Clone, Debug, Serialize)]
pub struct Detection {
    pub variant: String,
    pub seeds: usize,
    /// Seeds whose search found the expected kind within the cap.
    pub found: usize,
    pub cap_cases: u64,
    pub seconds: Spread,
    pub cases: Spread,
    /// Step lines of the minimized script.
    pub minimized_steps: Spread,
    /// Seeds whose kept script needs no injected fault: the race found by
    /// interleaving alone.
    pub without_faults: usize,
    pub kinds: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Replay {
    pub script: String,
    pub steps: usize,
    pub steps_per_sec: Spread,
}

/// `bgfuzz explore`: distinct states per second on `fixed` (wall clock and
/// per CPU second of the exploring thread), and the time to the shortest
/// counterexample of each bug variant.
#[derive(Clone, Debug, Serialize)]
pub struct ExploreBench {
    pub bounds: String,
    pub rounds: usize,
    pub states: u64,
    pub transitions: u64,
    pub states_per_sec: Spread,
    /// All rounds' states over all rounds' CPU time: the CPU clock ticks
    /// in 10 ms, too coarse for one round.
    pub states_per_cpu_sec: f64,
    /// The same bounds with `--faults` at its defaults.
    pub faults_bounds: String,
    pub faults_states: u64,
    pub faults_states_per_sec: Spread,
    pub shortest: Vec<ExploreDetection>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExploreDetection {
    pub variant: String,
    pub bounds: String,
    pub kind: String,
    pub steps: usize,
    pub states: u64,
    pub seconds: Spread,
    /// Explored with `--faults`: its bug is on an error path.
    pub faults: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Bench {
    pub cores: usize,
    pub search_fixed: Throughput,
    pub detect: Vec<Detection>,
    pub replay: Option<Replay>,
    pub explore: ExploreBench,
    /// `--cargo-fuzz`: libFuzzer's time to each bug variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cargo_fuzz: Option<FuzzBench>,
}

pub struct BenchConfig {
    pub rounds: usize,
    pub cases_per_round: u64,
    pub seeds: usize,
    pub cap_cases: u64,
    pub replay_script: Option<(String, Scenario)>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

pub fn bench(cfg: &BenchConfig) -> Bench {
    let mut cps = Vec::new();
    let mut sps = Vec::new();
    for round in 0..cfg.rounds {
        let t = Instant::now();
        let (tally, _) = search(1000 + round as u64, Variant::FIXED, |t| {
            t.cases < cfg.cases_per_round
        });
        let el = secs(t.elapsed());
        cps.push(tally.cases as f64 / el);
        sps.push(tally.steps as f64 / el);
    }
    let search_fixed = Throughput {
        rounds: cfg.rounds,
        cases_per_round: cfg.cases_per_round,
        cases_per_sec: Spread::of(cps),
        steps_per_sec: Spread::of(sps),
    };
    let detect = Variant::BUGS
        .iter()
        .map(|&v| {
            let (mut times, mut cases, mut sizes, mut kinds) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut found = 0;
            let mut without_faults = 0;
            for seed in 0..cfg.seeds as u64 {
                let t = Instant::now();
                // As `bgfuzz run` does: time to the first witness, the
                // kept script the best of a few.
                let mut detected: Option<f64> = None;
                let (_, more) = witnesses(seed, v, |t2| {
                    if detected.is_none() && !t2.by_kind.is_empty() {
                        detected = Some(secs(t.elapsed()));
                    }
                    t2.cases < cfg.cap_cases
                });
                let (Some(hit), Some(el)) = (more.first(), detected) else {
                    continue;
                };
                let kind = hit.run.violation.as_ref().map(|x| x.finding.kind);
                if kind.map(|k| k.name()) == v.expected_violation() {
                    found += 1;
                }
                times.push(el);
                cases.push((hit.case + 1) as f64);
                if let Some((_, m)) = shortest(&more, v) {
                    sizes.push(m.scenario.steps.len() as f64);
                    without_faults += usize::from(m.scenario.fails.is_empty());
                }
                if let Some(k) = kind {
                    if !kinds.contains(&k.name().to_string()) {
                        kinds.push(k.name().to_string());
                    }
                }
            }
            Detection {
                variant: v.name().to_string(),
                seeds: cfg.seeds,
                found,
                cap_cases: cfg.cap_cases,
                seconds: Spread::of(times),
                cases: Spread::of(cases),
                minimized_steps: Spread::of(sizes),
                without_faults,
                kinds,
            }
        })
        .collect();
    let replay = cfg.replay_script.as_ref().map(|(name, scn)| {
        let mut rates = Vec::new();
        let mut steps = 0;
        for _ in 0..cfg.rounds {
            let t = Instant::now();
            let mut n = 0usize;
            for _ in 0..20 {
                let r = run(scn, Variant::FIXED, Mode::Strict).expect("the replay script is valid");
                n += r.steps.len();
            }
            steps = n / 20;
            rates.push(n as f64 / secs(t.elapsed()));
        }
        Replay {
            script: name.clone(),
            steps,
            steps_per_sec: Spread::of(rates),
        }
    });
    Bench {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        search_fixed,
        detect,
        replay,
        explore: explore_bench(cfg.rounds),
        cargo_fuzz: None,
    }
}

/// `fixed` at 3 tasks x 3 ops for the rate (a run of about half a CPU
/// second); each bug variant at the default bounds for the counterexample.
fn explore_bench(rounds: usize) -> ExploreBench {
    use crate::explore::{explore, thread_cpu_seconds, Bounds, Limits, Verdict};
    let bounds = Bounds::new(Variant::FIXED, 3, 3);
    let mut wall = Vec::new();
    let (mut cpu_total, mut cpu_states) = (0.0, 0u64);
    let (mut states, mut transitions) = (0, 0);
    for _ in 0..rounds.max(1) {
        let c0 = thread_cpu_seconds();
        let t = Instant::now();
        let x = explore(&bounds, Limits::default(), |_| {}).expect("valid bounds");
        let el = secs(t.elapsed());
        (states, transitions) = (x.stats.states, x.stats.transitions);
        wall.push(states as f64 / el);
        if let (Some(a), Some(b)) = (c0, thread_cpu_seconds()) {
            cpu_total += b - a;
            cpu_states += states;
        }
    }
    let mut fb = bounds.clone();
    fb.faults = Some(crate::explore::DEFAULT_FAULTS);
    let mut faults_wall = Vec::new();
    let mut faults_states = 0;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let x = explore(&fb, Limits::default(), |_| {}).expect("valid bounds");
        faults_states = x.stats.states;
        faults_wall.push(faults_states as f64 / secs(t.elapsed()));
    }
    // Each with the bounds that reach its bug, faults included where only
    // an injected fault reaches it.
    let shortest = Variant::BUGS
        .iter()
        .map(|&v| {
            let b = Bounds::for_variant(v);
            let mut times = Vec::new();
            let mut found = ("none".to_string(), 0, 0);
            for _ in 0..rounds.max(1) {
                let t = Instant::now();
                let x = explore(&b, Limits::default(), |_| {}).expect("valid bounds");
                times.push(secs(t.elapsed()));
                found = match &x.verdict {
                    Verdict::Violation(c) => (
                        c.kind.name().to_string(),
                        c.scenario.steps.len(),
                        x.stats.states,
                    ),
                    _ => ("none".to_string(), 0, x.stats.states),
                };
            }
            ExploreDetection {
                variant: v.name().to_string(),
                bounds: b.describe(),
                faults: b.faults.is_some(),
                kind: found.0,
                steps: found.1,
                states: found.2,
                seconds: Spread::of(times),
            }
        })
        .collect();
    ExploreBench {
        bounds: bounds.describe(),
        rounds: rounds.max(1),
        states,
        transitions,
        states_per_sec: Spread::of(wall),
        states_per_cpu_sec: cpu_states as f64 / f64::max(cpu_total, 0.01),
        faults_bounds: fb.describe(),
        faults_states,
        faults_states_per_sec: Spread::of(faults_wall),
        shortest,
    }
}

pub fn table(b: &Bench) -> String {
    let mut out = format!("bgfuzz bench ({} cores)\n\n", b.cores);
    let s = &b.search_fixed;
    out.push_str(&format!(
        "search, fixed: {:.0} cases/s median (min {:.0}, max {:.0}), {:.0} steps/s median; {} rounds x {} cases\n",
        s.cases_per_sec.median, s.cases_per_sec.min, s.cases_per_sec.max, s.steps_per_sec.median, s.rounds, s.cases_per_round
    ));
    if let Some(r) = &b.replay {
        out.push_str(&format!(
            "replay {} ({} steps), fixed: {:.0} steps/s median (min {:.0}, max {:.0})\n",
            r.script, r.steps, r.steps_per_sec.median, r.steps_per_sec.min, r.steps_per_sec.max
        ));
    }
    out.push_str(&format!(
        "\n{:<14} {:>7} {:>12} {:>12} {:>12} {:>10} {:>14} {:>9}  {}\n",
        "variant", "found", "median s", "min s", "max s", "cases", "minimized", "no fault", "kind"
    ));
    for d in &b.detect {
        out.push_str(&format!(
            "{:<14} {:>3}/{:<3} {:>12.4} {:>12.4} {:>12.4} {:>10.0} {:>6.0} (max {:>2.0}) {:>6}/{:<2}  {}\n",
            d.variant,
            d.found,
            d.seeds,
            d.seconds.median,
            d.seconds.min,
            d.seconds.max,
            d.cases.median,
            d.minimized_steps.median,
            d.minimized_steps.max,
            d.without_faults,
            d.seeds,
            d.kinds.join(",")
        ));
    }
    let x = &b.explore;
    out.push_str(&format!(
        "\nexplore, fixed ({} distinct states, {} transitions; {} rounds): {:.0} distinct states/s median (min {:.0}, max {:.0}); per CPU second {:.0} (all rounds)\n  BOUNDS: {}\n",
        x.states,
        x.transitions,
        x.rounds,
        x.states_per_sec.median,
        x.states_per_sec.min,
        x.states_per_sec.max,
        x.states_per_cpu_sec,
        x.bounds
    ));
    out.push_str(&format!(
        "explore, fixed, with --faults ({} distinct states): {:.0} distinct states/s median (min {:.0}, max {:.0})\n  BOUNDS: {}\n",
        x.faults_states,
        x.faults_states_per_sec.median,
        x.faults_states_per_sec.min,
        x.faults_states_per_sec.max,
        x.faults_bounds
    ));
    for d in &x.shortest {
        if d.kind == "none" {
            out.push_str(&format!(
                "explore, {}: NO violation within its bounds ({} states, {:.4}s median)\n  BOUNDS: {}\n",
                d.variant, d.states, d.seconds.median, d.bounds
            ));
        } else {
            out.push_str(&format!(
                "explore, {}: shortest counterexample {} ({} step lines, {} states{}) in {:.4}s median (min {:.4}, max {:.4})\n",
                d.variant,
                d.kind,
                d.steps,
                d.states,
                if d.faults { ", with --faults" } else { "" },
                d.seconds.median,
                d.seconds.min,
                d.seconds.max
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------
// `bgfuzz bench --cargo-fuzz`: libFuzzer on the `scenario` target, from
// an empty corpus, for every bug variant. Kept apart from the in-process
// figures above: it needs cargo-fuzz and a build of `fuzz/`.

/// What `--cargo-fuzz` runs: `seeds` libFuzzer seeds (1..=seeds; libFuzzer
/// reads `-seed=0` as "pick one from the clock") per variant, each with at
/// most `cap` of fuzzing in all.
#[derive(Clone, Debug)]
pub struct FuzzBenchConfig {
    pub variants: Vec<Variant>,
    pub seeds: usize,
    pub cap: Duration,
}

/// The fuzz target built and found: [`prepare_cargo_fuzz`]'s result.
#[derive(Clone, Debug)]
pub struct FuzzTarget {
    pub binary: PathBuf,
    /// The command that built it, for the table.
    pub build: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct FuzzBench {
    pub target: String,
    pub binary: String,
    pub build: String,
    pub seeds: usize,
    pub cap_seconds: f64,
    pub detect: Vec<FuzzDetection>,
}

/// One bug variant under libFuzzer.
#[derive(Clone, Debug, Serialize)]
pub struct FuzzDetection {
    pub variant: String,
    pub seeds: usize,
    /// Seeds whose first crash replays to the variant's expected kind.
    pub found: usize,
    /// Seeds that crashed at all within the cap.
    pub crashed: usize,
    /// Median time to the first crash over all seeds, a seed that did not
    /// crash counting as slower than the cap; `None` when half or more
    /// did not crash.
    pub median_seconds: Option<f64>,
    /// Time to the first crash, over the seeds that crashed.
    pub seconds: Spread,
    /// Seeds that reached a crash whose minimized script needs no
    /// injected fault (the race found by interleaving alone).
    pub without_faults: usize,
    /// As `median_seconds`, to the first fault-free crash.
    pub median_fault_free_seconds: Option<f64>,
    /// Step lines of the minimized script of each seed's kept crash.
    pub minimized_steps: Spread,
    /// Executions per second of wall clock, over each seed's runs.
    pub exec_per_sec: Spread,
    pub kinds: Vec<String>,
    pub runs: Vec<FuzzRun>,
}

/// One seed: plain libFuzzer to its first crash, and fork mode on from
/// there while the crashes need an injected fault.
#[derive(Clone, Debug, Serialize)]
pub struct FuzzRun {
    pub seed: u64,
    pub crash_seconds: Option<f64>,
    pub fault_free_seconds: Option<f64>,
    /// The kept crash's violation kind, replayed by the library.
    pub kind: Option<String>,
    /// Whether the kept crash's minimized script still has `fail` lines.
    pub needs_fault: Option<bool>,
    pub minimized_steps: Option<usize>,
    /// Executions per second of wall clock of the plain libFuzzer run
    /// (start-up included).
    pub exec_per_sec: f64,
    /// Crash inputs seen, over both runs.
    pub crashes: usize,
    pub executions: u64,
    pub seconds: f64,
}

/// libFuzzer's `-print_final_stats=1` lines (`stat::name: value`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FinalStats {
    pub executed_units: u64,
    /// libFuzzer's whole-second figure: 0 for a run under a second.
    pub average_exec_per_sec: u64,
    pub new_units_added: u64,
    pub peak_rss_mb: u64,
}

impl FinalStats {
    /// The `stat::` lines of a libFuzzer log; `None` when there are none
    /// (libFuzzer did not get to print them).
    pub fn parse(log: &str) -> Option<FinalStats> {
        let mut s = FinalStats::default();
        let mut any = false;
        for line in log.lines() {
            let Some((name, value)) = line
                .trim()
                .strip_prefix("stat::")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let Ok(v) = value.trim().parse::<u64>() else {
                continue;
            };
            any = true;
            match name.trim() {
                "number_of_executed_units" => s.executed_units = v,
                "average_exec_per_sec" => s.average_exec_per_sec = v,
                "new_units_added" => s.new_units_added = v,
                "peak_rss_mb" => s.peak_rss_mb = v,
                _ => {}
            }
        }
        any.then_some(s)
    }
}

/// Median over `n` seeds of which `xs` finished: a missing seed counts as
/// slower than any that finished, so the median exists only when more
/// than half did.
fn median_with_misses(mut xs: Vec<f64>, n: usize) -> Option<f64> {
    xs.sort_by(|a, b| a.total_cmp(b));
    // The median's one or two middle values are finite only then.
    if xs.len() * 2 <= n {
        return None;
    }
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

fn run_quiet(cmd: &mut Command) -> anyhow::Result<std::process::Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))
}

/// Checks that cargo-fuzz is installed, builds the `scenario` target once
/// (release, `-s none`: safe Rust needs no sanitizer, so stable Rust
/// does), and finds its binary, so that no build time is timed. `root`
/// holds `fuzz/`.
pub fn prepare_cargo_fuzz(root: &Path) -> anyhow::Result<FuzzTarget> {
    let manifest = root.join("fuzz/Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "no {}: run `bgfuzz bench --cargo-fuzz` from the bgfuzz repository root (it builds fuzz/ with cargo fuzz)",
            manifest.display()
        );
    }
    let version = Command::new("cargo")
        .args(["fuzz", "--version"])
        .current_dir(root)
        .stdin(Stdio::null())
        .output();
    if !version.as_ref().is_ok_and(|o| o.status.success()) {
        bail!("--cargo-fuzz needs cargo-fuzz: install it with `cargo install cargo-fuzz --locked`");
    }
    let build = "cargo fuzz build -s none scenario";
    eprintln!("bgfuzz bench: {build} (the first build takes minutes)");
    let out = run_quiet(
        Command::new("cargo")
            .args(["fuzz", "build", "-s", "none", "scenario"])
            .current_dir(root),
    )?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        bail!(
            "`{build}` failed ({}):\n{}\nIt needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler for libFuzzer (e.g. `apt-get install g++`); no nightly and no sanitizer (-s none)",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    // cargo-fuzz builds for the host triple into the fuzz crate's target
    // directory (CARGO_TARGET_DIR when set): ask cargo and rustc for both.
    let meta = run_quiet(
        Command::new("cargo")
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .arg("--manifest-path")
            .arg(&manifest)
            .current_dir(root),
    )?;
    let target_dir = serde_json::from_slice::<serde_json::Value>(&meta.stdout)
        .ok()
        .and_then(|v| v["target_directory"].as_str().map(PathBuf::from))
        .with_context(|| {
            format!(
                "`cargo metadata` on {} did not name a target directory: {}",
                manifest.display(),
                String::from_utf8_lossy(&meta.stderr).trim()
            )
        })?;
    let rustc =
        run_quiet(Command::new(std::env::var_os("RUSTC").unwrap_or("rustc".into())).arg("-vV"))?;
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("`rustc -vV` names no host triple")?;
    let binary = target_dir.join(&host).join("release").join("scenario");
    if !binary.is_file() {
        bail!(
            "`{build}` succeeded but {} is not there (a cargo-fuzz that builds elsewhere?)",
            binary.display()
        );
    }
    Ok(FuzzTarget {
        binary,
        build: build.to_string(),
    })
}

/// Stops the fuzz bench on SIGINT or SIGTERM, so that the child is ended
/// and every temporary directory removed before bgfuzz exits.
struct Interrupt {
    flag: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Interrupt {
    fn install() -> Interrupt {
        let flag = Arc::new(AtomicBool::new(false));
        let ids = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
            .into_iter()
            .filter_map(|s| signal_hook::flag::register(s, Arc::clone(&flag)).ok())
            .collect();
        Interrupt { flag, ids }
    }

    fn raised(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// One libFuzzer process: its wall time, executions, and first crash.
struct Process {
    seconds: f64,
    executions: u64,
    crash: Option<Vec<u8>>,
}

/// How a libFuzzer process runs.
enum Mode2 {
    /// Plain libFuzzer: it stops at its first crash.
    First,
    /// `-fork=1 -ignore_crashes=1`: it goes on after a crash; each new
    /// crash input is passed, with the seconds since the start, to a
    /// callback that says whether to stop.
    Onwards(OnCrash),
}

type OnCrash = Box<dyn FnMut(&[u8], f64) -> bool>;

/// What fork mode's crashes showed: how many, and the first that needs
/// no injected fault (kind, minimized step lines, seconds).
#[derive(Default)]
struct Onwards {
    crashes: usize,
    fault_free: Option<(String, usize, f64)>,
}

/// The `crash-*` files in `dir`, by name.
fn crash_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("crash-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs the fuzz target binary on `corpus` for at most `max_secs`; its
/// artifacts, log and libFuzzer's own temporary files (TMPDIR) go under
/// `dir`. The child is its own process group, so that ending it ends the
/// jobs of fork mode too.
#[allow(clippy::too_many_arguments)]
fn fuzz_process(
    target: &FuzzTarget,
    variant: Variant,
    seed: u64,
    max_secs: u64,
    corpus: &Path,
    dir: &Path,
    stop: &Interrupt,
    mut mode: Mode2,
) -> anyhow::Result<Process> {
    use std::os::unix::process::CommandExt;
    let artifacts = dir.join(format!("artifacts-{seed}"));
    std::fs::create_dir_all(&artifacts)?;
    let log_path = dir.join(format!("fuzz-{seed}.log"));
    let log = File::create(&log_path)?;
    let mut cmd = Command::new(&target.binary);
    cmd.arg(format!("-seed={seed}"))
        .arg(format!("-max_total_time={max_secs}"))
        .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    if matches!(mode, Mode2::Onwards(_)) {
        cmd.args([
            "-fork=1",
            "-ignore_crashes=1",
            "-ignore_timeouts=1",
            "-ignore_ooms=1",
        ]);
    }
    cmd.arg(corpus)
        .env("BGFUZZ_VARIANT", variant.name())
        .env("TMPDIR", dir)
        // The panic's backtrace is symbolized from debug info, which can
        // take longer than finding the crash did.
        .env("RUST_BACKTRACE", "0")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", target.binary.display()))?;
    let group = rustix::process::Pid::from_child(&child);
    let end = |child: &mut std::process::Child| {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = child.wait();
    };
    // libFuzzer ends itself at -max_total_time; this is for a child that
    // hangs.
    let deadline = Duration::from_secs(max_secs + 30);
    // Crash files seen, with their size when first seen: one is read once
    // its size holds for a poll, so never half written.
    let mut seen: Vec<(PathBuf, Option<u64>, f64)> = Vec::new();
    let mut last_poll = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if stop.raised() {
            end(&mut child);
            bail!("interrupted; the temporary corpus and artifacts are removed");
        }
        if started.elapsed() > deadline {
            end(&mut child);
            // Fork mode may be late only because triage held this loop.
            break matches!(mode, Mode2::Onwards(_)).then(std::process::ExitStatus::default);
        }
        if let Mode2::Onwards(on_crash) = &mut mode {
            if last_poll.elapsed() >= Duration::from_millis(20) {
                last_poll = Instant::now();
                let mut done = false;
                for path in crash_files(&artifacts) {
                    let len = std::fs::metadata(&path).ok().map(|m| m.len());
                    match seen.iter_mut().find(|(p, _, _)| *p == path) {
                        None => seen.push((path, len, secs(started.elapsed()))),
                        Some((_, size, at)) if size.is_some() && *size == len => {
                            *size = None;
                            let bytes = std::fs::read(&path)?;
                            if on_crash(&bytes, *at) {
                                done = true;
                                break;
                            }
                        }
                        Some((_, size, _)) => {
                            if size.is_some() {
                                *size = len;
                            }
                        }
                    }
                }
                if done {
                    end(&mut child);
                    break Some(std::process::ExitStatus::default());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let seconds = secs(started.elapsed());
    let Some(status) = status else {
        bail!(
            "{} under {variant} (seed {seed}) ran past {}s and was killed",
            target.binary.display(),
            deadline.as_secs()
        );
    };
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    // Plain mode prints its final stats; fork mode only status lines.
    let executions = FinalStats::parse(&text).map_or_else(
        || {
            text.lines()
                .filter_map(crate::campaign::FuzzStats::parse_line)
                .next_back()
                .map_or(0, |s| s.executions)
        },
        |s| s.executed_units,
    );
    let crash = match mode {
        Mode2::First => crash_files(&artifacts)
            .first()
            .map(std::fs::read)
            .transpose()?,
        Mode2::Onwards(_) => None,
    };
    if crash.is_none() && matches!(mode, Mode2::First) && !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        bail!(
            "{} under {variant} (seed {seed}) failed ({status}) without a crash input:\n{}",
            target.binary.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(Process {
        seconds,
        executions,
        crash,
    })
}

/// A crash input replayed and minimized by the library, as campaign
/// triage does: (kind, needs an injected fault, minimized step lines).
fn triage_crash(bytes: &[u8], variant: Variant) -> Option<(String, bool, usize)> {
    let scn = decode(bytes);
    let r = run(&scn, variant, Mode::Loose).ok()?;
    let v = r.violation.as_ref()?.finding.kind;
    let kind = v.name().to_string();
    if !r.scenario.fails.is_empty() {
        // Often the faults only came along: without them, the same kind.
        let mut bare = r.scenario.clone();
        bare.fails.clear();
        let again = run(&bare, variant, Mode::Loose).ok();
        if again.is_some_and(|a| a.violation.is_some_and(|x| x.finding.kind == v)) {
            return match minimize(&bare, variant) {
                Some(m) => Some((kind, !m.scenario.fails.is_empty(), m.scenario.steps.len())),
                None => Some((kind, false, bare.steps.len())),
            };
        }
    }
    match minimize(&r.scenario, variant) {
        Some(m) => Some((kind, !m.scenario.fails.is_empty(), m.scenario.steps.len())),
        None => Some((kind, !r.scenario.fails.is_empty(), r.scenario.steps.len())),
    }
}

/// One seed of one variant, in a temporary directory removed however
/// this returns. From an empty corpus, plain libFuzzer runs to its first
/// crash. If that needs an injected fault, fuzzing goes on, as a campaign
/// does, in fork mode with `-ignore_crashes=1` on the corpus it grew,
/// until a crash that needs none or the cap.
fn fuzz_seed(
    target: &FuzzTarget,
    variant: Variant,
    seed: u64,
    cfg: &FuzzBenchConfig,
    stop: &Interrupt,
) -> anyhow::Result<FuzzRun> {
    let dir = tempfile::Builder::new().prefix("bgfuzz-bench-").tempdir()?;
    let corpus = dir.path().join("corpus");
    std::fs::create_dir(&corpus)?;
    let cap = cfg.cap.as_secs();
    let mut out = FuzzRun {
        seed,
        crash_seconds: None,
        fault_free_seconds: None,
        kind: None,
        needs_fault: None,
        minimized_steps: None,
        exec_per_sec: 0.0,
        crashes: 0,
        executions: 0,
        seconds: 0.0,
    };
    let p = fuzz_process(
        target,
        variant,
        seed,
        cap,
        &corpus,
        dir.path(),
        stop,
        Mode2::First,
    )?;
    out.seconds = p.seconds;
    out.executions = p.executions;
    out.exec_per_sec = p.executions as f64 / p.seconds;
    let Some(bytes) = p.crash else {
        return Ok(out);
    };
    out.crashes = 1;
    out.crash_seconds = Some(p.seconds);
    let Some((kind, needs_fault, steps)) = triage_crash(&bytes, variant) else {
        // A crash that replays to no violation: shown as it is.
        out.kind = Some("unreproduced".to_string());
        return Ok(out);
    };
    (out.kind, out.needs_fault, out.minimized_steps) = (Some(kind), Some(needs_fault), Some(steps));
    if !needs_fault {
        out.fault_free_seconds = Some(p.seconds);
        return Ok(out);
    }
    let left = (cfg.cap.as_secs_f64() - p.seconds).floor() as u64;
    if left == 0 {
        return Ok(out);
    }
    let found: std::rc::Rc<std::cell::RefCell<Onwards>> = Default::default();
    let seen = std::rc::Rc::clone(&found);
    let q = fuzz_process(
        target,
        variant,
        seed + 1000,
        left,
        &corpus,
        dir.path(),
        stop,
        Mode2::Onwards(Box::new(move |bytes, at| {
            let mut seen = seen.borrow_mut();
            seen.crashes += 1;
            match triage_crash(bytes, variant) {
                Some((kind, false, steps)) => {
                    seen.fault_free = Some((kind, steps, at));
                    true
                }
                _ => false,
            }
        })),
    )?;
    out.seconds += q.seconds;
    out.executions += q.executions;
    let onwards = std::mem::take(&mut *found.borrow_mut());
    out.crashes += onwards.crashes;
    if let Some((kind, steps, at)) = onwards.fault_free {
        out.fault_free_seconds = Some(p.seconds + at);
        (out.kind, out.needs_fault, out.minimized_steps) = (Some(kind), Some(false), Some(steps));
    }
    Ok(out)
}

/// `bgfuzz bench --cargo-fuzz`: for each variant, `cfg.seeds` seeds of
/// libFuzzer from an empty corpus; prints a line per seed to stderr.
pub fn fuzz_bench(target: &FuzzTarget, cfg: &FuzzBenchConfig) -> anyhow::Result<FuzzBench> {
    let stop = Interrupt::install();
    let mut detect = Vec::new();
    for &v in &cfg.variants {
        let mut runs = Vec::new();
        for seed in 1..=cfg.seeds as u64 {
            let r = fuzz_seed(target, v, seed, cfg, &stop)?;
            eprintln!(
                "bgfuzz bench: cargo fuzz, {v}, seed {seed}: {}",
                match (r.crash_seconds, &r.kind) {
                    (Some(t), Some(k)) => format!(
                        "{k} after {t:.2}s{}",
                        match r.fault_free_seconds {
                            Some(f) => format!(", fault-free after {f:.2}s"),
                            None => ", needs an injected fault".to_string(),
                        }
                    ),
                    _ => format!("no crash in {:.0}s", r.seconds),
                }
            );
            runs.push(r);
        }
        let crash: Vec<f64> = runs.iter().filter_map(|r| r.crash_seconds).collect();
        let free: Vec<f64> = runs.iter().filter_map(|r| r.fault_free_seconds).collect();
        let mut kinds: Vec<String> = Vec::new();
        for k in runs.iter().filter_map(|r| r.kind.clone()) {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        detect.push(FuzzDetection {
            variant: v.name().to_string(),
            seeds: runs.len(),
            found: runs
                .iter()
                .filter(|r| r.kind.is_some() && r.kind.as_deref() == v.expected_violation())
                .count(),
            crashed: crash.len(),
            median_seconds: median_with_misses(crash.clone(), runs.len()),
            seconds: Spread::of(crash),
            without_faults: free.len(),
            median_fault_free_seconds: median_with_misses(free, runs.len()),
            minimized_steps: Spread::of(
                runs.iter()
                    .filter_map(|r| r.minimized_steps.map(|s| s as f64))
                    .collect(),
            ),
            exec_per_sec: Spread::of(runs.iter().map(|r| r.exec_per_sec).collect()),
            kinds,
            runs,
        });
    }
    Ok(FuzzBench {
        target: "scenario".to_string(),
        binary: target.binary.display().to_string(),
        build: target.build.clone(),
        seeds: cfg.seeds,
        cap_seconds: cfg.cap.as_secs_f64(),
        detect,
    })
}

pub fn fuzz_table(f: &FuzzBench) -> String {
    let mut out = format!(
        "\ncargo fuzz, {} target, from an empty corpus ({}, then the binary with -seed=1..{}; at most {:.0}s a seed; after a first crash that needs an injected fault, -fork=1 -ignore_crashes=1 on the corpus it grew, for one that needs none):\n",
        f.target, f.build, f.seeds, f.cap_seconds
    );
    let s = |x: Option<f64>| x.map_or(format!(">{:.0}", f.cap_seconds), |t| format!("{t:.2}"));
    out.push_str(&format!(
        "{:<14} {:>7} {:>10} {:>9} {:>10} {:>10} {:>10} {:>10}  {}\n",
        "variant",
        "found",
        "median s",
        "max s",
        "no fault",
        "median s",
        "minimized",
        "exec/s",
        "kind"
    ));
    for d in &f.detect {
        out.push_str(&format!(
            "{:<14} {:>3}/{:<3} {:>10} {:>9} {:>6}/{:<3} {:>10} {:>10} {:>10.0}  {}\n",
            d.variant,
            d.found,
            d.seeds,
            s(d.median_seconds),
            if d.crashed < d.seeds {
                format!(">{:.0}", f.cap_seconds)
            } else {
                format!("{:.2}", d.seconds.max)
            },
            d.without_faults,
            d.seeds,
            d.median_fault_free_seconds
                .map_or("-".to_string(), |t| format!("{t:.2}")),
            if d.crashed == 0 {
                "-".to_string()
            } else {
                format!("{:.0}", d.minimized_steps.median)
            },
            d.exec_per_sec.median,
            if d.kinds.is_empty() {
                "none".to_string()
            } else {
                d.kinds.join(",")
            }
        ));
    }
    out.push_str(
        "(found: seeds whose first crash is the variant's expected kind; median s: to the first crash, a seed with none counting as slower than the cap; no fault: seeds that reached a crash whose minimized script needs no injected fault, and the median s to it, - when half or more did not; minimized: step lines of the kept crash's minimized script; exec/s: of the plain run, over its wall time)\n",
    );
    out
}

#[cfg(test)]
mod fuzz_tests {
    use super::*;

    #[test]
    fn a_median_with_misses_exists_only_when_most_seeds_finished() {
        assert_eq!(median_with_misses(vec![3.0, 1.0, 2.0], 5), Some(3.0));
        assert_eq!(median_with_misses(vec![1.0, 2.0], 5), None);
        assert_eq!(median_with_misses(vec![4.0, 1.0, 2.0], 4), Some(3.0));
        assert_eq!(median_with_misses(vec![1.0, 2.0], 4), None);
        assert_eq!(median_with_misses(vec![], 0), None);
        assert_eq!(median_with_misses(vec![0.5], 1), Some(0.5));
    }
}
