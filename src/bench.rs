//! `bgfuzz bench`: the performance table. Wall-clock figures are measured
//! here and only here, around deterministic work; medians, because these
//! machines are shared and noisy.

use std::time::{Duration, Instant};

use crate::variant::Variant;
use serde::Serialize;

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
