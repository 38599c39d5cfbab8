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
use super::text::TextSource;
use super::{read_ahead, read_full, FailOnce, Source, SourceError};
use crate::input::{decode_reader_with, InputError, InputOptions};
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
    /// The CPU page size its first events show ([`crate::pagesize`]), for
    /// text read from a file: a pipe is never read ahead, so that a live
    /// one is not held up (there the metadata or `--page-size` decide).
    pub events_page_size: Option<iosan_core::PageSize>,
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
            return binary(fmt, BufReader::with_capacity(256 << 10, f), &head).map_err(src_err);
        }
    }
    let input = crate::input::open_input_with(path, &InputOptions::default())?;
    // A pipe may stall while a test runs: never hold a decided event for it.
    let live = path.as_os_str() == "-" || is_fifo(path);
    from_reader(input.reader, &name, max_line_len, live, opts.threads)
}

/// Opens an already decompressed stream (standard input, an embedded
/// capture): binary captures are read into memory first.
///
/// # Errors
/// As [`open_capture`].
pub fn open_reader(reader: impl Read + Send + 'static, name: &str, max_line_len: usize) -> Result<Capture, OpenError> {
    let input = decode_reader_with(reader, &InputOptions::default())?;
    from_reader(input.reader, name, max_line_len, true, 1)
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
    mut reader: Box<dyn BufRead + Send>,
    name: &str,
    max_line_len: usize,
    live: bool,
    threads: usize,
) -> Result<Capture, OpenError> {
    let io_err = |source| OpenError::Io { name: name.to_string(), source };
    // One read of a chained stream may return only a few bytes: read ahead
    // until the magic bytes are in, then put them back in front. A pipe is
    // read no further (a live one must not wait); a file is read ahead by
    // up to 4 MiB, whose events tell its page size.
    let want = if live { 16 } else { crate::pagesize::LOOKAHEAD_BYTES };
    let (prefix, mut failed) = read_ahead(&mut reader, want);
    if prefix.is_empty() {
        if let Some(e) = failed.take() {
            return Err(io_err(e));
        }
    }
    let head = prefix.get(..prefix.len().min(16)).unwrap_or(&[]).to_vec();
    let format = sniff(&head);
    let looks_binary = looks_binary(&prefix);
    let events_page_size = match (live, format, &failed) {
        (false, None, None) => crate::pagesize::scan(&prefix).decided(),
        _ => None,
    };
    // A read error of the look-ahead surfaces where the reading reaches it.
    let mut reader: Box<dyn BufRead + Send> =
        Box::new(BufReader::with_capacity(256 << 10, Cursor::new(prefix).chain(FailOnce(failed)).chain(reader)));
    match format {
        Some(CaptureFormat::PerfData) if is_pipe_mode(&head) => {
            let source = PerfDataSource::open_pipe(reader)
                .map_err(|source| OpenError::Source { name: name.to_string(), source })?;
            Ok(Capture { source: Box::new(source), format: CaptureFormat::PerfData, events_page_size: None })
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
            binary(fmt, Cursor::new(all), &head).map_err(|source| OpenError::Source { name: name.to_string(), source })
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
            Ok(Capture { source, format: CaptureFormat::Text { looks_binary }, events_page_size })
        }
    }
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
) -> Result<Capture, SourceError> {
    let source: Box<dyn Source + Send> = match fmt {
        CaptureFormat::TraceDat => Box::new(TraceDatSource::open(reader)?),
        _ if is_pipe_mode(head) => Box::new(PerfDataSource::open_pipe(reader)?),
        _ => Box::new(PerfDataSource::open_file(reader)?),
    };
    Ok(Capture { source, format: fmt, events_page_size: None })
}
