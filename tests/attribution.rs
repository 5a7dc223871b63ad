//! Attribution names the upstream fix that removes a witness, and a hunt
//! under `v4.1` keeps each distinct bug with its fix.

use std::path::PathBuf;
use std::process::Command;

use bgfuzz::attribution::attribute;
use bgfuzz::engine::{Patches, C79A175175D5, E44081EF6118, FF1F8250};
use bgfuzz::scenario::Scenario;
use bgfuzz::Variant;

fn script(p: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p);
    Scenario::parse(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn each_zoo_witness_is_removed_by_its_own_fix() {
    let seed = script("corpus/scripts/seed-race.scn");
    let v = Variant::BUG_FF1F8250;
    assert_eq!(attribute(&seed, v, v.patches()), vec![FF1F8250]);
    // Under v4.1 (which has ff1f8250) the endio race is e44081ef's alone.
    let endio = script("corpus/scripts/zoo/bug-e44081ef.scn");
    let v = Variant::V4_1;
    assert_eq!(attribute(&endio, v, v.patches()), vec![E44081EF6118]);
    // `fixed` lacks nothing: nothing to attribute.
    assert!(attribute(&endio, Variant::FIXED, Patches::FIXES).is_empty());
}

#[test]
fn a_v41_hunt_reports_distinct_bugs_with_their_fixes() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_bgfuzz"))
        .args(["run", "--variant", "v4.1", "--cases", "3000", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("distinct bug(s)"), "{text}");
    let id = C79A175175D5.patch().id;
    assert!(
        text.lines()
            .any(|l| l.starts_with(id) && l.contains("bg-refcount")),
        "{text}"
    );
    assert!(
        text.contains(&format!("removed upstream by {id}")),
        "{text}"
    );
    // Fix-and-go-on: with c79a175175d5 applied after the first bug, the
    // leak it hid (bgs left on start_dirty's local list) has its own row.
    for id in ["acaeedb193a5", "2e6e518335f8", "67c5e7d464bc"] {
        assert!(text.lines().any(|l| l.starts_with(id)), "{id}: {text}");
    }
    assert!(
        text.contains("with the fixes found so far applied (c79a175175d5"),
        "{text}"
    );
    // Each bug minimized, acaeedb1's too: it needs fixes the hunt applied
    // (its bug variant alone does not show this witness), so it shrinks
    // under the hunt's patches, each candidate still removed by the same
    // fix (it stayed at 35 lines when shrinking by kind alone).
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.len() > 12 && l.as_bytes()[..12].iter().all(u8::is_ascii_hexdigit))
        .collect();
    assert!(rows.len() >= 4, "{text}");
    for row in rows {
        let lines: usize = row.split_whitespace().last().unwrap().parse().unwrap();
        assert!(lines <= 12, "{row}\n{text}");
    }
    // Every kept witness is a script that replays.
    let kept: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(!kept.is_empty());
}
