//! io-pgtable formats: ARM LPAE (stage 1 and 2) and a VT-d second-level
//! style x86 format, on one radix-tree engine.
//!
//! **Geometry from a few numbers** (as `io-pgtable-arm.c` derives it): the
//! granule shift `g`, `bits_per_level = g - 3`, the input size `ias`; the
//! number of levels is `ceil((ias - g) / bits_per_level)`, the top table
//! (PGD) holds the leftover bits, and a stage-2 table whose walk would start
//! at level 0 with at most 16 PGD entries starts at level 1 instead with
//! concatenated tables. The formats differ only in descriptor encoding and
//! in what an unmap of part of a block does ([`PartialUnmap`]).
//!
//! **One walk, many visitors**: [`IoPgtable::walk`] visits every leaf entry
//! overlapping a range in increasing IOVA order; `iova_to_phys`, unmap, the
//! dump and [`Translate::walk_leaves`] are visitors of it.
//!
//! Table memory comes from a [`TableMemory`] (the buddy allocator in the
//! model, so table pages show up as `mm_page_alloc` like
//! `iommu_alloc_pages_node()` ones); descriptors hold real physical table
//! addresses and the walk follows them.
//!
//! Units: bytes; sizes that are powers of two are `*_lg2`.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::ControlFlow;

use iosan_core::{Iova, IovaRange, LeafRun, PhysAddr, Translate};

use crate::error::{ModelError, Result};

/// `IOMMU_READ`.
pub const IOMMU_READ: u32 = 1 << 0;
/// `IOMMU_WRITE`.
pub const IOMMU_WRITE: u32 = 1 << 1;
/// `IOMMU_CACHE`: coherent, cacheable memory.
pub const IOMMU_CACHE: u32 = 1 << 2;
/// `IOMMU_NOEXEC`.
pub const IOMMU_NOEXEC: u32 = 1 << 3;
/// `IOMMU_MMIO`: device memory.
pub const IOMMU_MMIO: u32 = 1 << 4;
/// `IOMMU_PRIV`: privileged accesses only.
pub const IOMMU_PRIV: u32 = 1 << 5;

/// The descriptor format of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `ARM_64_LPAE_S1`: stage-1 (VMSAv8-64) descriptors.
    ArmLpaeS1,
    /// `ARM_64_LPAE_S2`: stage-2 descriptors, concatenated PGDs.
    ArmLpaeS2,
    /// Intel VT-d second-level (legacy `dma_pte`) descriptors: R/W bits,
    /// `PS` for 2 MiB and 1 GiB superpages.
    VtdSecondLevel,
}

/// What an unmap of part of a leaf block does. Kernel versions and
/// drivers differ, and the sanitizer must accept all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartialUnmap {
    /// Older ARM (`arm_lpae_split_blk_unmap()`, removed in 6.x): replace the
    /// block by a table of smaller entries and unmap only what was asked.
    Split,
    /// Current ARM: warn "Unmap of a partial large IOPTE is not allowed"
    /// and unmap nothing (returns 0 for that part).
    Refuse,
    /// VT-d (`intel_iommu_unmap()`: "unmap more than the size argument if
    /// it happens to be a large-page mapping"), AMD and generic_pt: remove
    /// the whole block and count its whole size.
    WholeBlock,
}

/// What the page-table configuration is built from (`struct io_pgtable_cfg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PgtableCfg {
    /// Descriptor format.
    pub format: Format,
    /// log2 of the granule: 12, 14 or 16 for ARM; 12 for VT-d.
    pub granule_lg2: u32,
    /// Input (IOVA) address size in bits.
    pub ias: u32,
    /// Output (physical) address size in bits.
    pub oas: u32,
    /// Partial-block unmap policy.
    pub partial: PartialUnmap,
}

impl PgtableCfg {
    /// An ARM LPAE configuration with the current kernel's policy
    /// ([`PartialUnmap::Refuse`]).
    #[must_use]
    pub const fn arm_lpae(stage: u8, granule_lg2: u32, ias: u32, oas: u32) -> Self {
        Self {
            format: if stage == 2 { Format::ArmLpaeS2 } else { Format::ArmLpaeS1 },
            granule_lg2,
            ias,
            oas,
            partial: PartialUnmap::Refuse,
        }
    }

    /// A VT-d second-level configuration with address width `agaw` (39, 48
    /// or 57 bits) and the VT-d policy ([`PartialUnmap::WholeBlock`]).
    #[must_use]
    pub const fn vtd(agaw: u32) -> Self {
        Self { format: Format::VtdSecondLevel, granule_lg2: 12, ias: agaw, oas: 52, partial: PartialUnmap::WholeBlock }
    }

    /// The same configuration with another partial-unmap policy.
    #[must_use]
    pub const fn with_partial(mut self, partial: PartialUnmap) -> Self {
        self.partial = partial;
        self
    }
}

/// The shape of a table, derived from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// log2 of the granule.
    pub granule_lg2: u32,
    /// Index bits resolved by every table below the top one.
    pub bits_per_level: u32,
    /// Number of levels walked.
    pub levels: u32,
    /// Index bits resolved by the top table (concatenated stage-2 PGDs
    /// have more than `bits_per_level`).
    pub pgd_bits: u32,
    /// The architectural level of the top table (ARM counts 0..=3 from the
    /// top, VT-d counts 1 = 4 KiB upwards; this field is ARM style).
    pub start_level: u32,
    /// The page sizes that can be leaf entries.
    pub pgsize_bitmap: u64,
    /// Input size in bits.
    pub ias: u32,
    /// Output size in bits.
    pub oas: u32,
}

impl Geometry {
    /// Derives the geometry like `arm_lpae_alloc_pgtable()` (and the VT-d
    /// AGAW rules for the x86 format).
    ///
    /// # Errors
    /// [`ModelError::BadConfig`] for a granule, ias or oas the format does
    /// not support.
    pub fn new(cfg: &PgtableCfg) -> Result<Self> {
        let g = cfg.granule_lg2;
        match cfg.format {
            Format::ArmLpaeS1 | Format::ArmLpaeS2 => {
                if !matches!(g, 12 | 14 | 16) {
                    return Err(ModelError::BadConfig("ARM granule must be 4K, 16K or 64K"));
                }
                if !(32..=48).contains(&cfg.ias) || !(32..=48).contains(&cfg.oas) {
                    return Err(ModelError::BadConfig("ARM ias and oas must be 32..=48"));
                }
            }
            Format::VtdSecondLevel => {
                if g != 12 {
                    return Err(ModelError::BadConfig("VT-d granule is 4K"));
                }
                if !matches!(cfg.ias, 39 | 48 | 57) {
                    return Err(ModelError::BadConfig("VT-d agaw must be 39, 48 or 57"));
                }
                if !(32..=52).contains(&cfg.oas) {
                    return Err(ModelError::BadConfig("VT-d oas must be 32..=52"));
                }
            }
        }
        let bpl = g - 3;
        let va_bits = cfg.ias - g;
        let mut levels = va_bits.div_ceil(bpl);
        let mut pgd_bits = va_bits - bpl * (levels - 1);
        let max_levels = if cfg.format == Format::VtdSecondLevel { 5 } else { 4 };
        let mut start_level = max_levels - levels;
        // Stage 2 may start one level down with up to 16 concatenated
        // tables, saving a level of walk.
        if cfg.format == Format::ArmLpaeS2 && start_level == 0 && (1u64 << pgd_bits) <= 16 {
            pgd_bits += bpl;
            start_level += 1;
            levels -= 1;
        }
        let pgsize_bitmap = match (cfg.format, g) {
            (Format::VtdSecondLevel, _) | (_, 12) => (1 << 12) | (1 << 21) | (1 << 30),
            (_, 14) => (1 << 14) | (1 << 25),
            _ => (1 << 16) | (1 << 29),
        };
        Ok(Self {
            granule_lg2: g,
            bits_per_level: bpl,
            levels,
            pgd_bits,
            start_level,
            pgsize_bitmap,
            ias: cfg.ias,
            oas: cfg.oas,
        })
    }

    /// log2 of the bytes one entry maps at `depth` (0 = top table).
    #[must_use]
    pub const fn shift(&self, depth: u32) -> u32 {
        self.granule_lg2 + self.bits_per_level * (self.levels - 1 - depth)
    }

    /// Entries in a table at `depth`.
    #[must_use]
    pub const fn entries(&self, depth: u32) -> usize {
        if depth == 0 {
            1 << self.pgd_bits
        } else {
            1 << self.bits_per_level
        }
    }

    /// Bytes of a table at `depth` (8 bytes per descriptor).
    #[must_use]
    pub const fn table_bytes(&self, depth: u32) -> u64 {
        (self.entries(depth) as u64) * 8
    }

    /// True if a leaf may sit at `depth`.
    #[must_use]
    pub const fn leaf_allowed(&self, depth: u32) -> bool {
        depth + 1 == self.levels || (self.pgsize_bitmap >> self.shift(depth)) & 1 == 1
    }

    /// The depth whose entries map `1 << size_lg2` bytes as leaves.
    #[must_use]
    pub fn depth_of(&self, size_lg2: u32) -> Option<u32> {
        (0..self.levels).find(|&d| self.shift(d) == size_lg2 && self.leaf_allowed(d))
    }

    /// Last valid IOVA (`2^ias - 1`).
    #[must_use]
    pub const fn max_iova(&self) -> u64 {
        (1u64 << self.ias) - 1
    }
}

/// Where table memory comes from (`io_pgtable_ops` allocating through
/// `iommu_alloc_pages_node()`).
pub trait TableMemory {
    /// Memory for a table of `bytes` (a power of two), zeroed and aligned
    /// to at least `bytes`; `None` when out of memory.
    fn alloc_table(&mut self, bytes: u64) -> Option<PhysAddr>;
    /// Gives a table back.
    fn free_table(&mut self, phys: PhysAddr, bytes: u64);
}

/// Table memory from a bump counter, for tests and tools that do not model
/// the page allocator: every table gets its own `max(bytes, 4 KiB)`-aligned
/// slot; frees are only counted.
#[derive(Clone, Debug)]
pub struct BumpTables {
    next: u64,
    /// Tables handed out and not yet freed.
    pub live: u64,
}

impl BumpTables {
    /// Tables from `base` upwards.
    #[must_use]
    pub const fn new(base: u64) -> Self {
        Self { next: base, live: 0 }
    }
}

impl Default for BumpTables {
    fn default() -> Self {
        Self::new(1 << 40)
    }
}

impl TableMemory for BumpTables {
    fn alloc_table(&mut self, bytes: u64) -> Option<PhysAddr> {
        let align = bytes.max(4096);
        let at = self.next.checked_add(align - 1)? & !(align - 1);
        self.next = at.checked_add(align)?;
        self.live += 1;
        Some(PhysAddr(at))
    }
    fn free_table(&mut self, _phys: PhysAddr, _bytes: u64) {
        self.live = self.live.saturating_sub(1);
    }
}

/// A decoded descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pte {
    Invalid,
    Table(u64),
    Leaf(u64),
}

/// One leaf entry found by the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// First IOVA the entry maps.
    pub iova: Iova,
    /// Physical address of that IOVA.
    pub phys: PhysAddr,
    /// log2 of the bytes the entry maps.
    pub size_lg2: u32,
    /// Depth of the table holding it (0 = top).
    pub depth: u32,
    /// The raw descriptor.
    pub pte: u64,
    table: u64,
    index: usize,
}

impl Leaf {
    /// Bytes the entry maps.
    #[must_use]
    pub const fn size(&self) -> u64 {
        1 << self.size_lg2
    }
    /// One past the last IOVA of the entry (tables are at most 2^57 bytes,
    /// so this never overflows).
    #[must_use]
    pub const fn end(&self) -> u64 {
        self.iova.0 + self.size()
    }
}

/// An I/O page table (`struct io_pgtable` with its `io_pgtable_ops`:
/// `map_pages`, `unmap_pages`, `iova_to_phys`).
#[derive(Clone, Debug)]
pub struct IoPgtable {
    cfg: PgtableCfg,
    geo: Geometry,
    root: u64,
    tables: HashMap<u64, Box<[u64]>>,
    /// A walk cache, like an IOMMU's paging-structure cache: the table
    /// that held the last leaf [`IoPgtable::leaf_at`] found, as (table,
    /// depth, first IOVA it spans); a lookup inside that span starts there.
    /// Tables leave the tree only through `free_subtree`, which clears it.
    walk_cache: Cell<Option<(u64, u32, u64)>>,
}

/// Bits [47:g] (ARM) or [51:12] (VT-d) of a descriptor: the output address.
fn addr_mask(format: Format, g: u32) -> u64 {
    let top = if format == Format::VtdSecondLevel { 52 } else { 48 };
    ((1u64 << top) - 1) & !((1u64 << g) - 1)
}

impl IoPgtable {
    /// A new, empty table (`alloc_io_pgtable_ops()`): allocates the PGD.
    ///
    /// # Errors
    /// [`ModelError::BadConfig`] from [`Geometry::new`];
    /// [`ModelError::OutOfMemory`] if the PGD cannot be allocated.
    pub fn new(cfg: PgtableCfg, mem: &mut dyn TableMemory) -> Result<Self> {
        let geo = Geometry::new(&cfg)?;
        let bytes = geo.table_bytes(0);
        let root = mem.alloc_table(bytes).ok_or(ModelError::OutOfMemory { order: 0 })?.get();
        let mut tables = HashMap::new();
        tables.insert(root, vec![0u64; geo.entries(0)].into_boxed_slice());
        Ok(Self { cfg, geo, root, tables, walk_cache: Cell::new(None) })
    }

    /// The configuration.
    #[must_use]
    pub const fn cfg(&self) -> &PgtableCfg {
        &self.cfg
    }

    /// The derived geometry.
    #[must_use]
    pub const fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Physical address of the top table (what the IOMMU is programmed with:
    /// TTBR/VTTBR or the context entry's SLPTPTR).
    #[must_use]
    pub const fn root(&self) -> PhysAddr {
        PhysAddr(self.root)
    }

    /// Number of table pages (all levels) the table uses.
    #[must_use]
    pub fn table_count(&self) -> usize {
        self.tables.len()
    }

    fn decode(&self, pte: u64, depth: u32) -> Pte {
        let last = depth + 1 == self.geo.levels;
        let addr = pte & addr_mask(self.cfg.format, self.geo.granule_lg2);
        match self.cfg.format {
            Format::ArmLpaeS1 | Format::ArmLpaeS2 => match (pte & 3, last) {
                (3, true) => Pte::Leaf(addr),
                (3, false) => Pte::Table(addr),
                (1, false) if self.geo.leaf_allowed(depth) => Pte::Leaf(addr),
                _ => Pte::Invalid,
            },
            Format::VtdSecondLevel => {
                if pte & 3 == 0 {
                    Pte::Invalid
                } else if last || pte & (1 << 7) != 0 {
                    Pte::Leaf(addr)
                } else {
                    Pte::Table(addr)
                }
            }
        }
    }

    fn encode_table(&self, table: u64) -> u64 {
        let addr = table & addr_mask(self.cfg.format, self.geo.granule_lg2);
        match self.cfg.format {
            Format::ArmLpaeS1 | Format::ArmLpaeS2 => addr | 3,
            Format::VtdSecondLevel => addr | 3,
        }
    }

    fn encode_leaf(&self, pa: u64, prot: u32, depth: u32) -> u64 {
        let last = depth + 1 == self.geo.levels;
        let addr = pa & addr_mask(self.cfg.format, self.geo.granule_lg2);
        match self.cfg.format {
            Format::ArmLpaeS1 => {
                let mut pte = addr | if last { 3 } else { 1 };
                pte |= 1 << 10; // AF
                pte |= 3 << 8; // SH: inner shareable
                pte |= 1 << 11; // nG
                if prot & IOMMU_PRIV == 0 {
                    pte |= 1 << 6; // AP[1]: unprivileged
                }
                if prot & IOMMU_WRITE == 0 {
                    pte |= 1 << 7; // AP[2]: read-only
                }
                let attr_idx: u64 = if prot & IOMMU_MMIO != 0 {
                    2
                } else if prot & IOMMU_CACHE != 0 {
                    1
                } else {
                    0
                };
                pte |= attr_idx << 2;
                if prot & IOMMU_NOEXEC != 0 {
                    pte |= 1 << 54; // XN
                }
                pte
            }
            Format::ArmLpaeS2 => {
                let mut pte = addr | if last { 3 } else { 1 };
                pte |= 1 << 10; // AF
                pte |= 3 << 8; // SH
                if prot & IOMMU_READ != 0 {
                    pte |= 1 << 6; // S2AP read
                }
                if prot & IOMMU_WRITE != 0 {
                    pte |= 1 << 7; // S2AP write
                }
                let memattr: u64 = if prot & IOMMU_MMIO != 0 {
                    0x1
                } else if prot & IOMMU_CACHE != 0 {
                    0xf
                } else {
                    0x5
                };
                pte |= memattr << 2;
                if prot & IOMMU_NOEXEC != 0 {
                    pte |= 1 << 54;
                }
                pte
            }
            Format::VtdSecondLevel => {
                let mut pte = addr;
                if prot & IOMMU_READ != 0 {
                    pte |= 1;
                }
                if prot & IOMMU_WRITE != 0 {
                    pte |= 2;
                }
                if prot & IOMMU_CACHE != 0 {
                    pte |= 1 << 11; // SNP
                }
                if !last {
                    pte |= 1 << 7; // PS
                }
                pte
            }
        }
    }

    /// The `IOMMU_*` protection a leaf descriptor grants.
    #[must_use]
    pub fn prot_of(&self, pte: u64) -> u32 {
        match self.cfg.format {
            Format::ArmLpaeS1 => {
                let mut p = IOMMU_READ;
                if pte & (1 << 7) == 0 {
                    p |= IOMMU_WRITE;
                }
                match (pte >> 2) & 7 {
                    1 => p |= IOMMU_CACHE,
                    2 => p |= IOMMU_MMIO,
                    _ => {}
                }
                if pte & (1 << 6) == 0 {
                    p |= IOMMU_PRIV;
                }
                if pte & (1 << 54) != 0 {
                    p |= IOMMU_NOEXEC;
                }
                p
            }
            Format::ArmLpaeS2 => {
                let mut p = 0;
                if pte & (1 << 6) != 0 {
                    p |= IOMMU_READ;
                }
                if pte & (1 << 7) != 0 {
                    p |= IOMMU_WRITE;
                }
                match (pte >> 2) & 0xf {
                    0xf => p |= IOMMU_CACHE,
                    0x1 => p |= IOMMU_MMIO,
                    _ => {}
                }
                if pte & (1 << 54) != 0 {
                    p |= IOMMU_NOEXEC;
                }
                p
            }
            Format::VtdSecondLevel => {
                let mut p = 0;
                if pte & 1 != 0 {
                    p |= IOMMU_READ;
                }
                if pte & 2 != 0 {
                    p |= IOMMU_WRITE;
                }
                if pte & (1 << 11) != 0 {
                    p |= IOMMU_CACHE;
                }
                p
            }
        }
    }

    fn entry(&self, table: u64, index: usize) -> u64 {
        self.tables.get(&table).and_then(|t| t.get(index)).copied().unwrap_or(0)
    }

    fn set_entry(&mut self, table: u64, index: usize, pte: u64) {
        if let Some(slot) = self.tables.get_mut(&table).and_then(|t| t.get_mut(index)) {
            *slot = pte;
        }
    }

    /// Visits every leaf entry overlapping `[first, last]` in increasing
    /// IOVA order; a leaf that straddles either end is visited whole.
    /// The visitor may stop the walk with `ControlFlow::Break`.
    pub fn walk(&self, first: u64, last: u64, visit: &mut dyn FnMut(&Leaf) -> ControlFlow<()>) {
        let last = last.min(self.geo.max_iova());
        if first > last {
            return;
        }
        let _ = self.walk_table(self.root, 0, 0, first, last, visit);
    }

    fn walk_table(
        &self,
        table: u64,
        depth: u32,
        base: u64,
        first: u64,
        last: u64,
        visit: &mut dyn FnMut(&Leaf) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let Some(entries) = self.tables.get(&table) else {
            return ControlFlow::Continue(());
        };
        let shift = self.geo.shift(depth);
        let lo = first.saturating_sub(base) >> shift;
        let hi = ((last - base) >> shift).min(entries.len() as u64 - 1);
        for i in lo..=hi {
            let idx = i as usize;
            let pte = entries.get(idx).copied().unwrap_or(0);
            let iova = base + (i << shift);
            match self.decode(pte, depth) {
                Pte::Invalid => {}
                Pte::Leaf(pa) => visit(&Leaf {
                    iova: Iova(iova),
                    phys: PhysAddr(pa),
                    size_lg2: shift,
                    depth,
                    pte,
                    table,
                    index: idx,
                })?,
                Pte::Table(next) => {
                    self.walk_table(next, depth + 1, iova, first.max(iova), last, visit)?;
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// The first leaf overlapping `[first, last]`.
    fn first_leaf(&self, first: u64, last: u64) -> Option<Leaf> {
        let mut found = None;
        self.walk(first, last, &mut |l| {
            found = Some(*l);
            ControlFlow::Break(())
        });
        found
    }

    /// The leaf entry holding `iova`, by one descent from the root (what
    /// the kernel's `iova_to_phys` walkers do): no visitor, no range.
    fn leaf_at(&self, iova: u64) -> Option<Leaf> {
        if iova > self.geo.max_iova() {
            return None;
        }
        let (mut table, first_depth) = match self.walk_cache.get() {
            Some((t, d, base)) if (iova ^ base) >> self.span_lg2(d) == 0 => (t, d),
            _ => (self.root, 0),
        };
        for depth in first_depth..self.geo.levels {
            let Some(entries) = self.tables.get(&table) else {
                if depth == first_depth && depth > 0 {
                    // Not expected (frees clear the cache): walk from the root.
                    self.walk_cache.set(None);
                    return self.leaf_at(iova);
                }
                return None;
            };
            let shift = self.geo.shift(depth);
            // Below max_iova the top index fits the PGD; lower tables are 2^bpl entries.
            let index = ((iova >> shift) as usize) & (entries.len() - 1);
            let pte = entries.get(index).copied()?;
            match self.decode(pte, depth) {
                Pte::Invalid => return None,
                Pte::Leaf(pa) => {
                    let base = iova & !((1u64 << self.span_lg2(depth)) - 1);
                    self.walk_cache.set(Some((table, depth, base)));
                    let start = iova & !((1u64 << shift) - 1);
                    return Some(Leaf {
                        iova: Iova(start),
                        phys: PhysAddr(pa),
                        size_lg2: shift,
                        depth,
                        pte,
                        table,
                        index,
                    });
                }
                Pte::Table(next) => table = next,
            }
        }
        None
    }

    /// log2 of the IOVA span of one table at `depth` (at most the input size).
    fn span_lg2(&self, depth: u32) -> u32 {
        self.geo.shift(depth) + self.geo.entries(depth).trailing_zeros()
    }

    /// `iova_to_phys()`: the physical address `iova` translates to.
    #[must_use]
    pub fn iova_to_phys(&self, iova: Iova) -> Option<PhysAddr> {
        let leaf = self.leaf_at(iova.0)?;
        leaf.phys.checked_add(iova.0 - leaf.iova.0)
    }

    /// `map_pages()`: maps `pgcount` pages of `pgsize` bytes from `iova` to
    /// `paddr`, one leaf entry each, allocating tables as needed.
    ///
    /// Returns the bytes mapped (the kernel's `*mapped`) together with the
    /// outcome: on an error the first pages may already be mapped, and the
    /// caller (`iommu_map()`) is the one that unmaps them.
    ///
    /// # Errors
    /// (inside the tuple) [`ModelError::Invalid`] for a page size not in
    /// `pgsize_bitmap`, misalignment, a zero count or no access rights;
    /// [`ModelError::Range`] past `ias`/`oas`; [`ModelError::Exists`] when a
    /// leaf already maps part of a page; [`ModelError::OutOfMemory`] when a
    /// table cannot be allocated.
    pub fn map_pages(
        &mut self,
        iova: Iova,
        paddr: PhysAddr,
        pgsize: u64,
        pgcount: u64,
        prot: u32,
        mem: &mut dyn TableMemory,
    ) -> (u64, Result<()>) {
        match self.check_map(iova, paddr, pgsize, pgcount, prot) {
            Ok(()) => {}
            Err(e) => return (0, Err(e)),
        }
        let lg2 = pgsize.trailing_zeros();
        let mut mapped = 0u64;
        for i in 0..pgcount {
            let off = i << lg2;
            if let Err(e) = self.map_one(iova.0 + off, paddr.0 + off, lg2, prot, mem) {
                return (mapped, Err(e));
            }
            mapped += pgsize;
        }
        (mapped, Ok(()))
    }

    fn check_map(&self, iova: Iova, paddr: PhysAddr, pgsize: u64, pgcount: u64, prot: u32) -> Result<()> {
        if !pgsize.is_power_of_two() || self.geo.pgsize_bitmap & pgsize == 0 {
            return Err(ModelError::Invalid("page size not in pgsize_bitmap"));
        }
        if pgcount == 0 {
            return Err(ModelError::Invalid("zero page count"));
        }
        if prot & (IOMMU_READ | IOMMU_WRITE) == 0 {
            return Err(ModelError::Invalid("no access rights"));
        }
        let lg2 = pgsize.trailing_zeros();
        if !iova.is_aligned(lg2) || !paddr.is_aligned(lg2) {
            return Err(ModelError::Invalid("iova or paddr not aligned to the page size"));
        }
        let len = pgcount.checked_mul(pgsize).ok_or(ModelError::Range("size overflows"))?;
        let iova_last = iova.0.checked_add(len - 1).ok_or(ModelError::Range("iova overflows"))?;
        if iova_last > self.geo.max_iova() {
            return Err(ModelError::Range("iova beyond the input size"));
        }
        let pa_last = paddr.0.checked_add(len - 1).ok_or(ModelError::Range("paddr overflows"))?;
        if self.geo.oas < 64 && pa_last >> self.geo.oas != 0 {
            return Err(ModelError::Range("paddr beyond the output size"));
        }
        Ok(())
    }

    fn alloc_table(&mut self, depth: u32, mem: &mut dyn TableMemory) -> Result<u64> {
        let bytes = self.geo.table_bytes(depth);
        let t = mem.alloc_table(bytes).ok_or(ModelError::OutOfMemory { order: 0 })?.get();
        if t & !addr_mask(self.cfg.format, self.geo.granule_lg2) != 0 {
            // A descriptor could not point at it ("Cannot accommodate DMA
            // translation for IOMMU page tables").
            mem.free_table(PhysAddr(t), bytes);
            return Err(ModelError::Range("table memory beyond the descriptor address bits"));
        }
        self.tables.insert(t, vec![0u64; self.geo.entries(depth)].into_boxed_slice());
        Ok(t)
    }

    fn free_subtree(&mut self, table: u64, depth: u32, mem: &mut dyn TableMemory) {
        self.walk_cache.set(None);
        let Some(entries) = self.tables.remove(&table) else {
            return;
        };
        for &pte in entries.iter() {
            if let Pte::Table(next) = self.decode(pte, depth) {
                self.free_subtree(next, depth + 1, mem);
            }
        }
        mem.free_table(PhysAddr(table), self.geo.table_bytes(depth));
    }

    fn map_one(&mut self, iova: u64, pa: u64, lg2: u32, prot: u32, mem: &mut dyn TableMemory) -> Result<()> {
        let target = self.geo.depth_of(lg2).ok_or(ModelError::Invalid("page size has no level"))?;
        let mut table = self.root;
        for depth in 0..target {
            let idx = ((iova >> self.geo.shift(depth)) as usize) & (self.geo.entries(depth) - 1);
            let pte = self.entry(table, idx);
            table = match self.decode(pte, depth) {
                Pte::Table(next) => next,
                Pte::Leaf(_) => return Err(ModelError::Exists { iova: Iova(iova) }),
                Pte::Invalid => {
                    let next = self.alloc_table(depth + 1, mem)?;
                    let desc = self.encode_table(next);
                    self.set_entry(table, idx, desc);
                    next
                }
            };
        }
        let idx = ((iova >> lg2) as usize) & (self.geo.entries(target) - 1);
        let pte = self.entry(table, idx);
        match self.decode(pte, target) {
            Pte::Invalid => {}
            Pte::Leaf(_) => return Err(ModelError::Exists { iova: Iova(iova) }),
            Pte::Table(next) => {
                // A block over a table: only if no leaf lives below it (the
                // table is then freed), otherwise the range is in use.
                if let Some(l) = self.first_leaf(iova, iova + (1 << lg2) - 1) {
                    return Err(ModelError::Exists { iova: l.iova.max(Iova(iova)) });
                }
                self.free_subtree(next, target + 1, mem);
            }
        }
        let desc = self.encode_leaf(pa, prot, target);
        self.set_entry(table, idx, desc);
        Ok(())
    }

    /// `unmap_pages()`: unmaps `pgcount` pages of `pgsize` bytes from `iova`
    /// and returns the bytes unmapped.
    ///
    /// The walk stops at the first hole (so the result always describes a
    /// run of leaves starting at or before `iova`). A leaf that straddles
    /// the range is handled by the [`PartialUnmap`] policy: split, refuse
    /// (stop, counting nothing for it), or remove it whole and count its
    /// whole size, which can make the result larger than asked. A bad
    /// argument (size not in `pgsize_bitmap`, misaligned, past `ias`)
    /// unmaps nothing and returns 0, as the kernel's `WARN_ON` paths do.
    /// Empty tables stay allocated until the table is freed, as in
    /// io-pgtable-arm.
    pub fn unmap_pages(&mut self, iova: Iova, pgsize: u64, pgcount: u64, mem: &mut dyn TableMemory) -> u64 {
        if !pgsize.is_power_of_two() || self.geo.pgsize_bitmap & pgsize == 0 || pgcount == 0 {
            return 0;
        }
        if !iova.is_aligned(pgsize.trailing_zeros()) {
            return 0;
        }
        let Some(len) = pgcount.checked_mul(pgsize) else {
            return 0;
        };
        let Some(end) = iova.0.checked_add(len) else {
            return 0;
        };
        if end - 1 > self.geo.max_iova() {
            return 0;
        }
        self.unmap_range(iova.0, end, mem)
    }

    fn unmap_range(&mut self, start: u64, end: u64, mem: &mut dyn TableMemory) -> u64 {
        let mut pos = start;
        let mut unmapped = 0u64;
        while pos < end {
            let Some(leaf) = self.first_leaf(pos, end - 1) else {
                break;
            };
            if leaf.iova.0 > pos {
                break; // a hole
            }
            let straddles = leaf.iova.0 < pos || leaf.end() > end;
            if straddles {
                match self.cfg.partial {
                    PartialUnmap::Refuse => break,
                    PartialUnmap::WholeBlock => {}
                    PartialUnmap::Split => {
                        if self.split_leaf(&leaf, mem).is_err() {
                            break;
                        }
                        continue;
                    }
                }
            }
            self.set_entry(leaf.table, leaf.index, 0);
            unmapped += leaf.size();
            pos = leaf.end();
        }
        unmapped
    }

    /// Replaces a block by a table of next-level entries mapping the same
    /// memory with the same attributes (`arm_lpae_split_blk_unmap()`).
    fn split_leaf(&mut self, leaf: &Leaf, mem: &mut dyn TableMemory) -> Result<()> {
        let child = leaf.depth + 1;
        if child >= self.geo.levels || !self.geo.leaf_allowed(child) {
            return Err(ModelError::Invalid("cannot split a last-level page"));
        }
        let prot = self.prot_of(leaf.pte);
        let table = self.alloc_table(child, mem)?;
        let shift = self.geo.shift(child);
        for i in 0..self.geo.entries(child) {
            let pa = leaf.phys.0 + ((i as u64) << shift);
            let desc = self.encode_leaf(pa, prot, child);
            self.set_entry(table, i, desc);
        }
        let desc = self.encode_table(table);
        self.set_entry(leaf.table, leaf.index, desc);
        Ok(())
    }

    /// Frees every table (`free_io_pgtable_ops()`), leaving the table empty
    /// and unusable until rebuilt.
    pub fn free(&mut self, mem: &mut dyn TableMemory) {
        let root = self.root;
        self.free_subtree(root, 0, mem);
    }

    /// Every leaf, in IOVA order.
    #[must_use]
    pub fn leaves(&self) -> Vec<Leaf> {
        let mut v = Vec::new();
        self.walk(0, self.geo.max_iova(), &mut |l| {
            v.push(*l);
            ControlFlow::Continue(())
        });
        v
    }

    /// A readable dump of the leaves, one line each:
    /// `L<level> <iova>-<last> -> <phys> <size> prot=<prot>`, with the
    /// architectural level (ARM counts from 0 at the top, VT-d from 1 at
    /// 4 KiB).
    #[must_use]
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:?} granule={:#x} ias={} oas={} levels={} start_level={} pgd_entries={}",
            self.cfg.format,
            1u64 << self.geo.granule_lg2,
            self.geo.ias,
            self.geo.oas,
            self.geo.levels,
            self.geo.start_level,
            self.geo.entries(0)
        );
        self.walk(0, self.geo.max_iova(), &mut |l| {
            let level = match self.cfg.format {
                Format::VtdSecondLevel => self.geo.levels - l.depth,
                _ => self.geo.start_level + l.depth,
            };
            let _ = writeln!(
                out,
                "L{level} {:#x}-{:#x} -> {:#x} {:#x} prot={}",
                l.iova.0,
                l.end() - 1,
                l.phys.0,
                l.size(),
                self.prot_of(l.pte)
            );
            ControlFlow::Continue(())
        });
        out
    }
}

impl Translate for IoPgtable {
    fn pgsize_bitmap(&self) -> u64 {
        self.geo.pgsize_bitmap
    }

    fn walk_leaves(&self, range: IovaRange, visit: &mut dyn FnMut(LeafRun) -> ControlFlow<()>) {
        // Common case (a 4 KiB unmap): one leaf holds the whole range, found
        // by one descent.
        if let Some(l) = self.leaf_at(range.start().0).filter(|l| l.end() > range.last().0) {
            let _ = visit(LeafRun { iova: l.iova, phys: l.phys, len: l.size() });
            return;
        }
        // Leaves contiguous in both spaces are merged into one run.
        let mut run: Option<LeafRun> = None;
        let mut stopped = false;
        self.walk(range.start().0, range.last().0, &mut |l| {
            if let Some(r) = run.as_mut() {
                if r.iova.0 + r.len == l.iova.0 && r.phys.0.checked_add(r.len) == Some(l.phys.0) {
                    r.len += l.size();
                    return ControlFlow::Continue(());
                }
                let done = *r;
                run = None;
                if visit(done).is_break() {
                    stopped = true;
                    return ControlFlow::Break(());
                }
            }
            run = Some(LeafRun { iova: l.iova, phys: l.phys, len: l.size() });
            ControlFlow::Continue(())
        });
        if let (false, Some(r)) = (stopped, run) {
            let _ = visit(r);
        }
    }

    fn iova_to_phys(&self, iova: Iova) -> Option<PhysAddr> {
        IoPgtable::iova_to_phys(self, iova)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_geometry_matches_io_pgtable_arm() {
        // 4K, ias 48, stage 1: four levels from level 0, 512-entry PGD.
        let g = Geometry::new(&PgtableCfg::arm_lpae(1, 12, 48, 48)).unwrap();
        assert_eq!((g.levels, g.start_level, g.pgd_bits), (4, 0, 9));
        // Stage 2, 4K, ias 40: level 0 would have 2 entries: start at level 1
        // with two concatenated tables (1024 entries).
        let g = Geometry::new(&PgtableCfg::arm_lpae(2, 12, 40, 40)).unwrap();
        assert_eq!((g.levels, g.start_level, g.pgd_bits), (3, 1, 10));
        // Stage 1 keeps the 2-entry level-0 table.
        let g = Geometry::new(&PgtableCfg::arm_lpae(1, 12, 40, 40)).unwrap();
        assert_eq!((g.levels, g.start_level, g.pgd_bits), (4, 0, 1));
        // 64K, ias 48: three levels, 64-entry PGD at level 1.
        let g = Geometry::new(&PgtableCfg::arm_lpae(1, 16, 48, 48)).unwrap();
        assert_eq!((g.levels, g.start_level, g.pgd_bits), (3, 1, 6));
        // 16K, ias 48, stage 2: level 0 would have 2 entries -> concatenated.
        let g = Geometry::new(&PgtableCfg::arm_lpae(2, 14, 48, 48)).unwrap();
        assert_eq!((g.levels, g.start_level, g.pgd_bits), (3, 1, 12));
        assert_eq!(g.pgsize_bitmap, (1 << 14) | (1 << 25));
        // VT-d 48-bit: four levels.
        let g = Geometry::new(&PgtableCfg::vtd(48)).unwrap();
        assert_eq!((g.levels, g.pgd_bits), (4, 9));
        assert!(Geometry::new(&PgtableCfg::arm_lpae(1, 13, 48, 48)).is_err());
    }

    #[test]
    fn descriptors_are_real() {
        let mut mem = BumpTables::default();
        let mut t = IoPgtable::new(PgtableCfg::arm_lpae(1, 12, 48, 48), &mut mem).unwrap();
        let (n, r) =
            t.map_pages(Iova(0x20_0000), PhysAddr(0x8000_0000), 0x20_0000, 1, IOMMU_READ | IOMMU_WRITE, &mut mem);
        assert_eq!((n, r), (0x20_0000, Ok(())));
        let leaves = t.leaves();
        assert_eq!(leaves.len(), 1);
        let pte = leaves[0].pte;
        assert_eq!(pte & 3, 1, "level-2 block descriptor");
        assert_eq!(pte & 0xffff_ffff_f000, 0x8000_0000);
        assert_ne!(pte & (1 << 10), 0, "access flag");
        assert_eq!(t.prot_of(pte) & (IOMMU_READ | IOMMU_WRITE), IOMMU_READ | IOMMU_WRITE);
        assert_eq!(t.table_count(), 3);
    }

    #[test]
    fn partial_unmap_policies() {
        for (policy, expect_unmapped, expect_left) in [
            (PartialUnmap::Refuse, 0, 0x20_0000),
            (PartialUnmap::WholeBlock, 0x20_0000, 0),
            (PartialUnmap::Split, 0x1000, 0x1f_f000),
        ] {
            let mut mem = BumpTables::default();
            let cfg = PgtableCfg::arm_lpae(1, 12, 48, 48).with_partial(policy);
            let mut t = IoPgtable::new(cfg, &mut mem).unwrap();
            let (_, r) = t.map_pages(Iova(0x40_0000), PhysAddr(0x4000_0000), 0x20_0000, 1, IOMMU_READ, &mut mem);
            r.unwrap();
            assert_eq!(t.unmap_pages(Iova(0x40_1000), 0x1000, 1, &mut mem), expect_unmapped, "{policy:?}");
            let left: u64 = t.leaves().iter().map(Leaf::size).sum();
            assert_eq!(left, expect_left, "{policy:?}");
            if policy == PartialUnmap::Split {
                assert_eq!(t.iova_to_phys(Iova(0x40_1000)), None);
                assert_eq!(t.iova_to_phys(Iova(0x40_2042)), Some(PhysAddr(0x4000_2042)));
            }
        }
    }

    #[test]
    fn walk_leaves_merges_contiguous_runs() {
        let mut mem = BumpTables::default();
        let mut t = IoPgtable::new(PgtableCfg::vtd(48), &mut mem).unwrap();
        t.map_pages(Iova(0x1000), PhysAddr(0x10_0000), 0x1000, 4, IOMMU_READ, &mut mem).1.unwrap();
        t.map_pages(Iova(0x8000), PhysAddr(0x20_0000), 0x1000, 1, IOMMU_READ, &mut mem).1.unwrap();
        let mut runs = Vec::new();
        t.walk_leaves(IovaRange::from_start_len(Iova(0), 0x10000).unwrap(), &mut |r| {
            runs.push(r);
            ControlFlow::Continue(())
        });
        assert_eq!(
            runs,
            vec![
                LeafRun { iova: Iova(0x1000), phys: PhysAddr(0x10_0000), len: 0x4000 },
                LeafRun { iova: Iova(0x8000), phys: PhysAddr(0x20_0000), len: 0x1000 },
            ]
        );
        assert_eq!(Translate::iova_to_phys(&t, Iova(0x2042)), Some(PhysAddr(0x10_1042)));
    }
}
