//! One result whatever the format: the same capture as ftrace text,
//! `trace-cmd report` text and trace.dat gives the same findings; the
//! model's runs written as text and as trace.dat give the same findings.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iosan"))
}

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(rel)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("iosan-formats");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// (kind, pfn, npages, device, iova, time) of every finding of a bug kind, and the exit code.
fn findings(args: &[&str]) -> (i32, Vec<String>) {
    let out = bin().arg("analyze").args(args).args(["--format", "json"]).output().unwrap();
    let mut v: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|f| f["type"] == "finding" && f["kind"] != "mapped-at-end")
        .map(|f| format!("{} {} {} {} {} {}", f["kind"], f["pfn"], f["npages"], f["device"], f["iova"], f["time"]))
        .collect();
    v.sort();
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn trace_dat_report_text_and_ftrace_text_agree_on_the_bug_capture() {
    let text = findings(&[fixture("captures/bug-strict.trace.txt.xz").to_str().unwrap()]);
    let report = findings(&[fixture("captures/bug-strict.trace-cmd-report.txt.xz").to_str().unwrap()]);
    let dat = findings(&[fixture("captures/bug-strict.trace.dat").to_str().unwrap()]);
    assert_eq!(text.0, 1);
    assert!(text.1.iter().filter(|f| f.starts_with("\"freed-while-mapped\"")).count() >= 8, "{:?}", text.1);
    assert_eq!(text, report, "trace-cmd report text");
    assert_eq!(text, dat, "trace.dat");
}

#[test]
fn a_compressed_or_piped_trace_dat_reads_the_same() {
    let plain = fixture("captures/bug-strict.trace.dat");
    let dat = findings(&[plain.to_str().unwrap()]);
    let zst = tmp("bug.trace.dat.zst");
    let bytes = std::fs::read(&plain).unwrap();
    std::fs::write(&zst, zstd::encode_all(&bytes[..], 3).unwrap()).unwrap();
    assert_eq!(findings(&[zst.to_str().unwrap()]), dat, "zstd-compressed");
    let out =
        bin().args(["analyze", "-", "--format", "json"]).stdin(std::fs::File::open(&plain).unwrap()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let n = String::from_utf8(out.stdout).unwrap().lines().filter(|l| l.contains("\"bug\":true")).count();
    assert!(n >= 8, "stdin read: {n} bug findings");
}

#[test]
fn the_real_arm64_trace_dat_reaches_its_ground_truth() {
    // The module's LEAK lines: pfn=0x... npages=N, each page must be reported.
    let mut truth = std::collections::BTreeSet::new();
    for l in std::fs::read_to_string(fixture("captures/arm64-strict.truth")).unwrap().lines() {
        if !l.contains(" LEAK ") {
            continue;
        }
        let word = |k: &str| l.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string);
        let pfn = u64::from_str_radix(word("pfn=0x").unwrap().as_str(), 16).unwrap();
        let n: u64 = word("npages=").unwrap().parse().unwrap();
        truth.extend(pfn..pfn + n);
    }
    assert!(truth.len() >= 200, "{}", truth.len());
    let out = bin()
        .args(["analyze", "--format", "json", fixture("captures/arm64-strict.trace.dat").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let mut pages = std::collections::BTreeSet::new();
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Value = serde_json::from_str(l).unwrap();
        if f["type"] == "finding" && f["bug"] == true && f["kind"] == "freed-while-mapped" {
            let pfn = u64::from_str_radix(f["pfn"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
            for p in pfn..pfn + f["npages"].as_u64().unwrap() {
                pages.insert(p);
            }
        }
    }
    let missed: Vec<_> = truth.difference(&pages).collect();
    assert!(missed.is_empty(), "missed {missed:x?}");
}

#[test]
fn the_model_gives_the_same_findings_as_text_and_as_trace_dat() {
    let list = bin().args(["simulate", "--list"]).output().unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    let mut runs: Vec<Vec<String>> = Vec::new();
    for l in list.lines() {
        let mut w = l.split_whitespace();
        match (w.next(), w.next()) {
            (Some("workload"), Some(n)) => runs.push(vec!["--workload".into(), n.into()]),
            (Some("bug"), Some(n)) => runs.push(vec!["--bug".into(), n.into()]),
            _ => {}
        }
    }
    assert!(runs.len() >= 8);
    // A 16 KiB-page kernel: the trace.dat header states the page size, the text does not.
    runs.push(["--bug", "free-before-unmap", "--iommu", "arm-16k", "--page-size", "16384"].map(String::from).to_vec());
    for (i, run) in runs.iter().enumerate() {
        for lazy in [false, true] {
            let txt = tmp(&format!("m{i}{lazy}.txt"));
            let dat = tmp(&format!("m{i}{lazy}.dat"));
            for (path, format) in [(&txt, "text"), (&dat, "trace.dat")] {
                let mut c = bin();
                c.arg("simulate").args(run).args(["--trace-out", path.to_str().unwrap(), "--trace-format", format]);
                if lazy {
                    c.arg("--lazy");
                }
                let st = c.output().unwrap();
                assert!(st.status.code().is_some_and(|c| c < 2), "{run:?}: {}", String::from_utf8_lossy(&st.stderr));
            }
            let page = run.iter().skip_while(|a| *a != "--page-size").nth(1).map_or("4096", String::as_str);
            let a = findings(&[txt.to_str().unwrap(), "--page-size", page]);
            let b = findings(&[dat.to_str().unwrap()]);
            assert_eq!(a, b, "{run:?} lazy={lazy}");
        }
    }
}

#[test]
fn a_16k_capture_without_metadata_gets_its_page_size_from_its_events() {
    let text = {
        let out = Command::new("xz").args(["-dc"]).arg(fixture("captures/arm64-16k-strict.capture.txt.xz")).output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap(),
            _ => {
                println!("skipped: xz not installed");
                return;
            }
        }
    };
    // Neither the recorder's metadata nor the kernel's release name may tell.
    let bare: String = text
        .lines()
        .filter(|l| !l.starts_with("# iosan-meta:") && !l.contains("16k"))
        .flat_map(|l| [l, "\n"])
        .collect();
    let path = tmp("16k-bare.txt");
    std::fs::write(&path, bare).unwrap();
    let out = bin().args(["analyze", "--format", "json", path.to_str().unwrap()]).output().unwrap();
    let summary = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["type"] == "summary")
        .unwrap();
    assert_eq!(summary["page_size"]["bytes"], 16384, "{}", summary["page_size"]);
    assert_eq!(out.status.code(), Some(1));
}
