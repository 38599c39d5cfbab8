//! The lookahead bound: how long a decision may wait for later events.
//!
//! Only one kind of decision waits: an `iommu:unmap` that no kprobe or
//! device named yet stays in its call sequence, in case a `dma:*` event or
//! VT-d flush of the same call names its domain (`attribute`). Its
//! findings (a double unmap, an unmap of unmapped pages) are decided when
//! it is attributed. Normally the call's next event does that within
//! microseconds, or the sequence ends; but a task that keeps running on one
//! CPU keeps its sequence open. So an unattributed unmap waits at most
//! [`LOOKAHEAD_NS`] of trace time (the newest timestamp seen, any CPU) or
//! about [`LOOKAHEAD_EVENTS`] events, whichever comes first; then it is
//! attributed by content as at the end of its sequence. Page findings,
//! map findings, DMA-API and teardown findings are decided at their event.
//! Lost-event warnings are decided at the first event after the loss on
//! that CPU; mappings live at the end, at the end.

use super::analyzer::Analyzer;
use super::sequence::{Item, Unmap};

/// Trace time an unattributed unmap waits for its call to name its domain, ns.
pub const LOOKAHEAD_NS: u64 = 100_000_000;
/// Events after which an unattributed unmap seen before the previous sweep is settled.
pub const LOOKAHEAD_EVENTS: u64 = 1 << 16;
/// Trace time between sweeps, ns.
const SWEEP_EVERY_NS: u64 = LOOKAHEAD_NS / 10;

impl Analyzer {
    /// Settles unattributed unmaps that waited past the lookahead (called per event).
    pub(super) fn sweep_lookahead(&mut self) {
        let now = self.summary.last_ns;
        let events = self.summary.events_read;
        let by_time = now >= self.sweep.next_ns;
        let by_events = events >= self.sweep.next_events;
        if !by_time && !by_events {
            return;
        }
        let mut before = now.saturating_sub(LOOKAHEAD_NS);
        if by_events {
            // Everything already waiting at the previous count sweep has waited long enough.
            before = before.max(self.sweep.mark_ns);
            self.sweep.mark_ns = now;
            self.sweep.next_events = events.saturating_add(LOOKAHEAD_EVENTS);
        }
        self.sweep.next_ns = now.saturating_add(SWEEP_EVERY_NS);
        if self.summary.unmaps_pending > 0 {
            self.settle_unmaps_before(before);
        }
    }

    /// Settles every decision still waiting for later events, as if the
    /// lookahead had passed: for a live trace that went idle, so what was
    /// read is reported without waiting for more.
    pub fn settle_pending(&mut self) {
        if self.summary.unmaps_pending > 0 {
            self.settle_unmaps_before(u64::MAX);
        }
    }

    /// Attributes by content the waiting unmaps at or before `before_ns`;
    /// the rest of their sequences keeps waiting.
    fn settle_unmaps_before(&mut self, before_ns: u64) {
        self.settle_waiting_unmaps(|_, u| u.ts_ns <= before_ns);
    }

    /// Attributes by content, in every sequence that waits, the
    /// unattributed unmaps `pick` chooses; the rest of their sequences keeps
    /// waiting, in order.
    pub(super) fn settle_waiting_unmaps(&mut self, pick: impl Fn(&Self, &Unmap) -> bool) {
        let picked = |a: &Self, i: &Item| matches!(i, Item::Unmap { u, slot: None } if pick(a, u));
        for k in self.seqs.pending() {
            let Some(seq) = self.seqs.existing(k) else { continue };
            if seq.items.waiting_unmaps() == 0 {
                continue;
            }
            let items = seq.items.take();
            let (chosen, rest): (Vec<Item>, Vec<Item>) = if items.iter().any(|i| picked(self, i)) {
                items.into_iter().partition(|i| picked(self, i))
            } else {
                (Vec::new(), items)
            };
            if let Some(seq) = self.seqs.existing(k) {
                seq.items.set(rest);
            }
            for it in chosen {
                if let Item::Unmap { u, .. } = it {
                    self.summary.unmaps_pending = self.summary.unmaps_pending.saturating_sub(1);
                    self.resolve_unmap_by_content(u);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::replay::{Analyzer, Options};
    use crate::report::{FindingSink, TraceFinding};
    use crate::source::text::TextSource;
    use crate::source::Source;

    #[derive(Default)]
    struct Seen(Vec<(u64, String)>);
    impl FindingSink for Seen {
        fn finding(&mut self, id: u64, f: &TraceFinding) {
            self.0.push((id, f.kind.name().to_string()));
        }
    }

    /// Feeds `text` to a streaming analyzer, draining after every record.
    fn stream(text: &str) -> (Analyzer, Seen) {
        let mut an = Analyzer::streaming(Options::default());
        let mut seen = Seen::default();
        for line in text.lines() {
            let mut src = TextSource::new(line.as_bytes(), 1 << 20);
            src.run(&mut an, &mut ()).unwrap();
            an.drain_findings(&mut seen);
        }
        (an, seen)
    }

    // A dma:* event makes domains identifiable, so a later bare unmap waits;
    // the same task keeps its sequence open with page events.
    const HEAD: &str = "\
 t-1 [000] ..... 1.000000: map: IOMMU: iova=0x0000000000100000 - 0x0000000000101000 paddr=0x0000000001000000 size=4096
 t-1 [000] ..... 1.000001: dma_map_page: 0000:00:02.0 dir=BIDIRECTIONAL dma_addr=100000 size=4096 phys_addr=1000000 attrs=
 t-1 [001] ..... 1.000010: unmap: IOMMU: iova=0x0000000000200000 - 0x0000000000201000 size=4096 unmapped_size=0
";

    #[test]
    fn a_waiting_unmap_is_decided_once_trace_time_passes_the_lookahead() {
        let near = format!("{HEAD} t-1 [001] ..... 1.050000: mm_page_alloc: page=0000000011111111 pfn=0x9000 order=0 migratetype=0 gfp_flags=GFP_KERNEL\n");
        let (_, seen) = stream(&near);
        assert!(seen.0.is_empty(), "decided before the lookahead: {:?}", seen.0);
        let far = format!("{near} t-1 [001] ..... 1.200000: mm_page_alloc: page=0000000011111112 pfn=0x9001 order=0 migratetype=0 gfp_flags=GFP_KERNEL\n");
        let (_, seen) = stream(&far);
        assert_eq!(seen.0, vec![(1, "double-unmap".to_string())]);
    }

    #[test]
    fn settle_pending_decides_what_waits() {
        let (mut an, mut seen) = stream(HEAD);
        assert!(seen.0.is_empty());
        an.settle_pending();
        an.drain_findings(&mut seen);
        assert_eq!(seen.0, vec![(1, "double-unmap".to_string())]);
    }
}
