//! Measures tokenize + parse throughput on a decompressed capture held in
//! memory (single thread).
//!
//! ```text
//! cargo run --release -p iosan-trace --example parse_throughput [FILE] [PASSES]
//! ```
//!
//! FILE defaults to `fixtures/captures/bug-strict.trace.txt.xz` (any format
//! `iosan_trace::input` detects); PASSES defaults to 10.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use iosan_trace::input::open_input;
use iosan_trace::parse::{classify_line, parse_event, LineKind, LineReader};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captures/bug-strict.trace.txt.xz")
    });
    let passes: u32 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(10);
    let mut text = Vec::new();
    open_input(&path)?.read_to_end(&mut text)?;

    // From the slice itself, then through a 256 KiB BufReader as
    // `iosan_trace::input` hands out (one extra copy).
    run("slice", &text, passes, |t| Box::new(t));
    run("BufReader", &text, passes, |t| Box::new(std::io::BufReader::with_capacity(256 << 10, t)));
    println!("{}", path.display());
    Ok(())
}

fn run<'a>(what: &str, text: &'a [u8], passes: u32, wrap: impl Fn(&'a [u8]) -> Box<dyn std::io::BufRead + 'a>) {
    let mut best = f64::MAX;
    let mut total = 0.0;
    let mut checksum = 0u64;
    for _ in 0..passes {
        let t = Instant::now();
        let (mut events, mut parsed, mut other) = (0u64, 0u64, 0u64);
        let mut reader = LineReader::new(wrap(text));
        while let Some(line) = reader.next_line() {
            let Ok(line) = line else {
                other += 1;
                continue;
            };
            match classify_line(line.bytes) {
                Ok(LineKind::Event(ev)) => {
                    events += 1;
                    checksum = checksum.wrapping_add(ev.ts_ns);
                    if let Ok(Some(e)) = parse_event(ev.name, ev.body) {
                        parsed += 1;
                        checksum = checksum.wrapping_add(e.label().len() as u64);
                    }
                }
                _ => other += 1,
            }
        }
        let secs = t.elapsed().as_secs_f64();
        best = best.min(secs);
        total += secs;
        std::hint::black_box((events, parsed, other));
    }
    let mb = text.len() as f64 / 1e6;
    println!(
        "{what}: {mb:.1} MB, {passes} passes: best {:.0} MB/s, mean {:.0} MB/s (checksum {checksum:x})",
        mb / best,
        mb * f64::from(passes) / total
    );
}
