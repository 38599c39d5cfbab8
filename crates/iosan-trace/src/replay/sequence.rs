//! Call sequences: the events of one map or unmap call, per CPU and context.
//!
//! An `iommu:map`/`unmap` names no domain; the events around it in the
//! same call do (a kprobe before it, a `dma:*` event after it, a VT-d flush
//! in between). Events of one call run on one CPU, in one execution
//! context, for one task, back to back; a sequence is keyed by
//! (CPU, context) and ends when another task runs there or an event that
//! belongs to no call comes. This room holds the sequences and their
//! waiting items; `attribute` decides what the items belong to.

use iosan_core::{Iova, IovaRange, MapMeta, PhysAddr};

use crate::parse::event::Event;
use crate::report::TraceFinding;

/// Keys come from the capture; the map is bounded, so chosen collisions
/// cost time, never memory.
type HashMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<iosan_core::hash::FastHasher>>;

/// (CPU, execution context index).
pub(super) type SeqKey = (u32, u8);

/// Items after which a sequence's unattributed maps stop waiting for an identity.
const PENDING_MAP_WINDOW: usize = 512;
/// Most items a sequence holds.
const MAX_SEQ_ITEMS: usize = 8192;
/// Most sequences with unattributed unmaps waiting at once; the oldest is settled first.
const MAX_PENDING_SEQS: usize = 1024;
/// Resolved items kept when a sequence is pruned.
const KEEP_RESOLVED: usize = 256;
/// Most preempted tasks whose open kprobe calls are kept.
const MAX_PREEMPTED: usize = 64;

/// One `iommu:unmap`: `size` bytes asked at `iova`, `unmapped` bytes
/// removed (the kernel's return value), at `ts_ns`, read from `line`;
/// `meta` is its site (task, CPU, stack) packed as a map's is.
#[derive(Clone, Copy, Debug)]
pub(super) struct Unmap {
    pub(super) iova: Iova,
    pub(super) size: u64,
    pub(super) unmapped: u64,
    pub(super) ts_ns: u64,
    pub(super) line: u64,
    pub(super) meta: MapMeta,
}

/// A map or unmap of a sequence, with the domain slot once known.
#[derive(Clone, Debug)]
pub(super) enum Item {
    Map { iova: IovaRange, phys: PhysAddr, meta: MapMeta, slot: Option<usize> },
    Unmap { u: Unmap, slot: Option<usize> },
}

impl Item {
    fn waits(&self) -> (usize, usize) {
        match self {
            Item::Map { slot: None, .. } => (1, 0),
            Item::Unmap { slot: None, .. } => (0, 1),
            _ => (0, 0),
        }
    }
}

/// A sequence's items, with counts of those still unattributed: a CPU's
/// sequence can hold thousands of attributed items (up to
/// [`MAX_SEQ_ITEMS`]), and every page event, unmap and push asks whether
/// it waits for anything. Read through `Deref`; every change goes through
/// a method that keeps the counts.
#[derive(Default, Debug)]
pub(super) struct Items {
    v: Vec<Item>,
    /// Unattributed maps in `v`.
    waiting_maps: usize,
    /// Unattributed unmaps in `v`.
    waiting_unmaps: usize,
    /// `v[..clean]` holds no unattributed map: those aged out
    /// ([`PENDING_MAP_WINDOW`]) were taken, so a push looks only past it.
    clean: usize,
}

impl std::ops::Deref for Items {
    type Target = [Item];
    fn deref(&self) -> &[Item] {
        &self.v
    }
}

impl Items {
    /// Unattributed maps held.
    pub(super) fn waiting_maps(&self) -> usize {
        self.waiting_maps
    }

    /// Unattributed unmaps held.
    pub(super) fn waiting_unmaps(&self) -> usize {
        self.waiting_unmaps
    }

    /// Takes every item out.
    pub(super) fn take(&mut self) -> Vec<Item> {
        let v = std::mem::take(&mut self.v);
        *self = Self::default();
        v
    }

    /// Holds `v` instead of the items.
    pub(super) fn set(&mut self, v: Vec<Item>) {
        let (m, u) = v.iter().map(Item::waits).fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        *self = Self { v, waiting_maps: m, waiting_unmaps: u, clean: 0 };
    }

    fn push(&mut self, item: Item) {
        let (m, u) = item.waits();
        self.waiting_maps += m;
        self.waiting_unmaps += u;
        self.v.push(item);
    }

    fn retain(&mut self, f: impl FnMut(&Item) -> bool) {
        let mut v = std::mem::take(&mut self.v);
        v.retain(f);
        self.set(v);
    }
}

/// A kprobe on `__iommu_map`/`__iommu_unmap`: (domain, iova, size, domain type).
pub(super) type ProbeCall = (u64, u64, u64, Option<u64>);

/// An open `__iommu_map`/`iommu_map_nosync` call: its entry kprobe came,
/// its return has not yet.
#[derive(Clone, Copy, Debug)]
pub(super) struct MapCall {
    /// The domain pointer, IOVA and size the call was asked to map.
    pub(super) domain: u64,
    pub(super) iova: u64,
    pub(super) size: u64,
    /// The call's `iommu:map` (range and domain slot): 6.12 traces only a
    /// map that succeeded, 7.x a failed one too, with the part it mapped.
    pub(super) traced: Option<(IovaRange, Option<usize>)>,
    /// Bytes the call's own unmap (the kernel's roll-back) removed.
    pub(super) rolled_back: Option<u64>,
}

/// One call sequence.
#[derive(Default, Debug)]
pub(super) struct Seq {
    pub(super) pid: u32,
    pub(super) items: Items,
    pub(super) kp_map: Option<ProbeCall>,
    pub(super) kp_unmap: Option<ProbeCall>,
    /// The device of a `dma_unmap_sg`/coherent free that the unmaps follow.
    pub(super) unmap_sg_dev: Option<usize>,
    /// The domain of a `__iommu_attach_device` kprobe.
    pub(super) attach_slot: Option<usize>,
    /// A VT-d `cache_tag_assign` waiting for its device.
    pub(super) pending_did: Option<u32>,
    /// The open map call, with its kprobes.
    pub(super) map_call: Option<MapCall>,
    /// A zero-size `iommu:map` at this IOVA, and its `invalid-map-args`
    /// finding, held until the call shows whether the map failed (7.x
    /// traces a failed map that mapped nothing as size 0, then unmaps 0).
    pub(super) zero_map: Option<(u64, Box<TraceFinding>)>,
    /// A `map-failed` finding was made for this call from its kprobes or
    /// its 7.x shape: the call's `dma_map_*` event that returned
    /// `DMA_MAPPING_ERROR` is the same failure.
    pub(super) map_failed_said: bool,
}

/// Every open sequence, and which hold unattributed unmaps (oldest first).
#[derive(Default)]
pub(super) struct Sequences {
    seqs: HashMap<SeqKey, Seq>,
    pending: Vec<SeqKey>,
    /// Sequences holding a zero-size map (`Seq::zero_map`).
    pub(super) zero_maps_held: usize,
    /// Open kprobe calls of tasks another task preempted on a CPU: (key,
    /// pid, map call, unmap call), oldest first.
    preempted: Vec<(SeqKey, u32, Option<ProbeCall>, Option<ProbeCall>)>,
}

impl Sequences {
    /// The sequence of `key` (created empty).
    #[inline]
    pub(super) fn get(&mut self, key: SeqKey) -> &mut Seq {
        self.seqs.entry(key).or_default()
    }

    /// The sequence of `key`, if it exists.
    #[inline]
    pub(super) fn existing(&mut self, key: SeqKey) -> Option<&mut Seq> {
        self.seqs.get_mut(&key)
    }

    /// An event of task `pid` comes on `key`: true when the open sequence
    /// there must end first (another task, or an event of no call).
    #[inline]
    pub(super) fn must_end(&mut self, key: SeqKey, pid: u32, continues: bool) -> bool {
        let seq = self.get(key);
        let open = !seq.items.is_empty()
            || seq.kp_map.is_some()
            || seq.kp_unmap.is_some()
            || seq.unmap_sg_dev.is_some()
            || seq.zero_map.is_some();
        open && (seq.pid != pid || !continues)
    }

    /// Another task is about to run on `key`: keep the open kprobe calls of
    /// the task there, which may have been preempted between a kprobe and
    /// its tracepoint (Linux 7.x preempts inside `iommu_map_nosync`).
    pub(super) fn stash_preempted(&mut self, key: SeqKey) {
        let Some(seq) = self.seqs.get(&key) else { return };
        if seq.kp_map.is_none() && seq.kp_unmap.is_none() {
            return;
        }
        let e = (key, seq.pid, seq.kp_map, seq.kp_unmap);
        self.preempted.retain(|p| !(p.0 == key && p.1 == e.1));
        if self.preempted.len() >= MAX_PREEMPTED {
            self.preempted.remove(0);
        }
        self.preempted.push(e);
    }

    /// Task `pid` runs on `key` again: its stashed kprobe calls come back
    /// where its sequence has none.
    #[inline]
    pub(super) fn resume(&mut self, key: SeqKey, pid: u32) {
        if self.preempted.is_empty() {
            return;
        }
        if let Some(i) = self.preempted.iter().position(|p| p.0 == key && p.1 == pid) {
            let (_, _, m, u) = self.preempted.remove(i);
            let seq = self.get(key);
            seq.kp_map = seq.kp_map.or(m);
            seq.kp_unmap = seq.kp_unmap.or(u);
        }
    }

    /// Every key.
    pub(super) fn keys(&self) -> Vec<SeqKey> {
        self.seqs.keys().copied().collect()
    }

    /// Sequences holding an unattributed map that intersects `range`.
    pub(super) fn waiting_maps(&self, range: IovaRange) -> Vec<SeqKey> {
        self.seqs
            .iter()
            .filter(|(_, s)| {
                s.items.waiting_maps > 0
                    && s.items
                        .iter()
                        .any(|i| matches!(i, Item::Map { iova: r, slot: None, .. } if r.intersect(range).is_some()))
            })
            .map(|(k, _)| *k)
            .collect()
    }

    /// Does a sequence hold an unattributed map that intersects `range` and
    /// covers a page of `[pfn, last_pfn]` (pages of `1 << page_lg2` bytes)?
    pub(super) fn waiting_map_touches(&self, range: IovaRange, pfn: u64, last_pfn: u64, page_lg2: u32) -> bool {
        self.seqs.values().filter(|s| s.items.waiting_maps > 0).any(|s| {
            s.items.iter().any(|i| match i {
                Item::Map { iova, phys, slot: None, .. } if iova.intersect(range).is_some() => {
                    let a = phys.get() >> page_lg2;
                    let b = phys.get().saturating_add(iova.len().unwrap_or(u64::MAX).saturating_sub(1)) >> page_lg2;
                    a <= last_pfn && b >= pfn
                }
                _ => false,
            })
        })
    }

    /// `key` is about to hold an unattributed unmap: when it is not listed
    /// yet and too many sequences wait, the oldest is taken off the list
    /// for the caller to settle before [`Self::add_pending`].
    pub(super) fn evict_for(&mut self, key: SeqKey) -> Option<SeqKey> {
        if self.pending.contains(&key) || self.pending.len() < MAX_PENDING_SEQS {
            return None;
        }
        Some(self.pending.remove(0))
    }

    /// Lists `key` as holding an unattributed unmap.
    pub(super) fn add_pending(&mut self, key: SeqKey) {
        if !self.pending.contains(&key) {
            self.pending.push(key);
        }
    }

    /// Sequences holding unattributed unmaps, oldest first.
    pub(super) fn pending(&self) -> Vec<SeqKey> {
        self.pending.clone()
    }

    /// No unmap waits any more.
    pub(super) fn clear_pending(&mut self) {
        self.pending.clear();
    }

    /// Ends the sequence of `key`: its items, for the caller to settle.
    pub(super) fn end(&mut self, key: SeqKey) -> Vec<Item> {
        if let Some(i) = self.pending.iter().position(|k| *k == key) {
            self.pending.remove(i);
        }
        let Some(seq) = self.seqs.get_mut(&key) else { return Vec::new() };
        let items = seq.items.take();
        seq.kp_map = None;
        seq.kp_unmap = None;
        seq.unmap_sg_dev = None;
        seq.map_call = None;
        seq.map_failed_said = false;
        items
    }

    /// Adds an item to a sequence. Returns the unattributed maps too old
    /// to wait any more, taken out of it: the caller gives them an
    /// anonymous space, then calls [`Self::prune`].
    #[inline]
    pub(super) fn push(&mut self, key: SeqKey, item: Item) -> Vec<(IovaRange, PhysAddr, MapMeta)> {
        let mut aged = Vec::new();
        let seq = self.get(key);
        seq.items.push(item);
        let items = &mut seq.items;
        if items.len() > PENDING_MAP_WINDOW && items.waiting_maps > 0 {
            // Unattributed maps this old will get no identity from this call any more.
            let cut = items.len() - PENDING_MAP_WINDOW;
            aged = items
                .v
                .get(items.clean.min(cut)..cut)
                .unwrap_or_default()
                .iter()
                .filter_map(|i| match i {
                    Item::Map { iova, phys, meta, slot: None } => Some((*iova, *phys, *meta)),
                    _ => None,
                })
                .collect();
            if !aged.is_empty() {
                let mut n = 0usize;
                items.v.retain(|i| {
                    n += 1;
                    n > cut || !matches!(i, Item::Map { slot: None, .. })
                });
                items.waiting_maps -= aged.len();
            }
            items.clean = cut - aged.len();
        }
        aged
    }

    /// Resolved items are only kept (a few) to link the identities that
    /// later events of the same call give: prunes them from a sequence grown
    /// too long. True when it is still too long and must be settled.
    #[inline]
    pub(super) fn prune(&mut self, key: SeqKey) -> bool {
        let seq = self.get(key);
        if seq.items.len() > MAX_SEQ_ITEMS {
            let resolved = |i: &Item| matches!(i, Item::Map { slot: Some(_), .. } | Item::Unmap { slot: Some(_), .. });
            let n_resolved = seq.items.len() - seq.items.waiting_maps - seq.items.waiting_unmaps;
            let mut drop = n_resolved.saturating_sub(KEEP_RESOLVED);
            seq.items.retain(|i| {
                if drop > 0 && resolved(i) {
                    drop -= 1;
                    false
                } else {
                    true
                }
            });
            return seq.items.len() > MAX_SEQ_ITEMS;
        }
        false
    }
}

/// Events that belong to a map or unmap call sequence on one CPU.
pub(super) fn is_sequence_event(ev: &Event) -> bool {
    matches!(
        ev,
        Event::IommuMap(_)
            | Event::IommuUnmap(_)
            | Event::ProbeMap(_)
            | Event::ProbeUnmap(_)
            | Event::ProbeMapReturn(_)
            | Event::ProbeUnmapReturn(_)
            | Event::ProbeAttach(_)
            // `free_iova_fast` ends an unmap call: it must not break its sequence.
            | Event::ProbeIovaFree(_)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn map_item(start: u64, slot: Option<usize>) -> Item {
        let iova = IovaRange::from_start_len(Iova(start), 0x1000).unwrap();
        Item::Map { iova, phys: PhysAddr(start), meta: MapMeta::default(), slot }
    }

    #[test]
    fn another_task_or_a_foreign_event_ends_an_open_sequence() {
        let mut s = Sequences::default();
        assert!(!s.must_end((0, 0), 1, false), "nothing open");
        s.get((0, 0)).pid = 1;
        assert!(s.push((0, 0), map_item(0x1000, None)).is_empty());
        assert!(!s.must_end((0, 0), 1, true));
        assert!(s.must_end((0, 0), 2, true), "another task");
        assert!(s.must_end((0, 0), 1, false), "an event of no call");
        assert!(!s.must_end((0, 1), 2, true), "another context is another sequence");
        assert_eq!(s.end((0, 0)).len(), 1);
        assert!(!s.must_end((0, 0), 2, true));
    }

    #[test]
    fn old_unattributed_maps_stop_waiting() {
        let mut s = Sequences::default();
        let mut aged = Vec::new();
        for i in 0..(PENDING_MAP_WINDOW as u64 + 3) {
            aged.extend(s.push((1, 0), map_item(i << 12, None)));
        }
        assert_eq!(aged.len(), 3);
        assert_eq!(aged[0].0.start(), Iova(0), "oldest first");
        assert_eq!(s.get((1, 0)).items.len(), PENDING_MAP_WINDOW);
        let range = IovaRange::from_start_len(Iova(5 << 12), 1).unwrap();
        assert_eq!(s.waiting_maps(range), vec![(1, 0)]);
        let gone = IovaRange::from_start_len(Iova(0), 1).unwrap();
        assert!(s.waiting_maps(gone).is_empty(), "aged out");
    }

    #[test]
    fn resolved_items_are_pruned_before_a_sequence_is_settled() {
        let mut s = Sequences::default();
        for i in 0..(MAX_SEQ_ITEMS as u64 + 1) {
            let _ = s.push((2, 0), map_item(i << 12, Some(0)));
        }
        assert!(!s.prune((2, 0)));
        assert_eq!(s.get((2, 0)).items.len(), KEEP_RESOLVED);
    }

    #[test]
    fn the_oldest_waiting_sequence_is_evicted() {
        let mut s = Sequences::default();
        for c in 0..MAX_PENDING_SEQS as u32 {
            assert_eq!(s.evict_for((c, 0)), None);
            s.add_pending((c, 0));
        }
        assert_eq!(s.evict_for((0, 0)), None, "already waiting");
        assert_eq!(s.evict_for((9999, 0)), Some((0, 0)));
        let _ = s.end((1, 0));
        assert!(!s.pending().contains(&(1, 0)), "an ended sequence no longer waits");
    }

    /// The counts and the aging of [`Items`] against a plain vector that is
    /// rescanned after every step, over random pushes, prunes, takes and
    /// re-sets of mixed items.
    #[test]
    fn item_counts_and_aging_match_a_rescan() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let unmap = |slot| {
            let u = Unmap {
                iova: Iova(0x1000),
                size: 0x1000,
                unmapped: 0x1000,
                ts_ns: 0,
                line: 0,
                meta: MapMeta::default(),
            };
            Item::Unmap { u, slot }
        };
        let mut s = Sequences::default();
        let mut plain: Vec<Item> = Vec::new();
        let mut pruned = 0;
        for step in 0..30_000u64 {
            let r = next();
            // Rare ends and re-sets, so that sequences outgrow both the
            // window and the prune size.
            match r % 8000 {
                0 if r % 16000 == 0 => {
                    assert_eq!(s.end((0, 0)).len(), plain.len());
                    plain.clear();
                }
                1 => {
                    // A resolve-like re-set: keep the waiting items only.
                    let kept: Vec<Item> =
                        s.get((0, 0)).items.take().into_iter().filter(|i| i.waits() != (0, 0)).collect();
                    plain.retain(|i| i.waits() != (0, 0));
                    s.get((0, 0)).items.set(kept);
                }
                _ => {
                    let slot = (r % 7 != 0).then_some(0);
                    let item = if r % 3 == 0 { unmap(slot) } else { map_item(step << 12, slot) };
                    plain.push(item.clone());
                    let aged = s.push((0, 0), item);
                    let cut = plain.len().saturating_sub(PENDING_MAP_WINDOW);
                    let want: Vec<_> = plain[..cut]
                        .iter()
                        .filter_map(|i| match i {
                            Item::Map { iova, phys, meta, slot: None } => Some((*iova, *phys, *meta)),
                            _ => None,
                        })
                        .collect();
                    let mut n = 0;
                    plain.retain(|i| {
                        n += 1;
                        n > cut || !matches!(i, Item::Map { slot: None, .. })
                    });
                    assert_eq!(aged, want, "step {step}");
                    if plain.len() > MAX_SEQ_ITEMS {
                        assert!(!s.prune((0, 0)), "pruned to a settled size");
                        plain = s.get((0, 0)).items.to_vec();
                        pruned += 1;
                    }
                }
            }
            let items = &s.get((0, 0)).items;
            let count = |w| plain.iter().filter(|i| i.waits() == w).count();
            assert_eq!((items.waiting_maps(), items.waiting_unmaps()), (count((1, 0)), count((0, 1))), "step {step}");
            assert_eq!(items.len(), plain.len(), "step {step}");
        }
        assert!(pruned > 0, "the prune path ran");
    }
}
