//! The binary sources: trace.dat and perf.data files as [`Source`]s.
//!
//! Both decode each record's fields by name from the capture's own format
//! files ([`super::format`]) and hand them to the event model
//! ([`crate::parse::event_from_fields`], by position: [`crate::parse::plan`]), so kernel format drift needs no code here.
//! Origins are byte offsets in the file (of the record, or of the
//! compressed chunk or record holding it).

use std::io::{Read, Seek};

use super::format::RecordFields;
use super::perf_data::{Limits as PerfLimits, PerfData, PerfItem};
use super::tracedat::{Head, Item, TraceDat};
use super::tracing_data::TracingData;
use super::{Position, Source, SourceError};
use crate::record::{ExecContext, Origin, Record, RecordSink};

/// Decodes one record's fields and delivers it (or counts why not).
#[allow(clippy::too_many_arguments)]
pub(super) fn deliver(
    sink: &mut dyn RecordSink,
    name: &str,
    fields: &RecordFields<'_>,
    ts_ns: u64,
    cpu: u32,
    pid: u32,
    comm: &[u8],
    context: ExecContext,
    stack: &[&[u8]],
    origin: Origin,
) {
    // Matched in place: an event is large, and moving it out costs a copy.
    match &fields.event() {
        Ok(Some(event)) => {
            sink.record(&Record { ts_ns, cpu, pid, comm, context, event, stack, origin });
        }
        Ok(None) => sink.unknown_event(name.as_bytes()),
        Err(e) => sink.skipped(&format!("bad field: event `{}` field `{}`: {}", e.event, e.field, e.problem), origin),
    }
}

/// The readers' errors already name the byte offset and what is wrong.
fn container(e: impl std::error::Error + Send + Sync + 'static) -> SourceError {
    SourceError::Decode(Box::new(e))
}

/// A trace.dat file (versions 6 and 7) as a record source.
pub struct TraceDatSource<R> {
    dat: TraceDat<R>,
    /// The time `peek` announced of the reader's current event, not yet delivered.
    pending: Option<u64>,
    started: bool,
    bytes: u64,
    skipped_reported: bool,
}

impl<R: Read + Seek> TraceDatSource<R> {
    /// Opens a trace.dat.
    ///
    /// # Errors
    /// [`SourceError::Container`] when the headers cannot be read.
    pub fn open(reader: R) -> Result<Self, SourceError> {
        let dat = TraceDat::open(reader).map_err(container)?;
        Ok(Self { dat, pending: None, started: false, bytes: 0, skipped_reported: false })
    }

    /// The reader.
    #[must_use]
    pub fn reader(&self) -> &TraceDat<R> {
        &self.dat
    }

    fn start(&mut self, sink: &mut dyn RecordSink) {
        if self.started {
            return;
        }
        self.started = true;
        let h = self.dat.header();
        sink.meta("format", &format!("trace.dat v{}", h.version));
        sink.meta("page_size", &h.page_size.to_string());
        for (k, v) in self.dat.meta() {
            sink.meta(k, v);
        }
        if self.dat.overrun() > 0 {
            sink.overwritten(self.dat.overrun());
        }
    }

    /// The event [`Source::peek`] announced, as the reader's view (what
    /// [`Source::pop`] would decode and deliver).
    pub(super) fn pop_view(&mut self) -> Option<super::tracedat::EventView<'_>> {
        self.pending.take()?;
        self.dat.current_event()
    }

    fn report_skipped(&mut self, sink: &mut dyn RecordSink) {
        if self.skipped_reported {
            return;
        }
        self.skipped_reported = true;
        let s = self.dat.skipped();
        let at = Origin::byte(s.first_offset.unwrap_or(0));
        for (n, why) in [
            (s.damaged_pages, "trace.dat: damaged ring-buffer page"),
            (s.chunks, "trace.dat: compressed chunk that does not decompress"),
            (s.unknown_ids, "trace.dat: record of an event id without a format"),
            (s.short_records, "trace.dat: record shorter than its common fields"),
            (s.cpu_ranges, "trace.dat: CPU data range outside the file"),
        ] {
            sink.skipped_many(why, at, n);
        }
    }
}

impl<R: Read + Seek> Source for TraceDatSource<R> {
    fn peek(&mut self, sink: &mut dyn RecordSink) -> Result<Option<u64>, SourceError> {
        self.start(sink);
        if let Some(ts) = self.pending {
            return Ok(Some(ts));
        }
        loop {
            let head = self.dat.next_head().map_err(container)?;
            match head {
                None => {
                    self.report_skipped(sink);
                    return Ok(None);
                }
                Some(Head::Lost) => {
                    if let Some(Item::Lost(l)) = self.dat.current() {
                        self.bytes = self.bytes.max(l.offset);
                        sink.lost(Some(l.cpu), l.count, Origin::byte(l.offset));
                    }
                }
                Some(Head::Event { ts_ns, offset }) => {
                    self.bytes = self.bytes.max(offset);
                    self.pending = Some(ts_ns);
                    return Ok(Some(ts_ns));
                }
            }
        }
    }

    fn pop(&mut self, sink: &mut dyn RecordSink) {
        if self.pending.take().is_none() {
            return;
        }
        // Matched in place, as in `deliver`.
        let Some(v) = &self.dat.current_event() else { return };
        let frames: Vec<&[u8]> = v.stack.frames().collect();
        let pid = u32::try_from(v.pid).unwrap_or(0);
        deliver(
            sink,
            &v.format.name,
            &v.fields,
            v.ts_ns,
            v.cpu,
            pid,
            v.comm.unwrap_or(b"<...>"),
            v.context(),
            &frames,
            Origin::byte(v.offset),
        );
    }

    fn position(&self) -> Position {
        Position { lines: 0, bytes: self.bytes }
    }
}

/// A perf.data file (file or pipe mode) of tracepoint samples as a
/// record source. Task names come from perf's `COMM` records, else from
/// the tracing data's saved cmdlines. Samples of events without a format
/// (perf's own tracking events, hardware events) are counted as unknown.
pub struct PerfDataSource<R> {
    perf: PerfData<R>,
    data: Option<TracingData>,
    /// The tracing data was met (parsed or not): it is parsed once.
    data_seen: bool,
    pending: Option<PerfItem>,
    started: bool,
    bytes: u64,
}

impl<R: Read> PerfDataSource<R> {
    fn new(perf: PerfData<R>) -> Result<Self, SourceError> {
        let data = perf.tracing_data().map(TracingData::parse).transpose().map_err(container)?;
        let data_seen = data.is_some();
        Ok(Self { perf, data, data_seen, pending: None, started: false, bytes: 0 })
    }

    /// A perf.data stream in pipe mode (`perf record -o -`).
    ///
    /// # Errors
    /// [`SourceError::Container`] when the header cannot be read.
    pub fn open_pipe(reader: R) -> Result<Self, SourceError> {
        Self::open_pipe_with(reader, PerfLimits::default())
    }

    /// As [`Self::open_pipe`], within `limits`.
    ///
    /// # Errors
    /// As [`Self::open_pipe`].
    pub fn open_pipe_with(reader: R, limits: PerfLimits) -> Result<Self, SourceError> {
        Self::new(PerfData::open_pipe(reader, limits).map_err(container)?)
    }

    fn start(&mut self, sink: &mut dyn RecordSink) {
        if !self.started {
            self.started = true;
            sink.meta("format", "perf.data");
        }
    }
}

impl<R: Read + Seek> PerfDataSource<R> {
    /// A perf.data file (file mode, the default of `perf record`; a
    /// pipe-mode file is read too).
    ///
    /// # Errors
    /// [`SourceError::Container`] when the header, the attrs or the
    /// tracing data cannot be read.
    pub fn open_file(reader: R) -> Result<Self, SourceError> {
        Self::open_file_with(reader, PerfLimits::default())
    }

    /// As [`Self::open_file`], within `limits`.
    ///
    /// # Errors
    /// As [`Self::open_file`].
    pub fn open_file_with(reader: R, limits: PerfLimits) -> Result<Self, SourceError> {
        Self::new(PerfData::open_file(reader, limits).map_err(container)?)
    }
}

impl<R: Read> Source for PerfDataSource<R> {
    fn peek(&mut self, sink: &mut dyn RecordSink) -> Result<Option<u64>, SourceError> {
        self.start(sink);
        loop {
            if let Some(PerfItem::Sample(s)) = &self.pending {
                return Ok(Some(s.time));
            }
            match self.perf.next_item().map_err(container)? {
                None => {
                    let st = self.perf.stats();
                    let at = Origin::byte(self.bytes);
                    sink.skipped_many("perf.data: record too short for its type", at, st.records_malformed);
                    sink.skipped_many(
                        "perf.data: sample out of time order (ordering window full)",
                        at,
                        st.order_window_exceeded,
                    );
                    return Ok(None);
                }
                Some(PerfItem::Lost { cpu, count, offset, .. }) => {
                    self.bytes = self.bytes.max(offset);
                    sink.lost(cpu, Some(count), Origin::byte(offset));
                }
                Some(item @ PerfItem::Sample(_)) => {
                    if let PerfItem::Sample(s) = &item {
                        self.bytes = self.bytes.max(s.offset);
                        // The tracing data arrives with its record in pipe mode.
                        if !self.data_seen {
                            if let Some(blob) = self.perf.tracing_data() {
                                self.data_seen = true;
                                self.data = TracingData::parse(blob).ok();
                            }
                        }
                    }
                    self.pending = Some(item);
                }
            }
        }
    }

    fn pop(&mut self, sink: &mut dyn RecordSink) {
        let Some(PerfItem::Sample(s)) = self.pending.take() else { return };
        let origin = Origin::byte(s.offset);
        let Some(data) = &self.data else {
            sink.skipped("perf.data: sample before (or without) the tracing data", origin);
            return;
        };
        let be = data.big_endian;
        // The record's common_type names its format.
        let id =
            s.raw
                .get(..2)
                .map(|b| if be { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) });
        let Some(format) = id.and_then(|id| data.formats.by_id(u32::from(id))) else {
            sink.unknown_event(b"perf:non-tracepoint");
            return;
        };
        let fields = format.fields_of(&s.raw, be);
        // An entry probe's site is `__probe_ip`, a return probe's `__probe_func`.
        let site = fields.probe_ip().or_else(|| fields.uint("__probe_func"));
        let probe = site.and_then(|ip| data.kallsyms.lookup(ip)).map(|sym| sym.name);
        let fields = fields.with_probe_func(probe);
        let flags = fields.uint("common_flags").unwrap_or(0) as u8;
        let tid = s.tid.or(s.pid).unwrap_or(0);
        let comm = self.perf.comm(tid).map(str::as_bytes).or_else(|| data.cmdlines.comm(tid)).unwrap_or(b"<...>");
        // perf writes an empty kallsyms: frames stay addresses unless it has one.
        let frames: Vec<Vec<u8>> = s
            .callchain
            .iter()
            .map(|ip| {
                let mut f = Vec::new();
                data.kallsyms.format(*ip, &mut f);
                f
            })
            .collect();
        let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        deliver(
            sink,
            &format.name,
            &fields,
            s.time,
            s.cpu.unwrap_or(0),
            tid,
            comm,
            ExecContext::from_common_flags(flags),
            &frames,
            origin,
        );
    }

    fn position(&self) -> Position {
        Position { lines: 0, bytes: self.bytes }
    }
}
