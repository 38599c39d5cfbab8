//! Each event kind, described once: its system and names, its fields (the
//! kernel's `field:` names of `events/<system>/<event>/format`, the keys
//! its text prints, which are required, how each is typed), how its text
//! body is laid out, and how the typed event is built from the fields.
//!
//! Text and binary sources fill the same collector from these descriptions
//! and call the same builder. Where the two differ, the description says
//! so: `dma_map_page` prints `dir=BIDIRECTIONAL` where binary holds an
//! integer ([`FieldType::Dir`](super::collect::FieldType::Dir));
//! `dma_unmap_page` prints `dma_addr=` for the field `addr`; `dma_map_sg` prints `nents=3/27` where binary holds
//! `full_nents` and the arrays' lengths; `mm_page_alloc` prints a NULL
//! `page=` where binary holds `pfn == -1`. Fields a kernel version added
//! or removed are optional (`intel_iommu` `pages`, gone in 7.x).

use super::collect::{FieldSpec as F, FieldType as T, Got};
use super::event::*;

/// How a text body is laid out, for the text tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextLayout {
    /// `key=value` tokens; bare words are ignored.
    Keyed,
    /// `IOMMU: iova=0x.. - 0x.. ...`: keyed, and the word after a bare `-`
    /// is the printed end (`iova end`), checked against `iova + size`.
    IovaRange,
    /// `dma:*`: the first bare word is the device, a bare `[TRUNCATED]`
    /// sets `truncated`, the rest is keyed; libtraceevent's
    /// `[FAILED TO PARSE]` raw dump is keyed by the kernel's field names.
    Device,
    /// `iommu:io_page_fault`: `IOMMU:driver device iova=.. flags=..`.
    Fault,
    /// `intel_iommu` tags: `iommu/dev type T did N pasid N ref N`.
    Tag,
    /// `intel_iommu` range flushes:
    /// `iommu dev[pasid] type T did N [0xstart-0xlast] addr A pages P mask M`.
    FlushRange,
    /// Free text: the whole body is the first field (`printk:console`).
    Message,
    /// `ftrace:print` as `trace-cmd report` shows it: `writer: message`.
    Marker,
    /// Fields not read.
    Opaque,
}

/// The builder of one kind from its collected fields.
pub(crate) type Build = for<'a> fn(&Got<'a>) -> Result<Event<'a>, FieldError>;

/// One event kind.
pub struct EventSpec {
    /// The kernel's trace system (`iommu`, `dma`, `kmem`, ...).
    pub system: &'static str,
    /// Its event names (old and new: `dma_map_page`, `dma_map_phys`).
    pub names: &'static [&'static str],
    /// Its fields.
    pub fields: &'static [F],
    /// How its text body is laid out.
    pub text: TextLayout,
    pub(crate) build: Build,
}

impl core::fmt::Debug for EventSpec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EventSpec")
            .field("system", &self.system)
            .field("names", &self.names)
            .field("fields", &self.fields)
            .field("text", &self.text)
            .finish_non_exhaustive()
    }
}

/// The kind of an event named `name` (in `system`, when known).
#[must_use]
#[inline]
pub fn spec(system: Option<&[u8]>, name: &[u8]) -> Option<(&'static EventSpec, &'static str)> {
    by_name(name).filter(|(k, _)| system.is_none_or(|s| s == k.system.as_bytes()))
}

/// Every event kind this crate reads (kprobes aside, which are recognised
/// by their probed function: see [`PROBE_FIELDS`]).
#[must_use]
pub fn kinds() -> &'static [&'static EventSpec] {
    KINDS
}

// ---------------------------------------------------------------- fields

const IOVA_END: F = F::opt("iova end", T::Auto);
const DEVICE: F = F::req("device", T::Str);
const DIR: F = F::req("dir", T::Dir);
const DMA_ADDR: F = F::req("dma_addr", T::Hex);
const DMA_SIZE: F = F::req("size", T::Dec);
const ATTRS: F = F::opt("attrs", T::Printed);
const PHYS_ADDRS: F = F::req("phys_addrs", T::Array(8));
const DMA_ADDRS: F = F::req("dma_addrs", T::Array(8));
/// `unsigned int lengths[]`, printed as `sizes=`.
const SIZES: F = F::req("sizes", T::Array(4)).also(&["lengths"]);
const TRUNCATED: F = F::opt("truncated", T::Flag);
const PAGE: F = F::opt("page", T::Printed);
const PFN: F = F::req("pfn", T::Auto);
const ORDER: F = F::req("order", T::Order);
const TAG_IOMMU: F = F::req("iommu", T::Str);
/// `enum cache_tag_type` of the VT-d driver (drivers/iommu/intel/iommu.h), by value.
const TAG_TYPE: F =
    F::opt("type", T::Symbol(&[(0, "iotlb"), (1, "devtlb"), (2, "nesting_iotlb"), (3, "nesting_devtlb")]));
const DID: F = F::req("did", T::Auto).also(&["domain_id"]);
const PASID: F = F::req("pasid", T::Auto);

const IOMMU_MAP: &[F] = &[F::req("iova", T::Auto), F::req("paddr", T::Auto), F::req("size", T::Dec), IOVA_END];
const IOMMU_UNMAP: &[F] = &[F::req("iova", T::Auto), F::req("size", T::Dec), F::req("unmapped_size", T::Dec), IOVA_END];
const DEVICE_ONLY: &[F] = &[DEVICE];
const GROUP_DEVICE: &[F] = &[F::req("groupID", T::Auto).also(&["gid", "group"]), DEVICE];
const IO_PAGE_FAULT: &[F] = &[F::req("driver", T::Str), DEVICE, F::req("iova", T::Auto), F::req("flags", T::Auto)];
const DMA_MAP: &[F] = &[DEVICE, DIR, DMA_ADDR, DMA_SIZE, F::req("phys_addr", T::Hex), ATTRS];
const DMA_UNMAP: &[F] = &[DEVICE, DIR, DMA_ADDR.also(&["addr"]), DMA_SIZE, ATTRS];
const DMA_MAP_SG: &[F] = &[
    DEVICE,
    DIR,
    F::opt("nents", T::Counted),
    F::opt("ents", T::Counted),
    F::opt("full_nents", T::Auto),
    F::opt("full_ents", T::Auto),
    TRUNCATED,
    DMA_ADDRS,
    SIZES,
    PHYS_ADDRS,
    ATTRS,
];
const DMA_UNMAP_SG: &[F] = &[DEVICE, DIR, PHYS_ADDRS.also(&["addrs"]), TRUNCATED, ATTRS];
/// Printed as `dma_addrs=`, but the field (`phys_addrs`) holds physical addresses.
const DMA_MAP_SG_ERR: &[F] = &[DEVICE, DIR, DMA_ADDRS.also(&["phys_addrs"]), F::req("err", T::Signed), ATTRS];
/// Coherent buffers: before 6.12.48 the alloc/free events had no `dir`
/// (such a buffer is bidirectional).
const COHERENT_DIR: F = F::opt("dir", T::Dir);
const DMA_ALLOC: &[F] =
    &[DEVICE, COHERENT_DIR, DMA_ADDR, DMA_SIZE, F::opt("virt_addr", T::Printed), F::opt("flags", T::Printed), ATTRS];
const DMA_FREE: &[F] = &[DEVICE, COHERENT_DIR, DMA_ADDR, DMA_SIZE, F::opt("virt_addr", T::Printed), ATTRS];
const DMA_SGT: &[F] = &[DEVICE, DIR, DMA_ADDR, DMA_SIZE, PHYS_ADDRS, F::opt("flags", T::Printed), ATTRS];
const DMA_SYNC_SINGLE: &[F] = &[DEVICE, DIR, DMA_ADDR, DMA_SIZE];
const DMA_SYNC_SG: &[F] = &[DEVICE, DIR, DMA_ADDRS, SIZES];
const PAGE_ALLOC: &[F] = &[PAGE, PFN, ORDER, F::opt("migratetype", T::Signed), F::opt("gfp_flags", T::Printed)];
const PAGE_BLOCK: &[F] = &[PAGE, PFN, ORDER];
/// `mm_page_free_batched` has no order (always 0).
const PAGE_BATCHED: &[F] = &[PAGE, PFN, F::opt("order", T::Order)];
const CACHE_TAG: &[F] =
    &[TAG_IOMMU, F::opt("dev", T::Str), TAG_TYPE, DID, PASID, F::req("ref", T::Auto).also(&["users"])];
const FLUSH_RANGE: &[F] = &[
    TAG_IOMMU,
    F::req("dev", T::Str),
    F::opt("pasid", T::Auto),
    TAG_TYPE,
    DID,
    F::req("start", T::Auto),
    // Inclusive: the kernel passes the gather's last byte.
    F::req("last", T::Auto).also(&["end"]),
    F::req("addr", T::Auto),
    // Gone in 7.x.
    F::opt("pages", T::Auto),
    F::req("mask", T::Auto),
];
const MESSAGE: &[F] = &[F::req("msg", T::Str)];
const MARKER: &[F] = &[F::req("buf", T::Str)];

/// The union of the fields of the probes this crate reads, with the names
/// users commonly give them. Which are required depends on the probed
/// function, decided once the fields are collected.
pub const PROBE_FIELDS: &[F] = &[
    F::opt("domain", T::Auto).also(&["dom"]),
    F::opt("dtype", T::Auto),
    F::opt("iova", T::Auto),
    F::opt("paddr", T::Auto).also(&["phys", "phys_addr"]),
    F::opt("size", T::Auto).also(&["len"]),
    F::opt("prot", T::Signed),
    F::opt("dev", T::Str).also(&["device"]),
    F::opt("cookie", T::Auto),
    F::opt("ret", T::Signed).also(&["retval"]),
    F::opt("unmapped", T::Auto),
    // `free_iova_fast`'s; its `iovad=` is not kept (PROBE_FIELDS is at MAX_FIELDS).
    F::opt("pfn", T::Auto),
    F::opt("pages", T::Auto),
];

// ---------------------------------------------------------------- kinds

/// A name literal as `str` (at compile time; the names are ASCII).
const fn utf8(b: &'static [u8]) -> &'static str {
    match core::str::from_utf8(b) {
        Ok(s) => s,
        Err(_) => "",
    }
}

macro_rules! kinds {
    ($(($id:ident, $system:literal, [$($name:literal),+], $fields:expr, $text:ident, $build:expr)),+ $(,)?) => {
        $(
            static $id: EventSpec =
                EventSpec { system: $system, names: &[$(utf8($name)),+], fields: $fields, text: TextLayout::$text, build: $build };
        )+
        static KINDS: &[&EventSpec] = &[$(&$id),+];

        /// The kind named `name`, with the static spelling of the name.
        #[inline]
        fn by_name(name: &[u8]) -> Option<(&'static EventSpec, &'static str)> {
            match name {
                $($($name => Some((&$id, const { utf8($name) })),)+)+
                _ => None,
            }
        }
    };
}

kinds!(
    (K_MAP, "iommu", [b"map"], IOMMU_MAP, IovaRange, |g| Ok(Event::IommuMap(iommu_map(g)?))),
    (K_UNMAP, "iommu", [b"unmap"], IOMMU_UNMAP, IovaRange, |g| Ok(Event::IommuUnmap(iommu_unmap(g)?))),
    (K_ATTACH_DEVICE_TO_DOMAIN, "iommu", [b"attach_device_to_domain"], DEVICE_ONLY, Keyed, |g| {
        Ok(Event::AttachDeviceToDomain { device: g.str("device")? })
    }),
    (K_DETACH_DEVICE_FROM_DOMAIN, "iommu", [b"detach_device_from_domain"], DEVICE_ONLY, Keyed, |g| {
        Ok(Event::DetachDeviceFromDomain { device: g.str("device")? })
    }),
    (K_ADD_DEVICE_TO_GROUP, "iommu", [b"add_device_to_group"], GROUP_DEVICE, Keyed, |g| {
        Ok(Event::AddDeviceToGroup { group: g.u32("groupID")?, device: g.str("device")? })
    }),
    (K_REMOVE_DEVICE_FROM_GROUP, "iommu", [b"remove_device_from_group"], GROUP_DEVICE, Keyed, |g| {
        Ok(Event::RemoveDeviceFromGroup { group: g.u32("groupID")?, device: g.str("device")? })
    }),
    (K_IO_PAGE_FAULT, "iommu", [b"io_page_fault"], IO_PAGE_FAULT, Fault, |g| {
        Ok(Event::IoPageFault(IoPageFault {
            driver: g.str("driver")?,
            device: g.str("device")?,
            iova: g.u64("iova")?,
            flags: g.u64("flags")?,
        }))
    }),
    (K_DMA_MAP_PAGE, "dma", [b"dma_map_page", b"dma_map_phys"], DMA_MAP, Device, |g| Ok(Event::DmaMapPage(dma_map(
        g
    )?))),
    (K_DMA_MAP_RESOURCE, "dma", [b"dma_map_resource"], DMA_MAP, Device, |g| Ok(Event::DmaMapResource(dma_map(g)?))),
    (K_DMA_UNMAP_PAGE, "dma", [b"dma_unmap_page", b"dma_unmap_phys"], DMA_UNMAP, Device, |g| {
        Ok(Event::DmaUnmapPage(dma_unmap(g)?))
    }),
    (K_DMA_UNMAP_RESOURCE, "dma", [b"dma_unmap_resource"], DMA_UNMAP, Device, |g| Ok(Event::DmaUnmapResource(
        dma_unmap(g)?
    ))),
    (K_DMA_MAP_SG, "dma", [b"dma_map_sg"], DMA_MAP_SG, Device, |g| Ok(Event::DmaMapSg(dma_map_sg(g)?))),
    (K_DMA_UNMAP_SG, "dma", [b"dma_unmap_sg"], DMA_UNMAP_SG, Device, |g| {
        Ok(Event::DmaUnmapSg(DmaUnmapSg {
            device: g.str("device")?,
            dir: g.dir("dir")?,
            truncated: g.flag("truncated")?,
            phys_addrs: g.array("phys_addrs")?,
            attrs: g.printed("attrs"),
        }))
    }),
    (K_DMA_MAP_SG_ERR, "dma", [b"dma_map_sg_err"], DMA_MAP_SG_ERR, Device, |g| {
        Ok(Event::DmaMapSgErr(DmaMapSgErr {
            device: g.str("device")?,
            dir: g.dir("dir")?,
            phys_addrs: g.array("dma_addrs")?,
            err: g.i64("err")?,
            attrs: g.printed("attrs"),
        }))
    }),
    (K_DMA_ALLOC, "dma", [b"dma_alloc"], DMA_ALLOC, Device, |g| Ok(Event::DmaAlloc(dma_alloc(g)?))),
    (K_DMA_ALLOC_PAGES, "dma", [b"dma_alloc_pages"], DMA_ALLOC, Device, |g| Ok(Event::DmaAllocPages(dma_alloc(g)?))),
    (K_DMA_ALLOC_SGT_ERR, "dma", [b"dma_alloc_sgt_err"], DMA_ALLOC, Device, |g| Ok(Event::DmaAllocSgtErr(dma_alloc(
        g
    )?))),
    (K_DMA_FREE, "dma", [b"dma_free"], DMA_FREE, Device, |g| Ok(Event::DmaFree(dma_free(g)?))),
    (K_DMA_FREE_PAGES, "dma", [b"dma_free_pages"], DMA_FREE, Device, |g| Ok(Event::DmaFreePages(dma_free(g)?))),
    (K_DMA_ALLOC_SGT, "dma", [b"dma_alloc_sgt"], DMA_SGT, Device, |g| Ok(Event::DmaAllocSgt(dma_sgt(g)?))),
    (K_DMA_FREE_SGT, "dma", [b"dma_free_sgt"], DMA_SGT, Device, |g| Ok(Event::DmaFreeSgt(dma_sgt(g)?))),
    (K_DMA_SYNC_SINGLE_FOR_CPU, "dma", [b"dma_sync_single_for_cpu"], DMA_SYNC_SINGLE, Device, |g| {
        Ok(Event::DmaSyncSingleForCpu(dma_sync_single(g)?))
    }),
    (K_DMA_SYNC_SINGLE_FOR_DEVICE, "dma", [b"dma_sync_single_for_device"], DMA_SYNC_SINGLE, Device, |g| {
        Ok(Event::DmaSyncSingleForDevice(dma_sync_single(g)?))
    }),
    (K_DMA_SYNC_SG_FOR_CPU, "dma", [b"dma_sync_sg_for_cpu"], DMA_SYNC_SG, Device, |g| Ok(Event::DmaSyncSgForCpu(
        dma_sync_sg(g)?
    ))),
    (K_DMA_SYNC_SG_FOR_DEVICE, "dma", [b"dma_sync_sg_for_device"], DMA_SYNC_SG, Device, |g| {
        Ok(Event::DmaSyncSgForDevice(dma_sync_sg(g)?))
    }),
    (K_MM_PAGE_ALLOC, "kmem", [b"mm_page_alloc"], PAGE_ALLOC, Keyed, |g| Ok(Event::PageAlloc(page_alloc(g)?))),
    (K_MM_PAGE_ALLOC_ZONE_LOCKED, "kmem", [b"mm_page_alloc_zone_locked"], PAGE_ALLOC, Keyed, |g| {
        Ok(Event::PageAllocZoneLocked(page_alloc(g)?))
    }),
    (K_MM_PAGE_FREE, "kmem", [b"mm_page_free"], PAGE_BLOCK, Keyed, |g| Ok(Event::PageFree(page_block(g)?))),
    (K_MM_PAGE_FREE_BATCHED, "kmem", [b"mm_page_free_batched"], PAGE_BATCHED, Keyed, |g| Ok(Event::PageFreeBatched(
        page_block(g)?
    ))),
    (K_MM_PAGE_PCPU_DRAIN, "kmem", [b"mm_page_pcpu_drain"], PAGE_BLOCK, Keyed, |g| Ok(Event::PagePcpuDrain(
        page_block(g)?
    ))),
    (K_CACHE_TAG_ASSIGN, "intel_iommu", [b"cache_tag_assign"], CACHE_TAG, Tag, |g| Ok(Event::CacheTagAssign(
        cache_tag(g)?
    ))),
    (K_CACHE_TAG_UNASSIGN, "intel_iommu", [b"cache_tag_unassign"], CACHE_TAG, Tag, |g| Ok(Event::CacheTagUnassign(
        cache_tag(g)?
    ))),
    (K_CACHE_TAG_FLUSH_ALL, "intel_iommu", [b"cache_tag_flush_all"], CACHE_TAG, Tag, |g| Ok(Event::CacheTagFlushAll(
        cache_tag(g)?
    ))),
    (K_CACHE_TAG_FLUSH_RANGE, "intel_iommu", [b"cache_tag_flush_range"], FLUSH_RANGE, FlushRange, |g| {
        Ok(Event::CacheTagFlushRange(flush_range(g)?))
    }),
    (K_CACHE_TAG_FLUSH_RANGE_NP, "intel_iommu", [b"cache_tag_flush_range_np"], FLUSH_RANGE, FlushRange, |g| {
        Ok(Event::CacheTagFlushRangeNp(flush_range(g)?))
    }),
    (K_QI_SUBMIT, "intel_iommu", [b"qi_submit"], &[], Opaque, |_| Ok(Event::QiSubmit)),
    (K_PRQ_REPORT, "intel_iommu", [b"prq_report"], &[], Opaque, |_| Ok(Event::PrqReport)),
    (K_CONSOLE, "printk", [b"console"], MESSAGE, Message, |g| Ok(Event::Console { msg: trim_newline(g.str("msg")?) })),
    // ftrace's text names the event after the writer (`tracing_mark_write`).
    (K_TRACING_MARK_WRITE, "ftrace", [b"tracing_mark_write"], MARKER, Message, |g| Ok(Event::Marker {
        msg: trim_newline(g.str("buf")?)
    })),
    (K_PRINT, "ftrace", [b"print"], MARKER, Marker, |g| Ok(Event::Marker { msg: trim_newline(g.str("buf")?) })),
);

/// A binary message keeps the writer's newline; text lines cannot.
fn trim_newline(s: &[u8]) -> &[u8] {
    s.strip_suffix(b"\n").unwrap_or(s)
}

// ---------------------------------------------------------------- builders

fn iommu_map(g: &Got<'_>) -> Result<IommuMap, FieldError> {
    let m = IommuMap { iova: g.u64("iova")?, paddr: g.u64("paddr")?, size: g.u64("size")? };
    check_end(g, m.iova, m.size)?;
    Ok(m)
}

fn iommu_unmap(g: &Got<'_>) -> Result<IommuUnmap, FieldError> {
    let u = IommuUnmap { iova: g.u64("iova")?, size: g.u64("size")?, unmapped_size: g.u64("unmapped_size")? };
    check_end(g, u.iova, u.size)?;
    Ok(u)
}

/// The printed end (`iova - end`) must be `iova + size` (the kernel
/// computes it in 64-bit arithmetic, so it wraps).
fn check_end(g: &Got<'_>, iova: u64, size: u64) -> Result<(), FieldError> {
    match g.opt_u64("iova end")? {
        Some(v) if v != iova.wrapping_add(size) => {
            Err(ferr(g.event, "iova end", FieldProblem::Inconsistent, g.printed("iova end")))
        }
        _ => Ok(()),
    }
}

/// The fields every `dma:*` event of one buffer has: device, direction,
/// DMA address and size.
fn dma_common<'a>(g: &Got<'a>) -> Result<(&'a [u8], DmaDirection, u64, u64), FieldError> {
    // Where `dir` is optional (coherent buffers), its absence means bidirectional.
    let dir = g.opt_dir("dir")?.unwrap_or(DmaDirection::Bidirectional);
    Ok((g.str("device")?, dir, g.u64("dma_addr")?, g.u64("size")?))
}

fn dma_map<'a>(g: &Got<'a>) -> Result<DmaMap<'a>, FieldError> {
    let (device, dir, dma_addr, size) = dma_common(g)?;
    Ok(DmaMap { device, dir, dma_addr, size, phys_addr: g.u64("phys_addr")?, attrs: g.printed("attrs") })
}

fn dma_unmap<'a>(g: &Got<'a>) -> Result<DmaUnmap<'a>, FieldError> {
    let (device, dir, dma_addr, size) = dma_common(g)?;
    Ok(DmaUnmap { device, dir, dma_addr, size, attrs: g.printed("attrs") })
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn dma_map_sg<'a>(g: &Got<'a>) -> Result<DmaMapSg<'a>, FieldError> {
    let device = g.str("device")?;
    let dir = g.dir("dir")?;
    let truncated = g.flag("truncated")?;
    let dma_addrs = g.array("dma_addrs")?;
    let sizes = g.array("sizes")?;
    let phys_addrs = g.array("phys_addrs")?;
    // Text prints `printed/total`; binary (and libtraceevent's raw dump)
    // holds the totals, and the arrays hold what was recorded. Before the
    // arrays were capped (6.12.74, 7.0) there were no totals: the arrays
    // list every entry.
    let counted = |text: &'static str, total: &'static str, printed: usize| -> Result<Counted, FieldError> {
        match g.counted(text)? {
            Some(c) => Ok(c),
            None => {
                let printed = len_u32(printed);
                Ok(Counted { printed, total: g.opt_u32(total)?.unwrap_or(printed) })
            }
        }
    };
    let nents = counted("nents", "full_nents", phys_addrs.len())?;
    let ents = counted("ents", "full_ents", dma_addrs.len())?;
    Ok(DmaMapSg { device, dir, nents, ents, truncated, dma_addrs, sizes, phys_addrs, attrs: g.printed("attrs") })
}

fn dma_alloc<'a>(g: &Got<'a>) -> Result<DmaAlloc<'a>, FieldError> {
    let (device, dir, dma_addr, size) = dma_common(g)?;
    let (virt_addr, flags, attrs) = (g.printed("virt_addr"), g.printed("flags"), g.printed("attrs"));
    Ok(DmaAlloc { device, dir, dma_addr, size, virt_addr, flags, attrs })
}

fn dma_free<'a>(g: &Got<'a>) -> Result<DmaFree<'a>, FieldError> {
    let (device, dir, dma_addr, size) = dma_common(g)?;
    Ok(DmaFree { device, dir, dma_addr, size, virt_addr: g.printed("virt_addr"), attrs: g.printed("attrs") })
}

fn dma_sgt<'a>(g: &Got<'a>) -> Result<DmaSgt<'a>, FieldError> {
    let (device, dir, dma_addr, size) = dma_common(g)?;
    let phys_addrs = g.array("phys_addrs")?;
    Ok(DmaSgt { device, dir, dma_addr, size, phys_addrs, flags: g.printed("flags"), attrs: g.printed("attrs") })
}

fn dma_sync_single<'a>(g: &Got<'a>) -> Result<DmaSyncSingle<'a>, FieldError> {
    let (device, dir, dma_addr, size) = dma_common(g)?;
    Ok(DmaSyncSingle { device, dir, dma_addr, size })
}

fn dma_sync_sg<'a>(g: &Got<'a>) -> Result<DmaSyncSg<'a>, FieldError> {
    Ok(DmaSyncSg {
        device: g.str("device")?,
        dir: g.dir("dir")?,
        dma_addrs: g.array("dma_addrs")?,
        sizes: g.array("sizes")?,
    })
}

/// A `page=` value that is a NULL pointer: `%p` of NULL prints zeros (or
/// `(null)`/`(nil)` depending on the printer).
pub(crate) fn page_is_null(v: &[u8]) -> bool {
    match v {
        b"(null)" | b"(nil)" => true,
        v => {
            let digits = super::num::strip_0x(v).unwrap_or(v);
            !digits.is_empty() && digits.iter().all(|&b| b == b'0')
        }
    }
}

fn page_alloc<'a>(g: &Got<'a>) -> Result<PageAlloc<'a>, FieldError> {
    let pfn = g.u64("pfn")?;
    // Text prints the page pointer (NULL on failure); binary has only the
    // pfn, -1 on failure (the print format turns it into NULL and 0).
    let (pfn, page_is_null) = match g.has("page") {
        true => (pfn, page_is_null(g.printed("page"))),
        false if pfn == u64::MAX => (0, true),
        false => (pfn, false),
    };
    Ok(PageAlloc {
        pfn,
        order: g.order("order")?,
        page_is_null,
        migratetype: g.opt_i64("migratetype")?,
        gfp_flags: g.printed("gfp_flags"),
    })
}

fn page_block(g: &Got<'_>) -> Result<PageBlock, FieldError> {
    Ok(PageBlock { pfn: g.u64("pfn")?, order: g.opt_order("order")?.unwrap_or(0) })
}

fn cache_tag<'a>(g: &Got<'a>) -> Result<CacheTag<'a>, FieldError> {
    Ok(CacheTag {
        iommu: g.str("iommu")?,
        dev: g.opt_str("dev")?.unwrap_or_default(),
        tag_type: g.printed("type"),
        did: g.u32("did")?,
        pasid: g.u32("pasid")?,
        refs: g.u32("ref")?,
    })
}

fn flush_range<'a>(g: &Got<'a>) -> Result<CacheTagFlushRange<'a>, FieldError> {
    Ok(CacheTagFlushRange {
        iommu: g.str("iommu")?,
        dev: g.str("dev")?,
        pasid: g.opt_u32("pasid")?.unwrap_or(0),
        tag_type: g.printed("type"),
        did: g.u32("did")?,
        start: g.u64("start")?,
        last: g.u64("last")?,
        addr: g.u64("addr")?,
        pages: g.opt_u64("pages")?,
        mask: g.u64("mask")?,
    })
}

// ---------------------------------------------------------------- probes

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
    IovaFree,
    MapReturn,
    UnmapReturn,
}

fn kind_for_entry(func: &[u8], g: &Got<'_>) -> Option<ProbeKind> {
    match func {
        // `__iommu_map` is `iommu_map_nosync` by 6.18 (same arguments).
        b"__iommu_map" | b"iommu_map_nosync" => Some(ProbeKind::Map),
        b"__iommu_unmap" => Some(ProbeKind::Unmap),
        b"__iommu_attach_device" => Some(ProbeKind::Attach),
        b"iommu_domain_free" => Some(ProbeKind::DomainFree),
        b"fq_flush_timeout" => Some(ProbeKind::FqFlushTimeout),
        b"fq_flush_iotlb" => Some(ProbeKind::FqFlushIotlb),
        b"free_iova_fast" => Some(ProbeKind::IovaFree),
        _ if g.has("domain") && g.has("dev") => {
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

fn kind_by_fields(ret: bool, g: &Got<'_>) -> Option<ProbeKind> {
    if ret {
        return if g.has("unmapped") {
            Some(ProbeKind::UnmapReturn)
        } else if g.has("ret") {
            Some(ProbeKind::MapReturn)
        } else {
            None
        };
    }
    match (g.has("domain"), g.has("iova"), g.has("paddr"), g.has("size"), g.has("dev")) {
        (true, true, true, true, _) => Some(ProbeKind::Map),
        (true, true, false, true, _) => Some(ProbeKind::Unmap),
        (true, false, false, _, true) => Some(ProbeKind::Attach),
        (true, false, false, false, false) => Some(ProbeKind::DomainFree),
        (false, false, false, false, false) if g.has("cookie") => Some(ProbeKind::FqFlushIotlb),
        (false, false, false, false, false) if g.has("pfn") && g.has("pages") => Some(ProbeKind::IovaFree),
        _ => None,
    }
}

/// A probe event from its site (the probed function, or for return
/// probes the function that returned, with the return address as
/// `caller`) and its fields collected by [`PROBE_FIELDS`].
///
/// `Ok(None)` for a probe on a function this crate does not know.
pub(crate) fn probe_event<'a>(
    site: ProbeSite<'a>,
    caller: Option<ProbeSite<'a>>,
    g: &mut Got<'a>,
) -> Result<Option<Event<'a>>, FieldError> {
    let is_ret = caller.is_some();
    let (kind, by_fields) = match site {
        ProbeSite::Symbol { func, .. } => {
            let k = if is_ret {
                match func {
                    b"__iommu_map" | b"iommu_map_nosync" => Some(ProbeKind::MapReturn),
                    b"__iommu_unmap" => Some(ProbeKind::UnmapReturn),
                    _ => None,
                }
            } else {
                kind_for_entry(func, g)
            };
            (k, false)
        }
        ProbeSite::Address(_) => (kind_by_fields(is_ret, g), true),
    };
    let Some(kind) = kind else {
        return Ok(None);
    };
    let probe = ProbeInfo { site, caller, by_fields };
    let ev = match kind {
        ProbeKind::Map => {
            g.event = "kprobe __iommu_map";
            Event::ProbeMap(ProbeMap {
                probe,
                domain: g.u64("domain")?,
                dtype: g.opt_u64("dtype")?,
                iova: g.u64("iova")?,
                paddr: g.u64("paddr")?,
                size: g.u64("size")?,
                prot: g.opt_i64("prot")?,
            })
        }
        ProbeKind::Unmap => {
            g.event = "kprobe __iommu_unmap";
            Event::ProbeUnmap(ProbeUnmap {
                probe,
                domain: g.u64("domain")?,
                dtype: g.opt_u64("dtype")?,
                iova: g.u64("iova")?,
                size: g.u64("size")?,
            })
        }
        ProbeKind::Attach | ProbeKind::Detach => {
            g.event = "kprobe attach/detach";
            let a = ProbeAttach { probe, domain: g.u64("domain")?, dtype: g.opt_u64("dtype")?, dev: g.str("dev")? };
            if kind == ProbeKind::Attach {
                Event::ProbeAttach(a)
            } else {
                Event::ProbeDetach(a)
            }
        }
        ProbeKind::DomainFree => {
            g.event = "kprobe iommu_domain_free";
            Event::ProbeDomainFree(ProbeDomainFree { probe, domain: g.u64("domain")?, dtype: g.opt_u64("dtype")? })
        }
        ProbeKind::FqFlushTimeout => Event::ProbeFqFlushTimeout(probe),
        ProbeKind::FqFlushIotlb => {
            g.event = "kprobe fq_flush_iotlb";
            Event::ProbeFqFlushIotlb(ProbeFqFlushIotlb { probe, cookie: g.opt_u64("cookie")? })
        }
        ProbeKind::IovaFree => {
            g.event = "kprobe free_iova_fast";
            Event::ProbeIovaFree(ProbeIovaFree { probe, pfn: g.u64("pfn")?, pages: g.u64("pages")? })
        }
        ProbeKind::MapReturn => {
            g.event = "kretprobe __iommu_map";
            Event::ProbeMapReturn(ProbeMapReturn { probe, ret: g.i64("ret")? })
        }
        ProbeKind::UnmapReturn => {
            g.event = "kretprobe __iommu_unmap";
            let unmapped = match g.opt_u64("unmapped")? {
                Some(u) => u,
                None => g.u64("ret").map_err(|e| FieldError { field: "unmapped", ..e })?,
            };
            Event::ProbeUnmapReturn(ProbeUnmapReturn { probe, unmapped })
        }
    };
    Ok(Some(ev))
}
