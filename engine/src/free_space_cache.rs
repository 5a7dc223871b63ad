//! fs/btrfs/free-space-cache.c and the cache's endio path: what the commit
//! does for each dirty bg under `-o space_cache` (v1). In v4.1 both writeouts
//! of dirty bgs in extent-tree.c call `cache_save_setup` and then
//! `btrfs_write_out_cache`, which starts the cache inode's IO and puts the
//! bg on the transaction's `io_bgs` (its `io_list` takes over the ref its
//! `dirty_list` held); `btrfs_wait_cache_io` later sleeps until the IO is
//! done. The IO completes in a free-space endio worker
//! (fs/btrfs/inode.c, `btrfs_finish_ordered_io`), which joins the
//! transaction with JOIN_NOLOCK (admitted during COMMIT_DOING), updates the
//! cache inode (a metadata allocation: tree COW, which may create a bg on
//! the worker's own `new_bgs`), and ends its handle; only then does the
//! waiter wake (`btrfs_remove_ordered_extent` after `btrfs_end_transaction`).
//!
//! Modelled: the 100 MiB floor of `cache_save_setup` (smaller bgs get no
//! cache), no cache setup on an aborted handle, `io_bgs` and its ref, the IO
//! in flight until a worker completes it, the worker as the `endio`
//! operation: join NOLOCK | allocate one metadata node (16K), the first time
//! this bg's cache inode is updated in the transaction (tree blocks are
//! COWed once per transaction) | end (phase 2 for what it created) and
//! complete the IO. Left out: the cache inode
//! itself (its creation, truncation and data preallocation, which allocate
//! too), the cache's contents, `BTRFS_DC_*` states beyond "setup or not",
//! IO errors, and the reservation that makes the worker's allocation
//! succeed (an allocation the model cannot satisfy returns ENOSPC to the
//! worker, which goes on to end without aborting). See docs/model.md.
//!
//! No failpoint sites.

use crate::{
    BgId, CacheIo, Done, Engine, Event, Extent, ExtentId, ExtentState, Kind, Pc, Stepped, TaskId,
    TransType, Wait, SZ_1M,
};

/// `cache_save_setup`: "If this block group is smaller than 100 megs don't
/// bother caching the block group."
pub(crate) const CACHE_MIN_BG: u64 = 100 * SZ_1M;
/// The metadata the worker's inode update allocates: one 16K node.
pub(crate) const NODESIZE: u64 = 16 * 1024;

/// Where an endio worker stands between steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct EndioPc {
    /// The bg whose cache IO this worker completes.
    pub(crate) bg: BgId,
    pub(crate) stage: EndioStage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum EndioStage {
    /// `btrfs_join_transaction_nolock`, then the inode update's allocation.
    Join,
    /// `btrfs_update_inode_fallback`'s tree COW: `find_free_extent`.
    Alloc { ext: ExtentId, retry: bool },
    /// `btrfs_end_transaction`: phase 2 for the worker's `new_bgs`.
    End { started: bool },
}

impl Engine {
    /// `cache_save_setup` + `btrfs_write_out_cache` for one bg of either
    /// writeout: starts its cache IO and puts it on `io_bgs`, which keeps
    /// the ref the caller would otherwise put (`should_put = 0`). Returns
    /// whether it did.
    pub(crate) fn btrfs_write_out_cache(&mut self, task: TaskId, transid: u64, id: BgId) -> bool {
        let aborted = self.tasks[task].handle.as_ref().is_some_and(|h| h.aborted);
        if !self.config.mount.space_cache || self.bg(id).len < CACHE_MIN_BG || aborted {
            return false;
        }
        self.bgm(id).on_io_list = true;
        self.trans_mut(transid).io_bgs.push_back(id);
        self.cache_io.push_back(CacheIo {
            bg: id,
            transid,
            worker: None,
        });
        self.events.push(Event::CacheIoStarted { bg: id });
        true
    }

    /// `btrfs_wait_cache_io`: the wait, if the bg's IO is still in flight.
    pub(crate) fn cache_io_wait(&self, id: BgId) -> Option<Wait> {
        self.cache_io
            .iter()
            .any(|io| io.bg == id)
            .then(|| Wait::CacheIo(id, self.bg(id).start))
    }

    /// After `btrfs_wait_cache_io` returned: off `io_bgs`, and the ref that
    /// list held is put (`list_del_init(&cache->io_list); ...
    /// btrfs_put_block_group(cache)`).
    pub(crate) fn io_list_del(&mut self, id: BgId, site: &'static str) {
        if !self.bg(id).on_io_list {
            return;
        }
        self.bgm(id).on_io_list = false;
        for tr in &mut self.transactions {
            tr.io_bgs.retain(|&b| b != id);
        }
        self.btrfs_put_block_group(id, site);
    }

    /// The oldest IO no worker has taken, now this task's.
    pub(crate) fn claim_cache_io(&mut self, task: TaskId) -> Option<EndioPc> {
        let io = self.cache_io.iter_mut().find(|io| io.worker.is_none())?;
        io.worker = Some(task);
        Some(EndioPc {
            bg: io.bg,
            stage: EndioStage::Join,
        })
    }

    /// The worker is done: `btrfs_remove_ordered_extent` wakes the waiter.
    fn complete_cache_io(&mut self, task: TaskId, bg: BgId) {
        self.cache_io.retain(|io| io.worker != Some(task));
        self.events.push(Event::CacheIoDone { bg });
    }

    /// The `endio` operation: fs/btrfs/inode.c, `btrfs_finish_ordered_io`
    /// for a free-space cache inode (`nolock`).
    pub(crate) fn step_endio(&mut self, task: TaskId, mut e: EndioPc) -> Stepped {
        loop {
            match e.stage {
                EndioStage::Join => match self.join_transaction(task, TransType::JoinNolock) {
                    Err(w) => return Stepped::Blocked(Pc::Endio(e), w),
                    Ok(Err(err)) => {
                        // `if (IS_ERR(trans)) goto out`: the IO completes
                        // all the same.
                        self.complete_cache_io(task, e.bg);
                        return Stepped::Finished(Err(err));
                    }
                    Ok(Ok(transid)) => {
                        // The inode's leaf is COWed once per transaction;
                        // a second update is in place (`should_cow_block`).
                        let cowed = &mut self.trans_mut(transid).cache_inodes_cowed;
                        if cowed.contains(&e.bg) {
                            e.stage = EndioStage::End { started: false };
                            return Stepped::Yielded(Pc::Endio(e));
                        }
                        cowed.push(e.bg);
                        let ext = ExtentId(self.extents.len() as u32 + 1);
                        self.extents.push(Extent {
                            id: ext,
                            kind: Kind::Metadata,
                            bg: None,
                            start: 0,
                            len: NODESIZE,
                            state: ExtentState::Pending,
                            added: false,
                        });
                        e.stage = EndioStage::Alloc { ext, retry: false };
                    }
                },
                EndioStage::Alloc { ext, retry } => {
                    match self.step_alloc(task, ext, Kind::Metadata, NODESIZE, retry) {
                        Stepped::Yielded(Pc::Alloc { retry, .. }) => {
                            e.stage = EndioStage::Alloc { ext, retry };
                            return Stepped::Yielded(Pc::Endio(e));
                        }
                        Stepped::Finished(_) => {
                            // Reserved (or, where the model has no room, not:
                            // see the module doc); the ref is queued. The
                            // worker may be preempted before it ends.
                            e.stage = EndioStage::End { started: false };
                            return Stepped::Yielded(Pc::Endio(e));
                        }
                        other => {
                            unreachable!("find_free_extent neither blocks nor moves: {other:?}")
                        }
                    }
                }
                EndioStage::End { started } => {
                    return match self.step_end(task, started) {
                        Stepped::Yielded(Pc::End { started }) => {
                            e.stage = EndioStage::End { started };
                            Stepped::Yielded(Pc::Endio(e))
                        }
                        Stepped::Finished(r) => {
                            self.complete_cache_io(task, e.bg);
                            Stepped::Finished(r.map(|_| Done::IoDone { bg: e.bg }))
                        }
                        other => unreachable!("__btrfs_end_transaction does not block: {other:?}"),
                    };
                }
            }
        }
    }
}
