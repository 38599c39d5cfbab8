//! IOMMUs that remove more (or less) than an unmap asked: VT-d, AMD-Vi and
//! virtio-iommu remove a whole block (`unmapped_size > size`); io-pgtable-arm
//! from Linux 6.13 refuses to split a block (`unmapped_size=0`). Exact
//! semantics counts down exactly what went; upstream keeps the kernel's
//! verdict (its false leak).

use iosan_core::{FindingKind, Semantics};
use iosan_trace::{analyze, AnalyzeOptions, Options, Report};

const DOMAIN: u64 = 0xffff_8881_009e_6a10;
/// A 2 MiB-aligned IOVA and physical address: the IOMMU maps them with a block.
const IOVA: u64 = 0x4000_0000;
const PHYS: u64 = 0x1_1c60_0000;
const MIB: u64 = 1 << 20;

/// Builds a capture; with `kprobes`, each map and unmap names its domain.
struct Trace {
    kprobes: bool,
    text: String,
    t_us: u64,
}

impl Trace {
    fn new(kprobes: bool) -> Self {
        Self { kprobes, text: String::new(), t_us: 1_000_000 }
    }

    fn line(&mut self, body: &str) {
        self.t_us += 10;
        self.text.push_str(&format!(
            "          insmod-217     [001] .....    {}.{:06}: {body}\n",
            self.t_us / 1_000_000,
            self.t_us % 1_000_000
        ));
    }

    fn alloc(&mut self, pfn: u64, order: u32) {
        self.line(&format!(
            "mm_page_alloc: page=0000000090247f81 pfn={pfn:#x} order={order} migratetype=0 gfp_flags=GFP_KERNEL"
        ));
    }

    fn free(&mut self, pfn: u64, order: u32) {
        self.line(&format!("mm_page_free: page=0000000090247f81 pfn={pfn:#x} order={order}"));
    }

    fn map(&mut self, iova: u64, phys: u64, size: u64) {
        if self.kprobes {
            self.line(&format!(
                "iommu_map: (__iommu_map+0x0/0x280) domain={DOMAIN:#x} dtype=1 iova={iova:#x} paddr={phys:#x} size={size:#x} prot=3"
            ));
        }
        self.line(&format!("map: IOMMU: iova=0x{iova:016x} - 0x{:016x} paddr=0x{phys:016x} size={size}", iova + size));
    }

    fn unmap(&mut self, iova: u64, size: u64, unmapped: u64) {
        if self.kprobes {
            self.line(&format!(
                "iommu_unmap: (__iommu_unmap+0x0/0x1d0) domain={DOMAIN:#x} dtype=1 iova={iova:#x} size={size:#x}"
            ));
        }
        self.line(&format!(
            "unmap: IOMMU: iova=0x{iova:016x} - 0x{:016x} size={size} unmapped_size={unmapped}",
            iova + size
        ));
    }

    fn run(&self, semantics: Semantics) -> Report {
        let opts = AnalyzeOptions { replay: Options { semantics, ..Options::default() }, ..AnalyzeOptions::default() };
        analyze(self.text.as_bytes(), "synthetic", &opts, &mut ()).expect("in-memory input")
    }
}

fn pages(r: &Report, kind: FindingKind) -> u64 {
    r.findings.iter().filter(|f| f.kind == kind).map(|f| f.npages).sum()
}

fn count(r: &Report, kind: FindingKind) -> usize {
    r.findings.iter().filter(|f| f.kind == kind).count()
}

/// A 2 MiB block mapped, `size` bytes unmapped at `at` with the IOMMU
/// removing the whole block, then the block freed.
fn block_then_free(kprobes: bool, at: u64, size: u64) -> Trace {
    let mut t = Trace::new(kprobes);
    t.alloc(PHYS >> 12, 9);
    t.map(IOVA, PHYS, 2 * MIB);
    t.unmap(at, size, 2 * MIB);
    t.free(PHYS >> 12, 9);
    t
}

#[test]
fn whole_block_removed_is_counted_down_exactly() {
    for kprobes in [false, true] {
        for at in [IOVA, IOVA + 0x8_0000, IOVA + 2 * MIB - 4096] {
            let t = block_then_free(kprobes, at, 4096);
            let exact = t.run(Semantics::Exact);
            assert_eq!(exact.bugs().count(), 0, "kprobes={kprobes} at={at:#x}: {:#?}", exact.findings);
            assert_eq!(pages(&exact, FindingKind::FreedWhileMapped), 0, "kprobes={kprobes} at={at:#x}");
            assert_eq!(count(&exact, FindingKind::MappedAtEnd), 0, "the shadow forgot the whole block");
            assert_eq!(exact.summary.count_inconsistencies, 0);
            assert_eq!(exact.summary.unmapped_more_than_requested, 1);
            // The kernel's algorithm counts down only the 4 KiB asked: 511 pages leak.
            let upstream = t.run(Semantics::Upstream);
            assert_eq!(pages(&upstream, FindingKind::FreedWhileMapped), 511, "kprobes={kprobes} at={at:#x}");
            assert!(upstream
                .findings
                .iter()
                .filter(|f| f.kind == FindingKind::FreedWhileMapped)
                .all(|f| f.note.as_deref().is_some_and(|n| n.contains("no mapping was found"))));
        }
    }
}

#[test]
fn only_the_block_holding_the_iova_goes() {
    // 4 MiB mapped in one call: two 2 MiB blocks. A 4 KiB unmap in the second
    // removes that block only; the first stays mapped.
    for kprobes in [false, true] {
        let mut t = Trace::new(kprobes);
        t.alloc(PHYS >> 12, 10);
        t.map(IOVA, PHYS, 4 * MIB);
        t.unmap(IOVA + 3 * MIB, 4096, 2 * MIB);
        t.free((PHYS + 2 * MIB) >> 12, 9);
        let r = t.run(Semantics::Exact);
        assert_eq!(pages(&r, FindingKind::FreedWhileMapped), 0, "kprobes={kprobes}: {:#?}", r.findings);
        t.free(PHYS >> 12, 9);
        let r = t.run(Semantics::Exact);
        assert_eq!(pages(&r, FindingKind::FreedWhileMapped), 512, "kprobes={kprobes}: the first block is still mapped");
        let f = r.bugs().next().expect("a finding");
        assert_eq!(f.iova, Some(IOVA));
        assert_eq!(f.pfn, Some(PHYS >> 12));
    }
}

#[test]
fn amd_second_half_unmap_is_not_a_double_unmap() {
    // AMD-Vi asked for 1 MiB of a 2 MiB block removes the block; the unmap
    // of the other 1 MiB then finds nothing.
    for kprobes in [false, true] {
        let mut t = Trace::new(kprobes);
        t.alloc(PHYS >> 12, 9);
        t.map(IOVA, PHYS, 2 * MIB);
        t.unmap(IOVA, MIB, 2 * MIB);
        t.unmap(IOVA + MIB, MIB, 0);
        t.free(PHYS >> 12, 9);
        let r = t.run(Semantics::Exact);
        assert_eq!(r.bugs().count(), 0, "kprobes={kprobes}: {:#?}", r.findings);
        assert_eq!(r.uncertain().count(), 0, "kprobes={kprobes}");
        assert_eq!(count(&r, FindingKind::DoubleUnmap), 0);
        assert_eq!(count(&r, FindingKind::UnmapAlreadyRemoved), 1, "kprobes={kprobes}: {:#?}", r.findings);
        let f = r.findings.iter().find(|f| f.kind == FindingKind::UnmapAlreadyRemoved).expect("informational");
        assert!(!f.kind.is_bug());
        assert_eq!(f.iova, Some(IOVA + MIB));
        let note = f.note.as_deref().unwrap_or_default();
        assert!(note.contains("removed the whole 2097152 bytes from 0x40000000"), "{note}");
        // The kernel counted down only the first 1 MiB: the rest leaks there.
        let upstream = t.run(Semantics::Upstream);
        assert_eq!(pages(&upstream, FindingKind::FreedWhileMapped), 256, "kprobes={kprobes}");
    }
}

#[test]
fn block_mapped_before_the_capture_is_taken_at_the_kernel_word() {
    // The map predates the capture; the IOMMU still says it removed 2 MiB.
    let mut t = Trace::new(true);
    t.unmap(IOVA, MIB, 2 * MIB);
    t.unmap(IOVA + MIB, MIB, 0);
    let r = t.run(Semantics::Exact);
    assert_eq!(count(&r, FindingKind::DoubleUnmap), 0, "{:#?}", r.findings);
    assert_eq!(count(&r, FindingKind::UnmapAlreadyRemoved), 1);
    assert_eq!(r.summary.unmaps_without_translation, 1, "only the first: its mapping predates the capture");
}

#[test]
fn a_real_double_unmap_after_a_block_unmap_is_still_one() {
    // The asked range itself was unmapped before: that is a double unmap.
    let mut t = Trace::new(true);
    t.alloc(PHYS >> 12, 9);
    t.map(IOVA, PHYS, 2 * MIB);
    t.unmap(IOVA, MIB, 2 * MIB);
    t.unmap(IOVA, MIB, 0);
    let r = t.run(Semantics::Exact);
    assert_eq!(count(&r, FindingKind::DoubleUnmap), 1, "{:#?}", r.findings);
    assert_eq!(count(&r, FindingKind::UnmapAlreadyRemoved), 0);
}

#[test]
fn remapped_range_forgets_the_block_unmap() {
    // Mapped again after the block went: a later empty unmap there is a double unmap again.
    let mut t = Trace::new(true);
    t.map(IOVA, PHYS, 2 * MIB);
    t.unmap(IOVA, MIB, 2 * MIB);
    t.map(IOVA + MIB, PHYS + MIB, MIB);
    t.unmap(IOVA + MIB, MIB, MIB);
    t.unmap(IOVA + MIB, MIB, 0);
    let r = t.run(Semantics::Exact);
    assert_eq!(count(&r, FindingKind::UnmapAlreadyRemoved), 0, "{:#?}", r.findings);
    assert_eq!(count(&r, FindingKind::DoubleUnmap), 1);
}

#[test]
fn refused_partial_block_unmap_keeps_the_block() {
    for kprobes in [false, true] {
        let mut t = Trace::new(kprobes);
        t.alloc(PHYS >> 12, 9);
        t.map(IOVA, PHYS, 2 * MIB);
        t.unmap(IOVA + 0x8_0000, 4096, 0);
        let r = t.run(Semantics::Exact);
        assert_eq!(count(&r, FindingKind::DoubleUnmap), 0, "kprobes={kprobes}: {:#?}", r.findings);
        assert_eq!(count(&r, FindingKind::PartialBlockUnmapRefused), 1, "kprobes={kprobes}: {:#?}", r.findings);
        let f = r.findings.iter().find(|f| f.kind == FindingKind::PartialBlockUnmapRefused).expect("informational");
        assert!(!f.kind.is_bug());
        assert_eq!((f.iova, f.size), (Some(IOVA + 0x8_0000), 4096));
        // Still mapped: freeing the block now is a use-after-free of all of it.
        t.free(PHYS >> 12, 9);
        let r = t.run(Semantics::Exact);
        assert_eq!(pages(&r, FindingKind::FreedWhileMapped), 512, "kprobes={kprobes}");
        assert_eq!(r.bugs().filter(|f| f.kind == FindingKind::FreedWhileMapped).count(), 1);
    }
    // Unmapped whole afterwards, then freed: nothing but the informational note.
    let mut t = Trace::new(true);
    t.alloc(PHYS >> 12, 9);
    t.map(IOVA, PHYS, 2 * MIB);
    t.unmap(IOVA + 0x8_0000, 4096, 0);
    t.unmap(IOVA, 2 * MIB, 2 * MIB);
    t.free(PHYS >> 12, 9);
    let r = t.run(Semantics::Exact);
    assert_eq!(r.bugs().count(), 0, "{:#?}", r.findings);
    assert_eq!(count(&r, FindingKind::PartialBlockUnmapRefused), 1);
}

#[test]
fn zero_byte_unmap_outside_any_block_is_not_called_a_refused_block() {
    // 8 KiB at a 4 KiB-aligned IOVA: no block can hold it.
    let mut t = Trace::new(true);
    t.map(IOVA + 0x1000, PHYS + 0x1000, 0x2000);
    t.unmap(IOVA + 0x1000, 4096, 0);
    let r = t.run(Semantics::Exact);
    assert_eq!(count(&r, FindingKind::PartialBlockUnmapRefused), 0, "{:#?}", r.findings);
    assert_eq!(count(&r, FindingKind::DoubleUnmap), 0);
    // Nothing mapped at all: still a double unmap.
    let mut t = Trace::new(true);
    t.unmap(IOVA, 4096, 0);
    let r = t.run(Semantics::Exact);
    assert_eq!(count(&r, FindingKind::DoubleUnmap), 1, "{:#?}", r.findings);
}

#[test]
fn virtio_whole_mapping_from_the_iova() {
    // virtio-iommu removes whole mappings starting at the IOVA; an 8 KiB
    // mapping at a 4 KiB-aligned IOVA asked for 4 KiB goes whole, and the
    // mapping just before it (not contiguous in phys) stays.
    let mut t = Trace::new(true);
    t.alloc(0x5000, 0);
    t.alloc(0x7000, 1);
    t.map(0x2000, 0x500_0000, 0x1000);
    t.map(0x3000, 0x700_0000, 0x2000);
    t.unmap(0x3000, 0x1000, 0x2000);
    t.free(0x7000, 1);
    t.free(0x5000, 0);
    let r = t.run(Semantics::Exact);
    assert_eq!(pages(&r, FindingKind::FreedWhileMapped), 1, "{:#?}", r.findings);
    let f = r.bugs().next().expect("the first mapping is still live");
    assert_eq!((f.pfn, f.iova), (Some(0x5000), Some(0x2000)));
}
