//! A map or unmap whose domain is known: the shadow and the page counters
//! change, and an unmap that finds nothing is judged (double unmap or not).
//!
//! Counts follow the sanitizer's two-call unmap (`unmap_begin` before the
//! page table changes, `unmap_end` with the bytes the IOMMU removed); the
//! removed mappings go on to `lazy` as unflushed ranges.

use iosan_core::{DomainId, FindingKind, IovaRange, MapMeta, PhysAddr, ShadowMapResult};

use super::analyzer::Analyzer;
use super::sequence::Unmap;
use crate::report::{fmt_ts, Doubt, TraceFinding};

/// Recently unmapped ranges remembered per domain (for certain double unmaps).
const MAX_RECENT_UNMAPS: usize = 4096;
/// Longest recent-unmap range looked back over when a map forgets them.
const MAX_RECENT_SPAN: u64 = 1 << 30;

impl Analyzer {
    /// Puts a mapping into a domain's shadow. If the shadow thinks part of
    /// it is already mapped, the kernel says otherwise (it mapped it): the
    /// stale entries are dropped first, and counted.
    pub(super) fn insert_map(&mut self, slot: usize, range: IovaRange, phys: PhysAddr, meta: MapMeta) {
        let slot = self.domains.find(slot);
        let recent = &mut self.domains.slot_mut(slot).recent_unmaps;
        if !recent.is_empty() {
            let hits: Vec<u64> = recent
                .range(..=range.last().get())
                .rev()
                .take_while(|(&s, _)| s.saturating_add(MAX_RECENT_SPAN) >= range.start().get())
                .filter(|(_, &(l, _))| l >= range.start().get())
                .map(|(&s, _)| s)
                .collect();
            for s in hits {
                recent.remove(&s);
            }
        }
        let len = range.len().unwrap_or(u64::MAX);
        loop {
            match self.domains.slot_mut(slot).shadow.map(range.start(), phys, len, meta) {
                ShadowMapResult::Mapped | ShadowMapResult::Invalid => return,
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
        let (ticket, begin) = self.san.unmap_begin(DomainId(slot as u64), &self.domains.slot(slot).shadow, iova, size);
        for f in &begin {
            match f.kind {
                FindingKind::DoubleUnmap => {
                    self.summary.unmaps_without_translation += 1;
                    self.double_unmap(slot, u);
                }
                FindingKind::UnmapOverlapsUnmapped => self.summary.unmaps_partly_translated += 1,
                _ => {}
            }
        }
        let gone = IovaRange::from_start_len(iova, unmapped)
            .map(|r| self.domains.slot_mut(slot).shadow.unmap(r))
            .unwrap_or_default();
        let end = self.san.unmap_end(ticket, &self.domains.slot(slot).shadow, unmapped);
        if !end.is_empty() {
            self.summary.count_inconsistencies += end.len() as u64;
        }
        if unmapped > size {
            self.summary.unmapped_more_than_requested += 1;
        }
        if stale {
            return;
        }
        if self.findings.watching() {
            let tasks = &self.tasks;
            for m in &gone {
                self.findings.unmapped((m.iova.start().get(), m.phys.get(), m.meta.when), ts_ns, || tasks.site(u.meta));
            }
        }
        if !gone.is_empty() {
            let recent = &mut self.domains.slot_mut(slot).recent_unmaps;
            if recent.len() >= MAX_RECENT_UNMAPS {
                recent.pop_first();
            }
            for m in &gone {
                recent.insert(m.iova.start().get(), (m.iova.last().get(), ts_ns));
            }
        }
        self.lazy.unmapped(slot, did_known, gone, ts_ns);
    }

    /// An unmap found nothing in its domain's shadow. Reported only when
    /// certain: the kernel found nothing either (`unmapped_size=0`), or this
    /// capture saw the range unmapped before and not mapped since. Otherwise
    /// the mapping predates the capture.
    fn double_unmap(&mut self, slot: usize, u: Unmap) {
        let Unmap { iova, size, unmapped, ts_ns, line, meta } = u;
        let last = iova.get().saturating_add(size.max(1) - 1);
        let earlier = self
            .domains
            .slot(slot)
            .recent_unmaps
            .range(..=last)
            .rev()
            .find(|(_, &(l, _))| l >= iova.get())
            .map(|(_, &(_, t))| t);
        if earlier.is_none() && !(unmapped == 0 && size > 0) {
            return;
        }
        let mut f = TraceFinding::blank(FindingKind::DoubleUnmap);
        f.time_ns = ts_ns;
        f.line = line;
        f.iova = Some(iova.get());
        f.size = size;
        f.device = self.domains.slot(slot).shadow.device().map(|d| d.to_string());
        f.domain = self.domains.label(slot);
        f.attribution = self.domains.slot(slot).via;
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
