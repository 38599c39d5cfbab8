//! The DMA API over the IOMMU API (`drivers/iommu/dma-iommu.c`): a
//! per-device IOVA allocator, streaming maps of pages and scatterlists,
//! coherent allocations, strict and lazy (flush-queue) unmap, and the
//! `CONFIG_DMA_API_DEBUG` check that an unmap matches its map.
//!
//! Event order follows the kernel (`traces/FORMATS.md` §2): a map writes
//! the IOMMU lines first and `dma_map_page` / `dma_map_sg` / `dma_alloc`
//! last (the tracepoint needs the DMA address); `dma_unmap_page` comes
//! after the IOMMU unmap, `dma_unmap_sg` and `dma_free` before it.
//!
//! Units: bytes; DMA addresses equal IOVAs.

use std::collections::HashMap;
use std::sync::Arc;

use iosan_core::{DmaAddr, Finding, FindingKind, Iova, IovaRange, Pfn, PhysAddr, Translate};

use crate::error::{ModelError, Result};
use crate::iova::{FqEntry, IovaDomain, FQ_SIZE, FQ_TIMEOUT_NS};
use crate::kernel::{Device, DmaEntry, DomainType, Kernel, MapKind};
use crate::pgtable::PgtableCfg;
use crate::trace::{DmaDir, TraceCtx};

/// `-ENOMEM` and `-EINVAL`, as a failed `dma_map_sg` returns them.
const ENOMEM: i64 = -12;
const EINVAL: i64 = -22;

/// A coherent allocation (`dma_alloc_coherent()`'s result).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coherent {
    /// The DMA address.
    pub dma: DmaAddr,
    /// Size asked for.
    pub size: u64,
    /// The order-0 pages backing it, in IOVA order.
    pub pages: Vec<Pfn>,
}

impl Kernel<'_> {
    fn dev(&self, dev: u32) -> Result<&Device> {
        self.devices.get(dev as usize).ok_or(ModelError::NoDevice(dev))
    }

    /// Probes a device: a DMA domain with the given page table (strict or
    /// flush-queue by the kernel's setting), attached, with an IOVA space
    /// below `dma_mask`. Returns the device handle.
    ///
    /// # Errors
    /// As [`Kernel::domain_alloc`].
    pub fn add_device(&mut self, name: &str, cfg: PgtableCfg, dma_mask: u64) -> Result<u32> {
        let dtype = if self.cfg.strict { DomainType::Dma } else { DomainType::DmaFq };
        let dom = self.domain_alloc(cfg, dtype)?;
        let name: Arc<str> = Arc::from(name);
        let group = u32::try_from(self.devices.len()).unwrap_or(u32::MAX);
        self.emit(|t, c, ts| t.add_device_to_group(c, ts, group, &name));
        self.attach_device(dom, &name)?;
        let (granule, aperture_last) = self
            .domains
            .get(&dom)
            .map_or((12, u64::MAX), |d| (d.pgtable.pgsize_bitmap().trailing_zeros(), d.pgtable.geometry().max_iova()));
        let granule = granule.max(self.cfg.page_size.lg2());
        let limit = dma_mask.min(aperture_last);
        self.devices.push(Device { name, domain: dom, iovad: IovaDomain::new(granule, limit), live: HashMap::new() });
        Ok(group)
    }

    /// A device by handle.
    #[must_use]
    pub fn device(&self, dev: u32) -> Option<&Device> {
        self.devices.get(dev as usize)
    }

    fn iova_granule(&self, dev: u32) -> u32 {
        self.devices.get(dev as usize).map_or(12, |d| d.iovad.granule_lg2())
    }

    fn debug_check_unmap(&mut self, dev: u32, dma: u64, size: u64, dir: DmaDir, kind: MapKind) {
        if !self.cfg.dma_debug {
            return;
        }
        let Some(d) = self.devices.get_mut(dev as usize) else { return };
        let Some(e) = d.live.remove(&dma) else {
            return; // not ours: the IOMMU layer reports the double unmap
        };
        let dom = self.domains.get(&d.domain).map(|x| x.id());
        if e.size != size || e.dir != dir || e.kind != kind {
            let mut f = Finding::range(FindingKind::DmaUnmapMismatch, dom.unwrap_or_default(), Iova(dma), size);
            f.domain = dom;
            self.findings.push(f);
        }
    }

    /// `dma_map_page_attrs()` (`iommu_dma_map_page()`): maps `size` bytes
    /// at `phys` (any offset) and returns the DMA address, which keeps the
    /// in-page offset.
    ///
    /// # Errors
    /// [`ModelError::NoDevice`], [`ModelError::IovaExhausted`], and the
    /// IOMMU map errors.
    pub fn dma_map_page(&mut self, dev: u32, phys: PhysAddr, size: u64, dir: DmaDir) -> Result<DmaAddr> {
        self.fq_poll();
        if size == 0 {
            return Err(ModelError::Invalid("zero size"));
        }
        let g = self.iova_granule(dev);
        let d = self.dev(dev)?;
        let dom = d.domain;
        let off = phys.get() & ((1u64 << g) - 1);
        let len = align_up(off.checked_add(size).ok_or(ModelError::Range("size overflows"))?, g)?;
        let alloc_len = d.iovad.alloc_len(len).ok_or(ModelError::Range("size overflows"))?;
        let d = self.devices.get_mut(dev as usize).ok_or(ModelError::NoDevice(dev))?;
        let Some(iova) = d.iovad.alloc(alloc_len) else {
            self.map_page_failed(dev, dir, size, phys);
            return Err(ModelError::IovaExhausted { size: len });
        };
        let base = PhysAddr(phys.get() - off);
        if let Err(e) = self.map_inner(dom, Iova(iova), base, len, dir.prot(), false) {
            if let Some(d) = self.devices.get_mut(dev as usize) {
                d.iovad.free(iova);
            }
            self.map_page_failed(dev, dir, size, phys);
            return Err(e);
        }
        self.stats.dma_maps += 1;
        let dma = iova + off;
        if let Some(d) = self.devices.get_mut(dev as usize) {
            d.live.insert(dma, DmaEntry { size, dir, kind: MapKind::Page });
            let name = d.name.clone();
            self.emit(|t, c, ts| t.dma_map_page(c, ts, &name, dir, dma, size, phys.get()));
        }
        Ok(DmaAddr(dma))
    }

    /// `dma_map_sg_attrs()` traces a failed map as `dma_map_sg_err`.
    fn map_sg_failed(&mut self, dev: u32, dir: DmaDir, segs: &[(PhysAddr, u64)], err: i64) {
        if let Some(name) = self.devices.get(dev as usize).map(|d| d.name.clone()) {
            let phys: Vec<u64> = segs.iter().map(|s| s.0.get()).collect();
            self.emit(|t, c, ts| t.dma_map_sg_err(c, ts, &name, dir, &phys, err));
        }
    }

    /// `dma_map_page_attrs()` traces its call whatever the outcome: a map
    /// that failed returns (and traces) `DMA_MAPPING_ERROR`.
    fn map_page_failed(&mut self, dev: u32, dir: DmaDir, size: u64, phys: PhysAddr) {
        if let Some(name) = self.devices.get(dev as usize).map(|d| d.name.clone()) {
            self.emit(|t, c, ts| t.dma_map_page(c, ts, &name, dir, u64::MAX, size, phys.get()));
        }
    }

    /// `dma_unmap_page_attrs()` (`iommu_dma_unmap_page()` →
    /// `__iommu_dma_unmap()`): unmaps the granules covering
    /// `[dma, dma + size)`. Strict: flushes the IOTLB and frees the IOVA at
    /// once. Lazy: queues both.
    ///
    /// # Errors
    /// [`ModelError::NoDevice`].
    pub fn dma_unmap_page(&mut self, dev: u32, dma: DmaAddr, size: u64, dir: DmaDir) -> Result<()> {
        self.fq_poll();
        self.dev(dev)?;
        self.debug_check_unmap(dev, dma.get(), size, dir, MapKind::Page);
        self.iommu_dma_unmap(dev, dma.get(), size)?;
        self.stats.dma_unmaps += 1;
        if let Some(d) = self.devices.get(dev as usize) {
            let name = d.name.clone();
            self.emit(|t, c, ts| t.dma_unmap_page(c, ts, &name, dir, dma.get(), size));
        }
        Ok(())
    }

    /// `__iommu_dma_unmap()`.
    fn iommu_dma_unmap(&mut self, dev: u32, dma: u64, size: u64) -> Result<()> {
        let g = self.iova_granule(dev);
        let d = self.dev(dev)?;
        let dom = d.domain;
        let off = dma & ((1u64 << g) - 1);
        let iova = dma - off;
        let len = align_up(off.saturating_add(size), g)?;
        let pfns = if self.cfg.strict { Vec::new() } else { self.leaf_pfns(dom, iova, len) };
        let unmapped = self.unmap_inner(dom, Iova(iova), len, true);
        if self.cfg.strict {
            self.flush_strict(dom, iova, len.max(unmapped));
            if let Some(d) = self.devices.get_mut(dev as usize) {
                d.iovad.free(iova);
            }
        } else {
            self.exposure.queued_unmaps += 1;
            for &(first, count) in &pfns {
                for p in first..first + count {
                    *self.fq_pages.entry(p).or_insert(0) += 1;
                }
            }
            if self.fq.entries.is_empty() {
                self.fq.first_ns = self.now;
            }
            self.fq.entries.push(FqEntry { dev, iova, pfns });
            if self.fq.entries.len() >= FQ_SIZE {
                self.fq_flush(false);
            }
        }
        Ok(())
    }

    /// The CPU page runs behind `[iova, iova + len)` (several for a
    /// scatter-gather mapping), which stay device-reachable until the flush.
    fn leaf_pfns(&self, dom: u32, iova: u64, len: u64) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let Some(d) = self.domains.get(&dom) else { return runs };
        let Some(range) = IovaRange::from_start_len(Iova(iova), len) else { return runs };
        let page = self.cfg.page_size;
        d.pgtable.walk_leaves(range, &mut |r| {
            let s = r.phys.get() >> page.lg2();
            let n = r.len.div_ceil(page.bytes());
            match runs.last_mut() {
                Some((fs, fnn)) if *fs + *fnn == s => *fnn += n,
                _ => runs.push((s, n)),
            }
            std::ops::ControlFlow::Continue(())
        });
        runs
    }

    /// Runs the flush-queue timer if it is due.
    pub fn fq_poll(&mut self) {
        if !self.fq.entries.is_empty() && self.now.saturating_sub(self.fq.first_ns) >= FQ_TIMEOUT_NS {
            self.fq_flush(true);
        }
    }

    /// Flushes the queue now: `fq_flush_timeout()` (from the timer) or a
    /// full queue: one `cache_tag_flush_all` per domain, then the IOVAs
    /// are freed. Pages freed while queued get their exposure window.
    pub fn fq_flush(&mut self, timer: bool) {
        if self.fq.entries.is_empty() {
            return;
        }
        let saved = self.ctx;
        if timer {
            self.ctx = TraceCtx { flags: *b"..s..", ..saved };
            if self.kprobes() {
                self.emit(|t, c, ts| t.kp_fq_flush_timeout(c, ts));
            }
        }
        let entries = std::mem::take(&mut self.fq.entries);
        let mut doms: Vec<u32> =
            entries.iter().filter_map(|e| self.devices.get(e.dev as usize).map(|d| d.domain)).collect();
        doms.sort_unstable();
        doms.dedup();
        for dom in doms {
            let Some(d) = self.domains.get(&dom) else { continue };
            let (did, cookie) = (d.did, d.kptr + 0x200);
            if self.kprobes() {
                self.emit(|t, c, ts| t.kp_fq_flush_iotlb(c, ts, cookie));
            }
            self.emit(|t, c, ts| t.cache_tag_flush_all(c, ts, did));
        }
        self.ctx = saved;
        for e in &entries {
            if let Some(d) = self.devices.get_mut(e.dev as usize) {
                d.iovad.free(e.iova);
            }
            for &(first, count) in &e.pfns {
                for p in first..first + count {
                    if let Some(c) = self.fq_pages.get_mut(&p) {
                        *c -= 1;
                        if *c == 0 {
                            self.fq_pages.remove(&p);
                        }
                    }
                }
            }
        }
        for (_, freed_at) in std::mem::take(&mut self.fq_freed) {
            let w = self.now.saturating_sub(freed_at);
            self.exposure.longest_window_ns = self.exposure.longest_window_ns.max(w);
        }
        self.exposure.flushes += 1;
    }

    /// `dma_map_sg_attrs()` (`iommu_dma_map_sg()`): one IOVA range for all
    /// segments (each padded to the granule), one `iommu_map` per physically
    /// contiguous run, one merged DMA segment. Segments must start on a
    /// granule boundary except the first, as dma-iommu requires for merging.
    ///
    /// # Errors
    /// As [`Kernel::dma_map_page`].
    pub fn dma_map_sg(&mut self, dev: u32, segs: &[(PhysAddr, u64)], dir: DmaDir) -> Result<DmaAddr> {
        self.fq_poll();
        let g = self.iova_granule(dev);
        let d = self.dev(dev)?;
        let dom = d.domain;
        if segs.is_empty() {
            return Err(ModelError::Invalid("empty scatterlist"));
        }
        let mut padded = Vec::with_capacity(segs.len());
        let mut total = 0u64;
        for &(p, len) in segs {
            if len == 0 || p.get() & ((1u64 << g) - 1) != 0 {
                return Err(ModelError::Invalid("segment empty or not granule aligned"));
            }
            let l = align_up(len, g)?;
            padded.push((p, l));
            total = total.checked_add(l).ok_or(ModelError::Range("size overflows"))?;
        }
        let alloc_len = d.iovad.alloc_len(total).ok_or(ModelError::Range("size overflows"))?;
        let d = self.devices.get_mut(dev as usize).ok_or(ModelError::NoDevice(dev))?;
        let Some(iova) = d.iovad.alloc(alloc_len) else {
            self.map_sg_failed(dev, dir, segs, ENOMEM);
            return Err(ModelError::IovaExhausted { size: total });
        };
        if let Err(e) = self.iommu_map_sg(dom, Iova(iova), &padded, dir.prot()) {
            if let Some(d) = self.devices.get_mut(dev as usize) {
                d.iovad.free(iova);
            }
            // iommu_dma_map_sg() returns -ENOMEM as it is, any other error as -EINVAL.
            let err = if matches!(e, ModelError::OutOfMemory { .. }) { ENOMEM } else { EINVAL };
            self.map_sg_failed(dev, dir, segs, err);
            return Err(e);
        }
        self.stats.dma_maps += 1;
        let dma_len: u64 = segs.iter().map(|s| s.1).sum::<u64>().max(1);
        let dma_len = if segs.len() > 1 { total } else { dma_len };
        if let Some(d) = self.devices.get_mut(dev as usize) {
            d.live.insert(iova, DmaEntry { size: total, dir, kind: MapKind::Sg(segs.len()) });
            let name = d.name.clone();
            let phys: Vec<u64> = segs.iter().map(|s| s.0.get()).collect();
            self.emit(|t, c, ts| t.dma_map_sg(c, ts, &name, dir, &phys, &[(iova, dma_len)]));
        }
        Ok(DmaAddr(iova))
    }

    /// `dma_unmap_sg_attrs()` (`iommu_dma_unmap_sg()`): `dma_unmap_sg` is
    /// traced first, then one unmap of the IOVA range the given segments
    /// span (the driver's list: a wrong list unmaps a wrong total).
    ///
    /// # Errors
    /// [`ModelError::NoDevice`], [`ModelError::Invalid`] for an empty list.
    pub fn dma_unmap_sg(&mut self, dev: u32, dma: DmaAddr, segs: &[(PhysAddr, u64)], dir: DmaDir) -> Result<()> {
        self.fq_poll();
        let g = self.iova_granule(dev);
        let name = self.dev(dev)?.name.clone();
        if segs.is_empty() {
            return Err(ModelError::Invalid("empty scatterlist"));
        }
        let mut total = 0u64;
        for &(_, len) in segs {
            total = total.checked_add(align_up(len, g)?).ok_or(ModelError::Range("size overflows"))?;
        }
        let phys: Vec<u64> = segs.iter().map(|s| s.0.get()).collect();
        self.emit(|t, c, ts| t.dma_unmap_sg(c, ts, &name, dir, &phys));
        self.debug_check_unmap(dev, dma.get(), total, dir, MapKind::Sg(segs.len()));
        self.iommu_dma_unmap(dev, dma.get(), total)?;
        self.stats.dma_unmaps += 1;
        Ok(())
    }

    /// `dma_alloc_coherent()` with a blocking gfp (`iommu_dma_alloc_remap()`):
    /// order-0 pages, mapped with `iommu_map_sg`, then `dma_alloc` traced.
    ///
    /// # Errors
    /// As [`Kernel::dma_map_page`], plus [`ModelError::OutOfMemory`].
    pub fn dma_alloc_coherent(&mut self, dev: u32, size: u64) -> Result<Coherent> {
        self.fq_poll();
        let page = self.cfg.page_size;
        let g = self.iova_granule(dev);
        if size == 0 {
            return Err(ModelError::Invalid("zero size"));
        }
        let len = align_up(size, g)?;
        let n = len / page.bytes();
        let mut pages = Vec::new();
        for _ in 0..n {
            match self.alloc_pages(0, "GFP_KERNEL|__GFP_HIGHMEM|__GFP_NOWARN|__GFP_ZERO") {
                Ok(p) => pages.push(p),
                Err(e) => {
                    for p in pages {
                        let _ = self.free_pages(p, 0);
                    }
                    return Err(e);
                }
            }
        }
        let d = self.dev(dev)?;
        let dom = d.domain;
        let alloc_len = d.iovad.alloc_len(len).ok_or(ModelError::Range("size overflows"))?;
        let iova = self.devices.get_mut(dev as usize).and_then(|d| d.iovad.alloc(alloc_len));
        let segs: Vec<(PhysAddr, u64)> =
            pages.iter().filter_map(|p| p.to_phys(page).map(|a| (a, page.bytes()))).collect();
        let mapped = match iova {
            Some(i) => self.iommu_map_sg(dom, Iova(i), &segs, DmaDir::Bidirectional.prot()).map(|_| i),
            None => Err(ModelError::IovaExhausted { size: len }),
        };
        let iova = match mapped {
            Ok(i) => i,
            Err(e) => {
                if let Some(i) = iova {
                    if let Some(d) = self.devices.get_mut(dev as usize) {
                        d.iovad.free(i);
                    }
                }
                for p in pages {
                    let _ = self.free_pages(p, 0);
                }
                return Err(e);
            }
        };
        self.stats.dma_maps += 1;
        let virt = 0xffff_c900_0000_0000u64 | (iova & 0xff_ffff_ffff);
        if let Some(d) = self.devices.get_mut(dev as usize) {
            d.live.insert(iova, DmaEntry { size, dir: DmaDir::Bidirectional, kind: MapKind::Coherent });
            let name = d.name.clone();
            self.emit(|t, c, ts| t.dma_alloc(c, ts, &name, iova, size, virt, "GFP_KERNEL"));
        }
        Ok(Coherent { dma: DmaAddr(iova), size, pages })
    }

    /// `dma_free_coherent()`: `dma_free` traced, then the unmap and flush,
    /// then the pages freed.
    ///
    /// # Errors
    /// [`ModelError::NoDevice`], and [`ModelError::BadFree`] if a page was
    /// already freed.
    pub fn dma_free_coherent(&mut self, dev: u32, c: &Coherent) -> Result<()> {
        self.fq_poll();
        let name = self.dev(dev)?.name.clone();
        let virt = 0xffff_c900_0000_0000u64 | (c.dma.get() & 0xff_ffff_ffff);
        self.emit(|t, ctx, ts| t.dma_free(ctx, ts, &name, c.dma.get(), c.size, virt));
        self.debug_check_unmap(dev, c.dma.get(), c.size, DmaDir::Bidirectional, MapKind::Coherent);
        self.iommu_dma_unmap(dev, c.dma.get(), c.size)?;
        self.stats.dma_unmaps += 1;
        for &p in &c.pages {
            self.free_pages(p, 0)?;
        }
        Ok(())
    }

    /// Removes a device: its domain is freed (live mappings are teardown
    /// leaks) after the flush queue is drained.
    ///
    /// # Errors
    /// [`ModelError::NoDevice`].
    pub fn remove_device(&mut self, dev: u32) -> Result<()> {
        let (dom, name) = {
            let d = self.dev(dev)?;
            (d.domain, d.name.clone())
        };
        self.fq_flush(false);
        // Hot-unplug: the device leaves its group (a stock tracepoint), then
        // the group's default domain is freed.
        self.emit(|t, c, ts| t.remove_device_from_group(c, ts, dev, &name));
        self.domain_free(dom)
    }
}

fn align_up(v: u64, lg2: u32) -> Result<u64> {
    let m = (1u64 << lg2) - 1;
    Ok(v.checked_add(m).ok_or(ModelError::Range("size overflows"))? & !m)
}
