//! # iosan-core: the DMA use-after-free sanitizer engine
//!
//! Counts, for every CPU page, how many IOMMU mappings cover it, and reports
//! a page that the page allocator frees or hands out while the count is not
//! zero: memory a device can still reach through the IOMMU. This is what
//! Linux 7.0's `CONFIG_IOMMU_DEBUG_PAGEALLOC` does, made exact and given
//! provenance; [`Semantics::Upstream`] reproduces the kernel's algorithm,
//! gaps included, for comparison.
//!
//! Supported envelope: CPU pages of 4, 16 or 64 KiB; any IOMMU page sizes
//! (`pgsize_bitmap`), granules smaller or larger than the CPU page;
//! physical addresses below 2^52 by default (configurable RAM regions).
//! `no_std` + `alloc` (disable the default `std` feature).
//!
//! ```
//! use iosan_core::{DomainId, FindingKind, Iova, MapMeta, NoMappings, PhysAddr, Pfn, Sanitizer, ShadowDomain};
//!
//! let san = Sanitizer::default();
//! let id = DomainId(1);
//! let mut dom = ShadowDomain::new(id, 0x1000); // 4 KiB IOMMU pages
//! dom.map(Iova(0xffff_0000), PhysAddr(0x1234_5000), 0x1000, MapMeta::default());
//! assert!(san.map(id, &dom, Iova(0xffff_0000), PhysAddr(0x1234_5000), 0x1000).is_empty());
//!
//! // Freeing the page while the device can still reach it is a finding,
//! // with the mapping that covers it.
//! let found = san.check_free(Pfn(0x12345), 0, &dom);
//! assert_eq!(found[0].kind, FindingKind::FreedWhileMapped);
//! assert_eq!(found[0].mappings[0].iova, Iova(0xffff_0000));
//!
//! // Unmap first, then free: clean.
//! let (ticket, f) = san.unmap_begin(id, &dom, Iova(0xffff_0000), 0x1000);
//! assert!(f.is_empty());
//! let gone = dom.unmap(iosan_core::IovaRange::from_start_len(Iova(0xffff_0000), 0x1000).unwrap());
//! let unmapped: u64 = gone.iter().map(|m| m.len()).sum();
//! assert!(san.unmap_end(ticket, &dom, unmapped).is_empty());
//! assert!(san.check_free(Pfn(0x12345), 0, &NoMappings).is_empty());
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod addr;
pub mod finding;
pub mod hash;
pub mod sanitizer;
pub mod shadow;
pub mod store;
mod sync;
pub mod translate;

pub use addr::{DmaAddr, Iova, IovaRange, PageSize, Pfn, PhysAddr, PhysRange};
pub use finding::{DomainId, Finding, FindingKind, InvalidArgs, MapMeta, Mapping, MappingSource, NoMappings};
pub use sanitizer::{Config, Sanitizer, Semantics, StatsSnapshot, UnmapTicket, PHYS_LIMIT};
pub use shadow::{ShadowDomain, ShadowMapResult, ShadowMapping};
pub use translate::{granule_lg2, LeafRun, Translate};
