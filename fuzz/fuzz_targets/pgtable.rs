//! iosan-model's io-pgtable under arbitrary map_pages / unmap_pages /
//! iova_to_phys sequences, for each format and partial-unmap policy,
//! against a `BTreeMap` of leaves (`iosan_testkit::pgtable::LeafMap`, the
//! model of `crates/iosan-model/tests/pgtable_prop.rs`). Includes bad arguments
//! (sizes not in the bitmap, misalignment, zero counts, addresses past ias).
#![no_main]

use arbitrary::Arbitrary;
use iosan_core::{Iova, PhysAddr, Translate};
use iosan_model::pgtable::{BumpTables, IoPgtable, IOMMU_READ, IOMMU_WRITE};
use iosan_testkit::pgtable::{page_sizes, phys_for, place, table_runs, LeafMap, CONFIGS};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Map {
        at: (u8, u8, u8),
        size: u8,
        count: u8,
        phys: u16,
    },
    Unmap {
        at: (u8, u8, u8),
        size: u8,
        count: u8,
    },
    Lookup {
        at: (u8, u8, u8),
        off: u16,
    },
    /// Arguments the table must refuse or handle without panicking.
    Wild {
        iova: u64,
        size: u64,
        count: u64,
        phys: u64,
        map: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Case {
    cfg: u8,
    ops: Vec<Op>,
}

fuzz_target!(|case: Case| {
    let cfg = CONFIGS[usize::from(case.cfg) % CONFIGS.len()];
    let mut mem = BumpTables::new(1 << 46);
    let mut t = IoPgtable::new(cfg, &mut mem).unwrap();
    let sizes = page_sizes(t.pgsize_bitmap());
    let mut model = LeafMap::default();
    for op in case.ops.iter().take(64) {
        match *op {
            Op::Map { at, size, count, phys } => {
                let size = sizes[usize::from(size) % sizes.len().min(3)];
                let count = u64::from(count % 3) + 1;
                let iova = place(at, size);
                let phys = phys_for(phys, size);
                let (n, r) = t.map_pages(Iova(iova), PhysAddr(phys), size, count, IOMMU_READ | IOMMU_WRITE, &mut mem);
                let (mn, ok) = model.map(iova, phys, size, count);
                assert_eq!(n, mn, "map {iova:#x} {size:#x}x{count}");
                assert_eq!(r.is_ok(), ok);
            }
            Op::Unmap { at, size, count } => {
                let size = sizes[usize::from(size) % sizes.len().min(3)];
                let count = u64::from(count % 3) + 1;
                let iova = place(at, size);
                let n = t.unmap_pages(Iova(iova), size, count, &mut mem);
                let mn = model.unmap(iova, size * count, cfg.partial);
                assert_eq!(n, mn, "unmap {iova:#x} {size:#x}x{count}");
            }
            Op::Lookup { at, off } => {
                let a = place(at, 1) + u64::from(off);
                assert_eq!(t.iova_to_phys(Iova(a)), model.translate(a), "iova_to_phys {a:#x}");
            }
            Op::Wild { iova, size, count, phys, map } => {
                // Only arguments that the model cannot reach (so the
                // reference stays valid): far above the 4 GiB window, or
                // refused outright.
                if iova < (1 << 33) {
                    continue;
                }
                if map {
                    let (n, r) = t.map_pages(Iova(iova), PhysAddr(phys), size, count % 1024, IOMMU_READ, &mut mem);
                    if let Some(total) = size.checked_mul(count % 1024) {
                        assert!(n <= total);
                    }
                    if n > 0 {
                        // It really mapped (all or a prefix, whatever `r`
                        // says): undo it so the model stays exact.
                        let back = t.unmap_pages(Iova(iova), size, n / size, &mut mem);
                        assert_eq!(back, n, "undo of a wild map ({r:?})");
                    }
                } else {
                    assert_eq!(t.unmap_pages(Iova(iova), size, count, &mut mem), 0, "unmap of nothing mapped");
                }
                let _ = t.iova_to_phys(Iova(iova));
            }
        }
    }
    assert_eq!(table_runs(&t), model.runs());
});
