//! fs/btrfs/volumes.c: chunks and device extents. Allocating a chunk
//! (`btrfs_alloc_chunk`: `find_free_dev_extent`, `find_next_chunk`), its
//! chunk item in phase 2 (`btrfs_finish_chunk_alloc`), and removing it
//! (`btrfs_remove_chunk`), and balance's loop over chunks
//! (`__btrfs_balance`, `btrfs_relocate_chunk`) as the `relocate` operation.
//!
//! Modelled: one device, one stripe per chunk (the SINGLE profile), a
//! first-fit device hole search past the first 1 MiB, logical chunk starts
//! past the highest chunk's end, a chunk item per chunk. Left out: RAID
//! profiles and several devices, the system chunk array in the superblock,
//! the dev extent items (the map stands for them), the commit root that
//! `find_free_dev_extent` searches (a removed chunk's hole is free at once
//! here), the 10%-of-device cap (the configured chunk size stands for the
//! computed one), and device replace. No failpoint sites (a chunk allocation's failure is the
//! `bg_create` site in extent_tree.rs). See docs/model.md.

use crate::relocation::RelocPc;
use crate::{
    fmt_size, BgId, ChunkItem, Done, Engine, Errno, Error, Event, Kind, Pc, Stepped, TaskId,
    TransType, Wait, F67C5E7D464BC, SZ_1M,
};

/// The first 1 MiB of the device holds no chunk (superblock area).
pub(crate) const DEV_RESERVED: u64 = SZ_1M;

/// `BTRFS_STRIPE_LEN`: a device hole smaller than this holds no chunk, and
/// a tail chunk's size is rounded down to it.
pub(crate) const BTRFS_STRIPE_LEN: u64 = 64 * 1024;

/// Where a new chunk goes: its logical start, device offset and size.
pub(crate) struct ChunkPlace {
    pub(crate) start: u64,
    pub(crate) dev_offset: u64,
    pub(crate) len: u64,
}

impl Engine {
    /// fs/btrfs/volumes.c, `__btrfs_alloc_chunk`: `find_free_dev_extent`
    /// returns the first device hole that fits a chunk of `kind`, or else
    /// the largest hole; a hole of at least `BTRFS_STRIPE_LEN` makes a tail
    /// chunk of its size rounded down to it (`if (max_avail <
    /// BTRFS_STRIPE_LEN * dev_stripes) continue; ... stripe_size =
    /// devices_info[ndevs-1].max_avail;`). Its device extent is taken, and
    /// its logical start is past every chunk (`find_next_chunk`). `None`
    /// when no hole is big enough: ENOSPC.
    pub(crate) fn btrfs_alloc_chunk(&mut self, kind: Kind) -> Option<ChunkPlace> {
        let (dev_offset, len) = self.find_free_dev_extent(self.config.chunk(kind))?;
        self.dev_extents.insert(dev_offset, len);
        // find_next_chunk: logical start just past the highest chunk's end.
        let start = self.bgs.iter().map(|b| b.end()).max().unwrap_or(SZ_1M);
        Some(ChunkPlace {
            start,
            dev_offset,
            len,
        })
    }

    /// fs/btrfs/volumes.c, `find_free_dev_extent` as `__btrfs_alloc_chunk`
    /// uses it: the first hole of at least `want` bytes past the first
    /// 1 MiB, else the largest hole rounded down to `BTRFS_STRIPE_LEN`
    /// (a tail chunk), as (device offset, length). `None` when no hole
    /// holds a stripe.
    pub(crate) fn find_free_dev_extent(&self, want: u64) -> Option<(u64, u64)> {
        let (mut cursor, mut best) = (DEV_RESERVED, (0u64, 0u64));
        let ends = self
            .dev_extents
            .iter()
            .map(|(&off, &l)| (off, off + l))
            .chain(std::iter::once((
                self.config.device_size,
                self.config.device_size,
            )));
        for (off, end) in ends {
            let hole = off.saturating_sub(cursor);
            if hole >= want {
                return Some((cursor, want));
            }
            if hole > best.1 {
                best = (cursor, hole);
            }
            cursor = cursor.max(end);
        }
        (best.1 >= BTRFS_STRIPE_LEN).then(|| (best.0, best.1 / BTRFS_STRIPE_LEN * BTRFS_STRIPE_LEN))
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

    /// fs/btrfs/volumes.c, `btrfs_remove_chunk`: the extent map lookup,
    /// then the chunk item and device extent go, then
    /// `btrfs_remove_block_group` (extent-tree.c). The model's extent map
    /// is the bg's entry in the cache tree (both live from phase 1 to the
    /// removal). A chunk already removed is v4.1's `ASSERT(0)` ("This is a
    /// logic error"); without CONFIG_BTRFS_ASSERT it returns -EINVAL, no
    /// abort.
    pub(crate) fn btrfs_remove_chunk(
        &mut self,
        task: TaskId,
        transid: u64,
        start: u64,
    ) -> Result<(), Error> {
        let Some(&id) = self.cache_tree.get(&start) else {
            self.events.push(Event::KernelAssert {
                site: "btrfs_remove_chunk",
                what: format!(
                    "ASSERT(0): no extent map for chunk {} (already removed)",
                    fmt_size(start)
                ),
            });
            return Err(Error::model(Errno::EINVAL));
        };
        let dev_offset = self.bg(id).dev_offset;
        self.chunk_tree.remove(&start);
        self.dev_extents.remove(&dev_offset);
        self.btrfs_remove_block_group(task, transid, id);
        Ok(())
    }

    /// The `relocate` operation: fs/btrfs/volumes.c, `__btrfs_balance` for
    /// one chunk, then `btrfs_relocate_chunk`. With 67c5e7d464bc, balance
    /// holds `delete_unused_bgs_mutex` from the chunk lookup
    /// (`btrfs_search_slot` on the chunk tree) to the end of
    /// `btrfs_relocate_chunk`; without it, nothing orders it against the
    /// cleaner. Steps: lock, look up, `btrfs_can_relocate`,
    /// `btrfs_relocate_block_group` (set ro), yield; then
    /// `btrfs_start_transaction` (may block), `btrfs_remove_chunk`,
    /// `btrfs_end_transaction`, unlock.
    pub(crate) fn step_relocate(&mut self, task: TaskId, pc: RelocPc) -> Stepped {
        match pc {
            RelocPc::Lock { start } => {
                if self.applied(F67C5E7D464BC) && !self.lock_delete_unused_bgs_mutex(task) {
                    return Stepped::Blocked(Pc::Relocate(pc), Wait::DeleteUnusedBgsMutex);
                }
                // __btrfs_balance: a chunk item the cleaner removed is not
                // found, so there is nothing to relocate.
                if !self.chunk_tree.contains_key(&start) {
                    self.unlock_delete_unused_bgs_mutex(task);
                    return Stepped::Finished(Ok(Done::NoChunk));
                }
                let ret = self
                    .btrfs_can_relocate(start)
                    .and_then(|()| self.btrfs_relocate_block_group(start));
                if let Err(errno) = ret {
                    self.unlock_delete_unused_bgs_mutex(task);
                    return Stepped::Finished(Err(Error::model(errno)));
                }
                Stepped::Yielded(Pc::Relocate(RelocPc::Remove { start }))
            }
            RelocPc::Remove { start } => {
                let transid = match self.join_transaction(task, TransType::Start) {
                    Err(w) => return Stepped::Blocked(Pc::Relocate(pc), w),
                    Ok(Err(e)) => {
                        // The bg stays ro, as after a failed balance.
                        self.unlock_delete_unused_bgs_mutex(task);
                        return Stepped::Finished(Err(e));
                    }
                    Ok(Ok(t)) => t,
                };
                let ret = self.btrfs_remove_chunk(task, transid, start);
                let end = self.release_handle(task);
                self.unlock_delete_unused_bgs_mutex(task);
                Stepped::Finished(ret.and(end).map(|()| Done::Relocated { start }))
            }
        }
    }

    /// fs/btrfs/volumes.c, `btrfs_can_relocate`: whether the bg's used bytes
    /// fit elsewhere. The model moves no extents, so it relocates only an
    /// empty bg and refuses any other with ENOSPC (as `btrfs_relocate_chunk`
    /// turns a refusal here into `-ENOSPC`).
    fn btrfs_can_relocate(&self, start: u64) -> Result<(), Errno> {
        match self.cache_tree.get(&start) {
            Some(&id) if self.bg(id).used != 0 || self.bg(id).reserved != 0 => Err(Errno::ENOSPC),
            _ => Ok(()),
        }
    }
}
