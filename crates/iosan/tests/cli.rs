//! End-to-end tests of the `iosan` binary on the real captures and fixtures.
//!
//! Ground truth comes from the kernel module's own printk log in the
//! captures (see README, "Test data").

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iosan"))
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(rel)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("iosan-cli");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn decompressed(name: &str) -> &'static [u8] {
    static BUG: OnceLock<Vec<u8>> = OnceLock::new();
    static CLEAN: OnceLock<Vec<u8>> = OnceLock::new();
    let cell = if name.starts_with("bug") { &BUG } else { &CLEAN };
    cell.get_or_init(|| {
        let f = std::fs::File::open(fixture(&format!("captures/{name}.trace.txt.xz"))).unwrap();
        let mut v = Vec::new();
        xz2::read::XzDecoder::new(f).read_to_end(&mut v).unwrap();
        v
    })
}

/// Writes a copy of a capture without the lines whose event is in `drop`.
fn filtered(name: &str, tag: &str, drop: &dyn Fn(&str) -> bool) -> PathBuf {
    let out = tmp(&format!("{name}.{tag}.txt"));
    let text = String::from_utf8_lossy(decompressed(name));
    let mut w = std::io::BufWriter::new(std::fs::File::create(&out).unwrap());
    for line in text.lines() {
        let event = line.split(": ").nth(1).unwrap_or("");
        if !drop(event) {
            writeln!(w, "{line}").unwrap();
        }
    }
    w.flush().unwrap();
    out
}

/// The `lab:*` kprobe events of the captures (what a stock kernel lacks).
fn is_lab_kprobe(event: &str) -> bool {
    matches!(
        event,
        "iommu_attach"
            | "iommu_map"
            | "iommu_map_ret"
            | "iommu_unmap"
            | "iommu_unmap_ret"
            | "iommu_domain_free"
            | "fq_flush_timeout"
            | "fq_flush_iotlb"
    )
}

struct Run {
    code: i32,
    lines: Vec<Value>,
    stderr: String,
}

fn run_json(args: &[&str]) -> Run {
    let out = bin().args(args).args(["--format", "json"]).output().unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect();
    Run { code: out.status.code().unwrap_or(-1), lines, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

fn hex(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// (kind, first pfn, npages, device, iova) of a bug finding.
type BugKey = (String, u64, u64, Option<String>, Option<u64>);

/// Every bug finding.
fn bug_set(r: &Run) -> BTreeSet<BugKey> {
    r.lines
        .iter()
        .filter(|l| l["type"] == "finding" && l["bug"] == true)
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_string(),
                if l["pfn"].is_null() { 0 } else { hex(&l["pfn"]) },
                l["npages"].as_u64().unwrap(),
                l["device"].as_str().map(str::to_string),
                if l["iova"].is_null() { None } else { Some(hex(&l["iova"])) },
            )
        })
        .collect()
}

/// Every page reported freed or allocated while mapped, with device and IOVA.
fn pages(r: &Run) -> BTreeSet<(u64, Option<String>, u64)> {
    let mut out = BTreeSet::new();
    for l in r.lines.iter().filter(|l| l["type"] == "finding") {
        let k = l["kind"].as_str().unwrap();
        if k != "freed-while-mapped" && k != "allocated-while-mapped" {
            continue;
        }
        // A page counted as mapped with no mapping found has no IOVA.
        let (pfn, iova) = (hex(&l["pfn"]), if l["iova"].is_null() { u64::MAX } else { hex(&l["iova"]) });
        for i in 0..l["npages"].as_u64().unwrap() {
            out.insert((pfn + i, l["device"].as_str().map(str::to_string), iova.saturating_add(i * 4096)));
        }
    }
    out
}

/// The ground truth of the bug capture: 267 pages (B1..B5 in the module log).
fn ground_truth() -> BTreeSet<(u64, Option<String>, u64)> {
    let nvme = Some("0000:00:02.0".to_string());
    let mut gt = BTreeSet::new();
    gt.insert((0x123589, nvme.clone(), 0xfffbe000)); // B1: free without unmap
    for i in 0..4 {
        gt.insert((0x12375c + i, nvme.clone(), 0xffefc000 + i * 4096)); // B2: late unmap
    }
    for (pfn, iova) in [(0x1235af, 0xffefc000), (0x1235ae, 0xffefd000), (0x1235ad, 0xffefe000), (0x1235ac, 0xffeff000)]
    {
        gt.insert((pfn, nvme.clone(), iova)); // B3: sg pages freed one by one
    }
    for i in 0..2 {
        gt.insert((0x100ee6 + i, nvme.clone(), 0xffefa000 + i * 4096)); // B4: coherent freed behind the API
    }
    for i in 0..256 {
        gt.insert((0x123b00 + i, None, 0x40100000 + i * 4096)); // B5: unmanaged domain, half unmapped
    }
    gt
}

fn summary(r: &Run) -> &Value {
    r.lines.iter().find(|l| l["type"] == "summary").expect("summary line")
}

#[test]
fn bug_capture_reports_exactly_the_ground_truth() {
    let r = run_json(&["analyze", fixture("captures/bug-strict.trace.txt.xz").to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(pages(&r), ground_truth());
    // One finding per contiguous run with one cause; re-use is a follow-up, not a new finding.
    let bugs: Vec<&Value> = r.lines.iter().filter(|l| l["bug"] == true).collect();
    assert_eq!(bugs.len(), 8);
    let b1 = bugs.iter().find(|l| l["pfn"] == "0x123589").unwrap();
    // Streamed: the finding line comes at once, its follow-ups as their own lines.
    let ups: Vec<&Value> = r.lines.iter().filter(|l| l["type"] == "follow_up" && l["finding"] == b1["id"]).collect();
    assert_eq!(ups.len(), 14, "B1: 7 more frees and 7 re-allocations while mapped");
    assert_eq!(ups.last().unwrap()["count"], 14);
    assert_eq!(b1["mapped_at"].as_f64(), Some(10.889163));
    assert_eq!(b1["domain"], "0xffff888101f5d4a0");
    assert!(bugs.iter().all(|l| l["confirmed"] == true && l["schema_version"] == 2));
    let b5 = bugs.iter().find(|l| l["pfn"] == "0x123b00").unwrap();
    assert_eq!(b5["domain"], "0xffff888100eb34a0");
    assert_eq!(b5["npages"], 256);
    let s = summary(&r);
    assert_eq!(s["events"], 228301);
    assert_eq!(s["mode"], "strict");
    assert_eq!(s["free_batched_ignored"], 13305);
    assert!(s["skipped"].as_object().unwrap().is_empty());
    // Pages still mapped at the end: 4096 (ISA window) + 285 + 4 + 4 + 47.
    let live: u64 = s["live_at_end"].as_array().unwrap().iter().map(|g| g["bytes"].as_u64().unwrap() / 4096).sum();
    assert_eq!(live, 4436);
}

#[test]
fn clean_capture_reports_no_bug() {
    let r = run_json(&["analyze", fixture("captures/clean-strict.trace.txt.xz").to_str().unwrap()]);
    assert_eq!(r.code, 0);
    assert!(bug_set(&r).is_empty(), "{:?}", bug_set(&r));
    let live: u64 =
        summary(&r)["live_at_end"].as_array().unwrap().iter().map(|g| g["bytes"].as_u64().unwrap() / 4096).sum();
    assert_eq!(live, 4446);
}

#[test]
fn stock_kernel_without_kprobes_gives_the_same_findings() {
    for name in ["bug-strict", "clean-strict"] {
        let path = filtered(name, "stock", &is_lab_kprobe);
        let r = run_json(&["analyze", path.to_str().unwrap()]);
        if name == "bug-strict" {
            assert_eq!(pages(&r), ground_truth());
            assert_eq!(bug_set(&r).len(), 8);
            let s = summary(&r);
            assert_eq!(s["attribution"]["maps"]["kprobe"], 0);
        } else {
            assert!(bug_set(&r).is_empty(), "{:?}", bug_set(&r));
        }
    }
}

#[test]
fn kernel_without_dma_events_still_finds_them_from_vtd_domain_ids() {
    for name in ["bug-strict", "clean-strict"] {
        let path = filtered(name, "nodma", &|e| is_lab_kprobe(e) || e.starts_with("dma_"));
        let r = run_json(&["analyze", path.to_str().unwrap()]);
        if name == "bug-strict" {
            assert_eq!(pages(&r), ground_truth());
        } else {
            assert!(bug_set(&r).is_empty(), "{:?}", bug_set(&r));
        }
    }
}

#[test]
fn iommu_and_kmem_events_alone_still_find_every_page() {
    // No kprobes, no dma:*, no intel_iommu: one anonymous IOVA space. On these
    // captures IOVAs collide across domains, so this is the weakest mode: every
    // ground-truth page must still be reported, and the summary says what was lost.
    let path = filtered("bug-strict", "bare", &|e| {
        is_lab_kprobe(e) || e.starts_with("dma_") || e.starts_with("cache_tag") || e == "qi_submit"
    });
    let r = run_json(&["analyze", path.to_str().unwrap()]);
    let found: BTreeSet<u64> = pages(&r).into_iter().map(|p| p.0).collect();
    for (pfn, ..) in ground_truth() {
        assert!(found.contains(&pfn), "pfn {pfn:#x} missing");
    }
    assert_eq!(summary(&r)["anonymous_space_used"], true);
    // Guessed attribution is reported as such and never counts as a bug.
    let clean = filtered("clean-strict", "bare", &|e| {
        is_lab_kprobe(e) || e.starts_with("dma_") || e.starts_with("cache_tag") || e == "qi_submit"
    });
    let r = run_json(&["analyze", clean.to_str().unwrap()]);
    assert_eq!(r.code, 0);
    assert!(bug_set(&r).is_empty());
    assert!(r
        .lines
        .iter()
        .filter(|l| l["type"] == "finding" && l["kind"] == "freed-while-mapped")
        .all(|l| l["doubt"] == "attribution"));
}

#[test]
fn trace_cmd_report_text_gives_the_same_findings() {
    let text = run_json(&["analyze", fixture("captures/bug-strict.trace.txt.xz").to_str().unwrap()]);
    let report = run_json(&["analyze", fixture("captures/bug-strict.trace-cmd-report.txt.xz").to_str().unwrap()]);
    assert_eq!(bug_set(&text), bug_set(&report));
}

#[test]
fn trace_cmd_binary_conversion_matches_when_installed() {
    let Ok(out) = Command::new("trace-cmd")
        .args(["report", "-i"])
        .arg(fixture("captures/bug-strict.trace.dat"))
        .stderr(Stdio::null())
        .output()
    else {
        println!("SKIPPED: trace-cmd is not installed (apt-get install trace-cmd)");
        return;
    };
    let path = tmp("report-from-dat.txt");
    std::fs::write(&path, &out.stdout).unwrap();
    let report = run_json(&["analyze", path.to_str().unwrap()]);
    assert_eq!(pages(&report), ground_truth());
}

#[test]
fn upstream_semantics_answers_what_the_kernel_would_report() {
    let r = run_json(&[
        "analyze",
        "--semantics",
        "upstream",
        fixture("captures/bug-strict.trace.txt.xz").to_str().unwrap(),
    ]);
    assert_eq!(summary(&r)["semantics"], "upstream");
    // With a 4 KiB granule on 4 KiB pages the kernel finds the same pages...
    assert_eq!(
        pages(&r).into_iter().map(|p| p.0).collect::<BTreeSet<_>>(),
        ground_truth().into_iter().map(|p| p.0).collect()
    );
    // ...and WARNs at boot on the ISA identity map at physical address 0 (WARN_ON(!phys)).
    let inv: Vec<&Value> = r.lines.iter().filter(|l| l["kind"] == "invalid-map-args").collect();
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0]["iova"], "0x0");
}

#[test]
fn stdin_and_compressed_inputs() {
    let raw = decompressed("bug-strict");
    let gz = tmp("bug.txt.gz");
    let mut e = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    e.write_all(raw).unwrap();
    e.finish().unwrap();
    let zst = tmp("bug.txt.zst");
    std::fs::write(&zst, zstd::encode_all(raw, 1).unwrap()).unwrap();
    for p in [&gz, &zst] {
        assert_eq!(pages(&run_json(&["analyze", p.to_str().unwrap()])), ground_truth(), "{}", p.display());
    }
    let mut child =
        bin().args(["analyze", "-", "--format", "json"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(raw));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let n = String::from_utf8(out.stdout).unwrap().lines().filter(|l| l.contains("\"bug\":true")).count();
    assert_eq!(n, 8);
}

#[test]
fn errors_exit_2_and_name_the_file() {
    let out = bin().args(["analyze", "/nonexistent/capture.txt"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/capture.txt"));
    let out = bin().args(["analyze", "--page-size", "8192", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `iosan analyze FILE` on `bytes` and returns (exit code, stderr).
fn analyze_bytes(name: &str, bytes: &[u8]) -> (Option<i32>, String) {
    let path = tmp(name);
    std::fs::write(&path, bytes).unwrap();
    let out = bin().args(["analyze", "--format", "json", path.to_str().unwrap()]).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn inputs_that_cannot_show_a_bug_exit_2_and_say_what_is_missing() {
    let page_free = "  a-1 [000] ..... 1.000000: mm_page_free: page=0000000011111111 pfn=0x1000 order=0\n";
    let map = "  a-1 [000] ..... 0.500000: map: IOMMU: iova=0x00000000fffbe000 - 0x00000000fffbf000 paddr=0x0000000001000000 size=4096\n";
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("empty.txt", Vec::new(), "the input is empty"),
        ("garbage.bin", b"\x00\xff\xfe not a trace\r\n[000] 1.0: x\n   \n".to_vec(), "binary file"),
        ("words.txt", b"hello world\nthis is not a trace\n".to_vec(), "no event iosan recognises"),
        ("no-pages.txt", map.as_bytes().to_vec(), "no page allocator events"),
        ("no-maps.txt", page_free.as_bytes().to_vec(), "no map events"),
    ];
    for (name, bytes, why) in cases {
        let (code, err) = analyze_bytes(name, &bytes);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(err.contains(why) && err.contains("iosan record"), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: said once: {err}");
    }
    // Maps and frees but no unmaps: a verdict, with the blind spot named.
    let r = run_json(&[
        "analyze",
        {
            let p = tmp("no-unmaps.txt");
            std::fs::write(&p, format!("{map}{page_free}")).unwrap();
            p
        }
        .to_str()
        .unwrap(),
    ]);
    assert_eq!(r.code, 1);
    let spots = summary(&r)["blind_spots"].as_array().unwrap().clone();
    assert!(spots.iter().any(|b| b["key"] == "no-unmaps"), "{spots:?}");
}

#[test]
fn a_missing_file_is_named_once() {
    let out = bin().args(["analyze", "/nonexistent/capture.txt"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(err.matches("/nonexistent/capture.txt").count(), 1, "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

#[test]
fn closed_stdout_is_not_an_error() {
    let mut child = bin().args(["demo"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    out.read_exact(&mut first).unwrap();
    drop(out);
    let res = child.wait_with_output().unwrap();
    assert_eq!(res.status.code(), Some(1), "{}", String::from_utf8_lossy(&res.stderr));
    assert!(res.stderr.is_empty(), "{}", String::from_utf8_lossy(&res.stderr));
}

#[test]
fn demo_shows_a_real_finding() {
    let out = bin().args(["demo", "--color", "never"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("freed-while-mapped"));
    assert!(text.contains("0000:00:02.0"));
    assert!(text.contains("8 findings covering 267 pages"));
}

fn golden(name: &str, actual: &str) {
    let path = fixture(&format!("golden/{name}"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(actual, expected, "golden {name} differs (UPDATE_GOLDEN=1 to accept)");
}

#[test]
fn golden_human_and_json_output() {
    let input = fixture("golden/small.trace.txt");
    let out = bin().args(["analyze", "--color", "never"]).arg(&input).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let human = String::from_utf8(out.stdout).unwrap().replace(input.to_str().unwrap(), "small.trace.txt");
    golden("small.human.txt", &human);
    let out = bin().args(["analyze", "--format", "json"]).arg(&input).output().unwrap();
    let json = String::from_utf8(out.stdout).unwrap().replace(input.to_str().unwrap(), "small.trace.txt");
    golden("small.jsonl", &json);
}

#[test]
fn simulate_list_and_exit_codes() {
    let out = bin().args(["simulate", "--list"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let workloads: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("workload ")?.split_whitespace().next()).collect();
    let bugs: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("bug ")?.split_whitespace().next()).collect();
    assert!(workloads.len() >= 3 && bugs.len() >= 5, "{text}");
    for w in &workloads {
        for lazy in [false, true] {
            let mut args = vec!["simulate", "--workload", w];
            if lazy {
                args.push("--lazy");
            }
            let r = run_json(&args);
            assert_eq!(r.code, 0, "clean workload {w} lazy={lazy}: {:?}", bug_set(&r));
        }
    }
    for b in &bugs {
        let r = run_json(&["simulate", "--bug", b]);
        assert_eq!(r.code, 1, "bug {b}");
        assert!(!bug_set(&r).is_empty());
    }
    let out = bin().args(["simulate", "--bug", "no-such-bug"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Model → trace text → analyze: the same findings as the model's own sanitizer.
#[test]
fn model_round_trip_gives_the_same_findings() {
    let out = bin().args(["simulate", "--list"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut cases: Vec<Vec<String>> = Vec::new();
    for l in text.lines() {
        let mut it = l.split_whitespace();
        match (it.next(), it.next()) {
            (Some("workload"), Some(w)) => {
                cases.push(vec!["--workload".into(), w.into()]);
                cases.push(vec!["--workload".into(), w.into(), "--lazy".into()]);
            }
            (Some("bug"), Some(b)) => {
                cases.push(vec!["--bug".into(), b.into()]);
                cases.push(vec!["--bug".into(), b.into(), "--no-kprobes".into()]);
            }
            _ => {}
        }
    }
    for (i, case) in cases.iter().enumerate() {
        let trace = tmp(&format!("roundtrip-{i}.txt"));
        let mut args: Vec<&str> = vec!["simulate", "--seed", "7", "--trace-out", trace.to_str().unwrap()];
        args.extend(case.iter().map(String::as_str));
        let model = run_json(&args);
        let replay = run_json(&["analyze", trace.to_str().unwrap()]);
        assert_eq!(model.code, replay.code, "{case:?}");
        // Page findings: same pages, devices, IOVAs.
        assert_eq!(pages(&model), pages(&replay), "{case:?}");
        // Other bug kinds: same kinds.
        let kinds = |r: &Run| {
            r.lines
                .iter()
                .filter(|l| l["bug"] == true)
                .map(|l| l["kind"].as_str().unwrap().to_string())
                .collect::<BTreeSet<_>>()
        };
        let (mk, rk) = (kinds(&model), kinds(&replay));
        // With or without kprobes: device removal is a stock tracepoint.
        assert_eq!(mk, rk, "{case:?}");
        if case.iter().any(|c| c == "--lazy") {
            let me = &summary(&model)["exposure"];
            let re = &summary(&replay)["exposure"];
            assert_eq!(me["pages"], re["pages"], "{case:?}");
        }
    }
}

/// Ground truth of a capture made by `iosan record` around the e2e test
/// module: its `iosan_uaf: LEAK|GOOD case=.. dev=.. pfn=0x.. npages=..`
/// printk lines, recorded in the trace as `console` events.
fn module_truth(text: &str) -> (BTreeSet<(u64, Option<String>)>, BTreeSet<u64>) {
    let (mut leak, mut good) = (BTreeSet::new(), BTreeSet::new());
    for line in text.lines() {
        let Some(rest) = line.split("iosan_uaf: ").nth(1) else { continue };
        let field = |k: &str| rest.split_whitespace().find_map(|t| t.strip_prefix(k)).map(str::to_string);
        let (Some(pfn), Some(n)) = (field("pfn=0x"), field("npages=")) else { continue };
        let (pfn, n) = (u64::from_str_radix(&pfn, 16).unwrap(), n.parse::<u64>().unwrap());
        let dev = field("dev=").filter(|d| d != "none");
        for p in pfn..pfn + n {
            if rest.starts_with("LEAK") {
                leak.insert((p, dev.clone()));
            } else if rest.starts_with("GOOD") {
                good.insert(p);
            }
        }
    }
    (leak, good)
}

/// Real captures written by `iosan record` (Linux 6.12 under QEMU VT-d, strict
/// and lazy; the capture starts after boot, so no attach events), with and
/// without the domain kprobes.
#[test]
fn iosan_record_captures_strict_and_lazy() {
    for mode in ["strict", "lazy"] {
        let f = std::fs::File::open(fixture(&format!("captures/record-{mode}.capture.txt.xz"))).unwrap();
        let mut text = String::new();
        xz2::read::XzDecoder::new(f).read_to_string(&mut text).unwrap();
        let (leak, good) = module_truth(&text);
        assert!(leak.len() >= 260, "{mode}: {} leak pages", leak.len());
        let full = tmp(&format!("record-{mode}.txt"));
        std::fs::write(&full, &text).unwrap();
        let stock = tmp(&format!("record-{mode}.stock.txt"));
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                !l.contains("(__iommu_")
                    && !l.contains("(iommu_domain_free")
                    && !l.contains("(fq_flush_")
                    && !l.contains("(iommu_map")
                    && !l.contains("(__iommu_dma_unmap")
            })
            .collect();
        std::fs::write(&stock, kept.join("\n")).unwrap();
        for (variant, path) in [("kprobes", &full), ("stock", &stock)] {
            let r = run_json(&["analyze", path.to_str().unwrap()]);
            assert_eq!(r.code, 1, "{mode}/{variant}");
            let reported: BTreeSet<(u64, Option<String>)> = pages(&r).into_iter().map(|(p, d, _)| (p, d)).collect();
            for l in &leak {
                assert!(reported.contains(l), "{mode}/{variant}: {l:?} not reported");
            }
            // Nothing else: every bug page is a ground-truth leak, none is a correctly handled page.
            let leak_pfns: BTreeSet<u64> = leak.iter().map(|l| l.0).collect();
            for (p, ..) in pages(&r) {
                assert!(leak_pfns.contains(&p), "{mode}/{variant}: unexplained finding on pfn {p:#x}");
                assert!(
                    !good.contains(&p) || leak_pfns.contains(&p),
                    "{mode}/{variant}: finding on correct page {p:#x}"
                );
            }
            let s = summary(&r);
            assert_eq!(s["mode"], mode, "{mode}/{variant}");
            let exposed = s["exposure"]["pages"].as_u64().unwrap();
            if mode == "lazy" {
                assert!(exposed > 100, "lazy exposure {exposed}");
            } else {
                assert_eq!(exposed, 0, "strict exposure");
            }
            assert_eq!(s["meta"]["iommu_mode"], mode);
        }
    }
}

/// Per-CPU parts of one capture, merged by timestamp, give the whole capture's findings.
#[test]
fn merge_per_cpu_parts() {
    let text = String::from_utf8_lossy(decompressed("bug-strict")).into_owned();
    let (mut cpu0, mut cpu1) = (String::new(), String::new());
    for l in text.lines() {
        let target = if l.contains("] ") && l.split('[').nth(1).is_some_and(|c| c.starts_with("001]")) {
            &mut cpu1
        } else {
            &mut cpu0
        };
        target.push_str(l);
        target.push('\n');
    }
    let (p0, p1) = (tmp("cpu0.txt"), tmp("cpu1.txt"));
    std::fs::write(&p0, cpu0).unwrap();
    std::fs::write(&p1, cpu1).unwrap();
    let r = run_json(&["analyze", "--merge", p1.to_str().unwrap(), p0.to_str().unwrap()]);
    assert_eq!(pages(&r), ground_truth());
    assert_eq!(r.lines.iter().filter(|l| l["type"] == "summary").count(), 1);
}
