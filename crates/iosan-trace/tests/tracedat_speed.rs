//! Throughput of the trace.dat reader on a large file: the x86 fixture,
//! converted to v6 by trace-cmd, its pages replicated `REPEAT` times with
//! shifted page timestamps (real event mix, no synthetic records), then
//! also converted back to v7 zstd. Prints events/s for open + iterate +
//! decoding every field of every record.
//!
//! `cargo test --release -p iosan-trace --test tracedat_speed -- --ignored --nocapture`

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use iosan_trace::field::{FieldLookup, FieldValue};
use iosan_trace::source::tracedat::{Item, TraceDat};

const REPEAT: u64 = 10;
/// Added to page timestamps per copy: more than the capture's span.
const SPAN_NS: u64 = 100_000_000_000;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captures").join(name)
}

/// CPU time of this thread (user + system), from procfs; `None` elsewhere.
fn thread_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn run(path: &Path) -> (u64, f64, Option<f64>) {
    let cpu0 = thread_cpu_secs();
    let start = Instant::now();
    let mut t = TraceDat::open(BufReader::with_capacity(1 << 16, File::open(path).unwrap())).unwrap();
    let (mut n, mut sum) = (0u64, 0u64);
    while let Some(item) = t.next_item().unwrap() {
        if let Item::Event(e) = item {
            n += 1;
            for f in &e.format.fields {
                sum = sum.wrapping_add(match e.fields.field(&f.name) {
                    Some(FieldValue::Unsigned(v)) => v,
                    Some(FieldValue::Signed(v)) => v as u64,
                    Some(FieldValue::Str(s)) => s.len() as u64,
                    Some(FieldValue::Array(a)) => a.len() as u64,
                    _ => 0,
                });
            }
        }
    }
    assert_ne!(sum, 0);
    let wall = start.elapsed().as_secs_f64();
    let cpu = thread_cpu_secs().zip(cpu0).map(|(b, a)| b - a);
    (n, wall, cpu)
}

#[test]
#[ignore = "speed measurement; run with --release -- --ignored --nocapture"]
fn events_per_second() {
    if Command::new("trace-cmd").arg("--version").output().is_err() {
        println!("skipped: trace-cmd is not installed (needed to make the v6 base file)");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("iosan-speed");
    std::fs::create_dir_all(&dir).unwrap();
    let v6 = dir.join("base-v6.dat");
    let st = Command::new("trace-cmd")
        .arg("convert")
        .arg("-i")
        .arg(fixture("bug-strict.trace.dat"))
        .args(["--file-version", "6", "-o"])
        .arg(&v6)
        .output()
        .unwrap();
    assert!(st.status.success());
    let base = std::fs::read(&v6).unwrap();
    let t = TraceDat::open(std::io::Cursor::new(&base)).unwrap();
    let page = t.buffers()[0].page_size as usize;
    let cpus = t.buffers()[0].cpus.clone();
    let (events_base, _, _) = run(&v6);
    // Header up to the first CPU's data, then each CPU's pages REPEAT times.
    let first = cpus.iter().map(|c| c.offset).min().unwrap() as usize;
    let mut out = base[..first].to_vec();
    let table = out.windows(10).rposition(|w| w == b"flyrecord\0").unwrap() + 10;
    for (i, c) in cpus.iter().enumerate() {
        let data = &base[c.offset as usize..(c.offset + c.size) as usize];
        let off = out.len() as u64;
        for k in 0..REPEAT {
            for p in data.chunks(page) {
                let mut p = p.to_vec();
                let ts = u64::from_le_bytes(p[..8].try_into().unwrap()) + k * SPAN_NS;
                p[..8].copy_from_slice(&ts.to_le_bytes());
                out.extend_from_slice(&p);
            }
        }
        let size = out.len() as u64 - off;
        out[table + 16 * i..table + 16 * i + 8].copy_from_slice(&off.to_le_bytes());
        out[table + 16 * i + 8..table + 16 * i + 16].copy_from_slice(&size.to_le_bytes());
    }
    let big = dir.join("big-v6.dat");
    File::create(&big).unwrap().write_all(&out).unwrap();
    drop(out);
    let zst = dir.join("big-v7-zstd.dat");
    let st = Command::new("trace-cmd")
        .arg("convert")
        .arg("-i")
        .arg(&big)
        .args(["--file-version", "7", "--compression", "zstd", "-o"])
        .arg(&zst)
        .output()
        .unwrap();
    assert!(st.status.success());
    for (name, path) in
        [("fixture v7 zstd", fixture("bug-strict.trace.dat")), ("big v6", big.clone()), ("big v7 zstd", zst.clone())]
    {
        let size = std::fs::metadata(&path).unwrap().len();
        let (n, secs, cpu) = run(&path);
        let want = if name.starts_with("big") { events_base * REPEAT } else { events_base };
        assert_eq!(n, want, "{name}");
        let cpu_rate = cpu.filter(|&c| c > 0.0).map_or("?".into(), |c| format!("{:.2}", n as f64 / c / 1e6));
        println!(
            "{name}: {n} events, {:.1} MB, wall {secs:.3} s = {:.2} M events/s; CPU {:.2} s = {cpu_rate} M events/s",
            size as f64 / 1e6,
            n as f64 / secs / 1e6,
            cpu.unwrap_or(f64::NAN)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
