//! The trace.dat reader on real captures, against independent readings:
//! - x86 (`bug-strict.trace.dat`, v7 zstd): the stored `trace-cmd report`
//!   text (µs), and live `trace-cmd report -t` (ns) when trace-cmd is
//!   installed; the same file converted by trace-cmd to v6 and to
//!   uncompressed v7 must read identically;
//! - arm64 (`arm64-bug-strict.trace.dat`, v7 zstd): the kernel's own trace
//!   text, reduced by `arm64-bug-strict.check.derive.py` to one line per
//!   event (`cpu ts_us pid name key=value…`).
//!
//! Events are compared per CPU, in order: timestamp, pid, name and, for
//! iommu:map/unmap, kmem:mm_page_free/alloc, dma:dma_map_page and the
//! domain kprobes, the field values.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use iosan_trace::field::{FieldLookup, FieldValue};
use iosan_trace::source::tracedat::{Item, TraceDat};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captures").join(name)
}

fn xz(path: &Path) -> String {
    let mut s = String::new();
    xz2::read::XzDecoder::new(File::open(path).unwrap()).read_to_string(&mut s).unwrap();
    s
}

/// One event, normalised: (ts, pid, name, fields).
type Ev = (u64, i64, String, String);

fn num(v: &FieldValue<'_>) -> String {
    match v {
        FieldValue::Unsigned(u) => u.to_string(),
        FieldValue::Signed(s) => s.to_string(),
        FieldValue::Str(s) => String::from_utf8_lossy(s).into_owned(),
        other => format!("{other:?}"),
    }
}

/// The keys compared for an event name (as the check lines name them).
fn keys(name: &str) -> &'static [&'static str] {
    match name {
        "map" => &["iova", "paddr", "size"],
        "unmap" => &["iova", "size", "unmapped_size"],
        "mm_page_free" => &["pfn", "order"],
        "mm_page_alloc" => &["pfn", "order", "migratetype"],
        "dma_map_page" => &["device", "dma_addr", "size", "phys_addr"],
        "iommu_map" | "iommu_unmap" | "iommu_attach" | "iommu_domain_free" => &["__probe_func", "domain"],
        _ => &[],
    }
}

/// Reads a trace.dat: per CPU, its events; timestamps in units of `div` ns.
fn read_dat(path: &Path, div: u64) -> (BTreeMap<u32, Vec<Ev>>, u64) {
    let mut t = TraceDat::open(BufReader::new(File::open(path).unwrap())).unwrap();
    let mut per_cpu: BTreeMap<u32, Vec<Ev>> = BTreeMap::new();
    let mut last = 0;
    let mut lost = 0;
    while let Some(item) = t.next_item().unwrap() {
        let e = match item {
            Item::Event(e) => e,
            Item::Lost(_) => {
                lost += 1;
                continue;
            }
        };
        assert!(e.ts_ns >= last, "merged stream goes back in time at {}", e.offset);
        last = e.ts_ns;
        let name = e.format.name.clone();
        let fields: Vec<String> = keys(&name)
            .iter()
            .map(|k| format!("{k}={}", e.fields.field(k).map(|v| num(&v)).unwrap_or_else(|| "?".into())))
            .collect();
        // Text prints microseconds rounded to nearest (the kernel's `ns2usecs`).
        let ts = if div == 1 { e.ts_ns } else { (e.ts_ns + div / 2) / div };
        per_cpu.entry(e.cpu).or_default().push((ts, i64::from(e.pid), name, fields.join(" ")));
    }
    let s = t.skipped();
    assert_eq!(s, Default::default(), "nothing skipped in a real capture");
    (per_cpu, lost)
}

/// Parses `trace-cmd report` text: `comm-pid [cpu] secs.frac: name: rest`.
fn parse_report(text: &str, frac_digits: usize) -> BTreeMap<u32, Vec<Ev>> {
    let mut per_cpu: BTreeMap<u32, Vec<Ev>> = BTreeMap::new();
    for line in text.lines() {
        let Some(open) = line.find(" [") else { continue };
        let Some(close) = line[open..].find("] ").map(|c| c + open) else { continue };
        let Ok(cpu) = line[open + 2..close].parse::<u32>() else { continue };
        let head = &line[..open];
        let pid: i64 = head.rsplit('-').next().unwrap().trim().parse().unwrap();
        let rest = line[close + 1..].trim_start();
        let (ts, rest) = rest.split_once(": ").unwrap();
        let ts = ts.trim().rsplit(' ').next().unwrap();
        let (s, f) = ts.split_once('.').unwrap();
        assert_eq!(f.len(), frac_digits, "{line}");
        let ts = s.parse::<u64>().unwrap() * 10u64.pow(frac_digits as u32) + f.parse::<u64>().unwrap();
        let (name, body) = rest.split_once(':').unwrap();
        let kv: BTreeMap<&str, &str> = body.split_whitespace().filter_map(|w| w.split_once('=')).collect();
        let int = |k: &str, hex: bool| -> String {
            let v = kv.get(k).copied().unwrap_or("?");
            let (v, radix) = match v.strip_prefix("0x") {
                Some(h) => (h, 16),
                None if hex => (v, 16),
                None => (v, 10),
            };
            u64::from_str_radix(v, radix).map_or_else(|_| "?".into(), |n| n.to_string())
        };
        let fields: Vec<String> = match name {
            "dma_map_page" => vec![
                format!("device={}", body.split_whitespace().next().unwrap_or("?")),
                format!("dma_addr={}", int("dma_addr", true)),
                format!("size={}", int("size", false)),
                format!("phys_addr={}", int("phys_addr", true)),
            ],
            _ if keys(name).first() == Some(&"__probe_func") => vec![],
            _ => keys(name).iter().map(|k| format!("{k}={}", int(k, false))).collect(),
        };
        per_cpu.entry(cpu).or_default().push((ts, pid, name.to_string(), fields.join(" ")));
    }
    per_cpu
}

/// trace-cmd prints the kprobe's raw `__probe_ip`, not the symbol: drop
/// the kprobe fields from our side for the report comparison.
fn without_probe_fields(mut m: BTreeMap<u32, Vec<Ev>>) -> BTreeMap<u32, Vec<Ev>> {
    for evs in m.values_mut() {
        for e in evs.iter_mut() {
            if e.3.starts_with("__probe_func") {
                e.3.clear();
            }
        }
    }
    m
}

fn compare(ours: &BTreeMap<u32, Vec<Ev>>, theirs: &BTreeMap<u32, Vec<Ev>>, what: &str) {
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>(), "{what}: CPUs");
    for (cpu, a) in ours {
        let b = &theirs[cpu];
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert_eq!(x, y, "{what}: cpu {cpu} event {i}");
        }
        assert_eq!(a.len(), b.len(), "{what}: cpu {cpu} event count");
    }
}

fn counts(m: &BTreeMap<u32, Vec<Ev>>) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for e in m.values().flatten() {
        *c.entry(e.2.clone()).or_default() += 1;
    }
    c
}

#[test]
fn x86_print_and_kprobe_fields() {
    let mut t = TraceDat::open(BufReader::new(File::open(fixture("bug-strict.trace.dat")).unwrap())).unwrap();
    let (mut prints, mut probes) = (Vec::new(), 0);
    while let Some(item) = t.next_item().unwrap() {
        let Item::Event(e) = item else { continue };
        match (e.format.system.as_str(), e.format.name.as_str()) {
            ("ftrace", "print") => {
                let Some(FieldValue::Str(s)) = e.fields.field("buf") else { panic!("print without buf") };
                prints.push(String::from_utf8_lossy(s).into_owned());
            }
            ("lab", "iommu_map") => {
                assert_eq!(e.fields.field("__probe_func"), Some(FieldValue::Str(b"__iommu_map")));
                probes += 1;
            }
            _ => {}
        }
    }
    assert_eq!(prints.len(), 32);
    assert_eq!(prints[0], "LAB: phase=setup_done mode=bug\n");
    assert_eq!(probes, 18175);
}

#[test]
fn x86_matches_the_stored_trace_cmd_report() {
    let (ours, lost) = read_dat(&fixture("bug-strict.trace.dat"), 1000);
    assert_eq!(lost, 0);
    let theirs = parse_report(&xz(&fixture("bug-strict.trace-cmd-report.txt.xz")), 6);
    compare(&without_probe_fields(ours.clone()), &theirs, "stored report");
    let c = counts(&ours);
    assert_eq!((c["map"], c["unmap"], c["dma_map_page"], c["mm_page_free"]), (18175, 13887, 13899, 17516));
    assert_eq!(c.values().sum::<usize>(), 228_301);
}

fn trace_cmd() -> bool {
    match Command::new("trace-cmd").arg("--version").output() {
        Ok(_) => true,
        Err(e) => {
            println!("skipped: trace-cmd is not installed ({e})");
            false
        }
    }
}

#[test]
fn x86_matches_live_trace_cmd_report_in_ns() {
    if !trace_cmd() {
        return;
    }
    let path = fixture("bug-strict.trace.dat");
    let out = Command::new("trace-cmd").args(["report", "-t", "-i"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    let theirs = parse_report(&String::from_utf8_lossy(&out.stdout), 9);
    let (ours, _) = read_dat(&path, 1);
    compare(&without_probe_fields(ours), &theirs, "trace-cmd report -t");
}

#[test]
fn x86_converted_to_v6_and_uncompressed_v7_reads_the_same() {
    if !trace_cmd() {
        return;
    }
    let path = fixture("bug-strict.trace.dat");
    let (ours, _) = read_dat(&path, 1);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("iosan-tracedat");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, args) in [
        ("v6.dat", &["--file-version", "6"][..]),
        ("v7none.dat", &["--file-version", "7", "--compression", "none"][..]),
    ] {
        let out_path = dir.join(name);
        let st = Command::new("trace-cmd")
            .arg("convert")
            .arg("-i")
            .arg(&path)
            .args(args)
            .arg("-o")
            .arg(&out_path)
            .output()
            .unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        let (conv, _) = read_dat(&out_path, 1);
        compare(&conv, &ours, name);
        let t = TraceDat::open(BufReader::new(File::open(&out_path).unwrap())).unwrap();
        assert!(t.header().compression.is_none());
        assert!(!t.buffers()[0].compressed);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn arm64_matches_the_kernel_trace_text() {
    let (ours, lost) = read_dat(&fixture("arm64-bug-strict.trace.dat"), 1000);
    assert_eq!(lost, 0);
    let mut theirs: BTreeMap<u32, Vec<Ev>> = BTreeMap::new();
    for line in xz(&fixture("arm64-bug-strict.check.txt.xz")).lines() {
        let mut it = line.splitn(5, ' ');
        let cpu: u32 = it.next().unwrap().parse().unwrap();
        let ts: u64 = it.next().unwrap().parse().unwrap();
        let pid: i64 = it.next().unwrap().parse().unwrap();
        // The kernel prints ftrace:print records as `tracing_mark_write`.
        let name = it.next().unwrap().replace("tracing_mark_write", "print");
        let fields = it.next().unwrap_or("").to_string();
        theirs.entry(cpu).or_default().push((ts, pid, name, fields));
    }
    compare(&ours, &theirs, "arm64 kernel text");
    let t = TraceDat::open(BufReader::new(File::open(fixture("arm64-bug-strict.trace.dat")).unwrap())).unwrap();
    assert_eq!(t.buffers()[0].page_size, 4096);
    assert!(t.tracing_data().formats.by_name("lab", "iommu_map").is_some());
    assert!(!t.tracing_data().kallsyms.is_empty());
    assert!(t.tracing_data().cmdlines.comm(1).is_some());
}
