//! Threads map and unmap disjoint and shared pages concurrently; a checker
//! thread frees pages nobody maps (must never be reported) and pages mapped
//! for the whole run (must always be reported). At the end every count is exact.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use iosan_core::{DomainId, Iova, IovaRange, MapMeta, NoMappings, Pfn, PhysAddr, Sanitizer, ShadowDomain};

const THREADS: u64 = 4;
const ROUNDS: u64 = 3000;
const SHARED_PFN: u64 = 0x1000; // 4 shared pages from here
const PINNED_PFN: u64 = 0x3000; // mapped before the threads start, never unmapped
const NEVER_PFN: u64 = 0x5000; // never mapped

#[test]
fn concurrent_map_unmap_is_exact_and_never_spurious() {
    let san = Arc::new(Sanitizer::default());
    let mut pinned = ShadowDomain::new(DomainId(99), 0x1000);
    pinned.map(Iova(0x1000), PhysAddr(PINNED_PFN << 12), 0x4000, MapMeta::default());
    assert!(san.map(DomainId(99), &pinned, Iova(0x1000), PhysAddr(PINNED_PFN << 12), 0x4000).is_empty());
    let stop = Arc::new(AtomicBool::new(false));

    let checker = {
        let (san, stop) = (san.clone(), stop.clone());
        thread::spawn(move || {
            let mut checks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                assert!(san.check_free(Pfn(NEVER_PFN), 2, &NoMappings).is_empty(), "spurious finding");
                let f = san.check_free(Pfn(PINNED_PFN), 2, &NoMappings);
                assert_eq!(f.iter().map(|f| f.npages).sum::<u64>(), 4, "missed a stable mapping");
                checks += 1;
            }
            checks
        })
    };

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let san = san.clone();
            thread::spawn(move || {
                let id = DomainId(t);
                let mut d = ShadowDomain::new(id, 0x1000 | 0x20_0000);
                let own_pfn = 0x2000 + t * 0x100; // disjoint, 2 MiB aligned blocks would be too big; 16 pages
                for r in 0..ROUNDS {
                    let (phys, len) = if r % 2 == 0 {
                        (PhysAddr(SHARED_PFN << 12), 0x4000)
                    } else {
                        (PhysAddr(own_pfn << 12), 0x10000)
                    };
                    let iova = Iova(0x10_0000);
                    d.map(iova, phys, len, MapMeta { when: r, tag: t });
                    assert!(san.map(id, &d, iova, phys, len).is_empty());
                    let (ticket, f) = san.unmap_begin(id, &d, iova, len);
                    assert!(f.is_empty());
                    d.unmap(IovaRange::from_start_len(iova, len).unwrap());
                    assert!(san.unmap_end(ticket, &d, len).is_empty());
                }
                // Leave one shared mapping live per thread.
                let iova = Iova(0x20_0000);
                d.map(iova, PhysAddr(SHARED_PFN << 12), 0x4000, MapMeta::default());
                assert!(san.map(id, &d, iova, PhysAddr(SHARED_PFN << 12), 0x4000).is_empty());
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let checks = checker.join().unwrap();
    assert!(checks > 0);

    for p in SHARED_PFN..SHARED_PFN + 4 {
        assert_eq!(san.count(Pfn(p)), THREADS as i64);
    }
    for t in 0..THREADS {
        for p in 0x2000 + t * 0x100..0x2000 + t * 0x100 + 16 {
            assert_eq!(san.count(Pfn(p)), 0);
        }
    }
    for p in PINNED_PFN..PINNED_PFN + 4 {
        assert_eq!(san.count(Pfn(p)), 1);
    }
    assert_eq!(san.count(Pfn(NEVER_PFN)), 0);
}

#[test]
fn concurrent_block_maps_with_partial_unmaps_stay_exact() {
    // Threads share one 2 MiB block: each maps it whole (one block counter),
    // then unmaps a different 4 KiB page of it (push-down), then the rest.
    let san = Arc::new(Sanitizer::default());
    let base = 0x4_0000_0000u64; // 2 MiB aligned
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let san = san.clone();
            thread::spawn(move || {
                let id = DomainId(t);
                for r in 0..200u64 {
                    let mut d = ShadowDomain::new(id, 0x1000);
                    let iova = Iova(0x4000_0000);
                    d.map(iova, PhysAddr(base), 2 << 20, MapMeta { when: r, tag: 0 });
                    assert!(san.map(id, &d, iova, PhysAddr(base), 2 << 20).is_empty());
                    let hole = Iova(iova.get() + ((t * 7 + r) % 512) * 0x1000);
                    let (tk, f) = san.unmap_begin(id, &d, hole, 0x1000);
                    assert!(f.is_empty());
                    d.unmap(IovaRange::from_start_len(hole, 0x1000).unwrap());
                    assert!(san.unmap_end(tk, &d, 0x1000).is_empty());
                    // The rest, as the two pieces either side of the hole (an IOMMU
                    // unmap stops at the first hole, so `unmapped` counts from the IOVA).
                    let pieces = [
                        (iova.get(), hole.get() - iova.get()),
                        (hole.get() + 0x1000, iova.get() + (2 << 20) - hole.get() - 0x1000),
                    ];
                    for (start, len) in pieces.into_iter().filter(|p| p.1 > 0) {
                        let (tk, f) = san.unmap_begin(id, &d, Iova(start), len);
                        assert!(f.is_empty());
                        let gone: u64 =
                            d.unmap(IovaRange::from_start_len(Iova(start), len).unwrap()).iter().map(|m| m.len()).sum();
                        assert_eq!(gone, len);
                        assert!(san.unmap_end(tk, &d, gone).is_empty());
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    for p in (base >> 12)..(base >> 12) + 512 {
        assert_eq!(san.count(Pfn(p)), 0, "pfn {p:#x}");
    }
}
