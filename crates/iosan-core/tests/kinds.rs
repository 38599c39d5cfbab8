//! Every finding kind the engine produces, once produced and once not.

use iosan_core::{
    Config, DomainId, FindingKind, InvalidArgs, Iova, IovaRange, MapMeta, PageSize, Pfn, PhysAddr, PhysRange,
    Sanitizer, Semantics, ShadowDomain,
};

const D: DomainId = DomainId(7);

fn setup() -> (Sanitizer, ShadowDomain) {
    (Sanitizer::default(), ShadowDomain::new(D, 0x1000))
}

fn map(san: &Sanitizer, d: &mut ShadowDomain, iova: u64, phys: u64, len: u64) -> Vec<FindingKind> {
    d.map(Iova(iova), PhysAddr(phys), len, MapMeta { when: 1, tag: 2 });
    san.map(D, d, Iova(iova), PhysAddr(phys), len).into_iter().map(|f| f.kind).collect()
}

fn unmap(san: &Sanitizer, d: &mut ShadowDomain, iova: u64, len: u64) -> Vec<FindingKind> {
    let (t, mut f) = san.unmap_begin(D, d, Iova(iova), len);
    let gone: u64 =
        IovaRange::from_start_len(Iova(iova), len).map(|r| d.unmap(r).iter().map(|m| m.len()).sum()).unwrap_or(0);
    f.extend(san.unmap_end(t, d, gone));
    f.into_iter().map(|f| f.kind).collect()
}

#[test]
fn freed_and_allocated_while_mapped() {
    let (san, mut d) = setup();
    assert!(map(&san, &mut d, 0x10000, 0x200000, 0x2000).is_empty());
    let f = san.check_free(Pfn(0x200), 1, &d);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].kind, f[0].pfn, f[0].npages, f[0].count), (FindingKind::FreedWhileMapped, Some(Pfn(0x200)), 2, 1));
    assert_eq!(f[0].mappings.len(), 1);
    assert_eq!((f[0].mappings[0].iova, f[0].mappings[0].meta.when, f[0].mappings[0].meta.tag), (Iova(0x10000), 1, 2));
    let f = san.check_alloc(Pfn(0x201), 0, &d);
    assert_eq!(f[0].kind, FindingKind::AllocatedWhileMapped);
    // Correct use: unmap, then free and allocate: nothing.
    assert!(unmap(&san, &mut d, 0x10000, 0x2000).is_empty());
    assert!(san.check_free(Pfn(0x200), 1, &d).is_empty());
    assert!(san.check_alloc(Pfn(0x200), 1, &d).is_empty());
}

#[test]
fn double_unmap_and_partly_unmapped() {
    let (san, mut d) = setup();
    map(&san, &mut d, 0x10000, 0x200000, 0x2000);
    assert_eq!(unmap(&san, &mut d, 0x10000, 0x3000), vec![FindingKind::UnmapOverlapsUnmapped]);
    assert_eq!(unmap(&san, &mut d, 0x10000, 0x2000), vec![FindingKind::DoubleUnmap]);
    map(&san, &mut d, 0x10000, 0x200000, 0x2000);
    assert!(unmap(&san, &mut d, 0x10000, 0x2000).is_empty());
}

#[test]
fn underflow_when_the_host_skipped_a_map() {
    let (san, mut d) = setup();
    // Mapped in the domain, never told to the sanitizer.
    d.map(Iova(0x10000), PhysAddr(0x300000), 0x1000, MapMeta::default());
    assert_eq!(unmap(&san, &mut d, 0x10000, 0x1000), vec![FindingKind::RefcountUnderflow]);
    // Told: no underflow.
    assert!(map(&san, &mut d, 0x10000, 0x300000, 0x1000).is_empty());
    assert!(unmap(&san, &mut d, 0x10000, 0x1000).is_empty());
}

#[test]
fn overflow_saturates_and_reports() {
    let (san, mut d) = setup();
    assert!(san.store().add(0x400, 0x400, u32::MAX - 1).is_empty());
    assert!(map(&san, &mut d, 0x10000, 0x400000, 0x1000).is_empty());
    assert_eq!(map(&san, &mut d, 0x20000, 0x400000, 0x1000), vec![FindingKind::RefcountOverflow]);
    assert_eq!(san.count(Pfn(0x400)), i64::from(u32::MAX));
}

#[test]
fn invalid_arguments() {
    let (san, d) = setup();
    let inv = |iova: u64, phys: u64, size: u64| {
        let f = san.map(D, &d, Iova(iova), PhysAddr(phys), size);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, FindingKind::InvalidMapArgs);
        f[0].invalid.unwrap()
    };
    assert_eq!(inv(0x1000, 0x1000, 0), InvalidArgs::ZeroSize);
    assert_eq!(inv(u64::MAX - 0xfff, 0x1000, 0x2000), InvalidArgs::IovaOverflow);
    assert_eq!(inv(0x1000, u64::MAX - 0xfff, 0x2000), InvalidArgs::PhysOverflow);
    assert_eq!(inv(0x1800, 0x1000, 0x1000), InvalidArgs::Misaligned);
    let (t, f) = san.unmap_begin(D, &d, Iova(0x1000), 0);
    assert_eq!(f[0].invalid, Some(InvalidArgs::ZeroSize));
    assert!(san.unmap_end(t, &d, 0).is_empty());
    let f = san.check_free(Pfn(0), 40, &d);
    assert_eq!(f[0].invalid, Some(InvalidArgs::OrderTooLarge));
    // Physical address 0: exact counts it, upstream refuses it like the kernel.
    let (san, mut d) = setup();
    assert!(map(&san, &mut d, 0x10000, 0, 0x1000).is_empty());
    assert_eq!(san.count(Pfn(0)), 1);
    let up = Sanitizer::new(Config { semantics: Semantics::Upstream, ..Config::default() });
    let f = up.map(D, &d, Iova(0x10000), PhysAddr(0), 0x1000);
    assert_eq!(f[0].invalid, Some(InvalidArgs::PhysZero));
    assert_eq!(up.count(Pfn(0)), 0);
}

#[test]
fn leak_at_teardown() {
    let (san, mut d) = setup();
    map(&san, &mut d, 0x10000, 0x200000, 0x3000);
    let f = san.domain_destroyed(D, &d);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].kind, f[0].iova, f[0].size, f[0].pfn),
        (FindingKind::LeakAtTeardown, Some(Iova(0x10000)), 0x3000, Some(Pfn(0x200)))
    );
    d.clear();
    assert_eq!(san.count(Pfn(0x200)), 0, "teardown stops counting");
    // A domain emptied first: nothing.
    let (san, mut d) = setup();
    map(&san, &mut d, 0x10000, 0x200000, 0x3000);
    unmap(&san, &mut d, 0x10000, 0x3000);
    assert!(san.domain_destroyed(D, &d).is_empty());
}

#[test]
fn identity_window_is_exposure_not_findings() {
    let (san, mut d) = setup();
    // Boot: an identity map before any allocation, like x86's 16 MiB ISA window.
    assert_eq!(map(&san, &mut d, 0, 0, 16 << 20), vec![FindingKind::IdentityWindow]);
    assert!(san.check_free(Pfn(0x10), 0, &d).is_empty());
    assert_eq!(san.stats().identity_pages_freed, 1);
    // A second, real mapping of a page inside the window is still a finding.
    let mut other = ShadowDomain::new(DomainId(8), 0x1000);
    other.map(Iova(0xfff0_0000), PhysAddr(0x20000), 0x1000, MapMeta::default());
    assert!(san.map(DomainId(8), &other, Iova(0xfff0_0000), PhysAddr(0x20000), 0x1000).is_empty());
    assert_eq!(san.check_free(Pfn(0x20), 0, &other).len(), 1);
    // An identity map made after allocations started is an ordinary mapping.
    let (san, mut d) = setup();
    assert!(san.check_alloc(Pfn(0x999), 0, &d).is_empty());
    assert!(map(&san, &mut d, 0x100000, 0x100000, 0x1000).is_empty());
    assert_eq!(san.check_free(Pfn(0x100), 0, &d).len(), 1);
}

#[test]
fn upstream_warns_once_when_more_is_unmapped() {
    let san = Sanitizer::new(Config { semantics: Semantics::Upstream, ..Config::default() });
    let mut d = ShadowDomain::with_block_leaves(D, 0x1000);
    d.map(Iova(0x200000), PhysAddr(0x600000), 0x200000, MapMeta::default());
    let _ = san.map(D, &d, Iova(0x200000), PhysAddr(0x600000), 0x200000);
    let (t, _) = san.unmap_begin(D, &d, Iova(0x200000), 0x1000);
    d.clear();
    let f = san.unmap_end(t, &d, 0x200000);
    assert_eq!(f[0].kind, FindingKind::UnmappedMoreThanRequested);
    // Same-size unmaps never warn.
    let san = Sanitizer::new(Config { semantics: Semantics::Upstream, ..Config::default() });
    let mut d = ShadowDomain::new(D, 0x1000);
    d.map(Iova(0x200000), PhysAddr(0x600000), 0x2000, MapMeta::default());
    let _ = san.map(D, &d, Iova(0x200000), PhysAddr(0x600000), 0x2000);
    let (t, _) = san.unmap_begin(D, &d, Iova(0x200000), 0x2000);
    d.clear();
    assert!(san.unmap_end(t, &d, 0x2000).is_empty());
}

#[test]
fn every_kind_has_a_stable_name() {
    for k in FindingKind::ALL {
        assert_eq!(FindingKind::from_name(k.name()), Some(k));
    }
    assert!(FindingKind::FreedWhileMapped.is_bug());
    assert!(!FindingKind::MappedAtEnd.is_bug());
}

#[test]
fn hostile_arguments_are_bounded() {
    let (san, mut d) = setup();
    // A map covering 4 TiB of mostly non-RAM, beyond 2^52: bounded counters.
    let huge = 4u64 << 40;
    let f = map(&san, &mut d, 0x1_0000_0000_0000, (1 << 52) - (1 << 30), huge);
    assert!(f.is_empty(), "{f:?}");
    assert!(san.stats().untracked_bytes >= huge - (1 << 30));
    assert!(san.stats().counter_bytes < 1 << 20, "{}", san.stats().counter_bytes);
    // Sizes near 2^64 and addresses at the top.
    let f = san.map(D, &d, Iova(0x2000), PhysAddr(0x1000), u64::MAX - 0xfff);
    assert_eq!(f[0].kind, FindingKind::InvalidMapArgs);
    let (_, f) = san.unmap_begin(D, &d, Iova(u64::MAX - 0xfff), 0x1000);
    assert_eq!(f[0].kind, FindingKind::DoubleUnmap);
    // Upstream's per-granule loop is refused past its bound, not run for 2^40 steps.
    let up = Sanitizer::new(Config { semantics: Semantics::Upstream, ..Config::default() });
    let f = up.map(D, &d, Iova(0), PhysAddr(0x1000), 1 << 60);
    assert_eq!(f[0].kind, FindingKind::InvalidMapArgs);
    let (_, f) = up.unmap_begin(D, &d, Iova(0), 1 << 60);
    assert_eq!(f[0].kind, FindingKind::InvalidMapArgs);
    // Frees of any pfn, including beyond RAM.
    assert!(san.check_free(Pfn(u64::MAX), 10, &d).is_empty());
    assert!(san.check_free(Pfn(1 << 50), 0, &d).is_empty());
    // A store with no RAM at all counts nothing.
    let none = Sanitizer::new(Config { ram: vec![], page_size: PageSize::SIZE_16K, ..Config::default() });
    assert!(none.map(D, &d, Iova(0x20000), PhysAddr(0x10000), 0x4000).is_empty());
    assert_eq!(none.count(Pfn(4)), 0);
    let _ = PhysRange::from_start_len(PhysAddr(0), 1);
}

#[test]
fn unmap_inside_a_superpage_that_goes_whole() {
    // A VT-d/AMD-style IOMMU asked to unmap 4 KiB in the middle of a 2 MiB
    // superpage removes the whole superpage and returns its size.
    let san = Sanitizer::default();
    let mut d = ShadowDomain::with_block_leaves(D, 0x1000 | 0x20_0000);
    d.map(Iova(0x20_0000), PhysAddr(0x80_0000), 0x20_0000, MapMeta::default());
    assert!(san.map(D, &d, Iova(0x20_0000), PhysAddr(0x80_0000), 0x20_0000).is_empty());
    let (t, f) = san.unmap_begin(D, &d, Iova(0x20_5000), 0x1000);
    assert!(f.is_empty());
    d.clear();
    assert!(san.unmap_end(t, &d, 0x20_0000).is_empty());
    for p in 0x800..0xa00 {
        assert_eq!(san.count(Pfn(p)), 0, "pfn {p:#x}");
    }
    assert!(san.check_free(Pfn(0x800), 9, &d).is_empty());
}

#[test]
fn single_pages_unmapped_out_of_a_block_counted_mapping() {
    // A 2 MiB map is one block counter; 4 KiB unmaps of it take the
    // one-page path and must borrow from that block, page by page.
    let (san, mut d) = setup();
    assert!(map(&san, &mut d, 0x20_0000, 0x80_0000, 0x20_0000).is_empty());
    assert!(unmap(&san, &mut d, 0x20_3000, 0x1000).is_empty());
    assert_eq!(san.count(Pfn(0x803)), 0);
    assert_eq!(san.count(Pfn(0x802)), 1);
    assert_eq!(san.count(Pfn(0x804)), 1);
    // The same page mapped again on its own, then unmapped: back to 0.
    assert!(map(&san, &mut d, 0x20_3000, 0x80_3000, 0x1000).is_empty());
    assert_eq!(san.count(Pfn(0x803)), 1);
    for p in 0x800..0xa00 {
        assert!(unmap(&san, &mut d, 0x20_0000 + ((p - 0x800) << 12), 0x1000).is_empty(), "pfn {p:#x}");
        assert_eq!(san.count(Pfn(p)), 0, "pfn {p:#x}");
    }
    assert!(san.check_free(Pfn(0x800), 9, &d).is_empty());
    assert_eq!(unmap(&san, &mut d, 0x20_0000, 0x1000), vec![FindingKind::DoubleUnmap]);
}

#[test]
fn single_pages_outside_ram_are_tallied_not_counted() {
    let ram = vec![PhysRange::from_start_len(PhysAddr(0x10_0000), 0x10_0000).unwrap()];
    let san = Sanitizer::new(Config { ram, ..Config::default() });
    let mut d = ShadowDomain::new(D, 0x1000);
    assert!(map(&san, &mut d, 0x1000, 0x5000, 0x1000).is_empty());
    assert!(map(&san, &mut d, 0x2000, 0x10_5000, 0x1000).is_empty());
    assert_eq!(san.stats().untracked_bytes, 0x1000);
    assert_eq!((san.count(Pfn(0x5)), san.count(Pfn(0x105))), (0, 1));
    assert!(unmap(&san, &mut d, 0x1000, 0x1000).is_empty());
    assert!(unmap(&san, &mut d, 0x2000, 0x1000).is_empty());
    assert_eq!(san.count(Pfn(0x105)), 0);
}
