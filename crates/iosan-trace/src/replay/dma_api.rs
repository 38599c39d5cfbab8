//! The DMA-API layer: live `dma_map_*`/`dma_alloc*` mappings per device, and
//! the check that each unmap matches its map.
//!
//! A `dma_unmap_page` (or `dma_free_*`, `dma_unmap_sg`) whose size, entry
//! count or direction differs from the map it ends is a driver bug the
//! kernel's CONFIG_DMA_API_DEBUG catches (`check_unmap`); here it is a
//! `dma-unmap-mismatch` finding. Devices are keyed by their domain's root
//! slot (see `identity`).
//!
//! It is also a mapping source of its own, the DMA-API layer: a
//! `dma_map_page`/`dma_map_phys` or `dma_map_sg` entry (which carry the
//! physical address) that no `iommu:map` of its call covered is counted in
//! a per-device space keyed by DMA address ([`Analyzer::dma_layer_map`]).
//! That covers dma-direct (no IOMMU: the DMA address is the physical
//! address), passthrough devices, and captures without `iommu:*` events. A
//! mapping an `iommu:map` covered is the IOMMU layer's, so each page is
//! counted once. `dma_alloc*` carries no physical address: it is counted
//! (at physical = DMA address) only for a device shown to be dma-direct.

use std::sync::Arc;

use iosan_core::{DomainId, FindingKind, Iova, IovaRange, MapMeta, PhysAddr};

use super::analyzer::Analyzer;
use super::identity::Domains;
use super::sequence::{Item, SeqKey};
use crate::parse::event::DmaDirection;
use crate::record::Record;
use crate::report::{fmt_ts, TraceFinding};

/// One mapping of the DMA-API layer: its space and its page-rounded range.
type LayerEntry = (usize, IovaRange);

/// Keys come from the capture; the map is bounded, so chosen collisions
/// cost time, never memory.
type HashMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<iosan_core::hash::FastHasher>>;

/// Live DMA-API mappings remembered for unmap checks.
const MAX_DMA_LIVE: usize = 1 << 22;

/// Live DMA-API mappings.
#[derive(Default)]
pub(super) struct DmaApi {
    /// (device root, dma address) -> (size, direction, time mapped).
    live: HashMap<(usize, u64), (u64, DmaDirection, u64)>,
    /// Live scatter-gather maps: (device root, first phys) -> (entries, direction, time).
    sg_live: HashMap<(usize, u64), (usize, DmaDirection, u64)>,
    /// DMA-API layer: (device, DMA address) -> its mappings (a buffer may
    /// be mapped twice at once under dma-direct).
    layer: HashMap<(Arc<str>, u64), Vec<LayerEntry>>,
    /// DMA-API layer scatter-gather entries by (device, physical address):
    /// `dma_unmap_sg` names only the CPU segments.
    layer_sg: HashMap<(Arc<str>, u64), Vec<LayerEntry>>,
    /// Entries in `layer` and `layer_sg`.
    layer_len: usize,
    /// Per device: `dma_map_page` events with DMA = physical address, and with a different one.
    evidence: HashMap<Arc<str>, (u64, u64)>,
    /// `dma_alloc*` of devices not yet shown dma-direct or translated, in a
    /// capture without `iommu:map` so far: (device, DMA address, bytes, map
    /// tag). Decided by the device's first `dma_map_page` (bounded lookahead).
    pending_allocs: HashMap<Arc<str>, Vec<(u64, u64, MapMeta)>>,
    /// Buffers in `pending_allocs`.
    pending_len: usize,
}

/// Most `dma_alloc*` buffers waiting for their device's first `dma_map_page`.
const MAX_PENDING_ALLOCS: usize = 4096;

/// How a DMA-API mapping is looked up again at its unmap.
#[derive(Clone, Copy)]
pub(super) enum LayerKey {
    /// By DMA address (`dma_unmap_page`, `dma_free*`).
    Dma,
    /// By physical address (`dma_unmap_sg`).
    Phys,
}

impl DmaApi {
    /// Device `dev` was seen mapping with DMA = physical address (`direct`) or not.
    fn note_evidence(&mut self, dev: &Arc<str>, direct: bool) {
        if self.evidence.len() >= MAX_DMA_LIVE && !self.evidence.contains_key(dev) {
            return;
        }
        let e = self.evidence.entry(dev.clone()).or_insert((0, 0));
        if direct {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }

    /// Buffers still waiting to be decided (at the end: unchecked).
    pub(super) fn pending_allocs(&self) -> u64 {
        self.pending_len as u64
    }

    /// Device `dev` is dma-direct as far as the capture shows: its mappings
    /// so far all had DMA = physical address.
    fn is_direct(&self, dev: &Arc<str>) -> bool {
        self.evidence.get(dev).is_some_and(|&(d, t)| d > 0 && t == 0)
    }
}

impl Analyzer {
    /// Does an `iommu:map` of this call sequence cover any of the DMA
    /// ranges `[lo, hi]`? Then the mapping is the IOMMU layer's.
    pub(super) fn iommu_covers(&mut self, key: SeqKey, ranges: &[(u64, u64)]) -> bool {
        self.seqs.get(key).items.iter().any(|it| match it {
            Item::Map { iova, .. } => {
                ranges.iter().any(|&(lo, hi)| iova.start().get() <= hi && iova.last().get() >= lo)
            }
            Item::Unmap { .. } => false,
        })
    }

    /// A DMA-API mapping of device `dev`: `segs` are (DMA address,
    /// physical address, bytes), `covered` says an `iommu:map` of its call
    /// covered it. Counted in the DMA-API layer when no IOMMU layer does:
    /// not covered, and either DMA = physical address (dma-direct,
    /// passthrough) or no `iommu:map` was ever seen (not traced).
    pub(super) fn dma_layer_map(
        &mut self,
        ctx: &Record,
        dev: &[u8],
        segs: &[(u64, u64, u64)],
        covered: bool,
        key: LayerKey,
        stack: &[&[u8]],
    ) {
        if covered {
            return;
        }
        let direct = segs.iter().all(|&(d, p, _)| d == p);
        if !direct && self.iommu_map_seen {
            return;
        }
        let name: Arc<str> = String::from_utf8_lossy(dev).into();
        let meta = self.tasks.meta(ctx, stack);
        self.layer_insert(ctx, &name, segs, key, meta);
    }

    /// Counts `segs` of device `name` in its DMA-API layer spaces.
    fn layer_insert(&mut self, ctx: &Record, name: &Arc<str>, segs: &[(u64, u64, u64)], key: LayerKey, meta: MapMeta) {
        let mask = self.opts.page_size.bytes() - 1;
        for &(dma, phys, size) in segs {
            // Page-rounded: DMA and physical address share their in-page offset.
            let (lo, plo) = (dma & !mask, phys & !mask);
            let Some(end) = dma.checked_add(size.max(1)).and_then(|e| e.checked_add(mask)) else { continue };
            let len = (end & !mask) - lo;
            let Some(range) = IovaRange::from_start_len(Iova(lo), len) else { continue };
            if (dma & mask) != (phys & mask) || plo.checked_add(len - 1).is_none() {
                continue;
            }
            let slot = if self.dma.layer_len < MAX_DMA_LIVE { self.domains.dma_layer(name, range) } else { None };
            let Some(slot) = slot else {
                self.summary.dma_layer_dropped += 1;
                continue;
            };
            let found =
                self.san.map(DomainId(slot as u64), &self.domains.slot(slot).shadow, Iova(lo), PhysAddr(plo), len);
            for f in found {
                let tf = self.plain(ctx, f);
                self.findings.push(tf);
            }
            let _ = self.domains.slot_mut(slot).shadow.map(Iova(lo), PhysAddr(plo), len, meta);
            let (table, k) = match key {
                LayerKey::Dma => (&mut self.dma.layer, dma),
                LayerKey::Phys => (&mut self.dma.layer_sg, phys),
            };
            table.entry((name.clone(), k)).or_default().push((slot, range));
            self.dma.layer_len += 1;
            self.summary.dma_layer_maps += 1;
        }
    }

    /// A DMA-API unmap of device `dev` at `addrs` (DMA or physical
    /// addresses, as `key` says): the layer's mappings there end.
    pub(super) fn dma_layer_unmap(&mut self, dev: &[u8], addrs: &[u64], key: LayerKey) {
        if self.dma.layer_len == 0 && self.dma.pending_len == 0 {
            return;
        }
        let name: Arc<str> = String::from_utf8_lossy(dev).into();
        if let (LayerKey::Dma, Some(list)) = (key, self.dma.pending_allocs.get_mut(&name)) {
            // A buffer freed before anything decided it was never checked.
            let before = list.len();
            list.retain(|p| !addrs.contains(&p.0));
            let gone = before - list.len();
            if list.is_empty() {
                self.dma.pending_allocs.remove(&name);
            }
            self.dma.pending_len = self.dma.pending_len.saturating_sub(gone);
            self.summary.dma_allocs_unchecked += gone as u64;
        }
        for &a in addrs {
            let table = match key {
                LayerKey::Dma => &mut self.dma.layer,
                LayerKey::Phys => &mut self.dma.layer_sg,
            };
            let k = (name.clone(), a);
            let Some(list) = table.get_mut(&k) else { continue };
            let entry = list.pop();
            if list.is_empty() {
                table.remove(&k);
            }
            let Some((slot, range)) = entry else { continue };
            self.dma.layer_len = self.dma.layer_len.saturating_sub(1);
            let len = range.len().unwrap_or(u64::MAX);
            let shadow = &self.domains.slot(slot).shadow;
            let (ticket, _) = self.san.unmap_begin(DomainId(slot as u64), shadow, range.start(), len);
            let _ = self.domains.slot_mut(slot).shadow.unmap(range);
            let end = self.san.unmap_end(ticket, &self.domains.slot(slot).shadow, len);
            self.summary.count_inconsistencies += end.len() as u64;
        }
    }

    /// A `dma_map_page`/`_phys` of device `dev`: evidence for or against dma-direct.
    /// A device's first mapping decides its `dma_alloc*` buffers still waiting.
    pub(super) fn dma_evidence(&mut self, ctx: &Record, dev: &[u8], dma: u64, phys: u64, covered: bool) {
        let direct = dma == phys && !covered;
        if direct {
            self.summary.dma_direct_maps += 1;
        } else {
            self.summary.dma_translated_maps += 1;
        }
        // The hot path (a device seen before) allocates nothing.
        if let Some(e) = std::str::from_utf8(dev).ok().and_then(|n| self.dma.evidence.get_mut(n)) {
            if direct {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
            if self.dma.pending_len == 0 {
                return;
            }
        }
        let name: Arc<str> = String::from_utf8_lossy(dev).into();
        if !self.dma.evidence.contains_key(&name) {
            self.dma.note_evidence(&name, direct);
        }
        if let Some(mine) = self.dma.pending_allocs.remove(&name) {
            self.dma.pending_len = self.dma.pending_len.saturating_sub(mine.len());
            for (dma, size, meta) in mine {
                if direct {
                    self.layer_insert(ctx, &name, &[(dma, dma, size)], LayerKey::Dma, meta);
                } else {
                    self.summary.dma_allocs_unchecked += 1;
                }
            }
        }
    }

    /// A `dma_alloc*` of device `dev` at `dma`, `size` bytes: counted at
    /// physical = DMA address when the device is dma-direct; otherwise,
    /// unless an `iommu:map` of its call covered it, nothing can check it.
    pub(super) fn dma_layer_alloc(
        &mut self,
        ctx: &Record,
        dev: &[u8],
        dma: u64,
        size: u64,
        covered: bool,
        stack: &[&[u8]],
    ) {
        if covered {
            return;
        }
        let name: Arc<str> = String::from_utf8_lossy(dev).into();
        let global_direct =
            !self.iommu_map_seen && self.summary.dma_translated_maps == 0 && self.summary.dma_direct_maps > 0;
        let unknown = !self.dma.evidence.contains_key(&name);
        if self.dma.is_direct(&name) || (global_direct && unknown) {
            self.dma_layer_map(ctx, dev, &[(dma, dma, size)], false, LayerKey::Dma, stack);
        } else if unknown && !self.iommu_map_seen && self.dma.pending_len < MAX_PENDING_ALLOCS {
            // Nothing shows yet whether this device's DMA addresses are physical.
            let meta = self.tasks.meta(ctx, stack);
            self.dma.pending_allocs.entry(name).or_default().push((dma, size, meta));
            self.dma.pending_len += 1;
        } else {
            self.summary.dma_allocs_unchecked += 1;
        }
    }
}

impl DmaApi {
    /// `dma_map_page`/`dma_alloc*` of `size` bytes at `dma` for domain `dev`.
    pub(super) fn mapped(
        &mut self,
        domains: &mut Domains,
        dev: usize,
        dma: u64,
        size: u64,
        dir: DmaDirection,
        ts: u64,
    ) {
        if self.live.len() < MAX_DMA_LIVE {
            let dev = domains.find(dev);
            self.live.insert((dev, dma), (size, dir, ts));
        }
    }

    /// `dma_unmap_page`/`dma_free*`: the mismatch with its map, if any, as
    /// (device root, note).
    pub(super) fn unmapped(
        &mut self,
        domains: &mut Domains,
        dev: usize,
        dma: u64,
        size: u64,
        dir: DmaDirection,
    ) -> Option<(usize, String)> {
        let dev = domains.find(dev);
        let (msize, mdir, mts) = self.live.remove(&(dev, dma))?;
        (msize != size || mdir != dir).then(|| {
            let note = format!(
                "mapped {msize} bytes {} at {}, unmapped {size} bytes {}",
                dir_name(mdir),
                fmt_ts(mts),
                dir_name(dir)
            );
            (dev, note)
        })
    }

    /// `dma_map_sg` of `entries` entries starting at physical `first`.
    pub(super) fn sg_mapped(&mut self, dev_root: usize, first: u64, entries: usize, dir: DmaDirection, ts: u64) {
        if self.sg_live.len() < MAX_DMA_LIVE {
            self.sg_live.insert((dev_root, first), (entries, dir, ts));
        }
    }

    /// `dma_unmap_sg`: the mismatch with its map, if any, as a note.
    pub(super) fn sg_unmapped(
        &mut self,
        dev_root: usize,
        first: u64,
        entries: usize,
        dir: DmaDirection,
    ) -> Option<String> {
        let (n, mdir, ts) = self.sg_live.remove(&(dev_root, first))?;
        (n != entries || mdir != dir).then(|| {
            format!(
                "mapped {n} entries {} at {}, unmapped {entries} entries {}",
                dir_name(mdir),
                fmt_ts(ts),
                dir_name(dir)
            )
        })
    }
}

/// A `dma-unmap-mismatch` finding at `ctx` for domain `dev`.
pub(super) fn mismatch(
    ctx: &Record,
    comm: std::sync::Arc<str>,
    domains: &Domains,
    dev: usize,
    dma: Option<u64>,
    size: u64,
    note: String,
) -> TraceFinding {
    let mut f = TraceFinding::at(FindingKind::DmaUnmapMismatch, ctx, comm);
    f.device = domains.slot(dev).shadow.device().map(|d| d.to_string());
    f.domain = domains.label(dev);
    f.attribution = domains.slot(dev).via;
    f.iova = dma;
    f.size = size;
    f.note = Some(note);
    f
}

fn dir_name(d: DmaDirection) -> &'static str {
    match d {
        DmaDirection::Bidirectional => "BIDIRECTIONAL",
        DmaDirection::ToDevice => "TO_DEVICE",
        DmaDirection::FromDevice => "FROM_DEVICE",
        DmaDirection::None => "NONE",
    }
}
