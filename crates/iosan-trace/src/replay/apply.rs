//! A map or unmap whose domain is known: the shadow and the page counters
//! change, and an unmap that finds nothing is judged (double unmap or not).
//!
//! Counts follow the sanitizer's two-call unmap (`unmap_begin` before the
//! page table changes, `unmap_end` with the bytes the IOMMU removed); the
//! removed mappings go on to `lazy` as unflushed ranges.
//!
//! An IOMMU may remove more than asked: VT-d, AMD-Vi and virtio-iommu
//! remove the whole block (or mapping) around the IOVA and return its size
//! (`unmapped_size > size`). What went is then `unmapped_size` bytes from
//! the start of that block ([`Analyzer::block_removed`]); exact semantics
//! counts exactly that down, upstream semantics keeps the kernel's count
//! (the rest of the block stays counted: the kernel's false leak).

use std::ops::ControlFlow;

use iosan_core::{
    DomainId, FindingKind, Iova, IovaRange, LeafRun, MapMeta, PhysAddr, Semantics, ShadowMapResult, ShadowMapping,
    Translate,
};

use super::analyzer::Analyzer;
use super::identity::BlockGone;
use super::sequence::Unmap;
use crate::report::{fmt_ts, Doubt, TraceFinding};

/// Recently unmapped ranges remembered per domain (for certain double unmaps).
const MAX_RECENT_UNMAPS: usize = 4096;
/// Longest recent-unmap range looked back over when a map forgets them.
const MAX_RECENT_SPAN: u64 = 1 << 30;
/// Most shadow entries walked back to find where a split block starts.
const MAX_BLOCK_WALK: usize = 512;

impl Analyzer {
    /// Settles the unattributed unmaps waiting in any sequence that overlap
    /// `range` and came before `map_ns`, by content.
    fn settle_unmaps_before_map(&mut self, range: IovaRange, map_ns: u64) {
        if self.summary.unmaps_pending == 0 {
            return;
        }
        self.settle_waiting_unmaps(|_, u| {
            u.ts_ns <= map_ns
                && IovaRange::from_start_len(u.iova, u.size.max(u.unmapped).max(1))
                    .is_some_and(|r| r.intersect(range).is_some())
        });
    }

    /// Puts a mapping into a domain's shadow. If the shadow thinks part of
    /// it is already mapped, the kernel says otherwise (it mapped it): the
    /// stale entries are dropped first, and counted.
    pub(super) fn insert_map(&mut self, slot: usize, range: IovaRange, phys: PhysAddr, meta: MapMeta) {
        let slot = self.domains.find(slot);
        let s = self.domains.slot_mut(slot);
        if !s.recent_unmaps.is_empty() {
            forget_overlapping(&mut s.recent_unmaps, range, s.recent_max_span, |&(l, _)| l);
        }
        if !s.block_removed.is_empty() {
            forget_overlapping(&mut s.block_removed, range, s.block_max_span, |b| b.last);
        }
        let len = range.len().unwrap_or(u64::MAX);
        let mut settled = false;
        loop {
            match self.domains.slot_mut(slot).shadow.map(range.start(), phys, len, meta) {
                ShadowMapResult::Mapped | ShadowMapResult::Invalid => return,
                ShadowMapResult::Overlap { .. } if !settled => {
                    // An unmap of the old entry may still wait for its domain
                    // (7.x's dma_iova_unlink has no dma:* event): it came first.
                    settled = true;
                    self.settle_unmaps_before_map(range, meta.when);
                }
                ShadowMapResult::Overlap { .. } => {
                    self.summary.stale_mappings_replaced += 1;
                    let stale: Vec<_> = self.domains.slot(slot).shadow.overlapping(range).collect();
                    for m in stale {
                        let u = Unmap {
                            iova: m.iova.start(),
                            size: m.len(),
                            unmapped: m.len(),
                            ts_ns: 0,
                            line: 0,
                            meta: MapMeta::default(),
                        };
                        self.apply_unmap(slot, u, true);
                    }
                }
            }
        }
    }

    /// Applies unmap `u` to domain `slot`. A `stale` unmap drops a shadow
    /// entry the kernel has shown to be gone: it is not remembered as an
    /// unmap and leaves nothing unflushed.
    pub(super) fn apply_unmap(&mut self, slot: usize, u: Unmap, stale: bool) {
        let Unmap { iova, size, unmapped, ts_ns, .. } = u;
        let slot = self.domains.find(slot);
        let did_known = !self.domains.slot(slot).dids.is_empty();
        let exact = self.opts.semantics == Semantics::Exact;
        let block = if unmapped > size { self.block_removed(slot, u) } else { None };
        // Exact semantics counts down what went (the block); upstream what was asked.
        let (from, len) = match block {
            Some(b) if exact => (b.start(), unmapped),
            _ => (iova, size),
        };
        // The common unmap (all that was asked went, ends on the granule):
        // the shadow unmaps first, and what it removed is the translation
        // the sanitizer records, saving the second tree search.
        let mut gone = std::mem::take(&mut self.spare_gone);
        gone.clear();
        let asked = IovaRange::from_start_len(iova, size);
        let removed_first = block.is_none()
            && unmapped == size
            && asked.is_some_and(|r| self.domains.slot(slot).shadow.unmaps_as_walked(r));
        let (ticket, begin) = if removed_first {
            let shadow = &mut self.domains.slot_mut(slot).shadow;
            if let Some(r) = asked {
                shadow.unmap_into(r, &mut gone);
            }
            let before = Removed { pieces: &gone, pgsize_bitmap: shadow.pgsize_bitmap() };
            self.san.unmap_begin(DomainId(slot as u64), &before, from, len)
        } else {
            self.san.unmap_begin(DomainId(slot as u64), &self.domains.slot(slot).shadow, from, len)
        };
        if let (Some(_), true) = (block, exact) {
            // The verdicts are about the asked range, not the block.
            let covered = IovaRange::from_start_len(iova, size).map_or(0, |r| self.covered(slot, r));
            if covered == 0 {
                self.nothing_mapped(slot, u);
            } else if covered < size {
                self.summary.unmaps_partly_translated += 1;
            }
        } else {
            for f in &begin {
                match f.kind {
                    FindingKind::DoubleUnmap => self.nothing_mapped(slot, u),
                    FindingKind::UnmapOverlapsUnmapped => self.summary.unmaps_partly_translated += 1,
                    _ => {}
                }
            }
        }
        if exact && unmapped == 0 && size > 0 && begin.is_empty() {
            self.partial_block_refused(slot, u);
        }
        if !removed_first {
            if let Some(r) = block.or_else(|| IovaRange::from_start_len(iova, unmapped)) {
                self.domains.slot_mut(slot).shadow.unmap_into(r, &mut gone);
            }
        }
        let end = self.san.unmap_end(ticket, &self.domains.slot(slot).shadow, unmapped);
        if !end.is_empty() {
            self.summary.count_inconsistencies += end.len() as u64;
        }
        if unmapped > size {
            self.summary.unmapped_more_than_requested += 1;
        }
        if stale {
            self.spare_gone = gone;
            return;
        }
        if self.findings.watching() {
            let tasks = &self.tasks;
            for m in &gone {
                self.findings.unmapped((m.iova.start().get(), m.phys.get(), m.meta.when), ts_ns, || tasks.site(u.meta));
            }
        }
        let s = self.domains.slot_mut(slot);
        if !gone.is_empty() {
            if s.recent_unmaps.len() >= MAX_RECENT_UNMAPS {
                s.recent_unmaps.pop_first();
            }
            for m in &gone {
                s.recent_max_span = s.recent_max_span.max(m.len());
                s.recent_unmaps.insert(m.iova.start().get(), (m.iova.last().get(), ts_ns));
            }
        }
        if let Some(b) = block {
            // What went beyond the asked range (known to the shadow or not, the
            // IOMMU said so): a later unmap there finds nothing, rightly.
            let asked_last = iova.get().saturating_add(size.max(1) - 1);
            let note = BlockGone { last: 0, ts_ns, asked: (iova.get(), size), removed: (b.start().get(), unmapped) };
            let before = (b.start() < iova).then(|| (b.start().get(), iova.get() - 1));
            let after = (b.last().get() > asked_last).then(|| (asked_last + 1, b.last().get()));
            for (first, last) in before.into_iter().chain(after) {
                if s.block_removed.len() >= MAX_RECENT_UNMAPS {
                    s.block_removed.pop_first();
                }
                s.block_max_span = s.block_max_span.max((last - first).saturating_add(1));
                s.block_removed.insert(first, BlockGone { last, ..note });
            }
        }
        self.lazy.unmapped(slot, did_known, &gone, ts_ns);
        self.spare_gone = gone;
    }

    /// What the IOMMU removed for an unmap that removed more than it asked
    /// (`unmapped > size`): `unmapped` bytes from the start of the block
    /// holding its IOVA. Page-table blocks are naturally aligned, so the
    /// block starts at the IOVA rounded down to the largest power of two
    /// dividing `unmapped`, but not before the mapping(s) covering the IOVA
    /// (however the shadow split them; virtio-iommu removes whole mappings,
    /// which start at the IOVA). `None` when the range would wrap.
    pub(super) fn block_removed(&self, slot: usize, u: Unmap) -> Option<IovaRange> {
        let align = u.unmapped.trailing_zeros();
        let floor = u.iova.get() & !(1u64.checked_shl(align).map_or(u64::MAX, |b| b - 1));
        let sh = &self.domains.slot(slot).shadow;
        // The start of the IOVA- and phys-contiguous run of entries covering the IOVA.
        let at = IovaRange::from_start_len(u.iova, 1)?;
        let start = match sh.overlapping(at).next() {
            Some(m) => {
                let (mut s, mut phys) = (m.iova.start().get(), m.phys.get());
                for _ in 0..MAX_BLOCK_WALK {
                    if s <= floor {
                        break;
                    }
                    let Some(before) = IovaRange::from_start_len(Iova(s - 1), 1) else { break };
                    let Some(p) = sh.overlapping(before).next() else { break };
                    if p.phys.get().checked_add(p.len()) != Some(phys) {
                        break;
                    }
                    (s, phys) = (p.iova.start().get(), p.phys.get());
                }
                s.max(floor)
            }
            // Nothing known there (mapped before the capture): from the IOVA.
            None => u.iova.get(),
        };
        IovaRange::from_start_len(Iova(start), u.unmapped)
    }

    /// Bytes of `range` the shadow of `slot` translates.
    fn covered(&self, slot: usize, range: IovaRange) -> u64 {
        self.domains
            .slot(slot)
            .shadow
            .overlapping(range)
            .filter_map(|m| m.iova.intersect(range).and_then(|c| c.len()))
            .fold(0, u64::saturating_add)
    }

    /// An unmap found nothing in its domain's shadow: removed earlier with a
    /// whole block (informational), a double unmap, or a mapping made
    /// before the capture.
    fn nothing_mapped(&mut self, slot: usize, u: Unmap) {
        if self.opts.semantics == Semantics::Exact {
            let last = u.iova.get().saturating_add(u.size.max(1) - 1);
            let by_block = self
                .domains
                .slot(slot)
                .block_removed
                .range(..=last)
                .next_back()
                .filter(|(_, b)| b.last >= u.iova.get());
            if let Some((_, b)) = by_block {
                let b = *b;
                let mut f = self.unmap_finding(FindingKind::UnmapAlreadyRemoved, slot, u);
                f.set_doubt(self.lost_between(b.ts_ns, u.ts_ns).then_some(Doubt::LostEvents));
                f.note = Some(format!(
                    "nothing left to unmap: the unmap of {} bytes at {:#x} at {} removed the whole {} bytes from {:#x}",
                    b.asked.1,
                    b.asked.0,
                    fmt_ts(b.ts_ns),
                    b.removed.1,
                    b.removed.0
                ));
                self.findings.push(f);
                return;
            }
        }
        self.summary.unmaps_without_translation += 1;
        self.double_unmap(slot, u);
    }

    /// An unmap that removed 0 bytes of a fully mapped range that lies
    /// inside a possible block (a page size of the domain larger than the
    /// range, aligned in IOVA and phys, within one mapping): io-pgtable-arm
    /// (Linux 6.13+) refuses to split a block, WARNs and returns 0.
    fn partial_block_refused(&mut self, slot: usize, u: Unmap) {
        let Some(asked) = IovaRange::from_start_len(u.iova, u.size) else { return };
        let Some(m) = self.domains.slot(slot).shadow.overlapping(asked).next() else { return };
        if m.iova.start() > asked.start() || m.iova.last() < asked.last() {
            return;
        }
        let block = (0..64u32).rev().filter(|b| self.opts.pgsize_bitmap & (1u64 << b) != 0).find_map(|b| {
            let bs = 1u64 << b;
            let start = u.iova.get() & !(bs - 1);
            let r = IovaRange::from_start_len(Iova(start), bs)?;
            let phys = m.phys.get().wrapping_add(start.wrapping_sub(m.iova.start().get()));
            let fits = bs > u.size
                && start >= m.iova.start().get()
                && r.last() <= m.iova.last()
                && r.last() >= asked.last()
                && phys & (bs - 1) == 0;
            fits.then_some(r)
        });
        let Some(block) = block else { return };
        let mut f = self.unmap_finding(FindingKind::PartialBlockUnmapRefused, slot, u);
        f.note = Some(format!(
            "the IOMMU removed 0 of {} bytes inside the {}-byte block at {:#x}: the block stays mapped and counted",
            u.size,
            block.len().unwrap_or(u64::MAX),
            block.start().get()
        ));
        self.findings.push(f);
    }

    /// A finding of `kind` about unmap `u` in domain `slot`.
    fn unmap_finding(&self, kind: FindingKind, slot: usize, u: Unmap) -> TraceFinding {
        let mut f = TraceFinding::blank(kind);
        f.time_ns = u.ts_ns;
        f.line = u.line;
        f.iova = Some(u.iova.get());
        f.size = u.size;
        f.device = self.domains.slot(slot).shadow.device().map(|d| d.to_string());
        f.domain = self.domains.label(slot);
        f.attribution = self.domains.slot(slot).via;
        f
    }

    /// An unmap found nothing in its domain's shadow. Reported only when
    /// certain: the kernel found nothing either (`unmapped_size=0`), or this
    /// capture saw the range unmapped before and not mapped since. Otherwise
    /// the mapping predates the capture.
    fn double_unmap(&mut self, slot: usize, u: Unmap) {
        let Unmap { iova, size, unmapped, ts_ns, meta, .. } = u;
        let last = iova.get().saturating_add(size.max(1) - 1);
        let s = self.domains.slot(slot);
        // Entries starting `recent_max_span` or more below end before `iova`.
        let earlier = s
            .recent_unmaps
            .range(..=last)
            .rev()
            .take_while(|(&start, _)| start.saturating_add(s.recent_max_span) >= iova.get())
            .find(|(_, &(l, _))| l >= iova.get())
            .map(|(_, &(_, t))| t);
        if earlier.is_none() && !(unmapped == 0 && size > 0) {
            return;
        }
        let mut f = self.unmap_finding(FindingKind::DoubleUnmap, slot, u);
        f.set_doubt(self.lost_between(earlier.unwrap_or(0), ts_ns).then_some(Doubt::LostEvents));
        let site = self.tasks.site(meta);
        if site.time_ns == ts_ns {
            f.cpu = Some(site.cpu);
            f.task = Some(format!("{}-{}", site.task, site.pid));
        }
        f.unmapped_by = Some(site);
        f.note = Some(match earlier {
            Some(t) => format!("already unmapped at {}, not mapped since", fmt_ts(t)),
            None => "the IOMMU found nothing mapped (unmapped_size=0)".into(),
        });
        self.findings.push(f);
    }
}

/// A domain's translation of a range just unmapped from its shadow, as it
/// was before: the pieces removed, clipped to the range, in IOVA order.
struct Removed<'a> {
    pieces: &'a [ShadowMapping],
    pgsize_bitmap: u64,
}

impl Translate for Removed<'_> {
    fn pgsize_bitmap(&self) -> u64 {
        self.pgsize_bitmap
    }

    fn walk_leaves(&self, range: IovaRange, visit: &mut dyn FnMut(LeafRun) -> ControlFlow<()>) {
        for m in self.pieces.iter().filter(|m| m.iova.intersect(range).is_some()) {
            if visit(LeafRun { iova: m.iova.start(), phys: m.phys, len: m.len() }).is_break() {
                return;
            }
        }
    }
}

/// Drops the entries of `map` (start -> value with `last(value)`) that
/// overlap `range`: it is mapped again.
fn forget_overlapping<V>(
    map: &mut std::collections::BTreeMap<u64, V>,
    range: IovaRange,
    max_span: u64,
    last: impl Fn(&V) -> u64,
) {
    // An entry starting `max_span` or more below `range` ends before it:
    // the scan stops there instead of walking every entry below.
    let reach = max_span.min(MAX_RECENT_SPAN);
    // Usually one hit (the IOVA allocator hands out what was just freed):
    // it needs no allocation.
    let mut first_hit = None;
    let mut more_hits: Vec<u64> = Vec::new();
    for (&s, v) in map.range(..=range.last().get()).rev() {
        if s.saturating_add(reach) < range.start().get() {
            break;
        }
        if last(v) >= range.start().get() {
            if first_hit.is_none() {
                first_hit = Some(s);
            } else {
                more_hits.push(s);
            }
        }
    }
    for s in first_hit.into_iter().chain(more_hits) {
        map.remove(&s);
    }
}

#[cfg(test)]
mod tests {
    use crate::{analyze, AnalyzeOptions};

    /// Linux 7.x's NVMe unmaps through `dma_iova_unlink`, with no `dma:*`
    /// event: without kprobes the unmap waits for its domain while the
    /// driver maps the same IOVA again. The waiting unmap came first: it
    /// removes the old entry, not the new one, and the new one's own unmap
    /// is no double unmap.
    #[test]
    fn a_waiting_unmap_of_a_reused_iova_goes_before_the_new_map() {
        let text = "\
 t-1 [000] ..... 1.000000: map: IOMMU: iova=0x00000000fff00000 - 0x00000000fff20000 paddr=0x0000000001000000 size=131072
 t-1 [000] ..... 1.000001: dma_map_phys: 0000:00:03.0 dir=FROM_DEVICE dma_addr=fff00000 size=131072 phys_addr=1000000 attrs=
 t-1 [000] d.h1. 1.000100: unmap: IOMMU: iova=0x00000000fff00000 - 0x00000000fff20000 size=131072 unmapped_size=131072
 t-1 [000] ..... 1.000200: map: IOMMU: iova=0x00000000fff00000 - 0x00000000fff20000 paddr=0x0000000002000000 size=131072
 t-1 [000] ..... 1.000201: dma_map_phys: 0000:00:03.0 dir=FROM_DEVICE dma_addr=fff00000 size=131072 phys_addr=2000000 attrs=
 t-1 [000] d.h1. 1.000300: unmap: IOMMU: iova=0x00000000fff00000 - 0x00000000fff20000 size=131072 unmapped_size=131072
 t-1 [000] d.h1. 1.000301: dma_unmap_phys: 0000:00:03.0 dir=FROM_DEVICE dma_addr=fff00000 size=131072 attrs=
 t-1 [000] ..... 1.000400: mm_page_free: page=0000000011111111 pfn=0x2000 order=5
";
        let r = analyze(std::io::Cursor::new(text), "t", &AnalyzeOptions::default(), &mut ()).expect("in memory");
        let bugs: Vec<_> = r.findings.iter().filter(|f| f.kind.is_bug()).collect();
        assert!(bugs.is_empty(), "{bugs:?}");
        assert_eq!(r.summary.stale_mappings_replaced, 0);
    }
}
