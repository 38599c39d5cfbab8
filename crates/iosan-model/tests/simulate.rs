//! Every injected bug produces exactly its expected findings, at the
//! injected page, domain and IOVA; every clean workload produces none.

use iosan_core::{FindingKind, PageSize};
use iosan_model::workload::bug_info;
use iosan_model::{list, simulate, IommuKind, SimSpec};

fn kinds(r: &iosan_model::SimReport) -> Vec<FindingKind> {
    let mut k: Vec<FindingKind> = r.bugs().map(|f| f.kind).collect();
    k.sort();
    k.dedup();
    k
}

#[test]
fn clean_workloads_have_no_findings() {
    for (kind, name, _) in list() {
        if kind != "workload" {
            continue;
        }
        // Granule == CPU page: with a 64 KiB granule on 4 KiB pages, a
        // 4 KiB dma_map_page exposes its 15 neighbours (see `sub_granule`).
        for (iommu, page) in [
            (IommuKind::Vtd, PageSize::SIZE_4K),
            (IommuKind::Arm4k, PageSize::SIZE_4K),
            (IommuKind::Arm16k, PageSize::SIZE_16K),
            (IommuKind::Arm64k, PageSize::SIZE_64K),
        ] {
            for strict in [true, false] {
                let spec = SimSpec {
                    workload: name.into(),
                    iterations: 120,
                    iommu,
                    strict,
                    page_size: page,
                    ..SimSpec::default()
                };
                let r = simulate(&spec, None).unwrap();
                assert!(r.bugs().next().is_none(), "{name} {iommu:?} strict={strict}: {:#?}", r.findings);
                assert!(r.stats.iommu_maps > 0);
            }
        }
    }
}

#[test]
fn every_bug_reports_exactly_its_finding() {
    for (kind, name, _) in list() {
        if kind != "bug" {
            continue;
        }
        let (_, expected) = bug_info(name).unwrap();
        for seed in [1, 2, 3] {
            let spec = SimSpec { bug: Some(name.into()), seed, iterations: 100, ..SimSpec::default() };
            let r = simulate(&spec, None).unwrap();
            let mut want = expected.to_vec();
            want.sort();
            assert_eq!(kinds(&r), want, "{name} seed {seed}: {:#?}", r.findings);
            let inj = r.injected.clone().expect("bug injected");
            for f in r.bugs() {
                match f.kind {
                    FindingKind::FreedWhileMapped => {
                        assert_eq!(f.pfn, inj.pfn, "{name}");
                        assert_eq!(f.npages, inj.npages, "{name}");
                        assert_eq!(f.mappings.len(), 1, "{name}");
                        let m = &f.mappings[0];
                        assert_eq!(m.domain, inj.domain);
                        assert_eq!(m.device.as_deref(), Some(&*inj.device));
                        assert!(m.iova <= inj.iova && inj.iova.0 < m.iova.0 + m.len, "{name}: {m:?} vs {inj:?}");
                    }
                    FindingKind::DoubleUnmap => {
                        assert_eq!(f.domain, Some(inj.domain), "{name}");
                        assert_eq!(f.iova, Some(inj.iova), "{name}");
                    }
                    FindingKind::DmaUnmapMismatch => {
                        // Reported at the start of the DMA mapping, which holds the page.
                        assert_eq!(f.domain, Some(inj.domain), "{name}");
                        let at = f.iova.unwrap();
                        assert!(at <= inj.iova && inj.iova.0 - at.0 < 16 << 20, "{name}: {at} vs {}", inj.iova);
                    }
                    FindingKind::LeakAtTeardown => assert_eq!(f.domain, Some(inj.domain), "{name}"),
                    _ => {}
                }
            }
        }
    }
}
