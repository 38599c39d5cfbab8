//! The model-based check of iosan-core's engine: a [`Sanitizer`] with four
//! [`ShadowDomain`]s standing in for IOMMU page tables, driven by map /
//! unmap (partial, block, double) / free / alloc operations and compared
//! after each with the [`RefcountModel`] and the [`iommu`](crate::iommu)
//! unmap reference. The property tests (`crates/iosan-core/tests/props.rs`)
//! and the `engine` fuzz target drive the same [`Harness`] with their own
//! generators.
//!
//! What is checked, in the terms of the kernel hooks the engine models:
//! - `iommu_map()` of correct arguments gives no finding, except upstream's
//!   `WARN_ON(!phys)` on a map at physical address 0 and its WARN on a
//!   count driven negative by the unmap of such a map;
//! - `__iommu_unmap()` (exact semantics) reports a double unmap when
//!   nothing in the range was mapped, an unmap over a hole when part was,
//!   and nothing otherwise;
//! - `free_pages_prepare()` / `post_alloc_hook()` report exactly the pages
//!   whose reference count is not 0, and (exact) with the mappings that
//!   cover them;
//! - at any point every page's count equals the reference.
//!
//! Operations are given in slots (multiples of the domain's granule from
//! [`IOVA_BASE`] and from physical 0), so that random operations collide
//! often; the bounds are the constants below, and [`Harness::step`]
//! refuses an operation outside them.

use iosan_core::{
    Config, DomainId, Finding, FindingKind, Iova, IovaRange, MapMeta, Mapping, MappingSource, PageSize, Pfn, PhysAddr,
    PhysRange, Sanitizer, Semantics, ShadowDomain, ShadowMapResult,
};

use crate::iommu::{unmap_pieces, unmapped_bytes, Leaves};
use crate::refcount::RefcountModel;

/// RAM of the check: `[0, 64 MiB)`.
pub const RAM_BYTES: u64 = 64 << 20;
/// IOVA of slot 0 in every domain.
pub const IOVA_BASE: u64 = 1 << 30;
/// The domains, by index: (granule log2, leaves). 4, 16 and 64 KiB split
/// tables and a 4 KiB one whose leaves go whole.
pub const DOMAINS: [(u32, Leaves); 4] =
    [(12, Leaves::Split), (14, Leaves::Split), (16, Leaves::Split), (12, Leaves::Block)];
/// IOVA slots per domain (`iova_slot < IOVA_SLOTS`).
pub const IOVA_SLOTS: u64 = 48;
/// Physical slots (`phys_slot < PHYS_SLOTS`, in granules from 0).
pub const PHYS_SLOTS: u64 = 200;
/// Granules in one map (`1..=MAX_MAP_GRANULES`).
pub const MAX_MAP_GRANULES: u64 = 5;
/// Granules in one unmap (`1..=MAX_UNMAP_GRANULES`).
pub const MAX_UNMAP_GRANULES: u64 = 7;
/// Page slots of a free or alloc (`page < PAGE_SLOTS`).
pub const PAGE_SLOTS: u64 = 1024;
/// Largest order of a free or alloc.
pub const MAX_ORDER: u32 = 4;

/// One operation, in slots.
#[derive(Clone, Debug)]
pub enum Op {
    /// `iommu_map()` of `n` granules at `iova_slot` to `phys_slot` in domain `d`.
    Map {
        /// Domain index into [`DOMAINS`].
        d: usize,
        /// IOVA in granules from [`IOVA_BASE`].
        iova_slot: u64,
        /// Physical address in granules from 0.
        phys_slot: u64,
        /// Granules.
        n: u64,
    },
    /// `iommu_unmap()` of `n` granules at `iova_slot` in domain `d`.
    Unmap {
        /// Domain index into [`DOMAINS`].
        d: usize,
        /// IOVA in granules from [`IOVA_BASE`].
        iova_slot: u64,
        /// Granules.
        n: u64,
    },
    /// `__free_pages()` of a block of `1 << order` pages picked by `page`.
    Free {
        /// Spread over RAM and aligned to the order.
        page: u64,
        /// Block order.
        order: u32,
    },
    /// `alloc_pages()` of a block of `1 << order` pages picked by `page`.
    Alloc {
        /// Spread over RAM and aligned to the order.
        page: u64,
        /// Block order.
        order: u32,
    },
}

/// The four empty shadow domains of [`DOMAINS`], with ids 0..4.
#[must_use]
pub fn shadow_domains() -> Vec<ShadowDomain> {
    DOMAINS
        .iter()
        .zip(0u64..)
        .map(|(&(g, leaves), id)| match leaves {
            Leaves::Split => ShadowDomain::new(DomainId(id), 1 << g),
            Leaves::Block => ShadowDomain::with_block_leaves(DomainId(id), 1 << g),
        })
        .collect()
}

/// Every domain's mappings, for the provenance of free and alloc findings.
pub struct AllDomains<'a>(pub &'a [ShadowDomain]);

impl MappingSource for AllDomains<'_> {
    fn mappings_covering(&self, phys: PhysAddr, len: u64, visit: &mut dyn FnMut(Mapping)) {
        for d in self.0 {
            d.mappings_covering(phys, len, visit);
        }
    }
}

/// The mapping of `d` containing `iova`, for [`unmap_pieces`].
#[must_use]
pub fn shadow_entry_at(d: &ShadowDomain, iova: u64) -> Option<IovaRange> {
    let at = IovaRange::from_start_len(Iova(iova), 1)?;
    d.overlapping(at).next().map(|m| m.iova)
}

/// `__iommu_unmap()` on a shadow domain with the sanitizer's hooks around
/// it: `unmap_begin`, the IOMMU removing `pieces`, `unmap_end` with the
/// bytes unmapped. Returns the findings of begin and end.
pub fn unmap_with_hooks(
    san: &Sanitizer,
    d: &mut ShadowDomain,
    iova: u64,
    size: u64,
    pieces: &[IovaRange],
) -> Vec<Finding> {
    let (ticket, mut found) = san.unmap_begin(d.id(), d, Iova(iova), size);
    for &p in pieces {
        d.unmap(p);
    }
    found.extend(san.unmap_end(ticket, d, unmapped_bytes(pieces)));
    found
}

/// The sanitizer, the shadow domains and the reference, in step.
pub struct Harness {
    page_lg2: u32,
    semantics: Semantics,
    san: Sanitizer,
    doms: Vec<ShadowDomain>,
    model: RefcountModel,
}

impl Harness {
    /// Nothing mapped, CPU pages of `1 << page_lg2` bytes.
    ///
    /// # Panics
    /// If `page_lg2` is not 12, 14 or 16.
    #[must_use]
    pub fn new(page_lg2: u32, semantics: Semantics) -> Self {
        let page = PageSize::from_lg2(page_lg2).expect("a 4, 16 or 64 KiB page");
        let san = Sanitizer::new(Config {
            semantics,
            page_size: page,
            ram: PhysRange::from_start_len(PhysAddr(0), RAM_BYTES).into_iter().collect(),
            ..Config::default()
        });
        let granules: Vec<u32> = DOMAINS.iter().map(|&(g, _)| g).collect();
        let model = RefcountModel::new(semantics, page_lg2, RAM_BYTES, &granules);
        Self { page_lg2, semantics, san, doms: shadow_domains(), model }
    }

    /// The sanitizer under test.
    #[must_use]
    pub fn sanitizer(&self) -> &Sanitizer {
        &self.san
    }

    /// Runs operation number `step` on both sides and compares.
    ///
    /// # Errors
    /// A message naming the step and what differs.
    pub fn step(&mut self, step: usize, op: &Op) -> Result<(), String> {
        let in_bounds = match *op {
            Op::Map { d, iova_slot, phys_slot, n } => {
                d < DOMAINS.len()
                    && iova_slot < IOVA_SLOTS
                    && phys_slot < PHYS_SLOTS
                    && (1..=MAX_MAP_GRANULES).contains(&n)
            }
            Op::Unmap { d, iova_slot, n } => {
                d < DOMAINS.len() && iova_slot < IOVA_SLOTS && (1..=MAX_UNMAP_GRANULES).contains(&n)
            }
            Op::Free { page, order } | Op::Alloc { page, order } => page < PAGE_SLOTS && order <= MAX_ORDER,
        };
        if !in_bounds {
            return Err(format!("step {step}: {op:?} is outside the bounds of engine::Op"));
        }
        match *op {
            Op::Map { d, iova_slot, phys_slot, n } => self.map(step, d, iova_slot, phys_slot, n),
            Op::Unmap { d, iova_slot, n } => self.unmap(step, d, iova_slot, n),
            Op::Free { page, order } => self.free_or_alloc(step, op, page, order, true),
            Op::Alloc { page, order } => self.free_or_alloc(step, op, page, order, false),
        }
    }

    fn map(&mut self, step: usize, d: usize, iova_slot: u64, phys_slot: u64, n: u64) -> Result<(), String> {
        let (g, _) = DOMAINS[d];
        let (iova, phys, len) = (IOVA_BASE + (iova_slot << g), phys_slot << g, n << g);
        if phys + len > RAM_BYTES {
            return Ok(());
        }
        let meta = MapMeta { when: step as u64, tag: 0 };
        if self.doms[d].map(Iova(iova), PhysAddr(phys), len, meta) != ShadowMapResult::Mapped {
            return Ok(());
        }
        let kernel_warns = self.model.map(d, iova, phys, len);
        let f = self.san.map(DomainId(d as u64), &self.doms[d], Iova(iova), PhysAddr(phys), len);
        let upstream = self.semantics == Semantics::Upstream;
        let expect_invalid = upstream && phys == 0;
        if f.iter().any(|f| f.kind == FindingKind::InvalidMapArgs) != expect_invalid {
            return Err(format!(
                "step {step}: map at phys {phys:#x}: invalid-map-args expected {expect_invalid}: {f:?}"
            ));
        }
        let allowed = |f: &Finding| {
            f.kind == FindingKind::InvalidMapArgs || (kernel_warns && f.kind == FindingKind::RefcountOverflow)
        };
        if !f.iter().all(allowed) {
            return Err(format!("step {step}: map of correct arguments: {f:?}"));
        }
        Ok(())
    }

    fn unmap(&mut self, step: usize, d: usize, iova_slot: u64, n: u64) -> Result<(), String> {
        let (g, leaves) = DOMAINS[d];
        let (iova, size) = (IOVA_BASE + (iova_slot << g), n << g);
        let asked = IovaRange::from_start_len(Iova(iova), size).ok_or("empty unmap")?;
        let pieces = unmap_pieces(iova, size, leaves, |a| self.model.entry_at(d, a));
        let unmapped = unmapped_bytes(&pieces);
        let coverage: u64 = self.doms[d].overlapping(asked).filter_map(|m| m.iova.intersect(asked)?.len()).sum();
        self.model.unmap_begin(d, iova, size);
        let found = unmap_with_hooks(&self.san, &mut self.doms[d], iova, size, &pieces);
        for &p in &pieces {
            self.model.remove(d, p);
        }
        self.model.unmap_end(d, iova, size, unmapped);
        if self.semantics == Semantics::Exact {
            let kinds: Vec<FindingKind> = found.iter().map(|f| f.kind).collect();
            let expect = if coverage == 0 {
                vec![FindingKind::DoubleUnmap]
            } else if coverage < size {
                vec![FindingKind::UnmapOverlapsUnmapped]
            } else {
                vec![]
            };
            if kinds != expect {
                return Err(format!(
                    "step {step}: unmap {iova:#x}+{size:#x} in domain {d}: {kinds:?}, expected {expect:?}"
                ));
            }
        }
        Ok(())
    }

    fn free_or_alloc(&mut self, step: usize, op: &Op, page: u64, order: u32, free: bool) -> Result<(), String> {
        // Spread over RAM, aligned to the order.
        let first = (page << order >> 2) & !((1 << order) - 1);
        let n = 1u64 << order;
        if (first + n) << self.page_lg2 > RAM_BYTES {
            return Ok(());
        }
        let src = AllDomains(&self.doms);
        let f = if free {
            self.san.check_free(Pfn(first), order, &src)
        } else {
            self.san.check_alloc(Pfn(first), order, &src)
        };
        let counts = self.model.counts();
        let expect: Vec<u64> =
            (first..first + n).filter(|&q| counts.get(q as usize).is_some_and(|&c| c != 0)).collect();
        let mut got: Vec<u64> = Vec::new();
        for f in &f {
            let pfn = f.pfn.ok_or_else(|| format!("step {step} op {op:?}: a finding without a pfn: {f:?}"))?;
            got.extend(pfn.get()..pfn.get() + f.npages);
        }
        if got != expect {
            return Err(format!("step {step} op {op:?}: pages reported {got:x?}, expected {expect:x?}"));
        }
        if self.semantics == Semantics::Exact && f.iter().any(|f| f.mappings.is_empty()) {
            return Err(format!("step {step} op {op:?}: a finding without provenance: {f:?}"));
        }
        Ok(())
    }

    /// Every page's count in the sanitizer equals the reference.
    ///
    /// # Errors
    /// The first page that differs.
    pub fn check_counts(&self) -> Result<(), String> {
        for (pfn, &c) in (0u64..).zip(&self.model.counts()) {
            let got = self.san.count(Pfn(pfn));
            if got != c {
                return Err(format!("pfn {pfn:#x}: count {got}, reference {c}"));
            }
        }
        Ok(())
    }
}
