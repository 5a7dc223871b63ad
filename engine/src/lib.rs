//! An executable, deterministic model of the Linux v4.1 btrfs transaction
//! and block-group machinery: two-phase block group creation, dirty block
//! groups, and the commit with `btrfs_start_dirty_block_groups` outside the
//! critical section. See docs/model.md.
//!
//! Tasks are logical. Each operation runs as a sequence of atomic steps that
//! end where the kernel can sleep or drops a lock; a scheduler outside the
//! engine picks the task that takes the next step. The engine knows nothing
//! of scenarios or oracles: it exposes steps, a read-only view and an event
//! stream.
//!
//! The code is laid out like fs/btrfs in v4.1, so each function sits in the
//! file named after the C file that holds the kernel function it models:
//! `transaction` (transaction.c), `extent_tree`
//! (extent-tree.c, which in v4.1 still held the block-group code), `volumes`
//! (volumes.c), `disk_io` (disk-io.c). `patches` lists the upstream commits
//! that change behaviour. `state` holds the model's own helpers; this file
//! holds the [`Engine`], its read-only view and the step machine.

mod disk_io;
mod extent_tree;
mod fingerprint;
mod free_space_cache;
mod inode;
mod patches;
mod relocation;
mod state;
mod transaction;
mod types;
mod volumes;

pub use fingerprint::FpHasher;
pub use patches::*;
pub use types::*;

use std::collections::{BTreeMap, VecDeque};

use extent_tree::{AllocPc, DelPc};
use inode::EndioPc;
use relocation::RelocPc;
use transaction::CommitPc;

/// Where a task's operation stands between steps.
#[derive(Clone, Debug)]
enum Pc {
    Start(TransType),
    Alloc(AllocPc),
    RunRefs {
        count: u32,
    },
    /// `started`: the `trans_end` failpoint and the abort check ran.
    End {
        started: bool,
    },
    Commit(CommitPc),
    /// A commit another task started: no handle, just a wait.
    WaitCommit(u64),
    DeleteUnused(DelPc),
    Endio(EndioPc),
    Relocate(RelocPc),
    /// `btrfs_trim_fs`: the next bg is the first in the cache tree at or
    /// past `cursor`.
    Trim {
        cursor: u64,
    },
}

/// How one step of an operation ended, with where it resumes: the one
/// answer to "is it done?".
#[derive(Clone, Debug)]
enum Stepped {
    /// At a yield point; the next step resumes at the `Pc`.
    Yielded(Pc),
    /// Waiting; the step at the `Pc` runs once the wait is satisfied.
    Blocked(Pc, Wait),
    /// The operation returned.
    Finished(Result<Done, Error>),
}

#[derive(Clone, Debug, Default)]
struct TaskState {
    handle: Option<Handle>,
    pc: Option<Pc>,
    blocked: Option<Wait>,
}

/// The model. Cheap to create; one per run.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) config: Config,
    /// The upstream commits this engine behaves as having.
    pub(crate) patches: Patches,
    /// Evaluate failpoints only when the run configured some: a run without
    /// faults then needs no lock on fail-rs's global registry.
    pub(crate) failpoints_armed: bool,
    /// Fault plans evaluated in the engine, with their counters as engine
    /// state (cloned and fingerprinted with it); when set, fail-rs's
    /// registry is not consulted. See [`Engine::with_faults`].
    pub(crate) faults: Option<bgfuzz_failpoints::Faults>,
    pub(crate) bgs: Vec<BlockGroup>,
    /// `fs_info->block_group_cache_tree`.
    pub(crate) cache_tree: BTreeMap<u64, BgId>,
    pub(crate) space_info: [SpaceInfo; 3],
    pub(crate) extent_tree: BTreeMap<Key, Item>,
    pub(crate) chunk_tree: BTreeMap<u64, ChunkItem>,
    /// The device's allocated extents: dev offset -> len.
    pub(crate) dev_extents: BTreeMap<u64, u64>,
    /// By `ExtentId`, which is 1-based: see [`Engine::extent_mut`].
    pub(crate) extents: Vec<Extent>,
    /// Every transaction ever started, by `transid - FIRST_TRANSID`.
    pub(crate) transactions: Vec<Transaction>,
    pub(crate) running: Option<u64>,
    pub(crate) unused_bgs: VecDeque<BgId>,
    /// Free-space cache IOs started and not yet completed by an endio
    /// worker, oldest first.
    pub(crate) cache_io: VecDeque<CacheIo>,
    /// `BTRFS_FS_STATE_ERROR`.
    pub(crate) fs_error: bool,
    /// `fs_info->delete_unused_bgs_mutex` (67c5e7d464bc): the task holding it.
    pub(crate) delete_unused_bgs_mutex: Option<TaskId>,
    pub(crate) committed: Committed,
    tasks: [TaskState; MAX_TASKS],
    pub(crate) events: Vec<Event>,
}

/// mkfs commits generation 1; the first transaction is 2.
pub const FIRST_TRANSID: u64 = 2;

fn check_aligned(what: &'static str, size: u64) -> Result<(), ConfigError> {
    if size == 0 || !size.is_multiple_of(SZ_4K) {
        return Err(ConfigError::NotAligned { what, size });
    }
    Ok(())
}

impl Engine {
    /// A freshly made filesystem: one bg of each kind, committed at
    /// generation 1, no transaction running. The engine behaves as a kernel
    /// with exactly `patches` applied.
    pub fn new(
        config: Config,
        patches: Patches,
        failpoints_armed: bool,
    ) -> Result<Self, ConfigError> {
        Engine::make(config, patches, failpoints_armed, None)
    }

    /// [`Engine::new`], with failpoints evaluated by `faults` inside the
    /// engine instead of fail-rs's registry: the same answers for the same
    /// plans, but the counters are part of the state, so a clone branches
    /// on them (`bgfuzz explore --faults`).
    pub fn with_faults(
        config: Config,
        patches: Patches,
        faults: bgfuzz_failpoints::Faults,
    ) -> Result<Self, ConfigError> {
        Engine::make(config, patches, false, Some(faults))
    }

    fn make(
        config: Config,
        patches: Patches,
        failpoints_armed: bool,
        faults: Option<bgfuzz_failpoints::Faults>,
    ) -> Result<Self, ConfigError> {
        check_aligned("device", config.device_size)?;
        for kind in Kind::ALL {
            check_aligned(kind.name(), config.chunk(kind))?;
        }
        let need = volumes::DEV_RESERVED + Kind::ALL.iter().map(|k| config.chunk(*k)).sum::<u64>();
        if config.device_size < need {
            return Err(ConfigError::DeviceTooSmall {
                device: config.device_size,
                need,
            });
        }
        let mut e = Engine {
            config,
            patches,
            failpoints_armed,
            faults,
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
            cache_io: VecDeque::new(),
            fs_error: false,
            delete_unused_bgs_mutex: None,
            committed: Committed::default(),
            tasks: Default::default(),
            events: Vec::new(),
        };
        for kind in Kind::MKFS_ORDER {
            let id = e
                .btrfs_make_block_group(kind, 1, None)
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
    pub fn patches(&self) -> Patches {
        self.patches
    }
    /// The in-engine fault plans and counters, if the engine has them.
    pub fn faults(&self) -> Option<&bgfuzz_failpoints::Faults> {
        self.faults.as_ref()
    }
    /// The in-engine faults, to arm a plan or change the hit cap between
    /// steps (an explorer's branching).
    pub fn faults_mut(&mut self) -> Option<&mut bgfuzz_failpoints::Faults> {
        self.faults.as_mut()
    }
    /// Whether the kernel modelled has upstream commit `p`.
    pub fn applied(&self, p: PatchId) -> bool {
        self.patches.contains(p)
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
    /// The extent named `id` (`e1` is the first), if its alloc has begun.
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
    /// The task holding `delete_unused_bgs_mutex`, if any.
    pub fn delete_unused_bgs_mutex(&self) -> Option<TaskId> {
        self.delete_unused_bgs_mutex
    }
    pub fn committed(&self) -> &Committed {
        &self.committed
    }
    pub fn handle(&self, task: TaskId) -> Option<&Handle> {
        self.tasks.get(task).and_then(|t| t.handle.as_ref())
    }
    /// Free-space cache IOs in flight, oldest first.
    pub fn cache_io(&self) -> &VecDeque<CacheIo> {
        &self.cache_io
    }
    /// Whether an `endio` would find a cache IO no worker has taken.
    pub fn io_to_complete(&self) -> bool {
        self.cache_io.iter().any(|io| io.worker.is_none())
    }
    /// Events since the last [`Engine::drain_events`].
    pub fn events(&self) -> &[Event] {
        &self.events
    }
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// The refs a bg should hold for its list memberships: the cache
    /// tree's, `dirty_list`'s, `io_list`'s (which took over an earlier dirty
    /// ref), `unused_bgs`'. A list of a transaction that has completed (or
    /// was cleaned up after an abort) is gone, so it accounts for nothing:
    /// a bg still linked there holds a leaked ref.
    pub fn expected_refs(&self, bg: &BlockGroup) -> i64 {
        let live = |t: u64| {
            self.transaction(t)
                .is_some_and(|tr| tr.state != TransState::Completed)
        };
        let dirty = match bg.dirty_list {
            DirtyList::None => false,
            DirtyList::DirtyBgs(t) | DirtyList::Writeout(t) => live(t),
        };
        let io = bg.on_io_list
            && self
                .transactions
                .iter()
                .any(|tr| tr.state != TransState::Completed && tr.io_bgs.contains(&bg.id));
        let deleted = matches!(bg.bg_list, BgList::DeletedBgs(t) if live(t));
        i64::from(!bg.removed)
            + i64::from(dirty)
            + i64::from(io)
            + i64::from(bg.bg_list == BgList::UnusedBgs)
            + i64::from(deleted)
    }

    pub fn status(&self, task: TaskId) -> Status {
        let t = &self.tasks[task];
        match (&t.pc, t.blocked) {
            (None, _) => Status::Idle,
            (Some(_), Some(w)) if !self.wait_satisfied(w) => Status::Blocked(w),
            (Some(_), _) => Status::Runnable,
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
            // A second handle, and the kernel threads and ioctls (the
            // cleaner, an endio worker, balance, FITRIM), which take their
            // own or none: not on a task that holds one.
            op if has_handle && !op.needs_handle() => return einval(),
            Op::Start => Pc::Start(TransType::Start),
            Op::Join => Pc::Start(TransType::Join),
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
                // btrfs_free_extent queues its ref whatever another handle
                // did: v4.1 checks no abort here.
                let transid = self.handle_transid(task);
                self.extent_mut(extent).state = ExtentState::Dropping;
                self.trans_mut(transid).delayed_refs.push_back(DelayedRef {
                    extent,
                    action: RefAction::Drop,
                });
                return Ok(StepOutcome::Finished(Ok(Done::Freed { id: extent })));
            }
            Op::Alloc { size, .. } if size == 0 || !size.is_multiple_of(SZ_4K) => {
                return Err(UsageError::BadSize(size))
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
                // find_free_extent checks no abort: a handle goes on
                // allocating after another handle aborted the transaction.
                self.extent_mut(ext).state = ExtentState::Pending;
                Pc::Alloc(AllocPc {
                    ext,
                    kind,
                    size,
                    retry: false,
                    half: None,
                })
            }
            Op::RunDelayedRefs | Op::End | Op::Commit if !has_handle => return einval(),
            Op::RunDelayedRefs => Pc::RunRefs { count: 0 },
            Op::End => Pc::End { started: false },
            Op::Commit => Pc::Commit(CommitPc::Begin),
            Op::Endio => match self.claim_cache_io(task) {
                Some(pc) => Pc::Endio(pc),
                None => return Ok(StepOutcome::Finished(Ok(Done::NoIo))),
            },
            // btrfs_ioctl_balance: `if
            // (atomic_xchg(&fs_info->mutually_exclusive_operation_running,
            // 1))` ... `ret = -EINPROGRESS`: one balance at a time.
            Op::Relocate { .. }
                if self
                    .tasks
                    .iter()
                    .any(|t| matches!(t.pc, Some(Pc::Relocate(_)))) =>
            {
                return Ok(StepOutcome::Finished(Err(Error::model(Errno::EINPROGRESS))))
            }
            Op::Relocate { start } => Pc::Relocate(RelocPc::Lock { start }),
            Op::Trim => Pc::Trim { cursor: 0 },
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
        let stepped = match pc {
            Pc::Start(ty) => self.step_start(task, ty),
            Pc::Alloc(a) => self.step_alloc(task, a),
            Pc::RunRefs { count } => self.step_run_refs(task, count),
            Pc::End { started } => self.step_end(task, started),
            Pc::Commit(c) => self.step_commit(task, c),
            Pc::WaitCommit(transid) => self.commit_wait_other(transid),
            Pc::DeleteUnused(d) => self.step_delete_unused(task, d),
            Pc::Endio(e) => self.step_endio(task, e),
            Pc::Relocate(r) => self.step_relocate(task, r),
            Pc::Trim { cursor } => self.step_trim(cursor),
        };
        match stepped {
            Stepped::Yielded(pc) => {
                self.tasks[task].pc = Some(pc);
                StepOutcome::Yielded
            }
            Stepped::Blocked(pc, w) => {
                self.tasks[task].pc = Some(pc);
                self.tasks[task].blocked = Some(w);
                StepOutcome::Blocked(w)
            }
            Stepped::Finished(r) => StepOutcome::Finished(r),
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
