//! `--html`: the page renders in headless Chromium (Debian's `chromium`),
//! shows one card per bug finding and the count, fetches nothing (no URL in
//! the page, no network error from the browser), and escapes what comes
//! from the capture. Skips with a printed reason when chromium is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(rel)
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("iosan-html-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the page of `capture` and the number of bug findings of the same run.
fn page(capture: &Path, dir: &Path) -> (PathBuf, usize) {
    let html = dir.join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_iosan"))
        .args(["analyze", "--format", "json", "--html"])
        .arg(&html)
        .arg(capture)
        .output()
        .unwrap();
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&out.stderr));
    let bugs = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "finding" && v["bug"] == true)
        .count();
    (html, bugs)
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    })
}

/// Runs headless chromium with `args` on `html`; (stdout, stderr), or
/// `None` after a minute.
fn run_chromium(bin: &str, dir: &Path, args: &[String], html: &Path) -> Option<(String, String)> {
    let profile = dir.join("profile");
    let _ = std::fs::remove_file(dir.join("netlog.json"));
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--log-net-log={}", dir.join("netlog.json").display()))
        .args(args)
        .arg(format!("file://{}", html.display()))
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((
        std::fs::read_to_string(dir.join("stdout")).unwrap_or_default(),
        std::fs::read_to_string(dir.join("stderr")).unwrap_or_default(),
    ))
}

/// The URLs the page itself asked for, from chromium's net log: requests
/// whose network isolation key is the page's `file://` origin (the
/// browser's own background requests have other keys).
fn page_requests(dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(dir.join("netlog.json")) else { return Vec::new() };
    // Chromium may leave the log's closing brackets out when killed.
    let log: Value = serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(','))))
        .unwrap_or(Value::Null);
    let mut urls: Vec<String> = log["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["params"]["network_isolation_key"].as_str().is_some_and(|k| k.starts_with("file://")))
        .filter_map(|e| e["params"]["url"].as_str().map(str::to_string))
        .filter(|u| !u.starts_with("file:") && !u.starts_with("data:"))
        .collect();
    urls.dedup();
    urls
}

/// Nothing in the page names a resource elsewhere.
fn assert_self_contained(page: &str) {
    let elements = ["<script", "<link", "<img", "<iframe", "<object", "<embed", "<video", "<audio", "<source", "<b>"];
    for needle in ["http://", "https://", "src=\"", "href=\"", "@import", "url("].iter().chain(&elements) {
        assert!(!page.contains(needle), "the page contains {needle:?}");
    }
}

#[test]
fn bug_report_renders_in_headless_chromium() {
    let dir = tmp_dir("bug");
    let (html, bugs) = page(&fixture("captures/bug-strict.trace.txt.xz"), &dir);
    assert_eq!(bugs, 8);
    let text = std::fs::read_to_string(&html).unwrap();
    assert_self_contained(&text);
    assert_eq!(text.matches("<div class=\"card").count(), bugs);
    let Some(bin) = chromium() else {
        println!("skipped the rendering: no chromium (apt-get install chromium)");
        return;
    };
    let Some((dom, stderr)) = run_chromium(bin, &dir, &["--dump-dom".into()], &html) else {
        panic!("chromium --dump-dom did not finish in 90 s");
    };
    assert!(dom.contains(&format!("<span id=\"finding-count\">{bugs}</span>")), "{dom}");
    assert_eq!(dom.matches("<div class=\"card").count(), bugs, "one card per finding in the DOM");
    assert!(dom.contains("<svg"), "the timeline is in the DOM");
    for bad in ["net::ERR_", "Failed to load", "ERR_FILE_NOT_FOUND", "ERR_NAME_NOT_RESOLVED"] {
        assert!(!stderr.contains(bad), "chromium: {bad}\n{stderr}");
    }
    assert_eq!(page_requests(&dir), Vec::<String>::new(), "the page fetched something");
    // The net-log check sees a page that does fetch something.
    let control = dir.join("control.html");
    std::fs::write(&control, "<!DOCTYPE html><img src=\"http://iosan-test.invalid/x.png\"><p>x</p>").unwrap();
    run_chromium(bin, &dir, &["--dump-dom".into()], &control).expect("chromium on the control page");
    assert_eq!(page_requests(&dir), ["http://iosan-test.invalid/x.png"], "the net-log check works");
    let png = dir.join("report.png");
    let shot =
        run_chromium(bin, &dir, &[format!("--screenshot={}", png.display()), "--window-size=1280,2400".into()], &html);
    assert!(shot.is_some(), "chromium --screenshot did not finish in 90 s");
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000, "{} bytes", bytes.len());
}

/// Task names, device names and stack frames come from the capture: a
/// capture that puts markup in them gets text, not elements.
#[test]
fn strings_from_the_capture_are_escaped() {
    let dir = tmp_dir("escape");
    let capture = std::fs::read_to_string(fixture("captures/stacks.trace.txt"))
        .unwrap()
        .replace("insmod-196", "<img src=x onerror=alert(1)>-196")
        .replace("0000:00:02.0", "<b>dev&\"'</b>")
        .replace("uaf_release_early+0x3a/0x80 [uafdrv]", "</pre><script>alert(2)</script>");
    let path = dir.join("hostile.trace.txt");
    std::fs::write(&path, capture).unwrap();
    let (html, bugs) = page(&path, &dir);
    assert!(bugs >= 1);
    let text = std::fs::read_to_string(html).unwrap();
    assert_self_contained(&text);
    assert!(text.contains("&lt;img src=x onerror=alert(1)&gt;-196"), "{text}");
    assert!(text.contains("&lt;b&gt;dev&amp;&quot;&#39;&lt;/b&gt;"), "{text}");
    assert!(text.contains("&lt;/pre&gt;&lt;script&gt;alert(2)&lt;/script&gt;"), "{text}");
}
