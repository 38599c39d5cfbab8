//! Page checks: `mm_page_free` and `mm_page_alloc` against the counters,
//! and the findings they give, one per run of pages with the same cause.
//!
//! Before a check, unmaps still waiting for their domain that could concern
//! the pages are settled (the traced free came after such an unmap
//! returned). Each page is blamed on its earliest-mapped covering mapping;
//! a later free of pages under the same mapping is a follow-up of the first
//! finding, not a new one.

use iosan_core::{Finding, FindingKind, Iova, IovaRange, Mapping, Pfn};

use super::analyzer::Analyzer;
use crate::record::Record;
use crate::report::{Attribution, Doubt, FollowUp, MappingView, TraceFinding};

impl Analyzer {
    /// Pages `[pfn, pfn + 2^order)` were freed (`FreedWhileMapped`) or allocated.
    pub(super) fn check(&mut self, ctx: &Record, kind: FindingKind, pfn: u64, order: u32) {
        let n = 1u64.checked_shl(order).unwrap_or(u64::MAX);
        if kind == FindingKind::FreedWhileMapped {
            self.lazy.freed(&mut self.domains, &mut self.summary.exposure, ctx.ts_ns, pfn, n.max(1));
        }
        // A pending unmap elsewhere may concern these pages: settle such sequences first.
        // (The traced free happens after such an unmap returned.) Only those
        // unmaps are settled; the rest of their sequences keeps waiting.
        if self.summary.unmaps_pending == 0 {
            self.seqs.clear_pending();
        }
        self.settle_waiting_unmaps(|a, u| a.unmap_touches(u.iova, u.size.max(u.unmapped), pfn, n.max(1)));
        let found = {
            let src = self.domains.source();
            match kind {
                FindingKind::FreedWhileMapped => self.san.check_free(Pfn(pfn), order, &src),
                _ => self.san.check_alloc(Pfn(pfn), order, &src),
            }
        };
        for f in found {
            self.page_finding(ctx, f);
        }
    }

    /// Could an unattributed unmap of `[iova, iova + size)` remove a
    /// translation of pages `[pfn, pfn + n)` in any domain, or of a map
    /// still waiting for its domain in another sequence? (Linux 7.x's DMA
    /// IOVA API maps with no `dma:*` event: without kprobes such a map waits
    /// while its unmap waits in an interrupt's sequence.)
    fn unmap_touches(&self, iova: Iova, size: u64, pfn: u64, n: u64) -> bool {
        let Some(range) = IovaRange::from_start_len(iova, size.max(1)) else { return false };
        let page_lg2 = self.page_lg2();
        let last = pfn.saturating_add(n - 1);
        if self.summary.maps_pending != 0 && self.seqs.waiting_map_touches(range, pfn, last, page_lg2) {
            return true;
        }
        self.domains.iter().any(|s| {
            !s.shadow.is_empty()
                && s.shadow.overlapping(range).any(|m| {
                    let a = m.phys.get() >> page_lg2;
                    let b = m.phys.get().saturating_add(m.len() - 1) >> page_lg2;
                    a <= last && b >= pfn
                })
        })
    }

    fn page_finding(&mut self, ctx: &Record, f: Finding) {
        let (Some(pfn), true) = (f.pfn, f.npages > 0) else {
            let tf = self.plain(ctx, f);
            self.findings.push(tf);
            return;
        };
        let page_lg2 = self.page_lg2();
        // Assign each page to its earliest-mapped covering mapping, then group runs.
        let mut runs: Vec<(u64, u64, Option<usize>)> = Vec::new();
        for p in pfn.get()..pfn.get().saturating_add(f.npages) {
            let phys = p << page_lg2;
            let cause = f
                .mappings
                .iter()
                .enumerate()
                .filter(|(_, m)| phys >= m.phys.get() && phys - m.phys.get() < m.len)
                .min_by_key(|(_, m)| m.meta.when)
                .map(|(i, _)| i);
            match runs.last_mut() {
                Some((_, n, c)) if *c == cause => *n += 1,
                _ => runs.push((p, 1, cause)),
            }
        }
        for (first, npages, cause) in runs {
            let m = cause.and_then(|i| f.mappings.get(i)).cloned();
            let key = m.as_ref().map(|m| (self.domains.find(m.domain.0 as usize), m.iova.get(), m.meta.when));
            if let Some(key) = key {
                let task = format!("{}-{}", self.tasks.comm(ctx), ctx.pid);
                let up = FollowUp { kind: f.kind, time_ns: ctx.ts_ns, task, pfn: first, npages };
                if self.findings.follow_up(key, first, npages, up, self.opts.max_follow_ups) {
                    continue;
                }
            }
            let mut tf = TraceFinding::at(f.kind, ctx, self.tasks.comm(ctx));
            tf.pfn = Some(first);
            tf.npages = npages;
            tf.phys = first.checked_shl(page_lg2);
            tf.count = f.count;
            tf.mappings = f.mappings.iter().map(|m| self.mapping_view(m)).collect();
            tf.freed_by = Some(self.tasks.event_site(ctx));
            match &m {
                Some(m) => {
                    let s = self.domains.find(m.domain.0 as usize);
                    tf.device = m.device.as_ref().map(|d| d.to_string());
                    tf.domain = self.domains.label(s);
                    tf.attribution = self.domains.slot(s).via;
                    tf.layer = self.domains.slot(s).layer;
                    tf.iova = Some(m.iova.get().wrapping_add((first << page_lg2).wrapping_sub(m.phys.get())));
                    tf.size = npages << page_lg2;
                    tf.mapped_at = Some(self.tasks.site(m.meta));
                    // In the anonymous space, only an unmap given to a domain by a guess
                    // could have left this mapping behind by mistake.
                    let anon_doubt = self.domains.slot(s).anonymous && self.summary.unmaps_by.ambiguous > 0;
                    tf.set_doubt(if self.lost_between(m.meta.when, ctx.ts_ns) {
                        Some(Doubt::LostEvents)
                    } else if anon_doubt {
                        Some(Doubt::Attribution)
                    } else {
                        None
                    });
                }
                None => {
                    tf.attribution = Attribution::Anonymous;
                    tf.set_doubt(Some(Doubt::Attribution));
                    tf.note = Some("counted as mapped but no mapping was found for it (attribution lost)".into());
                }
            }
            self.findings.push_episode(tf, key);
        }
    }

    fn mapping_view(&self, m: &Mapping) -> MappingView {
        MappingView {
            domain: self.domains.label_ro(m.domain.0 as usize),
            device: m.device.as_ref().map(|d| d.to_string()),
            iova: m.iova.get(),
            phys: m.phys.get(),
            len: m.len,
            mapped_at: self.tasks.site(m.meta),
            unmapped_ns: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{analyze, AnalyzeOptions};

    /// Linux 7.x's DMA IOVA API (`dma_iova_link`, NVMe) maps with no
    /// `dma:*` event. Without kprobes, once a `dma:*` event made domains
    /// identifiable, such a map waits for an identity in its task's
    /// sequence while its unmap waits in the completion interrupt's. A free
    /// of the page must settle both first: nothing is mapped any more.
    #[test]
    fn a_free_settles_an_unmap_whose_map_still_waits_in_another_sequence() {
        let text = "\
 t-1 [000] ..... 1.000000: map: IOMMU: iova=0x0000000000100000 - 0x0000000000101000 paddr=0x0000000001000000 size=4096
 t-1 [000] ..... 1.000001: dma_map_phys: 0000:00:02.0 dir=BIDIRECTIONAL dma_addr=100000 size=4096 phys_addr=1000000 attrs=
 t-1 [000] ..... 1.000010: map: IOMMU: iova=0x0000000000200000 - 0x0000000000210000 paddr=0x0000000002000000 size=65536
 t-1 [000] d.h1. 1.000020: unmap: IOMMU: iova=0x0000000000200000 - 0x0000000000210000 size=65536 unmapped_size=65536
 t-1 [000] ..... 1.000030: mm_page_free: page=0000000011111111 pfn=0x2003 order=0
";
        let r = analyze(std::io::Cursor::new(text), "t", &AnalyzeOptions::default(), &mut ()).expect("in memory");
        let bugs: Vec<_> = r.findings.iter().filter(|f| f.kind == iosan_core::FindingKind::FreedWhileMapped).collect();
        assert!(bugs.is_empty(), "{bugs:?}");
    }
}
