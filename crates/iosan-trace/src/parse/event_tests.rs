//! Unit tests of [`super::parse_event`] on real bodies from the captures and
//! on variants and hostile bodies.

use super::super::text::{fast_flush_range, fast_iommu_map};
use super::*;

fn ok<'a>(name: &str, body: &'a [u8]) -> Event<'a> {
    match parse_event(name.as_bytes(), body) {
        Ok(Some(e)) => e,
        other => panic!("{name}: {other:?} for {}", body.escape_ascii()),
    }
}

fn err(name: &str, body: &[u8]) -> FieldError {
    match parse_event(name.as_bytes(), body) {
        Err(e) => e,
        other => panic!("{name}: expected an error, got {other:?} for {}", body.escape_ascii()),
    }
}

#[test]
fn iommu_map_unmap() {
    let e = ok("map", b"IOMMU: iova=0x00000000fff20000 - 0x00000000fff40000 paddr=0x000000011de4f000 size=131072");
    assert_eq!(e, Event::IommuMap(IommuMap { iova: 0xfff2_0000, paddr: 0x1_1de4_f000, size: 131_072 }));
    let e = ok("unmap", b"IOMMU: iova=0x00000000ffff8000 - 0x00000000ffff9000 size=4096 unmapped_size=4096");
    assert_eq!(e, Event::IommuUnmap(IommuUnmap { iova: 0xffff_8000, size: 4096, unmapped_size: 4096 }));
    // The redundant end is checked.
    let e = err("map", b"IOMMU: iova=0x1000 - 0x3000 paddr=0x0 size=4096");
    assert_eq!((e.field, e.problem), ("iova end", FieldProblem::Inconsistent));
    // ... but may be absent, and field order does not matter.
    let e = ok("map", b"IOMMU: size=4096 paddr=0x2000 iova=0x1000");
    assert_eq!(e, Event::IommuMap(IommuMap { iova: 0x1000, paddr: 0x2000, size: 4096 }));
    // Sizes near 2^64 parse; the end wraps like the kernel's u64 sum.
    let e = ok("map", b"IOMMU: iova=0xfffffffffffff000 - 0x0000000000000000 paddr=0x0 size=4096");
    assert!(matches!(e, Event::IommuMap(m) if m.size == 4096));
    let e = ok("unmap", b"IOMMU: iova=0x0 size=18446744073709551615 unmapped_size=0");
    assert!(matches!(e, Event::IommuUnmap(u) if u.size == u64::MAX));
    let e = err("unmap", b"IOMMU: iova=0x0 size=18446744073709551616 unmapped_size=0");
    assert_eq!((e.field, e.problem), ("size", FieldProblem::Number(NumError::Overflow)));
}

#[test]
fn iommu_device_events() {
    assert_eq!(
        ok("add_device_to_group", b"IOMMU: groupID=6 device=0000:00:1f.2"),
        Event::AddDeviceToGroup { group: 6, device: b"0000:00:1f.2" }
    );
    assert_eq!(
        ok("remove_device_from_group", b"IOMMU: groupID=6 device=0000:00:1f.2"),
        Event::RemoveDeviceFromGroup { group: 6, device: b"0000:00:1f.2" }
    );
    assert_eq!(
        ok("attach_device_to_domain", b"IOMMU: device=0000:00:02.0"),
        Event::AttachDeviceToDomain { device: b"0000:00:02.0" }
    );
    assert_eq!(
        ok("detach_device_from_domain", b"IOMMU: device=0000:00:02.0"),
        Event::DetachDeviceFromDomain { device: b"0000:00:02.0" }
    );
    assert_eq!(
        ok("io_page_fault", b"IOMMU:nvme 0000:00:02.0 iova=0x00000000fffbe000 flags=0x0002"),
        Event::IoPageFault(IoPageFault { driver: b"nvme", device: b"0000:00:02.0", iova: 0xfffb_e000, flags: 2 })
    );
    assert_eq!(err("add_device_to_group", b"IOMMU: device=x").field, "groupID");
    assert_eq!(err("attach_device_to_domain", b"IOMMU:").problem, FieldProblem::Missing);
}

#[test]
fn dma_map_unmap_page_and_phys() {
    let body = b"0000:00:03.0 dir=TO_DEVICE dma_addr=ffffb0f8 size=16 phys_addr=1236b00f8 attrs=";
    let want = DmaMap {
        device: b"0000:00:03.0",
        dir: DmaDirection::ToDevice,
        dma_addr: 0xffff_b0f8,
        size: 16,
        phys_addr: 0x1_236b_00f8,
        attrs: b"",
    };
    assert_eq!(ok("dma_map_page", body), Event::DmaMapPage(want));
    assert_eq!(ok("dma_map_phys", body), Event::DmaMapPage(want));
    assert_eq!(ok("dma_map_resource", body), Event::DmaMapResource(want));
    let body = b"0000:00:03.0 dir=TO_DEVICE dma_addr=ffff8d40 size=48 attrs=";
    let want =
        DmaUnmap { device: b"0000:00:03.0", dir: DmaDirection::ToDevice, dma_addr: 0xffff_8d40, size: 48, attrs: b"" };
    assert_eq!(ok("dma_unmap_page", body), Event::DmaUnmapPage(want));
    assert_eq!(ok("dma_unmap_phys", body), Event::DmaUnmapPage(want));
    assert_eq!(ok("dma_unmap_resource", body), Event::DmaUnmapResource(want));
    let e = err("dma_map_page", b"0000:00:03.0 dir=SIDEWAYS dma_addr=1 size=1 phys_addr=1");
    assert_eq!((e.field, e.problem), ("dir", FieldProblem::UnknownDirection));
    let e = err("dma_map_page", b"0000:00:03.0 dir=TO_DEVICE dma_addr=1 size=1");
    assert_eq!((e.event, e.field, e.problem), ("dma_map_page", "phys_addr", FieldProblem::Missing));
    let e = err("dma_unmap_page", b"0000:00:03.0 dir=TO_DEVICE dma_addr=10000000000000000 size=1");
    assert_eq!(e.problem, FieldProblem::Number(NumError::Overflow));
    assert!(e.to_string().contains("event `dma_unmap_page`: field `dma_addr`: number out of range"), "{e}");
}

#[test]
fn dma_map_sg_text_and_truncated() {
    let e = ok(
        "dma_map_sg",
        b"0000:00:02.0 dir=FROM_DEVICE nents=3/3 ents=1/1 dma_addrs={0xfff80000} sizes={0x20000} phys_addrs={0x10f572000,0x10f566000,0x10f569000} attrs=NO_WARN",
    );
    let Event::DmaMapSg(sg) = e else { panic!() };
    assert_eq!(sg.device, b"0000:00:02.0");
    assert_eq!(sg.dir, DmaDirection::FromDevice);
    assert_eq!(sg.nents, Counted { printed: 3, total: 3 });
    assert_eq!(sg.ents, Counted { printed: 1, total: 1 });
    assert!(!sg.truncated);
    assert_eq!(sg.dma_addrs, vec![0xfff8_0000]);
    assert_eq!(sg.sizes, vec![0x20000]);
    assert_eq!(sg.phys_addrs, vec![0x1_0f57_2000, 0x1_0f56_6000, 0x1_0f56_9000]);
    assert_eq!(sg.attrs, b"NO_WARN");

    let e = ok(
        "dma_map_sg",
        b"0000:00:02.0 dir=BIDIRECTIONAL nents=2/300 ents=2/200 [TRUNCATED] dma_addrs={0x1000,0x2000} sizes={0x1000,0x1000} phys_addrs={0x5000,0x6000} attrs=",
    );
    let Event::DmaMapSg(sg) = e else { panic!() };
    assert!(sg.truncated);
    assert_eq!((sg.nents.total, sg.ents.total), (300, 200));

    let e = ok("dma_unmap_sg", b"0000:00:02.0 dir=FROM_DEVICE phys_addrs={0x123045000,0x123046000} attrs=");
    assert_eq!(
        e,
        Event::DmaUnmapSg(DmaUnmapSg {
            device: b"0000:00:02.0",
            dir: DmaDirection::FromDevice,
            phys_addrs: vec![0x1_2304_5000, 0x1_2304_6000],
            truncated: false,
            attrs: b""
        })
    );
    // The original 6.12 format printed no counts: every entry is listed.
    let e = ok("dma_map_sg", b"dev dir=TO_DEVICE dma_addrs={0x1000} sizes={0x1000} phys_addrs={0x5000,0x6000} attrs=");
    assert!(matches!(e, Event::DmaMapSg(sg) if sg.nents == Counted { printed: 2, total: 2 } && sg.ents.total == 1));
    let e = ok("dma_unmap_sg", b"0000:00:02.0 dir=FROM_DEVICE phys_addrs={} attrs=");
    assert!(matches!(e, Event::DmaUnmapSg(sg) if sg.phys_addrs.is_empty()));
}

#[test]
fn dma_map_sg_libtraceevent_raw_dump() {
    let e = ok(
        "dma_map_sg",
        b"[FAILED TO PARSE] device=0000:00:02.0 full_nents=2 full_ents=1 truncated=0 phys_addrs=ARRAY[00, 20, 57, 0f, 01, 00, 00, 00, 00, 60, 56, 0f, 01, 00, 00, 00] dma_addrs=ARRAY[00, 00, f8, ff, 00, 00, 00, 00] lengths=ARRAY[00, 20, 00, 00] dir=2 attrs=0x100",
    );
    let Event::DmaMapSg(sg) = e else { panic!() };
    assert_eq!(sg.device, b"0000:00:02.0");
    assert_eq!(sg.dir, DmaDirection::FromDevice);
    assert_eq!(sg.phys_addrs, vec![0x1_0f57_2000, 0x1_0f56_6000]);
    assert_eq!(sg.dma_addrs, vec![0xfff8_0000]);
    assert_eq!(sg.sizes, vec![0x2000]);
    assert_eq!(sg.nents, Counted { printed: 2, total: 2 });
    assert_eq!(sg.ents, Counted { printed: 1, total: 1 });
    assert_eq!(sg.attrs, b"0x100");
    let e = ok(
        "dma_unmap_sg",
        b"[FAILED TO PARSE] device=0000:00:02.0 addrs=ARRAY[00, 20, 57, 0f, 01, 00, 00, 00] dir=2 attrs=0x0",
    );
    assert!(matches!(e, Event::DmaUnmapSg(sg) if sg.phys_addrs == [0x1_0f57_2000]));
    // 7 bytes do not make a u64.
    let e = err("dma_unmap_sg", b"[FAILED TO PARSE] device=x addrs=ARRAY[00, 20, 57, 0f, 01, 00, 00] dir=2 attrs=0x0");
    assert_eq!(e.problem, FieldProblem::BadArray);
    let e = err("dma_unmap_sg", b"[FAILED TO PARSE] device=x addrs=ARRAY[100] dir=2");
    assert_eq!(e.problem, FieldProblem::Number(NumError::Overflow));
}

#[test]
fn dma_other_events() {
    let e = ok(
        "dma_alloc",
        b"0000:00:05.0 dir=BIDIRECTIONAL dma_addr=ffffe000 size=6726 virt_addr=000000007d693afd flags=GFP_KERNEL|__GFP_NOWARN|__GFP_ZERO attrs=NO_WARN",
    );
    assert_eq!(
        e,
        Event::DmaAlloc(DmaAlloc {
            device: b"0000:00:05.0",
            dir: DmaDirection::Bidirectional,
            dma_addr: 0xffff_e000,
            size: 6726,
            virt_addr: b"000000007d693afd",
            flags: b"GFP_KERNEL|__GFP_NOWARN|__GFP_ZERO",
            attrs: b"NO_WARN"
        })
    );
    let free = b"0000:00:02.0 dir=BIDIRECTIONAL dma_addr=ffefc000 size=16384 virt_addr=00000000db2a9717 attrs=";
    let want = DmaFree {
        device: b"0000:00:02.0",
        dir: DmaDirection::Bidirectional,
        dma_addr: 0xffef_c000,
        size: 16384,
        virt_addr: b"00000000db2a9717",
        attrs: b"",
    };
    assert_eq!(ok("dma_free", free), Event::DmaFree(want));
    assert_eq!(ok("dma_free_pages", free), Event::DmaFreePages(want));
    assert!(matches!(
        ok("dma_alloc_pages", b"dev dir=NONE dma_addr=1000 size=4096 virt_addr=0 flags=none attrs="),
        Event::DmaAllocPages(a) if a.dir == DmaDirection::None && a.flags == b"none"
    ));
    assert!(matches!(
        ok("dma_alloc_sgt_err", b"dev dir=TO_DEVICE dma_addr=0 size=4096 virt_addr=0 flags=GFP_KERNEL attrs="),
        Event::DmaAllocSgtErr(_)
    ));
    let e = ok(
        "dma_alloc_sgt",
        b"dev dir=TO_DEVICE dma_addr=ffff0000 size=8192 phys_addrs={0x1000,0x5000} flags=GFP_KERNEL attrs=",
    );
    assert!(matches!(e, Event::DmaAllocSgt(s) if s.phys_addrs == [0x1000, 0x5000] && s.size == 8192));
    let e = ok("dma_free_sgt", b"dev dir=TO_DEVICE dma_addr=ffff0000 size=8192 phys_addrs={0x1000,0x5000}");
    assert!(matches!(e, Event::DmaFreeSgt(s) if s.flags.is_empty() && s.dma_addr == 0xffff_0000));
    let e = ok("dma_map_sg_err", b"dev dir=FROM_DEVICE dma_addrs={0x1000} err=-12 attrs=");
    assert!(matches!(e, Event::DmaMapSgErr(s) if s.err == -12 && s.phys_addrs == [0x1000]));
    let single = b"dev dir=FROM_DEVICE dma_addr=fffe0000 size=512";
    assert!(matches!(ok("dma_sync_single_for_cpu", single), Event::DmaSyncSingleForCpu(s) if s.size == 512));
    assert!(
        matches!(ok("dma_sync_single_for_device", single), Event::DmaSyncSingleForDevice(s) if s.dma_addr == 0xfffe_0000)
    );
    let sg = b"dev dir=FROM_DEVICE dma_addrs={0x1000,0x3000} sizes={0x200,0x400}";
    assert!(matches!(ok("dma_sync_sg_for_cpu", sg), Event::DmaSyncSgForCpu(s) if s.sizes == [0x200, 0x400]));
    assert!(
        matches!(ok("dma_sync_sg_for_device", sg), Event::DmaSyncSgForDevice(s) if s.dma_addrs == [0x1000, 0x3000])
    );
}

#[test]
fn kmem() {
    let e = ok(
        "mm_page_alloc",
        b"page=0000000010270b55 pfn=0x100ec2 order=1 migratetype=0 gfp_flags=GFP_KERNEL_ACCOUNT|__GFP_ZERO",
    );
    assert_eq!(
        e,
        Event::PageAlloc(PageAlloc {
            pfn: 0x100ec2,
            order: 1,
            page_is_null: false,
            migratetype: Some(0),
            gfp_flags: b"GFP_KERNEL_ACCOUNT|__GFP_ZERO"
        })
    );
    // failed allocation
    let e = ok("mm_page_alloc", b"page=0000000000000000 pfn=0x0 order=0 migratetype=0 gfp_flags=GFP_ATOMIC");
    assert!(matches!(e, Event::PageAlloc(a) if a.page_is_null && a.pfn == 0));
    let e = ok("mm_page_alloc", b"page=(null) pfn=0 order=0 migratetype=0 gfp_flags=GFP_ATOMIC");
    assert!(matches!(e, Event::PageAlloc(a) if a.page_is_null));
    // trace-cmd's bogus page pointer is not NULL
    let e = ok("mm_page_alloc", b"page=0xffffffff826d645a pfn=0x100ec2 order=1 migratetype=0 gfp_flags=GFP_KERNEL");
    assert!(matches!(e, Event::PageAlloc(a) if !a.page_is_null));
    assert!(matches!(
        ok("mm_page_alloc_zone_locked", b"page=00000000a pfn=0x10 order=3 migratetype=1 percpu_refill=1"),
        Event::PageAllocZoneLocked(a) if a.order == 3 && a.gfp_flags.is_empty()
    ));

    let free = b"page=0000000065c2d467 pfn=0x100ec8 order=1";
    assert_eq!(ok("mm_page_free", free), Event::PageFree(PageBlock { pfn: 0x100ec8, order: 1 }));
    // older kernels print the pfn in decimal
    assert_eq!(
        ok("mm_page_free", b"page=0000000065c2d467 pfn=1052360 order=9"),
        Event::PageFree(PageBlock { pfn: 1_052_360, order: 9 })
    );
    assert_eq!(
        ok("mm_page_free_batched", b"page=0000000053a3aecf pfn=0x139c9c order=0"),
        Event::PageFreeBatched(PageBlock { pfn: 0x139c9c, order: 0 })
    );
    assert_eq!(
        ok("mm_page_free_batched", b"page=0000000053a3aecf pfn=1287324"),
        Event::PageFreeBatched(PageBlock { pfn: 1_287_324, order: 0 })
    );
    assert_eq!(
        ok("mm_page_pcpu_drain", b"page=00000000a pfn=0x10 order=0 migratetype=1"),
        Event::PagePcpuDrain(PageBlock { pfn: 0x10, order: 0 })
    );
    assert_eq!(err("mm_page_free", b"page=0 pfn=0x10 order=64").problem, FieldProblem::OrderTooLarge);
    assert_eq!(err("mm_page_free", b"page=0 pfn=0x10 order=-1").field, "order");
    assert_eq!(err("mm_page_free", b"page=0 pfn= order=0").problem, FieldProblem::Number(NumError::Empty));
    assert_eq!(err("mm_page_free", b"page=0 order=0").field, "pfn");
    assert_eq!(
        err("mm_page_free", b"pfn=0x12345678901234567 order=0").problem,
        FieldProblem::Number(NumError::Overflow)
    );
}

#[test]
fn intel_iommu() {
    assert_eq!(
        ok("cache_tag_assign", b"dmar0/dmar0 type iotlb did 4 pasid 0 ref 1"),
        Event::CacheTagAssign(CacheTag {
            iommu: b"dmar0",
            dev: b"dmar0",
            tag_type: b"iotlb",
            did: 4,
            pasid: 0,
            refs: 1
        })
    );
    assert!(matches!(
        ok("cache_tag_unassign", b"dmar0/0000:00:02.0 type devtlb did 9 pasid 1 ref 0"),
        Event::CacheTagUnassign(t) if t.dev == b"0000:00:02.0" && t.did == 9 && t.pasid == 1
    ));
    assert!(matches!(
        ok("cache_tag_flush_all", b"dmar0/dmar0 type 0x0 did 5 pasid 0 ref 1"),
        Event::CacheTagFlushAll(t) if t.tag_type == b"0x0" && t.did == 5
    ));
    let body = b"dmar0 dmar0[0] type iotlb did 5 [0xffff8000-0xffff8fff] addr 0xffff8000 pages 0x1 mask 0x0";
    let want = CacheTagFlushRange {
        iommu: b"dmar0",
        dev: b"dmar0",
        pasid: 0,
        tag_type: b"iotlb",
        did: 5,
        start: 0xffff_8000,
        last: 0xffff_8fff,
        addr: 0xffff_8000,
        pages: Some(1),
        mask: 0,
    };
    assert_eq!(ok("cache_tag_flush_range", body), Event::CacheTagFlushRange(want));
    let e = ok(
        "cache_tag_flush_range_np",
        b"dmar0 dmar0[0] type iotlb did 7 [0xffffe000-0xffffffff] addr 0xffffe000 pages 0x2 mask 0x1",
    );
    assert!(
        matches!(e, Event::CacheTagFlushRangeNp(f) if f.did == 7 && f.last == 0xffff_ffff && f.pages == Some(2) && f.mask == 1)
    );
    assert_eq!(ok("qi_submit", b"iotlb_inv dmar0: 0x500f2 0xffff8040 0x0 0x0"), Event::QiSubmit);
    assert_eq!(ok("prq_report", b"dmar0/0000:00:02.0 seq# 1: whatever"), Event::PrqReport);
    let e = err("cache_tag_flush_range", b"dmar0 dmar0[0] type iotlb did 5 [0xffff8000] addr 0x0 pages 0x1 mask 0x0");
    assert_eq!(e.problem, FieldProblem::BadRange);
    assert_eq!(err("cache_tag_assign", b"dmar0/dmar0 type iotlb did").field, "did");
    assert_eq!(err("cache_tag_assign", b"").problem, FieldProblem::Missing);
}

#[test]
fn kprobes_by_function() {
    let e = ok(
        "iommu_map",
        b"(__iommu_map+0x0/0x280) domain=0xffff888101f5d8a0 dtype=3 iova=0x0 paddr=0x0 size=0x1000000 prot=3",
    );
    let Event::ProbeMap(m) = e else { panic!("{e:?}") };
    assert_eq!(m.probe.site, ProbeSite::Symbol { func: b"__iommu_map", offset: Some(0), size: Some(0x280) });
    assert_eq!((m.probe.caller, m.probe.by_fields), (None, false));
    assert_eq!(
        (m.domain, m.dtype, m.iova, m.paddr, m.size, m.prot),
        (0xffff_8881_01f5_d8a0, Some(3), 0, 0, 0x100_0000, Some(3))
    );
    // the group/event name does not matter; aliases and decimal are accepted
    let e = ok("whatever", b"(__iommu_map+0x0/0x280) dom=5 iova=4096 phys=8192 len=4096");
    assert!(matches!(e, Event::ProbeMap(m) if m.domain == 5 && m.paddr == 8192 && m.size == 4096 && m.prot.is_none()));

    let e =
        ok("iommu_unmap", b"(__iommu_unmap+0x0/0x1d0) domain=0xffff888101f5c0a0 dtype=3 iova=0xffff8000 size=0x1000");
    assert!(
        matches!(e, Event::ProbeUnmap(u) if u.iova == 0xffff_8000 && u.size == 0x1000 && u.domain == 0xffff_8881_01f5_c0a0)
    );

    let e =
        ok("iommu_attach", b"(__iommu_attach_device+0x0/0x90) domain=0xffff888101f5a2a0 dtype=3 dev=\"0000:00:00.0\"");
    assert!(matches!(e, Event::ProbeAttach(a) if a.dev == b"0000:00:00.0" && a.domain == 0xffff_8881_01f5_a2a0));
    let e = ok("x", b"(iommu_detach_device+0x0/0x90) domain=0x1 device=\"0000:00:02.0\"");
    assert!(matches!(e, Event::ProbeDetach(a) if a.dev == b"0000:00:02.0"));
    let e = ok("x", b"(__iommu_group_set_domain+0x0/0x90) domain=0x1 dev=\"0000:00:02.0\"");
    assert!(matches!(e, Event::ProbeAttach(_)));
    // a set_domain probe without dev is not recognised
    assert_eq!(parse_event(b"x", b"(__iommu_group_set_domain+0x0/0x90) domain=0x1"), Ok(None));

    let e = ok("iommu_domain_free", b"(iommu_domain_free+0x4/0x50) domain=0xffff888100eb34a0 dtype=1");
    assert!(matches!(e, Event::ProbeDomainFree(d) if d.domain == 0xffff_8881_00eb_34a0 && d.dtype == Some(1)));
    let e = ok("fq_flush_timeout", b"(fq_flush_timeout+0x4/0xd0)");
    assert!(matches!(e, Event::ProbeFqFlushTimeout(p) if p.site.function() == Some(&b"fq_flush_timeout"[..])));
    let e = ok("fq_flush_iotlb", b"(fq_flush_iotlb+0x0/0x40) cookie=0xffff88810193c200");
    assert!(matches!(e, Event::ProbeFqFlushIotlb(f) if f.cookie == Some(0xffff_8881_0193_c200)));

    let e = ok("iommu_map_ret", b"(iommu_map+0x42/0xd0 <- __iommu_map) ret=0");
    let Event::ProbeMapReturn(r) = e else { panic!() };
    assert_eq!(r.ret, 0);
    assert_eq!(r.probe.site.function(), Some(&b"__iommu_map"[..]));
    assert_eq!(r.probe.caller, Some(ProbeSite::Symbol { func: b"iommu_map", offset: Some(0x42), size: Some(0xd0) }));
    let e = ok("iommu_map_ret", b"(iommu_map_sg+0xc2/0x1c0 <- __iommu_map) ret=-12");
    assert!(matches!(e, Event::ProbeMapReturn(r) if r.ret == -12));
    let e = ok("iommu_unmap_ret", b"(__iommu_dma_unmap+0xba/0x2d0 <- __iommu_unmap) unmapped=4096");
    let Event::ProbeUnmapReturn(r) = e else { panic!() };
    assert_eq!(r.unmapped, 4096);
    assert_eq!(r.probe.caller.and_then(|c| c.function()), Some(&b"__iommu_dma_unmap"[..]));

    // unknown probed functions are skipped, not errors
    assert_eq!(parse_event(b"iommu_map", b"(some_other_fn+0x0/0x10) domain=0x1"), Ok(None));
    assert_eq!(parse_event(b"r", b"(caller+0x1/0x2 <- other_fn) ret=0"), Ok(None));
    // a known function with a malformed field is an error
    let e = err("iommu_map", b"(__iommu_map+0x0/0x280) domain=0x1 iova= paddr=0x0 size=0x1000");
    assert_eq!((e.event, e.field), ("kprobe __iommu_map", "iova"));
    let e = err("iommu_unmap", b"(__iommu_unmap+0x0/0x1d0) domain=0x1 iova=0x1000");
    assert_eq!((e.field, e.problem), ("size", FieldProblem::Missing));
}

#[test]
fn kprobes_by_fields_in_trace_cmd_report() {
    let e = ok(
        "iommu_map",
        b"(ffffffff81929360) domain=0xffff888101f5d8a0 dtype=3 iova=0x0 paddr=0x0 size=0x1000000 prot=3",
    );
    let Event::ProbeMap(m) = e else { panic!() };
    assert!(m.probe.by_fields);
    assert_eq!(m.probe.site, ProbeSite::Address(0xffff_ffff_8192_9360));
    let e = ok("iommu_unmap", b"(ffffffff819290d0) domain=0xffff888101f5c0a0 dtype=3 iova=0xffff8000 size=0x1000");
    assert!(matches!(e, Event::ProbeUnmap(u) if u.probe.by_fields));
    let e = ok("iommu_attach", b"(ffffffff819287b0) domain=0xffff888101f5a2a0 dtype=3 dev=\"0000:00:00.0\"");
    assert!(matches!(e, Event::ProbeAttach(a) if a.probe.by_fields));
    let e = ok("iommu_domain_free", b"(ffffffff819282f4) domain=0xffff888100eb34a0 dtype=1");
    assert!(matches!(e, Event::ProbeDomainFree(d) if d.probe.by_fields));
    let e = ok("fq_flush_iotlb", b"(ffffffff81930000) cookie=0xffff88810193c200");
    assert!(matches!(e, Event::ProbeFqFlushIotlb(f) if f.probe.by_fields));
    // libtraceevent prints (func <- ret_ip)
    let e = ok("iommu_map_ret", b"(ffffffff81929360 <- ffffffff81929632) ret=0");
    let Event::ProbeMapReturn(r) = e else { panic!() };
    assert_eq!(r.probe.site, ProbeSite::Address(0xffff_ffff_8192_9360));
    assert_eq!(r.probe.caller, Some(ProbeSite::Address(0xffff_ffff_8192_9632)));
    assert!(r.probe.by_fields);
    let e = ok("iommu_unmap_ret", b"(ffffffff819290d0 <- ffffffff8192deba) unmapped=4096");
    assert!(matches!(e, Event::ProbeUnmapReturn(r) if r.unmapped == 4096 && r.probe.by_fields));
    // no fields: cannot tell
    assert_eq!(parse_event(b"fq_flush_timeout", b"(ffffffff81930000)"), Ok(None));
}

#[test]
fn text_events() {
    assert_eq!(
        ok("console", b"dmauaf: LEAK case=B1 dev=0000:00:02.0 pfn=0x123589 ..."),
        Event::Console { msg: b"dmauaf: LEAK case=B1 dev=0000:00:02.0 pfn=0x123589 ..." }
    );
    // a console message that looks like a probe stays a console message
    assert_eq!(
        ok("console", b"(__iommu_map+0x0/0x1) domain=1"),
        Event::Console { msg: b"(__iommu_map+0x0/0x1) domain=1" }
    );
    assert_eq!(
        ok("tracing_mark_write", b"LAB: phase=setup_done mode=bug"),
        Event::Marker { msg: b"LAB: phase=setup_done mode=bug" }
    );
    assert_eq!(
        ok("print", b"tracing_mark_write: LAB: phase=setup_done mode=bug"),
        Event::Marker { msg: b"LAB: phase=setup_done mode=bug" }
    );
    assert_eq!(ok("console", b""), Event::Console { msg: b"" });
}

#[test]
fn unknown_events() {
    assert_eq!(parse_event(b"sched_switch", b"prev_comm=a prev_pid=1"), Ok(None));
    assert_eq!(parse_event(b"", b""), Ok(None));
    assert_eq!(parse_event(b"x", b"(no closing paren"), Ok(None));
}

#[test]
fn hostile_bodies_are_errors_not_panics() {
    for name in [
        "map",
        "unmap",
        "add_device_to_group",
        "io_page_fault",
        "dma_map_page",
        "dma_unmap_page",
        "dma_map_sg",
        "dma_unmap_sg",
        "dma_map_sg_err",
        "dma_alloc",
        "dma_free",
        "dma_alloc_sgt",
        "dma_free_sgt",
        "dma_sync_single_for_cpu",
        "dma_sync_sg_for_device",
        "mm_page_alloc",
        "mm_page_free",
        "mm_page_pcpu_drain",
        "cache_tag_assign",
        "cache_tag_flush_range",
    ] {
        assert!(parse_event(name.as_bytes(), b"").is_err(), "{name} empty");
        assert!(parse_event(name.as_bytes(), b"IOMMU: iova=").is_err(), "{name} truncated");
    }
    let e = err("map", b"IOMMU: iova=0x00000000000000000fff20000 paddr=0x0 size=1");
    assert_eq!((e.field, e.problem), ("iova", FieldProblem::Number(NumError::Overflow)));
    assert_eq!(e.value, b"0x00000000000000000fff20000");
    let e = err("map", b"IOMMU: iova=0x123456789abcdef01 paddr=0x0 size=1");
    assert_eq!(e.problem, FieldProblem::Number(NumError::Overflow));
    // 100k-element arrays are refused
    let mut body = b"dev dir=TO_DEVICE phys_addrs={".to_vec();
    for i in 0..100_000u32 {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"0x1000");
    }
    body.extend_from_slice(b"} attrs=");
    let e = err("dma_unmap_sg", &body);
    assert_eq!(e.problem, FieldProblem::TooManyElements);
    assert!(e.value.len() <= 48);
    let e = err("dma_unmap_sg", b"dev dir=TO_DEVICE phys_addrs={0x1000,0x2000");
    assert_eq!(e.problem, FieldProblem::BadArray);
    let e = err("dma_unmap_sg", b"dev dir=TO_DEVICE phys_addrs={0x1000,,0x2000}");
    assert_eq!(e.problem, FieldProblem::Number(NumError::Empty));
    let e = err("dma_map_sg", b"dev dir=TO_DEVICE nents=1 ents=1/1 dma_addrs={} sizes={} phys_addrs={}");
    assert_eq!(e.field, "nents");
    // non-UTF-8 and NUL bytes in values
    let e = err("mm_page_free", b"pfn=0x1\xff\0 order=0");
    assert_eq!(e.problem, FieldProblem::Number(NumError::InvalidDigit));
    assert!(e.to_string().contains("\\xff\\x00"), "{e}");
}

/// Bodies in the kernel's layout take the fast paths; the same fields in
/// another order (or with extra blanks) take the by-name parser. Both must
/// agree.
#[test]
fn fast_paths_agree_with_by_name_parser() {
    fn shuffled(body: &[u8]) -> Vec<u8> {
        // reverse the words, doubling the blanks: no fast path accepts that
        let words: Vec<&[u8]> = body.split(|&b| b == b' ').collect();
        words.into_iter().rev().collect::<Vec<_>>().join(&b"  "[..])
    }
    let cases: &[(&str, &[u8], bool)] = &[
        ("map", b"IOMMU: iova=0x0000ffffffffb000 - 0x0000ffffffffc000 paddr=0x0000000000108000 size=4096", false),
        ("unmap", b"IOMMU: iova=0x00000000ffff8000 - 0x00000000ffff9000 size=4096 unmapped_size=4096", false),
        ("dma_map_page", b"0000:00:04.0 dir=FROM_DEVICE dma_addr=ffffffffb000 size=4096 phys_addr=108000 attrs=", true),
        ("dma_unmap_page", b"0000:00:03.0 dir=TO_DEVICE dma_addr=ffff8d40 size=48 attrs=", true),
        (
            "mm_page_alloc",
            b"page=0000000010270b55 pfn=0x100ec2 order=1 migratetype=0 gfp_flags=GFP_KERNEL_ACCOUNT|__GFP_ZERO",
            true,
        ),
        ("mm_page_free", b"page=0000000065c2d467 pfn=0x123589 order=0", true),
        ("mm_page_free_batched", b"page=0000000053a3aecf pfn=0x139c9c order=0", true),
        (
            "iommu_map",
            b"(__iommu_map+0x0/0x280) domain=0xffff888101f506a0 dtype=3 iova=0xffffffffc000 paddr=0x101000 size=0x4000 prot=3",
            false,
        ),
        ("iommu_unmap_ret", b"(__iommu_dma_unmap+0xba/0x2d0 <- __iommu_unmap) unmapped=4096", false),
        ("iommu_map_ret", b"(iommu_map+0x42/0xd0 <- __iommu_map) ret=0", false),
        ("iommu_unmap", b"(__iommu_unmap+0x0/0x1d0) domain=0xffff888101f5c0a0 dtype=3 iova=0xffff8000 size=0x1000", false),
        (
            "cache_tag_flush_range",
            b"dmar0 dmar0[0] type iotlb did 2 [0xffffffffb000-0xffffffffbfff] addr 0xffffffffb000 pages 0x1 mask 0x0",
            false,
        ),
    ];
    for &(name, body, reorderable) in cases {
        let fast = ok(name, body);
        if reorderable {
            // The device word of dma events must stay first.
            let (first, rest) = match name.starts_with("dma_") {
                true => body.split_at(body.iter().position(|&b| b == b' ').unwrap()),
                false => (&b""[..], body),
            };
            let mut other = first.to_vec();
            if !first.is_empty() {
                other.extend_from_slice(b"  ");
            }
            other.extend_from_slice(&shuffled(rest.strip_prefix(b" ").unwrap_or(rest)));
            assert_eq!(ok(name, &other), fast, "{name}: {}", other.escape_ascii());
        }
        // A tab instead of the first space defeats every fast path.
        let mut tabbed = body.to_vec();
        let sp = tabbed.iter().rposition(|&b| b == b' ').unwrap();
        tabbed[sp] = b'\t';
        assert_eq!(ok(name, &tabbed), fast, "{name}");
    }
    assert!(fast_iommu_map(b"IOMMU: iova=0x0000ffffffffb000 - 0x0000ffffffffc000 paddr=0x0 size=4096").is_some());
    assert!(fast_flush_range(
        b"dmar0 dmar0[0] type iotlb did 2 [0xffffffffb000-0xffffffffbfff] addr 0xffffffffb000 pages 0x1 mask 0x0"
    )
    .is_some());
    // a tag type named like a key is left to the word-pair reader
    assert!(fast_flush_range(b"dmar0 dmar0[0] type did did 2 [0x0-0xfff] addr 0x0 pages 0x1 mask 0x0").is_none());
    assert_eq!(
        parse_event(b"cache_tag_flush_range", b"dmar0 dmar0[0] type did did 2 [0x0-0xfff] addr 0x0 pages 0x1 mask 0x0")
            .unwrap_err()
            .field,
        "did"
    );
}
