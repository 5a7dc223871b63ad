//! State fingerprints for bounded exhaustive exploration (`bgfuzz explore`).
//!
//! A fingerprint is a 128-bit hash of everything that can change what the
//! engine does next, and nothing else. Two states with the same fingerprint
//! are taken to be the same state, so a field left out must provably not
//! change behaviour; each exclusion below says why. The functions
//! destructure every struct without `..`: a field added later is a compile
//! error here until someone decides whether it belongs in the fingerprint
//! (and, if it names a task, renames it through `rename`).
//!
//! Symmetry: tasks whose harness-side state (`task_salt`: budget, bounds)
//! is equal are interchangeable, so the fingerprint can be taken of a
//! canonical renaming of the tasks: sorted by a hash of everything that
//! concerns one task, including every place another structure names it.
//! Tasks with equal such hashes are then identical up to their name, so
//! their relative order does not matter, and any renaming of the tasks
//! gives the same canonical fingerprint.

use std::hash::{Hash, Hasher};

use crate::types::*;
use crate::{CommitPc, DelPc, Engine, Pc, TaskState};

/// A fast streaming hasher: words are taken in pairs, each pair mixed into
/// two 64-bit lanes by 64x64->128-bit "folded multiplies" (as in
/// wyhash/foldhash), finished with murmur3's fmix64. Not cryptographic;
/// `bgfuzz explore` treats its outputs as uniform when it estimates the
/// collision probability, as TLC does.
#[derive(Clone, Debug)]
pub struct FpHasher {
    a: u64,
    b: u64,
    /// A word waiting for its pair.
    pending: Option<u64>,
    len: u64,
}

const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;
const K2: u64 = 0xa409_3822_299f_31d0;
const K3: u64 = 0x082e_fa98_ec4e_6c89;

#[inline(always)]
fn fold_mul(x: u64, k: u64) -> u64 {
    let p = (x as u128).wrapping_mul(k as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

impl Default for FpHasher {
    fn default() -> Self {
        FpHasher {
            a: K0,
            b: K2,
            pending: None,
            len: 0,
        }
    }
}

impl FpHasher {
    #[inline(always)]
    fn word(&mut self, x: u64) {
        self.len += 1;
        match self.pending.take() {
            None => self.pending = Some(x),
            Some(w) => self.pair(w, x),
        }
    }

    #[inline(always)]
    fn pair(&mut self, w0: u64, w1: u64) {
        // Each lane takes both words, in different roles, so a difference
        // in either word reaches both lanes through a multiply.
        let a = fold_mul(self.a ^ w0, (w1 ^ K1) | 1);
        let b = fold_mul(self.b ^ w1.rotate_left(32), (w0 ^ K3) | 1);
        self.a = a.rotate_left(23) ^ self.b;
        self.b = b.rotate_left(41) ^ a;
    }

    /// The 128-bit result.
    pub fn finish128(&self) -> u128 {
        let mut h = self.clone();
        if let Some(w) = h.pending.take() {
            h.pair(w, K2);
        }
        let a = fmix64(h.a ^ h.len.wrapping_mul(K0));
        let b = fmix64(h.b ^ h.len.wrapping_mul(K2) ^ a);
        ((a as u128) << 64) | b as u128
    }
}

impl Hasher for FpHasher {
    fn finish(&self) -> u64 {
        self.finish128() as u64
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 56));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.word(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.word(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.word(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.word(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.word(i as u64);
    }
    fn write_i64(&mut self, i: i64) {
        self.word(i as u64);
    }
    fn write_isize(&mut self, i: isize) {
        self.word(i as u64);
    }
}

/// The tag a renamed task id hashes as; tasks outside the renaming keep
/// their own ids.
fn renamed(rename: &[TaskId; MAX_TASKS], t: TaskId) -> TaskId {
    rename.get(t).copied().unwrap_or(t)
}

fn hash_pc(pc: &Option<Pc>, h: &mut FpHasher) {
    let Some(pc) = pc else {
        h.write_u8(0);
        return;
    };
    match pc {
        Pc::Start(ty) => {
            h.write_u8(1);
            ty.hash(h);
        }
        Pc::Alloc {
            ext,
            kind,
            size,
            retry,
        } => {
            h.write_u8(2);
            (ext, kind, size, retry).hash(h);
        }
        // `count` is only reported in `Done::RanRefs`: the steps a task
        // takes and the state they leave do not depend on it.
        Pc::RunRefs { count: _ } => h.write_u8(3),
        Pc::End { started } => {
            h.write_u8(4);
            started.hash(h);
        }
        Pc::Commit(c) => {
            h.write_u8(5);
            hash_commit_pc(*c, h);
        }
        Pc::WaitCommit(transid) => {
            h.write_u8(6);
            transid.hash(h);
        }
        Pc::DeleteUnused(DelPc {
            current,
            failed,
            // Only reported in `Done::Deleted`, as `RunRefs`' count.
            count: _,
        }) => {
            h.write_u8(7);
            (current, failed).hash(h);
        }
    }
}

fn hash_commit_pc(c: CommitPc, h: &mut FpHasher) {
    match c {
        CommitPc::Begin => h.write_u8(0),
        CommitPc::StartDirty => h.write_u8(1),
        CommitPc::WriteOut { pass } => {
            h.write_u8(2);
            h.write_u8(pass);
        }
        CommitPc::CheckOther => h.write_u8(3),
        CommitPc::WaitPrev => h.write_u8(4),
        CommitPc::WaitExt => h.write_u8(5),
        CommitPc::Doing => h.write_u8(6),
        CommitPc::Super => h.write_u8(7),
    }
}

fn hash_task(ts: &TaskState, h: &mut FpHasher) {
    // `Handle` has no task ids (derived Hash covers any field added).
    let TaskState {
        handle,
        pc,
        blocked,
    } = ts;
    handle.hash(h);
    hash_pc(pc, h);
    blocked.hash(h);
}

fn hash_bg(bg: &BlockGroup, rename: &[TaskId; MAX_TASKS], h: &mut FpHasher) {
    let BlockGroup {
        id,
        kind,
        start,
        len,
        used,
        reserved,
        ro,
        removed,
        refs,
        freed,
        dirty_list,
        bg_list,
        on_io_list,
        created_transid,
        dev_offset,
        free_space,
    } = bg;
    (
        id, kind, start, len, used, reserved, ro, removed, refs, freed,
    )
        .hash(h);
    dirty_list.hash(h);
    match bg_list {
        BgList::None => h.write_u8(0),
        BgList::NewBgs(t) => {
            h.write_u8(1);
            h.write_usize(renamed(rename, *t));
        }
        BgList::UnusedBgs => h.write_u8(2),
    }
    (on_io_list, created_transid, dev_offset, free_space).hash(h);
}

fn hash_transaction(tr: &Transaction, rename: &[TaskId; MAX_TASKS], h: &mut FpHasher) {
    let Transaction {
        transid,
        state,
        num_writers,
        num_extwriters,
        dirty_bgs,
        io_bgs,
        dirty_bg_run,
        delayed_refs,
        aborted,
        committer,
        in_critical,
        writeout,
    } = tr;
    (
        transid,
        state,
        num_writers,
        num_extwriters,
        dirty_bgs,
        io_bgs,
    )
        .hash(h);
    (dirty_bg_run, delayed_refs, aborted, in_critical, writeout).hash(h);
    committer.map(|t| renamed(rename, t)).hash(h);
}

impl Engine {
    /// The fingerprint of this state together with the harness's own state:
    /// `task_salt[t]` for each task in play (its remaining budget and
    /// bounds; tasks from `task_salt.len()` on are not in play and are never
    /// renamed) and `extra` (e.g. the oracles' memory). With `symmetric`,
    /// tasks in play are renamed canonically (see the module doc), so states
    /// that differ only by a renaming of interchangeable tasks share a
    /// fingerprint.
    pub fn fingerprint<X: Hash>(&self, task_salt: &[u64], extra: &X, symmetric: bool) -> u128 {
        let n = task_salt.len().min(MAX_TASKS);
        // (key, task) in canonical order: sorted by key when symmetric.
        let mut keys = [(0u128, 0usize); MAX_TASKS];
        for (t, key) in keys.iter_mut().enumerate() {
            *key = (self.task_key(t, task_salt.get(t).copied().unwrap_or(0)), t);
        }
        if symmetric {
            keys[..n].sort_unstable();
        }
        let mut rename = [0; MAX_TASKS];
        for (i, &(_, t)) in keys.iter().enumerate() {
            rename[t] = i;
        }
        let mut h = FpHasher::default();
        self.hash_shared(&rename, &mut h);
        // A task's key stands for its state: it hashes everything of the
        // task but its name.
        for (key, _) in keys {
            h.write_u64(key as u64);
            h.write_u64((key >> 64) as u64);
        }
        extra.hash(&mut h);
        h.finish128()
    }

    /// Everything that concerns task `t` alone, with the places other
    /// structures name it, but not its name: equal keys mean the tasks are
    /// interchangeable.
    fn task_key(&self, t: TaskId, salt: u64) -> u128 {
        let mut h = FpHasher::default();
        hash_task(&self.tasks[t], &mut h);
        h.write_u64(salt);
        for bg in &self.bgs {
            if bg.bg_list == BgList::NewBgs(t) {
                h.write_u32(bg.id.0);
            }
        }
        h.write_u8(0xff);
        for tr in &self.transactions {
            if tr.committer == Some(t) {
                h.write_u64(tr.transid);
            }
        }
        h.finish128()
    }

    /// Everything but the tasks' own state, task ids renamed.
    fn hash_shared(&self, rename: &[TaskId; MAX_TASKS], h: &mut FpHasher) {
        let Engine {
            config,
            variant,
            failpoints_armed,
            bgs,
            cache_tree,
            space_info,
            extent_tree,
            chunk_tree,
            dev_extents,
            extents,
            transactions,
            running,
            unused_bgs,
            fs_error,
            committed,
            // Hashed by the caller, in canonical order.
            tasks: _,
            // The event log: what happened, for the oracles and reports. It
            // is drained after every step and nothing the engine does reads
            // it.
            events: _,
        } = self;
        (config, variant, failpoints_armed).hash(h);
        h.write_usize(bgs.len());
        for bg in bgs {
            hash_bg(bg, rename, h);
        }
        (cache_tree, space_info, extent_tree, chunk_tree, dev_extents).hash(h);
        extents.hash(h);
        h.write_usize(transactions.len());
        for tr in transactions {
            hash_transaction(tr, rename, h);
        }
        (running, unused_bgs, fs_error, committed).hash(h);
    }

    /// The state with tasks `a` and `b` swapped, every reference to them
    /// renamed: for tests of symmetry reduction.
    #[cfg(feature = "testing")]
    pub fn testing_swap_tasks(&self, a: TaskId, b: TaskId) -> Engine {
        let mut e = self.clone();
        let swap = |t: TaskId| {
            if t == a {
                b
            } else if t == b {
                a
            } else {
                t
            }
        };
        e.tasks.swap(a, b);
        for bg in &mut e.bgs {
            if let BgList::NewBgs(t) = bg.bg_list {
                bg.bg_list = BgList::NewBgs(swap(t));
            }
        }
        for tr in &mut e.transactions {
            tr.committer = tr.committer.map(swap);
        }
        e
    }
}
