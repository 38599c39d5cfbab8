//! `--perfetto`: the trace is decoded by an independent reader, the PyPI
//! `perfetto` package's protobuf bindings (`tests/perfetto/check_trace.py`),
//! and every bug finding of the same run's JSON must be an instant on its
//! device's track, at its time, with its pfn, IOVA and device. Skips with a
//! printed reason when python3 or the module is missing
//! (`pip install perfetto protobuf`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(rel)
}

fn check(capture: &str) {
    let dir = std::env::temp_dir().join(format!("iosan-perfetto-{}-{}", std::process::id(), capture.replace('/', "_")));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("report.pftrace");
    let out = Command::new(env!("CARGO_BIN_EXE_iosan"))
        .args(["analyze", "--format", "json", "--perfetto"])
        .arg(&trace)
        .arg(fixture(capture))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let findings = dir.join("findings.jsonl");
    std::fs::write(&findings, &out.stdout).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/perfetto/check_trace.py");
    let run = match Command::new("python3").arg(&script).arg(&trace).arg(&findings).output() {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            println!("skipped: python3 not runnable ({e})");
            return;
        }
    };
    let said = String::from_utf8_lossy(&run.stdout);
    let code = run.status.code();
    let _ = std::fs::remove_dir_all(&dir);
    match code {
        Some(0) => println!("{said}"),
        Some(77) => println!("skipped: {said} (pip install perfetto protobuf)"),
        _ => panic!("{said}{}", String::from_utf8_lossy(&run.stderr)),
    }
}

#[test]
fn bug_capture_findings_are_instants_on_their_device_tracks() {
    check("captures/bug-strict.trace.txt.xz");
}

#[test]
fn stacks_capture_has_mapping_slices_and_findings() {
    check("captures/stacks.trace.txt");
}

/// Lazy mode: the summary keeps the longest exposure windows per domain,
/// the longest of them is the summary's longest window, and each is a
/// slice of the Perfetto trace.
#[test]
fn lazy_exposure_windows() {
    let dir = std::env::temp_dir().join(format!("iosan-perfetto-lazy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("lazy.pftrace");
    let out = Command::new(env!("CARGO_BIN_EXE_iosan"))
        .args(["analyze", "--format", "json", "--perfetto"])
        .arg(&trace)
        .arg(fixture("captures/record-lazy.capture.txt.xz"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let windows = summary["exposure_windows"].as_array().unwrap();
    assert!(!windows.is_empty());
    let longest =
        windows.iter().map(|w| w["flushed"].as_f64().unwrap() - w["freed"].as_f64().unwrap()).fold(0.0_f64, f64::max);
    let want = summary["exposure"]["longest_window_s"].as_f64().unwrap();
    assert!((longest - want).abs() < 2e-6, "{longest} vs {want}");
    let mut per_domain = std::collections::BTreeMap::new();
    for w in windows {
        *per_domain.entry(w["domain"].to_string()).or_insert(0) += 1;
    }
    assert!(per_domain.values().all(|&n| n <= 8), "{per_domain:?}");
    // Each window is a slice named after its pages: the name is in the trace.
    let bytes = std::fs::read(&trace).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let name = b"pages freed before their IOTLB flush";
    let slices = bytes.windows(name.len()).filter(|w| *w == name).count();
    assert_eq!(slices, windows.len() + 1, "one slice per window and the totals' instant");
}
