//! The analyzer fed plausible captures: event lines built from fuzzer bytes
//! over small value domains (a few CPUs, tasks, devices, domains, IOVA and
//! page slots), so that maps, unmaps, attribution, flushes and frees
//! interact and the replay logic (not just the parser) is exercised. A few
//! variants inject wild numbers and raw bytes.
#![no_main]

use std::fmt::Write as _;

use arbitrary::Arbitrary;
use iosan_trace::{analyze, AnalyzeOptions};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Line {
    cpu: u8,
    pid: u8,
    ctx: u8,
    dt: i16,
    ev: Ev,
}

#[derive(Arbitrary, Debug)]
enum Ev {
    Map { iova: u8, phys: u8, pages: u8 },
    Unmap { iova: u8, pages: u8, unmapped: u8 },
    Free { pfn: u8, order: u8 },
    Alloc { pfn: u8, order: u8 },
    FreeBatched { pfn: u8 },
    DmaMapPage { dev: u8, iova: u8, pages: u8, dir: u8, phys: u8 },
    DmaUnmapPage { dev: u8, iova: u8, pages: u8, dir: u8 },
    DmaMapSg { dev: u8, segs: Vec<(u8, u8)>, truncated: bool },
    DmaUnmapSg { dev: u8 },
    DmaAlloc { dev: u8, iova: u8, pages: u8 },
    DmaFree { dev: u8, iova: u8, pages: u8 },
    CacheTagAssign { did: u8 },
    Attach { dev: u8 },
    FlushRange { did: u8, iova: u8, pages: u8, np: bool },
    FlushAll { did: u8 },
    KpMap { dom: u8, iova: u8, pages: u8, dtype: u8 },
    KpUnmap { dom: u8, iova: u8, pages: u8 },
    KpMapRet,
    KpUnmapRet { unmapped: u8 },
    KpAttach { dom: u8, dev: u8 },
    KpDomainFree { dom: u8 },
    FqFlush,
    Lost { cpu: Option<u8>, n: u8 },
    Stack { frames: u8 },
    WildMap { iova: u64, phys: u64, size: u64 },
    WildUnmap { iova: u64, size: u64, unmapped: u64 },
    WildFree { pfn: u64, order: u8 },
    Raw(Vec<u8>),
}

const IOVA_BASE: u64 = 0xffc0_0000;
const PHYS_BASE: u64 = 0x1_0000_0000;
const PFN_BASE: u64 = PHYS_BASE >> 12;

fn iova(slot: u8) -> u64 {
    IOVA_BASE + (u64::from(slot % 64) << 12)
}
fn pages(n: u8) -> u64 {
    match n {
        255 => 512,
        254 => 0,
        n => 1 + u64::from(n % 8),
    }
}
fn dev(d: u8) -> String {
    format!("0000:00:{:02x}.0", d % 4)
}
fn dir(d: u8) -> &'static str {
    ["BIDIRECTIONAL", "TO_DEVICE", "FROM_DEVICE", "NONE"][usize::from(d % 4)]
}
fn dom(d: u8) -> u64 {
    0xffff_8881_0000_0000 + u64::from(d % 4) * 0x800
}

fn render(lines: &[Line]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ts: u64 = 1_000_000_000;
    for l in lines {
        ts = ts.saturating_add_signed(i64::from(l.dt) * 1000);
        let flags = [".....", "..s..", "d.h2.", "d.Z1.", "d..1."][usize::from(l.ctx % 5)];
        let comm = ["insmod", "dd", "<idle>", "kworker/0:1"][usize::from(l.pid % 4)];
        let pid = u32::from(l.pid % 8) * 17;
        let head = format!(
            "{comm:>16}-{pid:<7} [{:03}] {flags} {:>5}.{:06}: ",
            l.cpu % 4,
            ts / 1_000_000_000,
            (ts % 1_000_000_000) / 1000
        );
        let mut body = String::new();
        let w = &mut body;
        let r = match &l.ev {
            Ev::Map { iova: i, phys, pages: p } => {
                let (a, s) = (iova(*i), pages(*p) << 12);
                let pa = PHYS_BASE + (u64::from(*phys % 64) << 12);
                write!(w, "map: IOMMU: iova=0x{a:016x} - 0x{:016x} paddr=0x{pa:016x} size={s}", a + s)
            }
            Ev::Unmap { iova: i, pages: p, unmapped } => {
                let (a, s) = (iova(*i), pages(*p) << 12);
                let u = match unmapped % 4 {
                    0 => 0,
                    1 => s / 2,
                    _ => s,
                };
                write!(w, "unmap: IOMMU: iova=0x{a:016x} - 0x{:016x} size={s} unmapped_size={u}", a + s)
            }
            Ev::Free { pfn, order } => {
                write!(w, "mm_page_free: page=0000000065c2d467 pfn=0x{:x} order={}", PFN_BASE + u64::from(pfn % 64), order % 4)
            }
            Ev::Alloc { pfn, order } => write!(
                w,
                "mm_page_alloc: page=0000000010270b55 pfn=0x{:x} order={} migratetype=0 gfp_flags=GFP_KERNEL",
                PFN_BASE + u64::from(pfn % 64),
                order % 4
            ),
            Ev::FreeBatched { pfn } => {
                write!(w, "mm_page_free_batched: page=0000000053a3aecf pfn=0x{:x} order=0", PFN_BASE + u64::from(pfn % 64))
            }
            Ev::DmaMapPage { dev: d, iova: i, pages: p, dir: r, phys } => write!(
                w,
                "dma_map_page: {} dir={} dma_addr={:x} size={} phys_addr={:x} attrs=",
                dev(*d),
                dir(*r),
                iova(*i),
                pages(*p) << 12,
                PHYS_BASE + (u64::from(phys % 64) << 12)
            ),
            Ev::DmaUnmapPage { dev: d, iova: i, pages: p, dir: r } => write!(
                w,
                "dma_unmap_page: {} dir={} dma_addr={:x} size={} attrs=",
                dev(*d),
                dir(*r),
                iova(*i),
                pages(*p) << 12
            ),
            Ev::DmaMapSg { dev: d, segs, truncated } => {
                let segs = segs.get(..segs.len().min(8)).unwrap_or_default();
                let addrs: Vec<String> = segs.iter().map(|s| format!("0x{:x}", iova(s.0))).collect();
                let sizes: Vec<String> = segs.iter().map(|s| format!("0x{:x}", pages(s.1) << 12)).collect();
                let n = segs.len();
                let ents = if *truncated { n + 1 } else { n };
                write!(
                    w,
                    "dma_map_sg: {} dir=FROM_DEVICE nents={ents}/{ents} ents={ents}/{ents} dma_addrs={{{}}} sizes={{{}}} phys_addrs={{{}}} attrs=",
                    dev(*d),
                    addrs.join(","),
                    sizes.join(","),
                    addrs.join(",")
                )
            }
            Ev::DmaUnmapSg { dev: d } => {
                write!(w, "dma_unmap_sg: {} dir=FROM_DEVICE phys_addrs={{0x{PHYS_BASE:x}}} attrs=", dev(*d))
            }
            Ev::DmaAlloc { dev: d, iova: i, pages: p } => write!(
                w,
                "dma_alloc: {} dir=BIDIRECTIONAL dma_addr={:x} size={} virt_addr=000000007d693afd flags=GFP_KERNEL attrs=",
                dev(*d),
                iova(*i),
                pages(*p) << 12
            ),
            Ev::DmaFree { dev: d, iova: i, pages: p } => write!(
                w,
                "dma_free: {} dir=BIDIRECTIONAL dma_addr={:x} size={} virt_addr=00000000db2a9717 attrs=",
                dev(*d),
                iova(*i),
                pages(*p) << 12
            ),
            Ev::CacheTagAssign { did } => {
                write!(w, "cache_tag_assign: dmar0/{} type iotlb did {} pasid 0 ref 1", dev(*did), did % 4)
            }
            Ev::Attach { dev: d } => write!(w, "attach_device_to_domain: IOMMU: device={}", dev(*d)),
            Ev::FlushRange { did, iova: i, pages: p, np } => {
                let (a, s) = (iova(*i), pages(*p).max(1) << 12);
                let name = if *np { "cache_tag_flush_range_np" } else { "cache_tag_flush_range" };
                write!(
                    w,
                    "{name}: dmar0 dmar0[0] type iotlb did {} [0x{a:x}-0x{:x}] addr 0x{a:x} pages 0x{:x} mask 0x0",
                    did % 4,
                    a + s - 1,
                    s >> 12
                )
            }
            Ev::FlushAll { did } => write!(w, "cache_tag_flush_all: dmar0/dmar0 type iotlb did {} pasid 0 ref 1", did % 4),
            Ev::KpMap { dom: d, iova: i, pages: p, dtype } => write!(
                w,
                "iommu_map: (__iommu_map+0x0/0x280) domain=0x{:x} dtype={} iova=0x{:x} paddr=0x{:x} size=0x{:x} prot=3",
                dom(*d),
                [3, 0xb, 1][usize::from(dtype % 3)],
                iova(*i),
                PHYS_BASE + (u64::from(*i) << 12),
                pages(*p) << 12
            ),
            Ev::KpUnmap { dom: d, iova: i, pages: p } => write!(
                w,
                "iommu_unmap: (__iommu_unmap+0x0/0x1d0) domain=0x{:x} dtype=3 iova=0x{:x} size=0x{:x}",
                dom(*d),
                iova(*i),
                pages(*p) << 12
            ),
            Ev::KpMapRet => write!(w, "iommu_map_ret: (iommu_map+0x42/0xd0 <- __iommu_map) ret=0"),
            Ev::KpUnmapRet { unmapped } => write!(
                w,
                "iommu_unmap_ret: (__iommu_dma_unmap+0xba/0x2d0 <- __iommu_unmap) unmapped={}",
                pages(*unmapped) << 12
            ),
            Ev::KpAttach { dom: d, dev: v } => write!(
                w,
                "iommu_attach: (__iommu_attach_device+0x0/0x90) domain=0x{:x} dtype=3 dev=\"{}\"",
                dom(*d),
                dev(*v)
            ),
            Ev::KpDomainFree { dom: d } => {
                write!(w, "iommu_domain_free: (iommu_domain_free+0x4/0x50) domain=0x{:x} dtype=1", dom(*d))
            }
            Ev::FqFlush => write!(w, "fq_flush_iotlb: (fq_flush_iotlb+0x0/0x40) cookie=0xffff88810193c200"),
            Ev::Lost { cpu, n } => {
                out.extend_from_slice(
                    match cpu {
                        Some(c) => format!("CPU:{} [LOST {n} EVENTS]\n", c % 4),
                        None => format!("[LOST {n} EVENTS]\n"),
                    }
                    .as_bytes(),
                );
                continue;
            }
            Ev::Stack { frames } => {
                out.extend_from_slice(b" => __iommu_map+0x1/0x2\n");
                for f in 0..frames % 4 {
                    out.extend_from_slice(format!(" => caller_{f}+0x{f:x}/0x100\n").as_bytes());
                }
                continue;
            }
            Ev::WildMap { iova: a, phys, size } => write!(
                w,
                "map: IOMMU: iova=0x{a:016x} - 0x{:016x} paddr=0x{phys:016x} size={size}",
                a.wrapping_add(*size)
            ),
            Ev::WildUnmap { iova: a, size, unmapped } => write!(
                w,
                "unmap: IOMMU: iova=0x{a:016x} - 0x{:016x} size={size} unmapped_size={unmapped}",
                a.wrapping_add(*size)
            ),
            Ev::WildFree { pfn, order } => write!(w, "mm_page_free: page=0000000065c2d467 pfn=0x{pfn:x} order={order}"),
            Ev::Raw(bytes) => {
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(bytes);
                out.push(b'\n');
                continue;
            }
        };
        r.expect("writing to a String");
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body.as_bytes());
        out.push(b'\n');
    }
    out
}

fuzz_target!(|lines: Vec<Line>| {
    let text = render(&lines);
    let opts = AnalyzeOptions { max_line_len: 4096, ..AnalyzeOptions::default() };
    let report = analyze(&text[..], "fuzz", &opts, &mut ()).expect("a slice always reads");
    assert_eq!(report.summary.bytes, text.len() as u64);
});
