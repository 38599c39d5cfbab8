//! Replay of trace events through the sanitizer.
//!
//! One [`ShadowDomain`] per IOMMU domain. Domain identity, best first: the
//! domain pointer of a kprobe on `__iommu_map` / `__iommu_unmap` /
//! `__iommu_attach_device` / `iommu_domain_free`; the device of a `dma:*`
//! event that wraps the iommu event (same CPU, same context, same task,
//! adjacent, overlapping IOVA); the VT-d domain id (`did`) of an
//! `intel_iommu` flush in the same sequence; otherwise one anonymous IOVA
//! space, and findings there say so. Aliases of one domain (pointer, did,
//! devices) seen on the same event are merged into one domain.
//!
//! Timestamps are nanoseconds of the trace clock. Counters are per CPU page
//! ([`Options::page_size`]).

use std::collections::BTreeMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use iosan_core::{
    Config, DomainId, Finding, FindingKind, Iova, IovaRange, MapMeta, Mapping, MappingSource, PageSize, Pfn, PhysAddr,
    Sanitizer, Semantics, ShadowDomain, ShadowMapResult,
};

use crate::parse::event::{DmaDirection, Event};
use crate::record::{Origin, Record, RecordSink};
use crate::report::{
    Attribution, Doubt, FollowUp, LiveGroup, LostWindow, MapSite, Report, SkipCount, Summary, TraceFinding,
};

/// Analysis options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Exact (default) or the kernel's algorithm.
    pub semantics: Semantics,
    /// CPU page size of the traced kernel.
    pub page_size: PageSize,
    /// IOMMU page sizes assumed for domains (the trace does not say):
    /// 4 KiB granule with 2 MiB and 1 GiB superpages, as VT-d, AMD and SMMU with 4K pages.
    pub pgsize_bitmap: u64,
    /// Most follow-up events kept per finding (the count is always exact).
    pub max_follow_ups: usize,
    /// Most unflushed (lazy-mode) unmapped ranges tracked at once.
    pub max_unflushed: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            semantics: Semantics::Exact,
            page_size: PageSize::SIZE_4K,
            pgsize_bitmap: (1 << 12) | (1 << 21) | (1 << 30),
            max_follow_ups: 16,
            max_unflushed: 1 << 20,
        }
    }
}

/// Maps keyed by values from the capture; each is bounded in size, so
/// collisions chosen by an attacker cost time, never memory.
type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<iosan_core::hash::FastHasher>>;

// ------------------------------------------------------------------ domains

#[derive(Debug)]
struct Slot {
    shadow: ShadowDomain,
    ptrs: Vec<u64>,
    dids: Vec<u32>,
    devices: Vec<Arc<str>>,
    dtype: Option<u64>,
    anonymous: bool,
    /// How this domain's identity was learnt.
    via: Attribution,
    /// Ranges unmapped recently and not mapped since: start -> (last, time ns).
    recent_unmaps: BTreeMap<u64, (u64, u64)>,
    /// A lazy (flush-queue) domain: DMA-FQ type, or flushed whole by the queue.
    flush_queue: bool,
    /// Frees inside unflushed ranges, held until a whole-domain flush shows
    /// this is a flush-queue domain: (pages, time of the free).
    held: Vec<(u64, u64)>,
}

#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    parent: Vec<usize>,
    by_ptr: HashMap<u64, usize>,
    by_did: HashMap<u32, usize>,
    by_dev: HashMap<Arc<str>, usize>,
    /// Anonymous IOVA spaces: maps nothing identified. IOVAs of different
    /// domains collide, so a map that overlaps one layer goes to the next.
    anon: Vec<usize>,
    merge_refused: u64,
    pgsize_bitmap: u64,
    /// The shared space of identities past the cap.
    overflow: Option<usize>,
    domains_over_cap: u64,
}

impl Slots {
    fn new_slot(&mut self, via: Attribution, anonymous: bool) -> usize {
        let id = self.slots.len();
        let shadow = ShadowDomain::new(DomainId(id as u64), self.pgsize_bitmap);
        self.slots.push(Slot {
            shadow,
            ptrs: Vec::new(),
            dids: Vec::new(),
            devices: Vec::new(),
            dtype: None,
            anonymous,
            via,
            recent_unmaps: BTreeMap::new(),
            flush_queue: false,
            held: Vec::new(),
        });
        self.parent.push(id);
        id
    }

    fn find(&mut self, mut i: usize) -> usize {
        while let Some(&p) = self.parent.get(i) {
            if p == i {
                break;
            }
            let gp = self.parent.get(p).copied().unwrap_or(p);
            if let Some(slot) = self.parent.get_mut(i) {
                *slot = gp;
            }
            i = p;
        }
        i
    }

    fn slot(&self, i: usize) -> &Slot {
        &self.slots[i.min(self.slots.len() - 1)]
    }

    fn slot_mut(&mut self, i: usize) -> &mut Slot {
        let n = self.slots.len() - 1;
        &mut self.slots[i.min(n)]
    }

    fn ptr(&mut self, p: u64) -> usize {
        if let Some(&i) = self.by_ptr.get(&p) {
            return self.find(i);
        }
        if self.slots.len() >= MAX_DOMAINS {
            return self.over_cap();
        }
        let i = self.new_slot(Attribution::Kprobe, false);
        self.slots[i].ptrs.push(p);
        self.by_ptr.insert(p, i);
        i
    }

    fn did(&mut self, d: u32) -> usize {
        if let Some(&i) = self.by_did.get(&d) {
            return self.find(i);
        }
        if self.slots.len() >= MAX_DOMAINS {
            return self.over_cap();
        }
        let i = self.new_slot(Attribution::DomainId, false);
        self.slots[i].dids.push(d);
        self.by_did.insert(d, i);
        i
    }

    fn dev(&mut self, name: &[u8]) -> usize {
        // Look up without allocating (device names are ASCII in practice).
        if let Some(&i) = std::str::from_utf8(name).ok().and_then(|n| self.by_dev.get(n)) {
            return self.find(i);
        }
        let name: Arc<str> = String::from_utf8_lossy(name).into();
        if let Some(&i) = self.by_dev.get(&name) {
            return self.find(i);
        }
        if self.slots.len() >= MAX_DOMAINS {
            return self.over_cap();
        }
        let i = self.new_slot(Attribution::Device, false);
        self.add_device(i, name);
        i
    }

    /// Past the domain cap, new identities share one anonymous space.
    fn over_cap(&mut self) -> usize {
        self.domains_over_cap += 1;
        if let Some(o) = self.overflow {
            return o;
        }
        let o = self.new_slot(Attribution::Anonymous, true);
        self.overflow = Some(o);
        o
    }

    fn add_device(&mut self, i: usize, name: Arc<str>) {
        let i = self.find(i);
        let s = self.slot_mut(i);
        if !s.devices.contains(&name) && s.devices.len() < MAX_DEVICES_PER_DOMAIN {
            s.devices.push(name.clone());
            let label: Option<Arc<str>> = Some(s.devices.join(",").into());
            s.shadow.set_device(label);
        }
        self.by_dev.insert(name, i);
    }

    /// The root of a domain's aliases, without path compression.
    fn root_ro(&self, mut i: usize) -> usize {
        while let Some(&p) = self.parent.get(i) {
            if p == i {
                break;
            }
            i = p;
        }
        i
    }

    fn is_anonymous(&mut self, i: usize) -> bool {
        let r = self.find(i);
        self.slot(r).anonymous
    }

    /// The first anonymous layer where `range` is free (a new one if none is).
    fn anon_for(&mut self, range: IovaRange) -> usize {
        for &a in &self.anon {
            if self.slot(a).shadow.first_mapped_in(range).is_none() {
                return a;
            }
        }
        if self.anon.len() >= MAX_ANON_LAYERS {
            // Bounded: the last layer takes it (its overlapped entries are dropped as stale).
            return self.anon.last().copied().unwrap_or(0);
        }
        let a = self.new_slot(Attribution::Anonymous, true);
        self.anon.push(a);
        a
    }

    /// Merges two aliases of one domain. Refused (and counted) when their
    /// mappings overlap, which means they are not the same domain.
    fn union(&mut self, a: usize, b: usize) -> usize {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return ra;
        }
        if self.slot(ra).anonymous || self.slot(rb).anonymous {
            self.merge_refused += 1;
            return ra;
        }
        let (big, small) = if self.slot(ra).shadow.len() >= self.slot(rb).shadow.len() { (ra, rb) } else { (rb, ra) };
        let conflict = self.slot(small).shadow.iter().any(|m| self.slot(big).shadow.first_mapped_in(m.iova).is_some());
        if conflict {
            self.merge_refused += 1;
            return ra;
        }
        let moved = self.slot_mut(small).shadow.clear();
        let small_slot = std::mem::replace(
            self.slot_mut(small),
            Slot {
                shadow: ShadowDomain::new(DomainId(small as u64), 1 << 12),
                ptrs: Vec::new(),
                dids: Vec::new(),
                devices: Vec::new(),
                dtype: None,
                anonymous: false,
                via: Attribution::Device,
                recent_unmaps: BTreeMap::new(),
                flush_queue: false,
                held: Vec::new(),
            },
        );
        for m in moved {
            let _ = self.slot_mut(big).shadow.map(m.iova.start(), m.phys, m.len(), m.meta);
        }
        {
            let b = self.slot_mut(big);
            b.ptrs.extend(small_slot.ptrs);
            b.dids.extend(small_slot.dids);
            b.dtype = b.dtype.or(small_slot.dtype);
            b.flush_queue |= small_slot.flush_queue;
            b.via = b.via.min(small_slot.via);
        }
        for d in small_slot.devices {
            self.add_device(big, d);
        }
        if let Some(p) = self.parent.get_mut(small) {
            *p = big;
        }
        big
    }

    fn label(&self, i: usize) -> Option<String> {
        let s = self.slot(i);
        if let Some(p) = s.ptrs.first() {
            Some(format!("{p:#x}"))
        } else if let Some(d) = s.dids.first() {
            Some(format!("did:{d}"))
        } else if s.anonymous {
            None
        } else {
            s.devices.first().map(|d| format!("dev:{d}"))
        }
    }
}

// ------------------------------------------------------------------ sequences

#[derive(Clone, Debug)]
enum Item {
    Map { iova: IovaRange, phys: PhysAddr, meta: MapMeta, slot: Option<usize> },
    Unmap { iova: Iova, size: u64, unmapped: u64, slot: Option<usize>, ts_ns: u64, line: u64 },
}

#[derive(Default, Debug)]
struct Seq {
    pid: u32,
    items: Vec<Item>,
    kp_map: Option<(u64, u64, u64, Option<u64>)>,
    kp_unmap: Option<(u64, u64, u64, Option<u64>)>,
    unmap_sg_dev: Option<usize>,
    attach_slot: Option<usize>,
    pending_did: Option<u32>,
}

const MAX_SEQ_ITEMS: usize = 8192;
/// Recently unmapped ranges remembered per domain (for certain double unmaps).
const MAX_RECENT_UNMAPS: usize = 4096;
/// Longest recent-unmap range looked back over when a map forgets them.
const MAX_RECENT_SPAN: u64 = 1 << 30;
/// Live DMA-API mappings remembered for unmap checks.
const MAX_DMA_LIVE: usize = 1 << 22;
/// Most anonymous IOVA spaces (layers of colliding IOVAs).
const MAX_ANON_LAYERS: usize = 64;
/// Items after which a sequence's unattributed maps stop waiting for an identity.
const PENDING_MAP_WINDOW: usize = 512;
/// Unflushed ranges tracked before any IOTLB flush event was seen.
const MAX_UNFLUSHED_BEFORE_FLUSH: usize = 1 << 16;
/// Frees held per domain until its kind of flush is known.
const MAX_HELD_FREES: usize = 1 << 16;
/// The kernel's NR_CPUS ceiling: lines claiming a higher CPU are skipped.
pub const MAX_CPUS: u32 = 8192;
/// Most findings kept; more are counted in the summary.
const MAX_FINDINGS: usize = 1 << 16;
/// Most domains (pointers, VT-d ids, devices) tracked; more share one anonymous space.
const MAX_DOMAINS: usize = 1 << 16;
/// Most devices listed per domain.
const MAX_DEVICES_PER_DOMAIN: usize = 64;
/// Most lost-event windows kept; more are merged per CPU.
const MAX_LOST_WINDOWS: usize = 4096;
/// Most sequences with unattributed unmaps waiting at once; the oldest is settled first.
const MAX_PENDING_SEQS: usize = 1024;
/// Resolved items kept when a sequence is pruned.
const KEEP_RESOLVED: usize = 256;

/// A range that was unmapped but not yet flushed from the IOTLB (lazy mode).
#[derive(Clone, Copy, Debug)]
struct Unflushed {
    slot: usize,
    iova: IovaRange,
    pfn_last: u64,
    unmap_ns: u64,
    first_free_ns: Option<u64>,
}

// ------------------------------------------------------------------ episodes

type EpisodeKey = (usize, u64, u64);

// ------------------------------------------------------------------ analyzer

/// Replays events; call [`Analyzer::finish`] for the report.
pub struct Analyzer {
    opts: Options,
    san: Sanitizer,
    slots: Slots,
    seqs: HashMap<(u32, u8), Seq>,
    comms: HashMap<u32, Arc<str>>,
    stacks: Vec<Arc<[String]>>,
    stack_ids: HashMap<Arc<[String]>, usize>,
    findings: Vec<TraceFinding>,
    episodes: HashMap<EpisodeKey, Vec<usize>>,
    unflushed: BTreeMap<(u64, u64), Unflushed>,
    unflushed_seq: u64,
    unflushed_max_pages: u64,
    flush_events_seen: bool,
    lost: Vec<LostWindow>,
    /// Last timestamp per CPU (CPU numbers are below MAX_CPUS).
    last_ts_by_cpu: Vec<Option<u64>>,
    summary: Summary,
    dma_live: HashMap<(usize, u64), (u64, DmaDirection, u64)>,
    /// Live scatter-gather maps: (device, first phys) -> (entries, direction, time).
    sg_live: HashMap<(usize, u64), (usize, DmaDirection, u64)>,
    /// Events per kind (few distinct labels: a list beats a map).
    kind_counts: Vec<(&'static str, u64)>,
    /// An event that can identify a domain (kprobe, dma:*, VT-d) was seen:
    /// until then maps cannot wait for an identity.
    identity_seen: bool,
    /// Sequences holding unattributed unmaps, oldest first.
    pending_keys: Vec<(u32, u8)>,
    /// Devices already listed in the summary.
    devices_seen: HashMap<Arc<str>, ()>,
}

const MAX_STACKS: usize = 1 << 16;

impl Analyzer {
    /// A new analyzer.
    #[must_use]
    pub fn new(opts: Options) -> Self {
        let san = Sanitizer::new(Config { semantics: opts.semantics, page_size: opts.page_size, ..Config::default() });
        let slots = Slots { pgsize_bitmap: opts.pgsize_bitmap, ..Slots::default() };
        let summary = Summary { semantics: opts.semantics.name(), ..Summary::default() };
        Self {
            opts,
            san,
            slots,
            seqs: HashMap::default(),
            comms: HashMap::default(),
            stacks: Vec::new(),
            stack_ids: HashMap::default(),
            findings: Vec::new(),
            episodes: HashMap::default(),
            unflushed: BTreeMap::new(),
            unflushed_seq: 0,
            unflushed_max_pages: 0,
            flush_events_seen: false,
            lost: Vec::new(),
            last_ts_by_cpu: Vec::new(),
            summary,
            dma_live: HashMap::default(),
            sg_live: HashMap::default(),
            kind_counts: Vec::new(),
            identity_seen: false,
            pending_keys: Vec::new(),
            devices_seen: HashMap::default(),
        }
    }

    fn comm(&mut self, ctx: &Record) -> Arc<str> {
        if let Some(c) = self.comms.get(&ctx.pid) {
            if c.as_bytes() == ctx.comm || ctx.comm == b"<...>" {
                return c.clone();
            }
        }
        let c: Arc<str> = String::from_utf8_lossy(ctx.comm).into();
        if self.comms.len() < (1 << 22) {
            self.comms.insert(ctx.pid, c.clone());
        }
        c
    }

    fn stack_id(&mut self, stack: &[&[u8]]) -> usize {
        if stack.is_empty() {
            return 0;
        }
        let frames: Arc<[String]> =
            stack.iter().take(64).map(|f| String::from_utf8_lossy(f).trim().to_string()).collect::<Vec<_>>().into();
        if let Some(&i) = self.stack_ids.get(&frames) {
            return i;
        }
        if self.stacks.len() >= MAX_STACKS {
            return 0;
        }
        self.stacks.push(frames.clone());
        let id = self.stacks.len(); // 1-based: 0 means none
        self.stack_ids.insert(frames, id);
        id
    }

    fn meta(&mut self, ctx: &Record, stack: &[&[u8]]) -> MapMeta {
        let _ = self.comm(ctx);
        let sid = self.stack_id(stack) as u64;
        MapMeta { when: ctx.ts_ns, tag: (sid << 44) | (u64::from(ctx.cpu & 0xfff) << 32) | u64::from(ctx.pid) }
    }

    fn site(&self, meta: MapMeta) -> MapSite {
        let pid = (meta.tag & 0xffff_ffff) as u32;
        let cpu = ((meta.tag >> 32) & 0xfff) as u32;
        let sid = (meta.tag >> 44) as usize;
        MapSite {
            time_ns: meta.when,
            cpu,
            pid,
            task: self.comms.get(&pid).map(|c| c.to_string()).unwrap_or_else(|| "<...>".into()),
            stack: sid.checked_sub(1).and_then(|i| self.stacks.get(i)).map(|s| s.to_vec()).unwrap_or_default(),
        }
    }

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
        for w in self.lost.iter_mut().rev().take(8) {
            if w.before_ns.is_none() && w.cpu.is_none_or(|c| c == ctx.cpu) {
                w.before_ns = Some(ctx.ts_ns);
            }
        }
        let key = (ctx.cpu, ctx.context.index());
        // A different task, or an event outside any map/unmap sequence, ends the sequence.
        let continues = is_sequence_event(ev);
        let seq = self.seqs.entry(key).or_default();
        let open =
            !seq.items.is_empty() || seq.kp_map.is_some() || seq.kp_unmap.is_some() || seq.unmap_sg_dev.is_some();
        if open && (seq.pid != ctx.pid || !continues) {
            self.finish_seq(key);
        }
        if let Some(seq) = self.seqs.get_mut(&key) {
            seq.pid = ctx.pid;
        }

        if !self.identity_seen && is_identity_event(ev) {
            self.identity_seen = true;
        }
        match ev {
            Event::ProbeMap(p) => {
                self.summary.kprobe_events += 1;
                self.note_dtype(p.domain, p.dtype);
                self.seq(key).kp_map = Some((p.domain, p.iova, p.size, p.dtype));
            }
            Event::ProbeUnmap(p) => {
                self.summary.kprobe_events += 1;
                self.note_dtype(p.domain, p.dtype);
                self.seq(key).kp_unmap = Some((p.domain, p.iova, p.size, p.dtype));
            }
            Event::ProbeAttach(p) => {
                self.summary.kprobe_events += 1;
                let s = self.slots.ptr(p.domain);
                self.slots.add_device(s, String::from_utf8_lossy(p.dev).into());
                self.note_dtype(p.domain, p.dtype);
                self.seq(key).attach_slot = Some(s);
            }
            Event::ProbeDetach(_) | Event::ProbeMapReturn(_) | Event::ProbeUnmapReturn(_) => {
                self.summary.kprobe_events += 1;
            }
            Event::ProbeDomainFree(p) => {
                self.summary.kprobe_events += 1;
                self.domain_free(ctx, p.domain);
            }
            Event::ProbeFqFlushTimeout(_) | Event::ProbeFqFlushIotlb(_) => {
                self.summary.kprobe_events += 1;
                self.summary.lazy_evidence += 1;
            }
            Event::CacheTagAssign(t) => {
                self.summary.vtd_events += 1;
                let seq = self.seq(key);
                if let Some(s) = seq.attach_slot {
                    let d = self.slots.did(t.did);
                    self.slots.union(s, d);
                } else {
                    seq.pending_did = Some(t.did);
                }
            }
            Event::AttachDeviceToDomain { device } => {
                let (attach, did) = {
                    let seq = self.seq(key);
                    (seq.attach_slot.take(), seq.pending_did.take())
                };
                let name: Arc<str> = String::from_utf8_lossy(device).into();
                let s = match (attach, did) {
                    (Some(s), _) => s,
                    (None, Some(d)) => {
                        // A re-attach to another domain moves the device.
                        let s = self.slots.did(d);
                        self.slots.by_dev.remove(&name);
                        s
                    }
                    (None, None) => self.slots.dev(device),
                };
                self.slots.add_device(s, name.clone());
                if !self.devices_seen.contains_key(&name) && self.devices_seen.len() < MAX_DOMAINS {
                    self.devices_seen.insert(name.clone(), ());
                    self.summary.devices.push(name.to_string());
                }
            }
            Event::RemoveDeviceFromGroup { device, .. } => self.device_removed(ctx, device),
            Event::IommuMap(m) => self.on_map(ctx, key, m.iova, m.paddr, m.size, stack),
            Event::IommuUnmap(u) => self.on_unmap(ctx, key, u.iova, u.size, u.unmapped_size),
            Event::CacheTagFlushRangeNp(f) => {
                self.summary.vtd_events += 1;
                let d = self.slots.did(f.did);
                self.resolve(key, Resolver::Did(d, f.start, f.last), true, false);
            }
            Event::CacheTagFlushRange(f) => {
                self.summary.vtd_events += 1;
                self.flush_events_seen = true;
                let d = self.slots.did(f.did);
                self.resolve(key, Resolver::Did(d, f.start, f.last), false, true);
                self.flushed(ctx, Some(d), Some((f.start, f.last)));
            }
            Event::CacheTagFlushAll(f) => {
                self.summary.vtd_events += 1;
                self.flush_events_seen = true;
                self.summary.lazy_evidence += 1;
                let d = self.slots.did(f.did);
                self.flushed(ctx, Some(d), None);
            }
            Event::DmaMapPage(m) | Event::DmaMapResource(m) => {
                self.summary.dma_events += 1;
                let dev = self.slots.dev(m.device);
                let lo = m.dma_addr & !0xfff;
                let hi = m.dma_addr.saturating_add(m.size.max(1) - 1);
                self.resolve(key, Resolver::Dev(dev, vec![(lo, hi)]), true, false);
                self.dma_map_seen(ctx, dev, m.dma_addr, m.size, m.dir);
            }
            Event::DmaAlloc(m) | Event::DmaAllocPages(m) => {
                self.summary.dma_events += 1;
                let dev = self.slots.dev(m.device);
                let hi = m.dma_addr.saturating_add(m.size.max(1) - 1);
                self.resolve(key, Resolver::Dev(dev, vec![(m.dma_addr & !0xfff, hi)]), true, false);
                self.dma_map_seen(ctx, dev, m.dma_addr, m.size, m.dir);
            }
            Event::DmaMapSg(m) => {
                self.summary.dma_events += 1;
                let dev = self.slots.dev(m.device);
                let ranges: Vec<(u64, u64)> = m
                    .dma_addrs
                    .iter()
                    .zip(m.sizes.iter().chain(std::iter::repeat(&0)))
                    .map(|(&a, &l)| (a & !0xfff, a.saturating_add(l.max(1) - 1)))
                    .collect();
                // A truncated list may not name every segment: match any map of the sequence.
                let ranges = if m.truncated || ranges.is_empty() { vec![(0, u64::MAX)] } else { ranges };
                self.resolve(key, Resolver::Dev(dev, ranges), true, false);
                if let (false, Some(&first)) = (m.truncated, m.phys_addrs.first()) {
                    if self.sg_live.len() < MAX_DMA_LIVE {
                        let dev = self.slots.find(dev);
                        self.sg_live.insert((dev, first), (m.phys_addrs.len(), m.dir, ctx.ts_ns));
                    }
                }
            }
            Event::DmaAllocSgt(m) => {
                self.summary.dma_events += 1;
                let dev = self.slots.dev(m.device);
                let hi = m.dma_addr.saturating_add(m.size.max(1) - 1);
                self.resolve(key, Resolver::Dev(dev, vec![(m.dma_addr & !0xfff, hi)]), true, false);
            }
            Event::DmaUnmapSg(m) => {
                self.summary.dma_events += 1;
                let dev = self.slots.dev(m.device);
                self.seq(key).unmap_sg_dev = Some(dev);
                if let (false, Some(&first)) = (m.truncated, m.phys_addrs.first()) {
                    let root = self.slots.find(dev);
                    if let Some((n, dir, ts)) = self.sg_live.remove(&(root, first)) {
                        if n != m.phys_addrs.len() || dir != m.dir {
                            let note = format!(
                                "mapped {n} entries {} at {}, unmapped {} entries {}",
                                dir_name(dir),
                                fmt_ts(ts),
                                m.phys_addrs.len(),
                                dir_name(m.dir)
                            );
                            self.dma_mismatch(ctx, root, None, 0, note);
                        }
                    }
                }
            }
            Event::DmaFreeSgt(m) => {
                self.summary.dma_events += 1;
                let dev = self.slots.dev(m.device);
                let hi = m.dma_addr.saturating_add(m.size.max(1) - 1);
                self.resolve(key, Resolver::Dev(dev, vec![(m.dma_addr & !0xfff, hi)]), false, true);
                self.seq(key).unmap_sg_dev = Some(dev);
            }
            Event::DmaUnmapPage(m) | Event::DmaUnmapResource(m) => {
                self.summary.dma_events += 1;
                let dev = self.slots.dev(m.device);
                let hi = m.dma_addr.saturating_add(m.size.max(1) - 1);
                self.resolve(key, Resolver::Dev(dev, vec![(m.dma_addr & !0xfff, hi)]), false, true);
                self.dma_unmap_seen(ctx, dev, m.dma_addr, m.size, m.dir);
            }
            Event::DmaFree(m) | Event::DmaFreePages(m) => {
                self.summary.dma_events += 1;
                let dev = self.slots.dev(m.device);
                let hi = m.dma_addr.saturating_add(m.size.max(1) - 1);
                // The coherent free's unmap precedes or follows it depending on the path.
                self.resolve(key, Resolver::Dev(dev, vec![(m.dma_addr & !0xfff, hi)]), false, true);
                self.seq(key).unmap_sg_dev = Some(dev);
                self.dma_unmap_seen(ctx, dev, m.dma_addr, m.size, m.dir);
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
    }

    /// Keeps a finding, or counts it once the cap is reached.
    fn push_finding(&mut self, f: TraceFinding) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(f);
        } else {
            self.summary.findings_dropped += 1;
        }
    }

    fn seq(&mut self, key: (u32, u8)) -> &mut Seq {
        self.seqs.entry(key).or_default()
    }

    fn note_dtype(&mut self, domain: u64, dtype: Option<u64>) {
        if let Some(t) = dtype {
            if t == 0xb {
                self.summary.lazy_evidence += 1;
            } else if t == 3 {
                self.summary.strict_evidence += 1;
            }
            let s = self.slots.ptr(domain);
            let slot = self.slots.slot_mut(s);
            slot.dtype = Some(t);
            slot.flush_queue |= t == 0xb;
        }
    }

    // -------------------------------------------------------------- map

    fn on_map(&mut self, ctx: &Record, key: (u32, u8), iova: u64, paddr: u64, size: u64, stack: &[&[u8]]) {
        let meta = self.meta(ctx, stack);
        let Some(range) = IovaRange::from_start_len(Iova(iova), size) else {
            self.push_finding(
                self.plain(
                    ctx,
                    Finding::invalid(DomainId(u64::MAX), Iova(iova), size, iosan_core::InvalidArgs::ZeroSize),
                ),
            );
            return;
        };
        // Counts do not depend on the domain: apply them now, attribute the shadow entry when known.
        let probe = self.seq(key).kp_map.filter(|&(_, kiova, ksize, _)| iova >= kiova && iova - kiova < ksize.max(1));
        let slot = probe.map(|(dom, ..)| self.slots.ptr(dom));
        let pending = ShadowDomain::new(DomainId(u64::MAX), self.opts.pgsize_bitmap);
        let found =
            self.san.map(DomainId(slot.unwrap_or(usize::MAX) as u64), &pending, Iova(iova), PhysAddr(paddr), size);
        for f in found {
            let tf = self.plain(ctx, f);
            self.push_finding(tf);
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
                let a = self.slots.anon_for(range);
                self.insert_map(a, range, PhysAddr(paddr), meta);
                self.push_item(key, Item::Map { iova: range, phys: PhysAddr(paddr), meta, slot: Some(a) });
                return;
            }
            None => self.summary.maps_pending += 1,
        }
        self.push_item(key, Item::Map { iova: range, phys: PhysAddr(paddr), meta, slot });
    }

    /// Adds an item to a sequence. Resolved items are only kept (a few) to
    /// link the identities that later events of the same call give; only a
    /// sequence of unresolved items that keeps growing is settled early.
    fn push_item(&mut self, key: (u32, u8), item: Item) {
        let seq = self.seq(key);
        seq.items.push(item);
        if seq.items.len() > PENDING_MAP_WINDOW {
            // Unattributed maps this old will get no identity from this call any more.
            let cut = seq.items.len() - PENDING_MAP_WINDOW;
            let aged: Vec<(IovaRange, PhysAddr, MapMeta)> = seq.items[..cut]
                .iter()
                .filter_map(|i| match i {
                    Item::Map { iova, phys, meta, slot: None } => Some((*iova, *phys, *meta)),
                    _ => None,
                })
                .collect();
            if !aged.is_empty() {
                let mut n = 0usize;
                seq.items.retain(|i| {
                    n += 1;
                    n > cut || !matches!(i, Item::Map { slot: None, .. })
                });
                for (iova, phys, meta) in aged {
                    self.summary.maps_pending = self.summary.maps_pending.saturating_sub(1);
                    self.summary.maps_by.anonymous += 1;
                    let a = self.slots.anon_for(iova);
                    self.insert_map(a, iova, phys, meta);
                }
            }
        }
        let seq = self.seq(key);
        if seq.items.len() > MAX_SEQ_ITEMS {
            let resolved = |i: &Item| matches!(i, Item::Map { slot: Some(_), .. } | Item::Unmap { slot: Some(_), .. });
            let n_resolved = seq.items.iter().filter(|i| resolved(i)).count();
            let mut drop = n_resolved.saturating_sub(KEEP_RESOLVED);
            seq.items.retain(|i| {
                if drop > 0 && resolved(i) {
                    drop -= 1;
                    false
                } else {
                    true
                }
            });
            if seq.items.len() > MAX_SEQ_ITEMS {
                self.finish_seq(key);
            }
        }
    }

    /// Puts a mapping into a domain's shadow. If the shadow thinks part of
    /// it is already mapped, the kernel says otherwise (it mapped it): the
    /// stale entries are dropped first, and counted.
    fn insert_map(&mut self, slot: usize, range: IovaRange, phys: PhysAddr, meta: MapMeta) {
        let slot = self.slots.find(slot);
        let recent = &mut self.slots.slot_mut(slot).recent_unmaps;
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
            match self.slots.slot_mut(slot).shadow.map(range.start(), phys, len, meta) {
                ShadowMapResult::Mapped | ShadowMapResult::Invalid => return,
                ShadowMapResult::Overlap { .. } => {
                    self.summary.stale_mappings_replaced += 1;
                    let stale: Vec<_> = self.slots.slot(slot).shadow.overlapping(range).collect();
                    for m in stale {
                        self.apply_unmap_in(slot, m.iova.start(), m.len(), m.len(), 0, 0, true);
                    }
                }
            }
        }
    }

    // -------------------------------------------------------------- unmap

    fn on_unmap(&mut self, ctx: &Record, key: (u32, u8), iova: u64, size: u64, unmapped: u64) {
        let (probe, sg_dev) = {
            let seq = self.seq(key);
            let p = seq.kp_unmap.take().filter(|&(_, kiova, ..)| kiova == iova);
            (p, seq.unmap_sg_dev.take())
        };
        let slot = if let Some((dom, ..)) = probe {
            self.summary.unmaps_by.kprobe += 1;
            Some(self.slots.ptr(dom))
        } else if let Some(d) = sg_dev {
            self.summary.unmaps_by.device += 1;
            Some(d)
        } else {
            None
        };
        // An unmap of what this very sequence mapped and has not attributed (a map error path).
        let overlaps_pending = self.seq(key).items.iter().any(|it| match it {
            Item::Map { iova: r, slot: None, .. } => r.contains(Iova(iova)),
            _ => false,
        });
        if slot.is_none() && overlaps_pending {
            self.finish_seq(key);
        }
        match slot {
            Some(s) => {
                self.apply_unmap_in(s, Iova(iova), size, unmapped, ctx.ts_ns, ctx.origin.line, false);
                self.push_item(
                    key,
                    Item::Unmap {
                        iova: Iova(iova),
                        size,
                        unmapped,
                        slot: Some(s),
                        ts_ns: ctx.ts_ns,
                        line: ctx.origin.line,
                    },
                );
            }
            None if !self.identity_seen => {
                // Nothing identifies domains in this capture so far: decide now.
                self.resolve_unmap_by_content(Iova(iova), size, unmapped, ctx.ts_ns, ctx.origin.line);
            }
            None => {
                self.summary.unmaps_pending += 1;
                if !self.pending_keys.contains(&key) {
                    if self.pending_keys.len() >= MAX_PENDING_SEQS {
                        let oldest = self.pending_keys.remove(0);
                        self.finish_seq(oldest);
                    }
                    self.pending_keys.push(key);
                }
                self.push_item(
                    key,
                    Item::Unmap {
                        iova: Iova(iova),
                        size,
                        unmapped,
                        slot: None,
                        ts_ns: ctx.ts_ns,
                        line: ctx.origin.line,
                    },
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_unmap_in(
        &mut self,
        slot: usize,
        iova: Iova,
        size: u64,
        unmapped: u64,
        ts_ns: u64,
        line: u64,
        stale: bool,
    ) {
        let slot = self.slots.find(slot);
        let did_known = !self.slots.slot(slot).dids.is_empty();
        let (ticket, begin) = self.san.unmap_begin(DomainId(slot as u64), &self.slots.slot(slot).shadow, iova, size);
        for f in &begin {
            match f.kind {
                FindingKind::DoubleUnmap => {
                    self.summary.unmaps_without_translation += 1;
                    self.double_unmap(slot, iova, size, unmapped, ts_ns, line);
                }
                FindingKind::UnmapOverlapsUnmapped => self.summary.unmaps_partly_translated += 1,
                _ => {}
            }
        }
        let gone = IovaRange::from_start_len(iova, unmapped)
            .map(|r| self.slots.slot_mut(slot).shadow.unmap(r))
            .unwrap_or_default();
        let end = self.san.unmap_end(ticket, &self.slots.slot(slot).shadow, unmapped);
        if !end.is_empty() {
            self.summary.count_inconsistencies += end.len() as u64;
        }
        if unmapped > size {
            self.summary.unmapped_more_than_requested += 1;
        }
        if !stale && !gone.is_empty() {
            let recent = &mut self.slots.slot_mut(slot).recent_unmaps;
            if recent.len() >= MAX_RECENT_UNMAPS {
                recent.pop_first();
            }
            for m in &gone {
                recent.insert(m.iova.start().get(), (m.iova.last().get(), ts_ns));
            }
        }
        // Until a flush event shows up, keep only a bounded sample.
        let cap =
            if self.flush_events_seen || did_known { self.opts.max_unflushed } else { MAX_UNFLUSHED_BEFORE_FLUSH };
        if !stale && self.unflushed.len() < cap {
            let page_lg2 = self.opts.page_size.lg2();
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
    }

    /// An unmap found nothing in its domain's shadow. Reported only when
    /// certain: the kernel found nothing either (`unmapped_size=0`), or this
    /// capture saw the range unmapped before and not mapped since. Otherwise
    /// the mapping predates the capture.
    fn double_unmap(&mut self, slot: usize, iova: Iova, size: u64, unmapped: u64, ts_ns: u64, line: u64) {
        let last = iova.get().saturating_add(size.max(1) - 1);
        let earlier = self
            .slots
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
        f.device = self.slots.slot(slot).shadow.device().map(|d| d.to_string());
        f.domain = self.slots.label(slot);
        f.attribution = self.slots.slot(slot).via;
        f.set_doubt(self.lost_between(earlier.unwrap_or(0), ts_ns).then_some(Doubt::LostEvents));
        f.note = Some(match earlier {
            Some(t) => format!("already unmapped at {}, not mapped since", fmt_ts(t)),
            None => "the IOMMU found nothing mapped (unmapped_size=0)".into(),
        });
        self.push_finding(f);
    }

    // -------------------------------------------------------------- attribution

    fn resolve(&mut self, key: (u32, u8), r: Resolver, maps: bool, unmaps: bool) {
        let target = match &r {
            Resolver::Did(s, ..) | Resolver::Dev(s, _) => *s,
        };
        let in_range = |a: u64| match &r {
            Resolver::Did(_, lo, hi) => a >= *lo && a <= *hi,
            Resolver::Dev(_, ranges) => ranges.iter().any(|&(lo, hi)| a >= lo && a <= hi),
        };
        let via_dev = matches!(r, Resolver::Dev(..));
        let items = std::mem::take(&mut self.seq(key).items);
        let mut kept = Vec::with_capacity(items.len());
        for it in items {
            match it {
                Item::Map { iova, phys, meta, slot } if maps && in_range(iova.start().get()) => {
                    match slot {
                        Some(s) if self.slots.is_anonymous(s) => {
                            // Put in the anonymous space before any identity was seen: adopt it.
                            let a = self.slots.find(s);
                            let here =
                                self.slots.slot(a).shadow.overlapping(iova).any(|m| m.iova == iova && m.meta == meta);
                            if here {
                                self.slots.slot_mut(a).shadow.unmap(iova);
                                self.summary.maps_by.anonymous = self.summary.maps_by.anonymous.saturating_sub(1);
                                if via_dev {
                                    self.summary.maps_by.device += 1;
                                } else {
                                    self.summary.maps_by.did += 1;
                                }
                                self.insert_map(target, iova, phys, meta);
                            }
                            kept.push(Item::Map { iova, phys, meta, slot: Some(target) });
                        }
                        Some(s) => {
                            // Already attributed: the two identities are one domain.
                            let merged = self.slots.union(s, target);
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
                Item::Unmap { iova, size, unmapped, slot, ts_ns, line } if unmaps && in_range(iova.get()) => match slot
                {
                    Some(s) => {
                        let merged = self.slots.union(s, target);
                        kept.push(Item::Unmap { iova, size, unmapped, slot: Some(merged), ts_ns, line });
                    }
                    None => {
                        if via_dev {
                            self.summary.unmaps_by.device += 1;
                        } else {
                            self.summary.unmaps_by.did += 1;
                        }
                        self.summary.unmaps_pending = self.summary.unmaps_pending.saturating_sub(1);
                        self.apply_unmap_in(target, iova, size, unmapped, ts_ns, line, false);
                        kept.push(Item::Unmap { iova, size, unmapped, slot: Some(target), ts_ns, line });
                    }
                },
                other => kept.push(other),
            }
        }
        if via_dev {
            // A dma:* event closes its call: what it attributed is done.
            kept.retain(|i| matches!(i, Item::Map { slot: None, .. } | Item::Unmap { slot: None, .. }));
        }
        let seq = self.seq(key);
        kept.append(&mut seq.items);
        seq.items = kept;
    }

    /// Ends a sequence: what is still unattributed gets its best answer.
    fn finish_seq(&mut self, key: (u32, u8)) {
        if let Some(i) = self.pending_keys.iter().position(|k| *k == key) {
            self.pending_keys.remove(i);
        }
        let Some(seq) = self.seqs.get_mut(&key) else { return };
        let items = std::mem::take(&mut seq.items);
        seq.kp_map = None;
        seq.kp_unmap = None;
        seq.unmap_sg_dev = None;
        for it in items {
            match it {
                Item::Map { iova, phys, meta, slot: None } => {
                    self.summary.maps_pending = self.summary.maps_pending.saturating_sub(1);
                    self.summary.maps_by.anonymous += 1;
                    let a = self.slots.anon_for(iova);
                    self.insert_map(a, iova, phys, meta);
                }
                Item::Unmap { iova, size, unmapped, slot: None, ts_ns, line } => {
                    self.summary.unmaps_pending = self.summary.unmaps_pending.saturating_sub(1);
                    self.resolve_unmap_by_content(iova, size, unmapped, ts_ns, line);
                }
                _ => {}
            }
        }
    }

    /// An unmap nothing attributed: the domain whose shadow translates it.
    fn resolve_unmap_by_content(&mut self, iova: Iova, size: u64, unmapped: u64, ts_ns: u64, line: u64) {
        let Some(range) = IovaRange::from_start_len(iova, unmapped.max(size).max(1)) else { return };
        // A map still waiting for its identity in another sequence may be the one:
        // let those sequences settle first.
        let waiting: Vec<(u32, u8)> = if self.summary.maps_pending == 0 {
            Vec::new()
        } else {
            self.seqs
                .iter()
                .filter(|(_, s)| {
                    s.items
                        .iter()
                        .any(|i| matches!(i, Item::Map { iova: r, slot: None, .. } if r.intersect(range).is_some()))
                })
                .map(|(k, _)| *k)
                .collect()
        };
        for k in waiting {
            self.finish_seq(k);
        }
        // Candidates: domains whose shadow translates the range. Best first: a
        // mapping that starts at `iova` with the unmapped size, then one that
        // starts at `iova`, then the most recent.
        let mut candidates: Vec<(usize, (u8, u64))> = Vec::new();
        for i in 0..self.slots.slots.len() {
            if self.slots.find(i) != i {
                continue;
            }
            let sh = &self.slots.slot(i).shadow;
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
        match candidates.len() {
            0 => {
                self.summary.unmaps_by.none += 1;
                self.summary.unmaps_without_translation += 1;
                if unmapped == 0 && size > 0 {
                    // The kernel itself found nothing there: certain, though the domain is not known.
                    let mut f = TraceFinding::blank(FindingKind::DoubleUnmap);
                    f.time_ns = ts_ns;
                    f.line = line;
                    f.iova = Some(iova.get());
                    f.size = size;
                    f.set_doubt(self.lost_between(0, ts_ns).then_some(Doubt::LostEvents));
                    f.note = Some("the IOMMU found nothing mapped (unmapped_size=0); domain unknown".into());
                    self.push_finding(f);
                }
            }
            1 => {
                self.summary.unmaps_by.content += 1;
                self.apply_unmap_in(candidates[0].0, iova, size, unmapped, ts_ns, line, false);
            }
            _ => {
                // Ambiguous: the best-ranked mapping is the likeliest owner.
                self.summary.unmaps_by.ambiguous += 1;
                let best = candidates.first().map_or(0, |c| c.0);
                self.apply_unmap_in(best, iova, size, unmapped, ts_ns, line, false);
            }
        }
    }

    // -------------------------------------------------------------- lazy mode

    fn flushed(&mut self, ctx: &Record, slot: Option<usize>, iova: Option<(u64, u64)>) {
        if self.unflushed.is_empty() {
            return;
        }
        let mut slot = slot.map(|s| self.slots.find(s));
        if let (Some(d), None) = (slot, iova) {
            let r = self.link_flushed_did(d);
            self.slots.slot_mut(r).flush_queue = true;
            slot = Some(r);
        }
        let mut done = Vec::new();
        for (k, u) in &self.unflushed {
            let same = slot.is_none_or(|s| self.root_ro(u.slot) == s);
            let inside = iova.is_none_or(|(lo, hi)| u.iova.start().get() >= lo && u.iova.last().get() <= hi);
            if same && inside {
                done.push(*k);
            }
        }
        for k in done {
            if let Some(u) = self.unflushed.remove(&k) {
                if !self.slots.slot(self.root_ro(u.slot)).flush_queue {
                    continue;
                }
                if let Some(f) = u.first_free_ns {
                    let e = &mut self.summary.exposure;
                    e.longest_ns = e.longest_ns.max(ctx.ts_ns.saturating_sub(f));
                }
            }
        }
        // A whole-domain flush: the frees held for this domain were exposure.
        if let (Some(s), None) = (slot, iova) {
            let page_lg2 = self.opts.page_size.lg2();
            let held = std::mem::take(&mut self.slots.slot_mut(s).held);
            let e = &mut self.summary.exposure;
            for (pages, at) in held {
                e.frees += 1;
                e.pages += pages;
                e.bytes += pages << page_lg2;
                e.longest_ns = e.longest_ns.max(ctx.ts_ns.saturating_sub(at));
            }
        } else if let Some(s) = slot {
            // A range flush (strict): what was held up to now was not lazy exposure.
            self.slots.slot_mut(s).held.clear();
        }
    }

    /// A whole-domain flush for a VT-d domain id not yet tied to a domain
    /// (the capture started after the devices attached). The flush queue
    /// flushes a domain a fixed delay after the first unmap it queued, so
    /// the id belongs to the domain with the oldest unflushed unmap.
    fn link_flushed_did(&mut self, d: usize) -> usize {
        let did_only = {
            let s = self.slots.slot(d);
            s.ptrs.is_empty() && s.devices.is_empty() && !s.anonymous
        };
        if !did_only || self.unflushed.values().any(|u| self.root_ro(u.slot) == d) {
            return d;
        }
        let oldest = self
            .unflushed
            .values()
            .filter(|u| {
                let r = self.root_ro(u.slot);
                let s = self.slots.slot(r);
                s.dids.is_empty() && !s.anonymous
            })
            .min_by_key(|u| u.unmap_ns)
            .map(|u| u.slot);
        match oldest {
            Some(c) => {
                self.summary.dids_linked_by_flush += 1;
                self.slots.union(c, d)
            }
            None => d,
        }
    }

    fn root_ro(&self, i: usize) -> usize {
        self.slots.root_ro(i)
    }

    fn exposure_on_free(&mut self, ts_ns: u64, first: u64, n: u64) {
        if self.unflushed.is_empty() {
            return;
        }
        let last = first.saturating_add(n - 1);
        let lo = first.saturating_sub(self.unflushed_max_pages);
        let page_lg2 = self.opts.page_size.lg2();
        // Pages of the freed block inside unflushed ranges, per domain, each
        // counted once. Flush-queue domains count now; for other domains the
        // free is held until a whole-domain flush tells what they are.
        let slots = &self.slots;
        let root = |i: usize| slots.root_ro(i);
        let mut spans: Vec<(usize, u64, u64)> = Vec::new();
        for (&(ufirst, _), u) in self.unflushed.range_mut((lo, 0)..=(last, u64::MAX)) {
            let a = first.max(ufirst);
            let b = last.min(u.pfn_last);
            if a <= b {
                u.first_free_ns.get_or_insert(ts_ns);
                spans.push((root(u.slot), a, b));
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
            let slot = self.slots.slot_mut(d);
            if slot.flush_queue {
                counted += pages;
            } else if slot.held.len() < MAX_HELD_FREES {
                slot.held.push((pages, ts_ns));
            }
        }
        if counted > 0 {
            let e = &mut self.summary.exposure;
            e.frees += 1;
            e.pages += counted;
            e.bytes += counted << page_lg2;
        }
    }

    // -------------------------------------------------------------- DMA API checks

    fn dma_map_seen(&mut self, ctx: &Record, dev: usize, dma: u64, size: u64, dir: DmaDirection) {
        if self.dma_live.len() < MAX_DMA_LIVE {
            let dev = self.slots.find(dev);
            self.dma_live.insert((dev, dma), (size, dir, ctx.ts_ns));
        }
    }

    fn dma_unmap_seen(&mut self, ctx: &Record, dev: usize, dma: u64, size: u64, dir: DmaDirection) {
        let dev = self.slots.find(dev);
        let Some((msize, mdir, mts)) = self.dma_live.remove(&(dev, dma)) else { return };
        if msize != size || mdir != dir {
            let note = format!(
                "mapped {msize} bytes {} at {}, unmapped {size} bytes {}",
                dir_name(mdir),
                fmt_ts(mts),
                dir_name(dir)
            );
            self.dma_mismatch(ctx, dev, Some(dma), size, note);
        }
    }

    fn dma_mismatch(&mut self, ctx: &Record, dev: usize, dma: Option<u64>, size: u64, note: String) {
        let mut f = TraceFinding::at(FindingKind::DmaUnmapMismatch, ctx, self.comm(ctx));
        f.device = self.slots.slot(dev).shadow.device().map(|d| d.to_string());
        f.domain = self.slots.label(dev);
        f.attribution = self.slots.slot(dev).via;
        f.iova = dma;
        f.size = size;
        f.note = Some(note);
        self.push_finding(f);
    }

    // -------------------------------------------------------------- checks

    fn check(&mut self, ctx: &Record, kind: FindingKind, pfn: u64, order: u32) {
        let n = 1u64.checked_shl(order).unwrap_or(u64::MAX);
        if kind == FindingKind::FreedWhileMapped {
            self.exposure_on_free(ctx.ts_ns, pfn, n.max(1));
        }
        // A pending unmap elsewhere may concern these pages: settle such sequences first.
        // (The traced free happens after such an unmap returned.) Only those
        // unmaps are settled; the rest of their sequences keeps waiting.
        if self.summary.unmaps_pending == 0 {
            self.pending_keys.clear();
        }
        let keys: Vec<(u32, u8)> = self.pending_keys.clone();
        for k in keys {
            let Some(seq) = self.seqs.get_mut(&k) else { continue };
            if !seq.items.iter().any(|i| matches!(i, Item::Unmap { slot: None, .. })) {
                continue;
            }
            let items = std::mem::take(&mut seq.items);
            let (touching, rest): (Vec<Item>, Vec<Item>) = items.into_iter().partition(|i| match i {
                Item::Unmap { iova, size, unmapped, slot: None, .. } => {
                    self.unmap_touches(*iova, (*size).max(*unmapped), pfn, n.max(1))
                }
                _ => false,
            });
            if let Some(seq) = self.seqs.get_mut(&k) {
                seq.items = rest;
            }
            for it in touching {
                if let Item::Unmap { iova, size, unmapped, ts_ns, line, .. } = it {
                    self.summary.unmaps_pending = self.summary.unmaps_pending.saturating_sub(1);
                    self.resolve_unmap_by_content(iova, size, unmapped, ts_ns, line);
                }
            }
        }
        let found = {
            let src = SlotsSource(&self.slots);
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
    /// translation of pages `[pfn, pfn + n)` in any domain?
    fn unmap_touches(&self, iova: Iova, size: u64, pfn: u64, n: u64) -> bool {
        let Some(range) = IovaRange::from_start_len(iova, size.max(1)) else { return false };
        let page_lg2 = self.opts.page_size.lg2();
        let last = pfn.saturating_add(n - 1);
        self.slots.slots.iter().any(|s| {
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
            self.push_finding(tf);
            return;
        };
        let page_lg2 = self.opts.page_size.lg2();
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
            let key = m.as_ref().map(|m| (self.slots.find(m.domain.0 as usize), m.iova.get(), m.meta.when));
            if let Some(key) = key {
                if let Some(idx) = self.episodes.get(&key).and_then(|v| {
                    v.iter().copied().find(|&i| {
                        self.findings.get(i).is_some_and(|e| {
                            let e0 = e.pfn.unwrap_or(0);
                            first < e0 + e.npages.max(1) && e0 < first + npages
                        })
                    })
                }) {
                    let task = format!("{}-{}", self.comm(ctx), ctx.pid);
                    let max = self.opts.max_follow_ups;
                    if let Some(e) = self.findings.get_mut(idx) {
                        e.follow_up_count += 1;
                        if e.follow_ups.len() < max {
                            e.follow_ups.push(FollowUp { kind: f.kind, time_ns: ctx.ts_ns, task, pfn: first, npages });
                        }
                    }
                    continue;
                }
            }
            let mut tf = TraceFinding::at(f.kind, ctx, self.comm(ctx));
            tf.pfn = Some(first);
            tf.npages = npages;
            tf.phys = first.checked_shl(page_lg2);
            tf.count = f.count;
            tf.mappings = f.mappings.iter().map(|m| self.mapping_view(m)).collect();
            match &m {
                Some(m) => {
                    let s = self.slots.find(m.domain.0 as usize);
                    tf.device = m.device.as_ref().map(|d| d.to_string());
                    tf.domain = self.slots.label(s);
                    tf.attribution = self.slots.slot(s).via;
                    tf.iova = Some(m.iova.get().wrapping_add((first << page_lg2).wrapping_sub(m.phys.get())));
                    tf.size = npages << page_lg2;
                    tf.mapped_at = Some(self.site(m.meta));
                    // In the anonymous space, only an unmap given to a domain by a guess
                    // could have left this mapping behind by mistake.
                    let anon_doubt = self.slots.slot(s).anonymous && self.summary.unmaps_by.ambiguous > 0;
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
            let idx = self.findings.len();
            self.push_finding(tf);
            if let (Some(key), true) = (key, self.findings.len() > idx) {
                self.episodes.entry(key).or_default().push(idx);
            }
        }
    }

    fn mapping_view(&self, m: &Mapping) -> crate::report::MappingView {
        crate::report::MappingView {
            domain: self.label_ro(m.domain.0 as usize),
            device: m.device.as_ref().map(|d| d.to_string()),
            iova: m.iova.get(),
            phys: m.phys.get(),
            len: m.len,
            mapped_at: self.site(m.meta),
        }
    }

    fn label_ro(&self, i: usize) -> Option<String> {
        self.slots.label(self.slots.root_ro(i))
    }

    fn lost_between(&self, from_ns: u64, to_ns: u64) -> bool {
        self.lost.iter().any(|w| w.after_ns <= to_ns && w.before_ns.unwrap_or(u64::MAX) >= from_ns)
    }

    /// A finding that is not about a page run (map/unmap level).
    fn plain(&self, ctx: &Record, f: Finding) -> TraceFinding {
        let mut tf = TraceFinding::at(
            f.kind,
            ctx,
            self.comms.get(&ctx.pid).cloned().unwrap_or_else(|| String::from_utf8_lossy(ctx.comm).into()),
        );
        tf.pfn = f.pfn.map(|p| p.get());
        tf.npages = f.npages;
        tf.phys = f.pfn.and_then(|p| p.get().checked_shl(self.opts.page_size.lg2()));
        tf.iova = f.iova.map(|i| i.get());
        tf.size = f.size;
        tf.count = f.count;
        if let Some(d) = f.domain.filter(|d| (d.0 as usize) < self.slots.slots.len()) {
            tf.domain = self.label_ro(d.0 as usize);
            tf.attribution = self.slots.slot(d.0 as usize).via;
        }
        if let Some(why) = f.invalid {
            tf.note = Some(why.describe().to_string());
        }
        tf
    }

    /// `iommu:remove_device_from_group`: the device is gone (hot-unplug or
    /// release). When it was the last device of its domain, the domain is
    /// torn down with it (its default domain goes with the group).
    fn device_removed(&mut self, ctx: &Record, device: &[u8]) {
        let name: Arc<str> = String::from_utf8_lossy(device).into();
        let Some(&i) = self.slots.by_dev.get(&name) else { return };
        let s = self.slots.find(i);
        self.slots.by_dev.remove(&name);
        let slot = self.slots.slot_mut(s);
        slot.devices.retain(|d| *d != name);
        if slot.devices.is_empty() && !slot.anonymous {
            self.teardown(ctx, s, None);
        }
    }

    fn domain_free(&mut self, ctx: &Record, ptr: u64) {
        let Some(&i) = self.slots.by_ptr.get(&ptr) else { return };
        let s = self.slots.find(i);
        self.teardown(ctx, s, Some(ptr));
    }

    fn teardown(&mut self, ctx: &Record, s: usize, ptr: Option<u64>) {
        self.summary.domains_freed += 1;
        let found = self.san.domain_destroyed(DomainId(s as u64), &self.slots.slot(s).shadow);
        let device = self.slots.slot(s).shadow.device().map(|d| d.to_string());
        for f in found {
            let mut tf = self.plain(ctx, f);
            tf.device = device.clone();
            if let Some(ptr) = ptr {
                tf.domain = Some(format!("{ptr:#x}"));
                tf.attribution = Attribution::Kprobe;
            }
            tf.set_doubt(self.lost.iter().any(|w| w.after_ns <= ctx.ts_ns).then_some(Doubt::LostEvents));
            self.push_finding(tf);
        }
        let slot = self.slots.slot_mut(s);
        slot.shadow.clear();
        // The pointer may be reused by a later domain; devices move on too.
        let ptrs = std::mem::take(&mut slot.ptrs);
        let devs = std::mem::take(&mut slot.devices);
        let dids = std::mem::take(&mut slot.dids);
        for p in ptrs {
            self.slots.by_ptr.remove(&p);
        }
        for d in devs {
            if self.slots.by_dev.get(&d).is_some_and(|&x| self.slots.parent.get(x) == Some(&s) || x == s) {
                self.slots.by_dev.remove(&d);
            }
        }
        for d in dids {
            self.slots.by_did.remove(&d);
        }
        self.unflushed.retain(|_, u| u.slot != s);
    }

    /// Ends the replay and builds the report.
    #[must_use]
    pub fn finish(mut self) -> Report {
        for (label, n) in std::mem::take(&mut self.kind_counts) {
            *self.summary.events_by_kind.entry(label).or_insert(0) += n;
        }
        let keys: Vec<_> = self.seqs.keys().copied().collect();
        for k in keys {
            self.finish_seq(k);
        }
        let end = self.summary.last_ns;
        self.summary.exposure_measurable = self.flush_events_seen;
        if !self.flush_events_seen {
            // Without IOTLB flush events the window cannot be measured.
            self.summary.exposure = crate::report::Exposure::default();
            self.unflushed.clear();
        }
        for u in self.unflushed.values() {
            if !self.slots.slot(self.root_ro(u.slot)).flush_queue {
                continue;
            }
            if let Some(f) = u.first_free_ns {
                self.summary.exposure.longest_ns = self.summary.exposure.longest_ns.max(end.saturating_sub(f));
                self.summary.exposure.unflushed_at_end += 1;
            }
        }
        // Lost-event windows (confidence warnings) and live mappings, kept after the loops.
        let mut extra: Vec<TraceFinding> = Vec::new();
        for w in &self.lost {
            let mut f = TraceFinding::blank(FindingKind::LostEvents);
            f.time_ns = w.after_ns;
            f.line = w.line;
            f.cpu = w.cpu;
            f.set_doubt(Some(Doubt::LostEvents));
            f.note = Some(format!(
                "{} events lost on {} between {} and {}",
                w.events.map_or("some".to_string(), |n| n.to_string()),
                w.cpu.map_or("a CPU".to_string(), |c| format!("CPU {c}")),
                fmt_ts(w.after_ns),
                w.before_ns.map_or("the end".to_string(), fmt_ts)
            ));
            extra.push(f);
        }
        // Live mappings at the end, grouped by domain.
        let page_lg2 = self.opts.page_size.lg2();
        let mut groups: Vec<LiveGroup> = Vec::new();
        for i in 0..self.slots.slots.len() {
            if self.slots.find(i) != i || self.slots.slot(i).shadow.is_empty() {
                continue;
            }
            let slot = self.slots.slot(i);
            let device = slot.shadow.device().map(|d| d.to_string());
            let domain = self.slots.label(i);
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
                f.time_ns = end;
                f.mapped_at = Some(self.site(m.meta));
                extra.push(f);
            }
            groups.push(g);
        }
        for f in extra {
            self.push_finding(f);
        }
        self.summary.live_at_end = groups;
        let mut domains = 0;
        for i in 0..self.slots.slots.len() {
            if self.slots.find(i) == i && !self.slots.slot(i).anonymous {
                domains += 1;
            }
        }
        self.summary.domains = domains;
        self.summary.anonymous_space_used = !self.slots.anon.is_empty();
        self.summary.merges_refused = self.slots.merge_refused;
        self.summary.domains_over_cap = self.slots.domains_over_cap;
        let st = self.san.stats();
        self.summary.identity_pages_freed = st.identity_pages_freed + st.identity_pages_allocated;
        self.summary.untracked_bytes = st.untracked_bytes;
        self.summary.counter_bytes = st.counter_bytes;
        self.summary.lost_windows = self.lost.clone();
        self.summary.mode = if self.summary.lazy_evidence > 0 {
            "lazy"
        } else if self.summary.strict_evidence > 0 || self.summary.unmaps_by.did > 0 {
            "strict"
        } else {
            "unknown"
        };
        self.findings.sort_by_key(|f| (f.kind == FindingKind::MappedAtEnd, f.time_ns, f.line));
        Report { findings: self.findings, summary: self.summary }
    }
}

impl RecordSink for Analyzer {
    fn record(&mut self, rec: &Record<'_>) {
        self.event(rec);
    }

    /// Counts a line that was skipped, with why.
    fn skipped(&mut self, reason: &str, origin: Origin) {
        let e = self.summary.skipped.entry(reason.to_string()).or_insert(SkipCount {
            count: 0,
            first_line: origin.line,
            first_offset: origin.offset,
        });
        e.count += 1;
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
        if self.summary.meta.len() < 64 {
            self.summary.meta.push((key.to_string(), value.chars().take(512).collect()));
        }
    }

    fn overwritten(&mut self, events: u64) {
        self.summary.overwritten_events = self.summary.overwritten_events.saturating_add(events);
    }
}

enum Resolver {
    Did(usize, u64, u64),
    Dev(usize, Vec<(u64, u64)>),
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

/// Events that belong to a map or unmap call sequence on one CPU.
fn is_sequence_event(ev: &Event) -> bool {
    matches!(
        ev,
        Event::IommuMap(_)
            | Event::IommuUnmap(_)
            | Event::ProbeMap(_)
            | Event::ProbeUnmap(_)
            | Event::ProbeMapReturn(_)
            | Event::ProbeUnmapReturn(_)
            | Event::ProbeAttach(_)
            | Event::CacheTagAssign(_)
            | Event::CacheTagFlushRange(_)
            | Event::CacheTagFlushRangeNp(_)
            | Event::QiSubmit
            | Event::DmaMapPage(_)
            | Event::DmaMapResource(_)
            | Event::DmaUnmapPage(_)
            | Event::DmaUnmapResource(_)
            | Event::DmaMapSg(_)
            | Event::DmaUnmapSg(_)
            | Event::DmaAlloc(_)
            | Event::DmaAllocPages(_)
            | Event::DmaFree(_)
            | Event::DmaFreePages(_)
            | Event::DmaAllocSgt(_)
            | Event::DmaFreeSgt(_)
            | Event::AttachDeviceToDomain { .. }
            | Event::Console { .. }
            | Event::PageAlloc(_)
            | Event::PageFree(_)
            | Event::PageFreeBatched(_)
    )
}

struct SlotsSource<'a>(&'a Slots);

impl MappingSource for SlotsSource<'_> {
    fn mappings_covering(&self, phys: PhysAddr, len: u64, visit: &mut dyn FnMut(Mapping)) {
        for (i, s) in self.0.slots.iter().enumerate() {
            if self.0.parent.get(i) == Some(&i) && !s.shadow.is_empty() {
                s.shadow.mappings_covering(phys, len, visit);
            }
        }
    }
}

fn dir_name(d: DmaDirection) -> &'static str {
    match d {
        DmaDirection::Bidirectional => "BIDIRECTIONAL",
        DmaDirection::ToDevice => "TO_DEVICE",
        DmaDirection::FromDevice => "FROM_DEVICE",
        DmaDirection::None => "NONE",
    }
}

/// Seconds with 6 decimals, as ftrace prints them.
#[must_use]
pub fn fmt_ts(ns: u64) -> String {
    format!("{}.{:06}", ns / 1_000_000_000, (ns % 1_000_000_000) / 1000)
}
