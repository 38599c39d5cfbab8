//! The modelled kernel: page allocator, IOMMU domains, the devices using
//! them (with their IOVA space and dma-debug records, which the DMA API in
//! `dma` drives) and the IOMMU API, with the sanitizer hooked in where
//! Linux puts it (after the May 2026 fixes) and every step optionally
//! written as ftrace text.
//!
//! Hook placement, as in `mm/page_alloc.c` and `drivers/iommu/iommu.c`:
//! - `post_alloc_hook()` → [`Sanitizer::check_alloc`] on every block handed
//!   out (page-table pages included);
//! - `free_pages_prepare()` → [`Sanitizer::check_free`] on every block freed;
//! - `iommu_map_nosync()` → after the page-table walk,
//!   [`Sanitizer::map`] with the bytes actually mapped, also on error, and
//!   then, on error, `iommu_unmap()` of exactly that part (CVE-2026-64152);
//! - `__iommu_unmap()` → [`Sanitizer::unmap_begin`] before the table
//!   changes, [`Sanitizer::unmap_end`] with the bytes unmapped after;
//! - `iommu_domain_free()` → [`Sanitizer::domain_destroyed`] before the
//!   tables go.
//!
//! Units: bytes, nanoseconds of model time.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;

use iosan_core::{
    Config, DomainId, Finding, Iova, IovaRange, MapMeta, Mapping, MappingSource, PageSize, Pfn, PhysAddr, PhysRange,
    Sanitizer, Semantics, Translate,
};

use crate::error::{ModelError, Result};
use crate::iova::{FlushQueue, IovaDomain};
use crate::mem::{PhysMemory, RegionKind};
use crate::pgtable::{IoPgtable, PgtableCfg, TableMemory};
use crate::trace::{DmaDir, TraceCtx, TraceWriter};

/// `iommu_domain.type` values printed as `dtype=` by the kprobes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DomainType {
    /// `IOMMU_DOMAIN_UNMANAGED` (1): VFIO, GPU drivers, test modules.
    Unmanaged,
    /// `IOMMU_DOMAIN_DMA` (3): dma-iommu, strict invalidation.
    Dma,
    /// `IOMMU_DOMAIN_DMA_FQ` (11): dma-iommu with a flush queue (lazy).
    DmaFq,
}

impl DomainType {
    /// The numeric type.
    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            Self::Unmanaged => 1,
            Self::Dma => 3,
            Self::DmaFq => 11,
        }
    }
}

/// Settings of the modelled kernel.
#[derive(Clone, Debug)]
pub struct KernelConfig {
    /// Sanitizer semantics.
    pub semantics: Semantics,
    /// Run the sanitizer hooks at all (false measures the model alone).
    pub sanitize: bool,
    /// CPU page size (`PAGE_SIZE`).
    pub page_size: PageSize,
    /// `iommu.strict=1` (true) or the flush queue (false).
    pub strict: bool,
    /// Write the `lab:*` kprobe lines that carry domain identity.
    pub kprobes: bool,
    /// Write the trace as a trace.dat (version 6) instead of ftrace text.
    pub tracedat: bool,
    /// Check DMA-API unmaps against their maps (`CONFIG_DMA_API_DEBUG`).
    pub dma_debug: bool,
    /// MiB of RAM above 4 GiB (RAM below is 1 MiB..3 GiB; 3..4 GiB is MMIO).
    pub high_mib: u64,
    /// Number of CPUs in the trace header.
    pub nr_cpus: u32,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            semantics: Semantics::Exact,
            sanitize: true,
            page_size: PageSize::SIZE_4K,
            strict: true,
            kprobes: true,
            tracedat: false,
            dma_debug: true,
            high_mib: 1024,
            nr_cpus: 2,
        }
    }
}

/// One IOMMU domain (`struct iommu_domain` with its `io_pgtable_ops`).
#[derive(Debug)]
pub struct Domain {
    /// Kernel pointer, printed by the kprobes; also the sanitizer's id.
    pub kptr: u64,
    /// VT-d domain id (`did`), printed by the `intel_iommu` events.
    pub did: u32,
    /// Domain type.
    pub dtype: DomainType,
    /// The page table.
    pub pgtable: IoPgtable,
    /// The device using the domain (for findings' provenance).
    pub(crate) device: Option<Arc<str>>,
    /// Start IOVA of each map call -> (length, when): the only bookkeeping
    /// provenance needs on the hot path; the rest comes from walking the
    /// page table when there is a finding.
    pub(crate) map_times: HashMap<u64, (u64, u64), BuildHasherDefault<iosan_core::hash::FastHasher>>,
}

impl Domain {
    /// The sanitizer's id of this domain.
    #[must_use]
    pub fn id(&self) -> DomainId {
        DomainId(self.kptr)
    }
}

/// How a DMA mapping was made (for the debug check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// `dma_map_page()` / `dma_map_single()`.
    Page,
    /// `dma_map_sg()` with this many CPU segments.
    Sg(usize),
    /// `dma_alloc_coherent()`.
    Coherent,
}

/// A live DMA mapping as `CONFIG_DMA_API_DEBUG` records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaEntry {
    /// Size the driver mapped.
    pub size: u64,
    /// Direction.
    pub dir: DmaDir,
    /// Kind of map.
    pub kind: MapKind,
}

/// A device behind the IOMMU with its own DMA domain (`struct device`
/// with its dma-iommu cookie and its dma-debug entries).
#[derive(Clone, Debug)]
pub struct Device {
    /// `dev_name()`: a PCI address such as `0000:00:02.0`.
    pub name: Arc<str>,
    /// Its domain handle.
    pub domain: u32,
    /// Its IOVA space.
    pub iovad: IovaDomain,
    /// Live DMA mappings by DMA address (the dma-debug hash).
    pub live: HashMap<u64, DmaEntry>,
}

/// Lazy-mode exposure: pages freed after their unmap but before the IOTLB
/// flush, still reachable by the device (not findings: lazy mode's
/// accepted cost).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exposure {
    /// Pages freed inside a flush window.
    pub pages: u64,
    /// Bytes freed inside a flush window.
    pub bytes: u64,
    /// Longest time a freed page stayed reachable (ns, free to flush).
    pub longest_window_ns: u64,
    /// Unmaps that went through the flush queue.
    pub queued_unmaps: u64,
    /// Flushes of the queue.
    pub flushes: u64,
}

/// Counters of what the model did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// `iommu_map` calls (one per run for map_sg).
    pub iommu_maps: u64,
    /// `iommu_unmap` calls.
    pub iommu_unmaps: u64,
    /// Bytes mapped.
    pub bytes_mapped: u64,
    /// Bytes unmapped.
    pub bytes_unmapped: u64,
    /// Blocks allocated from the buddy allocator.
    pub page_allocs: u64,
    /// Blocks freed to the buddy allocator.
    pub page_frees: u64,
    /// DMA-API map calls (page, sg, coherent).
    pub dma_maps: u64,
    /// DMA-API unmap calls.
    pub dma_unmaps: u64,
    /// Trace lines written.
    pub trace_lines: u64,
    /// Trace bytes written.
    pub trace_bytes: u64,
    /// Model time at the end (ns).
    pub elapsed_ns: u64,
}

/// The live mappings of every domain, for findings' provenance.
struct Provenance<'a>(&'a BTreeMap<u32, Domain>);

impl MappingSource for Provenance<'_> {
    fn mappings_covering(&self, phys: PhysAddr, len: u64, visit: &mut dyn FnMut(Mapping)) {
        let Some(want) = PhysRange::from_start_len(phys, len.max(1)) else { return };
        let Some(all) = IovaRange::from_start_last(Iova(0), Iova(u64::MAX)) else { return };
        for d in self.0.values() {
            // Findings are rare: walk the page table for the leaves that map these pages.
            d.pgtable.walk_leaves(all, &mut |run| {
                let hit = PhysRange::from_start_len(run.phys, run.len).and_then(|r| r.intersect(want)).is_some();
                if hit {
                    // The map call that made this leaf, for its start and time.
                    let call = d
                        .map_times
                        .iter()
                        .filter(|(&s, &(l, _))| s <= run.iova.get() && run.iova.get() - s < l)
                        .max_by_key(|(&s, _)| s);
                    let (iova, phys0, len, when) = match call {
                        Some((&s, &(l, when))) => (s, run.phys.get().wrapping_sub(run.iova.get() - s), l, when),
                        None => (run.iova.get(), run.phys.get(), run.len, 0),
                    };
                    visit(Mapping {
                        domain: DomainId(d.kptr),
                        device: d.device.clone(),
                        iova: Iova(iova),
                        phys: PhysAddr(phys0),
                        len,
                        meta: MapMeta { when, tag: 0 },
                    });
                }
                ControlFlow::Continue(())
            });
        }
    }
}

/// Table memory from the buddy allocator; the hooks and trace lines for
/// the pages are issued by the kernel once the table operation returns.
struct BuddyTables<'a> {
    mem: &'a mut PhysMemory,
    allocated: Vec<(Pfn, u32)>,
    freed: Vec<(Pfn, u32)>,
}

fn order_for(bytes: u64, page: PageSize) -> u32 {
    let pages = bytes.div_ceil(page.bytes()).max(1);
    pages.next_power_of_two().trailing_zeros()
}

impl TableMemory for BuddyTables<'_> {
    fn alloc_table(&mut self, bytes: u64) -> Option<PhysAddr> {
        let page = self.mem.page_size();
        let order = order_for(bytes, page);
        let pfn = self.mem.alloc(order).ok()?;
        self.allocated.push((pfn, order));
        pfn.to_phys(page)
    }
    fn free_table(&mut self, phys: PhysAddr, bytes: u64) {
        let page = self.mem.page_size();
        self.freed.push((phys.pfn(page), order_for(bytes, page)));
    }
}

/// `iommu_pgsize()`: the page size and count for the next chunk of a map
/// or unmap: the largest size in `bitmap` that `iova | paddr` is aligned to
/// and that fits in `size`, and as many of them as fit before both
/// addresses reach the alignment of the next larger size.
#[must_use]
pub fn iommu_pgsize(bitmap: u64, iova: u64, paddr: u64, size: u64) -> Option<(u64, u64)> {
    if size == 0 || bitmap == 0 {
        return None;
    }
    let merge = iova | paddr;
    let fit = 63 - size.leading_zeros(); // largest lg2 <= size
    let mut sizes = bitmap & (u64::MAX >> (63 - fit));
    if merge != 0 {
        let al = merge.trailing_zeros();
        if al < 63 {
            sizes &= u64::MAX >> (63 - al);
        }
    }
    if sizes == 0 {
        return None;
    }
    let lg2 = 63 - sizes.leading_zeros();
    let pgsize = 1u64 << lg2;
    let mut span = size;
    let bigger = bitmap & !(u64::MAX >> (63 - lg2));
    if bigger != 0 {
        let next = 1u64 << bigger.trailing_zeros();
        // Only worth stopping early if both addresses can become aligned
        // together and a larger page then still fits.
        if (iova ^ paddr) & (next - 1) == 0 {
            let offset = next - (merge & (next - 1));
            if offset.checked_add(next).is_some_and(|e| e <= size) {
                span = offset;
            }
        }
    }
    Some((pgsize, span >> lg2))
}

/// The modelled kernel (see the module docs).
pub struct Kernel<'w> {
    pub(crate) cfg: KernelConfig,
    pub(crate) mem: PhysMemory,
    pub(crate) san: Sanitizer,
    pub(crate) domains: BTreeMap<u32, Domain>,
    next_domain: u32,
    next_did: u32,
    trace: Option<TraceWriter<&'w mut dyn Write>>,
    pub(crate) now: u64,
    tick_state: u64,
    pub(crate) ctx: TraceCtx,
    pub(crate) findings: Vec<Finding>,
    pub(crate) stats: ModelStats,
    pub(crate) exposure: Exposure,
    /// Lazy mode: pages unmapped but not flushed yet (pfn → count).
    pub(crate) fq_pages: HashMap<u64, u32>,
    /// Lazy mode: pages freed while unflushed (pfn, free time).
    pub(crate) fq_freed: Vec<(u64, u64)>,
    pub(crate) devices: Vec<Device>,
    pub(crate) fq: FlushQueue,
}

impl<'w> Kernel<'w> {
    /// A kernel with memory, a sanitizer and no domains yet; with `trace`,
    /// the header is written at once.
    ///
    /// # Errors
    /// [`ModelError::BadRegion`] if the memory layout cannot be built.
    pub fn new(cfg: KernelConfig, trace: Option<&'w mut dyn Write>) -> Result<Self> {
        let page = cfg.page_size;
        let mem = if page == PageSize::SIZE_4K {
            PhysMemory::typical_x86(cfg.high_mib)?
        } else {
            // Same layout in bytes, in larger frames.
            let per_mib = (1u64 << 20) >> page.lg2();
            let mut regions = vec![
                crate::mem::Region { start: Pfn(per_mib), pages: 3071 * per_mib, kind: RegionKind::Ram },
                crate::mem::Region { start: Pfn(3072 * per_mib), pages: 1024 * per_mib, kind: RegionKind::Mmio },
            ];
            if cfg.high_mib > 0 {
                let pages = cfg.high_mib.checked_mul(per_mib).ok_or(ModelError::BadRegion("too much memory"))?;
                regions.push(crate::mem::Region { start: Pfn(4096 * per_mib), pages, kind: RegionKind::Ram });
            }
            PhysMemory::new(page, &regions)?
        };
        let ram: Vec<PhysRange> = mem
            .regions()
            .iter()
            .filter(|r| r.kind == RegionKind::Ram)
            .filter_map(|r| {
                let start = r.start.to_phys(page)?;
                PhysRange::from_start_len(start, r.pages.checked_mul(page.bytes())?)
            })
            .collect();
        let san = Sanitizer::new(Config { semantics: cfg.semantics, page_size: page, ram, ..Config::default() });
        let mut trace =
            trace.map(
                |w| if cfg.tracedat { TraceWriter::tracedat(w, page.bytes() as usize) } else { TraceWriter::new(w) },
            );
        if let Some(t) = trace.as_mut() {
            t.header(0, cfg.nr_cpus);
        }
        Ok(Self {
            cfg,
            mem,
            san,
            domains: BTreeMap::new(),
            next_domain: 1,
            next_did: 2,
            trace,
            now: 1_000_000_000,
            tick_state: 0,
            ctx: TraceCtx::task("swapper/0", 1, 0),
            findings: Vec::new(),
            stats: ModelStats::default(),
            exposure: Exposure::default(),
            fq_pages: HashMap::new(),
            fq_freed: Vec::new(),
            devices: Vec::new(),
            fq: FlushQueue::default(),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &KernelConfig {
        &self.cfg
    }

    /// The sanitizer.
    #[must_use]
    pub fn sanitizer(&self) -> &Sanitizer {
        &self.san
    }

    /// Physical memory.
    #[must_use]
    pub fn memory(&self) -> &PhysMemory {
        &self.mem
    }

    /// Findings so far.
    #[must_use]
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Takes the findings so far.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> ModelStats {
        let mut s = self.stats;
        if let Some(t) = &self.trace {
            s.trace_lines = t.lines();
            s.trace_bytes = t.bytes();
        }
        s.elapsed_ns = self.now;
        s
    }

    /// Lazy-mode exposure so far.
    #[must_use]
    pub fn exposure(&self) -> Exposure {
        self.exposure
    }

    /// A domain by handle.
    #[must_use]
    pub fn domain(&self, dom: u32) -> Option<&Domain> {
        self.domains.get(&dom)
    }

    /// Sets the task context of the following trace lines.
    pub fn set_ctx(&mut self, ctx: TraceCtx) {
        self.ctx = ctx;
    }

    /// Model time (ns).
    #[must_use]
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Advances model time by `ns`.
    pub fn advance(&mut self, ns: u64) {
        self.now = self.now.saturating_add(ns);
    }

    /// Advances time by a small deterministic step (0.2–3.3 µs) and returns it.
    pub(crate) fn tick(&mut self) -> u64 {
        self.tick_state =
            self.tick_state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.now = self.now.saturating_add(200 + ((self.tick_state >> 33) % 3100));
        self.now
    }

    /// Writes trace lines with `f` if tracing (the closure gets the writer,
    /// the context and a fresh timestamp).
    pub(crate) fn emit(&mut self, f: impl FnOnce(&mut TraceWriter<&'w mut dyn Write>, &TraceCtx, u64)) {
        if self.trace.is_some() {
            let ts = self.tick();
            let ctx = self.ctx;
            if let Some(t) = self.trace.as_mut() {
                f(t, &ctx, ts);
            }
        }
    }

    /// True if kprobe lines are written.
    pub(crate) fn kprobes(&self) -> bool {
        self.cfg.kprobes && self.trace.is_some()
    }

    /// Flushes the trace and returns the first write error, if any.
    ///
    /// # Errors
    /// [`ModelError::Io`] if writing failed.
    pub fn finish_trace(&mut self) -> Result<()> {
        if let Some(t) = self.trace.take() {
            self.stats.trace_lines = t.lines();
            self.stats.trace_bytes = t.bytes();
            t.finish()?;
        }
        Ok(())
    }

    /// Writes a `trace_marker` line.
    pub fn marker(&mut self, text: &str) {
        self.emit(|t, c, ts| t.marker(c, ts, text));
    }

    pub(crate) fn record(&mut self, found: Vec<Finding>) {
        // Most hooks find nothing: skip the extend machinery then.
        if !found.is_empty() {
            self.findings.extend(found);
        }
    }

    // ---- page allocator ---------------------------------------------------

    /// `alloc_pages(gfp, order)`: a block from the buddy allocator, checked
    /// by `post_alloc_hook()` and traced as `mm_page_alloc`.
    ///
    /// # Errors
    /// [`ModelError::OutOfMemory`] or [`ModelError::OrderTooLarge`].
    pub fn alloc_pages(&mut self, order: u32, gfp: &'static str) -> Result<Pfn> {
        let pfn = self.mem.alloc(order)?;
        self.after_alloc(pfn, order, gfp);
        Ok(pfn)
    }

    fn after_alloc(&mut self, pfn: Pfn, order: u32, gfp: &'static str) {
        self.stats.page_allocs += 1;
        if self.cfg.sanitize {
            let found = self.san.check_alloc(pfn, order, &Provenance(&self.domains));
            self.record(found);
        }
        self.emit(|t, c, ts| t.mm_page_alloc(c, ts, pfn.get(), order, 0, gfp));
    }

    /// `__free_pages(page, order)`: checked by `free_pages_prepare()`,
    /// traced as `mm_page_free`, then merged back into the free areas.
    ///
    /// # Errors
    /// [`ModelError::BadFree`] if the block is not allocated with this
    /// order; nothing is checked or changed then.
    pub fn free_pages(&mut self, pfn: Pfn, order: u32) -> Result<()> {
        if self.mem.allocated_order(pfn) != Some(order) {
            return Err(ModelError::BadFree { pfn, order });
        }
        self.stats.page_frees += 1;
        if self.cfg.sanitize {
            let found = self.san.check_free(pfn, order, &Provenance(&self.domains));
            self.record(found);
        }
        if !self.fq_pages.is_empty() {
            for p in pfn.get()..pfn.get() + (1u64 << order) {
                if self.fq_pages.contains_key(&p) {
                    self.exposure.pages += 1;
                    self.exposure.bytes += self.cfg.page_size.bytes();
                    self.fq_freed.push((p, self.now));
                }
            }
        }
        self.emit(|t, c, ts| t.mm_page_free(c, ts, pfn.get(), order));
        self.mem.free(pfn, order)
    }

    fn settle_tables(&mut self, allocated: Vec<(Pfn, u32)>, freed: Vec<(Pfn, u32)>) {
        for (pfn, order) in allocated {
            self.after_alloc(pfn, order, "GFP_KERNEL|__GFP_NOWARN|__GFP_ZERO");
        }
        for (pfn, order) in freed {
            // Table pages are ours: a failure here is a model bug, not input.
            let _ = self.free_pages(pfn, order);
        }
    }

    // ---- IOMMU API --------------------------------------------------------

    /// `iommu_domain_alloc()` / `iommu_paging_domain_alloc()`: a domain with
    /// an empty page table of the given format.
    ///
    /// # Errors
    /// [`ModelError::BadConfig`] or [`ModelError::OutOfMemory`].
    pub fn domain_alloc(&mut self, cfg: PgtableCfg, dtype: DomainType) -> Result<u32> {
        let mut tables = BuddyTables { mem: &mut self.mem, allocated: Vec::new(), freed: Vec::new() };
        let pgtable = IoPgtable::new(cfg, &mut tables);
        let (allocated, freed) = (tables.allocated, tables.freed);
        let pgtable = match pgtable {
            Ok(p) => p,
            Err(e) => {
                for (pfn, order) in allocated {
                    let _ = self.mem.free(pfn, order);
                }
                return Err(e);
            }
        };
        self.settle_tables(allocated, freed);
        let handle = self.next_domain;
        self.next_domain += 1;
        let did = self.next_did;
        self.next_did += 1;
        let kptr = 0xffff_8881_01f5_0000u64 + u64::from(handle) * 0x600 + 0xa0;
        self.domains.insert(handle, Domain { kptr, did, dtype, pgtable, device: None, map_times: HashMap::default() });
        Ok(handle)
    }

    /// `iommu_attach_device()`: records the device using the domain and
    /// writes the attach lines (`cache_tag_assign` with the `did`, then
    /// `attach_device_to_domain`), which give the trace its domain identity.
    ///
    /// # Errors
    /// [`ModelError::NoDomain`].
    pub fn attach_device(&mut self, dom: u32, dev: &Arc<str>) -> Result<()> {
        let d = self.domains.get_mut(&dom).ok_or(ModelError::NoDomain(dom))?;
        d.device = Some(dev.clone());
        let (kptr, dtype, did) = (d.kptr, d.dtype.code(), d.did);
        if self.kprobes() {
            self.emit(|t, c, ts| t.kp_iommu_attach(c, ts, kptr, dtype, dev));
        }
        self.emit(|t, c, ts| t.cache_tag_assign(c, ts, did));
        self.emit(|t, c, ts| t.attach_device_to_domain(c, ts, dev));
        Ok(())
    }

    /// `iommu_map()`: maps `size` bytes at `iova` to `paddr`, in the
    /// largest page sizes alignment allows (`iommu_pgsize()` per chunk).
    /// On failure the part already mapped is recorded and unmapped again.
    ///
    /// # Errors
    /// [`ModelError::NoDomain`], and the page table's errors
    /// ([`ModelError::Invalid`], [`ModelError::Exists`],
    /// [`ModelError::Range`], [`ModelError::OutOfMemory`]).
    pub fn iommu_map(&mut self, dom: u32, iova: Iova, paddr: PhysAddr, size: u64, prot: u32) -> Result<()> {
        self.map_inner(dom, iova, paddr, size, prot, false)
    }

    pub(crate) fn map_inner(
        &mut self,
        dom: u32,
        iova: Iova,
        paddr: PhysAddr,
        size: u64,
        prot: u32,
        from_sg: bool,
    ) -> Result<()> {
        let d = self.domains.get(&dom).ok_or(ModelError::NoDomain(dom))?;
        let (kptr, dtype) = (d.kptr, d.dtype.code());
        let bitmap = d.pgtable.pgsize_bitmap();
        if self.kprobes() {
            self.emit(|t, c, ts| t.kp_iommu_map(c, ts, kptr, dtype, iova.get(), paddr.get(), size, prot));
        }
        self.stats.iommu_maps += 1;
        let min = bitmap & bitmap.wrapping_neg();
        if size == 0 || min == 0 || (iova.get() | paddr.get() | size) & (min - 1) != 0 {
            if self.kprobes() {
                self.emit(|t, c, ts| t.kp_iommu_map_ret(c, ts, from_sg, -22));
            }
            return Err(ModelError::Invalid("iova, paddr or size not aligned to the granule"));
        }
        let mut mapped = 0u64;
        let mut outcome = Ok(());
        let mut tables = BuddyTables { mem: &mut self.mem, allocated: Vec::new(), freed: Vec::new() };
        let d = self.domains.get_mut(&dom).ok_or(ModelError::NoDomain(dom))?;
        while mapped < size {
            let (i, p) = (iova.get() + mapped, paddr.get() + mapped);
            let Some((pgsize, count)) = iommu_pgsize(bitmap, i, p, size - mapped) else {
                outcome = Err(ModelError::Invalid("no page size fits"));
                break;
            };
            let (m, r) = d.pgtable.map_pages(Iova(i), PhysAddr(p), pgsize, count, prot, &mut tables);
            mapped += m;
            if let Err(e) = r {
                outcome = Err(e);
                break;
            }
        }
        let (allocated, freed) = (tables.allocated, tables.freed);
        self.settle_tables(allocated, freed);
        if mapped > 0 {
            self.emit(|t, c, ts| t.iommu_map(c, ts, iova.get(), paddr.get(), mapped));
            let now = self.now;
            if let Some(d) = self.domains.get_mut(&dom).filter(|_| self.cfg.sanitize) {
                let found = self.san.map(DomainId(kptr), &d.pgtable, iova, paddr, mapped);
                d.map_times.insert(iova.get(), (mapped, now));
                self.record(found);
            }
            self.stats.bytes_mapped += mapped;
        }
        let ret = match &outcome {
            Ok(()) => 0,
            Err(ModelError::Exists { .. }) => -17,
            Err(ModelError::OutOfMemory { .. }) => -12,
            Err(ModelError::Range(_)) => -34,
            Err(_) => -22,
        };
        if outcome.is_err() && mapped > 0 {
            // The kernel unrolls inside the call, before it returns the error.
            self.unmap_inner(dom, iova, mapped, false);
            self.flush_strict(dom, iova.get(), mapped);
        }
        if self.kprobes() {
            self.emit(|t, c, ts| t.kp_iommu_map_ret(c, ts, from_sg, ret));
        }
        outcome
    }

    /// `iommu_unmap()`: unmaps `size` bytes at `iova` and returns the bytes
    /// unmapped (0 for a bad argument or nothing mapped; more than `size`
    /// when the format removes whole blocks). Flushes the IOTLB (strict).
    pub fn iommu_unmap(&mut self, dom: u32, iova: Iova, size: u64) -> u64 {
        let n = self.unmap_inner(dom, iova, size, false);
        self.flush_strict(dom, iova.get(), size.max(n));
        n
    }

    /// Writes the strict-mode IOTLB flush of `[iova, iova + size)`.
    pub(crate) fn flush_strict(&mut self, dom: u32, iova: u64, size: u64) {
        if size == 0 {
            return;
        }
        if let Some(d) = self.domains.get(&dom) {
            let did = d.did;
            let last = iova.saturating_add(size - 1);
            self.emit(|t, c, ts| t.cache_tag_flush_range(c, ts, did, iova, last));
        }
    }

    /// `__iommu_unmap()` without the IOTLB sync.
    pub(crate) fn unmap_inner(&mut self, dom: u32, iova: Iova, size: u64, from_dma: bool) -> u64 {
        let Some(d) = self.domains.get(&dom) else {
            return 0;
        };
        let (kptr, dtype) = (d.kptr, d.dtype.code());
        let bitmap = d.pgtable.pgsize_bitmap();
        if self.kprobes() {
            self.emit(|t, c, ts| t.kp_iommu_unmap(c, ts, kptr, dtype, iova.get(), size));
        }
        self.stats.iommu_unmaps += 1;
        let min = bitmap & bitmap.wrapping_neg();
        if size == 0 || min == 0 || (iova.get() | size) & (min - 1) != 0 || iova.checked_add(size).is_none() {
            if self.kprobes() {
                self.emit(|t, c, ts| t.kp_iommu_unmap_ret(c, ts, from_dma, 0));
            }
            return 0;
        }
        let mut tables = BuddyTables { mem: &mut self.mem, allocated: Vec::new(), freed: Vec::new() };
        let Some(d) = self.domains.get_mut(&dom) else {
            return 0;
        };
        let begun = self.cfg.sanitize.then(|| self.san.unmap_begin(DomainId(kptr), &d.pgtable, iova, size));
        let mut unmapped = 0u64;
        while unmapped < size {
            let i = iova.get() + unmapped;
            let Some((pgsize, count)) = iommu_pgsize(bitmap, i, i, size - unmapped) else {
                break;
            };
            let n = d.pgtable.unmap_pages(Iova(i), pgsize, count, &mut tables);
            if n == 0 {
                break;
            }
            unmapped = unmapped.saturating_add(n);
        }
        if let Some((ticket, mut found)) = begun {
            let ended = self.san.unmap_end(ticket, &d.pgtable, unmapped);
            if !ended.is_empty() {
                found.extend(ended);
            }
            if unmapped > 0 && d.map_times.remove(&iova.get()).is_none_or(|(len, _)| len != unmapped) {
                // Not one whole map call: forget every call that started inside.
                let end = iova.get().saturating_add(unmapped);
                d.map_times.retain(|&k, _| k < iova.get() || k >= end);
            }
            if !found.is_empty() {
                self.findings.extend(found);
            }
        }
        let (allocated, freed) = (tables.allocated, tables.freed);
        self.settle_tables(allocated, freed);
        self.stats.bytes_unmapped += unmapped;
        self.emit(|t, c, ts| t.iommu_unmap(c, ts, iova.get(), size, unmapped));
        if self.kprobes() {
            self.emit(|t, c, ts| t.kp_iommu_unmap_ret(c, ts, from_dma, unmapped));
        }
        unmapped
    }

    /// `iommu_map_sg()`: maps the segments back to back from `iova`, one
    /// `iommu_map` per physically contiguous run. Returns the bytes mapped;
    /// on failure everything mapped so far is unmapped again.
    ///
    /// # Errors
    /// As [`Kernel::iommu_map`].
    pub fn iommu_map_sg(&mut self, dom: u32, iova: Iova, segs: &[(PhysAddr, u64)], prot: u32) -> Result<u64> {
        let mut mapped = 0u64;
        let mut run: Option<(u64, u64)> = None; // (phys start, len)
        let mut result = Ok(());
        let flush = |k: &mut Self, run: (u64, u64), mapped: &mut u64| -> Result<()> {
            let at = iova.checked_add(*mapped).ok_or(ModelError::Range("iova overflows"))?;
            k.map_inner(dom, at, PhysAddr(run.0), run.1, prot, true)?;
            *mapped += run.1;
            Ok(())
        };
        for &(p, len) in segs {
            match run {
                Some((s, l)) if s.checked_add(l) == Some(p.get()) => run = Some((s, l + len)),
                Some(r) => {
                    if let Err(e) = flush(self, r, &mut mapped) {
                        result = Err(e);
                        run = None;
                        break;
                    }
                    run = Some((p.get(), len));
                }
                None => run = Some((p.get(), len)),
            }
        }
        if let (Ok(()), Some(r)) = (&result, run) {
            if let Err(e) = flush(self, r, &mut mapped) {
                result = Err(e);
            }
        }
        if let Err(e) = result {
            if mapped > 0 {
                self.unmap_inner(dom, iova, mapped, false);
                self.flush_strict(dom, iova.get(), mapped);
            }
            return Err(e);
        }
        Ok(mapped)
    }

    /// `iommu_iova_to_phys()`.
    #[must_use]
    pub fn iova_to_phys(&self, dom: u32, iova: Iova) -> Option<PhysAddr> {
        self.domains.get(&dom)?.pgtable.iova_to_phys(iova)
    }

    /// `iommu_domain_free()`: the sanitizer sees the domain go (live
    /// mappings are leaks), then its tables are freed without unmap events.
    ///
    /// # Errors
    /// [`ModelError::NoDomain`].
    pub fn domain_free(&mut self, dom: u32) -> Result<()> {
        let mut d = self.domains.remove(&dom).ok_or(ModelError::NoDomain(dom))?;
        let (kptr, dtype) = (d.kptr, d.dtype.code());
        if self.kprobes() {
            self.emit(|t, c, ts| t.kp_iommu_domain_free(c, ts, kptr, dtype));
        }
        if self.cfg.sanitize {
            let found = self.san.domain_destroyed(DomainId(kptr), &d.pgtable);
            self.record(found);
        }
        let mut tables = BuddyTables { mem: &mut self.mem, allocated: Vec::new(), freed: Vec::new() };
        d.pgtable.free(&mut tables);
        let (allocated, freed) = (tables.allocated, tables.freed);
        self.settle_tables(allocated, freed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgsize_picks_the_largest_aligned_size() {
        let bm = (1 << 12) | (1 << 21) | (1 << 30);
        assert_eq!(iommu_pgsize(bm, 0x20_0000, 0x4020_0000, 0x40_0000), Some((0x20_0000, 2)));
        // Unaligned start: 4K pages up to the 2M boundary, then 2M.
        assert_eq!(iommu_pgsize(bm, 0x1f_f000, 0x401f_f000, 0x40_1000), Some((0x1000, 1)));
        // Addresses that can never align together stay at 4K for the whole size.
        assert_eq!(iommu_pgsize(bm, 0x1000, 0x2000, 0x40_0000), Some((0x1000, 0x400)));
        assert_eq!(iommu_pgsize(bm, 0, 0, 0), None);
        assert_eq!(iommu_pgsize(bm, 0x800, 0, 0x1000), None);
    }
}
