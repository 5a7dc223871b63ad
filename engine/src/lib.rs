//! An executable, deterministic model of the Linux v4.1 btrfs transaction
//! and block-group machinery: two-phase block group creation, dirty block
//! groups, and the commit with `btrfs_start_dirty_block_groups` outside the
//! critical section. See `shared/design/MODEL.md`.
//!
//! Tasks are logical. Each operation runs as a sequence of atomic steps that
//! end where the kernel can sleep or drops a lock; a scheduler outside the
//! engine picks the task that takes the next step. The engine knows nothing
//! of scenarios or oracles: it exposes steps, a read-only view and an event
//! stream.

mod fingerprint;
mod types;

pub use fingerprint::FpHasher;
pub use types::*;

use std::collections::{BTreeMap, VecDeque};

/// Where a task's operation stands between steps.
#[derive(Clone, Debug)]
enum Pc {
    Start(TransType),
    Alloc {
        ext: ExtentId,
        kind: Kind,
        size: u64,
        /// Step 2: phase 1 already made a bg for this request.
        retry: bool,
    },
    RunRefs {
        count: u32,
    },
    /// `started`: the `trans_end` failpoint and the abort check ran.
    End {
        started: bool,
    },
    Commit(CommitPc),
    /// Step 4 of a commit another task started: no handle, just a wait.
    WaitCommit(u64),
    DeleteUnused(DelPc),
}

#[derive(Clone, Copy, Debug)]
enum CommitPc {
    /// Steps 1-2.
    Begin,
    /// Step 3: `btrfs_start_dirty_block_groups`, entry.
    StartDirty,
    /// Step 3: one bg of the local list per step; `pass` is the kernel's
    /// `loops`.
    WriteOut { pass: u8 },
    /// Step 4.
    CheckOther,
    /// Step 5: wait for the previous transaction.
    WaitPrev,
    /// Step 5: wait for `num_extwriters == 0`.
    WaitExt,
    /// Steps 6-8.
    Doing,
    /// Step 9.
    Super,
}

#[derive(Clone, Copy, Debug)]
struct DelPc {
    /// The bg being deleted, waiting to start its transaction.
    current: Option<BgId>,
    /// `ret` of `btrfs_delete_unused_bgs`: after an error, the rest are only put.
    failed: bool,
    count: u32,
}

#[derive(Clone, Debug, Default)]
struct TaskState {
    handle: Option<Handle>,
    pc: Option<Pc>,
    blocked: Option<Wait>,
}

const STACK_END: &[&str] = &["__btrfs_end_transaction"];
const STACK_PHASE2: &[&str] = &[
    "__btrfs_end_transaction",
    "btrfs_create_pending_block_groups",
];
const STACK_COMMIT_PHASE2: &[&str] = &[
    "btrfs_commit_transaction",
    "btrfs_create_pending_block_groups",
];
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
const STACK_START_DIRTY: &[&str] = &["btrfs_commit_transaction", "btrfs_start_dirty_block_groups"];
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

/// The model. Cheap to create; one per run.
#[derive(Clone, Debug)]
pub struct Engine {
    config: Config,
    variant: Variant,
    /// Evaluate failpoints only when the run configured some: a run without
    /// faults then needs no lock on fail-rs's global registry.
    failpoints_armed: bool,
    bgs: Vec<BlockGroup>,
    /// `fs_info->block_group_cache_tree`.
    cache_tree: BTreeMap<u64, BgId>,
    space_info: [SpaceInfo; 3],
    extent_tree: BTreeMap<Key, Item>,
    chunk_tree: BTreeMap<u64, ChunkItem>,
    /// The device's allocated extents: dev offset -> len.
    dev_extents: BTreeMap<u64, u64>,
    extents: Vec<Extent>,
    /// Every transaction ever started, by `transid - FIRST_TRANSID`.
    transactions: Vec<Transaction>,
    running: Option<u64>,
    unused_bgs: VecDeque<BgId>,
    /// `BTRFS_FS_STATE_ERROR`.
    fs_error: bool,
    committed: Committed,
    tasks: [TaskState; MAX_TASKS],
    events: Vec<Event>,
}

/// mkfs commits generation 1; the first transaction is 2.
pub const FIRST_TRANSID: u64 = 2;
/// The first 1 MiB of the device holds no chunk (superblock area).
const DEV_RESERVED: u64 = SZ_1M;

fn check_aligned(what: &'static str, size: u64) -> Result<(), ConfigError> {
    if size == 0 || !size.is_multiple_of(SZ_4K) {
        return Err(ConfigError::NotAligned { what, size });
    }
    Ok(())
}

impl Engine {
    /// A freshly made filesystem: one bg of each kind, committed at
    /// generation 1, no transaction running.
    pub fn new(
        config: Config,
        variant: Variant,
        failpoints_armed: bool,
    ) -> Result<Self, ConfigError> {
        check_aligned("device", config.device_size)?;
        for kind in Kind::ALL {
            check_aligned(kind.name(), config.chunk(kind))?;
        }
        let need = DEV_RESERVED + Kind::ALL.iter().map(|k| config.chunk(*k)).sum::<u64>();
        if config.device_size < need {
            return Err(ConfigError::DeviceTooSmall {
                device: config.device_size,
                need,
            });
        }
        let mut e = Engine {
            config,
            variant,
            failpoints_armed,
            bgs: Vec::new(),
            cache_tree: BTreeMap::new(),
            space_info: Default::default(),
            extent_tree: BTreeMap::new(),
            chunk_tree: BTreeMap::new(),
            dev_extents: BTreeMap::new(),
            extents: Vec::new(),
            transactions: Vec::new(),
            running: None,
            unused_bgs: VecDeque::new(),
            fs_error: false,
            committed: Committed::default(),
            tasks: Default::default(),
            events: Vec::new(),
        };
        for kind in Kind::MKFS_ORDER {
            let id = e
                .make_block_group(kind, 1, None)
                .expect("device size checked above");
            e.insert_bg_items(id);
        }
        e.committed = Committed {
            roots_transid: 1,
            generation: 1,
            extent_tree: e.extent_tree.clone(),
            chunk_tree: e.chunk_tree.clone(),
        };
        e.events.clear();
        Ok(e)
    }

    // ----- the read-only view -------------------------------------------

    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn variant(&self) -> Variant {
        self.variant
    }
    pub fn block_groups(&self) -> &[BlockGroup] {
        &self.bgs
    }
    pub fn bg(&self, id: BgId) -> &BlockGroup {
        &self.bgs[id.0 as usize]
    }
    pub fn cache_tree(&self) -> &BTreeMap<u64, BgId> {
        &self.cache_tree
    }
    pub fn space_info(&self, kind: Kind) -> &SpaceInfo {
        &self.space_info[kind.index()]
    }
    pub fn extent_tree(&self) -> &BTreeMap<Key, Item> {
        &self.extent_tree
    }
    pub fn chunk_tree(&self) -> &BTreeMap<u64, ChunkItem> {
        &self.chunk_tree
    }
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }
    pub fn extent(&self, id: ExtentId) -> Option<&Extent> {
        (id.0 as usize)
            .checked_sub(1)
            .and_then(|i| self.extents.get(i))
    }
    pub fn transactions(&self) -> &[Transaction] {
        &self.transactions
    }
    pub fn transaction(&self, transid: u64) -> Option<&Transaction> {
        transid
            .checked_sub(FIRST_TRANSID)
            .and_then(|i| self.transactions.get(i as usize))
    }
    pub fn running_transaction(&self) -> Option<u64> {
        self.running
    }
    pub fn unused_bgs(&self) -> &VecDeque<BgId> {
        &self.unused_bgs
    }
    pub fn fs_error(&self) -> bool {
        self.fs_error
    }
    pub fn committed(&self) -> &Committed {
        &self.committed
    }
    pub fn handle(&self, task: TaskId) -> Option<&Handle> {
        self.tasks.get(task).and_then(|t| t.handle.as_ref())
    }
    /// Events since the last [`Engine::drain_events`].
    pub fn events(&self) -> &[Event] {
        &self.events
    }
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// The refs a live bg should hold for its list memberships: the cache
    /// tree's, `dirty_list`'s (taken over by `io_list`), `unused_bgs`'.
    pub fn expected_refs(&self, bg: &BlockGroup) -> i64 {
        i64::from(!bg.removed)
            + i64::from(bg.dirty_list != DirtyList::None || bg.on_io_list)
            + i64::from(bg.bg_list == BgList::UnusedBgs)
    }

    pub fn status(&self, task: TaskId) -> Status {
        let t = &self.tasks[task];
        match (&t.pc, t.blocked) {
            (None, _) => Status::Idle,
            (Some(_), Some(w)) if !self.wait_satisfied(w) => Status::Blocked(w),
            (Some(_), _) => Status::Runnable,
        }
    }

    fn wait_satisfied(&self, w: Wait) -> bool {
        match w {
            Wait::Unblocked(t) => {
                let tr = self.trans(t);
                tr.state >= TransState::Unblocked || tr.aborted.is_some()
            }
            Wait::CommitDone(t) => self.trans(t).state == TransState::Completed,
            Wait::ExtWriters(t) => self.trans(t).num_extwriters == 0,
            Wait::Writers(t) => self.trans(t).num_writers == 1,
        }
    }

    // ----- stepping --------------------------------------------------------

    /// Begins `op` on an idle task and runs it to its first yield point,
    /// block, or end.
    pub fn begin(&mut self, task: TaskId, op: Op) -> Result<StepOutcome, UsageError> {
        if task >= MAX_TASKS {
            return Err(UsageError::NoSuchTask(task));
        }
        if self.tasks[task].pc.is_some() {
            return Err(UsageError::InProgress(task_name(task)));
        }
        let has_handle = self.tasks[task].handle.is_some();
        let einval = || Ok(StepOutcome::Finished(Err(Error::model(Errno::EINVAL))));
        let erofs = || Ok(StepOutcome::Finished(Err(Error::model(Errno::EROFS))));
        let pc = match op {
            Op::Start | Op::Join if has_handle => return einval(),
            Op::Start => Pc::Start(TransType::Start),
            Op::Join => Pc::Start(TransType::Join),
            Op::DeleteUnused if has_handle => return einval(),
            Op::DeleteUnused if self.fs_error => return erofs(),
            Op::DeleteUnused => Pc::DeleteUnused(DelPc {
                current: None,
                failed: false,
                count: 0,
            }),
            Op::Free { extent } => {
                // A name that does not exist is a script error, checked
                // before the handle, so a bad script never half-runs.
                let e = self
                    .extent(extent)
                    .ok_or(UsageError::NoSuchExtent(extent))?;
                match e.state {
                    ExtentState::Failed => return Err(UsageError::FailedExtent(extent)),
                    ExtentState::Pending => return Err(UsageError::PendingExtent(extent)),
                    ExtentState::Dropping | ExtentState::Freed => {
                        return Err(UsageError::AlreadyFreed(extent))
                    }
                    ExtentState::Reserved | ExtentState::Allocated => {}
                }
                if !has_handle {
                    return einval();
                }
                if self.fs_error {
                    return erofs();
                }
                let transid = self.tasks[task]
                    .handle
                    .as_ref()
                    .map(|h| h.transid)
                    .unwrap_or(0);
                self.extents[extent.0 as usize - 1].state = ExtentState::Dropping;
                self.trans_mut(transid).delayed_refs.push_back(DelayedRef {
                    extent,
                    action: RefAction::Drop,
                });
                return Ok(StepOutcome::Finished(Ok(Done::Freed { id: extent })));
            }
            Op::Alloc { kind, size } => {
                // The name is taken when the alloc begins, whatever happens.
                let ext = ExtentId(self.extents.len() as u32 + 1);
                self.extents.push(Extent {
                    id: ext,
                    kind,
                    bg: None,
                    start: 0,
                    len: size,
                    state: ExtentState::Failed,
                    added: false,
                });
                if !has_handle {
                    return einval();
                }
                if self.fs_error {
                    return erofs();
                }
                self.extents[ext.0 as usize - 1].state = ExtentState::Pending;
                Pc::Alloc {
                    ext,
                    kind,
                    size,
                    retry: false,
                }
            }
            Op::RunDelayedRefs | Op::End | Op::Commit if !has_handle => return einval(),
            Op::RunDelayedRefs if self.fs_error => return erofs(),
            Op::RunDelayedRefs => Pc::RunRefs { count: 0 },
            Op::End => Pc::End { started: false },
            Op::Commit => Pc::Commit(CommitPc::Begin),
        };
        self.tasks[task].pc = Some(pc);
        self.tasks[task].blocked = None;
        Ok(self.run(task))
    }

    /// Runs one more step of the task's operation in progress.
    pub fn step(&mut self, task: TaskId) -> Result<StepOutcome, UsageError> {
        if task >= MAX_TASKS {
            return Err(UsageError::NoSuchTask(task));
        }
        match self.status(task) {
            Status::Idle => Err(UsageError::NotInProgress(task_name(task))),
            Status::Blocked(w) => Err(UsageError::Blocked(task_name(task), w)),
            Status::Runnable => Ok(self.run(task)),
        }
    }

    fn run(&mut self, task: TaskId) -> StepOutcome {
        let pc = self.tasks[task].pc.take().expect("runnable task has a pc");
        self.tasks[task].blocked = None;
        let (next, out) = match pc {
            Pc::Start(ty) => (Some(Pc::Start(ty)), self.step_start(task, ty)),
            Pc::Alloc {
                ext,
                kind,
                size,
                retry,
            } => self.step_alloc(task, ext, kind, size, retry),
            Pc::RunRefs { count } => self.step_run_refs(task, count),
            Pc::End { started } => self.step_end(task, started),
            Pc::Commit(c) => self.step_commit(task, c),
            Pc::WaitCommit(transid) => self.commit_wait_other(transid),
            Pc::DeleteUnused(d) => self.step_delete_unused(task, d),
        };
        let out = match out {
            StepOutcome::Blocked(w) => {
                self.tasks[task].blocked = Some(w);
                StepOutcome::Blocked(w)
            }
            o => o,
        };
        if matches!(out, StepOutcome::Finished(_)) {
            self.tasks[task].pc = None;
        } else {
            self.tasks[task].pc = Some(next.expect("an unfinished op keeps a pc"));
        }
        out
    }

    // ----- helpers with kernel names ------------------------------------

    fn trans(&self, transid: u64) -> &Transaction {
        &self.transactions[(transid - FIRST_TRANSID) as usize]
    }
    fn trans_mut(&mut self, transid: u64) -> &mut Transaction {
        &mut self.transactions[(transid - FIRST_TRANSID) as usize]
    }
    fn bgm(&mut self, id: BgId) -> &mut BlockGroup {
        &mut self.bgs[id.0 as usize]
    }
    fn handle_transid(&self, task: TaskId) -> u64 {
        self.tasks[task]
            .handle
            .as_ref()
            .expect("op needs a handle")
            .transid
    }

    fn btrfs_get_block_group(&mut self, id: BgId, site: &'static str) {
        if self.bg(id).freed {
            self.events.push(Event::UseAfterFree { bg: id, site });
        }
        self.bgm(id).refs += 1;
    }

    fn btrfs_put_block_group(&mut self, id: BgId, site: &'static str) {
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

    /// `btrfs_abort_transaction`: only the first abort of a transaction is
    /// recorded; the filesystem goes read-only.
    fn btrfs_abort_transaction(
        &mut self,
        task: TaskId,
        transid: u64,
        error: Error,
        stack: &'static [&'static str],
    ) {
        self.fs_error = true;
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
        }));
    }

    /// `join_transaction` + `start_transaction`: `Err(wait)` when the
    /// running transaction's state blocks this type.
    fn join_transaction(
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
                    io_bgs: Vec::new(),
                    dirty_bg_run: false,
                    delayed_refs: VecDeque::new(),
                    aborted: None,
                    committer: None,
                    in_critical: false,
                    writeout: VecDeque::new(),
                });
                self.running = Some(transid);
                self.events.push(Event::TransStarted { transid });
                transid
            }
        };
        let tr = self.trans_mut(transid);
        tr.num_writers += 1;
        if ty == TransType::Start {
            tr.num_extwriters += 1;
        }
        self.tasks[task].handle = Some(Handle {
            transid,
            ty,
            new_bgs: Vec::new(),
        });
        Ok(Ok(transid))
    }

    /// The tail of `__btrfs_end_transaction`: drop the writer counts and the
    /// handle. Returns EIO if the transaction or filesystem is in error.
    fn release_handle(&mut self, task: TaskId) -> Result<(), Error> {
        let h = self.tasks[task].handle.take().expect("handle to release");
        debug_assert!(h.new_bgs.is_empty());
        let fs_error = self.fs_error;
        let tr = self.trans_mut(h.transid);
        tr.num_writers -= 1;
        if h.ty == TransType::Start && tr.committer != Some(task) {
            tr.num_extwriters -= 1;
        }
        if tr.aborted.is_some() || fs_error {
            return Err(Error::model(Errno::EIO));
        }
        Ok(())
    }

    /// Unlinks every bg left on the handle's `new_bgs` (after an error).
    fn unlink_new_bgs(&mut self, task: TaskId) {
        let bgs = std::mem::take(&mut self.tasks[task].handle.as_mut().expect("handle").new_bgs);
        for id in bgs {
            self.bgm(id).bg_list = BgList::None;
        }
    }

    /// `btrfs_make_block_group` (phase 1), with the device extent and chunk
    /// mapping of `btrfs_alloc_chunk`. `None` when no hole fits: ENOSPC.
    fn make_block_group(&mut self, kind: Kind, transid: u64, task: Option<TaskId>) -> Option<BgId> {
        let len = self.config.chunk(kind);
        // First hole on the device that fits.
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
        // Logical start just past the highest chunk's end.
        let start = self.bgs.iter().map(|b| b.end()).max().unwrap_or(SZ_1M);
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
            dev_offset: cursor,
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

    /// Phase 2 for one bg: its item and chunk item. The failpoint
    /// `bg_insert_item` stands for `btrfs_insert_item` failing.
    fn insert_bg_items(&mut self, id: BgId) {
        let bg = self.bg(id);
        let (key, item) = (
            Key::block_group(bg.start, bg.len),
            Item::BlockGroup {
                used: bg.used,
                chunk_objectid: FIRST_CHUNK_TREE_OBJECTID,
                flags: bg.kind.flags(),
            },
        );
        let chunk = ChunkItem {
            len: bg.len,
            flags: bg.kind.flags(),
            dev_offset: bg.dev_offset,
        };
        let start = bg.start;
        self.extent_tree.insert(key, item);
        self.chunk_tree.insert(start, chunk);
        self.events.push(Event::BgItemInserted { bg: id });
    }

    fn failpoint(&self, site: Site) -> Option<Error> {
        if self.failpoints_armed {
            bgfuzz_failpoints::eval(site)
        } else {
            None
        }
    }

    /// `btrfs_create_pending_block_groups` for the first bg of the task's
    /// `new_bgs`. Returns false when the list is empty.
    fn create_one_pending(&mut self, task: TaskId, stack: &'static [&'static str]) -> bool {
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

    fn create_pending_block_groups(&mut self, task: TaskId, stack: &'static [&'static str]) {
        while self.create_one_pending(task, stack) {}
    }

    /// First-fit in the bgs of `kind`, in cache-tree order, skipping ro ones.
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
        let e = &mut self.extents[ext.0 as usize - 1];
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

    /// `do_chunk_alloc`: Ok(true) when a bg was made, Ok(false) on ENOSPC
    /// (returned to the caller, no abort), Err on anything else (aborted).
    fn do_chunk_alloc(&mut self, task: TaskId, kind: Kind, transid: u64) -> Result<(), Error> {
        if let Some(err) = self.failpoint(Site::BgCreate) {
            if err.errno != Errno::ENOSPC {
                self.btrfs_abort_transaction(task, transid, err, STACK_CHUNK);
            }
            return Err(err);
        }
        match self.make_block_group(kind, transid, Some(task)) {
            Some(_) => Ok(()),
            None => Err(Error::model(Errno::ENOSPC)),
        }
    }

    fn fail_alloc(&mut self, ext: ExtentId, err: Error) -> (Option<Pc>, StepOutcome) {
        self.extents[ext.0 as usize - 1].state = ExtentState::Failed;
        (None, StepOutcome::Finished(Err(err)))
    }

    // ----- operations -------------------------------------------------------

    fn step_start(&mut self, task: TaskId, ty: TransType) -> StepOutcome {
        match self.join_transaction(task, ty) {
            Ok(Ok(transid)) => StepOutcome::Finished(Ok(Done::Handle { transid })),
            Ok(Err(e)) => StepOutcome::Finished(Err(e)),
            Err(w) => StepOutcome::Blocked(w),
        }
    }

    /// `find_free_extent`: step 1 searches and, if nothing fits, runs phase 1
    /// of a new bg and yields; step 2 searches again.
    fn step_alloc(
        &mut self,
        task: TaskId,
        ext: ExtentId,
        kind: Kind,
        size: u64,
        retry: bool,
    ) -> (Option<Pc>, StepOutcome) {
        let transid = self.handle_transid(task);
        if self.fs_error {
            return self.fail_alloc(ext, Error::model(Errno::EROFS));
        }
        if let Some(done) = self.find_free_extent(ext, kind, size, transid) {
            return (None, StepOutcome::Finished(Ok(done)));
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
            let pc = Pc::Alloc {
                ext,
                kind,
                size,
                retry: true,
            };
            return (Some(pc), StepOutcome::Yielded);
        }
        match self.find_free_extent(ext, kind, size, transid) {
            Some(done) => (None, StepOutcome::Finished(Ok(done))),
            None => self.fail_alloc(ext, Error::model(Errno::ENOSPC)),
        }
    }

    /// `update_block_group` for one delayed ref. It does not check whether
    /// the bg's item exists yet: that is the root of the ff1f8250 race.
    fn run_one_delayed_ref(&mut self, transid: u64, r: DelayedRef) {
        let e = self.extents[r.extent.0 as usize - 1];
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
                let x = &mut self.extents[r.extent.0 as usize - 1];
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
                self.extents[r.extent.0 as usize - 1].state = ExtentState::Freed;
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

    /// `btrfs_run_delayed_refs` of everything queued, atomically (as inside
    /// a commit). A no-op on an aborted transaction, as in the kernel.
    fn run_delayed_refs(&mut self, transid: u64) {
        if self.trans(transid).aborted.is_some() {
            return;
        }
        while let Some(r) = self.trans_mut(transid).delayed_refs.pop_front() {
            self.run_one_delayed_ref(transid, r);
        }
    }

    fn step_run_refs(&mut self, task: TaskId, mut count: u32) -> (Option<Pc>, StepOutcome) {
        let transid = self.handle_transid(task);
        if self.fs_error {
            return (None, StepOutcome::Finished(Err(Error::model(Errno::EROFS))));
        }
        if let Some(r) = self.trans_mut(transid).delayed_refs.pop_front() {
            self.run_one_delayed_ref(transid, r);
            count += 1;
        }
        if self.trans(transid).delayed_refs.is_empty() {
            (None, StepOutcome::Finished(Ok(Done::RanRefs { count })))
        } else {
            (Some(Pc::RunRefs { count }), StepOutcome::Yielded)
        }
    }

    /// `__btrfs_end_transaction`: phase 2, one bg a step, then release.
    fn step_end(&mut self, task: TaskId, started: bool) -> (Option<Pc>, StepOutcome) {
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
            if self.fs_error {
                self.unlink_new_bgs(task);
            } else if let Some(err) = fault {
                self.btrfs_abort_transaction(task, transid, err, STACK_END);
                self.unlink_new_bgs(task);
            } else {
                self.create_one_pending(task, STACK_PHASE2);
                if self.trans(transid).aborted.is_some() {
                    self.unlink_new_bgs(task);
                }
                let more = !self.tasks[task]
                    .handle
                    .as_ref()
                    .expect("handle")
                    .new_bgs
                    .is_empty();
                if more {
                    return (Some(Pc::End { started: true }), StepOutcome::Yielded);
                }
            }
        }
        let r = self.release_handle(task).map(|_| Done::Ended);
        (None, StepOutcome::Finished(r))
    }

    /// `write_one_cache_group`: look the item up and write `used` into it.
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

    /// One bg of `btrfs_start_dirty_block_groups`' loop. Returns false when
    /// the loop must stop (the transaction was aborted).
    fn start_dirty_one(&mut self, task: TaskId, transid: u64) -> bool {
        let Some(id) = self.trans_mut(transid).writeout.pop_front() else {
            return true;
        };
        self.bgm(id).dirty_list = DirtyList::None;
        let ret = self.write_one_cache_group(id);
        let mut ok = true;
        match (ret, self.variant) {
            (Ok(()), _) => self.events.push(Event::BgWritten {
                bg: id,
                critical: false,
            }),
            (Err(err), Variant::BugFf1f8250) => {
                // 1bbc621ef: write_one_cache_group aborts itself.
                self.btrfs_abort_transaction(task, transid, err, STACK_START_DIRTY_WRITE);
                ok = false;
            }
            (Err(err), Variant::Fixed) if err.errno == Errno::ENOENT => {
                // ff1f8250: the item may still be on another handle's
                // new_bgs; write it again in the critical section.
                if self.bg(id).dirty_list == DirtyList::None {
                    self.bgm(id).dirty_list = DirtyList::DirtyBgs(transid);
                    self.trans_mut(transid).dirty_bgs.push_back(id);
                    self.btrfs_get_block_group(id, "btrfs_start_dirty_block_groups");
                }
                self.events.push(Event::BgRequeued { bg: id });
            }
            (Err(err), Variant::Fixed) => {
                self.btrfs_abort_transaction(task, transid, err, STACK_START_DIRTY);
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

    fn splice_dirty_to_writeout(&mut self, transid: u64) {
        let tr = self.trans_mut(transid);
        let dirty = std::mem::take(&mut tr.dirty_bgs);
        for &id in &dirty {
            self.bgm(id).dirty_list = DirtyList::Writeout(transid);
        }
        self.trans_mut(transid).writeout.extend(dirty);
    }

    /// `btrfs_write_dirty_block_groups`, inside the critical section: any
    /// error aborts, `-ENOENT` included.
    fn write_dirty_block_groups(&mut self, task: TaskId, transid: u64) {
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
                    let stack = match self.variant {
                        Variant::BugFf1f8250 => STACK_WRITE_DIRTY_WRITE,
                        Variant::Fixed => STACK_WRITE_DIRTY,
                    };
                    self.btrfs_abort_transaction(task, transid, err, stack);
                    return;
                }
            }
        }
    }

    /// `cleanup_transaction`: no roots switched, no superblock; dirty bgs
    /// released (`btrfs_cleanup_dirty_bgs`), delayed refs dropped.
    fn cleanup_transaction(&mut self, task: TaskId, transid: u64) -> StepOutcome {
        let tr = self.trans_mut(transid);
        let err = tr.aborted.expect("cleanup after an abort");
        tr.in_critical = false;
        tr.delayed_refs.clear();
        let dirty = std::mem::take(&mut tr.dirty_bgs);
        for id in dirty {
            self.bgm(id).dirty_list = DirtyList::None;
            self.btrfs_put_block_group(id, "btrfs_cleanup_dirty_bgs");
        }
        self.trans_mut(transid).state = TransState::Completed;
        if self.running == Some(transid) {
            self.running = None;
        }
        self.unlink_new_bgs(task);
        let _ = self.release_handle(task);
        self.events.push(Event::TransCleanedUp { transid });
        StepOutcome::Finished(Err(err))
    }

    /// `btrfs_commit_transaction`, steps 1-9 of MODEL.md.
    fn step_commit(&mut self, task: TaskId, mut pc: CommitPc) -> (Option<Pc>, StepOutcome) {
        let transid = self.handle_transid(task);
        let keep = |pc| Some(Pc::Commit(pc));
        loop {
            match pc {
                CommitPc::Begin => {
                    if let Some(err) = self.trans(transid).aborted {
                        self.unlink_new_bgs(task);
                        let _ = self.release_handle(task);
                        return (None, StepOutcome::Finished(Err(err)));
                    }
                    self.run_delayed_refs(transid);
                    self.create_pending_block_groups(task, STACK_COMMIT_PHASE2);
                    self.run_delayed_refs(transid);
                    return (keep(CommitPc::StartDirty), StepOutcome::Yielded);
                }
                CommitPc::StartDirty => {
                    let tr = self.trans_mut(transid);
                    if tr.dirty_bg_run || tr.aborted.is_some() || tr.dirty_bgs.is_empty() {
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
                    if !self.start_dirty_one(task, transid) {
                        pc = CommitPc::CheckOther;
                        continue;
                    }
                    if !self.trans(transid).writeout.is_empty() {
                        return (keep(pc), StepOutcome::Yielded);
                    }
                    // Delayed refs for what we just wrote, then once more.
                    self.run_delayed_refs(transid);
                    if pass == 0 {
                        self.splice_dirty_to_writeout(transid);
                        // The kernel's `again:` creates own pending bgs
                        // before each pass.
                        self.create_pending_block_groups(task, STACK_START_DIRTY);
                        if !self.trans(transid).writeout.is_empty() {
                            return (keep(CommitPc::WriteOut { pass: 1 }), StepOutcome::Yielded);
                        }
                    }
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
                            return (keep(pc), StepOutcome::Blocked(Wait::CommitDone(prev)));
                        }
                    }
                    // extwriter_counter_dec for the committer's own handle.
                    if self.tasks[task].handle.as_ref().expect("handle").ty == TransType::Start {
                        self.trans_mut(transid).num_extwriters -= 1;
                    }
                    pc = CommitPc::WaitExt;
                }
                CommitPc::WaitExt => {
                    if self.trans(transid).num_extwriters != 0 {
                        return (keep(pc), StepOutcome::Blocked(Wait::ExtWriters(transid)));
                    }
                    return (keep(CommitPc::Doing), StepOutcome::Yielded);
                }
                CommitPc::Doing => {
                    self.trans_mut(transid).state = TransState::CommitDoing;
                    if self.trans(transid).num_writers != 1 {
                        return (keep(pc), StepOutcome::Blocked(Wait::Writers(transid)));
                    }
                    self.trans_mut(transid).in_critical = true;
                    if self.trans(transid).aborted.is_none() {
                        // commit_cowonly_roots
                        self.run_delayed_refs(transid);
                        while !self.trans(transid).dirty_bgs.is_empty()
                            && self.trans(transid).aborted.is_none()
                        {
                            self.write_dirty_block_groups(task, transid);
                            self.run_delayed_refs(transid);
                        }
                    }
                    if self.trans(transid).aborted.is_some() {
                        return (None, self.cleanup_transaction(task, transid));
                    }
                    // switch_commit_roots: this is "the commit".
                    self.committed.roots_transid = transid;
                    self.committed.extent_tree = self.extent_tree.clone();
                    self.committed.chunk_tree = self.chunk_tree.clone();
                    self.events.push(Event::RootsSwitched { transid });
                    let tr = self.trans_mut(transid);
                    tr.in_critical = false;
                    tr.state = TransState::Unblocked;
                    self.running = None;
                    return (keep(CommitPc::Super), StepOutcome::Yielded);
                }
                CommitPc::Super => {
                    self.committed.generation = transid;
                    self.events.push(Event::SuperWritten { transid });
                    self.trans_mut(transid).state = TransState::Completed;
                    let h = self.tasks[task].handle.take().expect("committer's handle");
                    let tr = self.trans_mut(h.transid);
                    tr.num_writers -= 1;
                    return (None, StepOutcome::Finished(Ok(Done::Committed { transid })));
                }
            }
        }
    }

    /// Step 4: another task started this commit; wait for it without a
    /// handle.
    fn commit_wait_other(&self, transid: u64) -> (Option<Pc>, StepOutcome) {
        let tr = self.trans(transid);
        if tr.state == TransState::Completed {
            let r = match tr.aborted {
                Some(err) => Err(err),
                None => Ok(Done::Committed { transid }),
            };
            return (None, StepOutcome::Finished(r));
        }
        (
            Some(Pc::WaitCommit(transid)),
            StepOutcome::Blocked(Wait::CommitDone(transid)),
        )
    }

    /// `btrfs_delete_unused_bgs`: one bg a step.
    fn step_delete_unused(&mut self, task: TaskId, mut d: DelPc) -> (Option<Pc>, StepOutcome) {
        if d.current.is_none() {
            let Some(id) = self.unused_bgs.pop_front() else {
                return (
                    None,
                    StepOutcome::Finished(Ok(Done::Deleted { count: d.count })),
                );
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
            Err(w) => return (Some(Pc::DeleteUnused(d)), StepOutcome::Blocked(w)),
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

    fn delete_unused_next(&mut self, d: DelPc) -> (Option<Pc>, StepOutcome) {
        if self.unused_bgs.is_empty() {
            (
                None,
                StepOutcome::Finished(Ok(Done::Deleted { count: d.count })),
            )
        } else {
            (Some(Pc::DeleteUnused(d)), StepOutcome::Yielded)
        }
    }

    /// `btrfs_remove_chunk` -> `btrfs_remove_block_group`.
    fn btrfs_remove_chunk(&mut self, task: TaskId, transid: u64, id: BgId) {
        let (start, len, dev_offset, kind) = {
            let bg = self.bg(id);
            (bg.start, bg.len, bg.dev_offset, bg.kind)
        };
        self.chunk_tree.remove(&start);
        self.dev_extents.remove(&dev_offset);
        // btrfs_remove_block_group: off whichever dirty list it is on.
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

    // ----- testing hooks ------------------------------------------------------

    /// Corrupts a bg, so tests can show that each oracle fires.
    #[cfg(feature = "testing")]
    pub fn testing_bg_mut(&mut self, id: BgId) -> &mut BlockGroup {
        self.bgm(id)
    }
    #[cfg(feature = "testing")]
    pub fn testing_extent_tree_mut(&mut self) -> &mut BTreeMap<Key, Item> {
        &mut self.extent_tree
    }
    #[cfg(feature = "testing")]
    pub fn testing_space_info_mut(&mut self, kind: Kind) -> &mut SpaceInfo {
        &mut self.space_info[kind.index()]
    }
    #[cfg(feature = "testing")]
    pub fn testing_trans_mut(&mut self, transid: u64) -> &mut Transaction {
        self.trans_mut(transid)
    }
    #[cfg(feature = "testing")]
    pub fn testing_committed_mut(&mut self) -> &mut Committed {
        &mut self.committed
    }
}

/// Returns a range to a free-space map, merging with its neighbours.
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
