//! The model's own helpers: no kernel function stands behind these. They
//! index the engine's arenas (transactions by transid, bgs by [`BgId`],
//! extents by the 1-based [`ExtentId`]), find a task's handle, evaluate a
//! failpoint, and fail an allocation.

use crate::{BgId, BlockGroup, FIRST_TRANSID};
use crate::{Engine, Error, Extent, ExtentId, ExtentState, Site, Stepped, TaskId, Transaction};

impl Engine {
    pub(crate) fn trans(&self, transid: u64) -> &Transaction {
        &self.transactions[(transid - FIRST_TRANSID) as usize]
    }
    pub(crate) fn trans_mut(&mut self, transid: u64) -> &mut Transaction {
        &mut self.transactions[(transid - FIRST_TRANSID) as usize]
    }
    /// A bg, mutably; [`BgId`] is 0-based.
    pub(crate) fn bgm(&mut self, id: BgId) -> &mut BlockGroup {
        &mut self.bgs[id.0 as usize]
    }
    /// An extent whose alloc has begun, mutably; [`ExtentId`] is 1-based
    /// (`e1` is the first), so this is the one place that subtracts.
    pub(crate) fn extent_mut(&mut self, id: ExtentId) -> &mut Extent {
        &mut self.extents[id.0 as usize - 1]
    }
    /// An extent the engine itself named (a queued ref, an alloc in
    /// progress): it exists.
    pub(crate) fn extent_of(&self, id: ExtentId) -> Extent {
        *self
            .extent(id)
            .expect("the engine names only extents it made")
    }
    /// The transid of the task's handle; the op needs one.
    pub(crate) fn handle_transid(&self, task: TaskId) -> u64 {
        self.tasks[task]
            .handle
            .as_ref()
            .expect("op needs a handle")
            .transid
    }
    /// `trans->aborted` of the task's handle (false without one).
    pub(crate) fn handle_aborted(&self, task: TaskId) -> bool {
        self.tasks[task].handle.as_ref().is_some_and(|h| h.aborted)
    }

    /// Evaluates the failpoint at `site`: by the in-engine plans if the
    /// engine has them, else by fail-rs's registry if the run armed it.
    pub(crate) fn failpoint(&mut self, site: Site) -> Option<Error> {
        if let Some(f) = &mut self.faults {
            f.eval(site)
        } else if self.failpoints_armed {
            bgfuzz_failpoints::eval(site)
        } else {
            None
        }
    }

    /// An `alloc` that returns `err`: the extent's name stays unused.
    pub(crate) fn fail_alloc(&mut self, ext: ExtentId, err: Error) -> Stepped {
        self.extent_mut(ext).state = ExtentState::Failed;
        Stepped::Finished(Err(err))
    }

    /// `mutex_lock(&fs_info->delete_unused_bgs_mutex)`: false when another
    /// task holds it (the caller blocks on [`crate::Wait::DeleteUnusedBgsMutex`]).
    pub(crate) fn lock_delete_unused_bgs_mutex(&mut self, task: TaskId) -> bool {
        match self.delete_unused_bgs_mutex {
            Some(holder) => holder == task,
            None => {
                self.delete_unused_bgs_mutex = Some(task);
                true
            }
        }
    }

    /// `mutex_unlock(&fs_info->delete_unused_bgs_mutex)`, if `task` holds it.
    pub(crate) fn unlock_delete_unused_bgs_mutex(&mut self, task: TaskId) {
        if self.delete_unused_bgs_mutex == Some(task) {
            self.delete_unused_bgs_mutex = None;
        }
    }
}
