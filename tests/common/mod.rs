//! Helpers shared by the integration tests that need a copy of the corpus.

use std::path::Path;

/// Copies a directory tree (the corpus has subdirectories, e.g.
/// `corpus/scripts/zoo/`).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, dest).unwrap();
        }
    }
}
