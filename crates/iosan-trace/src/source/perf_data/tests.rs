use std::io::Cursor;

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/perf");

/// (time ns, cpu, tid, event name) of one sample.
type Row = (u64, u32, u32, String);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

/// `perf script -F time,cpu,tid,event --ns` of the fixture, as
/// (time ns, cpu, tid, event name).
fn expected(name: &str) -> Vec<Row> {
    String::from_utf8(fixture(name))
        .unwrap()
        .lines()
        .map(|l| {
            let mut w = l.split(' ');
            let t = w.next().unwrap().parse().unwrap();
            let cpu = w.next().unwrap().parse().unwrap();
            let tid = w.next().unwrap().parse().unwrap();
            (t, cpu, tid, w.next().unwrap().trim_end_matches(':').to_string())
        })
        .collect()
}

fn read_all<R: Read>(mut p: PerfData<R>) -> (Vec<Row>, PerfData<R>) {
    let mut out = Vec::new();
    let mut last = 0;
    while let Some(item) = p.next_item().unwrap() {
        if let PerfItem::Sample(s) = item {
            assert!(s.time >= last, "time order: {} after {last}", s.time);
            last = s.time;
            let name = p.attrs().get(s.attr).and_then(|a| a.name.clone()).unwrap_or_default();
            out.push((s.time, s.cpu.unwrap(), s.tid.unwrap(), name));
        }
    }
    (out, p)
}

fn same_samples(mut ours: Vec<Row>, mut theirs: Vec<Row>, names: bool) {
    if !names {
        ours.iter_mut().chain(theirs.iter_mut()).for_each(|s| s.3.clear());
    }
    ours.sort();
    theirs.sort();
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(ours, theirs);
}

#[test]
fn file_mode_matches_perf_script() {
    let p = PerfData::open_file(Cursor::new(fixture("kmem-file.perf.data")), Limits::default()).unwrap();
    assert!(p.tracing_data().is_some_and(|t| t.starts_with(b"\x17\x08Dtracing")));
    // The two tracepoints and perf's own tracking event.
    let names: Vec<_> = p.attrs().iter().filter_map(|a| a.name.as_deref()).collect();
    assert!(names.contains(&"kmem:mm_page_free") && names.contains(&"kmem:mm_page_alloc"), "{names:?}");
    let (ours, p) = read_all(p);
    same_samples(ours, expected("kmem-file.expected"), true);
    assert_eq!(p.stats().order_window_exceeded, 0);
    assert!(p.comm(1).is_some() || !p.comms.is_empty(), "COMM records give task names");
}

#[test]
fn compressed_records_match_perf_script() {
    let p = PerfData::open_file(Cursor::new(fixture("kmem-zstd.perf.data")), Limits::default()).unwrap();
    let (ours, p) = read_all(p);
    assert!(p.stats().compressed_records > 0);
    same_samples(ours, expected("kmem-zstd.expected"), true);
}

#[test]
fn pipe_mode_matches_perf_script() {
    let bytes = fixture("kmem-pipe.perf.data");
    let p = PerfData::open_pipe(&bytes[..], Limits::default()).unwrap();
    let (ours, p) = read_all(p);
    assert!(p.tracing_data().is_some());
    same_samples(ours, expected("kmem-pipe.expected"), false);
    // A pipe-mode file given as a path reads the same.
    let f = PerfData::open_file(Cursor::new(bytes.clone()), Limits::default()).unwrap();
    let (ours2, _) = read_all(f);
    same_samples(ours2, expected("kmem-pipe.expected"), false);
}

#[test]
fn magic_detection() {
    assert!(is_perf_data(b"PERFILE2\x68\0\0\0"));
    assert!(!is_perf_data(b"\x17\x08Dtracing"));
    assert!(PerfData::open_file(Cursor::new(b"PERFILE1".to_vec()), Limits::default()).is_err());
}

/// Every truncation and a sweep of corrupted bytes: errors or fewer
/// samples, never a panic or a hang.
#[test]
fn hostile_truncations_and_corruptions_fail_closed() {
    for name in ["kmem-file.perf.data", "kmem-zstd.perf.data", "kmem-pipe.perf.data"] {
        let bytes = fixture(name);
        let step = (bytes.len() / 300).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            let t = bytes.get(..cut).unwrap().to_vec();
            drain(PerfData::open_file(Cursor::new(t.clone()), Limits::default()));
            drain(PerfData::open_pipe(&t[..], Limits::default()));
        }
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..300 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut t = bytes.clone();
            let i = (rng as usize) % t.len();
            if let Some(b) = t.get_mut(i) {
                *b ^= (rng >> 32) as u8 | 1;
            }
            drain(PerfData::open_file(Cursor::new(t), Limits::default()));
        }
    }
}

fn drain<R: Read>(p: Result<PerfData<R>, PerfDataError>) {
    if let Ok(mut p) = p {
        for _ in 0..1_000_000 {
            match p.next_item() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
        panic!("no end after a million items");
    }
}

/// A pipe-mode stream: header, one attr, then `records`.
fn pipe_stream(records: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut v = b"PERFILE2".to_vec();
    v.extend_from_slice(&16u64.to_le_bytes());
    let mut attr = vec![0u8; 64];
    attr[0] = 2; // tracepoint
    attr[4] = 64; // size
    attr[24] = (sample::bits::TIME | sample::bits::CPU | sample::bits::RAW) as u8;
    attr[25] = ((sample::bits::TIME | sample::bits::CPU | sample::bits::RAW) >> 8) as u8;
    let mut all = vec![(rt::HEADER_ATTR, attr)];
    all.extend_from_slice(records);
    for (ty, body) in all {
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&u16::try_from(body.len() + 8).unwrap().to_le_bytes());
        v.extend_from_slice(&body);
    }
    v
}

fn sample_body(time: u64, cpu: u32) -> Vec<u8> {
    let mut b = time.to_le_bytes().to_vec();
    b.extend_from_slice(&cpu.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&[1, 0, 0, 0]);
    b
}

#[test]
fn a_compression_bomb_is_an_error_within_the_limit() {
    let zeros = vec![0u8; 64 << 20];
    let bomb = zstd::bulk::compress(&zeros, 19).unwrap();
    assert!(bomb.len() < 60_000, "{}", bomb.len());
    let stream = pipe_stream(&[(rt::COMPRESSED, bomb)]);
    let limits = Limits { max_decompressed_per_record: 1 << 20, ..Limits::default() };
    let mut p = PerfData::open_pipe(&stream[..], limits).unwrap();
    let err = loop {
        match p.next_item() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the bomb was swallowed"),
            Err(e) => break e,
        }
    };
    assert!(err.to_string().contains("compression bomb"), "{err}");
    assert!(p.pending.capacity() < 4 << 20);
}

#[test]
fn lost_records_and_samples_in_time_order_without_rounds() {
    let mut lost = 7u64.to_le_bytes().to_vec(); // id
    lost.extend_from_slice(&3u64.to_le_bytes()); // lost
    let stream = pipe_stream(&[
        (rt::SAMPLE, sample_body(30, 1)),
        (rt::SAMPLE, sample_body(10, 0)),
        (rt::LOST, lost),
        (rt::SAMPLE, sample_body(20, 0)),
    ]);
    let mut p = PerfData::open_pipe(&stream[..], Limits::default()).unwrap();
    let mut times = Vec::new();
    let mut lost_seen = 0;
    while let Some(item) = p.next_item().unwrap() {
        match item {
            PerfItem::Sample(s) => times.push(s.time),
            PerfItem::Lost { count, .. } => lost_seen += count,
        }
    }
    assert_eq!(times, [10, 20, 30]);
    assert_eq!(lost_seen, 3);
}

#[test]
fn a_record_with_a_size_below_its_header_is_an_error_with_its_offset() {
    let mut stream = pipe_stream(&[]);
    let at = stream.len();
    stream.extend_from_slice(&9u32.to_le_bytes());
    stream.extend_from_slice(&0u16.to_le_bytes());
    stream.extend_from_slice(&4u16.to_le_bytes());
    let mut p = PerfData::open_pipe(&stream[..], Limits::default()).unwrap();
    let e = p.next_item().unwrap_err().to_string();
    assert!(e.contains(&format!("byte {at}")), "{e}");
}
