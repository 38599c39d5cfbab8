//! Synthetic captures for the DMA-API layer (dma:* as a mapping source of
//! its own), the page size taken from the capture, and the event forms of
//! modern kernels (6.18/7.x): `iommu_map_nosync`, `free_iova_fast`, the
//! flush-all range.

use iosan_core::FindingKind;
use iosan_trace::{analyze, AnalyzeOptions, Layer, Report};

/// One ftrace text line: task `t-1` on CPU 0 at `us` microseconds.
fn ev(us: u64, event: &str, body: &str) -> String {
    format!("            t-1     [000] .....     1.{us:06}: {event}: {body}\n")
}

fn free(us: u64, pfn: u64) -> String {
    ev(us, "mm_page_free", &format!("page=000000001 pfn={pfn:#x} order=0"))
}

fn alloc(us: u64, pfn: u64) -> String {
    ev(us, "mm_page_alloc", &format!("page=000000001 pfn={pfn:#x} order=0 migratetype=0 gfp_flags=GFP_KERNEL"))
}

fn map_page(us: u64, dev: &str, dma: u64, phys: u64, size: u64) -> String {
    ev(us, "dma_map_page", &format!("{dev} dir=TO_DEVICE dma_addr={dma:x} size={size} phys_addr={phys:x} attrs="))
}

fn unmap_page(us: u64, dev: &str, dma: u64, size: u64) -> String {
    ev(us, "dma_unmap_page", &format!("{dev} dir=TO_DEVICE dma_addr={dma:x} size={size} attrs="))
}

fn run_with(text: &str, opts: &AnalyzeOptions) -> Report {
    analyze(std::io::Cursor::new(text.as_bytes().to_vec()), "synthetic", opts, &mut ()).expect("in memory")
}

fn run(text: &str) -> Report {
    run_with(text, &AnalyzeOptions::default())
}

fn bugs(r: &Report) -> Vec<(FindingKind, u64, u64, Layer, Option<String>)> {
    r.bugs().map(|f| (f.kind, f.pfn.unwrap_or(0), f.npages, f.layer, f.device.clone())).collect()
}

const DEV: &str = "0000:00:02.0";

#[test]
fn dma_direct_map_page_freed_while_mapped() {
    // A page event first: the allocator is live before the first map.
    let mut t = alloc(1, 0x500);
    t += &map_page(10, DEV, 0x1234_0800, 0x1234_0800, 512);
    t += &free(20, 0x12340);
    // The correct pattern on another page: unmapped, then freed.
    t += &map_page(30, DEV, 0x2000_0000, 0x2000_0000, 4096);
    t += &unmap_page(40, DEV, 0x2000_0000, 4096);
    t += &free(50, 0x20000);
    let r = run(&t);
    let dev = Some(DEV.to_string());
    assert_eq!(bugs(&r), [(FindingKind::FreedWhileMapped, 0x12340, 1, Layer::DmaApi, dev)]);
    let f = r.bugs().next().expect("one finding");
    assert_eq!(f.domain.as_deref(), Some("dma-api:0000:00:02.0"));
    assert_eq!(f.iova, Some(0x1234_0000));
    assert!(r.summary.dma_direct, "no iommu:map, DMA = physical address");
    assert_eq!(r.summary.dma_layer_maps, 2);
}

#[test]
fn dma_direct_map_sg_entries() {
    let mut t = alloc(1, 0x500);
    let sg = format!(
        "{DEV} dir=FROM_DEVICE nents=2/2 ents=2/2 dma_addrs={{0x30000000,0x30005000}} sizes={{0x1000,0x2000}} \
         phys_addrs={{0x30000000,0x30005000}} attrs="
    );
    t += &ev(10, "dma_map_sg", &sg);
    // The second entry's second page is freed before dma_unmap_sg.
    t += &free(20, 0x30006);
    t += &ev(30, "dma_unmap_sg", &format!("{DEV} dir=FROM_DEVICE phys_addrs={{0x30000000,0x30005000}} attrs="));
    t += &free(40, 0x30000);
    t += &free(41, 0x30005);
    let r = run(&t);
    assert_eq!(bugs(&r), [(FindingKind::FreedWhileMapped, 0x30006, 1, Layer::DmaApi, Some(DEV.to_string()))]);
    assert_eq!(r.summary.dma_layer_maps, 2);
}

#[test]
fn dma_direct_alloc_with_dma_equal_to_phys() {
    let mut t = alloc(1, 0x500);
    // The coherent buffer comes before the device's first dma_map_page:
    // it waits until that shows the device is dma-direct.
    t += &ev(
        5,
        "dma_alloc",
        &format!("{DEV} dir=BIDIRECTIONAL dma_addr=40000000 size=8192 virt_addr=0000000001 flags=GFP_KERNEL attrs="),
    );
    t += &map_page(10, DEV, 0x5000_0000, 0x5000_0000, 4096);
    t += &unmap_page(11, DEV, 0x5000_0000, 4096);
    // Freed behind the DMA API.
    t += &free(20, 0x40001);
    // A second buffer, freed through the API, then its pages: correct.
    t += &ev(
        30,
        "dma_alloc",
        &format!("{DEV} dir=BIDIRECTIONAL dma_addr=60000000 size=4096 virt_addr=0000000002 flags=GFP_KERNEL attrs="),
    );
    t += &ev(
        40,
        "dma_free",
        &format!("{DEV} dir=BIDIRECTIONAL dma_addr=60000000 size=4096 virt_addr=0000000002 attrs="),
    );
    t += &free(50, 0x60000);
    let r = run(&t);
    assert_eq!(bugs(&r), [(FindingKind::FreedWhileMapped, 0x40001, 1, Layer::DmaApi, Some(DEV.to_string()))]);
    assert_eq!(r.summary.dma_allocs_unchecked, 0);
    assert!(r.summary.dma_direct);
}

#[test]
fn dma_only_capture_of_an_iommu_machine() {
    // DMA addresses are IOVAs: no iommu:* events, yet map_page carries the page.
    let mut t = alloc(1, 0x500);
    t += &map_page(10, DEV, 0xffff_f000, 0x1234_5000, 4096);
    t += &ev(
        11,
        "dma_alloc",
        &format!("{DEV} dir=BIDIRECTIONAL dma_addr=fffe0000 size=4096 virt_addr=0000000001 flags=GFP_KERNEL attrs="),
    );
    t += &free(20, 0x12345);
    // The IOVA is not a physical address: freeing "its" page is nothing.
    t += &free(21, 0xfffe0);
    let r = run(&t);
    assert_eq!(bugs(&r), [(FindingKind::FreedWhileMapped, 0x12345, 1, Layer::DmaApi, Some(DEV.to_string()))]);
    assert!(!r.summary.dma_direct);
    assert_eq!(r.summary.dma_translated_maps, 1);
    assert_eq!(r.summary.dma_allocs_unchecked, 1, "dma_alloc has no physical address under an IOMMU");
}

#[test]
fn both_layers_agree_one_report() {
    let mut t = alloc(1, 0x500);
    t += &ev(10, "map", "IOMMU: iova=0x00000000fffff000 - 0x0000000100000000 paddr=0x0000000012345000 size=4096");
    t += &map_page(11, DEV, 0xffff_f200, 0x1234_5200, 256);
    t += &free(20, 0x12345);
    let r = run(&t);
    let b = bugs(&r);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0].0, FindingKind::FreedWhileMapped);
    assert_eq!(b[0].3, Layer::Iommu, "the IOMMU layer saw it");
    assert_eq!(b[0].4.as_deref(), Some(DEV));
    assert_eq!(r.summary.dma_layer_maps, 0);
    // Unmapped in both layers: the free is correct.
    let mut t2 = t.replace(&free(20, 0x12345), "");
    t2 += &unmap_page(20, DEV, 0xffff_f200, 256);
    t2 += &ev(21, "unmap", "IOMMU: iova=0x00000000fffff000 - 0x0000000100000000 size=4096 unmapped_size=4096");
    t2 += &free(30, 0x12345);
    assert!(bugs(&run(&t2)).is_empty());
}

/// A 16 KiB-page capture: one 16 KiB IOMMU page at phys 0x4000_0000 (pfn
/// 0x10000 with 16 KiB pages, 0x40000 with 4 KiB).
fn sixteen_k(meta: &str) -> String {
    let mut t = meta.to_string();
    t += &alloc(1, 0x500);
    t += &ev(10, "map", "IOMMU: iova=0x00000000ffffc000 - 0x0000000100000000 paddr=0x0000000040000000 size=16384");
    t += &free(20, 0x10000);
    t
}

#[test]
fn page_size_from_metadata() {
    let r = run(&sixteen_k("# iosan-meta: arch=aarch64\n# iosan-meta: page_size=16384\n"));
    assert_eq!((r.summary.page_size, r.summary.page_size_source), (16384, "capture metadata"));
    assert_eq!(bugs(&r).iter().map(|b| (b.1, b.2)).collect::<Vec<_>>(), [(0x10000, 1)]);
    assert!(r.summary.page_size_warnings.is_empty());
}

#[test]
fn page_size_from_kernel_release_and_assumed() {
    let release = "# iosan-meta: kernel=Linux version 6.12.107+deb12-arm64-16k (gcc) #1 SMP\n";
    let r = run(&sixteen_k(release));
    assert_eq!((r.summary.page_size, r.summary.page_size_source), (16384, "kernel release"));
    assert_eq!(bugs(&r).len(), 1);
    // Nothing says: 4 KiB is assumed, and said; pfn 0x10000 is then not mapped.
    let r = run(&sixteen_k(""));
    assert_eq!((r.summary.page_size, r.summary.page_size_source), (4096, "assumed"));
    assert!(bugs(&r).is_empty());
    let r = run(&sixteen_k("# iosan-meta: arch=x86_64\n"));
    assert_eq!(r.summary.page_size_source, "architecture");
}

#[test]
fn page_size_option_contradicting_the_capture_is_warned_about() {
    let mut opts = AnalyzeOptions::default();
    opts.replay.page_size = iosan_core::PageSize::SIZE_4K;
    opts.replay.page_size_given = true;
    let r = run_with(&sixteen_k("# iosan-meta: page_size=16384\n"), &opts);
    assert_eq!((r.summary.page_size, r.summary.page_size_source), (4096, "--page-size"));
    assert_eq!(r.summary.page_size_warnings.len(), 1, "{:?}", r.summary.page_size_warnings);
    assert!(r.summary.page_size_warnings[0].contains("16384"));
}

#[test]
fn metadata_after_the_first_events_does_not_switch() {
    let t = format!("{}# iosan-meta: page_size=16384\n{}", alloc(0, 1), sixteen_k(""));
    let r = run(&t);
    assert_eq!(r.summary.page_size, 4096);
    assert_eq!(r.summary.page_size_warnings.len(), 1);
}

const DOM: &str = "0xffff888101f5d8a0";

fn kp_map(us: u64, func: &str, iova: u64, paddr: u64) -> String {
    let body = format!("({func}+0x0/0x280) domain={DOM} dtype=0xb iova={iova:#x} paddr={paddr:#x} size=0x1000 prot=3");
    let mut s = ev(us, "iommu_map", &body);
    s += &ev(
        us + 1,
        "map",
        &format!("IOMMU: iova={iova:#018x} - {:#018x} paddr={paddr:#018x} size=4096", iova + 0x1000),
    );
    s
}

fn kp_unmap(us: u64, iova: u64) -> String {
    let mut s =
        ev(us, "iommu_unmap", &format!("(__iommu_unmap+0x0/0x208) domain={DOM} dtype=0xb iova={iova:#x} size=0x1000"));
    s += &ev(
        us + 1,
        "unmap",
        &format!("IOMMU: iova={iova:#018x} - {:#018x} size=4096 unmapped_size=4096", iova + 0x1000),
    );
    s
}

#[test]
fn iommu_map_nosync_is_the_map_kprobe() {
    let mut t = alloc(1, 0x500);
    t += &kp_map(10, "iommu_map_nosync", 0xffff_f000, 0x1234_5000);
    t += &free(20, 0x12345);
    let r = run(&t);
    assert_eq!(r.summary.maps_by.kprobe, 1);
    let b = bugs(&r);
    assert_eq!(b.len(), 1);
    assert_eq!(r.bugs().next().and_then(|f| f.domain.clone()).as_deref(), Some(DOM));
}

#[test]
fn free_iova_fast_ends_the_exposure_window() {
    // A flush-queue domain (dtype 0xb): unmapped, then its IOVA returns to
    // the allocator (after the flush), then the page is freed: no exposure.
    let iova_free =
        |us| ev(us, "iova_free", "(free_iova_fast+0x0/0x40) iovad=0xffff888100001000 pfn=0xfffff pages=0x1");
    let mut base = alloc(1, 0x500);
    base += &kp_map(10, "__iommu_map", 0xffff_f000, 0x1234_5000);
    base += &kp_unmap(20, 0xffff_f000);
    let after = format!("{base}{}{}", iova_free(30), free(40, 0x12345));
    let r = run(&after);
    assert!(bugs(&r).is_empty());
    assert!(r.summary.exposure_measurable);
    assert_eq!(r.summary.exposure.pages, 0);
    // Freed before its IOVA came back: one page exposed.
    let before = format!("{base}{}{}", free(30, 0x12345), iova_free(40));
    let r = run(&before);
    assert!(bugs(&r).is_empty(), "lazy exposure is not a finding");
    assert!(r.summary.exposure_measurable);
    assert_eq!((r.summary.exposure.pages, r.summary.exposure.frees), (1, 1));
    assert_eq!(r.summary.mode, "lazy");
}

#[test]
fn fq_flush_iotlb_is_a_flush_source() {
    let flush = |us| ev(us, "fq_flush_iotlb", "(fq_flush_iotlb+0x0/0xa8) cookie=0xfff0000008240000");
    let mut base = alloc(1, 0x500);
    base += &kp_map(10, "__iommu_map", 0xffff_f000, 0x1234_5000);
    base += &kp_unmap(20, 0xffff_f000);
    let r = run(&format!("{base}{}{}", free(30, 0x12345), flush(40)));
    assert!(r.summary.exposure_measurable);
    assert_eq!(r.summary.exposure.pages, 1);
    let r = run(&format!("{base}{}{}", flush(30), free(40, 0x12345)));
    assert!(r.summary.exposure_measurable);
    assert_eq!(r.summary.exposure.pages, 0);
}

#[test]
fn flush_range_over_everything_is_a_flush_all() {
    // 6.18+: no `pages`, and cache_tag_flush_all is a range over the whole space.
    let t = format!(
        "{}{}",
        alloc(1, 0x500),
        ev(10, "cache_tag_flush_range", "dmar0 dmar0[0] type iotlb did 5 [0x0-0xffffffffffffffff] addr 0x0 mask 0x3f")
    );
    let r = run(&t);
    assert_eq!(r.summary.skipped.len(), 0, "{:?}", r.summary.skipped);
    assert_eq!(r.summary.mode, "lazy", "a whole-domain flush is the flush queue's");
    let t = format!(
        "{}{}",
        alloc(1, 0x500),
        ev(
            10,
            "cache_tag_flush_range",
            "dmar0 dmar0[0] type iotlb did 5 [0xffff8000-0xffff8fff] addr 0xffff8000 mask 0x0"
        )
    );
    let r = run(&t);
    assert_eq!(r.summary.skipped.len(), 0, "{:?}", r.summary.skipped);
    assert_ne!(r.summary.mode, "lazy", "a range flush is not the flush queue's");
}

#[test]
fn failed_map_undone_at_once_counts_nothing() {
    // 7.x traces a failed map with the part it mapped, then unmaps that part.
    let mut t = alloc(1, 0x500);
    t += &ev(10, "map", "IOMMU: iova=0x00000000ffffe000 - 0x0000000100000000 paddr=0x0000000012344000 size=8192");
    t += &ev(11, "unmap", "IOMMU: iova=0x00000000ffffe000 - 0x0000000100000000 size=8192 unmapped_size=8192");
    t += &free(20, 0x12344);
    t += &free(21, 0x12345);
    let r = run(&t);
    assert!(bugs(&r).is_empty(), "{:?}", bugs(&r));
}

#[test]
fn free_iova_fast_probe_parses() {
    let e = iosan_trace::parse::parse_event(
        b"iova_free",
        b"(free_iova_fast+0x0/0x40) iovad=0xffff888100001000 pfn=0xfffff pages=0x1",
    );
    assert!(
        matches!(e, Ok(Some(iosan_trace::parse::event::Event::ProbeIovaFree(p))) if p.pfn == 0xfffff && p.pages == 1),
        "{e:?}"
    );
}
