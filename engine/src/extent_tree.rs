//! fs/btrfs/extent-tree.c: block groups as v4.1 keeps them there. Phase 1
//! of a new bg (`btrfs_make_block_group`) and phase 2
//! (`btrfs_create_pending_block_groups`), the allocator
//! (`find_free_extent`, `do_chunk_alloc`), delayed refs
//! (`btrfs_run_delayed_refs` -> `update_block_group`), the commit's two
//! writeouts of dirty bgs (`btrfs_start_dirty_block_groups` outside the
//! critical section, `btrfs_write_dirty_block_groups` inside it, both through
//! `write_one_cache_group`), the cleaner's `btrfs_delete_unused_bgs` and
//! `btrfs_remove_block_group`, and the bg refcount
//! (`btrfs_get_block_group` / `btrfs_put_block_group`).
//!
//! Modelled: the `new_bgs`, `dirty_bgs` and `unused_bgs` lists and the refs
//! each holds, `used` / `reserved` per bg and space_info, the bg and extent
//! items. Left out: the free-space cache and its inode (`cache_save_setup`,
//! `btrfs_write_out_cache`, `io_bgs`), space reservations and flushing,
//! pinned extents, `set_block_group_ro`'s space checks, caching threads;
//! free space is an in-memory first-fit map. See docs/model.md.
//!
//! Failpoint sites here: `bg_create` (`do_chunk_alloc` fails),
//! `bg_insert_item` (phase 2's `btrfs_insert_item` fails),
//! `extent_tree_lookup` (`write_one_cache_group`'s `btrfs_search_slot`
//! fails).
//!
//! Patches here: ff1f8250a9e4, in `btrfs_start_dirty_block_groups`.

use std::collections::BTreeMap;

use crate::{
    BgId, BgList, BlockGroup, DelayedRef, DirtyList, Done, Engine, Errno, Error, Event, ExtentId,
    ExtentState, Item, Key, Kind, Pc, RefAction, Site, Stepped, TaskId, TransType, FF1F8250,
    FIRST_CHUNK_TREE_OBJECTID,
};

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
    /// volumes.c's `btrfs_alloc_chunk` placed the chunk: the bg in the cache
    /// tree and space_info, on the handle's `new_bgs`. `None` when no device
    /// hole fits: ENOSPC. `task` is `None` for mkfs's bgs.
    pub(crate) fn btrfs_make_block_group(
        &mut self,
        kind: Kind,
        transid: u64,
        task: Option<TaskId>,
    ) -> Option<BgId> {
        let place = self.btrfs_alloc_chunk(kind)?;
        let (start, len) = (place.start, self.config.chunk(kind));
        let id = BgId(self.bgs.len() as u32);
        let mut free_space = BTreeMap::new();
        free_space.insert(start, len);
        self.bgs.push(BlockGroup {
            id,
            kind,
            start,
            len,
            used: 0,
            reserved: 0,
            ro: false,
            removed: false,
            refs: 1, // the cache tree's
            freed: false,
            dirty_list: DirtyList::None,
            bg_list: match task {
                Some(t) => BgList::NewBgs(t),
                None => BgList::None,
            },
            on_io_list: false,
            created_transid: transid,
            dev_offset: place.dev_offset,
            free_space,
        });
        self.cache_tree.insert(start, id);
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
        Some(id)
    }

    /// Phase 2 for one bg, as `btrfs_create_pending_block_groups` does it:
    /// its bg item, then (volumes.c) its chunk item.
    pub(crate) fn insert_bg_items(&mut self, id: BgId) {
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
        let transid = h.transid;
        self.bgm(id).bg_list = BgList::None;
        if self.trans(transid).aborted.is_some() {
            // `if (ret) goto next`: after an error the rest are only unlinked.
            return true;
        }
        if let Some(err) = self.failpoint(Site::BgInsertItem) {
            self.btrfs_abort_transaction(task, transid, err, stack);
            return true;
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
        let found = self.cache_tree.values().find_map(|&id| {
            let bg = &self.bgs[id.0 as usize];
            if bg.kind != kind || bg.ro {
                return None;
            }
            bg.free_space
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

    /// fs/btrfs/extent-tree.c, `do_chunk_alloc`: phase 1 of a new bg.
    /// ENOSPC is returned to the caller without an abort; any other error
    /// (the `bg_create` failpoint) aborts.
    fn do_chunk_alloc(&mut self, task: TaskId, kind: Kind, transid: u64) -> Result<(), Error> {
        if let Some(err) = self.failpoint(Site::BgCreate) {
            if err.errno != Errno::ENOSPC {
                self.btrfs_abort_transaction(task, transid, err, STACK_CHUNK);
            }
            return Err(err);
        }
        match self.btrfs_make_block_group(kind, transid, Some(task)) {
            Some(_) => Ok(()),
            None => Err(Error::model(Errno::ENOSPC)),
        }
    }

    /// The `alloc` operation, fs/btrfs/extent-tree.c `find_free_extent`:
    /// step 1 searches and, if nothing fits, runs phase 1 of a new bg and
    /// yields; step 2 searches again.
    pub(crate) fn step_alloc(
        &mut self,
        task: TaskId,
        ext: ExtentId,
        kind: Kind,
        size: u64,
        retry: bool,
    ) -> Stepped {
        let transid = self.handle_transid(task);
        if self.fs_error {
            return self.fail_alloc(ext, Error::model(Errno::EROFS));
        }
        if let Some(done) = self.find_free_extent(ext, kind, size, transid) {
            return Stepped::Finished(Ok(done));
        }
        // A request larger than a chunk can never fit: ENOSPC, no chunk.
        if size > self.config.chunk(kind) {
            return self.fail_alloc(ext, Error::model(Errno::ENOSPC));
        }
        if let Err(err) = self.do_chunk_alloc(task, kind, transid) {
            return self.fail_alloc(ext, err);
        }
        if !retry {
            // Step 2 allocates at most one more chunk before giving up.
            return Stepped::Yielded(Pc::Alloc {
                ext,
                kind,
                size,
                retry: true,
            });
        }
        match self.find_free_extent(ext, kind, size, transid) {
            Some(done) => Stepped::Finished(Ok(done)),
            None => self.fail_alloc(ext, Error::model(Errno::ENOSPC)),
        }
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
    /// queued, atomically (as inside a commit). A no-op on an aborted
    /// transaction, as in the kernel.
    pub(crate) fn run_delayed_refs(&mut self, transid: u64) {
        if self.trans(transid).aborted.is_some() {
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
        if self.fs_error {
            return Stepped::Finished(Err(Error::model(Errno::EROFS)));
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
    fn write_one_cache_group(&mut self, id: BgId) -> Result<(), Error> {
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
    /// its loop. Returns false when the loop must stop (the transaction was
    /// aborted).
    pub(crate) fn start_dirty_one(&mut self, task: TaskId, transid: u64) -> bool {
        let Some(id) = self.trans_mut(transid).writeout.pop_front() else {
            return true;
        };
        self.bgm(id).dirty_list = DirtyList::None;
        let ret = self.write_one_cache_group(id);
        let mut ok = true;
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
                ok = false;
            }
        }
        self.btrfs_put_block_group(id, "btrfs_start_dirty_block_groups");
        if !ok {
            // v4.1 leaves the rest on its local list; put them back on
            // dirty_bgs so cleanup_transaction releases their refs.
            let rest = std::mem::take(&mut self.trans_mut(transid).writeout);
            for id in rest {
                self.bgm(id).dirty_list = DirtyList::DirtyBgs(transid);
                self.trans_mut(transid).dirty_bgs.push_back(id);
            }
        }
        ok
    }

    /// `btrfs_start_dirty_block_groups`' `list_splice_init(&cur_trans->dirty_bgs,
    /// &dirty)`: `dirty_bgs` onto the local list.
    pub(crate) fn splice_dirty_to_writeout(&mut self, transid: u64) {
        let tr = self.trans_mut(transid);
        let dirty = std::mem::take(&mut tr.dirty_bgs);
        for &id in &dirty {
            self.bgm(id).dirty_list = DirtyList::Writeout(transid);
        }
        self.trans_mut(transid).writeout.extend(dirty);
    }

    /// fs/btrfs/extent-tree.c, `btrfs_write_dirty_block_groups`, inside the
    /// critical section: any error aborts, `-ENOENT` included.
    pub(crate) fn write_dirty_block_groups(&mut self, task: TaskId, transid: u64) {
        while let Some(id) = self.trans_mut(transid).dirty_bgs.pop_front() {
            self.bgm(id).dirty_list = DirtyList::None;
            let ret = self.write_one_cache_group(id);
            self.btrfs_put_block_group(id, "btrfs_write_dirty_block_groups");
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
                    return;
                }
            }
        }
    }

    /// The `delete_unused` operation, fs/btrfs/extent-tree.c
    /// `btrfs_delete_unused_bgs`: one bg a step.
    pub(crate) fn step_delete_unused(&mut self, task: TaskId, mut d: DelPc) -> Stepped {
        if d.current.is_none() {
            let Some(id) = self.unused_bgs.pop_front() else {
                return Stepped::Finished(Ok(Done::Deleted { count: d.count }));
            };
            self.bgm(id).bg_list = BgList::None;
            let bg = self.bg(id);
            if d.failed || bg.used != 0 || bg.reserved != 0 || bg.ro {
                self.btrfs_put_block_group(id, "btrfs_delete_unused_bgs");
                return self.delete_unused_next(d);
            }
            self.bgm(id).ro = true;
            d.current = Some(id);
        }
        let id = d.current.expect("a bg to delete");
        let transid = match self.join_transaction(task, TransType::Start) {
            Err(w) => return Stepped::Blocked(Pc::DeleteUnused(d), w),
            Ok(Err(_)) => {
                // btrfs_set_block_group_rw, then only puts from here on.
                self.bgm(id).ro = false;
                d.failed = true;
                d.current = None;
                self.btrfs_put_block_group(id, "btrfs_delete_unused_bgs");
                return self.delete_unused_next(d);
            }
            Ok(Ok(t)) => t,
        };
        self.btrfs_remove_chunk(task, transid, id);
        if self.trans(transid).aborted.is_some() {
            d.failed = true;
        } else {
            d.count += 1;
        }
        let _ = self.release_handle(task);
        d.current = None;
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
        let si = &mut self.space_info[kind.index()];
        si.total_bytes -= len;
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
