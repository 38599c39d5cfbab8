//! The reference of the model's io-pgtable (`iosan_model::pgtable`): its
//! leaves as a `BTreeMap` of `iova -> (phys, len)`, in the manner of
//! generic_pt's random map test against a shadow model.
//!
//! It stands for the `io_pgtable_ops` contract the kernel's callers rely
//! on: `map_pages()` maps `count` pages of one size until one would
//! overlap a leaf already there and returns how much it mapped;
//! `unmap_pages()` removes leaves from the start until a hole and returns
//! the bytes unmapped, with a leaf that straddles an end of the range
//! split, refused or removed whole as the format's [`PartialUnmap`] policy
//! says; `iova_to_phys()` translates inside a leaf.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use iosan_core::{Iova, IovaRange, LeafRun, PhysAddr, Translate};
use iosan_model::pgtable::{PartialUnmap, PgtableCfg};

/// The formats and partial-unmap policies the tests cover: ARM LPAE stage 1
/// and 2 at 4, 16 and 64 KiB, VT-d at agaw 48 and 39.
pub const CONFIGS: [PgtableCfg; 6] = [
    PgtableCfg::arm_lpae(1, 12, 48, 48),
    PgtableCfg::arm_lpae(2, 12, 40, 40).with_partial(PartialUnmap::Split),
    PgtableCfg::arm_lpae(1, 14, 48, 48).with_partial(PartialUnmap::WholeBlock),
    PgtableCfg::arm_lpae(1, 16, 48, 48),
    PgtableCfg::vtd(48),
    PgtableCfg::vtd(39).with_partial(PartialUnmap::Split),
];

/// An IOVA in a 4 GiB window (GiB, 2 MiB and 4 KiB steps of `at`, each
/// taken modulo 4, 4 and 8), aligned down to `size`, so that operations
/// collide often.
#[must_use]
pub fn place(at: (u8, u8, u8), size: u64) -> u64 {
    let a = u64::from(at.0 % 4) * (1 << 30) + u64::from(at.1 % 4) * (1 << 21) + u64::from(at.2 % 8) * (1 << 12);
    a & !(size.max(1) - 1)
}

/// A physical address for a map of pages of `size`: `phys` GiB, kept below
/// 2^39 so that three 1 GiB pages stay below the smallest oas (40), and
/// aligned down to `size`.
#[must_use]
pub fn phys_for(phys: u16, size: u64) -> u64 {
    (u64::from(phys) << 30) & ((1 << 39) - 1) & !(size.max(1) - 1)
}

/// The page sizes of `pgsize_bitmap`, smallest first.
#[must_use]
pub fn page_sizes(pgsize_bitmap: u64) -> Vec<u64> {
    (0..64).filter(|b| pgsize_bitmap >> b & 1 == 1).map(|b| 1u64 << b).collect()
}

/// Every leaf run of a table over the whole IOVA space, as
/// `Translate::walk_leaves` reports them: what [`LeafMap::runs`] must equal.
pub fn table_runs(t: &impl Translate) -> Vec<LeafRun> {
    let mut runs = Vec::new();
    if let Some(all) = IovaRange::from_start_last(Iova(0), Iova(u64::MAX)) {
        t.walk_leaves(all, &mut |r| {
            runs.push(r);
            ControlFlow::Continue(())
        });
    }
    runs
}

/// The leaves of one page table.
#[derive(Clone, Debug, Default)]
pub struct LeafMap {
    leaves: BTreeMap<u64, (u64, u64)>,
}

impl LeafMap {
    /// The leaf containing `a`, as `(iova, phys, len)`.
    #[must_use]
    pub fn covering(&self, a: u64) -> Option<(u64, u64, u64)> {
        let (&s, &(p, l)) = self.leaves.range(..=a).next_back()?;
        (a - s < l).then_some((s, p, l))
    }

    /// `iova_to_phys()`.
    #[must_use]
    pub fn translate(&self, a: u64) -> Option<PhysAddr> {
        self.covering(a).map(|(s, p, _)| PhysAddr(p + (a - s)))
    }

    /// The first leaf touching `[first, last]`.
    fn first_in(&self, first: u64, last: u64) -> Option<(u64, u64, u64)> {
        if let Some(c) = self.covering(first) {
            return Some(c);
        }
        self.leaves.range(first..=last).next().map(|(&s, &(p, l))| (s, p, l))
    }

    /// `map_pages()`: `count` leaves of `size` from `iova` / `phys`, until
    /// one would overlap. Returns the bytes mapped and whether all were.
    pub fn map(&mut self, iova: u64, phys: u64, size: u64, count: u64) -> (u64, bool) {
        for i in 0..count {
            let a = iova + i * size;
            if self.first_in(a, a + size - 1).is_some() {
                return (i * size, false);
            }
            self.leaves.insert(a, (phys + i * size, size));
        }
        (count * size, true)
    }

    /// `unmap_pages()` of `len` bytes from `iova` under `policy`. Returns
    /// the bytes unmapped (more than `len` when whole blocks go).
    pub fn unmap(&mut self, iova: u64, len: u64, policy: PartialUnmap) -> u64 {
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

    /// The leaves as the runs `Translate::walk_leaves` reports: adjacent
    /// leaves contiguous in both spaces merged.
    #[must_use]
    pub fn runs(&self) -> Vec<LeafRun> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_stops_at_an_overlap_and_runs_merge() {
        let mut m = LeafMap::default();
        assert_eq!(m.map(0x1000, 0x10_0000, 0x1000, 2), (0x2000, true));
        assert_eq!(m.map(0x0, 0x20_0000, 0x1000, 3), (0x1000, false));
        assert_eq!(
            m.runs(),
            vec![
                LeafRun { iova: Iova(0), phys: PhysAddr(0x20_0000), len: 0x1000 },
                LeafRun { iova: Iova(0x1000), phys: PhysAddr(0x10_0000), len: 0x2000 },
            ]
        );
        assert_eq!(m.translate(0x2800), Some(PhysAddr(0x10_1800)));
    }

    #[test]
    fn a_cut_inside_a_block_by_policy() {
        // 4 KiB out of the middle of a 2 MiB block.
        let (block, cut) = (0x20_0000u64, 0x30_0000u64);
        let mut split = LeafMap::default();
        split.map(block, 0x4000_0000, 0x20_0000, 1);
        let mut refuse = split.clone();
        let mut whole = split.clone();
        assert_eq!(split.unmap(cut, 0x1000, PartialUnmap::Split), 0x1000);
        assert_eq!(split.translate(cut), None);
        assert_eq!(split.translate(cut + 0x1000), Some(PhysAddr(0x4010_1000)));
        assert_eq!(split.runs().len(), 2, "the block is split around the hole");
        assert_eq!(refuse.unmap(cut, 0x1000, PartialUnmap::Refuse), 0);
        assert_eq!(refuse.translate(cut), Some(PhysAddr(0x4010_0000)));
        assert_eq!(whole.unmap(cut, 0x1000, PartialUnmap::WholeBlock), 0x20_0000, "more than asked");
        assert!(whole.runs().is_empty());
    }

    #[test]
    fn place_stays_in_the_window_and_aligned() {
        assert_eq!(place((5, 1, 9), 0x1000), (1 << 30) + (1 << 21) + (1 << 12));
        assert_eq!(place((3, 3, 7), 1 << 30), 3 << 30);
        assert_eq!(phys_for(0xffff, 1 << 21), ((1 << 39) - 1) & !((1 << 30) - 1));
    }
}
