//! fs/btrfs/free-space-cache.c: the cache writeout under `-o space_cache`
//! (v1). In v4.1 both writeouts of dirty bgs in extent-tree.c call
//! `cache_save_setup` (extent_tree.rs) and then `btrfs_write_out_cache`,
//! which starts the cache inode's IO and puts the bg on the transaction's
//! `io_bgs` (its `io_list` takes over the ref its `dirty_list` held);
//! `btrfs_wait_cache_io` later sleeps until the IO is done. The IO
//! completes in a free-space endio worker (inode.rs).
//!
//! Modelled: `io_bgs` and its ref, the IO in flight until a worker
//! completes it, and the wait. Left out: the cache's contents and the
//! `BTRFS_DC_*` states beyond "set up or not", IO errors. See
//! docs/model.md.
//!
//! No failpoint sites.

use crate::{BgId, CacheIo, Engine, Event, Wait, SZ_1M};

/// `cache_save_setup`: "If this block group is smaller than 100 megs don't
/// bother caching the block group."
pub(crate) const CACHE_MIN_BG: u64 = 100 * SZ_1M;
impl Engine {
    /// `btrfs_write_out_cache`, after `cache_save_setup` (extent-tree.c)
    /// set the bg up: starts its cache IO and puts it on `io_bgs`, which
    /// keeps the ref the caller would otherwise put (`should_put = 0`).
    pub(crate) fn btrfs_write_out_cache(&mut self, transid: u64, id: BgId) {
        self.bgm(id).on_io_list = true;
        self.trans_mut(transid).io_bgs.push_back(id);
        self.cache_io.push_back(CacheIo {
            bg: id,
            transid,
            worker: None,
        });
        self.events.push(Event::CacheIoStarted { bg: id });
    }

    /// Whether the bg's cache IO is still in flight (its endio worker has
    /// not finished).
    pub(crate) fn cache_io_in_flight(&self, id: BgId) -> bool {
        self.cache_io.iter().any(|io| io.bg == id)
    }

    /// The wait of `btrfs_wait_cache_io`, if the bg's IO is still in flight.
    pub(crate) fn cache_io_wait(&self, id: BgId) -> Option<Wait> {
        self.cache_io_in_flight(id)
            .then(|| Wait::CacheIo(id, self.bg(id).start))
    }

    /// "if (!list_empty(&cache->io_list)) { list_del_init(&cache->io_list);
    /// btrfs_wait_cache_io(...); btrfs_put_block_group(cache); }", as both
    /// writeouts do it: the wait while the IO is in flight, else the bg off
    /// `io_bgs` with that list's ref put.
    pub(crate) fn btrfs_wait_cache_io(&mut self, id: BgId, site: &'static str) -> Option<Wait> {
        if self.bg(id).on_io_list {
            if let Some(w) = self.cache_io_wait(id) {
                return Some(w);
            }
            self.io_list_del(id, site);
        }
        None
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
}
