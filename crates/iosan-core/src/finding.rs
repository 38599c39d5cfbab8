//! Findings: what the sanitizer reports, as values.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::addr::{Iova, Pfn, PhysAddr};

/// Identifies a domain to the host (a kernel pointer, a VT-d domain id, an
/// index): opaque to the sanitizer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct DomainId(pub u64);

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Where a mapping came from: supplied by the host at map time.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MapMeta {
    /// When it was mapped: a sequence number or a timestamp, in the host's unit.
    pub when: u64,
    /// An opaque caller tag (a stack id, a task id, an index into the host's
    /// own table), or 0 for none.
    pub tag: u64,
}

/// A live mapping that covers a reported page (provenance).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Mapping {
    /// The domain holding the mapping.
    pub domain: DomainId,
    /// The device using the domain, when the host knows it.
    pub device: Option<Arc<str>>,
    /// First IOVA of the mapping (as mapped, not clipped to the page).
    pub iova: Iova,
    /// Physical address `iova` translates to.
    pub phys: PhysAddr,
    /// Length in bytes.
    pub len: u64,
    /// When and by whom it was mapped.
    pub meta: MapMeta,
}

/// The kinds of finding. Their [`name`](FindingKind::name)s are stable and
/// used in JSON output.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum FindingKind {
    /// A page was returned to the page allocator while an IOMMU mapping covered it.
    FreedWhileMapped,
    /// A page was handed out by the page allocator while an IOMMU mapping covered it.
    AllocatedWhileMapped,
    /// An unmap found no translation anywhere in its range.
    DoubleUnmap,
    /// An unmap range was only partly translated.
    UnmapOverlapsUnmapped,
    /// A counter would have gone below zero.
    RefcountUnderflow,
    /// A counter would have gone past its maximum.
    RefcountOverflow,
    /// A map or unmap with a zero size, an overflowing range, a misaligned
    /// address, or (in upstream semantics) physical address 0.
    InvalidMapArgs,
    /// A domain was destroyed with live mappings.
    LeakAtTeardown,
    /// A mapping still live at the end of a capture (informational).
    MappedAtEnd,
    /// Events were lost: results nearby are incomplete (confidence warning).
    LostEvents,
    /// A DMA-API unmap differs from its map in size or direction.
    DmaUnmapMismatch,
    /// The IOMMU unmapped more than was asked. Exact semantics handles it;
    /// upstream warns once and keeps stale counts (informational).
    UnmappedMoreThanRequested,
    /// A static identity window (IOVA == phys, mapped before any page
    /// allocation, like x86's ISA window): pages freed inside it are
    /// device-reachable by design and tallied as exposure (informational).
    IdentityWindow,
    /// An unmap found nothing because an earlier unmap that removed more
    /// than it asked (a whole block) had already removed its range: not a
    /// double unmap (informational).
    UnmapAlreadyRemoved,
    /// An unmap of part of a block mapping that the IOMMU refused (removed
    /// 0 bytes, as io-pgtable-arm does from Linux 6.13 with a WARN): the
    /// mapping stays (informational).
    PartialBlockUnmapRefused,
    /// A map failed (`__iommu_map`/`iommu_map_nosync` returned an error)
    /// and the kernel unmapped what it had mapped of it: nothing of it
    /// stays mapped (informational).
    MapFailed,
}

impl FindingKind {
    /// Every kind, in a stable order.
    pub const ALL: [FindingKind; 16] = [
        Self::FreedWhileMapped,
        Self::AllocatedWhileMapped,
        Self::DoubleUnmap,
        Self::UnmapOverlapsUnmapped,
        Self::RefcountUnderflow,
        Self::RefcountOverflow,
        Self::InvalidMapArgs,
        Self::LeakAtTeardown,
        Self::MappedAtEnd,
        Self::LostEvents,
        Self::DmaUnmapMismatch,
        Self::UnmappedMoreThanRequested,
        Self::IdentityWindow,
        Self::UnmapAlreadyRemoved,
        Self::PartialBlockUnmapRefused,
        Self::MapFailed,
    ];

    /// The stable name used in reports and JSON.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::FreedWhileMapped => "freed-while-mapped",
            Self::AllocatedWhileMapped => "allocated-while-mapped",
            Self::DoubleUnmap => "double-unmap",
            Self::UnmapOverlapsUnmapped => "unmap-overlaps-unmapped",
            Self::RefcountUnderflow => "refcount-underflow",
            Self::RefcountOverflow => "refcount-overflow",
            Self::InvalidMapArgs => "invalid-map-args",
            Self::LeakAtTeardown => "leak-at-teardown",
            Self::MappedAtEnd => "mapped-at-end",
            Self::LostEvents => "lost-events",
            Self::DmaUnmapMismatch => "dma-unmap-mismatch",
            Self::UnmappedMoreThanRequested => "unmapped-more-than-requested",
            Self::IdentityWindow => "identity-window",
            Self::UnmapAlreadyRemoved => "unmap-already-removed",
            Self::PartialBlockUnmapRefused => "partial-block-unmap-refused",
            Self::MapFailed => "map-failed",
        }
    }

    /// The kind with this stable name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// True for kinds that indicate a bug (they make `iosan` exit 1);
    /// false for informational kinds and confidence warnings.
    #[must_use]
    pub const fn is_bug(self) -> bool {
        !matches!(
            self,
            Self::MappedAtEnd
                | Self::LostEvents
                | Self::UnmappedMoreThanRequested
                | Self::IdentityWindow
                | Self::UnmapAlreadyRemoved
                | Self::PartialBlockUnmapRefused
                | Self::MapFailed
        )
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why map or unmap arguments were rejected.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InvalidArgs {
    /// Size zero.
    ZeroSize,
    /// `phys + size` passes 2^64.
    PhysOverflow,
    /// `iova + size` passes 2^64.
    IovaOverflow,
    /// Physical address 0: upstream refuses it (`WARN_ON(!phys)`) and never counts it.
    PhysZero,
    /// IOVA, physical address or size not aligned to the domain's granule.
    Misaligned,
    /// The domain has an empty `pgsize_bitmap`.
    NoPageSizes,
    /// A page-allocator block order beyond the supported maximum.
    OrderTooLarge,
}

impl InvalidArgs {
    /// A short description.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Self::ZeroSize => "size is zero",
            Self::PhysOverflow => "phys + size overflows",
            Self::IovaOverflow => "iova + size overflows",
            Self::PhysZero => "physical address 0 (upstream skips such maps)",
            Self::Misaligned => "not aligned to the domain's granule",
            Self::NoPageSizes => "domain has an empty pgsize_bitmap",
            Self::OrderTooLarge => "block order too large",
        }
    }
}

/// One finding: a contiguous run of pages (or an IOVA range) with one cause.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Finding {
    /// What happened.
    pub kind: FindingKind,
    /// First page concerned, when the finding is about pages.
    pub pfn: Option<Pfn>,
    /// Number of contiguous pages from `pfn` (0 when not about pages).
    pub npages: u64,
    /// Highest mapping count seen over the pages (for page findings), or the
    /// count that would have under/overflowed.
    pub count: u32,
    /// The domain, for map/unmap findings.
    pub domain: Option<DomainId>,
    /// IOVA concerned, for map/unmap findings.
    pub iova: Option<Iova>,
    /// Size in bytes concerned, for map/unmap findings.
    pub size: u64,
    /// Why arguments were rejected, for `invalid-map-args`.
    pub invalid: Option<InvalidArgs>,
    /// Every live mapping covering the pages, when the host supplied a
    /// [`MappingSource`](crate::MappingSource).
    pub mappings: Vec<Mapping>,
}

impl Finding {
    /// A finding about pages.
    #[must_use]
    pub fn pages(kind: FindingKind, pfn: Pfn, npages: u64, count: u32) -> Self {
        Self {
            kind,
            pfn: Some(pfn),
            npages,
            count,
            domain: None,
            iova: None,
            size: 0,
            invalid: None,
            mappings: Vec::new(),
        }
    }

    /// A finding about an IOVA range of a domain.
    #[must_use]
    pub fn range(kind: FindingKind, domain: DomainId, iova: Iova, size: u64) -> Self {
        Self {
            kind,
            pfn: None,
            npages: 0,
            count: 0,
            domain: Some(domain),
            iova: Some(iova),
            size,
            invalid: None,
            mappings: Vec::new(),
        }
    }

    /// An `invalid-map-args` finding.
    #[must_use]
    pub fn invalid(domain: DomainId, iova: Iova, size: u64, why: InvalidArgs) -> Self {
        let mut f = Self::range(FindingKind::InvalidMapArgs, domain, iova, size);
        f.invalid = Some(why);
        f
    }
}

/// Something that can list the live mappings covering physical memory:
/// the host's domains. Used to attach provenance to page findings.
pub trait MappingSource {
    /// Calls `visit` for every live mapping overlapping `[phys, phys + len)`.
    fn mappings_covering(&self, phys: PhysAddr, len: u64, visit: &mut dyn FnMut(Mapping));
}

/// No provenance: findings carry no mapping list.
pub struct NoMappings;

impl MappingSource for NoMappings {
    fn mappings_covering(&self, _: PhysAddr, _: u64, _: &mut dyn FnMut(Mapping)) {}
}

impl<T: MappingSource> MappingSource for [T] {
    fn mappings_covering(&self, phys: PhysAddr, len: u64, visit: &mut dyn FnMut(Mapping)) {
        for s in self {
            s.mappings_covering(phys, len, visit);
        }
    }
}
