//! A native reader of trace-cmd's `trace.dat`, versions 6 and 7.
//!
//! Supported envelope: little- and big-endian files, 4- and 8-byte kernel
//! longs, any sub-buffer size (from the BUFFER option, else `header_page`,
//! else the file's page size), uncompressed, zstd and zlib data, several
//! instances (buffers) in one file. Latency-format files are refused.
//!
//! Records of all CPUs and buffers come out in timestamp order (a k-way
//! merge; ties go to the lower buffer, then the lower CPU) with at most one
//! page or compressed chunk per CPU in memory. Each record's fields are
//! decoded by name from the file's own format files. A `ftrace:kernel_stack`
//! record that follows an event of the same task and context on its CPU is
//! attached to that event as symbolised frames. Pages and records that do
//! not make sense are counted in [`Skipped`] and the run goes on; a
//! container that cannot be read is a [`TraceDatError`].
//!
//! Timestamps are nanoseconds of the trace clock: converted with the
//! TSC2NSEC option when the file has one (`(ts * mult) >> shift`, as
//! trace-cmd 3.1.6 reports them), shifted by its `--ts-offset`.
//! Offsets are file offsets: of the record for uncompressed data, of the
//! compressed chunk holding it otherwise.
//!
//! ```no_run
//! use iosan_trace::source::tracedat::{Item, TraceDat};
//! let f = std::io::BufReader::new(std::fs::File::open("trace.dat")?);
//! let mut t = TraceDat::open(f)?;
//! while let Some(item) = t.next_item()? {
//!     match item {
//!         Item::Event(e) => println!("{} {}:{} pid {}", e.ts_ns, e.format.system, e.format.name, e.pid),
//!         Item::Lost(l) => println!("cpu {} lost {:?}", l.cpu, l.count),
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compress;
mod container;
pub mod error;
pub(crate) mod io;
mod page;
mod stream;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{Read, Seek};

pub use container::{BufferInfo, CpuData, FileHeader};
pub use error::TraceDatError;
pub use stream::{Limits, Skipped};

use crate::record::ExecContext;
use crate::source::format::{read_uint, EventFormat, FieldKind, RecordFields};
use crate::source::kallsyms::SymbolCache;
use crate::source::tracing_data::TracingData;
use compress::Codec;
use container::Container;
use page::PageLayout;
use stream::{CpuStream, Ctx, Raw};

/// The magic a trace.dat starts with (`\x17\x08\x44tracing`).
#[must_use]
pub fn is_trace_dat(prefix: &[u8]) -> bool {
    prefix.starts_with(b"\x17\x08\x44tracing")
}

/// `common_flags` bits that name the context (TRACE_FLAG_NMI, HARDIRQ, SOFTIRQ).
const CONTEXT_FLAGS: u8 = 0x04 | 0x08 | 0x10;

/// What the head of a stream is.
#[derive(Clone, Copy, Default)]
enum Verdict {
    #[default]
    Gone,
    Short,
    Unknown,
    Lost,
    Event(u32),
}

/// Per-format flags, indexed by event ID.
const KIND_PROBE: u8 = 1;
const KIND_STACK: u8 = 2;

#[derive(Default)]
struct Slot {
    full: bool,
    lost: bool,
    /// What the record is, decided once when it is read.
    verdict: Verdict,
    /// Its `KIND_*` flags.
    kind: u8,
    /// Its `common_pid` and context flags.
    who: Option<(u64, u8)>,
    ts: u64,
    offset: u64,
    count: Option<u64>,
    data: Vec<u8>,
    stack: Vec<u64>,
    stack_text: Vec<u8>,
    stack_ends: Vec<u32>,
}

struct Stream {
    cpu: CpuStream,
    /// The head and the record after it (`ahead`), which trade places by
    /// `flip` rather than by moving their buffers.
    slots: [Slot; 2],
    flip: bool,
}

impl Stream {
    #[inline]
    fn head(&self) -> &Slot {
        let [a, b] = &self.slots;
        if self.flip {
            b
        } else {
            a
        }
    }

    #[inline]
    fn ahead(&self) -> &Slot {
        let [a, b] = &self.slots;
        if self.flip {
            a
        } else {
            b
        }
    }

    /// The head and `ahead`, both writable.
    #[inline]
    fn both_mut(&mut self) -> (&mut Slot, &mut Slot) {
        pair_mut(&mut self.slots, self.flip)
    }
}

/// The head and `ahead` of a stream's `slots`.
#[inline]
fn pair_mut(slots: &mut [Slot; 2], flip: bool) -> (&mut Slot, &mut Slot) {
    let [a, b] = slots;
    if flip {
        (b, a)
    } else {
        (a, b)
    }
}

/// Offsets of the common fields (the same for every event of a kernel).
#[derive(Clone, Copy)]
struct Common {
    type_off: usize,
    type_size: usize,
    flags_off: usize,
    pid_off: usize,
    pid_size: usize,
}

/// One item of the merged stream.
#[derive(Debug)]
pub enum Item<'a> {
    /// A record.
    Event(EventView<'a>),
    /// Events the ring buffer dropped before a page (the page's
    /// `RB_MISSED_EVENTS` flag).
    Lost(Lost<'a>),
}

/// What [`TraceDat::next_head`] stepped to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// A record at this time (ns) and file offset.
    Event { ts_ns: u64, offset: u64 },
    /// A lost-events marker ([`TraceDat::current`] gives it).
    Lost,
}

/// Events lost on one CPU of one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lost<'a> {
    /// CPU.
    pub cpu: u32,
    /// Instance name (`""` for the top buffer).
    pub buffer: &'a str,
    /// How many, when the kernel stored the count.
    pub count: Option<u64>,
    /// Timestamp of the page that follows the loss, ns.
    pub ts_ns: u64,
    /// File offset of that page (or its chunk).
    pub offset: u64,
}

/// A kernel stack attached to an event, innermost frame first.
#[derive(Clone, Copy, Debug)]
pub struct StackView<'a> {
    addrs: &'a [u64],
    text: &'a [u8],
    ends: &'a [u32],
}

impl<'a> StackView<'a> {
    /// Return addresses.
    #[must_use]
    pub fn addrs(&self) -> &'a [u64] {
        self.addrs
    }

    /// No frames.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Frames as ftrace prints them (`func+0xoff/0xlen [module]`).
    pub fn frames(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (text, ends) = (self.text, self.ends);
        ends.iter().enumerate().map(move |(i, &e)| {
            let start = if i == 0 { 0 } else { ends.get(i - 1).copied().unwrap_or(0) as usize };
            text.get(start..e as usize).unwrap_or_default()
        })
    }
}

/// One record, borrowed from the reader until the next call.
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    /// Timestamp, ns.
    pub ts_ns: u64,
    /// CPU.
    pub cpu: u32,
    /// Instance name (`""` for the top buffer).
    pub buffer: &'a str,
    /// `common_pid`.
    pub pid: i32,
    /// `common_flags`.
    pub flags: u8,
    /// The event's format (system, name, fields).
    pub format: &'a EventFormat,
    /// The record's fields by name (with `__probe_func` for kprobes).
    pub fields: RecordFields<'a>,
    /// Task name from the saved cmdlines.
    pub comm: Option<&'a [u8]>,
    /// File offset (see the module docs).
    pub offset: u64,
    /// Kernel stack of the event, empty if none.
    pub stack: StackView<'a>,
}

impl EventView<'_> {
    /// Task, softirq, hardirq or NMI, from `common_flags`.
    #[must_use]
    pub fn context(&self) -> ExecContext {
        ExecContext::from_common_flags(self.flags)
    }
}

/// An open trace.dat.
pub struct TraceDat<R> {
    src: io::Src<R>,
    header: FileHeader,
    data: TracingData,
    buffers: Vec<BufferInfo>,
    meta: Vec<(String, String)>,
    codec: Option<Codec>,
    tsc2nsec: Option<(u32, u32, u64)>,
    ts_offset: i64,
    overrun: u64,
    layout: PageLayout,
    common: Common,
    kinds: Vec<u8>,
    streams: Vec<Stream>,
    /// Merge keys of the streams with a head, but the one last taken.
    heap: BinaryHeap<Reverse<Key>>,
    last: Option<usize>,
    scratch: Vec<u8>,
    skipped: Skipped,
    mem: u64,
    limits: Limits,
    /// Last `__probe_ip` resolved and its symbol.
    probe_cache: SymbolCache,
}

/// A stream's place in the merge: its head's raw timestamp, then its index.
type Key = (u64, u32);

/// Most CPU streams (all buffers together).
const STREAM_LIMIT: usize = 16384;

impl<R: Read + Seek> TraceDat<R> {
    /// Reads the headers, format files, kallsyms, cmdlines and options,
    /// and the first page of every CPU. Pass a `BufReader` for a file.
    ///
    /// # Errors
    /// [`TraceDatError`]: not a trace.dat, an unsupported version or
    /// compression, a latency file, or a truncated or lying container.
    pub fn open(reader: R) -> Result<Self, TraceDatError> {
        Self::open_with(reader, Limits::default())
    }

    /// [`TraceDat::open`] with explicit resource limits.
    ///
    /// # Errors
    /// As [`TraceDat::open`], and [`TraceDatError::TooLarge`] when the
    /// first page of every CPU does not fit in `limits.memory`.
    pub fn open_with(reader: R, limits: Limits) -> Result<Self, TraceDatError> {
        let mut src = io::Src::new(reader)?;
        let c = Container::read(&mut src)?;
        let layout = PageLayout::new(&c.data.header_page, c.header.big_endian);
        let mut t = Self {
            src,
            header: c.header,
            common: common_of(&c.data),
            kinds: kinds_of(&c.data),
            data: c.data,
            buffers: c.buffers,
            meta: c.meta,
            codec: c.codec,
            tsc2nsec: c.tsc2nsec,
            ts_offset: c.ts_offset,
            overrun: c.overrun,
            layout,
            streams: Vec::new(),
            heap: BinaryHeap::new(),
            last: None,
            scratch: Vec::new(),
            skipped: Skipped::default(),
            mem: 0,
            limits,
            probe_cache: SymbolCache::default(),
        };
        t.open_streams()?;
        Ok(t)
    }

    fn open_streams(&mut self) -> Result<(), TraceDatError> {
        let min_page = self.layout.data_offset.max(self.layout.commit_offset + self.layout.commit_size) as u64;
        for (bi, b) in self.buffers.iter().enumerate() {
            if u64::from(b.page_size) <= min_page || b.page_size > (64 << 20) {
                return Err(TraceDatError::malformed(
                    0,
                    format!("sub-buffer size {} of buffer `{}`", b.page_size, b.name),
                ));
            }
            for c in &b.cpus {
                if self.streams.len() >= STREAM_LIMIT {
                    return Err(TraceDatError::TooLarge {
                        offset: c.offset,
                        what: "CPU streams",
                        size: STREAM_LIMIT as u64 + 1,
                        limit: STREAM_LIMIT as u64,
                    });
                }
                let mut ctx = Ctx {
                    src: &mut self.src,
                    codec: self.codec.as_mut(),
                    scratch: &mut self.scratch,
                    layout: &self.layout,
                    skipped: &mut self.skipped,
                    mem: &mut self.mem,
                    mem_limit: self.limits.memory,
                };
                let cpu = CpuStream::open(bi, c.cpu, c.offset, c.size, b.page_size, b.compressed, &mut ctx)?;
                self.streams.push(Stream { cpu, slots: Default::default(), flip: false });
            }
        }
        for i in 0..self.streams.len() {
            self.pull(i)?;
            if let Some(key) = self.advance(i)? {
                self.heap.push(Reverse(key));
            }
        }
        Ok(())
    }

    /// The initial header.
    #[must_use]
    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// Format files, kallsyms, printk formats and cmdlines.
    #[must_use]
    pub fn tracing_data(&self) -> &TracingData {
        &self.data
    }

    /// The instances and their CPUs.
    #[must_use]
    pub fn buffers(&self) -> &[BufferInfo] {
        &self.buffers
    }

    /// Text options (`date`, `uname`, `version`, `cpucount`).
    #[must_use]
    pub fn meta(&self) -> &[(String, String)] {
        &self.meta
    }

    /// Events the ring buffer overwrote (sum of the CPUSTAT `overrun:` lines).
    #[must_use]
    pub fn overrun(&self) -> u64 {
        self.overrun
    }

    /// What was skipped so far.
    #[must_use]
    pub fn skipped(&self) -> Skipped {
        self.skipped
    }

    /// Reads the next raw item of stream `i` into its `ahead` slot.
    fn pull(&mut self, i: usize) -> Result<(), TraceDatError> {
        let Some(s) = self.streams.get_mut(i) else { return Ok(()) };
        let mut ctx = Ctx {
            src: &mut self.src,
            codec: self.codec.as_mut(),
            scratch: &mut self.scratch,
            layout: &self.layout,
            skipped: &mut self.skipped,
            mem: &mut self.mem,
            mem_limit: self.limits.memory,
        };
        let Stream { cpu, slots, flip } = s;
        let (_, a) = pair_mut(slots, *flip);
        a.stack.clear();
        a.stack_text.clear();
        a.stack_ends.clear();
        match cpu.next(&mut ctx)? {
            None => {
                a.full = false;
                a.verdict = Verdict::Gone;
            }
            Some(Raw::Lost { ts, count, offset }) => {
                let (verdict, kind, who) = (Verdict::Lost, 0, None);
                *a = Slot { full: true, lost: true, verdict, kind, who, ts, offset, count, ..std::mem::take(a) };
            }
            Some(Raw::Data { ts, start, end, offset }) => {
                let data = cpu.buf.get(start..end).unwrap_or_default();
                let be = self.header.big_endian;
                let c = &self.common;
                let id = uint_at(data, c.type_off, c.type_size, be);
                let who = pid_ctx(c, be, data);
                a.full = true;
                a.lost = false;
                a.kind = id.and_then(|id| self.kinds.get(id as usize).copied()).unwrap_or(0);
                a.who = who;
                a.verdict = match (id, who) {
                    (Some(id), Some(_)) => {
                        match u32::try_from(id).ok().filter(|&id| self.data.formats.by_id(id).is_some()) {
                            Some(id) => Verdict::Event(id),
                            None => Verdict::Unknown,
                        }
                    }
                    _ => Verdict::Short,
                };
                a.ts = ts;
                a.offset = offset;
                a.data.clear();
                a.data.extend_from_slice(data);
            }
        }
        Ok(())
    }

    /// Moves `ahead` to `head`, reads a new `ahead`, and folds the stack
    /// records that follow the new head into it. Gives the merge key of the
    /// new head, `None` when the stream is done.
    fn advance(&mut self, i: usize) -> Result<Option<Key>, TraceDatError> {
        if let Some(s) = self.streams.get_mut(i) {
            s.flip = !s.flip;
        }
        self.pull(i)?;
        let Some(s) = self.streams.get(i) else { return Ok(None) };
        let h = s.head();
        if h.full && !h.lost {
            if h.kind & KIND_STACK != 0 {
                self.attach_own_stack(i);
            } else if let Some(who) = h.who {
                // The kernel writes one stack record per event; a second one
                // is delivered on its own, so a run of them cannot grow a slot.
                let a = s.ahead();
                if a.full && !a.lost && a.kind & KIND_STACK != 0 && a.who == Some(who) {
                    self.attach_stack_of_ahead(i);
                    self.pull(i)?;
                }
            }
        }
        Ok(self.streams.get(i).map(Stream::head).filter(|h| h.full).map(|h| (h.ts, i as u32)))
    }

    /// The stream whose head comes next: the least of `cand` (the stream
    /// just advanced, not in the heap) and the heap's top.
    #[inline]
    fn take_next(&mut self, cand: Option<Key>) -> Option<usize> {
        let Some(c) = cand else { return self.heap.pop().map(|Reverse((_, i))| i as usize) };
        match self.heap.peek_mut() {
            // Replacing the top costs one sift instead of a push and a pop.
            Some(mut top) if top.0 < c => {
                let next = top.0 .1;
                *top = Reverse(c);
                Some(next as usize)
            }
            _ => Some(c.1 as usize),
        }
    }

    fn attach_own_stack(&mut self, i: usize) {
        let Some(s) = self.streams.get_mut(i) else { return };
        let (h, _) = s.both_mut();
        let data = std::mem::take(&mut h.data);
        decode_stack(&self.data, self.common, &data, h);
        h.data = data;
    }

    fn attach_stack_of_ahead(&mut self, i: usize) {
        let Some(s) = self.streams.get_mut(i) else { return };
        let (h, a) = s.both_mut();
        decode_stack(&self.data, self.common, &a.data, h);
    }

    fn ts_ns(&self, ts: u64) -> u64 {
        let ts = match self.tsc2nsec {
            // trace-cmd 3.1.6 reports (ts * mult) >> shift; the option's
            // offset does not move host timestamps (checked against it).
            Some((mult, shift, _)) => ((u128::from(ts) * u128::from(mult)) >> shift) as u64,
            None => ts,
        };
        ts.wrapping_add_signed(self.ts_offset)
    }

    /// The next record or loss marker in timestamp order; `None` at the end.
    ///
    /// # Errors
    /// [`TraceDatError`] when the file cannot be read (I/O, a chunk table
    /// cut short, the memory limit). Damaged pages and records are counted
    /// in [`Skipped`] instead.
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, TraceDatError> {
        match self.next_head()? {
            None => Ok(None),
            Some(_) => Ok(self.current()),
        }
    }

    /// Steps to the next item like [`Self::next_item`] but only says what it
    /// is: its time and offset for an event, whose view [`Self::current`]
    /// builds when it is wanted (a merge peeks at many records before it
    /// takes one).
    ///
    /// # Errors
    /// As [`Self::next_item`].
    pub fn next_head(&mut self) -> Result<Option<Head>, TraceDatError> {
        let mut cand = match self.last.take() {
            Some(i) => self.advance(i)?,
            None => None,
        };
        loop {
            let Some(i) = self.take_next(cand.take()) else { return Ok(None) };
            match self.verdict(i) {
                Verdict::Gone => {}
                Verdict::Short => {
                    self.skipped.short_records += 1;
                    let at = self.streams.get(i).map_or(0, |s| s.head().offset);
                    self.skipped.at(at);
                    cand = self.advance(i)?;
                }
                Verdict::Unknown => {
                    self.skipped.unknown_ids += 1;
                    let at = self.streams.get(i).map_or(0, |s| s.head().offset);
                    self.skipped.at(at);
                    cand = self.advance(i)?;
                }
                Verdict::Lost => {
                    self.last = Some(i);
                    return Ok(Some(Head::Lost));
                }
                Verdict::Event(_) => {
                    self.last = Some(i);
                    let Some(h) = self.streams.get(i).map(Stream::head) else { return Ok(None) };
                    return Ok(Some(Head::Event { ts_ns: self.ts_ns(h.ts), offset: h.offset }));
                }
            }
        }
    }

    /// The item the last [`TraceDat::next_item`] returned, again (the
    /// reader keeps it until the next call): lets a source announce a
    /// record's time and deliver it later.
    #[must_use]
    #[inline]
    pub fn current(&self) -> Option<Item<'_>> {
        let i = self.last?;
        match self.verdict(i) {
            Verdict::Lost => self.lost_view(i).map(Item::Lost),
            Verdict::Event(id) => self.event_view(i, id).map(Item::Event),
            Verdict::Gone | Verdict::Short | Verdict::Unknown => None,
        }
    }

    #[inline]
    fn verdict(&self, i: usize) -> Verdict {
        self.streams.get(i).map_or(Verdict::Gone, |s| s.head().verdict)
    }

    fn lost_view(&self, i: usize) -> Option<Lost<'_>> {
        let s = self.streams.get(i)?;
        let buffer = self.buffers.get(s.cpu.buffer).map_or("", |b| b.name.as_str());
        let h = s.head();
        Some(Lost { cpu: s.cpu.cpu, buffer, count: h.count, ts_ns: self.ts_ns(h.ts), offset: h.offset })
    }

    /// [`Self::current`] when it is an event.
    #[inline]
    pub(crate) fn current_event(&self) -> Option<EventView<'_>> {
        let i = self.last?;
        match self.verdict(i) {
            Verdict::Event(id) => self.event_view(i, id),
            _ => None,
        }
    }

    #[inline]
    fn event_view(&self, i: usize, id: u32) -> Option<EventView<'_>> {
        let s = self.streams.get(i)?;
        let h = s.head();
        let format = self.data.formats.by_id(id)?;
        let c = self.common;
        let be = self.header.big_endian;
        let (pid, _) = h.who?;
        let fields = format.fields_of(&h.data, be);
        let probe = if h.kind & KIND_PROBE != 0 {
            fields.probe_ip().and_then(|ip| self.data.kallsyms.name_cached(ip, &self.probe_cache))
        } else {
            None
        };
        let pid = pid_signed(pid, c.pid_size);
        Some(EventView {
            ts_ns: self.ts_ns(h.ts),
            cpu: s.cpu.cpu,
            buffer: self.buffers.get(s.cpu.buffer).map_or("", |b| b.name.as_str()),
            pid,
            flags: h.data.get(c.flags_off).copied().unwrap_or(0),
            format,
            fields: fields.with_probe_func(probe),
            comm: u32::try_from(pid).ok().and_then(|p| self.data.cmdlines.comm(p)),
            offset: h.offset,
            stack: StackView { addrs: &h.stack, text: &h.stack_text, ends: &h.stack_ends },
        })
    }

    /// Gives the reader back.
    pub fn into_inner(self) -> R {
        self.src.into_inner()
    }
}

/// `common_pid` and the context bits of `common_flags`.
#[inline]
fn pid_ctx(c: &Common, be: bool, data: &[u8]) -> Option<(u64, u8)> {
    let pid = uint_at(data, c.pid_off, c.pid_size, be)?;
    Some((pid, data.get(c.flags_off)? & CONTEXT_FLAGS))
}

/// The `size`-byte unsigned integer at `off` of `data`, if it holds one.
#[inline]
fn uint_at(data: &[u8], off: usize, size: usize, be: bool) -> Option<u64> {
    let at = data.get(off..)?;
    // The common fields' sizes, as single loads.
    match size {
        2 => at.first_chunk::<2>().map(|&a| u64::from(if be { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) })),
        4 => at.first_chunk::<4>().map(|&a| u64::from(if be { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) })),
        _ => at.get(..size).map(|b| read_uint(b, be)),
    }
}

fn pid_signed(v: u64, size: usize) -> i32 {
    match size {
        4 => v as u32 as i32,
        2 => v as u16 as i16 as i32,
        _ => v as i32,
    }
}

fn common_of(td: &TracingData) -> Common {
    let mut c = Common { type_off: 0, type_size: 2, flags_off: 2, pid_off: 4, pid_size: 4 };
    if let Some(f) =
        td.formats.all().iter().find(|f| f.field("common_pid").is_some() && f.field("common_type").is_some())
    {
        let ok = |n: &str, sizes: &[u32]| {
            f.field(n).filter(|x| sizes.contains(&x.size)).map(|x| (x.offset as usize, x.size as usize))
        };
        if let Some((o, s)) = ok("common_type", &[1, 2, 4]) {
            (c.type_off, c.type_size) = (o, s);
        }
        if let Some((o, _)) = ok("common_flags", &[1]) {
            c.flags_off = o;
        }
        if let Some((o, s)) = ok("common_pid", &[2, 4]) {
            (c.pid_off, c.pid_size) = (o, s);
        }
    }
    c
}

fn kinds_of(td: &TracingData) -> Vec<u8> {
    let mut v = Vec::new();
    for f in td.formats.all() {
        let mut k = 0;
        if f.system == "kprobes" || f.field("__probe_ip").is_some() {
            k |= KIND_PROBE;
        }
        if f.system == "ftrace" && f.name == "kernel_stack" {
            k |= KIND_STACK;
        }
        if k != 0 && f.id <= u32::from(u16::MAX) {
            let id = f.id as usize;
            if v.len() <= id {
                v.resize(id + 1, 0);
            }
            if let Some(slot) = v.get_mut(id) {
                *slot = k;
            }
        }
    }
    v
}

/// Most frames taken from one stack record (the kernel's deepest stacks
/// are well below this; a hostile 64 MiB page could hold millions).
const MAX_FRAMES: usize = 512;

/// Appends the frames of a `kernel_stack` record (`size` entries of
/// `caller`, up to the record's end and the first ULONG_MAX) to `slot`.
fn decode_stack(td: &TracingData, c: Common, data: &[u8], slot: &mut Slot) {
    let be = td.big_endian;
    let id = data.get(c.type_off..c.type_off + c.type_size).map(|b| read_uint(b, be));
    let Some(f) = id.and_then(|id| u32::try_from(id).ok()).and_then(|id| td.formats.by_id(id)) else { return };
    let Some(caller) = f.field("caller") else { return };
    let elem = match caller.kind {
        FieldKind::FixedArray { elem_size } => usize::from(elem_size),
        _ => td.header_page.commit_size as usize,
    };
    if elem != 4 && elem != 8 {
        return;
    }
    let start = caller.offset as usize;
    let avail = data.len().saturating_sub(start) / elem;
    let size = f.fields_of(data, be).uint("size").map_or(avail, |s| (s as usize).min(avail));
    let ulong_max = if elem == 8 { u64::MAX } else { u64::from(u32::MAX) };
    for k in 0..size.min(MAX_FRAMES) {
        let Some(b) = data.get(start + k * elem..start + (k + 1) * elem) else { break };
        let addr = read_uint(b, be);
        if addr == ulong_max {
            break;
        }
        if addr == 0 {
            continue;
        }
        slot.stack.push(addr);
        td.kallsyms.format(addr, &mut slot.stack_text);
        slot.stack_ends.push(u32::try_from(slot.stack_text.len()).unwrap_or(u32::MAX));
    }
}
