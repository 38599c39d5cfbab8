//! The e2e `vtd-perf` capture: a perf.data that Debian's `perf record`
//! (6.12.95, `-z`) wrote in the QEMU guest (VT-d, strict) while the
//! iosan_uaf module ran, and its pipe-mode twin recorded at the same time,
//! analyzed natively and held against the module's ground truth
//! (`fixtures/captures/vtd-perf.truth`), as `e2e/check.py` would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Kinds that report a page freed or reallocated under a mapping.
const HIT_KINDS: &[&str] = &["freed-while-mapped", "allocated-while-mapped"];
/// Kinds that claim a bug (check.py's BUG_KINDS).
const BUG_KINDS: &[&str] = &[
    "freed-while-mapped",
    "allocated-while-mapped",
    "double-unmap",
    "unmap-overlaps-unmapped",
    "refcount-underflow",
    "refcount-overflow",
    "invalid-map-args",
    "leak-at-teardown",
    "dma-unmap-mismatch",
];

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captures").join(rel)
}

/// One `iosan_uaf: LEAK|GOOD case=.. dev=.. pfn=0x.. npages=.. dma=0x..` line.
#[derive(Debug)]
struct Truth {
    leak: bool,
    case: String,
    /// `None`: a domain attached to no device (`dev=none`).
    dev: Option<String>,
    pfn: u64,
    npages: u64,
}

fn parse_truth(text: &str) -> Vec<Truth> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("iosan_uaf: ") else { continue };
        let (verdict, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if verdict != "LEAK" && verdict != "GOOD" {
            continue;
        }
        let field = |k: &str| {
            rest.split(' ')
                .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .unwrap_or_else(|| panic!("no {k}= in {line}"))
        };
        let hex = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap();
        out.push(Truth {
            leak: verdict == "LEAK",
            case: field("case").to_string(),
            dev: Some(field("dev")).filter(|d| *d != "none").map(str::to_string),
            pfn: hex(field("pfn")),
            npages: field("npages").parse().unwrap(),
        });
    }
    out
}

struct Finding {
    kind: String,
    pfn: u64,
    npages: u64,
    device: Option<String>,
}

fn analyze(path: &Path) -> (Vec<Finding>, Value) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_iosan")).args(["analyze", "--format", "json"]).arg(path).output().unwrap();
    assert!(out.status.code().is_some_and(|c| c < 2), "iosan failed: {}", String::from_utf8_lossy(&out.stderr));
    let (mut findings, mut summary) = (Vec::new(), Value::Null);
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        match v["type"].as_str() {
            Some("finding") => findings.push(Finding {
                kind: v["kind"].as_str().unwrap().to_string(),
                pfn: if v["pfn"].is_null() {
                    0
                } else {
                    u64::from_str_radix(v["pfn"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
                },
                npages: v["npages"].as_u64().unwrap_or(1).max(1),
                device: v["device"].as_str().map(str::to_string),
            }),
            Some("summary") => summary = v,
            _ => {}
        }
    }
    (findings, summary)
}

fn is_bdf(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.'
}

/// Every LEAK page found against its device, no bug on a GOOD page, no
/// bug elsewhere, nothing lost: what check.py demands of the live leg.
fn check(capture: &str) {
    let truth = parse_truth(&std::fs::read_to_string(fixture("vtd-perf.truth")).unwrap());
    let (findings, summary) = analyze(&fixture(capture));
    assert_eq!(summary["lost_events"].as_u64(), Some(0), "{summary}");
    // Every sample is a known event: the return probes too, which perf
    // records with no kallsyms to name their function.
    assert_eq!(summary["unknown_events"].as_u64(), Some(0), "{}", summary["unknown_by_name"]);
    assert!(summary["events_by_kind"]["kretprobe:__iommu_map"].as_u64() > Some(1000), "{summary}");

    let mut leak_pages: BTreeMap<u64, Vec<&Truth>> = BTreeMap::new();
    for t in truth.iter().filter(|t| t.leak) {
        for p in t.pfn..t.pfn + t.npages {
            leak_pages.entry(p).or_default().push(t);
        }
    }
    let good_pages: BTreeMap<u64, &Truth> = truth
        .iter()
        .filter(|t| !t.leak)
        .flat_map(|t| (t.pfn..t.pfn + t.npages).map(move |p| (p, t)))
        .filter(|(p, _)| !leak_pages.contains_key(p))
        .collect();
    let cases: BTreeSet<&str> = leak_pages.values().flatten().map(|t| t.case.as_str()).collect();
    assert!(cases.len() >= 5 && leak_pages.len() >= 266, "truth: {} pages in {cases:?}", leak_pages.len());

    let covering = |p: u64, kinds: &[&str]| -> Vec<&Finding> {
        findings.iter().filter(|f| kinds.contains(&f.kind.as_str()) && (f.pfn..f.pfn + f.npages).contains(&p)).collect()
    };
    let mut problems = Vec::new();
    for (&p, entries) in &leak_pages {
        let hits = covering(p, HIT_KINDS);
        for t in entries {
            let ok = match &t.dev {
                None => hits.iter().any(|f| f.device.as_deref().is_none_or(|d| !is_bdf(d))),
                Some(d) => hits.iter().any(|f| f.device.as_deref() == Some(d)),
            };
            if !ok {
                problems.push(format!("LEAK pfn {p:#x} ({}, dev {:?}) not reported against its device", t.case, t.dev));
            }
        }
    }
    for (&p, t) in &good_pages {
        if !covering(p, BUG_KINDS).is_empty() {
            problems.push(format!("GOOD pfn {p:#x} ({}) reported", t.case));
        }
    }
    for f in findings.iter().filter(|f| BUG_KINDS.contains(&f.kind.as_str())) {
        if !(f.pfn..f.pfn + f.npages).any(|p| leak_pages.contains_key(&p)) {
            problems.push(format!("unexplained {} pfn {:#x} npages {} device {:?}", f.kind, f.pfn, f.npages, f.device));
        }
    }
    assert!(problems.is_empty(), "{capture}: {} problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn guest_perf_data_gives_the_module_ground_truth() {
    check("vtd-perf.perf.data");
}

/// The same recording by a second perf in pipe mode (`perf record -o -`,
/// uncompressed records; the fixture is xz-compressed): streamed, not seeked.
#[test]
fn guest_pipe_mode_perf_data_gives_it_too() {
    check("vtd-perf.pipe.perf.data.xz");
}

/// The same fix seen from trace.dat: trace-cmd's kallsyms names entry
/// probes by `__probe_ip`, and a return probe keeps its `__probe_func`.
#[test]
fn trace_dat_return_probes_are_known_too() {
    let (_, summary) = analyze(&fixture("arm64-strict.trace.dat"));
    assert_eq!(summary["unknown_events"].as_u64(), Some(0), "{}", summary["unknown_by_name"]);
    assert!(summary["events_by_kind"]["kretprobe:__iommu_unmap"].as_u64() > Some(1000), "{summary}");
}

#[test]
fn truth_lines_parse() {
    let t =
        parse_truth("x\niosan_uaf: LEAK case=a dev=none pfn=0x1f npages=2 dma=0x40000000\niosan_uaf: NOTE case=a\n");
    assert_eq!(t.len(), 1);
    assert!(t[0].leak && t[0].dev.is_none() && t[0].pfn == 0x1f && t[0].npages == 2);
}
