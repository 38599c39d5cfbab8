//! Workloads (small, realistic drivers) and bug injection, run on the
//! model with the sanitizer wired in: [`simulate`] and [`list`].
//!
//! Every run is deterministic for a seed ([`SplitMix64`]). A bug is
//! injected once, in the last iteration of its workload, so that nothing
//! after it disturbs the expected finding; [`SimReport::injected`] tells
//! where it happened (page, IOVA, domain, device) for tests and demos.

use std::io::Write;
use std::sync::Arc;

use iosan_core::{DmaAddr, DomainId, Finding, FindingKind, Iova, PageSize, Pfn, PhysAddr, Semantics};

use crate::dma::Coherent;
use crate::error::{ModelError, Result};
use crate::kernel::{Exposure, Kernel, KernelConfig, ModelStats};
use crate::pgtable::PgtableCfg;
use crate::prng::SplitMix64;
use crate::trace::{DmaDir, TraceCtx};

/// Which IOMMU page-table format the devices get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum IommuKind {
    /// Intel VT-d second level, 48-bit, whole-block partial unmap.
    #[default]
    Vtd,
    /// ARM SMMU stage 1, 4 KiB granule, 48-bit.
    Arm4k,
    /// ARM SMMU stage 1, 16 KiB granule, 48-bit.
    Arm16k,
    /// ARM SMMU stage 1, 64 KiB granule, 48-bit.
    Arm64k,
}

impl IommuKind {
    /// The page-table configuration.
    #[must_use]
    pub const fn pgtable(self) -> PgtableCfg {
        match self {
            Self::Vtd => PgtableCfg::vtd(48),
            Self::Arm4k => PgtableCfg::arm_lpae(1, 12, 48, 48),
            Self::Arm16k => PgtableCfg::arm_lpae(1, 14, 48, 48),
            Self::Arm64k => PgtableCfg::arm_lpae(1, 16, 48, 48),
        }
    }
    /// Parses `vtd`, `arm-4k`, `arm-16k`, `arm-64k`.
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "vtd" => Some(Self::Vtd),
            "arm-4k" => Some(Self::Arm4k),
            "arm-16k" => Some(Self::Arm16k),
            "arm-64k" => Some(Self::Arm64k),
            _ => None,
        }
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimSpec {
    /// Workload name (see [`list`]); empty means the bug's default workload.
    pub workload: String,
    /// Bug to inject, if any (see [`list`]).
    pub bug: Option<String>,
    /// PRNG seed.
    pub seed: u64,
    /// Iterations of the workload's main loop (packets, I/Os, buffers).
    pub iterations: u64,
    /// Sanitizer semantics.
    pub semantics: Semantics,
    /// Strict (true) or lazy flush-queue (false) unmap.
    pub strict: bool,
    /// Page-table format of the devices.
    pub iommu: IommuKind,
    /// Write the `lab:*` kprobe lines (domain identity) to the trace.
    pub kprobes: bool,
    /// Write the trace as a trace.dat (version 6) instead of ftrace text.
    pub tracedat: bool,
    /// CPU page size.
    pub page_size: PageSize,
}

impl Default for SimSpec {
    fn default() -> Self {
        Self {
            workload: String::new(),
            bug: None,
            seed: 1,
            iterations: 200,
            semantics: Semantics::Exact,
            strict: true,
            iommu: IommuKind::Vtd,
            kprobes: true,
            tracedat: false,
            page_size: PageSize::SIZE_4K,
        }
    }
}

/// Where an injected bug happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injected {
    /// Bug name.
    pub bug: &'static str,
    /// First page concerned (the page freed while mapped, for example).
    pub pfn: Option<Pfn>,
    /// Pages concerned from `pfn`.
    pub npages: u64,
    /// IOVA concerned.
    pub iova: Iova,
    /// The domain (the sanitizer's id).
    pub domain: DomainId,
    /// The device name.
    pub device: Arc<str>,
}

/// What a simulation produced.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// The workload that ran.
    pub workload: &'static str,
    /// Every finding of the sanitizer (and of the DMA debug check).
    pub findings: Vec<Finding>,
    /// Lazy-mode exposure (zero in strict mode).
    pub exposure: Exposure,
    /// What the model did.
    pub stats: ModelStats,
    /// The finding kinds the injected bug must produce (empty for a clean run).
    pub expected: Vec<FindingKind>,
    /// Where the bug was injected.
    pub injected: Option<Injected>,
}

impl SimReport {
    /// Findings that indicate a bug (not informational).
    pub fn bugs(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.kind.is_bug())
    }
}

struct Entry {
    kind: &'static str,
    name: &'static str,
    description: &'static str,
}

const CATALOG: &[Entry] = &[
    Entry { kind: "workload", name: "nic-rx", description: "NIC receive ring of 64 page buffers (dma_map_page FROM_DEVICE), recycled or freed after each packet, plus small TX buffers at offsets" },
    Entry { kind: "workload", name: "nvme", description: "NVMe I/O queue: data pages mapped one by one as PRP entries, a PRP list page for larger I/Os, a coherent admin queue" },
    Entry { kind: "workload", name: "gpu-sg", description: "GPU-like buffers of four 2 MiB runs mapped with dma_map_sg (superpages where the IOMMU has them)" },
    Entry { kind: "bug", name: "free-before-unmap", description: "nic-rx: the receive path frees the page, then unmaps it (freed-while-mapped)" },
    Entry { kind: "bug", name: "unmap-wrong-size", description: "nvme: an 8 KiB data buffer unmapped with 4 KiB, then freed (dma-unmap-mismatch, freed-while-mapped, leak-at-teardown)" },
    Entry { kind: "bug", name: "double-unmap", description: "nic-rx: a receive buffer unmapped twice (double-unmap)" },
    Entry { kind: "bug", name: "leak-at-teardown", description: "nvme: an in-flight I/O is never unmapped before the device goes away (leak-at-teardown)" },
    Entry { kind: "bug", name: "sg-wrong-total", description: "gpu-sg: a buffer unmapped with one segment fewer than mapped, then freed (dma-unmap-mismatch, freed-while-mapped, leak-at-teardown)" },
];

/// Every workload and bug: `(kind, name, description)` with kind
/// `"workload"` or `"bug"`.
pub fn list() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    CATALOG.iter().map(|e| (e.kind, e.name, e.description))
}

/// The default workload of a bug and the kinds it must produce (exact
/// semantics, strict mode).
#[must_use]
pub fn bug_info(bug: &str) -> Option<(&'static str, &'static [FindingKind])> {
    use FindingKind as K;
    Some(match bug {
        "free-before-unmap" => ("nic-rx", &[K::FreedWhileMapped]),
        "unmap-wrong-size" => ("nvme", &[K::DmaUnmapMismatch, K::FreedWhileMapped, K::LeakAtTeardown]),
        "double-unmap" => ("nic-rx", &[K::DoubleUnmap]),
        "leak-at-teardown" => ("nvme", &[K::LeakAtTeardown]),
        "sg-wrong-total" => ("gpu-sg", &[K::DmaUnmapMismatch, K::FreedWhileMapped, K::LeakAtTeardown]),
        _ => return None,
    })
}

fn static_name(name: &str) -> Option<&'static str> {
    CATALOG.iter().find(|e| e.name == name).map(|e| e.name)
}

/// Runs a workload, optionally with a bug, optionally writing the ftrace
/// text of everything the model did to `trace_out`.
///
/// # Errors
/// [`ModelError::Invalid`] for an unknown workload or bug; any model error
/// the workload hits (out of memory, IOVA space exhausted); [`ModelError::Io`]
/// if writing the trace failed.
pub fn simulate(spec: &SimSpec, trace_out: Option<&mut dyn Write>) -> Result<SimReport> {
    let bug = match &spec.bug {
        Some(b) => Some(static_name(b).filter(|n| bug_info(n).is_some()).ok_or(ModelError::Invalid("unknown bug"))?),
        None => None,
    };
    let workload = if spec.workload.is_empty() {
        bug.and_then(bug_info).map_or("nic-rx", |(w, _)| w)
    } else {
        static_name(&spec.workload).filter(|n| bug_info(n).is_none()).ok_or(ModelError::Invalid("unknown workload"))?
    };
    let cfg = KernelConfig {
        semantics: spec.semantics,
        page_size: spec.page_size,
        strict: spec.strict,
        kprobes: spec.kprobes,
        tracedat: spec.tracedat,
        ..KernelConfig::default()
    };
    let mut k = Kernel::new(cfg, trace_out)?;
    let mut rng = SplitMix64::new(spec.seed);
    k.set_ctx(TraceCtx::task("insmod", 150, 0));
    k.marker("LAB: phase=setup_done mode=model");
    let injected = match workload {
        "nic-rx" => nic_rx(&mut k, &mut rng, spec, bug)?,
        "nvme" => nvme(&mut k, &mut rng, spec, bug)?,
        _ => gpu_sg(&mut k, &mut rng, spec, bug)?,
    };
    k.finish_trace()?;
    let expected = bug.and_then(bug_info).map(|(_, e)| e.to_vec()).unwrap_or_default();
    Ok(SimReport {
        workload,
        findings: k.take_findings(),
        exposure: k.exposure(),
        stats: k.stats(),
        expected,
        injected,
    })
}

fn injected(k: &Kernel<'_>, dev: u32, bug: &'static str, pfn: Option<Pfn>, iova: u64) -> Option<Injected> {
    let d = k.device(dev)?;
    let domain = k.domain(d.domain)?.id();
    Some(Injected { bug, pfn, npages: 1, iova: Iova(iova), domain, device: d.name.clone() })
}

fn phys(k: &Kernel<'_>, pfn: Pfn) -> Result<PhysAddr> {
    pfn.to_phys(k.config().page_size).ok_or(ModelError::Range("pfn beyond the physical space"))
}

/// A NIC: RX ring of page buffers, TX of small buffers.
fn nic_rx(
    k: &mut Kernel<'_>,
    rng: &mut SplitMix64,
    spec: &SimSpec,
    bug: Option<&'static str>,
) -> Result<Option<Injected>> {
    const RING: usize = 64;
    let page = k.config().page_size.bytes();
    let dev = k.add_device("0000:00:02.0", spec.iommu.pgtable(), 0xffff_ffff)?;
    let mut ring: Vec<(Pfn, DmaAddr)> = Vec::with_capacity(RING);
    for _ in 0..RING {
        let pfn = k.alloc_pages(0, "GFP_ATOMIC|__GFP_NOWARN")?;
        let dma = k.dma_map_page(dev, phys(k, pfn)?, page, DmaDir::FromDevice)?;
        ring.push((pfn, dma));
    }
    let task = TraceCtx::task("iperf3", 181, 1);
    let irq = TraceCtx::irq(0);
    let mut out = None;
    let last = spec.iterations.saturating_sub(1);
    for it in 0..spec.iterations {
        k.advance(20_000 + rng.below(180_000));
        // A packet arrives in slot i.
        k.set_ctx(irq);
        let i = usize::try_from(it % RING as u64).unwrap_or(0);
        let (pfn, dma) = ring[i];
        if it == last && bug == Some("free-before-unmap") {
            k.free_pages(pfn, 0)?;
            out = injected(k, dev, "free-before-unmap", Some(pfn), dma.get());
            k.dma_unmap_page(dev, dma, page, DmaDir::FromDevice)?;
            let fresh = k.alloc_pages(0, "GFP_ATOMIC|__GFP_NOWARN")?;
            let d = k.dma_map_page(dev, phys(k, fresh)?, page, DmaDir::FromDevice)?;
            ring[i] = (fresh, d);
            continue;
        }
        k.dma_unmap_page(dev, dma, page, DmaDir::FromDevice)?;
        if it == last && bug == Some("double-unmap") {
            out = injected(k, dev, "double-unmap", None, dma.get());
            k.dma_unmap_page(dev, dma, page, DmaDir::FromDevice)?;
        }
        // The stack consumes the packet: recycle the page or free it and refill.
        let pfn = if rng.chance(1, 2) {
            pfn
        } else {
            k.set_ctx(task);
            k.free_pages(pfn, 0)?;
            k.set_ctx(irq);
            k.alloc_pages(0, "GFP_ATOMIC|__GFP_NOWARN")?
        };
        let d = k.dma_map_page(dev, phys(k, pfn)?, page, DmaDir::FromDevice)?;
        ring[i] = (pfn, d);
        // Sometimes a small TX frame at an offset inside a kmalloc page.
        if rng.chance(1, 3) {
            k.set_ctx(task);
            let buf = k.alloc_pages(0, "GFP_KERNEL")?;
            let len = 60 + rng.below(1455);
            let off = rng.below(page - len) & !0x3f;
            let at = phys(k, buf)?.checked_add(off).ok_or(ModelError::Range("offset"))?;
            let d = k.dma_map_page(dev, at, len, DmaDir::ToDevice)?;
            k.advance(5_000 + rng.below(20_000));
            k.set_ctx(irq);
            k.dma_unmap_page(dev, d, len, DmaDir::ToDevice)?;
            k.free_pages(buf, 0)?;
        }
    }
    // Teardown: unmap and free the ring, remove the device.
    k.set_ctx(TraceCtx::task("rmmod", 190, 0));
    for (pfn, dma) in ring {
        k.dma_unmap_page(dev, dma, page, DmaDir::FromDevice)?;
        k.free_pages(pfn, 0)?;
    }
    k.remove_device(dev)?;
    Ok(out)
}

/// An NVMe queue: PRP data pages and PRP list pages, a coherent admin queue.
fn nvme(
    k: &mut Kernel<'_>,
    rng: &mut SplitMix64,
    spec: &SimSpec,
    bug: Option<&'static str>,
) -> Result<Option<Injected>> {
    let page = k.config().page_size.bytes();
    let dev = k.add_device("0000:00:04.0", spec.iommu.pgtable(), u64::MAX)?;
    let admin: Coherent = k.dma_alloc_coherent(dev, 16 * 1024)?;
    let submit = TraceCtx::task("fio", 201, 1);
    let irq = TraceCtx::irq(1);
    let mut out = None;
    let mut leaked: Option<Vec<(Pfn, u32)>> = None;
    let last = spec.iterations.saturating_sub(1);
    for it in 0..spec.iterations {
        k.advance(10_000 + rng.below(90_000));
        k.set_ctx(submit);
        let wrong_size = it == last && bug == Some("unmap-wrong-size");
        // Data: 1..=8 pages, as order-0 pages or (for the bug) one order-1 block.
        let mut blocks: Vec<(Pfn, u32)> = Vec::new();
        let mut maps: Vec<(DmaAddr, u64, DmaDir)> = Vec::new();
        if wrong_size {
            let pfn = k.alloc_pages(1, "GFP_KERNEL")?;
            let d = k.dma_map_page(dev, phys(k, pfn)?, 2 * page, DmaDir::FromDevice)?;
            blocks.push((pfn, 1));
            maps.push((d, 2 * page, DmaDir::FromDevice));
        } else {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let pfn = k.alloc_pages(0, "GFP_NOIO")?;
                let d = k.dma_map_page(dev, phys(k, pfn)?, page, DmaDir::FromDevice)?;
                blocks.push((pfn, 0));
                maps.push((d, page, DmaDir::FromDevice));
            }
            if n > 2 {
                // The PRP list page the controller reads.
                let pfn = k.alloc_pages(0, "GFP_ATOMIC")?;
                let d = k.dma_map_page(dev, phys(k, pfn)?, page, DmaDir::ToDevice)?;
                blocks.push((pfn, 0));
                maps.push((d, page, DmaDir::ToDevice));
            }
        }
        if it == last && bug == Some("leak-at-teardown") {
            let (d, _, _) = maps[0];
            out = injected(k, dev, "leak-at-teardown", Some(blocks[0].0), d.get());
            leaked = Some(blocks);
            continue;
        }
        k.advance(30_000 + rng.below(200_000));
        k.set_ctx(irq);
        for &(d, len, dir) in &maps {
            let unmap_len = if wrong_size { len / 2 } else { len };
            k.dma_unmap_page(dev, d, unmap_len, dir)?;
        }
        k.set_ctx(submit);
        for &(pfn, order) in &blocks {
            if wrong_size {
                let second = pfn.checked_add(1).ok_or(ModelError::Range("pfn"))?;
                let iova = maps[0].0.get() + page;
                out = injected(k, dev, "unmap-wrong-size", Some(second), iova);
            }
            k.free_pages(pfn, order)?;
        }
    }
    k.set_ctx(TraceCtx::task("rmmod", 190, 0));
    k.dma_free_coherent(dev, &admin)?;
    k.remove_device(dev)?;
    if let Some(blocks) = leaked {
        // The driver frees the memory after the device is gone.
        for (pfn, order) in blocks {
            k.free_pages(pfn, order)?;
        }
    }
    Ok(out)
}

/// GPU-like buffers: four 2 MiB runs per buffer through `dma_map_sg`.
fn gpu_sg(
    k: &mut Kernel<'_>,
    rng: &mut SplitMix64,
    spec: &SimSpec,
    bug: Option<&'static str>,
) -> Result<Option<Injected>> {
    const RUN: u64 = 2 << 20;
    let page = k.config().page_size;
    let order = (RUN >> page.lg2()).trailing_zeros();
    let dev = k.add_device("0000:00:05.0", spec.iommu.pgtable(), (1 << 40) - 1)?;
    k.set_ctx(TraceCtx::task("gpu-test", 220, 0));
    let irq = TraceCtx::irq(0);
    let mut out = None;
    let last = spec.iterations.saturating_sub(1);
    for it in 0..spec.iterations {
        k.advance(100_000 + rng.below(400_000));
        k.set_ctx(TraceCtx::task("gpu-test", 220, 0));
        let runs = 2 + rng.below(3);
        let mut blocks = Vec::new();
        let mut segs = Vec::new();
        for _ in 0..runs {
            let pfn = k.alloc_pages(order, "GFP_HIGHUSER|__GFP_COMP")?;
            blocks.push(pfn);
            segs.push((phys(k, pfn)?, RUN));
        }
        let dma = k.dma_map_sg(dev, &segs, DmaDir::Bidirectional)?;
        k.advance(200_000 + rng.below(800_000));
        k.set_ctx(irq);
        let wrong = it == last && bug == Some("sg-wrong-total");
        let unmap_segs = if wrong { &segs[..segs.len() - 1] } else { &segs[..] };
        k.dma_unmap_sg(dev, dma, unmap_segs, DmaDir::Bidirectional)?;
        k.set_ctx(TraceCtx::task("gpu-test", 220, 0));
        if wrong {
            let lastblk = blocks[blocks.len() - 1];
            let iova = dma.get() + RUN * (runs - 1);
            out = injected(k, dev, "sg-wrong-total", Some(lastblk), iova);
            if let Some(o) = out.as_mut() {
                o.npages = 1 << order;
            }
        }
        for pfn in blocks {
            k.free_pages(pfn, order)?;
        }
    }
    k.set_ctx(TraceCtx::task("rmmod", 190, 0));
    k.remove_device(dev)?;
    Ok(out)
}
