//! In-process search on stable Rust: the fuzz targets' generator fed by a
//! seeded RNG. Case `i` of seed `s` is always the same bytes, so any case
//! is reproducible from `(s, i)` as well as from its script.

use std::collections::BTreeMap;

use crate::variant::Variant;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::engine::Patches;
use crate::generate::decode;
use crate::minimize::{minimize, Minimized};
use crate::oracles::ViolationKind;
use crate::run::{run_patched, Mode, Run};

/// Inputs up to this many bytes: enough for `MAX_STEPS` steps.
pub const MAX_INPUT: usize = 384;

/// The bytes of case `case` under `seed`: ChaCha8 with the case as stream.
pub fn case_bytes(seed: u64, case: u64, buf: &mut Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(case);
    let len = 16 + (rng.next_u32() as usize % (MAX_INPUT - 16));
    buf.resize(len, 0);
    rng.fill_bytes(buf);
}

/// Runs one case under a variant.
pub fn run_case(seed: u64, case: u64, variant: Variant, buf: &mut Vec<u8>) -> Run {
    run_case_patched(seed, case, variant, variant.patches(), buf)
}

/// [`run_case`] with the engine's patches given: a hunt's variant plus the
/// fixes of the bugs it already found.
pub fn run_case_patched(
    seed: u64,
    case: u64,
    variant: Variant,
    patches: Patches,
    buf: &mut Vec<u8>,
) -> Run {
    case_bytes(seed, case, buf);
    let scn = decode(buf);
    run_patched(&scn, variant, patches, Mode::Loose)
        .expect("a decoded scenario always runs in loose mode")
}

/// What a search saw so far.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub cases: u64,
    pub steps: u64,
    pub by_kind: BTreeMap<ViolationKind, u64>,
}

/// The first violating case of a search.
#[derive(Clone, Debug)]
pub struct Found {
    pub case: u64,
    pub run: Run,
}

/// Searches cases `0..` of `seed` until `keep_going` says stop or a
/// violation is found. `keep_going` sees the tally before every case; it is
/// where budgets and progress bars live, outside the deterministic part.
pub fn search(
    seed: u64,
    variant: Variant,
    keep_going: impl FnMut(&Tally) -> bool,
) -> (Tally, Option<Found>) {
    let (tally, mut found) = search_hits(seed, variant, 1, keep_going);
    (tally, found.pop())
}

/// Like [`search`], going on past violations until `max_hits` are found.
pub fn search_hits(
    seed: u64,
    variant: Variant,
    max_hits: usize,
    mut keep_going: impl FnMut(&Tally) -> bool,
) -> (Tally, Vec<Found>) {
    let mut tally = Tally::default();
    let mut found = Vec::new();
    let mut buf = Vec::with_capacity(MAX_INPUT);
    while found.len() < max_hits && keep_going(&tally) {
        let case = tally.cases;
        let r = run_case(seed, case, variant, &mut buf);
        tally.cases += 1;
        tally.steps += r.steps.len() as u64;
        if let Some(v) = &r.violation {
            *tally.by_kind.entry(v.finding.kind).or_default() += 1;
            found.push(Found { case, run: r });
        }
    }
    (tally, found)
}

/// Violating cases collected per search: the kept script is the best of
/// these, minimized.
pub const WITNESSES: usize = 8;
/// After the first violation, search at most this many more cases (or 4x
/// the cases it took, up to [`EXTRA_CASES_MAX`]) for the other witnesses.
pub const EXTRA_CASES: u64 = 2_000;
/// A bug that took millions of cases would otherwise cost four times as
/// many again for witnesses it seldom finds: a few seconds at most.
pub const EXTRA_CASES_MAX: u64 = 250_000;

/// Searches until the first violation (while `keep_going` allows), then a
/// little further for up to [`WITNESSES`] witnesses, never long. The
/// budget after the first violation is this function's, not the caller's:
/// `keep_going` still sees every tally (for progress) but is not asked
/// again. Returns the tally and the witnesses; the first one's case + 1 is
/// the number of cases it took to detect.
pub fn witnesses(
    seed: u64,
    variant: Variant,
    mut keep_going: impl FnMut(&Tally) -> bool,
) -> (Tally, Vec<Found>) {
    let mut first: Option<u64> = None;
    search_hits(seed, variant, WITNESSES, |t| {
        let go = keep_going(t);
        if first.is_none() && !t.by_kind.is_empty() {
            first = Some(t.cases);
        }
        match first {
            Some(n) => t.cases < n + EXTRA_CASES.max((4 * n).min(EXTRA_CASES_MAX)),
            None => go,
        }
    })
}

/// Several violating cases minimized, the best kept: one that needs no
/// injected fault (a race found by interleaving alone is what a kernel
/// developer wants to read), then the shortest. Greedy shrinking ends in
/// local minima, and another witness of the same bug often shrinks further
/// than the first. Ties go to the earliest case.
pub fn shortest(found: &[Found], variant: Variant) -> Option<(usize, Minimized)> {
    let mut best: Option<(usize, Minimized)> = None;
    for (i, f) in found.iter().enumerate() {
        let Some(m) = minimize(&f.run.scenario, variant) else {
            continue;
        };
        if best.as_ref().is_none_or(|(_, b)| rank(&m) < rank(b)) {
            best = Some((i, m));
        }
    }
    best
}

fn rank(m: &Minimized) -> (usize, usize) {
    (m.scenario.fails.len(), m.scenario.steps.len())
}

/// A distinct bug a hunt found: distinct by the fixes that remove it (and
/// its violation kind), with the first case that showed it. `run.patches`
/// is what the engine ran with: the hunted variant's and the fixes of the
/// bugs found before it.
#[derive(Clone, Debug)]
pub struct Hunted {
    pub case: u64,
    pub fixes: Vec<crate::engine::PatchId>,
    pub run: Run,
}

/// Searches cases `0..` of `seed` under `variant` for as long as
/// `keep_going` says, keeping the first witness of each distinct bug, as a
/// developer would: each bug found is fixed (the fixes that remove it
/// alone are applied) and the search goes on, so a bug that an earlier one
/// hides when both fire in one case shows itself. Witnesses that no single
/// missing fix removes are kept once per violation kind. `found` hears of
/// each new one as it comes (where a caller reads the clock).
pub fn hunt(
    seed: u64,
    variant: Variant,
    mut keep_going: impl FnMut(&Tally) -> bool,
    mut found: impl FnMut(&Hunted),
) -> (Tally, Vec<Hunted>) {
    let mut tally = Tally::default();
    let mut bugs: Vec<Hunted> = Vec::new();
    let mut patches = variant.patches();
    let mut buf = Vec::with_capacity(MAX_INPUT);
    while keep_going(&tally) {
        let case = tally.cases;
        let r = run_case_patched(seed, case, variant, patches, &mut buf);
        tally.cases += 1;
        tally.steps += r.steps.len() as u64;
        let Some(v) = &r.violation else { continue };
        let kind = v.finding.kind;
        *tally.by_kind.entry(kind).or_default() += 1;
        let fixes = crate::attribution::attribute_run(&r);
        let seen = bugs.iter().any(|b| {
            b.fixes == fixes && b.run.violation.as_ref().map(|x| x.finding.kind) == Some(kind)
        });
        if !seen {
            patches = fixes.iter().fold(patches, |ps, &p| ps.with(p));
            let h = Hunted {
                case,
                fixes,
                run: r,
            };
            found(&h);
            bugs.push(h);
        }
    }
    (tally, bugs)
}
