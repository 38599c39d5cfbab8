//! A trace.dat read on a second thread: the reader thread walks the
//! ring-buffer pages and merges the CPUs in time order (about half the work
//! of a trace.dat run), and ships each record's raw bytes in batches; the
//! calling thread decodes them by its formats' field positions and replays.
//!
//! The sink sees exactly the calls of a [`TraceDatSource`] on the same
//! file, in the same order (metadata, lost events, skipped counts, records,
//! errors), and [`Source::position`] moves the same way: the reader thread
//! runs the very same source and records what it would have told the sink.
//! Memory is bounded by the batches in flight (at most [`IN_FLIGHT`] of
//! [`BATCH_EVENTS`] records each).

use std::io::{Read, Seek};
use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use super::binary::{deliver, TraceDatSource};
use super::tracing_data::Formats;
use super::{Position, Source, SourceError};
use crate::parse::plan::IndexedFields;
use crate::record::{ExecContext, Origin, Record, RecordSink};

/// Records per batch.
const BATCH_EVENTS: usize = 4096;
/// Batches queued between the threads.
const IN_FLIGHT: usize = 4;

/// One thing the reader found, in order.
enum Op {
    Meta(String, String),
    Overwritten(u64),
    Lost {
        cpu: Option<u32>,
        events: Option<u64>,
        origin: Origin,
    },
    Skipped {
        reason: String,
        origin: Origin,
        count: u64,
    },
    Unknown(Vec<u8>),
    /// A record: its bytes and columns are ranges of the batch's bytes.
    Event(Raw),
    /// The end of the capture.
    End,
    /// The reader stopped here.
    Failed(SourceError),
}

struct Raw {
    id: u32,
    ts_ns: u64,
    cpu: u32,
    pid: u32,
    context: ExecContext,
    offset: u64,
    data: Range<usize>,
    comm: Range<usize>,
    probe: Option<Range<usize>>,
    /// Ranges of the batch's `frames`.
    frames: Range<usize>,
}

#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    frames: Vec<Range<usize>>,
    ops: Vec<Op>,
}

impl Batch {
    fn put(&mut self, b: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        start..self.bytes.len()
    }
}

/// Collects what a [`TraceDatSource`] tells its sink while it peeks.
impl RecordSink for Batch {
    fn record(&mut self, _rec: &Record<'_>) {
        // The reader thread never pops through a sink: it copies raw records.
    }
    fn lost(&mut self, cpu: Option<u32>, events: Option<u64>, origin: Origin) {
        self.ops.push(Op::Lost { cpu, events, origin });
    }
    fn skipped(&mut self, reason: &str, origin: Origin) {
        self.ops.push(Op::Skipped { reason: reason.to_string(), origin, count: 1 });
    }
    fn skipped_many(&mut self, reason: &str, origin: Origin, count: u64) {
        self.ops.push(Op::Skipped { reason: reason.to_string(), origin, count });
    }
    fn unknown_event(&mut self, name: &[u8]) {
        self.ops.push(Op::Unknown(name.to_vec()));
    }
    fn meta(&mut self, key: &str, value: &str) {
        self.ops.push(Op::Meta(key.to_string(), value.to_string()));
    }
    fn overwritten(&mut self, events: u64) {
        self.ops.push(Op::Overwritten(events));
    }
}

/// The reader thread's loop: batches until the end, an error, or a
/// consumer that went away.
fn read_all<R: Read + Seek>(mut src: TraceDatSource<R>, tx: &std::sync::mpsc::SyncSender<Batch>) {
    let mut batch = Batch::default();
    let mut events = 0;
    loop {
        let next = src.peek(&mut batch);
        match next {
            Err(e) => {
                batch.ops.push(Op::Failed(e));
                let _ = tx.send(batch);
                return;
            }
            Ok(None) => {
                batch.ops.push(Op::End);
                let _ = tx.send(batch);
                return;
            }
            Ok(Some(_)) => {
                if let Some(v) = src.pop_view() {
                    let data = batch.put(v.fields.data());
                    let comm = batch.put(v.comm.unwrap_or(b"<...>"));
                    let probe = v.fields.probe_func().map(|p| batch.put(p));
                    let first = batch.frames.len();
                    for f in v.stack.frames() {
                        let r = batch.put(f);
                        batch.frames.push(r);
                    }
                    let frames = first..batch.frames.len();
                    batch.ops.push(Op::Event(Raw {
                        id: v.format.id,
                        ts_ns: v.ts_ns,
                        cpu: v.cpu,
                        pid: u32::try_from(v.pid).unwrap_or(0),
                        context: v.context(),
                        offset: v.offset,
                        data,
                        comm,
                        probe,
                        frames,
                    }));
                    events += 1;
                }
                if events >= BATCH_EVENTS {
                    if tx.send(std::mem::take(&mut batch)).is_err() {
                        return;
                    }
                    events = 0;
                }
            }
        }
    }
}

/// A trace.dat source whose reading runs on its own thread.
pub struct ParallelTraceDatSource {
    rx: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
    formats: Formats,
    big_endian: bool,
    batch: Batch,
    /// Next op of `batch` not yet handed on.
    at: usize,
    /// `peek` announced the event at `at`.
    pending: Option<u64>,
    bytes: u64,
    ended: bool,
}

impl ParallelTraceDatSource {
    /// Starts reading `src` on a new thread.
    ///
    /// # Errors
    /// [`SourceError::Decode`] when the thread cannot be started.
    pub fn start<R: Read + Seek + Send + 'static>(src: TraceDatSource<R>) -> Result<Self, SourceError> {
        let formats = src.reader().tracing_data().formats.clone();
        let big_endian = src.reader().header().big_endian;
        let (tx, rx) = sync_channel(IN_FLIGHT);
        let worker = std::thread::Builder::new()
            .name("iosan-trace.dat".into())
            .spawn(move || read_all(src, &tx))
            .map_err(|e| SourceError::Decode(format!("cannot start the trace.dat reader thread: {e}").into()))?;
        Ok(Self {
            rx: Some(rx),
            worker: Some(worker),
            formats,
            big_endian,
            batch: Batch::default(),
            at: 0,
            pending: None,
            bytes: 0,
            ended: false,
        })
    }

    /// The next batch; `None` once the reader thread is gone (its panic
    /// goes on here).
    fn refill(&mut self) -> Option<()> {
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(b) => {
                self.batch = b;
                self.at = 0;
                Some(())
            }
            Err(_) => {
                self.rx = None;
                if let Some(Err(panic)) = self.worker.take().map(JoinHandle::join) {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }
}

impl Source for ParallelTraceDatSource {
    fn peek(&mut self, sink: &mut dyn RecordSink) -> Result<Option<u64>, SourceError> {
        if let Some(ts) = self.pending {
            return Ok(Some(ts));
        }
        loop {
            if self.ended {
                return Ok(None);
            }
            if self.at >= self.batch.ops.len() && self.refill().is_none() {
                self.ended = true;
                return Ok(None);
            }
            let Some(op) = self.batch.ops.get_mut(self.at) else { continue };
            match op {
                Op::Event(r) => {
                    self.bytes = self.bytes.max(r.offset);
                    self.pending = Some(r.ts_ns);
                    return Ok(Some(r.ts_ns));
                }
                Op::Meta(k, v) => sink.meta(k, v),
                Op::Overwritten(n) => sink.overwritten(*n),
                Op::Lost { cpu, events, origin } => {
                    self.bytes = self.bytes.max(origin.offset);
                    sink.lost(*cpu, *events, *origin);
                }
                Op::Skipped { reason, origin, count } => sink.skipped_many(reason, *origin, *count),
                Op::Unknown(name) => sink.unknown_event(name),
                Op::End => {
                    self.ended = true;
                    return Ok(None);
                }
                Op::Failed(_) => {
                    self.ended = true;
                    let Op::Failed(e) = std::mem::replace(op, Op::End) else { return Ok(None) };
                    return Err(e);
                }
            }
            self.at += 1;
        }
    }

    fn pop(&mut self, sink: &mut dyn RecordSink) {
        if self.pending.take().is_none() {
            return;
        }
        let b = &self.batch;
        let Some(Op::Event(r)) = b.ops.get(self.at) else { return };
        self.at += 1;
        let Some(format) = self.formats.by_id(r.id) else { return };
        let get = |r: &Range<usize>| b.bytes.get(r.clone()).unwrap_or_default();
        let fields = format.fields_of(get(&r.data), self.big_endian).with_probe_func(r.probe.as_ref().map(get));
        let frames: Vec<&[u8]> = b.frames.get(r.frames.clone()).unwrap_or_default().iter().map(get).collect();
        deliver(
            sink,
            &format.name,
            &fields,
            r.ts_ns,
            r.cpu,
            r.pid,
            get(&r.comm),
            r.context,
            &frames,
            Origin::byte(r.offset),
        );
    }

    fn position(&self) -> Position {
        Position { lines: 0, bytes: self.bytes }
    }
}

impl Drop for ParallelTraceDatSource {
    fn drop(&mut self) {
        // The reader stops at its next send once nobody receives.
        self.rx = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// Every sink call, as text.
    #[derive(Default)]
    struct Calls(Vec<String>);

    impl RecordSink for Calls {
        fn record(&mut self, r: &Record<'_>) {
            self.0.push(format!(
                "{} {} {} {:?} {:?} {:?} {:?}",
                r.ts_ns, r.cpu, r.pid, r.context, r.origin, r.event, r.stack
            ));
        }
        fn lost(&mut self, cpu: Option<u32>, events: Option<u64>, origin: Origin) {
            self.0.push(format!("lost {cpu:?} {events:?} {origin:?}"));
        }
        fn skipped(&mut self, reason: &str, origin: Origin) {
            self.0.push(format!("skipped {reason} {origin:?}"));
        }
        fn skipped_many(&mut self, reason: &str, origin: Origin, count: u64) {
            self.0.push(format!("skipped {reason} {origin:?} {count}"));
        }
        fn unknown_event(&mut self, name: &[u8]) {
            self.0.push(format!("unknown {name:?}"));
        }
        fn meta(&mut self, key: &str, value: &str) {
            self.0.push(format!("meta {key}={value}"));
        }
        fn overwritten(&mut self, events: u64) {
            self.0.push(format!("overwritten {events}"));
        }
    }

    fn drive(src: &mut dyn Source) -> (Vec<String>, Result<(), String>, u64) {
        let mut calls = Calls::default();
        let end = loop {
            match src.peek(&mut calls) {
                Ok(Some(ts)) => {
                    calls.0.push(format!("peek {ts} at {}", src.position().bytes));
                    src.pop(&mut calls);
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.to_string()),
            }
        };
        (calls.0, end, src.position().bytes)
    }

    fn file() -> Vec<u8> {
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/captures/bug-strict.trace.dat")).unwrap()
    }

    #[test]
    fn the_same_sink_calls_as_one_thread() {
        let whole = file();
        for cut in [whole.len(), whole.len() / 2, whole.len() / 5, 3000] {
            let bytes = whole.get(..cut).unwrap().to_vec();
            let Ok(one) = TraceDatSource::open(Cursor::new(bytes.clone())) else {
                assert!(TraceDatSource::open(Cursor::new(bytes)).is_err());
                continue;
            };
            let mut one = one;
            let mut two = ParallelTraceDatSource::start(TraceDatSource::open(Cursor::new(bytes)).unwrap()).unwrap();
            let a = drive(&mut one);
            let b = drive(&mut two);
            assert_eq!(a.1, b.1, "cut at {cut}");
            assert_eq!(a.2, b.2, "cut at {cut}");
            assert_eq!(a.0.len(), b.0.len(), "cut at {cut}");
            assert!(
                a.0 == b.0,
                "cut at {cut}: first difference at {:?}",
                a.0.iter().zip(&b.0).position(|(x, y)| x != y)
            );
        }
    }

    #[test]
    fn dropped_part_way_it_stops_its_thread() {
        let mut two = ParallelTraceDatSource::start(TraceDatSource::open(Cursor::new(file())).unwrap()).unwrap();
        let mut calls = Calls::default();
        assert!(two.peek(&mut calls).unwrap().is_some());
        two.pop(&mut calls);
        drop(two);
    }
}
