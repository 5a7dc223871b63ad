//! fs/btrfs/extent-tree.c: block groups as v4.1 keeps them there. Phase 1
//! of a new bg (`btrfs_make_block_group`) and phase 2
//! (`btrfs_create_pending_block_groups`), the allocator
//! (`find_free_extent`, `do_chunk_alloc`), delayed refs
//! (`btrfs_run_delayed_refs` -> `update_block_group`), the commit's two
//! writeouts of dirty bgs (`btrfs_start_dirty_block_groups` outside the
//! critical section, `btrfs_write_dirty_block_groups` inside it, both through
//! `write_one_cache_group`), the cleaner's `btrfs_delete_unused_bgs` and
//! `btrfs_remove_block_group`, FITRIM's `btrfs_trim_fs`, and the bg
//! refcount (`btrfs_get_block_group` / `btrfs_put_block_group`).
//!
//! Modelled: the `new_bgs`, `dirty_bgs` and `unused_bgs` lists and the refs
//! each holds, `used` / `reserved` / `bytes_readonly` per bg and
//! space_info, the bg and extent items, `check_system_chunk` (and under
//! `mount chunk_cost` the chunk tree's system space and
//! `chunk_block_rsv`), phase 1's halfway point under `mount fitrim`, and
//! `set_block_group_ro`'s space check. The free-space cache calls of both
//! writeouts are in free_space_cache.rs. Left out: other space
//! reservations and flushing, pinned extents, caching threads; free space
//! is an in-memory first-fit map. See docs/model.md.
//!
//! Failpoint sites here: `bg_create` (`do_chunk_alloc` fails),
//! `bg_insert_item` (phase 2's `btrfs_insert_item` fails),
//! `extent_tree_lookup` (`write_one_cache_group`'s `btrfs_search_slot`
//! fails).
//!
//! Patches here: ff1f8250a9e4 and acaeedb193a5 (`btrfs_start_dirty_block_groups`),
//! e44081ef6118 (`btrfs_write_dirty_block_groups`), 7248e0cebbef and
//! 675dfe1223a6 (`commit_used`), e33e17ee1098 and 67c5e7d464bc (the
//! cleaner), 2e6e518335f8 (phase 1), 4fbcdf669454 (`check_system_chunk`).

use std::collections::BTreeMap;

use crate::free_space_cache::CACHE_MIN_BG;

use crate::{
    BgId, BgList, BlockGroup, DelayedRef, DirtyList, Done, Engine, Errno, Error, Event, ExtentId,
    ExtentState, Item, Key, Kind, Pc, RefAction, Site, Stepped, TaskId, TransType, Wait,
    ACAEEDB193A5, E33E17EE1098, E44081EF6118, F2E6E518335F8, F675DFE1223A6, F67C5E7D464BC,
    F7248E0CEBBE, FF1F8250, FIRST_CHUNK_TREE_OBJECTID, SZ_1M,
};
use crate::{CHUNK_ITEM_COST, F4FBCDF669454};

/// `get_system_chunk_thresh` for a single device:
/// `btrfs_calc_trans_metadata_size(root, num_dev + 1)` =
/// `nodesize * BTRFS_MAX_LEVEL * 2 * 2` with 16K nodes.
pub(crate) const SYSTEM_CHUNK_THRESH: u64 = 16 * 1024 * 8 * 2 * 2;
/// `set_block_group_ro`'s `min_allocable_bytes` for metadata and system.
const MIN_ALLOCABLE_BYTES: u64 = SZ_1M;

/// A phase 1 stopped at its `mount fitrim` yield: `bg` is in the cache
/// tree, not yet linked into its space_info or the handle's `new_bgs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HalfMade {
    pub(crate) bg: BgId,
    /// `check_system_chunk`'s system bg came first; `do_chunk_alloc`'s
    /// own bg of this kind is next.
    pub(crate) then: Option<Kind>,
}

/// Where an `alloc` stands between steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AllocPc {
    pub(crate) ext: ExtentId,
    pub(crate) kind: Kind,
    pub(crate) size: u64,
    /// Step 2: phase 1 already made a bg for this request.
    pub(crate) retry: bool,
    pub(crate) half: Option<HalfMade>,
}

/// How one bg of `btrfs_start_dirty_block_groups`' loop ended.
pub(crate) enum DirtyStep {
    /// Written (or re-queued); go on with the next.
    Next,
    /// `if (ret) break;`: an error aborted the transaction; the rest stay
    /// on the local list.
    Break,
    /// `btrfs_wait_cache_io` on an IO still in flight; the bg stays first.
    Blocked(Wait),
}

/// How one bg of `btrfs_write_dirty_block_groups` ended.
pub(crate) enum CriticalStep {
    Next,
    /// Sleeping: on the bg's cache IO, or (e44081ef6118) for
    /// `num_writers == 1` before looking its item up again.
    Blocked(Option<(BgId, bool)>, Wait),
}

const STACK_CHUNK: &[&str] = &[
    "find_free_extent",
    "do_chunk_alloc",
    "btrfs_make_block_group",
];
const STACK_START_DIRTY_WRITE: &[&str] = &[
    "btrfs_commit_transaction",
    "btrfs_start_dirty_block_groups",
    "write_one_cache_group",
];
pub(crate) const STACK_START_DIRTY: &[&str] =
    &["btrfs_commit_transaction", "btrfs_start_dirty_block_groups"];
const STACK_WRITE_DIRTY_WRITE: &[&str] = &[
    "btrfs_commit_transaction",
    "commit_cowonly_roots",
    "btrfs_write_dirty_block_groups",
    "write_one_cache_group",
];
const STACK_WRITE_DIRTY: &[&str] = &[
    "btrfs_commit_transaction",
    "commit_cowonly_roots",
    "btrfs_write_dirty_block_groups",
];
const STACK_REMOVE: &[&str] = &[
    "btrfs_delete_unused_bgs",
    "btrfs_remove_chunk",
    "btrfs_remove_block_group",
];

/// Where `btrfs_delete_unused_bgs` stands between steps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DelPc {
    /// The bg being deleted, waiting to start its transaction.
    pub(crate) current: Option<BgId>,
    /// `ret` of `btrfs_delete_unused_bgs`: after an error, the rest are only put.
    pub(crate) failed: bool,
    pub(crate) count: u32,
}

impl Engine {
    /// fs/btrfs/extent-tree.c, `btrfs_get_block_group`.
    pub(crate) fn btrfs_get_block_group(&mut self, id: BgId, site: &'static str) {
        if self.bg(id).freed {
            self.events.push(Event::UseAfterFree { bg: id, site });
        }
        self.bgm(id).refs += 1;
    }

    /// fs/btrfs/extent-tree.c, `btrfs_put_block_group`: the last put frees.
    pub(crate) fn btrfs_put_block_group(&mut self, id: BgId, site: &'static str) {
        if self.bg(id).freed {
            self.events.push(Event::UseAfterFree { bg: id, site });
        }
        let bg = self.bgm(id);
        bg.refs -= 1;
        let refs = bg.refs;
        if refs == 0 {
            bg.freed = true;
        } else if refs < 0 {
            self.events.push(Event::RefUnderflow { bg: id, site });
        }
    }

    /// fs/btrfs/extent-tree.c, `btrfs_make_block_group` (phase 1), after
    /// volumes.c's `btrfs_alloc_chunk` placed the chunk: the bg goes into
    /// the cache tree (`btrfs_add_block_group_cache`), then
    /// [`Engine::make_block_group_finish`] links it into its space_info and
    /// the handle's `new_bgs`. Under `mount fitrim` a task's phase 1 stops
    /// between the two (the caller yields). `None` when no device hole
    /// fits: ENOSPC. `task` is `None` for mkfs's bgs.
    pub(crate) fn btrfs_make_block_group(
        &mut self,
        kind: Kind,
        transid: u64,
        task: Option<TaskId>,
    ) -> Option<BgId> {
        let place = self.btrfs_alloc_chunk(kind)?;
        let (start, len) = (place.start, place.len);
        let id = BgId(self.bgs.len() as u32);
        let mut free_space = BTreeMap::new();
        free_space.insert(start, len);
        self.bgs.push(BlockGroup {
            id,
            kind,
            start,
            len,
            used: 0,
            commit_used: 0,
            reserved: 0,
            ro: false,
            removed: false,
            refs: 1, // the cache tree's
            freed: false,
            dirty_list: DirtyList::None,
            bg_list: BgList::None,
            on_io_list: false,
            linked: false,
            created_transid: transid,
            dev_offset: place.dev_offset,
            free_space,
        });
        self.cache_tree.insert(start, id);
        if task.is_none() || !self.config.mount.fitrim {
            self.make_block_group_finish(id, task);
        }
        Some(id)
    }

    /// The rest of `btrfs_make_block_group`: `update_space_info` (which
    /// sets `->space_info` in v4.1), `__link_block_group` (now
    /// `find_free_extent` sees the bg), and `list_add_tail(&cache->bg_list,
    /// &trans->new_bgs)`.
    pub(crate) fn make_block_group_finish(&mut self, id: BgId, task: Option<TaskId>) {
        let bg = self.bgm(id);
        bg.linked = true;
        if let Some(t) = task {
            bg.bg_list = BgList::NewBgs(t);
        }
        let (kind, len) = (bg.kind, bg.len);
        let si = &mut self.space_info[kind.index()];
        si.total_bytes += len;
        si.block_groups.push(id);
        if let Some(t) = task {
            self.tasks[t]
                .handle
                .as_mut()
                .expect("phase 1 runs under a handle")
                .new_bgs
                .push(id);
            self.events.push(Event::BgCreated { bg: id, task: t });
        }
    }

    /// Phase 2 for one bg, as `btrfs_create_pending_block_groups` does it:
    /// its bg item, then (volumes.c) its chunk item.
    pub(crate) fn insert_bg_items(&mut self, id: BgId) {
        if self.applied(F675DFE1223A6) {
            // insert_block_group_item: `block_group->commit_used =
            // block_group->used;`, so a later update compares with what
            // the item says.
            let bg = self.bgm(id);
            bg.commit_used = bg.used;
        }
        let bg = self.bg(id);
        let (key, item) = (
            Key::block_group(bg.start, bg.len),
            Item::BlockGroup {
                used: bg.used,
                chunk_objectid: FIRST_CHUNK_TREE_OBJECTID,
                flags: bg.kind.flags(),
            },
        );
        self.extent_tree.insert(key, item);
        self.btrfs_finish_chunk_alloc(id);
        self.events.push(Event::BgItemInserted { bg: id });
    }

    /// fs/btrfs/extent-tree.c, `btrfs_create_pending_block_groups`, for the
    /// first bg of the task's `new_bgs`. Returns false when the list is
    /// empty. The failpoint `bg_insert_item` stands for `btrfs_insert_item`
    /// failing, which aborts.
    pub(crate) fn create_one_pending(
        &mut self,
        task: TaskId,
        stack: &'static [&'static str],
    ) -> bool {
        let h = self.tasks[task].handle.as_mut().expect("handle");
        if h.new_bgs.is_empty() {
            return false;
        }
        let id = h.new_bgs.remove(0);
        let (transid, aborted) = (h.transid, h.aborted);
        self.bgm(id).bg_list = BgList::None;
        if aborted {
            // `if (ret) goto next`: after this handle's error the rest are
            // only unlinked. Another handle's abort does not stop it.
            return true;
        }
        if let Some(err) = self.failpoint(Site::BgInsertItem) {
            self.btrfs_abort_transaction(task, transid, err, stack);
            return true;
        }
        // `ret = btrfs_finish_chunk_alloc(...); if (ret)
        // btrfs_abort_transaction(...)`. The kernel inserted the bg item
        // just before; the aborted transaction never commits it.
        if self.config.mount.chunk_cost {
            if let Err(err) = self.chunk_tree_update(task) {
                self.btrfs_abort_transaction(task, transid, err, stack);
                return true;
            }
        }
        self.insert_bg_items(id);
        true
    }

    /// fs/btrfs/extent-tree.c, `btrfs_create_pending_block_groups`: the
    /// whole of the task's `new_bgs` in one step.
    pub(crate) fn create_pending_block_groups(
        &mut self,
        task: TaskId,
        stack: &'static [&'static str],
    ) {
        while self.create_one_pending(task, stack) {}
    }

    /// Unlinks every bg left on the handle's `new_bgs` without inserting
    /// its items: `btrfs_create_pending_block_groups`' path after an error,
    /// all at once.
    pub(crate) fn unlink_new_bgs(&mut self, task: TaskId) {
        let bgs = std::mem::take(&mut self.tasks[task].handle.as_mut().expect("handle").new_bgs);
        for id in bgs {
            self.bgm(id).bg_list = BgList::None;
        }
    }

    /// fs/btrfs/extent-tree.c, `find_free_extent`'s search: first-fit in
    /// the bgs of `kind`, in cache-tree order, skipping ro ones. On a hit
    /// the range is reserved and its "add" delayed ref queued.
    fn find_free_extent(
        &mut self,
        ext: ExtentId,
        kind: Kind,
        size: u64,
        transid: u64,
    ) -> Option<Done> {
        // A system extent is a chunk-tree block: under `mount chunk_cost`
        // it may not take the room the chunk tree's updates took
        // (`chunk_tree_bytes`, in no bg's free space here) or that handles
        // reserved for theirs (`bytes_may_use`), as the kernel's metadata
        // reservation would not. Without the option both are 0.
        if kind == Kind::System && size > self.system_left() {
            return None;
        }
        let found = self.allocatable(kind).find_map(|id| {
            self.bgs[id.0 as usize]
                .free_space
                .iter()
                .find(|(_, &l)| l >= size)
                .map(|(&s, &l)| (id, s, l))
        })?;
        let (id, s, l) = found;
        let bg = self.bgm(id);
        bg.free_space.remove(&s);
        if l > size {
            bg.free_space.insert(s + size, l - size);
        }
        bg.reserved += size;
        self.space_info[kind.index()].bytes_reserved += size;
        let e = self.extent_mut(ext);
        e.bg = Some(id);
        e.start = s;
        e.state = ExtentState::Reserved;
        self.trans_mut(transid).delayed_refs.push_back(DelayedRef {
            extent: ext,
            action: RefAction::Add,
        });
        Some(Done::Extent {
            id: ext,
            bg: id,
            start: s,
        })
    }

    /// The first free hole `find_free_extent` meets for `kind` (bgs in
    /// logical order, holes in order): an alloc of exactly this size fills
    /// it. Not a kernel function: a search's generator asks it, to fill a
    /// bg in one step. `None` when no linked, writable bg of `kind` has room.
    pub fn first_free_hole(&self, kind: Kind) -> Option<u64> {
        self.allocatable(kind)
            .find_map(|id| self.bgs[id.0 as usize].free_space.values().next().copied())
    }

    /// The bgs `find_free_extent` may take from, in its order. v4.1
    /// searches `space_info->block_groups`: a bg in the cache tree whose
    /// phase 1 has not linked it is not there yet; a read-only one is
    /// skipped.
    fn allocatable(&self, kind: Kind) -> impl Iterator<Item = BgId> + '_ {
        self.cache_tree.values().copied().filter(move |&id| {
            let bg = &self.bgs[id.0 as usize];
            bg.kind == kind && !bg.ro && bg.linked
        })
    }

    /// What the system space_info has left: `total_bytes - bytes_used -
    /// bytes_reserved - bytes_readonly`, less the chunk tree's bytes and
    /// (4fbcdf669454 counts them; only it makes any) `bytes_may_use`.
    fn system_left(&self) -> u64 {
        let si = self.space_info(Kind::System);
        si.total_bytes.saturating_sub(
            si.bytes_used
                + si.bytes_reserved
                + si.bytes_readonly
                + si.chunk_tree_bytes
                + si.bytes_may_use,
        )
    }

    /// Whether `btrfs_alloc_chunk` could make a system chunk of at least
    /// `bytes` now: some device hole holds it.
    pub(crate) fn room_for_system_chunk(&self, bytes: u64) -> bool {
        self.find_free_dev_extent(bytes)
            .is_some_and(|(_, len)| len >= bytes)
    }

    /// fs/btrfs/extent-tree.c, `check_system_chunk`: when the system
    /// space_info has less than [`SYSTEM_CHUNK_THRESH`] left for the chunk
    /// tree update, allocate a system chunk first (its result ignored, as
    /// in v4.1): a second pending bg on the same handle, returned. With
    /// 4fbcdf669454 the threshold is then reserved
    /// ([`Engine::reserve_chunk_metadata`]), here or, for a system chunk
    /// stopped halfway, once its phase 1 ends; not after a failed
    /// allocation (`if (!ret)`).
    fn check_system_chunk(&mut self, task: TaskId, transid: u64) -> Option<BgId> {
        if self.system_left() >= SYSTEM_CHUNK_THRESH {
            self.reserve_chunk_metadata(task);
            return None;
        }
        let bg = self.btrfs_make_block_group(Kind::System, transid, Some(task))?;
        self.events.push(Event::SystemChunkForced { bg });
        if self.bg(bg).linked {
            self.reserve_chunk_metadata(task);
        }
        Some(bg)
    }

    /// 4fbcdf669454's tail of `check_system_chunk`, under `mount
    /// chunk_cost`: `btrfs_block_rsv_add(..., &fs_info->chunk_block_rsv,
    /// thresh, BTRFS_RESERVE_NO_FLUSH)`, and on success
    /// `trans->chunk_bytes_reserved += thresh`. v4.1 reserves nothing.
    fn reserve_chunk_metadata(&mut self, task: TaskId) {
        if !self.config.mount.chunk_cost
            || !self.applied(F4FBCDF669454)
            || self.system_left() < SYSTEM_CHUNK_THRESH
        {
            return;
        }
        self.space_info[Kind::System.index()].bytes_may_use += SYSTEM_CHUNK_THRESH;
        self.tasks[task]
            .handle
            .as_mut()
            .expect("check_system_chunk runs under a handle")
            .chunk_bytes_reserved += SYSTEM_CHUNK_THRESH;
    }

    /// Phase 2's chunk-tree update for one bg, under `mount chunk_cost`
    /// (volumes.c `btrfs_finish_chunk_alloc` COWing the chunk tree): its
    /// [`CHUNK_ITEM_COST`] comes from the handle's `chunk_block_rsv`
    /// reservation if it has one (`use_block_rsv`'s
    /// `block_rsv_use_bytes`), else straight from the system space_info
    /// (`reserve_metadata_bytes(..., BTRFS_RESERVE_NO_FLUSH)`), else
    /// `-ENOSPC`.
    fn chunk_tree_update(&mut self, task: TaskId) -> Result<(), Error> {
        let h = self.tasks[task]
            .handle
            .as_mut()
            .expect("phase 2 runs under a handle");
        let si = &mut self.space_info[Kind::System.index()];
        if h.chunk_bytes_reserved >= CHUNK_ITEM_COST {
            h.chunk_bytes_reserved -= CHUNK_ITEM_COST;
            si.bytes_may_use -= CHUNK_ITEM_COST;
        } else if self.system_left() < CHUNK_ITEM_COST {
            return Err(Error::model(Errno::ENOSPC));
        }
        self.space_info[Kind::System.index()].chunk_tree_bytes += CHUNK_ITEM_COST;
        Ok(())
    }

    /// fs/btrfs/extent-tree.c, `do_chunk_alloc`: `check_system_chunk`,
    /// then phase 1 of a new bg. ENOSPC is returned to the caller without
    /// an abort; any other error (the `bg_create` failpoint) aborts.
    /// `Some` when a phase 1 stopped at its `mount fitrim` yield.
    fn do_chunk_alloc(
        &mut self,
        task: TaskId,
        kind: Kind,
        transid: u64,
    ) -> Result<Option<HalfMade>, Error> {
        if let Some(err) = self.failpoint(Site::BgCreate) {
            if err.errno != Errno::ENOSPC {
                self.btrfs_abort_transaction(task, transid, err, STACK_CHUNK);
            }
            return Err(err);
        }
        if let Some(sys) = self.check_system_chunk(task, transid) {
            if !self.bg(sys).linked {
                return Ok(Some(HalfMade {
                    bg: sys,
                    then: Some(kind),
                }));
            }
        }
        self.make_chunk_bg(task, kind, transid)
    }

    /// `btrfs_alloc_chunk`'s call of `btrfs_make_block_group`, as
    /// `do_chunk_alloc` makes it for `kind`.
    fn make_chunk_bg(
        &mut self,
        task: TaskId,
        kind: Kind,
        transid: u64,
    ) -> Result<Option<HalfMade>, Error> {
        match self.btrfs_make_block_group(kind, transid, Some(task)) {
            Some(bg) if !self.bg(bg).linked => Ok(Some(HalfMade { bg, then: None })),
            Some(_) => Ok(None),
            None => Err(Error::model(Errno::ENOSPC)),
        }
    }

    /// The `alloc` operation, fs/btrfs/extent-tree.c `find_free_extent`:
    /// step 1 searches and, if nothing fits, runs phase 1 of a new bg and
    /// yields; step 2 searches again. Under `mount fitrim` each phase 1
    /// yields once more, halfway (`half`).
    pub(crate) fn step_alloc(&mut self, task: TaskId, a: AllocPc) -> Stepped {
        let AllocPc {
            ext,
            kind,
            size,
            half,
            ..
        } = a;
        let transid = self.handle_transid(task);
        if let Some(h) = half {
            self.make_block_group_finish(h.bg, Some(task));
            if let Some(k) = h.then {
                // check_system_chunk's system chunk is whole: reserve.
                self.reserve_chunk_metadata(task);
                match self.make_chunk_bg(task, k, transid) {
                    Err(err) => return self.fail_alloc(ext, err),
                    Ok(Some(h)) => {
                        return Stepped::Yielded(Pc::Alloc(AllocPc { half: Some(h), ..a }))
                    }
                    Ok(None) => {}
                }
            }
            return self.alloc_after_chunk(a, transid);
        }
        if let Some(done) = self.find_free_extent(ext, kind, size, transid) {
            return Stepped::Finished(Ok(done));
        }
        // A request larger than a chunk can never fit: ENOSPC, no chunk.
        if size > self.config.chunk(kind) {
            return self.fail_alloc(ext, Error::model(Errno::ENOSPC));
        }
        match self.do_chunk_alloc(task, kind, transid) {
            Err(err) => self.fail_alloc(ext, err),
            Ok(Some(h)) => Stepped::Yielded(Pc::Alloc(AllocPc { half: Some(h), ..a })),
            Ok(None) => self.alloc_after_chunk(a, transid),
        }
    }

    /// After `do_chunk_alloc` made a bg: yield (step 1), or search again
    /// (step 2, which allocates at most one more chunk before giving up).
    fn alloc_after_chunk(&mut self, a: AllocPc, transid: u64) -> Stepped {
        if !a.retry {
            return Stepped::Yielded(Pc::Alloc(AllocPc {
                retry: true,
                half: None,
                ..a
            }));
        }
        match self.find_free_extent(a.ext, a.kind, a.size, transid) {
            Some(done) => Stepped::Finished(Ok(done)),
            None => self.fail_alloc(a.ext, Error::model(Errno::ENOSPC)),
        }
    }

    /// Whether the bg's `->space_info` is set: once phase 1 has linked it
    /// (v4.1's `update_space_info` sets it), and from the cache-tree insert
    /// on with 2e6e518335f8 (`cache->space_info =
    /// btrfs_find_space_info(...)` before `btrfs_add_block_group_cache`).
    fn has_space_info(&self, id: BgId) -> bool {
        self.bg(id).linked || self.applied(F2E6E518335F8)
    }

    /// The `trim` operation: fs/btrfs/extent-tree.c, `btrfs_trim_fs`, one
    /// bg per step. It walks the cache tree
    /// (`btrfs_lookup_first_block_group`, then `next_block_group` from the
    /// bg's end), so it reaches a bg whose phase 1 has not finished;
    /// `btrfs_trim_block_group` -> `trim_no_bitmap` -> free-space-cache.c
    /// `do_trimming` begins `struct btrfs_space_info *space_info =
    /// block_group->space_info; ... spin_lock(&space_info->lock);` for each
    /// free range. The trim itself (a discard) changes nothing modelled.
    pub(crate) fn step_trim(&mut self, cursor: u64) -> Stepped {
        let Some((_, &id)) = self.cache_tree.range(cursor..).next() else {
            return Stepped::Finished(Ok(Done::Trimmed));
        };
        if !self.has_space_info(id) && !self.bg(id).free_space.is_empty() {
            self.events.push(Event::NullSpaceInfo {
                bg: id,
                site: "do_trimming",
            });
        }
        let next = self.bg(id).end();
        if self.cache_tree.range(next..).next().is_none() {
            return Stepped::Finished(Ok(Done::Trimmed));
        }
        Stepped::Yielded(Pc::Trim { cursor: next })
    }

    /// fs/btrfs/extent-tree.c, `update_block_group`, for one delayed ref.
    /// It does not check whether the bg's item exists yet: that is the root
    /// of the ff1f8250 race.
    fn update_block_group(&mut self, transid: u64, r: DelayedRef) {
        let e = self.extent_of(r.extent);
        let id = e.bg.expect("a queued ref has a bg");
        if self.bg(id).freed {
            self.events.push(Event::UseAfterFree {
                bg: id,
                site: "update_block_group",
            });
        }
        let kind = e.kind;
        let si = &mut self.space_info[kind.index()];
        match r.action {
            RefAction::Add => {
                si.bytes_reserved -= e.len;
                si.bytes_used += e.len;
                let bg = self.bgm(id);
                bg.reserved -= e.len;
                bg.used += e.len;
                self.extent_tree
                    .insert(Key::extent(e.start, e.len), Item::Extent { refs: 1 });
                let x = self.extent_mut(r.extent);
                x.added = true;
                if x.state == ExtentState::Reserved {
                    x.state = ExtentState::Allocated;
                }
            }
            RefAction::Drop => {
                si.bytes_used -= e.len;
                if self.bgs[id.0 as usize].ro {
                    // Freed space in a read-only bg is read-only space.
                    si.bytes_readonly += e.len;
                }
                let bg = self.bgm(id);
                bg.used -= e.len;
                // No pinning: the range is allocatable once the ref runs.
                insert_free(&mut bg.free_space, e.start, e.len);
                self.extent_tree.remove(&Key::extent(e.start, e.len));
                self.extent_mut(r.extent).state = ExtentState::Freed;
            }
        }
        if self.bg(id).dirty_list == DirtyList::None {
            self.bgm(id).dirty_list = DirtyList::DirtyBgs(transid);
            self.trans_mut(transid).dirty_bgs.push_back(id);
            self.btrfs_get_block_group(id, "update_block_group");
            self.events.push(Event::BgDirtied { bg: id });
        }
        let bg = self.bg(id);
        if r.action == RefAction::Drop && bg.used == 0 && bg.bg_list == BgList::None {
            self.btrfs_get_block_group(id, "update_block_group");
            self.bgm(id).bg_list = BgList::UnusedBgs;
            self.unused_bgs.push_back(id);
        }
    }

    /// fs/btrfs/extent-tree.c, `btrfs_run_delayed_refs` of everything
    /// queued, atomically (as inside a commit). A no-op on a handle that
    /// aborted (`if (trans->aborted) return 0;`): v4.1 checks the handle,
    /// not the transaction.
    pub(crate) fn run_delayed_refs(&mut self, task: TaskId, transid: u64) {
        if self.handle_aborted(task) {
            return;
        }
        while let Some(r) = self.trans_mut(transid).delayed_refs.pop_front() {
            self.update_block_group(transid, r);
        }
    }

    /// The `run_delayed_refs` operation: `btrfs_run_delayed_refs`, one ref
    /// a step.
    pub(crate) fn step_run_refs(&mut self, task: TaskId, mut count: u32) -> Stepped {
        let transid = self.handle_transid(task);
        if self.handle_aborted(task) {
            return Stepped::Finished(Ok(Done::RanRefs { count }));
        }
        if let Some(r) = self.trans_mut(transid).delayed_refs.pop_front() {
            self.update_block_group(transid, r);
            count += 1;
        }
        if self.trans(transid).delayed_refs.is_empty() {
            Stepped::Finished(Ok(Done::RanRefs { count }))
        } else {
            Stepped::Yielded(Pc::RunRefs { count })
        }
    }

    /// fs/btrfs/extent-tree.c, `write_one_cache_group`: look the item up
    /// and write `used` into it. The failpoint `extent_tree_lookup` stands
    /// for `btrfs_search_slot` failing.
    ///
    /// With 7248e0cebbef (v6.2's `update_block_group_item`) it returns at
    /// once when `used == commit_used` ("No change in used bytes, can
    /// safely skip it"), sets `commit_used = used` before the lookup, and
    /// restores the old value on an error.
    fn write_one_cache_group(&mut self, id: BgId) -> Result<(), Error> {
        let skip_unchanged = self.applied(F7248E0CEBBE);
        let old_commit_used = self.bg(id).commit_used;
        if skip_unchanged {
            let bg = self.bgm(id);
            if bg.commit_used == bg.used {
                self.events.push(Event::BgWriteSkipped { bg: id });
                return Ok(());
            }
            bg.commit_used = bg.used;
        }
        let ret = self.lookup_and_write(id);
        if ret.is_err() && skip_unchanged {
            self.bgm(id).commit_used = old_commit_used;
        }
        ret
    }

    /// `btrfs_search_slot` for the bg's item and the write of `used` into it.
    fn lookup_and_write(&mut self, id: BgId) -> Result<(), Error> {
        if let Some(err) = self.failpoint(Site::ExtentTreeLookup) {
            return Err(err);
        }
        let bg = self.bg(id);
        let (key, used) = (Key::block_group(bg.start, bg.len), bg.used);
        match self.extent_tree.get_mut(&key) {
            Some(Item::BlockGroup { used: u, .. }) => {
                *u = used;
                Ok(())
            }
            _ => Err(Error::model(Errno::ENOENT)),
        }
    }

    /// fs/btrfs/extent-tree.c, `btrfs_start_dirty_block_groups`: one bg of
    /// its loop. A bg still under cache IO is waited for first; under
    /// `space_cache` its cache IO is started (the bg goes on `io_bgs`, which
    /// keeps its ref); then its item is written.
    pub(crate) fn start_dirty_one(&mut self, task: TaskId, transid: u64) -> DirtyStep {
        let Some(&id) = self.trans(transid).writeout.front() else {
            return DirtyStep::Next;
        };
        // "this can happen if something re-dirties a block group that is
        // already under IO. Just wait for it to finish".
        if let Some(w) = self.btrfs_wait_cache_io(id, "btrfs_start_dirty_block_groups") {
            return DirtyStep::Blocked(w);
        }
        self.trans_mut(transid).writeout.pop_front();
        self.bgm(id).dirty_list = DirtyList::None;
        let should_put = !self.cache_save_setup(task, id);
        if !should_put {
            self.btrfs_write_out_cache(transid, id);
        }
        let ret = self.write_one_cache_group(id);
        let mut step = DirtyStep::Next;
        match ret {
            Ok(()) => self.events.push(Event::BgWritten {
                bg: id,
                critical: false,
            }),
            Err(err) if self.applied(FF1F8250) && err.errno == Errno::ENOENT => {
                // ff1f8250a9e4: the item may still be on another handle's
                // new_bgs; write it again in the critical section.
                if self.bg(id).dirty_list == DirtyList::None {
                    self.bgm(id).dirty_list = DirtyList::DirtyBgs(transid);
                    self.trans_mut(transid).dirty_bgs.push_back(id);
                    self.btrfs_get_block_group(id, "btrfs_start_dirty_block_groups");
                }
                self.events.push(Event::BgRequeued { bg: id });
            }
            Err(err) => {
                // Before ff1f8250a9e4, write_one_cache_group aborted itself;
                // after it, its caller aborts.
                let stack = if self.applied(FF1F8250) {
                    STACK_START_DIRTY
                } else {
                    STACK_START_DIRTY_WRITE
                };
                self.btrfs_abort_transaction(task, transid, err, stack);
                step = DirtyStep::Break;
            }
        }
        if should_put {
            self.btrfs_put_block_group(id, "btrfs_start_dirty_block_groups");
        }
        step
    }

    /// What `btrfs_start_dirty_block_groups` does with the bgs an error left
    /// on its local list when it returns. v4.1 does nothing: the list head
    /// was on its stack, so their `dirty_list` stays linked to nothing and
    /// their refs leak. acaeedb193a5 splices them back onto `dirty_bgs`,
    /// where the abort's cleanup releases them.
    pub(crate) fn start_dirty_leftovers(&mut self, transid: u64) {
        if !self.applied(ACAEEDB193A5) {
            return;
        }
        let rest = std::mem::take(&mut self.trans_mut(transid).writeout);
        for id in rest {
            self.bgm(id).dirty_list = DirtyList::DirtyBgs(transid);
            self.trans_mut(transid).dirty_bgs.push_back(id);
        }
    }

    /// `btrfs_start_dirty_block_groups`' `list_splice_init(&cur_trans->dirty_bgs,
    /// &dirty)`: `dirty_bgs` onto the head of the local list (ahead of any
    /// bgs an error left there).
    pub(crate) fn splice_dirty_to_writeout(&mut self, transid: u64) {
        let tr = self.trans_mut(transid);
        let mut dirty = std::mem::take(&mut tr.dirty_bgs);
        for &id in &dirty {
            self.bgm(id).dirty_list = DirtyList::Writeout(transid);
        }
        let tr = self.trans_mut(transid);
        dirty.append(&mut tr.writeout);
        tr.writeout = dirty;
    }

    /// fs/btrfs/extent-tree.c, `btrfs_write_dirty_block_groups`, inside the
    /// critical section, for the first bg of `dirty_bgs`: wait for its
    /// cache IO if any, `cache_save_setup`, run every delayed ref, start its
    /// cache IO, write its item. Any error aborts, `-ENOENT` included;
    /// e44081ef6118 first waits for `num_writers == 1` (an endio worker's
    /// JOIN_NOLOCK handle may hold the bg on its `new_bgs`) and looks again.
    pub(crate) fn write_dirty_one(
        &mut self,
        task: TaskId,
        transid: u64,
        retry: Option<(BgId, bool)>,
    ) -> CriticalStep {
        let (id, should_put, ret) = match retry {
            Some((id, should_put)) => {
                if self.trans(transid).num_writers != 1 {
                    return CriticalStep::Blocked(retry, Wait::Writers(transid));
                }
                (id, should_put, self.write_one_cache_group(id))
            }
            None => {
                let id = *self.trans(transid).dirty_bgs.front().expect("a dirty bg");
                if let Some(w) = self.btrfs_wait_cache_io(id, "btrfs_write_dirty_block_groups") {
                    return CriticalStep::Blocked(None, w);
                }
                self.trans_mut(transid).dirty_bgs.pop_front();
                self.bgm(id).dirty_list = DirtyList::None;
                if self.handle_aborted(task) {
                    // After an error v4.1 goes on taking bgs off the list
                    // (`if (!ret)` guards the rest) and puts each.
                    self.btrfs_put_block_group(id, "btrfs_write_dirty_block_groups");
                    return CriticalStep::Next;
                }
                let setup = self.cache_save_setup(task, id);
                self.run_delayed_refs(task, transid);
                let should_put = !setup;
                if setup {
                    self.btrfs_write_out_cache(transid, id);
                }
                let mut ret = self.write_one_cache_group(id);
                if matches!(ret, Err(e) if e.errno == Errno::ENOENT) && self.applied(E44081EF6118) {
                    // wait_event(cur_trans->writer_wait, num_writers == 1),
                    // then the lookup again.
                    if self.trans(transid).num_writers != 1 {
                        return CriticalStep::Blocked(
                            Some((id, should_put)),
                            Wait::Writers(transid),
                        );
                    }
                    ret = self.write_one_cache_group(id);
                }
                (id, should_put, ret)
            }
        };
        match ret {
            Ok(()) => self.events.push(Event::BgWritten {
                bg: id,
                critical: true,
            }),
            Err(err) => {
                let stack = if self.applied(FF1F8250) {
                    STACK_WRITE_DIRTY
                } else {
                    STACK_WRITE_DIRTY_WRITE
                };
                self.btrfs_abort_transaction(task, transid, err, stack);
            }
        }
        if should_put {
            self.btrfs_put_block_group(id, "btrfs_write_dirty_block_groups");
        }
        CriticalStep::Next
    }

    /// fs/btrfs/extent-tree.c, `cache_save_setup`: whether the bg's cache
    /// is set up for writing (`BTRFS_DC_SETUP`). Not without `-o
    /// space_cache`, not on an aborted handle (`if (trans->aborted) return
    /// 0;`), and not for a bg under 100 MiB ("If this block group is smaller
    /// than 100 megs don't bother caching the block group."). The cache
    /// inode's own allocations are not modelled.
    pub(crate) fn cache_save_setup(&self, task: TaskId, id: BgId) -> bool {
        self.config.mount.space_cache
            && self.bg(id).len >= CACHE_MIN_BG
            && !self.handle_aborted(task)
    }

    /// fs/btrfs/extent-tree.c, `set_block_group_ro(cache, force = 0)`:
    /// refuses (-ENOSPC) when the space_info would be left without
    /// `min_allocable_bytes` (1 MiB for metadata and system, 0 for data):
    /// `bytes_used + bytes_reserved + bytes_readonly + num_bytes +
    /// min_allocable_bytes <= total_bytes`. An already read-only bg is fine.
    pub(crate) fn set_block_group_ro(&mut self, id: BgId) -> Result<(), Errno> {
        let bg = self.bg(id);
        if bg.ro {
            return Ok(());
        }
        let num_bytes = bg.len - bg.reserved - bg.used;
        let min_allocable = if bg.kind == Kind::Data {
            0
        } else {
            MIN_ALLOCABLE_BYTES
        };
        let si = &mut self.space_info[bg.kind.index()];
        // `sinfo->bytes_may_use` counts here: a bg others reserved from
        // stays writable. The chunk tree's bytes are system `bytes_used`.
        if si.bytes_used
            + si.bytes_reserved
            + si.bytes_readonly
            + si.bytes_may_use
            + si.chunk_tree_bytes
            + num_bytes
            + min_allocable
            > si.total_bytes
        {
            return Err(Errno::ENOSPC);
        }
        si.bytes_readonly += num_bytes;
        self.bgm(id).ro = true;
        Ok(())
    }

    /// fs/btrfs/extent-tree.c, `btrfs_set_block_group_rw`.
    pub(crate) fn btrfs_set_block_group_rw(&mut self, id: BgId) {
        let bg = self.bg(id);
        if !bg.ro {
            return;
        }
        let num_bytes = bg.len - bg.reserved - bg.used;
        self.space_info[bg.kind.index()].bytes_readonly -= num_bytes;
        self.bgm(id).ro = false;
    }

    /// The `delete_unused` operation, fs/btrfs/extent-tree.c
    /// `btrfs_delete_unused_bgs`: one bg a step. With 67c5e7d464bc it holds
    /// `delete_unused_bgs_mutex` per bg from before its ro check until its
    /// transaction has ended. The kernel takes the bg off `unused_bgs` and
    /// then locks; the model blocks on the mutex before taking it off (no
    /// other task looks at that list head meanwhile, so nothing can tell).
    pub(crate) fn step_delete_unused(&mut self, task: TaskId, mut d: DelPc) -> Stepped {
        if d.current.is_none() {
            let Some(&id) = self.unused_bgs.front() else {
                return Stepped::Finished(Ok(Done::Deleted { count: d.count }));
            };
            // `if (ret || btrfs_mixed_space_info(space_info))` comes before
            // the lock.
            if !d.failed && self.applied(F67C5E7D464BC) && !self.lock_delete_unused_bgs_mutex(task)
            {
                return Stepped::Blocked(Pc::DeleteUnused(d), Wait::DeleteUnusedBgsMutex);
            }
            self.unused_bgs.pop_front();
            self.bgm(id).bg_list = BgList::None;
            let bg = self.bg(id);
            if d.failed || bg.used != 0 || bg.reserved != 0 || bg.ro {
                self.unlock_delete_unused_bgs_mutex(task);
                self.btrfs_put_block_group(id, "btrfs_delete_unused_bgs");
                return self.delete_unused_next(d);
            }
            // "We don't want to force the issue, only flip if it's ok."
            if self.set_block_group_ro(id).is_err() {
                self.events.push(Event::BgKeptForSpace { bg: id });
                self.unlock_delete_unused_bgs_mutex(task);
                self.btrfs_put_block_group(id, "btrfs_delete_unused_bgs");
                return self.delete_unused_next(d);
            }
            d.current = Some(id);
        }
        let id = d.current.expect("a bg to delete");
        // btrfs_remove_block_group waits for the bg's cache IO; the model
        // waits before starting the transaction (see docs/model.md).
        if self.bg(id).on_io_list {
            if let Some(w) = self.cache_io_wait(id) {
                return Stepped::Blocked(Pc::DeleteUnused(d), w);
            }
        }
        let transid = match self.join_transaction(task, TransType::Start) {
            Err(w) => return Stepped::Blocked(Pc::DeleteUnused(d), w),
            Ok(Err(_)) => {
                // btrfs_set_block_group_rw, then only puts from here on.
                self.btrfs_set_block_group_rw(id);
                d.failed = true;
                d.current = None;
                self.unlock_delete_unused_bgs_mutex(task);
                self.btrfs_put_block_group(id, "btrfs_delete_unused_bgs");
                return self.delete_unused_next(d);
            }
            Ok(Ok(t)) => t,
        };
        // The bg may be gone by now: balance removed it (no 67c5e7d464bc).
        let start = self.bg(id).start;
        let ret = self.btrfs_remove_chunk(task, transid, start);
        if ret.is_err() || self.handle_aborted(task) {
            d.failed = true;
        } else {
            d.count += 1;
            if self.config.mount.discard && self.applied(E33E17EE1098) {
                // "we'll need to wait until transaction commit to do the
                // actual discard": onto deleted_bgs, with a ref.
                self.bgm(id).bg_list = BgList::DeletedBgs(transid);
                self.trans_mut(transid).deleted_bgs.push(id);
                self.btrfs_get_block_group(id, "btrfs_delete_unused_bgs");
            }
        }
        let _ = self.release_handle(task);
        d.current = None;
        self.unlock_delete_unused_bgs_mutex(task);
        self.btrfs_put_block_group(id, "btrfs_delete_unused_bgs");
        self.delete_unused_next(d)
    }

    fn delete_unused_next(&mut self, d: DelPc) -> Stepped {
        if self.unused_bgs.is_empty() {
            Stepped::Finished(Ok(Done::Deleted { count: d.count }))
        } else {
            Stepped::Yielded(Pc::DeleteUnused(d))
        }
    }

    /// fs/btrfs/extent-tree.c, `btrfs_remove_block_group`, as
    /// `btrfs_remove_chunk` calls it: off whichever dirty list the bg is
    /// on, out of the cache tree and space_info, its item deleted (a missing
    /// item aborts with EIO).
    pub(crate) fn btrfs_remove_block_group(&mut self, task: TaskId, transid: u64, id: BgId) {
        let (start, len, kind) = {
            let bg = self.bg(id);
            (bg.start, bg.len, bg.kind)
        };
        // "make sure our free spache cache IO is done before remove the
        // free space inode" (the wait itself happened before this step).
        self.io_list_del(id, "btrfs_remove_block_group");
        match self.bg(id).dirty_list {
            DirtyList::None => {}
            DirtyList::DirtyBgs(t) => {
                self.trans_mut(t).dirty_bgs.retain(|&b| b != id);
                self.bgm(id).dirty_list = DirtyList::None;
                self.btrfs_put_block_group(id, "btrfs_remove_block_group");
            }
            DirtyList::Writeout(t) => {
                self.trans_mut(t).writeout.retain(|&b| b != id);
                self.bgm(id).dirty_list = DirtyList::None;
                self.btrfs_put_block_group(id, "btrfs_remove_block_group");
            }
        }
        self.cache_tree.remove(&start);
        let bg = self.bg(id);
        let readonly = if bg.ro {
            bg.len - bg.used - bg.reserved
        } else {
            0
        };
        let si = &mut self.space_info[kind.index()];
        si.total_bytes -= len;
        si.bytes_readonly -= readonly;
        si.block_groups.retain(|&b| b != id);
        self.bgm(id).removed = true;
        self.events.push(Event::BgRemoved { bg: id });
        // The cache tree's ref (the lookup ref is taken and put here too).
        self.btrfs_put_block_group(id, "btrfs_remove_block_group");
        if self
            .extent_tree
            .remove(&Key::block_group(start, len))
            .is_none()
        {
            self.btrfs_abort_transaction(task, transid, Error::model(Errno::EIO), STACK_REMOVE);
        }
    }
}

/// Returns a range to a bg's free-space map, merging with its neighbours
/// (what fs/btrfs/free-space-cache.c's `btrfs_add_free_space` does with
/// `try_merge_free_space`).
fn insert_free(map: &mut BTreeMap<u64, u64>, mut start: u64, mut len: u64) {
    if let Some((&s, &l)) = map.range(..start).next_back() {
        if s + l == start {
            map.remove(&s);
            start = s;
            len += l;
        }
    }
    if let Some(&l) = map.get(&(start + len)) {
        map.remove(&(start + len));
        len += l;
    }
    map.insert(start, len);
}
