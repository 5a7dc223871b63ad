//! Variants: named sets of the engine's patches. A script names one
//! (`variant NAME`), the command line picks one (`--variant NAME`), and
//! `bgfuzz variants` lists them. Every variant is a row of one table; see
//! docs/model.md.
//!
//! The convention: `fixed` has every fix in the patch table; `v4.1` is the
//! release as it was; `bug-<first 8 hex digits>` is `fixed` without that
//! one fix, and is expected to be caught by the oracle the fix names.

use std::fmt;

use crate::engine::{
    PatchId, Patches, ACAEEDB193A5, C79A175175D5, E44081EF6118, F2E6E518335F8, F4FBCDF669454,
    F675DFE1223A6, F67C5E7D464BC, F7785A663C4BE, FF1F8250,
};

/// One row of the variant table.
#[derive(Clone, Copy, Debug)]
pub struct VariantDef {
    pub name: &'static str,
    pub description: &'static str,
    pub patches: Patches,
}

/// Every variant, in the order `bgfuzz variants` lists them.
const VARIANTS: &[VariantDef] = &[
    VariantDef {
        name: "fixed",
        description: "every modelled fix applied: must be clean",
        patches: Patches::FIXED,
    },
    VariantDef {
        name: "v4.1",
        description: "Linux v4.1 as released: ff1f8250a9e4 included, none of the later fixes",
        patches: Patches::NONE.with(FF1F8250),
    },
    VariantDef {
        name: "bug-ff1f8250",
        description: "fixed without ff1f8250a9e4: -ENOENT from write_one_cache_group outside the critical section aborts",
        patches: Patches::FIXED.without(FF1F8250),
    },
    VariantDef {
        name: "bug-e44081ef",
        description: "fixed without e44081ef6118: a bg a free-space endio worker created during COMMIT_DOING has no item yet; the critical section aborts with -ENOENT (mount space_cache)",
        patches: Patches::FIXED.without(E44081EF6118),
    },
    VariantDef {
        name: "bug-c79a1751",
        description: "fixed without c79a175175d5: an aborted commit leaks the refs of the bgs on dirty_bgs and io_bgs",
        patches: Patches::FIXED.without(C79A175175D5),
    },
    VariantDef {
        name: "bug-675dfe12",
        description: "fixed without 675dfe1223a6: a new bg's item is inserted with used X but commit_used 0; freeing it all before the commit skips the item's update (7248e0cebbef), and the committed item keeps a stale used",
        patches: Patches::FIXED.without(F675DFE1223A6),
    },
    VariantDef {
        name: "bug-7785a663",
        description: "fixed without 7785a663c4be: under mount discard, bgs the cleaner removed wait on deleted_bgs (e33e17ee1098) with a ref that only btrfs_finish_extent_commit drops; an aborted commit leaks it",
        patches: Patches::FIXED.without(F7785A663C4BE),
    },
    VariantDef {
        name: "bug-acaeedb1",
        description: "fixed without acaeedb193a5: bgs an error left on btrfs_start_dirty_block_groups' local list leak",
        patches: Patches::FIXED.without(ACAEEDB193A5),
    },
    VariantDef {
        name: "bug-67c5e7d4",
        description: "fixed without 67c5e7d464bc: balance relocates and removes a bg the cleaner set ro and is about to remove; the cleaner's btrfs_remove_chunk hits ASSERT(0)",
        patches: Patches::FIXED.without(F67C5E7D464BC),
    },
    VariantDef {
        name: "bug-2e6e5183",
        description: "fixed without 2e6e518335f8: phase 1 puts a new bg in the cache tree before setting its ->space_info; a concurrent FITRIM walking the cache tree dereferences NULL in do_trimming (mount fitrim)",
        patches: Patches::FIXED.without(F2E6E518335F8),
    },
    VariantDef {
        name: "bug-4fbcdf66",
        description: "fixed without 4fbcdf669454: check_system_chunk only checks the free system space, reserving none; handles that passed the same check exhaust it, and a later phase 2's chunk-tree update gets -ENOSPC and aborts (mount chunk_cost)",
        patches: Patches::FIXED.without(F4FBCDF669454),
    },
];

/// A variant: an index into the table. Cheap to copy and compare.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Variant(u8);

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn is_bug_name(name: &str) -> bool {
    let (n, p) = (name.as_bytes(), b"bug-");
    if n.len() < p.len() {
        return false;
    }
    let mut i = 0;
    while i < p.len() {
        if n[i] != p[i] {
            return false;
        }
        i += 1;
    }
    true
}

const N_BUGS: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < VARIANTS.len() {
        if is_bug_name(VARIANTS[i].name) {
            n += 1;
        }
        i += 1;
    }
    n
};

impl Variant {
    pub const FIXED: Variant = Variant::by_name("fixed");
    pub const V4_1: Variant = Variant::by_name("v4.1");
    pub const BUG_FF1F8250: Variant = Variant::by_name("bug-ff1f8250");

    /// Every variant, in table order.
    pub const ALL: [Variant; VARIANTS.len()] = {
        let mut all = [Variant(0); VARIANTS.len()];
        let mut i = 0;
        while i < VARIANTS.len() {
            all[i] = Variant(i as u8);
            i += 1;
        }
        all
    };

    /// The `bug-*` variants, each carrying one bug, in table order.
    pub const BUGS: [Variant; N_BUGS] = {
        let mut bugs = [Variant(0); N_BUGS];
        let (mut i, mut n) = (0, 0);
        while i < VARIANTS.len() {
            if is_bug_name(VARIANTS[i].name) {
                bugs[n] = Variant(i as u8);
                n += 1;
            }
            i += 1;
        }
        bugs
    };

    /// The table row named `name`; a compile-time error if there is none.
    const fn by_name(name: &str) -> Variant {
        let mut i = 0;
        while i < VARIANTS.len() {
            if str_eq(VARIANTS[i].name, name) {
                return Variant(i as u8);
            }
            i += 1;
        }
        panic!("no such variant in the table")
    }

    fn def(self) -> &'static VariantDef {
        &VARIANTS[self.0 as usize]
    }
    pub fn name(self) -> &'static str {
        self.def().name
    }
    pub fn description(self) -> &'static str {
        self.def().description
    }
    /// The patches the engine runs with under this variant.
    pub fn patches(self) -> Patches {
        self.def().patches
    }
    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }
    /// The names, comma-separated, for help texts and errors.
    pub fn known_names() -> String {
        Variant::ALL.map(|v| v.name()).join(", ")
    }
    pub fn is_bug(self) -> bool {
        is_bug_name(self.name())
    }
    /// The fixes `fixed` has and this variant lacks.
    pub fn missing_fixes(self) -> Patches {
        Patches::FIXES.minus(self.patches())
    }
    /// For a `bug-*` variant, the fix it lacks.
    pub fn bug_patch(self) -> Option<PatchId> {
        if self.is_bug() {
            self.missing_fixes().iter().next()
        } else {
            None
        }
    }
    /// The violation kind expected to catch a `bug-*` variant's bug: its
    /// missing fix's `expected`. `None` for the others.
    pub fn expected_violation(self) -> Option<&'static str> {
        self.bug_patch().and_then(|p| p.patch().expected)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Variant({})", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::PATCHES;

    #[test]
    fn table_is_well_formed() {
        for (i, v) in Variant::ALL.into_iter().enumerate() {
            assert_eq!(Variant::parse(v.name()), Some(v));
            assert!(
                Variant::ALL[..i].iter().all(|w| w.name() != v.name()),
                "{v} twice"
            );
        }
        assert_eq!(Variant::FIXED.patches(), Patches::FIXED);
        assert_eq!(Variant::parse("nope"), None);
        assert!(Variant::known_names().starts_with("fixed, v4.1, bug-ff1f8250"));
    }

    /// `bug-<first 8 hex>` is `fixed` without exactly that fix.
    #[test]
    fn bug_variants_follow_the_convention() {
        assert!(!Variant::BUGS.is_empty());
        for v in Variant::BUGS {
            let hex = v.name().strip_prefix("bug-").expect("a bug- name");
            let p = v.bug_patch().expect("a bug variant lacks a fix");
            assert!(p.patch().id.starts_with(hex), "{v}: lacks {}", p.patch().id);
            assert_eq!(v.patches(), Patches::FIXED.without(p), "{v}");
            assert!(v.expected_violation().is_some(), "{v}");
        }
        for v in Variant::ALL.into_iter().filter(|v| !v.is_bug()) {
            assert_eq!(v.expected_violation(), None);
        }
        assert_eq!(Variant::BUGS[0], Variant::BUG_FF1F8250);
        // Every fix in the table has its bug variant.
        for p in Patches::FIXES.iter() {
            assert!(
                Variant::BUGS.iter().any(|v| v.bug_patch() == Some(p)),
                "no bug variant lacks {p}"
            );
        }
        assert_eq!(
            Variant::BUG_FF1F8250.expected_violation(),
            Some("abort-enoent-outside-critical")
        );
        assert!(PATCHES.len() <= 64);
    }

    /// v4.1 as released had ff1f8250a9e4 (it landed in v4.1-rc).
    #[test]
    fn v4_1_has_ff1f8250() {
        assert!(Variant::V4_1.patches().contains(FF1F8250));
    }
}
