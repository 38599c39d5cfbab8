//! Streams the real captures in `fixtures/captures` through the reader, the
//! line classifier and the event parser, and checks the counts against the
//! ground truth of those captures (copied here from the capture notes).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use iosan_trace::parse::event::{DmaDirection, ProbeSite};
use iosan_trace::parse::{classify_line, parse_event, Event, LineKind, LineReader};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captures").join(name)
}

/// Everything the tests look at, gathered in one pass.
#[derive(Default)]
struct Scan {
    lines: u64,
    headers: u64,
    cpus_header: Option<u32>,
    events: u64,
    malformed: Vec<String>,
    field_errors: Vec<String>,
    unknown: BTreeMap<String, u64>,
    by_name: BTreeMap<String, u64>,
    by_label: BTreeMap<&'static str, u64>,
    by_fields: u64,
    first_ts: Option<u64>,
    last_ts: u64,
    non_monotonic: u64,
    /// (ts, label, a, b, c) for a differential comparison of two renderings.
    keys: Vec<(u64, &'static str, u64, u64, u64)>,
    sg_phys: Vec<u64>,
    sg_unmap_phys: Vec<u64>,
    map_ret_callers: BTreeMap<String, u64>,
    lost: u64,
}

fn scan(name: &str) -> Scan {
    let file = File::open(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let dec = BufReader::with_capacity(256 << 10, xz2::read::XzDecoder::new(file));
    let mut reader = LineReader::new(dec);
    let mut s = Scan::default();
    while let Some(line) = reader.next_line() {
        let line = line.unwrap_or_else(|e| panic!("{name}: {e}"));
        s.lines += 1;
        let ev = match classify_line(line.bytes) {
            Ok(LineKind::Event(ev)) => ev,
            Ok(LineKind::Header(_)) => {
                s.headers += 1;
                continue;
            }
            Ok(LineKind::CpusHeader(n)) => {
                s.cpus_header = Some(n);
                continue;
            }
            Ok(LineKind::Lost { .. }) => {
                s.lost += 1;
                continue;
            }
            Ok(other) => panic!("{name} {}: unexpected {other:?}", line.location()),
            Err(e) => {
                s.malformed.push(format!("{}: {e}", line.location()));
                continue;
            }
        };
        s.events += 1;
        *s.by_name.entry(String::from_utf8_lossy(ev.name).into_owned()).or_default() += 1;
        if let Some(first) = s.first_ts {
            let _ = first;
            if ev.ts_ns < s.last_ts {
                s.non_monotonic += 1;
            }
        } else {
            s.first_ts = Some(ev.ts_ns);
        }
        s.last_ts = ev.ts_ns;
        match parse_event(ev.name, ev.body) {
            Ok(Some(event)) => {
                *s.by_label.entry(event.label()).or_default() += 1;
                let key = match &event {
                    Event::IommuMap(m) => Some((m.iova, m.paddr, m.size)),
                    Event::IommuUnmap(u) => Some((u.iova, u.size, u.unmapped_size)),
                    Event::PageFree(p) | Event::PageFreeBatched(p) => Some((p.pfn, u64::from(p.order), 0)),
                    Event::PageAlloc(p) => Some((p.pfn, u64::from(p.order), u64::from(p.page_is_null))),
                    Event::DmaMapPage(m) => Some((m.dma_addr, m.size, m.phys_addr)),
                    Event::DmaUnmapPage(m) => Some((m.dma_addr, m.size, 0)),
                    Event::ProbeMap(m) => Some((m.domain, m.iova, m.paddr ^ m.size)),
                    Event::ProbeUnmap(m) => Some((m.domain, m.iova, m.size)),
                    Event::ProbeUnmapReturn(r) => Some((r.unmapped, 0, 0)),
                    Event::ProbeMapReturn(r) => Some((r.ret as u64, 0, 0)),
                    Event::CacheTagFlushRange(f) | Event::CacheTagFlushRangeNp(f) => {
                        Some((u64::from(f.did), f.start, f.last))
                    }
                    Event::DmaMapSg(sg) => {
                        s.sg_phys.extend(&sg.phys_addrs);
                        assert_ne!(sg.dir, DmaDirection::None);
                        assert_eq!(sg.phys_addrs.len(), sg.nents.printed as usize, "{}", line.location());
                        assert_eq!(sg.dma_addrs.len(), sg.ents.printed as usize, "{}", line.location());
                        assert_eq!(sg.sizes.len(), sg.dma_addrs.len(), "{}", line.location());
                        Some((sg.dma_addrs.iter().sum(), sg.sizes.iter().sum(), u64::from(sg.nents.total)))
                    }
                    Event::DmaUnmapSg(sg) => {
                        s.sg_unmap_phys.extend(&sg.phys_addrs);
                        Some((sg.phys_addrs.len() as u64, 0, 0))
                    }
                    _ => None,
                };
                if let Some((a, b, c)) = key {
                    s.keys.push((ev.ts_ns, event.label(), a, b, c));
                }
                match &event {
                    Event::ProbeMap(m) => s.by_fields += u64::from(m.probe.by_fields),
                    Event::ProbeUnmap(m) => s.by_fields += u64::from(m.probe.by_fields),
                    Event::ProbeMapReturn(r) => {
                        s.by_fields += u64::from(r.probe.by_fields);
                        if let Some(ProbeSite::Symbol { func, .. }) = r.probe.caller {
                            *s.map_ret_callers.entry(String::from_utf8_lossy(func).into_owned()).or_default() += 1;
                        }
                    }
                    Event::ProbeUnmapReturn(r) => s.by_fields += u64::from(r.probe.by_fields),
                    Event::ProbeAttach(a) => s.by_fields += u64::from(a.probe.by_fields),
                    Event::ProbeDomainFree(a) => s.by_fields += u64::from(a.probe.by_fields),
                    _ => {}
                }
            }
            Ok(None) => {
                *s.unknown.entry(String::from_utf8_lossy(ev.name).into_owned()).or_default() += 1;
            }
            Err(e) => s.field_errors.push(format!("{}: {e}", line.location())),
        }
    }
    s
}

fn check_clean(name: &str, s: &Scan) {
    assert!(s.malformed.is_empty(), "{name}: malformed lines: {:?}", &s.malformed[..s.malformed.len().min(5)]);
    assert!(s.field_errors.is_empty(), "{name}: field errors: {:?}", &s.field_errors[..s.field_errors.len().min(5)]);
    assert!(s.unknown.is_empty(), "{name}: unknown events: {:?}", s.unknown);
    assert_eq!(s.non_monotonic, 0, "{name}: timestamps go backwards");
    assert_eq!(s.lost, 0);
}

fn expect_counts(name: &str, s: &Scan, expected: &[(&str, u64)]) {
    let got: BTreeMap<&str, u64> = s.by_name.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let want: BTreeMap<&str, u64> = expected.iter().copied().collect();
    assert_eq!(got, want, "{name}: per-event counts");
}

/// Event counts of `bug-strict` (ground truth of the capture).
const BUG_STRICT: &[(&str, u64)] = &[
    ("qi_submit", 28088),
    ("iommu_map", 18175),
    ("map", 18175),
    ("iommu_map_ret", 18175),
    ("mm_page_free", 17516),
    ("mm_page_alloc", 17082),
    ("cache_tag_flush_range_np", 14126),
    ("dma_map_page", 13899),
    ("unmap", 13887),
    ("cache_tag_flush_range", 13883),
    ("iommu_unmap", 13877),
    ("iommu_unmap_ret", 13877),
    ("dma_unmap_page", 13672),
    ("mm_page_free_batched", 13305),
    ("dma_map_sg", 210),
    ("dma_unmap_sg", 210),
    ("console", 56),
    ("tracing_mark_write", 32),
    ("dma_alloc", 17),
    ("add_device_to_group", 9),
    ("iommu_attach", 9),
    ("cache_tag_assign", 9),
    ("attach_device_to_domain", 9),
    ("iommu_domain_free", 2),
    ("dma_free", 1),
];

/// Event counts of `clean-strict`.
const CLEAN_STRICT: &[(&str, u64)] = &[
    ("qi_submit", 44265),
    ("mm_page_free", 34060),
    ("mm_page_alloc", 33745),
    ("mm_page_free_batched", 29735),
    ("iommu_map", 26980),
    ("map", 26980),
    ("iommu_map_ret", 26980),
    ("cache_tag_flush_range_np", 22219),
    ("unmap", 21969),
    ("cache_tag_flush_range", 21967),
    ("iommu_unmap", 21948),
    ("iommu_unmap_ret", 21948),
    ("dma_map_page", 21777),
    ("dma_unmap_page", 21540),
    ("dma_map_sg", 426),
    ("dma_unmap_sg", 426),
    ("tracing_mark_write", 38),
    ("console", 33),
    ("dma_alloc", 16),
    ("add_device_to_group", 9),
    ("iommu_attach", 9),
    ("cache_tag_assign", 9),
    ("attach_device_to_domain", 9),
    ("dma_free", 1),
    ("iommu_domain_free", 1),
];

fn expect_labels(name: &str, s: &Scan, map: u64, unmap: u64, attach: u64, domain_free: u64) {
    let l = |k: &str| s.by_label.get(k).copied().unwrap_or(0);
    assert_eq!(l("kprobe:__iommu_map"), map, "{name}");
    assert_eq!(l("kretprobe:__iommu_map"), map, "{name}");
    assert_eq!(l("iommu:map"), map, "{name}");
    assert_eq!(l("kprobe:__iommu_unmap"), unmap, "{name}");
    assert_eq!(l("kretprobe:__iommu_unmap"), unmap, "{name}");
    assert_eq!(l("kprobe:attach"), attach, "{name}");
    assert_eq!(l("kprobe:iommu_domain_free"), domain_free, "{name}");
}

#[test]
fn bug_strict_text() {
    let s = scan("bug-strict.trace.txt.xz");
    check_clean("bug-strict", &s);
    assert_eq!(s.events, 228_301);
    assert_eq!(s.headers, 12);
    assert_eq!(s.lines, 228_301 + 12);
    expect_counts("bug-strict", &s, BUG_STRICT);
    expect_labels("bug-strict", &s, 18175, 13877, 9, 2);
    assert_eq!(s.by_label["ftrace:print"], 32);
    assert_eq!(s.by_label["kmem:mm_page_free_batched"], 13305);
    assert_eq!(s.by_fields, 0);
    assert_eq!(s.first_ts, Some(8_000_000));
    // The return probes name their callers.
    assert!(s.map_ret_callers.contains_key("iommu_map"), "{:?}", s.map_ret_callers);
    assert!(s.map_ret_callers.contains_key("iommu_map_sg"), "{:?}", s.map_ret_callers);
    assert_eq!(s.map_ret_callers.values().sum::<u64>(), 18175);
}

#[test]
fn clean_strict_text() {
    let s = scan("clean-strict.trace.txt.xz");
    check_clean("clean-strict", &s);
    assert_eq!(s.events, 377_090);
    expect_counts("clean-strict", &s, CLEAN_STRICT);
    expect_labels("clean-strict", &s, 26980, 21948, 9, 1);
    assert_eq!(s.by_fields, 0);
}

#[test]
fn bug_strict_trace_cmd_report_matches_text() {
    let r = scan("bug-strict.trace-cmd-report.txt.xz");
    check_clean("bug-strict report", &r);
    assert_eq!(r.cpus_header, Some(2));
    assert_eq!(r.events, 228_301);
    // trace-cmd shows the marker as `print: tracing_mark_write: ...`.
    let expected: Vec<(&str, u64)> =
        BUG_STRICT.iter().map(|&(n, c)| (if n == "tracing_mark_write" { "print" } else { n }, c)).collect();
    expect_counts("bug-strict report", &r, &expected);
    expect_labels("bug-strict report", &r, 18175, 13877, 9, 2);
    // Every probe in the report has a raw address: all recognised by fields.
    assert_eq!(r.by_fields, 2 * 18175 + 2 * 13877 + 9 + 2);

    // Differential: the same events carry the same values in both
    // renderings (including dma_map_sg decoded from libtraceevent's raw
    // `[FAILED TO PARSE]` byte arrays).
    let t = scan("bug-strict.trace.txt.xz");
    let mut a = t.keys.clone();
    let mut b = r.keys.clone();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a.len(), b.len());
    let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
    assert_eq!(first_diff, None, "first differing event: {:?}", first_diff.map(|i| (a[i], b[i])));
    assert_eq!(t.sg_phys, r.sg_phys);
    assert_eq!(t.sg_unmap_phys, r.sg_unmap_phys);
    assert!(!t.sg_phys.is_empty());
}
