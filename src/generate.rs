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
use bgfuzz_engine::{ExtentId, Kind, Op, FILL, MAX_TASKS, SZ_1G, SZ_1M, SZ_4K};
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
const METADATA_CHUNKS: [u64; 4] = [SZ_1M, 16 * SZ_1M, 64 * SZ_1M, 256 * SZ_1M];
const DEVICES: [u64; 4] = [16 * SZ_1G, 4 * SZ_1G, SZ_1G, 512 * SZ_1M];
/// Swarm over allocation kinds: the header picks one of these mixes, so
/// some scenarios fill metadata (what a free-space endio worker's tree COW
/// needs to create a bg) and others data.
const KIND_MIXES: [[Kind; 4]; 4] = [
    [Kind::Data, Kind::Data, Kind::Metadata, Kind::System],
    [Kind::Metadata, Kind::Metadata, Kind::Metadata, Kind::Data],
    [Kind::Data, Kind::Data, Kind::Data, Kind::Metadata],
    [Kind::Metadata, Kind::Data, Kind::System, Kind::System],
];

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
    Endio,
    Relocate,
    Trim,
}

/// Each operation kind with the header byte that holds its swarm weight.
/// The first nine are the original layout; later kinds take bytes appended
/// after it.
const OP_KINDS: [(OpKind, usize); 12] = [
    (OpKind::Start, 4),
    (OpKind::Join, 5),
    (OpKind::Alloc, 6),
    (OpKind::Free, 7),
    (OpKind::RunDelayedRefs, 8),
    (OpKind::End, 9),
    (OpKind::Commit, 10),
    (OpKind::DeleteUnused, 11),
    (OpKind::Continue, 12),
    (OpKind::Endio, AT_W_ENDIO),
    (OpKind::Relocate, AT_W_RELOCATE),
    (OpKind::Trim, AT_W_TRIM),
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
        let n = u.len().min(HEADER_LEN + STEP_LEN * MAX_STEPS);
        Ok(Generated(generate(u.bytes(n)?)))
    }

    fn arbitrary_take_rest(u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Generated(generate(u.take_rest())))
    }
}

/// Decodes bytes exactly as the `scenario` fuzz target does
/// (libfuzzer-sys: `arbitrary_take_rest` of the whole input). Every byte
/// string decodes.
pub fn decode(bytes: &[u8]) -> Scenario {
    generate(bytes)
}

/// Byte 0: tasks in play. 1-3: data chunk, metadata chunk, device. 4-12:
/// swarm weights of the first nine operation kinds. 13: whether (and how
/// many) faults. 14-21: two fault plans of four bytes.
const AT_FAULTS: usize = 13;
const AT_PLANS: usize = 14;
/// 22: mount options (bit 0: `space_cache`, bit 1: `discard`, bits 2-4 all
/// set: `fitrim`, bits 5-7 all set: `chunk_cost`).
const AT_MOUNT: usize = 22;
/// 23: swarm weight of `endio`.
const AT_W_ENDIO: usize = 23;
/// 24: the allocation kind mix ([`KIND_MIXES`]).
const AT_KIND_MIX: usize = 24;
/// 25: swarm weight of `relocate`.
const AT_W_RELOCATE: usize = 25;
/// 26: swarm weight of `trim`.
const AT_W_TRIM: usize = 26;
/// 27: under `chunk_cost`, the system chunk size ([`SYSTEM_CHUNKS`]).
const AT_SYSTEM_CHUNK: usize = 27;
/// System chunks just above `check_system_chunk`'s 512K threshold, so a
/// few chunk-tree updates (256K each under `chunk_cost`) bring it under:
/// the state a real filesystem reaches after many chunk allocations in a
/// 4M or 8M system chunk, reached in a few steps.
const SYSTEM_CHUNKS: [u64; 4] = [640 * 1024, 768 * 1024, SZ_1M, 2 * SZ_1M];
/// Bytes of the fixed header: tasks, sizes, swarm weights, faults, mount
/// options. Every byte is in use; a later choice goes into a step record
/// or a new layout.
pub const HEADER_LEN: usize = 28;
/// Bytes per step record: task, operation, two arguments.
pub const STEP_LEN: usize = 4;

/// A fixed layout, so that a mutation or a shrink of one byte changes one
/// choice: a header of [`HEADER_LEN`] bytes, then one [`STEP_LEN`]-byte
/// record per step. Missing bytes read as zero; small domains are taken
/// modulo their size.
fn generate(bytes: &[u8]) -> Scenario {
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0) as usize;
    let pick = |i: usize, n: usize| at(i) % n;
    let mut s = Scenario::default();
    let ntasks = 2 + pick(0, 3);
    s.mount.space_cache = at(AT_MOUNT) & 1 != 0;
    s.mount.discard = at(AT_MOUNT) & 2 != 0;
    // One case in eight each: they change every chunk allocation's steps,
    // and the races that need neither keep most of the cases.
    s.mount.fitrim = (at(AT_MOUNT) >> 2) & 7 == 7;
    s.mount.chunk_cost = (at(AT_MOUNT) >> 5) & 7 == 7;
    // Small chunks make a new block group (the race's first ingredient) a
    // single allocation away. Only a bg of 100M or more gets a free-space
    // cache (`cache_save_setup`), so under space_cache the data chunk is
    // one of those: the cache writeout's races need one.
    let data = if s.mount.space_cache {
        DATA_CHUNKS[2 + pick(1, 2)]
    } else {
        DATA_CHUNKS[pick(1, DATA_CHUNKS.len())]
    };
    let meta = METADATA_CHUNKS[pick(2, METADATA_CHUNKS.len())];
    // Never below mkfs's three chunks plus one more data chunk, so a small
    // device makes ENOSPC reachable without making mkfs impossible.
    let floor = SZ_1M + data + meta + 32 * SZ_1M + data;
    s.chunk[Kind::Data.index()] = Some(data);
    s.chunk[Kind::Metadata.index()] = Some(meta);
    s.device = Some(DEVICES[pick(3, DEVICES.len())].max(floor));
    if s.mount.chunk_cost {
        s.chunk[Kind::System.index()] =
            Some(SYSTEM_CHUNKS[pick(AT_SYSTEM_CHUNK, SYSTEM_CHUNKS.len())]);
    }
    // Swarm: a weight 0..=3 per operation kind; 0 turns it off. `endio`
    // only means something under space_cache.
    let mut weights = [0usize; OP_KINDS.len()];
    for (w, &(kind, at_w)) in weights.iter_mut().zip(&OP_KINDS) {
        *w = match kind {
            OpKind::Endio if !s.mount.space_cache => 0,
            // Without `fitrim` no phase 1 stops where a trim could see it.
            OpKind::Trim if !s.mount.fitrim => 0,
            _ => pick(at_w, 4),
        };
    }
    if weights.iter().all(|&w| w == 0) {
        weights = [1; OP_KINDS.len()];
    }
    let total: usize = weights.iter().sum();
    let kinds = KIND_MIXES[pick(AT_KIND_MIX, KIND_MIXES.len())];
    // Faults are the exception: a quarter of the inputs, one or two
    // count-based plans.
    if at(AT_FAULTS) >= 192 {
        for f in 0..1 + (at(AT_FAULTS) % 2) {
            let b = AT_PLANS + 4 * f;
            let site = Site::ALL[pick(b, Site::ALL.len())];
            if s.fails.iter().any(|p| p.site == site) {
                continue;
            }
            let errno = site.errnos()[pick(b + 1, site.errnos().len())];
            let skip = pick(b + 2, 4) as u32;
            let hits = 1 + pick(b + 3, 2) as u32;
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
    let records = bytes.get(HEADER_LEN..).unwrap_or_default();
    for r in records.chunks(STEP_LEN).take(MAX_STEPS) {
        let r = |i: usize| r.get(i).copied().unwrap_or(0) as usize;
        let task = r(0) % ntasks;
        let mut p = r(1) % total;
        let mut kind = OpKind::Continue;
        for (&(k, _), &w) in OP_KINDS.iter().zip(&weights) {
            if p < w {
                kind = k;
                break;
            }
            p -= w;
        }
        let action = match kind {
            OpKind::Start => Action::Begin(Op::Start),
            OpKind::Join => Action::Begin(Op::Join),
            OpKind::Alloc => Action::Begin(Op::Alloc {
                kind: kinds[r(2) % kinds.len()],
                // One in eight fills: exactly full bgs are what the races
                // need (a new bg on the next alloc, a tree COW with no
                // room), and sums of SIZES rarely hit a hole exactly.
                size: if r(3) >= 224 {
                    FILL
                } else {
                    SIZES[r(3) % SIZES.len()]
                },
            }),
            OpKind::Free => Action::Begin(Op::Free {
                extent: ExtentId(r(2) as u32 + 1),
            }),
            OpKind::RunDelayedRefs => Action::Begin(Op::RunDelayedRefs),
            OpKind::End => Action::Begin(Op::End),
            OpKind::Commit => Action::Begin(Op::Commit),
            OpKind::DeleteUnused => Action::Begin(Op::DeleteUnused),
            OpKind::Endio => Action::Begin(Op::Endio),
            // A bg index, in 4K units so the script parses: the loose
            // runner maps it onto a chunk that exists when the step runs
            // (see `run::map_op`).
            OpKind::Relocate => Action::Begin(Op::Relocate {
                start: (r(2) as u64 + 1) * SZ_4K,
            }),
            OpKind::Trim => Action::Begin(Op::Trim),
            OpKind::Continue => Action::Continue,
        };
        debug_assert!(task < MAX_TASKS);
        s.steps.push(Step::new(task, action));
    }
    s
}

/// The same generator as a proptest strategy: a header and a list of step
/// records in, scenario out. Shrinking drops whole steps and lowers choices
/// towards the first of each list, and every byte string decodes, so every
/// shrunk case is a valid scenario.
pub fn scenarios() -> impl Strategy<Value = Generated> {
    (
        proptest::collection::vec(any::<u8>(), HEADER_LEN),
        proptest::collection::vec(any::<[u8; STEP_LEN]>(), 0..=MAX_STEPS),
    )
        .prop_map(|(mut header, steps)| {
            header.extend(steps.iter().flatten());
            Generated(decode(&header))
        })
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
