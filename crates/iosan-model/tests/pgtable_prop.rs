//! Random map/unmap against a simple range-map model (a `BTreeMap` of
//! leaves), for each format and each partial-block policy, in the manner
//! of generic_pt's `test_random_map`.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use iosan_core::{Iova, IovaRange, LeafRun, PhysAddr, Translate};
use iosan_model::pgtable::{BumpTables, IoPgtable, PartialUnmap, PgtableCfg, IOMMU_READ, IOMMU_WRITE};
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

/// The reference: leaves as `iova -> (phys, len)`.
#[derive(Default)]
struct Model {
    leaves: BTreeMap<u64, (u64, u64)>,
}

impl Model {
    fn covering(&self, a: u64) -> Option<(u64, u64, u64)> {
        let (&s, &(p, l)) = self.leaves.range(..=a).next_back()?;
        (a < s + l).then_some((s, p, l))
    }
    fn first_in(&self, first: u64, last: u64) -> Option<(u64, u64, u64)> {
        if let Some(c) = self.covering(first) {
            return Some(c);
        }
        self.leaves.range(first..=last).next().map(|(&s, &(p, l))| (s, p, l))
    }
    fn map(&mut self, iova: u64, phys: u64, size: u64, count: u64) -> (u64, bool) {
        for i in 0..count {
            let a = iova + i * size;
            if self.first_in(a, a + size - 1).is_some() {
                return (i * size, false);
            }
            self.leaves.insert(a, (phys + i * size, size));
        }
        (count * size, true)
    }
    fn unmap(&mut self, iova: u64, len: u64, policy: PartialUnmap) -> u64 {
        let end = iova + len;
        let (mut pos, mut n) = (iova, 0);
        while pos < end {
            let Some((s, p, l)) = self.first_in(pos, end - 1) else { break };
            if s > pos {
                break;
            }
            let straddles = s < pos || s + l > end;
            if straddles && policy == PartialUnmap::Refuse {
                break;
            }
            self.leaves.remove(&s);
            if straddles && policy == PartialUnmap::Split {
                let cut_end = end.min(s + l);
                if s < pos {
                    self.leaves.insert(s, (p, pos - s));
                }
                if cut_end < s + l {
                    self.leaves.insert(cut_end, (p + (cut_end - s), s + l - cut_end));
                }
                n += cut_end - pos;
                pos = cut_end;
            } else {
                n += l;
                pos = s + l;
            }
        }
        n
    }
    fn runs(&self) -> Vec<LeafRun> {
        let mut out: Vec<LeafRun> = Vec::new();
        for (&s, &(p, l)) in &self.leaves {
            if let Some(r) = out.last_mut() {
                if r.iova.0 + r.len == s && r.phys.0 + r.len == p {
                    r.len += l;
                    continue;
                }
            }
            out.push(LeafRun { iova: Iova(s), phys: PhysAddr(p), len: l });
        }
        out
    }
}

fn check(cfg: PgtableCfg, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut mem = BumpTables::new(1 << 46);
    let mut t = IoPgtable::new(cfg, &mut mem).unwrap();
    let bitmap = t.pgsize_bitmap();
    let sizes: Vec<u64> = (0..64).filter(|b| bitmap >> b & 1 == 1).map(|b| 1u64 << b).collect();
    let mut model = Model::default();
    for op in ops {
        match *op {
            Op::Map { at, size, count, phys } => {
                let size = sizes[usize::from(size) % sizes.len()];
                let iova = place(at, size);
                // Below 2^39, so that three 1 GiB pages stay below the smallest oas (40).
                let phys = (u64::from(phys) << 30) & ((1 << 39) - 1) & !(size - 1);
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
        let mut runs = Vec::new();
        t.walk_leaves(IovaRange::from_start_last(Iova(0), Iova(u64::MAX)).unwrap(), &mut |r| {
            runs.push(r);
            ControlFlow::Continue(())
        });
        prop_assert_eq!(&runs, &model.runs());
        for r in model.runs().iter().take(4) {
            prop_assert_eq!(t.iova_to_phys(Iova(r.iova.0 + r.len - 1)), Some(PhysAddr(r.phys.0 + r.len - 1)));
        }
    }
    Ok(())
}

/// An IOVA in a small window (4 GiB) so that operations collide often.
fn place(at: (u8, u8, u8), size: u64) -> u64 {
    let a = u64::from(at.0) * (1 << 30) + u64::from(at.1) * (1 << 21) + u64::from(at.2) * (1 << 12);
    a & !(size - 1)
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
