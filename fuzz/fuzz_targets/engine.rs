//! iosan-core's `Sanitizer` + `ShadowDomain` under arbitrary
//! map / unmap (partial, block, double) / free / alloc sequences over four
//! domains with different granules, against the plain reference of
//! `iosan_testkit` (a BTreeMap of mappings per domain and counts derived
//! from it), in both semantics: `iosan_testkit::engine::Harness`, the check
//! of `crates/iosan-core/tests/props.rs`, driven by a fuzzer.
//! Any disagreement, or a bug-kind finding on correct use, panics.
#![no_main]

use arbitrary::Arbitrary;
use iosan_core::Semantics;
use iosan_testkit::engine::{
    Harness, Op, DOMAINS, IOVA_SLOTS, MAX_MAP_GRANULES, MAX_ORDER, MAX_UNMAP_GRANULES, PAGE_SLOTS, PHYS_SLOTS,
};
use libfuzzer_sys::fuzz_target;

/// An operation as the fuzzer's bytes give it, folded into the bounds of
/// `engine::Op` (the encoding of the existing corpus).
#[derive(Arbitrary, Debug)]
enum RawOp {
    Map { d: u8, iova_slot: u8, phys_slot: u8, n: u8 },
    Unmap { d: u8, iova_slot: u8, n: u8 },
    Free { page: u16, order: u8 },
    Alloc { page: u16, order: u8 },
}

impl RawOp {
    fn op(&self) -> Op {
        let d = |d: u8| usize::from(d) % DOMAINS.len();
        let order = |o: u8| u32::from(o) % (MAX_ORDER + 1);
        match *self {
            RawOp::Map { d: dd, iova_slot, phys_slot, n } => Op::Map {
                d: d(dd),
                iova_slot: u64::from(iova_slot) % IOVA_SLOTS,
                phys_slot: u64::from(phys_slot) % PHYS_SLOTS,
                n: u64::from(n) % MAX_MAP_GRANULES + 1,
            },
            RawOp::Unmap { d: dd, iova_slot, n } => Op::Unmap {
                d: d(dd),
                iova_slot: u64::from(iova_slot) % IOVA_SLOTS,
                n: u64::from(n) % MAX_UNMAP_GRANULES + 1,
            },
            RawOp::Free { page, order: o } => Op::Free { page: u64::from(page) % PAGE_SLOTS, order: order(o) },
            RawOp::Alloc { page, order: o } => Op::Alloc { page: u64::from(page) % PAGE_SLOTS, order: order(o) },
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Case {
    page: u8,
    upstream: bool,
    ops: Vec<RawOp>,
}

fuzz_target!(|case: Case| {
    let page_lg2 = [12u32, 14, 16][usize::from(case.page % 3)];
    let semantics = if case.upstream { Semantics::Upstream } else { Semantics::Exact };
    let mut h = Harness::new(page_lg2, semantics);
    for (step, raw) in case.ops.iter().take(256).enumerate() {
        if let Err(e) = h.step(step, &raw.op()) {
            panic!("{e}");
        }
    }
    if let Err(e) = h.check_counts() {
        panic!("{e}");
    }
});
