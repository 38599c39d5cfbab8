//! Domain identity: the store of domains and the names they are known by.
//!
//! One [`Slot`] per IOMMU domain, holding its [`ShadowDomain`] (IOVA →
//! physical map, the only place a trace shows what a domain maps) and the
//! identities seen for it: kprobe domain pointers, VT-d domain ids (`did`),
//! device names. Aliases of one domain are merged with union-find
//! ([`Domains::union`]); a merge is refused when the two shadows overlap,
//! since then they cannot be one domain. Maps that nothing identifies go
//! to anonymous IOVA spaces, stacked in layers because IOVAs of different
//! domains collide ([`Domains::anon_for`]).
//!
//! This room only stores and merges. Which domain a given map or unmap
//! belongs to is decided in `attribute`.

use std::collections::BTreeMap;
use std::sync::Arc;

use iosan_core::{DomainId, IovaRange, Mapping, MappingSource, PhysAddr, ShadowDomain};

use crate::report::{Attribution, Layer};

/// Keys come from the capture; the map is bounded, so chosen collisions
/// cost time, never memory.
type HashMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<iosan_core::hash::FastHasher>>;

/// Most anonymous IOVA spaces (layers of colliding IOVAs).
const MAX_ANON_LAYERS: usize = 64;
/// Most domains (pointers, VT-d ids, devices) tracked; more share one anonymous space.
pub(super) const MAX_DOMAINS: usize = 1 << 16;
/// Most devices listed per domain.
const MAX_DEVICES_PER_DOMAIN: usize = 64;
/// Most DMA-API layer spaces per device (buffers sharing a page overlap).
const MAX_DMA_LAYERS: usize = 16;

/// A range removed by an unmap that asked for less (the IOMMU removed the
/// whole block around its IOVA).
#[derive(Clone, Copy, Debug)]
pub(super) struct BlockGone {
    /// Last IOVA of the range.
    pub(super) last: u64,
    /// When, ns.
    pub(super) ts_ns: u64,
    /// The unmap's IOVA and asked size.
    pub(super) asked: (u64, u64),
    /// The whole range it removed: first IOVA and bytes (`unmapped_size`).
    pub(super) removed: (u64, u64),
}

/// One domain: its shadow, its identities, and the per-domain facts other
/// rooms keep (recent unmaps for double-unmap certainty, lazy-mode state).
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) shadow: ShadowDomain,
    pub(super) ptrs: Vec<u64>,
    pub(super) dids: Vec<u32>,
    pub(super) devices: Vec<Arc<str>>,
    pub(super) dtype: Option<u64>,
    pub(super) anonymous: bool,
    /// How this domain's identity was learnt.
    pub(super) via: Attribution,
    /// Ranges unmapped recently and not mapped since: start -> (last, time ns).
    pub(super) recent_unmaps: BTreeMap<u64, (u64, u64)>,
    /// Ranges an unmap removed beyond what it asked (a whole block), not
    /// mapped since: start -> what removed them.
    pub(super) block_removed: BTreeMap<u64, BlockGone>,
    /// Longest range ever put in `recent_unmaps` / `block_removed`, bytes:
    /// bounds how far below an IOVA an overlapping entry can start.
    pub(super) recent_max_span: u64,
    pub(super) block_max_span: u64,
    /// A lazy (flush-queue) domain: DMA-FQ type, or flushed whole by the queue.
    pub(super) flush_queue: bool,
    /// Frees inside unflushed ranges, held until a whole-domain flush shows
    /// this is a flush-queue domain: (pages, time of the free).
    pub(super) held: Vec<(u64, u64)>,
    /// Which layer saw these mappings: an IOMMU domain, or a device's
    /// DMA-API mappings counted on their own (no `iommu:map` covered them).
    pub(super) layer: Layer,
}

impl Slot {
    fn empty(shadow: ShadowDomain, via: Attribution, anonymous: bool) -> Self {
        Self {
            shadow,
            ptrs: Vec::new(),
            dids: Vec::new(),
            devices: Vec::new(),
            dtype: None,
            anonymous,
            via,
            recent_unmaps: BTreeMap::new(),
            block_removed: BTreeMap::new(),
            recent_max_span: 0,
            block_max_span: 0,
            flush_queue: false,
            held: Vec::new(),
            layer: Layer::Iommu,
        }
    }
}

/// Every domain of the capture, indexed by slot number (also its
/// [`DomainId`] for the sanitizer), with union-find over aliases.
#[derive(Default)]
pub(super) struct Domains {
    slots: Vec<Slot>,
    parent: Vec<usize>,
    by_ptr: HashMap<u64, usize>,
    by_did: HashMap<u32, usize>,
    by_dev: HashMap<Arc<str>, usize>,
    /// The last `by_dev` hit: most `dma:*` events in a row name one device.
    /// Cleared whenever `by_dev` changes.
    last_dev: Option<(Arc<str>, usize)>,
    /// Anonymous IOVA spaces: maps nothing identified. IOVAs of different
    /// domains collide, so a map that overlaps one layer goes to the next.
    anon: Vec<usize>,
    merge_refused: u64,
    pgsize_bitmap: u64,
    /// The shared space of identities past the cap.
    overflow: Option<usize>,
    domains_over_cap: u64,
    /// DMA-API layer spaces per device, stacked like the anonymous ones:
    /// buffers that share a page overlap, so an overlapping one goes to
    /// the next space. Never merged with an IOMMU domain.
    dma_layers: HashMap<Arc<str>, Vec<usize>>,
}

impl Domains {
    /// No domains; shadows assume the IOMMU page sizes `pgsize_bitmap`.
    pub(super) fn new(pgsize_bitmap: u64) -> Self {
        Self { pgsize_bitmap, ..Self::default() }
    }

    fn new_slot(&mut self, via: Attribution, anonymous: bool) -> usize {
        let id = self.slots.len();
        let shadow = ShadowDomain::new(DomainId(id as u64), self.pgsize_bitmap);
        self.slots.push(Slot::empty(shadow, via, anonymous));
        self.parent.push(id);
        id
    }

    /// Slots ever created (merged ones included).
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when `i` is the root of its aliases (a domain of its own).
    #[inline]
    pub(super) fn is_root(&self, i: usize) -> bool {
        self.parent.get(i) == Some(&i)
    }

    /// Every slot, merged ones included (their shadows are empty).
    pub(super) fn iter(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.slots.iter()
    }

    /// The root of `i`'s aliases, compressing the path.
    #[inline]
    pub(super) fn find(&mut self, mut i: usize) -> usize {
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

    /// The root of a domain's aliases, without path compression.
    #[inline]
    pub(super) fn root_ro(&self, mut i: usize) -> usize {
        while let Some(&p) = self.parent.get(i) {
            if p == i {
                break;
            }
            i = p;
        }
        i
    }

    #[inline]
    pub(super) fn slot(&self, i: usize) -> &Slot {
        &self.slots[i.min(self.slots.len() - 1)]
    }

    #[inline]
    pub(super) fn slot_mut(&mut self, i: usize) -> &mut Slot {
        let n = self.slots.len() - 1;
        &mut self.slots[i.min(n)]
    }

    /// The domain of kprobe pointer `p` (new if unseen).
    pub(super) fn ptr(&mut self, p: u64) -> usize {
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

    /// The domain of kprobe pointer `p`, if seen.
    pub(super) fn known_ptr(&mut self, p: u64) -> Option<usize> {
        let &i = self.by_ptr.get(&p)?;
        Some(self.find(i))
    }

    /// The domain of VT-d domain id `d` (new if unseen).
    pub(super) fn did(&mut self, d: u32) -> usize {
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

    /// The domain of device `name` (new if unseen).
    pub(super) fn dev(&mut self, name: &[u8]) -> usize {
        if let Some((n, i)) = &self.last_dev {
            if n.as_bytes() == name {
                let i = *i;
                return self.find(i);
            }
        }
        // Look up without allocating (device names are ASCII in practice).
        if let Some((n, &i)) = std::str::from_utf8(name).ok().and_then(|n| self.by_dev.get_key_value(n)) {
            self.last_dev = Some((n.clone(), i));
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

    /// The domain device `name` was last seen in, if any (not its root).
    pub(super) fn known_dev(&self, name: &Arc<str>) -> Option<usize> {
        self.by_dev.get(name).copied()
    }

    /// Forgets which domain device `name` is in (it moves or goes away).
    pub(super) fn forget_dev(&mut self, name: &Arc<str>) {
        self.last_dev = None;
        self.by_dev.remove(name);
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

    /// Device `name` uses domain `i`.
    pub(super) fn add_device(&mut self, i: usize, name: Arc<str>) {
        let i = self.find(i);
        let s = self.slot_mut(i);
        if !s.devices.contains(&name) && s.devices.len() < MAX_DEVICES_PER_DOMAIN {
            s.devices.push(name.clone());
            let label: Option<Arc<str>> = Some(s.devices.join(",").into());
            s.shadow.set_device(label);
        }
        self.last_dev = None;
        self.by_dev.insert(name, i);
    }

    pub(super) fn is_anonymous(&mut self, i: usize) -> bool {
        let r = self.find(i);
        self.slot(r).anonymous
    }

    /// The first anonymous layer where `range` is free (a new one if none is).
    pub(super) fn anon_for(&mut self, range: IovaRange) -> usize {
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

    /// The DMA-API layer space of device `name` where `range` is free (a
    /// new one if none is), or `None` past the caps.
    pub(super) fn dma_layer(&mut self, name: &Arc<str>, range: IovaRange) -> Option<usize> {
        if let Some(layers) = self.dma_layers.get(name) {
            if let Some(&l) = layers.iter().find(|&&l| self.slot(l).shadow.first_mapped_in(range).is_none()) {
                return Some(l);
            }
            if layers.len() >= MAX_DMA_LAYERS {
                return None;
            }
        }
        if self.slots.len() >= MAX_DOMAINS
            || (self.dma_layers.len() >= MAX_DOMAINS && !self.dma_layers.contains_key(name))
        {
            return None;
        }
        let l = self.new_slot(Attribution::Device, false);
        let s = self.slot_mut(l);
        s.layer = Layer::DmaApi;
        s.devices.push(name.clone());
        s.shadow.set_device(Some(name.clone()));
        self.dma_layers.entry(name.clone()).or_default().push(l);
        Some(l)
    }

    /// True when slot `i` is a DMA-API layer space (not an IOMMU domain).
    pub(super) fn is_dma_layer(&self, i: usize) -> bool {
        self.slot(i).layer == Layer::DmaApi
    }

    /// Merges two aliases of one domain. Refused (and counted) when their
    /// mappings overlap, which means they are not the same domain.
    pub(super) fn union(&mut self, a: usize, b: usize) -> usize {
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
            Slot::empty(ShadowDomain::new(DomainId(small as u64), 1 << 12), Attribution::Device, false),
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

    /// Domain `s` was freed: its pointers may be reused by a later domain,
    /// its devices and ids move on. Its shadow is cleared.
    pub(super) fn forget(&mut self, s: usize) {
        let slot = self.slot_mut(s);
        slot.shadow.clear();
        let ptrs = std::mem::take(&mut slot.ptrs);
        let devs = std::mem::take(&mut slot.devices);
        let dids = std::mem::take(&mut slot.dids);
        for p in ptrs {
            self.by_ptr.remove(&p);
        }
        for d in devs {
            if self.by_dev.get(&d).is_some_and(|&x| self.parent.get(x) == Some(&s) || x == s) {
                self.last_dev = None;
                self.by_dev.remove(&d);
            }
        }
        for d in dids {
            self.by_did.remove(&d);
        }
    }

    /// The label of slot `i` itself: pointer, `did:N`, `dev:NAME`, or none (anonymous).
    pub(super) fn label(&self, i: usize) -> Option<String> {
        let s = self.slot(i);
        if s.layer == Layer::DmaApi {
            return s.devices.first().map(|d| format!("dma-api:{d}"));
        }
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

    /// The label of `i`'s domain (its root).
    pub(super) fn label_ro(&self, i: usize) -> Option<String> {
        self.label(self.root_ro(i))
    }

    /// Domains identified (roots that are not anonymous or DMA-API layers).
    pub(super) fn identified(&self) -> u64 {
        (0..self.slots.len())
            .filter(|&i| self.is_root(i) && !self.slot(i).anonymous && self.slot(i).layer == Layer::Iommu)
            .count() as u64
    }

    /// Whether any map went to an anonymous space.
    pub(super) fn anonymous_used(&self) -> bool {
        !self.anon.is_empty()
    }

    /// Alias merges refused because the shadows overlapped.
    pub(super) fn merges_refused(&self) -> u64 {
        self.merge_refused
    }

    /// Identities folded into the shared space past the cap.
    pub(super) fn over_cap_count(&self) -> u64 {
        self.domains_over_cap
    }

    /// Every live mapping of every domain, for the sanitizer's page checks.
    pub(super) fn source(&self) -> DomainsSource<'_> {
        DomainsSource(self)
    }
}

/// The live mappings of all domains, as the sanitizer asks for them.
pub(super) struct DomainsSource<'a>(&'a Domains);

impl MappingSource for DomainsSource<'_> {
    fn mappings_covering(&self, phys: PhysAddr, len: u64, visit: &mut dyn FnMut(Mapping)) {
        for (i, s) in self.0.slots.iter().enumerate() {
            if self.0.parent.get(i) == Some(&i) && !s.shadow.is_empty() {
                s.shadow.mappings_covering(phys, len, visit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use iosan_core::{Iova, MapMeta};

    use super::*;

    fn r(start: u64, len: u64) -> IovaRange {
        IovaRange::from_start_len(Iova(start), len).unwrap()
    }

    fn map(d: &mut Domains, slot: usize, start: u64, len: u64) {
        let m = d.slot_mut(slot).shadow.map(Iova(start), PhysAddr(start + 0x1000_0000), len, MapMeta::default());
        assert_eq!(m, iosan_core::ShadowMapResult::Mapped);
    }

    #[test]
    fn aliases_merge_and_keep_every_identity() {
        let mut d = Domains::new(0x1000);
        let p = d.ptr(0xffff_0000);
        let v = d.did(7);
        map(&mut d, v, 0x1000, 0x1000);
        let root = d.union(p, v);
        assert_eq!(d.find(p), root);
        assert_eq!(d.find(v), root);
        assert_eq!(d.ptr(0xffff_0000), root);
        assert_eq!(d.did(7), root);
        assert_eq!(d.slot(root).via, Attribution::Kprobe, "the best attribution wins");
        assert_eq!(d.slot(root).shadow.len(), 1, "the mapping moved to the merged domain");
        assert_eq!(d.label(root).as_deref(), Some("0xffff0000"));
        assert_eq!(d.identified(), 1);
    }

    #[test]
    fn overlapping_aliases_are_not_merged() {
        let mut d = Domains::new(0x1000);
        let a = d.dev(b"0000:00:02.0");
        let b = d.dev(b"0000:00:03.0");
        map(&mut d, a, 0x1000, 0x2000);
        map(&mut d, b, 0x2000, 0x1000);
        assert_eq!(d.union(a, b), a);
        assert_ne!(d.find(a), d.find(b));
        assert_eq!(d.merges_refused(), 1);
        assert_eq!(d.identified(), 2);
    }

    #[test]
    fn colliding_anonymous_maps_stack_in_layers() {
        let mut d = Domains::new(0x1000);
        let first = d.anon_for(r(0x1000, 0x1000));
        map(&mut d, first, 0x1000, 0x1000);
        let second = d.anon_for(r(0x1000, 0x1000));
        assert_ne!(first, second, "the same IOVA twice: another domain");
        assert_eq!(d.anon_for(r(0x3000, 0x1000)), first, "free in the first layer");
        assert!(d.anonymous_used());
        assert!(d.is_anonymous(second));
        assert_eq!(d.label(second), None);
        let v = d.did(1);
        assert_eq!(d.union(first, v), first, "anonymous spaces never merge");
    }

    #[test]
    fn a_freed_domain_releases_its_names() {
        let mut d = Domains::new(0x1000);
        let p = d.ptr(0xabc0);
        d.add_device(p, "0000:00:04.0".into());
        map(&mut d, p, 0x1000, 0x1000);
        assert_eq!(d.known_dev(&"0000:00:04.0".into()), Some(p));
        d.forget(p);
        assert!(d.slot(p).shadow.is_empty());
        assert_eq!(d.known_ptr(0xabc0), None);
        assert_eq!(d.known_dev(&"0000:00:04.0".into()), None);
        assert_ne!(d.ptr(0xabc0), p, "a reused pointer is a new domain");
    }
}
