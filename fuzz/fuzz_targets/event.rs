//! `parse::event::parse_event`: the first byte picks an event name from the
//! known list (`event_names.txt`, shared with `run.sh`'s corpus
//! generator), the rest is the body. The same bytes then drive the binary
//! path (`event_from_fields`): each field's value is picked from them by
//! its name. Must never panic.
#![no_main]

use iosan_trace::field::{FieldLookup, FieldValue, IntArray};
use iosan_trace::parse::{event_from_fields, parse_event, Event};
use libfuzzer_sys::fuzz_target;

const NAMES: &str = include_str!("../event_names.txt");

/// Field values made from the input: absent, an integer, a string, an
/// array (of any element size, in either byte order) or a text token.
struct Fields<'a>(&'a [u8]);

impl<'a> FieldLookup<'a> for Fields<'a> {
    fn field(&self, name: &str) -> Option<FieldValue<'a>> {
        let d = self.0;
        let h = name.bytes().fold(7usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
        let pick = *d.get(h % d.len().max(1))?;
        let from = usize::from(pick) % d.len().max(1);
        let tail = d.get(from..).unwrap_or_default();
        let mut n = [0u8; 8];
        for (x, y) in n.iter_mut().zip(tail) {
            *x = *y;
        }
        let n = u64::from_le_bytes(n);
        Some(match pick % 6 {
            0 => return None,
            1 => FieldValue::Unsigned(n),
            2 => FieldValue::Signed(n as i64),
            3 => FieldValue::Str(tail),
            4 => FieldValue::Array(IntArray {
                bytes: tail,
                elem_size: pick % 9,
                big_endian: pick & 0x40 != 0,
                signed: pick & 0x80 != 0,
            }),
            _ => FieldValue::Text(tail),
        })
    }
}

fn check(ev: &Event<'_>) {
    let _ = ev.label();
    // Arrays are bounded.
    if let Event::DmaMapSg(m) = ev {
        assert!(m.dma_addrs.len() <= iosan_trace::parse::event::MAX_ARRAY_LEN);
    }
    let _ = format!("{ev:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let names: Vec<&str> = NAMES.lines().filter(|l| !l.is_empty()).collect();
    let name = names[usize::from(pick) % names.len()];
    if let Ok(Some(ev)) = parse_event(name.as_bytes(), body) {
        check(&ev);
    }
    if let Ok(Some(ev)) = event_from_fields(None, name.as_bytes(), &Fields(body)) {
        check(&ev);
    }
});
