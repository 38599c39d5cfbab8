//! Writes a simulated ftrace capture to stdout:
//! `gen_trace [WORKLOAD] [ITERATIONS] [BUG]`, e.g. `gen_trace nic-rx 2000000`.

use std::io::{self, BufWriter};

use iosan_model::{simulate, SimSpec};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let spec = SimSpec {
        workload: args.get(1).cloned().unwrap_or_else(|| "nic-rx".into()),
        iterations: args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000),
        bug: args.get(3).cloned(),
        ..SimSpec::default()
    };
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    match simulate(&spec, Some(&mut out)) {
        Ok(r) => eprintln!(
            "{} lines, {} bytes, {} findings, {} model ms",
            r.stats.trace_lines,
            r.stats.trace_bytes,
            r.findings.len(),
            r.stats.elapsed_ns / 1_000_000
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}
