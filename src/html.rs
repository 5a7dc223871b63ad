//! `repro --html`: a picture of a run as one self-contained HTML page
//! (inline CSS, JS and data; nothing loaded from anywhere), and the
//! `index.html` of a campaign.
//!
//! Time runs down the page, one row per step, as in the race diagrams of
//! kernel commit messages. Lanes, left to right: each transaction's state
//! as bands; each task's operations (a box from the step that began one to
//! the step that finished it, hatched while blocked, a bar while it holds a
//! handle); each block group as tracks (see [`BG_TRACKS`]); what the step
//! did. The lanes are drawn here, in Rust, so the page reads without JS;
//! the page's script only adds the hover panel that shows the engine's
//! state after a step (from the embedded [`Snapshot`]s).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::campaign::{CampaignReport, CrashStatus};
use crate::report::{annotated_script, violation_report};
use crate::run::{Mode, Run};
use crate::scenario::Scenario;
use crate::snapshot::{capture_last, BgState, Snapshot};

/// A page shows at most this many steps: the last ones, where a violation
/// is (a run stops at its first). `--json --events` has them all.
pub const MAX_ROWS: usize = 2000;

const CSS: &str = include_str!("html/page.css");
const JS: &str = include_str!("html/page.js");
/// Grid rows above the first step: lane titles and track letters
/// (`--head1`, `--head2` in page.css; page.js counts on 2).
const HEADER_ROWS: usize = 2;

/// One track of a block group's lane: its header letter, what it shows,
/// and the cell for a state (`None`: empty). Adding state to the picture
/// is one entry here.
pub struct Track {
    pub letter: &'static str,
    pub title: &'static str,
    pub cell: fn(&BgState, &Snapshot) -> Option<Cell>,
}

/// A lane cell; equal keys on consecutive rows merge into one band.
#[derive(Clone, PartialEq, Eq)]
pub struct Cell {
    pub key: String,
    pub class: &'static str,
    pub label: String,
    pub title: String,
}

fn cell(key: impl Into<String>, class: &'static str, label: &str, title: String) -> Option<Cell> {
    Some(Cell {
        key: key.into(),
        class,
        label: label.to_string(),
        title,
    })
}

/// The block group lanes' tracks.
pub const BG_TRACKS: &[Track] = &[
    Track {
        letter: "T",
        title: "in fs_info->block_group_cache_tree (hatched: removed from it; F: freed)",
        cell: |b, _| {
            if b.in_cache_tree {
                cell("t", "tr-tree", "", format!("{} in the cache tree", b.name))
            } else if b.freed {
                cell("f", "tr-freed", "F", format!("{} freed", b.name))
            } else if b.removed {
                cell("r", "tr-removed", "", format!("{} removed", b.name))
            } else {
                None
            }
        },
    },
    Track {
        letter: "L",
        title: "bg_list: on a handle's new_bgs (the task's letter: phase 2 not run) or on unused_bgs (U)",
        cell: |b, _| match (b.new_bgs, b.unused) {
            (Some(t), _) => cell(
                format!("n{t}"),
                "tr-new",
                &t.to_string(),
                format!("{} on {t}'s new_bgs: its item is not inserted yet", b.name),
            ),
            (None, true) => cell("u", "tr-unused", "U", format!("{} on unused_bgs", b.name)),
            _ => None,
        },
    },
    Track {
        letter: "I",
        title: "its block group item: I in the running extent tree, C also committed, c committed only; ! none while on a dirty list",
        cell: |b, _| match (b.item, b.item_committed) {
            (true, true) => cell("C", "tr-item-c", "C", format!("{}: item inserted and committed", b.name)),
            (true, false) => cell("I", "tr-item", "I", format!("{}: item inserted (not yet committed)", b.name)),
            (false, true) => cell("c", "tr-item-old", "c", format!("{}: item only in the committed tree", b.name)),
            // The state the ff1f8250 race needs: queued for writeout with
            // no item for write_one_cache_group to find.
            _ if b.dirty_list.is_some() && !b.removed => cell(
                "!",
                "tr-noitem",
                "!",
                format!("{}: on {} with no block group item: write_one_cache_group would get -ENOENT", b.name, b.dirty_list.as_deref().unwrap_or("")),
            ),
            _ => None,
        },
    },
    Track {
        letter: "D",
        title: "dirty_list: D on cur_trans->dirty_bgs, S spliced onto btrfs_start_dirty_block_groups' list, IO on io_bgs",
        cell: |b, _| {
            let t = b.dirty_transid.map(|t| format!(" of transaction {t}")).unwrap_or_default();
            match (b.dirty_list.as_deref(), b.on_io_list) {
                (_, true) => cell("io", "tr-io", "IO", format!("{} on io_bgs{t}", b.name)),
                (Some("dirty_bgs"), _) => cell(format!("d{t}"), "tr-dirty", "D", format!("{} on dirty_bgs{t}", b.name)),
                (Some(l), _) => cell(format!("s{t}"), "tr-spliced", "S", format!("{} on {l}{t}: btrfs_start_dirty_block_groups' local list", b.name)),
                (None, false) => None,
            }
        },
    },
    Track {
        letter: "W",
        title: "write_one_cache_group wrote its item at this step (W: in the critical section, w: outside)",
        cell: |b, s| {
            if b.written_step != Some(s.step) {
                return None;
            }
            let critical = s
                .events
                .iter()
                .any(|e| e.kind == "bg_written" && e.bg.as_deref() == Some(&b.name) && e.critical == Some(true));
            let (label, class, when) = if critical {
                ("W", "tr-written-c", "inside")
            } else {
                ("w", "tr-written", "outside")
            };
            cell(
                format!("w{}", s.step),
                class,
                label,
                format!("write_one_cache_group wrote {} {when} the critical section", b.name),
            )
        },
    },
    Track {
        letter: "refs",
        title: "refs (red: not what its list memberships call for)",
        cell: |b, _| {
            let bad = b.refs != b.expected_refs;
            cell(
                format!("{}/{}", b.refs, b.expected_refs),
                if bad { "refs bad" } else { "refs" },
                &b.refs.to_string(),
                if bad {
                    format!("{}: refs {}, its lists call for {}", b.name, b.refs, b.expected_refs)
                } else {
                    format!("{}: refs {}", b.name, b.refs)
                },
            )
        },
    },
];

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON that is safe inside `<script>`: no `<`, `>` or `&` survives.
fn script_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v)
        .expect("snapshots serialize")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// The grid being drawn: lanes are grid columns, steps grid rows.
struct Grid {
    out: String,
    /// Index into the snapshots of the first row shown.
    first: usize,
}

impl Grid {
    /// The grid row (1-based line) of snapshot `i`.
    fn row(&self, i: usize) -> usize {
        HEADER_ROWS + 1 + i - self.first
    }

    fn item(&mut self, rows: (usize, usize), col: usize, class: &str, title: &str, label: &str) {
        let _ = write!(
            self.out,
            "<div class=\"{class}\" style=\"grid-area:{}/{col}/{}/{}\"",
            rows.0,
            rows.1,
            col + 1
        );
        if !title.is_empty() {
            let _ = write!(self.out, " title=\"{}\"", esc(title));
        }
        let _ = write!(self.out, ">{}</div>", esc(label));
    }

    /// Bands in column `col`: consecutive equal cells merge.
    fn bands(&mut self, snaps: &[Snapshot], col: usize, f: impl Fn(&Snapshot) -> Option<Cell>) {
        let mut open: Option<(usize, Cell)> = None;
        for i in self.first..=snaps.len() {
            let c = snaps.get(i).and_then(&f);
            if let Some((start, o)) = &open {
                if c.as_ref().is_some_and(|c| c.key == o.key) {
                    continue;
                }
                let (start, o) = (*start, o.clone());
                self.item(
                    (self.row(start), self.row(i)),
                    col,
                    o.class,
                    &o.title,
                    &o.label,
                );
                open = None;
            }
            if let Some(c) = c {
                open = Some((i, c));
            }
        }
    }
}

/// The page for a run: `snaps` as [`capture`] or [`capture_last`] made
/// them (consecutive steps up to the last); `source` names the input (a
/// file name, shown in the title).
pub fn page(source: &str, run: &Run, snaps: &[Snapshot]) -> String {
    // Indices below are into `snaps`; `base` is the step of `snaps[0]`.
    let base = snaps.first().map_or(0, |s| s.step);
    let first = snaps.len().saturating_sub(MAX_ROWS);
    let shown = &snaps[first..];
    let first_step = shown.first().map_or(0, |s| s.step);
    let viol = run.violation.as_ref();
    // The row of the violation: its step's snapshot, or one row past the
    // last for a violation found at the end.
    let viol_snap = viol.and_then(|v| (v.step + 1).checked_sub(base));
    let end_row = viol.is_some_and(|v| v.step >= run.steps.len());

    let mut transids: Vec<u64> = shown
        .iter()
        .flat_map(|s| s.state.transactions.iter().map(|t| t.transid))
        .collect();
    transids.sort_unstable();
    transids.dedup();
    let mut tasks: Vec<char> = shown.iter().filter_map(|s| s.task).collect();
    tasks.sort_unstable();
    tasks.dedup();
    // Block groups by arena index: those whose lane changes over the rows
    // shown first (the race is there), then the still ones; each group in
    // creation order.
    let all_bgs: &[BgState] = snaps.last().map_or(&[], |s| &s.state.block_groups);
    let lane_keys = |b: usize, s: &Snapshot| -> Vec<Option<String>> {
        BG_TRACKS
            .iter()
            .map(|t| {
                s.state
                    .block_groups
                    .get(b)
                    .and_then(|bg| (t.cell)(bg, s))
                    .map(|c| c.key)
            })
            .collect()
    };
    let (changing, still): (Vec<usize>, Vec<usize>) = (0..all_bgs.len()).partition(|&b| {
        let k0 = lane_keys(b, &shown[0]);
        shown.iter().any(|s| lane_keys(b, s) != k0)
    });
    // Among the changing ones, those the run created (mkfs's are
    // generation 1) come first: a race is usually about a new bg.
    let (mut bg_order, made_by_mkfs): (Vec<usize>, Vec<usize>) = changing
        .into_iter()
        .partition(|&b| all_bgs[b].created_transid > 1);
    bg_order.extend(made_by_mkfs);
    bg_order.extend(still);
    let bgs: Vec<(usize, String, String)> = bg_order
        .into_iter()
        .map(|b| {
            let bg = &all_bgs[b];
            (
                b,
                bg.name.clone(),
                format!("{} {}", bg.kind, bgfuzz_engine::fmt_size(bg.len)),
            )
        })
        .collect();

    // Columns: step, transactions, tasks, bg tracks, what.
    let mut cols = vec!["var(--step-w)".to_string()];
    cols.extend(transids.iter().map(|_| "var(--trans-w)".to_string()));
    cols.extend(tasks.iter().map(|_| "var(--task-w)".to_string()));
    for _ in &bgs {
        for t in BG_TRACKS {
            cols.push(if t.letter == "refs" {
                "var(--refs-w)".to_string()
            } else {
                "var(--track-w)".to_string()
            });
        }
    }
    cols.push("minmax(var(--what-w),1fr)".to_string());
    let trans_col = 2;
    let task_col = trans_col + transids.len();
    let bg_col = task_col + tasks.len();
    let what_col = bg_col + bgs.len() * BG_TRACKS.len();
    let nrows = shown.len() + usize::from(end_row);

    let mut g = Grid {
        out: String::new(),
        first,
    };
    let last_line = HEADER_ROWS + 1 + nrows;
    // Row backgrounds, under everything.
    for (k, s) in shown.iter().enumerate() {
        let i = first + k;
        let mut class = if k % 2 == 1 { "bg odd" } else { "bg" }.to_string();
        if viol_snap == Some(i) {
            class.push_str(" viol");
        }
        let r = g.row(i);
        let _ = write!(
            g.out,
            "<div class=\"{class}\" data-step=\"{}\" style=\"grid-area:{r}/1/{}/-1\"></div>",
            s.step,
            r + 1
        );
    }
    if end_row {
        let r = g.row(snaps.len());
        let _ = write!(
            g.out,
            "<div class=\"bg viol\" data-step=\"end\" style=\"grid-area:{r}/1/{}/-1\"></div>",
            r + 1
        );
    }
    // Lane separators.
    let mut seps = vec![trans_col, task_col];
    seps.extend((0..bgs.len()).map(|b| bg_col + b * BG_TRACKS.len()));
    seps.push(what_col);
    seps.extend((1..transids.len()).map(|k| trans_col + k));
    seps.extend((1..tasks.len()).map(|k| task_col + k));
    for c in seps {
        let _ = write!(
            g.out,
            "<div class=\"sep\" style=\"grid-area:1/{c}/{last_line}/{}\"></div>",
            c + 1
        );
    }

    // Headers.
    g.item((1, 3), 1, "h h-step", "", "step");
    for (k, t) in transids.iter().enumerate() {
        g.item(
            (1, 3),
            trans_col + k,
            "h",
            "the transaction's state (TRANS_STATE_*)",
            &format!("transaction {t}"),
        );
    }
    for (k, t) in tasks.iter().enumerate() {
        g.item(
            (1, 3),
            task_col + k,
            "h",
            "the task's operations; hatched: blocked; bar on the left: it holds a handle",
            &format!("task {t}"),
        );
    }
    for (k, (_, name, what)) in bgs.iter().enumerate() {
        let c = bg_col + k * BG_TRACKS.len();
        let _ = write!(
            g.out,
            "<div class=\"h h-bg\" style=\"grid-area:1/{c}/2/{}\">{}<small>{}</small></div>",
            c + BG_TRACKS.len(),
            esc(name),
            esc(what)
        );
        for (j, t) in BG_TRACKS.iter().enumerate() {
            g.item((2, 3), c + j, "h2", t.title, t.letter);
        }
    }
    g.item((1, 3), what_col, "h h-what", "", "what the step did");

    // Step numbers and script lines.
    for (k, s) in shown.iter().enumerate() {
        let i = first + k;
        let r = g.row(i);
        let mut class = "step".to_string();
        if s.drain {
            class.push_str(" drain");
        }
        let mark = if viol_snap == Some(i) {
            "\u{26a0} "
        } else {
            ""
        };
        let text = if s.step == 0 {
            "mkfs".to_string()
        } else {
            s.text.clone()
        };
        let title = match (s.step, s.drain) {
            (0, _) => "the filesystem as mkfs made it".to_string(),
            (_, true) => "taken by the drain after the script's last line".to_string(),
            _ => format!("script line {}", s.line),
        };
        let _ = write!(
            g.out,
            "<div class=\"{class}\" style=\"grid-area:{r}/1/{}/2\" title=\"{}\"><span class=\"n\">{mark}{}</span> {}</div>",
            r + 1,
            esc(&title),
            s.step,
            esc(&text)
        );
        let what_class = if viol_snap == Some(i) {
            "what vwhat"
        } else {
            "what"
        };
        let what = match viol {
            Some(v) if viol_snap == Some(i) && !end_row => {
                format!("VIOLATION {}: {}", v.finding.kind, s.what)
            }
            _ => s.what.clone(),
        };
        g.item((r, r + 1), what_col, what_class, &s.what, &what);
    }
    if let (true, Some(v)) = (end_row, viol) {
        let r = g.row(snaps.len());
        g.item((r, r + 1), 1, "step", "", "\u{26a0} end of run");
        g.item(
            (r, r + 1),
            what_col,
            "what vwhat",
            &v.finding.message,
            &format!("VIOLATION {} at the end of the run", v.finding.kind),
        );
    }

    // Transactions.
    for (k, &tid) in transids.iter().enumerate() {
        g.bands(snaps, trans_col + k, |s| {
            let t = s.state.transactions.iter().find(|t| t.transid == tid)?;
            let mut label = t.state.to_string();
            let mut key = label.clone();
            let class = match t.state {
                "RUNNING" => "ts ts-running",
                "COMMIT_START" => "ts ts-start",
                "COMMIT_DOING" if t.in_critical => "ts ts-doing ts-crit",
                "COMMIT_DOING" => "ts ts-doing",
                "UNBLOCKED" => "ts ts-unblocked",
                _ => "ts ts-completed",
            };
            if t.in_critical {
                label.push_str(" \u{b7} critical");
                key.push('c');
            }
            let class = if t.aborted.is_some() {
                key.push('a');
                label.insert_str(0, "\u{2717} ");
                match class {
                    "ts ts-running" => "ts ts-running ts-aborted",
                    "ts ts-start" => "ts ts-start ts-aborted",
                    "ts ts-doing" => "ts ts-doing ts-aborted",
                    "ts ts-doing ts-crit" => "ts ts-doing ts-crit ts-aborted",
                    "ts ts-unblocked" => "ts ts-unblocked ts-aborted",
                    _ => "ts ts-completed ts-aborted",
                }
            } else {
                class
            };
            let mut title = format!(
                "transaction {tid}: TRANS_STATE_{}, num_writers {}, num_extwriters {}",
                t.state, t.num_writers, t.num_extwriters
            );
            if let Some(c) = t.committer {
                let _ = write!(title, ", committer {c}");
            }
            if t.in_critical {
                title.push_str(", in the commit's critical section");
            }
            if let Some(a) = &t.aborted {
                let _ = write!(title, ", aborted {a}");
            }
            Some(Cell {
                key,
                class,
                label,
                title,
            })
        });
    }

    // Tasks: handle bars, operation boxes, blocked hatching, step labels.
    for (k, &t) in tasks.iter().enumerate() {
        let col = task_col + k;
        g.bands(snaps, col, |s| {
            let h = s
                .state
                .tasks
                .iter()
                .find(|x| x.task == t)?
                .handle
                .as_ref()?;
            Some(Cell {
                key: format!("{}{}", h.transid, h.ty),
                class: "handle",
                label: String::new(),
                title: format!("{t} holds a handle on transaction {} ({})", h.transid, h.ty),
            })
        });
        // An operation instance is numbered by the row that began it (or
        // the first row, for one begun before it), with its name.
        let mut inst: Vec<Option<(usize, String)>> = vec![None; snaps.len()];
        let mut cur: Option<(usize, String)> = None;
        for (i, s) in snaps.iter().enumerate() {
            let mine = s.task == Some(t);
            let op = s
                .state
                .tasks
                .iter()
                .find(|x| x.task == t)
                .and_then(|x| x.op.clone());
            if mine && s.begins {
                cur = Some((i, s.op.clone().unwrap_or_default()));
            } else if cur.is_none() {
                cur = op.clone().map(|o| (i, o));
            }
            inst[i] = if mine || op.is_some() {
                cur.clone()
            } else {
                None
            };
            if op.is_none() {
                cur = None;
            }
        }
        g.bands(snaps, col, |s| {
            let (began, op) = inst[s.step - base].clone()?;
            let st = s.state.tasks.iter().find(|x| x.task == t);
            match st.and_then(|x| x.waiting.clone()) {
                Some(w) => Some(Cell {
                    key: format!("{began}b"),
                    class: "op blocked",
                    label: format!("blocked: {w}"),
                    title: format!("{t}: {op}: blocked, {w}"),
                }),
                None => Some(Cell {
                    key: format!("{began}"),
                    class: "op",
                    label: String::new(),
                    title: format!("{t}: {op}"),
                }),
            }
        });
        for (kk, s) in shown.iter().enumerate() {
            if s.task != Some(t) {
                continue;
            }
            let i = first + kk;
            let r = g.row(i);
            let op = s.op.clone().unwrap_or_default();
            // A continued step says what it did; the step column names it.
            let head = match (s.begins, s.what.split("; ").find(|w| *w != "(drain)")) {
                (true, _) => op.clone(),
                (false, Some(w)) if !w.is_empty() && !w.starts_with("blocked") => {
                    format!("\u{21b3} {w}")
                }
                _ => format!("\u{21b3} {op}"),
            };
            let (tail, class) = match s.outcome.as_str() {
                "blocked" => (" \u{2014} blocked".to_string(), "lbl l-blocked"),
                "error" => (
                    format!(" \u{2717} {}", s.detail.clone().unwrap_or_default()),
                    "lbl l-err",
                ),
                "finished" => (" \u{2713}".to_string(), "lbl l-done"),
                _ => (String::new(), "lbl"),
            };
            let abort = s.events.iter().any(|e| e.kind == "abort");
            let class = if abort { "lbl l-abort" } else { class };
            let label = format!("{head}{tail}{}", if abort { " ABORT" } else { "" });
            let title = format!("{}: {}", s.text, s.what);
            let _ = write!(
                g.out,
                "<div class=\"{class}{}\" style=\"grid-area:{r}/{col}/{}/{}\" title=\"{}\">{}</div>",
                if s.begins { " l-begin" } else { "" },
                r + 1,
                col + 1,
                esc(&title),
                esc(&label)
            );
        }
    }

    // Block groups.
    for (k, &(b, _, _)) in bgs.iter().enumerate() {
        for (j, track) in BG_TRACKS.iter().enumerate() {
            let col = bg_col + k * BG_TRACKS.len() + j;
            g.bands(snaps, col, |s| {
                (track.cell)(s.state.block_groups.get(b)?, s)
            });
        }
    }

    // The page.
    let title = format!("bgfuzz: {source} under {}", run.variant);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title>\
         <script>{ERROR_TRAP}</script><style>{CSS}</style></head>\n\
         <body data-first=\"{first_step}\" data-focus=\"{}\" data-rows=\"{}\">",
        esc(&title),
        viol_snap
            .map(|i| i.min(snaps.len().saturating_sub(1)))
            .unwrap_or(snaps.len().saturating_sub(1))
            + base,
        nrows
    );
    let _ = write!(out, "<header><h1>{}</h1><p>", esc(&title));
    let _ = write!(
        out,
        "{} \u{2014} {}; {} step(s), tasks {}, {} block group(s), transactions {}.",
        esc(run.variant.name()),
        esc(run.variant.description()),
        run.steps.len(),
        esc(&tasks
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" ")),
        bgs.len(),
        esc(&transids
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" "))
    );
    if first_step > 1 {
        let _ = write!(
            out,
            " <b>Steps 1 to {} are not drawn</b> (a page draws at most {MAX_ROWS}); <code>repro --json --events</code> has every step.",
            first_step - 1
        );
    }
    out.push_str("</p></header>\n");
    match (viol, violation_report(run)) {
        (Some(v), Some(text)) => {
            // The page's script pins `#sN`; at the end, the last step.
            let anchor = format!("s{}", v.step.min(run.steps.len().saturating_sub(1)) + 1);
            let _ = writeln!(
                out,
                "<section class=\"verdict bad\"><h2>VIOLATION {} <a href=\"#{anchor}\">at {}</a></h2><pre>{}</pre></section>",
                esc(v.finding.kind.name()),
                if end_row {
                    "the end of the run".to_string()
                } else {
                    format!("step {}", v.step + 1)
                },
                esc(&text)
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "<section class=\"verdict good\"><h2>No violation in {} step(s)</h2></section>",
                run.steps.len()
            );
        }
    }
    out.push_str(LEGEND);
    let _ = writeln!(
        out,
        "<main><div id=\"chart\"><div id=\"grid\" style=\"grid-template-columns:{};grid-template-rows:var(--head1) var(--head2) repeat({nrows},var(--row))\">{}<div id=\"cursor\" style=\"grid-area:{}/1/{}/-1\"></div></div></div>\
         <aside id=\"state\"><p>Hover a step to see the engine's state after it; click to pin.</p></aside></main>",
        cols.join(" "),
        g.out,
        HEADER_ROWS + 1,
        HEADER_ROWS + 2
    );
    let _ = writeln!(
        out,
        "<details><summary>The script as it ran (normalized, annotated)</summary><pre>{}</pre></details>",
        esc(&annotated_script(run))
    );
    let _ = writeln!(
        out,
        "<script type=\"application/json\" id=\"snapshots\">{}</script>\n<script>{JS}</script>\n</body></html>",
        script_json(&panel_snapshots(shown))
    );
    out
}

/// The hover panel lists at most this many extents and delayed refs per
/// step (their counts are given): a page of 2000 steps stays small.
pub const PANEL_LISTED: usize = 16;

fn panel_snapshots(shown: &[Snapshot]) -> Vec<Snapshot> {
    shown
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.state.extents.truncate(PANEL_LISTED);
            for t in &mut s.state.transactions {
                t.delayed_refs.truncate(PANEL_LISTED);
            }
            s
        })
        .collect()
}

/// Runs before anything else: records script errors and failed loads on
/// `<html data-errors>`, which the browser test reads.
const ERROR_TRAP: &str = "window.addEventListener('error',function(e){var d=document.documentElement;d.setAttribute('data-errors',(d.getAttribute('data-errors')||'')+(e.message||('failed to load '+((e.target&&(e.target.src||e.target.href))||'?')))+'\\n');},true);";

const LEGEND: &str = "<section class=\"legend\">\
<span><b>Transaction</b> <i class=\"sw ts-running\">RUNNING</i><i class=\"sw ts-start\">COMMIT_START</i><i class=\"sw ts-doing\">COMMIT_DOING</i><i class=\"sw ts-doing ts-crit\">critical</i><i class=\"sw ts-unblocked\">UNBLOCKED</i><i class=\"sw ts-completed\">COMPLETED</i><i class=\"sw ts-aborted\">aborted</i></span>\
<span><b>Task</b> <i class=\"sw op\">operation</i><i class=\"sw op blocked\">blocked</i><i class=\"sw handle-sw\">&nbsp;</i>holds a handle; \u{2713} done, \u{2717} errno</span>\
<span><b>Block group</b> <i class=\"sw tr-tree\">T</i>cache tree <i class=\"sw tr-new\">A</i>on A's new_bgs <i class=\"sw tr-item\">I</i>item <i class=\"sw tr-item-c\">C</i>committed <i class=\"sw tr-noitem\">!</i>dirty, no item <i class=\"sw tr-dirty\">D</i>dirty_bgs <i class=\"sw tr-spliced\">S</i>start_dirty's list <i class=\"sw tr-io\">IO</i>io_bgs <i class=\"sw tr-written\">w</i>written <i class=\"sw refs bad\">2</i>refs off</span>\
</section>\n";

/// Runs `scenario` and draws it: the page and the run.
pub fn render(
    source: &str,
    scenario: &Scenario,
    variant: crate::variant::Variant,
    mode: Mode,
) -> Result<(String, Run), crate::run::RunError> {
    let (run, snaps) = capture_last(scenario, variant, mode, MAX_ROWS)?;
    Ok((page(source, &run, &snaps), run))
}

/// `index.html` beside a campaign's report: its targets, and each crash
/// with a picture (`races/<n>-<kind>.html`) when its script replays.
pub fn write_index(out: &Path, report: &CampaignReport) -> anyhow::Result<()> {
    let variant =
        crate::variant::Variant::parse(&report.variant).unwrap_or(crate::variant::Variant::FIXED);
    let mut body = String::new();
    let verdict = if report.new_crashes > 0 {
        format!("{} new crash group(s)", report.new_crashes)
    } else {
        "no new crash".to_string()
    };
    let _ = writeln!(
        body,
        "<header><h1>bgfuzz campaign: {}</h1><p>variant {}, {} s per target, {} job(s). The full report: <a href=\"report.md\">report.md</a>, <a href=\"report.json\">report.json</a>.</p></header>",
        esc(&verdict),
        esc(&report.variant),
        report.seconds_per_target,
        report.jobs
    );
    body.push_str("<table class=\"idx\"><tr><th>target</th><th>seconds</th><th>execs</th><th>exec/s</th><th>corpus</th><th>artifacts</th></tr>");
    for t in &report.targets {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{} \u{2192} {}</td><td>{}</td></tr>",
            esc(&t.target),
            t.seconds,
            t.executions,
            t.exec_per_sec,
            t.corpus_before,
            t.corpus_after,
            t.artifacts
        );
    }
    body.push_str("</table>\n<h2>Crash groups</h2>\n");
    if report.crashes.is_empty() {
        body.push_str("<p>None.</p>\n");
    }
    for (n, c) in report.crashes.iter().enumerate() {
        let status = match c.status {
            CrashStatus::New => "new",
            CrashStatus::Known => "known",
            CrashStatus::Unreproduced => "unreproduced",
        };
        let _ = write!(
            body,
            "<section class=\"crash {status}\"><h3>{} {status}: {} ({})</h3>",
            n + 1,
            esc(&c.kind),
            esc(&c.target)
        );
        let picture = Scenario::parse(c.script.as_bytes()).ok().and_then(|scn| {
            let v = scn.variant.unwrap_or(variant);
            render(&c.representative, &scn, v, Mode::Loose).ok()
        });
        if let Some((html, _)) = picture {
            let slug: String = c
                .kind
                .chars()
                .map(|ch| {
                    if ch.is_ascii_alphanumeric() || ch == '-' {
                        ch
                    } else {
                        '_'
                    }
                })
                .collect();
            let name = format!("races/{}-{slug}.html", n + 1);
            crate::write_atomic(&out.join(&name), &html)
                .with_context(|| format!("writing the picture of crash group {}", n + 1))?;
            let _ = write!(
                body,
                "<p><a href=\"{}\">the picture of this race</a></p>",
                esc(&name)
            );
        }
        if let Some(k) = &c.known_as {
            let _ = write!(body, "<p>known as {}</p>", esc(k));
        }
        let _ = writeln!(
            body,
            "<p>reproduce: <code>{}</code></p><pre>{}</pre></section>",
            esc(&c.reproduce),
            esc(&c.script)
        );
    }
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>bgfuzz campaign: {}</title><script>{ERROR_TRAP}</script><style>{CSS}</style></head>\n<body class=\"index\">\n{body}</body></html>\n",
        esc(&verdict)
    );
    crate::write_atomic(&out.join("index.html"), &html)
}
