//! iosan-core's `Sanitizer` + `ShadowDomain` under arbitrary
//! map / unmap (partial, block, double) / free / alloc sequences over four
//! domains with different granules, against a plain reference (a BTreeMap
//! of mappings per domain and counts derived from it), in both semantics:
//! the idea of `crates/iosan-core/tests/props.rs`, driven by a fuzzer.
//! Any disagreement, or a bug-kind finding on correct use, panics.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use iosan_core::{
    Config, DomainId, FindingKind, Iova, IovaRange, MapMeta, Mapping, MappingSource, PageSize, Pfn, PhysAddr,
    PhysRange, Sanitizer, Semantics, ShadowDomain, ShadowMapResult,
};
use libfuzzer_sys::fuzz_target;

const RAM_BYTES: u64 = 64 << 20;
const IOVA_BASE: u64 = 1 << 30;
/// (granule log2, block leaves?)
const DOMAINS: [(u32, bool); 4] = [(12, false), (14, false), (16, false), (12, true)];

#[derive(Arbitrary, Debug)]
enum Op {
    Map { d: u8, iova_slot: u8, phys_slot: u8, n: u8 },
    Unmap { d: u8, iova_slot: u8, n: u8 },
    Free { page: u16, order: u8 },
    Alloc { page: u16, order: u8 },
}

#[derive(Arbitrary, Debug)]
struct Case {
    page: u8,
    upstream: bool,
    ops: Vec<Op>,
}

struct Reference {
    page_lg2: u32,
    semantics: Semantics,
    maps: Vec<BTreeMap<u64, (u64, u64)>>,
    upstream: Vec<i64>,
}

impl Reference {
    fn translate(&self, d: usize, iova: u64) -> Option<u64> {
        let (&s, &(p, l)) = self.maps[d].range(..=iova).next_back()?;
        (iova < s + l).then(|| p + (iova - s))
    }
    fn counts(&self) -> Vec<i64> {
        if self.semantics == Semantics::Upstream {
            return self.upstream.clone();
        }
        let mut c = vec![0i64; (RAM_BYTES >> self.page_lg2) as usize];
        for (d, m) in self.maps.iter().enumerate() {
            let step = DOMAINS[d].0.min(self.page_lg2);
            for &(phys, len) in m.values() {
                let mut off = 0;
                while off < len {
                    c[((phys + off) >> self.page_lg2) as usize] += 1;
                    off += 1 << step;
                }
            }
        }
        c
    }
    fn upstream_add(&mut self, phys: u64, delta: i64) {
        if let Some(c) = self.upstream.get_mut((phys >> self.page_lg2) as usize) {
            *c += delta;
        }
    }
}

struct Sources<'a>(&'a [ShadowDomain]);
impl MappingSource for Sources<'_> {
    fn mappings_covering(&self, phys: PhysAddr, len: u64, visit: &mut dyn FnMut(Mapping)) {
        for d in self.0 {
            d.mappings_covering(phys, len, visit);
        }
    }
}

fuzz_target!(|case: Case| {
    let page_lg2 = [12u32, 14, 16][usize::from(case.page % 3)];
    let semantics = if case.upstream { Semantics::Upstream } else { Semantics::Exact };
    let san = Sanitizer::new(Config {
        semantics,
        page_size: PageSize::from_lg2(page_lg2).unwrap(),
        ram: vec![PhysRange::from_start_len(PhysAddr(0), RAM_BYTES).unwrap()],
        ..Config::default()
    });
    let mut doms: Vec<ShadowDomain> = DOMAINS
        .iter()
        .enumerate()
        .map(|(i, &(g, block))| {
            if block {
                ShadowDomain::with_block_leaves(DomainId(i as u64), 1 << g)
            } else {
                ShadowDomain::new(DomainId(i as u64), 1 << g)
            }
        })
        .collect();
    let mut r = Reference {
        page_lg2,
        semantics,
        maps: vec![BTreeMap::new(); DOMAINS.len()],
        upstream: vec![0; (RAM_BYTES >> page_lg2) as usize],
    };
    for (step, o) in case.ops.iter().take(256).enumerate() {
        match *o {
            Op::Map { d, iova_slot, phys_slot, n } => {
                let d = usize::from(d % 4);
                let g = DOMAINS[d].0;
                let (iova_slot, phys_slot, n) =
                    (u64::from(iova_slot % 48), u64::from(phys_slot % 200), u64::from(n % 5) + 1);
                let (iova, phys, len) = (IOVA_BASE + (iova_slot << g), phys_slot << g, n << g);
                if phys + len > RAM_BYTES {
                    continue;
                }
                if doms[d].map(Iova(iova), PhysAddr(phys), len, MapMeta { when: step as u64, tag: 0 })
                    != ShadowMapResult::Mapped
                {
                    continue;
                }
                r.maps[d].insert(iova, (phys, len));
                // The kernel WARNs when an increment leaves a count <= 0: a page whose
                // count an earlier unmap of a phys-0 map (skipped at map time) drove
                // negative (see upstream_phys_zero_map_goes_negative_on_unmap).
                let kernel_warns = semantics == Semantics::Upstream
                    && phys != 0
                    && (0..len).step_by(1 << g).any(|off| {
                        r.upstream.get(((phys + off) >> r.page_lg2) as usize).is_some_and(|&c| c < 0)
                    });
                if semantics == Semantics::Upstream && phys != 0 {
                    let mut off = 0;
                    while off < len {
                        r.upstream_add(phys + off, 1);
                        off += 1 << g;
                    }
                }
                let f = san.map(DomainId(d as u64), &doms[d], Iova(iova), PhysAddr(phys), len);
                let expect_invalid = semantics == Semantics::Upstream && phys == 0;
                assert_eq!(f.iter().any(|f| f.kind == FindingKind::InvalidMapArgs), expect_invalid, "{f:?}");
                assert!(
                    f.iter().all(|f| f.kind == FindingKind::InvalidMapArgs
                        || (kernel_warns && f.kind == FindingKind::RefcountOverflow)),
                    "map of correct args: {f:?}"
                );
            }
            Op::Unmap { d, iova_slot, n } => {
                let d = usize::from(d % 4);
                let (g, block) = DOMAINS[d];
                let (iova_slot, n) = (u64::from(iova_slot % 48), u64::from(n % 7) + 1);
                let (iova, size) = (IOVA_BASE + (iova_slot << g), n << g);
                let asked = IovaRange::from_start_len(Iova(iova), size).unwrap();
                let mut remove: Vec<(u64, u64)> = vec![];
                let mut cur = iova;
                while cur < iova + size {
                    let Some((&s, &(_, l))) = r.maps[d].range(..=cur).next_back() else { break };
                    if cur >= s + l {
                        break;
                    }
                    if block {
                        if s != cur {
                            break;
                        }
                        remove.push((s, l));
                        cur = s + l;
                    } else {
                        let end = (s + l).min(iova + size);
                        remove.push((cur, end - cur));
                        cur = end;
                    }
                }
                let unmapped: u64 = remove.iter().map(|x| x.1).sum();
                let coverage: u64 = doms[d].overlapping(asked).filter_map(|m| m.iova.intersect(asked)?.len()).sum();
                if semantics == Semantics::Upstream {
                    let mut off = 0;
                    while off < size {
                        if let Some(p) = r.translate(d, iova + off) {
                            if p != 0 {
                                r.upstream_add(p, -1);
                            }
                        }
                        off += 1 << g;
                    }
                }
                let (ticket, f0) = san.unmap_begin(DomainId(d as u64), &doms[d], Iova(iova), size);
                for &(s, l) in &remove {
                    doms[d].unmap(IovaRange::from_start_len(Iova(s), l).unwrap());
                    let (&es, &(ep, el)) = r.maps[d].range(..=s).next_back().unwrap();
                    r.maps[d].remove(&es);
                    if es < s {
                        r.maps[d].insert(es, (ep, s - es));
                    }
                    if es + el > s + l {
                        r.maps[d].insert(s + l, (ep + (s + l - es), es + el - (s + l)));
                    }
                }
                if semantics == Semantics::Upstream && unmapped < size {
                    let mut off = unmapped;
                    while off < size {
                        if let Some(p) = r.translate(d, iova + off) {
                            if p != 0 {
                                r.upstream_add(p, 1);
                            }
                        }
                        off += 1 << g;
                    }
                }
                let f1 = san.unmap_end(ticket, &doms[d], unmapped);
                if semantics == Semantics::Exact {
                    let kinds: Vec<_> = f0.iter().chain(&f1).map(|f| f.kind).collect();
                    let expect = if coverage == 0 {
                        vec![FindingKind::DoubleUnmap]
                    } else if coverage < size {
                        vec![FindingKind::UnmapOverlapsUnmapped]
                    } else {
                        vec![]
                    };
                    assert_eq!(kinds, expect, "step {step} {o:?}");
                }
            }
            Op::Free { page, order } | Op::Alloc { page, order } => {
                let order = u32::from(order % 5);
                let p = u64::from(page % 1024);
                let first = (p << order >> 2) & !((1 << order) - 1);
                let n = 1u64 << order;
                if (first + n) << page_lg2 > RAM_BYTES {
                    continue;
                }
                let f = match o {
                    Op::Free { .. } => san.check_free(Pfn(first), order, &Sources(&doms)),
                    _ => san.check_alloc(Pfn(first), order, &Sources(&doms)),
                };
                let counts = r.counts();
                let expect: Vec<u64> = (first..first + n).filter(|&q| counts[q as usize] != 0).collect();
                let got: Vec<u64> =
                    f.iter().flat_map(|f| f.pfn.unwrap().get()..f.pfn.unwrap().get() + f.npages).collect();
                assert_eq!(got, expect, "step {step} op {o:?}");
                if semantics == Semantics::Exact {
                    assert!(f.iter().all(|f| !f.mappings.is_empty()), "finding without provenance");
                }
            }
        }
    }
    let counts = r.counts();
    for (pfn, &c) in counts.iter().enumerate() {
        assert_eq!(san.count(Pfn(pfn as u64)), c, "pfn {pfn:#x}");
    }
});
