//! Replay of trace records through the sanitizer, one room per concern.
//!
//! The dispatch loop here ([`Analyzer`]'s [`RecordSink`] impl) sends each
//! record to the room that handles it:
//!
//! - `analyzer`: the state (one field per room) and [`Options`].
//! - `identity`: the domain store: pointers, VT-d ids, devices, anonymous
//!   layers, union-find merges of aliases.
//! - `sequence`: per-CPU, per-context call sequences and their waiting items.
//! - `attribute`: **which domain a map or unmap belongs to** (kprobe, dma:*
//!   device, VT-d id, or the shadow that translates it).
//! - `apply`: a map or unmap of a known domain changes shadow and counters;
//!   what a whole-block unmap removed; double-unmap verdicts.
//! - `lazy`: flush-queue exposure (unmapped, not yet flushed, then freed).
//! - `dma_api`: DMA-API mappings and map/unmap mismatch checks.
//! - `pages`: page free/alloc checks and their findings, with follow-ups.
//! - `teardown`: domains freed or left by their last device with live mappings.
//! - `tasks`: task names and stacks (a mapping's provenance).
//! - `end`: the end of the capture and the summary's totals.
//! - `lookahead`: how long an undecided item may wait ([`LOOKAHEAD_NS`]).
//!
//! Findings are collected and the report assembled in [`crate::report`];
//! a streaming analyzer ([`Analyzer::streaming`]) hands each to a
//! [`crate::report::FindingSink`] as soon as it is decided instead.
//! Timestamps are nanoseconds of the trace clock. Counters are per CPU page
//! ([`Options::page_size`]).

mod analyzer;
mod apply;
mod attribute;
mod dma_api;
mod end;
mod failed_map;
mod identity;
mod lazy;
mod lookahead;
mod pages;
mod sequence;
mod tasks;
mod teardown;

use std::sync::Arc;

use iosan_core::{FindingKind, PageSize};

pub use self::analyzer::{Analyzer, Options};
use self::attribute::Resolver;
use self::dma_api::LayerKey;
use self::failed_map::DMA_MAPPING_ERROR;
use self::identity::MAX_DOMAINS;
pub use self::lookahead::{LOOKAHEAD_EVENTS, LOOKAHEAD_NS};
use self::sequence::is_sequence_event;
use crate::parse::event::Event;
use crate::record::{Origin, Record, RecordSink};
pub use crate::report::fmt_ts;
use crate::report::{LostWindow, SkipCount, TraceFinding};

/// The kernel's NR_CPUS ceiling: lines claiming a higher CPU are skipped.
pub const MAX_CPUS: u32 = 8192;
/// Most lost-event windows kept; more are merged per CPU.
const MAX_LOST_WINDOWS: usize = 4096;

impl Analyzer {
    /// One event, with the stack printed after it (if any).
    fn event(&mut self, ctx: &Record) {
        let (ev, stack) = (ctx.event, ctx.stack);
        if ctx.cpu >= MAX_CPUS {
            self.skipped("CPU number above the kernel's limit (8191)", ctx.origin);
            return;
        }
        self.summary.events_read += 1;
        let label = ev.label();
        match self.kind_counts.iter().position(|(l, _)| std::ptr::eq(*l, label)) {
            Some(i) => {
                if let Some((_, n)) = self.kind_counts.get_mut(i) {
                    *n += 1;
                }
                // Keep frequent kinds near the front.
                if i > 0 {
                    self.kind_counts.swap(i, i - 1);
                }
            }
            None => self.kind_counts.push((label, 1)),
        }
        self.summary.first_ns.get_or_insert(ctx.ts_ns);
        self.summary.last_ns = self.summary.last_ns.max(ctx.ts_ns);
        let cpu = ctx.cpu as usize;
        if self.last_ts_by_cpu.len() <= cpu {
            self.last_ts_by_cpu.resize(cpu + 1, None);
        }
        let prev = self.last_ts_by_cpu.get_mut(cpu).and_then(|t| t.replace(ctx.ts_ns));
        if let Some(prev) = prev {
            if ctx.ts_ns < prev {
                self.summary.time_went_backwards += 1;
            }
        }
        let recent = self.lost.len().saturating_sub(8);
        for i in recent..self.lost.len() {
            let Some(w) = self.lost.get_mut(i) else { continue };
            if w.before_ns.is_none() && w.cpu.is_none_or(|c| c == ctx.cpu) {
                w.before_ns = Some(ctx.ts_ns);
                // The window is now known: a stream hands its warning on.
                let f = w.finding();
                self.emit_lost(i, f);
            }
        }
        let key = (ctx.cpu, ctx.context.index());
        // A different task, or an event outside any map/unmap sequence, ends the sequence.
        if self.seqs.must_end(key, ctx.pid, is_sequence_event(ev)) {
            if self.seqs.get(key).pid != ctx.pid {
                self.seqs.stash_preempted(key);
            }
            self.finish_seq(key);
        }
        if let Some(seq) = self.seqs.existing(key) {
            seq.pid = ctx.pid;
        }
        self.seqs.resume(key, ctx.pid);
        // A zero-size map is a failed map's only if its unmap comes next.
        if self.seqs.zero_maps_held != 0
            && !matches!(
                ev,
                Event::IommuUnmap(_) | Event::ProbeUnmap(_) | Event::ProbeUnmapReturn(_) | Event::ProbeMapReturn(_)
            )
        {
            self.flush_zero_map(key);
        }

        if !self.identity_seen && is_identity_event(ev) {
            self.identity_seen = true;
        }
        match ev {
            Event::ProbeMap(p) => {
                self.summary.kprobe_events += 1;
                self.note_dtype(p.domain, p.dtype);
                self.seqs.get(key).kp_map = Some((p.domain, p.iova, p.size, p.dtype));
                self.map_call_opened(key, p.domain, p.iova, p.size);
            }
            Event::ProbeUnmap(p) => {
                self.summary.kprobe_events += 1;
                self.note_dtype(p.domain, p.dtype);
                self.seqs.get(key).kp_unmap = Some((p.domain, p.iova, p.size, p.dtype));
            }
            Event::ProbeAttach(p) => {
                self.summary.kprobe_events += 1;
                let s = self.domains.ptr(p.domain);
                self.domains.add_device(s, String::from_utf8_lossy(p.dev).into());
                self.note_dtype(p.domain, p.dtype);
                self.seqs.get(key).attach_slot = Some(s);
            }
            Event::ProbeDetach(_) | Event::ProbeUnmapReturn(_) => {
                self.summary.kprobe_events += 1;
            }
            Event::ProbeMapReturn(r) => {
                self.summary.kprobe_events += 1;
                self.map_call_returned(ctx, key, r.ret);
            }
            Event::ProbeDomainFree(p) => {
                self.summary.kprobe_events += 1;
                self.domain_free(ctx, p.domain);
            }
            Event::ProbeFqFlushTimeout(_) => {
                self.summary.kprobe_events += 1;
                self.summary.lazy_evidence += 1;
            }
            Event::ProbeFqFlushIotlb(p) => {
                self.summary.kprobe_events += 1;
                self.summary.lazy_evidence += 1;
                self.lazy.fq_flushed(&mut self.domains, &mut self.summary, ctx.ts_ns, p.cookie);
            }
            Event::ProbeIovaFree(p) => {
                self.summary.kprobe_events += 1;
                self.lazy.iova_freed(&mut self.domains, &mut self.summary, ctx.ts_ns, p.pfn, p.pages);
            }
            Event::CacheTagAssign(t) => {
                self.summary.vtd_events += 1;
                let seq = self.seqs.get(key);
                if let Some(s) = seq.attach_slot {
                    let d = self.domains.did(t.did);
                    self.domains.union(s, d);
                } else {
                    seq.pending_did = Some(t.did);
                }
            }
            Event::AttachDeviceToDomain { device } => self.device_attached(key, device),
            Event::RemoveDeviceFromGroup { device, .. } => self.device_removed(ctx, device),
            Event::IommuMap(m) => {
                self.iommu_map_seen = true;
                self.on_map(ctx, key, m.iova, m.paddr, m.size, stack);
            }
            Event::IommuUnmap(u) => self.on_unmap(ctx, key, u.iova, u.size, u.unmapped_size),
            Event::CacheTagFlushRangeNp(f) => {
                self.summary.vtd_events += 1;
                let d = self.domains.did(f.did);
                self.resolve(key, Resolver::Did(d, f.start, f.last), true, false);
            }
            Event::CacheTagFlushRange(f) if f.start == 0 && f.last == u64::MAX => {
                // 6.18+: `cache_tag_flush_all` is a range flush over everything.
                self.summary.vtd_events += 1;
                self.lazy.flush_event_seen();
                self.summary.lazy_evidence += 1;
                let d = self.domains.did(f.did);
                self.lazy.flushed(&mut self.domains, &mut self.summary, ctx.ts_ns, Some(d), None);
            }
            Event::CacheTagFlushRange(f) => {
                self.summary.vtd_events += 1;
                self.lazy.flush_event_seen();
                let d = self.domains.did(f.did);
                self.resolve(key, Resolver::Did(d, f.start, f.last), false, true);
                self.lazy.flushed(&mut self.domains, &mut self.summary, ctx.ts_ns, Some(d), Some((f.start, f.last)));
            }
            Event::CacheTagFlushAll(f) => {
                self.summary.vtd_events += 1;
                self.lazy.flush_event_seen();
                self.summary.lazy_evidence += 1;
                let d = self.domains.did(f.did);
                self.lazy.flushed(&mut self.domains, &mut self.summary, ctx.ts_ns, Some(d), None);
            }
            Event::DmaMapPage(m) | Event::DmaMapResource(m) if m.dma_addr == DMA_MAPPING_ERROR => {
                self.summary.dma_events += 1;
                let dev = self.domains.dev(m.device);
                let what = if matches!(ev, Event::DmaMapPage(_)) { "dma_map_page" } else { "dma_map_resource" };
                self.dma_map_failed(ctx, key, dev, what, m.size, Some(m.phys_addr), None);
            }
            Event::DmaMapSgErr(m) => {
                self.summary.dma_events += 1;
                let dev = self.domains.dev(m.device);
                self.dma_map_failed(ctx, key, dev, "dma_map_sg", 0, m.phys_addrs.first().copied(), Some(m.err));
            }
            Event::DmaMapPage(m) | Event::DmaMapResource(m) => {
                self.summary.dma_events += 1;
                let dev = self.domains.dev(m.device);
                let lo = m.dma_addr & !0xfff;
                let hi = m.dma_addr.saturating_add(m.size.max(1) - 1);
                let covered = self.iommu_covers(key, &[(lo, hi)]);
                self.resolve(key, Resolver::Dev(dev, &[(lo, hi)]), true, false);
                self.dma.mapped(&mut self.domains, dev, m.dma_addr, m.size, m.dir, ctx.ts_ns);
                // A resource is MMIO, not memory the page allocator hands out.
                if matches!(ev, Event::DmaMapPage(_)) {
                    self.dma_evidence(ctx, m.device, m.dma_addr, m.phys_addr, covered);
                    let seg = [(m.dma_addr, m.phys_addr, m.size)];
                    self.dma_layer_map(ctx, m.device, &seg, covered, LayerKey::Dma, stack);
                }
            }
            Event::DmaAlloc(m) | Event::DmaAllocPages(m) => {
                self.summary.dma_events += 1;
                let dev = self.domains.dev(m.device);
                let hi = m.dma_addr.saturating_add(m.size.max(1) - 1);
                let covered = self.iommu_covers(key, &[(m.dma_addr & !0xfff, hi)]);
                self.resolve(key, Resolver::Dev(dev, &[(m.dma_addr & !0xfff, hi)]), true, false);
                self.dma.mapped(&mut self.domains, dev, m.dma_addr, m.size, m.dir, ctx.ts_ns);
                self.dma_layer_alloc(ctx, m.device, m.dma_addr, m.size, covered, stack);
            }
            Event::DmaMapSg(m) => {
                self.summary.dma_events += 1;
                let dev = self.domains.dev(m.device);
                let ranges: Vec<(u64, u64)> = m
                    .dma_addrs
                    .iter()
                    .zip(m.sizes.iter().chain(std::iter::repeat(&0)))
                    .map(|(&a, &l)| (a & !0xfff, a.saturating_add(l.max(1) - 1)))
                    .collect();
                // A truncated list may not name every segment: match any map of the sequence.
                let ranges = if m.truncated || ranges.is_empty() { vec![(0, u64::MAX)] } else { ranges };
                let covered = self.iommu_covers(key, &ranges);
                self.resolve(key, Resolver::Dev(dev, &ranges), true, false);
                // Unpaired segments stand for their pages only where no IOMMU layer is traced.
                if !m.truncated && (sg_paired(m) || !self.iommu_map_seen) {
                    let segs = sg_segments(m);
                    self.dma_layer_map(ctx, m.device, &segs, covered, LayerKey::Phys, stack);
                }
                if let (false, Some(&first)) = (m.truncated, m.phys_addrs.first()) {
                    let dev = self.domains.find(dev);
                    self.dma.sg_mapped(dev, first, m.phys_addrs.len(), m.dir, ctx.ts_ns);
                }
            }
            Event::DmaAllocSgt(m) => {
                self.summary.dma_events += 1;
                let dev = self.domains.dev(m.device);
                let hi = m.dma_addr.saturating_add(m.size.max(1) - 1);
                self.resolve(key, Resolver::Dev(dev, &[(m.dma_addr & !0xfff, hi)]), true, false);
            }
            Event::DmaUnmapSg(m) => {
                self.summary.dma_events += 1;
                let dev = self.domains.dev(m.device);
                self.seqs.get(key).unmap_sg_dev = Some(dev);
                self.dma_layer_unmap(m.device, &m.phys_addrs, LayerKey::Phys);
                if let (false, Some(&first)) = (m.truncated, m.phys_addrs.first()) {
                    let root = self.domains.find(dev);
                    if let Some(note) = self.dma.sg_unmapped(root, first, m.phys_addrs.len(), m.dir) {
                        self.dma_mismatch(ctx, root, None, 0, note);
                    }
                }
            }
            Event::DmaFreeSgt(m) => {
                self.summary.dma_events += 1;
                let dev = self.domains.dev(m.device);
                let hi = m.dma_addr.saturating_add(m.size.max(1) - 1);
                self.resolve(key, Resolver::Dev(dev, &[(m.dma_addr & !0xfff, hi)]), false, true);
                self.seqs.get(key).unmap_sg_dev = Some(dev);
            }
            Event::DmaUnmapPage(m) | Event::DmaUnmapResource(m) => {
                self.summary.dma_events += 1;
                let dev = self.domains.dev(m.device);
                let hi = m.dma_addr.saturating_add(m.size.max(1) - 1);
                self.resolve(key, Resolver::Dev(dev, &[(m.dma_addr & !0xfff, hi)]), false, true);
                if let Some((root, note)) = self.dma.unmapped(&mut self.domains, dev, m.dma_addr, m.size, m.dir) {
                    self.dma_mismatch(ctx, root, Some(m.dma_addr), m.size, note);
                }
                if matches!(ev, Event::DmaUnmapPage(_)) {
                    self.dma_layer_unmap(m.device, &[m.dma_addr], LayerKey::Dma);
                }
            }
            Event::DmaFree(m) | Event::DmaFreePages(m) => {
                self.summary.dma_events += 1;
                let dev = self.domains.dev(m.device);
                let hi = m.dma_addr.saturating_add(m.size.max(1) - 1);
                // The coherent free's unmap precedes or follows it depending on the path.
                self.resolve(key, Resolver::Dev(dev, &[(m.dma_addr & !0xfff, hi)]), false, true);
                self.seqs.get(key).unmap_sg_dev = Some(dev);
                if let Some((root, note)) = self.dma.unmapped(&mut self.domains, dev, m.dma_addr, m.size, m.dir) {
                    self.dma_mismatch(ctx, root, Some(m.dma_addr), m.size, note);
                }
                self.dma_layer_unmap(m.device, &[m.dma_addr], LayerKey::Dma);
            }
            Event::PageFree(b) => self.check(ctx, FindingKind::FreedWhileMapped, b.pfn, b.order),
            Event::PageAlloc(a) => {
                if a.page_is_null {
                    self.summary.failed_allocs += 1;
                } else {
                    self.check(ctx, FindingKind::AllocatedWhileMapped, a.pfn, a.order);
                }
            }
            Event::PageFreeBatched(_) => self.summary.free_batched_ignored += 1,
            _ => {}
        }
        self.sweep_lookahead();
    }

    /// Hands lost window `i`'s warning to a stream, once (a report lists
    /// every window at the end instead).
    fn emit_lost(&mut self, i: usize, f: TraceFinding) {
        if !self.findings.is_streaming() {
            return;
        }
        if self.lost_emitted.len() <= i {
            self.lost_emitted.resize(i + 1, false);
        }
        if let Some(done) = self.lost_emitted.get_mut(i) {
            if !*done {
                *done = true;
                self.findings.push(f);
            }
        }
    }

    /// `iommu:attach_device_to_domain`: the device joins the domain its call
    /// named (kprobe, or a VT-d id assigned just before), or its own.
    fn device_attached(&mut self, key: sequence::SeqKey, device: &[u8]) {
        let (attach, did) = {
            let seq = self.seqs.get(key);
            (seq.attach_slot.take(), seq.pending_did.take())
        };
        let name: Arc<str> = String::from_utf8_lossy(device).into();
        let s = match (attach, did) {
            (Some(s), _) => s,
            (None, Some(d)) => {
                // A re-attach to another domain moves the device.
                let s = self.domains.did(d);
                self.domains.forget_dev(&name);
                s
            }
            (None, None) => self.domains.dev(device),
        };
        self.domains.add_device(s, name.clone());
        if !self.devices_seen.contains_key(&name) && self.devices_seen.len() < MAX_DOMAINS {
            self.devices_seen.insert(name.clone(), ());
            self.summary.devices.push(name.to_string());
        }
    }

    fn dma_mismatch(&mut self, ctx: &Record, dev: usize, dma: Option<u64>, size: u64, note: String) {
        let comm = self.tasks.comm(ctx);
        let mut f = dma_api::mismatch(ctx, comm, &self.domains, dev, dma, size, note);
        f.unmapped_by = Some(self.tasks.event_site(ctx));
        self.findings.push(f);
    }
}

impl RecordSink for Analyzer {
    fn record(&mut self, rec: &Record<'_>) {
        self.event(rec);
    }

    /// Counts a line that was skipped, with why.
    fn skipped(&mut self, reason: &str, origin: Origin) {
        self.skipped_many(reason, origin, 1);
    }

    fn skipped_many(&mut self, reason: &str, origin: Origin, count: u64) {
        if count == 0 {
            return;
        }
        let e = self.summary.skipped.entry(reason.to_string()).or_insert(SkipCount {
            count: 0,
            first_line: origin.line,
            first_offset: origin.offset,
        });
        e.count = e.count.saturating_add(count);
    }

    /// Counts an event name the analyzer does not know.
    fn unknown_event(&mut self, name: &[u8]) {
        self.summary.events_read += 1;
        self.summary.unknown_events += 1;
        if self.summary.unknown_by_name.len() < 256
            || self.summary.unknown_by_name.contains_key(&String::from_utf8_lossy(name).to_string())
        {
            *self.summary.unknown_by_name.entry(String::from_utf8_lossy(name).into_owned()).or_insert(0) += 1;
        }
    }

    /// A `[LOST n EVENTS]` marker.
    fn lost(&mut self, cpu: Option<u32>, events: Option<u64>, origin: Origin) {
        let after = match cpu {
            Some(c) => self.last_ts_by_cpu.get(c as usize).copied().flatten().unwrap_or(0),
            None => self.last_ts_by_cpu.iter().copied().flatten().max().unwrap_or(0),
        };
        if self.lost.len() >= MAX_LOST_WINDOWS {
            // Merge into the last window of this CPU: it now runs to the next event.
            self.summary.lost_windows_merged += 1;
            if let Some(w) = self.lost.iter_mut().rev().find(|w| w.cpu == cpu) {
                w.events = w.events.zip(events).map(|(a, b)| a.saturating_add(b));
                w.before_ns = None;
            }
        } else {
            self.lost.push(LostWindow { cpu, events, line: origin.line, after_ns: after, before_ns: None });
        }
        self.summary.lost_events = self.summary.lost_events.saturating_add(events.unwrap_or(1));
    }

    fn meta(&mut self, key: &str, value: &str) {
        if let Some((ps, source)) = page_size_from_meta(key, value, self.summary.page_size_source) {
            self.capture_page_size(ps, source);
        }
        if self.summary.meta.len() < 64 {
            self.summary.meta.push((key.to_string(), value.chars().take(512).collect()));
        }
    }

    fn overwritten(&mut self, events: u64) {
        self.summary.overwritten_events = self.summary.overwritten_events.saturating_add(events);
    }
}

/// A `dma_map_sg`'s entries as (DMA address, physical address, bytes).
/// With as many DMA as CPU segments they pair up (dma-direct, or an IOMMU
/// that merged nothing); otherwise the CPU segments' lengths are unknown and
/// each stands for its page, at its physical address.
fn sg_segments(m: &crate::parse::event::DmaMapSg<'_>) -> Vec<(u64, u64, u64)> {
    if sg_paired(m) {
        m.dma_addrs.iter().zip(&m.phys_addrs).zip(&m.sizes).map(|((&d, &p), &l)| (d, p, l)).collect()
    } else {
        m.phys_addrs.iter().map(|&p| (p, p, 1)).collect()
    }
}

/// Whether a `dma_map_sg`'s DMA and CPU segments pair up one to one.
fn sg_paired(m: &crate::parse::event::DmaMapSg<'_>) -> bool {
    m.dma_addrs.len() == m.phys_addrs.len() && m.sizes.len() == m.phys_addrs.len()
}

/// The CPU page size a metadata entry states or implies, with its source:
/// `page_size=` (written by `iosan record` and the e2e arm64 recorder)
/// beats the kernel release's flavour suffix (Debian's `-arm64-16k`,
/// `-arm64-64k`), which beats what the events showed ([`crate::pagesize`]),
/// which beats the architecture (x86 has only 4 KiB pages).
/// `current` is the source already used, so a weaker hint never overrides.
fn page_size_from_meta(key: &str, value: &str, current: &'static str) -> Option<(PageSize, &'static str)> {
    const META: &str = "capture metadata";
    const RELEASE: &str = "kernel release";
    const ARCH: &str = "architecture";
    let rank = |s: &str| match s {
        "--page-size" => 5,
        META => 4,
        RELEASE => 3,
        "events" => 2,
        ARCH => 1,
        _ => 0,
    };
    let (ps, source) = match key {
        "page_size" => (value.trim().parse::<u64>().ok().and_then(PageSize::from_bytes)?, META),
        "kernel" => {
            // The release is the first word after "Linux version".
            let release = value.split_whitespace().nth(2).unwrap_or(value);
            if release.ends_with("-16k") || release.contains("-16k+") {
                (PageSize::SIZE_16K, RELEASE)
            } else if release.ends_with("-64k") || release.contains("-64k+") {
                (PageSize::SIZE_64K, RELEASE)
            } else {
                return None;
            }
        }
        "arch" if matches!(value.trim(), "x86_64" | "i686" | "i386" | "x86") => (PageSize::SIZE_4K, ARCH),
        _ => return None,
    };
    // A size given by the user still hears what the capture says (to warn).
    (rank(source) > rank(current) || current == "--page-size").then_some((ps, source))
}

/// Events that can tell which domain a map or unmap belongs to.
fn is_identity_event(ev: &Event) -> bool {
    matches!(
        ev,
        Event::ProbeMap(_)
            | Event::ProbeUnmap(_)
            | Event::CacheTagFlushRange(_)
            | Event::CacheTagFlushRangeNp(_)
            | Event::DmaMapPage(_)
            | Event::DmaMapSg(_)
            | Event::DmaAlloc(_)
            | Event::DmaUnmapPage(_)
            | Event::DmaUnmapSg(_)
            | Event::DmaFree(_)
    )
}
