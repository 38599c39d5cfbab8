//! Failed maps: what the kernel rolled back is not mapped.
//!
//! When the IOMMU driver fails part-way through a map, the map entry point
//! (`__iommu_map` up to 6.x, `iommu_map_nosync` in 7.x) unmaps the part it
//! had mapped itself, with `iommu_unmap(domain, iova, mapped)`, before it
//! returns the error. What the trace shows differs by kernel:
//!
//! - 6.x emits `iommu:map` only on success: a failed map shows as the
//!   roll-back's `iommu:unmap` inside the open map call (between the map
//!   kprobe and its return), of a range nothing traced as mapped;
//! - 7.x emits `iommu:map` with the part mapped (possibly 0 bytes), then
//!   the roll-back's `iommu:unmap` of that part.
//!
//! Nothing of a failed map stays mapped, so the roll-back is not a double
//! unmap and a zero-size `iommu:map` of a failed map is not a caller's
//! invalid argument; a later free of its pages is no finding. Each failed
//! map the capture shows is one informational `map-failed` finding. With
//! the map return kprobe, the call's error says so; without it, a
//! zero-size map followed at once by a zero-size unmap at its IOVA is the
//! 7.x shape of a map that failed before mapping anything.

use iosan_core::{FindingKind, IovaRange, MapMeta};

use super::analyzer::Analyzer;
use super::sequence::{Item, MapCall, SeqKey, Unmap};
use crate::record::Record;
use crate::report::TraceFinding;

/// What a failed DMA-API map returns (`~(dma_addr_t)0`, 64-bit).
pub(super) const DMA_MAPPING_ERROR: u64 = u64::MAX;

impl Analyzer {
    /// The map kprobe: a map call opens on `key`.
    pub(super) fn map_call_opened(&mut self, key: SeqKey, domain: u64, iova: u64, size: u64) {
        self.flush_zero_map(key);
        let seq = self.seqs.get(key);
        seq.map_call = Some(MapCall { domain, iova, size, traced: None, rolled_back: None });
        seq.map_failed_said = false;
    }

    /// `iommu:map` of `range` in domain `slot` (if known) on `key`: the
    /// open call's, when it starts there.
    pub(super) fn map_call_traced(&mut self, key: SeqKey, range: IovaRange, slot: Option<usize>) {
        if let Some(c) = self.seqs.get(key).map_call.as_mut().filter(|c| c.iova == range.start().get()) {
            c.traced = Some((range, slot));
        }
    }

    /// A zero-size `iommu:map` at `iova` with its `invalid-map-args`
    /// finding `f`: held when a failed map may explain it (a map call is
    /// open there, or no kprobe says either way); given back when not.
    pub(super) fn hold_zero_map(&mut self, key: SeqKey, iova: u64, f: TraceFinding) -> Option<TraceFinding> {
        self.flush_zero_map(key);
        let seq = self.seqs.get(key);
        if seq.map_call.is_some_and(|c| c.iova != iova) {
            return Some(f);
        }
        seq.zero_map = Some((iova, Box::new(f)));
        self.seqs.zero_maps_held += 1;
        None
    }

    /// A held zero-size map turned out to be no failed map: its finding stands.
    pub(super) fn flush_zero_map(&mut self, key: SeqKey) {
        if self.seqs.zero_maps_held == 0 {
            return;
        }
        let Some(seq) = self.seqs.existing(key) else { return };
        if let Some((_, f)) = seq.zero_map.take() {
            self.seqs.zero_maps_held = self.seqs.zero_maps_held.saturating_sub(1);
            self.findings.push(*f);
        }
    }

    /// `iommu:unmap` (`iova`, `size`, `unmapped`) on `key`: true when it is
    /// the roll-back of a failed map that nothing traced as mapped (6.x,
    /// or 7.x's zero-size shape), which changes no shadow and no count.
    pub(super) fn rollback_of_failed_map(
        &mut self,
        ctx: &Record,
        key: SeqKey,
        iova: u64,
        size: u64,
        unmapped: u64,
    ) -> bool {
        let seq = self.seqs.get(key);
        if size == 0 && seq.zero_map.as_ref().is_some_and(|(at, _)| *at == iova) {
            seq.zero_map = None;
            self.seqs.zero_maps_held = self.seqs.zero_maps_held.saturating_sub(1);
            match self.seqs.get(key).map_call.as_mut() {
                // The return kprobe says how it failed.
                Some(c) => c.rolled_back = Some(0),
                None => {
                    let note = "mapped 0 bytes and unmapped them again: how 7.x traces a map that failed \
                                before mapping anything"
                        .to_string();
                    self.failed_map_finding(ctx, None, iova, None, note);
                    self.seqs.get(key).map_failed_said = true;
                }
            }
            return true;
        }
        let seq = self.seqs.get(key);
        let Some(c) = seq.map_call.as_mut() else { return false };
        // `iommu_unmap(domain, iova, mapped)`: the call's start, at most its size.
        if c.iova != iova || size > c.size || c.rolled_back.is_some() {
            return false;
        }
        c.rolled_back = Some(unmapped);
        // 7.x traced the part mapped: it is in the shadow, and this unmap removes it.
        c.traced.is_none()
    }

    /// The map return kprobe with `ret` on `key`: the open call ends; an
    /// error makes it a failed map.
    pub(super) fn map_call_returned(&mut self, ctx: &Record, key: SeqKey, ret: i64) {
        let Some(c) = self.seqs.get(key).map_call.take() else { return };
        if ret >= 0 {
            self.flush_zero_map(key);
            return;
        }
        if let Some(seq) = self.seqs.existing(key) {
            if seq.zero_map.take().is_some() {
                self.seqs.zero_maps_held = self.seqs.zero_maps_held.saturating_sub(1);
            }
        }
        let slot = self.domains.ptr(c.domain);
        let mut note = format!("the map of {} bytes at {:#x} failed with error {ret}", c.size, c.iova);
        match (c.traced, c.rolled_back) {
            (_, Some(n)) => note.push_str(&format!("; the kernel unmapped the {n} bytes it had mapped")),
            (Some((range, s)), None) => {
                // The kernel unmaps a failed map's part itself; its unmap was not traced.
                note.push_str("; its traced part was counted down: the kernel unmaps it, though no unmap was traced");
                if let Some(s) = s {
                    let len = range.len().unwrap_or(u64::MAX);
                    let u = Unmap {
                        iova: range.start(),
                        size: len,
                        unmapped: len,
                        ts_ns: ctx.ts_ns,
                        line: ctx.origin.line,
                        meta: MapMeta::default(),
                    };
                    self.apply_unmap(s, u, true);
                }
            }
            (None, None) => note.push_str("; nothing of it was mapped"),
        }
        self.failed_map_finding(ctx, Some(slot), c.iova, Some(c.size), note);
        self.seqs.get(key).map_failed_said = true;
    }

    /// A DMA-API map of `dev` that failed: `dma_map_page` or
    /// `dma_map_resource` returned `DMA_MAPPING_ERROR`, or `dma_map_sg_err`
    /// (`err`). Nothing of it is mapped, and nothing is recorded: its DMA
    /// address says nothing of the machine either. On a kernel without the
    /// map kprobes this is the only sign of a failed map; the IOMMU's
    /// roll-back unmap, if it had mapped part, comes just before in the
    /// same call.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dma_map_failed(
        &mut self,
        ctx: &Record,
        key: SeqKey,
        dev: usize,
        what: &str,
        size: u64,
        phys: Option<u64>,
        err: Option<i64>,
    ) {
        if let Some(seq) = self.seqs.existing(key) {
            if std::mem::take(&mut seq.map_failed_said) {
                return;
            }
        }
        let mut note = match (err, phys) {
            (Some(e), Some(p)) => format!("{what} of the list from phys {p:#x} failed with error {e}"),
            (Some(e), None) => format!("{what} failed with error {e}"),
            (None, Some(p)) => format!("{what} of {size} bytes at phys {p:#x} returned DMA_MAPPING_ERROR"),
            (None, None) => format!("{what} of {size} bytes returned DMA_MAPPING_ERROR"),
        };
        note.push_str(": nothing of it stays mapped");
        let rollback = self.seqs.existing(key).and_then(|s| {
            s.items.iter().rev().find_map(|i| match i {
                Item::Unmap { u, slot: None } => Some((u.iova, u.unmapped)),
                _ => None,
            })
        });
        if let Some((iova, n)) = rollback {
            note.push_str(&format!(
                "; the unmap of {n} bytes at {:#x} just before, in the same call, is the kernel's roll-back of what it had mapped",
                iova.get()
            ));
        }
        let slot = self.domains.find(dev);
        self.failed_map_finding(
            ctx,
            Some(slot),
            rollback.map_or(DMA_MAPPING_ERROR, |(i, _)| i.get()),
            Some(size),
            note,
        );
    }

    /// The informational finding of a failed map at `iova` (`size` asked, when known).
    fn failed_map_finding(&mut self, ctx: &Record, slot: Option<usize>, iova: u64, size: Option<u64>, note: String) {
        let comm = self.tasks.known(ctx.pid).cloned().unwrap_or_else(|| String::from_utf8_lossy(ctx.comm).into());
        let mut f = TraceFinding::at(FindingKind::MapFailed, ctx, comm);
        f.iova = Some(iova);
        f.size = size.unwrap_or(0);
        if let Some(s) = slot {
            f.device = self.domains.slot(s).shadow.device().map(|d| d.to_string());
            f.domain = self.domains.label(s);
            f.attribution = self.domains.slot(s).via;
        }
        f.note = Some(note);
        self.findings.push(f);
    }
}
