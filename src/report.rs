//! What a person reads: the annotated script, a timeline with one column per
//! task, the violation in the kernel's words, and JSON for machines.

use std::fmt::Write as _;

use bgfuzz_engine::{task_name, AbortInfo, Errno, MAX_TASKS};
use serde::Serialize;

use crate::run::{RanStep, Run};
use crate::scenario::{step_text, Action};
use bgfuzz_engine::{fmt_size, Done, Event, StepOutcome};

/// The normalized script, each step annotated with what it did.
pub fn annotated_script(run: &Run) -> String {
    let notes: Vec<String> = run.steps.iter().map(|s| describe(run, s)).collect();
    run.scenario.print_with(Some(&notes))
}

/// One column per task that took a step, one row per step.
pub fn timeline(run: &Run) -> String {
    let mut used = [false; MAX_TASKS];
    for s in &run.steps {
        used[s.step.task] = true;
    }
    let cols: Vec<usize> = (0..MAX_TASKS).filter(|&t| used[t]).collect();
    if cols.is_empty() {
        return "(no steps)\n".to_string();
    }
    let cells: Vec<String> = run.steps.iter().map(timeline_cell).collect();
    // Wide enough for the widest cell, so columns stay aligned.
    let w = cells
        .iter()
        .map(|c| c.chars().count() + 1)
        .max()
        .unwrap_or(0)
        .max(26);
    let mut out = String::new();
    let _ = write!(out, "{:>5} ", "step");
    for &t in &cols {
        let _ = write!(out, "| {:<w$}", task_name(t));
    }
    out.push('\n');
    let _ = writeln!(out, "{}", "-".repeat(6 + cols.len() * (w + 2)));
    for (i, (s, cell)) in run.steps.iter().zip(&cells).enumerate() {
        let _ = write!(out, "{:>5} ", i + 1);
        for &t in &cols {
            let text = if t == s.step.task { cell.as_str() } else { "" };
            let _ = write!(out, "| {text:<w$}");
        }
        out.push('\n');
    }
    out
}

/// What a step shows in its task's column.
fn timeline_cell(s: &RanStep) -> String {
    let cell = match s.step.action {
        Action::Begin(op) => op.to_string(),
        Action::Continue => format!("  .. {}", s.op),
    };
    let mark = match s.outcome {
        bgfuzz_engine::StepOutcome::Blocked(_) => " [blocked]",
        bgfuzz_engine::StepOutcome::Finished(Err(_)) => " [err]",
        _ => "",
    };
    let abort = s
        .events
        .iter()
        .any(|e| matches!(e, bgfuzz_engine::Event::Abort(_)));
    format!("{cell}{mark}{}", if abort { " ABORT" } else { "" })
}

/// The v4.1 source file of a function the engine names in an abort's
/// stack: `btrfs_abort_transaction` is a macro, so the kernel's WARNING
/// names the aborting function's own file.
pub fn source_file(func: &str) -> &'static str {
    match func {
        "__btrfs_end_transaction"
        | "btrfs_end_transaction"
        | "btrfs_commit_transaction"
        | "commit_cowonly_roots"
        | "cleanup_transaction"
        | "start_transaction"
        | "switch_commit_roots" => "transaction.c",
        "btrfs_remove_chunk" | "btrfs_alloc_chunk" | "__btrfs_alloc_chunk" => "volumes.c",
        // The block-group and allocator functions.
        _ => "extent-tree.c",
    }
}

fn errno_text(e: Errno) -> &'static str {
    // The strings of `btrfs_decode_error`.
    match e {
        Errno::ENOENT => "No such entry",
        Errno::EIO => "IO failure",
        Errno::ENOMEM => "Out of memory",
        Errno::ENOSPC => "No space left",
        Errno::EROFS => "Readonly filesystem",
        Errno::EINVAL => "Invalid argument",
        Errno::EINPROGRESS => "Operation now in progress",
    }
}

/// `btrfs_abort_transaction` as dmesg shows it.
pub fn kernel_abort(a: &AbortInfo) -> String {
    let func = a.stack.last().copied().unwrap_or("?");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "BTRFS: Transaction aborted (error -{})",
        a.error.errno.code()
    );
    let _ = writeln!(
        out,
        "WARNING: at fs/btrfs/{} in {func} (task {}, transaction {})",
        source_file(func),
        task_name(a.task),
        a.transid
    );
    let _ = writeln!(out, "Call Trace:");
    for f in a.stack.iter().rev() {
        let _ = writeln!(out, " {f}");
    }
    let _ = writeln!(
        out,
        "BTRFS: error (device bgfuzz) in {func}: errno=-{} {}",
        a.error.errno.code(),
        errno_text(a.error.errno)
    );
    let _ = writeln!(out, "BTRFS info (device bgfuzz): forced readonly");
    let _ = writeln!(
        out,
        "(error {}; the commit was {} the critical section)",
        a.error.origin,
        if a.in_critical { "inside" } else { "outside" }
    );
    out
}

/// The violation section, or `None` for a clean run.
pub fn violation_report(run: &Run) -> Option<String> {
    let v = run.violation.as_ref()?;
    let mut out = String::new();
    let where_ = match run.steps.get(v.step) {
        Some(s) => format!("step {} (`{}`)", v.step + 1, step_text(&s.step)),
        None => "the end of the run".to_string(),
    };
    let _ = writeln!(
        out,
        "VIOLATION {} at {where_}, variant {}",
        v.finding.kind, run.variant
    );
    let _ = writeln!(out, "{}", v.finding.message);
    if let Some(a) = &v.finding.abort {
        out.push('\n');
        out.push_str(&kernel_abort(a));
    }
    Some(out)
}

/// The full human report of `bgfuzz repro`.
pub fn full(run: &Run) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# variant {}: {}",
        run.variant,
        run.variant.description()
    );
    if run.patches != run.variant.patches() {
        let _ = writeln!(
            out,
            "# patches: {} (instead of the variant's {})",
            run.patches,
            run.variant.patches()
        );
    }
    out.push_str(&annotated_script(run));
    out.push('\n');
    out.push_str(&timeline(run));
    out.push('\n');
    match violation_report(run) {
        Some(v) => {
            out.push_str(&v);
            if let Some(line) = crate::attribution::report_line(run) {
                let _ = writeln!(out, "\n{line}");
            }
        }
        None => {
            let _ = writeln!(out, "no violation ({} steps)", run.steps.len());
        }
    }
    out
}

#[derive(Serialize)]
pub struct JsonViolation {
    pub kind: String,
    /// 1-based step number; `steps + 1` for a violation found at the end.
    pub step: usize,
    pub message: String,
    /// The missing fixes that, each applied alone, remove it.
    pub removed_by: Vec<crate::attribution::Fix>,
}

#[derive(Serialize)]
pub struct JsonRun {
    pub variant: String,
    pub steps: usize,
    pub violation: Option<JsonViolation>,
}

pub fn json(run: &Run) -> JsonRun {
    JsonRun {
        variant: run.variant.name().to_string(),
        steps: run.steps.len(),
        violation: run.violation.as_ref().map(|v| JsonViolation {
            kind: v.finding.kind.name().to_string(),
            step: v.step + 1,
            message: v.finding.message.clone(),
            removed_by: crate::attribution::fixes(&crate::attribution::attribute_run(run)),
        }),
    }
}

/// A short description of what a step did, for the annotated script.
pub fn describe(run: &Run, s: &RanStep) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in &s.events {
        let bg = |id| run.engine.bg(id).name();
        match e {
            Event::TransStarted { transid } => parts.push(format!("transaction {transid} starts")),
            Event::BgCreated { bg: id, task } => parts.push(format!(
                "phase 1: {} created, on {}.new_bgs, no item yet",
                bg(*id),
                task_name(*task)
            )),
            Event::BgItemInserted { bg: id } => {
                parts.push(format!("phase 2: {} item inserted", bg(*id)))
            }
            Event::BgDirtied { bg: id } => parts.push(format!("{} onto dirty_bgs", bg(*id))),
            Event::BgWritten { bg: id, .. } => {
                parts.push(format!("write_one_cache_group: {}", bg(*id)))
            }
            Event::BgRequeued { bg: id } => parts.push(format!(
                "{}: -ENOENT, re-queued for the critical section",
                bg(*id)
            )),
            Event::BgRemoved { bg: id } => parts.push(format!("{} removed", bg(*id))),
            Event::Abort(a) => parts.push(format!(
                "ABORT transaction {} (error -{})",
                a.transid,
                a.error.errno.code()
            )),
            Event::RootsSwitched { transid } => {
                parts.push(format!("transaction {transid}: commit roots switched"))
            }
            Event::SuperWritten { transid } => {
                parts.push(format!("superblock written, generation {transid}"))
            }
            Event::TransCleanedUp { transid } => {
                parts.push(format!("cleanup_transaction {transid}"))
            }
            Event::RefUnderflow { bg: id, site } => {
                parts.push(format!("{}: ref below zero in {site}", bg(*id)))
            }
            Event::UseAfterFree { bg: id, site } => {
                parts.push(format!("{}: use after free in {site}", bg(*id)))
            }
            Event::CacheIoStarted { bg: id } => {
                parts.push(format!("{}: cache IO started, onto io_bgs", bg(*id)))
            }
            Event::CacheIoDone { bg: id } => parts.push(format!("{}: cache IO done", bg(*id))),
            Event::BgWriteSkipped { bg: id } => parts.push(format!(
                "{}: used == commit_used, item update skipped",
                bg(*id)
            )),
            Event::BgKeptForSpace { bg: id } => parts.push(format!(
                "{}: set_block_group_ro refused (min_allocable_bytes), kept",
                bg(*id)
            )),
            Event::SystemChunkForced { bg: id } => {
                parts.push(format!("check_system_chunk: {} created first", bg(*id)))
            }
            Event::KernelAssert { site, what } => {
                parts.push(format!("KERNEL ASSERT in {site}: {what}"))
            }
            Event::NullSpaceInfo { bg: id, site } => parts.push(format!(
                "NULL POINTER: {site} dereferences {}'s ->space_info, not set yet",
                bg(*id)
            )),
        }
    }
    match s.outcome {
        StepOutcome::Yielded => {}
        StepOutcome::Blocked(w) => parts.push(format!("blocked: {w}")),
        StepOutcome::Finished(Ok(d)) => match d {
            Done::Handle { transid } => parts.push(format!("handle on transaction {transid}")),
            Done::Extent { id, bg, .. } => {
                parts.push(format!("-> {id} in {}", run.engine.bg(bg).name()))
            }
            Done::Committed { transid } => parts.push(format!("transaction {transid} committed")),
            Done::Deleted { count } => parts.push(format!("{count} bg(s) deleted")),
            Done::IoDone { bg } => parts.push(format!(
                "endio: {}'s cache IO complete",
                run.engine.bg(bg).name()
            )),
            Done::NoIo => parts.push("no cache IO in flight".to_string()),
            Done::Relocated { start } => {
                parts.push(format!("chunk {} relocated and removed", fmt_size(start)))
            }
            Done::NoChunk => parts.push("no chunk there: nothing to relocate".to_string()),
            Done::Trimmed => parts.push("trimmed every bg in the cache tree".to_string()),
            Done::Freed { .. } | Done::RanRefs { .. } | Done::Ended => {}
        },
        StepOutcome::Finished(Err(e)) => parts.push(format!("returns -{}", e.errno)),
    }
    if s.drain {
        parts.insert(0, "(drain)".to_string());
    }
    parts.join("; ")
}
