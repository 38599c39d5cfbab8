//! Random map/unmap against a simple range-map model (a `BTreeMap` of
//! leaves, `iosan_testkit::pgtable::LeafMap`), for each format and each
//! partial-block policy, in the manner of generic_pt's `test_random_map`.

use iosan_core::{Iova, PhysAddr, Translate};
use iosan_model::pgtable::{BumpTables, IoPgtable, PartialUnmap, PgtableCfg, IOMMU_READ, IOMMU_WRITE};
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

fn check(cfg: PgtableCfg, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut mem = BumpTables::new(1 << 46);
    let mut t = IoPgtable::new(cfg, &mut mem).unwrap();
    let sizes = page_sizes(t.pgsize_bitmap());
    let mut model = LeafMap::default();
    for op in ops {
        match *op {
            Op::Map { at, size, count, phys } => {
                let size = sizes[usize::from(size) % sizes.len()];
                let iova = place(at, size);
                let phys = phys_for(phys, size);
                let (n, r) =
                    t.map_pages(Iova(iova), PhysAddr(phys), size, u64::from(count), IOMMU_READ | IOMMU_WRITE, &mut mem);
                let (mn, ok) = model.map(iova, phys, size, u64::from(count));
                prop_assert_eq!(n, mn, "map {:#x} {:#x}x{}", iova, size, count);
                prop_assert_eq!(r.is_ok(), ok);
            }
            Op::Unmap { at, size, count } => {
                let size = sizes[usize::from(size) % sizes.len()];
                let iova = place(at, size);
                let n = t.unmap_pages(Iova(iova), size, u64::from(count), &mut mem);
                let mn = model.unmap(iova, size * u64::from(count), cfg.partial);
                prop_assert_eq!(n, mn, "unmap {:#x} {:#x}x{}", iova, size, count);
            }
        }
        prop_assert_eq!(&table_runs(&t), &model.runs());
        for r in model.runs().iter().take(4) {
            prop_assert_eq!(t.iova_to_phys(Iova(r.iova.0 + r.len - 1)), Some(PhysAddr(r.phys.0 + r.len - 1)));
        }
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
    fn vtd_split(ops in proptest::collection::vec(op(), 1..40)) {
        check(PgtableCfg::vtd(39).with_partial(PartialUnmap::Split), &ops)?;
    }
}
