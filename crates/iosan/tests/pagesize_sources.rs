//! The CPU page size from the events, whatever the input: a text capture
//! on a pipe (read ahead by at most 4 MiB), the per-CPU parts of one
//! capture under `--merge` (their evidence pooled), and perf.data (its
//! first records, read by a second reader), with `--page-size` checked
//! against it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iosan"))
}

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(rel)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("iosan-pagesize-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// The 16 KiB arm64 capture with nothing that names its page size: no
/// metadata, no kernel release. `None` (and a printed reason) without xz.
fn bare_16k() -> Option<String> {
    let out = Command::new("xz").args(["-dc"]).arg(fixture("captures/arm64-16k-strict.capture.txt.xz")).output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap(),
        _ => {
            println!("skipped: xz not installed");
            return None;
        }
    };
    Some(
        text.lines()
            .filter(|l| !l.starts_with("# iosan-meta:") && !l.contains("16k"))
            .flat_map(|l| [l, "\n"])
            .collect(),
    )
}

/// `iosan analyze --format json ARGS` with `stdin` fed in: (summary, exit code).
fn summary(args: &[&str], stdin: &[u8]) -> (Value, Option<i32>) {
    let mut child = bin()
        .arg("analyze")
        .args(["--format", "json"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Fed from a thread: the analyzer reads ahead while stdout fills.
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let s = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["type"] == "summary")
        .unwrap_or(Value::Null);
    (s, out.status.code())
}

#[test]
fn a_16k_capture_on_a_pipe_gets_its_page_size_from_its_events() {
    let Some(bare) = bare_16k() else { return };
    let (s, code) = summary(&["-"], bare.as_bytes());
    assert_eq!(s["page_size"]["bytes"], 16384, "{}", s["page_size"]);
    assert_eq!(s["page_size"]["source"], "events", "{}", s["page_size"]);
    assert_eq!(code, Some(1));
    // A page size given that the events contradict: analysed with it, and said.
    let (s, _) = summary(&["--page-size", "4096", "-"], bare.as_bytes());
    assert_eq!(s["page_size"]["bytes"], 4096, "{}", s["page_size"]);
    let warnings = s["page_size"]["warnings"].to_string();
    assert!(warnings.contains("contradicts") && warnings.contains("16384"), "{warnings}");
}

#[test]
fn the_per_cpu_parts_of_a_16k_capture_pool_their_evidence() {
    let Some(bare) = bare_16k() else { return };
    let (mut cpu0, mut cpu1) = (String::new(), String::new());
    for l in bare.lines() {
        let part = if l.contains("[001]") { &mut cpu1 } else { &mut cpu0 };
        part.push_str(l);
        part.push('\n');
    }
    let (a, b) = (tmp("16k-cpu0.txt"), tmp("16k-cpu1.txt"));
    std::fs::write(&a, cpu0).unwrap();
    std::fs::write(&b, cpu1).unwrap();
    let (s, code) = summary(&["--merge", a.to_str().unwrap(), b.to_str().unwrap()], b"");
    assert_eq!(s["page_size"]["bytes"], 16384, "{}", s["page_size"]);
    assert_eq!(s["page_size"]["source"], "events", "{}", s["page_size"]);
    assert_eq!(code, Some(1));
}

#[test]
fn perf_data_gets_its_page_size_from_its_first_records() {
    // perf.data says nothing of the page size: its events do, as a file and on a pipe.
    let path = fixture("captures/vtd-perf.perf.data");
    let (s, _) = summary(&[path.to_str().unwrap()], b"");
    assert_eq!((&s["page_size"]["bytes"], &s["page_size"]["source"]), (&4096.into(), &"events".into()), "{s}");
    let bytes = std::fs::read(&path).unwrap();
    let (s, _) = summary(&["-"], &bytes);
    assert_eq!((&s["page_size"]["bytes"], &s["page_size"]["source"]), (&4096.into(), &"events".into()), "{s}");
    // ... and contradicts a wrong --page-size.
    let (s, _) = summary(&["--page-size", "16384", path.to_str().unwrap()], b"");
    let warnings = s["page_size"]["warnings"].to_string();
    assert!(warnings.contains("contradicts") && warnings.contains("4096"), "{warnings}");
    // With --merge too (one part is enough to decide).
    let empty = tmp("empty-part.txt");
    std::fs::write(&empty, "").unwrap();
    let (s, _) = summary(&["--merge", path.to_str().unwrap(), empty.to_str().unwrap()], b"");
    assert_eq!(s["page_size"]["source"], "events", "{s}");
}

#[test]
fn a_pipe_mode_perf_data_on_a_pipe_is_read_ahead_until_its_records_decide() {
    // Its first 4 MiB are page events of a machine at rest (perf started
    // before the workload): it is read further, within a bound.
    let out = Command::new("xz").args(["-dc"]).arg(fixture("captures/vtd-perf.pipe.perf.data.xz")).output();
    let bytes = match out {
        Ok(o) if o.status.success() => o.stdout,
        _ => {
            println!("skipped: xz not installed");
            return;
        }
    };
    let (s, code) = summary(&["-"], &bytes);
    assert_eq!((&s["page_size"]["bytes"], &s["page_size"]["source"]), (&4096.into(), &"events".into()), "{s}");
    assert_eq!(code, Some(1), "the bug pages are still found");
}

#[test]
fn a_trace_dat_header_that_the_events_contradict_is_warned_about() {
    use iosan_model::tracedat::{TraceDatWriter, Val};
    // The header says 16 KiB (its sub-buffer size, say, changed with
    // `buffer_subbuf_size_kb`); the events are those of a 4 KiB kernel:
    // each freed frame lies in a 4 KiB page just mapped.
    let mut w = TraceDatWriter::with_page_size(16384);
    for i in 0..32u64 {
        let (iova, paddr) = (0xffff_0000 - i * 0x1000, 0x4000_0000 + i * 0x1000);
        let map = [("iova", Val::U(iova)), ("paddr", Val::U(paddr)), ("size", Val::U(0x1000))];
        w.event("iommu", "map", 1_000_000 + i * 10, 0, 100, "insmod", 0, &map).unwrap();
        let free = [("pfn", Val::U(paddr >> 12)), ("order", Val::U(0))];
        w.event("kmem", "mm_page_free", 1_000_005 + i * 10, 0, 100, "insmod", 0, &free).unwrap();
    }
    let path = tmp("header-16k-events-4k.dat");
    let mut bytes = Vec::new();
    w.finish(&mut bytes).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let (s, _) = summary(&[path.to_str().unwrap()], b"");
    assert_eq!(s["page_size"]["bytes"], 16384, "the header still decides: {}", s["page_size"]);
    let warnings = s["page_size"]["warnings"].to_string();
    assert!(warnings.contains("events show 4096"), "{warnings}");
    // Read from a pipe (buffered whole, scanned the same way).
    let (s, _) = summary(&["-"], &bytes);
    assert!(s["page_size"]["warnings"].to_string().contains("events show 4096"), "{}", s["page_size"]);
    // A header the events agree with says nothing.
    let mut w = TraceDatWriter::with_page_size(4096);
    for i in 0..32u64 {
        let paddr = 0x4000_0000 + i * 0x1000;
        let map = [("iova", Val::U(0xffff_0000 - i * 0x1000)), ("paddr", Val::U(paddr)), ("size", Val::U(0x1000))];
        w.event("iommu", "map", 1_000_000 + i * 10, 0, 100, "insmod", 0, &map).unwrap();
        w.event("kmem", "mm_page_free", 1_000_005 + i * 10, 0, 100, "insmod", 0, &[("pfn", Val::U(paddr >> 12))])
            .unwrap();
    }
    let mut bytes = Vec::new();
    w.finish(&mut bytes).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let (s, _) = summary(&[path.to_str().unwrap()], b"");
    assert_eq!(s["page_size"]["warnings"], serde_json::json!([]), "{}", s["page_size"]);
}
