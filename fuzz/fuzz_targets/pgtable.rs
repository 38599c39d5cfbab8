//! iosan-model's io-pgtable under arbitrary map_pages / unmap_pages /
//! iova_to_phys sequences, for each format and partial-unmap policy,
//! against a `BTreeMap` of leaves (the model of
//! `crates/iosan-model/tests/pgtable_prop.rs`). Includes bad arguments
//! (sizes not in the bitmap, misalignment, zero counts, addresses past ias).
#![no_main]

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use arbitrary::Arbitrary;
use iosan_core::{Iova, IovaRange, LeafRun, PhysAddr, Translate};
use iosan_model::pgtable::{BumpTables, IoPgtable, PartialUnmap, PgtableCfg, IOMMU_READ, IOMMU_WRITE};
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

fn place(at: (u8, u8, u8), size: u64) -> u64 {
    let a = u64::from(at.0 % 4) * (1 << 30) + u64::from(at.1 % 4) * (1 << 21) + u64::from(at.2 % 8) * (1 << 12);
    a & !(size - 1)
}

const CFGS: [PgtableCfg; 6] = [
    PgtableCfg::arm_lpae(1, 12, 48, 48),
    PgtableCfg::arm_lpae(2, 12, 40, 40).with_partial(PartialUnmap::Split),
    PgtableCfg::arm_lpae(1, 14, 48, 48).with_partial(PartialUnmap::WholeBlock),
    PgtableCfg::arm_lpae(1, 16, 48, 48),
    PgtableCfg::vtd(48),
    PgtableCfg::vtd(39).with_partial(PartialUnmap::Split),
];

fuzz_target!(|case: Case| {
    let cfg = CFGS[usize::from(case.cfg) % CFGS.len()];
    let mut mem = BumpTables::new(1 << 46);
    let mut t = IoPgtable::new(cfg, &mut mem).unwrap();
    let bitmap = t.pgsize_bitmap();
    let sizes: Vec<u64> = (0..64).filter(|b| bitmap >> b & 1 == 1).map(|b| 1u64 << b).collect();
    let mut model = Model::default();
    for op in case.ops.iter().take(64) {
        match *op {
            Op::Map { at, size, count, phys } => {
                let size = sizes[usize::from(size) % sizes.len().min(3)];
                let count = u64::from(count % 3) + 1;
                let iova = place(at, size);
                let phys = (u64::from(phys) << 30) & ((1 << 39) - 1) & !(size - 1);
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
                let want = model.covering(a).map(|(s, p, _)| PhysAddr(p + (a - s)));
                assert_eq!(t.iova_to_phys(Iova(a)), want, "iova_to_phys {a:#x}");
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
    let mut runs = Vec::new();
    t.walk_leaves(IovaRange::from_start_last(Iova(0), Iova(u64::MAX)).unwrap(), &mut |r| {
        runs.push(r);
        ControlFlow::Continue(())
    });
    assert_eq!(runs, model.runs());
});
