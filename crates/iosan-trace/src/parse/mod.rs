//! Parsing layer: lines, line kinds, and typed events.
//!
//! The pipeline is three independent steps, each usable alone:
//!
//! 1. [`reader::LineReader`] splits a byte stream into [`reader::Line`]s
//!    (1-based line number, byte offset, bounded length);
//! 2. [`line::classify_line`] tells a header, lost-events marker, stack line
//!    or event line apart and splits an event line into its columns
//!    ([`line::EventLine`]);
//! 3. [`event::parse_event`] turns an event's name and body into a typed
//!    [`event::Event`], or `None` for events it does not know.
//!
//! None of them panics on any input, allocates per line for common events,
//! or assumes UTF-8.
//!
//! ```
//! use iosan_trace::parse::{classify_line, parse_event, Event, LineKind, LineReader};
//! let text = b"  insmod-194 [000] ..... 10.889499: mm_page_free: page=0000000065c2d467 pfn=0x123589 order=0\n";
//! let mut reader = LineReader::new(&text[..]);
//! while let Some(line) = reader.next_line() {
//!     let line = line.unwrap();
//!     if let Ok(LineKind::Event(ev)) = classify_line(line.bytes) {
//!         assert_eq!(ev.ts_ns, 10_889_499_000);
//!         match parse_event(ev.name, ev.body) {
//!             Ok(Some(Event::PageFree(b))) => assert_eq!((b.pfn, b.order), (0x123589, 0)),
//!             other => panic!("{other:?}"),
//!         }
//!     }
//! }
//! ```

pub mod collect;
pub mod event;
pub mod fields;
pub mod kinds;
pub mod line;
pub mod num;
pub mod reader;
mod scan;
mod text;

pub use collect::{FieldSpec, FieldType};
pub use event::{event_from_fields, parse_event, Event, FieldError, FieldProblem};
pub use kinds::{EventSpec, TextLayout};
pub use line::{classify_line, EventLine, LineError, LineErrorKind, LineKind};
pub use reader::{Line, LineReader, Located, Location, ReadError};
