//! The real e2e captures of `fixtures/captures` against their ground truth
//! (`<leg>.truth`, the test module's `LEAK` lines), for what the analysis
//! must take from the capture alone: the DMA-API layer without an IOMMU,
//! the CPU page size, 16 KiB IOVA granules without domain kprobes, and the
//! flush-queue kprobes as the exposure source on SMMUv3.

use std::collections::BTreeSet;
use std::io::{BufRead, Read};
use std::path::PathBuf;

use iosan_trace::input::open_input;
use iosan_trace::{analyze, AnalyzeOptions, Layer, Report};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captures").join(name)
}

/// The capture's text, with the lines `keep` refuses left out.
fn capture(leg: &str, keep: impl Fn(&str) -> bool) -> Vec<u8> {
    let mut text = String::new();
    open_input(&fixture(&format!("{leg}.capture.txt.xz"))).expect("fixture").read_to_string(&mut text).expect("text");
    let mut out = Vec::with_capacity(text.len());
    for line in text.lines().filter(|l| keep(l)) {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

/// The `LEAK` pages of the leg's ground truth.
fn truth(leg: &str) -> BTreeSet<u64> {
    let f = std::fs::File::open(fixture(&format!("{leg}.truth"))).expect("truth");
    let mut pages = BTreeSet::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.expect("truth line");
        if !line.contains(" LEAK ") {
            continue;
        }
        let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string);
        let pfn = field("pfn=0x").and_then(|v| u64::from_str_radix(&v, 16).ok()).expect("pfn");
        let n: u64 = field("npages=").and_then(|v| v.parse().ok()).expect("npages");
        pages.extend(pfn..pfn + n);
    }
    pages
}

fn run(text: Vec<u8>) -> Report {
    analyze(std::io::Cursor::new(text), "fixture", &AnalyzeOptions::default(), &mut ()).expect("in memory")
}

/// Every truth page reported; no bug finding on any other page.
fn check(leg: &str, r: &Report) {
    let want = truth(leg);
    let mut found = BTreeSet::new();
    let mut false_pages = Vec::new();
    for f in r.findings.iter().filter(|f| f.kind.is_bug()) {
        match f.pfn {
            Some(p) => {
                for q in p..p + f.npages.max(1) {
                    if want.contains(&q) {
                        found.insert(q);
                    } else {
                        false_pages.push((f.kind, q));
                    }
                }
            }
            None => false_pages.push((f.kind, 0)),
        }
    }
    let missing: Vec<_> = want.difference(&found).collect();
    assert!(missing.is_empty(), "{leg}: {} of {} truth pages missing: {missing:x?}", missing.len(), want.len());
    assert!(
        false_pages.is_empty(),
        "{leg}: {} false: {:x?}",
        false_pages.len(),
        &false_pages[..false_pages.len().min(8)]
    );
}

#[test]
fn no_iommu_reaches_its_truth_through_the_dma_api_layer() {
    let r = run(capture("no-iommu", |_| true));
    check("no-iommu", &r);
    assert!(r.summary.dma_direct, "dma-direct inferred");
    assert!(r.bugs().all(|f| f.layer == Layer::DmaApi));
    assert_eq!(truth("no-iommu").len(), 10);
}

#[test]
fn arm64_16k_takes_its_page_size_from_the_capture() {
    let r = run(capture("arm64-16k-strict", |_| true));
    assert_eq!((r.summary.page_size, r.summary.page_size_source), (16384, "capture metadata"));
    check("arm64-16k-strict", &r);
}

/// The recorder's kprobe events (`iosan` group): `iommu_map:`, `fq_flush_iotlb:` ...
fn is_kprobe_line(l: &str) -> bool {
    const PROBES: &[&str] = &[
        "iommu_map",
        "iommu_map_ret",
        "iommu_unmap",
        "iommu_unmap_ret",
        "iommu_attach",
        "iommu_domain_free",
        "fq_flush_iotlb",
        "fq_flush_timeout",
        "iova_free",
    ];
    l.split_whitespace().nth(4).and_then(|e| e.strip_suffix(':')).is_some_and(|e| PROBES.contains(&e))
}

#[test]
fn arm64_16k_without_kprobes_matches_dma_addresses_by_containment() {
    // 4 KiB buffers inside 16 KiB IOVA granules: dma_map_page's DMA address
    // is inside the granule iommu:map mapped, not at its start.
    let text = capture("arm64-16k-strict", |l| !is_kprobe_line(l));
    let r = run(text);
    assert_eq!(r.summary.kprobe_events, 0, "the kprobe lines are gone");
    check("arm64-16k-strict", &r);
    assert!(r.findings.iter().all(|f| f.kind != iosan_core::FindingKind::DoubleUnmap));
}

#[test]
fn arm64_lazy_exposure_from_the_flush_queue_kprobes() {
    let r = run(capture("arm64-lazy", |_| true));
    check("arm64-lazy", &r);
    assert_eq!(r.summary.mode, "lazy");
    assert!(r.summary.exposure_measurable, "fq_flush_iotlb hits are SMMUv3's flush source");
    assert!(r.summary.exposure.pages > 0);
}

#[test]
fn arm64_16k_page_size_from_the_events_when_the_header_is_silent() {
    let silent = |l: &str| !l.starts_with("# iosan-meta: page_size") && !l.starts_with("# iosan-meta: kernel");
    let text = capture("arm64-16k-strict", silent);
    let e = iosan_trace::pagesize::scan(&text);
    assert_eq!(e.decided(), Some(iosan_core::PageSize::SIZE_16K), "{e:?}");
    let r = run(text.clone());
    assert_eq!((r.summary.page_size, r.summary.page_size_source), (16384, "events"));
    check("arm64-16k-strict", &r);
    // A wrong --page-size is kept, and contradicted in the summary.
    let mut opts = AnalyzeOptions::default();
    opts.replay.page_size_given = true;
    let r = analyze(std::io::Cursor::new(text), "fixture", &opts, &mut ()).expect("in memory");
    assert_eq!(r.summary.page_size, 4096);
    assert!(r.summary.page_size_warnings.iter().any(|w| w.contains("events")), "{:?}", r.summary.page_size_warnings);
}

#[test]
fn four_k_captures_show_four_k_in_their_events() {
    for leg in ["no-iommu", "arm64-strict"] {
        let e = iosan_trace::pagesize::scan(&capture(leg, |l| !l.starts_with('#')));
        assert_eq!(e.decided(), Some(iosan_core::PageSize::SIZE_4K), "{leg}: {e:?}");
    }
}

/// The kernel log lines (`printk:console`): the module's ground truth is
/// there too, and an analysis must not need it.
fn is_printk_line(l: &str) -> bool {
    l.split_whitespace().nth(4) == Some("console:")
}

/// Debian sid's Linux 7.2.13 under VT-d, strict: maps through
/// `iommu_map_nosync`, `dma_map_phys`, `cache_tag_flush_range` without its
/// `pages` field, and a domain offering 2 MiB pages before any attach, so
/// the unattached domain's 1 MiB unmap removes all 2 MiB (both unmanaged
/// cases are correct there and must not be reported).
#[test]
fn linux_7_2_vtd_strict_is_exact() {
    let r = run(capture("vtd72-strict", |_| true));
    check("vtd72-strict", &r);
    assert_eq!(truth("vtd72-strict").len(), 10);
    let s = &r.summary;
    assert_eq!(s.mode, "strict");
    assert!(s.skipped.is_empty(), "7.2's flush lines parse: {:?}", s.skipped);
    let maps = s.events_by_kind.get("iommu:map").copied().unwrap_or(0);
    assert!(maps > 1000 && s.maps_by.kprobe == maps, "every map named by the iommu_map_nosync kprobe: {:?}", s.maps_by);
    assert!(
        s.events_by_kind.get("dma:dma_map_page").copied().unwrap_or(0) > 0,
        "dma_map_phys read as the streaming map"
    );
    assert!(s.events_by_kind.get("intel_iommu:cache_tag_flush_range").copied().unwrap_or(0) > 0);
    // Stock tracepoints only, and without the kernel log: the VT-d domain
    // ids of the flushes (caching mode) name the domains instead.
    let r = run(capture("vtd72-strict", |l| !is_kprobe_line(l) && !is_printk_line(l)));
    assert_eq!(r.summary.kprobe_events, 0);
    check("vtd72-strict", &r);
}

/// The same kernel, lazy, with the unmanaged domain attached to QEMU's edu
/// device (so `unmanaged-partial` leaks 256 pages): exposure comes from the
/// flush queue's `fq_flush_timeout` kprobe and the flush-all lines
/// (`cache_tag_flush_range` over `[0x0-0xffffffffffffffff]` in 7.2), as
/// `fq_flush_iotlb` is inlined. In this run a kworker preempted `dd`
/// between the `iommu_map_nosync` kprobe and its `iommu:map` (IOVA
/// 0xffc63000, pfn 0x13e498): the kprobe must still name the map's domain.
#[test]
fn linux_7_2_vtd_lazy_is_exact() {
    let r = run(capture("vtd72-lazy", |_| true));
    check("vtd72-lazy", &r);
    assert_eq!(truth("vtd72-lazy").len(), 266);
    let s = &r.summary;
    assert_eq!(s.mode, "lazy");
    assert!(s.skipped.is_empty(), "{:?}", s.skipped);
    assert!(s.exposure_measurable && s.exposure.pages > 0, "{:?}", s.exposure);
    assert_eq!(s.exposure.unflushed_at_end, 0, "every flush-all line ends the exposure of its domain");
    let r = run(capture("vtd72-lazy", |l| !is_printk_line(l)));
    check("vtd72-lazy", &r);
    // Stock tracepoints only: no flush follows a map without caching mode,
    // and 7.2's NVMe maps through dma_iova_link with no dma:* event, so
    // many maps wait for a domain or go to the anonymous space. Every page
    // is still found and nothing else; the edu domain's device is not known.
    let r = run(capture("vtd72-lazy", |l| !is_kprobe_line(l)));
    assert_eq!(r.summary.kprobe_events, 0);
    assert!(r.summary.maps_by.anonymous > 0, "{:?}", r.summary.maps_by);
    check("vtd72-lazy", &r);
}
