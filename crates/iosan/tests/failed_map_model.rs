//! A failed map, made by the kernel model: a map over a range whose upper
//! half is mapped already fails with EEXIST after mapping the lower half,
//! which the kernel then unmaps again. The capture it writes must give no
//! finding for the pages of the failed map when they are freed, one
//! informational `map-failed`, and the model's own sanitizer must agree.

use iosan_core::{FindingKind, Iova, PhysAddr};
use iosan_model::kernel::DomainType;
use iosan_model::pgtable::PgtableCfg;
use iosan_model::{Kernel, KernelConfig, TraceCtx};
use iosan_trace::{analyze, AnalyzeOptions};

#[test]
fn a_model_map_that_fails_half_way_leaves_nothing_mapped() {
    // With the domain kprobes: without them, maps in the anonymous space and
    // unmaps that the model's VT-d flush events attribute by domain id do not
    // meet (a separate attribution limit, the same for a successful map).
    {
        let kprobes = true;
        let mut text = Vec::new();
        let model_findings = {
            let cfg = KernelConfig { kprobes, ..KernelConfig::default() };
            let mut k = Kernel::new(cfg, Some(&mut text)).expect("model");
            k.set_ctx(TraceCtx::task("insmod", 150, 0));
            let dom = k.domain_alloc(PgtableCfg::arm_lpae(1, 12, 48, 48), DomainType::Dma).expect("domain");
            let pfn = k.alloc_pages(2, "GFP_KERNEL").expect("pages");
            let phys = pfn.get() << 12;
            let iova = 0x1000_0000u64;
            // The upper half first, then the whole: EEXIST after 8 KiB.
            k.iommu_map(dom, Iova(iova + 0x2000), PhysAddr(phys + 0x2000), 0x2000, 3).expect("upper half");
            assert!(k.iommu_map(dom, Iova(iova), PhysAddr(phys), 0x4000, 3).is_err(), "the overlapping map fails");
            assert_eq!(k.iova_to_phys(dom, Iova(iova)), None, "the failed map's part was unmapped again");
            assert_eq!(k.iommu_unmap(dom, Iova(iova + 0x2000), 0x2000), 0x2000);
            k.free_pages(pfn, 2).expect("free");
            k.finish_trace().expect("trace");
            k.take_findings()
        };
        assert!(model_findings.iter().all(|f| !f.kind.is_bug()), "kprobes={kprobes}: model {model_findings:#?}");
        let r = analyze(&text[..], "model", &AnalyzeOptions::default(), &mut ()).expect("the model's trace");
        let bugs: Vec<_> = r.findings.iter().filter(|f| f.kind.is_bug()).collect();
        assert!(bugs.is_empty(), "kprobes={kprobes}: {bugs:#?}");
        let failed = r.findings.iter().filter(|f| f.kind == FindingKind::MapFailed).count();
        assert_eq!(failed, 1, "kprobes={kprobes}: {:#?}", r.findings);
        let f = r.findings.iter().find(|f| f.kind == FindingKind::MapFailed).expect("informational");
        let note = f.note.as_deref().unwrap_or_default();
        assert!(note.contains("error -17") && note.contains("unmapped the 8192 bytes"), "{note}");
    }
}

#[test]
fn a_model_dma_map_out_of_iova_space_is_one_map_failed() {
    use iosan_model::trace::DmaDir;
    let mut text = Vec::new();
    {
        let cfg = KernelConfig { kprobes: false, ..KernelConfig::default() };
        let mut k = Kernel::new(cfg, Some(&mut text)).expect("model");
        k.set_ctx(TraceCtx::task("insmod", 150, 0));
        // A 16 KiB DMA mask: a few 4 KiB maps use up the IOVA space.
        let dev = k.add_device("0000:00:02.0", PgtableCfg::vtd(48), 0x3fff).expect("device");
        let mut mapped = Vec::new();
        let mut failed = false;
        for _ in 0..8 {
            let pfn = k.alloc_pages(0, "GFP_KERNEL").expect("page");
            match k.dma_map_page(dev, PhysAddr(pfn.get() << 12), 4096, DmaDir::ToDevice) {
                Ok(dma) => mapped.push((dma, pfn)),
                Err(_) => {
                    // Nothing of it is mapped: its page may go.
                    k.free_pages(pfn, 0).expect("free");
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed && !mapped.is_empty(), "the IOVA space ran out after {} maps", mapped.len());
        for (dma, pfn) in mapped {
            k.dma_unmap_page(dev, dma, 4096, DmaDir::ToDevice).expect("unmap");
            k.free_pages(pfn, 0).expect("free");
        }
        k.finish_trace().expect("trace");
        assert!(k.take_findings().iter().all(|f| !f.kind.is_bug()));
    }
    let r = analyze(&text[..], "model", &AnalyzeOptions::default(), &mut ()).expect("the model's trace");
    let bugs: Vec<_> = r.findings.iter().filter(|f| f.kind.is_bug()).collect();
    assert!(bugs.is_empty(), "{bugs:#?}");
    let failed: Vec<_> = r.findings.iter().filter(|f| f.kind == FindingKind::MapFailed).collect();
    assert_eq!(failed.len(), 1, "{:#?}", r.findings);
    assert!(failed[0].note.as_deref().unwrap_or_default().contains("DMA_MAPPING_ERROR"), "{:?}", failed[0].note);
    assert_eq!(failed[0].device.as_deref(), Some("0000:00:02.0"));
}

#[test]
fn a_model_dma_map_sg_out_of_iova_space_is_one_map_failed_in_text_and_trace_dat() {
    use iosan_model::trace::DmaDir;
    for tracedat in [false, true] {
        let mut out = Vec::new();
        {
            let cfg = KernelConfig { kprobes: false, tracedat, ..KernelConfig::default() };
            let mut k = Kernel::new(cfg, Some(&mut out)).expect("model");
            k.set_ctx(TraceCtx::task("insmod", 150, 0));
            let dev = k.add_device("0000:00:02.0", PgtableCfg::vtd(48), 0x3fff).expect("device");
            // One 8 KiB list fits, the second does not.
            let pfn = k.alloc_pages(2, "GFP_KERNEL").expect("pages");
            let seg = |i: u64| (PhysAddr((pfn.get() + i) << 12), 4096);
            let first = k.dma_map_sg(dev, &[seg(0), seg(1)], DmaDir::ToDevice).expect("fits");
            let mut failed = false;
            for _ in 0..4 {
                if k.dma_map_sg(dev, &[seg(2), seg(3)], DmaDir::ToDevice).is_err() {
                    failed = true;
                    break;
                }
            }
            assert!(failed, "the IOVA space ran out");
            k.dma_unmap_sg(dev, first, &[seg(0), seg(1)], DmaDir::ToDevice).expect("unmap");
            k.finish_trace().expect("trace");
        }
        let r = if tracedat {
            let mut c = iosan_trace::open_reader(std::io::Cursor::new(out), "model", 0).expect("a trace.dat");
            iosan_trace::analyze::analyze_source(&mut *c.source, "model", &AnalyzeOptions::default(), &mut ())
                .expect("the model's trace.dat")
        } else {
            analyze(&out[..], "model", &AnalyzeOptions::default(), &mut ()).expect("the model's trace")
        };
        let failed: Vec<_> = r.findings.iter().filter(|f| f.kind == FindingKind::MapFailed).collect();
        assert!(!failed.is_empty(), "tracedat {tracedat}: {:#?}", r.findings);
        assert!(
            failed
                .iter()
                .all(|f| f.note.as_deref().is_some_and(|n| n.contains("dma_map_sg") && n.contains("error -12"))),
            "tracedat {tracedat}: {failed:#?}"
        );
        assert!(r.findings.iter().all(|f| !f.kind.is_bug()), "tracedat {tracedat}: {:#?}", r.findings);
    }
}
