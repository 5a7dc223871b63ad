//! fs/btrfs/disk-io.c: what an aborted transaction releases
//! (`btrfs_cleanup_one_transaction`).
//!
//! Modelled: its delayed refs dropped (`btrfs_destroy_delayed_refs`), the
//! transaction marked COMPLETED so its waiters wake, and, with c79a175175d5
//! only, the refs of the bgs left on `dirty_bgs` and `io_bgs` released
//! (`btrfs_cleanup_dirty_bgs`). v4.1 released neither list: their refs leak.
//! Left out: the delayed inodes, ordered extents, pinned extents and dirty
//! pages it also destroys (the model has none). No failpoint sites. See
//! docs/model.md.

use crate::{DirtyList, Engine, TransState, C79A175175D5};

impl Engine {
    /// fs/btrfs/disk-io.c, `btrfs_cleanup_one_transaction`, as
    /// `cleanup_transaction` calls it after an abort.
    pub(crate) fn btrfs_cleanup_one_transaction(&mut self, transid: u64) {
        let tr = self.trans_mut(transid);
        tr.in_critical = false;
        tr.delayed_refs.clear();
        if self.applied(C79A175175D5) {
            self.btrfs_cleanup_dirty_bgs(transid);
        }
        self.trans_mut(transid).state = TransState::Completed;
    }

    /// fs/btrfs/disk-io.c, `btrfs_cleanup_dirty_bgs` (c79a175175d5, v4.9):
    /// every bg off `dirty_bgs` and `io_bgs`, and the ref each list held
    /// dropped.
    fn btrfs_cleanup_dirty_bgs(&mut self, transid: u64) {
        let dirty = std::mem::take(&mut self.trans_mut(transid).dirty_bgs);
        for id in dirty {
            self.bgm(id).dirty_list = DirtyList::None;
            self.btrfs_put_block_group(id, "btrfs_cleanup_dirty_bgs");
        }
        let io = self.trans(transid).io_bgs.clone();
        for id in io {
            self.io_list_del(id, "btrfs_cleanup_dirty_bgs");
        }
    }
}
