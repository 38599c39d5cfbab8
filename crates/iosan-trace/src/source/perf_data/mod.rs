//! A reader of `perf.data` files (file and pipe mode) for tracepoint samples.
//!
//! `perf record -e iommu:map -e kmem:mm_page_free ...` stores each
//! tracepoint hit as a `PERF_RECORD_SAMPLE` whose `PERF_SAMPLE_RAW` part is
//! the event's ftrace record, laid out by the `format` files that the
//! `HEADER_TRACING_DATA` feature carries (the same block as the start of a
//! trace.dat). This module reads the container: the header and attrs, the
//! feature sections, the records (plain, `PERF_RECORD_COMPRESSED` and
//! `COMPRESSED2` zstd), `PERF_RECORD_LOST`/`LOST_SAMPLES` and `COMM`, and
//! puts samples in time order across CPUs using `FINISHED_ROUND` as perf
//! does. Decoding the raw payloads is the format decoder's job.
//!
//! Why a reader of our own rather than `linux-perf-data` (which reads
//! compressed records and sorts by round too): hostile files. Its
//! decompression grows a buffer as far as one record's frame says and its
//! sorter holds a whole file that has no `FINISHED_ROUND`; here both are
//! bounded ([`Limits`]) and exceeding them is counted or is an error that
//! names the byte offset. The format is small and stable
//! (tools/perf/Documentation/perf.data-file-format.txt).

mod bytes;
mod order;
pub mod sample;

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};

use super::read_full;
use bytes::{Bytes, Endian};
use order::Reorder;
use sample::{parse_sample, parse_sample_id, sample_id_of, Attr};

/// Record types (`PERF_RECORD_*`, user types from 64).
mod rt {
    pub const LOST: u32 = 2;
    pub const COMM: u32 = 3;
    pub const SAMPLE: u32 = 9;
    pub const LOST_SAMPLES: u32 = 13;
    pub const HEADER_ATTR: u32 = 64;
    pub const HEADER_TRACING_DATA: u32 = 66;
    pub const FINISHED_ROUND: u32 = 68;
    pub const AUXTRACE: u32 = 71;
    pub const COMPRESSED: u32 = 81;
    pub const COMPRESSED2: u32 = 83;
}

/// Feature bits of the file header.
mod feat {
    pub const TRACING_DATA: usize = 1;
    pub const EVENT_DESC: usize = 12;
    pub const COMPRESSED: usize = 27;
}

/// `PERFILE2` as the first 8 bytes of a little-endian file.
const MAGIC_LE: &[u8; 8] = b"PERFILE2";
/// ... and of a big-endian one.
const MAGIC_BE: &[u8; 8] = b"2ELIFREP";

/// Whether `prefix` starts like a perf.data file.
#[must_use]
pub fn is_perf_data(prefix: &[u8]) -> bool {
    prefix.starts_with(MAGIC_LE) || prefix.starts_with(MAGIC_BE)
}

/// Bounds on what a file can make the reader hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest feature section read (the tracing data, event names).
    pub max_section: u64,
    /// Most attrs (events) in a file.
    pub max_attrs: usize,
    /// Most decompressed bytes one compressed record may produce.
    pub max_decompressed_per_record: usize,
    /// Most records held back for time ordering; past it the earliest is
    /// emitted early and counted in [`PerfStats::order_window_exceeded`].
    pub max_pending: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_section: 256 << 20, max_attrs: 4096, max_decompressed_per_record: 64 << 20, max_pending: 1 << 20 }
    }
}

/// A fatal problem with the container.
#[derive(Debug, thiserror::Error)]
pub enum PerfDataError {
    /// Reading failed.
    #[error("perf.data: read error at byte {offset}: {source}")]
    Io {
        /// Byte offset.
        offset: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The bytes do not follow the format.
    #[error("perf.data: {what} at byte {offset}")]
    Malformed {
        /// Byte offset.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}

fn malformed(offset: u64, what: impl Into<String>) -> PerfDataError {
    PerfDataError::Malformed { offset, what: what.into() }
}

/// Counts of what was read and what was not used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerfStats {
    /// Records read, by `PERF_RECORD_*` type.
    pub records_by_type: std::collections::BTreeMap<u32, u64>,
    /// Samples without a raw payload or of an unknown attr.
    pub samples_unusable: u64,
    /// Records too short for their type.
    pub records_malformed: u64,
    /// Compressed records read.
    pub compressed_records: u64,
    /// Records emitted out of order because the ordering window was full.
    pub order_window_exceeded: u64,
    /// Samples whose time went backwards after ordering.
    pub time_went_backwards: u64,
}

/// One sample, owned (it waited in the ordering window).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerfSample {
    /// Time, ns (0 when the attr has no `PERF_SAMPLE_TIME`).
    pub time: u64,
    /// CPU, when sampled.
    pub cpu: Option<u32>,
    /// Process id.
    pub pid: Option<u32>,
    /// Thread id (the task of ftrace's `common_pid`).
    pub tid: Option<u32>,
    /// Index of the event's attr.
    pub attr: usize,
    /// The tracepoint record (`PERF_SAMPLE_RAW`).
    pub raw: Vec<u8>,
    /// Kernel and user instruction pointers, innermost first, with perf's
    /// context markers removed.
    pub callchain: Vec<u64>,
    /// Byte offset of the record in the file (of its compressed record,
    /// when compressed).
    pub offset: u64,
}

/// What the reader yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PerfItem {
    /// A sample.
    Sample(PerfSample),
    /// The kernel dropped `count` records (`PERF_RECORD_LOST`) or samples
    /// (`LOST_SAMPLES`) on `cpu`.
    Lost {
        /// CPU, when the record says.
        cpu: Option<u32>,
        /// How many.
        count: u64,
        /// Time of the record, ns.
        time: u64,
        /// Byte offset.
        offset: u64,
    },
}

impl PerfItem {
    fn time(&self) -> u64 {
        match self {
            PerfItem::Sample(s) => s.time,
            PerfItem::Lost { time, .. } => *time,
        }
    }
}

/// A perf.data file being read.
pub struct PerfData<R> {
    reader: R,
    endian: Endian,
    limits: Limits,
    /// File mode: bytes of the data section not read yet.
    data_left: Option<u64>,
    offset: u64,
    attrs: Vec<Attr>,
    id_to_attr: HashMap<u64, usize>,
    tracing_data: Option<Vec<u8>>,
    comms: HashMap<u32, String>,
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
    /// Decompressed bytes not yet parsed into records, and where they came from.
    pending: Vec<u8>,
    pending_offset: u64,
    order: Reorder<PerfItem>,
    stats: PerfStats,
    last_time: u64,
    done: bool,
}

impl<R: Read> PerfData<R> {
    /// Reads a perf.data stream written in pipe mode (`perf record -o -`).
    ///
    /// # Errors
    /// [`PerfDataError`] when the header cannot be read.
    pub fn open_pipe(mut reader: R, limits: Limits) -> Result<Self, PerfDataError> {
        let mut h = [0u8; 16];
        reader.read_exact(&mut h).map_err(|source| PerfDataError::Io { offset: 0, source })?;
        let endian = endian_of(&h)?;
        let size = Bytes::new(h.get(8..).unwrap_or(&[]), endian).u64().unwrap_or(0);
        if size != 16 {
            return Err(malformed(8, format!("pipe header size {size}, expected 16 (a file-mode perf.data read as a stream? pass its path instead)")));
        }
        Ok(Self::new(reader, endian, limits, None, 16))
    }

    fn new(reader: R, endian: Endian, limits: Limits, data_left: Option<u64>, offset: u64) -> Self {
        Self {
            reader,
            endian,
            limits,
            data_left,
            offset,
            attrs: Vec::new(),
            id_to_attr: HashMap::new(),
            tracing_data: None,
            comms: HashMap::new(),
            zstd: None,
            pending: Vec::new(),
            pending_offset: 0,
            order: Reorder::new(limits.max_pending),
            stats: PerfStats::default(),
            last_time: 0,
            done: false,
        }
    }

    /// The `HEADER_TRACING_DATA` block (format files etc.), once read: in
    /// file mode from the start, in pipe mode after its record.
    #[must_use]
    pub fn tracing_data(&self) -> Option<&[u8]> {
        self.tracing_data.as_deref()
    }

    /// The events of the file.
    #[must_use]
    pub fn attrs(&self) -> &[Attr] {
        &self.attrs
    }

    /// The command name of thread `tid`, from `COMM` records.
    #[must_use]
    pub fn comm(&self, tid: u32) -> Option<&str> {
        self.comms.get(&tid).map(String::as_str)
    }

    /// What was read so far.
    #[must_use]
    pub fn stats(&self) -> &PerfStats {
        &self.stats
    }

    /// The next sample or lost marker in time order, or `None` at the end.
    ///
    /// # Errors
    /// [`PerfDataError`] when the container is unreadable from here on.
    pub fn next_item(&mut self) -> Result<Option<PerfItem>, PerfDataError> {
        loop {
            if let Some(item) = self.order.pop_ready() {
                let t = item.time();
                if t < self.last_time {
                    self.stats.time_went_backwards += 1;
                }
                self.last_time = self.last_time.max(t);
                return Ok(Some(item));
            }
            if self.done {
                return Ok(None);
            }
            if !self.step()? {
                self.done = true;
                self.order.flush_all();
            }
        }
    }

    /// Reads and handles one record; false at the end of the data.
    fn step(&mut self) -> Result<bool, PerfDataError> {
        // Records inside decompressed data come first.
        if let Some((ty, body, offset)) = self.take_pending_record()? {
            self.handle(ty, &body, offset, true)?;
            return Ok(true);
        }
        if self.data_left == Some(0) {
            return Ok(false);
        }
        let offset = self.offset;
        let mut h = [0u8; 8];
        match read_full(&mut self.reader, &mut h) {
            Ok(0) => return Ok(false),
            Ok(8) => {}
            Ok(_) => return Err(malformed(offset, "record header cut short (truncated file)")),
            Err(source) => return Err(PerfDataError::Io { offset, source }),
        }
        let mut b = Bytes::new(&h, self.endian);
        let ty = b.u32().unwrap_or(0);
        let _misc = b.u16();
        let size = u64::from(b.u16().unwrap_or(0));
        if size < 8 {
            return Err(malformed(offset, format!("record of type {ty} with size {size} (less than its header)")));
        }
        if let Some(left) = self.data_left {
            if size > left {
                return Err(malformed(offset, format!("record of {size} bytes runs past the data section")));
            }
            self.data_left = Some(left - size);
        }
        let mut body = vec![0u8; usize::try_from(size - 8).unwrap_or(0)];
        self.read_exact_at(&mut body, offset + 8)?;
        self.offset = offset + size;
        self.handle(ty, &body, offset, false)?;
        Ok(true)
    }

    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), PerfDataError> {
        match read_full(&mut self.reader, buf) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(_) => Err(malformed(offset, "record cut short (truncated file)")),
            Err(source) => Err(PerfDataError::Io { offset, source }),
        }
    }

    fn handle(&mut self, ty: u32, body: &[u8], offset: u64, inner: bool) -> Result<(), PerfDataError> {
        *self.stats.records_by_type.entry(ty).or_insert(0) += 1;
        let b = Bytes::new(body, self.endian);
        match ty {
            rt::SAMPLE => self.on_sample(b, offset),
            rt::LOST | rt::LOST_SAMPLES => {
                let mut c = b;
                let count = if ty == rt::LOST { c.u64().and_then(|_| c.u64()) } else { c.u64() };
                let Some(count) = count else {
                    self.stats.records_malformed += 1;
                    return Ok(());
                };
                let trailer =
                    self.attr_for(b, false).and_then(|a| self.attrs.get(a)).and_then(|a| parse_sample_id(a, b));
                let time = trailer.and_then(|s| s.time).unwrap_or(self.order.latest());
                self.order.push(time, PerfItem::Lost { cpu: trailer.and_then(|s| s.cpu), count, time, offset });
            }
            rt::COMM => {
                let mut c = b;
                if let (Some(_pid), Some(tid)) = (c.u32(), c.u32()) {
                    let rest = c.take(c.remaining()).unwrap_or(&[]);
                    let name = rest.split(|&x| x == 0).next().unwrap_or(&[]);
                    if self.comms.len() < (1 << 20) || self.comms.contains_key(&tid) {
                        self.comms.insert(tid, String::from_utf8_lossy(name.get(..64).unwrap_or(name)).into_owned());
                    }
                } else {
                    self.stats.records_malformed += 1;
                }
            }
            rt::FINISHED_ROUND => self.order.finish_round(),
            rt::HEADER_ATTR => self.on_header_attr(b, offset)?,
            rt::HEADER_TRACING_DATA if !inner => {
                let size = Bytes::new(body, self.endian).u32().unwrap_or(0);
                if u64::from(size) > self.limits.max_section {
                    return Err(malformed(offset, format!("tracing data of {size} bytes exceeds the limit")));
                }
                let mut data = vec![0u8; size as usize];
                self.read_exact_at(&mut data, self.offset)?;
                self.offset += u64::from(size);
                if let Some(left) = self.data_left {
                    self.data_left = Some(left.saturating_sub(u64::from(size)));
                }
                self.tracing_data = Some(data);
            }
            rt::AUXTRACE if !inner => {
                // Its payload follows the record, like the tracing data's.
                let size = Bytes::new(body, self.endian).u64().unwrap_or(0);
                let mut left = size;
                let mut buf = [0u8; 8192];
                while left > 0 {
                    let n = usize::try_from(left.min(8192)).unwrap_or(8192);
                    self.read_exact_at(buf.get_mut(..n).unwrap_or(&mut []), self.offset)?;
                    self.offset += n as u64;
                    left -= n as u64;
                }
                if let Some(l) = self.data_left {
                    self.data_left = Some(l.saturating_sub(size));
                }
            }
            rt::COMPRESSED | rt::COMPRESSED2 if !inner => {
                let data = if ty == rt::COMPRESSED2 {
                    let mut c = b;
                    let n = c.u64().and_then(|n| usize::try_from(n).ok());
                    n.and_then(|n| c.take(n))
                        .ok_or_else(|| malformed(offset, "COMPRESSED2 record with a size past its end"))?
                } else {
                    body
                };
                self.decompress(data, offset)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn attr_for(&self, b: Bytes<'_>, is_sample: bool) -> Option<usize> {
        if self.attrs.len() == 1 {
            return Some(0);
        }
        let first = self.attrs.first()?;
        let id = sample_id_of(first, b, is_sample)?;
        self.id_to_attr.get(&id).copied()
    }

    fn on_sample(&mut self, b: Bytes<'_>, offset: u64) {
        let Some(ai) = self.attr_for(b, true) else {
            self.stats.samples_unusable += 1;
            return;
        };
        let Some(attr) = self.attrs.get(ai) else { return };
        let Some(s) = parse_sample(attr, b) else {
            self.stats.records_malformed += 1;
            return;
        };
        let Some(raw) = s.raw else {
            self.stats.samples_unusable += 1;
            return;
        };
        let callchain = Bytes::new(s.callchain, self.endian);
        let mut c = callchain;
        let mut ips = Vec::new();
        while let Some(ip) = c.u64() {
            // PERF_CONTEXT_* markers are the top 4095 values.
            if ip < u64::MAX - 4095 && ips.len() < 128 {
                ips.push(ip);
            }
        }
        let time = s.time.unwrap_or(0);
        let item = PerfSample {
            time,
            cpu: s.cpu,
            pid: s.pid,
            tid: s.tid,
            attr: ai,
            raw: raw.to_vec(),
            callchain: ips,
            offset,
        };
        if self.order.push(time, PerfItem::Sample(item)) {
            self.stats.order_window_exceeded += 1;
        }
    }

    fn on_header_attr(&mut self, b: Bytes<'_>, offset: u64) -> Result<(), PerfDataError> {
        let mut c = b;
        let mut probe = b;
        let _ = probe.u32();
        let attr_size = probe.u32().unwrap_or(0) as usize;
        let Some(attr_bytes) = c.take(attr_size) else {
            return Err(malformed(offset, "HEADER_ATTR record shorter than its attr"));
        };
        let Some(mut attr) = Attr::parse(&mut Bytes::new(attr_bytes, self.endian)) else {
            return Err(malformed(offset, "HEADER_ATTR with a short perf_event_attr"));
        };
        while let Some(id) = c.u64() {
            attr.ids.push(id);
        }
        self.add_attr(attr, offset)
    }

    fn add_attr(&mut self, attr: Attr, offset: u64) -> Result<(), PerfDataError> {
        if self.attrs.len() >= self.limits.max_attrs {
            return Err(malformed(offset, format!("more than {} events", self.limits.max_attrs)));
        }
        let i = self.attrs.len();
        for &id in &attr.ids {
            self.id_to_attr.insert(id, i);
        }
        self.attrs.push(attr);
        Ok(())
    }

    fn decompress(&mut self, data: &[u8], offset: u64) -> Result<(), PerfDataError> {
        use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
        self.stats.compressed_records += 1;
        if self.zstd.is_none() {
            self.zstd = Some(Decoder::new().map_err(|source| PerfDataError::Io { offset, source })?);
        }
        let Some(dec) = self.zstd.as_mut() else { return Ok(()) };
        let before = self.pending.len();
        let mut input = InBuffer::around(data);
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let mut out = OutBuffer::around(&mut chunk[..]);
            let hint = dec
                .run(&mut input, &mut out)
                .map_err(|e| malformed(offset, format!("compressed record does not decompress: {e}")))?;
            let produced = out.pos();
            self.pending.extend_from_slice(chunk.get(..produced).unwrap_or(&[]));
            if self.pending.len() - before > self.limits.max_decompressed_per_record {
                return Err(malformed(
                    offset,
                    format!(
                        "compressed record decompresses past {} bytes (a compression bomb?)",
                        self.limits.max_decompressed_per_record
                    ),
                ));
            }
            if input.pos() >= data.len() && produced < chunk.len() {
                break;
            }
            if produced == 0 && hint == 0 && input.pos() >= data.len() {
                break;
            }
        }
        self.pending_offset = offset;
        Ok(())
    }

    /// The next whole record of the decompressed bytes.
    fn take_pending_record(&mut self) -> Result<Option<(u32, Vec<u8>, u64)>, PerfDataError> {
        if self.pending.len() < 8 {
            return Ok(None);
        }
        let mut b = Bytes::new(&self.pending, self.endian);
        let ty = b.u32().unwrap_or(0);
        let _ = b.u16();
        let size = usize::from(b.u16().unwrap_or(0));
        if size < 8 {
            return Err(malformed(self.pending_offset, "record inside compressed data with a size below its header"));
        }
        if self.pending.len() < size {
            return Ok(None); // continues in the next compressed record
        }
        let body = self.pending.get(8..size).unwrap_or(&[]).to_vec();
        self.pending.drain(..size);
        Ok(Some((ty, body, self.pending_offset)))
    }
}

impl<R: Read + Seek> PerfData<R> {
    /// Reads a perf.data file written in file mode (the default of `perf
    /// record`): header, attrs and feature sections first, then the data.
    ///
    /// # Errors
    /// [`PerfDataError`] when the header, the attrs or a feature section
    /// cannot be read or lie about their sizes.
    pub fn open_file(mut reader: R, limits: Limits) -> Result<Self, PerfDataError> {
        let io = |offset: u64| move |source| PerfDataError::Io { offset, source };
        let file_len = reader.seek(SeekFrom::End(0)).map_err(io(0))?;
        reader.seek(SeekFrom::Start(0)).map_err(io(0))?;
        let mut h = [0u8; 104];
        if read_full(&mut reader, &mut h).map_err(io(0))? < 104 {
            return Err(malformed(0, "file header cut short"));
        }
        let endian = endian_of(&h)?;
        let mut b = Bytes::new(&h, endian);
        b.skip(8);
        let header_size = b.u64().unwrap_or(0);
        if header_size == 16 {
            reader.seek(SeekFrom::Start(16)).map_err(io(16))?;
            return Ok(Self::new(reader, endian, limits, None, 16));
        }
        let attr_size = b.u64().unwrap_or(0);
        let section = |b: &mut Bytes<'_>| Some((b.u64()?, b.u64()?));
        let attrs = section(&mut b).unwrap_or((0, 0));
        let data = section(&mut b).unwrap_or((0, 0));
        let _event_types = section(&mut b);
        let mut features = [0u64; 4];
        for f in &mut features {
            *f = b.u64().unwrap_or(0);
        }
        let within = |(off, size): (u64, u64)| off.checked_add(size).is_some_and(|end| end <= file_len);
        if !within(attrs) || !within(data) {
            return Err(malformed(24, format!("attrs or data section outside the {file_len}-byte file")));
        }
        if !(64..=4096).contains(&attr_size) {
            return Err(malformed(16, format!("attr entry size {attr_size}")));
        }

        // Feature sections: a table of {offset, size} after the data, one per set bit.
        let mut feature_sections = Vec::new();
        let table_at = data.0 + data.1;
        let set: Vec<usize> =
            (0..256).filter(|i| features.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)).collect();
        if !set.is_empty() {
            let mut table = vec![0u8; set.len() * 16];
            reader.seek(SeekFrom::Start(table_at)).map_err(io(table_at))?;
            if read_full(&mut reader, &mut table).map_err(io(table_at))? == table.len() {
                let mut t = Bytes::new(&table, endian);
                for &bit in &set {
                    if let Some(sec) = section(&mut t) {
                        feature_sections.push((bit, sec));
                    }
                }
            }
        }
        let read_section = |reader: &mut R, (off, size): (u64, u64)| -> Result<Vec<u8>, PerfDataError> {
            if size > limits.max_section || !within((off, size)) {
                return Err(malformed(off, format!("feature section of {size} bytes outside the file or too large")));
            }
            reader.seek(SeekFrom::Start(off)).map_err(io(off))?;
            let mut v = vec![0u8; usize::try_from(size).unwrap_or(0)];
            reader.read_exact(&mut v).map_err(io(off))?;
            Ok(v)
        };
        let mut tracing_data = None;
        let mut names: Vec<String> = Vec::new();
        for &(bit, sec) in &feature_sections {
            match bit {
                feat::TRACING_DATA => tracing_data = Some(read_section(&mut reader, sec)?),
                feat::EVENT_DESC => names = parse_event_desc(&read_section(&mut reader, sec)?, endian),
                feat::COMPRESSED => {}
                _ => {}
            }
        }

        // Attrs: perf_event_attr then an ids section.
        let n = attrs.1 / attr_size;
        if n as usize > limits.max_attrs {
            return Err(malformed(attrs.0, format!("{n} events (more than {})", limits.max_attrs)));
        }
        let raw_attrs = read_section(&mut reader, attrs)?;
        let mut this = Self::new(reader, endian, limits, Some(data.1), data.0);
        for i in 0..n as usize {
            let at = attrs.0 + (i as u64) * attr_size;
            let entry = raw_attrs.get(i * attr_size as usize..(i + 1) * attr_size as usize).unwrap_or(&[]);
            let mut eb = Bytes::new(entry, endian);
            let mut attr = Attr::parse(&mut eb.clone()).ok_or_else(|| malformed(at, "short perf_event_attr"))?;
            eb.skip(attr_size as usize - 16);
            let ids_sec = section(&mut eb).unwrap_or((0, 0));
            if ids_sec.1 > 0 {
                if ids_sec.1 > 8 << 20 {
                    return Err(malformed(at, "ids section too large"));
                }
                let ids = read_section(&mut this.reader, ids_sec)?;
                let mut ib = Bytes::new(&ids, endian);
                while let Some(id) = ib.u64() {
                    attr.ids.push(id);
                }
            }
            attr.name = names.get(i).cloned();
            this.add_attr(attr, at)?;
        }
        this.tracing_data = tracing_data;
        this.reader.seek(SeekFrom::Start(data.0)).map_err(io(data.0))?;
        Ok(this)
    }
}

fn endian_of(h: &[u8]) -> Result<Endian, PerfDataError> {
    if h.starts_with(MAGIC_LE) {
        Ok(Endian::Little)
    } else if h.starts_with(MAGIC_BE) {
        Ok(Endian::Big)
    } else {
        Err(malformed(0, "not a perf.data file (no PERFILE2 magic)"))
    }
}

/// `HEADER_EVENT_DESC`: u32 count, u32 attr size, then per event the attr,
/// u32 id count, a perf string (u32 length + padded bytes) and the ids.
fn parse_event_desc(data: &[u8], endian: Endian) -> Vec<String> {
    let mut b = Bytes::new(data, endian);
    let mut names = Vec::new();
    let (Some(nr), Some(attr_size)) = (b.u32(), b.u32()) else { return names };
    for _ in 0..nr.min(4096) {
        let Some(()) = b.skip(attr_size as usize) else { break };
        let Some(nr_ids) = b.u32() else { break };
        let Some(len) = b.u32() else { break };
        let Some(s) = b.take(len as usize) else { break };
        names.push(String::from_utf8_lossy(s.split(|&c| c == 0).next().unwrap_or(&[])).into_owned());
        if b.skip((nr_ids as usize).saturating_mul(8)).is_none() {
            break;
        }
    }
    names
}

#[cfg(test)]
mod tests;
