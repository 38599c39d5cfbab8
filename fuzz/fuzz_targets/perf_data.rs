//! The perf.data reader over arbitrary bytes, in file and pipe mode, with
//! small limits, and the record source on top (decoding every sample's
//! fields through the tracing data's formats into the replay). Errors are
//! fine; panics, hangs and unbounded memory are not.
#![no_main]

use std::io::Cursor;

use iosan_trace::source::binary::PerfDataSource;
use iosan_trace::source::perf_data::{Limits, PerfData};
use iosan_trace::{analyze_source, AnalyzeOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_section: 1 << 20, max_attrs: 64, max_decompressed_per_record: 1 << 20, max_pending: 4096 };
    for pipe in [false, true] {
        let p = if pipe { PerfData::open_pipe(Cursor::new(data), limits) } else { PerfData::open_file(Cursor::new(data), limits) };
        let Ok(mut p) = p else { continue };
        let mut items = 0u64;
        while let Ok(Some(_)) = p.next_item() {
            items += 1;
            assert!(items < 1 << 24);
        }
    }
    if let Ok(mut src) = PerfDataSource::open_file(Cursor::new(data.to_vec())) {
        let _ = analyze_source(&mut src, "fuzz", &AnalyzeOptions::default(), &mut ());
    }
});
