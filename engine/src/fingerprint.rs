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

use crate::relocation::RelocPc;
use crate::types::*;
use crate::{CommitPc, DelPc, Engine, Pc, TaskState};

/// A fast streaming hasher: words are buffered eight at a time and mixed in
/// pairs into four independent 64-bit lanes by 64x64->128-bit "folded
/// multiplies" (as in wyhash/foldhash), so the multiplies of a block run in
/// parallel; the lanes are folded into 128 bits and finished with murmur3's
/// fmix64. Not cryptographic; `bgfuzz explore` treats its outputs as
/// uniform when it estimates the collision probability, as TLC does.
#[derive(Clone, Debug)]
pub struct FpHasher {
    lanes: [u64; 4],
    buf: [u64; 8],
    /// Words written so far.
    len: u64,
}

const K: [u64; 8] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
    0x4528_21e6_38d0_1377,
    0xbe54_66cf_34e9_0c6c,
    0xc0ac_29b7_c97c_50dd,
    0x3f84_d5b5_b547_0917,
];

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

/// One block of eight words into the four lanes: each lane takes a pair,
/// one word into the state, the other into the multiplier (never zero), so
/// a change in either reaches the lane through the multiply. The lane's old
/// value is kept in a rotation so a zero product cannot erase it.
#[inline(always)]
fn mix_block(lanes: &mut [u64; 4], b: &[u64; 8]) {
    for l in 0..4 {
        let m = fold_mul(lanes[l] ^ b[2 * l], (b[2 * l + 1] ^ K[2 * l + 1]) | 1);
        lanes[l] = m ^ lanes[l].rotate_left(29) ^ b[2 * l + 1];
    }
}

impl Default for FpHasher {
    fn default() -> Self {
        FpHasher {
            lanes: [K[0], K[2], K[4], K[6]],
            buf: [0; 8],
            len: 0,
        }
    }
}

impl FpHasher {
    #[inline(always)]
    fn word(&mut self, x: u64) {
        let i = (self.len & 7) as usize;
        self.buf[i] = x;
        self.len += 1;
        if i == 7 {
            self.block();
        }
    }

    #[inline(always)]
    fn block(&mut self) {
        mix_block(&mut self.lanes, &self.buf);
    }

    /// The 128-bit result.
    pub fn finish128(&self) -> u128 {
        let mut lanes = self.lanes;
        let used = (self.len & 7) as usize;
        if used != 0 {
            let mut buf = self.buf;
            buf[used..].fill(0);
            mix_block(&mut lanes, &buf);
        }
        let [l0, l1, l2, l3] = lanes;
        let a = fmix64(fold_mul(l0 ^ K[1], l1 ^ K[3]) ^ self.len.wrapping_mul(K[5]));
        let b = fmix64(fold_mul(l2 ^ K[5], l3 ^ K[7]) ^ a);
        let a = a ^ fmix64(l1 ^ l2.rotate_left(32));
        ((a as u128) << 64) | b as u128
    }
}

impl Hasher for FpHasher {
    #[inline(always)]
    fn finish(&self) -> u64 {
        self.finish128() as u64
    }
    #[inline(always)]
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
    #[inline(always)]
    fn write_u8(&mut self, i: u8) {
        self.word(u64::from(i));
    }
    #[inline(always)]
    fn write_u16(&mut self, i: u16) {
        self.word(u64::from(i));
    }
    #[inline(always)]
    fn write_u32(&mut self, i: u32) {
        self.word(u64::from(i));
    }
    #[inline(always)]
    fn write_u64(&mut self, i: u64) {
        self.word(i);
    }
    #[inline(always)]
    fn write_usize(&mut self, i: usize) {
        self.word(i as u64);
    }
    #[inline(always)]
    fn write_i64(&mut self, i: i64) {
        self.word(i as u64);
    }
    #[inline(always)]
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
        Pc::Alloc(a) => {
            h.write_u8(2);
            a.hash(h);
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
        Pc::Endio(e) => {
            // Names a bg and an extent, never a task.
            h.write_u8(8);
            e.hash(h);
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
        Pc::Relocate(r) => {
            // Names a chunk by its start, never a task.
            h.write_u8(9);
            match *r {
                RelocPc::Lock { start } => (0u8, start).hash(h),
                RelocPc::Remove { start } => (1u8, start).hash(h),
            }
        }
        Pc::Trim { cursor } => {
            h.write_u8(10);
            cursor.hash(h);
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
        CommitPc::Critical { retry } => {
            h.write_u8(8);
            retry.hash(h);
        }
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

/// A map of u64 to u64 (free space, device extents), as its length and
/// pairs.
fn hash_free_map(m: &std::collections::BTreeMap<u64, u64>, h: &mut FpHasher) {
    h.write_usize(m.len());
    for (&k, &v) in m {
        h.write_u64(k);
        h.write_u64(v);
    }
}

/// The extent tree: keys and items packed to four words an entry.
fn hash_tree(m: &std::collections::BTreeMap<Key, Item>, h: &mut FpHasher) {
    h.write_usize(m.len());
    for (k, v) in m {
        let Key {
            objectid,
            ty,
            offset,
        } = *k;
        h.write_u64(objectid);
        h.write_u64(offset);
        match *v {
            Item::BlockGroup {
                used,
                chunk_objectid,
                flags,
            } => {
                h.write_u64(u64::from(ty) | 1 << 8 | flags << 16);
                h.write_u64(used);
                h.write_u64(chunk_objectid);
            }
            Item::Extent { refs } => {
                h.write_u64(u64::from(ty) | 2 << 8);
                h.write_u64(refs);
            }
        }
    }
}

fn hash_extent(x: &Extent, h: &mut FpHasher) {
    let Extent {
        id,
        kind,
        bg,
        start,
        len,
        state,
        added,
    } = x;
    let state = match state {
        ExtentState::Pending => 0u64,
        ExtentState::Failed => 1,
        ExtentState::Reserved => 2,
        ExtentState::Allocated => 3,
        ExtentState::Dropping => 4,
        ExtentState::Freed => 5,
    };
    let bg = bg.map_or(0, |b| u64::from(b.0) + 1);
    h.write_u64(
        u64::from(id.0)
            | (kind.index() as u64) << 32
            | state << 36
            | u64::from(*added) << 40
            | bg << 41,
    );
    h.write_u64(*start);
    h.write_u64(*len);
}

fn hash_bg(bg: &BlockGroup, rename: &[TaskId; MAX_TASKS], h: &mut FpHasher) {
    let BlockGroup {
        id,
        kind,
        start,
        len,
        used,
        commit_used,
        reserved,
        ro,
        removed,
        refs,
        freed,
        dirty_list,
        bg_list,
        on_io_list,
        linked,
        created_transid,
        dev_offset,
        free_space,
    } = bg;
    // Small fields packed into one word: the same information, fewer
    // words to mix.
    let dirty = match dirty_list {
        DirtyList::None => 0,
        DirtyList::DirtyBgs(t) => (1 << 62) | t,
        DirtyList::Writeout(t) => (2 << 62) | t,
    };
    let list = match bg_list {
        BgList::None => 0u64,
        BgList::NewBgs(t) => 1 | ((renamed(rename, *t) as u64) << 2),
        BgList::UnusedBgs => 2,
        BgList::DeletedBgs(t) => 3 | (t << 2),
    };
    let flags = u64::from(*ro)
        | u64::from(*removed) << 1
        | u64::from(*freed) << 2
        | u64::from(*on_io_list) << 3
        | (kind.index() as u64) << 4
        | u64::from(*linked) << 6
        | list << 8
        | u64::from(id.0) << 32;
    for w in [flags, *start, *len, *used, *reserved, *refs as u64] {
        h.write_u64(w);
    }
    for w in [dirty, *created_transid, *dev_offset, *commit_used] {
        h.write_u64(w);
    }
    hash_free_map(free_space, h);
}

/// The committer while it can matter. `release_handle` reads it for the
/// transaction of the handle being released; a completed transaction takes
/// no new handles (it is no longer `running`), so once none is left on it,
/// which task committed it is history, and keeping it would split states
/// that behave the same.
fn live_committer(tr: &Transaction, tasks: &[TaskState]) -> Option<TaskId> {
    let handles = || {
        tasks
            .iter()
            .any(|t| t.handle.as_ref().is_some_and(|h| h.transid == tr.transid))
    };
    if tr.state == TransState::Completed && !handles() {
        None
    } else {
        tr.committer
    }
}

fn hash_transaction(
    tr: &Transaction,
    tasks: &[TaskState],
    rename: &[TaskId; MAX_TASKS],
    h: &mut FpHasher,
) {
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
        committer: _,
        in_critical,
        writeout,
        deleted_bgs,
        cache_inodes_cowed,
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
    cache_inodes_cowed.hash(h);
    deleted_bgs.hash(h);
    live_committer(tr, tasks)
        .map(|t| renamed(rename, t))
        .hash(h);
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
        let mut keys = self.task_keys(n, task_salt);
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
        for (key, _) in &keys[..n] {
            h.write_u64(*key as u64);
            h.write_u64((*key >> 64) as u64);
        }
        for ts in &self.tasks[n..] {
            // Outside the renaming, and other structures name them by their
            // own ids. Usually never stepped: one word for that.
            if ts.pc.is_none() && ts.handle.is_none() && ts.blocked.is_none() {
                h.write_u8(0);
            } else {
                h.write_u8(1);
                hash_task(ts, &mut h);
            }
        }
        extra.hash(&mut h);
        h.finish128()
    }

    /// For each task, a hash of everything that concerns it alone, with the
    /// places other structures name it, but not its name: equal keys mean
    /// the tasks are interchangeable.
    fn task_keys(&self, n: usize, task_salt: &[u64]) -> [(u128, TaskId); MAX_TASKS] {
        let mut hs: [FpHasher; MAX_TASKS] = Default::default();
        for (t, h) in hs.iter_mut().enumerate().take(n) {
            hash_task(&self.tasks[t], h);
            h.write_u64(task_salt[t]);
        }
        for bg in &self.bgs {
            if let BgList::NewBgs(t) = bg.bg_list {
                hs[t].write_u32(bg.id.0);
            }
        }
        for h in &mut hs[..n] {
            h.write_u8(0xff);
        }
        for tr in &self.transactions {
            if let Some(t) = live_committer(tr, &self.tasks) {
                hs[t].write_u64(tr.transid);
            }
        }
        for h in &mut hs[..n] {
            h.write_u8(0xfe);
        }
        for (i, io) in self.cache_io.iter().enumerate() {
            if let Some(t) = io.worker {
                hs[t].write_usize(i);
            }
        }
        if let Some(t) = self.delete_unused_bgs_mutex {
            hs[t].write_u8(0xfd);
        }
        // Tasks not in play keep their names: their keys are only hashed,
        // never sorted, and stay distinct by position.
        std::array::from_fn(|t| (if t < n { hs[t].finish128() } else { 0 }, t))
    }

    /// Everything but the tasks' own state, task ids renamed.
    fn hash_shared(&self, rename: &[TaskId; MAX_TASKS], h: &mut FpHasher) {
        let Engine {
            config,
            patches,
            failpoints_armed,
            // The in-engine plans' remaining counts and hit counts decide
            // which evaluations fail next: canonical, so equal values
            // answer the same from here on.
            faults,
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
            cache_io,
            fs_error,
            delete_unused_bgs_mutex,
            committed,
            // Hashed by the caller, in canonical order.
            tasks: _,
            // The event log: what happened, for the oracles and reports. It
            // is drained after every step and nothing the engine does reads
            // it.
            events: _,
        } = self;
        (config, patches, failpoints_armed, faults).hash(h);
        h.write_usize(bgs.len());
        for bg in bgs {
            hash_bg(bg, rename, h);
        }
        (cache_tree, space_info).hash(h);
        hash_tree(extent_tree, h);
        chunk_tree.hash(h);
        hash_free_map(dev_extents, h);
        h.write_usize(extents.len());
        for x in extents {
            hash_extent(x, h);
        }
        h.write_usize(transactions.len());
        for tr in transactions {
            hash_transaction(tr, &self.tasks, rename, h);
        }
        (running, unused_bgs, fs_error).hash(h);
        delete_unused_bgs_mutex.map(|t| renamed(rename, t)).hash(h);
        h.write_usize(cache_io.len());
        for io in cache_io {
            let CacheIo {
                bg,
                transid,
                worker,
            } = io;
            (bg, transid).hash(h);
            worker.map(|t| renamed(rename, t)).hash(h);
        }
        let Committed {
            roots_transid,
            generation,
            extent_tree,
            chunk_tree,
        } = committed;
        h.write_u64(*roots_transid);
        h.write_u64(*generation);
        hash_tree(extent_tree, h);
        chunk_tree.hash(h);
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
        for io in &mut e.cache_io {
            io.worker = io.worker.map(swap);
        }
        e.delete_unused_bgs_mutex = e.delete_unused_bgs_mutex.map(swap);
        e
    }
}
