//! Typed events from an event line's name and body.
//!
//! Fields are found **by name** (`key=value`, or `key value` word pairs for
//! `intel_iommu`), never by position, because print formats drift between
//! kernel versions. Number bases follow the kernel's print formats (see
//! [`super::num`]); where kernels disagree (kmem `pfn`, kprobe fetch args)
//! both `0x`-hex and decimal are accepted.
//!
//! Units: addresses and sizes in bytes, `pfn` in CPU pages, `order` as
//! log2 of the page count. Ranges named `last` are inclusive.
//!
//! Kprobe and kretprobe events are recognised by the probed function printed
//! at the start of the body (`(__iommu_map+0x0/0x280)`,
//! `(iommu_map+0x42/0xd0 <- __iommu_map)`), never by their user-chosen group
//! or event name. `trace-cmd report` prints raw addresses instead
//! (`(ffffffff81929360)`, `(func <- ret_ip)`); those are recognised by their
//! field set and flagged with [`ProbeInfo::by_fields`].

use super::collect::Got;
use super::kinds::{probe_event, spec, EventSpec, TextLayout, PROBE_FIELDS};
use super::num::NumError;
use super::text;
use crate::field::{FieldLookup, FieldValue};

/// The most elements accepted in one array field (`dma_map_sg` address
/// lists). The kernel prints at most 128 per `dma_map_sg` event, but
/// `dma_unmap_sg` prints the whole list; a longer array is an error, so a
/// hostile line cannot make the parser allocate without bound.
pub const MAX_ARRAY_LEN: usize = 1 << 16;

/// The largest accepted page-block `order` (so `1 << order` cannot overflow
/// a `u64`).
pub const MAX_ORDER: u32 = 63;

/// What is wrong with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldProblem {
    /// A required field is absent.
    Missing,
    /// The field's number is malformed.
    Number(NumError),
    /// The DMA direction is not one of the four the kernel prints.
    UnknownDirection,
    /// An array lacks its closing delimiter or has a malformed element.
    BadArray,
    /// An array has more than [`MAX_ARRAY_LEN`] elements.
    TooManyElements,
    /// A page-block order above [`MAX_ORDER`].
    OrderTooLarge,
    /// A redundant field contradicts another (e.g. `iommu:map`'s end is not
    /// `iova + size`).
    Inconsistent,
    /// A range `[0xstart-0xlast]` is malformed.
    BadRange,
    /// A binary source gave a value of another type (a number for a
    /// string, an array for a number).
    WrongType,
}

impl core::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FieldProblem::Missing => f.write_str("missing"),
            FieldProblem::Number(e) => e.fmt(f),
            FieldProblem::UnknownDirection => f.write_str("unknown DMA direction"),
            FieldProblem::BadArray => f.write_str("malformed array"),
            FieldProblem::TooManyElements => write!(f, "array longer than {MAX_ARRAY_LEN} elements"),
            FieldProblem::OrderTooLarge => write!(f, "order above {MAX_ORDER}"),
            FieldProblem::Inconsistent => f.write_str("inconsistent with the other fields"),
            FieldProblem::BadRange => f.write_str("malformed [0xstart-0xlast] range"),
            FieldProblem::WrongType => f.write_str("value of the wrong type"),
        }
    }
}

/// How many bytes of an offending value an error keeps.
const ERROR_SNIPPET: usize = 48;

/// A known event whose body is malformed: which event, which field, what is
/// wrong, and the start of the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event `{event}`: field `{field}`: {problem}{}", fmt_value(.value))]
pub struct FieldError {
    /// The event (`map`, `dma_map_sg`, `kprobe __iommu_map` ...).
    pub event: &'static str,
    /// The field name as the kernel prints it.
    pub field: &'static str,
    /// What is wrong.
    pub problem: FieldProblem,
    /// The first bytes of the offending value (empty when missing).
    pub value: Vec<u8>,
}

fn fmt_value(v: &[u8]) -> String {
    if v.is_empty() {
        String::new()
    } else {
        format!(" (value `{}`)", v.escape_ascii())
    }
}

#[cold]
pub(crate) fn ferr(event: &'static str, field: &'static str, problem: FieldProblem, value: &[u8]) -> FieldError {
    FieldError { event, field, problem, value: value.get(..ERROR_SNIPPET).unwrap_or(value).to_vec() }
}

/// DMA transfer direction (`enum dma_data_direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmaDirection {
    /// `DMA_BIDIRECTIONAL` (0).
    Bidirectional,
    /// `DMA_TO_DEVICE` (1).
    ToDevice,
    /// `DMA_FROM_DEVICE` (2).
    FromDevice,
    /// `DMA_NONE` (3).
    None,
}

/// `printed/total` as in `nents=27/27`: how many entries the event lists
/// and how many the scatterlist had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counted {
    /// Entries printed in the event's arrays.
    pub printed: u32,
    /// Entries in the scatterlist.
    pub total: u32,
}

// ---------------------------------------------------------------- iommu

/// `iommu:map`: `iommu_map()` mapped `[iova, iova+size)` to `paddr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IommuMap {
    /// First IOVA.
    pub iova: u64,
    /// First physical address.
    pub paddr: u64,
    /// Bytes mapped.
    pub size: u64,
}

/// `iommu:unmap`: `iommu_unmap()` of `[iova, iova+size)`, which removed
/// `unmapped_size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IommuUnmap {
    /// First IOVA.
    pub iova: u64,
    /// Bytes asked for.
    pub size: u64,
    /// Bytes actually unmapped (may differ from `size`).
    pub unmapped_size: u64,
}

/// `iommu:io_page_fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoPageFault<'a> {
    /// Driver name.
    pub driver: &'a [u8],
    /// Device name.
    pub device: &'a [u8],
    /// Faulting IOVA.
    pub iova: u64,
    /// Fault flags.
    pub flags: u64,
}

// ---------------------------------------------------------------- dma
//
// Values "as printed" (`attrs`, `virt_addr`, GFP flags) are text only: a
// binary source holds them as numbers, and they read as empty there.

/// `dma:dma_map_page` / `dma_map_phys` / `dma_map_resource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaMap<'a> {
    /// Device name (PCI BDF).
    pub device: &'a [u8],
    /// Direction.
    pub dir: DmaDirection,
    /// DMA address returned (includes the in-page offset).
    pub dma_addr: u64,
    /// Bytes.
    pub size: u64,
    /// Physical address mapped (includes the in-page offset).
    pub phys_addr: u64,
    /// `attrs` as printed (may be empty).
    pub attrs: &'a [u8],
}

/// `dma:dma_unmap_page` / `dma_unmap_phys` / `dma_unmap_resource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaUnmap<'a> {
    /// Device name.
    pub device: &'a [u8],
    /// Direction.
    pub dir: DmaDirection,
    /// DMA address unmapped.
    pub dma_addr: u64,
    /// Bytes.
    pub size: u64,
    /// `attrs` as printed.
    pub attrs: &'a [u8],
}

/// `dma:dma_map_sg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaMapSg<'a> {
    /// Device name.
    pub device: &'a [u8],
    /// Direction.
    pub dir: DmaDirection,
    /// CPU segments: printed/total.
    pub nents: Counted,
    /// DMA segments: printed/total.
    pub ents: Counted,
    /// The kernel truncated the arrays (` [TRUNCATED]`, `truncated=1`).
    pub truncated: bool,
    /// DMA address of each DMA segment.
    pub dma_addrs: Vec<u64>,
    /// Length in bytes of each DMA segment.
    pub sizes: Vec<u64>,
    /// Physical address of each CPU segment.
    pub phys_addrs: Vec<u64>,
    /// `attrs` as printed.
    pub attrs: &'a [u8],
}

/// `dma:dma_unmap_sg`: only the CPU segments' physical addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaUnmapSg<'a> {
    /// Device name.
    pub device: &'a [u8],
    /// Direction.
    pub dir: DmaDirection,
    /// Physical address of each CPU segment.
    pub phys_addrs: Vec<u64>,
    /// The list was marked truncated.
    pub truncated: bool,
    /// `attrs` as printed.
    pub attrs: &'a [u8],
}

/// `dma:dma_map_sg_err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaMapSgErr<'a> {
    /// Device name.
    pub device: &'a [u8],
    /// Direction.
    pub dir: DmaDirection,
    /// Physical addresses (printed as `dma_addrs=` by the kernel).
    pub phys_addrs: Vec<u64>,
    /// Error code.
    pub err: i64,
    /// `attrs` as printed.
    pub attrs: &'a [u8],
}

/// `dma:dma_alloc`, `dma_alloc_pages`, `dma_alloc_sgt_err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaAlloc<'a> {
    /// Device name.
    pub device: &'a [u8],
    /// Direction.
    pub dir: DmaDirection,
    /// DMA address.
    pub dma_addr: u64,
    /// Bytes.
    pub size: u64,
    /// `virt_addr` as printed (a hashed pointer in stock text output).
    pub virt_addr: &'a [u8],
    /// GFP flags as printed.
    pub flags: &'a [u8],
    /// `attrs` as printed.
    pub attrs: &'a [u8],
}

/// `dma:dma_free`, `dma_free_pages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaFree<'a> {
    /// Device name.
    pub device: &'a [u8],
    /// Direction.
    pub dir: DmaDirection,
    /// DMA address.
    pub dma_addr: u64,
    /// Bytes.
    pub size: u64,
    /// `virt_addr` as printed.
    pub virt_addr: &'a [u8],
    /// `attrs` as printed.
    pub attrs: &'a [u8],
}

/// `dma:dma_alloc_sgt`, `dma_free_sgt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaSgt<'a> {
    /// Device name.
    pub device: &'a [u8],
    /// Direction.
    pub dir: DmaDirection,
    /// DMA address.
    pub dma_addr: u64,
    /// Bytes.
    pub size: u64,
    /// Physical address of each CPU segment.
    pub phys_addrs: Vec<u64>,
    /// GFP flags as printed (empty for `dma_free_sgt`).
    pub flags: &'a [u8],
    /// `attrs` as printed (empty for `dma_free_sgt`).
    pub attrs: &'a [u8],
}

/// `dma:dma_sync_single_for_cpu` / `_for_device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaSyncSingle<'a> {
    /// Device name.
    pub device: &'a [u8],
    /// Direction.
    pub dir: DmaDirection,
    /// DMA address.
    pub dma_addr: u64,
    /// Bytes.
    pub size: u64,
}

/// `dma:dma_sync_sg_for_cpu` / `_for_device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaSyncSg<'a> {
    /// Device name.
    pub device: &'a [u8],
    /// Direction.
    pub dir: DmaDirection,
    /// DMA address of each segment.
    pub dma_addrs: Vec<u64>,
    /// Length of each segment.
    pub sizes: Vec<u64>,
}

// ---------------------------------------------------------------- kmem

/// `kmem:mm_page_alloc`, `mm_page_alloc_zone_locked`: a block of
/// `2^order` pages from `pfn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAlloc<'a> {
    /// First page frame number.
    pub pfn: u64,
    /// log2 of the number of pages (at most [`MAX_ORDER`]).
    pub order: u32,
    /// The `page=` pointer was NULL: a failed allocation (`pfn` is then a
    /// meaningless 0). The caller should skip it.
    pub page_is_null: bool,
    /// Migrate type, when printed.
    pub migratetype: Option<i64>,
    /// GFP flags as printed (empty when absent).
    pub gfp_flags: &'a [u8],
}

/// `kmem:mm_page_free`, `mm_page_free_batched` (order always 0),
/// `mm_page_pcpu_drain`: a block of `2^order` pages from `pfn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageBlock {
    /// First page frame number.
    pub pfn: u64,
    /// log2 of the number of pages (at most [`MAX_ORDER`]).
    pub order: u32,
}

// ---------------------------------------------------------------- intel_iommu

/// `intel_iommu:cache_tag_assign`, `cache_tag_unassign`,
/// `cache_tag_flush_all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheTag<'a> {
    /// IOMMU name (`dmar0`).
    pub iommu: &'a [u8],
    /// Device name as printed (on 6.12 the IOMMU again).
    pub dev: &'a [u8],
    /// Tag type as printed (`iotlb`, or `0x0` in `trace-cmd report`).
    pub tag_type: &'a [u8],
    /// VT-d domain id.
    pub did: u32,
    /// PASID.
    pub pasid: u32,
    /// Reference count (`ref`).
    pub refs: u32,
}

/// `intel_iommu:cache_tag_flush_range`, `cache_tag_flush_range_np`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheTagFlushRange<'a> {
    /// IOMMU name.
    pub iommu: &'a [u8],
    /// Device name as printed.
    pub dev: &'a [u8],
    /// PASID (from `dev[pasid]`).
    pub pasid: u32,
    /// Tag type as printed.
    pub tag_type: &'a [u8],
    /// VT-d domain id.
    pub did: u32,
    /// First IOVA of the flushed range.
    pub start: u64,
    /// Last IOVA of the flushed range (inclusive).
    pub last: u64,
    /// Address of the invalidation.
    pub addr: u64,
    /// Pages invalidated (absent from 7.x kernels).
    pub pages: Option<u64>,
    /// Address mask.
    pub mask: u64,
}

// ---------------------------------------------------------------- kprobes

/// A code location as printed in a probe event's parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeSite<'a> {
    /// `func+0x42/0xd0` (offset and size are absent with `nosym-offset`).
    Symbol {
        /// Function name.
        func: &'a [u8],
        /// Offset into the function.
        offset: Option<u64>,
        /// Size of the function.
        size: Option<u64>,
    },
    /// A raw address (`trace-cmd report` prints these).
    Address(u64),
}

impl<'a> ProbeSite<'a> {
    /// The function name, when the site is symbolic.
    #[must_use]
    pub fn function(&self) -> Option<&'a [u8]> {
        match *self {
            ProbeSite::Symbol { func, .. } => Some(func),
            ProbeSite::Address(_) => None,
        }
    }
}

/// Where a probe event was recognised from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeInfo<'a> {
    /// The probed function (for return probes: the function that
    /// returned).
    pub site: ProbeSite<'a>,
    /// For return probes, the return address: the caller
    /// (`iommu_map+0x42/0xd0`, `iommu_map_sg+...`, `__iommu_dma_unmap+...`).
    pub caller: Option<ProbeSite<'a>>,
    /// Recognised from the field set because the site is a raw address.
    pub by_fields: bool,
}

/// Entry probe on `__iommu_map(domain, iova, paddr, size, prot, ...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeMap<'a> {
    /// How it was recognised.
    pub probe: ProbeInfo<'a>,
    /// `struct iommu_domain *`.
    pub domain: u64,
    /// `domain->type`, when fetched (`dtype`).
    pub dtype: Option<u64>,
    /// First IOVA.
    pub iova: u64,
    /// First physical address.
    pub paddr: u64,
    /// Bytes.
    pub size: u64,
    /// IOMMU_READ/WRITE/... bits, when fetched.
    pub prot: Option<i64>,
}

/// Entry probe on `__iommu_unmap(domain, iova, size, ...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeUnmap<'a> {
    /// How it was recognised.
    pub probe: ProbeInfo<'a>,
    /// `struct iommu_domain *`.
    pub domain: u64,
    /// `domain->type`, when fetched.
    pub dtype: Option<u64>,
    /// First IOVA.
    pub iova: u64,
    /// Bytes asked for.
    pub size: u64,
}

/// Entry probe on an attach/detach function with `domain` and `dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeAttach<'a> {
    /// How it was recognised.
    pub probe: ProbeInfo<'a>,
    /// `struct iommu_domain *`.
    pub domain: u64,
    /// `domain->type`, when fetched.
    pub dtype: Option<u64>,
    /// Device name (quotes removed).
    pub dev: &'a [u8],
}

/// Entry probe on `iommu_domain_free(domain)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeDomainFree<'a> {
    /// How it was recognised.
    pub probe: ProbeInfo<'a>,
    /// `struct iommu_domain *`.
    pub domain: u64,
    /// `domain->type`, when fetched.
    pub dtype: Option<u64>,
}

/// Entry probe on `fq_flush_iotlb(cookie)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeFqFlushIotlb<'a> {
    /// How it was recognised.
    pub probe: ProbeInfo<'a>,
    /// `struct iommu_dma_cookie *`, when fetched.
    pub cookie: Option<u64>,
}

/// Entry probe on `free_iova_fast(iovad, pfn, size)` (the recorder's
/// `iova_free`): an IOVA range goes back to the allocator. Under a flush
/// queue that happens only after the IOTLB flush that covers it, so it ends
/// the range's lazy exposure window (where `fq_flush_iotlb` is inlined).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeIovaFree<'a> {
    /// How it was recognised.
    pub probe: ProbeInfo<'a>,
    /// First IOVA frame, in IOVA granules.
    pub pfn: u64,
    /// Length, in IOVA granules.
    pub pages: u64,
}

/// Return probe on `__iommu_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeMapReturn<'a> {
    /// How it was recognised; `caller` is `iommu_map`, `iommu_map_sg` ...
    pub probe: ProbeInfo<'a>,
    /// Return value (0 or `-errno`).
    pub ret: i64,
}

/// Return probe on `__iommu_unmap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeUnmapReturn<'a> {
    /// How it was recognised; `caller` is `iommu_unmap`,
    /// `__iommu_dma_unmap` ...
    pub probe: ProbeInfo<'a>,
    /// Bytes unmapped.
    pub unmapped: u64,
}

// ---------------------------------------------------------------- Event

/// A recognised event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// `iommu:map`.
    IommuMap(IommuMap),
    /// `iommu:unmap`.
    IommuUnmap(IommuUnmap),
    /// `iommu:attach_device_to_domain`.
    AttachDeviceToDomain {
        /// Device name.
        device: &'a [u8],
    },
    /// `iommu:detach_device_from_domain` (older kernels).
    DetachDeviceFromDomain {
        /// Device name.
        device: &'a [u8],
    },
    /// `iommu:add_device_to_group`.
    AddDeviceToGroup {
        /// IOMMU group id.
        group: u32,
        /// Device name.
        device: &'a [u8],
    },
    /// `iommu:remove_device_from_group`.
    RemoveDeviceFromGroup {
        /// IOMMU group id.
        group: u32,
        /// Device name.
        device: &'a [u8],
    },
    /// `iommu:io_page_fault`.
    IoPageFault(IoPageFault<'a>),

    /// `dma:dma_map_page`, or its 6.13+ name `dma_map_phys`.
    DmaMapPage(DmaMap<'a>),
    /// `dma:dma_unmap_page`, or `dma_unmap_phys`.
    DmaUnmapPage(DmaUnmap<'a>),
    /// `dma:dma_map_resource` (MMIO, not RAM).
    DmaMapResource(DmaMap<'a>),
    /// `dma:dma_unmap_resource`.
    DmaUnmapResource(DmaUnmap<'a>),
    /// `dma:dma_map_sg`.
    DmaMapSg(DmaMapSg<'a>),
    /// `dma:dma_unmap_sg`.
    DmaUnmapSg(DmaUnmapSg<'a>),
    /// `dma:dma_map_sg_err`.
    DmaMapSgErr(DmaMapSgErr<'a>),
    /// `dma:dma_alloc` (coherent).
    DmaAlloc(DmaAlloc<'a>),
    /// `dma:dma_free` (coherent).
    DmaFree(DmaFree<'a>),
    /// `dma:dma_alloc_pages`.
    DmaAllocPages(DmaAlloc<'a>),
    /// `dma:dma_free_pages`.
    DmaFreePages(DmaFree<'a>),
    /// `dma:dma_alloc_sgt`.
    DmaAllocSgt(DmaSgt<'a>),
    /// `dma:dma_free_sgt`.
    DmaFreeSgt(DmaSgt<'a>),
    /// `dma:dma_alloc_sgt_err`.
    DmaAllocSgtErr(DmaAlloc<'a>),
    /// `dma:dma_sync_single_for_cpu`.
    DmaSyncSingleForCpu(DmaSyncSingle<'a>),
    /// `dma:dma_sync_single_for_device`.
    DmaSyncSingleForDevice(DmaSyncSingle<'a>),
    /// `dma:dma_sync_sg_for_cpu`.
    DmaSyncSgForCpu(DmaSyncSg<'a>),
    /// `dma:dma_sync_sg_for_device`.
    DmaSyncSgForDevice(DmaSyncSg<'a>),

    /// `kmem:mm_page_alloc`.
    PageAlloc(PageAlloc<'a>),
    /// `kmem:mm_page_alloc_zone_locked`.
    PageAllocZoneLocked(PageAlloc<'a>),
    /// `kmem:mm_page_free`.
    PageFree(PageBlock),
    /// `kmem:mm_page_free_batched`: duplicates an `mm_page_free` of the
    /// same page on the kernels seen so far; do not count it as a second
    /// free.
    PageFreeBatched(PageBlock),
    /// `kmem:mm_page_pcpu_drain`.
    PagePcpuDrain(PageBlock),

    /// `intel_iommu:cache_tag_assign`.
    CacheTagAssign(CacheTag<'a>),
    /// `intel_iommu:cache_tag_unassign`.
    CacheTagUnassign(CacheTag<'a>),
    /// `intel_iommu:cache_tag_flush_all`.
    CacheTagFlushAll(CacheTag<'a>),
    /// `intel_iommu:cache_tag_flush_range` (after unmap).
    CacheTagFlushRange(CacheTagFlushRange<'a>),
    /// `intel_iommu:cache_tag_flush_range_np` (after map, caching mode).
    CacheTagFlushRangeNp(CacheTagFlushRange<'a>),
    /// `intel_iommu:qi_submit` (fields not parsed).
    QiSubmit,
    /// `intel_iommu:prq_report` (fields not parsed).
    PrqReport,

    /// Entry probe on `__iommu_map`.
    ProbeMap(ProbeMap<'a>),
    /// Entry probe on `__iommu_unmap`.
    ProbeUnmap(ProbeUnmap<'a>),
    /// Entry probe on `__iommu_attach_device` and similar attach functions.
    ProbeAttach(ProbeAttach<'a>),
    /// Entry probe on `iommu_detach_device` and similar.
    ProbeDetach(ProbeAttach<'a>),
    /// Entry probe on `iommu_domain_free`.
    ProbeDomainFree(ProbeDomainFree<'a>),
    /// Entry probe on `fq_flush_timeout`.
    ProbeFqFlushTimeout(ProbeInfo<'a>),
    /// Entry probe on `fq_flush_iotlb`.
    ProbeFqFlushIotlb(ProbeFqFlushIotlb<'a>),
    /// Entry probe on `free_iova_fast`.
    ProbeIovaFree(ProbeIovaFree<'a>),
    /// Return probe on `__iommu_map`.
    ProbeMapReturn(ProbeMapReturn<'a>),
    /// Return probe on `__iommu_unmap`.
    ProbeUnmapReturn(ProbeUnmapReturn<'a>),

    /// `printk:console`: the message, without log level.
    Console {
        /// Message bytes (leading blanks removed).
        msg: &'a [u8],
    },
    /// `ftrace:print` from `trace_marker` (`tracing_mark_write: msg`).
    Marker {
        /// Message bytes.
        msg: &'a [u8],
    },
}

impl Event<'_> {
    /// A stable label for statistics: `system:event` for tracepoints,
    /// `kprobe:function` / `kretprobe:function` for probes.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Event::IommuMap(_) => "iommu:map",
            Event::IommuUnmap(_) => "iommu:unmap",
            Event::AttachDeviceToDomain { .. } => "iommu:attach_device_to_domain",
            Event::DetachDeviceFromDomain { .. } => "iommu:detach_device_from_domain",
            Event::AddDeviceToGroup { .. } => "iommu:add_device_to_group",
            Event::RemoveDeviceFromGroup { .. } => "iommu:remove_device_from_group",
            Event::IoPageFault(_) => "iommu:io_page_fault",
            Event::DmaMapPage(_) => "dma:dma_map_page",
            Event::DmaUnmapPage(_) => "dma:dma_unmap_page",
            Event::DmaMapResource(_) => "dma:dma_map_resource",
            Event::DmaUnmapResource(_) => "dma:dma_unmap_resource",
            Event::DmaMapSg(_) => "dma:dma_map_sg",
            Event::DmaUnmapSg(_) => "dma:dma_unmap_sg",
            Event::DmaMapSgErr(_) => "dma:dma_map_sg_err",
            Event::DmaAlloc(_) => "dma:dma_alloc",
            Event::DmaFree(_) => "dma:dma_free",
            Event::DmaAllocPages(_) => "dma:dma_alloc_pages",
            Event::DmaFreePages(_) => "dma:dma_free_pages",
            Event::DmaAllocSgt(_) => "dma:dma_alloc_sgt",
            Event::DmaFreeSgt(_) => "dma:dma_free_sgt",
            Event::DmaAllocSgtErr(_) => "dma:dma_alloc_sgt_err",
            Event::DmaSyncSingleForCpu(_) => "dma:dma_sync_single_for_cpu",
            Event::DmaSyncSingleForDevice(_) => "dma:dma_sync_single_for_device",
            Event::DmaSyncSgForCpu(_) => "dma:dma_sync_sg_for_cpu",
            Event::DmaSyncSgForDevice(_) => "dma:dma_sync_sg_for_device",
            Event::PageAlloc(_) => "kmem:mm_page_alloc",
            Event::PageAllocZoneLocked(_) => "kmem:mm_page_alloc_zone_locked",
            Event::PageFree(_) => "kmem:mm_page_free",
            Event::PageFreeBatched(_) => "kmem:mm_page_free_batched",
            Event::PagePcpuDrain(_) => "kmem:mm_page_pcpu_drain",
            Event::CacheTagAssign(_) => "intel_iommu:cache_tag_assign",
            Event::CacheTagUnassign(_) => "intel_iommu:cache_tag_unassign",
            Event::CacheTagFlushAll(_) => "intel_iommu:cache_tag_flush_all",
            Event::CacheTagFlushRange(_) => "intel_iommu:cache_tag_flush_range",
            Event::CacheTagFlushRangeNp(_) => "intel_iommu:cache_tag_flush_range_np",
            Event::QiSubmit => "intel_iommu:qi_submit",
            Event::PrqReport => "intel_iommu:prq_report",
            Event::ProbeMap(_) => "kprobe:__iommu_map",
            Event::ProbeUnmap(_) => "kprobe:__iommu_unmap",
            Event::ProbeAttach(_) => "kprobe:attach",
            Event::ProbeDetach(_) => "kprobe:detach",
            Event::ProbeDomainFree(_) => "kprobe:iommu_domain_free",
            Event::ProbeFqFlushTimeout(_) => "kprobe:fq_flush_timeout",
            Event::ProbeFqFlushIotlb(_) => "kprobe:fq_flush_iotlb",
            Event::ProbeIovaFree(_) => "kprobe:free_iova_fast",
            Event::ProbeMapReturn(_) => "kretprobe:__iommu_map",
            Event::ProbeUnmapReturn(_) => "kretprobe:__iommu_unmap",
            Event::Console { .. } => "printk:console",
            Event::Marker { .. } => "ftrace:print",
        }
    }
}

/// Parses an event from its name and text body (as split by
/// [`classify_line`](super::line::classify_line)).
///
/// Returns `Ok(None)` for an event this crate does not know (the caller
/// counts it as skipped), including probes on functions it does not know.
///
/// # Errors
///
/// [`FieldError`] when the event is known but a required field is missing
/// or malformed.
pub fn parse_event<'a>(name: &[u8], body: &'a [u8]) -> Result<Option<Event<'a>>, FieldError> {
    if let Some(ev) = text::fast_event(name, body) {
        return Ok(Some(ev));
    }
    let kind = spec(None, name);
    // No tracepoint body starts with '(' but a probe's always does; a free
    // text message may start with anything.
    if body.first() == Some(&b'(')
        && !kind.is_some_and(|(k, _)| matches!(k.text, TextLayout::Message | TextLayout::Marker))
    {
        return text::parse_probe(body);
    }
    match kind {
        Some((k, event)) => text::parse_body(k, event, body).map(Some),
        None => Ok(None),
    }
}

/// Builds an event from the decoded fields of a binary record (trace.dat,
/// perf.data): the same descriptions and builders as [`parse_event`].
///
/// `system` is the event's trace system when the source knows it (a kind
/// is then matched only in its own system); `name` its event name. Fields
/// are looked up by the kernel's `field:` names, with the values a binary
/// decoder has: [`FieldValue::Unsigned`]/[`FieldValue::Signed`] for
/// integers (`enum dma_data_direction` as its number),
/// [`FieldValue::Str`] for `char[]` and `__data_loc char[]`,
/// [`FieldValue::Array`] for integer arrays. Fields a kernel version added
/// are ignored, optional fields it removed are `None` in the event, and
/// values kept only as printed text (flag lists such as `attrs`, hashed
/// pointers) are empty.
///
/// Probe events (any group or name) are recognised by their fields: an
/// entry probe has `__probe_ip`, a return probe `__probe_func` and
/// `__probe_ret_ip`. The source gives the probed function's name as the
/// pseudo-field `__probe_func` ([`FieldValue::Str`], resolved through
/// kallsyms); when it cannot, the raw addresses are used and the probe is
/// recognised by its field set, as for `trace-cmd report` text
/// ([`ProbeInfo::by_fields`]).
///
/// Returns `Ok(None)` for an event this crate does not know.
///
/// # Errors
///
/// [`FieldError`] when the event is known but a required field is missing
/// or has a value of the wrong type or range.
pub fn event_from_fields<'a>(
    system: Option<&[u8]>,
    name: &[u8],
    fields: &dyn FieldLookup<'a>,
) -> Result<Option<Event<'a>>, FieldError> {
    let sites = [fields.field("__probe_func"), fields.field("__probe_ip"), fields.field("__probe_ret_ip")];
    build_event(sites, || spec(system, name), |g, _| g.fill(fields))
}

/// The event of a binary record from its probe-site fields (`__probe_func`,
/// `__probe_ip`, `__probe_ret_ip`): a probe when any is there, else the
/// kind `spec` names. `fill` puts the record's values into the fields of
/// the kind (`true`: [`PROBE_FIELDS`]); shared by the by-name and the
/// by-position ([`super::plan`]) readers.
pub(crate) fn build_event<'a>(
    [func, ip, ret_ip]: [Option<FieldValue<'a>>; 3],
    spec: impl FnOnce() -> Option<(&'static EventSpec, &'static str)>,
    mut fill: impl FnMut(&mut Got<'a>, bool),
) -> Result<Option<Event<'a>>, FieldError> {
    if func.is_some() || ip.is_some() || ret_ip.is_some() {
        let site_of = |v: Option<FieldValue<'a>>| match v {
            Some(FieldValue::Str(f) | FieldValue::Text(f)) => {
                Some(ProbeSite::Symbol { func: f, offset: None, size: None })
            }
            Some(FieldValue::Unsigned(a)) => Some(ProbeSite::Address(a)),
            Some(FieldValue::Signed(a)) => Some(ProbeSite::Address(a as u64)),
            _ => None,
        };
        let Some(site) = site_of(func).or_else(|| site_of(ip)) else { return Ok(None) };
        let caller = ret_ip.map(|v| site_of(Some(v)).unwrap_or(ProbeSite::Address(0)));
        let mut g = Got::new("kprobe", PROBE_FIELDS);
        fill(&mut g, true);
        return probe_event(site, caller, &mut g);
    }
    let Some((kind, event)) = spec() else { return Ok(None) };
    let mut g = Got::new(event, kind.fields);
    fill(&mut g, false);
    g.check_required()?;
    (kind.build)(&g).map(Some)
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "binary_tests.rs"]
mod binary_tests;
