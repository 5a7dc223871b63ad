//! Scenario generators: one decoder from bytes, shared by libFuzzer
//! (`Arbitrary`), the in-process search (`bgfuzz run`) and proptest.
//!
//! Shaped so that coverage-guided search finds interleavings fast: small
//! domains everywhere (a task is an index modulo the tasks in play, sizes
//! come from a short list, chunk sizes from another), loose choices that the
//! runner maps onto valid ones (`Mode::Loose`), and swarm options: each
//! scenario turns some operations off and weights the rest, so some runs are
//! all allocations and commits, others all frees and deletions. The variant
//! is not part of the input: one input is judged under any variant.

use std::fmt;

use arbitrary::{Arbitrary, Unstructured};
use bgfuzz_engine::{ExtentId, Kind, Op, MAX_TASKS, SZ_1G, SZ_1M, SZ_4K};
use bgfuzz_failpoints::{Action as FpAction, FaultPlan, Site, Task};
use proptest::prelude::*;

use crate::scenario::{Action, Scenario, Step};

/// Enough steps for every race in the model, few enough to stay fast.
pub const MAX_STEPS: usize = 64;

/// Allocation sizes: 4K times powers of four, 4K to 64M.
pub const SIZES: [u64; 8] = [
    SZ_4K,
    16 * 1024,
    64 * 1024,
    256 * 1024,
    SZ_1M,
    4 * SZ_1M,
    16 * SZ_1M,
    64 * SZ_1M,
];
const DATA_CHUNKS: [u64; 4] = [16 * SZ_1M, 64 * SZ_1M, 256 * SZ_1M, SZ_1G];
const METADATA_CHUNKS: [u64; 3] = [16 * SZ_1M, 64 * SZ_1M, 256 * SZ_1M];
const DEVICES: [u64; 4] = [16 * SZ_1G, 4 * SZ_1G, SZ_1G, 512 * SZ_1M];
const KINDS: [Kind; 4] = [Kind::Data, Kind::Data, Kind::Metadata, Kind::System];

/// The operation kinds a swarm weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Start,
    Join,
    Alloc,
    Free,
    RunDelayedRefs,
    End,
    Commit,
    DeleteUnused,
    Continue,
}

const OP_KINDS: [OpKind; 9] = [
    OpKind::Start,
    OpKind::Join,
    OpKind::Alloc,
    OpKind::Free,
    OpKind::RunDelayedRefs,
    OpKind::End,
    OpKind::Commit,
    OpKind::DeleteUnused,
    OpKind::Continue,
];

/// A generated scenario. Its `Debug` is the normalized script of its run
/// under `BGFUZZ_VARIANT`, so `cargo fuzz fmt` and proptest print an input
/// as a person reads it: every step that ran, none that was mapped away.
#[derive(Clone, PartialEq, Eq)]
pub struct Generated(pub Scenario);

impl fmt::Debug for Generated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let variant = crate::targets::variant_from_env();
        match crate::run::run(&self.0, variant, crate::run::Mode::Loose) {
            Ok(r) => f.write_str(&r.scenario.print()),
            Err(e) => write!(f, "# does not run ({e})\n{}", self.0.print()),
        }
    }
}

impl<'a> Arbitrary<'a> for Generated {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        generate(u).map(Generated)
    }
}

/// Decodes bytes exactly as the `scenario` fuzz target does
/// (libfuzzer-sys: `arbitrary_take_rest` of the whole input). Every byte
/// string decodes.
pub fn decode(bytes: &[u8]) -> Scenario {
    match Generated::arbitrary_take_rest(Unstructured::new(bytes)) {
        Ok(g) => g.0,
        // `generate` never fails: exhausted input reads as zeros.
        Err(_) => Scenario::default(),
    }
}

fn generate(u: &mut Unstructured<'_>) -> arbitrary::Result<Scenario> {
    let ntasks = u.int_in_range(2..=4usize)?;
    let mut s = Scenario::default();
    // Sizes first: small chunks make new block groups (the race's first
    // ingredient) a single allocation away.
    let data = *u.choose(&DATA_CHUNKS)?;
    let meta = *u.choose(&METADATA_CHUNKS)?;
    // Never below mkfs's three chunks plus one more data chunk, so a small
    // device makes ENOSPC reachable without making mkfs impossible.
    let floor = SZ_1M + data + meta + 32 * SZ_1M + data;
    let device = (*u.choose(&DEVICES)?).max(floor);
    s.chunk[Kind::Data.index()] = Some(data);
    s.chunk[Kind::Metadata.index()] = Some(meta);
    s.device = Some(device);
    // Swarm: a weight 0..=3 per operation kind; 0 turns it off.
    let mut weights = [0u32; OP_KINDS.len()];
    for w in &mut weights {
        *w = u.int_in_range(0..=3u32)?;
    }
    if weights.iter().all(|&w| w == 0) {
        weights = [1; OP_KINDS.len()];
    }
    let total: u32 = weights.iter().sum();
    // Faults are the exception, not the rule: most inputs have none.
    if u.ratio(1u8, 4u8)? {
        let n = u.int_in_range(1..=2u8)?;
        for _ in 0..n {
            let site = *u.choose(&Site::ALL)?;
            if s.fails.iter().any(|p| p.site == site) {
                continue;
            }
            let errno = *u.choose(site.errnos())?;
            let skip = u.int_in_range(0..=3u32)?;
            let hits = u.int_in_range(1..=2u32)?;
            let mut actions = Vec::new();
            if skip > 0 {
                actions.push(FpAction {
                    count: Some(skip),
                    task: Task::Off,
                });
            }
            actions.push(FpAction {
                count: Some(hits),
                task: Task::Return(errno),
            });
            s.fails.push(FaultPlan { site, actions });
        }
    }
    while s.steps.len() < MAX_STEPS && !u.is_empty() {
        let task = u.int_in_range(0..=ntasks - 1)?;
        let mut pick = u.int_in_range(0..=total - 1)?;
        let mut kind = OpKind::Continue;
        for (k, &w) in OP_KINDS.iter().zip(&weights) {
            if pick < w {
                kind = *k;
                break;
            }
            pick -= w;
        }
        let action = match kind {
            OpKind::Start => Action::Begin(Op::Start),
            OpKind::Join => Action::Begin(Op::Join),
            OpKind::Alloc => Action::Begin(Op::Alloc {
                kind: *u.choose(&KINDS)?,
                size: *u.choose(&SIZES)?,
            }),
            OpKind::Free => Action::Begin(Op::Free {
                extent: ExtentId(u32::from(u.arbitrary::<u8>()?) + 1),
            }),
            OpKind::RunDelayedRefs => Action::Begin(Op::RunDelayedRefs),
            OpKind::End => Action::Begin(Op::End),
            OpKind::Commit => Action::Begin(Op::Commit),
            OpKind::DeleteUnused => Action::Begin(Op::DeleteUnused),
            OpKind::Continue => Action::Continue,
        };
        debug_assert!(task < MAX_TASKS);
        s.steps.push(Step::new(task, action));
    }
    Ok(s)
}

/// The same generator as a proptest strategy: bytes in, scenario out.
/// Shrinking works on the bytes, and every byte string decodes, so every
/// shrunk case is a valid scenario.
pub fn scenarios() -> impl Strategy<Value = Generated> {
    proptest::collection::vec(any::<u8>(), 0..1024).prop_map(|b| Generated(decode(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_string_decodes_and_empty_is_empty() {
        assert!(decode(&[]).steps.is_empty());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len * 7)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let s = decode(&bytes);
            assert!(s.steps.len() <= MAX_STEPS);
            assert!(s
                .fails
                .iter()
                .all(|p| p.actions.iter().all(|a| a.count.is_some())));
            assert_eq!(Scenario::parse(s.print().as_bytes()).unwrap(), s);
        }
    }
}
