//! Scenarios and their script form (`.scn`, see docs/scripts.md).
//!
//! A scenario is everything a run depends on. Printing one and parsing the
//! print gives back the same scenario.

use std::fmt::Write as _;

use bgfuzz_engine::{
    fmt_size, task_name, Config, Engine, ExtentId, Kind, MountOpts, Op, Patches, TaskId, MAX_TASKS,
    SZ_4K,
};
use bgfuzz_failpoints::{FaultPlan, Site};

use crate::oracles::ViolationKind;
use crate::variant::Variant;

/// What a step line does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Begin(Op),
    Continue,
}

/// One step line. `line` is where it stood in its script (0 when the step
/// was generated); it is not part of the scenario's identity.
#[derive(Clone, Copy, Debug, Eq)]
pub struct Step {
    pub task: TaskId,
    pub action: Action,
    pub line: usize,
}

impl PartialEq for Step {
    fn eq(&self, other: &Self) -> bool {
        (self.task, self.action) == (other.task, other.action)
    }
}

impl std::hash::Hash for Step {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.task, self.action).hash(state);
    }
}

impl Step {
    pub fn new(task: TaskId, action: Action) -> Self {
        Step {
            task,
            action,
            line: 0,
        }
    }
}

/// `expect V: pass` or `expect V: KIND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Expect {
    pub variant: Variant,
    pub outcome: Option<ViolationKind>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scenario {
    pub variant: Option<Variant>,
    pub device: Option<u64>,
    /// Chunk size per kind, indexed by [`Kind::index`].
    pub chunk: [Option<u64>; 3],
    /// `mount OPT...`: options that change the step structure, all off by
    /// default.
    pub mount: MountOpts,
    pub fails: Vec<FaultPlan>,
    pub expects: Vec<Expect>,
    pub steps: Vec<Step>,
}

/// `LINE: message`; the CLI puts the file name in front.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        message: message.into(),
    })
}

impl Scenario {
    pub fn config(&self) -> Config {
        let mut c = Config::default();
        if let Some(d) = self.device {
            c.device_size = d;
        }
        for kind in Kind::ALL {
            if let Some(s) = self.chunk[kind.index()] {
                c.chunk_size[kind.index()] = s;
            }
        }
        c.mount = self.mount;
        c
    }

    /// The variant to run: the command line's, else the header's, else
    /// `fixed`.
    pub fn variant_or(&self, over: Option<Variant>) -> Variant {
        over.or(self.variant).unwrap_or(Variant::FIXED)
    }

    /// Parses a script. Bytes, not text: invalid UTF-8 or a NUL is an error
    /// on its line, and nothing panics. LF or CRLF line ends; a leading
    /// UTF-8 byte order mark is skipped.
    pub fn parse(bytes: &[u8]) -> Result<Scenario, ParseError> {
        let mut s = Scenario::default();
        let mut config_line = 0;
        let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.contains(&0) {
                return err(line, "NUL byte in script");
            }
            if raw.contains(&b'\r') {
                return err(
                    line,
                    "carriage return inside a line: lines end in LF or CRLF (a file with CR-only line ends reads as one line; convert it with `tr '\\r' '\\n'`)",
                );
            }
            let text = std::str::from_utf8(raw).or_else(|_| err(line, "invalid UTF-8"))?;
            let text = text.split('#').next().unwrap_or("").trim();
            if text.is_empty() {
                continue;
            }
            let (word, rest) = split_word(text);
            match word {
                "variant" | "device" | "chunk" | "mount" | "fail" | "expect" => {
                    if !s.steps.is_empty() {
                        return err(line, format!("header `{word}` after the first step line"));
                    }
                    if matches!(word, "device" | "chunk") {
                        config_line = line;
                    }
                    s.parse_header(word, rest, line)?;
                }
                _ => s.steps.push(parse_step(text, line)?),
            }
        }
        if let Err(e) = Engine::new(s.config(), Patches::FIXES, false) {
            return err(config_line, e.to_string());
        }
        Ok(s)
    }

    fn parse_header(&mut self, word: &str, rest: &str, line: usize) -> Result<(), ParseError> {
        match word {
            "variant" => {
                if self.variant.is_some() {
                    return err(line, "second `variant` line");
                }
                self.variant = Some(parse_variant(rest.trim(), line)?);
            }
            "device" => {
                if self.device.is_some() {
                    return err(line, "second `device` line");
                }
                self.device = Some(parse_size(rest.trim(), line)?);
            }
            "chunk" => {
                let (k, size) = split_word(rest);
                let kind = parse_kind(k, line)?;
                if self.chunk[kind.index()].is_some() {
                    return err(line, format!("second `chunk {kind}` line"));
                }
                self.chunk[kind.index()] = Some(parse_size(size.trim(), line)?);
            }
            "mount" => {
                let opts: Vec<&str> = rest
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|o| !o.is_empty())
                    .collect();
                if opts.is_empty() {
                    return err(
                        line,
                        format!(
                            "`mount` needs options (known: {})",
                            MountOpts::NAMES.join(", ")
                        ),
                    );
                }
                for o in opts {
                    if !self.mount.set(o) {
                        return err(
                            line,
                            format!(
                                "unknown mount option `{}` (known: {})",
                                o.chars().take(40).collect::<String>(),
                                MountOpts::NAMES.join(", ")
                            ),
                        );
                    }
                }
            }
            "fail" => {
                let (site, config) = split_word(rest);
                if site.is_empty() {
                    return err(line, "`fail` needs a site and a config: `fail SITE CONFIG`");
                }
                if site.len() > MAX_SHOWN || config.trim().len() > MAX_SHOWN {
                    return err(
                        line,
                        format!(
                            "`fail {} {}`: too long for a failpoint site and config",
                            shown(site),
                            shown(config.trim())
                        ),
                    );
                }
                let site: Site = site.parse().or_else(|e| err(line, format!("{e}")))?;
                if self.fails.iter().any(|p| p.site == site) {
                    return err(line, format!("second `fail` line for {site}"));
                }
                let plan = FaultPlan::parse(site, config)
                    .or_else(|e| err(line, format!("fail {site}: {e}")))?;
                self.fails.push(plan);
            }
            "expect" => {
                let Some((v, outcome)) = rest.split_once(':') else {
                    return err(line, "`expect` needs `VARIANT: pass` or `VARIANT: KIND`");
                };
                let variant = parse_variant(v.trim(), line)?;
                let outcome = match outcome.trim() {
                    "pass" => None,
                    k => Some(ViolationKind::parse(k).ok_or_else(|| ParseError {
                        line,
                        message: format!(
                            "unknown violation kind `{}` (known: pass, {})",
                            shown(k),
                            ViolationKind::ALL.map(|k| k.name()).join(", ")
                        ),
                    })?),
                };
                if self.expects.iter().any(|e| e.variant == variant) {
                    return err(line, format!("second `expect` line for {variant}"));
                }
                self.expects.push(Expect { variant, outcome });
            }
            _ => unreachable!("only header words reach here"),
        }
        Ok(())
    }

    /// The header lines, in the order `parse` reads them.
    fn write_header(&self, out: &mut String) {
        if let Some(v) = self.variant {
            let _ = writeln!(out, "variant {v}");
        }
        if let Some(d) = self.device {
            let _ = writeln!(out, "device {}", fmt_size(d));
        }
        for kind in Kind::ALL {
            if let Some(c) = self.chunk[kind.index()] {
                let _ = writeln!(out, "chunk {kind} {}", fmt_size(c));
            }
        }
        let mount = self.mount.names();
        if !mount.is_empty() {
            let _ = writeln!(out, "mount {}", mount.join(" "));
        }
        for p in &self.fails {
            let _ = writeln!(out, "fail {} {}", p.site, p.config());
        }
        for e in &self.expects {
            let outcome = e.outcome.map_or("pass", |k| k.name());
            let _ = writeln!(out, "expect {}: {outcome}", e.variant);
        }
    }

    /// The script, with an optional note after each step line.
    pub fn print_with(&self, notes: Option<&[String]>) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        if !out.is_empty() && !self.steps.is_empty() {
            out.push('\n');
        }
        for (i, step) in self.steps.iter().enumerate() {
            let text = step_text(step);
            match notes.and_then(|n| n.get(i)).filter(|n| !n.is_empty()) {
                Some(note) => {
                    let _ = writeln!(out, "{text:<24}# {note}");
                }
                None => {
                    let _ = writeln!(out, "{text}");
                }
            }
        }
        out
    }

    pub fn print(&self) -> String {
        self.print_with(None)
    }
}

pub fn step_text(step: &Step) -> String {
    let op = match step.action {
        Action::Continue => "continue".to_string(),
        Action::Begin(op) => op.to_string(),
    };
    format!("{}: {op}", task_name(step.task))
}

/// The longest token echoed whole in an error message.
const MAX_SHOWN: usize = 40;

/// A token as an error message shows it: a long one cut short, so a
/// 10 MB line is not echoed back.
fn shown(s: &str) -> String {
    if s.chars().count() <= MAX_SHOWN {
        return s.to_string();
    }
    let head: String = s.chars().take(MAX_SHOWN).collect();
    format!("{head}... ({} bytes)", s.len())
}

/// Whether bytes that do not parse as a script were meant as one: text
/// with a line that starts like a header or a step (`A: ...`). A fuzzer
/// input rarely is; one that parses is a script anyway.
pub fn looks_like_script(bytes: &[u8]) -> bool {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    if text.contains('\0') {
        return false;
    }
    text.lines().any(|l| {
        let l = l.split('#').next().unwrap_or("").trim();
        let (word, _) = split_word(l);
        matches!(
            word,
            "variant" | "device" | "chunk" | "mount" | "fail" | "expect"
        ) || l.split_once(':').is_some_and(|(t, _)| {
            let t = t.trim();
            t.len() == 1 && t.as_bytes()[0].is_ascii_alphabetic()
        })
    })
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

fn parse_variant(s: &str, line: usize) -> Result<Variant, ParseError> {
    Variant::parse(s).ok_or_else(|| ParseError {
        line,
        message: format!(
            "unknown variant `{}` (known: {})",
            shown(s),
            Variant::known_names()
        ),
    })
}

fn parse_kind(s: &str, line: usize) -> Result<Kind, ParseError> {
    Kind::parse(s).ok_or_else(|| ParseError {
        line,
        message: format!(
            "unknown kind `{}` (known: data, metadata, system)",
            shown(s)
        ),
    })
}

/// The largest size a script may name, in G: 2^50 bytes.
const MAX_SIZE_G: u64 = 1 << 20;

/// Bytes with an optional `K`, `M` or `G` suffix; a non-zero multiple of 4K.
pub fn parse_size(s: &str, line: usize) -> Result<u64, ParseError> {
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'K') => (&s[..s.len() - 1], 10),
        Some(b'M') => (&s[..s.len() - 1], 20),
        Some(b'G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return err(
            line,
            format!(
                "bad size `{}`: expected bytes with an optional K, M or G suffix",
                shown(s)
            ),
        );
    }
    let n: u64 = digits.parse().or_else(|_| {
        err(
            line,
            format!("size `{}` is too large (at most {MAX_SIZE_G}G)", shown(s)),
        )
    })?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .filter(|b| *b <= MAX_SIZE_G << 30)
        .ok_or_else(|| ParseError {
            line,
            message: format!("size `{}` is too large (at most {MAX_SIZE_G}G)", shown(s)),
        })?;
    if bytes == 0 || !bytes.is_multiple_of(SZ_4K) {
        return err(
            line,
            format!("size `{s}` must be a non-zero multiple of 4K"),
        );
    }
    Ok(bytes)
}

fn parse_step(text: &str, line: usize) -> Result<Step, ParseError> {
    let Some((t, rest)) = text.split_once(':') else {
        return err(
            line,
            format!(
                "unknown line `{}`: expected a header or `T: OP`",
                shown(text)
            ),
        );
    };
    let t = t.trim();
    let task = match t.as_bytes() {
        [c @ b'A'..=b'Z'] if ((c - b'A') as usize) < MAX_TASKS => (c - b'A') as usize,
        [b'A'..=b'Z'] => return err(line, format!("task `{t}` out of range (A to H)")),
        _ => {
            return err(
                line,
                format!("bad task `{}`: a task is a letter A to H", shown(t)),
            )
        }
    };
    let (op, args) = split_word(rest);
    let args: Vec<&str> = args.split_whitespace().collect();
    let want = |n: usize| -> Result<(), ParseError> {
        if args.len() != n {
            return err(
                line,
                format!("`{op}` takes {n} argument(s), got {}", args.len()),
            );
        }
        Ok(())
    };
    let action = match op {
        "continue" => {
            want(0)?;
            Action::Continue
        }
        "start" | "join" | "run_delayed_refs" | "end" | "commit" | "delete_unused" | "endio"
        | "trim" => {
            want(0)?;
            Action::Begin(match op {
                "start" => Op::Start,
                "join" => Op::Join,
                "run_delayed_refs" => Op::RunDelayedRefs,
                "end" => Op::End,
                "commit" => Op::Commit,
                "endio" => Op::Endio,
                "trim" => Op::Trim,
                _ => Op::DeleteUnused,
            })
        }
        "alloc" => {
            want(2)?;
            let kind = parse_kind(args[0], line)?;
            let size = match args[1] {
                "fill" => bgfuzz_engine::FILL,
                a => parse_size(a, line).map_err(|mut e| {
                    e.message.push_str(" (or `fill`)");
                    e
                })?,
            };
            Action::Begin(Op::Alloc { kind, size })
        }
        "free" => {
            want(1)?;
            let n = args[0]
                .strip_prefix('e')
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| ParseError {
                    line,
                    message: format!(
                        "bad extent `{}`: extents are named e1, e2, ...",
                        shown(args[0])
                    ),
                })?;
            Action::Begin(Op::Free { extent: ExtentId(n) })
        }
        // The chunk by its logical start, as `btrfs balance start
        // -dvrange=START..` would pick it.
        "relocate" => {
            want(1)?;
            let start = parse_size(args[0], line)?;
            Action::Begin(Op::Relocate { start })
        }
        "" => return err(line, "missing operation after `:`"),
        _ => {
            return err(
                line,
                format!(
                    "unknown operation `{}` (known: start, join, alloc, free, run_delayed_refs, end, commit, delete_unused, endio, relocate, continue)",
                    shown(op)
                ),
            )
        }
    };
    Ok(Step { task, action, line })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "# the ff1f8250 race\nvariant bug-ff1f8250\ndevice 16G\nchunk data 1G\n\
        fail extent_tree_lookup 2*off->1*return(ENOENT)\nexpect fixed: pass\n\
        expect bug-ff1f8250: abort-enoent-outside-critical\n\nA: start\nA: alloc data 1G # e1\n\
        A: alloc data 4K\nB: start\nB: alloc data 4K\nB: run_delayed_refs\nC: start\nC: commit\n\
        A: end\nB: end\nC: continue\nA: free e1\n";

    #[test]
    fn print_then_parse_is_identity() {
        let s = Scenario::parse(SEED.as_bytes()).unwrap();
        assert_eq!(s.steps.len(), 12);
        assert_eq!(s.variant, Some(Variant::BUG_FF1F8250));
        assert_eq!(s.steps[1].line, 10);
        let printed = s.print();
        assert_eq!(Scenario::parse(printed.as_bytes()).unwrap(), s);
    }

    /// `fill` parses, prints back, and runs as the size that leaves the
    /// bg exactly full: the next 4K alloc makes a new bg. The normalized
    /// script keeps `fill`.
    #[test]
    fn fill_takes_the_first_hole() {
        let text = "chunk metadata 16M\n\nA: start\nA: alloc metadata 4K\nA: alloc metadata fill\nA: alloc metadata 4K\nA: continue\nA: end\n";
        let s = Scenario::parse(text.as_bytes()).unwrap();
        assert_eq!(Scenario::parse(s.print().as_bytes()).unwrap(), s);
        assert!(s.print().contains("A: alloc metadata fill"));
        let r = crate::run::run(&s, Variant::FIXED, crate::run::Mode::Strict).unwrap();
        let printed = r.scenario.print();
        assert!(printed.contains("A: alloc metadata fill"), "{printed}");
        // mkfs's 16M metadata bg less the 4K.
        let e2 = r.engine.extent(bgfuzz_engine::ExtentId(2)).unwrap();
        assert_eq!(e2.len, 16380 * 1024, "{printed}");
        // The engine never sees `fill`: a size of 0 given to it is refused.
        let mut e = r.engine.clone();
        let zero = Op::Alloc {
            kind: Kind::Data,
            size: 0,
        };
        assert_eq!(
            e.begin(0, zero).unwrap_err(),
            bgfuzz_engine::UsageError::BadSize(0)
        );
        let bgs = r
            .engine
            .block_groups()
            .iter()
            .filter(|b| b.kind == Kind::Metadata)
            .count();
        assert_eq!(bgs, 2, "{printed}");
    }

    fn error_of(text: &str) -> ParseError {
        Scenario::parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn errors_name_their_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("A: start\nA: frobnicate\n", 2, "unknown operation"),
            ("bogus 1\n", 1, "unknown line"),
            ("A: alloc data 0\n", 1, "non-zero multiple of 4K"),
            ("A: alloc data 6K\n", 1, "non-zero multiple of 4K"),
            ("A: alloc data 1T\n", 1, "bad size"),
            ("A: alloc blob 4K\n", 1, "unknown kind"),
            ("Z: start\n", 1, "out of range"),
            ("a: start\n", 1, "bad task"),
            ("fail trans_end 50%return(EIO)\n", 1, "not deterministic"),
            ("fail nowhere return(EIO)\n", 1, "unknown failpoint site"),
            ("fail trans_end return(EFOO)\n", 1, "unknown errno"),
            ("variant bug-nope\n", 1, "unknown variant"),
            ("expect fixed: explode\n", 1, "unknown violation kind"),
            ("A: start\nvariant fixed\n", 2, "after the first step"),
            ("A: free x1\n", 1, "bad extent"),
            ("A: start extra\n", 1, "takes 0 argument"),
            ("\nA: st\0art\n", 2, "NUL"),
            ("device 4K\n", 1, "too small"),
            ("A:\n", 1, "missing operation"),
        ];
        for (text, line, what) in cases {
            let e = error_of(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.message.contains(what), "{text:?}: {e}");
        }
        let e = Scenario::parse(b"A: start\n\xff\xfe\n").unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (2, "invalid UTF-8"));
    }

    #[test]
    fn crlf_and_comments_are_accepted() {
        let s = Scenario::parse(b"# hi\r\nA: start   # a handle\r\n\r\nA: end\r\n").unwrap();
        assert_eq!(s.steps.len(), 2);
    }
}
