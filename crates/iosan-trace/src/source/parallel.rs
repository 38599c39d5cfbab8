//! The text source on several threads: worker threads cut the input into
//! chunks at line boundaries and tokenize and decode every line of a chunk
//! ([`classify_line`], [`parse_event`]); the calling thread takes the chunks
//! back in input order, pairs stacks with their events exactly as
//! [`TextSource`](super::text::TextSource) does, and hands the records to
//! the sink. The sink sees the same calls in the same order, with the same
//! line numbers, byte offsets and errors, as from a `TextSource` over the
//! same bytes (the tests compare the two).
//!
//! Chunks are read in turn under one lock, so that reading stays
//! sequential, and parsed outside it by whichever thread read them: the
//! workers, and the calling thread itself whenever the chunk it needs next
//! is still being parsed (it would otherwise wait), so that the two halves
//! of the work balance on their own, whatever their costs on a capture. At
//! most [`AHEAD`] chunks per worker are read and not yet taken, so memory
//! is bounded by that many chunks of [`CHUNK_BYTES`] (with their decoded
//! lines, about 2.5 times the text) plus the chunks that held lines (at
//! most 256, waiting for
//! their stacks) still refer to: one or two in real captures; one per held
//! line only when an input spreads them over as many chunks by filling the
//! gaps with frame lines, which are copied, never kept in place. A chunk
//! dropped behind an older held line leaves an empty slot of a few dozen
//! bytes until that line goes. A read error ends the
//! input at its place: everything before it reaches the sink first. A
//! worker that panics has its panic resumed on the calling thread; one that
//! could not start leaves its share to the others.
//!
//! Only for inputs read to their end (files): a live input (a pipe,
//! `iosan watch`) uses the plain `TextSource`.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::io::{self, BufRead};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::text::{
    emit_event, header, is_frame, stack_header, still_waiting, traceiter_name, Header, Key, StackNews, MAX_FRAME_LEN,
    MAX_HELD, MAX_HELD_BYTES, MAX_STACK,
};
use super::{Position, Progress, Source, SourceError, PROGRESS_STEP};
use crate::parse::event::{parse_event, Event, FieldError};
use crate::parse::line::{classify_line, EventLine, LineKind};
use crate::parse::reader::ReadError;
use crate::record::{ExecContext, Origin, RecordSink};

/// Bytes read for one chunk (the chunk then ends at the last line break).
pub const CHUNK_BYTES: usize = 1 << 20;
/// Chunks read and not yet taken by the calling thread, per worker.
const AHEAD: u64 = 4;

/// One line of a chunk, tokenized and decoded by a worker: what
/// `TextSource`'s `State::feed` and `deliver` need of it.
// Events are most lines: boxing them costs an allocation on the worker and a
// free on the consumer per event, more than moving them.
#[allow(clippy::large_enum_variant)]
enum Pre<'a> {
    /// A line over the length limit (skipped).
    Long,
    /// A stack frame (` => func+0x1/0x2`), cut to [`MAX_FRAME_LEN`].
    Frame(&'a [u8]),
    /// A stack block's header.
    StackHeader(Header),
    /// A blank line.
    Blank,
    /// `cpus=N`, `CPU N is empty`.
    Ignored,
    /// An event, with its decoded body.
    Event { head: Head<'a>, parsed: Result<Option<Event<'a>>, FieldError> },
    /// Any other line, as it reaches the sink when delivered.
    Other { len: usize, what: Oob<'a> },
}

/// The columns of an event line that its delivery needs (a line is written
/// once by a worker and read once by the consumer: small is fast).
struct Head<'a> {
    comm: &'a [u8],
    name: &'a [u8],
    ts_ns: u64,
    pid: u32,
    cpu: u32,
    /// Length of the line, counted against [`MAX_HELD_BYTES`].
    len: u32,
    context: ExecContext,
    /// The line has a flags column.
    flagged: bool,
}

impl Head<'_> {
    fn key(&self) -> Key {
        Key { cpu: self.cpu, pid: self.pid, ctx: self.context.index(), flagged: self.flagged }
    }

    fn event_line(&self) -> EventLine<'_> {
        EventLine {
            comm: self.comm,
            pid: self.pid,
            tgid: None,
            cpu: self.cpu,
            flags: None,
            ts_ns: self.ts_ns,
            name: self.name,
            body: &[],
        }
    }
}

/// What a line that is neither an event nor a stack line tells the sink.
enum Oob<'a> {
    Header(&'a [u8]),
    Lost {
        cpu: Option<u32>,
        events: Option<u64>,
    },
    Malformed(&'static str),
    /// A stack line that is neither a frame nor a block's header: it tells
    /// the pairing that the capture has stacks, and nothing else.
    StackLine,
}

/// A line of a chunk and where it starts in the stream. (`repr(C)`: the
/// offset and the kind share the first cache line, which is all the
/// calling thread reads of most lines it pairs.)
#[repr(C)]
struct Item<'a> {
    offset: u64,
    pre: Pre<'a>,
}

type Items<'a> = Vec<Item<'a>>;

self_cell::self_cell!(
    /// A chunk's bytes and its lines, parsed, borrowing them.
    struct Parsed {
        owner: Vec<u8>,
        #[covariant]
        dependent: Items,
    }
);

/// How a chunk ends the input, if it does.
enum End {
    /// The input ended.
    Eof,
    /// Reading failed once `offset` bytes had been read.
    Error { offset: u64, source: io::Error },
}

/// A parsed chunk.
struct Batch {
    parsed: Parsed,
    /// Stream offset just past the chunk (and its skipped long line).
    end_offset: u64,
    end: Option<End>,
    /// Number of the line before its first.
    base_line: u64,
}

/// Bytes read for a chunk, at line boundaries.
struct Chunk {
    buf: Vec<u8>,
    /// An empty vector to reuse for its lines.
    items: Vec<Item<'static>>,
    /// Valid bytes of `buf`: whole lines (and, at the end of the input,
    /// the last line without its line break).
    len: usize,
    /// Stream offset of `buf[0]`.
    offset: u64,
    /// A line over the limit follows the bytes: its offset (it was skipped
    /// as it was read, never held whole).
    long_at: Option<u64>,
    end_offset: u64,
    end: Option<End>,
}

/// Cuts the input into chunks of whole lines, as [`LineReader`] would
/// split it into lines.
///
/// [`LineReader`]: crate::parse::reader::LineReader
struct Splitter {
    reader: Box<dyn BufRead + Send>,
    /// The start of a line, read with the last chunk.
    carry: Vec<u8>,
    /// Stream offset of `carry[0]`.
    offset: u64,
    done: bool,
    max_line_len: usize,
    /// Bytes read for a chunk ([`CHUNK_BYTES`]; smaller in tests).
    chunk_bytes: usize,
    /// Delivered chunks, whose buffers a worker reuses (it also drops their
    /// lines, away from the consumer).
    spare: Vec<Parsed>,
}

/// Reads into `buf`, retrying when interrupted.
fn read_some(r: &mut dyn BufRead, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

impl Splitter {
    /// The next chunk, read into `reuse`; `None` once the input has ended.
    fn next_chunk(&mut self, reuse: Spare) -> Option<Chunk> {
        if self.done {
            return None;
        }
        let (buf, items) = reuse;
        let mut chunk = self.fill(buf);
        chunk.items = items;
        Some(chunk)
    }

    /// Reads the next chunk into `buf`.
    fn fill(&mut self, mut buf: Vec<u8>) -> Chunk {
        // `buf` keeps its length (its bytes are overwritten), so that a
        // reused buffer is not cleared again.
        let mut len = self.carry.len();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        if let Some(head) = buf.get_mut(..len) {
            head.copy_from_slice(&self.carry);
        }
        self.carry.clear();
        let start = self.offset;
        // Bytes of `buf` known to hold no line break.
        let mut searched = 0;
        let step = self.chunk_bytes;
        let mut target = step.max(len.saturating_add(step / 4));
        loop {
            let mut end = None;
            while len < target {
                if buf.len() < target {
                    buf.resize(target, 0);
                }
                match read_some(self.reader.as_mut(), buf.get_mut(len..target).unwrap_or_default()) {
                    Ok(0) => {
                        end = Some(End::Eof);
                        break;
                    }
                    Ok(n) => len = len.saturating_add(n),
                    Err(source) => {
                        end = Some(End::Error { offset: start.saturating_add(len as u64), source });
                        break;
                    }
                }
            }
            let valid = buf.get(..len).unwrap_or_default();
            let last_break = memchr::memrchr(b'\n', valid.get(searched..).unwrap_or_default()).map(|p| searched + p);
            match end {
                Some(End::Eof) => {
                    // The last line may lack its line break: it is a line.
                    self.done = true;
                    return self.chunk(buf, len, start, None, Some(End::Eof));
                }
                Some(err @ End::Error { .. }) => {
                    // A line cut by the error is not delivered (as LineReader).
                    self.done = true;
                    let cut = last_break.map_or(0, |p| p + 1);
                    return self.chunk(buf, cut, start, None, Some(err));
                }
                None => {}
            }
            if let Some(p) = last_break {
                let cut = p + 1;
                self.carry.extend_from_slice(valid.get(cut..).unwrap_or_default());
                self.offset = start.saturating_add(cut as u64);
                return self.chunk(buf, cut, start, None, None);
            }
            if len > self.max_line_len {
                // One line (from buf[0]) already over the limit: skip to its end.
                return self.skip_long(buf, len, start);
            }
            searched = len;
            target = target.saturating_add(step);
        }
    }

    fn chunk(&self, buf: Vec<u8>, len: usize, offset: u64, long_at: Option<u64>, end: Option<End>) -> Chunk {
        let end_offset = if long_at.is_some() { self.offset } else { offset.saturating_add(len as u64) };
        Chunk { buf, items: Vec::new(), len, offset, long_at, end_offset, end }
    }

    /// `buf[..len]` is the start of a line over the limit, at `start`:
    /// reads to its line break, keeping nothing of it.
    fn skip_long(&mut self, mut buf: Vec<u8>, len: usize, start: u64) -> Chunk {
        let mut at = start.saturating_add(len as u64);
        loop {
            match read_some(self.reader.as_mut(), &mut buf) {
                Ok(0) => {
                    self.done = true;
                    self.offset = at;
                    return self.chunk(buf, 0, start, Some(start), Some(End::Eof));
                }
                Ok(n) => {
                    let got = buf.get(..n).unwrap_or_default();
                    if let Some(p) = memchr::memchr(b'\n', got) {
                        self.carry.extend_from_slice(got.get(p + 1..).unwrap_or_default());
                        self.offset = at.saturating_add(p as u64 + 1);
                        return self.chunk(buf, 0, start, Some(start), None);
                    }
                    at = at.saturating_add(n as u64);
                }
                Err(source) => {
                    self.done = true;
                    return self.chunk(buf, 0, start, None, Some(End::Error { offset: at, source }));
                }
            }
        }
    }
}

/// Tokenizes and decodes one line as `TextSource` would.
fn pre_line(bytes: &[u8]) -> Pre<'_> {
    let kind = classify_line(bytes);
    if matches!(kind, Ok(LineKind::Stack(s)) if s.starts_with(b"=>")) || (kind.is_err() && is_frame(bytes)) {
        return Pre::Frame(bytes.get(..MAX_FRAME_LEN).unwrap_or(bytes));
    }
    if let Some(h) = stack_header(&kind, bytes) {
        return Pre::StackHeader(h);
    }
    let len = bytes.len();
    match kind {
        Ok(LineKind::Blank) => Pre::Blank,
        Ok(LineKind::CpusHeader(_) | LineKind::CpuEmpty(_)) => Pre::Ignored,
        Ok(LineKind::Event(ev)) => match u32::try_from(len) {
            Ok(len) => Pre::Event {
                head: Head {
                    comm: ev.comm,
                    name: ev.name,
                    ts_ns: ev.ts_ns,
                    pid: ev.pid,
                    cpu: ev.cpu,
                    len,
                    context: ExecContext::from_ftrace_flags(ev.flags),
                    flagged: ev.flags.is_some(),
                },
                parsed: parse_event(ev.name, ev.body),
            },
            // Only under a line limit of 4 GiB or more: such a line is over it.
            Err(_) => Pre::Long,
        },
        Ok(LineKind::Header(h)) => Pre::Other { len, what: Oob::Header(h) },
        Ok(LineKind::Lost { cpu, events }) => Pre::Other { len, what: Oob::Lost { cpu, events } },
        Ok(LineKind::Stack(_)) => Pre::Other { len, what: Oob::StackLine },
        Err(e) => Pre::Other { len, what: Oob::Malformed(e.kind.field()) },
    }
}

/// Strips trailing `\r` bytes (as LineReader).
fn strip_cr(mut s: &[u8]) -> &[u8] {
    while let Some((b'\r', rest)) = s.split_last() {
        s = rest;
    }
    s
}

/// The lines of a chunk.
fn parse_chunk(chunk: Chunk, max_line_len: usize) -> (Parsed, u64, Option<End>) {
    let Chunk { buf, items, len, offset, long_at, end_offset, end } = chunk;
    let parsed = Parsed::new(buf, |buf| {
        let bytes = buf.get(..len).unwrap_or_default();
        let mut items = relifetime(items);
        items.reserve(len / 96 + 2);
        let mut pos = 0usize;
        while pos < bytes.len() {
            let rest = bytes.get(pos..).unwrap_or_default();
            let (raw, next) = match memchr::memchr(b'\n', rest) {
                Some(p) => (rest.get(..p).unwrap_or_default(), pos + p + 1),
                None => (rest, bytes.len()),
            };
            let at = offset.saturating_add(pos as u64);
            let pre = if raw.len() > max_line_len { Pre::Long } else { pre_line(strip_cr(raw)) };
            items.push(Item { offset: at, pre });
            pos = next;
        }
        if let Some(at) = long_at {
            items.push(Item { offset: at, pre: Pre::Long });
        }
        items
    });
    (parsed, end_offset, end)
}

/// An empty vector of lines for lines of another buffer: the allocation is
/// kept (collecting a vector's own iterator into a vector of a type of the
/// same layout reuses its buffer).
// `filter_map` to `None` changes the item type, which `filter` cannot.
#[allow(clippy::unnecessary_filter_map)]
fn relifetime<'b>(items: Vec<Item<'_>>) -> Vec<Item<'b>> {
    items.into_iter().filter_map(|_| None).collect()
}

/// The buffers of a delivered chunk, for the next.
type Spare = (Vec<u8>, Vec<Item<'static>>);

/// A chunk as parsed: its lines, the stream offset just past it, and how
/// it ends the input.
type Out = (Parsed, u64, Option<End>);

/// What the reading threads share.
struct Shared {
    splitter: Splitter,
    /// Sequence number of the next chunk to read.
    turn: u64,
    /// Sequence number of the next chunk the calling thread takes: chunks
    /// `taken..turn` are being parsed or wait in `parsed`.
    taken: u64,
    /// Parsed chunks not taken yet, by sequence number.
    parsed: BTreeMap<u64, Out>,
    /// Most chunks read ahead of `taken`.
    ahead: u64,
    /// A worker panicked: the chunk it had never comes.
    panicked: bool,
    /// The source was dropped: workers stop.
    stop: bool,
}

impl Shared {
    /// Reads the next chunk, with its sequence number, into `reuse`;
    /// `None` once the input has ended.
    fn read_next(&mut self, reuse: Spare) -> Option<(u64, Chunk)> {
        let chunk = self.splitter.next_chunk(reuse)?;
        let seq = self.turn;
        self.turn = self.turn.saturating_add(1);
        Some((seq, chunk))
    }

    /// Room to read one more chunk ahead.
    fn may_read(&self) -> bool {
        !self.splitter.done && self.turn < self.taken.saturating_add(self.ahead)
    }

    /// Buffers of a delivered chunk, to read the next into.
    fn spare(&mut self) -> Option<Parsed> {
        self.splitter.spare.pop()
    }
}

struct Control {
    state: Mutex<Shared>,
    /// Signalled when a chunk is parsed, taken, or the source stops.
    changed: Condvar,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A worker that panicked while reading leaves the state as it was:
        // the panic itself is resumed by the consumer.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait<'a>(&self, st: MutexGuard<'a, Shared>) -> MutexGuard<'a, Shared> {
        self.changed.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Parses `chunk` (outside the lock) and files it under `seq`.
    fn parse_and_file(&self, seq: u64, chunk: Chunk, max_line_len: usize) {
        let out = parse_chunk(chunk, max_line_len);
        let mut st = self.lock();
        st.parsed.insert(seq, out);
        drop(st);
        self.changed.notify_all();
    }
}

/// The buffers of a delivered chunk, emptied for reuse (its lines are
/// dropped here, by the thread that reads next).
fn reuse(spare: Option<Parsed>) -> Spare {
    spare.map_or_else(Spare::default, |mut parsed| {
        let items = parsed.with_dependent_mut(|_, items| {
            items.clear();
            relifetime(std::mem::take(items))
        });
        (parsed.into_owner(), items)
    })
}

/// Tells the calling thread when a worker dies by a panic (its chunk would
/// otherwise be waited for forever).
struct PanicFlag<'a>(&'a Control);

impl Drop for PanicFlag<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().panicked = true;
            self.0.changed.notify_all();
        }
    }
}

/// One parse worker: reads the next chunk whenever there is room ahead,
/// until the input ends or the source is dropped.
fn worker(control: &Control, max_line_len: usize) {
    let _flag = PanicFlag(control);
    loop {
        let spare = control.lock().spare();
        let buffers = reuse(spare);
        let (seq, chunk) = {
            let mut st = control.lock();
            loop {
                // After a panic (this lock poisoned by one while reading) the
                // splitter may be half-way through a chunk: nothing reads on.
                if st.stop || st.splitter.done || st.panicked || control.state.is_poisoned() {
                    return;
                }
                if st.may_read() {
                    break;
                }
                st = control.wait(st);
            }
            match st.read_next(buffers) {
                Some(next) => next,
                None => return,
            }
        };
        control.parse_and_file(seq, chunk, max_line_len);
    }
}

/// A line's place in the batches: batch sequence number and index.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct At {
    batch: u64,
    idx: usize,
}

/// One line held back, in input order (`TextSource`'s `Held`, with the
/// line left in its batch instead of copied).
struct Held {
    number: u64,
    offset: u64,
    /// Bytes it counts against [`MAX_HELD_BYTES`].
    len: usize,
    what: HeldKind,
}

enum HeldKind {
    Event { at: At, key: Key, stack: Option<Vec<Vec<u8>>>, frame_bytes: usize, done: bool, after: u8 },
    Other(At),
    Skip(&'static str),
}

/// A stack block being read. Its frames are copied (at most [`MAX_STACK`]
/// of [`MAX_FRAME_LEN`] bytes), so that a long run of frame lines keeps no
/// batch alive.
struct Block {
    key: Option<Key>,
    user: bool,
    frames: Vec<Vec<u8>>,
    at: (u64, u64),
}

/// The batches from the oldest one a held line refers to up to the one
/// being fed; those in between that no held line refers to are dropped
/// (`None`), so that an event held across a long run of frame lines keeps
/// only its own batch.
struct Batches {
    list: VecDeque<Option<Batch>>,
    /// Sequence number of `list[0]`.
    first: u64,
}

impl Batches {
    fn get(&self, seq: u64) -> Option<&Batch> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        self.list.get(i)?.as_ref()
    }

    fn item(&self, at: At) -> Option<&Item<'_>> {
        self.get(at.batch)?.parsed.borrow_dependent().get(at.idx)
    }
}

/// The pairing of `TextSource`'s `State`, over lines left in their batches.
#[derive(Default)]
struct Pairing {
    held: VecDeque<Held>,
    block: Option<Block>,
    ended: bool,
    held_bytes: usize,
    base: u64,
    open: Vec<u64>,
    /// As `State::stacks` (a file: never live).
    stacks: StackNews,
}

impl Pairing {
    fn hold(&mut self, len: usize, number: u64, offset: u64, what: HeldKind) {
        self.held_bytes = self.held_bytes.saturating_add(len);
        self.held.push_back(Held { number, offset, len, what });
        if self.held_bytes > MAX_HELD_BYTES {
            self.release_all();
        }
        if self.held.len() > MAX_HELD {
            if let Some(Held { what: HeldKind::Event { done, .. }, .. }) = self.held.front_mut() {
                *done = true;
            }
        }
    }

    fn feed(&mut self, batches: &Batches, at: At, item: &Item<'_>, number: u64) {
        let offset = item.offset;
        match &item.pre {
            Pre::Long => {
                self.finish_block(batches);
                self.hold(0, number, offset, HeldKind::Skip("line longer than the limit"));
            }
            Pre::Frame(_) => {
                self.stacks.seen();
                let b = self.block.get_or_insert_with(|| Block {
                    key: None,
                    user: false,
                    frames: Vec::new(),
                    at: (number, offset),
                });
                if b.frames.len() < MAX_STACK {
                    if let Some(Item { pre: Pre::Frame(f), .. }) = batches.item(at) {
                        b.frames.push(f.to_vec());
                    }
                }
            }
            Pre::StackHeader(h) => {
                self.stacks.seen();
                self.finish_block(batches);
                self.block = Some(match h {
                    Header::Kernel(key) => Block { key: *key, user: false, frames: Vec::new(), at: (number, offset) },
                    Header::User => Block { key: None, user: true, frames: Vec::new(), at: (number, offset) },
                });
            }
            Pre::Blank => {
                self.finish_block(batches);
                self.release_all();
            }
            Pre::Ignored => self.finish_block(batches),
            Pre::Event { head, .. } => {
                self.finish_block(batches);
                let (key, len) = (head.key(), head.len as usize);
                let (base, held) = (self.base, &mut self.held);
                self.open.retain(|&seq| {
                    let Some(h) = seq.checked_sub(base).and_then(|i| held.get_mut(usize::try_from(i).ok()?)) else {
                        return false;
                    };
                    let HeldKind::Event { key: k, done, after, .. } = &mut h.what else { return false };
                    still_waiting(*k, key, done, after)
                });
                let wait = self.stacks.waits(false, head.name);
                if wait {
                    self.open.push(self.base.saturating_add(self.held.len() as u64));
                }
                let what = HeldKind::Event { at, key, stack: None, frame_bytes: 0, done: !wait, after: 0 };
                self.hold(len, number, offset, what);
            }
            Pre::Other { len, what } => {
                match what {
                    Oob::Header(h) => self.stacks.header(h),
                    Oob::StackLine => self.stacks.seen(),
                    _ => {}
                }
                self.finish_block(batches);
                self.hold(*len, number, offset, HeldKind::Other(at));
            }
        }
    }

    fn finish_block(&mut self, batches: &Batches) {
        let Some(block) = self.block.take() else { return };
        let (number, offset) = block.at;
        if block.user {
            self.hold(0, number, offset, HeldKind::Skip("user-space stack trace (not used)"));
            return;
        }
        let wanted = traceiter_name(&block.frames);
        let mut best: Option<usize> = None;
        for (i, h) in self.held.iter().enumerate().rev() {
            let HeldKind::Event { key, stack: None, at, .. } = &h.what else { continue };
            match block.key {
                None => {
                    best = Some(i);
                    break;
                }
                Some(bk) if bk.same_writer(*key) => {
                    let name = match batches.item(*at) {
                        Some(Item { pre: Pre::Event { head, .. }, .. }) => Some(head.name),
                        _ => None,
                    };
                    if wanted.is_some_and(|w| name == Some(w)) {
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
            Some(Held { what: HeldKind::Event { stack, done, frame_bytes, .. }, .. }) => {
                let bytes: usize = block.frames.iter().map(Vec::len).sum();
                *stack = Some(block.frames);
                *frame_bytes = bytes;
                *done = true;
                self.held_bytes = self.held_bytes.saturating_add(bytes);
                if self.held_bytes > MAX_HELD_BYTES {
                    self.release_all();
                }
            }
            _ => self.hold(0, number, offset, HeldKind::Skip("stack trace with no event waiting for it")),
        }
    }

    fn release_all(&mut self) {
        self.open.clear();
        for h in &mut self.held {
            if let HeldKind::Event { done, .. } = &mut h.what {
                *done = true;
            }
        }
    }

    fn end(&mut self, batches: &Batches) {
        self.finish_block(batches);
        self.ended = true;
        self.release_all();
    }

    fn drain(&mut self, batches: &Batches, sink: &mut dyn RecordSink, stop_at_event: bool) -> Option<u64> {
        loop {
            match self.held.front().map(|h| &h.what) {
                None => return None,
                Some(HeldKind::Event { done: false, .. }) => return None,
                Some(HeldKind::Event { at, .. }) if stop_at_event => {
                    return match batches.item(*at) {
                        Some(Item { pre: Pre::Event { head, .. }, .. }) => Some(head.ts_ns),
                        _ => Some(0),
                    };
                }
                Some(_) => self.deliver(batches, sink),
            }
        }
    }

    fn deliver(&mut self, batches: &Batches, sink: &mut dyn RecordSink) {
        let Some(h) = self.held.pop_front() else { return };
        self.base = self.base.saturating_add(1);
        let frame_bytes = match &h.what {
            HeldKind::Event { frame_bytes, .. } => *frame_bytes,
            _ => 0,
        };
        self.held_bytes = self.held_bytes.saturating_sub(h.len.saturating_add(frame_bytes));
        let origin = Origin::line(h.number, h.offset);
        match h.what {
            HeldKind::Event { at, stack, .. } => {
                if let Some(Item { pre: Pre::Event { head, parsed }, .. }) = batches.item(at) {
                    let frames: Vec<&[u8]> = stack.as_deref().unwrap_or_default().iter().map(Vec::as_slice).collect();
                    let ev = head.event_line();
                    emit_event(sink, &ev, head.context, parsed.as_ref().map(Option::as_ref), origin, &frames);
                }
            }
            HeldKind::Other(at) => match batches.item(at).map(|i| &i.pre) {
                Some(Pre::Other { what: Oob::Header(text), .. }) => header(sink, text),
                Some(Pre::Other { what: Oob::Lost { cpu, events }, .. }) => sink.lost(*cpu, *events, origin),
                Some(Pre::Other { what: Oob::Malformed(field), .. }) => {
                    sink.skipped(&format!("malformed line ({field})"), origin);
                }
                _ => {}
            },
            HeldKind::Skip(why) => sink.skipped(why, origin),
        }
    }

    /// The batches held lines refer to, in input order (repeats included).
    fn referenced(&self) -> impl Iterator<Item = u64> + '_ {
        self.held.iter().filter_map(|h| match &h.what {
            HeldKind::Event { at, .. } | HeldKind::Other(at) => Some(at.batch),
            HeldKind::Skip(_) => None,
        })
    }
}

/// ftrace or `trace-cmd report` text parsed on worker threads; see the
/// [module docs](self).
pub struct ParallelTextSource {
    control: Arc<Control>,
    workers: Vec<JoinHandle<()>>,
    max_line_len: usize,
    /// Buffers to read a chunk into on this thread, taken ahead so that
    /// they are emptied outside the lock.
    buffers: Option<Spare>,
    batches: Batches,
    pairing: Pairing,
    /// Next line to feed: its batch (`batches.first + batches.list.len()`
    /// when that batch is not received yet) and index.
    next: At,
    /// Lines fed so far.
    lines: u64,
    /// Stream offset after the lines fed so far.
    bytes: u64,
    /// The error that ended the input, once every line before it is fed.
    failed: Option<ReadError>,
}

/// What [`ParallelTextSource::step`] did.
enum Step {
    Fed,
    End,
}

impl ParallelTextSource {
    /// A source over `input`, with `workers` parse threads besides the
    /// calling one (which parses too, whenever it would wait); lines longer
    /// than `max_line_len` are skipped and counted.
    #[must_use]
    pub fn new(input: Box<dyn BufRead + Send>, max_line_len: usize, workers: usize) -> Self {
        Self::with_chunk_bytes(input, max_line_len, workers, CHUNK_BYTES)
    }

    /// As [`ParallelTextSource::new`], with chunks of about `chunk_bytes`.
    pub(crate) fn with_chunk_bytes(
        input: Box<dyn BufRead + Send>,
        max_line_len: usize,
        workers: usize,
        chunk_bytes: usize,
    ) -> Self {
        let max_line_len = max_line_len.max(1);
        let splitter = Splitter {
            reader: input,
            carry: Vec::new(),
            offset: 0,
            done: false,
            max_line_len,
            chunk_bytes: chunk_bytes.max(1),
            spare: Vec::new(),
        };
        let shared = Shared {
            splitter,
            turn: 0,
            taken: 0,
            parsed: BTreeMap::new(),
            ahead: AHEAD.saturating_mul(workers.max(1) as u64),
            panicked: false,
            stop: false,
        };
        let control = Arc::new(Control { state: Mutex::new(shared), changed: Condvar::new() });
        // A thread that could not start leaves its chunks to the others
        // (the calling thread parses whatever no worker takes).
        let handles = (0..workers)
            .filter_map(|w| {
                let control = Arc::clone(&control);
                std::thread::Builder::new()
                    .name(format!("iosan-parse-{w}"))
                    .spawn(move || worker(&control, max_line_len))
                    .ok()
            })
            .collect();
        Self {
            control,
            workers: handles,
            max_line_len,
            buffers: None,
            batches: Batches { list: VecDeque::new(), first: 0 },
            pairing: Pairing::default(),
            next: At { batch: 0, idx: 0 },
            lines: 0,
            bytes: 0,
            failed: None,
        }
    }

    /// Takes batch `seq`: parsed by a worker, or by this thread when it
    /// would otherwise wait (it then parses the next chunk to read, `seq`
    /// itself if no worker has it).
    fn receive(&mut self, seq: u64) -> Result<Batch, SourceError> {
        let control = Arc::clone(&self.control);
        let mut st = control.lock();
        loop {
            if let Some((parsed, end_offset, end)) = st.parsed.remove(&seq) {
                st.taken = seq.saturating_add(1);
                drop(st);
                control.changed.notify_all();
                return Ok(Batch { parsed, end_offset, end, base_line: self.lines });
            }
            // A worker that panicked while reading poisons the lock before
            // its flag is up: either way, nothing more is read.
            if st.panicked || control.state.is_poisoned() {
                drop(st);
                return Err(self.worker_died());
            }
            if st.may_read() {
                let buffers = match self.buffers.take() {
                    Some(b) => b,
                    None => {
                        let spare = st.spare();
                        drop(st);
                        self.buffers = Some(reuse(spare));
                        st = control.lock();
                        continue;
                    }
                };
                let Some((read, chunk)) = st.read_next(buffers) else { continue };
                drop(st);
                let out = parse_chunk(chunk, self.max_line_len);
                st = control.lock();
                st.parsed.insert(read, out);
                continue;
            }
            if st.turn <= seq {
                // Nobody has `seq` and there is nothing more to read: only
                // when a chunk before it did not say that the input ended.
                drop(st);
                return Err(self.read_error("the input ended before its last chunk"));
            }
            st = control.wait(st);
        }
    }

    /// A worker panicked: its panic is resumed here.
    fn worker_died(&mut self) -> SourceError {
        // The others may wait for room: they stop first, or joining them waits forever.
        self.control.lock().stop = true;
        self.control.changed.notify_all();
        for h in std::mem::take(&mut self.workers) {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
        self.read_error("a parse thread stopped before the end of the input")
    }

    /// An error of reading at the next line.
    fn read_error(&self, why: &str) -> SourceError {
        SourceError::Read(ReadError::Io {
            line: self.lines.saturating_add(1),
            offset: self.bytes,
            source: io::Error::other(why.to_string()),
        })
    }

    /// Drops the batches no held line refers to any more.
    fn release(&mut self) {
        let mut used = self.pairing.referenced().peekable();
        let mut freed = Vec::new();
        for (i, slot) in self.batches.list.iter_mut().enumerate() {
            let seq = self.batches.first.saturating_add(i as u64);
            if seq >= self.next.batch {
                break;
            }
            while used.next_if(|&b| b < seq).is_some() {}
            if used.peek() != Some(&seq) {
                freed.extend(slot.take());
            }
        }
        while matches!(self.batches.list.front(), Some(None)) {
            self.batches.list.pop_front();
            self.batches.first = self.batches.first.saturating_add(1);
        }
        if !freed.is_empty() {
            let mut st = self.control.lock();
            for b in freed {
                if st.splitter.spare.len() < 2 * AHEAD as usize {
                    st.splitter.spare.push(b.parsed);
                }
            }
        }
    }

    /// Feeds the next line (or the end of the input) to the pairing.
    fn step(&mut self) -> Result<Step, SourceError> {
        loop {
            if let Some(e) = self.failed.take() {
                return Err(e.into());
            }
            let Some(i) = usize::try_from(self.next.batch.saturating_sub(self.batches.first)).ok() else {
                return Ok(Step::End);
            };
            if i >= self.batches.list.len() {
                let b = self.receive(self.next.batch)?;
                self.batches.list.push_back(Some(b));
                continue;
            }
            let Some(batch) = self.batches.list.get(i).and_then(Option::as_ref) else { return Ok(Step::End) };
            let items = batch.parsed.borrow_dependent();
            if let Some(item) = items.get(self.next.idx) {
                let number = batch.base_line.saturating_add(self.next.idx as u64 + 1);
                self.lines = number;
                self.pairing.feed(&self.batches, self.next, item, number);
                self.next.idx += 1;
                return Ok(Step::Fed);
            }
            // The batch is fed: its end, or the next batch.
            match batch.end {
                Some(End::Eof) => {
                    self.bytes = batch.end_offset;
                    self.pairing.end(&self.batches);
                    return Ok(Step::End);
                }
                Some(End::Error { .. }) => {
                    if let Some(End::Error { offset, source }) =
                        self.batches.list.get_mut(i).and_then(Option::as_mut).and_then(|b| b.end.take())
                    {
                        // As LineReader: the line being read when reading failed.
                        self.failed = Some(ReadError::Io { line: self.lines.saturating_add(1), offset, source });
                    }
                }
                None => {
                    self.bytes = batch.end_offset;
                    self.next = At { batch: self.next.batch.saturating_add(1), idx: 0 };
                    self.release();
                }
            }
        }
    }
}

impl Drop for ParallelTextSource {
    fn drop(&mut self) {
        self.control.lock().stop = true;
        self.control.changed.notify_all();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Source for ParallelTextSource {
    fn peek(&mut self, sink: &mut dyn RecordSink) -> Result<Option<u64>, SourceError> {
        loop {
            if let Some(ts) = self.pairing.drain(&self.batches, sink, true) {
                return Ok(Some(ts));
            }
            if self.pairing.ended {
                return Ok(None);
            }
            self.step()?;
        }
    }

    fn pop(&mut self, sink: &mut dyn RecordSink) {
        if matches!(self.pairing.held.front(), Some(Held { what: HeldKind::Event { done: true, .. }, .. })) {
            self.pairing.deliver(&self.batches, sink);
        }
    }

    fn position(&self) -> Position {
        // After the lines fed: the start of the next one, or the end of the
        // last batch fed.
        let i = usize::try_from(self.next.batch.saturating_sub(self.batches.first)).ok();
        let bytes = i
            .and_then(|i| self.batches.list.get(i).and_then(Option::as_ref))
            .map_or(self.bytes, |b| b.parsed.borrow_dependent().get(self.next.idx).map_or(b.end_offset, |n| n.offset));
        Position { lines: self.lines, bytes }
    }

    fn run(&mut self, sink: &mut dyn RecordSink, progress: &mut dyn Progress) -> Result<(), SourceError> {
        let mut next_progress = PROGRESS_STEP;
        while !self.pairing.ended {
            self.step()?;
            // `bytes` moves once a batch: only then is progress worth a look.
            if self.bytes >= next_progress {
                progress.advance(self.bytes);
                next_progress = self.bytes.saturating_add(PROGRESS_STEP);
            }
            self.pairing.drain(&self.batches, sink, false);
        }
        self.pairing.drain(&self.batches, sink, false);
        progress.advance(self.bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::text::tests::Log;
    use crate::source::text::TextSource;
    use std::io::{Cursor, Read};
    use std::sync::atomic::Ordering::Relaxed;

    /// Gives `data`, then fails (when `fail`), in reads of at most `step` bytes.
    struct Failing {
        data: Cursor<Vec<u8>>,
        fail: bool,
        step: usize,
    }

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step);
            match self.data.read(buf.get_mut(..n).unwrap_or_default()) {
                Ok(0) if self.fail => Err(io::Error::other("disk on fire")),
                r => r,
            }
        }
    }

    fn reader(data: &[u8], fail: bool, step: usize) -> Box<dyn BufRead + Send> {
        Box::new(io::BufReader::with_capacity(4096, Failing { data: Cursor::new(data.to_vec()), fail, step }))
    }

    /// The sink calls, the final position or error, of one way of reading.
    fn outcome(src: &mut dyn Source, stepped: bool) -> (Vec<String>, String) {
        let mut log = Log::full();
        let end = if stepped {
            loop {
                match src.peek(&mut log) {
                    Ok(Some(_)) => src.pop(&mut log),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
        } else {
            src.run(&mut log, &mut ())
        };
        let end = match end {
            Ok(()) => format!("ok {:?}", src.position()),
            Err(e) => format!("error {e}"),
        };
        (log.0, end)
    }

    /// A TextSource and parallel sources of 0 to 3 workers and several
    /// chunk sizes say the same, running and stepping.
    fn check_same(data: &[u8], max_line_len: usize, fail: bool) {
        let want = outcome(&mut TextSource::new(reader(data, fail, 1000), max_line_len), false);
        let stepped = outcome(&mut TextSource::new(reader(data, fail, 1000), max_line_len), true);
        assert_eq!(want, stepped);
        for workers in 0..=3 {
            for chunk in [1, 7, 64, 200, 4096, 1 << 20] {
                for step in [13, 4096] {
                    for stepped in [false, true] {
                        let mut src = ParallelTextSource::with_chunk_bytes(
                            reader(data, fail, step),
                            max_line_len,
                            workers,
                            chunk,
                        );
                        let got = outcome(&mut src, stepped);
                        if got != want {
                            let first = got.0.iter().zip(&want.0).position(|(a, b)| a != b);
                            panic!(
                                "workers {workers} chunk {chunk} step {step} stepped {stepped}: first difference at {first:?}\n\
                                 got  {:?}\nwant {:?}",
                                first.and_then(|i| got.0.get(i)).or(got.0.last()),
                                first.and_then(|i| want.0.get(i)).or(want.0.last()),
                            );
                        }
                    }
                }
            }
        }
    }

    const STACKS: &str = include_str!("../../../../fixtures/captures/stacks.trace.txt");
    const REPORT_STACKS: &str = include_str!("../../../../fixtures/captures/stacks.trace-cmd-report.txt");

    #[test]
    fn same_as_text_source_on_stack_fixtures() {
        for text in [STACKS, REPORT_STACKS] {
            check_same(text.as_bytes(), 1 << 20, false);
            check_same(text.as_bytes(), 90, false);
            // A file that says it has no stacks holds no event until stack
            // lines come (these do anyway): the first stacks find their
            // events gone, on both sources alike.
            let said = format!("# iosan-meta: stacks=off\n{text}");
            check_same(said.as_bytes(), 1 << 20, false);
            check_same(said.as_bytes(), 90, false);
        }
    }

    /// Lines of every kind, shuffled by a fixed seed: over-long lines,
    /// CRLF, blank lines, malformed lines, bad fields, user stacks,
    /// headerless frames, a last line without its line break.
    fn mixed(seed: u64, lines: usize) -> Vec<u8> {
        let base: Vec<&str> = STACKS.lines().chain(REPORT_STACKS.lines()).collect();
        let extra = [
            "",
            "   ",
            "this is not a trace line",
            " insmod-1 [000] ..... 1.000200: mm_page_free: page=0 pfn=zz order=0",
            " insmod-1 [001] d.h1. 1.000300: mm_page_free: page=0 pfn=0x1000 order=0\r",
            " insmod-1 [001] d.h1. 1.000301: <user stack trace>",
            " => __free_pages+0x1/0x2",
            "=> bare_frame (ffffffff812b1e65)",
            "CPU:1 [LOST 3 EVENTS]",
            "# entries-in-buffer/entries-written: 10/12   #P:2",
            "# iosan-meta: page_size=4096",
            "# iosan-meta: stacks=off",
            "cpus=2",
            "CPU 1 is empty",
            " insmod-1 [000] ..... 1.000150: sched_switch: prev_comm=a",
            "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        ];
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::new();
        for _ in 0..lines {
            let r = next();
            let line =
                if r % 5 == 0 { extra[(r / 5) as usize % extra.len()] } else { base[(r / 5) as usize % base.len()] };
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b" insmod-1 [000] ..... 9.000000: mm_page_free: page=0 pfn=0x1 order=0");
        out
    }

    #[test]
    fn same_as_text_source_on_mixed_lines() {
        for seed in 1..=4 {
            let data = mixed(seed, 600);
            check_same(&data, 100, false);
            check_same(&data, 1 << 20, false);
        }
    }

    /// A read error ends the input at the same line, with the same error,
    /// after the same sink calls.
    #[test]
    fn same_read_error() {
        let data = mixed(9, 300);
        for cut in [0, 1, 150, 2000, data.len() / 2, data.len()] {
            let part = data.get(..cut).unwrap_or_default();
            check_same(part, 100, true);
        }
    }

    /// A line far over the limit is never held whole.
    #[test]
    fn long_line_is_skipped_not_held() {
        let mut data = b" t-1 [000] 1.000000: mm_page_free: page=0 pfn=0x1 order=0\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 3 << 20));
        data.extend_from_slice(b"\n t-1 [000] 1.000001: mm_page_free: page=0 pfn=0x2 order=0\n");
        check_same(&data, 1000, false);
        let mut src = ParallelTextSource::with_chunk_bytes(reader(&data, false, 1 << 16), 1000, 1, 4096);
        let (log, _) = outcome(&mut src, false);
        assert!(log.iter().any(|l| l.starts_with("skipped line longer than the limit at line 2 (byte 58)")), "{log:?}");
    }

    /// An event held across a long run of frame lines (its stack block
    /// never ends) keeps its own batch alive, not the frames' batches.
    #[test]
    fn held_event_keeps_only_its_batch() {
        let mut data = b" t-1 [000] d.h1. 1.000000: mm_page_free: page=0 pfn=0x1 order=0\n".to_vec();
        for i in 0..5_000 {
            data.extend_from_slice(format!(" => frame_{i}+0x1/0x2\n").as_bytes());
        }
        data.extend_from_slice(b" t-1 [000] d.h1. 1.000001: mm_page_free: page=0 pfn=0x2 order=0\n");
        check_same(&data, 1 << 20, false);
        let mut src = ParallelTextSource::with_chunk_bytes(reader(&data, false, 4096), 1 << 20, 2, 4096);
        let mut log = Log::full();
        let (mut most, mut span) = (0, 0);
        while src.peek(&mut log).unwrap().is_some() {
            most = most.max(src.batches.list.iter().filter(|b| b.is_some()).count());
            span = span.max(src.batches.list.len());
            src.pop(&mut log);
        }
        assert!(span > 10, "the frames span {span} batches");
        assert!(most <= 3, "{most} batches alive");
        assert_eq!(log.0.len(), 2, "{:?}", log.0.first());
        assert!(log.0.first().is_some_and(|l| l.contains("frame_0+0x1/0x2|")), "{:?}", log.0.first());
    }

    /// Dropping a source part-way stops its workers.
    #[test]
    fn drop_midway_stops_workers() {
        let data = mixed(3, 5000);
        let mut src = ParallelTextSource::with_chunk_bytes(reader(&data, false, 4096), 1 << 20, 3, 256);
        let mut log = Log::full();
        for _ in 0..10 {
            if src.peek(&mut log).unwrap().is_some() {
                src.pop(&mut log);
            }
        }
        drop(src);
    }

    /// Panics once, on the first read on a worker after `after` bytes, and
    /// then reads on.
    struct Exploding {
        data: Cursor<Vec<u8>>,
        after: u64,
        exploded: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Read for Exploding {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let on_worker = std::thread::current().name().is_some_and(|n| n.starts_with("iosan-parse"));
            if on_worker && self.data.position() >= self.after && !self.exploded.swap(true, Relaxed) {
                panic!("reader exploded");
            }
            let n = buf.len().min(512);
            self.data.read(buf.get_mut(..n).unwrap_or_default())
        }
    }

    /// A panic on a worker reaches the calling thread (whichever thread
    /// was reading when it came): the run panics; it neither waits forever
    /// nor reads on past the lost chunk.
    #[test]
    fn a_panic_while_reading_reaches_the_caller() {
        let data = mixed(5, 4000);
        let mut tried = 0;
        for workers in [1, 2] {
            for after in [0, 3000, data.len() as u64 / 2] {
                let exploded = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let input = Exploding { data: Cursor::new(data.clone()), after, exploded: Arc::clone(&exploded) };
                let reader: Box<dyn BufRead + Send> = Box::new(io::BufReader::with_capacity(512, input));
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mut src = ParallelTextSource::with_chunk_bytes(reader, 1 << 20, workers, 700);
                    let mut log = Log::full();
                    // A slow first delivery: the workers read ahead meanwhile
                    // (until one explodes, when it is the first read there).
                    let mut first = true;
                    while let Ok(Some(_)) = src.peek(&mut log) {
                        if std::mem::take(&mut first) {
                            let start = std::time::Instant::now();
                            let wait = if after == 0 { 5000 } else { 50 };
                            while !exploded.load(Relaxed) && start.elapsed().as_millis() < wait {
                                std::thread::sleep(std::time::Duration::from_millis(5));
                            }
                        }
                        src.pop(&mut log);
                    }
                }));
                // The calling thread may have read past `after` first: then
                // nothing exploded, and the run ends normally.
                if exploded.load(Relaxed) {
                    tried += 1;
                    assert!(run.is_err(), "workers {workers} after {after}: no panic");
                }
            }
        }
        assert!(tried > 0, "no worker read where the reader explodes");
    }
}
