//! Random-mutation fuzz loop: the parsers must never panic, whatever the
//! bytes. Deterministic (fixed seeds), so a failure is reproducible; every
//! crash input found this way belongs in the unit tests as a regression.

use std::io::{BufReader, Read};
use std::path::PathBuf;

use iosan_testkit::Rng;
use iosan_trace::parse::{classify_line, parse_event, LineKind, LineReader};

const SEEDS: &[&[u8]] = &[
    b"          <idle>-0       [000] d..2.     0.008000: qi_submit: iec_inv dmar0: 0x4 0x0 0x0 0x0",
    b"            init-1       [000] .....     1.441391: add_device_to_group: IOMMU: groupID=0 device=0000:00:00.0",
    b"            init-1       [000] .....     1.449453: attach_device_to_domain: IOMMU: device=0000:00:00.0",
    b"          insmod-154     [001] .....     5.945167: map: IOMMU: iova=0x00000000ffffe000 - 0x00000000fffff000 paddr=0x000000010f4ff000 size=4096",
    b"          <idle>-0       [001] d.h2.     6.019338: unmap: IOMMU: iova=0x00000000ffff8000 - 0x00000000ffff9000 size=4096 unmapped_size=4096",
    b"          insmod-156     [001] d..1.     6.015739: dma_map_page: 0000:00:03.0 dir=TO_DEVICE dma_addr=ffffb0f8 size=16 phys_addr=1236b00f8 attrs=",
    b"          <idle>-0       [001] d.h2.     6.019713: dma_unmap_page: 0000:00:03.0 dir=TO_DEVICE dma_addr=ffff8d40 size=48 attrs=",
    b"              dd-180     [001] .N...     8.375454: dma_map_sg: 0000:00:02.0 dir=FROM_DEVICE nents=3/3 ents=1/1 dma_addrs={0xfff80000} sizes={0x20000} phys_addrs={0x10f572000,0x10f566000,0x10f569000} attrs=NO_WARN",
    b"              dd-180     [001] d.h1.     8.376806: dma_unmap_sg: 0000:00:02.0 dir=FROM_DEVICE phys_addrs={0x10f572000,0x10f566000} attrs=",
    b"          insmod-154     [001] .....     5.946078: dma_alloc: 0000:00:05.0 dir=BIDIRECTIONAL dma_addr=ffffe000 size=6726 virt_addr=000000007d693afd flags=GFP_KERNEL|__GFP_NOWARN|__GFP_ZERO attrs=NO_WARN",
    b"          insmod-194     [000] .....    10.823942: dma_free: 0000:00:02.0 dir=BIDIRECTIONAL dma_addr=ffefc000 size=16384 virt_addr=00000000db2a9717 attrs=",
    b"            init-1       [000] .....     5.833130: mm_page_alloc: page=0000000010270b55 pfn=0x100ec2 order=1 migratetype=0 gfp_flags=GFP_KERNEL_ACCOUNT|__GFP_ZERO",
    b"          insmod-152     [001] ...1.     5.834213: mm_page_free: page=0000000065c2d467 pfn=0x100ec8 order=1",
    b"          insmod-152     [001] ...2.     5.873856: mm_page_free_batched: page=0000000053a3aecf pfn=0x139c9c order=0",
    b"            init-1       [000] .....     1.449186: cache_tag_assign: dmar0/dmar0 type iotlb did 2 pasid 0 ref 1",
    b"          <idle>-0       [001] d.h3.     6.019491: cache_tag_flush_range: dmar0 dmar0[0] type iotlb did 5 [0xffff8000-0xffff8fff] addr 0xffff8000 pages 0x1 mask 0x0",
    b"          insmod-154     [001] d..1.     5.945616: cache_tag_flush_range_np: dmar0 dmar0[0] type iotlb did 7 [0xffffe000-0xffffffff] addr 0xffffe000 pages 0x2 mask 0x1",
    b"            init-1       [000] .....     1.446507: iommu_attach: (__iommu_attach_device+0x0/0x90) domain=0xffff888101f5a2a0 dtype=3 dev=\"0000:00:00.0\"",
    b"            init-1       [000] .....     1.463505: iommu_map: (__iommu_map+0x0/0x280) domain=0xffff888101f5d8a0 dtype=3 iova=0x0 paddr=0x0 size=0x1000000 prot=3",
    b"            init-1       [000] .....     1.464731: iommu_map_ret: (iommu_map+0x42/0xd0 <- __iommu_map) ret=0",
    b"          <idle>-0       [001] d.h2.     6.018976: iommu_unmap: (__iommu_unmap+0x0/0x1d0) domain=0xffff888101f5c0a0 dtype=3 iova=0xffff8000 size=0x1000",
    b"          <idle>-0       [001] d.h2.     6.019383: iommu_unmap_ret: (__iommu_dma_unmap+0xba/0x2d0 <- __iommu_unmap) unmapped=4096",
    b"          insmod-194     [000] .....    10.835765: iommu_domain_free: (iommu_domain_free+0x4/0x50) domain=0xffff888100eb34a0 dtype=1",
    b"          insmod-151     [000] ..s..     4.274968: fq_flush_iotlb: (fq_flush_iotlb+0x0/0x40) cookie=0xffff88810193c200",
    b"          insmod-156     [001] d....     5.984946: console: virtio_blk virtio0: 2/0/0 default/read/poll queues",
    b"            init-1       [000] .....     5.832153: tracing_mark_write: LAB: phase=setup_done mode=bug",
    b"            init-1     [000]     1.464407: map:                  IOMMU: iova=0x0000000000000000 - 0x0000000001000000 paddr=0x0000000000000000 size=16777216",
    b"            init-1     [000]     1.463505: iommu_map:            (ffffffff81929360) domain=0xffff888101f5d8a0 dtype=3 iova=0x0 paddr=0x0 size=0x1000000 prot=3",
    b"            init-1     [000]     1.464731: iommu_map_ret:        (ffffffff81929360 <- ffffffff81929632) ret=0",
    b"              dd-180   [001]     8.375454: dma_map_sg:           [FAILED TO PARSE] device=0000:00:02.0 full_nents=2 full_ents=1 truncated=0 phys_addrs=ARRAY[00, 20, 57, 0f, 01, 00, 00, 00, 00, 60, 56, 0f, 01, 00, 00, 00] dma_addrs=ARRAY[00, 00, f8, ff, 00, 00, 00, 00] lengths=ARRAY[00, 20, 00, 00] dir=2 attrs=0x100",
    b"            init-1     [000]     5.832153: print:                tracing_mark_write: LAB: phase=setup_done mode=bug",
    b"            bash-1977    (   1977) [000] ...1.  5.000000123: console: hi",
    b"CPU:1 [LOST 1234 EVENTS]",
    b"cpus=2",
    b" => __iommu_map+0x0/0x280",
    b"# entries-in-buffer/entries-written: 228301/228301   #P:2",
];

const INTERESTING: &[u8] = b" -[]():={},/x0123456789abcdefABCDEF.<>\"#\r\n\0\xff=>";

fn mutate(rng: &mut Rng, seed: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(seed);
    for _ in 0..1 + rng.below(6) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] = (rng.next_u64() & 0xff) as u8;
            }
            1 => {
                let i = rng.below(len + 1);
                out.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                out.remove(i);
            }
            3 => out.truncate(rng.below(len + 1)),
            4 if len > 0 => {
                // duplicate a slice (long numbers, repeated fields)
                let a = rng.below(len);
                let b = (a + rng.below(40)).min(len);
                let piece = out[a..b].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, piece);
            }
            5 => {
                // a run of digits: overflowing numbers
                let at = rng.below(len + 1);
                let digit = b"0f9"[rng.below(3)];
                out.splice(at..at, std::iter::repeat_n(digit, 1 + rng.below(40)));
            }
            6 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            _ => {
                // splice in part of another seed
                let other = SEEDS[rng.below(SEEDS.len())];
                let a = rng.below(other.len());
                let at = rng.below(len + 1);
                out.splice(at..at, other[a..].iter().copied());
                out.truncate(at + (other.len() - a) + rng.below(len - at.min(len) + 1));
            }
        }
    }
}

/// Runs the whole per-line pipeline; returns whether an event was parsed.
fn run_line(line: &[u8]) -> bool {
    match classify_line(line) {
        Ok(LineKind::Event(ev)) => {
            let _ = parse_event(ev.name, ev.body);
            // The body alone, under every known name.
            true
        }
        _ => false,
    }
}

const NAMES: &[&[u8]] = &[
    b"map",
    b"unmap",
    b"add_device_to_group",
    b"io_page_fault",
    b"dma_map_page",
    b"dma_unmap_page",
    b"dma_map_sg",
    b"dma_unmap_sg",
    b"dma_map_sg_err",
    b"dma_alloc",
    b"dma_free",
    b"dma_alloc_sgt",
    b"dma_free_sgt",
    b"dma_sync_single_for_cpu",
    b"dma_sync_sg_for_cpu",
    b"mm_page_alloc",
    b"mm_page_free",
    b"mm_page_free_batched",
    b"cache_tag_assign",
    b"cache_tag_flush_range",
    b"print",
    b"kprobe",
];

#[test]
fn mutated_real_lines_never_panic() {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut buf = Vec::new();
    let mut events = 0u32;
    for i in 0..200_000u32 {
        let seed = SEEDS[i as usize % SEEDS.len()];
        mutate(&mut rng, seed, &mut buf);
        events += u32::from(run_line(&buf));
        // bodies straight into every event parser
        let name = NAMES[rng.below(NAMES.len())];
        let body_start = rng.below(buf.len() + 1);
        let _ = parse_event(name, &buf[body_start..]);
    }
    // most mutations keep the line an event line: the loop exercised the
    // event parsers, not just the classifier's rejections
    assert!(events > 50_000, "{events}");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::new(0x1234_5678_9abc_def1);
    let mut buf = Vec::new();
    for _ in 0..100_000 {
        buf.clear();
        let len = rng.below(200);
        for _ in 0..len {
            // bias towards the bytes the parsers look at
            let b = if rng.below(2) == 0 {
                INTERESTING[rng.below(INTERESTING.len())]
            } else {
                (rng.next_u64() & 0xff) as u8
            };
            buf.push(b);
        }
        run_line(&buf);
        for name in NAMES {
            let _ = parse_event(name, &buf);
        }
    }
}

#[test]
fn reader_on_random_streams_never_panics_and_accounts_every_byte() {
    let mut rng = Rng::new(0xdead_beef_cafe_f00d);
    for _ in 0..300 {
        let len = rng.below(4000);
        let data: Vec<u8> =
            (0..len).map(|_| if rng.below(8) == 0 { b'\n' } else { (rng.next_u64() & 0xff) as u8 }).collect();
        let cap = 1 + rng.below(64);
        let max = 1 + rng.below(100);
        let mut r = LineReader::with_max_line_len(BufReader::with_capacity(cap, &data[..]), max);
        let mut lines = 0u64;
        let mut next_offset = 0u64;
        while let Some(item) = r.next_line() {
            lines += 1;
            let (number, offset) = match item {
                Ok(l) => {
                    assert!(l.bytes.len() <= max);
                    (l.number, l.offset)
                }
                Err(iosan_trace::parse::ReadError::LineTooLong { line, offset, .. }) => (line, offset),
                Err(e) => panic!("{e}"),
            };
            assert_eq!(number, lines);
            assert_eq!(offset, next_offset);
            next_offset = r.bytes_read();
        }
        assert_eq!(r.bytes_read(), len as u64);
        assert_eq!(
            lines,
            data.split(|&b| b == b'\n').count() as u64 - u64::from(data.last() == Some(&b'\n') || data.is_empty())
        );
    }
}

#[test]
fn mutated_fixture_sample_never_panics() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captures/bug-strict.trace-cmd-report.txt.xz");
    let Ok(file) = std::fs::File::open(&path) else {
        eprintln!("skipped: {} not found", path.display());
        return;
    };
    let mut text = Vec::new();
    xz2::read::XzDecoder::new(file).read_to_end(&mut text).unwrap();
    let mut rng = Rng::new(42);
    let mut buf = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i % 50 != 0 {
            continue;
        }
        for _ in 0..4 {
            mutate(&mut rng, line, &mut buf);
            run_line(&buf);
        }
    }
}
