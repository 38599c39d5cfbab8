//! Attribution: which domain a map or unmap belongs to. This is where it is
//! decided.
//!
//! Best first:
//! 1. a kprobe on `__iommu_map`/`__iommu_unmap` just before it in the same
//!    call sequence names the domain pointer ([`Analyzer::on_map`],
//!    [`Analyzer::on_unmap`]);
//! 2. for unmaps, a `dma_unmap_sg`/coherent free that opened the call names
//!    the device;
//! 3. a `dma:*` event that wraps the call (same sequence, IOVA in its range)
//!    names the device, or a VT-d flush names the domain id
//!    ([`Analyzer::resolve`], called as those events arrive);
//! 4. when the sequence ends with items still unattributed
//!    ([`Analyzer::finish_seq`]): maps go to an anonymous IOVA space, and an
//!    unmap goes to the domain whose shadow translates its range
//!    ([`Analyzer::resolve_unmap_by_content`]; the best-ranked of several is
//!    a guess, counted as ambiguous).
//!
//! Page counts do not depend on the domain, so a map is counted at once and
//! its shadow entry waits for the identity; an unmap waits for it whole.

use iosan_core::{DomainId, Finding, Iova, IovaRange, PhysAddr, ShadowDomain};

use super::analyzer::Analyzer;
use super::sequence::{Item, SeqKey, Unmap};
use crate::record::Record;
use crate::report::{Doubt, TraceFinding};

/// What a `dma:*` or VT-d event says about the items of its sequence.
pub(super) enum Resolver<'a> {
    /// VT-d domain (slot) and the flushed IOVAs `[lo, hi]`.
    Did(usize, u64, u64),
    /// Device's domain (slot) and the DMA address ranges `[lo, hi]` of the event.
    Dev(usize, &'a [(u64, u64)]),
}

impl Analyzer {
    /// A kprobe's domain type: DMA-FQ (0xb) means lazy, DMA (3) strict.
    pub(super) fn note_dtype(&mut self, domain: u64, dtype: Option<u64>) {
        if let Some(t) = dtype {
            if t == 0xb {
                self.summary.lazy_evidence += 1;
            } else if t == 3 {
                self.summary.strict_evidence += 1;
            }
            let s = self.domains.ptr(domain);
            let slot = self.domains.slot_mut(s);
            slot.dtype = Some(t);
            slot.flush_queue |= t == 0xb;
        }
    }

    /// `iommu:map`.
    pub(super) fn on_map(&mut self, ctx: &Record, key: SeqKey, iova: u64, paddr: u64, size: u64, stack: &[&[u8]]) {
        let meta = self.tasks.meta(ctx, stack);
        let Some(range) = IovaRange::from_start_len(Iova(iova), size) else {
            let f = self
                .plain(ctx, Finding::invalid(DomainId(u64::MAX), Iova(iova), size, iosan_core::InvalidArgs::ZeroSize));
            // A failed map that mapped nothing may explain it (7.x).
            if let Some(f) = self.hold_zero_map(key, iova, f) {
                self.findings.push(f);
            }
            return;
        };
        // Counts do not depend on the domain: apply them now, attribute the shadow entry when known.
        let probe =
            self.seqs.get(key).kp_map.filter(|&(_, kiova, ksize, _)| iova >= kiova && iova - kiova < ksize.max(1));
        let slot = probe.map(|(dom, ..)| self.domains.ptr(dom));
        self.map_call_traced(key, range, slot);
        let pending = ShadowDomain::new(DomainId(u64::MAX), self.opts.pgsize_bitmap);
        let found =
            self.san.map(DomainId(slot.unwrap_or(usize::MAX) as u64), &pending, Iova(iova), PhysAddr(paddr), size);
        for f in found {
            let tf = self.plain(ctx, f);
            self.findings.push(tf);
        }
        match slot {
            Some(s) => {
                self.summary.maps_by.kprobe += 1;
                self.insert_map(s, range, PhysAddr(paddr), meta);
            }
            None if !self.identity_seen => {
                // Nothing in this capture identified a domain so far: no use waiting.
                // The item stays in its call sequence, so an identity that does come
                // in this call adopts it out of the anonymous space.
                self.summary.maps_by.anonymous += 1;
                let a = self.domains.anon_for(range);
                self.insert_map(a, range, PhysAddr(paddr), meta);
                self.push_item(key, Item::Map { iova: range, phys: PhysAddr(paddr), meta, slot: Some(a) });
                return;
            }
            None => self.summary.maps_pending += 1,
        }
        self.push_item(key, Item::Map { iova: range, phys: PhysAddr(paddr), meta, slot });
    }

    /// Adds an item to a sequence; maps waiting too long for an identity
    /// go to an anonymous space, and a sequence that keeps growing is settled.
    fn push_item(&mut self, key: SeqKey, item: Item) {
        for (iova, phys, meta) in self.seqs.push(key, item) {
            self.summary.maps_pending = self.summary.maps_pending.saturating_sub(1);
            self.summary.maps_by.anonymous += 1;
            let a = self.domains.anon_for(iova);
            self.insert_map(a, iova, phys, meta);
        }
        if self.seqs.prune(key) {
            self.finish_seq(key);
        }
    }

    /// `iommu:unmap` (`iova`, `size` asked, `unmapped` removed).
    pub(super) fn on_unmap(&mut self, ctx: &Record, key: SeqKey, iova: u64, size: u64, unmapped: u64) {
        let meta = self.tasks.meta(ctx, ctx.stack);
        let (probe, sg_dev) = {
            let seq = self.seqs.get(key);
            let p = seq.kp_unmap.take().filter(|&(_, kiova, ..)| kiova == iova);
            (p, seq.unmap_sg_dev.take())
        };
        if self.rollback_of_failed_map(ctx, key, iova, size, unmapped) {
            return;
        }
        let slot = if let Some((dom, ..)) = probe {
            self.summary.unmaps_by.kprobe += 1;
            Some(self.domains.ptr(dom))
        } else if let Some(d) = sg_dev {
            self.summary.unmaps_by.device += 1;
            Some(d)
        } else {
            None
        };
        // An unmap of what this very sequence mapped and has not attributed (a map error path).
        let items = &self.seqs.get(key).items;
        let overlaps_pending = items.waiting_maps() > 0
            && items.iter().any(|it| match it {
                Item::Map { iova: r, slot: None, .. } => r.contains(Iova(iova)),
                _ => false,
            });
        if slot.is_none() && overlaps_pending {
            self.finish_seq(key);
        }
        let u = Unmap { iova: Iova(iova), size, unmapped, ts_ns: ctx.ts_ns, line: ctx.origin.line, meta };
        match slot {
            Some(s) => {
                self.apply_unmap(s, u, false);
                self.push_item(key, Item::Unmap { u, slot: Some(s) });
            }
            None if !self.identity_seen => {
                // Nothing identifies domains in this capture so far: decide now.
                self.resolve_unmap_by_content(u);
            }
            None => {
                self.summary.unmaps_pending += 1;
                if let Some(oldest) = self.seqs.evict_for(key) {
                    self.finish_seq(oldest);
                }
                self.seqs.add_pending(key);
                self.push_item(key, Item::Unmap { u, slot: None });
            }
        }
    }

    /// A `dma:*` event or VT-d flush names the domain of the items of its
    /// sequence in its range: waiting maps (if `maps`) and unmaps (if
    /// `unmaps`) get it; items already attributed are merged with it.
    pub(super) fn resolve(&mut self, key: SeqKey, r: Resolver<'_>, maps: bool, unmaps: bool) {
        let target = match &r {
            Resolver::Did(s, ..) | Resolver::Dev(s, _) => *s,
        };
        // By overlap, not by start: with an IOVA granule larger than the
        // buffer (16 KiB pages), a 4 KiB `dma_map_page` reports a DMA address
        // inside the granule `iommu:map` mapped, and a VT-d flush may start
        // inside a larger mapping.
        let in_range = |a: u64, b: u64| match &r {
            Resolver::Did(_, lo, hi) => a <= *hi && b >= *lo,
            Resolver::Dev(_, ranges) => ranges.iter().any(|&(lo, hi)| a <= hi && b >= lo),
        };
        let via_dev = matches!(r, Resolver::Dev(..));
        let mut items = self.seqs.get(key).items.take();
        if items.is_empty() {
            return;
        }
        // Two buffers that trade places, so that a resolve allocates nothing.
        let mut kept = std::mem::take(&mut self.spare_items);
        kept.clear();
        for it in items.drain(..) {
            match it {
                Item::Map { iova, phys, meta, slot } if maps && in_range(iova.start().get(), iova.last().get()) => {
                    match slot {
                        Some(s) if self.domains.is_anonymous(s) => {
                            // Put in the anonymous space before any identity was seen: adopt it.
                            let a = self.domains.find(s);
                            let here =
                                self.domains.slot(a).shadow.overlapping(iova).any(|m| m.iova == iova && m.meta == meta);
                            if here {
                                self.adopt(a, target, [iosan_core::ShadowMapping { iova, phys, meta }], via_dev);
                            }
                            kept.push(Item::Map { iova, phys, meta, slot: Some(target) });
                        }
                        Some(s) => {
                            // Already attributed: the two identities are one domain.
                            let merged = self.domains.union(s, target);
                            kept.push(Item::Map { iova, phys, meta, slot: Some(merged) });
                        }
                        None => {
                            if via_dev {
                                self.summary.maps_by.device += 1;
                            } else {
                                self.summary.maps_by.did += 1;
                            }
                            self.summary.maps_pending = self.summary.maps_pending.saturating_sub(1);
                            self.insert_map(target, iova, phys, meta);
                            kept.push(Item::Map { iova, phys, meta, slot: Some(target) });
                        }
                    }
                }
                Item::Unmap { u, slot }
                    if unmaps
                        && in_range(u.iova.get(), u.iova.get().saturating_add(u.size.max(u.unmapped).max(1) - 1)) =>
                {
                    match slot {
                        Some(s) => {
                            let merged = self.domains.union(s, target);
                            kept.push(Item::Unmap { u, slot: Some(merged) });
                        }
                        None => {
                            if via_dev {
                                self.summary.unmaps_by.device += 1;
                            } else {
                                self.summary.unmaps_by.did += 1;
                            }
                            self.summary.unmaps_pending = self.summary.unmaps_pending.saturating_sub(1);
                            self.adopt_for_unmap(target, &u, via_dev);
                            self.apply_unmap(target, u, false);
                            kept.push(Item::Unmap { u, slot: Some(target) });
                        }
                    }
                }
                other => kept.push(other),
            }
        }
        if via_dev {
            // A dma:* event closes its call: what it attributed is done.
            kept.retain(|i| matches!(i, Item::Map { slot: None, .. } | Item::Unmap { slot: None, .. }));
        }
        let seq = self.seqs.get(key);
        kept.append(&mut seq.items.take());
        seq.items.set(kept);
        self.spare_items = items;
    }

    /// An unmap that an identity names, of what the same task on the same
    /// CPU put in the anonymous space (its call sequence was settled before
    /// the identity came: a map, then an unmap of it in one call, then the
    /// VT-d flush): those mappings are that domain's, or the unmap would
    /// count nothing down.
    fn adopt_for_unmap(&mut self, target: usize, u: &Unmap, via_dev: bool) {
        /// The CPU and pid bits of a [`MapMeta`] tag (`Tasks::meta`).
        const WHO: u64 = (1 << 44) - 1;
        let Some(range) = IovaRange::from_start_len(u.iova, u.size.max(u.unmapped).max(1)) else { return };
        let t = self.domains.find(target);
        if self.domains.slot(t).shadow.overlapping(range).next().is_some() {
            return;
        }
        // A map of this range still waiting for its identity in another
        // task's sequence (mapped, then unmapped from the completion
        // interrupt before that call ended): settle it first.
        if self.summary.maps_pending != 0 {
            for k in self.seqs.waiting_maps(range) {
                self.finish_seq(k);
            }
        }
        let t = self.domains.find(target);
        if self.domains.slot(t).shadow.overlapping(range).next().is_some() {
            return;
        }
        let anon: Vec<usize> = (0..self.domains.len())
            .filter(|&i| self.domains.is_root(i) && i != t && self.domains.is_anonymous(i))
            .collect();
        let mut adopted = false;
        for &i in &anon {
            let mine: Vec<_> = self
                .domains
                .slot(i)
                .shadow
                .overlapping(range)
                .filter(|m| m.meta.tag & WHO == u.meta.tag & WHO)
                .collect();
            adopted |= !mine.is_empty();
            self.adopt(i, t, mine, via_dev);
        }
        if adopted || u.unmapped == 0 {
            return;
        }
        // Another task's map (an unmap in the completion interrupt): the
        // mapping that is exactly what the IOMMU removed, when one anonymous
        // layer alone holds one. Left there, the domain's unmap would count
        // nothing down and the page's free would be a false finding.
        let exact = |m: &iosan_core::ShadowMapping| m.iova.start() == u.iova && m.len() == u.unmapped;
        let holders: Vec<(usize, iosan_core::ShadowMapping)> = anon
            .iter()
            .filter_map(|&i| self.domains.slot(i).shadow.overlapping(range).find(exact).map(|m| (i, m)))
            .collect();
        if let [(i, m)] = holders[..] {
            self.adopt(i, t, [m], via_dev);
        }
    }

    /// Moves mappings `ms` of anonymous layer `from` into domain `to`.
    fn adopt(
        &mut self,
        from: usize,
        to: usize,
        ms: impl IntoIterator<Item = iosan_core::ShadowMapping>,
        via_dev: bool,
    ) {
        for m in ms {
            self.domains.slot_mut(from).shadow.unmap(m.iova);
            self.summary.maps_by.anonymous = self.summary.maps_by.anonymous.saturating_sub(1);
            if via_dev {
                self.summary.maps_by.device += 1;
            } else {
                self.summary.maps_by.did += 1;
            }
            self.insert_map(to, m.iova, m.phys, m.meta);
        }
    }

    /// Ends a sequence: what is still unattributed gets its best answer.
    pub(super) fn finish_seq(&mut self, key: SeqKey) {
        self.flush_zero_map(key);
        for it in self.seqs.end(key) {
            match it {
                Item::Map { iova, phys, meta, slot: None } => {
                    self.summary.maps_pending = self.summary.maps_pending.saturating_sub(1);
                    self.summary.maps_by.anonymous += 1;
                    let a = self.domains.anon_for(iova);
                    self.insert_map(a, iova, phys, meta);
                }
                Item::Unmap { u, slot: None } => {
                    self.summary.unmaps_pending = self.summary.unmaps_pending.saturating_sub(1);
                    self.resolve_unmap_by_content(u);
                }
                _ => {}
            }
        }
    }

    /// An unmap nothing attributed: the domain whose shadow translates it.
    pub(super) fn resolve_unmap_by_content(&mut self, u: Unmap) {
        let Unmap { iova, size, unmapped, ts_ns, line, .. } = u;
        let Some(range) = IovaRange::from_start_len(iova, unmapped.max(size).max(1)) else { return };
        // A map still waiting for its identity in another sequence may be the one:
        // let those sequences settle first.
        if self.summary.maps_pending != 0 {
            for k in self.seqs.waiting_maps(range) {
                self.finish_seq(k);
            }
        }
        // Candidates: domains whose shadow translates the range. Best first: a
        // mapping that starts at `iova` with the unmapped size, then one that
        // starts at `iova`, then the most recent.
        let mut candidates: Vec<(usize, (u8, u64))> = Vec::new();
        for i in 0..self.domains.len() {
            // The DMA-API layer is keyed by DMA address, not IOVA: never an unmap's domain.
            if !self.domains.is_root(i) || self.domains.is_dma_layer(i) {
                continue;
            }
            let sh = &self.domains.slot(i).shadow;
            if let Some(m) = sh.overlapping(range).next() {
                let exact = u8::from(m.iova.start() == iova)
                    + u8::from(m.iova.start() == iova && m.len() == size.max(unmapped));
                candidates.push((i, (exact, m.meta.when)));
            }
        }
        if candidates.len() > 1 {
            candidates.sort_by_key(|c| std::cmp::Reverse(c.1));
            // A unique exact match is as good as a single candidate.
            if candidates[0].1 .0 == 2 && candidates[1].1 .0 < 2 {
                candidates.truncate(1);
            }
        }
        if candidates.is_empty() && unmapped == 0 && self.opts.semantics == iosan_core::Semantics::Exact {
            // Nothing left there: maybe an earlier unmap removed it with a whole block.
            let by_block = (0..self.domains.len()).find(|&i| {
                self.domains.is_root(i)
                    && self
                        .domains
                        .slot(i)
                        .block_removed
                        .range(..=range.last().get())
                        .next_back()
                        .is_some_and(|(_, b)| b.last >= iova.get())
            });
            if let Some(i) = by_block {
                self.summary.unmaps_by.content += 1;
                self.apply_unmap(i, u, false);
                return;
            }
        }
        match candidates.len() {
            0 => {
                self.summary.unmaps_by.none += 1;
                self.summary.unmaps_without_translation += 1;
                if unmapped == 0 && size > 0 {
                    // The kernel itself found nothing there: certain, though the domain is not known.
                    let mut f = TraceFinding::blank(iosan_core::FindingKind::DoubleUnmap);
                    f.time_ns = ts_ns;
                    f.line = line;
                    f.iova = Some(iova.get());
                    f.size = size;
                    f.set_doubt(self.lost_between(0, ts_ns).then_some(Doubt::LostEvents));
                    f.note = Some("the IOMMU found nothing mapped (unmapped_size=0); domain unknown".into());
                    self.findings.push(f);
                }
            }
            1 => {
                self.summary.unmaps_by.content += 1;
                self.apply_unmap(candidates[0].0, u, false);
            }
            _ => {
                // Ambiguous: the best-ranked mapping is the likeliest owner.
                self.summary.unmaps_by.ambiguous += 1;
                let best = candidates.first().map_or(0, |c| c.0);
                self.apply_unmap(best, u, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{analyze, AnalyzeOptions};

    /// A domain of a module's own, attached to a device, on VT-d without
    /// kprobes (as in Linux 7.2's `vtd72-lazy` capture): map two halves, an
    /// unmap of the first settles the call's waiting maps into the anonymous
    /// space, then each unmap's flush names domain id 4. The unmaps must
    /// count the anonymous mappings down: nothing is mapped when the block
    /// is freed.
    #[test]
    fn an_unmap_named_by_its_flush_takes_what_its_task_mapped_anonymously() {
        let text = "\
 t-1 [000] ..... 1.000000: map: IOMMU: iova=0x0000000000100000 - 0x0000000000101000 paddr=0x0000000001000000 size=4096
 t-1 [000] ..... 1.000001: dma_map_phys: 0000:00:02.0 dir=BIDIRECTIONAL dma_addr=100000 size=4096 phys_addr=1000000 attrs=
 t-1 [000] ..... 1.000010: cache_tag_assign: dmar0/dmar0 type iotlb did 4 pasid 0 ref 1
 t-1 [000] ..... 1.000011: attach_device_to_domain: IOMMU: device=0000:00:03.0
 t-1 [000] ..... 1.000020: map: IOMMU: iova=0x0000000040000000 - 0x0000000040100000 paddr=0x0000000002000000 size=1048576
 t-1 [000] ..... 1.000021: map: IOMMU: iova=0x0000000040100000 - 0x0000000040200000 paddr=0x0000000002100000 size=1048576
 t-1 [000] ..... 1.000022: unmap: IOMMU: iova=0x0000000040000000 - 0x0000000040100000 size=1048576 unmapped_size=1048576
 t-1 [000] d..1. 1.000023: cache_tag_flush_range: dmar0 dmar0[0] type iotlb did 4 [0x40000000-0x400fffff] addr 0x40000000 mask 0x8
 t-1 [000] ..... 1.000024: unmap: IOMMU: iova=0x0000000040100000 - 0x0000000040200000 size=1048576 unmapped_size=1048576
 t-1 [000] d..1. 1.000025: cache_tag_flush_range: dmar0 dmar0[0] type iotlb did 4 [0x40100000-0x401fffff] addr 0x40100000 mask 0x8
 t-1 [000] ..... 1.000026: mm_page_free: page=0000000011111111 pfn=0x2000 order=9
";
        let r = analyze(std::io::Cursor::new(text), "t", &AnalyzeOptions::default(), &mut ()).expect("in memory");
        let bugs: Vec<_> = r.findings.iter().filter(|f| f.kind.is_bug() || f.pfn == Some(0x2000)).collect();
        assert!(bugs.is_empty(), "{bugs:?}");
        assert_eq!(r.summary.unmaps_by.did, 2);
    }

    /// Linux 7.2 (Debian's, preemptible) can preempt a task between the
    /// `iommu_map_nosync` kprobe and its `iommu:map` tracepoint; another
    /// task's events on that CPU end the sequence. The kprobe still names
    /// the map's domain when the task runs again, so that the unmap the
    /// kprobe names finds it.
    #[test]
    fn a_map_kprobe_survives_preemption_before_its_tracepoint() {
        let text = " dd-2 [000] ..... 1.000010: iommu_map: (iommu_map_nosync+0x4/0x350) domain=0xffff888101aa6c00 dtype=11 iova=0xffc63000 paddr=0x13e498000 size=0x1000 prot=6
 kworker-3 [000] ..... 1.000020: mm_page_free: page=0000000011111111 pfn=0x10509c order=0
 dd-2 [000] ..... 1.000030: map: IOMMU: iova=0x00000000ffc63000 - 0x00000000ffc64000 paddr=0x000000013e498000 size=4096
 dd-2 [000] d.h1. 1.000040: iommu_unmap: (__iommu_unmap+0x0/0x280) domain=0xffff888101aa6c00 dtype=11 iova=0xffc63000 size=0x1000
 dd-2 [000] d.h1. 1.000041: unmap: IOMMU: iova=0x00000000ffc63000 - 0x00000000ffc64000 size=4096 unmapped_size=4096
 dd-2 [000] ..... 1.000050: mm_page_free: page=0000000011111112 pfn=0x13e498 order=0
";
        let r = analyze(std::io::Cursor::new(text), "t", &AnalyzeOptions::default(), &mut ()).expect("in memory");
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!((r.summary.maps_by.kprobe, r.summary.unmaps_by.kprobe), (1, 1));
    }

    /// VT-d without kprobes or `dma:*` events: the task maps, the
    /// completion interrupt unmaps, and only the unmap's flush names the
    /// domain (id 2). Twice over the same IOVA, the second map still
    /// waiting in the task's call when the interrupt unmaps it. Both unmaps
    /// count their map down: no page is freed while mapped, and no unmap
    /// is a double unmap.
    #[test]
    fn an_interrupt_unmap_named_by_its_flush_takes_the_tasks_anonymous_map() {
        let text = "\
 fio-201 [001] ..... 1.000091: mm_page_alloc: page=0000000011111111 pfn=0x109 order=0 migratetype=0 gfp_flags=GFP_NOIO
 fio-201 [001] ..... 1.000093: map: IOMMU: iova=0x0000ffffffffa000 - 0x0000ffffffffb000 paddr=0x0000000000109000 size=4096
 fio-201 [001] ..... 1.000095: mm_page_alloc: page=0000000022222222 pfn=0x10a order=0 migratetype=0 gfp_flags=GFP_NOIO
 <idle>-0 [001] d.h2. 1.000347: unmap: IOMMU: iova=0x0000ffffffffa000 - 0x0000ffffffffb000 size=4096 unmapped_size=4096
 <idle>-0 [001] d.h2. 1.000349: cache_tag_flush_range: dmar0 dmar0[0] type iotlb did 2 [0xffffffffa000-0xffffffffafff] addr 0xffffffffa000 pages 0x1 mask 0x0
 fio-201 [001] ..... 1.000382: mm_page_free: page=0000000011111111 pfn=0x109 order=0
 fio-201 [001] ..... 1.000450: mm_page_alloc: page=0000000011111111 pfn=0x109 order=0 migratetype=0 gfp_flags=GFP_NOIO
 fio-201 [001] ..... 1.000451: map: IOMMU: iova=0x0000ffffffffa000 - 0x0000ffffffffb000 paddr=0x0000000000109000 size=4096
 <idle>-0 [001] d.h2. 1.000666: unmap: IOMMU: iova=0x0000ffffffffa000 - 0x0000ffffffffb000 size=4096 unmapped_size=4096
 <idle>-0 [001] d.h2. 1.000667: cache_tag_flush_range: dmar0 dmar0[0] type iotlb did 2 [0xffffffffa000-0xffffffffafff] addr 0xffffffffa000 pages 0x1 mask 0x0
 fio-201 [001] ..... 1.000700: mm_page_free: page=0000000011111111 pfn=0x109 order=0
";
        let r = analyze(std::io::Cursor::new(text), "t", &AnalyzeOptions::default(), &mut ()).expect("in memory");
        let bugs: Vec<_> = r.findings.iter().filter(|f| f.kind.is_bug()).collect();
        assert!(bugs.is_empty(), "{bugs:?}");
        assert_eq!(r.summary.unmaps_by.did + r.summary.unmaps_by.content, 2, "{:?}", r.summary.unmaps_by);
    }
}
