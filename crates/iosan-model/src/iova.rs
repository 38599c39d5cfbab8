//! IOVA lifetimes: the per-device IOVA allocator (`drivers/iommu/iova.c`,
//! `struct iova_domain`) and the flush queue of lazy mode, where unmapped
//! IOVAs wait for the IOTLB flush before they are freed (`struct iova_fq`,
//! in iova.c until Linux 5.17, now in dma-iommu.c).
//!
//! Plain data with no knowledge of the rest of the model: the DMA API
//! (`dma`) drives them and the kernel (`kernel`) holds them, so both
//! depend on this module and it on neither.
//!
//! Units: bytes, nanoseconds of model time.

use std::collections::BTreeMap;

/// A per-device IOVA space (`struct iova_domain`): allocations top-down
/// below the DMA mask, size-aligned, with the kernel's cached search
/// ceiling (`cached_node`): a search starts below the last allocation and
/// a free above it moves the ceiling back up.
#[derive(Clone, Debug)]
pub struct IovaDomain {
    granule_lg2: u32,
    /// First allocatable IOVA (IOVA 0 is never handed out).
    start: u64,
    /// One past the highest allocatable IOVA.
    limit: u64,
    ceiling: u64,
    allocated: BTreeMap<u64, u64>,
}

impl IovaDomain {
    /// A space of `[granule, dma_mask]`.
    #[must_use]
    pub fn new(granule_lg2: u32, dma_mask: u64) -> Self {
        let limit = dma_mask.saturating_add(1) & !((1u64 << granule_lg2) - 1);
        let limit = if limit == 0 { !((1u64 << granule_lg2) - 1) } else { limit };
        Self { granule_lg2, start: 1 << granule_lg2, limit, ceiling: limit, allocated: BTreeMap::new() }
    }

    /// The size an allocation of `len` bytes really takes: whole granules,
    /// rounded up to a power of two below 32 granules (the rcache sizes of
    /// `iommu_dma_alloc_iova()`).
    #[must_use]
    pub fn alloc_len(&self, len: u64) -> Option<u64> {
        let g = 1u64 << self.granule_lg2;
        let pages = len.checked_add(g - 1)? >> self.granule_lg2;
        let pages = if pages < 32 { pages.max(1).next_power_of_two() } else { pages };
        pages.checked_mul(g)
    }

    /// `alloc_iova_fast()`: the highest free, size-aligned range of `len`
    /// bytes (already rounded by [`IovaDomain::alloc_len`]).
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let align = len.next_power_of_two().min(1 << 30).max(1 << self.granule_lg2);
        let found = self.search(self.ceiling, len, align).or_else(|| self.search(self.limit, len, align))?;
        self.allocated.insert(found, len);
        self.ceiling = found;
        Some(found)
    }

    fn search(&self, top: u64, len: u64, align: u64) -> Option<u64> {
        let mut top = top;
        loop {
            let cand = top.checked_sub(len)? & !(align - 1);
            if cand < self.start {
                return None;
            }
            // The highest allocation starting below `top`.
            match self.allocated.range(..top).next_back() {
                Some((&s, &l)) if s + l > cand => top = s,
                _ => return Some(cand),
            }
        }
    }

    /// `free_iova_fast()`: frees the allocation starting at `iova`; returns
    /// its length, or `None` if nothing starts there.
    pub fn free(&mut self, iova: u64) -> Option<u64> {
        let len = self.allocated.remove(&iova)?;
        if iova >= self.ceiling {
            self.ceiling = self.allocated.range(iova + 1..).next().map_or(self.limit, |(&s, _)| s);
        }
        Some(len)
    }

    /// The allocation containing `iova`, as `(start, len)`.
    #[must_use]
    pub fn find(&self, iova: u64) -> Option<(u64, u64)> {
        let (&s, &l) = self.allocated.range(..=iova).next_back()?;
        (iova < s + l).then_some((s, l))
    }

    /// Log2 of the allocation granule.
    #[must_use]
    pub fn granule_lg2(&self) -> u32 {
        self.granule_lg2
    }

    /// Live allocations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.allocated.len()
    }

    /// True if nothing is allocated.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.allocated.is_empty()
    }
}

/// One unmap waiting in the flush queue.
#[derive(Clone, Debug)]
pub(crate) struct FqEntry {
    pub(crate) dev: u32,
    pub(crate) iova: u64,
    /// The CPU page runs `(first, count)` the unmapped range translated to.
    pub(crate) pfns: Vec<(u64, u64)>,
}

/// The flush queue of lazy mode (`struct iova_fq`, one for the model):
/// IOVAs are freed and the IOTLB flushed on the 10 ms timer or when full.
#[derive(Clone, Debug, Default)]
pub struct FlushQueue {
    pub(crate) entries: Vec<FqEntry>,
    pub(crate) first_ns: u64,
}

/// `IOVA_FQ_TIMEOUT`: 10 ms.
pub const FQ_TIMEOUT_NS: u64 = 10_000_000;
/// `IOVA_FQ_SIZE`.
pub const FQ_SIZE: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iova_allocation_is_top_down_and_reuses_freed_space() {
        let mut d = IovaDomain::new(12, 0xffff_ffff);
        let a = d.alloc(0x1000).unwrap();
        assert_eq!(a, 0xffff_f000);
        let b = d.alloc(0x2000).unwrap();
        assert_eq!(b, 0xffff_c000);
        let c = d.alloc(0x1000).unwrap();
        assert_eq!(c, 0xffff_b000);
        assert_eq!(d.free(a), Some(0x1000));
        assert_eq!(d.alloc(0x1000), Some(0xffff_f000));
        assert_eq!(d.alloc_len(0x1b000), Some(0x20000));
        assert_eq!(d.alloc_len(0x40000), Some(0x40000));
        assert_eq!(d.find(0xffff_c800), Some((0xffff_c000, 0x2000)));
        assert_eq!(d.free(0x1234_5000), None);
    }
}
