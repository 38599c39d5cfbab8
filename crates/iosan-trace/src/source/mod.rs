//! Sources: readers of one capture that produce the [record
//! stream](crate::record).
//!
//! A [`Source`] pushes what it reads into a [`RecordSink`]: decoded events
//! as [`Record`](crate::record::Record)s, and the out-of-band items
//! (lost events, skipped input, unknown events, metadata) in the order they
//! occur. It can be driven two ways:
//!
//! * [`Source::run`] reads the whole capture at once, as fast as the
//!   source can (the text source decodes events straight from its read
//!   buffer);
//! * [`Source::peek`] and [`Source::pop`] step one record at a time, for a
//!   k-way merge of several sources by timestamp
//!   ([`crate::merge`]): `peek` reads ahead to the next record (handing
//!   out-of-band items met on the way to the sink) and says when it
//!   happened; `pop` delivers it. A source holds a bounded number of lines
//!   back (the text source: 256, waiting for their stacks), so a merge's
//!   memory is bounded by the number of parts.
//!
//! Implementations: [`text::TextSource`] (ftrace text and `trace-cmd
//! report` text). A binary reader (trace.dat) implements the same trait,
//! decoding events with
//! [`event_from_fields`](crate::parse::event::event_from_fields). A
//! source of already decoded events, as a sketch of one:
//!
//! ```
//! use iosan_trace::parse::event::{Event, PageBlock};
//! use iosan_trace::record::{ExecContext, Origin, Record, RecordSink};
//! use iosan_trace::source::{Position, Source, SourceError};
//! use iosan_trace::{analyze_source, AnalyzeOptions};
//!
//! /// Page frees at (ns, pfn), one record per 64-byte "file record".
//! struct Frees { next: usize, items: Vec<(u64, u64)> }
//!
//! impl Source for Frees {
//!     fn peek(&mut self, _: &mut dyn RecordSink) -> Result<Option<u64>, SourceError> {
//!         Ok(self.items.get(self.next).map(|&(ts, _)| ts))
//!     }
//!     fn pop(&mut self, sink: &mut dyn RecordSink) {
//!         let Some(&(ts_ns, pfn)) = self.items.get(self.next) else { return };
//!         let event = Event::PageFree(PageBlock { pfn, order: 0 });
//!         sink.record(&Record {
//!             ts_ns,
//!             cpu: 0,
//!             pid: 1,
//!             comm: b"init",
//!             context: ExecContext::Task,
//!             event: &event,
//!             stack: &[],
//!             origin: Origin::byte(64 * self.next as u64),
//!         });
//!         self.next += 1;
//!     }
//!     fn position(&self) -> Position {
//!         Position { lines: 0, bytes: 64 * self.next as u64 }
//!     }
//! }
//!
//! let mut src = Frees { next: 0, items: vec![(1_000, 0x1000), (2_000, 0x1001)] };
//! // Page frees alone cannot show a DMA use-after-free, but they replay.
//! let report = analyze_source(&mut src, "frees", &AnalyzeOptions::default(), &mut ()).unwrap();
//! assert_eq!(report.summary.bytes, 128);
//! ```

pub mod binary;
pub mod format;
pub mod kallsyms;
pub mod open;
pub mod parallel;
pub mod parallel_dat;
pub mod perf_data;
pub mod text;
pub mod tracedat;
pub mod tracing_data;

use crate::parse::reader::ReadError;
use crate::record::RecordSink;

/// Receives progress: bytes read so far.
pub trait Progress {
    /// Called every few MB.
    fn advance(&mut self, bytes: u64);
}

impl Progress for () {
    fn advance(&mut self, _: u64) {}
}

/// A fatal error of a source: the capture cannot be read any further.
/// Malformed records are not errors; they are reported to the sink
/// ([`RecordSink::skipped`]) and reading goes on.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading the underlying stream failed (I/O, decompression, the
    /// decompressed-size limit).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A binary container (trace.dat, perf.data) is unreadable; the
    /// reader's error names the byte offset and what is wrong.
    #[error(transparent)]
    Decode(Box<dyn std::error::Error + Send + Sync>),
    /// A binary container is unreadable at `offset` (its header, its
    /// format descriptions, a page header).
    #[error("byte offset {offset}: {source}")]
    Container {
        /// Byte offset of the problem in the file.
        offset: u64,
        /// What is wrong, as the source's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(buf.get_mut(n..).unwrap_or(&mut [])) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads ahead up to `want` bytes of `reader` (as many as its reads give:
/// nothing waits for more once `want` is reached or the input ends). A read
/// error is returned beside what was read, to be replayed at its place by
/// [`FailOnce`], so that the analysis sees everything before it.
pub(crate) fn read_ahead(reader: &mut impl std::io::BufRead, want: usize) -> (Vec<u8>, Option<std::io::Error>) {
    let mut head = Vec::new();
    while head.len() < want {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return (head, Some(e)),
        };
        if buf.is_empty() {
            break;
        }
        let n = buf.len().min(want - head.len());
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        reader.consume(n);
    }
    (head, None)
}

/// Yields its error once, then nothing: a failed read of a look-ahead,
/// replayed at its place in the input.
pub(crate) struct FailOnce(pub(crate) Option<std::io::Error>);

impl std::io::Read for FailOnce {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        self.0.take().map_or(Ok(0), Err)
    }
}

impl std::io::BufRead for FailOnce {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        match self.0.take() {
            Some(e) => Err(e),
            None => Ok(&[]),
        }
    }

    fn consume(&mut self, _: usize) {}
}

/// How much of its input a source has read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// Lines read (0 for binary sources).
    pub lines: u64,
    /// Bytes read (of the decompressed stream).
    pub bytes: u64,
}

/// A reader of one capture that produces records.
pub trait Source {
    /// The timestamp (ns) of the next record, reading ahead to it. Items
    /// met on the way (lost events, skipped input, metadata) go to `sink`
    /// first. `None` at the end of the capture. Calling it again without
    /// [`Source::pop`] reads nothing more.
    ///
    /// # Errors
    /// [`SourceError`] when the capture cannot be read any further.
    fn peek(&mut self, sink: &mut dyn RecordSink) -> Result<Option<u64>, SourceError>;

    /// Delivers the record [`Source::peek`] announced (nothing when there
    /// is none).
    fn pop(&mut self, sink: &mut dyn RecordSink);

    /// How much has been read so far.
    fn position(&self) -> Position;

    /// Reads the whole capture into `sink`, reporting progress now and
    /// then. The default steps through [`Source::peek`] and
    /// [`Source::pop`]; a source may do it faster.
    ///
    /// # Errors
    /// [`SourceError`] when the capture cannot be read any further; what
    /// was read before is in the sink.
    fn run(&mut self, sink: &mut dyn RecordSink, progress: &mut dyn Progress) -> Result<(), SourceError> {
        let mut next_progress = PROGRESS_STEP;
        while self.peek(sink)?.is_some() {
            self.pop(sink);
            let at = self.position().bytes;
            if at >= next_progress {
                progress.advance(at);
                next_progress = at.saturating_add(PROGRESS_STEP);
            }
        }
        progress.advance(self.position().bytes);
        Ok(())
    }
}

/// How often [`Progress::advance`] is called, in bytes.
pub(crate) const PROGRESS_STEP: u64 = 4 << 20;
