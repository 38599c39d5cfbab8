//! The page-counter store: how many IOMMU mappings cover each CPU page.
//!
//! Like the kernel's `page_ext` client, there is one logical counter per CPU
//! page of registered RAM. Unlike it, storage is sparse and hierarchical:
//! level `k` holds one counter per aligned block of `512^k` pages (level 0:
//! pages, level 1: 2 MiB blocks with 4 KiB pages, level 2: 1 GiB, ...), and
//! a page's count is the sum of the counters of the blocks that contain it.
//! A 2 MiB or 1 GiB mapping therefore costs one atomic instead of 512 or
//! 262,144, and a map of terabytes touches at most a few thousand counters.
//! When part of a block-counted range is unmapped, the block's count is
//! pushed down to its other children.
//!
//! Counters live in nodes of 512 (2 KiB), allocated on first touch, so memory
//! is proportional to the memory ever mapped, never to the physical address
//! space. Pages outside registered RAM are not counted.
//!
//! Counters are relaxed atomics, as upstream: a check racing with a map or
//! unmap of the same page may miss it (false negative), never the reverse
//! when the host serialises map/unmap of overlapping ranges.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::hash::BuildHasherDefault;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use hashbrown::HashMap;

use crate::sync::{AtomicBool, AtomicU32, AtomicU64, Mutex, RwLock};

use crate::addr::{PageSize, PhysAddr, PhysRange};

#[cfg(not(loom))]
const FANOUT_LG2: u32 = 9;
/// Under the model checker, blocks of 4 pages keep scenarios small enough
/// to explore exhaustively; the algorithm does not depend on the fan-out.
#[cfg(loom)]
const FANOUT_LG2: u32 = 2;
const FANOUT: u64 = 1 << FANOUT_LG2;
/// Number of levels: pages, then blocks of 512, 512^2, 512^3, 512^4 pages.
pub const LEVELS: usize = 5;

struct Node {
    counters: [AtomicU32; FANOUT as usize],
}

impl Node {
    fn new() -> Box<Self> {
        Box::new(Node { counters: core::array::from_fn(|_| AtomicU32::new(0)) })
    }
    fn at(&self, slot: u64) -> &AtomicU32 {
        // slot & (FANOUT - 1) < 512 == counters.len(): in bounds by construction.
        &self.counters[(slot & (FANOUT - 1)) as usize]
    }
}

#[derive(Default)]
struct Level {
    nodes: RwLock<HashMap<u64, Box<Node>, BuildHasherDefault<crate::hash::FastHasher>>>,
    /// The level has had a node: until then its counters all read 0 without
    /// taking its lock (block levels stay empty while every mapping is
    /// smaller than 2 MiB, so most checks skip them). Set before the first
    /// node is inserted, never cleared (nodes are never removed).
    used: AtomicBool,
}

/// An inclusive span of page frame numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PfnSpan {
    /// First page.
    pub first: u64,
    /// Last page (inclusive).
    pub last: u64,
}

impl PfnSpan {
    /// Pages in the span.
    #[must_use]
    pub fn pages(self) -> u64 {
        self.last - self.first + 1
    }
}

/// A shortfall found while counting down: `npages` pages from `first` lacked
/// `missing` counts each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// First page.
    pub first: u64,
    /// Number of pages.
    pub npages: u64,
    /// Counts that were missing per page.
    pub missing: u32,
}

/// Page-level nodes found without a lock: a two-level directory of
/// write-once slots over the first [`DIRECTORY_NODES`] nodes (4 TiB of
/// 4 KiB pages). Every map, unmap and page check reads a page counter, and
/// the read lock of a hash map cost two of its three locked instructions.
/// Nodes past it (and all of them under the model checker, whose scenarios
/// exercise the counters, not this publication) are in `levels[0]`.
#[cfg(not(loom))]
struct Directory {
    root: Vec<spin::Once<Vec<spin::Once<Box<Node>>>>>,
}

#[cfg(not(loom))]
const DIRECTORY_MID: u64 = 1 << 10;
#[cfg(not(loom))]
const DIRECTORY_NODES: u64 = (1 << 11) * DIRECTORY_MID;

#[cfg(not(loom))]
impl Directory {
    fn new() -> Self {
        Self { root: (0..DIRECTORY_NODES / DIRECTORY_MID).map(|_| spin::Once::new()).collect() }
    }

    /// The node of `key`, created when `create`; `None` past the directory
    /// (the caller looks in the hash map) or when absent.
    fn node(&self, key: u64, create: bool, nodes: &AtomicU64) -> Option<&Node> {
        let mid = self.root.get(usize::try_from(key / DIRECTORY_MID).ok()?)?;
        let mid =
            if create { mid.call_once(|| (0..DIRECTORY_MID).map(|_| spin::Once::new()).collect()) } else { mid.get()? };
        let slot = mid.get(usize::try_from(key % DIRECTORY_MID).ok()?)?;
        if create {
            Some(slot.call_once(|| {
                nodes.fetch_add(1, Relaxed);
                Node::new()
            }))
        } else {
            slot.get().map(|n| &**n)
        }
    }
}

/// The sparse, hierarchical counter store.
pub struct PageStore {
    page: PageSize,
    ram: Vec<PfnSpan>,
    levels: [Level; LEVELS],
    #[cfg(not(loom))]
    directory: Directory,
    nodes: AtomicU64,
    /// Serialises the slow path (pushing block counts down, descending into
    /// children), so a decrement that finds its counter short never races
    /// with a push-down that is half done.
    pushdown: Mutex<()>,
}

/// What a map of a physical range touched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Bytes that fell outside registered RAM (MMIO, holes): not counted.
    pub untracked_bytes: u64,
}

impl PageStore {
    /// A store for `page`-sized CPU pages over the given RAM regions.
    /// Regions are clipped to whole pages and merged; an empty list tracks nothing.
    #[must_use]
    pub fn new(page: PageSize, ram: &[PhysRange]) -> Self {
        let mut spans: Vec<PfnSpan> = ram
            .iter()
            .filter_map(|r| {
                let first = r.start().get().div_ceil(page.bytes());
                let last_plus = r.last().get().checked_add(1).map_or(u64::MAX >> page.lg2(), |e| e >> page.lg2());
                (last_plus > first).then(|| PfnSpan { first, last: last_plus - 1 })
            })
            .collect();
        spans.sort_by_key(|s| s.first);
        let mut merged: Vec<PfnSpan> = Vec::with_capacity(spans.len());
        for s in spans {
            match merged.last_mut() {
                Some(m) if s.first <= m.last.saturating_add(1) => m.last = m.last.max(s.last),
                _ => merged.push(s),
            }
        }
        Self {
            page,
            ram: merged,
            levels: Default::default(),
            #[cfg(not(loom))]
            directory: Directory::new(),
            nodes: AtomicU64::new(0),
            pushdown: Mutex::new(()),
        }
    }

    /// The CPU page size.
    #[must_use]
    pub fn page_size(&self) -> PageSize {
        self.page
    }

    /// The registered RAM, as page spans.
    #[must_use]
    pub fn ram(&self) -> &[PfnSpan] {
        &self.ram
    }

    /// Bytes of counter storage allocated so far.
    #[must_use]
    pub fn counter_bytes(&self) -> u64 {
        self.nodes.load(Relaxed) * core::mem::size_of::<Node>() as u64
    }

    /// True if page `pfn` is registered RAM.
    #[must_use]
    pub fn is_tracked(&self, pfn: u64) -> bool {
        let i = self.ram.partition_point(|s| s.last < pfn);
        self.ram.get(i).is_some_and(|s| s.first <= pfn)
    }

    /// Calls `f` for each part of `[first, last]` that is registered RAM.
    fn for_each_tracked(&self, first: u64, last: u64, mut f: impl FnMut(u64, u64)) {
        let start = self.ram.partition_point(|s| s.last < first);
        for s in self.ram.iter().skip(start) {
            if s.first > last {
                break;
            }
            f(s.first.max(first), s.last.min(last));
        }
    }

    /// Pages of `[first, last]` outside registered RAM.
    #[must_use]
    pub fn untracked_pages(&self, first: u64, last: u64) -> u64 {
        // Common case: inside one region.
        let i = self.ram.partition_point(|s| s.last < first);
        if self.ram.get(i).is_some_and(|s| s.first <= first && s.last >= last) {
            return 0;
        }
        let mut tracked = 0u64;
        self.for_each_tracked(first, last, |a, b| tracked += b - a + 1);
        (last - first).saturating_add(1).saturating_sub(tracked)
    }

    fn with_node<R>(&self, level: usize, key: u64, create: bool, f: impl FnOnce(&Node) -> R) -> Option<R> {
        let lvl = self.levels.get(level)?;
        // A reader that finds the level unused reads it as if before the
        // first node: as a reader just before the lock would.
        if !create && !lvl.used.load(Acquire) {
            return None;
        }
        #[cfg(not(loom))]
        if level == 0 && key < DIRECTORY_NODES {
            if create && !lvl.used.load(Relaxed) {
                lvl.used.store(true, Release);
            }
            return self.directory.node(key, create, &self.nodes).map(f);
        }
        {
            let g = lvl.nodes.read();
            if let Some(n) = g.get(&key) {
                return Some(f(n));
            }
        }
        if !create {
            return None;
        }
        let mut g = lvl.nodes.write();
        lvl.used.store(true, Release);
        let n = g.entry(key).or_insert_with(|| {
            self.nodes.fetch_add(1, Relaxed);
            Node::new()
        });
        Some(f(n))
    }

    fn get(&self, level: usize, slot: u64) -> u32 {
        self.with_node(level, slot >> FANOUT_LG2, false, |n| n.at(slot).load(Relaxed)).unwrap_or(0)
    }

    /// Decomposes `[first, last]` into maximal aligned blocks and calls
    /// `f(level, first_slot, last_slot)` for runs of same-level blocks that
    /// share a node.
    fn for_each_block_run(first: u64, last: u64, mut f: impl FnMut(usize, u64, u64)) {
        let mut p = first;
        loop {
            let mut k = 0usize;
            while k + 1 < LEVELS {
                let lg = FANOUT_LG2 * (k as u32 + 1);
                let size_minus_1 = (1u64 << lg) - 1;
                if p & size_minus_1 == 0 && last - p >= size_minus_1 {
                    k += 1;
                } else {
                    break;
                }
            }
            let shift = FANOUT_LG2 * k as u32;
            let slot = p >> shift;
            // Extend the run over following blocks of the same level in the same node,
            // stopping where a higher-level block would start or the range ends.
            let mut slot_last = slot;
            loop {
                let next_slot = slot_last + 1;
                if next_slot & (FANOUT - 1) == 0 {
                    break; // next node, or a higher-level alignment boundary
                }
                let next_p = next_slot << shift;
                let Some(block_last) = next_p.checked_add((1u64 << shift) - 1) else { break };
                if block_last > last {
                    break;
                }
                slot_last = next_slot;
            }
            f(k, slot, slot_last);
            let Some(next) = (slot_last + 1).checked_shl(shift).filter(|&n| n > p) else { return };
            if next > last {
                return;
            }
            p = next;
        }
    }

    /// Adds `delta` to the count of every tracked page in `[first, last]`.
    /// Returns the runs whose counter would overflow (left unchanged).
    pub fn add(&self, first: u64, last: u64, delta: u32) -> Vec<Shortfall> {
        let mut overflow = Vec::new();
        if delta == 0 {
            return overflow;
        }
        if last == first {
            // One page: the common case of 4 KiB maps.
            if self.add_page(first, delta) == Some(false) {
                overflow.push(Shortfall { first, npages: 1, missing: delta });
            }
            return overflow;
        }
        self.for_each_tracked(first, last, |a, b| {
            Self::for_each_block_run(a, b, |level, s0, s1| {
                let shift = FANOUT_LG2 * level as u32;
                self.with_node(level, s0 >> FANOUT_LG2, true, |n| {
                    for s in s0..=s1 {
                        if n.at(s).fetch_update(Relaxed, Relaxed, |c| c.checked_add(delta)).is_err() {
                            push_run(
                                &mut overflow,
                                Shortfall { first: s << shift, npages: 1 << shift, missing: delta },
                            );
                        }
                    }
                });
            });
        });
        overflow
    }

    /// Adds `delta` to the counter of page `pfn` alone: the kernel's per-page
    /// refcount, no block counters. Returns `None` for a page outside
    /// registered RAM, `Some(false)` when the counter would overflow (left
    /// unchanged), `Some(true)` when counted.
    pub fn add_page(&self, pfn: u64, delta: u32) -> Option<bool> {
        if !self.is_tracked(pfn) {
            return None;
        }
        self.with_node(0, pfn >> FANOUT_LG2, true, |n| {
            // One atomic; an overflow (4 billion mappings of one page) is undone.
            let c = n.at(pfn);
            let ok = c.fetch_add(delta, Relaxed).checked_add(delta).is_some();
            if !ok {
                c.fetch_sub(delta, Relaxed);
            }
            ok
        })
    }

    /// Subtracts `delta` from the count of page `pfn`; returns the counts
    /// that were missing (0 when none was, or for a page outside registered
    /// RAM). The page's own counter is tried first; block counters are only
    /// looked at when it is short.
    pub fn sub_page(&self, pfn: u64, delta: u32) -> u32 {
        if delta == 0 || !self.is_tracked(pfn) {
            return 0;
        }
        let rem = delta - self.take(0, pfn, delta);
        if rem == 0 {
            return 0;
        }
        let mut short = Vec::new();
        self.sub_slot(0, pfn, rem, true, &mut short);
        short.first().map_or(0, |s| s.missing)
    }

    /// Subtracts `delta` from the count of every tracked page in `[first, last]`,
    /// pushing block counts down where only part of a block is concerned.
    /// Returns the pages whose count was short (counted down as far as possible).
    pub fn sub(&self, first: u64, last: u64, delta: u32) -> Vec<Shortfall> {
        let mut short = Vec::new();
        if delta == 0 {
            return short;
        }
        if last == first {
            if self.is_tracked(first) {
                self.sub_slot(0, first, delta, true, &mut short);
            }
            return short;
        }
        self.for_each_tracked(first, last, |a, b| {
            Self::for_each_block_run(a, b, |level, s0, s1| {
                for s in s0..=s1 {
                    self.sub_slot(level, s, delta, true, &mut short);
                }
            });
        });
        short
    }

    /// Takes up to `want` from one counter; returns what it took.
    fn take(&self, level: usize, slot: u64, want: u32) -> u32 {
        self.with_node(level, slot >> FANOUT_LG2, false, |n| {
            let counter = n.at(slot);
            // A compare-and-swap loop whose first guess is that the counter
            // holds exactly `want` (one mapping of a page going): no load
            // before the first attempt; a wrong guess returns the real value.
            let mut cur = want;
            loop {
                if cur == 0 {
                    return 0;
                }
                match counter.compare_exchange(cur, cur - cur.min(want), Relaxed, Relaxed) {
                    Ok(_) => return cur.min(want),
                    Err(actual) => cur = actual,
                }
            }
        })
        .unwrap_or(0)
    }

    fn sub_slot(&self, level: usize, slot: u64, want: u32, borrow: bool, short: &mut Vec<Shortfall>) {
        let mut rem = want - self.take(level, slot, want);
        if rem == 0 {
            return;
        }
        if borrow {
            // Slow path: wait for any push-down in progress, then look again.
            let _guard = self.pushdown.lock();
            rem -= self.take(level, slot, rem);
            if rem > 0 {
                rem -= self.borrow_from_ancestors(level, slot, rem);
            }
            if rem > 0 {
                self.descend(level, slot, rem, short);
            }
            return;
        }
        self.descend(level, slot, rem, short);
    }

    /// Takes `rem` from every child of `(level, slot)`; what is missing at
    /// the pages is a shortfall. Called with the push-down lock held.
    fn descend(&self, level: usize, slot: u64, rem: u32, short: &mut Vec<Shortfall>) {
        let shift = FANOUT_LG2 * level as u32;
        if level == 0 {
            push_run(short, Shortfall { first: slot, npages: 1, missing: rem });
            return;
        }
        let child_level = level - 1;
        let child_first = slot << FANOUT_LG2;
        let has_children = self.with_node(child_level, slot, false, |_| ()).is_some();
        if !has_children {
            push_run(short, Shortfall { first: slot << shift, npages: 1 << shift, missing: rem });
            return;
        }
        for c in child_first..child_first + FANOUT {
            self.sub_slot(child_level, c, rem, false, short);
        }
    }

    /// Moves counts down from the nearest ancestors of `(level, slot)` that
    /// have any: the ancestor loses `t`, every other child on the way gains
    /// `t`, so only this slot's pages end up `t` lower. Returns `t` in total.
    fn borrow_from_ancestors(&self, level: usize, slot: u64, want: u32) -> u32 {
        let mut got = 0u32;
        for anc in level + 1..LEVELS {
            if got == want {
                break;
            }
            let up = FANOUT_LG2 * (anc - level) as u32;
            let anc_slot = slot >> up;
            let t = self.take(anc, anc_slot, want - got);
            if t == 0 {
                continue;
            }
            for i in (level..anc).rev() {
                let path = slot >> (FANOUT_LG2 * (i - level) as u32);
                let base = path & !(FANOUT - 1);
                self.with_node(i, base >> FANOUT_LG2, true, |n| {
                    for s in base..base + FANOUT {
                        if s != path {
                            // Cannot overflow: these counters are bounded by the total count
                            // that just moved down, itself a u32.
                            let _ = n.at(s).fetch_update(Relaxed, Relaxed, |c| c.checked_add(t));
                        }
                    }
                });
            }
            got += t;
        }
        got
    }

    /// The number of mappings covering page `pfn` (sum over levels).
    #[must_use]
    pub fn count(&self, pfn: u64) -> u64 {
        (0..LEVELS).map(|k| u64::from(self.get(k, pfn >> (FANOUT_LG2 * k as u32)))).sum()
    }

    /// Calls `f(pfn, count)` for every page of `[first, first + n)` that
    /// has a count, in order, with one lookup per level per 512 pages.
    /// Untracked pages have none. (A freed block of order 10 is 1,024 pages
    /// and most have none: they cost one load each.)
    pub fn counts(&self, first: u64, n: u64, mut f: impl FnMut(u64, u64)) {
        let Some(last) = n.checked_sub(1).and_then(|m| first.checked_add(m)) else { return };
        let mut p = first;
        loop {
            // Pages of one level-0 node share every higher-level counter.
            let node_last = (p | (FANOUT - 1)).min(last);
            let upper: u64 = (1..LEVELS).map(|k| u64::from(self.get(k, p >> (FANOUT_LG2 * k as u32)))).sum();
            let found = self.with_node(0, p >> FANOUT_LG2, false, |node| {
                for q in p..=node_last {
                    let c = upper + u64::from(node.at(q).load(Relaxed));
                    if c > 0 && self.is_tracked(q) {
                        f(q, c);
                    }
                }
            });
            if found.is_none() && upper > 0 {
                for q in p..=node_last {
                    if self.is_tracked(q) {
                        f(q, upper);
                    }
                }
            }
            if node_last == last {
                break;
            }
            p = node_last + 1;
        }
    }

    /// Upstream-style counter on a single page (level 0 only), with the
    /// kernel's `atomic_t` semantics: wraps, read back as a signed value.
    /// Returns the new value, or `None` for untracked pages.
    pub fn add_page_signed(&self, pfn: u64, delta: i32) -> Option<i32> {
        if !self.is_tracked(pfn) {
            return None;
        }
        self.with_node(0, pfn >> FANOUT_LG2, true, |n| {
            let prev = n.at(pfn).fetch_add(delta as u32, Relaxed);
            prev.wrapping_add(delta as u32) as i32
        })
    }

    /// The level-0 counter of a page read as the kernel's signed `atomic_t`.
    #[must_use]
    pub fn page_signed(&self, pfn: u64) -> i32 {
        self.get(0, pfn) as i32
    }

    /// The page range `[first, last]` holding `[phys, phys + len)`, or `None`
    /// if `len == 0` or it wraps.
    #[must_use]
    pub fn pages_of(&self, phys: PhysAddr, len: u64) -> Option<(u64, u64)> {
        let r = PhysRange::from_start_len(phys, len)?;
        Some((r.start().get() >> self.page.lg2(), r.last().get() >> self.page.lg2()))
    }
}

/// Appends `s`, merging it with the previous run when contiguous and alike.
pub(crate) fn push_run(v: &mut Vec<Shortfall>, s: Shortfall) {
    if let Some(prev) = v.last_mut() {
        if prev.missing == s.missing && prev.first.checked_add(prev.npages) == Some(s.first) {
            prev.npages += s.npages;
            return;
        }
    }
    v.push(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_ram() -> PageStore {
        PageStore::new(PageSize::SIZE_4K, &[PhysRange::from_start_len(PhysAddr(0), 1 << 52).unwrap()])
    }

    #[test]
    fn block_counts_cover_every_page() {
        let s = all_ram();
        assert!(s.add(512, 1023, 1).is_empty()); // one level-1 counter
        assert_eq!(s.count(511), 0);
        assert_eq!(s.count(512), 1);
        assert_eq!(s.count(1023), 1);
        assert_eq!(s.count(1024), 0);
        assert_eq!(s.counter_bytes(), 2048); // one node, not 512 page counters
    }

    #[test]
    fn partial_unmap_pushes_block_counts_down() {
        let s = all_ram();
        s.add(512, 1023, 1);
        assert!(s.sub(600, 600, 1).is_empty());
        assert_eq!(s.count(600), 0);
        assert_eq!(s.count(599), 1);
        assert_eq!(s.count(601), 1);
        assert!(s.sub(512, 1023, 1).iter().map(|x| x.npages).sum::<u64>() == 1);
        for p in 512..1024 {
            assert_eq!(s.count(p), 0);
        }
    }

    #[test]
    fn huge_ranges_are_bounded_work() {
        let s = all_ram();
        // 1 TiB at an unaligned page: a few thousand counters at most.
        let first = 1;
        let last = first + (1u64 << 28) - 1;
        assert!(s.add(first, last, 1).is_empty());
        assert!(s.counter_bytes() < 64 * 2048);
        assert_eq!(s.count(first + 12345678), 1);
        assert!(s.sub(first, last, 1).is_empty());
        assert_eq!(s.count(first + 12345678), 0);
    }

    #[test]
    fn untracked_memory_is_not_counted() {
        let s = PageStore::new(PageSize::SIZE_4K, &[PhysRange::from_start_len(PhysAddr(0x100000), 0x100000).unwrap()]);
        s.add(0, 0x3ff, 1);
        assert_eq!(s.count(0x50), 0);
        assert_eq!(s.count(0x150), 1);
        assert_eq!(s.untracked_pages(0, 0x3ff), 0x400 - 0x100);
    }

    #[test]
    fn underflow_is_reported_not_wrapped() {
        let s = all_ram();
        s.add(10, 11, 1);
        let short = s.sub(10, 13, 1);
        assert_eq!(short, vec![Shortfall { first: 12, npages: 2, missing: 1 }]);
        assert_eq!(s.count(10), 0);
    }

    #[test]
    fn counts_reads_mixed_levels() {
        let s = all_ram();
        s.add(0, (1 << 18) - 1, 1); // a level-2 block
        s.add(5, 5, 2);
        let mut v = vec![];
        s.counts(3, 4, |p, c| v.push((p, c)));
        assert_eq!(v, vec![(3, 1), (4, 1), (5, 3), (6, 1)]);
    }

    /// Pages on both sides of the lock-free directory's end count alike,
    /// and its nodes are counted as storage.
    #[cfg(not(loom))]
    #[test]
    fn directory_and_hash_map_nodes_count_alike() {
        let s = all_ram();
        let edge = DIRECTORY_NODES << FANOUT_LG2;
        for pfn in [0, 511, 512, edge - 1, edge, edge + 600] {
            assert_eq!(s.add_page(pfn, 2), Some(true));
            assert_eq!(s.count(pfn), 2, "pfn {pfn:#x}");
            assert_eq!(s.sub_page(pfn, 1), 0);
            assert_eq!(s.count(pfn), 1, "pfn {pfn:#x}");
        }
        let mut v = vec![];
        s.counts(edge - 2, 4, |p, c| v.push((p, c)));
        assert_eq!(v, vec![(edge - 1, 1), (edge, 1)]);
        assert_eq!(s.counter_bytes(), 5 * core::mem::size_of::<Node>() as u64);
        assert_eq!(s.sub_page(edge - 1, 2), 1, "one count was missing");
    }

    /// Threads creating and counting the same new nodes: every count lands.
    #[cfg(not(loom))]
    #[test]
    fn concurrent_first_touch_loses_no_count() {
        let s = std::sync::Arc::new(all_ram());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = std::sync::Arc::clone(&s);
                std::thread::spawn(move || {
                    for pfn in 0..4096u64 {
                        s.add_page(pfn * 97, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!((0..4096u64).all(|pfn| s.count(pfn * 97) == 4));
    }

    #[test]
    fn counts_skips_pages_without_a_count() {
        let s = all_ram();
        s.add(600, 601, 1);
        s.add(2000, 2000, 1);
        let mut v = vec![];
        // Spans a node with counts, one without, and a node with one count.
        s.counts(0, 4096, |p, c| v.push((p, c)));
        assert_eq!(v, vec![(600, 1), (601, 1), (2000, 1)]);
        let untracked = PageStore::new(PageSize::SIZE_4K, &[PhysRange::from_start_len(PhysAddr(0), 4096 * 4).unwrap()]);
        untracked.add(0, 7, 1);
        v.clear();
        untracked.counts(0, 8, |p, c| v.push((p, c)));
        assert_eq!(v, vec![(0, 1), (1, 1), (2, 1), (3, 1)]);
    }
}
