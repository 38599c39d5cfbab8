//! The text source: the ftrace text of `/sys/kernel/tracing/trace` (or
//! `trace_pipe`) and `trace-cmd report` text.
//!
//! Lines are classified by [`classify_line`]: event lines become records,
//! header lines give metadata (`# iosan-meta: key=value`, the
//! `entries-in-buffer/entries-written` count of overwritten events),
//! `[LOST n EVENTS]` markers become [`RecordSink::lost`], and the stack
//! lines of ftrace's `stacktrace` option (`=> func+0x1/0x2`) become the
//! stack of the event before them. Anything else is skipped and counted.
//!
//! Origins are 1-based line numbers and byte offsets of the
//! (decompressed) stream.

use std::io::BufRead;

use super::{Position, Progress, Source, SourceError, PROGRESS_STEP};
use crate::parse::event::parse_event;
use crate::parse::line::{classify_line, EventLine, LineKind};
use crate::parse::reader::{Line, LineReader, ReadError};
use crate::record::{ExecContext, Origin, Record, RecordSink};

/// The most stack lines kept for one event.
const MAX_STACK: usize = 128;

/// Reads ftrace or `trace-cmd report` text from a [`BufRead`].
pub struct TextSource<R> {
    reader: LineReader<R>,
    state: State,
}

/// Everything but the reader, so that a line borrowed from the reader can
/// be handed to it.
#[derive(Default)]
struct State {
    /// Stack lines have appeared: from now on an event is held back until
    /// the line after it, so that its stack reaches it.
    stack_mode: bool,
    /// The next record for [`Source::pop`]: its line, where it was, its
    /// timestamp, its stack.
    pending: Vec<u8>,
    pending_at: Option<(u64, u64)>,
    pending_ts: u64,
    /// Stack mode was on when the pending event was read: the stack lines
    /// after it are its own.
    attach: bool,
    stack: Vec<Vec<u8>>,
    /// The line that ended the pending record's stack, not yet looked at.
    ahead: Vec<u8>,
    ahead_at: Option<(u64, u64)>,
}

impl<R: BufRead> TextSource<R> {
    /// A source over `input`; lines longer than `max_line_len` are skipped
    /// and counted.
    pub fn new(input: R, max_line_len: usize) -> Self {
        Self { reader: LineReader::with_max_line_len(input, max_line_len), state: State::default() }
    }

    /// The next line; over-long lines are reported to `sink` and passed
    /// over ([`Next::Again`]).
    fn next_line<'r>(reader: &'r mut LineReader<R>, sink: &mut dyn RecordSink) -> Result<Next<'r>, SourceError> {
        match reader.next_line() {
            None => Ok(Next::End),
            Some(Err(e)) if e.is_fatal() => Err(e.into()),
            Some(Err(ReadError::LineTooLong { line, offset, .. })) => {
                sink.skipped("line longer than the limit", Origin::line(line, offset));
                Ok(Next::Again)
            }
            Some(Err(_)) => Ok(Next::Again),
            Some(Ok(line)) => Ok(Next::Line(line)),
        }
    }
}

/// What [`TextSource::next_line`] found.
enum Next<'r> {
    Line(Line<'r>),
    Again,
    End,
}

fn is_stack_line(b: &[u8]) -> bool {
    let t = b.iter().position(|c| *c != b' ' && *c != b'\t').and_then(|i| b.get(i..)).unwrap_or(&[]);
    t.starts_with(b"=> ") || t == b"=>" || t.starts_with(b"<stack trace>")
}

/// A stack line, by the line grammar or, failing that, its shape.
fn stack_line(kind: &Result<LineKind<'_>, crate::parse::line::LineError>, bytes: &[u8]) -> bool {
    matches!(kind, Ok(LineKind::Stack(_))) || (kind.is_err() && is_stack_line(bytes))
}

impl State {
    /// A line that is not part of a pending record's stack: an event line
    /// becomes the pending record, anything else goes to `sink`.
    fn offer(&mut self, bytes: &[u8], number: u64, offset: u64, sink: &mut dyn RecordSink) {
        let kind = classify_line(bytes);
        if stack_line(&kind, bytes) {
            if !self.stack_mode {
                self.stack_mode = true;
                sink.skipped("stack line of an event read before stack lines appeared", Origin::line(number, offset));
            }
            return;
        }
        match kind {
            Ok(LineKind::Event(ev)) => {
                self.pending_ts = ev.ts_ns;
                self.pending.clear();
                self.pending.extend_from_slice(bytes);
                self.pending_at = Some((number, offset));
                self.attach = self.stack_mode;
            }
            other => out_of_band(sink, other, number, offset),
        }
    }

    /// A line after a pending record read in stack mode: `true` when it
    /// was a stack line of it, else it is kept for later.
    fn after(&mut self, bytes: &[u8], number: u64, offset: u64) -> bool {
        let kind = classify_line(bytes);
        if !stack_line(&kind, bytes) {
            self.ahead.clear();
            self.ahead.extend_from_slice(bytes);
            self.ahead_at = Some((number, offset));
            return false;
        }
        if self.stack.len() < MAX_STACK {
            self.stack.push(bytes.to_vec());
        }
        true
    }
}

/// A line that is neither an event nor a stack line.
fn out_of_band(
    sink: &mut dyn RecordSink,
    kind: Result<LineKind<'_>, crate::parse::line::LineError>,
    number: u64,
    offset: u64,
) {
    match kind {
        Ok(LineKind::Header(h)) => header(sink, h),
        Ok(LineKind::Lost { cpu, events }) => sink.lost(cpu, events, Origin::line(number, offset)),
        Ok(LineKind::Event(_) | LineKind::Stack(_)) => {}
        Ok(LineKind::CpusHeader(_) | LineKind::CpuEmpty(_) | LineKind::Blank) => {}
        Err(e) => sink.skipped(&format!("malformed line ({})", e.kind.field()), Origin::line(number, offset)),
    }
}

impl<R: BufRead> Source for TextSource<R> {
    fn peek(&mut self, sink: &mut dyn RecordSink) -> Result<Option<u64>, SourceError> {
        let st = &mut self.state;
        if st.pending_at.is_none() {
            if let Some((n, o)) = st.ahead_at.take() {
                let ahead = std::mem::take(&mut st.ahead);
                st.offer(&ahead, n, o, sink);
                st.ahead = ahead;
            }
            while st.pending_at.is_none() {
                match Self::next_line(&mut self.reader, sink)? {
                    Next::Line(line) => st.offer(line.bytes, line.number, line.offset, sink),
                    Next::Again => {}
                    Next::End => break,
                }
            }
            // Outside stack mode an event is complete at once, as when
            // reading at full speed.
            if st.pending_at.is_some() && st.attach {
                loop {
                    match Self::next_line(&mut self.reader, sink)? {
                        Next::Line(line) => {
                            if !st.after(line.bytes, line.number, line.offset) {
                                break;
                            }
                        }
                        Next::Again => {}
                        Next::End => break,
                    }
                }
            }
        }
        Ok(st.pending_at.map(|_| st.pending_ts))
    }

    fn pop(&mut self, sink: &mut dyn RecordSink) {
        let st = &mut self.state;
        if let Some((n, o)) = st.pending_at.take() {
            held_back(sink, &st.pending, n, o, &st.stack);
            st.stack.clear();
        }
    }

    fn position(&self) -> Position {
        Position { lines: self.reader.lines_read(), bytes: self.reader.bytes_read() }
    }

    /// Events are decoded straight from the read buffer. Once the capture
    /// shows stack lines, each event is held back one line so that the
    /// stack printed after it reaches it.
    fn run(&mut self, sink: &mut dyn RecordSink, progress: &mut dyn Progress) -> Result<(), SourceError> {
        // Finish what stepping left, then go at full speed.
        while self.state.pending_at.is_some() || self.state.ahead_at.is_some() {
            if self.peek(sink)?.is_some() {
                self.pop(sink);
            }
        }
        let reader = &mut self.reader;
        let stack_mode = &mut self.state.stack_mode;
        let mut prev: Vec<u8> = Vec::with_capacity(512);
        let mut prev_loc: Option<(u64, u64)> = None;
        let mut stack: Vec<Vec<u8>> = Vec::new();
        let mut next_progress = PROGRESS_STEP;
        loop {
            let line = match reader.next_line() {
                None => break,
                Some(Err(e)) if e.is_fatal() => return Err(e.into()),
                Some(Err(ReadError::LineTooLong { line, offset, .. })) => {
                    sink.skipped("line longer than the limit", Origin::line(line, offset));
                    continue;
                }
                Some(Err(_)) => continue,
                Some(Ok(line)) => line,
            };
            if line.offset >= next_progress {
                progress.advance(line.offset);
                next_progress = line.offset + PROGRESS_STEP;
            }
            let kind = classify_line(line.bytes);
            if stack_line(&kind, line.bytes) {
                if !*stack_mode {
                    *stack_mode = true;
                    sink.skipped(
                        "stack line of an event read before stack lines appeared",
                        Origin::line(line.number, line.offset),
                    );
                } else if prev_loc.is_some() && stack.len() < MAX_STACK {
                    stack.push(line.bytes.to_vec());
                }
                continue;
            }
            if let Some((l, o)) = prev_loc.take() {
                held_back(sink, &prev, l, o, &stack);
                stack.clear();
            }
            match kind {
                Ok(LineKind::Event(ev)) => {
                    if *stack_mode {
                        prev.clear();
                        prev.extend_from_slice(line.bytes);
                        prev_loc = Some((line.number, line.offset));
                    } else {
                        process_event(sink, &ev, line.number, line.offset, &[]);
                    }
                }
                other => out_of_band(sink, other, line.number, line.offset),
            }
        }
        if let Some((l, o)) = prev_loc.take() {
            held_back(sink, &prev, l, o, &stack);
        }
        progress.advance(reader.bytes_read());
        Ok(())
    }
}

/// An event line that was held back (for its stack, or by a merge).
fn held_back(sink: &mut dyn RecordSink, bytes: &[u8], line: u64, offset: u64, stack: &[Vec<u8>]) {
    if let Ok(LineKind::Event(ev)) = classify_line(bytes) {
        let frames: Vec<&[u8]> = stack.iter().map(|s| s.as_slice()).collect();
        process_event(sink, &ev, line, offset, &frames);
    }
}

fn process_event(sink: &mut dyn RecordSink, ev: &EventLine, line: u64, offset: u64, stack: &[&[u8]]) {
    let origin = Origin::line(line, offset);
    match parse_event(ev.name, ev.body) {
        Ok(Some(event)) => {
            let rec = Record {
                ts_ns: ev.ts_ns,
                cpu: ev.cpu,
                pid: ev.pid,
                comm: ev.comm,
                context: ExecContext::from_ftrace_flags(ev.flags),
                event: &event,
                stack,
                origin,
            };
            sink.record(&rec);
        }
        Ok(None) => sink.unknown_event(ev.name),
        Err(e) => sink.skipped(&format!("bad field: event `{}` field `{}`: {}", e.event, e.field, e.problem), origin),
    }
}

/// A header line (`# ...`): the overwritten-entries count and iosan's metadata.
fn header(sink: &mut dyn RecordSink, text: &[u8]) {
    let t = String::from_utf8_lossy(text);
    let t = t.trim_start_matches('#').trim();
    if let Some(rest) = t.strip_prefix("entries-in-buffer/entries-written:") {
        let nums: Vec<u64> = rest.split(|c: char| !c.is_ascii_digit()).filter_map(|x| x.parse().ok()).collect();
        if let (Some(&a), Some(&b)) = (nums.first(), nums.get(1)) {
            if a < b {
                sink.overwritten(b - a);
            }
        }
    } else if let Some(rest) = t.strip_prefix("iosan-meta:") {
        if let Some((k, v)) = rest.trim().split_once('=') {
            sink.meta(k.trim(), v.trim());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Source;

    /// Logs every sink call as a line of text.
    #[derive(Default)]
    pub(crate) struct Log(pub(crate) Vec<String>);

    impl RecordSink for Log {
        fn record(&mut self, r: &Record<'_>) {
            self.0.push(format!(
                "record {} ts={} cpu={} pid={} ctx={:?} stack={} at {}",
                r.event.label(),
                r.ts_ns,
                r.cpu,
                r.pid,
                r.context,
                r.stack.len(),
                r.origin
            ));
        }
        fn lost(&mut self, cpu: Option<u32>, events: Option<u64>, origin: Origin) {
            self.0.push(format!("lost {cpu:?} {events:?} at {origin}"));
        }
        fn skipped(&mut self, reason: &str, origin: Origin) {
            self.0.push(format!("skipped {reason} at {origin}"));
        }
        fn unknown_event(&mut self, name: &[u8]) {
            self.0.push(format!("unknown {}", name.escape_ascii()));
        }
        fn meta(&mut self, key: &str, value: &str) {
            self.0.push(format!("meta {key}={value}"));
        }
        fn overwritten(&mut self, events: u64) {
            self.0.push(format!("overwritten {events}"));
        }
    }

    const CAPTURE: &str = "\
# tracer: nop
# entries-in-buffer/entries-written: 10/12   #P:2
# iosan-meta: kernel=6.12.0
 insmod-1 [000] ..... 1.000000: mm_page_alloc: page=0000000011111111 pfn=0x1000 order=0 migratetype=0 gfp_flags=GFP_KERNEL
 insmod-1 [000] d.h1. 1.000100: map: IOMMU: iova=0x00000000fffbe000 - 0x00000000fffbf000 paddr=0x0000000001000000 size=4096
CPU:1 [LOST 3 EVENTS]
this is not a trace line
 insmod-1 [000] ..... 1.000150: sched_switch: prev_comm=a
 insmod-1 [000] ..... 1.000200: mm_page_free: page=0 pfn=zz order=0
 => first_stack_line+0x1/0x2
 => lost_with_it+0x1/0x2
 insmod-1 [001] ..s1. 1.000300: mm_page_free: page=0000000011111111 pfn=0x1000 order=0
 => __free_pages+0x1/0x2
 => driver_free+0x10/0x20 [drv]
XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX
 insmod-1 [001] ..... 1.000400: unmap: IOMMU: iova=0x00000000fffbe000 - 0x00000000fffbf000 size=4096 unmapped_size=4096
 => __iommu_unmap+0x1/0x2
";

    fn source() -> TextSource<&'static [u8]> {
        TextSource::new(CAPTURE.as_bytes(), 200)
    }

    /// Stepping (`peek`/`pop`, as a merge does) and reading at full speed
    /// (`run`) give the sink the same calls in the same order.
    #[test]
    fn stepping_and_running_agree() {
        let mut fast = Log::default();
        let mut src = source();
        src.run(&mut fast, &mut ()).unwrap();
        let mut stepped = Log::default();
        let mut src2 = source();
        let mut last = 0;
        while let Some(ts) = src2.peek(&mut stepped).unwrap() {
            assert!(ts >= last);
            last = ts;
            // Peeking again reads nothing more.
            assert_eq!(src2.peek(&mut stepped).unwrap(), Some(ts));
            src2.pop(&mut stepped);
        }
        assert_eq!(fast.0, stepped.0);
        assert_eq!(src.position(), src2.position());
        let log = fast.0.join("\n");
        for want in [
            "overwritten 2",
            "meta kernel=6.12.0",
            "ctx=HardIrq",
            "lost Some(1) Some(3) at line 6",
            "skipped malformed line",
            "unknown sched_switch",
            "skipped bad field: event `mm_page_free` field `pfn`",
            "skipped stack line of an event read before stack lines appeared at line 10",
            "record kmem:mm_page_free ts=1000300000 cpu=1 pid=1 ctx=SoftIrq stack=2 at line 12",
            "skipped line longer than the limit at line 15",
            "record iommu:unmap ts=1000400000 cpu=1 pid=1 ctx=Task stack=1 at line 16",
        ] {
            assert!(log.contains(want), "{want}\n{log}");
        }
        assert_eq!(src.position().lines, 17);
    }

    /// `run` after some stepping finishes the stream without loss.
    #[test]
    fn run_after_stepping() {
        let mut all = Log::default();
        source().run(&mut all, &mut ()).unwrap();
        let mut log = Log::default();
        let mut src = source();
        src.peek(&mut log).unwrap();
        src.pop(&mut log);
        src.peek(&mut log).unwrap();
        src.run(&mut log, &mut ()).unwrap();
        assert_eq!(log.0, all.0);
    }
}
