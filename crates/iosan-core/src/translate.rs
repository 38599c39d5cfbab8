//! What the sanitizer needs from an IOMMU domain.
//!
//! A domain is anything that translates IOVAs to physical addresses: the
//! model's io-pgtable formats, the trace analyser's [`ShadowDomain`], or an
//! embedding hypervisor's own page tables. The sanitizer only reads it.
//!
//! [`ShadowDomain`]: crate::ShadowDomain

use core::ops::ControlFlow;

use crate::addr::{Iova, IovaRange, PhysAddr};

/// `len` bytes starting at `iova` translate to `[phys, phys + len)`.
///
/// A run is one leaf entry or several leaf entries that are contiguous in
/// both address spaces. `len > 0`, and neither end wraps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafRun {
    /// First IOVA of the run.
    pub iova: Iova,
    /// Physical address that `iova` translates to.
    pub phys: PhysAddr,
    /// Length in bytes.
    pub len: u64,
}

impl LeafRun {
    /// The IOVA range of the run, or `None` if `len == 0` or it wraps.
    #[must_use]
    pub fn iova_range(&self) -> Option<IovaRange> {
        IovaRange::from_start_len(self.iova, self.len)
    }
}

/// A domain's translation, as the sanitizer sees it.
///
/// Models `struct iommu_domain` seen through `iommu_iova_to_phys()` and its
/// `pgsize_bitmap`, plus one range walk so that an unmap is recorded with a
/// single walk instead of one lookup per page.
pub trait Translate {
    /// The page sizes the domain can map (`iommu_domain::pgsize_bitmap`):
    /// bit `n` set means pages of `2^n` bytes. The lowest set bit is the
    /// granule. Zero means the domain cannot map anything.
    fn pgsize_bitmap(&self) -> u64;

    /// Calls `visit` for every leaf translation overlapping `range`, in
    /// increasing IOVA order. A leaf entry that straddles either end of
    /// `range` is reported whole (its run may start before `range.start()`
    /// or end after `range.last()`), because an IOMMU that cannot split a
    /// block unmaps all of it. Holes are simply not reported. `visit` may
    /// stop the walk early with `ControlFlow::Break`.
    fn walk_leaves(&self, range: IovaRange, visit: &mut dyn FnMut(LeafRun) -> ControlFlow<()>);

    /// `iommu_iova_to_phys()`: the physical address `iova` translates to,
    /// or `None` when nothing is mapped there (the kernel returns 0).
    fn iova_to_phys(&self, iova: Iova) -> Option<PhysAddr> {
        let range = IovaRange::from_start_len(iova, 1)?;
        let mut found = None;
        self.walk_leaves(range, &mut |run| {
            if let Some(off) = iova.offset_from(run.iova) {
                if off < run.len {
                    found = run.phys.checked_add(off);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        found
    }
}

/// The granule (smallest page size) of a `pgsize_bitmap`, as a log2, or
/// `None` for an empty bitmap.
#[must_use]
pub fn granule_lg2(pgsize_bitmap: u64) -> Option<u32> {
    (pgsize_bitmap != 0).then(|| pgsize_bitmap.trailing_zeros())
}
