//! Replays `fixtures/regressions/engine/*.ops`: map / unmap / free / alloc
//! sequences that once broke the engine (the `engine` fuzz target in
//! `fuzz/`), written as text so that they survive changes to the fuzz
//! target's input encoding. Each must run without a panic, and once every
//! remaining mapping is unmapped every counter must be back to zero.

use std::path::PathBuf;

use iosan_core::{
    Config, DomainId, Iova, IovaRange, MapMeta, Mapping, MappingSource, PageSize, Pfn, PhysAddr, PhysRange, Sanitizer,
    Semantics, ShadowDomain, ShadowMapResult,
};

const RAM_BYTES: u64 = 64 << 20;

struct All<'a>(&'a [ShadowDomain]);

impl MappingSource for All<'_> {
    fn mappings_covering(&self, phys: PhysAddr, len: u64, visit: &mut dyn FnMut(Mapping)) {
        for d in self.0 {
            d.mappings_covering(phys, len, visit);
        }
    }
}

fn num(s: Option<&str>) -> u64 {
    let s = s.expect("operand");
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Unmaps as an IOMMU does: from `iova` up to the first hole (the bytes
/// unmapped are always a prefix of the range); a domain with block leaves
/// removes whole entries, and refuses one that starts before `iova`.
fn unmap(san: &Sanitizer, d: &mut ShadowDomain, iova: u64, size: u64, block: bool) {
    let (ticket, _) = san.unmap_begin(d.id(), d, Iova(iova), size);
    let mut cur = iova;
    if let Some(asked) = IovaRange::from_start_len(Iova(iova), size) {
        for m in d.overlapping(asked) {
            let start = m.iova.start().get();
            if start > cur || (block && start < iova) {
                break;
            }
            cur = m.iova.last().get().saturating_add(1).min(iova.saturating_add(size)).max(cur);
        }
    }
    let gone = IovaRange::from_start_len(Iova(iova), cur - iova).map(|r| d.unmap(r)).unwrap_or_default();
    let _ = san.unmap_end(ticket, d, gone.iter().map(|m| m.len()).sum());
}

fn replay(text: &str) {
    let (mut page_lg2, mut semantics) = (12, Semantics::Exact);
    let mut san: Option<Sanitizer> = None;
    let mut doms: Vec<ShadowDomain> = [(12u32, false), (14, false), (16, false), (12, true)]
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
                unmap(s, &mut doms[d], iova, size, d == 3);
            }
            "free" => {
                drop(s.check_free(Pfn(num(w.next())), u32::try_from(num(w.next())).unwrap_or(u32::MAX), &All(&doms)))
            }
            "alloc" => {
                drop(s.check_alloc(Pfn(num(w.next())), u32::try_from(num(w.next())).unwrap_or(u32::MAX), &All(&doms)))
            }
            "page" | "semantics" => {}
            other => panic!("unknown op `{other}` in `{line}`"),
        }
    }
    let Some(s) = san else { return };
    for (i, d) in doms.iter_mut().enumerate() {
        let live: Vec<_> = d.iter().collect();
        for m in live {
            unmap(&s, d, m.iova.start().get(), m.len(), i == 3);
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
