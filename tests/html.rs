//! `repro --html` and `repro --json --events`: the page is self-contained,
//! has a lane per task, block group and transaction, marks the violation;
//! the events have one snapshot per step; and a real browser (headless
//! Chromium) loads the page with no console error and draws something.
//!
//! Without Chromium the browser tests print that they were skipped and
//! why; set BGFUZZ_REQUIRE_CHROMIUM=1 (as `.ci/run` does) to fail instead.
//! BGFUZZ_CHROMIUM names the browser binary.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bgfuzz::html::{page, render};
use bgfuzz::run::Mode;
use bgfuzz::scenario::Scenario;
use bgfuzz::snapshot::capture;
use bgfuzz::variant::Variant;
use serde_json::Value;

const SEED_RACE: &str = "corpus/scripts/seed-race.scn";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn seed_race() -> Scenario {
    let bytes = std::fs::read(manifest_dir().join(SEED_RACE)).expect("read seed race");
    Scenario::parse(&bytes).expect("seed race parses")
}

fn bgfuzz(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bgfuzz"))
        .args(args)
        .current_dir(manifest_dir())
        .output()
        .expect("spawn bgfuzz")
}

/// The seed race under the bug: ten steps, an abort at step 10.
fn race_page() -> (String, bgfuzz::run::Run) {
    render(SEED_RACE, &seed_race(), Variant::BUG_FF1F8250, Mode::Strict).expect("runs")
}

/// Every value of `attr="..."` in `html`.
fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let pat = format!(" {attr}=\"");
    html.match_indices(&pat)
        .map(|(i, _)| {
            let rest = &html[i + pat.len()..];
            &rest[..rest.find('"').expect("closed attribute")]
        })
        .collect()
}

#[test]
fn page_is_self_contained() {
    let (html, _) = race_page();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for tag in [
        "<link", "<img", "<iframe", "<object", "<embed", "@import", "url(",
    ] {
        assert!(!html.contains(tag), "the page loads something: {tag}");
    }
    assert!(
        attr_values(&html, "src").is_empty(),
        "no script or image is loaded from a file or the network"
    );
    let hrefs = attr_values(&html, "href");
    assert!(!hrefs.is_empty(), "the violation links to its step");
    for h in hrefs {
        assert!(h.starts_with('#'), "href `{h}` leaves the page");
    }
    assert!(!html.contains("http://") && !html.contains("https://"));
    // Inline style and script are there.
    assert!(html.contains("<style>") && html.contains("<script>"));
}

#[test]
fn page_has_a_lane_per_task_bg_and_transaction_and_marks_the_violation() {
    let (html, run) = race_page();
    for t in ["A", "B", "C"] {
        assert!(
            html.contains(&format!(">task {t}<")),
            "no lane for task {t}"
        );
    }
    assert!(!html.contains(">task D<"), "task D took no step");
    let bgs = run.engine.block_groups();
    assert_eq!(bgs.len(), 4, "mkfs's three and the one A created");
    assert_eq!(html.matches("<div class=\"h h-bg\"").count(), bgs.len());
    for bg in bgs {
        assert!(
            html.contains(&format!(">{}<small>", bg.name())),
            "no lane for {}",
            bg.name()
        );
    }
    assert!(html.contains(">transaction 2<"));
    // The violation: its row, its mark, the report with the kernel's words.
    let v = run.violation.as_ref().expect("the bug is caught");
    assert_eq!(v.step, 9);
    assert!(html.contains("class=\"bg viol\" data-step=\"10\""));
    assert!(html.contains("VIOLATION abort-enoent-outside-critical"));
    assert!(html.contains("BTRFS: Transaction aborted (error -2)"));
    // The race itself, in bg 1313M's lane: on A's new_bgs, spliced onto
    // btrfs_start_dirty_block_groups' list, never an item.
    assert!(html.contains("bg 1313M on A&#39;s new_bgs"));
    assert!(html.contains("bg 1313M on writeout of transaction 2"));
    assert!(!html.contains("bg 1313M: item inserted"));
    // One step row per step, and the mkfs row.
    assert_eq!(
        html.matches("<div class=\"step").count(),
        run.steps.len() + 1
    );
    // Same run, same page.
    assert_eq!(html, race_page().0);
}

#[test]
fn clean_run_says_so_and_text_is_escaped() {
    let mut scn = seed_race();
    scn.steps.truncate(3);
    let (run, snaps) = capture(&scn, Variant::FIXED, Mode::Strict).expect("runs");
    assert!(run.violation.is_none());
    let html = page("<x>&\"y\".scn", &run, &snaps);
    assert!(html.contains("No violation in"));
    assert!(html.contains("&lt;x&gt;&amp;&quot;y&quot;.scn"));
    assert!(!html.contains("<x>"));
}

#[test]
fn json_events_have_one_snapshot_per_step() {
    let o = bgfuzz(&[
        "repro",
        SEED_RACE,
        "--variant",
        "bug-ff1f8250",
        "--json",
        "--events",
    ]);
    assert_eq!(o.status.code(), Some(1), "the violation exits 1");
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let steps = v["steps"].as_u64().expect("steps") as usize;
    let events = v["events"].as_array().expect("an events array");
    assert_eq!(steps, 10);
    assert_eq!(events.len(), steps, "one snapshot per step");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["step"], i + 1);
        assert!(e["block_groups"].is_array() && e["transactions"].is_array());
    }
    assert_eq!(events[0]["text"], "A: start");
    assert_eq!(events[9]["text"], "C: continue");
    // Step 9: bg 1313M spliced for writeout while still on A's new_bgs and
    // without an item: the race.
    let bg = events[8]["block_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "bg 1313M")
        .expect("bg 1313M at step 9");
    assert_eq!(bg["new_bgs"], "A");
    assert_eq!(bg["dirty_list"], "writeout");
    assert_eq!(bg["item"], false);
    // Step 10: transaction 2 aborted with -ENOENT.
    let t = &events[9]["transactions"][0];
    assert_eq!(t["transid"], 2);
    assert!(t["aborted"].as_str().unwrap().starts_with("-ENOENT"));
    assert_eq!(events[9]["events"][0]["kind"], "abort");
    // Without --events the JSON stays as it was.
    let plain = bgfuzz(&["repro", SEED_RACE, "--variant", "bug-ff1f8250", "--json"]);
    let p: Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert!(p.get("events").is_none());
    // --events needs --json.
    let o = bgfuzz(&["repro", SEED_RACE, "--events"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn repro_html_writes_the_page_and_still_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub/race.html");
    let o = bgfuzz(&[
        "repro",
        SEED_RACE,
        "--variant",
        "bug-ff1f8250",
        "--html",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("VIOLATION abort-enoent-outside-critical"));
    let html = std::fs::read_to_string(&out).expect("the page");
    assert_eq!(html, race_page().0);
}

#[test]
fn a_long_run_draws_its_last_steps() {
    let bytes = std::fs::read(manifest_dir().join("corpus/scripts/btrfs-078-like.scn")).unwrap();
    let scn = Scenario::parse(&bytes).unwrap();
    let (run, mut snaps) = capture(&scn, Variant::FIXED, Mode::Strict).unwrap();
    assert!(snaps.len() > 100);
    let full = page("078", &run, &snaps);
    assert_eq!(full.matches("<div class=\"step").count(), snaps.len());
    // Past the cap, the first steps are left out and the page says so.
    let cap = bgfuzz::html::MAX_ROWS;
    while snaps.len() < cap + 2 {
        let mut s = snaps.last().unwrap().clone();
        s.step += 1;
        snaps.push(s);
    }
    let capped = page("078", &run, &snaps);
    assert_eq!(capped.matches("<div class=\"step").count(), cap);
    assert!(capped.contains("are not drawn"));
}

// ----- in a real browser ----------------------------------------------

/// The Chromium binary, or why there is none.
fn chromium() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("BGFUZZ_CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(dir) = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .find(|d| d.join(name).is_file())
        {
            return Ok(dir.join(name));
        }
    }
    Err("no chromium, chromium-browser or google-chrome on PATH (Debian: apt-get install chromium; or set BGFUZZ_CHROMIUM)".into())
}

/// The browser, or `None` after saying why the test is skipped.
fn browser_or_skip(test: &str) -> Option<PathBuf> {
    match chromium() {
        Ok(p) => Some(p),
        Err(why) if std::env::var_os("BGFUZZ_REQUIRE_CHROMIUM").is_some() => {
            panic!("{test}: BGFUZZ_REQUIRE_CHROMIUM is set but {why}")
        }
        Err(why) => {
            // Straight to stderr: the test harness hides `eprintln!` of a
            // passing test, and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
            None
        }
    }
}

struct Browsed {
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs headless Chromium on `url` with `extra` flags, offline, with its
/// own profile, killed after 90 s.
fn browse(bin: &Path, work: &Path, url: &str, extra: &[&str]) -> Browsed {
    let profile = tempfile::tempdir_in(work).unwrap();
    let out_path = work.join("chromium.out");
    let err_path = work.join("chromium.err");
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn chromium");
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Browsed {
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}

/// Lines where the page spoke to the console (Chromium logs each message,
/// whatever its level, as `INFO:CONSOLE`).
fn console_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

fn html_attr<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let start = dom.find("<html")?;
    let head = &dom[start..start + dom[start..].find('>')?];
    attr_values(head, name).first().copied()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_is_right() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}

#[test]
fn chromium_loads_the_page_without_console_errors() {
    let Some(bin) = browser_or_skip("chromium_loads_the_page_without_console_errors") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("race.html");
    std::fs::write(&file, race_page().0).unwrap();
    let url = format!("file://{}", file.display());

    let b = browse(&bin, dir.path(), &url, &["--dump-dom"]);
    assert!(
        console_lines(&b.stderr).is_empty(),
        "console output: {:?}",
        console_lines(&b.stderr)
    );
    assert_eq!(
        html_attr(&b.stdout, "data-errors"),
        None,
        "script errors or failed loads"
    );
    assert_eq!(
        html_attr(&b.stdout, "data-ready"),
        Some("1"),
        "the page's script ran to its end; DOM: {}",
        &b.stdout[..b.stdout.len().min(400)]
    );
    // The panel shows the violation's step, with the engine's state.
    assert!(b.stdout.contains("After step 10: C: continue"));
    assert!(b.stdout.contains("-ENOENT (raised by the model)"));
    let render_ms = html_attr(&b.stdout, "data-render-ms").unwrap_or("?");
    let load_ms = html_attr(&b.stdout, "data-load-ms").expect("the load event came");
    eprintln!(
        "chromium: the page's script done {render_ms} ms, its load event {load_ms} ms after navigation start; chromium ran {:.2} s",
        b.elapsed.as_secs_f64()
    );

    // A step named in the URL is pinned in the panel: the hover path.
    let b = browse(&bin, dir.path(), &format!("{url}#s6"), &["--dump-dom"]);
    assert!(console_lines(&b.stderr).is_empty());
    assert!(
        b.stdout.contains("After step 6: B: run_delayed_refs"),
        "the panel follows the pinned step"
    );

    // A campaign's index and its race page load cleanly too.
    bgfuzz::html::write_index(dir.path(), &campaign_report()).unwrap();
    for page in ["index.html", "races/1-abort-enoent-outside-critical.html"] {
        let url = format!("file://{}", dir.path().join(page).display());
        let b = browse(&bin, dir.path(), &url, &["--dump-dom"]);
        assert!(console_lines(&b.stderr).is_empty(), "{page}: {}", b.stderr);
        assert_eq!(html_attr(&b.stdout, "data-errors"), None, "{page}");
    }
}

#[test]
fn chromium_screenshot_is_not_blank() {
    let Some(bin) = browser_or_skip("chromium_screenshot_is_not_blank") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("race.html");
    std::fs::write(&file, race_page().0).unwrap();
    let shot = dir.path().join("race.png");
    let b = browse(
        &bin,
        dir.path(),
        &format!("file://{}", file.display()),
        &[
            "--window-size=1600,1000",
            "--hide-scrollbars",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    assert!(console_lines(&b.stderr).is_empty(), "{}", b.stderr);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((w, h), (1600, 1000));

    // Chromium decodes it: how much differs from the commonest colour.
    let check = dir.path().join("check.html");
    std::fs::write(
        &check,
        format!(
            "<!DOCTYPE html><html><body><canvas id=\"c\"></canvas><img id=\"i\" src=\"data:image/png;base64,{}\">\
             <script>window.addEventListener('load',function(){{var i=document.getElementById('i'),c=document.getElementById('c');\
             c.width=i.naturalWidth;c.height=i.naturalHeight;var x=c.getContext('2d');x.drawImage(i,0,0);\
             var d=x.getImageData(0,0,c.width,c.height).data,m=new Map(),n=c.width*c.height,top=0;\
             for(var p=0;p<d.length;p+=4){{var k=(d[p]<<16)|(d[p+1]<<8)|d[p+2];m.set(k,(m.get(k)||0)+1);}}\
             m.forEach(function(v){{if(v>top)top=v;}});\
             document.body.setAttribute('data-stats',c.width+' '+c.height+' '+m.size+' '+((n-top)/n).toFixed(4));}});</script></body></html>",
            base64(&png)
        ),
    )
    .unwrap();
    let b = browse(
        &bin,
        dir.path(),
        &format!("file://{}", check.display()),
        &["--dump-dom"],
    );
    let stats = b
        .stdout
        .split("data-stats=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no stats: {}", &b.stdout[..b.stdout.len().min(300)]));
    let f: Vec<f64> = stats.split(' ').map(|x| x.parse().unwrap()).collect();
    assert_eq!((f[0], f[1]), (1600.0, 1000.0));
    assert!(f[2] > 50.0, "only {} colours", f[2]);
    assert!(f[3] > 0.10, "only {:.1}% not background", f[3] * 100.0);
    eprintln!(
        "screenshot 1600x1000: {} bytes, {} colours, {:.1}% not background",
        png.len(),
        f[2],
        f[3] * 100.0
    );
}

fn campaign_report() -> bgfuzz::campaign::CampaignReport {
    use bgfuzz::campaign::{CampaignReport, CrashReport, CrashStatus, TargetReport};
    let script = std::fs::read_to_string(manifest_dir().join(SEED_RACE)).unwrap();
    CampaignReport {
        variant: "bug-ff1f8250".into(),
        seconds_per_target: 60,
        jobs: 1,
        targets: vec![TargetReport {
            target: "scenario".into(),
            seconds: 60.0,
            executions: 1000,
            exec_per_sec: 16,
            coverage: 10,
            features: 20,
            corpus: "x/scenario/corpus".into(),
            corpus_before: 3,
            corpus_after: 5,
            seeds: "corpus/scenario".into(),
            seed_files: 3,
            artifacts: 1,
            fuzz_exit: Some(0),
            merge_exit: Some(0),
            log: "x/fuzz.log".into(),
            coverage_report: None,
            errors: Vec::new(),
        }],
        crashes: vec![
            CrashReport {
                target: "scenario".into(),
                status: CrashStatus::New,
                kind: "abort-enoent-outside-critical".into(),
                trace: "btrfs_commit_transaction > btrfs_start_dirty_block_groups".into(),
                needs_fault: Some(false),
                script,
                removed_by: Vec::new(),
                known_as: None,
                artifacts: vec!["crash-1".into()],
                representative: "crash-1".into(),
                reproduce: "bgfuzz repro --artifact crash-1".into(),
            },
            CrashReport {
                target: "script".into(),
                status: CrashStatus::Known,
                kind: "panic".into(),
                trace: String::new(),
                needs_fault: None,
                script: "thread 'main' panicked at <src/x.rs>".into(),
                removed_by: Vec::new(),
                known_as: Some("corpus/scripts/x.scn".into()),
                artifacts: vec!["crash-2".into()],
                representative: "crash-2".into(),
                reproduce: "cargo fuzz run script crash-2".into(),
            },
        ],
        new_crashes: 1,
        scripts_dir: "corpus/scripts".into(),
        stale_temp_dirs_removed: 0,
    }
}

#[test]
fn campaign_index_links_a_picture_per_replayable_crash() {
    let dir = tempfile::tempdir().unwrap();
    bgfuzz::html::write_index(dir.path(), &campaign_report()).unwrap();
    let index = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(index.contains("1 new crash group(s)"));
    assert!(index.contains("abort-enoent-outside-critical"));
    assert!(index.contains("&lt;src/x.rs&gt;"), "the panic is escaped");
    let links: Vec<&str> = attr_values(&index, "href")
        .into_iter()
        .filter(|h| h.starts_with("races/"))
        .collect();
    assert_eq!(links, ["races/1-abort-enoent-outside-critical.html"]);
    let race = std::fs::read_to_string(dir.path().join(links[0])).unwrap();
    assert!(race.contains("VIOLATION abort-enoent-outside-critical"));
    assert!(race.contains(">task C<"));
    for h in attr_values(&index, "href") {
        assert!(!h.contains("://"), "{h} leaves the directory");
    }
    assert!(attr_values(&index, "src").is_empty());
}

#[test]
fn a_violation_at_the_end_gets_its_own_row() {
    let (mut run, snaps) = capture(&seed_race(), Variant::BUG_FF1F8250, Mode::Strict).unwrap();
    let v = run.violation.as_mut().unwrap();
    v.step = run.steps.len();
    let html = page("end", &run, &snaps);
    assert!(html.contains("data-step=\"end\""));
    assert!(html.contains("end of run"));
    assert!(html.contains("at the end of the run"));
    // One more row than steps and mkfs.
    assert!(html.contains(&format!("repeat({},var(--row))", snaps.len() + 1)));
}

#[test]
fn an_empty_script_draws_mkfs_only() {
    let scn = Scenario::parse(b"# nothing\n").unwrap();
    let (run, snaps) = capture(&scn, Variant::FIXED, Mode::Strict).unwrap();
    assert_eq!(snaps.len(), 1);
    let html = page("empty", &run, &snaps);
    assert!(html.contains("No violation in 0 step(s)"));
    assert_eq!(html.matches("<div class=\"h h-bg\"").count(), 3);
}

#[test]
fn a_window_of_the_last_steps_draws_like_the_whole() {
    let bytes = std::fs::read(manifest_dir().join("corpus/scripts/btrfs-078-like.scn")).unwrap();
    let scn = Scenario::parse(&bytes).unwrap();
    let (run, all) = capture(&scn, Variant::FIXED, Mode::Strict).unwrap();
    let (_, last) =
        bgfuzz::snapshot::capture_last(&scn, Variant::FIXED, Mode::Strict, 100).unwrap();
    assert_eq!(last.len(), 100);
    assert_eq!(last[0].step, all.len() - 100);
    assert_eq!(
        serde_json::to_string(&last).unwrap(),
        serde_json::to_string(&all[all.len() - 100..]).unwrap(),
        "the same snapshots"
    );
    let html = page("078", &run, &last);
    assert_eq!(html.matches("<div class=\"step").count(), 100);
    assert!(html.contains(&format!("Steps 1 to {} are not drawn", last[0].step - 1)));
    assert!(html.contains(&format!("data-first=\"{}\"", last[0].step)));
    // Operations in progress when the window opens are still drawn.
    assert!(html.contains("class=\"op"));
}

#[test]
fn long_lists_are_cut_and_counted() {
    // 300 extents allocated, none of their refs run: 300 live extents and
    // 300 queued refs, listed up to LISTED.
    let mut text = String::from("A: start\n");
    for _ in 0..300 {
        text.push_str("A: alloc data 4K\n");
    }
    let scn = Scenario::parse(text.as_bytes()).unwrap();
    let (_, snaps) = capture(&scn, Variant::FIXED, Mode::Strict).unwrap();
    let at = snaps.iter().find(|s| s.step == 301).expect("step 301");
    assert_eq!(at.state.extents_live, 300);
    assert_eq!(at.state.extents.len(), bgfuzz::snapshot::LISTED);
    let t = &at.state.transactions[0];
    assert_eq!(t.delayed_refs_queued, 300);
    assert_eq!(t.delayed_refs.len(), bgfuzz::snapshot::LISTED);
}
