//! `iosan analyze -` prints a decided finding while its input is still open.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(rel)
}

#[test]
fn a_finding_arrives_before_a_stalled_input_ends() {
    let text = std::fs::read_to_string(fixture("golden/small.trace.txt")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Line 14 frees a page that is still mapped: the capture so far decides it.
    let bug_line = lines.iter().position(|l| l.contains("mm_page_free") && l.contains("0x123589")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_iosan"))
        .args(["analyze", "--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    for l in &lines[..=bug_line] {
        writeln!(stdin, "{l}").unwrap();
    }
    stdin.flush().unwrap();
    // The input now stalls: the finding must come anyway (generous timeout, not a speed test).
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(v) if v["kind"] == "freed-while-mapped" => break v,
            Ok(v) => assert_ne!(v["type"], "summary", "summary before the input ended"),
            Err(e) => panic!("no finding while the input stalled: {e}"),
        }
    };
    assert_eq!(found["pfn"], "0x123589");
    assert_eq!(found["bug"], true);
    assert!(child.try_wait().unwrap().is_none(), "iosan ended before its input did");
    for l in &lines[bug_line + 1..] {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    let rest: Vec<Value> = rx.iter().collect();
    reader.join().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let last = rest.last().expect("lines after the input ended");
    assert_eq!(last["type"], "summary");
    assert_eq!(last["findings"]["freed-while-mapped"], 1);
    assert!(rest.iter().any(|v| v["type"] == "follow_up" && v["finding"] == found["id"]));
}

#[test]
fn watch_without_tracefs_exits_2_and_says_why() {
    let root = std::env::temp_dir().join("iosan-watch-no-tracefs");
    std::fs::create_dir_all(&root).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iosan"))
        .args(["watch", "--duration", "1", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tracefs is not available"), "{err}");
    assert!(out.stdout.is_empty());
}
