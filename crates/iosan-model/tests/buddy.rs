//! Buddy allocator: split/merge invariants under random alloc/free, no
//! double allocation, full coalescing after freeing everything.

use iosan_core::{PageSize, Pfn};
use iosan_model::mem::{PhysMemory, Region, RegionKind};
use proptest::prelude::*;

fn memory() -> PhysMemory {
    PhysMemory::new(
        PageSize::SIZE_4K,
        &[
            Region { start: Pfn(0x100), pages: 0xf00, kind: RegionKind::Ram },
            Region { start: Pfn(0x1000), pages: 0x800, kind: RegionKind::Mmio },
            Region { start: Pfn(0x2000), pages: 0x1c00, kind: RegionKind::Ram },
        ],
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_alloc_free_keeps_invariants(ops in proptest::collection::vec((any::<bool>(), 0u32..11, any::<u16>()), 1..300)) {
        let mut m = memory();
        let initial = m.buddyinfo();
        let total = m.free_pages();
        let mut live: Vec<(Pfn, u32)> = Vec::new();
        let mut owned = std::collections::HashSet::new();
        for (alloc, order, pick) in ops {
            if alloc || live.is_empty() {
                if let Ok(pfn) = m.alloc(order) {
                    prop_assert_eq!(pfn.0 % (1 << order), 0);
                    prop_assert!(m.is_ram(pfn));
                    for p in pfn.0..pfn.0 + (1 << order) {
                        prop_assert!(owned.insert(p), "page {:#x} handed out twice", p);
                    }
                    live.push((pfn, order));
                }
            } else {
                let (pfn, order) = live.swap_remove(usize::from(pick) % live.len());
                m.free(pfn, order).unwrap();
                for p in pfn.0..pfn.0 + (1 << order) {
                    owned.remove(&p);
                }
                prop_assert!(m.free(pfn, order).is_err(), "double free accepted");
            }
            prop_assert_eq!(m.check_invariants(), None);
            prop_assert_eq!(m.free_pages() + owned.len() as u64, total);
        }
        for (pfn, order) in live {
            m.free(pfn, order).unwrap();
        }
        prop_assert_eq!(m.buddyinfo(), initial);
        prop_assert_eq!(m.free_pages(), total);
    }
}

#[test]
fn exhaustion_is_an_error_not_a_panic() {
    let mut m = memory();
    let mut n = 0u64;
    while m.alloc(0).is_ok() {
        n += 1;
    }
    assert_eq!(n, 0xf00 + 0x1c00);
    assert!(m.alloc(0).is_err());
    assert_eq!(m.check_invariants(), None);
}
