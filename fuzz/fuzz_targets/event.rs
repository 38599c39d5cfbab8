//! `parse::event::parse_event`: the first byte picks an event name from the
//! known list (`event_names.txt`, shared with `run.sh`'s corpus
//! generator), the rest is the body. Must never panic.
#![no_main]

use iosan_trace::parse::{parse_event, Event};
use libfuzzer_sys::fuzz_target;

const NAMES: &str = include_str!("../event_names.txt");

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let names: Vec<&str> = NAMES.lines().filter(|l| !l.is_empty()).collect();
    let name = names[usize::from(pick) % names.len()];
    if let Ok(Some(ev)) = parse_event(name.as_bytes(), body) {
        let _ = ev.label();
        // Arrays are bounded.
        if let Event::DmaMapSg(m) = &ev {
            assert!(m.dma_addrs.len() <= iosan_trace::parse::event::MAX_ARRAY_LEN);
        }
        let _ = format!("{ev:?}");
    }
});
