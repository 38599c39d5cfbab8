//! Lazy mode: ranges unmapped but not yet flushed from the IOTLB.
//!
//! With a flush queue (`iommu.strict=0`, DMA-FQ domains) the page table is
//! cleared at unmap time but the IOTLB later, so a page freed in between is
//! still reachable by the device. That is lazy mode's accepted cost: it is
//! measured as exposure in the summary (frees, pages, bytes, longest
//! window), never a finding. A domain is known to be a flush-queue domain
//! from its type (a kprobe's `dtype`) or from a whole-domain flush; until
//! then frees in its unflushed ranges are held in its [`Slot`].
//!
//! [`Slot`]: super::identity::Slot

use std::collections::BTreeMap;

use iosan_core::{IovaRange, ShadowMapping};

use super::identity::Domains;
use crate::report::{Exposure, ExposureWindow, Summary};

/// Longest exposure windows kept per domain.
const MAX_WINDOWS_PER_DOMAIN: usize = 8;
/// Domains whose windows are kept.
const MAX_WINDOW_DOMAINS: usize = 1024;

/// An exposure window of a domain slot: (length ns, freed ns, flushed ns, pages).
type Window = (u64, u64, u64, u64);

/// Unflushed ranges tracked before any IOTLB flush event was seen.
const MAX_UNFLUSHED_BEFORE_FLUSH: usize = 1 << 16;
/// Frees held per domain until its kind of flush is known.
const MAX_HELD_FREES: usize = 1 << 16;

/// A range that was unmapped but not yet flushed from the IOTLB (lazy mode).
#[derive(Clone, Copy, Debug)]
struct Unflushed {
    slot: usize,
    iova: IovaRange,
    pfn_last: u64,
    unmap_ns: u64,
    first_free_ns: Option<u64>,
}

/// The unflushed ranges, by first page frame.
pub(super) struct Lazy {
    /// (first pfn, insertion number) -> range.
    unflushed: BTreeMap<(u64, u64), Unflushed>,
    unflushed_seq: u64,
    /// Longest unflushed range in pages, bounding lookups by page.
    unflushed_max_pages: u64,
    /// An IOTLB flush event was seen: exposure can be measured.
    flush_events_seen: bool,
    /// Most unflushed ranges tracked at once.
    max_unflushed: usize,
    /// CPU page size, log2.
    page_lg2: u32,
    /// The longest windows per domain slot, longest first.
    windows: BTreeMap<usize, Vec<Window>>,
    /// `fq_flush_iotlb` cookies (`struct iommu_dma_cookie *`) tied to the
    /// domain slot they flush.
    cookies: Vec<(u64, usize)>,
}

/// Most flush-queue cookies remembered (one per DMA domain).
const MAX_COOKIES: usize = 1 << 12;

impl Lazy {
    /// Keeps the window `[freed_ns, flushed_ns]` of `pages` of domain `slot`
    /// if it is among the domain's longest.
    fn window(&mut self, slot: usize, freed_ns: u64, flushed_ns: u64, pages: u64) {
        if !self.windows.contains_key(&slot) && self.windows.len() >= MAX_WINDOW_DOMAINS {
            return;
        }
        let w = self.windows.entry(slot).or_default();
        let len = flushed_ns.saturating_sub(freed_ns);
        let at = w.iter().position(|x| x.0 < len).unwrap_or(w.len());
        if at < MAX_WINDOWS_PER_DOMAIN {
            w.insert(at, (len, freed_ns, flushed_ns, pages));
            w.truncate(MAX_WINDOWS_PER_DOMAIN);
        }
    }

    /// Tracks at most `max_unflushed` ranges; pages are `1 << page_lg2` bytes.
    pub(super) fn new(max_unflushed: usize, page_lg2: u32) -> Self {
        Self {
            unflushed: BTreeMap::new(),
            unflushed_seq: 0,
            unflushed_max_pages: 0,
            flush_events_seen: false,
            max_unflushed,
            page_lg2,
            windows: BTreeMap::new(),
            cookies: Vec::new(),
        }
    }

    /// `fq_flush_iotlb(cookie)` at `ts_ns`: the flush queue flushed its
    /// domain's whole IOTLB (SMMUv3 and AMD have no flush tracepoints, so
    /// this kprobe is their flush source). The cookie is not the domain
    /// pointer: it is tied, once, to the domain with the oldest unflushed
    /// unmap, since a queue is flushed a fixed delay after its first entry.
    pub(super) fn fq_flushed(&mut self, domains: &mut Domains, summary: &mut Summary, ts_ns: u64, cookie: Option<u64>) {
        self.flush_events_seen = true;
        let known = cookie.and_then(|c| self.cookies.iter().find(|k| k.0 == c)).map(|k| domains.root_ro(k.1));
        let slot = match known {
            Some(s) => Some(s),
            None => {
                let taken: Vec<usize> = self.cookies.iter().map(|k| domains.root_ro(k.1)).collect();
                let oldest = self
                    .unflushed
                    .values()
                    .filter(|u| !taken.contains(&domains.root_ro(u.slot)))
                    .min_by_key(|u| u.unmap_ns)
                    .map(|u| domains.root_ro(u.slot));
                if let (Some(c), Some(s)) = (cookie, oldest) {
                    if self.cookies.len() < MAX_COOKIES {
                        self.cookies.push((c, s));
                    }
                }
                oldest
            }
        };
        if let Some(s) = slot {
            self.flushed(domains, summary, ts_ns, Some(s), None);
        }
    }

    /// `free_iova_fast(iovad, pfn, pages)` at `ts_ns`: IOVAs `[pfn, pfn +
    /// pages)` (in granules; the DMA layer's granule is the CPU page here)
    /// went back to the allocator, which the flush queue does only after the
    /// IOTLB flush that covered them: their exposure window is over. The
    /// `iova_domain` is not tied to a domain, so ranges of every domain
    /// inside it end (an early end shortens a window, never invents one).
    pub(super) fn iova_freed(
        &mut self,
        domains: &mut Domains,
        summary: &mut Summary,
        ts_ns: u64,
        pfn: u64,
        pages: u64,
    ) {
        self.flush_events_seen = true;
        let shift = self.page_lg2;
        let Some(lo) = pfn.checked_shl(shift).filter(|&lo| lo >> shift == pfn) else { return };
        let len = pages.max(1).checked_shl(shift).filter(|&l| l >> shift == pages.max(1)).unwrap_or(u64::MAX);
        let hi = lo.saturating_add(len - 1);
        self.flushed(domains, summary, ts_ns, None, Some((lo, hi)));
    }

    /// An IOTLB flush event (VT-d range or whole-domain flush) was seen.
    pub(super) fn flush_event_seen(&mut self) {
        self.flush_events_seen = true;
    }

    /// The mappings `gone` of domain `slot` left the page table at `ts_ns`
    /// and stay in the IOTLB until a flush. Until a flush event shows up
    /// (or the domain has a VT-d id, which flushes are traced for), only a
    /// bounded sample is kept.
    pub(super) fn unmapped(&mut self, slot: usize, did_known: bool, gone: &[ShadowMapping], ts_ns: u64) {
        let cap = if self.flush_events_seen || did_known { self.max_unflushed } else { MAX_UNFLUSHED_BEFORE_FLUSH };
        if self.unflushed.len() >= cap {
            return;
        }
        let page_lg2 = self.page_lg2;
        for m in gone {
            let first = m.phys.get() >> page_lg2;
            let last = m.phys.get().saturating_add(m.len() - 1) >> page_lg2;
            self.unflushed_seq += 1;
            self.unflushed_max_pages = self.unflushed_max_pages.max(last - first + 1);
            self.unflushed.insert(
                (first, self.unflushed_seq),
                Unflushed { slot, iova: m.iova, pfn_last: last, unmap_ns: ts_ns, first_free_ns: None },
            );
        }
    }

    /// An IOTLB flush at `ts_ns` of domain `slot` (every domain when
    /// `None`), of IOVAs `[lo, hi]` (the whole domain when `None`).
    pub(super) fn flushed(
        &mut self,
        domains: &mut Domains,
        summary: &mut Summary,
        ts_ns: u64,
        slot: Option<usize>,
        iova: Option<(u64, u64)>,
    ) {
        if self.unflushed.is_empty() {
            return;
        }
        let mut slot = slot.map(|s| domains.find(s));
        if let (Some(d), None) = (slot, iova) {
            let r = self.link_flushed_did(domains, summary, d);
            domains.slot_mut(r).flush_queue = true;
            slot = Some(r);
        }
        let mut done = Vec::new();
        for (k, u) in &self.unflushed {
            let same = slot.is_none_or(|s| domains.root_ro(u.slot) == s);
            let inside = iova.is_none_or(|(lo, hi)| u.iova.start().get() >= lo && u.iova.last().get() <= hi);
            if same && inside {
                done.push(*k);
            }
        }
        for k in done {
            if let Some(u) = self.unflushed.remove(&k) {
                let root = domains.root_ro(u.slot);
                if !domains.slot(root).flush_queue {
                    continue;
                }
                if let Some(f) = u.first_free_ns {
                    let e = &mut summary.exposure;
                    e.longest_ns = e.longest_ns.max(ts_ns.saturating_sub(f));
                    self.window(root, f, ts_ns, u.pfn_last.saturating_sub(k.0).saturating_add(1));
                }
            }
        }
        // A whole-domain flush: the frees held for this domain were exposure.
        if let (Some(s), None) = (slot, iova) {
            let page_lg2 = self.page_lg2;
            let held = std::mem::take(&mut domains.slot_mut(s).held);
            let e = &mut summary.exposure;
            for (pages, at) in held {
                e.frees += 1;
                e.pages += pages;
                e.bytes += pages << page_lg2;
                e.longest_ns = e.longest_ns.max(ts_ns.saturating_sub(at));
                self.window(s, at, ts_ns, pages);
            }
        } else if let Some(s) = slot {
            // A range flush (strict): what was held up to now was not lazy exposure.
            domains.slot_mut(s).held.clear();
        }
    }

    /// A whole-domain flush for a VT-d domain id not yet tied to a domain
    /// (the capture started after the devices attached). The flush queue
    /// flushes a domain a fixed delay after the first unmap it queued, so
    /// the id belongs to the domain with the oldest unflushed unmap.
    fn link_flushed_did(&self, domains: &mut Domains, summary: &mut Summary, d: usize) -> usize {
        let did_only = {
            let s = domains.slot(d);
            s.ptrs.is_empty() && s.devices.is_empty() && !s.anonymous
        };
        if !did_only || self.unflushed.values().any(|u| domains.root_ro(u.slot) == d) {
            return d;
        }
        let oldest = self
            .unflushed
            .values()
            .filter(|u| {
                let r = domains.root_ro(u.slot);
                let s = domains.slot(r);
                s.dids.is_empty() && !s.anonymous
            })
            .min_by_key(|u| u.unmap_ns)
            .map(|u| u.slot);
        match oldest {
            Some(c) => {
                summary.dids_linked_by_flush += 1;
                domains.union(c, d)
            }
            None => d,
        }
    }

    /// Pages `[first, first + n)` were freed at `ts_ns`: those inside
    /// unflushed ranges are exposure.
    pub(super) fn freed(&mut self, domains: &mut Domains, exposure: &mut Exposure, ts_ns: u64, first: u64, n: u64) {
        if self.unflushed.is_empty() {
            return;
        }
        let last = first.saturating_add(n - 1);
        let lo = first.saturating_sub(self.unflushed_max_pages);
        let page_lg2 = self.page_lg2;
        // Pages of the freed block inside unflushed ranges, per domain, each
        // counted once. Flush-queue domains count now; for other domains the
        // free is held until a whole-domain flush tells what they are.
        let mut spans: Vec<(usize, u64, u64)> = Vec::new();
        for (&(ufirst, _), u) in self.unflushed.range_mut((lo, 0)..=(last, u64::MAX)) {
            let a = first.max(ufirst);
            let b = last.min(u.pfn_last);
            if a <= b {
                u.first_free_ns.get_or_insert(ts_ns);
                spans.push((domains.root_ro(u.slot), a, b));
            }
        }
        if spans.is_empty() {
            return;
        }
        spans.sort_unstable();
        let mut per_domain: Vec<(usize, u64)> = Vec::new();
        let mut cur: Option<(usize, u64, u64)> = None;
        let close = |c: (usize, u64, u64), out: &mut Vec<(usize, u64)>| match out.last_mut() {
            Some((d, n)) if *d == c.0 => *n += c.2 - c.1 + 1,
            _ => out.push((c.0, c.2 - c.1 + 1)),
        };
        for (d, a, b) in spans {
            cur = match cur {
                Some((cd, ca, cb)) if cd == d && a <= cb.saturating_add(1) => Some((cd, ca, cb.max(b))),
                Some(c) => {
                    close(c, &mut per_domain);
                    Some((d, a, b))
                }
                None => Some((d, a, b)),
            };
        }
        if let Some(c) = cur {
            close(c, &mut per_domain);
        }
        let mut counted = 0u64;
        for (d, pages) in per_domain {
            let slot = domains.slot_mut(d);
            if slot.flush_queue {
                counted += pages;
            } else if slot.held.len() < MAX_HELD_FREES {
                slot.held.push((pages, ts_ns));
            }
        }
        if counted > 0 {
            exposure.frees += 1;
            exposure.pages += counted;
            exposure.bytes += counted << page_lg2;
        }
    }

    /// Domain `s` was freed: its unflushed ranges go with it.
    pub(super) fn forget_domain(&mut self, s: usize) {
        self.unflushed.retain(|_, u| u.slot != s);
    }

    /// The capture ended at `end_ns`: windows still open count up to the
    /// end; without flush events nothing could be measured.
    pub(super) fn finish(&mut self, domains: &Domains, summary: &mut Summary, end_ns: u64) {
        summary.exposure_measurable = self.flush_events_seen;
        if !self.flush_events_seen {
            // Without IOTLB flush events the window cannot be measured.
            summary.exposure = Exposure::default();
            self.unflushed.clear();
        }
        let mut open = Vec::new();
        for (k, u) in &self.unflushed {
            let root = domains.root_ro(u.slot);
            if !domains.slot(root).flush_queue {
                continue;
            }
            if let Some(f) = u.first_free_ns {
                summary.exposure.longest_ns = summary.exposure.longest_ns.max(end_ns.saturating_sub(f));
                summary.exposure.unflushed_at_end += 1;
                open.push((root, f, u.pfn_last.saturating_sub(k.0).saturating_add(1)));
            }
        }
        for (root, f, pages) in open {
            self.window(root, f, end_ns, pages);
        }
        if !self.flush_events_seen {
            self.windows.clear();
        }
        for (&slot, ws) in &self.windows {
            let root = domains.root_ro(slot);
            let device = domains.slot(root).shadow.device().map(|d| d.to_string());
            let domain = domains.label_ro(root);
            for &(_, freed_ns, flushed_ns, pages) in ws {
                summary.exposure_windows.push(ExposureWindow {
                    device: device.clone(),
                    domain: domain.clone(),
                    freed_ns,
                    flushed_ns,
                    pages,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use iosan_core::{Iova, MapMeta, PhysAddr};

    use super::*;

    fn gone(iova: u64, phys: u64, len: u64) -> Vec<ShadowMapping> {
        let iova = IovaRange::from_start_len(Iova(iova), len).unwrap();
        vec![ShadowMapping { iova, phys: PhysAddr(phys), meta: MapMeta::default() }]
    }

    #[test]
    fn a_free_before_the_flush_is_exposure_in_a_flush_queue_domain() {
        let mut d = Domains::new(0x1000);
        let s = d.did(3);
        d.slot_mut(s).flush_queue = true;
        let (mut lazy, mut sum) = (Lazy::new(1 << 10, 12), Summary::default());
        lazy.flush_event_seen();
        lazy.unmapped(s, true, &gone(0x10_0000, 0x5000_0000, 0x2000), 100);
        lazy.freed(&mut d, &mut sum.exposure, 150, 0x5_0000, 4);
        assert_eq!((sum.exposure.frees, sum.exposure.pages, sum.exposure.bytes), (1, 2, 0x2000));
        lazy.flushed(&mut d, &mut sum, 400, Some(s), None);
        assert_eq!(sum.exposure.longest_ns, 250, "from the free to the flush");
        lazy.finish(&d, &mut sum, 1000);
        assert!(sum.exposure_measurable);
        assert_eq!(sum.exposure.unflushed_at_end, 0);
    }

    #[test]
    fn frees_wait_until_a_whole_domain_flush_shows_the_kind_of_domain() {
        let mut d = Domains::new(0x1000);
        let s = d.did(4);
        let (mut lazy, mut sum) = (Lazy::new(1 << 10, 12), Summary::default());
        lazy.flush_event_seen();
        lazy.unmapped(s, true, &gone(0x10_0000, 0x5000_0000, 0x1000), 100);
        lazy.freed(&mut d, &mut sum.exposure, 150, 0x5_0000, 1);
        assert_eq!(sum.exposure.frees, 0, "held: maybe a strict domain");
        // A range flush: strict, so what was held was no exposure.
        lazy.flushed(&mut d, &mut sum, 200, Some(s), Some((0x10_0000, 0x10_0fff)));
        assert!(d.slot(s).held.is_empty());
        lazy.unmapped(s, true, &gone(0x20_0000, 0x6000_0000, 0x1000), 300);
        lazy.freed(&mut d, &mut sum.exposure, 350, 0x6_0000, 1);
        // A whole-domain flush: the flush queue's; the held free counts.
        lazy.flushed(&mut d, &mut sum, 500, Some(s), None);
        assert!(d.slot(s).flush_queue);
        assert_eq!((sum.exposure.frees, sum.exposure.pages), (1, 1));
    }

    #[test]
    fn without_flush_events_nothing_is_measured() {
        let mut d = Domains::new(0x1000);
        let s = d.ptr(0xfff0);
        d.slot_mut(s).flush_queue = true;
        let (mut lazy, mut sum) = (Lazy::new(1 << 10, 12), Summary::default());
        lazy.unmapped(s, false, &gone(0x10_0000, 0x5000_0000, 0x1000), 100);
        lazy.freed(&mut d, &mut sum.exposure, 150, 0x5_0000, 1);
        lazy.finish(&d, &mut sum, 1000);
        assert!(!sum.exposure_measurable);
        assert_eq!(sum.exposure, Exposure::default());
    }
}
