//! `iosan analyze --threads N` writes the same bytes for every N: findings,
//! JSON, summary, skipped and malformed counts with their line numbers and
//! byte offsets, errors and exit status. Checked on every capture fixture
//! and on a generated capture of several MB (many chunks) with stacks,
//! malformed lines, over-long lines, CRLF and blank lines mixed in, plus a
//! truncated compressed copy of it (a read error part-way).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captures")
}

/// Status, stdout and stderr of `iosan analyze --threads N ARGS...`.
fn run(threads: u32, args: &[&str], path: &Path) -> (Option<i32>, Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iosan"))
        .args(["analyze", "--threads", &threads.to_string()])
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    (out.status.code(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_same(args: &[&str], path: &Path) -> (Option<i32>, Vec<u8>, String) {
    let one = run(1, args, path);
    for n in [2, 3] {
        let other = run(n, args, path);
        assert_eq!(one.0, other.0, "{} {args:?}: exit status with --threads {n}", path.display());
        assert_eq!(one.2, other.2, "{} {args:?}: stderr with --threads {n}", path.display());
        if one.1 != other.1 {
            let (a, b) = (String::from_utf8_lossy(&one.1), String::from_utf8_lossy(&other.1));
            let first = a.lines().zip(b.lines()).position(|(x, y)| x != y);
            panic!(
                "{} {args:?}: stdout differs with --threads {n} at line {first:?}:\n{:?}\n{:?}",
                path.display(),
                first.and_then(|i| a.lines().nth(i)),
                first.and_then(|i| b.lines().nth(i)),
            );
        }
    }
    one
}

#[test]
fn every_fixture_is_the_same_with_threads() {
    let mut seen = 0;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures()).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".truth") || name.ends_with(".py") {
            continue;
        }
        let (status, stdout, _) = assert_same(&["--format", "json"], &path);
        assert!(status.is_some() && (status == Some(2) || !stdout.is_empty()), "{name}");
        seen += 1;
    }
    assert!(seen >= 15, "{seen} fixtures");
    assert_same(&["--format", "human", "--color", "never"], &fixtures().join("bug-strict.trace.txt.xz"));
    assert_same(&["--format", "human", "--color", "never", "-v"], &fixtures().join("stacks.trace.txt"));
}

/// A capture of `at_least` bytes: the real bug capture's lines with the
/// stack fixtures' blocks, malformed and over-long lines, CRLF endings,
/// blank lines and `[LOST]` markers mixed in by a fixed seed.
fn generated(at_least: usize) -> Vec<u8> {
    let mut text = String::new();
    xz2::read::XzDecoder::new(std::fs::File::open(fixtures().join("bug-strict.trace.txt.xz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let stacks = std::fs::read_to_string(fixtures().join("stacks.trace.txt")).unwrap();
    let blocks: Vec<&str> = stacks.split("\n").collect();
    let odd = [
        "this is not a trace line",
        " insmod-1 [000] ..... 10.000200: mm_page_free: page=0 pfn=zz order=0",
        " => orphan_frame+0x1/0x2",
        " insmod-1 [001] d.h1. 10.000301: <user stack trace>",
        "CPU:1 [LOST 3 EVENTS]",
        "",
        "# iosan-meta: note=generated",
    ];
    let long = format!(" insmod-1 [000] ..... 10.000400: mm_page_free: page=0 pfn=0x1 order=0 {}", "x".repeat(400));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(at_least + (1 << 20));
    while out.len() < at_least {
        for line in text.lines() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(if x % 97 == 0 { b"\r\n" } else { b"\n" });
            match x % 211 {
                0..=2 => {
                    // A stack block (header and frames) of the stack fixture.
                    let start = (x >> 20) as usize % blocks.len();
                    for l in blocks.iter().skip(start).take(6) {
                        out.extend_from_slice(l.as_bytes());
                        out.push(b'\n');
                    }
                }
                3 => out.extend_from_slice(format!("{long}\n").as_bytes()),
                4..=6 => {
                    out.extend_from_slice(odd[(x >> 24) as usize % odd.len()].as_bytes());
                    out.push(b'\n');
                }
                _ => {}
            }
        }
    }
    out
}

#[test]
fn generated_capture_with_stacks_and_bad_lines_is_the_same_with_threads() {
    let dir = tempfile::tempdir().unwrap();
    let data = generated(12 << 20);
    let plain = dir.path().join("gen.txt");
    std::fs::write(&plain, &data).unwrap();
    let (status, stdout, stderr) = assert_same(&["--format", "json", "--max-line", "300"], &plain);
    assert!(matches!(status, Some(0 | 1)), "{stderr}");
    let out = String::from_utf8_lossy(&stdout);
    let summary = out.lines().last().unwrap();
    for want in ["line longer than the limit", "malformed line", "bad field", "stack trace with no event"] {
        assert!(summary.contains(want), "{want} not in the summary: {summary}");
    }
    assert!(out.contains("\"stack\":[\""), "some finding has a stack");
    assert_same(&["--format", "human", "--color", "never", "-v", "--max-line", "300"], &plain);

    // Cut short inside a gzip stream: the same findings, then the same
    // error at the same line and byte offset.
    let gz = dir.path().join("gen.txt.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&data).unwrap();
    let packed = enc.finish().unwrap();
    std::fs::write(&gz, packed.get(..packed.len() * 2 / 3).unwrap()).unwrap();
    let (status, _, stderr) = assert_same(&["--format", "json", "--max-line", "300"], &gz);
    assert_eq!(status, Some(2));
    assert!(stderr.contains("read error at line"), "{stderr}");
}

/// `--merge` and `--html` read through `peek`/`pop` (a merge by time), not
/// `run`: the same report, and the same HTML page, for every N.
#[test]
fn merged_and_html_reports_are_the_same_with_threads() {
    let dir = tempfile::tempdir().unwrap();
    let data = generated(3 << 20);
    let plain = dir.path().join("gen.txt");
    std::fs::write(&plain, &data).unwrap();
    let stacks = fixtures().join("stacks.trace.txt");
    let mut pages = Vec::new();
    for n in [1u32, 2, 3] {
        let html = dir.path().join(format!("report-{n}.html"));
        let out = Command::new(env!("CARGO_BIN_EXE_iosan"))
            .args(["analyze", "--threads", &n.to_string(), "--format", "json", "--merge", "--html"])
            .arg(&html)
            .arg(&plain)
            .arg(&stacks)
            .output()
            .unwrap();
        assert!(matches!(out.status.code(), Some(0 | 1)), "{}", String::from_utf8_lossy(&out.stderr));
        pages.push((out.stdout, std::fs::read(&html).unwrap()));
    }
    assert!(!pages[0].1.is_empty());
    assert!(pages.iter().all(|p| p == &pages[0]), "a merged report or its page differs with threads");
}

/// trace.dat read on a second thread: a model file of many batches, and
/// the real x86 file cut short at several points (damaged pages, a CPU
/// range past the end), give the same bytes as one thread.
#[test]
fn trace_dat_is_the_same_with_a_reader_thread() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("iosan-threads-dat");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("nvme.dat");
    let st = Command::new(env!("CARGO_BIN_EXE_iosan"))
        .args(["simulate", "--workload", "nvme", "--ops", "3000", "--trace-format", "trace.dat", "--trace-out"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(st.status.code().is_some_and(|c| c < 2), "{}", String::from_utf8_lossy(&st.stderr));
    let (_, stdout, _) = assert_same(&["--format", "json"], &model);
    let events = String::from_utf8_lossy(&stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .and_then(|v| v["events"].as_u64())
        .unwrap();
    assert!(events > 20_000, "{events} events: several batches");
    let real = std::fs::read(fixtures().join("bug-strict.trace.dat")).unwrap();
    for cut in [real.len() / 3, real.len() / 2, real.len() - 5000] {
        let p = dir.join(format!("cut-{cut}.dat"));
        std::fs::write(&p, &real[..cut]).unwrap();
        assert_same(&["--format", "json"], &p);
        assert_same(&[], &p);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
