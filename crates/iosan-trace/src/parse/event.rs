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

use super::fields::{Tok, Toks};
use super::num::{self, NumError};
use super::scan::{self, Cur};

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
fn ferr(event: &'static str, field: &'static str, problem: FieldProblem, value: &[u8]) -> FieldError {
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
    /// Pages invalidated.
    pub pages: u64,
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
            Event::ProbeMapReturn(_) => "kretprobe:__iommu_map",
            Event::ProbeUnmapReturn(_) => "kretprobe:__iommu_unmap",
            Event::Console { .. } => "printk:console",
            Event::Marker { .. } => "ftrace:print",
        }
    }
}

/// Parses an event from its name and body (as split by
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
    // Free-text events first: their message may start with anything.
    match name {
        b"console" => return Ok(Some(Event::Console { msg: body })),
        b"tracing_mark_write" => return Ok(Some(Event::Marker { msg: body })),
        b"print" => return Ok(parse_print(body)),
        _ => {}
    }
    // No stock tracepoint body starts with '('; a probe's always does.
    if body.first() == Some(&b'(') {
        return parse_probe(body);
    }
    let ev = match name {
        b"map" => Event::IommuMap(parse_iommu_map(body)?),
        b"unmap" => Event::IommuUnmap(parse_iommu_unmap(body)?),
        b"attach_device_to_domain" => {
            Event::AttachDeviceToDomain { device: device_only("attach_device_to_domain", body)? }
        }
        b"detach_device_from_domain" => {
            Event::DetachDeviceFromDomain { device: device_only("detach_device_from_domain", body)? }
        }
        b"add_device_to_group" => {
            let (group, device) = group_device("add_device_to_group", body)?;
            Event::AddDeviceToGroup { group, device }
        }
        b"remove_device_from_group" => {
            let (group, device) = group_device("remove_device_from_group", body)?;
            Event::RemoveDeviceFromGroup { group, device }
        }
        b"io_page_fault" => Event::IoPageFault(parse_io_page_fault(body)?),

        b"dma_map_page" => Event::DmaMapPage(parse_dma_map("dma_map_page", body)?),
        b"dma_map_phys" => Event::DmaMapPage(parse_dma_map("dma_map_phys", body)?),
        b"dma_map_resource" => Event::DmaMapResource(parse_dma_map("dma_map_resource", body)?),
        b"dma_unmap_page" => Event::DmaUnmapPage(parse_dma_unmap("dma_unmap_page", body)?),
        b"dma_unmap_phys" => Event::DmaUnmapPage(parse_dma_unmap("dma_unmap_phys", body)?),
        b"dma_unmap_resource" => Event::DmaUnmapResource(parse_dma_unmap("dma_unmap_resource", body)?),
        b"dma_map_sg" => Event::DmaMapSg(parse_dma_map_sg(body)?),
        b"dma_unmap_sg" => Event::DmaUnmapSg(parse_dma_unmap_sg(body)?),
        b"dma_map_sg_err" => Event::DmaMapSgErr(parse_dma_map_sg_err(body)?),
        b"dma_alloc" => Event::DmaAlloc(parse_dma_alloc("dma_alloc", body)?),
        b"dma_alloc_pages" => Event::DmaAllocPages(parse_dma_alloc("dma_alloc_pages", body)?),
        b"dma_alloc_sgt_err" => Event::DmaAllocSgtErr(parse_dma_alloc("dma_alloc_sgt_err", body)?),
        b"dma_free" => Event::DmaFree(parse_dma_free("dma_free", body)?),
        b"dma_free_pages" => Event::DmaFreePages(parse_dma_free("dma_free_pages", body)?),
        b"dma_alloc_sgt" => Event::DmaAllocSgt(parse_dma_sgt("dma_alloc_sgt", body)?),
        b"dma_free_sgt" => Event::DmaFreeSgt(parse_dma_sgt("dma_free_sgt", body)?),
        b"dma_sync_single_for_cpu" => {
            Event::DmaSyncSingleForCpu(parse_dma_sync_single("dma_sync_single_for_cpu", body)?)
        }
        b"dma_sync_single_for_device" => {
            Event::DmaSyncSingleForDevice(parse_dma_sync_single("dma_sync_single_for_device", body)?)
        }
        b"dma_sync_sg_for_cpu" => Event::DmaSyncSgForCpu(parse_dma_sync_sg("dma_sync_sg_for_cpu", body)?),
        b"dma_sync_sg_for_device" => Event::DmaSyncSgForDevice(parse_dma_sync_sg("dma_sync_sg_for_device", body)?),

        b"mm_page_alloc" => Event::PageAlloc(parse_page_alloc("mm_page_alloc", body)?),
        b"mm_page_alloc_zone_locked" => {
            Event::PageAllocZoneLocked(parse_page_alloc("mm_page_alloc_zone_locked", body)?)
        }
        b"mm_page_free" => Event::PageFree(parse_page_block("mm_page_free", body)?),
        b"mm_page_free_batched" => Event::PageFreeBatched(parse_page_block("mm_page_free_batched", body)?),
        b"mm_page_pcpu_drain" => Event::PagePcpuDrain(parse_page_block("mm_page_pcpu_drain", body)?),

        b"cache_tag_assign" => Event::CacheTagAssign(parse_cache_tag("cache_tag_assign", body)?),
        b"cache_tag_unassign" => Event::CacheTagUnassign(parse_cache_tag("cache_tag_unassign", body)?),
        b"cache_tag_flush_all" => Event::CacheTagFlushAll(parse_cache_tag("cache_tag_flush_all", body)?),
        b"cache_tag_flush_range" => Event::CacheTagFlushRange(parse_flush_range("cache_tag_flush_range", body)?),
        b"cache_tag_flush_range_np" => {
            Event::CacheTagFlushRangeNp(parse_flush_range("cache_tag_flush_range_np", body)?)
        }
        b"qi_submit" => Event::QiSubmit,
        b"prq_report" => Event::PrqReport,
        _ => return Ok(None),
    };
    Ok(Some(ev))
}

// ---------------------------------------------------------------- helpers

type Conv = fn(&[u8]) -> Result<u64, NumError>;

#[inline]
fn req<'a>(event: &'static str, field: &'static str, v: Option<&'a [u8]>) -> Result<&'a [u8], FieldError> {
    v.ok_or_else(|| ferr(event, field, FieldProblem::Missing, &[]))
}

#[inline]
fn number(event: &'static str, field: &'static str, v: Option<&[u8]>, conv: Conv) -> Result<u64, FieldError> {
    let v = req(event, field, v)?;
    conv(v).map_err(|e| ferr(event, field, FieldProblem::Number(e), v))
}

#[inline]
fn opt_number(
    event: &'static str,
    field: &'static str,
    v: Option<&[u8]>,
    conv: Conv,
) -> Result<Option<u64>, FieldError> {
    match v {
        None => Ok(None),
        Some(_) => number(event, field, v, conv).map(Some),
    }
}

#[inline]
fn number_u32(event: &'static str, field: &'static str, v: Option<&[u8]>, conv: Conv) -> Result<u32, FieldError> {
    let n = number(event, field, v, conv)?;
    u32::try_from(n).map_err(|_| ferr(event, field, FieldProblem::Number(NumError::Overflow), v.unwrap_or_default()))
}

fn signed(event: &'static str, field: &'static str, v: Option<&[u8]>) -> Result<i64, FieldError> {
    let v = req(event, field, v)?;
    num::auto_i64(v).map_err(|e| ferr(event, field, FieldProblem::Number(e), v))
}

/// Hex printed with `%llx`; a stray `0x` prefix is tolerated.
#[inline]
fn hex_maybe_0x(s: &[u8]) -> Result<u64, NumError> {
    num::hex_u64(num::strip_0x(s).unwrap_or(s))
}

fn order(event: &'static str, v: Option<&[u8]>) -> Result<u32, FieldError> {
    let n = number(event, "order", v, num::dec_u64)?;
    match u32::try_from(n) {
        Ok(o) if o <= MAX_ORDER => Ok(o),
        _ => Err(ferr(event, "order", FieldProblem::OrderTooLarge, v.unwrap_or_default())),
    }
}

// ---------------------------------------------------------------- iommu

/// `IOMMU: iova=0x%016llx - 0x%016llx paddr=0x%016llx size=%zu`, exactly.
#[inline]
fn fast_iommu_map(body: &[u8]) -> Option<IommuMap> {
    let mut c = Cur::new(body);
    c.lit(b"IOMMU: iova=")?;
    let iova = c.auto()?;
    c.lit(b" - ")?;
    let end = c.auto()?;
    c.lit(b" paddr=")?;
    let paddr = c.auto()?;
    c.lit(b" size=")?;
    let size = c.dec()?;
    c.end()?;
    (end == iova.wrapping_add(size)).then_some(IommuMap { iova, paddr, size })
}

/// `IOMMU: iova=0x%016llx - 0x%016llx size=%zu unmapped_size=%zu`, exactly.
#[inline]
fn fast_iommu_unmap(body: &[u8]) -> Option<IommuUnmap> {
    let mut c = Cur::new(body);
    c.lit(b"IOMMU: iova=")?;
    let iova = c.auto()?;
    c.lit(b" - ")?;
    let end = c.auto()?;
    c.lit(b" size=")?;
    let size = c.dec()?;
    c.lit(b" unmapped_size=")?;
    let unmapped_size = c.dec()?;
    c.end()?;
    (end == iova.wrapping_add(size)).then_some(IommuUnmap { iova, size, unmapped_size })
}

fn parse_iommu_map(body: &[u8]) -> Result<IommuMap, FieldError> {
    const EV: &str = "map";
    if let Some(m) = fast_iommu_map(body) {
        return Ok(m);
    }
    let (mut iova, mut paddr, mut size, mut end) = (None, None, None, None);
    let mut after_dash = false;
    for Tok { key, val } in Toks::new(body) {
        match key {
            b"iova" => iova = iova.or(Some(val)),
            b"paddr" => paddr = paddr.or(Some(val)),
            b"size" => size = size.or(Some(val)),
            b"" if after_dash => end = end.or(Some(val)),
            _ => {}
        }
        after_dash = key.is_empty() && val == b"-";
    }
    let iova = number(EV, "iova", iova, num::auto_u64)?;
    let paddr = number(EV, "paddr", paddr, num::auto_u64)?;
    let size = number(EV, "size", size, num::dec_u64)?;
    check_end(EV, iova, size, end)?;
    Ok(IommuMap { iova, paddr, size })
}

fn parse_iommu_unmap(body: &[u8]) -> Result<IommuUnmap, FieldError> {
    const EV: &str = "unmap";
    if let Some(u) = fast_iommu_unmap(body) {
        return Ok(u);
    }
    let (mut iova, mut size, mut unmapped, mut end) = (None, None, None, None);
    let mut after_dash = false;
    for Tok { key, val } in Toks::new(body) {
        match key {
            b"iova" => iova = iova.or(Some(val)),
            b"size" => size = size.or(Some(val)),
            b"unmapped_size" => unmapped = unmapped.or(Some(val)),
            b"" if after_dash => end = end.or(Some(val)),
            _ => {}
        }
        after_dash = key.is_empty() && val == b"-";
    }
    let iova = number(EV, "iova", iova, num::auto_u64)?;
    let size = number(EV, "size", size, num::dec_u64)?;
    let unmapped_size = number(EV, "unmapped_size", unmapped, num::dec_u64)?;
    check_end(EV, iova, size, end)?;
    Ok(IommuUnmap { iova, size, unmapped_size })
}

/// The printed end (`iova - end`) must be `iova + size` (the kernel
/// computes it in 64-bit arithmetic, so it wraps).
fn check_end(event: &'static str, iova: u64, size: u64, end: Option<&[u8]>) -> Result<(), FieldError> {
    if let Some(e) = end {
        let v = num::auto_u64(e).map_err(|err| ferr(event, "iova end", FieldProblem::Number(err), e))?;
        if v != iova.wrapping_add(size) {
            return Err(ferr(event, "iova end", FieldProblem::Inconsistent, e));
        }
    }
    Ok(())
}

fn device_only<'a>(event: &'static str, body: &'a [u8]) -> Result<&'a [u8], FieldError> {
    let dev = Toks::new(body).find(|t| t.key == b"device").map(|t| t.val);
    req(event, "device", dev)
}

fn group_device<'a>(event: &'static str, body: &'a [u8]) -> Result<(u32, &'a [u8]), FieldError> {
    let (mut group, mut device) = (None, None);
    for Tok { key, val } in Toks::new(body) {
        match key {
            b"groupID" | b"group" => group = group.or(Some(val)),
            b"device" => device = device.or(Some(val)),
            _ => {}
        }
    }
    let group = number_u32(event, "groupID", group, num::auto_u64)?;
    Ok((group, req(event, "device", device)?))
}

fn parse_io_page_fault(body: &[u8]) -> Result<IoPageFault<'_>, FieldError> {
    const EV: &str = "io_page_fault";
    let (mut driver, mut device, mut iova, mut flags) = (None, None, None, None);
    for Tok { key, val } in Toks::new(body) {
        match key {
            b"" => {
                if driver.is_none() {
                    match val.strip_prefix(b"IOMMU:") {
                        Some(d) if !d.is_empty() => driver = Some(d),
                        Some(_) => driver = Some(&[][..]),
                        None => {
                            driver = Some(&[][..]);
                            device = Some(val);
                        }
                    }
                } else if device.is_none() || device == Some(&[][..]) {
                    device = Some(val);
                }
            }
            b"iova" => iova = iova.or(Some(val)),
            b"flags" => flags = flags.or(Some(val)),
            _ => {}
        }
    }
    Ok(IoPageFault {
        driver: req(EV, "driver", driver)?,
        device: req(EV, "device", device)?,
        iova: number(EV, "iova", iova, num::auto_u64)?,
        flags: number(EV, "flags", flags, num::auto_u64)?,
    })
}

// ---------------------------------------------------------------- dma

/// The fields common to dma events. `device` is the first bare word (or
/// `device=` in libtraceevent's `[FAILED TO PARSE]` dumps).
#[derive(Default)]
struct DmaFields<'a> {
    device: Option<&'a [u8]>,
    dir: Option<&'a [u8]>,
    dma_addr: Option<&'a [u8]>,
    size: Option<&'a [u8]>,
    phys_addr: Option<&'a [u8]>,
    attrs: Option<&'a [u8]>,
    flags: Option<&'a [u8]>,
    virt_addr: Option<&'a [u8]>,
    nents: Option<&'a [u8]>,
    ents: Option<&'a [u8]>,
    full_nents: Option<&'a [u8]>,
    full_ents: Option<&'a [u8]>,
    truncated: bool,
    truncated_field: Option<&'a [u8]>,
    dma_addrs: Option<&'a [u8]>,
    sizes: Option<&'a [u8]>,
    phys_addrs: Option<&'a [u8]>,
    addrs: Option<&'a [u8]>,
    err: Option<&'a [u8]>,
    /// The body is libtraceevent's `[FAILED TO PARSE]` raw dump.
    raw: bool,
}

fn dma_fields(body: &[u8]) -> DmaFields<'_> {
    let mut f = DmaFields::default();
    let mut rest = body;
    if let Some(r) = body.strip_prefix(b"[FAILED TO PARSE]") {
        f.raw = true;
        rest = r;
    }
    let mut first = true;
    for Tok { key, val } in Toks::new(rest) {
        let slot = match key {
            b"" => {
                if first && !f.raw {
                    f.device = Some(val);
                } else if val == b"[TRUNCATED]" {
                    f.truncated = true;
                }
                first = false;
                continue;
            }
            b"device" => &mut f.device,
            b"dir" => &mut f.dir,
            b"dma_addr" => &mut f.dma_addr,
            b"size" => &mut f.size,
            b"phys_addr" => &mut f.phys_addr,
            b"attrs" => &mut f.attrs,
            b"flags" => &mut f.flags,
            b"virt_addr" => &mut f.virt_addr,
            b"nents" => &mut f.nents,
            b"ents" => &mut f.ents,
            b"full_nents" => &mut f.full_nents,
            b"full_ents" => &mut f.full_ents,
            b"truncated" => &mut f.truncated_field,
            b"dma_addrs" => &mut f.dma_addrs,
            b"sizes" | b"lengths" => &mut f.sizes,
            b"phys_addrs" => &mut f.phys_addrs,
            b"addrs" => &mut f.addrs,
            b"err" => &mut f.err,
            _ => {
                first = false;
                continue;
            }
        };
        first = false;
        if slot.is_none() {
            *slot = Some(val);
        }
    }
    f
}

fn direction(event: &'static str, v: Option<&[u8]>) -> Result<DmaDirection, FieldError> {
    let v = req(event, "dir", v)?;
    match v {
        b"BIDIRECTIONAL" | b"0" => Ok(DmaDirection::Bidirectional),
        b"TO_DEVICE" | b"1" => Ok(DmaDirection::ToDevice),
        b"FROM_DEVICE" | b"2" => Ok(DmaDirection::FromDevice),
        b"NONE" | b"3" => Ok(DmaDirection::None),
        _ => Err(ferr(event, "dir", FieldProblem::UnknownDirection, v)),
    }
}

/// Parses `{0x1,0x2}` (kernel `__print_array`), or `ARRAY[b0, b1, ...]`
/// (libtraceevent raw bytes, little-endian elements of `width` bytes).
fn array(event: &'static str, field: &'static str, v: Option<&[u8]>, width: usize) -> Result<Vec<u64>, FieldError> {
    let v = req(event, field, v)?;
    let bad = |p| ferr(event, field, p, v);
    if let Some(inner) = v.strip_prefix(b"{") {
        let inner = inner.strip_suffix(b"}").ok_or_else(|| bad(FieldProblem::BadArray))?;
        let mut out = Vec::new();
        if inner.iter().all(|&b| b == b' ') {
            return Ok(out);
        }
        for el in inner.split(|&b| b == b',') {
            if out.len() >= MAX_ARRAY_LEN {
                return Err(bad(FieldProblem::TooManyElements));
            }
            let el = trim_blanks(el);
            out.push(num::auto_u64(el).map_err(|e| ferr(event, field, FieldProblem::Number(e), el))?);
        }
        return Ok(out);
    }
    if let Some(inner) = v.strip_prefix(b"ARRAY[") {
        // 1..=8 bytes per element keeps the shifts below 64.
        let width = width.clamp(1, 8);
        let inner = inner.strip_suffix(b"]").ok_or_else(|| bad(FieldProblem::BadArray))?;
        let mut out = Vec::new();
        let mut cur: u64 = 0;
        let mut n = 0usize;
        if inner.iter().all(|&b| b == b' ') {
            return Ok(out);
        }
        for el in inner.split(|&b| b == b',') {
            let el = trim_blanks(el);
            let byte = num::hex_u64(el).map_err(|e| ferr(event, field, FieldProblem::Number(e), el))?;
            if byte > 0xff {
                return Err(ferr(event, field, FieldProblem::Number(NumError::Overflow), el));
            }
            let shift = u32::try_from((n % width) * 8).unwrap_or(0);
            cur |= byte << shift;
            n += 1;
            if n % width == 0 {
                if out.len() >= MAX_ARRAY_LEN {
                    return Err(bad(FieldProblem::TooManyElements));
                }
                out.push(cur);
                cur = 0;
            }
        }
        if n % width != 0 {
            return Err(bad(FieldProblem::BadArray));
        }
        return Ok(out);
    }
    Err(bad(FieldProblem::BadArray))
}

fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let Some((b' ', r)) = s.split_first() {
        s = r;
    }
    while let Some((b' ', r)) = s.split_last() {
        s = r;
    }
    s
}

/// `printed/total`.
fn counted(event: &'static str, field: &'static str, v: Option<&[u8]>) -> Result<Counted, FieldError> {
    let v = req(event, field, v)?;
    let slash =
        memchr::memchr(b'/', v).ok_or_else(|| ferr(event, field, FieldProblem::Number(NumError::InvalidDigit), v))?;
    let printed = number_u32(event, field, v.get(..slash), num::dec_u64)?;
    let total = number_u32(event, field, v.get(slash + 1..), num::dec_u64)?;
    Ok(Counted { printed, total })
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The device: the first word, which the tokenizer must see as a bare word
/// (no `=`), and not libtraceevent's `[FAILED TO PARSE]`.
#[inline]
fn fast_dma_device<'a>(c: &mut Cur<'a>) -> Option<&'a [u8]> {
    if c.s.first() == Some(&b'[') {
        return None;
    }
    let device = c.word();
    (!device.is_empty() && scan::find_byte(device, b'=') == device.len()).then_some(device)
}

#[inline]
fn fast_direction(v: &[u8]) -> Option<DmaDirection> {
    match v {
        b"BIDIRECTIONAL" | b"0" => Some(DmaDirection::Bidirectional),
        b"TO_DEVICE" | b"1" => Some(DmaDirection::ToDevice),
        b"FROM_DEVICE" | b"2" => Some(DmaDirection::FromDevice),
        b"NONE" | b"3" => Some(DmaDirection::None),
        _ => None,
    }
}

/// `%s dir=%s dma_addr=%llx size=%zu phys_addr=%llx attrs=%s`, exactly.
#[inline]
fn fast_dma_map(body: &[u8]) -> Option<DmaMap<'_>> {
    let mut c = Cur::new(body);
    let device = fast_dma_device(&mut c)?;
    c.lit(b" dir=")?;
    let dir = fast_direction(c.word())?;
    c.lit(b" dma_addr=")?;
    let dma_addr = c.hex_maybe_0x()?;
    c.lit(b" size=")?;
    let size = c.dec()?;
    c.lit(b" phys_addr=")?;
    let phys_addr = c.hex_maybe_0x()?;
    c.lit(b" attrs=")?;
    let attrs = c.plain_val()?;
    c.end()?;
    Some(DmaMap { device, dir, dma_addr, size, phys_addr, attrs })
}

/// `%s dir=%s dma_addr=%llx size=%zu attrs=%s`, exactly.
#[inline]
fn fast_dma_unmap(body: &[u8]) -> Option<DmaUnmap<'_>> {
    let mut c = Cur::new(body);
    let device = fast_dma_device(&mut c)?;
    c.lit(b" dir=")?;
    let dir = fast_direction(c.word())?;
    c.lit(b" dma_addr=")?;
    let dma_addr = c.hex_maybe_0x()?;
    c.lit(b" size=")?;
    let size = c.dec()?;
    c.lit(b" attrs=")?;
    let attrs = c.plain_val()?;
    c.end()?;
    Some(DmaUnmap { device, dir, dma_addr, size, attrs })
}

fn parse_dma_map<'a>(ev: &'static str, body: &'a [u8]) -> Result<DmaMap<'a>, FieldError> {
    if let Some(m) = fast_dma_map(body) {
        return Ok(m);
    }
    let f = dma_fields(body);
    Ok(DmaMap {
        device: req(ev, "device", f.device)?,
        dir: direction(ev, f.dir)?,
        dma_addr: number(ev, "dma_addr", f.dma_addr, hex_maybe_0x)?,
        size: number(ev, "size", f.size, num::dec_u64)?,
        phys_addr: number(ev, "phys_addr", f.phys_addr, hex_maybe_0x)?,
        attrs: f.attrs.unwrap_or_default(),
    })
}

fn parse_dma_unmap<'a>(ev: &'static str, body: &'a [u8]) -> Result<DmaUnmap<'a>, FieldError> {
    if let Some(u) = fast_dma_unmap(body) {
        return Ok(u);
    }
    let f = dma_fields(body);
    Ok(DmaUnmap {
        device: req(ev, "device", f.device)?,
        dir: direction(ev, f.dir)?,
        dma_addr: number(ev, "dma_addr", f.dma_addr, hex_maybe_0x)?,
        size: number(ev, "size", f.size, num::dec_u64)?,
        attrs: f.attrs.unwrap_or_default(),
    })
}

fn truncated_flag(ev: &'static str, f: &DmaFields<'_>) -> Result<bool, FieldError> {
    match f.truncated_field {
        Some(v) => Ok(f.truncated || number(ev, "truncated", Some(v), num::auto_u64)? != 0),
        None => Ok(f.truncated),
    }
}

fn parse_dma_map_sg(body: &[u8]) -> Result<DmaMapSg<'_>, FieldError> {
    const EV: &str = "dma_map_sg";
    let f = dma_fields(body);
    let device = req(EV, "device", f.device)?;
    let dir = direction(EV, f.dir)?;
    let truncated = truncated_flag(EV, &f)?;
    let dma_addrs = array(EV, "dma_addrs", f.dma_addrs, 8)?;
    let sizes = array(EV, "sizes", f.sizes, if f.raw { 4 } else { 8 })?;
    let phys_addrs = array(EV, "phys_addrs", f.phys_addrs, 8)?;
    let (nents, ents) = if f.raw {
        (
            Counted {
                printed: len_u32(phys_addrs.len()),
                total: number_u32(EV, "full_nents", f.full_nents, num::auto_u64)?,
            },
            Counted {
                printed: len_u32(dma_addrs.len()),
                total: number_u32(EV, "full_ents", f.full_ents, num::auto_u64)?,
            },
        )
    } else {
        (counted(EV, "nents", f.nents)?, counted(EV, "ents", f.ents)?)
    };
    Ok(DmaMapSg {
        device,
        dir,
        nents,
        ents,
        truncated,
        dma_addrs,
        sizes,
        phys_addrs,
        attrs: f.attrs.unwrap_or_default(),
    })
}

fn parse_dma_unmap_sg(body: &[u8]) -> Result<DmaUnmapSg<'_>, FieldError> {
    const EV: &str = "dma_unmap_sg";
    let f = dma_fields(body);
    let device = req(EV, "device", f.device)?;
    let dir = direction(EV, f.dir)?;
    let truncated = truncated_flag(EV, &f)?;
    let phys_addrs = array(EV, "phys_addrs", f.phys_addrs.or(f.addrs), 8)?;
    Ok(DmaUnmapSg { device, dir, phys_addrs, truncated, attrs: f.attrs.unwrap_or_default() })
}

fn parse_dma_map_sg_err(body: &[u8]) -> Result<DmaMapSgErr<'_>, FieldError> {
    const EV: &str = "dma_map_sg_err";
    let f = dma_fields(body);
    let device = req(EV, "device", f.device)?;
    let dir = direction(EV, f.dir)?;
    let phys_addrs = array(EV, "dma_addrs", f.dma_addrs.or(f.phys_addrs), 8)?;
    Ok(DmaMapSgErr { device, dir, phys_addrs, err: signed(EV, "err", f.err)?, attrs: f.attrs.unwrap_or_default() })
}

fn parse_dma_alloc<'a>(ev: &'static str, body: &'a [u8]) -> Result<DmaAlloc<'a>, FieldError> {
    let f = dma_fields(body);
    Ok(DmaAlloc {
        device: req(ev, "device", f.device)?,
        dir: direction(ev, f.dir)?,
        dma_addr: number(ev, "dma_addr", f.dma_addr, hex_maybe_0x)?,
        size: number(ev, "size", f.size, num::dec_u64)?,
        virt_addr: f.virt_addr.unwrap_or_default(),
        flags: f.flags.unwrap_or_default(),
        attrs: f.attrs.unwrap_or_default(),
    })
}

fn parse_dma_free<'a>(ev: &'static str, body: &'a [u8]) -> Result<DmaFree<'a>, FieldError> {
    let f = dma_fields(body);
    Ok(DmaFree {
        device: req(ev, "device", f.device)?,
        dir: direction(ev, f.dir)?,
        dma_addr: number(ev, "dma_addr", f.dma_addr, hex_maybe_0x)?,
        size: number(ev, "size", f.size, num::dec_u64)?,
        virt_addr: f.virt_addr.unwrap_or_default(),
        attrs: f.attrs.unwrap_or_default(),
    })
}

fn parse_dma_sgt<'a>(ev: &'static str, body: &'a [u8]) -> Result<DmaSgt<'a>, FieldError> {
    let f = dma_fields(body);
    Ok(DmaSgt {
        device: req(ev, "device", f.device)?,
        dir: direction(ev, f.dir)?,
        dma_addr: number(ev, "dma_addr", f.dma_addr, hex_maybe_0x)?,
        size: number(ev, "size", f.size, num::dec_u64)?,
        phys_addrs: array(ev, "phys_addrs", f.phys_addrs, 8)?,
        flags: f.flags.unwrap_or_default(),
        attrs: f.attrs.unwrap_or_default(),
    })
}

fn parse_dma_sync_single<'a>(ev: &'static str, body: &'a [u8]) -> Result<DmaSyncSingle<'a>, FieldError> {
    let f = dma_fields(body);
    Ok(DmaSyncSingle {
        device: req(ev, "device", f.device)?,
        dir: direction(ev, f.dir)?,
        dma_addr: number(ev, "dma_addr", f.dma_addr, hex_maybe_0x)?,
        size: number(ev, "size", f.size, num::dec_u64)?,
    })
}

fn parse_dma_sync_sg<'a>(ev: &'static str, body: &'a [u8]) -> Result<DmaSyncSg<'a>, FieldError> {
    let f = dma_fields(body);
    Ok(DmaSyncSg {
        device: req(ev, "device", f.device)?,
        dir: direction(ev, f.dir)?,
        dma_addrs: array(ev, "dma_addrs", f.dma_addrs, 8)?,
        sizes: array(ev, "sizes", f.sizes, if f.raw { 4 } else { 8 })?,
    })
}

// ---------------------------------------------------------------- kmem

/// A `page=` value that is a NULL pointer: `%p` of NULL prints zeros (or
/// `(null)`/`(nil)` depending on the printer).
fn page_is_null(v: Option<&[u8]>) -> bool {
    match v {
        Some(b"(null)" | b"(nil)") => true,
        Some(v) => {
            let digits = num::strip_0x(v).unwrap_or(v);
            !digits.is_empty() && digits.iter().all(|&b| b == b'0')
        }
        None => false,
    }
}

/// `page=%p pfn=0x%lx order=%d migratetype=%d gfp_flags=%s`, exactly, with
/// a non-negative decimal migrate type.
#[inline]
fn fast_page_alloc(body: &[u8]) -> Option<PageAlloc<'_>> {
    let mut c = Cur::new(body);
    c.lit(b"page=")?;
    let page = c.plain_val()?;
    c.lit(b" pfn=")?;
    let pfn = c.auto()?;
    c.lit(b" order=")?;
    let order = fast_order(&mut c)?;
    c.lit(b" migratetype=")?;
    let mt = i64::try_from(c.dec()?).ok()?;
    c.lit(b" gfp_flags=")?;
    let gfp_flags = c.plain_val()?;
    c.end()?;
    Some(PageAlloc { pfn, order, page_is_null: page_is_null(Some(page)), migratetype: Some(mt), gfp_flags })
}

#[inline]
fn fast_order(c: &mut Cur<'_>) -> Option<u32> {
    u32::try_from(c.dec()?).ok().filter(|&o| o <= MAX_ORDER)
}

/// `page=%p pfn=0x%lx order=%d`, exactly.
#[inline]
fn fast_page_block(body: &[u8]) -> Option<PageBlock> {
    let mut c = Cur::new(body);
    c.lit(b"page=")?;
    c.plain_val()?;
    c.lit(b" pfn=")?;
    let pfn = c.auto()?;
    c.lit(b" order=")?;
    let order = fast_order(&mut c)?;
    c.end()?;
    Some(PageBlock { pfn, order })
}

fn parse_page_alloc<'a>(ev: &'static str, body: &'a [u8]) -> Result<PageAlloc<'a>, FieldError> {
    if let Some(a) = fast_page_alloc(body) {
        return Ok(a);
    }
    let (mut page, mut pfn, mut ord, mut mt, mut gfp) = (None, None, None, None, None);
    for Tok { key, val } in Toks::new(body) {
        match key {
            b"page" => page = page.or(Some(val)),
            b"pfn" => pfn = pfn.or(Some(val)),
            b"order" => ord = ord.or(Some(val)),
            b"migratetype" => mt = mt.or(Some(val)),
            b"gfp_flags" => gfp = gfp.or(Some(val)),
            _ => {}
        }
    }
    Ok(PageAlloc {
        pfn: number(ev, "pfn", pfn, num::auto_u64)?,
        order: order(ev, ord)?,
        page_is_null: page_is_null(page),
        migratetype: match mt {
            Some(_) => Some(signed(ev, "migratetype", mt)?),
            None => None,
        },
        gfp_flags: gfp.unwrap_or_default(),
    })
}

fn parse_page_block(ev: &'static str, body: &[u8]) -> Result<PageBlock, FieldError> {
    if let Some(b) = fast_page_block(body) {
        return Ok(b);
    }
    let (mut pfn, mut ord) = (None, None);
    for Tok { key, val } in Toks::new(body) {
        match key {
            b"pfn" => pfn = pfn.or(Some(val)),
            b"order" => ord = ord.or(Some(val)),
            _ => {}
        }
    }
    Ok(PageBlock {
        pfn: number(ev, "pfn", pfn, num::auto_u64)?,
        // mm_page_free_batched hard-codes order=0; tolerate its absence.
        order: if ord.is_none() && ev == "mm_page_free_batched" { 0 } else { order(ev, ord)? },
    })
}

// ---------------------------------------------------------------- intel_iommu

/// `iommu/dev type T did N pasid N ref N`: word pairs after the first word.
fn parse_cache_tag<'a>(ev: &'static str, body: &'a [u8]) -> Result<CacheTag<'a>, FieldError> {
    let mut words = body.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let first = req(ev, "iommu/dev", words.next())?;
    let (iommu, dev) = match memchr::memchr(b'/', first) {
        Some(p) => (first.get(..p).unwrap_or_default(), first.get(p + 1..).unwrap_or_default()),
        None => (first, &[][..]),
    };
    let (mut tag_type, mut did, mut pasid, mut refs) = (None, None, None, None);
    let mut prev: &[u8] = &[];
    for w in words {
        match prev {
            b"type" => tag_type = tag_type.or(Some(w)),
            b"did" => did = did.or(Some(w)),
            b"pasid" => pasid = pasid.or(Some(w)),
            b"ref" => refs = refs.or(Some(w)),
            _ => {}
        }
        prev = w;
    }
    Ok(CacheTag {
        iommu,
        dev,
        tag_type: tag_type.unwrap_or_default(),
        did: number_u32(ev, "did", did, num::auto_u64)?,
        pasid: number_u32(ev, "pasid", pasid, num::auto_u64)?,
        refs: number_u32(ev, "ref", refs, num::auto_u64)?,
    })
}

/// A whole `' '`-separated word as [`num::auto_u64`] reads it.
#[inline]
fn whole_auto(w: &[u8]) -> Option<u64> {
    let mut c = Cur::new(w);
    let v = c.auto()?;
    c.end()?;
    Some(v)
}

/// `%s %s[%d] type %s did %d [0x%lx-0x%lx] addr 0x%lx pages 0x%lx mask 0x%lx`,
/// exactly, with a tag type that the word-pair reader cannot mistake for a
/// key.
#[inline]
fn fast_flush_range(body: &[u8]) -> Option<CacheTagFlushRange<'_>> {
    let mut c = Cur::new(body);
    let iommu = c.word_sp();
    c.lit(b" ")?;
    let devp = c.word_sp();
    if iommu.is_empty() || devp.is_empty() {
        return None;
    }
    let (dev, pasid) = match devp.split_at_checked(scan::find_byte(devp, b'[')) {
        Some((dev, p)) if !p.is_empty() => {
            let inner = p.get(1..)?;
            let inner = inner.strip_suffix(b"]").unwrap_or(inner);
            (dev, u32::try_from(whole_auto(inner)?).ok()?)
        }
        _ => (devp, 0),
    };
    c.lit(b" type ")?;
    let tag_type = c.word_sp();
    if tag_type.is_empty() || matches!(tag_type, b"type" | b"did" | b"addr" | b"pages" | b"mask") {
        return None;
    }
    c.lit(b" did ")?;
    let did = u32::try_from(whole_auto(c.word_sp())?).ok()?;
    c.lit(b" ")?;
    let range = c.word_sp();
    let inner = range.strip_prefix(b"[")?.strip_suffix(b"]")?;
    let (start, last) = inner.split_at_checked(scan::find_byte(inner, b'-'))?;
    let start = whole_auto(start)?;
    let last = whole_auto(last.get(1..)?)?;
    c.lit(b" addr ")?;
    let addr = whole_auto(c.word_sp())?;
    c.lit(b" pages ")?;
    let pages = whole_auto(c.word_sp())?;
    c.lit(b" mask ")?;
    let mask = whole_auto(c.word_sp())?;
    c.end()?;
    Some(CacheTagFlushRange { iommu, dev, pasid, tag_type, did, start, last, addr, pages, mask })
}

/// `iommu dev[pasid] type T did N [0xstart-0xlast] addr 0x.. pages 0x.. mask 0x..`.
fn parse_flush_range<'a>(ev: &'static str, body: &'a [u8]) -> Result<CacheTagFlushRange<'a>, FieldError> {
    if let Some(r) = fast_flush_range(body) {
        return Ok(r);
    }
    let mut words = body.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let iommu = req(ev, "iommu", words.next())?;
    let devp = req(ev, "dev", words.next())?;
    let (dev, pasid) = match memchr::memchr(b'[', devp) {
        Some(p) => {
            let inner = devp.get(p + 1..).unwrap_or_default();
            let inner = inner.strip_suffix(b"]").unwrap_or(inner);
            (devp.get(..p).unwrap_or_default(), number_u32(ev, "pasid", Some(inner), num::auto_u64)?)
        }
        None => (devp, 0),
    };
    let (mut tag_type, mut did, mut range, mut addr, mut pages, mut mask) = (None, None, None, None, None, None);
    let mut prev: &[u8] = &[];
    for w in words {
        match prev {
            b"type" => tag_type = tag_type.or(Some(w)),
            b"did" => did = did.or(Some(w)),
            b"addr" => addr = addr.or(Some(w)),
            b"pages" => pages = pages.or(Some(w)),
            b"mask" => mask = mask.or(Some(w)),
            _ => {
                if w.first() == Some(&b'[') {
                    range = range.or(Some(w));
                }
            }
        }
        prev = w;
    }
    let range = req(ev, "range", range)?;
    let bad_range = || ferr(ev, "range", FieldProblem::BadRange, range);
    let inner = range.strip_prefix(b"[").and_then(|r| r.strip_suffix(b"]")).ok_or_else(bad_range)?;
    let dash = memchr::memchr(b'-', inner).ok_or_else(bad_range)?;
    let start = number(ev, "range start", inner.get(..dash), num::auto_u64)?;
    let last = number(ev, "range last", inner.get(dash + 1..), num::auto_u64)?;
    Ok(CacheTagFlushRange {
        iommu,
        dev,
        pasid,
        tag_type: tag_type.unwrap_or_default(),
        did: number_u32(ev, "did", did, num::auto_u64)?,
        start,
        last,
        addr: number(ev, "addr", addr, num::auto_u64)?,
        pages: number(ev, "pages", pages, num::auto_u64)?,
        mask: number(ev, "mask", mask, num::auto_u64)?,
    })
}

// ---------------------------------------------------------------- print

/// `ftrace:print` as shown by `trace-cmd report`: `tracing_mark_write: msg`
/// (the part before `: ` is the writer's symbol).
fn parse_print(body: &[u8]) -> Option<Event<'_>> {
    let word_end = body.iter().position(|&b| b == b' ').unwrap_or(body.len());
    let word = body.get(..word_end).unwrap_or_default();
    let msg = if word.last() == Some(&b':') {
        let rest = body.get(word_end..).unwrap_or_default();
        rest.strip_prefix(b" ").unwrap_or(rest)
    } else {
        body
    };
    Some(Event::Marker { msg })
}

// ---------------------------------------------------------------- probes

fn parse_site(tok: &[u8]) -> ProbeSite<'_> {
    // Drop a module suffix (`func+0x0/0x10 [nvme]`) or anything after a blank.
    let tok = tok.get(..scan::find_byte(tok, b' ')).unwrap_or(tok);
    if tok.len() >= 8 && tok.len() <= 16 {
        let (a, n) = scan::hex_prefix(tok);
        if n == tok.len() {
            return ProbeSite::Address(a);
        }
    }
    match tok.split_at_checked(scan::find_byte(tok, b'+')) {
        Some((func, off)) if !off.is_empty() => {
            let off = off.get(1..).unwrap_or_default();
            let (o, s) = match off.split_at_checked(scan::find_byte(off, b'/')) {
                Some((o, s)) if !s.is_empty() => (o, s.get(1..)),
                _ => (off, None),
            };
            ProbeSite::Symbol { func, offset: num::auto_u64(o).ok(), size: s.and_then(|s| num::auto_u64(s).ok()) }
        }
        _ => ProbeSite::Symbol { func: tok, offset: None, size: None },
    }
}

/// Probe fields, with the aliases users commonly choose.
#[derive(Default)]
struct ProbeFields<'a> {
    domain: Option<&'a [u8]>,
    dtype: Option<&'a [u8]>,
    iova: Option<&'a [u8]>,
    paddr: Option<&'a [u8]>,
    size: Option<&'a [u8]>,
    prot: Option<&'a [u8]>,
    dev: Option<&'a [u8]>,
    cookie: Option<&'a [u8]>,
    ret: Option<&'a [u8]>,
    unmapped: Option<&'a [u8]>,
}

impl<'a> ProbeFields<'a> {
    /// Keeps the first value of each known key.
    #[inline]
    fn set(&mut self, key: &[u8], val: &'a [u8]) {
        let slot = match key {
            b"domain" | b"dom" => &mut self.domain,
            b"dtype" => &mut self.dtype,
            b"iova" => &mut self.iova,
            b"paddr" | b"phys" | b"phys_addr" => &mut self.paddr,
            b"size" | b"len" => &mut self.size,
            b"prot" => &mut self.prot,
            b"dev" | b"device" => &mut self.dev,
            b"cookie" => &mut self.cookie,
            b"ret" | b"retval" => &mut self.ret,
            b"unmapped" => &mut self.unmapped,
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(val);
        }
    }
}

fn probe_fields(s: &[u8]) -> ProbeFields<'_> {
    if let Some(f) = fast_probe_fields(s) {
        return f;
    }
    let mut f = ProbeFields::default();
    for Tok { key, val } in Toks::new(s) {
        f.set(key, val);
    }
    f
}

/// [`probe_fields`] for the kernel's layout: ` key=value` tokens, each
/// after exactly one space, with values the tokenizer returns unchanged.
/// `None` for anything else (bare words, quotes, tabs, runs of blanks).
#[inline]
fn fast_probe_fields(s: &[u8]) -> Option<ProbeFields<'_>> {
    let mut f = ProbeFields::default();
    let mut c = Cur::new(s);
    while !c.s.is_empty() {
        c.lit(b" ")?;
        let (key, rest) = c.s.split_at_checked(scan::find_blank_or_eq(c.s))?;
        c.s = rest.strip_prefix(b"=")?;
        if key.is_empty() {
            return None;
        }
        f.set(key, c.plain_val()?);
    }
    Some(f)
}

/// What a probe is, decided from its function (or, for raw addresses, its
/// fields).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Map,
    Unmap,
    Attach,
    Detach,
    DomainFree,
    FqFlushTimeout,
    FqFlushIotlb,
    MapReturn,
    UnmapReturn,
}

fn kind_for_entry(func: &[u8], f: &ProbeFields<'_>) -> Option<ProbeKind> {
    match func {
        b"__iommu_map" => Some(ProbeKind::Map),
        b"__iommu_unmap" => Some(ProbeKind::Unmap),
        b"__iommu_attach_device" => Some(ProbeKind::Attach),
        b"iommu_domain_free" => Some(ProbeKind::DomainFree),
        b"fq_flush_timeout" => Some(ProbeKind::FqFlushTimeout),
        b"fq_flush_iotlb" => Some(ProbeKind::FqFlushIotlb),
        _ if f.domain.is_some() && f.dev.is_some() => {
            if memchr::memmem::find(func, b"detach").is_some() {
                Some(ProbeKind::Detach)
            } else if memchr::memmem::find(func, b"attach").is_some()
                || memchr::memmem::find(func, b"set_domain").is_some()
            {
                Some(ProbeKind::Attach)
            } else {
                None
            }
        }
        _ => None,
    }
}

fn kind_by_fields(ret: bool, f: &ProbeFields<'_>) -> Option<ProbeKind> {
    if ret {
        return if f.unmapped.is_some() {
            Some(ProbeKind::UnmapReturn)
        } else if f.ret.is_some() {
            Some(ProbeKind::MapReturn)
        } else {
            None
        };
    }
    match (f.domain.is_some(), f.iova.is_some(), f.paddr.is_some(), f.size.is_some(), f.dev.is_some()) {
        (true, true, true, true, _) => Some(ProbeKind::Map),
        (true, true, false, true, _) => Some(ProbeKind::Unmap),
        (true, false, false, _, true) => Some(ProbeKind::Attach),
        (true, false, false, false, false) => Some(ProbeKind::DomainFree),
        (false, false, false, false, false) if f.cookie.is_some() => Some(ProbeKind::FqFlushIotlb),
        _ => None,
    }
}

/// The first ` <- ` in `s` (a `memmem` searcher costs more to build than
/// this short scan).
#[inline]
fn find_arrow(s: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let hay = s.get(from..)?;
        let lt = scan::find_byte(hay, b'<');
        if lt == hay.len() {
            return None;
        }
        let at = from + lt;
        if at >= 1 && s.get(at - 1) == Some(&b' ') && s.get(at + 1..at + 3) == Some(b"- ") {
            return Some(at - 1);
        }
        from = at + 1;
    }
}

fn parse_probe(body: &[u8]) -> Result<Option<Event<'_>>, FieldError> {
    let close = scan::find_byte(body, b')');
    if close == body.len() {
        return Ok(None);
    }
    let inside = body.get(1..close).unwrap_or_default();
    let rest = body.get(close + 1..).unwrap_or_default();
    let f = probe_fields(rest);

    let (site, caller) = match find_arrow(inside) {
        Some(p) => {
            let left = parse_site(inside.get(..p).unwrap_or_default());
            let right = parse_site(inside.get(p + 4..).unwrap_or_default());
            match (left, right) {
                // libtraceevent prints `(func <- ret_ip)` from the format file.
                (ProbeSite::Address(_), ProbeSite::Address(_)) => (left, Some(right)),
                // The kernel prints `(ret_ip <- func)`.
                _ => (right, Some(left)),
            }
        }
        None => (parse_site(inside), None),
    };
    let is_ret = caller.is_some();
    let (kind, by_fields) = match site {
        ProbeSite::Symbol { func, .. } => {
            let k = if is_ret {
                match func {
                    b"__iommu_map" => Some(ProbeKind::MapReturn),
                    b"__iommu_unmap" => Some(ProbeKind::UnmapReturn),
                    _ => None,
                }
            } else {
                kind_for_entry(func, &f)
            };
            (k, false)
        }
        ProbeSite::Address(_) => (kind_by_fields(is_ret, &f), true),
    };
    let Some(kind) = kind else {
        return Ok(None);
    };
    let probe = ProbeInfo { site, caller, by_fields };
    let ev = match kind {
        ProbeKind::Map => {
            const EV: &str = "kprobe __iommu_map";
            Event::ProbeMap(ProbeMap {
                probe,
                domain: number(EV, "domain", f.domain, num::auto_u64)?,
                dtype: opt_number(EV, "dtype", f.dtype, num::auto_u64)?,
                iova: number(EV, "iova", f.iova, num::auto_u64)?,
                paddr: number(EV, "paddr", f.paddr, num::auto_u64)?,
                size: number(EV, "size", f.size, num::auto_u64)?,
                prot: match f.prot {
                    Some(_) => Some(signed(EV, "prot", f.prot)?),
                    None => None,
                },
            })
        }
        ProbeKind::Unmap => {
            const EV: &str = "kprobe __iommu_unmap";
            Event::ProbeUnmap(ProbeUnmap {
                probe,
                domain: number(EV, "domain", f.domain, num::auto_u64)?,
                dtype: opt_number(EV, "dtype", f.dtype, num::auto_u64)?,
                iova: number(EV, "iova", f.iova, num::auto_u64)?,
                size: number(EV, "size", f.size, num::auto_u64)?,
            })
        }
        ProbeKind::Attach | ProbeKind::Detach => {
            const EV: &str = "kprobe attach/detach";
            let a = ProbeAttach {
                probe,
                domain: number(EV, "domain", f.domain, num::auto_u64)?,
                dtype: opt_number(EV, "dtype", f.dtype, num::auto_u64)?,
                dev: req(EV, "dev", f.dev)?,
            };
            if kind == ProbeKind::Attach {
                Event::ProbeAttach(a)
            } else {
                Event::ProbeDetach(a)
            }
        }
        ProbeKind::DomainFree => {
            const EV: &str = "kprobe iommu_domain_free";
            Event::ProbeDomainFree(ProbeDomainFree {
                probe,
                domain: number(EV, "domain", f.domain, num::auto_u64)?,
                dtype: opt_number(EV, "dtype", f.dtype, num::auto_u64)?,
            })
        }
        ProbeKind::FqFlushTimeout => Event::ProbeFqFlushTimeout(probe),
        ProbeKind::FqFlushIotlb => Event::ProbeFqFlushIotlb(ProbeFqFlushIotlb {
            probe,
            cookie: opt_number("kprobe fq_flush_iotlb", "cookie", f.cookie, num::auto_u64)?,
        }),
        ProbeKind::MapReturn => {
            Event::ProbeMapReturn(ProbeMapReturn { probe, ret: signed("kretprobe __iommu_map", "ret", f.ret)? })
        }
        ProbeKind::UnmapReturn => Event::ProbeUnmapReturn(ProbeUnmapReturn {
            probe,
            unmapped: number("kretprobe __iommu_unmap", "unmapped", f.unmapped.or(f.ret), num::auto_u64)?,
        }),
    };
    Ok(Some(ev))
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
