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

/// Mount options that change the step structure of an operation. Each is
/// off by default, so a script without a `mount` line means what it always
/// meant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MountOpts {
    /// `-o space_cache` (v1): the commit writes each dirty bg's free-space
    /// cache (`cache_save_setup`, `btrfs_write_out_cache`), puts it on
    /// `io_bgs`, and waits for the IO (`btrfs_wait_cache_io`), whose endio
    /// worker joins the transaction with JOIN_NOLOCK.
    pub space_cache: bool,
    /// `-o discard`: with e33e17ee1098 (v4.3) the cleaner puts each bg it
    /// removed on the transaction's `deleted_bgs`, with a ref, to discard
    /// its range after the commit (`btrfs_finish_extent_commit`).
    pub discard: bool,
    /// Not a kernel mount option: FITRIM (`fstrim`) is in use, so phase 1
    /// of a new bg (`btrfs_make_block_group`) yields between putting the
    /// bg in the cache tree, where `btrfs_trim_fs` walks, and linking it
    /// into its space_info. Off, phase 1 is one step, as it always was.
    pub fitrim: bool,
    /// Not a kernel mount option: phase 2's chunk-tree update
    /// (`btrfs_finish_chunk_alloc`) costs [`CHUNK_ITEM_COST`] of system
    /// space per bg, which `check_system_chunk` must have left room for.
    /// Off, the chunk tree costs nothing, as it always did.
    pub chunk_cost: bool,
}

/// What one bg's chunk-tree update costs under `mount chunk_cost`:
/// `btrfs_calc_trans_metadata_size(root, 1)`, the kernel's worst case for
/// one item (a path of 8 levels of 16K nodes, COWed, times 2), so that
/// `check_system_chunk`'s threshold (two items' worth) covers the two bgs
/// one `do_chunk_alloc` can make (a system one and its own).
pub const CHUNK_ITEM_COST: u64 = 16 * 1024 * 8 * 2;

impl MountOpts {
    /// Every option by its mount name, for scripts and help.
    pub const NAMES: [&'static str; 4] = ["space_cache", "discard", "fitrim", "chunk_cost"];

    pub fn set(&mut self, name: &str) -> bool {
        match name {
            "space_cache" => self.space_cache = true,
            "discard" => self.discard = true,
            "fitrim" => self.fitrim = true,
            "chunk_cost" => self.chunk_cost = true,
            _ => return false,
        }
        true
    }
    /// The options that are on, by mount name.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.space_cache {
            v.push("space_cache");
        }
        if self.discard {
            v.push("discard");
        }
        if self.fitrim {
            v.push("fitrim");
        }
        if self.chunk_cost {
            v.push("chunk_cost");
        }
        v
    }
}

/// Device and chunk sizes, and mount options. Small sizes make ENOSPC
/// reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    pub device_size: u64,
    /// Chunk (block group) size per kind, indexed by [`Kind::index`]. This
    /// is the size `__btrfs_alloc_chunk` computes (the kind's stripe size,
    /// capped at 10% of the device); the model takes it as given. A chunk
    /// is smaller only when the device has no hole this large (a tail
    /// chunk).
    pub chunk_size: [u64; 3],
    pub mount: MountOpts,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            device_size: 16 * SZ_1G,
            chunk_size: [SZ_1G, 256 * SZ_1M, 32 * SZ_1M],
            mount: MountOpts::default(),
        }
    }
}

impl Config {
    pub fn chunk(&self, kind: Kind) -> u64 {
        self.chunk_size[kind.index()]
    }
}

/// Handle type, for `btrfs_blocked_trans_types`. START and JOIN are the
/// `start` and `join` operations; JOIN_NOLOCK is the free-space endio
/// worker's (`btrfs_finish_ordered_io` on a cache inode). No task attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransType {
    Start,
    Join,
    JoinNolock,
}

impl TransType {
    /// `btrfs_blocked_trans_types[state] & type` (fs/btrfs/transaction.c):
    /// COMMIT_START blocks START, COMMIT_DOING blocks START and JOIN, and
    /// only UNBLOCKED on blocks JOIN_NOLOCK (the model's running slot is
    /// empty by then, so a new transaction starts instead).
    pub fn blocked_in(self, state: TransState) -> bool {
        match state {
            TransState::Running => false,
            TransState::CommitStart => self == TransType::Start,
            TransState::CommitDoing => self != TransType::JoinNolock,
            TransState::Unblocked | TransState::Completed => true,
        }
    }
    /// `TRANS_EXTWRITERS`: the types that count in `num_extwriters`.
    pub fn is_extwriter(self) -> bool {
        self == TransType::Start
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
    /// `trans->transaction->deleted_bgs` of this transid (e33e17ee1098,
    /// `-o discard`).
    DeletedBgs(u64),
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
    /// `commit_used` (7248e0cebbef, v6.2): the `used` last written to the
    /// item. 0 for a new bg, as a zeroed allocation leaves it.
    pub commit_used: u64,
    pub reserved: u64,
    pub ro: bool,
    pub removed: bool,
    /// Explicit count; see [`crate::Engine::expected_refs`].
    pub refs: i64,
    pub freed: bool,
    pub dirty_list: DirtyList,
    pub bg_list: BgList,
    /// On its transaction's `io_bgs` (`io_list` not empty): its cache IO
    /// was started, and this list holds the ref `dirty_list` held.
    pub on_io_list: bool,
    /// On its space_info's `block_groups` list (`__link_block_group`),
    /// where `find_free_extent` looks: the end of phase 1.
    pub linked: bool,
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
    /// Bgs whose free-space cache IO the commit started and has not waited
    /// for (`space_cache` only).
    pub io_bgs: VecDeque<BgId>,
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
    /// Bgs the cleaner removed under `-o discard`, each holding a ref until
    /// `btrfs_finish_extent_commit` discards and puts it.
    pub deleted_bgs: Vec<BgId>,
    /// Bgs whose cache inode an endio worker already updated in this
    /// transaction: its tree block is COWed once per transaction, later
    /// updates are in place and allocate nothing (`should_cow_block`).
    pub cache_inodes_cowed: Vec<BgId>,
}

/// `struct btrfs_trans_handle`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Handle {
    pub transid: u64,
    pub ty: TransType,
    /// Block groups whose phase 2 has not run.
    pub new_bgs: Vec<BgId>,
    /// `trans->aborted`: this handle called `btrfs_abort_transaction`.
    /// v4.1 checks this flag, not the transaction's, in
    /// `btrfs_run_delayed_refs` and `btrfs_run_delayed_items`.
    pub aborted: bool,
    /// `trans->chunk_bytes_reserved` (4fbcdf669454): what this handle's
    /// `check_system_chunk` calls reserved for its phase 2.
    pub chunk_bytes_reserved: u64,
}

/// One free-space cache IO in flight: `btrfs_write_out_cache` started it
/// for `bg` in transaction `transid`; an endio worker completes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheIo {
    pub bg: BgId,
    pub transid: u64,
    /// The task running its endio worker, once one took it.
    pub worker: Option<TaskId>,
}

/// `fs_info->space_info` of one kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SpaceInfo {
    pub total_bytes: u64,
    pub bytes_used: u64,
    pub bytes_reserved: u64,
    /// Free bytes of its read-only bgs (`set_block_group_ro`).
    pub bytes_readonly: u64,
    /// `space_info->block_groups[]`, in creation order.
    pub block_groups: Vec<BgId>,
    /// `bytes_may_use`: here only `chunk_block_rsv`'s reservations
    /// (4fbcdf669454, `mount chunk_cost`).
    pub bytes_may_use: u64,
    /// System space the chunk tree's updates took (`mount chunk_cost`).
    /// The model keeps it per space_info, not in a bg's `used`: the chunk
    /// tree's blocks are not extents a script can name.
    pub chunk_tree_bytes: u64,
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
    /// `btrfs_wait_cache_io`: the endio worker of this bg's free-space
    /// cache IO has finished (the bg's logical start, for the report).
    CacheIo(BgId, u64),
    /// `mutex_lock(&fs_info->delete_unused_bgs_mutex)` (67c5e7d464bc): its
    /// holder releases it.
    DeleteUnusedBgsMutex,
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::Unblocked(t) => write!(f, "waiting for transaction {t} to unblock"),
            Wait::CommitDone(t) => write!(f, "waiting for transaction {t} to complete"),
            Wait::ExtWriters(t) => write!(f, "waiting for num_extwriters == 0 (transaction {t})"),
            Wait::Writers(t) => write!(f, "waiting for num_writers == 1 (transaction {t})"),
            Wait::CacheIo(_, start) => write!(
                f,
                "waiting for the cache IO of bg {} (btrfs_wait_cache_io)",
                fmt_size(*start)
            ),
            Wait::DeleteUnusedBgsMutex => f.write_str("waiting for delete_unused_bgs_mutex"),
        }
    }
}

/// An operation a task begins.
/// The size of `alloc KIND fill`: the first hole the allocator would use
/// (else a whole chunk), taken afresh on every replay, so scripts keep
/// `fill`. [`Engine::begin`](crate::Engine::begin) refuses it: the runner
/// and explore resolve it first (`run::resolve_fill`).
pub const FILL: u64 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Start,
    Join,
    Alloc {
        kind: Kind,
        /// [`FILL`] is a script's `fill`: the runner replaces it with the
        /// size that fills a bg before the engine sees it.
        size: u64,
    },
    Free {
        extent: ExtentId,
    },
    RunDelayedRefs,
    End,
    Commit,
    DeleteUnused,
    /// A free-space endio worker (`btrfs_finish_ordered_io` on a cache
    /// inode) completes the oldest cache IO no worker has taken.
    Endio,
    /// Balance of one chunk, named by its logical start (`btrfs balance`
    /// with `-dvrange=`/`-mvrange=` picking one chunk): `__btrfs_balance`'s
    /// chunk lookup, then `btrfs_relocate_chunk`.
    Relocate {
        start: u64,
    },
    /// The FITRIM ioctl (`fstrim`): `btrfs_trim_fs` walks the cache tree
    /// from its first bg, trimming each bg's free space.
    Trim,
}

impl Op {
    /// Whether the op runs on the task's transaction handle. Every other
    /// op (`start`, `join`, and the kernel threads and ioctls: the cleaner,
    /// an endio worker, balance, FITRIM) must run on a task that holds
    /// none.
    pub fn needs_handle(self) -> bool {
        matches!(
            self,
            Op::Alloc { .. } | Op::Free { .. } | Op::RunDelayedRefs | Op::End | Op::Commit
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Start => f.write_str("start"),
            Op::Join => f.write_str("join"),
            Op::Alloc { kind, size: FILL } => write!(f, "alloc {kind} fill"),
            Op::Alloc { kind, size } => write!(f, "alloc {kind} {}", fmt_size(*size)),
            Op::Free { extent } => write!(f, "free {extent}"),
            Op::RunDelayedRefs => f.write_str("run_delayed_refs"),
            Op::End => f.write_str("end"),
            Op::Commit => f.write_str("commit"),
            Op::DeleteUnused => f.write_str("delete_unused"),
            Op::Endio => f.write_str("endio"),
            Op::Relocate { start } => write!(f, "relocate {}", fmt_size(*start)),
            Op::Trim => f.write_str("trim"),
        }
    }
}

/// What a finished operation returned on success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Done {
    Handle {
        transid: u64,
    },
    Extent {
        id: ExtentId,
        bg: BgId,
        start: u64,
    },
    Freed {
        id: ExtentId,
    },
    RanRefs {
        count: u32,
    },
    Ended,
    Committed {
        transid: u64,
    },
    Deleted {
        count: u32,
    },
    /// The endio worker completed this bg's cache IO.
    IoDone {
        bg: BgId,
    },
    /// `endio` with no cache IO in flight: nothing to do.
    NoIo,
    /// `relocate` relocated and removed the chunk at `start`.
    Relocated {
        start: u64,
    },
    /// `relocate` found no chunk item at its start: nothing to do.
    NoChunk,
    /// `trim` walked the cache tree to its end.
    Trimmed,
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
    /// A size of 0 is a script's `fill`, which the runner resolves.
    #[error("alloc size {0} must be a non-zero multiple of 4K")]
    BadSize(u64),
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
    /// `-ENOSPC` while the device had no hole for a system chunk that
    /// `check_system_chunk` could have reserved from: the filesystem is
    /// full, not racing.
    pub device_full: bool,
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
    /// 7248e0cebbef: `used == commit_used`, the item's update skipped.
    BgWriteSkipped {
        bg: BgId,
    },
    BgRemoved {
        bg: BgId,
    },
    /// `btrfs_write_out_cache` started the bg's cache IO; it is on `io_bgs`.
    CacheIoStarted {
        bg: BgId,
    },
    /// The endio worker finished; `btrfs_wait_cache_io` returns.
    CacheIoDone {
        bg: BgId,
    },
    /// `btrfs_delete_unused_bgs` skipped the bg: `set_block_group_ro`
    /// refused to leave its space_info without room.
    BgKeptForSpace {
        bg: BgId,
    },
    /// `check_system_chunk` found too little system space and allocated a
    /// system chunk first.
    SystemChunkForced {
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
    /// The kernel would hit a `BUG_ON` or `ASSERT` here (with
    /// CONFIG_BTRFS_ASSERT): `site` is the function, `what` the failed
    /// condition.
    KernelAssert {
        site: &'static str,
        what: String,
    },
    /// A step dereferenced the `->space_info` of a bg whose phase 1 has
    /// not set it yet (NULL in the kernel): `site` is the function.
    NullSpaceInfo {
        bg: BgId,
        site: &'static str,
    },
}
