//! fs/btrfs/inode.c: `btrfs_finish_ordered_io` for a free-space cache
//! inode, the free-space endio worker. It joins the transaction with
//! JOIN_NOLOCK (`if (nolock) trans = btrfs_join_transaction_nolock(root);`,
//! admitted during COMMIT_DOING), updates the cache inode (tree COW: a
//! metadata allocation, which may create a bg on the worker's own
//! `new_bgs`), ends its handle, and only then completes the IO
//! (`btrfs_remove_ordered_extent`), which wakes `btrfs_wait_cache_io`.
//!
//! Modelled as the `endio` operation: join NOLOCK | allocate one 16K node,
//! the first time this bg's cache inode is updated in the transaction
//! (tree blocks are COWed once per transaction) | end (phase 2 for what it
//! created) and complete the IO. Left out: ordered extents and their other
//! work, IO errors, and the reservation that makes the worker's
//! allocation succeed (an allocation the model cannot satisfy returns
//! ENOSPC to the worker, which goes on to end without aborting). See
//! docs/model.md. No failpoint sites.

use crate::extent_tree::AllocPc;
use crate::{
    BgId, Done, Engine, Event, Extent, ExtentId, ExtentState, Kind, Pc, Stepped, TaskId, TransType,
};

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
    Alloc(AllocPc),
    /// `btrfs_end_transaction`: phase 2 for the worker's `new_bgs`.
    End { started: bool },
}

impl Engine {
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
                        e.stage = EndioStage::Alloc(AllocPc {
                            ext,
                            kind: Kind::Metadata,
                            size: NODESIZE,
                            retry: false,
                            half: None,
                        });
                    }
                },
                EndioStage::Alloc(a) => {
                    match self.step_alloc(task, a) {
                        Stepped::Yielded(Pc::Alloc(a)) => {
                            e.stage = EndioStage::Alloc(a);
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
