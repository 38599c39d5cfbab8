//! Unit tests of [`super::event_from_fields`]: events built from decoded
//! binary fields (hand-built [`FieldLookup`]s laid out as the kernel's
//! format files of 6.12–7.x), for every event kind the replay uses, and
//! the consistency of every kind's description.

use super::*;
use crate::field::{FieldLookup, FieldValue, IntArray};
use crate::parse::collect::{FieldSpec, FieldType};
use crate::parse::kinds::kinds;

/// Fields by name, as a binary decoder would offer them.
struct Fields<'a>(Vec<(&'static str, FieldValue<'a>)>);

impl<'a> FieldLookup<'a> for Fields<'a> {
    fn field(&self, name: &str) -> Option<FieldValue<'a>> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

use FieldValue::{Signed as S, Str, Unsigned as U};

fn u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn arr(bytes: &[u8], elem_size: u8) -> FieldValue<'_> {
    FieldValue::Array(IntArray { bytes, elem_size, big_endian: false, signed: false })
}

fn build<'a>(system: &str, name: &str, f: &[(&'static str, FieldValue<'a>)]) -> Result<Option<Event<'a>>, FieldError> {
    event_from_fields(Some(system.as_bytes()), name.as_bytes(), &Fields(f.to_vec()))
}

fn ok<'a>(system: &str, name: &str, f: &[(&'static str, FieldValue<'a>)]) -> Event<'a> {
    match build(system, name, f) {
        Ok(Some(e)) => e,
        other => panic!("{system}:{name}: {other:?}"),
    }
}

fn err(system: &str, name: &str, f: &[(&'static str, FieldValue<'_>)]) -> FieldError {
    match build(system, name, f) {
        Err(e) => e,
        other => panic!("{system}:{name}: expected an error, got {other:?}"),
    }
}

#[test]
fn iommu() {
    let e = ok("iommu", "map", &[("iova", U(0xfffb_e000)), ("paddr", U(0x1_2358_9000)), ("size", U(4096))]);
    assert_eq!(e, Event::IommuMap(IommuMap { iova: 0xfffb_e000, paddr: 0x1_2358_9000, size: 4096 }));
    let e = ok("iommu", "unmap", &[("iova", U(0xfffb_e000)), ("size", U(8192)), ("unmapped_size", U(4096))]);
    assert_eq!(e, Event::IommuUnmap(IommuUnmap { iova: 0xfffb_e000, size: 8192, unmapped_size: 4096 }));
    let e = ok("iommu", "attach_device_to_domain", &[("device", Str(b"0000:00:02.0"))]);
    assert_eq!(e, Event::AttachDeviceToDomain { device: b"0000:00:02.0" });
    let e = ok("iommu", "add_device_to_group", &[("gid", S(6)), ("device", Str(b"0000:00:1f.2"))]);
    assert_eq!(e, Event::AddDeviceToGroup { group: 6, device: b"0000:00:1f.2" });
    let e = ok("iommu", "remove_device_from_group", &[("gid", S(6)), ("device", Str(b"0000:00:1f.2"))]);
    assert_eq!(e, Event::RemoveDeviceFromGroup { group: 6, device: b"0000:00:1f.2" });
    let e = ok(
        "iommu",
        "io_page_fault",
        &[("device", Str(b"0000:00:02.0")), ("driver", Str(b"nvme")), ("iova", U(0x1000)), ("flags", S(2))],
    );
    assert_eq!(e, Event::IoPageFault(IoPageFault { driver: b"nvme", device: b"0000:00:02.0", iova: 0x1000, flags: 2 }));
    // Missing and mistyped fields are errors that name the field.
    let e = err("iommu", "map", &[("iova", U(0)), ("size", U(1))]);
    assert_eq!((e.event, e.field, e.problem), ("map", "paddr", FieldProblem::Missing));
    let e = err("iommu", "attach_device_to_domain", &[("device", U(7))]);
    assert_eq!((e.field, e.problem), ("device", FieldProblem::WrongType));
    let e = err("iommu", "map", &[("iova", Str(b"x")), ("paddr", U(0)), ("size", U(1))]);
    assert_eq!((e.field, e.problem), ("iova", FieldProblem::Number(NumError::InvalidDigit)));
}

#[test]
fn dma_page_and_phys() {
    // 6.12 `dma_map_page`, 6.18 `dma_map_phys`: same fields; `dir` is the enum's number.
    let map = [
        ("device", Str(&b"0000:00:03.0"[..])),
        ("phys_addr", U(0x1_236b_00f8)),
        ("dma_addr", U(0xffff_b0f8)),
        ("size", U(16)),
        ("dir", U(1)),
        ("attrs", U(0x100)),
    ];
    let want = DmaMap {
        device: b"0000:00:03.0",
        dir: DmaDirection::ToDevice,
        dma_addr: 0xffff_b0f8,
        size: 16,
        phys_addr: 0x1_236b_00f8,
        attrs: b"",
    };
    assert_eq!(ok("dma", "dma_map_page", &map), Event::DmaMapPage(want));
    assert_eq!(ok("dma", "dma_map_phys", &map), Event::DmaMapPage(want));
    assert_eq!(ok("dma", "dma_map_resource", &map), Event::DmaMapResource(want));
    // `dma_unmap_page` holds the DMA address in `addr`.
    let unmap = [("device", Str(&b"0000:00:03.0"[..])), ("addr", U(0xffff_8d40)), ("size", U(48)), ("dir", U(2))];
    let want = DmaUnmap {
        device: b"0000:00:03.0",
        dir: DmaDirection::FromDevice,
        dma_addr: 0xffff_8d40,
        size: 48,
        attrs: b"",
    };
    assert_eq!(ok("dma", "dma_unmap_page", &unmap), Event::DmaUnmapPage(want));
    assert_eq!(ok("dma", "dma_unmap_phys", &unmap), Event::DmaUnmapPage(want));
    assert_eq!(ok("dma", "dma_unmap_resource", &unmap), Event::DmaUnmapResource(want));
    // Every direction, and one that is not.
    for (n, d) in [
        (0, DmaDirection::Bidirectional),
        (1, DmaDirection::ToDevice),
        (2, DmaDirection::FromDevice),
        (3, DmaDirection::None),
    ] {
        let mut f = unmap.to_vec();
        f[3] = ("dir", U(n));
        assert!(matches!(ok("dma", "dma_unmap_page", &f), Event::DmaUnmapPage(u) if u.dir == d));
    }
    let mut f = unmap.to_vec();
    f[3] = ("dir", U(4));
    assert_eq!(err("dma", "dma_unmap_page", &f).problem, FieldProblem::UnknownDirection);
    // A field a later kernel adds is ignored.
    let mut f = unmap.to_vec();
    f.push(("new_field", U(1)));
    assert!(matches!(ok("dma", "dma_unmap_page", &f), Event::DmaUnmapPage(_)));
}

#[test]
fn dma_map_sg_arrays() {
    let phys = u64s(&[0x1_0f57_2000, 0x1_0f56_6000]);
    let dma = u64s(&[0xfff8_0000]);
    let lengths = u32s(&[0x2000]);
    // 6.12.74+/7.0: capped arrays with full counts and a truncated flag.
    let f = [
        ("device", Str(&b"0000:00:02.0"[..])),
        ("full_nents", S(2)),
        ("full_ents", S(1)),
        ("truncated", U(0)),
        ("phys_addrs", arr(&phys, 8)),
        ("dma_addrs", arr(&dma, 8)),
        ("lengths", arr(&lengths, 4)),
        ("dir", U(2)),
        ("attrs", U(0)),
    ];
    let Event::DmaMapSg(sg) = ok("dma", "dma_map_sg", &f) else { panic!() };
    assert_eq!(sg.device, b"0000:00:02.0");
    assert_eq!(sg.dir, DmaDirection::FromDevice);
    assert_eq!(sg.phys_addrs, [0x1_0f57_2000, 0x1_0f56_6000]);
    assert_eq!(sg.dma_addrs, [0xfff8_0000]);
    assert_eq!(sg.sizes, [0x2000]);
    assert_eq!((sg.nents, sg.ents), (Counted { printed: 2, total: 2 }, Counted { printed: 1, total: 1 }));
    assert!(!sg.truncated);
    let mut t = f.to_vec();
    t[1] = ("full_nents", S(300));
    t[3] = ("truncated", U(1));
    let Event::DmaMapSg(sg) = ok("dma", "dma_map_sg", &t) else { panic!() };
    assert!(sg.truncated);
    assert_eq!(sg.nents, Counted { printed: 2, total: 300 });
    // The original 6.12 format: uncapped arrays, no totals, no flag.
    let old: Vec<_> = f.iter().copied().filter(|(n, _)| !n.starts_with("full_") && *n != "truncated").collect();
    let Event::DmaMapSg(sg) = ok("dma", "dma_map_sg", &old) else { panic!() };
    assert_eq!((sg.nents, sg.ents), (Counted { printed: 2, total: 2 }, Counted { printed: 1, total: 1 }));
    assert!(!sg.truncated);
    // A scalar where an array belongs is an error.
    let mut t = f.to_vec();
    t[6] = ("lengths", U(0x2000));
    assert_eq!(err("dma", "dma_map_sg", &t).problem, FieldProblem::WrongType);

    let e =
        ok("dma", "dma_unmap_sg", &[("device", Str(b"d")), ("addrs", arr(&phys, 8)), ("dir", U(2)), ("attrs", U(0))]);
    assert!(matches!(e, Event::DmaUnmapSg(u) if u.phys_addrs == [0x1_0f57_2000, 0x1_0f56_6000] && !u.truncated));
    let e = ok(
        "dma",
        "dma_map_sg_err",
        &[("device", Str(b"d")), ("phys_addrs", arr(&phys, 8)), ("err", S(-12)), ("dir", U(1))],
    );
    assert!(matches!(e, Event::DmaMapSgErr(s) if s.err == -12 && s.phys_addrs.len() == 2));
    let e = ok(
        "dma",
        "dma_sync_sg_for_cpu",
        &[("device", Str(b"d")), ("dma_addrs", arr(&dma, 8)), ("lengths", arr(&lengths, 4)), ("dir", U(2))],
    );
    assert!(matches!(e, Event::DmaSyncSgForCpu(s) if s.sizes == [0x2000]));
}

#[test]
fn dma_coherent_and_sgt() {
    let alloc = [
        ("device", Str(&b"0000:00:05.0"[..])),
        ("virt_addr", U(0xffff_8881_0000_0000)),
        ("dma_addr", U(0xffff_e000)),
        ("size", U(6726)),
        ("flags", U(0xcc0)),
        ("dir", U(0)),
        ("attrs", U(0)),
    ];
    for (name, f) in [("dma_alloc", 0), ("dma_alloc_pages", 1), ("dma_alloc_sgt_err", 2)] {
        let e = ok("dma", name, &alloc);
        let a = match (f, e) {
            (0, Event::DmaAlloc(a)) | (1, Event::DmaAllocPages(a)) | (2, Event::DmaAllocSgtErr(a)) => a,
            (_, e) => panic!("{name}: {e:?}"),
        };
        assert_eq!((a.dma_addr, a.size, a.dir), (0xffff_e000, 6726, DmaDirection::Bidirectional));
        // Printed-only values are empty from a binary source.
        assert!(a.virt_addr.is_empty() && a.flags.is_empty());
    }
    // Before 6.12.48 coherent buffers had no direction.
    let no_dir: Vec<_> = alloc.iter().copied().filter(|(n, _)| *n != "dir").collect();
    assert!(matches!(ok("dma", "dma_alloc", &no_dir), Event::DmaAlloc(a) if a.dir == DmaDirection::Bidirectional));
    let free = &alloc[..4].iter().chain(&alloc[5..]).copied().collect::<Vec<_>>();
    assert!(matches!(ok("dma", "dma_free", free), Event::DmaFree(f) if f.size == 6726));
    assert!(matches!(ok("dma", "dma_free_pages", free), Event::DmaFreePages(f) if f.dma_addr == 0xffff_e000));
    let phys = u64s(&[0x1000, 0x5000]);
    let sgt = [
        ("device", Str(&b"d"[..])),
        ("phys_addrs", arr(&phys, 8)),
        ("dma_addr", U(0xffff_0000)),
        ("size", U(8192)),
        ("dir", U(1)),
    ];
    assert!(matches!(ok("dma", "dma_alloc_sgt", &sgt), Event::DmaAllocSgt(s) if s.phys_addrs == [0x1000, 0x5000]));
    assert!(matches!(ok("dma", "dma_free_sgt", &sgt), Event::DmaFreeSgt(s) if s.size == 8192));
    let single = [("device", Str(&b"d"[..])), ("dma_addr", U(0xfffe_0000)), ("size", U(512)), ("dir", U(2))];
    assert!(
        matches!(ok("dma", "dma_sync_single_for_device", &single), Event::DmaSyncSingleForDevice(s) if s.size == 512)
    );
}

#[test]
fn kmem() {
    let e = ok(
        "kmem",
        "mm_page_alloc",
        &[("pfn", U(0x100ec2)), ("order", U(1)), ("gfp_flags", U(0xcc0)), ("migratetype", S(0))],
    );
    assert_eq!(
        e,
        Event::PageAlloc(PageAlloc {
            pfn: 0x100ec2,
            order: 1,
            page_is_null: false,
            migratetype: Some(0),
            gfp_flags: b""
        })
    );
    // A failed allocation records pfn -1.
    let e = ok("kmem", "mm_page_alloc", &[("pfn", U(u64::MAX)), ("order", U(0)), ("migratetype", S(0))]);
    assert!(matches!(e, Event::PageAlloc(a) if a.page_is_null && a.pfn == 0));
    let e = ok("kmem", "mm_page_free", &[("pfn", U(0x123589)), ("order", U(0))]);
    assert_eq!(e, Event::PageFree(PageBlock { pfn: 0x123589, order: 0 }));
    // `mm_page_free_batched` has no order.
    let e = ok("kmem", "mm_page_free_batched", &[("pfn", U(0x139c9c))]);
    assert_eq!(e, Event::PageFreeBatched(PageBlock { pfn: 0x139c9c, order: 0 }));
    assert_eq!(err("kmem", "mm_page_free", &[("pfn", U(1))]).field, "order");
    assert_eq!(err("kmem", "mm_page_free", &[("pfn", U(1)), ("order", U(64))]).problem, FieldProblem::OrderTooLarge);
}

#[test]
fn intel_iommu() {
    let tag = [
        ("iommu", Str(&b"dmar0"[..])),
        ("dev", Str(b"0000:00:02.0")),
        ("type", U(0)),
        ("domain_id", U(4)),
        ("pasid", U(0)),
        ("users", U(1)),
    ];
    let want = CacheTag { iommu: b"dmar0", dev: b"0000:00:02.0", tag_type: b"iotlb", did: 4, pasid: 0, refs: 1 };
    assert_eq!(ok("intel_iommu", "cache_tag_assign", &tag), Event::CacheTagAssign(want));
    assert_eq!(ok("intel_iommu", "cache_tag_unassign", &tag), Event::CacheTagUnassign(want));
    assert_eq!(ok("intel_iommu", "cache_tag_flush_all", &tag), Event::CacheTagFlushAll(want));
    let range = [
        ("iommu", Str(&b"dmar0"[..])),
        ("dev", Str(b"dmar0")),
        ("type", U(1)),
        ("domain_id", U(5)),
        ("pasid", U(0)),
        ("start", U(0xffff_8000)),
        ("end", U(0xffff_8fff)),
        ("addr", U(0xffff_8000)),
        ("pages", U(1)),
        ("mask", U(0)),
    ];
    let want = CacheTagFlushRange {
        iommu: b"dmar0",
        dev: b"dmar0",
        pasid: 0,
        tag_type: b"devtlb",
        did: 5,
        start: 0xffff_8000,
        last: 0xffff_8fff,
        addr: 0xffff_8000,
        pages: Some(1),
        mask: 0,
    };
    assert_eq!(ok("intel_iommu", "cache_tag_flush_range", &range), Event::CacheTagFlushRange(want));
    assert_eq!(ok("intel_iommu", "cache_tag_flush_range_np", &range), Event::CacheTagFlushRangeNp(want));
    // 7.x dropped `pages`.
    let no_pages: Vec<_> = range.iter().copied().filter(|(n, _)| *n != "pages").collect();
    assert!(
        matches!(ok("intel_iommu", "cache_tag_flush_range", &no_pages), Event::CacheTagFlushRange(f) if f.pages.is_none())
    );
    assert_eq!(ok("intel_iommu", "qi_submit", &[("qw0", U(1))]), Event::QiSubmit);
}

#[test]
fn messages() {
    assert_eq!(ok("printk", "console", &[("msg", Str(b"dmauaf: LEAK\n"))]), Event::Console { msg: b"dmauaf: LEAK" });
    assert_eq!(
        ok("ftrace", "print", &[("ip", U(0)), ("buf", Str(b"LAB: phase=setup_done\n"))]),
        Event::Marker { msg: b"LAB: phase=setup_done" }
    );
}

#[test]
fn kprobes_by_resolved_function() {
    let f = |func: &'static [u8], rest: &[(&'static str, FieldValue<'static>)]| {
        let mut v = vec![("__probe_ip", U(0xffff_ffff_8192_9360)), ("__probe_func", Str(func))];
        v.extend_from_slice(rest);
        v
    };
    let map = f(
        b"__iommu_map",
        &[
            ("domain", U(0xffff_8881_01f5_d8a0)),
            ("dtype", U(3)),
            ("iova", U(0)),
            ("paddr", U(0)),
            ("size", U(0x100_0000)),
            ("prot", S(3)),
        ],
    );
    // Any group and event name.
    let Event::ProbeMap(m) = ok("lab", "iommu_map", &map) else { panic!() };
    assert_eq!(m.probe.site, ProbeSite::Symbol { func: b"__iommu_map", offset: None, size: None });
    assert_eq!((m.probe.caller, m.probe.by_fields), (None, false));
    assert_eq!((m.domain, m.dtype, m.size, m.prot), (0xffff_8881_01f5_d8a0, Some(3), 0x100_0000, Some(3)));
    let unmap =
        f(b"__iommu_unmap", &[("domain", U(1)), ("dtype", U(3)), ("iova", U(0xffff_8000)), ("size", U(0x1000))]);
    assert!(matches!(ok("kprobes", "p_x", &unmap), Event::ProbeUnmap(u) if u.iova == 0xffff_8000 && u.size == 0x1000));
    let attach = f(b"__iommu_attach_device", &[("domain", U(2)), ("dtype", U(3)), ("dev", Str(b"0000:00:00.0"))]);
    assert!(
        matches!(ok("lab", "iommu_attach", &attach), Event::ProbeAttach(a) if a.dev == b"0000:00:00.0" && a.domain == 2)
    );
    let detach = f(b"iommu_detach_device", &[("domain", U(2)), ("dev", Str(b"0000:00:00.0"))]);
    assert!(matches!(ok("lab", "x", &detach), Event::ProbeDetach(_)));
    let free = f(b"iommu_domain_free", &[("domain", U(2)), ("dtype", U(1))]);
    assert!(matches!(ok("lab", "iommu_domain_free", &free), Event::ProbeDomainFree(d) if d.dtype == Some(1)));
    assert!(matches!(ok("lab", "fq_flush_timeout", &f(b"fq_flush_timeout", &[])), Event::ProbeFqFlushTimeout(_)));
    let iotlb = f(b"fq_flush_iotlb", &[("cookie", U(0xffff_8881_0193_c200))]);
    assert!(
        matches!(ok("lab", "fq_flush_iotlb", &iotlb), Event::ProbeFqFlushIotlb(c) if c.cookie == Some(0xffff_8881_0193_c200))
    );
    // Return probes: `__probe_func` resolved, the return address raw.
    let ret = |func: &'static [u8], field: (&'static str, FieldValue<'static>)| {
        vec![("__probe_func", Str(func)), ("__probe_ret_ip", U(0xffff_ffff_8192_9632)), field]
    };
    let Event::ProbeMapReturn(r) = ok("lab", "iommu_map_ret", &ret(b"__iommu_map", ("ret", S(-12)))) else { panic!() };
    assert_eq!(r.ret, -12);
    assert_eq!(r.probe.caller, Some(ProbeSite::Address(0xffff_ffff_8192_9632)));
    let e = ok("lab", "iommu_unmap_ret", &ret(b"__iommu_unmap", ("unmapped", U(4096))));
    assert!(matches!(e, Event::ProbeUnmapReturn(r) if r.unmapped == 4096));
    // Unknown functions are skipped; a known one with a missing field is an error.
    assert_eq!(build("lab", "x", &f(b"some_other_fn", &[("domain", U(1))])), Ok(None));
    let e = err("lab", "iommu_unmap", &f(b"__iommu_unmap", &[("domain", U(1)), ("iova", U(0))]));
    assert_eq!((e.event, e.field, e.problem), ("kprobe __iommu_unmap", "size", FieldProblem::Missing));
}

#[test]
fn kprobes_by_fields_when_unresolved() {
    let map = [
        ("__probe_ip", U(0xffff_ffff_8192_9360)),
        ("domain", U(1)),
        ("dtype", U(3)),
        ("iova", U(0)),
        ("paddr", U(0)),
        ("size", U(0x1000)),
        ("prot", S(3)),
    ];
    let Event::ProbeMap(m) = ok("lab", "iommu_map", &map) else { panic!() };
    assert!(m.probe.by_fields);
    assert_eq!(m.probe.site, ProbeSite::Address(0xffff_ffff_8192_9360));
    // A kretprobe's `__probe_func` is the function's address when unresolved.
    let ret = [
        ("__probe_func", U(0xffff_ffff_8192_90d0)),
        ("__probe_ret_ip", U(0xffff_ffff_8192_deba)),
        ("unmapped", U(4096)),
    ];
    let Event::ProbeUnmapReturn(r) = ok("lab", "iommu_unmap_ret", &ret) else { panic!() };
    assert!(r.probe.by_fields && r.unmapped == 4096);
    assert_eq!(r.probe.site, ProbeSite::Address(0xffff_ffff_8192_90d0));
    // No fields: cannot tell.
    assert_eq!(build("lab", "fq_flush_timeout", &[("__probe_ip", U(1))]), Ok(None));
}

#[test]
fn system_and_name_must_match() {
    assert_eq!(build("kmem", "map", &[("iova", U(0)), ("paddr", U(0)), ("size", U(1))]), Ok(None));
    assert_eq!(build("sched", "sched_switch", &[("prev_pid", S(1))]), Ok(None));
    // Without a system, the name alone decides.
    let e = event_from_fields(None, b"map", &Fields(vec![("iova", U(0)), ("paddr", U(0)), ("size", U(1))]));
    assert!(matches!(e, Ok(Some(Event::IommuMap(_)))));
}

/// A plausible binary value for a field of type `ty`.
fn sample(ty: FieldType) -> FieldValue<'static> {
    const ONE_U64: &[u8] = &[0, 0x10, 0, 0, 0, 0, 0, 0];
    match ty {
        FieldType::Hex | FieldType::Auto | FieldType::Dec | FieldType::Signed => U(1),
        FieldType::Order | FieldType::Dir | FieldType::Flag | FieldType::Symbol(_) => U(0),
        FieldType::Str | FieldType::Printed => Str(b"x"),
        FieldType::Array(_) => arr(ONE_U64, 8),
        FieldType::Counted => Str(b"1/1"),
    }
}

/// Every described kind builds from a full set of binary fields; without
/// a required field it fails naming that field, without an optional one
/// it still builds. Text-only fields (`printed/total` counts, the printed
/// `iova end`) are left to the text tests.
#[test]
fn every_kind_is_consistent() {
    for k in kinds() {
        let text_only = |f: &FieldSpec| f.ty == FieldType::Counted || f.name.contains(' ');
        let full: Vec<(&'static str, FieldValue<'static>)> =
            k.fields.iter().filter(|f| !text_only(f)).map(|f| (f.name, sample(f.ty))).collect();
        for name in k.names {
            let built = event_from_fields(Some(k.system.as_bytes()), name.as_bytes(), &Fields(full.clone()));
            assert!(matches!(built, Ok(Some(_))), "{}:{name}: {built:?}", k.system);
            for f in k.fields.iter().filter(|f| !text_only(f)) {
                let without: Vec<_> = full.iter().copied().filter(|(n, _)| *n != f.name).collect();
                let r = event_from_fields(Some(k.system.as_bytes()), name.as_bytes(), &Fields(without));
                if f.required {
                    assert!(
                        matches!(&r, Err(e) if e.field == f.name && e.problem == FieldProblem::Missing),
                        "{name} without {}: {r:?}",
                        f.name
                    );
                } else {
                    assert!(matches!(r, Ok(Some(_))), "{name} without {}: {r:?}", f.name);
                }
            }
        }
        assert!(k.fields.len() <= crate::parse::collect::MAX_FIELDS, "{:?}", k.names);
    }
    // Every text name resolves to its kind.
    for k in kinds() {
        for name in k.names {
            assert!(crate::parse::kinds::spec(Some(k.system.as_bytes()), name.as_bytes())
                .is_some_and(|(s, _)| std::ptr::eq(s, *k)));
        }
    }
}
