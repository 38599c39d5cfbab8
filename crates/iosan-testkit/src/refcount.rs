//! The per-page IOMMU mapping counts a sanitizer must hold, derived from a
//! plain list of live mappings per domain: the reference of
//! `iosan_core::Sanitizer` in both its semantics.
//!
//! - Exact: a CPU page's count is the number of (mapping, step) pairs that
//!   land in it, stepping each live mapping by the smaller of its domain's
//!   granule and the CPU page, so every page a mapping touches counts,
//!   whatever the granule.
//! - Upstream: the counters of Linux's `CONFIG_IOMMU_DEBUG_PAGEALLOC`
//!   (`drivers/iommu/iommu-debug-pagealloc.c`), kept step for step as the
//!   kernel does: `__iommu_debug_map()` increments the page of each
//!   granule from `phys` (a map at physical address 0 is skipped whole,
//!   `WARN_ON(!phys)`), `__iommu_debug_unmap_begin()` decrements the page
//!   that `iommu_iova_to_phys()` gives for each granule before the unmap
//!   (skipping 0: nothing mapped), and `__iommu_debug_unmap_end()`
//!   increments again the granules past the bytes really unmapped. Only
//!   the first page of a granule larger than the CPU page is counted: the
//!   kernel's known false negative.
//!
//! Units: bytes; counts per CPU page from physical address 0 up to the
//! model's RAM size (pages beyond are not tracked, as pages without a
//! `page_ext` are not).

use std::collections::BTreeMap;

use iosan_core::{Iova, IovaRange, Semantics};

/// Live mappings per domain and the kernel's counters.
#[derive(Clone, Debug)]
pub struct RefcountModel {
    page_lg2: u32,
    semantics: Semantics,
    ram_bytes: u64,
    granules_lg2: Vec<u32>,
    /// Per domain: start IOVA -> (phys, len).
    maps: Vec<BTreeMap<u64, (u64, u64)>>,
    /// The kernel's counters, per CPU page (upstream semantics only).
    upstream: Vec<i64>,
}

impl RefcountModel {
    /// Nothing mapped, for domains with the granules `granules_lg2`, CPU
    /// pages of `1 << page_lg2` bytes and RAM `[0, ram_bytes)`.
    #[must_use]
    pub fn new(semantics: Semantics, page_lg2: u32, ram_bytes: u64, granules_lg2: &[u32]) -> Self {
        let pages = usize::try_from(ram_bytes >> page_lg2).unwrap_or(0);
        Self {
            page_lg2,
            semantics,
            ram_bytes,
            granules_lg2: granules_lg2.to_vec(),
            maps: vec![BTreeMap::new(); granules_lg2.len()],
            upstream: vec![0; pages],
        }
    }

    /// The live mappings of domain `d`: start IOVA -> (phys, len).
    #[must_use]
    pub fn mappings(&self, d: usize) -> Option<&BTreeMap<u64, (u64, u64)>> {
        self.maps.get(d)
    }

    /// The live mapping of domain `d` containing `iova`, as an IOVA range.
    #[must_use]
    pub fn entry_at(&self, d: usize, iova: u64) -> Option<IovaRange> {
        let (&s, &(_, l)) = self.maps.get(d)?.range(..=iova).next_back()?;
        IovaRange::from_start_len(Iova(s), l).filter(|r| r.contains(Iova(iova)))
    }

    /// `iommu_iova_to_phys()` in domain `d`.
    #[must_use]
    pub fn translate(&self, d: usize, iova: u64) -> Option<u64> {
        let (&s, &(p, l)) = self.maps.get(d)?.range(..=iova).next_back()?;
        (iova - s < l).then(|| p + (iova - s))
    }

    fn granule(&self, d: usize) -> u32 {
        self.granules_lg2.get(d).copied().unwrap_or(12)
    }

    fn page_index(&self, phys: u64) -> Option<usize> {
        usize::try_from(phys >> self.page_lg2).ok().filter(|&i| i < self.upstream.len())
    }

    fn upstream_add(&mut self, phys: u64, delta: i64) {
        if let Some(c) = self.page_index(phys).and_then(|i| self.upstream.get_mut(i)) {
            *c += delta;
        }
    }

    /// A successful map of `[iova, iova + len)` to `phys` in domain `d`
    /// (the caller has checked it is inside RAM and did not overlap).
    /// Returns true if the kernel WARNs on it: an increment that leaves a
    /// count at or below 0, a page an earlier unmap of a map at physical
    /// address 0 drove negative.
    pub fn map(&mut self, d: usize, iova: u64, phys: u64, len: u64) -> bool {
        let Some(m) = self.maps.get_mut(d) else { return false };
        m.insert(iova, (phys, len));
        if self.semantics != Semantics::Upstream || phys == 0 {
            return false;
        }
        let step = 1u64 << self.granule(d);
        let offsets = || (0..len).step_by(usize::try_from(step).unwrap_or(usize::MAX));
        let warns =
            offsets().any(|off| self.page_index(phys + off).and_then(|i| self.upstream.get(i)).is_some_and(|&c| c < 0));
        for off in offsets() {
            self.upstream_add(phys + off, 1);
        }
        warns
    }

    /// `__iommu_debug_unmap_begin()`: before the IOMMU changes anything.
    pub fn unmap_begin(&mut self, d: usize, iova: u64, size: u64) {
        self.update_iova(d, iova, 0, size, -1);
    }

    /// Removes `piece` (inside one live mapping of domain `d`) from the
    /// mappings, splitting the mapping around it.
    pub fn remove(&mut self, d: usize, piece: IovaRange) {
        let (s, l) = (piece.start().get(), piece.len().unwrap_or(u64::MAX));
        let Some(m) = self.maps.get_mut(d) else { return };
        let Some((&es, &(ep, el))) = m.range(..=s).next_back() else { return };
        m.remove(&es);
        if es < s {
            m.insert(es, (ep, s - es));
        }
        if es + el > s + l {
            m.insert(s + l, (ep + (s + l - es), es + el - (s + l)));
        }
    }

    /// `__iommu_debug_unmap_end()`: after the IOMMU removed `unmapped`
    /// bytes of the `size` asked (and [`RefcountModel::remove`] took them
    /// out of the mappings).
    pub fn unmap_end(&mut self, d: usize, iova: u64, size: u64, unmapped: u64) {
        if unmapped < size {
            self.update_iova(d, iova, unmapped, size, 1);
        }
    }

    /// `__iommu_debug_update_iova()`: one step per granule of
    /// `[iova + from, iova + size)`, on the page the IOVA translates to.
    fn update_iova(&mut self, d: usize, iova: u64, from: u64, size: u64, delta: i64) {
        if self.semantics != Semantics::Upstream {
            return;
        }
        let step = 1u64 << self.granule(d);
        let mut off = from;
        while off < size {
            let Some(at) = iova.checked_add(off) else { break };
            if let Some(p) = self.translate(d, at).filter(|&p| p != 0) {
                self.upstream_add(p, delta);
            }
            off += step;
        }
    }

    /// The count every CPU page must have, in the model's semantics.
    #[must_use]
    pub fn counts(&self) -> Vec<i64> {
        match self.semantics {
            Semantics::Exact => self.exact_counts(),
            Semantics::Upstream => self.upstream.clone(),
        }
    }

    fn exact_counts(&self) -> Vec<i64> {
        let mut c = vec![0i64; self.upstream.len()];
        for (d, m) in self.maps.iter().enumerate() {
            let step = 1u64 << self.granule(d).min(self.page_lg2);
            for &(phys, len) in m.values() {
                let mut off = 0;
                while off < len {
                    if let Some(n) = self.page_index(phys + off).and_then(|i| c.get_mut(i)) {
                        *n += 1;
                    }
                    off += step;
                }
            }
        }
        c
    }

    /// RAM size in bytes.
    #[must_use]
    pub fn ram_bytes(&self) -> u64 {
        self.ram_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_counts_every_page_upstream_the_first_of_a_granule() {
        for (sem, second_page) in [(Semantics::Exact, 1), (Semantics::Upstream, 0)] {
            let mut m = RefcountModel::new(sem, 12, 1 << 20, &[16]);
            assert!(!m.map(0, 0x10000, 0x20000, 0x10000));
            let c = m.counts();
            assert_eq!((c[0x20], c[0x21]), (1, second_page), "{sem:?}");
        }
    }

    #[test]
    fn upstream_phys_zero_goes_negative_and_the_next_map_warns() {
        let mut m = RefcountModel::new(Semantics::Upstream, 12, 1 << 20, &[12, 12]);
        m.map(0, 0x4000, 0, 0x2000);
        m.unmap_begin(0, 0x4000, 0x2000);
        m.remove(0, IovaRange::from_start_len(Iova(0x4000), 0x2000).unwrap());
        m.unmap_end(0, 0x4000, 0x2000, 0x2000);
        assert_eq!(m.counts()[1], -1);
        assert!(m.map(1, 0x8000, 0x1000, 0x1000), "the kernel WARNs");
        assert_eq!(m.counts()[1], 0);
    }

    #[test]
    fn short_unmap_is_counted_back_up() {
        let mut m = RefcountModel::new(Semantics::Upstream, 12, 1 << 20, &[12]);
        m.map(0, 0x4000, 0x10000, 0x3000);
        m.unmap_begin(0, 0x4000, 0x3000);
        m.remove(0, IovaRange::from_start_len(Iova(0x4000), 0x1000).unwrap());
        m.unmap_end(0, 0x4000, 0x3000, 0x1000);
        assert_eq!(&m.counts()[0x10..0x13], &[0, 1, 1]);
        assert_eq!(m.translate(0, 0x5800), Some(0x11800));
        assert_eq!(m.entry_at(0, 0x4000), None);
    }
}
