//! What iosan records, and why: events, kprobes with their alternatives,
//! stack triggers, and the names of the identity and flush sources.
//!
//! One table serves both the plan built on the target ([`crate::Plan`]) and
//! the self-contained script that probes at run time
//! ([`crate::portable_script`]), so the two never disagree on what is
//! enabled or on what its absence costs.

use crate::probe::{Arch, GROUP};

/// An event iosan enables when present, with what it gives.
pub(crate) struct Wanted {
    pub(crate) system: &'static str,
    pub(crate) event: &'static str,
    pub(crate) gives: &'static str,
}

const fn w(system: &'static str, event: &'static str, gives: &'static str) -> Wanted {
    Wanted { system, event, gives }
}

/// Events enabled when present, in this order. The `dma` map/unmap pairs
/// that changed name are in [`DMA_MAP_PAIRS`], not here.
pub(crate) const WANTED: &[Wanted] = &[
    w("kmem", "mm_page_free", "page frees: where freed-while-mapped is checked"),
    w("kmem", "mm_page_alloc", "page allocations: where allocated-while-mapped is checked"),
    w("kmem", "mm_page_free_batched", "batched page frees (older kernels emit only these)"),
    w("iommu", "map", "IOMMU page-table maps: iova, physical address, size"),
    w("iommu", "unmap", "IOMMU page-table unmaps: iova, size, bytes unmapped"),
    w("iommu", "attach_device_to_domain", "device attach (device name only)"),
    w("iommu", "detach_device_from_domain", "device detach (older kernels)"),
    w("iommu", "add_device_to_group", "device to IOMMU group"),
    w("iommu", "remove_device_from_group", "device leaves its group"),
    w("iommu", "io_page_fault", "device accesses with no translation"),
    w("dma", "dma_map_resource", "MMIO resource maps (before 6.18)"),
    w("dma", "dma_unmap_resource", "MMIO resource unmaps (before 6.18)"),
    w("dma", "dma_map_sg", "scatter-gather maps with device and physical pages"),
    w("dma", "dma_unmap_sg", "scatter-gather unmaps with device"),
    w("dma", "dma_map_sg_err", "failed scatter-gather maps"),
    w("dma", "dma_alloc", "coherent allocations with device"),
    w("dma", "dma_free", "coherent frees with device"),
    w("dma", "dma_alloc_pages", "DMA page allocations"),
    w("dma", "dma_free_pages", "DMA page frees"),
    w("dma", "dma_alloc_sgt", "non-contiguous DMA allocations"),
    w("dma", "dma_alloc_sgt_err", "failed non-contiguous DMA allocations"),
    w("dma", "dma_free_sgt", "non-contiguous DMA frees"),
    w("intel_iommu", "cache_tag_assign", "VT-d domain id of each attached device"),
    w("intel_iommu", "cache_tag_unassign", "VT-d domain id released"),
    w("intel_iommu", "cache_tag_flush_range", "strict-mode IOTLB flush with domain id"),
    w("intel_iommu", "cache_tag_flush_range_np", "flush after map (caching mode)"),
    w("intel_iommu", "cache_tag_flush_all", "lazy-mode flush-queue flush with domain id"),
    w("printk", "console", "kernel log lines on the trace clock"),
];

/// One DMA-API streaming map/unmap pair under one of its names.
pub(crate) struct DmaPair {
    pub(crate) map: &'static str,
    pub(crate) unmap: &'static str,
    pub(crate) when: &'static str,
}

/// The streaming map/unmap events, newest name first: the first pair whose
/// map event exists is enabled.
pub(crate) const DMA_MAP_PAIRS: &[DmaPair] = &[
    DmaPair { map: "dma_map_phys", unmap: "dma_unmap_phys", when: "Linux 6.18 and later" },
    DmaPair { map: "dma_map_page", unmap: "dma_unmap_page", when: "Linux 6.12 to 6.17" },
];

/// Whole systems enabled when present (vendor drivers whose event names vary).
pub(crate) const WANTED_SYSTEMS: &[(&str, &str)] = &[
    ("arm-smmu-v3", "SMMUv3 driver events"),
    ("arm_smmu_v3", "SMMUv3 driver events"),
    ("amd_iommu", "AMD IOMMU driver events"),
];

/// What a kprobe contributes to the analysis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Names the IOMMU domain of a map or unmap, or ties devices to domains.
    Identity,
    /// Tells when a lazy-mode flush made unmapped pages unreachable.
    Flush,
    /// A return value (success, bytes removed).
    Result,
}

/// One kernel function a kprobe may sit on.
pub(crate) struct Candidate {
    pub(crate) function: &'static str,
    /// Which kernels have it, for the reason comment.
    pub(crate) when: &'static str,
}

/// A kprobe of group `iosan`, with the functions it may use, best first.
pub(crate) struct KprobeSpec {
    /// Event name inside the group (the analyser keys on it).
    pub(crate) name: &'static str,
    pub(crate) candidates: &'static [Candidate],
    pub(crate) role: Role,
    /// What it gives, and what is lost without it.
    pub(crate) gives: &'static str,
    /// Set up only when this other kprobe could not be.
    pub(crate) fallback_for: Option<&'static str>,
}

const fn c(function: &'static str, when: &'static str) -> Candidate {
    Candidate { function, when }
}

const MAP_FNS: &[Candidate] =
    &[c("__iommu_map", "Linux 6.12 and older"), c("iommu_map_nosync", "its name by 6.18 and in 7.x, same arguments")];
const UNMAP_FNS: &[Candidate] = &[c("__iommu_unmap", "every kernel since 5.x")];

/// The kprobes, in definition order.
pub(crate) const KPROBES: &[KprobeSpec] = &[
    KprobeSpec {
        name: "iommu_map",
        candidates: MAP_FNS,
        role: Role::Identity,
        gives: "the IOMMU domain of each iommu:map (IOVAs of different devices collide)",
        fallback_for: None,
    },
    KprobeSpec {
        name: "iommu_map_ret",
        candidates: MAP_FNS,
        role: Role::Result,
        gives: "whether each map succeeded",
        fallback_for: None,
    },
    KprobeSpec {
        name: "iommu_unmap",
        candidates: UNMAP_FNS,
        role: Role::Identity,
        gives: "the IOMMU domain of each iommu:unmap",
        fallback_for: None,
    },
    KprobeSpec {
        name: "iommu_unmap_ret",
        candidates: UNMAP_FNS,
        role: Role::Result,
        gives: "the bytes each unmap removed",
        fallback_for: None,
    },
    KprobeSpec {
        name: "iommu_attach",
        candidates: &[c("__iommu_attach_device", "every kernel since 5.x")],
        role: Role::Identity,
        gives: "which device each domain belongs to",
        fallback_for: None,
    },
    KprobeSpec {
        name: "iommu_domain_free",
        candidates: &[c("iommu_domain_free", "every kernel")],
        role: Role::Identity,
        gives: "mappings that vanish with their domain (leak-at-teardown)",
        fallback_for: None,
    },
    KprobeSpec {
        name: "fq_flush_timeout",
        candidates: &[c("fq_flush_timeout", "a timer callback; absent from some 6.18 builds")],
        role: Role::Flush,
        gives: "when lazy-mode flush-queue timers fire (lazy exposure window)",
        fallback_for: None,
    },
    KprobeSpec {
        name: "fq_flush_iotlb",
        candidates: &[c("fq_flush_iotlb", "out of line in 6.12, inlined in later builds")],
        role: Role::Flush,
        gives: "which flush queue (DMA cookie) each lazy-mode IOTLB flush serves",
        fallback_for: None,
    },
    KprobeSpec {
        name: "iova_free",
        candidates: &[c("free_iova_fast", "exported, always out of line")],
        role: Role::Flush,
        gives: "when each IOVA range leaves the flush queue, after the flush that covers it \
                (an upper bound of its exposure window; one event per unmap)",
        fallback_for: Some("fq_flush_iotlb"),
    },
];

/// Every function any kprobe may use.
#[cfg(test)]
pub(crate) fn kprobe_functions() -> impl Iterator<Item = &'static str> {
    KPROBES.iter().flat_map(|k| k.candidates.iter().map(|c| c.function))
}

/// The `kprobe_events` line for kprobe `name` on `function`, or `None`
/// when the architecture has no argument registers we know.
pub(crate) fn kprobe_line(arch: &Arch, name: &str, function: &str) -> Option<String> {
    let a = |n| arch.arg(n);
    let args = match name {
        // __iommu_map / iommu_map_nosync(domain, iova, paddr, size, prot, gfp)
        "iommu_map" => format!(
            "domain={d} dtype=+0({d}):u32 iova={} paddr={} size={} prot={}:s32",
            a(1)?,
            a(2)?,
            a(3)?,
            a(4)?,
            d = a(0)?
        ),
        "iommu_map_ret" => "ret=$retval:s32".to_owned(),
        // __iommu_unmap(domain, iova, size, gather)
        "iommu_unmap" => format!("domain={d} dtype=+0({d}):u32 iova={} size={}", a(1)?, a(2)?, d = a(0)?),
        "iommu_unmap_ret" => "unmapped=$retval:u64".to_owned(),
        // __iommu_attach_device(domain, dev): dev->kobj.name is the first word
        "iommu_attach" => format!("domain={d} dtype=+0({d}):u32 dev=+0(+0({})):string", a(1)?, d = a(0)?),
        "iommu_domain_free" => format!("domain={d} dtype=+0({d}):u32", d = a(0)?),
        "fq_flush_timeout" => String::new(),
        "fq_flush_iotlb" => format!("cookie={}", a(0)?),
        // free_iova_fast(iovad, pfn, size): pfn and size in IOVA granules
        "iova_free" => format!("iovad={} pfn={} pages={}", a(0)?, a(1)?, a(2)?),
        _ => return None,
    };
    let kind = if name.ends_with("_ret") { "r" } else { "p" };
    let mut line = format!("{kind}:{GROUP}/{name} {function}");
    if !args.is_empty() {
        line.push(' ');
        line.push_str(&args);
    }
    Some(line)
}

/// Events that get a `stacktrace` trigger with `--stacks`: every map and
/// unmap, of the IOMMU and of the DMA API, and coherent allocations. Their
/// rate is the DMA rate, so a stack on each is affordable.
pub(crate) const STACK_EVENTS: &[(&str, &str)] = &[
    ("iommu", "map"),
    ("iommu", "unmap"),
    ("dma", "dma_map_phys"),
    ("dma", "dma_unmap_phys"),
    ("dma", "dma_map_page"),
    ("dma", "dma_unmap_page"),
    ("dma", "dma_map_sg"),
    ("dma", "dma_unmap_sg"),
    ("dma", "dma_alloc"),
    ("dma", "dma_free"),
    ("dma", "dma_alloc_pages"),
    ("dma", "dma_free_pages"),
];

/// Page allocator events that get a `stacktrace` trigger only with a page
/// filter (`--stacks-filter`): they fire for every page on the machine.
pub(crate) const PAGE_STACK_EVENTS: &[(&str, &str)] = &[("kmem", "mm_page_free"), ("kmem", "mm_page_alloc")];

/// Stacks on page events: which ones, decided by the user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PageStacks {
    /// No stacks on page frees and allocations (the default: they fire for
    /// every page the machine frees, hundreds of thousands per second).
    #[default]
    Off,
    /// Stacks on the page frees and allocations that match this ftrace
    /// filter (`comm == "insmod"`, `pfn >= 0x123000 && pfn < 0x124000`).
    Filtered(String),
    /// Stacks on every page free and allocation.
    All,
}

/// The `--stacks` choice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Stacks {
    /// No stack traces.
    #[default]
    Off,
    /// Stacks on every map and unmap; on page events as `pages` says.
    On {
        /// Stacks on page frees and allocations.
        pages: PageStacks,
    },
}

impl Stacks {
    /// The trigger text for page events, if they get one.
    pub(crate) fn page_trigger(&self) -> Option<String> {
        match self {
            Self::On { pages: PageStacks::All } => Some("stacktrace".into()),
            Self::On { pages: PageStacks::Filtered(f) } => Some(format!("stacktrace if {f}")),
            _ => None,
        }
    }

    /// Stable name for the capture metadata (`stacks=`).
    #[must_use]
    pub fn meta(&self) -> String {
        match self {
            Self::Off => "off".into(),
            Self::On { pages: PageStacks::Off } => "map-unmap".into(),
            Self::On { pages: PageStacks::All } => "map-unmap,pages".into(),
            Self::On { pages: PageStacks::Filtered(f) } => format!("map-unmap,pages-if {f}"),
        }
    }
}

/// The source name a kprobe adds to `identity_sources` or `flush_sources`.
pub(crate) fn kprobe_source(name: &str) -> String {
    format!("kprobe:{name}")
}

/// Identity sources given by events: `(source, system, event)`; the source
/// counts when any of its events is enabled.
pub(crate) const EVENT_IDENTITY: &[(&str, &str, &str)] = &[
    ("dma", "dma", "dma_map_phys"),
    ("dma", "dma", "dma_map_page"),
    ("dma", "dma", "dma_map_sg"),
    ("intel_iommu:did", "intel_iommu", "cache_tag_assign"),
    ("intel_iommu:did", "intel_iommu", "cache_tag_flush_range"),
];

/// Flush sources given by events.
pub(crate) const EVENT_FLUSH: &[(&str, &str, &str)] = &[
    ("intel_iommu:cache_tag_flush_all", "intel_iommu", "cache_tag_flush_all"),
    ("intel_iommu:cache_tag_flush_range", "intel_iommu", "cache_tag_flush_range"),
];
