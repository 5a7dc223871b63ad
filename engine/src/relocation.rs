//! fs/btrfs/relocation.c: relocating a block group for balance
//! (`btrfs_relocate_block_group`). The balance loop around it is in
//! volumes.rs (`__btrfs_balance`, `btrfs_relocate_chunk`).
//!
//! Modelled: the bg is set read-only unless it already is, and its extents
//! are moved. The model moves no extents: `btrfs_can_relocate` (volumes.rs)
//! lets only an empty bg (no used or reserved bytes) through, so there is
//! nothing to move. Left out: the data relocation inode, the reloc trees,
//! and the transaction `btrfs_set_block_group_ro` joins (with its wait for
//! a commit whose `dirty_bg_run` is set) and its forced chunk allocation
//! when `set_block_group_ro` refuses: the model returns ENOSPC instead.

use crate::{BgId, Engine, Errno, Event};

/// Where a `relocate` stands between steps.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RelocPc {
    /// Taking `delete_unused_bgs_mutex` (with 67c5e7d464bc), then the chunk
    /// lookup, `btrfs_can_relocate` and `btrfs_relocate_block_group`.
    Lock { start: u64 },
    /// Relocated; `btrfs_relocate_chunk` starts its transaction to remove
    /// the chunk.
    Remove { start: u64 },
}

impl Engine {
    /// fs/btrfs/relocation.c, `btrfs_relocate_block_group`:
    /// `rc->block_group = btrfs_lookup_block_group(fs_info, group_start);
    /// BUG_ON(!rc->block_group);` then `if (!rc->block_group->ro)
    /// btrfs_set_block_group_ro(...)`: a bg another task already set ro
    /// (the cleaner, in `btrfs_delete_unused_bgs`) is taken as it is.
    /// The extents would move here; the model's bg is empty.
    pub(crate) fn btrfs_relocate_block_group(&mut self, start: u64) -> Result<BgId, Errno> {
        let Some(&id) = self.cache_tree.get(&start) else {
            self.events.push(Event::KernelAssert {
                site: "btrfs_relocate_block_group",
                what: "BUG_ON(!rc->block_group)".into(),
            });
            return Err(Errno::EINVAL);
        };
        if !self.bg(id).ro {
            // btrfs_set_block_group_ro, without its join and forced chunk
            // allocation (see the module doc).
            self.set_block_group_ro(id)?;
        }
        Ok(id)
    }
}
