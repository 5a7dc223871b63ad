//! What the fuzz targets do, as library functions: the targets in `fuzz/`
//! only glue libFuzzer to these, and `cargo test` runs them on stable too.

use std::sync::OnceLock;

use crate::variant::Variant;

use crate::engine::{DirtyList, Engine, Key, Status, TransState, TransType, MAX_TASKS};
use crate::report;
use crate::run::{run_observed, Mode};
use crate::scenario::Scenario;

/// `BGFUZZ_VARIANT`, read once. An unknown name ends the process with a
/// clear message at start-up, before libFuzzer runs a single input.
pub fn variant_from_env() -> Variant {
    static VARIANT: OnceLock<Variant> = OnceLock::new();
    *VARIANT.get_or_init(|| match std::env::var("BGFUZZ_VARIANT") {
        Err(_) => Variant::FIXED,
        Ok(name) => Variant::parse(&name).unwrap_or_else(|| {
            eprintln!(
                "bgfuzz: BGFUZZ_VARIANT={name}: unknown variant (known: {})",
                Variant::known_names()
            );
            std::process::exit(2)
        }),
    })
}

/// Runs a generated scenario; a violation panics with the normalized
/// script and the report, which is what libFuzzer records as a crash.
pub fn scenario(scn: &Scenario, variant: Variant) {
    let r = run_observed(scn, variant, variant.patches(), Mode::Loose, &mut |e, _| {
        STATES[usize::from(abstract_state(e))]()
    })
    .expect("a generated scenario always runs in loose mode");
    if r.violation.is_some() {
        panic!(
            "bgfuzz violation under {variant}\n\n{}\n--- script (save as .scn, replay with `bgfuzz repro`) ---\n{}",
            report::violation_report(&r).unwrap_or_default(),
            r.scenario.print()
        );
    }
}

/// Parses arbitrary bytes; what parses must print to a script that parses
/// to the same scenario.
pub fn script(data: &[u8]) {
    if let Ok(s) = Scenario::parse(data) {
        let printed = s.print();
        let again = Scenario::parse(printed.as_bytes()).unwrap_or_else(|e| {
            panic!("the print of a parsed script does not parse: {e}\n{printed}")
        });
        assert_eq!(again, s, "print/parse changed the scenario:\n{printed}");
    }
}

/// State feedback for libFuzzer, as IJON annotates a target: after each
/// step, an abstract state of the engine (the milestones the zoo's races
/// pass through) selects one of 256 functions, so a combination never seen
/// before is new coverage and libFuzzer keeps the input that reached it.
/// Code coverage alone cannot tell "a commit in its critical section while
/// a free-space endio worker holds a handle on a bg with no item" from the
/// same lines reached one at a time. Bits: 0-1 the newest transaction's
/// commit stage (running, COMMIT_START, COMMIT_DOING, critical section),
/// 2 a cache IO in flight, 3 a JOIN_NOLOCK handle held, 4 a handle with
/// pending bgs, 5 a dirty bg with no item, 6 a task blocked, 7 an abort.
pub fn abstract_state(e: &Engine) -> u8 {
    let stage = e.transactions().last().map_or(0, |t| match t.state {
        _ if t.in_critical => 3,
        TransState::CommitDoing => 2,
        TransState::CommitStart => 1,
        _ => 0,
    });
    let handles = || (0..MAX_TASKS).filter_map(|t| e.handle(t));
    let dirty_without_item = e.block_groups().iter().any(|b| {
        !matches!(b.dirty_list, DirtyList::None)
            && !e
                .extent_tree()
                .contains_key(&Key::block_group(b.start, b.len))
    });
    stage
        | u8::from(!e.cache_io().is_empty()) << 2
        | u8::from(handles().any(|h| h.ty == TransType::JoinNolock)) << 3
        | u8::from(handles().any(|h| !h.new_bgs.is_empty())) << 4
        | u8::from(dirty_without_item) << 5
        | u8::from((0..MAX_TASKS).any(|t| matches!(e.status(t), Status::Blocked(_)))) << 6
        | u8::from(e.fs_error()) << 7
}

#[inline(never)]
fn reached<const N: u8>() {
    std::hint::black_box(N);
}

macro_rules! states {
    ($($n:literal)*) => {
        [$(reached::<$n> as fn()),*]
    };
}

/// One function per abstract state: calling it is the coverage.
static STATES: [fn(); 256] = states!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119 120 121 122 123 124 125 126 127 128 129 130 131 132 133 134 135 136 137 138 139 140 141 142 143 144 145 146 147 148 149 150 151 152 153 154 155 156 157 158 159 160 161 162 163 164 165 166 167 168 169 170 171 172 173 174 175 176 177 178 179 180 181 182 183 184 185 186 187 188 189 190 191 192 193 194 195 196 197 198 199 200 201 202 203 204 205 206 207 208 209 210 211 212 213 214 215 216 217 218 219 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 235 236 237 238 239 240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255);
