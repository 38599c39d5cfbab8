//! The end of a capture: what still waits is settled, lazy windows still
//! open are closed at the last timestamp, mappings still live are listed
//! (`mapped-at-end`, informational), and the summary gets its totals.

use iosan_core::FindingKind;

use super::analyzer::Analyzer;
use crate::report::{FindingSink, LiveGroup, Report, Summary, TraceFinding};

impl Analyzer {
    /// Ends the replay and builds the report.
    #[must_use]
    pub fn finish(mut self) -> Report {
        self.close();
        self.findings.into_report(self.summary)
    }

    /// Ends a streaming replay ([`Analyzer::streaming`]): hands the last
    /// findings (what waited, lost-event windows still open, mappings live
    /// at the end) to `sink` and returns the summary.
    pub fn finish_streaming(mut self, sink: &mut dyn FindingSink) -> Summary {
        self.close();
        self.findings.drain(sink);
        self.summary
    }

    /// Settles what still waits and totals the summary.
    fn close(&mut self) {
        for (label, n) in std::mem::take(&mut self.kind_counts) {
            *self.summary.events_by_kind.entry(label).or_insert(0) += n;
        }
        for k in self.seqs.keys() {
            self.finish_seq(k);
        }
        let end = self.summary.last_ns;
        self.lazy.finish(&self.domains, &mut self.summary, end);
        // Lost-event windows (confidence warnings) and live mappings, kept after the loops.
        // A stream already has the windows closed by a later event.
        let mut extra: Vec<TraceFinding> = self
            .lost
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.lost_emitted.get(*i).copied().unwrap_or(false))
            .map(|(_, w)| w.finding())
            .collect();
        // Live mappings at the end, grouped by domain.
        let page_lg2 = self.page_lg2();
        let mut groups: Vec<LiveGroup> = Vec::new();
        for i in 0..self.domains.len() {
            if !self.domains.is_root(i) || self.domains.slot(i).shadow.is_empty() {
                continue;
            }
            let slot = self.domains.slot(i);
            let device = slot.shadow.device().map(|d| d.to_string());
            let domain = self.domains.label(i);
            let mut g = LiveGroup {
                device: device.clone(),
                domain: domain.clone(),
                attribution: slot.via,
                mappings: 0,
                bytes: 0,
            };
            for m in slot.shadow.iter() {
                g.mappings += 1;
                g.bytes = g.bytes.saturating_add(m.len());
                let mut f = TraceFinding::blank(FindingKind::MappedAtEnd);
                f.pfn = Some(m.phys.get() >> page_lg2);
                f.npages = m.len().div_ceil(1 << page_lg2);
                f.phys = Some(m.phys.get());
                f.iova = Some(m.iova.start().get());
                f.size = m.len();
                f.device = device.clone();
                f.domain = domain.clone();
                f.attribution = slot.via;
                f.layer = slot.layer;
                f.time_ns = end;
                f.mapped_at = Some(self.tasks.site(m.meta));
                extra.push(f);
            }
            groups.push(g);
        }
        for f in extra {
            self.findings.push(f);
        }
        let s = &mut self.summary;
        s.live_at_end = groups;
        s.domains = self.domains.identified();
        s.anonymous_space_used = self.domains.anonymous_used();
        s.merges_refused = self.domains.merges_refused();
        s.domains_over_cap = self.domains.over_cap_count();
        let st = self.san.stats();
        s.identity_pages_freed = st.identity_pages_freed + st.identity_pages_allocated;
        s.untracked_bytes = st.untracked_bytes;
        s.counter_bytes = st.counter_bytes;
        s.lost_windows = self.lost.clone();
        s.mode = if s.lazy_evidence > 0 {
            "lazy"
        } else if s.strict_evidence > 0 || s.unmaps_by.did > 0 {
            "strict"
        } else {
            "unknown"
        };
        s.findings_dropped = self.findings.dropped();
        s.dma_allocs_unchecked += self.dma.pending_allocs();
        s.dma_direct = !self.iommu_map_seen && s.dma_direct_maps > 0 && s.dma_translated_maps == 0;
    }
}
