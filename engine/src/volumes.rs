//! fs/btrfs/volumes.c: chunks and device extents. Allocating a chunk
//! (`btrfs_alloc_chunk`: `find_free_dev_extent`, `find_next_chunk`), its
//! chunk item in phase 2 (`btrfs_finish_chunk_alloc`), and removing it
//! (`btrfs_remove_chunk`).
//!
//! Modelled: one device, one stripe per chunk (the SINGLE profile), a
//! first-fit device hole search past the first 1 MiB, logical chunk starts
//! past the highest chunk's end, a chunk item per chunk. Left out: RAID
//! profiles and several devices, the system chunk array in the superblock,
//! `check_system_chunk`, the dev extent items (the map stands for them), and
//! device replace. No failpoint sites (a chunk allocation's failure is the
//! `bg_create` site in extent_tree.rs). See docs/model.md.

use crate::{BgId, ChunkItem, Engine, Kind, TaskId, SZ_1M};

/// The first 1 MiB of the device holds no chunk (superblock area).
pub(crate) const DEV_RESERVED: u64 = SZ_1M;

/// Where a new chunk goes: its logical start and device offset.
pub(crate) struct ChunkPlace {
    pub(crate) start: u64,
    pub(crate) dev_offset: u64,
}

impl Engine {
    /// fs/btrfs/volumes.c, `__btrfs_alloc_chunk`: the first device hole
    /// that fits a chunk of `kind` (`find_free_dev_extent`), its device
    /// extent taken, and a logical start past every chunk
    /// (`find_next_chunk`). `None` when no hole fits: ENOSPC.
    pub(crate) fn btrfs_alloc_chunk(&mut self, kind: Kind) -> Option<ChunkPlace> {
        let len = self.config.chunk(kind);
        // find_free_dev_extent: first hole on the device that fits.
        let mut cursor = DEV_RESERVED;
        for (&off, &l) in &self.dev_extents {
            if off >= cursor + len {
                break;
            }
            cursor = cursor.max(off + l);
        }
        if cursor + len > self.config.device_size {
            return None;
        }
        self.dev_extents.insert(cursor, len);
        // find_next_chunk: logical start just past the highest chunk's end.
        let start = self.bgs.iter().map(|b| b.end()).max().unwrap_or(SZ_1M);
        Some(ChunkPlace {
            start,
            dev_offset: cursor,
        })
    }

    /// fs/btrfs/volumes.c, `btrfs_finish_chunk_alloc`: the chunk item, in
    /// phase 2 next to the bg item.
    pub(crate) fn btrfs_finish_chunk_alloc(&mut self, id: BgId) {
        let bg = self.bg(id);
        let chunk = ChunkItem {
            len: bg.len,
            flags: bg.kind.flags(),
            dev_offset: bg.dev_offset,
        };
        let start = bg.start;
        self.chunk_tree.insert(start, chunk);
    }

    /// fs/btrfs/volumes.c, `btrfs_remove_chunk`: the chunk item and device
    /// extent go, then `btrfs_remove_block_group` (extent-tree.c).
    pub(crate) fn btrfs_remove_chunk(&mut self, task: TaskId, transid: u64, id: BgId) {
        let (start, dev_offset) = {
            let bg = self.bg(id);
            (bg.start, bg.dev_offset)
        };
        self.chunk_tree.remove(&start);
        self.dev_extents.remove(&dev_offset);
        self.btrfs_remove_block_group(task, transid, id);
    }
}
