//! Physical memory and the buddy page allocator.
//!
//! Units: page frame numbers ([`Pfn`]) of the CPU page size given at
//! construction; an *order* `o` block is `2^o` pages whose first pfn is a
//! multiple of `2^o`. Orders run from 0 to [`MAX_PAGE_ORDER`] (10, as the
//! kernel's default `MAX_PAGE_ORDER`).
//!
//! The layout is a list of RAM regions with holes between them and MMIO
//! windows that are never allocatable (a device may still map them).
//! [`PhysMemory`] is the pure allocator; the sanitizer hooks
//! (`post_alloc_hook` / `free_pages_prepare`) are called by
//! the kernel model (`kernel::Kernel`), which owns it.

use std::collections::HashMap;

use iosan_core::{PageSize, Pfn, PhysAddr};

use crate::error::{ModelError, Result};

/// The largest order, as the kernel's `MAX_PAGE_ORDER`.
pub const MAX_PAGE_ORDER: u32 = 10;

/// What a physical region is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Ordinary memory handed to the buddy allocator.
    Ram,
    /// A device window (BARs): mappable by a device, never allocated.
    Mmio,
}

/// One physical region, `[start, start + pages)` in frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First frame.
    pub start: Pfn,
    /// Number of frames.
    pub pages: u64,
    /// RAM or MMIO.
    pub kind: RegionKind,
}

impl Region {
    fn end(&self) -> Option<u64> {
        self.start.get().checked_add(self.pages)
    }
    fn contains(&self, pfn: u64) -> bool {
        self.end().is_some_and(|e| pfn >= self.start.get() && pfn < e)
    }
}

/// A LIFO free list with O(1) removal of any member, like the kernel's
/// `free_area[order].free_list` (a freed block goes to the head and is the
/// first handed out again, so reuse is quick).
#[derive(Clone, Debug, Default)]
struct FreeList {
    stack: Vec<u64>,
    pos: HashMap<u64, usize>,
}

impl FreeList {
    fn push(&mut self, pfn: u64) {
        self.pos.insert(pfn, self.stack.len());
        self.stack.push(pfn);
    }
    fn pop(&mut self) -> Option<u64> {
        let pfn = self.stack.pop()?;
        self.pos.remove(&pfn);
        Some(pfn)
    }
    fn remove(&mut self, pfn: u64) -> bool {
        let Some(i) = self.pos.remove(&pfn) else {
            return false;
        };
        self.stack.swap_remove(i);
        if let Some(&moved) = self.stack.get(i) {
            self.pos.insert(moved, i);
        }
        true
    }
    fn contains(&self, pfn: u64) -> bool {
        self.pos.contains_key(&pfn)
    }
    fn len(&self) -> usize {
        self.stack.len()
    }
}

/// Physical memory with a buddy allocator over its RAM regions.
///
/// Models the zone free areas of `mm/page_alloc.c`: `__rmqueue_smallest()`
/// (take the smallest free block of at least the order, splitting the rest
/// down with `expand()`) and `__free_one_page()` (merge with the buddy at
/// `pfn ^ (1 << order)` while it is free with the same order).
#[derive(Clone, Debug)]
pub struct PhysMemory {
    page: PageSize,
    regions: Vec<Region>,
    free: Vec<FreeList>,
    /// Allocated blocks: head pfn -> order.
    allocated: HashMap<u64, u32>,
    free_pages: u64,
    ram_pages: u64,
}

impl PhysMemory {
    /// Memory with the given regions; every RAM page starts free, in the
    /// largest aligned blocks that fit (as `memblock_free_all()` does).
    ///
    /// # Errors
    /// [`ModelError::BadRegion`] if a region is empty, overflows, or
    /// overlaps another.
    pub fn new(page: PageSize, regions: &[Region]) -> Result<Self> {
        let mut sorted = regions.to_vec();
        sorted.sort_by_key(|r| r.start);
        let mut prev_end = 0u64;
        for (i, r) in sorted.iter().enumerate() {
            let end = r.end().ok_or(ModelError::BadRegion("region overflows"))?;
            if r.pages == 0 {
                return Err(ModelError::BadRegion("empty region"));
            }
            if r.start.get().checked_add(r.pages).and_then(|e| e.checked_shl(page.lg2())).is_none()
                || end.checked_mul(page.bytes()).is_none()
            {
                return Err(ModelError::BadRegion("region beyond the physical address space"));
            }
            if i > 0 && r.start.get() < prev_end {
                return Err(ModelError::BadRegion("regions overlap"));
            }
            prev_end = end;
        }
        let mut mem = Self {
            page,
            regions: sorted,
            free: (0..=MAX_PAGE_ORDER).map(|_| FreeList::default()).collect(),
            allocated: HashMap::new(),
            free_pages: 0,
            ram_pages: 0,
        };
        let ram: Vec<Region> = mem.regions.iter().copied().filter(|r| r.kind == RegionKind::Ram).collect();
        for r in ram {
            mem.ram_pages += r.pages;
            let mut pfn = r.start.get();
            let end = r.start.get() + r.pages;
            while pfn < end {
                let mut order = MAX_PAGE_ORDER;
                while order > 0 && (pfn & ((1 << order) - 1) != 0 || pfn + (1 << order) > end) {
                    order -= 1;
                }
                mem.free[order as usize].push(pfn);
                mem.free_pages += 1 << order;
                pfn += 1 << order;
            }
        }
        Ok(mem)
    }

    /// A typical small x86 machine on 4 KiB pages: a hole for the first MiB
    /// (the legacy area), RAM from 1 MiB to 3 GiB, an MMIO window from 3 GiB
    /// to 4 GiB, and `high_mib` MiB of RAM from 4 GiB.
    ///
    /// # Errors
    /// [`ModelError::BadRegion`] if `high_mib` is absurdly large.
    pub fn typical_x86(high_mib: u64) -> Result<Self> {
        let page = PageSize::SIZE_4K;
        let mib = 256u64; // pages per MiB
        let high = high_mib.checked_mul(mib).ok_or(ModelError::BadRegion("too much memory"))?;
        let mut regions = vec![
            Region { start: Pfn(mib), pages: 3 * 1024 * mib - mib, kind: RegionKind::Ram },
            Region { start: Pfn(3 * 1024 * mib), pages: 1024 * mib, kind: RegionKind::Mmio },
        ];
        if high > 0 {
            regions.push(Region { start: Pfn(4 * 1024 * mib), pages: high, kind: RegionKind::Ram });
        }
        Self::new(page, &regions)
    }

    /// The CPU page size.
    #[must_use]
    pub fn page_size(&self) -> PageSize {
        self.page
    }

    /// The regions, sorted by start.
    #[must_use]
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// True if `pfn` is RAM (not a hole, not MMIO).
    #[must_use]
    pub fn is_ram(&self, pfn: Pfn) -> bool {
        self.region_of(pfn).is_some_and(|r| r.kind == RegionKind::Ram)
    }

    /// The region holding `pfn`, if any.
    #[must_use]
    pub fn region_of(&self, pfn: Pfn) -> Option<&Region> {
        let i = self.regions.partition_point(|r| r.start <= pfn);
        let r = self.regions.get(i.checked_sub(1)?)?;
        r.contains(pfn.get()).then_some(r)
    }

    /// Pages currently free.
    #[must_use]
    pub fn free_pages(&self) -> u64 {
        self.free_pages
    }

    /// Pages of RAM in total.
    #[must_use]
    pub fn ram_pages(&self) -> u64 {
        self.ram_pages
    }

    /// Number of free blocks of each order (`/proc/buddyinfo`).
    #[must_use]
    pub fn buddyinfo(&self) -> Vec<usize> {
        self.free.iter().map(FreeList::len).collect()
    }

    /// The order of the allocated block starting at `pfn`, if any.
    #[must_use]
    pub fn allocated_order(&self, pfn: Pfn) -> Option<u32> {
        self.allocated.get(&pfn.get()).copied()
    }

    /// Takes a block of `2^order` pages (`__rmqueue_smallest()` + `expand()`).
    ///
    /// # Errors
    /// [`ModelError::OrderTooLarge`], or [`ModelError::OutOfMemory`] when no
    /// block of that order or larger is free.
    pub fn alloc(&mut self, order: u32) -> Result<Pfn> {
        if order > MAX_PAGE_ORDER {
            return Err(ModelError::OrderTooLarge { order, max: MAX_PAGE_ORDER });
        }
        let mut found = None;
        for o in order..=MAX_PAGE_ORDER {
            if let Some(pfn) = self.free[o as usize].pop() {
                found = Some((pfn, o));
                break;
            }
        }
        let (pfn, mut o) = found.ok_or(ModelError::OutOfMemory { order })?;
        // expand(): hand the upper halves back, keep the lowest block.
        while o > order {
            o -= 1;
            self.free[o as usize].push(pfn + (1 << o));
        }
        self.allocated.insert(pfn, order);
        self.free_pages -= 1 << order;
        Ok(Pfn(pfn))
    }

    /// Gives back a block (`__free_one_page()`), merging with free buddies.
    ///
    /// # Errors
    /// [`ModelError::BadFree`] if `pfn` is not the head of an allocated
    /// block of exactly this order (double free, wrong order, never
    /// allocated). Nothing changes then.
    pub fn free(&mut self, pfn: Pfn, order: u32) -> Result<()> {
        match self.allocated.get(&pfn.get()) {
            Some(&o) if o == order => {}
            _ => return Err(ModelError::BadFree { pfn, order }),
        }
        self.allocated.remove(&pfn.get());
        self.free_pages += 1 << order;
        let mut head = pfn.get();
        let mut o = order;
        while o < MAX_PAGE_ORDER {
            let buddy = head ^ (1 << o);
            if !self.free[o as usize].remove(buddy) {
                break;
            }
            head = head.min(buddy);
            o += 1;
        }
        self.free[o as usize].push(head);
        Ok(())
    }

    /// The physical address of `pfn`, if it fits.
    #[must_use]
    pub fn phys(&self, pfn: Pfn) -> Option<PhysAddr> {
        pfn.to_phys(self.page)
    }

    /// Checks the allocator's invariants, returning the first violation:
    /// every block aligned to its order and inside one RAM region, free and
    /// allocated blocks disjoint, no two free buddies of the same order
    /// (they would have merged), and the free-page count consistent.
    #[must_use]
    pub fn check_invariants(&self) -> Option<String> {
        let mut blocks: Vec<(u64, u32, bool)> = Vec::new();
        let mut free_count = 0u64;
        for (o, list) in self.free.iter().enumerate() {
            let o = o as u32;
            for &pfn in &list.stack {
                if !list.contains(pfn) {
                    return Some(format!("free list {o} index broken at {pfn:#x}"));
                }
                blocks.push((pfn, o, true));
                free_count += 1 << o;
                if o < MAX_PAGE_ORDER && list.contains(pfn ^ (1 << o)) {
                    return Some(format!("free buddies {pfn:#x} order {o} not merged"));
                }
            }
        }
        for (&pfn, &o) in &self.allocated {
            blocks.push((pfn, o, false));
        }
        if free_count != self.free_pages {
            return Some(format!("free count {} != {}", free_count, self.free_pages));
        }
        blocks.sort_unstable();
        let mut prev_end = 0u64;
        for &(pfn, o, _) in &blocks {
            if pfn & ((1 << o) - 1) != 0 {
                return Some(format!("block {pfn:#x} not aligned to order {o}"));
            }
            if pfn < prev_end {
                return Some(format!("block {pfn:#x} overlaps the previous one"));
            }
            let last = pfn + (1 << o) - 1;
            match self.region_of(Pfn(pfn)) {
                Some(r) if r.kind == RegionKind::Ram && r.contains(last) => {}
                _ => return Some(format!("block {pfn:#x} order {o} outside one RAM region")),
            }
            prev_end = last + 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> PhysMemory {
        PhysMemory::new(
            PageSize::SIZE_4K,
            &[
                Region { start: Pfn(0x100), pages: 0x700, kind: RegionKind::Ram },
                Region { start: Pfn(0x1000), pages: 0x1000, kind: RegionKind::Mmio },
                Region { start: Pfn(0x2000), pages: 0x2400, kind: RegionKind::Ram },
            ],
        )
        .unwrap()
    }

    #[test]
    fn initial_blocks_are_maximal_and_aligned() {
        let m = small();
        assert_eq!(m.free_pages(), 0x700 + 0x2400);
        assert_eq!(m.check_invariants(), None);
        // 0x400..0x800 is one order-10 block, 0x2000..0x4400 nine more; 0x100..0x400
        // is split into an order-8 and an order-9 block.
        assert_eq!(m.buddyinfo()[10], 10);
        assert_eq!(m.buddyinfo()[9], 1);
        assert_eq!(m.buddyinfo()[8], 1);
    }

    #[test]
    fn split_then_merge_restores_everything() {
        let mut m = small();
        let before = m.buddyinfo();
        let a = m.alloc(0).unwrap();
        assert_eq!(m.check_invariants(), None);
        let b = m.alloc(3).unwrap();
        assert_ne!(a, b);
        m.free(a, 0).unwrap();
        m.free(b, 3).unwrap();
        assert_eq!(m.check_invariants(), None);
        assert_eq!(m.buddyinfo(), before);
    }

    #[test]
    fn bad_frees_are_errors() {
        let mut m = small();
        let a = m.alloc(2).unwrap();
        assert_eq!(m.free(a, 1), Err(ModelError::BadFree { pfn: a, order: 1 }));
        m.free(a, 2).unwrap();
        assert_eq!(m.free(a, 2), Err(ModelError::BadFree { pfn: a, order: 2 }));
        assert!(matches!(m.alloc(11), Err(ModelError::OrderTooLarge { .. })));
        assert_eq!(m.check_invariants(), None);
    }

    #[test]
    fn mmio_and_holes_are_not_ram() {
        let m = small();
        assert!(m.is_ram(Pfn(0x100)));
        assert!(!m.is_ram(Pfn(0x0)));
        assert!(!m.is_ram(Pfn(0x1800)));
        assert!(!m.is_ram(Pfn(0x900)));
        assert_eq!(m.region_of(Pfn(0x1800)).map(|r| r.kind), Some(RegionKind::Mmio));
    }

    #[test]
    fn freed_page_is_reused_first() {
        let mut m = small();
        let a = m.alloc(0).unwrap();
        let _b = m.alloc(0).unwrap();
        m.free(a, 0).unwrap();
        assert_eq!(m.alloc(0).unwrap(), a);
    }

    #[test]
    fn overlapping_regions_are_rejected() {
        let r = PhysMemory::new(
            PageSize::SIZE_4K,
            &[
                Region { start: Pfn(0), pages: 0x10, kind: RegionKind::Ram },
                Region { start: Pfn(0x8), pages: 0x10, kind: RegionKind::Ram },
            ],
        );
        assert!(matches!(r, Err(ModelError::BadRegion(_))));
    }
}
