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
//! **One field mechanism.** Each event kind is described once in
//! [`kinds`] ([`EventSpec`]: system, names, the kernel's field names with
//! the keys its text prints, which are required, how each is typed
//! ([`FieldType`])). One collector holds an event's fields by name; the
//! text tokenizer fills it with printed tokens, a binary decoder (trace.dat,
//! perf.data) with decoded values through
//! [`FieldLookup`](crate::field::FieldLookup) and
//! [`event::event_from_fields`], and both go through the same builder. The
//! hot events in the kernel's exact text layout (`mm_page_alloc`/`free`,
//! `iommu:map`/`unmap`, `dma_map_page`, `dma_unmap_page`,
//! `cache_tag_flush_range`, the recorder's probes) take measured fast paths
//! first; a test checks that both paths agree.
//!
//! ```
//! use iosan_trace::field::{FieldLookup, FieldValue};
//! use iosan_trace::parse::{event_from_fields, Event};
//! // A binary decoder's view of one `kmem:mm_page_free` record.
//! struct Rec;
//! impl<'a> FieldLookup<'a> for Rec {
//!     fn field(&self, name: &str) -> Option<FieldValue<'a>> {
//!         match name {
//!             "pfn" => Some(FieldValue::Unsigned(0x123589)),
//!             "order" => Some(FieldValue::Unsigned(0)),
//!             _ => None,
//!         }
//!     }
//! }
//! match event_from_fields(Some(b"kmem"), b"mm_page_free", &Rec) {
//!     Ok(Some(Event::PageFree(b))) => assert_eq!((b.pfn, b.order), (0x123589, 0)),
//!     other => panic!("{other:?}"),
//! }
//! ```
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
pub mod plan;
pub mod reader;
mod scan;
mod text;

pub use collect::{FieldSpec, FieldType};
pub use event::{event_from_fields, parse_event, Event, FieldError, FieldProblem};
pub use kinds::{EventSpec, TextLayout};
pub use line::{classify_line, EventLine, LineError, LineErrorKind, LineKind};
pub use reader::{Line, LineReader, Located, Location, ReadError};
