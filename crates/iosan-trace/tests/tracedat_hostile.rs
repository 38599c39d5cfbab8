//! Hostile trace.dat input: truncation, sizes and offsets that lie, option
//! chains that loop, compression bombs, a page whose commit runs past its
//! end, huge counts. Each must end in an error value or in counted skips:
//! no panic, no hang, memory bounded by the reader's limits (a counting
//! allocator, as in `adversarial.rs`, measures the peak heap).
#![allow(unsafe_code)]

mod common;

use std::io::Cursor;

use common::tracedat_writer::{record, u64b, Codec, Pages, Writer};
use iosan_trace::source::tracedat::{Item, Limits, Skipped, TraceDat, TraceDatError};

// ---------------------------------------------------------------- heap meter

#[path = "common/heap.rs"]
mod heap;
use heap::{assert_heap, metered, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A small file: `cpus` CPUs with `n` map records each.
fn small(version: u32, codec: Codec, cpus: u32, n: u64) -> Writer {
    let mut w = Writer::new(version, codec);
    let mut list = Vec::new();
    for cpu in 0..cpus {
        let mut p = Pages::new(false, 8, 4096);
        for i in 0..n {
            let mut rest = u64b(false, i).to_vec();
            rest.extend_from_slice(&u64b(false, i));
            rest.extend_from_slice(&u64b(false, 4096));
            p.record(100 + 10 * i + u64::from(cpu), &record(false, 10, 0, 1, &rest));
        }
        list.push((cpu, p.finish()));
    }
    w.buffers = vec![(String::new(), list)];
    w
}

/// Opens and drains; the number of records read and what was skipped.
fn drain(file: &[u8]) -> Result<(u64, Skipped), TraceDatError> {
    drain_with(file, Limits::default())
}

fn drain_with(file: &[u8], limits: Limits) -> Result<(u64, Skipped), TraceDatError> {
    let mut t = TraceDat::open_with(Cursor::new(file), limits)?;
    let mut n = 0;
    while let Some(item) = t.next_item()? {
        if let Item::Event(e) = item {
            // Touch every field, as a consumer would.
            for f in &e.format.fields {
                let _ = iosan_trace::field::FieldLookup::field(&e.fields, &f.name);
            }
            n += 1;
        }
        assert!(n < 10_000_000, "runaway iteration");
    }
    Ok((n, t.skipped()))
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn every_truncation_is_an_error_or_fewer_records() {
    for (version, codec) in [(6, Codec::None), (7, Codec::None), (7, Codec::Zstd), (7, Codec::Zlib)] {
        let file = small(version, codec, 2, 400).build();
        let (full, _) = drain(&file).unwrap();
        assert_eq!(full, 800);
        let step = (file.len() / 1500).max(1);
        let ((), peak) = metered(|| {
            for cut in (0..file.len()).step_by(step) {
                if let Ok((n, _)) = drain(&file[..cut]) {
                    assert!(n <= full, "v{version} {codec:?} cut {cut}");
                }
            }
        });
        assert_heap(&format!("v{version} {codec:?} truncated at every {step} bytes"), peak, 4);
    }
}

#[test]
fn a_cut_short_file_names_no_byte_past_its_end_without_its_length() {
    for (version, codec) in [(6, Codec::None), (7, Codec::None), (7, Codec::Zstd)] {
        let file = small(version, codec, 2, 400).build();
        for cut in (64..file.len()).step_by((file.len() / 300).max(1)) {
            let Err(e) = drain(&file[..cut]) else { continue };
            match e {
                // A header or option points past the end: both are said.
                TraceDatError::PastEnd { offset, len, .. } => {
                    assert_eq!(len, cut as u64, "v{version} {codec:?} cut {cut}");
                    assert!(offset > len);
                    assert!(e.to_string().contains(&format!("ends at byte {cut}")), "{e}");
                }
                TraceDatError::Truncated { offset, .. } => assert!(offset <= cut as u64, "v{version} cut {cut}: {e}"),
                _ => {}
            }
        }
    }
}

#[test]
fn block_sizes_that_lie() {
    let file = small(6, Codec::None, 1, 10).build();
    // kallsyms says 4 GiB.
    let mut f = file.clone();
    let at = find(&f, b"ffffffff81000000 T _stext") - 4;
    f[at..at + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    assert!(matches!(drain(&f), Err(TraceDatError::TooLarge { what: "kallsyms", .. })));
    // header_page says 2^64 - 1.
    let mut f = file.clone();
    let at = find(&f, b"header_page\0") + 12;
    f[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(drain(&f), Err(TraceDatError::TooLarge { .. })));
    // A format's size runs past the end of the file.
    let mut f = file.clone();
    let at = find(&f, b"name: map") - 8;
    f[at..at + 8].copy_from_slice(&(file.len() as u64).to_le_bytes());
    assert!(matches!(drain(&f), Err(TraceDatError::Truncated { .. })));
}

#[test]
fn huge_counts() {
    let file = small(6, Codec::None, 1, 10).build();
    // Four billion systems: each needs bytes the file does not have.
    let mut f = file.clone();
    let at = find(&f, b"iommu\0") - 4;
    f[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(drain(&f).is_err());
    // Four billion CPUs.
    let mut f = file.clone();
    let at = find(&f, b"options  \0") - 4;
    f[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(drain(&f), Err(TraceDatError::TooLarge { what: "CPU count", .. })));
    // A BUFFER option with a billion CPUs.
    let mut w = small(7, Codec::Zstd, 1, 10);
    w.buffer_cpu_count = Some(1_000_000_000);
    assert!(matches!(drain(&w.build()), Err(TraceDatError::TooLarge { .. })));
    // A chunk table with four billion chunks and one chunk of data.
    let mut w = small(7, Codec::Zstd, 1, 10);
    w.chunk_count = Some(u32::MAX);
    let (n, s) = drain(&w.build()).unwrap();
    assert_eq!((n, s.chunks), (10, 1));
}

#[test]
fn offsets_that_lie_or_loop() {
    // v7, uncompressed: the OPTIONS section is last and its DONE option's
    // next-offset is the file's last 8 bytes. Point it back at itself.
    let mut f = small(7, Codec::None, 1, 10).build();
    let opt = u64::from_le_bytes(f[find(&f, b"none\0\0") + 6..][..8].try_into().unwrap());
    let n = f.len();
    f[n - 8..].copy_from_slice(&opt.to_le_bytes());
    assert!(matches!(drain(&f), Err(TraceDatError::Malformed { .. })));
    // ... and past the end of the file.
    f[n - 8..].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(drain(&f).is_err());
    // v6: a CPU's data offset past the end is counted, the other CPU read.
    let mut f = small(6, Codec::None, 2, 10).build();
    let at = find(&f, b"flyrecord\0") + 10;
    f[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let (n, s) = drain(&f).unwrap();
    assert_eq!((n, s.cpu_ranges), (10, 1));
    // v6: a CPU's size past the end is clipped to the file.
    let mut f = small(6, Codec::None, 1, 10).build();
    let at = find(&f, b"flyrecord\0") + 18;
    f[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let (n, s) = drain(&f).unwrap();
    assert_eq!((n, s.cpu_ranges), (10, 1));
}

#[test]
fn compression_bombs_are_bounded() {
    // 64 MiB of zeros in a few KB, stated as one 40 KiB chunk.
    let zeros = vec![0u8; 64 << 20];
    for codec in [Codec::Zstd, Codec::Zlib] {
        let bomb = match codec {
            Codec::Zstd => zstd::bulk::compress(&zeros, 3).unwrap(),
            _ => {
                use std::io::Write;
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
                e.write_all(&zeros).unwrap();
                e.finish().unwrap()
            }
        };
        let mut w = small(7, codec, 2, 10);
        w.chunk_override = Some((40960, bomb.clone()));
        let f = w.build();
        let (r, peak) = metered(|| drain(&f));
        let (n, s) = r.unwrap();
        assert_eq!((n, s.chunks), (0, 2), "{codec:?}");
        assert_heap(&format!("{codec:?} bomb of 64 MiB stated as 40 KiB"), peak, 2);
        // Stated as 4 GiB: over the chunk limit, skipped unread.
        w.chunk_override = Some((u32::MAX, bomb));
        let (n, s) = drain(&w.build()).unwrap();
        assert_eq!((n, s.chunks), (0, 2), "{codec:?}");
    }
    // A metadata section stated smaller than it inflates to.
    let mut w = small(7, Codec::Zstd, 1, 10);
    w.kallsyms_usize = Some(10);
    assert!(matches!(drain(&w.build()), Err(TraceDatError::Malformed { .. })));
    // Stated larger than the block limit.
    w.kallsyms_usize = Some(u32::MAX);
    assert!(matches!(drain(&w.build()), Err(TraceDatError::TooLarge { .. })));
}

#[test]
fn the_memory_limit_holds_across_cpus() {
    // Eight CPUs, each with a 4 MiB chunk of zeros (a legal chunk, but
    // together over a 16 MiB limit).
    let zeros = vec![0u8; 4 << 20];
    let z = zstd::bulk::compress(&zeros, 3).unwrap();
    let mut w = small(7, Codec::Zstd, 8, 1);
    w.chunk_override = Some((4 << 20, z));
    let f = w.build();
    assert!(matches!(
        drain_with(&f, Limits { memory: 16 << 20 }),
        Err(TraceDatError::TooLarge { what: "page buffers of all CPUs", .. })
    ));
    // Within the default limit it reads: all-zero pages hold no records.
    let (r, peak) = metered(|| drain(&f));
    assert_heap("8 CPUs x 4 MiB chunks", peak, 40);
    let (n, s) = r.unwrap();
    assert_eq!(n, 0);
    assert_eq!(s, Skipped::default());
}

#[test]
fn a_page_whose_commit_runs_past_its_end_is_skipped() {
    let f = small(6, Codec::None, 1, 400).build();
    let t = TraceDat::open(Cursor::new(&f)).unwrap();
    let base = t.buffers()[0].cpus[0].offset as usize;
    let (full, _) = drain(&f).unwrap();
    // Page 2's commit says 128 MiB.
    let mut g = f.clone();
    let at = base + 4096 + 8;
    g[at..at + 8].copy_from_slice(&((1u64 << 27) - 1).to_le_bytes());
    let (n, s) = drain(&g).unwrap();
    assert_eq!((s.pages, s.total(), s.first_offset), (1, 1, Some(base as u64 + 4096)));
    assert!(n < full && n > 0);
    // Page 1's first event claims a length past the data: the rest of
    // the page is skipped, later pages read.
    let mut g = f.clone();
    let at = base + 16;
    g[at..at + 8].copy_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0, 0]);
    let (n, s) = drain(&g).unwrap();
    assert_eq!(s.damaged_pages, 1);
    assert!(n < full && n > 0);
    // An event of an unknown ID is counted.
    let mut g = f.clone();
    let at = base + 16 + 4;
    g[at..at + 2].copy_from_slice(&999u16.to_le_bytes());
    let (n, s) = drain(&g).unwrap();
    assert_eq!((n, s.unknown_ids, s.first_offset), (full - 1, 1, Some(base as u64 + 20)));
}

#[test]
fn zero_and_absurd_sub_buffer_sizes_are_errors() {
    let mut f = small(6, Codec::None, 1, 10).build();
    // The header_page data size and the file's page size both 0.
    let hp = find(&f, b"size:4080;");
    f[hp..hp + 10].copy_from_slice(b"size:4000;");
    f[14..18].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(drain(&f), Err(TraceDatError::Malformed { .. })));
}

#[test]
fn latency_files_and_unknown_tags_are_refused() {
    let mut f = small(6, Codec::None, 1, 10).build();
    let at = find(&f, b"flyrecord\0");
    f[at..at + 10].copy_from_slice(b"latency  \0");
    assert!(matches!(drain(&f), Err(TraceDatError::Latency)));
    f[at..at + 10].copy_from_slice(b"whatever!\0");
    assert!(matches!(drain(&f), Err(TraceDatError::Malformed { .. })));
    // v7 with a BUFFER_TEXT (latency) option.
    let mut w = small(7, Codec::Zstd, 1, 10);
    w.extra_options = vec![(22, 0u64.to_le_bytes().to_vec())];
    assert!(matches!(drain(&w.build()), Err(TraceDatError::Latency)));
    // An unknown compression.
    let mut f = small(7, Codec::Zstd, 1, 10).build();
    let at = find(&f, b"zstd\0");
    f[at..at + 4].copy_from_slice(b"lz4x");
    assert!(matches!(drain(&f), Err(TraceDatError::Compression(_))));
}

// ---------------------------------------------------------------- perf.data

mod perf {
    use std::io::Cursor;

    use iosan_trace::source::binary::PerfDataSource;
    use iosan_trace::source::perf_data::{Limits, PerfData};
    use iosan_trace::{analyze_source, AnalyzeOptions};

    use super::{assert_heap, metered};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/perf");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }

    fn drain_source(bytes: Vec<u8>) {
        if let Ok(mut s) = PerfDataSource::open_file(Cursor::new(bytes)) {
            let _ = analyze_source(&mut s, "hostile", &AnalyzeOptions::default(), &mut ());
        }
    }

    /// A pipe-mode stream: header, one tracepoint attr, then `records`.
    fn pipe(records: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut v = b"PERFILE2".to_vec();
        v.extend_from_slice(&16u64.to_le_bytes());
        let mut attr = vec![0u8; 64];
        attr[0] = 2;
        attr[4] = 64;
        attr[24] = 0x84; // TIME | CPU
        attr[25] = 0x04; // RAW
        let mut all = vec![(64u32, attr)];
        all.extend_from_slice(records);
        for (ty, body) in all {
            v.extend_from_slice(&ty.to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes());
            v.extend_from_slice(&u16::try_from(body.len() + 8).unwrap().to_le_bytes());
            v.extend_from_slice(&body);
        }
        v
    }

    #[test]
    fn truncations_and_flipped_bytes_stay_small() {
        for name in ["kmem-file.perf.data", "kmem-zstd.perf.data", "kmem-pipe.perf.data"] {
            let bytes = fixture(name);
            let ((), peak) = metered(|| {
                for cut in (0..bytes.len()).step_by(bytes.len() / 64 + 1) {
                    drain_source(bytes.get(..cut).unwrap().to_vec());
                }
            });
            assert_heap(name, peak, 16 + (bytes.len() >> 20) as isize * 8);
        }
    }

    #[test]
    fn sizes_and_offsets_that_lie() {
        let good = fixture("kmem-file.perf.data");
        // attrs, data and feature-table offsets (header bytes 24..72) pointed past the end or at themselves.
        for at in (24..72).step_by(8) {
            for v in [u64::MAX, u64::MAX / 2, good.len() as u64, 0] {
                let mut f = good.clone();
                f.get_mut(at..at + 8).unwrap().copy_from_slice(&v.to_le_bytes());
                let ((), peak) = metered(|| drain_source(f));
                assert_heap("lying header", peak, 16);
            }
        }
    }

    #[test]
    fn a_compression_bomb_is_refused_within_the_limit() {
        let bomb = zstd::bulk::compress(&vec![0u8; 256 << 20], 19).unwrap();
        let stream = pipe(&[(81, bomb)]);
        let limits = Limits { max_decompressed_per_record: 4 << 20, ..Limits::default() };
        let (r, peak) = metered(|| {
            let mut p = PerfData::open_pipe(&stream[..], limits).unwrap();
            loop {
                match p.next_item() {
                    Ok(Some(_)) => {}
                    other => break other.map(|_| ()),
                }
            }
        });
        assert!(r.is_err());
        assert_heap("zstd bomb", peak, 12);
    }

    #[test]
    fn a_file_without_rounds_holds_at_most_its_window() {
        // 200,000 samples and no FINISHED_ROUND: the ordering window (here 1,000) bounds memory.
        let mut recs = Vec::new();
        for i in 0..200_000u64 {
            let mut b = (1_000_000 - i).to_le_bytes().to_vec();
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&64u32.to_le_bytes());
            b.extend_from_slice(&[0u8; 64]);
            recs.push((9u32, b));
        }
        let stream = pipe(&recs);
        let limits = Limits { max_pending: 1_000, ..Limits::default() };
        let (n, peak) = metered(|| {
            let mut p = PerfData::open_pipe(&stream[..], limits).unwrap();
            let mut n = 0;
            while let Ok(Some(_)) = p.next_item() {
                n += 1;
            }
            (n, p.stats().order_window_exceeded)
        });
        assert_eq!(n.0, 200_000);
        assert!(n.1 > 0, "the full window is counted");
        assert_heap("no rounds", peak, 4);
    }
}
