//! `TraceDat::open` + `next_item` over arbitrary bytes, with a small memory
//! limit, decoding every field and stack frame of every record, and its
//! event by field position and by name (which must agree). Errors are
//! fine; panics, hangs and unbounded memory are not.
#![no_main]

use std::io::Cursor;

use iosan_trace::field::FieldLookup;
use iosan_trace::parse::event_from_fields;
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
            // Decoding by field position is decoding by name.
            let by_name = event_from_fields(Some(e.format.system.as_bytes()), e.format.name.as_bytes(), &e.fields);
            assert_eq!(format!("{:?}", e.fields.event()), format!("{by_name:?}"));
            for frame in e.stack.frames() {
                assert!(!frame.is_empty());
            }
        }
        // Every record takes at least 4 bytes of page data; decompressed
        // data is bounded, so a runaway count means a loop.
        assert!(items < 1 << 26);
    }
});
