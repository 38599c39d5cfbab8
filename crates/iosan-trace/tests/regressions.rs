//! Replays `fixtures/regressions/<target>/*`: every input that ever
//! crashed, hung or blew memory in a fuzz target (`fuzz/`), through the
//! same logic as that target, under plain `cargo test`. Add a crash by
//! copying `fuzz/artifacts/<target>/crash-*` into the directory.

use std::io::{self, BufReader, Read};
use std::path::PathBuf;

use iosan_trace::input::{decode_reader_with, InputOptions};
use iosan_trace::parse::{classify_line, parse_event, LineKind, LineReader, ReadError};
use iosan_trace::{analyze, AnalyzeOptions};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/regressions").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).expect("readable")))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no regression inputs in {}", dir.display());
    out
}

#[test]
fn line() {
    for (name, data) in inputs("line") {
        if let Ok(LineKind::Event(ev)) = classify_line(&data) {
            let _ = parse_event(ev.name, ev.body);
        }
        eprintln!("ok: {name}");
    }
}

#[test]
fn event() {
    let names: Vec<&str> = include_str!("../../../fuzz/event_names.txt").lines().filter(|l| !l.is_empty()).collect();
    for (name, data) in inputs("event") {
        let Some((&pick, body)) = data.split_first() else { continue };
        let ev = names.get(usize::from(pick) % names.len()).expect("non-empty list");
        let _ = parse_event(ev.as_bytes(), body);
        eprintln!("ok: {name}");
    }
}

#[test]
fn reader() {
    for (name, data) in inputs("reader") {
        for (max, cap) in [(1, 1), (4, 3), (64, 32)] {
            let mut r = LineReader::with_max_line_len(BufReader::with_capacity(cap, &data[..]), max);
            let mut n = 0u64;
            while let Some(item) = r.next_line() {
                n += 1;
                match item {
                    Ok(l) => assert!(l.bytes.len() <= max && !l.bytes.contains(&b'\n'), "{name}"),
                    Err(ReadError::LineTooLong { len, .. }) => assert!(len > max as u64, "{name}"),
                    Err(e) => panic!("{name}: {e}"),
                }
            }
            assert_eq!((r.lines_read(), r.bytes_read()), (n, data.len() as u64), "{name}");
        }
        eprintln!("ok: {name}");
    }
}

#[test]
fn input() {
    const LIMIT: u64 = 1 << 20;
    for (name, data) in inputs("input") {
        let len = data.len() as u64;
        let opts = InputOptions { max_decompressed_bytes: LIMIT, buffer_size: 4096 };
        let Ok(input) = decode_reader_with(io::Cursor::new(data), &opts) else { continue };
        let mut sink = Vec::new();
        let res = input.reader.take(LIMIT + len + 1).read_to_end(&mut sink);
        assert!(sink.len() as u64 <= LIMIT.max(len), "{name}: {} bytes", sink.len());
        eprintln!("ok: {name}: {} bytes, {:?}", sink.len(), res.map_err(|e| e.to_string()));
    }
}

#[test]
fn analyze_() {
    for (name, data) in inputs("analyze") {
        let input = decode_reader_with(io::Cursor::new(data), &InputOptions::default()).expect("in memory");
        match analyze(input.reader, &name, &AnalyzeOptions::default(), &mut ()) {
            Ok(r) => eprintln!("ok: {name}: {} lines, {} skipped", r.summary.lines, r.summary.skipped.len()),
            // Only an unreadable container is fatal, and it says where.
            Err(e) => assert!(e.to_string().contains("read error at line"), "{name}: {e}"),
        }
    }
}
