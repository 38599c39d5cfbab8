//! Model checking of the counters, the push-down lock and the unmap ticket
//! protocol with loom: every interleaving of small concurrent scenarios.
//! Under `--cfg loom` blocks are 4 pages (16 KiB with 4 KiB pages).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p iosan-core --test loom --release`
#![cfg(loom)]

use std::sync::Arc;

use iosan_core::{DomainId, FindingKind, Iova, IovaRange, MapMeta, NoMappings, Pfn, PhysAddr, Sanitizer, ShadowDomain};
use loom::thread;

const BLOCK: u64 = 4 * 4096;
const BASE_PFN: u64 = 0x100; // block-aligned (4 pages)

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(f);
}

/// One domain's life on a shared block: map it whole (one block counter),
/// unmap one page (push-down), unmap the rest. Follows the IOMMU API's rule
/// that a domain's own map/unmap of overlapping ranges are serialised.
fn domain_cycle(san: &Sanitizer, id: u64, hole: u64) -> Vec<FindingKind> {
    let mut d = ShadowDomain::new(DomainId(id), 0x1000);
    let (iova, phys) = (Iova(0x4000_0000), PhysAddr(BASE_PFN << 12));
    let mut kinds: Vec<FindingKind> = Vec::new();
    d.map(iova, phys, BLOCK, MapMeta::default());
    kinds.extend(san.map(DomainId(id), &d, iova, phys, BLOCK).iter().map(|f| f.kind));
    let pieces = [(hole, 1u64), (0, hole), (hole + 1, 3 - hole)];
    for (first, n) in pieces.into_iter().filter(|p| p.1 > 0) {
        let at = Iova(iova.get() + first * 4096);
        let (t, f) = san.unmap_begin(DomainId(id), &d, at, n * 4096);
        kinds.extend(f.iter().map(|f| f.kind));
        d.unmap(IovaRange::from_start_len(at, n * 4096).unwrap());
        kinds.extend(san.unmap_end(t, &d, n * 4096).iter().map(|f| f.kind));
    }
    kinds
}

/// Two domains map and partly unmap the same block concurrently: no finding
/// (no false underflow from a half-done push-down), and every count ends at 0.
#[test]
fn concurrent_partial_unmaps_of_a_shared_block() {
    model(|| {
        let san = Arc::new(Sanitizer::default());
        let s2 = san.clone();
        let t = thread::spawn(move || domain_cycle(&s2, 2, 2));
        let a = domain_cycle(&san, 1, 1);
        let b = t.join().unwrap();
        assert!(a.is_empty(), "{a:?}");
        assert!(b.is_empty(), "{b:?}");
        for p in BASE_PFN..BASE_PFN + 4 {
            assert_eq!(san.count(Pfn(p)), 0, "pfn {p:#x}");
        }
    });
}

/// A check of a page nobody maps, racing with maps and unmaps of its
/// neighbours' block: never a finding (no false positive).
#[test]
fn checks_racing_with_push_down_never_report_unmapped_pages() {
    model(|| {
        let san = Arc::new(Sanitizer::default());
        let s2 = san.clone();
        let t = thread::spawn(move || domain_cycle(&s2, 2, 0));
        // The block after the shared one: never mapped.
        let f = san.check_free(Pfn(BASE_PFN + 4), 2, &NoMappings);
        assert!(f.is_empty(), "{f:?}");
        assert!(t.join().unwrap().is_empty());
    });
}

/// A stable mapping made before the race keeps its page counted through a
/// concurrent push-down in another domain: once both sides are done, the
/// count is exactly 1 and a free is reported.
#[test]
fn stable_mapping_survives_a_concurrent_push_down() {
    model(|| {
        let san = Arc::new(Sanitizer::default());
        let mut stable = ShadowDomain::new(DomainId(9), 0x1000);
        let p = PhysAddr((BASE_PFN + 3) << 12);
        stable.map(Iova(0x20_0000), p, 4096, MapMeta::default());
        assert!(san.map(DomainId(9), &stable, Iova(0x20_0000), p, 4096).is_empty());
        let s2 = san.clone();
        let t = thread::spawn(move || domain_cycle(&s2, 2, 3));
        let a = domain_cycle(&san, 1, 0);
        assert!(a.is_empty() && t.join().unwrap().is_empty());
        assert_eq!(san.count(Pfn(BASE_PFN + 3)), 1);
        assert_eq!(san.check_free(Pfn(BASE_PFN), 2, &NoMappings).iter().map(|f| f.npages).sum::<u64>(), 1);
    });
}
