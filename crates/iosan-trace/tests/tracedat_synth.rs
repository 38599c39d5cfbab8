//! The trace.dat reader on generated files covering the matrix the real
//! captures do not: v6 and v7; none, zstd and zlib; little and big endian;
//! 4- and 8-byte longs; 4 KiB and 16 KiB sub-buffers; two buffers with a
//! non-dense CPU id; time extends; lost events with and without a stored
//! count; kernel stacks attached to their event; kprobe `__probe_func`.

mod common;

use std::io::Cursor;

use common::tracedat_writer::{record, stack_format, u64b, Codec, Pages, Writer};
use iosan_trace::field::{FieldLookup, FieldValue};
use iosan_trace::source::tracedat::{is_trace_dat, Item, TraceDat};
use iosan_trace::ExecContext;

const PROBE_IP: u64 = 0xffff_ffff_8192_9360;

/// One expected or read item, as text.
type Line = (u64, usize, String);

struct Case {
    file: Vec<u8>,
    expect: Vec<Line>,
}

/// Builds a file and what reading it must give, sorted as the reader
/// merges: by timestamp, then buffer, then CPU in file order.
fn build(version: u32, codec: Codec, be: bool, long: u8, page: u32) -> Case {
    let mut w = Writer::new(version, codec);
    w.be = be;
    w.long = long;
    w.page = page;
    w.ftrace = vec![stack_format(long)];
    let mut expect: Vec<(u64, usize, String)> = Vec::new();
    let caller = |addrs: &[u64]| -> Vec<u8> {
        let mut v = (addrs.len() as i32).to_le_bytes().to_vec();
        if be {
            v = (addrs.len() as i32).to_be_bytes().to_vec();
        }
        if long == 8 {
            v.extend_from_slice(&[0; 4]);
        }
        for &a in addrs {
            if long == 8 {
                v.extend_from_slice(&u64b(be, a));
            } else {
                let a = a as u32;
                v.extend_from_slice(&if be { a.to_be_bytes() } else { a.to_le_bytes() });
            }
        }
        v
    };
    // Buffer 0, CPU 0: iommu:map, every 50th with a stack.
    let mut p = Pages::new(be, long, page);
    for i in 0..300u64 {
        let ts = 1000 + 500 * i;
        let mut rest = u64b(be, 0xfff0_0000 + i * 4096).to_vec();
        rest.extend_from_slice(&u64b(be, 0x1_0000_0000 + i * 4096));
        rest.extend_from_slice(&u64b(be, 4096));
        p.record(ts, &record(be, 10, 0, 148, &rest));
        let mut stack = String::new();
        if i % 50 == 0 {
            // A frame in the core kernel, one in a module, then the end marker.
            let end = if long == 8 { u64::MAX } else { u64::from(u32::MAX) };
            let (a, b) = if long == 8 { (PROBE_IP + 0x10, 0xffff_ffff_81a0_0020) } else { (0x8192_9370, 0x81a0_0020) };
            p.record(ts, &record(be, 4, 0, 148, &caller(&[a, b, end])));
            stack = if long == 8 {
                " stack=__iommu_map+0x10/0x2a0|dma_helper+0x20/0x100000 [mydrv]".into()
            } else {
                format!(" stack={a:#x}|{b:#x}")
            };
        }
        expect.push((
            ts,
            0,
            format!(
                "map cpu0 pid148 task iova={} paddr={} size=4096 comm=insmod{stack}",
                0xfff0_0000 + i * 4096,
                0x1_0000_0000u64 + i * 4096
            ),
        ));
    }
    let cpu0 = p.finish();
    // Buffer 0, CPU 1: kprobes in hardirq, a time jump, two losses.
    let mut p = Pages::new(be, long, page);
    let mut jump = 0;
    for j in 0..200u64 {
        if j == 100 {
            jump = 1 << 28;
        }
        let ts = 1250 + 700 * j + jump;
        if j == 60 || j == 120 {
            let lost = if j == 60 { Some(7) } else { None };
            p.start(ts - 1, Some(lost));
            expect.push((ts - 1, 1, format!("lost cpu1 {lost:?}")));
        }
        let mut rest = u64b(be, if long == 8 { PROBE_IP } else { 0 }).to_vec();
        rest.extend_from_slice(&u64b(be, 0xdead_0000 + j));
        let loc: u32 = (13 << 16) | 28;
        rest.extend_from_slice(&if be { loc.to_be_bytes() } else { loc.to_le_bytes() });
        rest.extend_from_slice(b"0000:00:02.0\0");
        p.record(ts, &record(be, 20, 0x08, 1, &rest));
        let func = if long == 8 { "__iommu_map" } else { "-" };
        expect.push((
            ts,
            1,
            format!("iommu_map cpu1 pid1 hardirq func={func} domain={} dev=0000:00:02.0 comm=init", 0xdead_0000 + j),
        ));
    }
    let cpu1 = p.finish();
    // Buffer 1 ("iosan"), CPU 3 (v6 numbers CPUs by position: 1).
    let cpu3_id = if version == 6 { 1 } else { 3 };
    let mut p = Pages::new(be, long, page);
    for k in 0..100u64 {
        let ts = 1100 + 900 * k;
        let mut rest = u64b(be, k).to_vec();
        rest.extend_from_slice(&u64b(be, k));
        rest.extend_from_slice(&u64b(be, 8192));
        p.record(ts, &record(be, 10, 0x10, 999, &rest));
        expect.push((ts, 2, format!("map cpu{cpu3_id}@iosan pid999 softirq iova={k} paddr={k} size=8192 comm=-")));
    }
    let cpu3 = p.finish();
    w.buffers = vec![(String::new(), vec![(0, cpu0), (1, cpu1)]), ("iosan".into(), vec![(3, cpu3)])];
    if version == 6 {
        // v6 gives every buffer the top buffer's CPU count.
        w.buffers[1].1.insert(0, (0, Vec::new()));
    }
    expect.sort_by_key(|e| (e.0, e.1));
    Case { file: w.build(), expect }
}

fn read(file: &[u8]) -> Vec<Line> {
    let mut t = TraceDat::open(Cursor::new(file)).unwrap();
    let (compressed, be) = (t.header().compression.is_some(), t.header().big_endian);
    let mut out = Vec::new();
    while let Some(item) = t.next_item().unwrap() {
        match item {
            Item::Lost(l) => out.push((
                l.ts_ns,
                usize::from(l.buffer == "iosan") * 2 + l.cpu as usize % 2,
                format!("lost cpu{} {:?}", l.cpu, l.count),
            )),
            Item::Event(e) => {
                if !compressed {
                    // An uncompressed record's offset is where its bytes are.
                    let at = e.offset as usize;
                    let id = [file[at], file[at + 1]];
                    assert_eq!(
                        u32::from(if be { u16::from_be_bytes(id) } else { u16::from_le_bytes(id) }),
                        e.format.id
                    );
                }
                let s = |n: &str| match e.fields.field(n) {
                    Some(FieldValue::Unsigned(v)) => v.to_string(),
                    Some(FieldValue::Signed(v)) => v.to_string(),
                    Some(FieldValue::Str(s)) => String::from_utf8_lossy(s).into_owned(),
                    _ => "-".into(),
                };
                let ctx = match e.context() {
                    ExecContext::Task => "task",
                    ExecContext::HardIrq => "hardirq",
                    ExecContext::SoftIrq => "softirq",
                    ExecContext::Nmi => "nmi",
                };
                let at = if e.buffer.is_empty() { String::new() } else { format!("@{}", e.buffer) };
                let comm = e.comm.map_or("-".into(), |c| String::from_utf8_lossy(c).into_owned());
                let mut text = match e.format.name.as_str() {
                    "map" => format!(
                        "map cpu{}{at} pid{} {ctx} iova={} paddr={} size={} comm={comm}",
                        e.cpu,
                        e.pid,
                        s("iova"),
                        s("paddr"),
                        s("size")
                    ),
                    _ => format!(
                        "{} cpu{}{at} pid{} {ctx} func={} domain={} dev={} comm={comm}",
                        e.format.name,
                        e.cpu,
                        e.pid,
                        s("__probe_func"),
                        s("domain"),
                        s("dev")
                    ),
                };
                if !e.stack.is_empty() {
                    let frames: Vec<String> =
                        e.stack.frames().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
                    text.push_str(&format!(" stack={}", frames.join("|")));
                    assert_eq!(e.stack.addrs().len(), frames.len());
                }
                let stream = if e.buffer == "iosan" { 2 } else { e.cpu as usize };
                out.push((e.ts_ns, stream, text));
            }
        }
    }
    assert_eq!(t.skipped(), Default::default());
    out
}

#[test]
fn the_whole_matrix_reads_back() {
    for version in [6, 7] {
        let codecs: &[Codec] = if version == 6 { &[Codec::None] } else { &[Codec::None, Codec::Zstd, Codec::Zlib] };
        for &codec in codecs {
            for be in [false, true] {
                for long in [8, 4] {
                    for page in [4096, 16384] {
                        let c = build(version, codec, be, long, page);
                        assert!(is_trace_dat(&c.file));
                        let got = read(&c.file);
                        let what = format!("v{version} {codec:?} be={be} long={long} page={page}");
                        for (i, (a, b)) in got.iter().zip(&c.expect).enumerate() {
                            assert_eq!(a, b, "{what}: item {i}");
                        }
                        assert_eq!(got.len(), c.expect.len(), "{what}");
                        let t = TraceDat::open(Cursor::new(&c.file)).unwrap();
                        assert_eq!(t.buffers().len(), 2, "{what}");
                        assert!(t.buffers().iter().all(|b| b.page_size == page), "{what}");
                    }
                }
            }
        }
    }
}

#[test]
fn not_a_trace_dat() {
    assert!(!is_trace_dat(b"# tracer: nop"));
    assert!(matches!(
        TraceDat::open(Cursor::new(b"# tracer: nop\n".to_vec())),
        Err(iosan_trace::source::tracedat::TraceDatError::NotTraceDat)
    ));
    let mut v = build(7, Codec::None, false, 8, 4096).file;
    v[10] = b'9';
    assert!(matches!(TraceDat::open(Cursor::new(v)), Err(iosan_trace::source::tracedat::TraceDatError::Version(_))));
}

/// trace-cmd itself reads what the test writer writes, so the writer (and
/// the reader that agrees with it) follow the real layout.
#[test]
fn trace_cmd_reads_the_generated_files() {
    if std::process::Command::new("trace-cmd").arg("--version").output().is_err() {
        println!("skipped: trace-cmd is not installed");
        return;
    }
    let cases = [
        (6, Codec::None, false, 8, 4096),
        (7, Codec::None, false, 8, 4096),
        (7, Codec::Zstd, false, 8, 4096),
        (7, Codec::Zstd, true, 8, 4096),
        (6, Codec::None, true, 4, 4096),
        (7, Codec::Zstd, false, 8, 16384),
        (7, Codec::None, false, 4, 16384),
    ];
    for (version, codec, be, long, page) in cases {
        let c = build(version, codec, be, long, page);
        let path = std::env::temp_dir()
            .join(format!("iosan-synth-{}-{version}-{codec:?}-{be}-{long}-{page}.dat", std::process::id()));
        std::fs::write(&path, &c.file).unwrap();
        let out = std::process::Command::new("trace-cmd").args(["report", "-t", "-i"]).arg(&path).output().unwrap();
        std::fs::remove_file(&path).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut ts: Vec<u64> = text
            .lines()
            .filter(|l| l.contains(" map:") || l.contains(" iommu_map:"))
            .filter_map(|l| l.split_whitespace().find(|w| w.ends_with(':') && w.contains('.')))
            .map(|w| {
                let (s, f) = w.trim_end_matches(':').split_once('.').unwrap();
                s.parse::<u64>().unwrap() * 1_000_000_000 + f.parse::<u64>().unwrap()
            })
            .collect();
        ts.sort_unstable();
        let mut want: Vec<u64> = c.expect.iter().filter(|e| !e.2.starts_with("lost")).map(|e| e.0).collect();
        want.sort_unstable();
        assert_eq!(
            ts,
            want,
            "v{version} {codec:?} be={be} long={long} page={page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Writes small generated files as fuzz seeds into `$IOSAN_SEED_DIR`.
#[test]
#[ignore = "writes fuzz seeds; run with IOSAN_SEED_DIR=fuzz/corpus/tracedat"]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("IOSAN_SEED_DIR") else { return };
    std::fs::create_dir_all(&dir).unwrap();
    let mut n = 0;
    for (version, codec) in [(6, Codec::None), (7, Codec::None), (7, Codec::Zstd), (7, Codec::Zlib)] {
        for be in [false, true] {
            let mut w = Writer::new(version, codec);
            w.be = be;
            w.page = 256;
            let mut p = Pages::new(be, 8, 256);
            p.start(5, Some(Some(3)));
            for i in 0..6u64 {
                let mut rest = u64b(be, i).to_vec();
                rest.extend_from_slice(&u64b(be, i));
                rest.extend_from_slice(&u64b(be, 4096));
                p.record(10 + (i << 26), &record(be, 10, 0, 1, &rest));
            }
            p.record(
                10 + (6 << 26),
                &record(be, 4, 0, 1, &[1, 0, 0, 0, 0, 0, 0, 0, 0x70, 0x93, 0x92, 0x81, 0xff, 0xff, 0xff, 0xff]),
            );
            w.buffers = vec![(String::new(), vec![(0, p.finish())])];
            std::fs::write(std::path::Path::new(&dir).join(format!("seed{n}")), w.build()).unwrap();
            n += 1;
        }
    }
}

/// A stack goes to the event before it only when task and context match;
/// a second stack record, or one of another task, stands on its own.
#[test]
fn stacks_attach_only_to_their_own_event() {
    let mut w = Writer::new(7, Codec::Zstd);
    let mut p = Pages::new(false, 8, 4096);
    let map = |pid: i32, flags: u8| {
        let mut rest = u64b(false, 1).to_vec();
        rest.extend_from_slice(&u64b(false, 2));
        rest.extend_from_slice(&u64b(false, 4096));
        record(false, 10, flags, pid, &rest)
    };
    let stack = |pid: i32, flags: u8, addr: u64| {
        let mut rest = 1i32.to_le_bytes().to_vec();
        rest.extend_from_slice(&[0; 4]);
        rest.extend_from_slice(&addr.to_le_bytes());
        record(false, 4, flags, pid, &rest)
    };
    p.record(10, &map(1, 0));
    p.record(10, &stack(1, 0, PROBE_IP));
    p.record(10, &stack(1, 0, PROBE_IP + 1));
    p.record(20, &map(1, 0));
    p.record(20, &stack(1, 0x08, PROBE_IP + 2));
    p.record(30, &map(1, 0));
    p.record(30, &stack(2, 0, PROBE_IP + 3));
    w.buffers = vec![(String::new(), vec![(0, p.finish())])];
    let f = w.build();
    let mut t = TraceDat::open(Cursor::new(&f)).unwrap();
    let mut got = Vec::new();
    while let Some(item) = t.next_item().unwrap() {
        let Item::Event(e) = item else { panic!("no losses here") };
        let frames: Vec<String> = e.stack.frames().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
        got.push(format!("{} {} {}", e.format.name, e.pid, frames.join("|")));
    }
    assert_eq!(
        got,
        [
            "map 1 __iommu_map+0x0/0x2a0",
            "kernel_stack 1 __iommu_map+0x1/0x2a0",
            "map 1 ",
            "kernel_stack 1 __iommu_map+0x2/0x2a0",
            "map 1 ",
            "kernel_stack 2 __iommu_map+0x3/0x2a0",
        ]
    );
}

/// Timestamps of a file with a TSC clock and the TSC2NSEC option, and of
/// one with a `--ts-offset` (OFFSET option), as trace-cmd reports them.
#[test]
fn clock_conversion_options_match_trace_cmd() {
    if std::process::Command::new("trace-cmd").arg("--version").output().is_err() {
        println!("skipped: trace-cmd is not installed");
        return;
    }
    let mut tsc = 1_500_000_000u32.to_le_bytes().to_vec(); // mult
    tsc.extend_from_slice(&31u32.to_le_bytes()); // shift
    tsc.extend_from_slice(&1_000_000u64.to_le_bytes()); // offset
    type Options = Vec<(u16, Vec<u8>)>;
    let cases: [(&str, Options); 3] = [
        ("x86-tsc", vec![(14, tsc.clone())]),
        ("local", vec![(14, tsc)]),
        ("local", vec![(7, b"5000000000\0".to_vec())]),
    ];
    for (clock, options) in cases {
        let mut w = Writer::new(7, Codec::None);
        w.clock = clock.into();
        w.extra_options = options.clone();
        let mut p = Pages::new(false, 8, 4096);
        for i in 0..50u64 {
            let mut rest = u64b(false, i).to_vec();
            rest.extend_from_slice(&u64b(false, i));
            rest.extend_from_slice(&u64b(false, 4096));
            p.record(7_000_000_000 + 123_457 * i, &record(false, 10, 0, 1, &rest));
        }
        w.buffers = vec![(String::new(), vec![(0, p.finish())])];
        let file = w.build();
        let mut t = TraceDat::open(Cursor::new(&file)).unwrap();
        let mut ours = Vec::new();
        while let Some(item) = t.next_item().unwrap() {
            if let Item::Event(e) = item {
                ours.push(e.ts_ns);
            }
        }
        let path =
            std::env::temp_dir().join(format!("iosan-clock-{}-{clock}-{}.dat", std::process::id(), options[0].0));
        std::fs::write(&path, &file).unwrap();
        let out = std::process::Command::new("trace-cmd").args(["report", "-t", "-i"]).arg(&path).output().unwrap();
        std::fs::remove_file(&path).unwrap();
        let theirs: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(" map:"))
            .filter_map(|l| l.split_whitespace().find(|w| w.ends_with(':') && w.contains('.')))
            .map(|w| {
                let (s, f) = w.trim_end_matches(':').split_once('.').unwrap();
                s.parse::<u64>().unwrap() * 1_000_000_000 + f.parse::<u64>().unwrap()
            })
            .collect();
        assert_eq!(ours, theirs, "clock {clock}, option {}: {}", options[0].0, String::from_utf8_lossy(&out.stderr));
    }
}
