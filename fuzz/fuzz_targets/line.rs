//! `parse::line::classify_line` over arbitrary bytes; event lines go on to
//! `parse_event`, as the analyzer does. Must never panic.
#![no_main]

use iosan_trace::parse::{classify_line, parse_event, LineKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(LineKind::Event(ev)) = classify_line(data) {
        // Columns are sub-slices of the line.
        assert!(ev.name.len() <= data.len() && ev.body.len() <= data.len() && ev.comm.len() <= data.len());
        let _ = parse_event(ev.name, ev.body);
    }
});
