//! Random map/unmap against a simple range-map model (a `BTreeMap` of
//! leaves, `iosan_testkit::pgtable::LeafMap`), for each format and each
//! partial-block policy, in the manner of generic_pt's `test_random_map`.

use std::ops::ControlFlow;

use iosan_core::{Iova, IovaRange, PhysAddr, Translate};
use iosan_model::pgtable::{BumpTables, IoPgtable, PartialUnmap, PgtableCfg, TableMemory, IOMMU_READ, IOMMU_WRITE};
use iosan_testkit::pgtable::{page_sizes, phys_for, place, table_runs, LeafMap};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Map { at: (u8, u8, u8), size: u8, count: u8, phys: u16 },
    Unmap { at: (u8, u8, u8), size: u8, count: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let at = (0u8..4, 0u8..4, 0u8..8);
    prop_oneof![
        3 => (at.clone(), 0u8..3, 1u8..4, any::<u16>()).prop_map(|(at, size, count, phys)| Op::Map { at, size, count, phys }),
        2 => (at, 0u8..3, 1u8..4).prop_map(|(at, size, count)| Op::Unmap { at, size, count }),
    ]
}

/// Table memory that hands freed tables out again, as the buddy allocator
/// does: a walk that kept a freed table would then read a reused one.
#[derive(Default)]
struct ReuseTables {
    bump: u64,
    free: Vec<(u64, u64)>,
}

impl TableMemory for ReuseTables {
    fn alloc_table(&mut self, bytes: u64) -> Option<PhysAddr> {
        if let Some(i) = self.free.iter().position(|&(b, _)| b == bytes) {
            return Some(PhysAddr(self.free.swap_remove(i).1));
        }
        let align = bytes.max(4096);
        let at = ((1u64 << 46) + self.bump).next_multiple_of(align);
        self.bump = at + align - (1 << 46);
        Some(PhysAddr(at))
    }
    fn free_table(&mut self, phys: PhysAddr, bytes: u64) {
        self.free.push((bytes, phys.0));
    }
}

/// Single-address lookups and one-granule walks at spots over the whole
/// window, in an order that moves between tables.
fn probe(t: &IoPgtable, model: &LeafMap) -> Result<(), TestCaseError> {
    for a0 in 0u8..4 {
        for a1 in 0u8..4 {
            for a2 in [0u8, 3, 7] {
                let a = place((a0, a1, a2), 0x1000) + 0x123;
                prop_assert_eq!(t.iova_to_phys(Iova(a)), model.translate(a), "iova_to_phys {:#x}", a);
                let mut runs = Vec::new();
                t.walk_leaves(IovaRange::from_start_len(Iova(a), 0x100).unwrap(), &mut |r| {
                    runs.push((r.iova.0, r.phys.0, r.len));
                    ControlFlow::Continue(())
                });
                // One leaf holds the granule: one run, inside the model's
                // (possibly merged) leaf and translating like it.
                match model.covering(a) {
                    None => prop_assert!(runs.is_empty(), "walk_leaves at {:#x}: {:x?}", a, runs),
                    Some((s, p, l)) => {
                        prop_assert_eq!(runs.len(), 1, "walk_leaves at {:#x}: {:x?}", a, runs);
                        let (ri, rp, rl) = runs[0];
                        prop_assert!(s <= ri && ri <= a && a + 0x100 <= ri + rl && ri + rl <= s + l, "{:x?}", runs);
                        prop_assert_eq!(rp, p + (ri - s));
                    }
                }
            }
        }
    }
    Ok(())
}

fn check(cfg: PgtableCfg, ops: &[Op]) -> Result<(), TestCaseError> {
    check_with(cfg, ops, &mut BumpTables::new(1 << 46))
}

fn check_with(cfg: PgtableCfg, ops: &[Op], mem: &mut dyn TableMemory) -> Result<(), TestCaseError> {
    let mut t = IoPgtable::new(cfg, mem).unwrap();
    let sizes = page_sizes(t.pgsize_bitmap());
    let mut model = LeafMap::default();
    for op in ops {
        match *op {
            Op::Map { at, size, count, phys } => {
                let size = sizes[usize::from(size) % sizes.len()];
                let iova = place(at, size);
                let phys = phys_for(phys, size);
                let (n, r) =
                    t.map_pages(Iova(iova), PhysAddr(phys), size, u64::from(count), IOMMU_READ | IOMMU_WRITE, mem);
                let (mn, ok) = model.map(iova, phys, size, u64::from(count));
                prop_assert_eq!(n, mn, "map {:#x} {:#x}x{}", iova, size, count);
                prop_assert_eq!(r.is_ok(), ok);
            }
            Op::Unmap { at, size, count } => {
                let size = sizes[usize::from(size) % sizes.len()];
                let iova = place(at, size);
                let n = t.unmap_pages(Iova(iova), size, u64::from(count), mem);
                let mn = model.unmap(iova, size * u64::from(count), cfg.partial);
                prop_assert_eq!(n, mn, "unmap {:#x} {:#x}x{}", iova, size, count);
            }
        }
        prop_assert_eq!(&table_runs(&t), &model.runs());
        for r in model.runs().iter().take(4) {
            prop_assert_eq!(t.iova_to_phys(Iova(r.iova.0 + r.len - 1)), Some(PhysAddr(r.phys.0 + r.len - 1)));
        }
        probe(&t, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn arm_refuse(ops in proptest::collection::vec(op(), 1..40)) {
        check(PgtableCfg::arm_lpae(1, 12, 48, 48), &ops)?;
    }

    #[test]
    fn arm_split(ops in proptest::collection::vec(op(), 1..40)) {
        check(PgtableCfg::arm_lpae(2, 12, 40, 40).with_partial(PartialUnmap::Split), &ops)?;
    }

    #[test]
    fn arm_whole_block_16k(ops in proptest::collection::vec(op(), 1..40)) {
        check(PgtableCfg::arm_lpae(1, 14, 48, 48).with_partial(PartialUnmap::WholeBlock), &ops)?;
    }

    #[test]
    fn arm_64k_refuse(ops in proptest::collection::vec(op(), 1..40)) {
        check(PgtableCfg::arm_lpae(1, 16, 48, 48), &ops)?;
    }

    #[test]
    fn vtd_whole_block(ops in proptest::collection::vec(op(), 1..40)) {
        check(PgtableCfg::vtd(48), &ops)?;
    }

    #[test]
    fn vtd_whole_block_reused_tables(ops in proptest::collection::vec(op(), 1..40)) {
        check_with(PgtableCfg::vtd(48), &ops, &mut ReuseTables::default())?;
    }

    #[test]
    fn arm_split_reused_tables(ops in proptest::collection::vec(op(), 1..40)) {
        check_with(PgtableCfg::arm_lpae(2, 12, 40, 40).with_partial(PartialUnmap::Split), &ops, &mut ReuseTables::default())?;
    }

    #[test]
    fn vtd_split(ops in proptest::collection::vec(op(), 1..40)) {
        check(PgtableCfg::vtd(39).with_partial(PartialUnmap::Split), &ops)?;
    }
}

/// A table freed under a cached walk and handed out again elsewhere: the
/// next lookup in the old place must see the block that replaced it, not
/// the reused table.
#[test]
fn walk_cache_forgets_freed_tables() {
    let mut mem = ReuseTables::default();
    let mut t = IoPgtable::new(PgtableCfg::vtd(48), &mut mem).unwrap();
    let rw = IOMMU_READ | IOMMU_WRITE;
    let (a, b) = (0x4000_5000u64, 0x8000_5000u64); // same index in their last-level tables
    t.map_pages(Iova(a), PhysAddr(0x10_0000), 0x1000, 1, rw, &mut mem).1.unwrap();
    assert_eq!(t.iova_to_phys(Iova(a)), Some(PhysAddr(0x10_0000)));
    assert_eq!(t.unmap_pages(Iova(a), 0x1000, 1, &mut mem), 0x1000);
    // A 2 MiB block over the now empty last-level table frees it.
    t.map_pages(Iova(a & !0x1f_ffff), PhysAddr(0x4000_0000), 0x20_0000, 1, rw, &mut mem).1.unwrap();
    t.map_pages(Iova(b), PhysAddr(0x20_0000), 0x1000, 1, rw, &mut mem).1.unwrap();
    assert_eq!(t.iova_to_phys(Iova(a + 0x10)), Some(PhysAddr(0x4000_5010)));
    assert_eq!(t.iova_to_phys(Iova(b)), Some(PhysAddr(0x20_0000)));
}
