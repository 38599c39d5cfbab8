//! Reads a trace.dat, decodes every field of every record, and prints the
//! event counts per name and the rate: `cargo run --release -p iosan-trace
//! --example tracedat_speed -- FILE [REPEAT]`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use iosan_trace::field::{FieldLookup, FieldValue};
use iosan_trace::source::tracedat::{Item, TraceDat};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: tracedat_speed FILE [REPEAT]")?;
    let repeat: u32 = args.next().map_or(Ok(1), |r| r.parse())?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_id: HashMap<u32, u64> = HashMap::new();
    let (mut events, mut lost, mut checksum) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    for round in 0..repeat {
        let f = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(&path)?);
        let mut t = TraceDat::open(f)?;
        while let Some(item) = t.next_item()? {
            match item {
                Item::Event(e) => {
                    events += 1;
                    for f in &e.format.fields {
                        match e.fields.field(&f.name) {
                            Some(FieldValue::Unsigned(v)) => checksum = checksum.wrapping_add(v),
                            Some(FieldValue::Signed(v)) => checksum = checksum.wrapping_add(v as u64),
                            Some(FieldValue::Str(s)) => checksum = checksum.wrapping_add(s.len() as u64),
                            Some(FieldValue::Array(a)) => checksum = checksum.wrapping_add(a.len() as u64),
                            _ => {}
                        }
                    }
                    if round == 0 {
                        *by_id.entry(e.format.id).or_default() += 1;
                    }
                }
                Item::Lost(_) => lost += 1,
            }
        }
        if round == 0 {
            for (id, n) in &by_id {
                if let Some(f) = t.tracing_data().formats.by_id(*id) {
                    counts.insert(format!("{}:{}", f.system, f.name), *n);
                }
            }
            eprintln!("header {:?}", t.header());
            for b in t.buffers() {
                eprintln!(
                    "buffer `{}` clock {:?} page {} compressed {} cpus {}",
                    b.name,
                    b.clock,
                    b.page_size,
                    b.compressed,
                    b.cpus.len()
                );
            }
            eprintln!("skipped {:?}, overrun {}, meta {:?}", t.skipped(), t.overrun(), t.meta());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    for (k, v) in &counts {
        println!("{v:>10} {k}");
    }
    println!(
        "{events} events, {lost} lost markers, {:.2} M events/s (checksum {checksum:x})",
        events as f64 / secs / 1e6
    );
    Ok(())
}
