//! Turning `llvm-cov export` into the question a developer asks of a
//! corpus: which engine steps and which oracle checks does it reach?

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

/// `rustc -vV`'s host triple, where cargo fuzz puts its binaries.
pub fn host_triple() -> anyhow::Result<String> {
    let out = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("no host triple in rustc -vV")
}

/// Where `cargo fuzz coverage` and the report need llvm-tools: the
/// toolchain's `lib/rustlib/<host>/bin`, as `rustc` run in `root` (so a
/// toolchain file there applies) reports it. An error, naming the command
/// that installs them, when `llvm-cov` or `llvm-profdata` is missing:
/// `campaign --coverage` checks this before it builds anything.
pub fn llvm_tools(root: &Path) -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(root)
        .output()
        .context("running rustc --print sysroot")?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || sysroot.is_empty() {
        bail!(
            "--coverage: `rustc --print sysroot` failed ({})",
            out.status
        );
    }
    let bin = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(host_triple()?)
        .join("bin");
    let missing: Vec<&str> = ["llvm-profdata", "llvm-cov"]
        .into_iter()
        .filter(|t| !bin.join(t).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "--coverage needs llvm-tools, and {} {} not in {}: install them with `rustup component add llvm-tools-preview` (then `rustup component list --installed` lists llvm-tools)",
            missing.join(" and "),
            if missing.len() > 1 { "are" } else { "is" },
            bin.display()
        );
    }
    Ok(bin)
}

/// One function's coverage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reached {
    pub file: String,
    pub function: String,
    pub calls: u64,
    pub regions: usize,
    pub regions_hit: usize,
}

/// `engine/src/<file>` for any of the engine's files (it follows
/// fs/btrfs: transaction.rs, extent_tree.rs, ...), `src/oracles.rs` for
/// the oracles; `None` for everything else.
fn short_name(file: &str) -> Option<&str> {
    if let Some(i) = file.rfind("engine/src/") {
        return Some(&file[i..]);
    }
    file.ends_with("src/oracles.rs").then_some("src/oracles.rs")
}

/// The engine's and the oracles' functions from `llvm-cov export
/// -format=text`, demangled, in file and name order.
pub fn reached(export_json: &[u8]) -> anyhow::Result<Vec<Reached>> {
    let v: Value = serde_json::from_slice(export_json).context("parsing llvm-cov export")?;
    let mut out = Vec::new();
    for data in v["data"].as_array().into_iter().flatten() {
        for f in data["functions"].as_array().into_iter().flatten() {
            let Some(file) = f["filenames"][0].as_str() else {
                continue;
            };
            let Some(short) = short_name(file) else {
                continue;
            };
            let name = f["name"].as_str().unwrap_or("?");
            let demangled = format!("{:#}", rustc_demangle::demangle(name));
            // Closures are counted in their function.
            if demangled.contains("{closure") {
                continue;
            }
            let regions: Vec<&Value> = f["regions"].as_array().into_iter().flatten().collect();
            let hit = regions
                .iter()
                .filter(|r| r[4].as_u64().unwrap_or(0) > 0)
                .count();
            out.push(Reached {
                file: short.to_string(),
                function: demangled
                    .rsplit("::")
                    .next()
                    .unwrap_or(&demangled)
                    .to_string(),
                calls: f["count"].as_u64().unwrap_or(0),
                regions: regions.len(),
                regions_hit: hit,
            });
        }
    }
    out.sort_by(|a, b| (&a.file, &a.function).cmp(&(&b.file, &b.function)));
    out.dedup_by(|a, b| a.file == b.file && a.function == b.function);
    Ok(out)
}

/// A markdown table of [`reached`].
pub fn summarize(export_json: &[u8]) -> anyhow::Result<String> {
    let mut s = String::from(
        "| file | function | calls | regions reached |\n| --- | --- | ---: | ---: |\n",
    );
    for r in reached(export_json)? {
        s.push_str(&format!(
            "| {} | `{}` | {} | {}/{} |\n",
            r.file, r.function, r.calls, r.regions_hit, r.regions
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every engine file counts, not only lib.rs: the step functions live
    /// in the files named after fs/btrfs's.
    #[test]
    fn reached_covers_every_engine_file_and_the_oracles() {
        let f = |file: &str, name: &str, count: u64, regions: &str| {
            format!(
                r#"{{"filenames":["{file}"],"name":"{name}","count":{count},"regions":{regions}}}"#
            )
        };
        let json = format!(
            r#"{{"data":[{{"functions":[{},{},{},{}]}}]}}"#,
            f(
                "/r/engine/src/transaction.rs",
                "_RNvNtCs1_13bgfuzz_engine11transaction24btrfs_commit_transaction",
                7,
                "[[1,1,2,2,7,0,0,0],[3,1,4,2,0,0,0,0]]"
            ),
            f(
                "/r/engine/src/lib.rs",
                "_RNvCs1_13bgfuzz_engine4step",
                9,
                "[[1,1,2,2,9,0,0,0]]"
            ),
            f(
                "/r/src/oracles.rs",
                "_RNvNtCs1_6bgfuzz7oracles14check_deadlock",
                3,
                "[[1,1,2,2,3,0,0,0]]"
            ),
            f(
                "/home/x/.cargo/registry/src/foo/lib.rs",
                "_RNvCs1_3foo3bar",
                1,
                "[]"
            ),
        );
        let r = reached(json.as_bytes()).unwrap();
        let rows: Vec<(&str, &str, u64, usize, usize)> = r
            .iter()
            .map(|r| {
                (
                    r.file.as_str(),
                    r.function.as_str(),
                    r.calls,
                    r.regions_hit,
                    r.regions,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("engine/src/lib.rs", "step", 9, 1, 1),
                (
                    "engine/src/transaction.rs",
                    "btrfs_commit_transaction",
                    7,
                    1,
                    2
                ),
                ("src/oracles.rs", "check_deadlock", 3, 1, 1),
            ]
        );
    }
}
