//! Whether a capture could have shown a DMA use-after-free at all.
//!
//! A use-after-free needs two things in the capture: a mapping (iommu:map,
//! a dma:* map or allocation, or a map kprobe) and a page leaving or
//! re-entering the allocator's hands (kmem:mm_page_free / mm_page_alloc).
//! A capture without either cannot show the bug, so it is never reported
//! clean: it is an error that says what is missing and how to record it.
//! A capture that has both but lacks something else (unmap events, an
//! identity source, events lost) gets its verdict, with what it could not
//! see listed as blind spots.

use iosan_trace::{CaptureFormat, Summary};

/// How to record what is missing.
const RECORD_HINT: &str = "record with `iosan record --apply` on the machine under test (or run the script of \
     `iosan record --print` there), which enables kmem:mm_page_free, kmem:mm_page_alloc, iommu:map, iommu:unmap, \
     the dma:* events and the domain kprobes";

/// Events that end or start a page's life in the page allocator.
const PAGE_EVENTS: &[&str] =
    &["kmem:mm_page_free", "kmem:mm_page_free_batched", "kmem:mm_page_alloc", "kmem:mm_page_alloc_zone_locked"];

/// Events that create a mapping a device can use.
const MAP_EVENTS: &[&str] = &[
    "iommu:map",
    "dma:dma_map_page",
    "dma:dma_map_sg",
    "dma:dma_alloc",
    "dma:dma_alloc_pages",
    "dma:dma_alloc_sgt",
    "kprobe:__iommu_map",
];

/// Events that remove a mapping.
const UNMAP_EVENTS: &[&str] = &[
    "iommu:unmap",
    "dma:dma_unmap_page",
    "dma:dma_unmap_sg",
    "dma:dma_free",
    "dma:dma_free_pages",
    "dma:dma_free_sgt",
    "kprobe:__iommu_unmap",
];

fn count(s: &Summary, names: &[&str]) -> u64 {
    names.iter().filter_map(|n| s.events_by_kind.get(n)).sum()
}

/// Why a capture cannot show a DMA use-after-free, as one message.
#[must_use]
pub fn inconclusive(s: &Summary, format: CaptureFormat) -> Option<String> {
    let known: u64 = s.events_by_kind.values().sum();
    let text = matches!(format, CaptureFormat::Text { .. });
    let looks_binary = format == CaptureFormat::Text { looks_binary: true };
    let missing = if text && s.bytes == 0 {
        "the input is empty".to_string()
    } else if !text && s.events_read == 0 {
        let what = if format == CaptureFormat::TraceDat { "trace.dat" } else { "perf.data" };
        format!("the {what} holds no events")
    } else if known == 0 && looks_binary {
        format!(
            "it is a binary file iosan does not understand ({} bytes; iosan reads ftrace text, `trace-cmd report` text, \
             trace.dat and perf.data, plain or gzip/xz/zstd-compressed)",
            s.bytes
        )
    } else if known == 0 {
        let unknown = if s.unknown_events > 0 {
            let names: Vec<&str> = s.unknown_by_name.keys().take(5).map(String::as_str).collect();
            format!("; {} events of other kinds ({})", s.unknown_events, names.join(", "))
        } else {
            String::new()
        };
        format!("it holds no event iosan recognises ({} lines read{unknown})", s.lines)
    } else if count(s, PAGE_EVENTS) == 0 {
        format!(
            "it has no page allocator events (kmem:mm_page_free, kmem:mm_page_alloc), so no free or re-allocation of \
             a mapped page could be seen ({known} recognised events)"
        )
    } else if count(s, MAP_EVENTS) == 0 {
        format!(
            "it has no map events of any kind (iommu:map, dma:dma_map_*, dma:dma_alloc*, a map kprobe), so no page \
             could be seen mapped ({known} recognised events)"
        )
    } else {
        return None;
    };
    Some(format!("cannot show a DMA use-after-free: {missing}; {RECORD_HINT}"))
}

/// Something a conclusive capture could not see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlindSpot {
    /// Stable name: `no-unmaps`, `lost-events`, `no-identity`, `dma-api-only`, `page-size`.
    pub key: &'static str,
    /// What it means, in one line.
    pub text: String,
}

/// What a conclusive capture could not see.
#[must_use]
pub fn blind_spots(s: &Summary) -> Vec<BlindSpot> {
    let mut out = Vec::new();
    if count(s, MAP_EVENTS) > 0 && count(s, UNMAP_EVENTS) == 0 {
        out.push(BlindSpot {
            key: "no-unmaps",
            text: "no unmap events: every mapping counts as live until the end of the capture, so a page freed \
                   after its (unseen) unmap is reported as freed while mapped (enable iommu:unmap and dma:dma_unmap_*)"
                .to_string(),
        });
    }
    if s.lost_events > 0 || s.overwritten_events > 0 {
        out.push(BlindSpot {
            key: "lost-events",
            text: format!(
                "{} events lost and {} overwritten by the ring buffer: findings in those windows are marked, and \
                 bugs inside them may be missed (a larger buffer_size_kb helps)",
                s.lost_events, s.overwritten_events
            ),
        });
    }
    if s.kprobe_events == 0 && s.dma_events == 0 && s.vtd_events == 0 && count(s, &["iommu:map"]) > 0 {
        out.push(BlindSpot {
            key: "no-identity",
            text: "no identity source (no domain kprobes, dma:* or intel_iommu events): IOVA spaces of different \
                   domains cannot be told apart, so findings there are attribution guesses"
                .to_string(),
        });
    }
    if count(s, &["iommu:map"]) == 0 && s.dma_translated_maps > 0 {
        out.push(BlindSpot {
            key: "dma-api-only",
            text: format!(
                "no iommu:* events on a machine whose DMA addresses are not physical (an IOMMU translates): pages of \
                 dma_map_page/dma_map_sg are checked through the DMA-API layer, but dma_alloc* carries no physical \
                 address ({} coherent buffers unchecked) and raw iommu_map users (unmanaged domains, VFIO, GPU \
                 drivers) are invisible (enable iommu:map and iommu:unmap)",
                s.dma_allocs_unchecked
            ),
        });
    }
    if !s.page_size_warnings.is_empty() {
        out.push(BlindSpot {
            key: "page-size",
            text: format!(
                "the page size is in doubt ({}): with a wrong one, freed page frames are matched against the wrong \
                 addresses, so findings can be missed (pass --page-size)",
                s.page_size_warnings.join("; ")
            ),
        });
    }
    out
}

/// The identity and IOTLB flush sources a capture offered, by the event
/// kinds it holds: what told domains apart, and what ended lazy-mode
/// exposure windows. Each list is `["none"]` when empty.
#[must_use]
pub fn sources(s: &Summary) -> (Vec<&'static str>, Vec<&'static str>) {
    let has = |names: &[&str]| count(s, names) > 0;
    let mut identity = Vec::new();
    if has(&["kprobe:__iommu_map", "kprobe:__iommu_unmap", "kprobe:attach"]) {
        identity.push("domain kprobes");
    }
    if s.dma_events > 0 {
        identity.push("dma:* devices");
    }
    if has(&[
        "intel_iommu:cache_tag_assign",
        "intel_iommu:cache_tag_flush_range",
        "intel_iommu:cache_tag_flush_range_np",
    ]) {
        identity.push("intel_iommu domain ids");
    }
    let mut flush = Vec::new();
    if has(&["intel_iommu:cache_tag_flush_range", "intel_iommu:cache_tag_flush_all"]) {
        flush.push("intel_iommu:cache_tag_flush_*");
    }
    if has(&["kprobe:fq_flush_iotlb"]) {
        flush.push("kprobe fq_flush_iotlb");
    }
    if has(&["kprobe:free_iova_fast"]) {
        flush.push("kprobe free_iova_fast");
    }
    if identity.is_empty() {
        identity.push("none");
    }
    if flush.is_empty() {
        flush.push("none");
    }
    (identity, flush)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: CaptureFormat = CaptureFormat::Text { looks_binary: false };

    #[test]
    fn an_empty_binary_capture_says_so() {
        let s = Summary { bytes: 4096, ..Summary::default() };
        assert!(inconclusive(&s, CaptureFormat::TraceDat).unwrap().contains("trace.dat holds no events"));
        assert!(inconclusive(&s, CaptureFormat::PerfData).unwrap().contains("perf.data holds no events"));
    }

    fn summary(kinds: &[(&'static str, u64)]) -> Summary {
        let mut s = Summary { bytes: 100, lines: 3, ..Summary::default() };
        for (k, n) in kinds {
            s.events_by_kind.insert(k, *n);
        }
        s
    }

    #[test]
    fn inconclusive_inputs_say_what_is_missing() {
        let empty = Summary::default();
        assert!(inconclusive(&empty, TEXT).unwrap().contains("empty"));
        let nothing = summary(&[]);
        assert!(inconclusive(&nothing, TEXT).unwrap().contains("no event iosan recognises"));
        assert!(inconclusive(&nothing, CaptureFormat::Text { looks_binary: true }).unwrap().contains("binary file"));
        let no_pages = summary(&[("iommu:map", 3)]);
        assert!(inconclusive(&no_pages, TEXT).unwrap().contains("no page allocator events"));
        let no_maps = summary(&[("kmem:mm_page_free", 3)]);
        assert!(inconclusive(&no_maps, TEXT).unwrap().contains("no map events"));
        for m in [inconclusive(&no_maps, TEXT).unwrap(), inconclusive(&empty, TEXT).unwrap()] {
            assert!(m.contains("iosan record"), "{m}");
        }
    }

    #[test]
    fn conclusive_inputs_list_blind_spots() {
        let dma_only = summary(&[("dma:dma_map_page", 1), ("kmem:mm_page_free", 1)]);
        assert!(inconclusive(&dma_only, TEXT).is_none());
        assert_eq!(blind_spots(&dma_only).len(), 1, "no unmaps");
        let mut full = summary(&[("iommu:map", 1), ("iommu:unmap", 1), ("kmem:mm_page_free", 1)]);
        full.kprobe_events = 2;
        assert!(inconclusive(&full, TEXT).is_none());
        assert!(blind_spots(&full).is_empty());
        let mut bare = summary(&[("iommu:map", 1), ("iommu:unmap", 1), ("kmem:mm_page_alloc", 1)]);
        bare.lost_events = 4;
        let spots = blind_spots(&bare);
        assert_eq!(spots.len(), 2, "{spots:?}");
        // dma:* only, and the DMA addresses are translated: an IOMMU nobody traced.
        let mut dma_iommu = summary(&[("dma:dma_map_page", 3), ("dma:dma_unmap_page", 3), ("kmem:mm_page_free", 1)]);
        dma_iommu.dma_translated_maps = 3;
        dma_iommu.dma_allocs_unchecked = 2;
        let spots = blind_spots(&dma_iommu);
        assert_eq!(spots.iter().map(|b| b.key).collect::<Vec<_>>(), ["dma-api-only"]);
        assert!(spots[0].text.contains("2 coherent buffers unchecked"), "{spots:?}");
        // A page size the capture contradicts: the matching itself is in doubt.
        let mut doubt = full.clone();
        doubt.page_size_warnings.push("the capture metadata says 16384-byte pages but the events show 4096".into());
        assert_eq!(blind_spots(&doubt).iter().map(|b| b.key).collect::<Vec<_>>(), ["page-size"]);
        // dma-direct (DMA = physical address): nothing is hidden.
        let mut direct = dma_iommu.clone();
        direct.dma_translated_maps = 0;
        direct.dma_direct_maps = 3;
        assert!(blind_spots(&direct).is_empty());
    }

    #[test]
    fn sources_name_what_the_capture_offered() {
        let mut s = summary(&[("kprobe:__iommu_map", 1), ("kprobe:fq_flush_iotlb", 2)]);
        assert_eq!(sources(&s), (vec!["domain kprobes"], vec!["kprobe fq_flush_iotlb"]));
        s.dma_events = 1;
        s.events_by_kind.insert("kprobe:free_iova_fast", 1);
        assert_eq!(sources(&s).1, ["kprobe fq_flush_iotlb", "kprobe free_iova_fast"]);
        assert_eq!(sources(&summary(&[])), (vec!["none"], vec!["none"]));
    }
}
