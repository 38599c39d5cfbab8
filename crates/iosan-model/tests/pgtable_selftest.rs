//! The io-pgtable-arm boot self-test matrix, in spirit: every granule ×
//! ias/oas pair × stage, plus the VT-d format.

use iosan_core::{Iova, PhysAddr, Translate};
use iosan_model::pgtable::{BumpTables, IoPgtable, PgtableCfg, IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE};
use iosan_model::ModelError;

const SZ_1G: u64 = 1 << 30;
const PROT: u32 = IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE;

fn run_selftest(cfg: PgtableCfg) {
    let mut mem = BumpTables::new(1 << 40);
    let mut t = IoPgtable::new(cfg, &mut mem).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
    let bitmap = t.pgsize_bitmap();
    // An empty table translates nothing.
    for a in [42, SZ_1G + 42, (SZ_1G * 2) + 42] {
        assert_eq!(t.iova_to_phys(Iova(a)), None, "{cfg:?}");
    }
    // Every page size maps at n * 1 GiB, identity style, and translates +42.
    let sizes: Vec<u64> = (0..64).filter(|b| bitmap >> b & 1 == 1).map(|b| 1u64 << b).collect();
    let mut iova = 0u64;
    for &size in &sizes {
        let (n, r) = t.map_pages(Iova(iova), PhysAddr(iova), size, 1, PROT, &mut mem);
        assert_eq!((n, r), (size, Ok(())), "{cfg:?} map {size:#x} at {iova:#x}");
        // An overlapping map must fail and change nothing.
        let (n, r) = t.map_pages(Iova(iova), PhysAddr(iova + size), size, 1, PROT, &mut mem);
        assert_eq!(n, 0, "{cfg:?}");
        assert!(matches!(r, Err(ModelError::Exists { .. })), "{cfg:?} overlap {size:#x}: {r:?}");
        assert_eq!(t.iova_to_phys(Iova(iova + 42)), Some(PhysAddr(iova + 42)), "{cfg:?}");
        iova += SZ_1G;
    }
    // Full unmap returns exactly the size and leaves no translation; remap works.
    iova = 0;
    for &size in &sizes {
        assert_eq!(t.unmap_pages(Iova(iova), size, 1, &mut mem), size, "{cfg:?} unmap {size:#x}");
        assert_eq!(t.iova_to_phys(Iova(iova + 42)), None, "{cfg:?}");
        let (n, r) = t.map_pages(Iova(iova), PhysAddr(iova), size, 1, PROT, &mut mem);
        assert_eq!((n, r), (size, Ok(())), "{cfg:?} remap {size:#x}");
        assert_eq!(t.unmap_pages(Iova(iova), size, 1, &mut mem), size, "{cfg:?}");
        // Unmapping again finds nothing.
        assert_eq!(t.unmap_pages(Iova(iova), size, 1, &mut mem), 0, "{cfg:?}");
        iova += SZ_1G;
    }
    // The last, largest page below 2^ias (the concatenated-PGD corner).
    let largest = *sizes.last().unwrap();
    let top = (1u64 << cfg.ias) - largest;
    let (n, r) = t.map_pages(Iova(top), PhysAddr(largest), largest, 1, PROT, &mut mem);
    assert_eq!((n, r), (largest, Ok(())), "{cfg:?} last page");
    assert_eq!(t.iova_to_phys(Iova(top + 42)), Some(PhysAddr(largest + 42)), "{cfg:?}");
    assert_eq!(t.unmap_pages(Iova(top), largest, 1, &mut mem), largest, "{cfg:?}");
    assert_eq!(t.iova_to_phys(Iova(top + 42)), None, "{cfg:?}");
    // Past the input size is out of range.
    let (n, r) = t.map_pages(Iova(1u64 << cfg.ias), PhysAddr(0), sizes[0], 1, PROT, &mut mem);
    assert_eq!(n, 0);
    assert!(matches!(r, Err(ModelError::Range(_))), "{cfg:?}");
    assert!(t.leaves().is_empty(), "{cfg:?}");
    t.free(&mut mem);
    assert_eq!(mem.live, 0, "{cfg:?}: table pages leaked");
}

#[test]
fn arm_lpae_matrix() {
    let bits = [32u32, 36, 40, 42, 44, 48];
    let mut configs = 0;
    for granule in [12u32, 14, 16] {
        for &ias in &bits {
            for &oas in bits.iter().filter(|&&o| o >= ias) {
                for stage in [1u8, 2] {
                    run_selftest(PgtableCfg::arm_lpae(stage, granule, ias, oas));
                    configs += 1;
                }
            }
        }
    }
    assert_eq!(configs, 3 * 21 * 2);
}

#[test]
fn vtd_second_level() {
    for agaw in [39, 48, 57] {
        run_selftest(PgtableCfg::vtd(agaw));
    }
}
