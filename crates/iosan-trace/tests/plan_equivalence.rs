//! A binary event read by field position (`RecordFields::event`, the plan
//! decided once per format) is exactly the event read by field name
//! (`event_from_fields`), on every record of the real x86 and arm64
//! trace.dat fixtures, whole and cut short.

use std::io::Cursor;

use iosan_trace::parse::event_from_fields;
use iosan_trace::source::tracedat::{Item, TraceDat};

fn check(file: &str) -> usize {
    let path = format!("{}/../../fixtures/captures/{file}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).expect("fixture");
    let mut t = TraceDat::open(Cursor::new(bytes)).expect("opens");
    let mut n = 0;
    while let Some(item) = t.next_item().expect("reads") {
        let Item::Event(v) = item else { continue };
        let by_name = event_from_fields(Some(v.format.system.as_bytes()), v.format.name.as_bytes(), &v.fields);
        let by_position = v.fields.event();
        assert_eq!(format!("{by_position:?}"), format!("{by_name:?}"), "{file}: {} at {}", v.format.name, v.offset);
        // The same record cut short: fields past the end fall to other names or go missing alike.
        let data = v.fields.data();
        for cut in [data.len() / 2, data.len().saturating_sub(3)] {
            let short = v.format.fields_of(&data[..cut], false);
            let a = event_from_fields(Some(v.format.system.as_bytes()), v.format.name.as_bytes(), &short);
            assert_eq!(format!("{:?}", short.event()), format!("{a:?}"), "{file}: {} cut to {cut}", v.format.name);
        }
        n += 1;
    }
    n
}

#[test]
fn by_position_equals_by_name_on_real_files() {
    let (x86, arm64) = (check("bug-strict.trace.dat"), check("arm64-strict.trace.dat"));
    assert!(x86 > 200_000 && arm64 > 80_000, "{x86} {arm64}");
}
