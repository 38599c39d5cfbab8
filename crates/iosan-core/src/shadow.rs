//! `ShadowDomain`: a domain known only from the map and unmap calls it saw.
//!
//! The trace analyser and hosts that observe an IOMMU from outside (a VMM
//! with a virtual IOMMU, a hypervisor trapping map calls) keep one per
//! domain: a range map IOVA → physical address, with the provenance of each
//! mapping, and a reverse index to find the mappings covering a page.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::ControlFlow;

use crate::addr::{Iova, IovaRange, PhysAddr};
use crate::finding::{DomainId, MapMeta, Mapping, MappingSource};
use crate::translate::{granule_lg2, LeafRun, Translate};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    last: u64,
    phys: u64,
    meta: MapMeta,
}

/// A mapping held by a [`ShadowDomain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowMapping {
    /// IOVA range.
    pub iova: IovaRange,
    /// Physical address of `iova.start()`.
    pub phys: PhysAddr,
    /// Provenance.
    pub meta: MapMeta,
}

impl ShadowMapping {
    /// Length in bytes (saturating at `u64::MAX` for the whole space).
    #[must_use]
    pub fn len(&self) -> u64 {
        self.iova.len().unwrap_or(u64::MAX)
    }
    /// Always false: mappings are never empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Outcome of [`ShadowDomain::map`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowMapResult {
    /// The range is now mapped.
    Mapped,
    /// Part of the range was already mapped; nothing changed.
    Overlap {
        /// First IOVA already mapped.
        at: Iova,
    },
    /// Zero size, or the IOVA or physical range wraps; nothing changed.
    Invalid,
}

/// An IOVA → physical range map for one domain, with provenance.
///
/// Mappings are kept as mapped (one entry per map call, split only by
/// partial unmaps), so provenance stays per call. Its leaf granule for
/// [`Translate::walk_leaves`] is the lowest page size of its `pgsize_bitmap`.
#[derive(Debug)]
pub struct ShadowDomain {
    id: DomainId,
    device: Option<Arc<str>>,
    pgsize_bitmap: u64,
    by_iova: BTreeMap<u64, Entry>,
    /// (phys start, iova start) for reverse lookups, built on the first one
    /// and kept up to date from then on. Only a page found mapped when it is
    /// freed or allocated (a finding) needs one, and keeping the index from
    /// the start cost a tree insert and a tree removal per map and unmap,
    /// about a third of a shadow's upkeep.
    by_phys: spin::Once<BTreeMap<(u64, u64), ()>>,
    /// Longest mapping ever held, bounding reverse-lookup scans.
    max_len: u64,
    mapped_bytes: u64,
    block_leaves: bool,
}

impl Clone for ShadowDomain {
    /// The copy builds its own reverse index when it first needs one.
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            device: self.device.clone(),
            pgsize_bitmap: self.pgsize_bitmap,
            by_iova: self.by_iova.clone(),
            by_phys: spin::Once::new(),
            max_len: self.max_len,
            mapped_bytes: self.mapped_bytes,
            block_leaves: self.block_leaves,
        }
    }
}

impl ShadowDomain {
    /// An empty domain. `pgsize_bitmap` as in [`Translate::pgsize_bitmap`];
    /// 0 is replaced by 4 KiB.
    #[must_use]
    pub fn new(id: DomainId, pgsize_bitmap: u64) -> Self {
        Self {
            id,
            device: None,
            pgsize_bitmap: if pgsize_bitmap == 0 { 1 << 12 } else { pgsize_bitmap },
            by_iova: BTreeMap::new(),
            by_phys: spin::Once::new(),
            max_len: 0,
            mapped_bytes: 0,
            block_leaves: false,
        }
    }

    /// A domain whose every mapping is one leaf entry that cannot be split,
    /// like an IOMMU that maps each call as one block (VT-d superpages,
    /// AMD, generic_pt): [`Translate::walk_leaves`] reports straddling
    /// mappings whole, so a host that removes a whole block on a partial
    /// unmap stays exact.
    #[must_use]
    pub fn with_block_leaves(id: DomainId, pgsize_bitmap: u64) -> Self {
        Self { block_leaves: true, ..Self::new(id, pgsize_bitmap) }
    }

    /// The domain's id.
    #[must_use]
    pub fn id(&self) -> DomainId {
        self.id
    }

    /// The device using this domain, if known.
    #[must_use]
    pub fn device(&self) -> Option<&Arc<str>> {
        self.device.as_ref()
    }

    /// Records which device uses this domain (shown in provenance).
    pub fn set_device(&mut self, device: Option<Arc<str>>) {
        self.device = device;
    }

    /// Number of mappings held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_iova.len()
    }

    /// True when nothing is mapped.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_iova.is_empty()
    }

    /// Bytes mapped.
    #[must_use]
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped_bytes
    }

    /// Maps `[iova, iova + size)` to `[phys, phys + size)`. Fails without
    /// change if any part is already mapped, as `iommu_map()` does.
    pub fn map(&mut self, iova: Iova, phys: PhysAddr, size: u64, meta: MapMeta) -> ShadowMapResult {
        let Some(range) = IovaRange::from_start_len(iova, size) else { return ShadowMapResult::Invalid };
        if phys.checked_add(size - 1).is_none() {
            return ShadowMapResult::Invalid;
        }
        if let Some(at) = self.first_mapped_in(range) {
            return ShadowMapResult::Overlap { at };
        }
        self.insert(iova.get(), range.last().get(), phys.get(), meta);
        ShadowMapResult::Mapped
    }

    fn insert(&mut self, start: u64, last: u64, phys: u64, meta: MapMeta) {
        let len = last - start;
        self.by_iova.insert(start, Entry { last, phys, meta });
        if let Some(ix) = self.by_phys.get_mut() {
            ix.insert((phys, start), ());
        }
        self.max_len = self.max_len.max(len.saturating_add(1));
        self.mapped_bytes = self.mapped_bytes.saturating_add(len.saturating_add(1));
    }

    fn remove_entry(&mut self, start: u64) -> Option<Entry> {
        let e = self.by_iova.remove(&start)?;
        if let Some(ix) = self.by_phys.get_mut() {
            ix.remove(&(e.phys, start));
        }
        self.mapped_bytes = self.mapped_bytes.saturating_sub((e.last - start).saturating_add(1));
        Some(e)
    }

    /// The first mapped IOVA inside `range`, if any.
    #[must_use]
    pub fn first_mapped_in(&self, range: IovaRange) -> Option<Iova> {
        let (start, last) = (range.start().get(), range.last().get());
        // Mappings are disjoint and sorted: when the last one starting at or
        // before `last` ends before `start`, nothing overlaps. One probe in
        // the common case (a map of free IOVA space) instead of two.
        match self.by_iova.range(..=last).next_back() {
            None => return None,
            Some((&s, e)) if s <= start => return (e.last >= start).then_some(range.start()),
            Some(_) => {}
        }
        if let Some((_, e)) = self.by_iova.range(..start).next_back() {
            if e.last >= start {
                return Some(range.start());
            }
        }
        self.by_iova.range(start..=last).next().map(|(&s, _)| Iova(s))
    }

    /// The mappings overlapping `range`, whole (not clipped), in IOVA order.
    pub fn overlapping(&self, range: IovaRange) -> impl Iterator<Item = ShadowMapping> + '_ {
        let before = self
            .by_iova
            .range(..range.start().get())
            .next_back()
            .filter(|(_, e)| e.last >= range.start().get())
            .map(|(&s, e)| (s, *e));
        let inside = self.by_iova.range(range.start().get()..=range.last().get()).map(|(&s, e)| (s, *e));
        before.into_iter().chain(inside).filter_map(|(s, e)| {
            Some(ShadowMapping {
                iova: IovaRange::from_start_last(Iova(s), Iova(e.last))?,
                phys: PhysAddr(e.phys),
                meta: e.meta,
            })
        })
    }

    /// Removes exactly `range`, splitting mappings at its ends, and returns
    /// the removed pieces (clipped to `range`) in IOVA order. Holes are
    /// skipped: the sum of the pieces' lengths is the bytes that were mapped.
    pub fn unmap(&mut self, range: IovaRange) -> Vec<ShadowMapping> {
        let mut removed = Vec::new();
        self.unmap_into(range, &mut removed);
        removed
    }

    /// [`Self::unmap`], pushing what it removed onto `removed` (a caller
    /// that unmaps per event reuses one buffer instead of allocating).
    pub fn unmap_into(&mut self, range: IovaRange, removed: &mut Vec<ShadowMapping>) {
        // Common case, one probe: a single mapping starting at or before
        // `range.start` (mappings are disjoint and sorted, so the last one
        // starting at or before `range.last` is then the only overlap).
        let single = match self.by_iova.range(..=range.last().get()).next_back() {
            None => return,
            Some((_, e)) if e.last < range.start().get() => return,
            Some((&s, _)) if s <= range.start().get() => Some(s),
            Some(_) => None,
        };
        match single {
            Some(s) => self.cut(s, range, removed),
            None => {
                let starts: Vec<u64> = self.overlapping(range).map(|m| m.iova.start().get()).collect();
                for s in starts {
                    self.cut(s, range, removed);
                }
            }
        }
    }

    /// Removes the part of the mapping starting at `s` inside `range`,
    /// keeping the parts outside, and pushes the removed piece.
    fn cut(&mut self, s: u64, range: IovaRange, removed: &mut Vec<ShadowMapping>) {
        let Some(e) = self.remove_entry(s) else { return };
        let cut_start = s.max(range.start().get());
        let cut_last = e.last.min(range.last().get());
        if s < cut_start {
            self.insert(s, cut_start - 1, e.phys, e.meta);
        }
        if e.last > cut_last {
            let off = cut_last + 1 - s;
            self.insert(cut_last + 1, e.last, e.phys.wrapping_add(off), e.meta);
        }
        if let Some(iova) = IovaRange::from_start_last(Iova(cut_start), Iova(cut_last)) {
            removed.push(ShadowMapping { iova, phys: PhysAddr(e.phys.wrapping_add(cut_start - s)), meta: e.meta });
        }
    }

    /// True when [`Translate::walk_leaves`] over `range` reports exactly the
    /// pieces [`Self::unmap_into`] removes for it: both ends on the granule
    /// and leaves split at it, so no leaf straddles an end. A host may then
    /// unmap first and hand the sanitizer the removed pieces as the
    /// translation before the unmap (one tree search instead of two).
    #[must_use]
    pub fn unmaps_as_walked(&self, range: IovaRange) -> bool {
        let Some(g) = granule_lg2(self.pgsize_bitmap) else { return false };
        let end_aligned = range.last().get().checked_add(1).is_none_or(|end| Iova(end).is_aligned(g));
        !self.block_leaves && range.start().is_aligned(g) && end_aligned
    }

    /// Every mapping, in IOVA order.
    pub fn iter(&self) -> impl Iterator<Item = ShadowMapping> + '_ {
        self.by_iova.iter().filter_map(|(&s, e)| {
            Some(ShadowMapping {
                iova: IovaRange::from_start_last(Iova(s), Iova(e.last))?,
                phys: PhysAddr(e.phys),
                meta: e.meta,
            })
        })
    }

    /// Removes everything (domain teardown) and returns what was mapped.
    pub fn clear(&mut self) -> Vec<ShadowMapping> {
        let all: Vec<ShadowMapping> = self.iter().collect();
        self.by_iova.clear();
        self.by_phys = spin::Once::new();
        self.mapped_bytes = 0;
        all
    }

    /// Calls `visit` for each mapping whose physical range overlaps
    /// `[phys, phys + len)`.
    pub fn for_each_covering(&self, phys: PhysAddr, len: u64, mut visit: impl FnMut(ShadowMapping)) {
        if len == 0 || self.max_len == 0 {
            return;
        }
        let q_first = phys.get();
        let q_last = q_first.saturating_add(len - 1);
        let lo = q_first.saturating_sub(self.max_len - 1);
        let by_phys = self.by_phys.call_once(|| self.by_iova.iter().map(|(&s, e)| ((e.phys, s), ())).collect());
        for (&(p, s), ()) in by_phys.range((lo, 0)..=(q_last, u64::MAX)) {
            let Some(e) = self.by_iova.get(&s) else { continue };
            let p_last = p.saturating_add(e.last - s);
            if p_last >= q_first {
                if let Some(iova) = IovaRange::from_start_last(Iova(s), Iova(e.last)) {
                    visit(ShadowMapping { iova, phys: PhysAddr(p), meta: e.meta });
                }
            }
        }
    }
}

impl Translate for ShadowDomain {
    fn pgsize_bitmap(&self) -> u64 {
        self.pgsize_bitmap
    }

    fn walk_leaves(&self, range: IovaRange, visit: &mut dyn FnMut(LeafRun) -> ControlFlow<()>) {
        // A shadow splits at its granule: a leaf straddling an end is the
        // granule-sized piece containing it.
        let (lo, hi) = if self.block_leaves {
            (0, u64::MAX)
        } else {
            let g = granule_lg2(self.pgsize_bitmap).unwrap_or(12);
            (range.start().align_down(g).get(), range.last().get() | ((1u64 << g.min(63)) - 1))
        };
        let Some(wide) = IovaRange::from_start_last(Iova(lo), Iova(hi)) else { return };
        let wide = if self.block_leaves { range } else { wide };
        // Common case: one mapping holds the whole range (one tree probe).
        if let Some((&s, e)) = self.by_iova.range(..=wide.last().get()).next_back() {
            if s <= wide.start().get() && e.last >= wide.last().get() {
                let (a, b) = if self.block_leaves { (s, e.last) } else { (wide.start().get(), wide.last().get()) };
                if let Some(len) = (b - a).checked_add(1) {
                    let _ = visit(LeafRun { iova: Iova(a), phys: PhysAddr(e.phys.wrapping_add(a - s)), len });
                }
                return;
            }
        }
        for m in self.overlapping(wide) {
            let s = m.iova.start().get().max(lo);
            let l = m.iova.last().get().min(hi);
            let off = s - m.iova.start().get();
            let Some(len) = (l - s).checked_add(1) else { continue };
            let run = LeafRun { iova: Iova(s), phys: PhysAddr(m.phys.get().wrapping_add(off)), len };
            if visit(run).is_break() {
                return;
            }
        }
    }
}

impl MappingSource for ShadowDomain {
    fn mappings_covering(&self, phys: PhysAddr, len: u64, visit: &mut dyn FnMut(Mapping)) {
        self.for_each_covering(phys, len, |m| {
            visit(Mapping {
                domain: self.id,
                device: self.device.clone(),
                iova: m.iova.start(),
                phys: m.phys,
                len: m.len(),
                meta: m.meta,
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: u64, len: u64) -> IovaRange {
        IovaRange::from_start_len(Iova(s), len).unwrap()
    }

    #[test]
    fn map_rejects_overlap_and_bad_ranges() {
        let mut d = ShadowDomain::new(DomainId(1), 0x1000);
        assert_eq!(d.map(Iova(0x1000), PhysAddr(0x5000), 0x2000, MapMeta::default()), ShadowMapResult::Mapped);
        assert_eq!(
            d.map(Iova(0x2000), PhysAddr(0x9000), 0x1000, MapMeta::default()),
            ShadowMapResult::Overlap { at: Iova(0x2000) }
        );
        assert_eq!(d.map(Iova(0), PhysAddr(0), 0, MapMeta::default()), ShadowMapResult::Invalid);
        assert_eq!(d.map(Iova(u64::MAX), PhysAddr(0), 2, MapMeta::default()), ShadowMapResult::Invalid);
        assert_eq!(d.iova_to_phys(Iova(0x2abc)), Some(PhysAddr(0x6abc)));
        assert_eq!(d.iova_to_phys(Iova(0x3000)), None);
    }

    #[test]
    fn unmap_splits_and_reports_pieces() {
        let mut d = ShadowDomain::new(DomainId(1), 0x1000);
        d.map(Iova(0x10000), PhysAddr(0x80000), 0x4000, MapMeta { when: 7, tag: 0 });
        let removed = d.unmap(r(0x11000, 0x1000));
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].phys, PhysAddr(0x81000));
        assert_eq!(d.len(), 2);
        assert_eq!(d.iova_to_phys(Iova(0x12000)), Some(PhysAddr(0x82000)));
        assert_eq!(d.mapped_bytes(), 0x3000);
        let mut seen = vec![];
        d.for_each_covering(PhysAddr(0x82000), 0x1000, |m| seen.push(m.iova.start()));
        assert_eq!(seen, vec![Iova(0x12000)]);
    }

    #[test]
    fn walk_reports_straddling_granules() {
        let mut d = ShadowDomain::new(DomainId(1), 0x1000);
        d.map(Iova(0x0), PhysAddr(0x100000), 0x3000, MapMeta::default());
        let mut runs = vec![];
        d.walk_leaves(r(0x1800, 0x10), &mut |run| {
            runs.push(run);
            ControlFlow::Continue(())
        });
        assert_eq!(runs, vec![LeafRun { iova: Iova(0x1000), phys: PhysAddr(0x101000), len: 0x1000 }]);
    }
}
