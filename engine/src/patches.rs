//! The upstream commits whose presence changes what the engine does. Each
//! is a row of [`PATCHES`]; an engine runs with a [`Patches`] set and asks
//! [`crate::Engine::applied`] at the one place the kernel differs. A
//! variant (in the harness) is a named set of these. See docs/model.md.
//!
//! To add a patch: one `pub const NAME: PatchId = PatchId(n)` and one row
//! at index `n` of [`PATCHES`], both here; the tests below check the table.

use std::fmt;

/// Whether a patch fixes a bug or adds behaviour that later fixes build on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatchKind {
    Fix,
    Feature,
}

impl PatchKind {
    pub fn name(self) -> &'static str {
        match self {
            PatchKind::Fix => "fix",
            PatchKind::Feature => "feature",
        }
    }
}

/// One upstream commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Patch {
    /// The commit id, 12 hex digits, as the kernel cites it.
    pub id: &'static str,
    /// Its subject line.
    pub title: &'static str,
    /// The release it landed in, e.g. "v4.1".
    pub kernel: &'static str,
    pub kind: PatchKind,
    /// For a fix: the violation kind (an oracle's name) expected when the
    /// fix is absent.
    pub expected: Option<&'static str>,
    /// The kernel file it changes where the engine models it.
    pub file: &'static str,
    /// The feature (a row of this table) whose code the fix changes: a
    /// kernel without the feature cannot have the bug.
    pub needs: Option<PatchId>,
}

/// A row of [`PATCHES`], by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PatchId(pub u8);

/// ff1f8250a9e4 ("Btrfs: fix race between block group creation and their
/// cache writeout"): `btrfs_start_dirty_block_groups` forgives `-ENOENT`
/// from `write_one_cache_group` and re-queues the bg for the critical
/// section, where its item exists.
pub const FF1F8250: PatchId = PatchId(0);

/// e44081ef6118 ("Btrfs: fix unprotected list operations at
/// btrfs_write_dirty_block_groups"): on `-ENOENT` in the critical section,
/// wait for the free-space endio workers (`num_writers == 1`) and look the
/// item up again. Without it, a bg that a worker's JOIN_NOLOCK handle
/// created during COMMIT_DOING aborts the commit.
pub const E44081EF6118: PatchId = PatchId(1);

/// c79a175175d5 ("Btrfs: fix memory leak of block group cache"):
/// `btrfs_cleanup_one_transaction` releases `dirty_bgs` and `io_bgs`
/// (`btrfs_cleanup_dirty_bgs`). v4.1 leaks their refs on abort.
pub const C79A175175D5: PatchId = PatchId(2);

/// acaeedb193a5 ("btrfs: splice remaining dirty_bg's onto the transaction
/// dirty bg list"): the bgs an error left on
/// `btrfs_start_dirty_block_groups`' local list go back on `dirty_bgs`
/// instead of leaking.
pub const ACAEEDB193A5: PatchId = PatchId(3);

/// 7248e0cebbef ("btrfs: skip update of block group item if used bytes are
/// the same", v6.2), a feature: `update_block_group_item` (v4.1's
/// `write_one_cache_group`) returns early when `used == commit_used`, and
/// sets `commit_used` before the lookup (restoring it on an error).
pub const F7248E0CEBBE: PatchId = PatchId(4);

/// 675dfe1223a6 ("btrfs: fix block group item corruption after inserting
/// new block group", v6.3): phase 2's item insertion sets `commit_used`.
/// Without it, a new bg inserted with `used` X keeps `commit_used` 0, and
/// freeing everything in it before the commit skips the item's update.
pub const F675DFE1223A6: PatchId = PatchId(5);

/// e33e17ee1098 ("btrfs: add missing discards when unpinning extents with
/// -o discard", v4.3), a feature: under `-o discard` the cleaner moves each
/// removed bg onto the transaction's `deleted_bgs` with a ref, and
/// `btrfs_finish_extent_commit` discards its range and puts it.
pub const E33E17EE1098: PatchId = PatchId(6);

/// 7785a663c4be ("Btrfs: fix memory leaks after transaction is aborted",
/// v4.4): `btrfs_put_transaction` puts what is left on `deleted_bgs`, which
/// an aborted commit never hands to `btrfs_finish_extent_commit`.
pub const F7785A663C4BE: PatchId = PatchId(7);

/// 67c5e7d464bc ("Btrfs: fix race between balance and unused block group
/// deletion"): `btrfs_delete_unused_bgs` holds `delete_unused_bgs_mutex`
/// from its ro check to the end of its transaction, and balance holds it
/// around each chunk's lookup and relocation. Without it, balance removes a
/// chunk the cleaner set ro and is about to remove: the cleaner's
/// `btrfs_remove_chunk` finds no extent map and hits `ASSERT(0)`.
pub const F67C5E7D464BC: PatchId = PatchId(8);

/// 2e6e518335f8 ("Btrfs: fix block group ->space_info null pointer
/// dereference", v4.2): `btrfs_make_block_group` sets `->space_info`
/// before `btrfs_add_block_group_cache` puts the bg in the cache tree.
/// Without it, v4.1 sets it after (in `update_space_info`), and a
/// concurrent `btrfs_trim_fs`, which walks the cache tree, reaches the bg
/// in between and `do_trimming` dereferences NULL.
pub const F2E6E518335F8: PatchId = PatchId(9);

/// 4fbcdf669454 ("Btrfs: fix -ENOSPC when finishing block group
/// creation", v4.2): `check_system_chunk` reserves its threshold in
/// `chunk_block_rsv` (`trans->chunk_bytes_reserved`) and counts others'
/// reservations (`bytes_may_use`) in what is left. Without it, v4.1 only
/// checks: several handles pass the check against the same free system
/// space, and a later phase 2's chunk-tree update gets -ENOSPC and aborts
/// (`mount chunk_cost`).
pub const F4FBCDF669454: PatchId = PatchId(10);

/// Every modelled patch, indexed by [`PatchId`].
pub const PATCHES: &[Patch] = &[
    Patch {
        id: "ff1f8250a9e4",
        title: "Btrfs: fix race between block group creation and their cache writeout",
        kernel: "v4.1",
        kind: PatchKind::Fix,
        expected: Some("abort-enoent-outside-critical"),
        file: "fs/btrfs/extent-tree.c",
        needs: None,
    },
    Patch {
        id: "e44081ef6118",
        title: "Btrfs: fix unprotected list operations at btrfs_write_dirty_block_groups",
        kernel: "v4.2",
        kind: PatchKind::Fix,
        expected: Some("unjustified-abort"),
        file: "fs/btrfs/extent-tree.c",
        needs: None,
    },
    Patch {
        id: "c79a175175d5",
        title: "Btrfs: fix memory leak of block group cache",
        kernel: "v4.9",
        kind: PatchKind::Fix,
        expected: Some("bg-refcount"),
        file: "fs/btrfs/disk-io.c",
        needs: None,
    },
    Patch {
        id: "acaeedb193a5",
        title: "btrfs: splice remaining dirty_bg's onto the transaction dirty bg list",
        kernel: "v5.11",
        kind: PatchKind::Fix,
        expected: Some("bg-refcount"),
        file: "fs/btrfs/block-group.c",
        needs: None,
    },
    Patch {
        id: "7248e0cebbef",
        title: "btrfs: skip update of block group item if used bytes are the same",
        kernel: "v6.2",
        kind: PatchKind::Feature,
        expected: None,
        file: "fs/btrfs/block-group.c",
        needs: None,
    },
    Patch {
        id: "675dfe1223a6",
        title: "btrfs: fix block group item corruption after inserting new block group",
        kernel: "v6.3",
        kind: PatchKind::Fix,
        expected: Some("bg-item-missing-at-commit"),
        file: "fs/btrfs/block-group.c",
        needs: Some(F7248E0CEBBE),
    },
    Patch {
        id: "e33e17ee1098",
        title: "btrfs: add missing discards when unpinning extents with -o discard",
        kernel: "v4.3",
        kind: PatchKind::Feature,
        expected: None,
        file: "fs/btrfs/extent-tree.c",
        needs: None,
    },
    Patch {
        id: "7785a663c4be",
        title: "Btrfs: fix memory leaks after transaction is aborted",
        kernel: "v4.4",
        kind: PatchKind::Fix,
        expected: Some("bg-refcount"),
        file: "fs/btrfs/transaction.c",
        needs: Some(E33E17EE1098),
    },
    Patch {
        id: "67c5e7d464bc",
        title: "Btrfs: fix race between balance and unused block group deletion",
        kernel: "v4.2",
        kind: PatchKind::Fix,
        expected: Some("kernel-assert"),
        file: "fs/btrfs/volumes.c",
        needs: None,
    },
    Patch {
        id: "2e6e518335f8",
        title: "Btrfs: fix block group ->space_info null pointer dereference",
        kernel: "v4.2",
        kind: PatchKind::Fix,
        expected: Some("bg-half-initialized"),
        file: "fs/btrfs/extent-tree.c",
        needs: None,
    },
    Patch {
        id: "4fbcdf669454",
        title: "Btrfs: fix -ENOSPC when finishing block group creation",
        kernel: "v4.2",
        kind: PatchKind::Fix,
        expected: Some("unjustified-abort"),
        file: "fs/btrfs/extent-tree.c",
        needs: None,
    },
];

impl PatchId {
    pub fn patch(self) -> &'static Patch {
        &PATCHES[self.0 as usize]
    }
}

impl fmt::Display for PatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.patch().id)
    }
}

/// A set of patches, one bit per row of [`PATCHES`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Patches(pub u64);

impl Patches {
    pub const NONE: Patches = Patches(0);

    /// Every fix in the table (the `fixed` variant).
    pub const FIXES: Patches = {
        let mut set = Patches::NONE;
        let mut i = 0;
        while i < PATCHES.len() {
            if matches!(PATCHES[i].kind, PatchKind::Fix) {
                set = set.with(PatchId(i as u8));
            }
            i += 1;
        }
        set
    };

    pub const fn contains(self, p: PatchId) -> bool {
        self.0 & (1 << p.0) != 0
    }
    pub const fn with(self, p: PatchId) -> Patches {
        Patches(self.0 | (1 << p.0))
    }
    pub const fn without(self, p: PatchId) -> Patches {
        Patches(self.0 & !(1 << p.0))
    }
    /// The patches in `self` and not in `other`.
    pub const fn minus(self, other: Patches) -> Patches {
        Patches(self.0 & !other.0)
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The patches in the set, in table order.
    /// Every patch in the table: every fix, and the features later fixes
    /// build on (the `fixed` variant).
    pub const FIXED: Patches = {
        let mut set = Patches::NONE;
        let mut i = 0;
        while i < PATCHES.len() {
            set = set.with(PatchId(i as u8));
            i += 1;
        }
        set
    };

    pub fn iter(self) -> impl Iterator<Item = PatchId> {
        (0..PATCHES.len() as u8)
            .map(PatchId)
            .filter(move |&p| self.contains(p))
    }
}

impl FromIterator<PatchId> for Patches {
    fn from_iter<I: IntoIterator<Item = PatchId>>(iter: I) -> Self {
        iter.into_iter().fold(Patches::NONE, Patches::with)
    }
}

/// The commit ids, comma-separated; `none` for the empty set.
impl fmt::Display for Patches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, p) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(p.patch().id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_well_formed() {
        assert!(PATCHES.len() <= 64, "Patches is a u64 bitset");
        for (i, p) in PATCHES.iter().enumerate() {
            assert_eq!(p.id.len(), 12, "{}: 12 hex digits", p.id);
            assert!(p
                .id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(PATCHES[..i].iter().all(|q| q.id != p.id), "{} twice", p.id);
            assert!(p.kernel.starts_with('v'), "{}: kernel {}", p.id, p.kernel);
            assert!(p.file.starts_with("fs/btrfs/"), "{}: file {}", p.id, p.file);
            if p.kind == PatchKind::Fix {
                assert!(p.expected.is_some(), "fix {} names its oracle", p.id);
            }
        }
        assert_eq!(FF1F8250.patch().id, "ff1f8250a9e4");
    }

    #[test]
    fn set_operations() {
        let s = Patches::NONE.with(FF1F8250);
        assert!(s.contains(FF1F8250));
        assert!(!s.without(FF1F8250).contains(FF1F8250));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![FF1F8250]);
        assert_eq!(s.iter().collect::<Patches>(), s);
        assert!(Patches::FIXES.contains(FF1F8250));
        assert_eq!(Patches::FIXES.minus(s), Patches::FIXES.without(FF1F8250));
        assert_eq!(s.to_string(), "ff1f8250a9e4");
        assert_eq!(Patches::NONE.to_string(), "none");
    }
}
