//! fs/btrfs/transaction.c: joining and starting a transaction
//! (`join_transaction`, `start_transaction`), ending a handle
//! (`__btrfs_end_transaction`), the commit (`btrfs_commit_transaction`),
//! `cleanup_transaction`, and the waits between them
//! (`wait_current_trans`, `wait_for_commit`, the extwriter and writer
//! waits), and 4fbcdf669454's `btrfs_trans_release_chunk_metadata`. Also
//! `__btrfs_abort_transaction`, which v4.1 keeps in super.c.
//!
//! Modelled: the transaction states and which handle types each blocks,
//! `num_writers` / `num_extwriters`, the commit's order of work around its
//! critical section (COMMIT_DOING up to UNBLOCKED), and an abort's cleanup.
//! The free-space endio worker's JOIN_NOLOCK handle is here too (its
//! operation is in free_space_cache.rs). Left out: ATTACH handles, nested
//! handles (`use_count`), reservations, the log tree, snapshots, delayed
//! items (but for `btrfs_run_delayed_items`' -EIO on an aborted handle),
//! ordered extents, and everything the commit writes besides the
//! block-group items; the superblock write is one step. See docs/model.md.
//!
//! Failpoint sites here: `trans_end` (an error in `__btrfs_end_transaction`
//! before phase 2 runs, which aborts).

use crate::extent_tree::{CriticalStep, DirtyStep, STACK_START_DIRTY, SYSTEM_CHUNK_THRESH};
use crate::{
    AbortInfo, BgId, BgList, Done, Engine, Errno, Error, Event, Handle, Kind, Pc, Site, Stepped,
    TaskId, TransState, TransType, Transaction, Wait, F7785A663C4BE, FIRST_TRANSID,
};
use std::collections::VecDeque;

const STACK_END: &[&str] = &["__btrfs_end_transaction"];
const STACK_PHASE2: &[&str] = &[
    "__btrfs_end_transaction",
    "btrfs_create_pending_block_groups",
];
const STACK_COMMIT_PHASE2: &[&str] = &[
    "btrfs_commit_transaction",
    "btrfs_create_pending_block_groups",
];

/// Where a commit stands, in the order `btrfs_commit_transaction` does its
/// work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum CommitPc {
    /// The abort check, `btrfs_run_delayed_refs`,
    /// `btrfs_create_pending_block_groups`, `btrfs_run_delayed_refs`.
    Begin,
    /// `btrfs_start_dirty_block_groups`, entry (once per transaction:
    /// `dirty_bg_run`).
    StartDirty,
    /// `btrfs_start_dirty_block_groups`: one bg of the local list per step;
    /// `pass` is the kernel's `loops`.
    WriteOut { pass: u8 },
    /// Another task already set COMMIT_START: wait for its commit.
    CheckOther,
    /// Wait for the previous transaction to complete, then
    /// `btrfs_run_delayed_items`, which returns -EIO on a handle that
    /// aborted itself: straight to `cleanup_transaction`.
    WaitPrev,
    /// `wait_event(... extwriter_counter_read(cur_trans) == 0)`.
    WaitExt,
    /// COMMIT_DOING and `num_writers == 1`: the critical section begins
    /// (or, on an aborted transaction, `cleanup_transaction`).
    Doing,
    /// `commit_cowonly_roots`: `while (dirty_bgs || io_bgs)
    /// btrfs_write_dirty_block_groups`. Without `space_cache` the whole
    /// loop is one step, as before; with it, a step per bg and per IO wait.
    /// `retry`: a bg whose lookup missed, to look up again once
    /// `num_writers == 1` (e44081ef6118), and whether its ref is still to
    /// put.
    Critical { retry: Option<(BgId, bool)> },
    /// `write_ctree_super`, then COMPLETED.
    Super,
}

impl Engine {
    /// Whether what a blocked task waits for now holds.
    pub(crate) fn wait_satisfied(&self, w: Wait) -> bool {
        match w {
            Wait::Unblocked(t) => {
                let tr = self.trans(t);
                tr.state >= TransState::Unblocked || tr.aborted.is_some()
            }
            Wait::CommitDone(t) => self.trans(t).state == TransState::Completed,
            Wait::ExtWriters(t) => self.trans(t).num_extwriters == 0,
            Wait::Writers(t) => self.trans(t).num_writers == 1,
            Wait::CacheIo(bg, _) => !self.cache_io_in_flight(bg),
            Wait::DeleteUnusedBgsMutex => self.delete_unused_bgs_mutex.is_none(),
        }
    }

    /// fs/btrfs/super.c, `__btrfs_abort_transaction` (via the
    /// `btrfs_abort_transaction` macro): the handle is marked
    /// (`trans->aborted`), only the first abort of a transaction is
    /// recorded, and the filesystem goes read-only.
    pub(crate) fn btrfs_abort_transaction(
        &mut self,
        task: TaskId,
        transid: u64,
        error: Error,
        stack: &'static [&'static str],
    ) {
        self.fs_error = true;
        if let Some(h) = self.tasks[task].handle.as_mut() {
            if h.transid == transid {
                h.aborted = true;
            }
        }
        let device_full =
            error.errno == Errno::ENOSPC && !self.room_for_system_chunk(SYSTEM_CHUNK_THRESH);
        let tr = self.trans_mut(transid);
        if tr.aborted.is_some() {
            return;
        }
        tr.aborted = Some(error);
        let in_critical = tr.in_critical;
        self.events.push(Event::Abort(AbortInfo {
            transid,
            error,
            task,
            stack,
            in_critical,
            device_full,
        }));
    }

    /// fs/btrfs/transaction.c, `join_transaction` + `start_transaction`:
    /// `Err(wait)` when the running transaction's state blocks this type
    /// (`wait_current_trans`).
    pub(crate) fn join_transaction(
        &mut self,
        task: TaskId,
        ty: TransType,
    ) -> Result<Result<u64, Error>, Wait> {
        if self.fs_error {
            return Ok(Err(Error::model(Errno::EROFS)));
        }
        let transid = match self.running {
            Some(t) => {
                let tr = self.trans(t);
                if ty.blocked_in(tr.state) {
                    return Err(Wait::Unblocked(t));
                }
                t
            }
            None => {
                let transid = FIRST_TRANSID + self.transactions.len() as u64;
                self.transactions.push(Transaction {
                    transid,
                    state: TransState::Running,
                    num_writers: 0,
                    num_extwriters: 0,
                    dirty_bgs: VecDeque::new(),
                    io_bgs: VecDeque::new(),
                    dirty_bg_run: false,
                    delayed_refs: VecDeque::new(),
                    aborted: None,
                    committer: None,
                    in_critical: false,
                    writeout: VecDeque::new(),
                    deleted_bgs: Vec::new(),
                    cache_inodes_cowed: Vec::new(),
                });
                self.running = Some(transid);
                self.events.push(Event::TransStarted { transid });
                transid
            }
        };
        let tr = self.trans_mut(transid);
        tr.num_writers += 1;
        if ty.is_extwriter() {
            tr.num_extwriters += 1;
        }
        self.tasks[task].handle = Some(Handle {
            transid,
            ty,
            new_bgs: Vec::new(),
            aborted: false,
            chunk_bytes_reserved: 0,
        });
        Ok(Ok(transid))
    }

    /// The `start` and `join` operations: `start_transaction` with
    /// TRANS_START or TRANS_JOIN.
    pub(crate) fn step_start(&mut self, task: TaskId, ty: TransType) -> Stepped {
        match self.join_transaction(task, ty) {
            Ok(Ok(transid)) => Stepped::Finished(Ok(Done::Handle { transid })),
            Ok(Err(e)) => Stepped::Finished(Err(e)),
            Err(w) => Stepped::Blocked(Pc::Start(ty), w),
        }
    }

    /// fs/btrfs/transaction.c, `btrfs_trans_release_chunk_metadata`
    /// (4fbcdf669454): what the handle reserved and did not use goes back.
    pub(crate) fn btrfs_trans_release_chunk_metadata(&mut self, h: &Handle) {
        self.space_info[Kind::System.index()].bytes_may_use -= h.chunk_bytes_reserved;
    }

    /// The tail of fs/btrfs/transaction.c, `__btrfs_end_transaction`: drop
    /// the writer counts and the handle. Returns EIO if the transaction or
    /// filesystem is in error.
    pub(crate) fn release_handle(&mut self, task: TaskId) -> Result<(), Error> {
        let h = self.tasks[task].handle.take().expect("handle to release");
        debug_assert!(h.new_bgs.is_empty());
        self.btrfs_trans_release_chunk_metadata(&h);
        let fs_error = self.fs_error;
        let tr = self.trans_mut(h.transid);
        tr.num_writers -= 1;
        // The committer dropped its own extwriter count before waiting for
        // the others (see `CommitPc::WaitPrev`).
        if h.ty.is_extwriter() && tr.committer != Some(task) {
            tr.num_extwriters -= 1;
        }
        if tr.aborted.is_some() || fs_error {
            return Err(Error::model(Errno::EIO));
        }
        Ok(())
    }

    /// fs/btrfs/transaction.c, `__btrfs_end_transaction`: phase 2
    /// (`btrfs_create_pending_block_groups`), one bg a step, then release.
    /// v4.1 runs phase 2 whatever another handle did (nothing there checks
    /// `cur_trans->aborted`); after this handle's own error the rest are
    /// only unlinked.
    pub(crate) fn step_end(&mut self, task: TaskId, started: bool) -> Stepped {
        let transid = self.handle_transid(task);
        let pending = !self.tasks[task]
            .handle
            .as_ref()
            .expect("handle")
            .new_bgs
            .is_empty();
        if pending {
            let fault = if started {
                None
            } else {
                self.failpoint(Site::TransEnd)
            };
            if let Some(err) = fault {
                self.btrfs_abort_transaction(task, transid, err, STACK_END);
                self.unlink_new_bgs(task);
            } else {
                self.create_one_pending(task, STACK_PHASE2);
                if self.handle_aborted(task) {
                    self.unlink_new_bgs(task);
                }
                let more = !self.tasks[task]
                    .handle
                    .as_ref()
                    .expect("handle")
                    .new_bgs
                    .is_empty();
                if more {
                    return Stepped::Yielded(Pc::End { started: true });
                }
            }
        }
        Stepped::Finished(self.release_handle(task).map(|_| Done::Ended))
    }

    /// fs/btrfs/transaction.c, `cleanup_transaction`: no roots switched, no
    /// superblock; `btrfs_cleanup_one_transaction` releases what the
    /// transaction held.
    fn cleanup_transaction(&mut self, task: TaskId, transid: u64) -> Stepped {
        let err = self.trans(transid).aborted.expect("cleanup after an abort");
        self.btrfs_cleanup_one_transaction(transid);
        if self.applied(F7785A663C4BE) {
            // btrfs_put_transaction: "If any block groups are found in
            // ->deleted_bgs then it's because the transaction was aborted
            // and a commit did not happen".
            self.release_deleted_bgs(transid, "btrfs_put_transaction");
        }
        if self.running == Some(transid) {
            self.running = None;
        }
        self.unlink_new_bgs(task);
        let _ = self.release_handle(task);
        self.events.push(Event::TransCleanedUp { transid });
        Stepped::Finished(Err(err))
    }

    /// fs/btrfs/transaction.c, `btrfs_commit_transaction`. Each state is
    /// described at [`CommitPc`]; see docs/model.md for the walk-through.
    pub(crate) fn step_commit(&mut self, task: TaskId, mut pc: CommitPc) -> Stepped {
        let transid = self.handle_transid(task);
        let keep = |pc| Stepped::Yielded(Pc::Commit(pc));
        let block = |pc, w| Stepped::Blocked(Pc::Commit(pc), w);
        loop {
            match pc {
                CommitPc::Begin => {
                    if let Some(err) = self.trans(transid).aborted {
                        self.unlink_new_bgs(task);
                        let _ = self.release_handle(task);
                        return Stepped::Finished(Err(err));
                    }
                    self.run_delayed_refs(task, transid);
                    self.create_pending_block_groups(task, STACK_COMMIT_PHASE2);
                    self.run_delayed_refs(task, transid);
                    return keep(CommitPc::StartDirty);
                }
                CommitPc::StartDirty => {
                    // No abort check here in v4.1: only the one at entry.
                    let tr = self.trans_mut(transid);
                    if tr.dirty_bg_run || tr.dirty_bgs.is_empty() {
                        tr.dirty_bg_run = true;
                        pc = CommitPc::CheckOther;
                        continue;
                    }
                    tr.dirty_bg_run = true;
                    self.splice_dirty_to_writeout(transid);
                    // Make sure every bg on our dirty list has its item.
                    self.create_pending_block_groups(task, STACK_START_DIRTY);
                    pc = CommitPc::WriteOut { pass: 0 };
                }
                CommitPc::WriteOut { pass } => {
                    match self.start_dirty_one(task, transid) {
                        DirtyStep::Blocked(w) => return block(pc, w),
                        DirtyStep::Next if !self.trans(transid).writeout.is_empty() => {
                            return keep(pc)
                        }
                        // The local list is empty, or `if (ret) break;`
                        // left the rest on it.
                        DirtyStep::Next | DirtyStep::Break => {}
                    }
                    // `ret = btrfs_run_delayed_refs(...)`: 0 on an aborted
                    // handle, so an error above is forgotten and v4.1 goes
                    // on to the second pass and returns 0.
                    self.run_delayed_refs(task, transid);
                    if pass == 0 {
                        self.splice_dirty_to_writeout(transid);
                    }
                    // `if (!list_empty(&dirty)) goto again;`: the local list
                    // after the splice, which holds what an error left too.
                    if pass == 0 && !self.trans(transid).writeout.is_empty() {
                        // `again:` creates own pending bgs before each pass.
                        self.create_pending_block_groups(task, STACK_START_DIRTY);
                        return keep(CommitPc::WriteOut { pass: 1 });
                    }
                    self.start_dirty_leftovers(transid);
                    pc = CommitPc::CheckOther;
                }
                CommitPc::CheckOther => {
                    let tr = self.trans_mut(transid);
                    if tr.state >= TransState::CommitStart {
                        let _ = self.release_handle(task);
                        return self.commit_wait_other(transid);
                    }
                    tr.state = TransState::CommitStart;
                    tr.committer = Some(task);
                    pc = CommitPc::WaitPrev;
                }
                CommitPc::WaitPrev => {
                    if transid > FIRST_TRANSID {
                        let prev = transid - 1;
                        if self.trans(prev).state != TransState::Completed {
                            return block(pc, Wait::CommitDone(prev));
                        }
                    }
                    // extwriter_counter_dec for the committer's own handle
                    // (`release_handle` skips it for the committer).
                    let ty = self.tasks[task].handle.as_ref().expect("handle").ty;
                    if ty.is_extwriter() {
                        self.trans_mut(transid).num_extwriters -= 1;
                    }
                    // `btrfs_run_delayed_items`: `if (trans->aborted) return
                    // -EIO;` then `goto cleanup_transaction`, which waits for
                    // `num_writers == 1` but not for the extwriters.
                    pc = if self.handle_aborted(task) {
                        CommitPc::Doing
                    } else {
                        CommitPc::WaitExt
                    };
                }
                CommitPc::WaitExt => {
                    if self.trans(transid).num_extwriters != 0 {
                        return block(pc, Wait::ExtWriters(transid));
                    }
                    return keep(CommitPc::Doing);
                }
                CommitPc::Doing => {
                    self.trans_mut(transid).state = TransState::CommitDoing;
                    if self.trans(transid).num_writers != 1 {
                        return block(pc, Wait::Writers(transid));
                    }
                    if self.trans(transid).aborted.is_some() {
                        return self.cleanup_transaction(task, transid);
                    }
                    self.trans_mut(transid).in_critical = true;
                    // commit_cowonly_roots
                    self.run_delayed_refs(task, transid);
                    pc = CommitPc::Critical { retry: None };
                }
                CommitPc::Critical { retry } => {
                    let tr = self.trans(transid);
                    if retry.is_some() || !tr.dirty_bgs.is_empty() {
                        // `btrfs_write_dirty_block_groups`, one bg.
                        if let CriticalStep::Blocked(retry, w) =
                            self.write_dirty_one(task, transid, retry)
                        {
                            return block(CommitPc::Critical { retry }, w);
                        }
                    } else if let Some(&id) = tr.io_bgs.front() {
                        // Its tail: wait for every IO it started.
                        if let Some(w) =
                            self.btrfs_wait_cache_io(id, "btrfs_write_dirty_block_groups")
                        {
                            return block(pc, w);
                        }
                    } else {
                        // It returned. On its own error `commit_cowonly_roots`
                        // returns it; else it runs the refs and loops while
                        // either list is not empty. Then "the tasks which
                        // save the space cache ... may also update
                        // ->aborted, check it."
                        if !self.handle_aborted(task) {
                            self.run_delayed_refs(task, transid);
                            let tr = self.trans(transid);
                            if !tr.dirty_bgs.is_empty() || !tr.io_bgs.is_empty() {
                                continue;
                            }
                        }
                        if self.trans(transid).aborted.is_some() {
                            return self.cleanup_transaction(task, transid);
                        }
                        self.commit_roots(transid);
                        return keep(CommitPc::Super);
                    }
                    pc = CommitPc::Critical { retry: None };
                    if self.config.mount.space_cache {
                        return keep(pc);
                    }
                }
                CommitPc::Super => {
                    self.committed.generation = transid;
                    self.events.push(Event::SuperWritten { transid });
                    // btrfs_finish_extent_commit: discard and put.
                    self.release_deleted_bgs(transid, "btrfs_finish_extent_commit");
                    self.trans_mut(transid).state = TransState::Completed;
                    let h = self.tasks[task].handle.take().expect("committer's handle");
                    self.btrfs_trans_release_chunk_metadata(&h);
                    let tr = self.trans_mut(h.transid);
                    tr.num_writers -= 1;
                    return Stepped::Finished(Ok(Done::Committed { transid }));
                }
            }
        }
    }

    /// Takes every bg off the transaction's `deleted_bgs` and puts the ref
    /// that list held.
    fn release_deleted_bgs(&mut self, transid: u64, site: &'static str) {
        let deleted = std::mem::take(&mut self.trans_mut(transid).deleted_bgs);
        for id in deleted {
            self.bgm(id).bg_list = BgList::None;
            self.btrfs_put_block_group(id, site);
        }
    }

    /// `switch_commit_roots`: this is "the commit" for the oracles; then
    /// UNBLOCKED, and a new transaction may start.
    fn commit_roots(&mut self, transid: u64) {
        self.committed.roots_transid = transid;
        self.committed.extent_tree = self.extent_tree.clone();
        self.committed.chunk_tree = self.chunk_tree.clone();
        self.events.push(Event::RootsSwitched { transid });
        let tr = self.trans_mut(transid);
        tr.in_critical = false;
        tr.state = TransState::Unblocked;
        self.running = None;
    }

    /// fs/btrfs/transaction.c, `btrfs_commit_transaction`'s branch for a
    /// commit another task started (`wait_for_commit`): no handle, just a
    /// wait, then that commit's result.
    pub(crate) fn commit_wait_other(&self, transid: u64) -> Stepped {
        let tr = self.trans(transid);
        if tr.state == TransState::Completed {
            return Stepped::Finished(match tr.aborted {
                Some(err) => Err(err),
                None => Ok(Done::Committed { transid }),
            });
        }
        Stepped::Blocked(Pc::WaitCommit(transid), Wait::CommitDone(transid))
    }
}
