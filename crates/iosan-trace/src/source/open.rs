//! Opening a capture of any supported format, detected by its magic bytes:
//! trace.dat (`\x17\x08Dtracing`), perf.data (`PERFILE2`), or text (ftrace
//! text, `trace-cmd report` text), each plain or gzip/xz/zstd-compressed.
//!
//! trace.dat and file-mode perf.data need to seek. A plain file is read in
//! place; a compressed one, or one on standard input, is first read into
//! memory, up to [`MAX_BUFFERED_BINARY`] (an error beyond names the limit).
//! Pipe-mode perf.data (`perf record -o -`) streams.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read, Seek};
use std::path::Path;

use super::binary::{PerfDataSource, TraceDatSource};
use super::parallel::ParallelTextSource;
use super::parallel_dat::ParallelTraceDatSource;
use super::perf_data::Limits as PerfLimits;
use super::text::TextSource;
use super::{read_ahead, read_full, FailOnce, Source, SourceError};
use crate::input::{decode_reader_with, InputError, InputOptions};
use crate::pagesize::{scan_source, scan_text, Samples};
use crate::parse::reader::DEFAULT_MAX_LINE_LEN;

/// Most bytes of a binary capture held in memory when it cannot be read
/// in place (compressed, or from a pipe).
pub const MAX_BUFFERED_BINARY: u64 = 4 << 30;

/// What an input turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Text; `looks_binary` when its first bytes are not text (a NUL, many
    /// control bytes): a file iosan does not understand.
    Text {
        /// The first bytes do not look like text.
        looks_binary: bool,
    },
    /// A trace.dat.
    TraceDat,
    /// A perf.data (file or pipe mode).
    PerfData,
}

/// An opened capture.
pub struct Capture {
    /// Its records.
    pub source: Box<dyn Source + Send>,
    /// What it is.
    pub format: CaptureFormat,
    /// The CPU page size its first events show ([`crate::pagesize`]):
    /// the first 4 MiB of text (a file, or a pipe until it stalls for
    /// [`PIPE_STALL`]; not [`open_reader`]'s live streams), or the first
    /// records of a perf.data (a trace.dat's header says it).
    pub events_page_size: Option<iosan_core::PageSize>,
    /// What that decision rests on, for pooling parts of one capture.
    pub page_samples: Samples,
}

/// Errors opening a capture.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be opened or decompressed.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A binary capture's headers are unreadable.
    #[error("{name}: {source}")]
    Source {
        /// Input name.
        name: String,
        /// What is wrong.
        #[source]
        source: SourceError,
    },
    /// Reading failed.
    #[error("{name}: {source}")]
    Io {
        /// Input name.
        name: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn sniff(prefix: &[u8]) -> Option<CaptureFormat> {
    if super::tracedat::is_trace_dat(prefix) {
        Some(CaptureFormat::TraceDat)
    } else if super::perf_data::is_perf_data(prefix) {
        Some(CaptureFormat::PerfData)
    } else {
        None
    }
}

/// Whether the first bytes of a text input look like binary data.
#[must_use]
pub fn looks_binary(prefix: &[u8]) -> bool {
    let sample = prefix.get(..prefix.len().min(4096)).unwrap_or(prefix);
    if sample.contains(&0) {
        return true;
    }
    let control = sample.iter().filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t')).count();
    control * 20 > sample.len()
}

/// How to open a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Longest text line accepted; longer lines are skipped and counted
    /// (0: [`DEFAULT_MAX_LINE_LEN`]).
    pub max_line_len: usize,
    /// Threads for a text capture read from a file: with 2 or more,
    /// `threads - 1` workers tokenize and decode its lines while the calling
    /// thread pairs stacks and replays ([`ParallelTextSource`]); the records
    /// are the same as with 1. Pipes and binary captures use one thread.
    pub threads: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { max_line_len: DEFAULT_MAX_LINE_LEN, threads: 1 }
    }
}

/// Opens `path` (`-` for standard input), on one thread.
///
/// # Errors
/// [`OpenError`] when the input cannot be opened, decompressed or, for a
/// binary capture, its headers read.
pub fn open_capture(path: &Path, max_line_len: usize) -> Result<Capture, OpenError> {
    open_capture_with(path, &OpenOptions { max_line_len, threads: 1 })
}

/// Opens `path` (`-` for standard input) with `opts`.
///
/// # Errors
/// As [`open_capture`].
pub fn open_capture_with(path: &Path, opts: &OpenOptions) -> Result<Capture, OpenError> {
    let max_line_len = opts.max_line_len;
    let name = if path.as_os_str() == "-" { "standard input".to_string() } else { path.display().to_string() };
    let io_err = |source| OpenError::Io { name: name.clone(), source };
    let src_err = |source| OpenError::Source { name: name.clone(), source };
    // A plain binary file is read in place.
    if path.as_os_str() != "-" {
        let mut f = File::open(path).map_err(|source| InputError::Open { path: path.to_path_buf(), source })?;
        let mut head = [0u8; 16];
        let n = read_full(&mut f, &mut head).map_err(io_err)?;
        if let Some(fmt) = sniff(head.get(..n).unwrap_or(&[])) {
            f.rewind().map_err(io_err)?;
            let mut c = binary(fmt, BufReader::with_capacity(256 << 10, f), &head, opts.threads).map_err(src_err)?;
            // perf.data does not say its page size: its first records, read
            // by a second reader, show it. A trace.dat header does, but its
            // page is the ring buffer's, which a changed sub-buffer size makes
            // differ from PAGE_SIZE: the events are looked at too, so that a
            // disagreement is reported.
            if let Ok(second) = File::open(path) {
                c.set_samples(binary_scan(fmt, BufReader::with_capacity(256 << 10, second), &head));
            }
            return Ok(c);
        }
    }
    let input = crate::input::open_input_with(path, &InputOptions::default())?;
    // A pipe may stall while a test runs: never hold a decided event for it
    // (it is still read ahead, up to 4 MiB, for its page size).
    let pipe = path.as_os_str() == "-" || is_fifo(path);
    from_reader(input.reader, &name, max_line_len, Reading::Pipe { live: pipe }, opts.threads)
}

/// Opens an already decompressed stream (standard input, an embedded
/// capture): binary captures are read into memory first.
///
/// # Errors
/// As [`open_capture`].
pub fn open_reader(reader: impl Read + Send + 'static, name: &str, max_line_len: usize) -> Result<Capture, OpenError> {
    let input = decode_reader_with(reader, &InputOptions::default())?;
    from_reader(input.reader, name, max_line_len, Reading::Live, 1)
}

/// How an input may be read ahead.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Up to [`crate::pagesize::LOOKAHEAD_BYTES`], for the page size; a
    /// `live` one (a pipe) never holds a decided event.
    Pipe { live: bool },
    /// Only its magic bytes: a live stream must not wait for more.
    Live,
}

impl Capture {
    fn set_samples(&mut self, samples: Samples) {
        self.events_page_size = samples.evidence().decided();
        self.page_samples = samples;
    }
}

/// Bytes shared by the reader of a buffered binary capture and the one
/// that scans its first records.
struct Shared(std::sync::Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(unix)]
fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_char_device())
}

#[cfg(not(unix))]
fn is_fifo(_: &Path) -> bool {
    false
}

fn from_reader(
    reader: Box<dyn BufRead + Send>,
    name: &str,
    max_line_len: usize,
    reading: Reading,
    threads: usize,
) -> Result<Capture, OpenError> {
    let io_err = |source| OpenError::Io { name: name.to_string(), source };
    // One read of a chained stream may return only a few bytes: read ahead
    // until the magic bytes are in, then put them back in front. A live
    // stream is read no further (it must not wait); a file or a pipe is read
    // ahead by up to 4 MiB (bounded), whose events tell its page size. A
    // pipe's look-ahead also ends when it stalls ([`PIPE_STALL`]), so that
    // findings on a live pipe still come while it runs.
    let (want, live) = match reading {
        Reading::Live => (16, true),
        Reading::Pipe { live } => (crate::pagesize::LOOKAHEAD_BYTES, live),
    };
    let mut ahead = if reading == (Reading::Pipe { live: true }) {
        Ahead::Pipe(PipeAhead::spawn(reader))
    } else {
        Ahead::Plain(reader)
    };
    let (mut prefix, mut failed, mut full) = ahead.read(want);
    if prefix.is_empty() {
        if let Some(e) = failed.take() {
            return Err(io_err(e));
        }
    }
    let head = prefix.get(..prefix.len().min(16)).unwrap_or(&[]).to_vec();
    let format = sniff(&head);
    let looks_binary = looks_binary(&prefix);
    let samples = match (reading, format, &failed) {
        (Reading::Pipe { .. }, None, None) => scan_text(&prefix),
        // A pipe-mode perf.data streams: its first records are in the
        // prefix, read further (to PIPE_LOOKAHEAD_BYTES) while they decide
        // nothing.
        (Reading::Pipe { .. }, Some(CaptureFormat::PerfData), None) if is_pipe_mode(&head) => {
            let little = head.starts_with(b"PERFILE2");
            loop {
                let samples = scan_pipe_perf(&prefix, little);
                if samples.evidence().decided().is_some() || !full || prefix.len() >= PIPE_LOOKAHEAD_BYTES {
                    break samples;
                }
                let (more, err, more_full) = ahead.read(crate::pagesize::LOOKAHEAD_BYTES);
                prefix.extend_from_slice(&more);
                full = more_full;
                if err.is_some() {
                    failed = err;
                    break scan_pipe_perf(&prefix, little);
                }
            }
        }
        _ => Samples::default(),
    };
    let events_page_size = samples.evidence().decided();
    // A read error of the look-ahead surfaces where the reading reaches it.
    // A pipe's chunks are read in place; anything else through one buffer.
    let piped = matches!(ahead, Ahead::Pipe(_));
    let chained = Cursor::new(prefix).chain(FailOnce(failed)).chain(ahead.into_reader());
    let mut reader: Box<dyn BufRead + Send> =
        if piped { Box::new(chained) } else { Box::new(BufReader::with_capacity(256 << 10, chained)) };
    match format {
        Some(CaptureFormat::PerfData) if is_pipe_mode(&head) => {
            let source = PerfDataSource::open_pipe(reader)
                .map_err(|source| OpenError::Source { name: name.to_string(), source })?;
            Ok(Capture {
                source: Box::new(source),
                format: CaptureFormat::PerfData,
                events_page_size,
                page_samples: samples,
            })
        }
        Some(fmt) => {
            let mut all = Vec::new();
            let n = reader.by_ref().take(MAX_BUFFERED_BINARY + 1).read_to_end(&mut all).map_err(io_err)?;
            if n as u64 > MAX_BUFFERED_BINARY {
                return Err(io_err(io::Error::other(format!(
                    "a compressed or piped binary capture is read into memory, and this one is larger than {} GiB: \
                     decompress it to a file and pass its path",
                    MAX_BUFFERED_BINARY >> 30
                ))));
            }
            let all = Shared(std::sync::Arc::new(all));
            let scan = Shared(all.0.clone());
            let mut c = binary(fmt, Cursor::new(all), &head, 1)
                .map_err(|source| OpenError::Source { name: name.to_string(), source })?;
            if reading != Reading::Live {
                c.set_samples(binary_scan(fmt, Cursor::new(scan), &head));
            }
            Ok(c)
        }
        None => {
            let max = if max_line_len == 0 { DEFAULT_MAX_LINE_LEN } else { max_line_len };
            let source: Box<dyn Source + Send> = if live {
                Box::new(TextSource::new(reader, max).live())
            } else if threads > 1 {
                Box::new(ParallelTextSource::new(reader, max, threads - 1))
            } else {
                Box::new(TextSource::new(reader, max))
            };
            Ok(Capture {
                source,
                format: CaptureFormat::Text { looks_binary },
                events_page_size,
                page_samples: samples,
            })
        }
    }
}

/// How long a pipe may give nothing before its look-ahead ends (a live
/// pipe then streams at once; a busy one fills the look-ahead first).
pub const PIPE_STALL: std::time::Duration = std::time::Duration::from_millis(500);

/// Chunks a pipe's reader thread holds at most before they are taken.
const PIPE_CHUNKS: usize = 16;
/// Bytes a pipe's reader thread reads at a time.
const PIPE_CHUNK_BYTES: usize = 256 << 10;

/// An input being read ahead.
enum Ahead {
    /// A file, or a stream that is not a pipe: read ahead in place.
    Plain(Box<dyn BufRead + Send>),
    /// A pipe, read by a thread of its own.
    Pipe(PipeAhead),
}

impl Ahead {
    /// Up to `want` bytes more (a pipe's: up to a chunk more), a read error
    /// met on the way, and whether `want` was reached (more may follow).
    fn read(&mut self, want: usize) -> (Vec<u8>, Option<io::Error>, bool) {
        match self {
            Self::Plain(r) => {
                let (b, e) = read_ahead(r, want);
                let full = b.len() >= want;
                (b, e, full)
            }
            Self::Pipe(p) => p.read_ahead(want),
        }
    }

    fn into_reader(self) -> Box<dyn BufRead + Send> {
        match self {
            Self::Plain(r) => r,
            Self::Pipe(p) => Box::new(p),
        }
    }
}

/// A pipe read by a thread of its own, so that a look-ahead can end when
/// the pipe stalls instead of waiting on it. The thread holds at most
/// [`PIPE_CHUNKS`] chunks; it ends at the end of the input, at a read
/// error, or when the capture is dropped.
struct PipeAhead {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Cursor<Vec<u8>>,
}

impl PipeAhead {
    fn spawn(mut reader: Box<dyn BufRead + Send>) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(PIPE_CHUNKS);
        let spawned = std::thread::Builder::new().name("iosan-pipe".into()).spawn(move || {
            // One buffer read into, and a chunk of what each read gave: a pipe
            // read gives at most its 64 KiB buffer, and zeroing a fresh
            // 256 KiB buffer for each cost more than the copy.
            let mut scratch = vec![0u8; PIPE_CHUNK_BYTES];
            loop {
                match reader.read(&mut scratch) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send(Ok(scratch.get(..n).unwrap_or_default().to_vec())).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        let rx = match spawned {
            Ok(_) => rx,
            // No thread: the error is the input's first read.
            Err(e) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                let _ = tx.send(Err(e));
                rx
            }
        };
        Self { rx, chunk: Cursor::new(Vec::new()) }
    }

    /// Chunks until `want` bytes, the end, an error, or a stall of [`PIPE_STALL`].
    fn read_ahead(&mut self, want: usize) -> (Vec<u8>, Option<io::Error>, bool) {
        let mut out = Vec::new();
        // What a previous read left of its chunk goes first.
        let _ = self.chunk.read_to_end(&mut out);
        while out.len() < want {
            match self.rx.recv_timeout(PIPE_STALL) {
                Ok(Ok(b)) => out.extend_from_slice(&b),
                Ok(Err(e)) => return (out, Some(e), false),
                Err(_) => return (out, None, false),
            }
        }
        (out, None, true)
    }
}

impl Read for PipeAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::input::read_from_buffer(self, buf)
    }
}

/// The chunks are the buffer: a line reader reads them in place.
impl BufRead for PipeAhead {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.chunk.position() >= self.chunk.get_ref().len() as u64 {
            match self.rx.recv() {
                Ok(Ok(b)) => self.chunk = Cursor::new(b),
                Ok(Err(e)) => return Err(e),
                // The thread ended: the end of the input.
                Err(_) => return Ok(&[]),
            }
        }
        self.chunk.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.chunk.consume(amt);
    }
}

/// Most bytes of a pipe-mode perf.data read ahead for its page size.
const PIPE_LOOKAHEAD_BYTES: usize = 32 << 20;

/// The samples of the whole records in a prefix of a pipe-mode perf.data.
fn scan_pipe_perf(prefix: &[u8], little: bool) -> Samples {
    // Cut at a record boundary: it then ends cleanly, and the records its
    // time-ordering holds back for a round come out.
    let cut = pipe_records_end(prefix, little);
    let head = prefix.get(..16).unwrap_or_default().to_vec();
    perf_scan(Cursor::new(prefix.get(..cut).unwrap_or_default().to_vec()), &head)
}

/// The page-size samples of a perf.data's first records, read by a reader
/// of its own. Their order does not matter here, so it holds few back for
/// time ordering: a file written in long rounds (`perf record -m 64M`)
/// would otherwise be decoded nearly whole before its first record.
/// The page-size samples of a binary capture's first records, read by a
/// second reader of its bytes (`head`: its first bytes).
fn binary_scan<R: Read + Seek + Send + 'static>(fmt: CaptureFormat, reader: R, head: &[u8]) -> Samples {
    match fmt {
        CaptureFormat::PerfData => perf_scan(reader, head),
        _ => TraceDatSource::open(reader).map_or_else(|_| Samples::default(), |mut s| scan_source(&mut s)),
    }
}

fn perf_scan<R: Read + Seek + Send + 'static>(reader: R, head: &[u8]) -> Samples {
    let limits = PerfLimits { max_pending: crate::pagesize::MIN_LOOKAHEAD_RECORDS, ..PerfLimits::default() };
    let source = if is_pipe_mode(head) {
        PerfDataSource::open_pipe_with(reader, limits)
    } else {
        PerfDataSource::open_file_with(reader, limits)
    };
    source.map_or_else(|_| Samples::default(), |mut s| scan_source(&mut s))
}

/// The end of the last whole record in a prefix of a pipe-mode perf.data
/// (records after the 16-byte header: `u32 type, u16 misc, u16 size`;
/// tracing data (66) and auxtrace (71) payloads follow their record).
fn pipe_records_end(prefix: &[u8], little: bool) -> usize {
    let num = |at: usize, n: usize| -> Option<u64> {
        let b = prefix.get(at..at.checked_add(n)?)?;
        let v = b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x));
        Some(if little { v } else { b.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)) })
    };
    let mut at = 16usize;
    while let (Some(kind), Some(size)) = (num(at, 4), num(at + 6, 2)) {
        if size < 8 {
            break;
        }
        let payload = match kind {
            66 => num(at + 8, 4),
            71 => num(at + 8, 8),
            _ => Some(0),
        };
        let next = payload.and_then(|p| (at as u64).checked_add(size)?.checked_add(p));
        match next.and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n <= prefix.len() => at = n,
            _ => break,
        }
    }
    at.min(prefix.len())
}

/// A pipe-mode perf.data has a 16-byte header (its size field says 16).
fn is_pipe_mode(head: &[u8]) -> bool {
    let size = head.get(8..16).map(|b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        if head.starts_with(b"PERFILE2") {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    });
    size == Some(16)
}

fn binary<R: io::Read + io::Seek + Send + 'static>(
    fmt: CaptureFormat,
    reader: R,
    head: &[u8],
    threads: usize,
) -> Result<Capture, SourceError> {
    let source: Box<dyn Source + Send> = match fmt {
        CaptureFormat::TraceDat if threads > 1 => {
            Box::new(ParallelTraceDatSource::start(TraceDatSource::open(reader)?)?)
        }
        CaptureFormat::TraceDat => Box::new(TraceDatSource::open(reader)?),
        _ if is_pipe_mode(head) => Box::new(PerfDataSource::open_pipe(reader)?),
        _ => Box::new(PerfDataSource::open_file(reader)?),
    };
    Ok(Capture { source, format: fmt, events_page_size: None, page_samples: Samples::default() })
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Read};
    use std::time::{Duration, Instant};

    use super::{pipe_records_end, PipeAhead, PIPE_STALL};

    /// Gives `first`, then stalls for `pause`, then gives `rest`.
    struct Stalling {
        parts: Vec<Vec<u8>>,
        pause: Duration,
    }

    impl Read for Stalling {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.parts.is_empty() {
                return Ok(0);
            }
            if self.parts.len() == 1 {
                std::thread::sleep(self.pause);
            }
            let p = self.parts.remove(0);
            let n = p.len().min(buf.len());
            buf[..n].copy_from_slice(&p[..n]);
            Ok(n)
        }
    }

    #[test]
    fn a_pipe_look_ahead_ends_when_the_pipe_stalls_and_loses_nothing() {
        let r = Stalling { parts: vec![b"head ".to_vec(), b"tail".to_vec()], pause: PIPE_STALL * 4 };
        let mut p = PipeAhead::spawn(Box::new(BufReader::new(r)));
        let t = Instant::now();
        let (got, err, full) = p.read_ahead(1 << 20);
        assert!(t.elapsed() < PIPE_STALL * 3, "waited {:?}", t.elapsed());
        assert_eq!((got.as_slice(), err.is_none(), full), (&b"head "[..], true, false));
        let mut rest = Vec::new();
        p.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"tail");
    }

    fn rec(kind: u32, size: u16, extra: &[u8]) -> Vec<u8> {
        let mut r = kind.to_le_bytes().to_vec();
        r.extend_from_slice(&0u16.to_le_bytes());
        r.extend_from_slice(&size.to_le_bytes());
        r.extend_from_slice(extra);
        r
    }

    #[test]
    fn a_pipe_prefix_is_cut_after_its_last_whole_record() {
        let mut p = b"PERFILE2".to_vec();
        p.extend_from_slice(&16u64.to_le_bytes());
        p.extend(rec(9, 16, &[0; 8]));
        let whole = p.len();
        // Tracing data: its payload (here 4 bytes) follows the 16-byte record.
        p.extend(rec(66, 16, &[4, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]));
        let with_data = p.len();
        assert_eq!(pipe_records_end(&p, true), with_data);
        p.extend(rec(9, 32, &[0; 8]));
        assert_eq!(pipe_records_end(&p, true), with_data, "a record cut short is left out");
        assert_eq!(pipe_records_end(p.get(..with_data - 1).unwrap(), true), whole, "so is cut payload");
        // Hostile sizes end the walk, never overrun it.
        let mut bad = p.get(..16).unwrap().to_vec();
        bad.extend(rec(9, 0, &[]));
        assert_eq!(pipe_records_end(&bad, true), 16);
        let mut huge = p.get(..16).unwrap().to_vec();
        huge.extend(rec(71, 16, &[0xff; 8]));
        assert_eq!(pipe_records_end(&huge, true), 16);
        assert_eq!(pipe_records_end(b"", true), 0);
    }
}
