//! A map that fails part-way: the kernel's map entry point unmaps what it
//! had mapped itself before returning the error. 6.x traces no `iommu:map`
//! for it, only that roll-back's `iommu:unmap`; 7.x traces `iommu:map` with
//! the part mapped (possibly 0 bytes), then the roll-back. Nothing of it
//! stays mapped: its pages may be freed, its roll-back is no double unmap,
//! and each failed map is one informational `map-failed` finding.

use iosan_core::FindingKind;
use iosan_trace::{analyze, AnalyzeOptions, Report};

const DOMAIN: u64 = 0xfff0_0000_0397_9240;
const IOVA: u64 = 0xffff_0000;
const PHYS: u64 = 0x4d02_0000;
const PFN: u64 = PHYS >> 12;

/// The kernel generation whose map entry point the kprobes sit on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kernel {
    /// `__iommu_map`: a failed map emits no `iommu:map`.
    V6,
    /// `iommu_map_nosync`: a failed map emits `iommu:map` with the part mapped.
    V7,
}

impl Kernel {
    fn map_fn(self) -> &'static str {
        match self {
            Self::V6 => "__iommu_map",
            Self::V7 => "iommu_map_nosync",
        }
    }
}

/// Builds a capture on one CPU; with `kprobes`, the domain kprobes and the
/// return probes of map and unmap are in it.
struct Trace {
    kernel: Kernel,
    kprobes: bool,
    text: String,
    t_us: u64,
}

impl Trace {
    fn new(kernel: Kernel, kprobes: bool) -> Self {
        Self { kernel, kprobes, text: String::new(), t_us: 1_000_000 }
    }

    fn line(&mut self, body: &str) {
        self.t_us += 10;
        self.text.push_str(&format!(
            "          insmod-188     [000] d....    {}.{:06}: {body}\n",
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

    fn map_entry(&mut self, iova: u64, phys: u64, size: u64) {
        if self.kprobes {
            let f = self.kernel.map_fn();
            self.line(&format!(
                "iommu_map: ({f}+0x0/0x290) domain={DOMAIN:#x} dtype=3 iova={iova:#x} paddr={phys:#x} size={size:#x} prot=7"
            ));
        }
    }

    fn map_event(&mut self, iova: u64, phys: u64, size: u64) {
        self.line(&format!("map: IOMMU: iova=0x{iova:016x} - 0x{:016x} paddr=0x{phys:016x} size={size}", iova + size));
    }

    fn map_return(&mut self, ret: i64) {
        if self.kprobes {
            let f = self.kernel.map_fn();
            self.line(&format!("iommu_map_ret: (iommu_map+0x50/0xf8 <- {f}) ret={ret}"));
        }
    }

    fn unmap(&mut self, iova: u64, size: u64, unmapped: u64) {
        if self.kprobes {
            self.line(&format!(
                "iommu_unmap: (__iommu_unmap+0x0/0x1d0) domain={DOMAIN:#x} dtype=3 iova={iova:#x} size={size:#x}"
            ));
        }
        self.line(&format!(
            "unmap: IOMMU: iova=0x{iova:016x} - 0x{:016x} size={size} unmapped_size={unmapped}",
            iova + size
        ));
        if self.kprobes {
            self.line(&format!("iommu_unmap_ret: (iommu_unmap+0x40/0x90 <- __iommu_unmap) unmapped={unmapped:#x}"));
        }
    }

    /// A successful map of `size` bytes.
    fn map(&mut self, iova: u64, phys: u64, size: u64) {
        self.map_entry(iova, phys, size);
        self.map_event(iova, phys, size);
        self.map_return(0);
    }

    /// A map of `size` bytes that failed after mapping `mapped` of them,
    /// as this kernel traces it.
    fn failed_map(&mut self, iova: u64, phys: u64, size: u64, mapped: u64) {
        self.map_entry(iova, phys, size);
        if self.kernel == Kernel::V7 {
            self.map_event(iova, phys, mapped);
        }
        self.unmap(iova, mapped, mapped);
        self.map_return(-12);
    }

    /// A DMA-API map's event (`dma_map_page` of device 0000:00:04.0).
    fn dma_map(&mut self, dma: u64, phys: u64, size: u64) {
        self.line(&format!(
            "dma_map_page: 0000:00:04.0 dir=FROM_DEVICE dma_addr={dma:x} size={size} phys_addr={phys:x} attrs="
        ));
    }

    fn dma_unmap(&mut self, dma: u64, size: u64) {
        self.line(&format!("dma_unmap_page: 0000:00:04.0 dir=FROM_DEVICE dma_addr={dma:x} size={size} attrs="));
    }

    /// The DMA-API call's event of a map that failed: `DMA_MAPPING_ERROR`.
    fn dma_map_error(&mut self, phys: u64, size: u64) {
        self.dma_map(u64::MAX, phys, size);
    }

    fn run(&self) -> Report {
        analyze(self.text.as_bytes(), "synthetic", &AnalyzeOptions::default(), &mut ()).expect("in-memory input")
    }
}

fn count(r: &Report, kind: FindingKind) -> usize {
    r.findings.iter().filter(|f| f.kind == kind).count()
}

fn bugs(r: &Report) -> Vec<String> {
    r.findings.iter().filter(|f| f.kind.is_bug()).map(|f| format!("{} {:?}", f.kind, f.note)).collect()
}

/// The IOVA was used and unmapped before (so an unmap there that finds
/// nothing looks like a certain double unmap), then a map of 16 KiB fails
/// after 8 KiB, and its pages are freed.
fn reused_iova_then_failed_map(kernel: Kernel, kprobes: bool, mapped: u64) -> Trace {
    let mut t = Trace::new(kernel, kprobes);
    t.alloc(PFN, 2);
    t.map(IOVA, PHYS, 0x4000);
    t.unmap(IOVA, 0x4000, 0x4000);
    t.failed_map(IOVA, PHYS, 0x4000, mapped);
    t.free(PFN, 2);
    t
}

#[test]
fn a_failed_map_rolled_back_is_no_finding_on_every_kernel() {
    for kernel in [Kernel::V6, Kernel::V7] {
        for mapped in [0x2000, 0] {
            let r = reused_iova_then_failed_map(kernel, true, mapped).run();
            let what = format!("{kernel:?}, mapped {mapped:#x}");
            assert_eq!(bugs(&r), Vec::<String>::new(), "{what}: {:#?}", r.findings);
            assert_eq!(count(&r, FindingKind::MapFailed), 1, "{what}: {:#?}", r.findings);
            let f = r.findings.iter().find(|f| f.kind == FindingKind::MapFailed).expect("informational");
            assert!(!f.kind.is_bug());
            assert_eq!(f.iova, Some(IOVA), "{what}");
            assert_eq!(f.size, 0x4000, "{what}: the size asked");
            let note = f.note.as_deref().unwrap_or_default();
            assert!(note.contains("failed with error -12"), "{what}: {note}");
            assert!(note.contains(&format!("unmapped the {mapped} bytes")), "{what}: {note}");
            assert!(f.domain.as_deref().is_some_and(|d| d.contains("fff000000397924")), "{what}: {:?}", f.domain);
        }
    }
}

#[test]
fn without_kprobes_a_7x_failed_map_of_nothing_is_no_invalid_argument() {
    let r = reused_iova_then_failed_map(Kernel::V7, false, 0).run();
    assert_eq!(bugs(&r), Vec::<String>::new(), "{:#?}", r.findings);
    assert_eq!(count(&r, FindingKind::MapFailed), 1, "{:#?}", r.findings);
    // The part a 7.x failed map did map is traced, unmapped and balanced as it is.
    let r = reused_iova_then_failed_map(Kernel::V7, false, 0x2000).run();
    assert_eq!(bugs(&r), Vec::<String>::new(), "{:#?}", r.findings);
}

#[test]
fn a_failed_map_whose_part_was_not_seen_unmapped_is_counted_down() {
    // The kernel unmaps a failed map's part itself; here its unmap is not in
    // the capture (a filtered trace): the error still ends the mapping.
    let mut t = Trace::new(Kernel::V7, true);
    t.alloc(PFN, 2);
    t.map_entry(IOVA, PHYS, 0x4000);
    t.map_event(IOVA, PHYS, 0x2000);
    t.map_return(-12);
    t.free(PFN, 2);
    let r = t.run();
    assert_eq!(bugs(&r), Vec::<String>::new(), "{:#?}", r.findings);
    assert_eq!(count(&r, FindingKind::MapFailed), 1);
    assert_eq!(count(&r, FindingKind::MappedAtEnd), 0, "{:#?}", r.findings);
}

#[test]
fn a_successful_map_is_not_a_failed_one() {
    // The same calls with ret=0 and no roll-back: the page is mapped when freed.
    for kernel in [Kernel::V6, Kernel::V7] {
        let mut t = Trace::new(kernel, true);
        t.alloc(PFN, 2);
        t.map(IOVA, PHYS, 0x4000);
        t.free(PFN, 2);
        let r = t.run();
        assert_eq!(count(&r, FindingKind::FreedWhileMapped), 1, "{kernel:?}: {:#?}", r.findings);
        assert_eq!(count(&r, FindingKind::MapFailed), 0, "{kernel:?}");
    }
}

#[test]
fn an_unmap_after_the_failed_call_is_judged_as_usual() {
    // The roll-back belongs to the open call only: a second unmap of the
    // range once the call has returned is a double unmap.
    let mut t = reused_iova_then_failed_map(Kernel::V6, true, 0x2000);
    t.unmap(IOVA, 0x2000, 0);
    let r = t.run();
    assert_eq!(count(&r, FindingKind::DoubleUnmap), 1, "{:#?}", r.findings);
}

#[test]
fn a_zero_size_map_that_succeeds_is_still_invalid() {
    for kprobes in [true, false] {
        let mut t = Trace::new(Kernel::V7, kprobes);
        t.alloc(PFN, 0);
        t.map(IOVA, PHYS, 0);
        t.free(PFN, 0);
        let r = t.run();
        assert_eq!(count(&r, FindingKind::InvalidMapArgs), 1, "kprobes={kprobes}: {:#?}", r.findings);
        assert_eq!(count(&r, FindingKind::MapFailed), 0);
        // Also when it is the last event of the capture.
        let mut t = Trace::new(Kernel::V7, kprobes);
        t.map_entry(IOVA, PHYS, 0);
        t.map_event(IOVA, PHYS, 0);
        let r = t.run();
        assert_eq!(count(&r, FindingKind::InvalidMapArgs), 1, "kprobes={kprobes}, at the end: {:#?}", r.findings);
    }
}

#[test]
fn a_dma_mapping_error_is_the_failed_map_of_a_kernel_without_kprobes() {
    // 6.x without kprobes: only the roll-back unmap and the DMA-API event
    // that returned DMA_MAPPING_ERROR show the failure.
    for kprobes in [false, true] {
        let mut t = Trace::new(Kernel::V6, kprobes);
        t.alloc(PFN, 2);
        // A DMA-API map and unmap of the IOVA first (their events name the device).
        t.map(IOVA, PHYS, 0x4000);
        t.dma_map(IOVA, PHYS, 0x4000);
        t.unmap(IOVA, 0x4000, 0x4000);
        t.dma_unmap(IOVA, 0x4000);
        // The call's event comes after its IOMMU calls, then the page is freed.
        t.failed_map(IOVA, PHYS, 0x4000, 0x2000);
        t.dma_map_error(PHYS, 0x4000);
        t.free(PFN, 2);
        let r = t.run();
        assert_eq!(bugs(&r), Vec::<String>::new(), "kprobes {kprobes}: {:#?}", r.findings);
        // One failure, one finding: with the kprobes, their error says it first.
        assert_eq!(count(&r, FindingKind::MapFailed), 1, "kprobes {kprobes}: {:#?}", r.findings);
        if !kprobes {
            let f = r.findings.iter().find(|f| f.kind == FindingKind::MapFailed).unwrap();
            let note = f.note.as_deref().unwrap_or_default();
            assert!(note.contains("DMA_MAPPING_ERROR") && note.contains("roll-back"), "{note}");
            assert_eq!(f.iova, Some(IOVA), "the roll-back's IOVA");
            assert_eq!(f.device.as_deref(), Some("0000:00:04.0"));
        }
    }
}

#[test]
fn a_dma_mapping_error_maps_nothing_and_says_nothing_of_the_machine() {
    // No IOMMU: DMA addresses are physical. A failed map's all-ones DMA
    // address is no sign of an IOMMU, and its page is not mapped.
    let mut t = Trace::new(Kernel::V6, false);
    t.alloc(PFN, 0);
    t.dma_map(PHYS, PHYS, 4096);
    t.dma_unmap(PHYS, 4096);
    t.dma_map_error(PHYS + 0x1000, 4096);
    t.line("dma_map_sg_err: 0000:00:04.0 dir=TO_DEVICE dma_addrs={0x4d022000} err=-12 attrs=");
    t.free(PFN + 1, 0);
    t.free(PFN + 2, 0);
    let r = t.run();
    assert_eq!(bugs(&r), Vec::<String>::new(), "{:#?}", r.findings);
    assert!(r.summary.dma_direct, "dma-direct still inferred");
    assert_eq!(count(&r, FindingKind::MapFailed), 2, "{:#?}", r.findings);
    let notes: Vec<_> = r.findings.iter().filter_map(|f| f.note.clone()).collect();
    assert!(notes.iter().any(|n| n.contains("dma_map_sg") && n.contains("error -12")), "{notes:?}");
}
