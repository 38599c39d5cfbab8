//! The text source: the ftrace text of `/sys/kernel/tracing/trace` (or
//! `trace_pipe`) and `trace-cmd report` text.
//!
//! Lines are classified by [`classify_line`]: event lines become records,
//! header lines give metadata (`# iosan-meta: key=value`, the
//! `entries-in-buffer/entries-written` count of overwritten events),
//! `[LOST n EVENTS]` markers become [`RecordSink::lost`], and the stack
//! blocks of ftrace's `stacktrace` trigger (a `<stack trace>` header, or a
//! `kernel_stack:` entry in `trace-cmd report` text, then `=> func+0x1/0x2`
//! frames) become the stack of their event ([`TextSource`] says which).
//! Anything else is skipped and counted.
//!
//! Origins are 1-based line numbers and byte offsets of the
//! (decompressed) stream.

use std::collections::VecDeque;
use std::io::BufRead;

use super::{Position, Progress, Source, SourceError, PROGRESS_STEP};
use crate::parse::event::{parse_event, Event, FieldError};
use crate::parse::line::{classify_line, EventLine, LineError, LineKind};
use crate::parse::reader::{Line, LineReader, ReadError};
use crate::record::{ExecContext, Origin, Record, RecordSink};

/// The most stack lines kept for one event.
pub(super) const MAX_STACK: usize = 128;
/// The most lines held back waiting for stacks; past it the oldest event
/// goes on without one.
pub(super) const MAX_HELD: usize = 256;
/// The most bytes of lines and frames held back; past it every held event
/// goes on as it is.
pub(super) const MAX_HELD_BYTES: usize = 4 << 20;
/// Longest frame kept, bytes (the kernel's symbol names are shorter).
pub(super) const MAX_FRAME_LEN: usize = 512;
/// Without a flags column (`trace-cmd report`) an interrupt cannot be told
/// from the task it interrupted: an event waits for its stack until this
/// many later events of its CPU have been read.
const UNFLAGGED_WAIT: u8 = 4;

/// Reads ftrace or `trace-cmd report` text from a [`BufRead`].
///
/// Every event is held back until its stack has come or cannot come any
/// more, so that the first stack of a capture reaches its event like any
/// other. A stack is a block: its header (`<stack trace>` with the task,
/// CPU and flags columns in ftrace text; a `kernel_stack:` entry in
/// `trace-cmd report` text) and the ` => ` frame lines after it. It goes
/// to the latest held event of the same CPU, pid and context (the
/// stacktrace trigger writes it right after its event, in the event's
/// context, so only a nested context's events can come in between) that
/// has no stack yet; among those, the one the frames' own
/// `__traceiter_NAME` frame names, when there is one. An event is complete
/// once it has its stack, or once a later event of its CPU in the same or an
/// outer context shows that its trigger has finished (without a flags
/// column: once [`UNFLAGGED_WAIT`] later events of its CPU have been read).
pub struct TextSource<R> {
    reader: LineReader<R>,
    state: State,
}

/// One line held back, in input order.
struct Held {
    line: Vec<u8>,
    number: u64,
    offset: u64,
    what: HeldKind,
}

enum HeldKind {
    /// An event line, waiting for its stack until `done`; `parts` are
    /// where its columns lie in the held line.
    Event { key: Key, parts: Parts, stack: Option<Vec<Vec<u8>>>, done: bool, after: u8 },
    /// Any other line: classified again when its turn comes.
    Other,
    /// Input not used, with why.
    Skip(&'static str),
}

/// An [`EventLine`] as byte ranges of its line, so that delivering a held
/// event does not classify its line again.
#[derive(Clone, Copy)]
struct Parts {
    comm: (usize, usize),
    name: (usize, usize),
    body: (usize, usize),
    flags: Option<(usize, usize)>,
    pid: u32,
    tgid: Option<u32>,
    cpu: u32,
    ts_ns: u64,
}

impl Parts {
    fn of(line: &[u8], ev: &EventLine<'_>) -> Self {
        let base = line.as_ptr() as usize;
        let at = |s: &[u8]| {
            let start = (s.as_ptr() as usize).wrapping_sub(base).min(line.len());
            (start, start.saturating_add(s.len()).min(line.len()))
        };
        Self {
            comm: at(ev.comm),
            name: at(ev.name),
            body: at(ev.body),
            flags: ev.flags.map(at),
            pid: ev.pid,
            tgid: ev.tgid,
            cpu: ev.cpu,
            ts_ns: ev.ts_ns,
        }
    }

    fn event_line<'a>(&self, line: &'a [u8]) -> EventLine<'a> {
        let get = |(a, b): (usize, usize)| line.get(a..b).unwrap_or_default();
        EventLine {
            comm: get(self.comm),
            pid: self.pid,
            tgid: self.tgid,
            cpu: self.cpu,
            flags: self.flags.map(get),
            ts_ns: self.ts_ns,
            name: get(self.name),
            body: get(self.body),
        }
    }
}

/// Who wrote a line: CPU, pid, context, and whether the context is known
/// (the flags column was printed).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    pub(super) cpu: u32,
    pub(super) pid: u32,
    pub(super) ctx: u8,
    pub(super) flagged: bool,
}

impl Key {
    pub(super) fn of(ev: &EventLine<'_>) -> Self {
        Self {
            cpu: ev.cpu,
            pid: ev.pid,
            ctx: ExecContext::from_ftrace_flags(ev.flags).index(),
            flagged: ev.flags.is_some(),
        }
    }

    /// Could a stack written by `self` belong to an event written by `ev`?
    pub(super) fn same_writer(self, ev: Self) -> bool {
        self.cpu == ev.cpu && self.pid == ev.pid && (!self.flagged || !ev.flagged || self.ctx == ev.ctx)
    }
}

/// A held event of writer `held` (completed yet: `done`; later events of
/// its CPU without a flags column: `after`) meets an event of `next`:
/// whether it still waits for its stack.
pub(super) fn still_waiting(held: Key, next: Key, done: &mut bool, after: &mut u8) -> bool {
    if *done {
        return false;
    }
    if held.cpu == next.cpu {
        if held.flagged && next.flagged {
            // A later event of the same CPU in the same or an outer context:
            // the event's own context has moved on, so its trigger has finished.
            *done = next.ctx <= held.ctx;
        } else {
            *after = after.saturating_add(1);
            *done = *after >= UNFLAGGED_WAIT;
        }
    }
    !*done
}

/// A stack block being read: its header's writer (`None` for frames with
/// no header: they go to the event just before), its frames.
struct Block {
    key: Option<Key>,
    user: bool,
    frames: Vec<Vec<u8>>,
    /// Line number and offset of its first line.
    at: (u64, u64),
}

/// Everything but the reader, so that a line borrowed from the reader can
/// be handed to it.
#[derive(Default)]
struct State {
    held: VecDeque<Held>,
    block: Option<Block>,
    /// Buffers of lines already delivered, for reuse.
    spare: Vec<Vec<u8>>,
    /// The input has ended: nothing waits any more.
    ended: bool,
    /// Bytes of the held lines and their frames.
    held_bytes: usize,
    /// Sequence number of the front of `held` (lines ever held before it).
    base: u64,
    /// Sequence numbers of held events that may still be waiting (some may
    /// have completed since: they are dropped when next looked at).
    open: Vec<u64>,
    /// A live input: events are held for a stack only once the capture is
    /// known to have stacks (a stack line, or `# iosan-meta: stacks=` not
    /// `off`), so that a pipe that stalls does not hold back a decided event.
    live: bool,
    /// What the capture said of its stacks so far.
    stacks: StackNews,
}

impl<R: BufRead> TextSource<R> {
    /// A source over `input`; lines longer than `max_line_len` are skipped
    /// and counted.
    pub fn new(input: R, max_line_len: usize) -> Self {
        Self { reader: LineReader::with_max_line_len(input, max_line_len), state: State::default() }
    }

    /// For a live input (a pipe): an event waits for its stack only once the
    /// capture shows it has stacks. The first stack of a live capture without
    /// `iosan record`'s metadata then finds its event gone and is counted as
    /// skipped; a file is read with every event held until its stack cannot
    /// follow.
    #[must_use]
    pub fn live(mut self) -> Self {
        self.state.live = true;
        self
    }

    /// The next line; over-long lines are held as skipped input and passed
    /// over ([`Next::Again`]).
    fn next_line<'r>(reader: &'r mut LineReader<R>, st: &mut State) -> Result<Next<'r>, SourceError> {
        match reader.next_line() {
            None => Ok(Next::End),
            Some(Err(e)) if e.is_fatal() => Err(e.into()),
            Some(Err(ReadError::LineTooLong { line, offset, .. })) => {
                st.finish_block();
                st.hold(&[], line, offset, HeldKind::Skip("line longer than the limit"));
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

/// What a capture has said of its stacks so far: the one rule, for both
/// text sources, of which events wait for a stack.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct StackNews {
    /// Stack lines were seen, or the metadata says they come.
    seen: bool,
    /// The metadata says none come (`iosan record` without `--stacks`).
    none_said: bool,
}

impl StackNews {
    /// A header line: `# iosan-meta: stacks=` says stacks come (`map...`,
    /// `on`, `page...`) or not (`off`).
    pub(super) fn header(&mut self, header: &[u8]) {
        let t = String::from_utf8_lossy(header);
        match meta_entry(&t) {
            Some(("stacks", v)) if v.starts_with("map") || v.starts_with("on") || v.starts_with("page") => {
                self.seen = true;
            }
            Some(("stacks", v)) if v.trim() == "off" => self.none_said = true,
            _ => {}
        }
    }

    /// A stack line (frame, block header or other) was read.
    pub(super) fn seen(&mut self) {
        self.seen = true;
    }

    /// Whether an event named `name` is held until its stack cannot follow:
    /// always in a file that may have stacks; on a `live` input, or in a
    /// file that says it has none (a stack that comes anyway makes the later
    /// ones wait), only once stacks were seen or said to come; always for a
    /// `kernel_stack` event.
    pub(super) fn waits(self, live: bool, name: &[u8]) -> bool {
        !(live || self.none_said) || self.seen || name == b"kernel_stack"
    }
}

fn trim_start(b: &[u8]) -> &[u8] {
    b.iter().position(|c| *c != b' ' && *c != b'\t').and_then(|i| b.get(i..)).unwrap_or(&[])
}

/// A frame line (`=> func+0x1/0x2 [mod]`, `=> func (ffffffff81000000)`).
pub(super) fn is_frame(b: &[u8]) -> bool {
    let t = trim_start(b);
    t.starts_with(b"=> ") || t == b"=>"
}

/// The name of the frames' `__traceiter_NAME` frame, if any.
pub(super) fn traceiter_name<F: AsRef<[u8]>>(frames: &[F]) -> Option<&[u8]> {
    frames.iter().take(8).find_map(|f| {
        let t = trim_start(f.as_ref());
        let t = t.strip_prefix(b"=>").map_or(t, trim_start);
        let name = t.strip_prefix(b"__traceiter_")?;
        let end = name.iter().position(|c| !(c.is_ascii_alphanumeric() || *c == b'_')).unwrap_or(name.len());
        name.get(..end)
    })
}

/// The header of a stack block: the writer's columns when the line has
/// them, and whether it is a user-space stack.
pub(super) enum Header {
    Kernel(Option<Key>),
    User,
}

/// Is this line a stack block's header?
pub(super) fn stack_header(kind: &Result<LineKind<'_>, LineError>, bytes: &[u8]) -> Option<Header> {
    match kind {
        Ok(LineKind::Event(ev)) if ev.name == b"kernel_stack" => Some(Header::Kernel(Some(Key::of(ev)))),
        Ok(LineKind::Event(ev)) if ev.name == b"user_stack" => Some(Header::User),
        Ok(LineKind::Stack(s)) if s.starts_with(b"<user stack trace>") => Some(Header::User),
        Ok(LineKind::Stack(s)) if s.starts_with(b"<stack trace>") => {
            // ftrace prints the writer's columns before the marker: read them
            // as those of a `kernel_stack` event line.
            let at = memchr::memmem::find(bytes, b"<stack trace>")?;
            let columns = bytes.get(..at).filter(|c| !trim_start(c).is_empty());
            let key = columns.and_then(|c| {
                let mut line = c.to_vec();
                line.extend_from_slice(b"kernel_stack: <stack trace>");
                match classify_line(&line) {
                    Ok(LineKind::Event(ev)) => Some(Key::of(&ev)),
                    _ => None,
                }
            });
            Some(Header::Kernel(key))
        }
        Err(_) if trim_start(bytes).starts_with(b"<stack trace>") => Some(Header::Kernel(None)),
        _ => None,
    }
}

impl State {
    /// Holds a line back.
    fn hold(&mut self, bytes: &[u8], number: u64, offset: u64, what: HeldKind) {
        let mut line = self.spare.pop().unwrap_or_default();
        line.clear();
        line.extend_from_slice(bytes);
        self.held_bytes = self.held_bytes.saturating_add(line.len());
        self.held.push_back(Held { line, number, offset, what });
        if self.held_bytes > MAX_HELD_BYTES {
            self.release_all();
        }
        if self.held.len() > MAX_HELD {
            if let Some(Held { what: HeldKind::Event { done, .. }, .. }) = self.held.front_mut() {
                *done = true;
            }
        }
    }

    /// One line of input. With `direct`, an event that nothing holds back
    /// and that waits for no stack goes to it at once, unheld (what a drain
    /// right after would do, without copying the line).
    fn feed(&mut self, bytes: &[u8], number: u64, offset: u64, direct: Option<&mut dyn RecordSink>) {
        let kind = classify_line(bytes);
        if let Ok(LineKind::Header(h)) = &kind {
            self.stacks.header(h);
        }
        if matches!(kind, Ok(LineKind::Stack(_))) || (kind.is_err() && is_frame(bytes)) {
            self.stacks.seen();
        }
        if matches!(kind, Ok(LineKind::Stack(s)) if s.starts_with(b"=>")) || (kind.is_err() && is_frame(bytes)) {
            if self.block.is_none() {
                // Frames with no header: the stack of the event just before.
                self.block = Some(Block { key: None, user: false, frames: Vec::new(), at: (number, offset) });
            }
            if let Some(b) = self.block.as_mut().filter(|b| b.frames.len() < MAX_STACK) {
                b.frames.push(bytes.get(..MAX_FRAME_LEN).unwrap_or(bytes).to_vec());
            }
            return;
        }
        self.finish_block();
        if let Some(h) = stack_header(&kind, bytes) {
            self.stacks.seen();
            self.block = Some(match h {
                Header::Kernel(key) => Block { key, user: false, frames: Vec::new(), at: (number, offset) },
                Header::User => Block { key: None, user: true, frames: Vec::new(), at: (number, offset) },
            });
            return;
        }
        match kind {
            // No stack continues past a blank line: a live reader feeds one
            // when its pipe goes idle, so that no event waits for more input.
            Ok(LineKind::Blank) => self.release_all(),
            Ok(LineKind::CpusHeader(_) | LineKind::CpuEmpty(_)) => {}
            Ok(LineKind::Event(ev)) => {
                let key = Key::of(&ev);
                // Only the events still waiting are looked at: a few per CPU.
                let (base, held) = (self.base, &mut self.held);
                self.open.retain(|&seq| {
                    let Some(h) = seq.checked_sub(base).and_then(|i| held.get_mut(usize::try_from(i).ok()?)) else {
                        return false;
                    };
                    let HeldKind::Event { key: k, done, after, .. } = &mut h.what else { return false };
                    still_waiting(*k, key, done, after)
                });
                let wait = self.stacks.waits(self.live, ev.name);
                if let (false, true, Some(sink)) = (wait, self.held.is_empty(), direct) {
                    self.base = self.base.saturating_add(1);
                    process_event(sink, &ev, number, offset, &[]);
                    return;
                }
                if wait {
                    self.open.push(self.base.saturating_add(self.held.len() as u64));
                }
                self.hold(
                    bytes,
                    number,
                    offset,
                    HeldKind::Event { key, parts: Parts::of(bytes, &ev), stack: None, done: !wait, after: 0 },
                );
            }
            _ => self.hold(bytes, number, offset, HeldKind::Other),
        }
    }

    /// The stack block being read is complete: it goes to its event.
    fn finish_block(&mut self) {
        let Some(block) = self.block.take() else { return };
        let (number, offset) = block.at;
        if block.user {
            self.hold(&[], number, offset, HeldKind::Skip("user-space stack trace (not used)"));
            return;
        }
        let wanted = traceiter_name(&block.frames).map(<[u8]>::to_vec);
        let mut best: Option<usize> = None;
        for (i, h) in self.held.iter().enumerate().rev() {
            let HeldKind::Event { key, stack: None, parts, .. } = &h.what else { continue };
            match block.key {
                None => {
                    // A header without columns, or bare frames: the latest event.
                    best = Some(i);
                    break;
                }
                Some(bk) if bk.same_writer(*key) => {
                    let named = wanted.as_deref().is_some_and(|w| h.line.get(parts.name.0..parts.name.1) == Some(w));
                    if named {
                        best = Some(i);
                        break;
                    }
                    best = best.or(Some(i));
                    if wanted.is_none() {
                        break;
                    }
                }
                Some(_) => {}
            }
        }
        match best.and_then(|i| self.held.get_mut(i)) {
            Some(Held { what: HeldKind::Event { stack, done, .. }, .. }) => {
                let bytes: usize = block.frames.iter().map(Vec::len).sum();
                *stack = Some(block.frames);
                *done = true;
                self.held_bytes = self.held_bytes.saturating_add(bytes);
                if self.held_bytes > MAX_HELD_BYTES {
                    self.release_all();
                }
            }
            _ => self.hold(&[], number, offset, HeldKind::Skip("stack trace with no event waiting for it")),
        }
    }

    /// Every held event goes on as it is (too much is held).
    fn release_all(&mut self) {
        self.open.clear();
        for h in &mut self.held {
            if let HeldKind::Event { done, .. } = &mut h.what {
                *done = true;
            }
        }
    }

    /// The input has ended: every held event is complete.
    fn end(&mut self) {
        self.finish_block();
        self.ended = true;
        self.release_all();
    }

    /// Delivers held lines from the front up to the first event still
    /// waiting; with `stop_at_event`, stops before the first event instead.
    /// The timestamp of the event at the front, if it is complete.
    fn drain(&mut self, sink: &mut dyn RecordSink, stop_at_event: bool) -> Option<u64> {
        loop {
            match self.held.front().map(|h| &h.what) {
                None => return None,
                Some(HeldKind::Event { done: false, .. }) => return None,
                Some(HeldKind::Event { parts, .. }) if stop_at_event => return Some(parts.ts_ns),
                Some(_) => self.deliver(sink),
            }
        }
    }

    /// Delivers the front line.
    fn deliver(&mut self, sink: &mut dyn RecordSink) {
        let Some(h) = self.held.pop_front() else { return };
        self.base = self.base.saturating_add(1);
        let frames: usize = match &h.what {
            HeldKind::Event { stack: Some(f), .. } => f.iter().map(Vec::len).sum(),
            _ => 0,
        };
        self.held_bytes = self.held_bytes.saturating_sub(h.line.len().saturating_add(frames));
        match h.what {
            HeldKind::Event { stack, parts, .. } => {
                let ev = parts.event_line(&h.line);
                match &stack {
                    None => process_event(sink, &ev, h.number, h.offset, &[]),
                    Some(frames) => {
                        let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
                        process_event(sink, &ev, h.number, h.offset, &frames);
                    }
                }
            }
            HeldKind::Other => out_of_band(sink, classify_line(&h.line), h.number, h.offset),
            HeldKind::Skip(why) => sink.skipped(why, Origin::line(h.number, h.offset)),
        }
        if self.spare.len() < 16 {
            self.spare.push(h.line);
        }
    }
}

/// A line that is neither an event nor a stack line.
fn out_of_band(sink: &mut dyn RecordSink, kind: Result<LineKind<'_>, LineError>, number: u64, offset: u64) {
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
        loop {
            let st = &mut self.state;
            if let Some(ts) = st.drain(sink, true) {
                return Ok(Some(ts));
            }
            if st.ended {
                return Ok(None);
            }
            match Self::next_line(&mut self.reader, &mut self.state)? {
                Next::Line(line) => self.state.feed(line.bytes, line.number, line.offset, None),
                Next::Again => {}
                Next::End => self.state.end(),
            }
        }
    }

    fn pop(&mut self, sink: &mut dyn RecordSink) {
        if matches!(self.state.held.front(), Some(Held { what: HeldKind::Event { done: true, .. }, .. })) {
            self.state.deliver(sink);
        }
    }

    fn position(&self) -> Position {
        Position { lines: self.reader.lines_read(), bytes: self.reader.bytes_read() }
    }

    fn run(&mut self, sink: &mut dyn RecordSink, progress: &mut dyn Progress) -> Result<(), SourceError> {
        let mut next_progress = PROGRESS_STEP;
        while !self.state.ended {
            match Self::next_line(&mut self.reader, &mut self.state)? {
                Next::Line(line) => {
                    if line.offset >= next_progress {
                        progress.advance(line.offset);
                        next_progress = line.offset + PROGRESS_STEP;
                    }
                    self.state.feed(line.bytes, line.number, line.offset, Some(&mut *sink));
                }
                Next::Again => {}
                Next::End => self.state.end(),
            }
            self.state.drain(sink, false);
        }
        self.state.drain(sink, false);
        progress.advance(self.reader.bytes_read());
        Ok(())
    }
}

fn process_event(sink: &mut dyn RecordSink, ev: &EventLine, line: u64, offset: u64, stack: &[&[u8]]) {
    let parsed = parse_event(ev.name, ev.body);
    let context = ExecContext::from_ftrace_flags(ev.flags);
    emit_event(sink, ev, context, parsed.as_ref().map(Option::as_ref), Origin::line(line, offset), stack);
}

/// Hands an event line's parsed body to `sink` (the parallel source parses
/// on its workers and delivers here, so both sources say the same).
pub(super) fn emit_event(
    sink: &mut dyn RecordSink,
    ev: &EventLine,
    context: ExecContext,
    parsed: Result<Option<&Event<'_>>, &FieldError>,
    origin: Origin,
    stack: &[&[u8]],
) {
    match parsed {
        Ok(Some(event)) => {
            let rec =
                Record { ts_ns: ev.ts_ns, cpu: ev.cpu, pid: ev.pid, comm: ev.comm, context, event, stack, origin };
            sink.record(&rec);
        }
        Ok(None) => sink.unknown_event(ev.name),
        Err(e) => sink.skipped(&format!("bad field: event `{}` field `{}`: {}", e.event, e.field, e.problem), origin),
    }
}

/// A header line (`# ...`): the overwritten-entries count and iosan's metadata.
pub(super) fn header(sink: &mut dyn RecordSink, text: &[u8]) {
    let t = String::from_utf8_lossy(text);
    let t = t.trim_start_matches('#').trim();
    if let Some(rest) = t.strip_prefix("entries-in-buffer/entries-written:") {
        let nums: Vec<u64> = rest.split(|c: char| !c.is_ascii_digit()).filter_map(|x| x.parse().ok()).collect();
        if let (Some(&a), Some(&b)) = (nums.first(), nums.get(1)) {
            if a < b {
                sink.overwritten(b - a);
            }
        }
    } else if let Some((k, v)) = meta_entry(t) {
        sink.meta(k, v);
    }
}

/// A `# iosan-meta: key=value` header as (key, value).
fn meta_entry(header: &str) -> Option<(&str, &str)> {
    let (k, v) = header.trim_start_matches('#').trim().strip_prefix("iosan-meta:")?.trim().split_once('=')?;
    Some((k.trim(), v.trim()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::source::Source;

    /// Logs every sink call as a line of text; a record as `.1` writes it.
    pub(crate) struct Log(pub(crate) Vec<String>, fn(&Record<'_>) -> String);

    impl Default for Log {
        /// Records by label, with their stack's depth.
        fn default() -> Self {
            Self(Vec::new(), |r| {
                format!(
                    "record {} ts={} cpu={} pid={} ctx={:?} stack={} at {}",
                    r.event.label(),
                    r.ts_ns,
                    r.cpu,
                    r.pid,
                    r.context,
                    r.stack.len(),
                    r.origin
                )
            })
        }
    }

    impl Log {
        /// Records whole: the decoded event, the task name and every frame.
        pub(crate) fn full() -> Self {
            Self(Vec::new(), |r| {
                let frames: Vec<String> = r.stack.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
                format!(
                    "record {:?} ts={} cpu={} pid={} comm={} ctx={:?} at {} stack=[{}]",
                    r.event,
                    r.ts_ns,
                    r.cpu,
                    r.pid,
                    r.comm.escape_ascii(),
                    r.context,
                    r.origin,
                    frames.join("|")
                )
            })
        }
    }

    impl RecordSink for Log {
        fn record(&mut self, r: &Record<'_>) {
            let line = (self.1)(r);
            self.0.push(line);
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
            "record kmem:mm_page_free ts=1000300000 cpu=1 pid=1 ctx=SoftIrq stack=2 at line 12",
            "skipped line longer than the limit at line 15",
            "record iommu:unmap ts=1000400000 cpu=1 pid=1 ctx=Task stack=1 at line 16",
        ] {
            assert!(log.contains(want), "{want}\n{log}");
        }
        assert_eq!(src.position().lines, 17);
    }

    /// A live source without stacks hands each event on unheld while it
    /// runs: the same records, in the same order, as stepping through it
    /// (which holds every line), before its first stack line and after.
    #[test]
    fn a_live_run_delivers_unheld_as_stepping_does() {
        let no_stacks: String =
            CAPTURE.lines().filter(|l| !l.trim_start().starts_with("=>")).flat_map(|l| [l, "\n"]).collect();
        for text in [no_stacks.as_str(), CAPTURE] {
            let (fast, stepped): (Log, Log) = run_and_step(|| TextSource::new(text.as_bytes(), 200).live());
            assert_eq!(fast.0, stepped.0);
            assert!(fast.0.iter().filter(|l| l.starts_with("record")).count() >= 3, "{:?}", fast.0);
        }
    }

    /// A file whose metadata says it has no stacks: an event is decided at
    /// its own line (no next line read to see that no stack follows), and
    /// runs and steps alike.
    #[test]
    fn a_file_saying_it_has_no_stacks_holds_no_event() {
        let text = "# iosan-meta: stacks=off\n \
            insmod-1 [000] ..... 1.000000: mm_page_alloc: page=0000000011111111 pfn=0x1000 order=0 migratetype=0 gfp_flags=GFP_KERNEL\n \
            insmod-1 [000] ..... 1.000100: mm_page_free: page=0000000011111111 pfn=0x1000 order=0\n";
        let mut src = TextSource::new(text.as_bytes(), 200);
        let mut log = Log::default();
        assert_eq!(src.peek(&mut log).unwrap(), Some(1_000_000_000));
        assert_eq!(src.position().lines, 2, "the event's own line, not the next");
        let (fast, stepped): (Log, Log) = run_and_step(|| TextSource::new(text.as_bytes(), 200));
        assert_eq!(fast.0, stepped.0);
        // Without the metadata the event waits for the next line.
        let mut src = TextSource::new(text.get(25..).unwrap().as_bytes(), 200);
        assert!(src.peek(&mut Log::default()).unwrap().is_some());
        assert_eq!(src.position().lines, 2);
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

    /// Each record with the first frame of its stack (as read) and its depth.
    #[derive(Default)]
    struct Stacks(Vec<String>);

    impl RecordSink for Stacks {
        fn record(&mut self, r: &Record<'_>) {
            let frames: Vec<String> = r.stack.iter().map(|f| String::from_utf8_lossy(f).trim().to_string()).collect();
            self.0.push(format!("{} ctx={:?} [{}]", r.event.label(), r.context, frames.join(" | ")));
        }
        fn lost(&mut self, _: Option<u32>, _: Option<u64>, _: Origin) {}
        fn skipped(&mut self, reason: &str, origin: Origin) {
            self.0.push(format!("skipped {reason} at {origin}"));
        }
        fn unknown_event(&mut self, name: &[u8]) {
            self.0.push(format!("unknown {}", name.escape_ascii()));
        }
        fn meta(&mut self, _: &str, _: &str) {}
        fn overwritten(&mut self, _: u64) {}
    }

    /// What a sink hears from a source read at full speed, and stepped
    /// (`peek`/`pop`, as a merge does).
    fn run_and_step<'a, S: RecordSink + Default>(make: impl Fn() -> TextSource<&'a [u8]>) -> (S, S) {
        let mut fast = S::default();
        make().run(&mut fast, &mut ()).unwrap();
        let mut stepped = S::default();
        let mut src = make();
        while src.peek(&mut stepped).unwrap().is_some() {
            src.pop(&mut stepped);
        }
        (fast, stepped)
    }

    fn both_ways(text: &str) -> Vec<String> {
        let (fast, stepped): (Stacks, Stacks) = run_and_step(|| TextSource::new(text.as_bytes(), 4096));
        assert_eq!(fast.0, stepped.0);
        fast.0
    }

    /// ftrace text of a `stacktrace` trigger: the first event of the capture
    /// gets its stack, and a hard interrupt's event and stack slipped
    /// between a task's event and the task's stack go to the interrupt.
    #[test]
    fn raw_ftrace_stacks_pair_by_cpu_pid_and_context() {
        let text = "\
# tracer: nop
          insmod-196     [001] .....    35.123456: map: IOMMU: iova=0x00000000fff00000 - 0x00000000fff01000 paddr=0x0000000101234000 size=4096
          insmod-196     [001] d.h1.    35.123458: mm_page_free: page=00000000a1b2c3d4 pfn=0x102345 order=0
          insmod-196     [001] d.h1.    35.123459: <stack trace>
 => trace_event_raw_event_mm_page_free+0x9c/0xe0
 => __traceiter_mm_page_free+0x32/0x50
 => free_unref_page+0x1e5/0x2a0
 => e1000_clean_rx_irq+0x1aa/0x3f0 [e1000]
          <idle>-0       [000] d.s2.    35.123460: mm_page_alloc: page=00000000a1b2c3d5 pfn=0x200000 order=0 migratetype=0 gfp_flags=GFP_ATOMIC
          insmod-196     [001] .....    35.123461: <stack trace>
 => trace_event_raw_event_map+0xa4/0xf0
 => __traceiter_map+0x37/0x60
 => iommu_map_nosync+0x1a5/0x200
 => drv_probe+0x55/0x100 [mydrv]
          insmod-196     [001] .....    35.123470: unmap: IOMMU: iova=0x00000000fff00000 - 0x00000000fff01000 size=4096 unmapped_size=4096
          <idle>-0       [000] d.h2.    35.123480: <stack trace>
 => trace_event_raw_event_mm_page_free+0x9c/0xe0
";
        let log = both_ways(text);
        assert_eq!(
            log,
            [
                "iommu:map ctx=Task [=> trace_event_raw_event_map+0xa4/0xf0 | => __traceiter_map+0x37/0x60 | => iommu_map_nosync+0x1a5/0x200 | => drv_probe+0x55/0x100 [mydrv]]",
                "kmem:mm_page_free ctx=HardIrq [=> trace_event_raw_event_mm_page_free+0x9c/0xe0 | => __traceiter_mm_page_free+0x32/0x50 | => free_unref_page+0x1e5/0x2a0 | => e1000_clean_rx_irq+0x1aa/0x3f0 [e1000]]",
                "kmem:mm_page_alloc ctx=SoftIrq []",
                "iommu:unmap ctx=Task []",
                "skipped stack trace with no event waiting for it at line 16 (byte 977)",
            ]
        );
    }

    /// `trace-cmd report` text: a stack is a `kernel_stack` entry, with no
    /// flags column. An interrupt's event (no stack of its own) between a
    /// task's event and its stack does not take the task's stack: the
    /// `__traceiter_` frame names the event.
    #[test]
    fn trace_cmd_report_stacks() {
        let text = "\
cpus=2
          insmod-196   [001]    35.123456: map:                  IOMMU: iova=0x00000000fff00000 - 0x00000000fff01000 paddr=0x0000000101234000 size=4096
          insmod-196   [001]    35.123458: mm_page_free:         page=0xffffea000408d140 pfn=0x102345 order=0
          insmod-196   [001]    35.123461: kernel_stack:         <stack trace >
=> trace_event_raw_event_map (ffffffff81a0c3f4)
=> __traceiter_map (ffffffff81a0c857)
=> iommu_map_nosync (ffffffff81a0f1a5)
          insmod-196   [001]    35.123470: mm_page_free:         page=0xffffea000408d180 pfn=0x102346 order=0
          insmod-196   [001]    35.123471: kernel_stack:         <stack trace >
=> trace_event_raw_event_mm_page_free (ffffffff812a3b4c)
=> free_unref_page (ffffffff812b1e65)
";
        let log = both_ways(text);
        assert_eq!(
            log,
            [
                "iommu:map ctx=Task [=> trace_event_raw_event_map (ffffffff81a0c3f4) | => __traceiter_map (ffffffff81a0c857) | => iommu_map_nosync (ffffffff81a0f1a5)]",
                "kmem:mm_page_free ctx=Task []",
                "kmem:mm_page_free ctx=Task [=> trace_event_raw_event_mm_page_free (ffffffff812a3b4c) | => free_unref_page (ffffffff812b1e65)]",
            ]
        );
    }

    /// Held-back bytes are bounded: long lines in a hardirq that never
    /// returns (no later event on its CPU) are let go past the byte limit.
    #[test]
    fn held_bytes_are_bounded() {
        let pad = "x".repeat(60_000);
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!(
                " t-1 [000] d.h1. 1.{i:06}: mm_page_free: page=0 pfn={:#x} order=0 {pad}\n",
                0x1000 + i
            ));
            text.push_str(" t-1 [000] d.h1. 1.000000: <stack trace>\n");
            for _ in 0..200 {
                text.push_str(&format!(" => f+0x1/0x2 {}\n", &pad[..600]));
            }
        }
        let mut src = TextSource::new(text.as_bytes(), 1 << 20);
        let mut log = Stacks::default();
        let mut most = 0;
        while src.peek(&mut log).unwrap().is_some() {
            most = most.max(src.state.held_bytes);
            src.pop(&mut log);
        }
        assert!(most <= MAX_HELD_BYTES + (MAX_STACK * MAX_FRAME_LEN) + 70_000, "{most}");
        assert_eq!(log.0.iter().filter(|l| l.starts_with("kmem")).count(), 200);
    }

    /// Held-back lines are bounded: a capture of events with no stack
    /// goes through with at most [`MAX_HELD`] lines waiting.
    #[test]
    fn held_lines_are_bounded() {
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!(
                " t-1 [000] 1.{i:06}: mm_page_free: page=0xffffea000408d140 pfn={:#x} order=0\n",
                0x1000 + i
            ));
        }
        text.push_str(" t-1 [000] 2.000000: kernel_stack: <stack trace >\n=> free_unref_page (ffffffff812b1e65)\n");
        let mut src = TextSource::new(text.as_bytes(), 4096);
        let mut log = Stacks::default();
        let mut most = 0;
        while src.peek(&mut log).unwrap().is_some() {
            most = most.max(src.state.held.len());
            src.pop(&mut log);
        }
        assert!(most <= MAX_HELD + 1, "{most}");
        assert_eq!(src.state.held_bytes, 0, "every held byte is accounted for");
        assert_eq!(log.0.len(), 1000);
        assert_eq!(
            log.0.last().map(String::as_str),
            Some("kmem:mm_page_free ctx=Task [=> free_unref_page (ffffffff812b1e65)]")
        );
    }
}
