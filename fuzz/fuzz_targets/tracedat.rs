//! `TraceDat::open` + `next_item` over arbitrary bytes, with a small memory
//! limit, decoding every field and stack frame of every record. Errors are
//! fine; panics, hangs and unbounded memory are not.
#![no_main]

use std::io::Cursor;

use iosan_trace::field::FieldLookup;
use iosan_trace::source::tracedat::{Item, Limits, TraceDat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut t) = TraceDat::open_with(Cursor::new(data), Limits { memory: 64 << 20 }) else { return };
    let mut items = 0u64;
    while let Ok(Some(item)) = t.next_item() {
        items += 1;
        if let Item::Event(e) = item {
            for f in &e.format.fields {
                let _ = e.fields.field(&f.name);
            }
            let _ = e.fields.field("__probe_func");
            for frame in e.stack.frames() {
                assert!(!frame.is_empty());
            }
        }
        // Every record takes at least 4 bytes of page data; decompressed
        // data is bounded, so a runaway count means a loop.
        assert!(items < 1 << 26);
    }
});
