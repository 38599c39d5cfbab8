//! Replays `fixtures/regressions/engine/*.ops`: map / unmap / free / alloc
//! sequences that once broke the engine (the `engine` fuzz target in
//! `fuzz/`), written as text so that they survive changes to the fuzz
//! target's input encoding. Each must run without a panic, and once every
//! remaining mapping is unmapped every counter must be back to zero.

use std::path::PathBuf;

use iosan_core::{
    Config, DomainId, Iova, MapMeta, PageSize, Pfn, PhysAddr, PhysRange, Sanitizer, Semantics, ShadowDomain,
    ShadowMapResult,
};
use iosan_testkit::engine::{shadow_domains, shadow_entry_at, unmap_with_hooks, AllDomains, DOMAINS, RAM_BYTES};
use iosan_testkit::iommu::unmap_pieces;

fn num(s: Option<&str>) -> u64 {
    let s = s.expect("operand");
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Unmaps as the IOMMU of domain `d` does (`iosan_testkit::iommu`), with
/// the sanitizer's hooks around it.
fn unmap(san: &Sanitizer, doms: &mut [ShadowDomain], d: usize, iova: u64, size: u64) {
    let leaves = DOMAINS[d].1;
    let pieces = unmap_pieces(iova, size, leaves, |a| shadow_entry_at(&doms[d], a));
    let _ = unmap_with_hooks(san, &mut doms[d], iova, size, &pieces);
}

fn replay(text: &str) {
    let (mut page_lg2, mut semantics) = (12, Semantics::Exact);
    let mut san: Option<Sanitizer> = None;
    let mut doms = shadow_domains();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut w = line.split_whitespace();
        let op = w.next().unwrap_or_default();
        match op {
            "page" => page_lg2 = u32::try_from(num(w.next())).expect("small"),
            "semantics" => {
                semantics = if w.next() == Some("upstream") { Semantics::Upstream } else { Semantics::Exact }
            }
            _ => {}
        }
        let s = san.get_or_insert_with(|| {
            Sanitizer::new(Config {
                semantics,
                page_size: PageSize::from_lg2(page_lg2).expect("4, 16 or 64 KiB"),
                ram: vec![PhysRange::from_start_len(PhysAddr(0), RAM_BYTES).expect("constant")],
                ..Config::default()
            })
        });
        match op {
            "map" => {
                let (d, iova, phys, len) = (num(w.next()) as usize % 4, num(w.next()), num(w.next()), num(w.next()));
                if doms[d].map(Iova(iova), PhysAddr(phys), len, MapMeta::default()) == ShadowMapResult::Mapped {
                    let _ = s.map(DomainId(d as u64), &doms[d], Iova(iova), PhysAddr(phys), len);
                }
            }
            "unmap" => {
                let (d, iova, size) = (num(w.next()) as usize % 4, num(w.next()), num(w.next()));
                unmap(s, &mut doms, d, iova, size);
            }
            "free" => drop(s.check_free(
                Pfn(num(w.next())),
                u32::try_from(num(w.next())).unwrap_or(u32::MAX),
                &AllDomains(&doms),
            )),
            "alloc" => drop(s.check_alloc(
                Pfn(num(w.next())),
                u32::try_from(num(w.next())).unwrap_or(u32::MAX),
                &AllDomains(&doms),
            )),
            "page" | "semantics" => {}
            other => panic!("unknown op `{other}` in `{line}`"),
        }
    }
    let Some(s) = san else { return };
    for d in 0..doms.len() {
        let live: Vec<_> = doms[d].iter().collect();
        for m in live {
            unmap(&s, &mut doms, d, m.iova.start().get(), m.len());
        }
    }
    if semantics == Semantics::Exact {
        for pfn in 0..RAM_BYTES >> page_lg2 {
            assert_eq!(s.count(Pfn(pfn)), 0, "pfn {pfn:#x} still counted after unmapping everything");
        }
    }
}

#[test]
fn engine_regressions() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/regressions/engine");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "ops") {
            replay(&std::fs::read_to_string(&path).expect("text"));
            n += 1;
        }
    }
    assert!(n > 0, "no .ops files in {}", dir.display());
}
