//! The engine's state, with the kernel's names. Everything here is readable
//! by the oracles through [`crate::Engine`]'s accessors; only the engine
//! mutates it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

pub use bgfuzz_failpoints::{Errno, Error, Origin, Site};

pub const SZ_4K: u64 = 4096;
pub const SZ_1M: u64 = 1 << 20;
pub const SZ_1G: u64 = 1 << 30;

/// `BTRFS_BLOCK_GROUP_ITEM_KEY`.
pub const BLOCK_GROUP_ITEM_KEY: u8 = 192;
/// `BTRFS_EXTENT_ITEM_KEY`.
pub const EXTENT_ITEM_KEY: u8 = 168;
/// `BTRFS_FIRST_CHUNK_TREE_OBJECTID`: every bg item's `chunk_objectid`.
pub const FIRST_CHUNK_TREE_OBJECTID: u64 = 256;

/// At most this many logical tasks (`A` to `H`).
pub const MAX_TASKS: usize = 8;

/// A logical task: an fsstress worker, the cleaner, a task calling fsync.
pub type TaskId = usize;

pub fn task_name(t: TaskId) -> char {
    (b'A' + t as u8) as char
}

/// Block group profile kind, with the kernel's `BTRFS_BLOCK_GROUP_*` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Data,
    Metadata,
    System,
}

impl Kind {
    /// mkfs order: system, then metadata, then data.
    pub const MKFS_ORDER: [Kind; 3] = [Kind::System, Kind::Metadata, Kind::Data];
    pub const ALL: [Kind; 3] = [Kind::Data, Kind::Metadata, Kind::System];

    pub fn flags(self) -> u64 {
        match self {
            Kind::Data => 1,
            Kind::System => 2,
            Kind::Metadata => 4,
        }
    }
    pub fn index(self) -> usize {
        match self {
            Kind::Data => 0,
            Kind::Metadata => 1,
            Kind::System => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Data => "data",
            Kind::Metadata => "metadata",
            Kind::System => "system",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes in the largest binary unit that divides them exactly (`1G`,
/// `1312M`, `4K`), the form scripts use.
pub fn fmt_size(bytes: u64) -> String {
    for (unit, suffix) in [(SZ_1G, "G"), (SZ_1M, "M"), (1024, "K")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{}", bytes / unit, suffix);
        }
    }
    bytes.to_string()
}

/// Which kernel the engine behaves as. A run-time choice, so one fuzz binary
/// covers every variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Variant {
    /// v4.1 with ff1f8250: `-ENOENT` in `btrfs_start_dirty_block_groups`
    /// re-queues the bg for the critical section.
    Fixed,
    /// v4.1-rc (1bbc621ef without ff1f8250): `write_one_cache_group` aborts
    /// on any error, `-ENOENT` included.
    BugFf1f8250,
}

impl Variant {
    pub const ALL: [Variant; 2] = [Variant::Fixed, Variant::BugFf1f8250];
    /// Variants that carry a bug, with the oracle expected to catch it.
    pub const BUGS: [Variant; 1] = [Variant::BugFf1f8250];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Fixed => "fixed",
            Variant::BugFf1f8250 => "bug-ff1f8250",
        }
    }
    /// The kernel commit this variant stands for.
    pub fn commit(self) -> &'static str {
        match self {
            Variant::Fixed => "v4.1 (ff1f8250a9e4 applied)",
            Variant::BugFf1f8250 => "v4.1-rc: 1bbc621ef without ff1f8250a9e4",
        }
    }
    /// The violation kind expected to catch this variant's bug.
    pub fn expected_violation(self) -> Option<&'static str> {
        match self {
            Variant::Fixed => None,
            Variant::BugFf1f8250 => Some("abort-enoent-outside-critical"),
        }
    }
    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Device and chunk sizes. Small ones make ENOSPC reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    pub device_size: u64,
    /// Chunk (block group) size per kind, indexed by [`Kind::index`].
    pub chunk_size: [u64; 3],
}

impl Default for Config {
    fn default() -> Self {
        Config {
            device_size: 16 * SZ_1G,
            chunk_size: [SZ_1G, 256 * SZ_1M, 32 * SZ_1M],
        }
    }
}

impl Config {
    pub fn chunk(&self, kind: Kind) -> u64 {
        self.chunk_size[kind.index()]
    }
}

/// Handle type, for `btrfs_blocked_trans_types`. The model's operations use
/// START and JOIN only (no task attaches or joins without lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransType {
    Start,
    Join,
}

impl TransType {
    /// `btrfs_blocked_trans_types[state] & type`.
    pub fn blocked_in(self, state: TransState) -> bool {
        match state {
            TransState::CommitStart => self == TransType::Start,
            TransState::CommitDoing => true,
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransState {
    Running,
    CommitStart,
    CommitDoing,
    Unblocked,
    Completed,
}

impl TransState {
    pub fn name(self) -> &'static str {
        match self {
            TransState::Running => "TRANS_STATE_RUNNING",
            TransState::CommitStart => "TRANS_STATE_COMMIT_START",
            TransState::CommitDoing => "TRANS_STATE_COMMIT_DOING",
            TransState::Unblocked => "TRANS_STATE_UNBLOCKED",
            TransState::Completed => "TRANS_STATE_COMPLETED",
        }
    }
}

/// Index of a block group in the engine's arena. Freed bgs stay in the arena
/// (marked `freed`) so a use after free is observable, not a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BgId(pub u32);

/// Extent names `e1`, `e2`, ... in the order their `alloc` began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExtentId(pub u32);

impl fmt::Display for ExtentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// Which list a bg's `dirty_list` head is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DirtyList {
    None,
    /// `cur_trans->dirty_bgs` of this transid.
    DirtyBgs(u64),
    /// The local list `btrfs_start_dirty_block_groups` spliced `dirty_bgs`
    /// into, for this transid. `list_empty(&cache->dirty_list)` is false here.
    Writeout(u64),
}

/// Which list the one `bg_list` head is on: a handle's `new_bgs` or
/// `fs_info->unused_bgs`, never both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BgList {
    None,
    NewBgs(TaskId),
    UnusedBgs,
}

/// `struct btrfs_block_group_cache`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockGroup {
    pub id: BgId,
    pub kind: Kind,
    /// `key.objectid`: logical start.
    pub start: u64,
    /// `key.offset`.
    pub len: u64,
    /// The in-memory `item.used`.
    pub used: u64,
    pub reserved: u64,
    pub ro: bool,
    pub removed: bool,
    /// Explicit count; see [`crate::Engine::expected_refs`].
    pub refs: i64,
    pub freed: bool,
    pub dirty_list: DirtyList,
    pub bg_list: BgList,
    /// Always false: the model keeps no free-space cache (see departures).
    pub on_io_list: bool,
    /// The transaction whose handle ran phase 1.
    pub created_transid: u64,
    pub dev_offset: u64,
    /// Free ranges (start -> len), first-fit.
    pub(crate) free_space: BTreeMap<u64, u64>,
}

impl BlockGroup {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
    /// The name a report uses: `bg 1G` is the bg starting at logical 1G.
    pub fn name(&self) -> String {
        format!("bg {}", fmt_size(self.start))
    }
}

/// A key of the extent tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub objectid: u64,
    pub ty: u8,
    pub offset: u64,
}

impl Key {
    pub fn block_group(start: u64, len: u64) -> Key {
        Key {
            objectid: start,
            ty: BLOCK_GROUP_ITEM_KEY,
            offset: len,
        }
    }
    pub fn extent(start: u64, len: u64) -> Key {
        Key {
            objectid: start,
            ty: EXTENT_ITEM_KEY,
            offset: len,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Item {
    /// `struct btrfs_block_group_item`.
    BlockGroup {
        used: u64,
        chunk_objectid: u64,
        flags: u64,
    },
    Extent {
        refs: u64,
    },
}

/// A chunk item (and its device extent) as `btrfs_finish_chunk_alloc`
/// inserts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkItem {
    pub len: u64,
    pub flags: u64,
    pub dev_offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExtentState {
    /// `alloc` has begun and has not reserved yet.
    Pending,
    /// The `alloc` failed; the name stays unused.
    Failed,
    /// Reserved, its "add" delayed ref queued.
    Reserved,
    /// The "add" ref ran: `used`, and an extent item.
    Allocated,
    /// Freed, its "drop" ref queued.
    Dropping,
    /// The "drop" ref ran.
    Freed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Extent {
    pub id: ExtentId,
    pub kind: Kind,
    pub bg: Option<BgId>,
    pub start: u64,
    pub len: u64,
    pub state: ExtentState,
    /// Its "add" ref ran (it may be freed before that happens).
    pub added: bool,
}

impl Extent {
    /// Bytes it holds in its bg's `used` (add ran, drop not yet).
    pub fn used_bytes(&self) -> u64 {
        match self.state {
            ExtentState::Allocated | ExtentState::Dropping if self.added => self.len,
            _ => 0,
        }
    }
    /// Bytes it holds in its bg's `reserved` (reserved, add not yet run).
    pub fn reserved_bytes(&self) -> u64 {
        match self.state {
            ExtentState::Reserved | ExtentState::Dropping if !self.added => self.len,
            _ => 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefAction {
    Add,
    Drop,
}

/// A queued delayed ref; `update_block_group` runs when it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DelayedRef {
    pub extent: ExtentId,
    pub action: RefAction,
}

/// `struct btrfs_transaction`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Transaction {
    pub transid: u64,
    pub state: TransState,
    pub num_writers: u32,
    pub num_extwriters: u32,
    pub dirty_bgs: VecDeque<BgId>,
    /// Always empty: no free-space cache in the model.
    pub io_bgs: Vec<BgId>,
    pub dirty_bg_run: bool,
    pub delayed_refs: VecDeque<DelayedRef>,
    /// `cur_trans->aborted`, with the error's provenance.
    pub aborted: Option<Error>,
    /// The task that set COMMIT_START, once one has.
    pub committer: Option<TaskId>,
    /// Set while the committer is past `num_writers == 1` and before
    /// UNBLOCKED.
    pub in_critical: bool,
    /// `btrfs_start_dirty_block_groups`' local list.
    pub writeout: VecDeque<BgId>,
}

/// `struct btrfs_trans_handle`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Handle {
    pub transid: u64,
    pub ty: TransType,
    /// Block groups whose phase 2 has not run.
    pub new_bgs: Vec<BgId>,
}

/// `fs_info->space_info` of one kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SpaceInfo {
    pub total_bytes: u64,
    pub bytes_used: u64,
    pub bytes_reserved: u64,
    /// `space_info->block_groups[]`, in creation order.
    pub block_groups: Vec<BgId>,
}

/// What the last completed commit wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Committed {
    /// Transid whose roots were switched last.
    pub roots_transid: u64,
    /// Superblock generation.
    pub generation: u64,
    pub extent_tree: BTreeMap<Key, Item>,
    pub chunk_tree: BTreeMap<u64, ChunkItem>,
}

/// What a blocked task waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wait {
    /// `wait_current_trans`: the transaction reaches UNBLOCKED or aborts.
    Unblocked(u64),
    /// `wait_for_commit`: the transaction reaches COMPLETED.
    CommitDone(u64),
    /// `num_extwriters == 0`.
    ExtWriters(u64),
    /// `num_writers == 1`.
    Writers(u64),
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::Unblocked(t) => write!(f, "waiting for transaction {t} to unblock"),
            Wait::CommitDone(t) => write!(f, "waiting for transaction {t} to complete"),
            Wait::ExtWriters(t) => write!(f, "waiting for num_extwriters == 0 (transaction {t})"),
            Wait::Writers(t) => write!(f, "waiting for num_writers == 1 (transaction {t})"),
        }
    }
}

/// An operation a task begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Start,
    Join,
    Alloc { kind: Kind, size: u64 },
    Free { extent: ExtentId },
    RunDelayedRefs,
    End,
    Commit,
    DeleteUnused,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Start => f.write_str("start"),
            Op::Join => f.write_str("join"),
            Op::Alloc { kind, size } => write!(f, "alloc {kind} {}", fmt_size(*size)),
            Op::Free { extent } => write!(f, "free {extent}"),
            Op::RunDelayedRefs => f.write_str("run_delayed_refs"),
            Op::End => f.write_str("end"),
            Op::Commit => f.write_str("commit"),
            Op::DeleteUnused => f.write_str("delete_unused"),
        }
    }
}

/// What a finished operation returned on success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Done {
    Handle { transid: u64 },
    Extent { id: ExtentId, bg: BgId, start: u64 },
    Freed { id: ExtentId },
    RanRefs { count: u32 },
    Ended,
    Committed { transid: u64 },
    Deleted { count: u32 },
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepOutcome {
    /// At a yield point, the operation still in progress.
    Yielded,
    /// Waiting; the task takes its next step once the wait is satisfied.
    Blocked(Wait),
    /// The operation finished, with the errno it returned.
    Finished(Result<Done, Error>),
}

/// A task's state as the scheduler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Idle,
    Runnable,
    Blocked(Wait),
}

/// Refusals that are the caller's mistake, not the model's errno: a script
/// that asks for them is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("task {0} has an operation in progress")]
    InProgress(char),
    #[error("task {0} has no operation in progress")]
    NotInProgress(char),
    #[error("task {0} is blocked ({1})")]
    Blocked(char, Wait),
    #[error("task {0} out of range (A to H)")]
    NoSuchTask(usize),
    #[error("extent {0} does not exist yet")]
    NoSuchExtent(ExtentId),
    #[error("extent {0}: its alloc failed, the name is unused")]
    FailedExtent(ExtentId),
    #[error("extent {0} is still being allocated")]
    PendingExtent(ExtentId),
    #[error("extent {0} is already freed")]
    AlreadyFreed(ExtentId),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{what} size {size} must be a non-zero multiple of 4K")]
    NotAligned { what: &'static str, size: u64 },
    #[error("device of {device} bytes is too small for mkfs's three chunks ({need} bytes)")]
    DeviceTooSmall { device: u64, need: u64 },
}

/// `btrfs_abort_transaction`'s record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AbortInfo {
    pub transid: u64,
    pub error: Error,
    pub task: TaskId,
    /// Outermost first: `btrfs_commit_transaction`, ...
    pub stack: &'static [&'static str],
    pub in_critical: bool,
}

/// What the engine tells its observers, in order. The oracles judge these;
/// the report turns them into words.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    TransStarted {
        transid: u64,
    },
    /// Phase 1: `btrfs_make_block_group`.
    BgCreated {
        bg: BgId,
        task: TaskId,
    },
    /// Phase 2: the bg item (and chunk item) inserted.
    BgItemInserted {
        bg: BgId,
    },
    /// `update_block_group` put the bg on `dirty_bgs`.
    BgDirtied {
        bg: BgId,
    },
    /// `write_one_cache_group` wrote the item.
    BgWritten {
        bg: BgId,
        critical: bool,
    },
    /// The fix: `-ENOENT` forgiven, bg re-queued for the critical section.
    BgRequeued {
        bg: BgId,
    },
    BgRemoved {
        bg: BgId,
    },
    Abort(AbortInfo),
    /// `switch_commit_roots`: the commit, for the oracles.
    RootsSwitched {
        transid: u64,
    },
    SuperWritten {
        transid: u64,
    },
    /// `cleanup_transaction` after an abort.
    TransCleanedUp {
        transid: u64,
    },
    RefUnderflow {
        bg: BgId,
        site: &'static str,
    },
    UseAfterFree {
        bg: BgId,
        site: &'static str,
    },
}
