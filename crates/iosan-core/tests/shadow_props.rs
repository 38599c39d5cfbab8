//! Property test of `ShadowDomain` against a plain reference: a map from
//! each mapped 4 KiB IOVA page to its physical page and mapping. Random
//! maps, unmaps (aligned or not) and queries, checked after every step:
//! - `first_mapped_in` (one tree probe in the common case) finds what a
//!   scan of the reference finds;
//! - `for_each_covering` (reverse index built on the first query and kept
//!   up to date after it, also in a clone) finds what a scan of every
//!   mapping finds;
//! - where `unmaps_as_walked` says so, `walk_leaves` before an unmap
//!   reports exactly the pieces `unmap_into` removes (what the replay hands
//!   the sanitizer instead of walking twice).

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use iosan_core::{DomainId, Iova, IovaRange, LeafRun, MapMeta, PhysAddr, ShadowDomain, ShadowMapping, Translate};
use proptest::prelude::*;

const PAGE: u64 = 0x1000;
/// IOVA and physical space in pages: small, so that ranges collide.
const SPACE: u64 = 48;

#[derive(Clone, Debug)]
enum Op {
    Map {
        iova: u64,
        phys: u64,
        pages: u64,
    },
    /// `off` bytes into the page, `len` bytes: unaligned when `off` or `len % PAGE` is not 0.
    Unmap {
        iova: u64,
        off: u64,
        len: u64,
    },
    Covering {
        phys: u64,
        pages: u64,
    },
    FirstMapped {
        iova: u64,
        pages: u64,
    },
    Clone,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SPACE, 0..SPACE, 1..6u64).prop_map(|(iova, phys, pages)| Op::Map { iova, phys, pages }),
        3 => (0..SPACE, prop_oneof![3 => Just(0u64), 1 => 1..PAGE], 1..6 * PAGE)
            .prop_map(|(iova, off, len)| Op::Unmap { iova, off, len }),
        2 => (0..SPACE, 1..8u64).prop_map(|(phys, pages)| Op::Covering { phys, pages }),
        2 => (0..SPACE, 1..8u64).prop_map(|(iova, pages)| Op::FirstMapped { iova, pages }),
        1 => Just(Op::Clone),
    ]
}

fn range(start: u64, len: u64) -> IovaRange {
    IovaRange::from_start_len(Iova(start), len).expect("small ranges")
}

/// Every mapping whose physical range overlaps `[phys, phys + len)`, by a scan.
fn covering_by_scan(d: &ShadowDomain, phys: u64, len: u64) -> Vec<ShadowMapping> {
    let mut v: Vec<_> = d.iter().filter(|m| m.phys.get() < phys + len && phys < m.phys.get() + m.len()).collect();
    v.sort_by_key(|m| (m.phys.get(), m.iova.start().get()));
    v
}

fn covering(d: &ShadowDomain, phys: u64, len: u64) -> Vec<ShadowMapping> {
    let mut v = Vec::new();
    d.for_each_covering(PhysAddr(phys), len, |m| v.push(m));
    v.sort_by_key(|m| (m.phys.get(), m.iova.start().get()));
    v
}

fn walk(d: &ShadowDomain, r: IovaRange) -> Vec<LeafRun> {
    let mut v = Vec::new();
    d.walk_leaves(r, &mut |run| {
        v.push(run);
        ControlFlow::Continue(())
    });
    v
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut d = ShadowDomain::new(DomainId(1), PAGE | (1 << 21));
    // Mapped IOVA pages (by page start) -> physical address.
    let mut reference: BTreeMap<u64, u64> = BTreeMap::new();
    for (step, o) in ops.iter().enumerate() {
        match *o {
            Op::Map { iova, phys, pages } => {
                let (iova, phys, len) = (iova * PAGE, phys * PAGE, pages * PAGE);
                let free = !(iova..iova + len).step_by(PAGE as usize).any(|p| reference.contains_key(&p));
                let r = d.map(Iova(iova), PhysAddr(phys), len, MapMeta { when: step as u64, tag: 0 });
                prop_assert_eq!(matches!(r, iosan_core::ShadowMapResult::Mapped), free, "step {}: {:?}", step, o);
                if free {
                    for i in 0..pages {
                        reference.insert(iova + i * PAGE, phys + i * PAGE);
                    }
                }
            }
            Op::Unmap { iova, off, len } => {
                let r = range(iova * PAGE + off, len);
                let before = walk(&d, r);
                let as_walked = d.unmaps_as_walked(r);
                prop_assert_eq!(as_walked, off == 0 && len % PAGE == 0, "step {}", step);
                let mut gone = Vec::new();
                d.unmap_into(r, &mut gone);
                if as_walked {
                    let pieces: Vec<LeafRun> =
                        gone.iter().map(|m| LeafRun { iova: m.iova.start(), phys: m.phys, len: m.len() }).collect();
                    prop_assert_eq!(&pieces, &before, "step {}: {:?}", step, o);
                }
                // The reference drops whole pages only when the unmap covers them.
                if as_walked {
                    let first = r.start().get();
                    for p in (first..first + len).step_by(PAGE as usize) {
                        reference.remove(&p);
                    }
                } else {
                    // Unaligned: resynchronise from the shadow's pieces (byte-granular
                    // splits are ShadowDomain's own unit tests' business).
                    reference.clear();
                    for m in d.iter() {
                        let mut p = m.iova.start().get() & !(PAGE - 1);
                        while p <= m.iova.last().get() {
                            reference.insert(p, m.phys.get());
                            p += PAGE;
                        }
                    }
                }
            }
            Op::Covering { phys, pages } => {
                let (phys, len) = (phys * PAGE, pages * PAGE);
                prop_assert_eq!(covering(&d, phys, len), covering_by_scan(&d, phys, len), "step {}", step);
            }
            Op::FirstMapped { iova, pages } => {
                let r = range(iova * PAGE, pages * PAGE);
                let expected = d.iter().filter_map(|m| m.iova.intersect(r)).map(|cut| cut.start()).min();
                prop_assert_eq!(d.first_mapped_in(r), expected, "step {}", step);
            }
            Op::Clone => {
                let c = d.clone();
                for phys in (0..SPACE).step_by(7) {
                    prop_assert_eq!(covering(&c, phys * PAGE, 8 * PAGE), covering_by_scan(&d, phys * PAGE, 8 * PAGE));
                }
                d = c;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn shadow_lookups_match_a_scan(ops in proptest::collection::vec(op(), 1..120)) {
        run(&ops)?;
    }
}

#[test]
fn a_block_leaves_domain_never_unmaps_as_walked() {
    let d = ShadowDomain::with_block_leaves(DomainId(1), PAGE);
    assert!(!d.unmaps_as_walked(range(0, PAGE)));
    let d = ShadowDomain::new(DomainId(1), PAGE);
    assert!(d.unmaps_as_walked(range(0, PAGE)));
    assert!(d.unmaps_as_walked(IovaRange::from_start_last(Iova(u64::MAX - PAGE + 1), Iova(u64::MAX)).unwrap()));
    assert!(!d.unmaps_as_walked(range(PAGE / 2, PAGE)));
}
