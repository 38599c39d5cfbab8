//! Streaming line reader over any [`BufRead`].
//!
//! Conventions:
//!
//! * Line numbers are 1-based and count every line, including skipped ones.
//! * Byte offsets are 0-based positions of the first byte of a line in the
//!   (decompressed) stream.
//! * A line is the bytes before `\n`; trailing `\r` bytes are stripped too.
//!   The last line may lack its `\n`. No other byte is special: lines may
//!   contain NUL or invalid UTF-8.
//! * A line longer than the configured limit is never buffered whole: the
//!   reader skips to the next `\n` and reports [`ReadError::LineTooLong`],
//!   then goes on with the next line. Memory stays bounded by the limit plus
//!   the inner reader's buffer.
//!
//! Lines that lie wholly inside the inner reader's buffer are returned as a
//! slice of it, without copying; only lines that straddle two refills are
//! copied into a reused scratch buffer.

use std::io::{self, BufRead};
use std::ops::ControlFlow;

/// Default limit on the length of one line, in bytes (1 MiB).
pub const DEFAULT_MAX_LINE_LEN: usize = 1 << 20;

/// One line of input, without its line terminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line's bytes, without the trailing `\n` and `\r`.
    pub bytes: &'a [u8],
    /// 1-based line number.
    pub number: u64,
    /// Byte offset of the line's first byte in the stream.
    pub offset: u64,
}

impl Line<'_> {
    /// Where this line is, for error messages.
    #[must_use]
    pub fn location(&self) -> Location {
        Location { line: self.number, offset: self.offset }
    }
}

/// A position in the input: 1-based line number and byte offset of the line
/// start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    /// 1-based line number.
    pub line: u64,
    /// Byte offset of the start of the line.
    pub offset: u64,
}

impl core::fmt::Display for Location {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "line {} (byte offset {})", self.line, self.offset)
    }
}

/// An error together with the line it was found on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {error}")]
pub struct Located<E: std::error::Error + 'static> {
    /// Where the problem is.
    pub location: Location,
    /// What the problem is.
    #[source]
    pub error: E,
}

/// Problems reported by [`LineReader`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A line exceeded the length limit. It was skipped (not buffered) and
    /// reading goes on with the next line. Not fatal.
    #[error(
        "line {line} (byte offset {offset}): line of {len} bytes exceeds the limit of {limit} bytes; skipped (raise the limit with LineReader::with_max_line_len)"
    )]
    LineTooLong {
        /// 1-based line number of the skipped line.
        line: u64,
        /// Byte offset of its start.
        offset: u64,
        /// Its full length in bytes, without the terminator.
        len: u64,
        /// The limit in force.
        limit: usize,
    },
    /// The inner reader failed (including a decompression error or the
    /// decompressed-size limit of [`crate::input`]). Fatal: the reader
    /// returns nothing more afterwards.
    #[error("read error at line {line} (byte offset {offset}): {source}")]
    Io {
        /// 1-based number of the line being read.
        line: u64,
        /// Byte offset where reading failed.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ReadError {
    /// Whether the reader stopped because of this error. A skipped over-long
    /// line is not fatal; an I/O error is.
    #[must_use]
    pub fn is_fatal(&self) -> bool {
        matches!(self, ReadError::Io { .. })
    }
}

/// A streaming line reader. See the [module docs](self) for conventions.
///
/// ```
/// use iosan_trace::parse::reader::LineReader;
/// let mut r = LineReader::new(&b"one\r\ntwo"[..]);
/// let l = r.next_line().unwrap().unwrap();
/// assert_eq!((l.bytes, l.number, l.offset), (&b"one"[..], 1, 0));
/// let l = r.next_line().unwrap().unwrap();
/// assert_eq!((l.bytes, l.number, l.offset), (&b"two"[..], 2, 5));
/// assert!(r.next_line().is_none());
/// ```
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    scratch: Vec<u8>,
    /// Bytes of the inner buffer handed out by the last call, consumed at
    /// the start of the next one.
    pending: usize,
    /// Number of lines returned (or skipped) so far.
    line_no: u64,
    /// Stream offset just past the last line returned.
    offset: u64,
    max_line_len: usize,
    done: bool,
}

/// Strips trailing `\r` bytes.
#[inline]
fn strip_cr(mut s: &[u8]) -> &[u8] {
    while let Some((b'\r', rest)) = s.split_last() {
        s = rest;
    }
    s
}

#[inline]
fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl<R: BufRead> LineReader<R> {
    /// A reader with the [default line limit](DEFAULT_MAX_LINE_LEN).
    pub fn new(inner: R) -> Self {
        Self::with_max_line_len(inner, DEFAULT_MAX_LINE_LEN)
    }

    /// A reader that skips lines longer than `max_line_len` bytes (without
    /// terminator). A limit of 0 is raised to 1.
    pub fn with_max_line_len(inner: R, max_line_len: usize) -> Self {
        LineReader {
            inner,
            scratch: Vec::new(),
            pending: 0,
            line_no: 0,
            offset: 0,
            max_line_len: max_line_len.max(1),
            done: false,
        }
    }

    /// Number of lines read so far (the number of the last line returned).
    #[must_use]
    pub fn lines_read(&self) -> u64 {
        self.line_no
    }

    /// Bytes of input consumed so far, including terminators.
    #[must_use]
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    /// The line-length limit in force.
    #[must_use]
    pub fn max_line_len(&self) -> usize {
        self.max_line_len
    }

    /// Gives back the inner reader.
    pub fn into_inner(mut self) -> R {
        self.flush_pending();
        self.inner
    }

    fn flush_pending(&mut self) {
        if self.pending > 0 {
            self.inner.consume(self.pending);
            self.pending = 0;
        }
    }

    fn io_error(&mut self, source: io::Error, at: u64) -> ReadError {
        self.done = true;
        ReadError::Io { line: self.line_no.saturating_add(1), offset: at, source }
    }

    /// Fills the inner buffer, retrying on `Interrupted`: the bytes
    /// buffered and where the first line break is among them.
    fn fill(&mut self) -> io::Result<(usize, Option<usize>)> {
        loop {
            match self.inner.fill_buf() {
                Ok(b) => return Ok((b.len(), memchr::memchr(b'\n', b))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Returns the next line, `Some(Err(..))` for a skipped over-long line
    /// or a read error, and `None` at the end of input (or after a fatal
    /// error).
    pub fn next_line(&mut self) -> Option<Result<Line<'_>, ReadError>> {
        self.flush_pending();
        if self.done {
            return None;
        }
        let start = self.offset;

        // Fast path: the whole line is inside the inner buffer.
        let (avail, found) = match self.fill() {
            Ok(r) => r,
            Err(e) => return Some(Err(self.io_error(e, start))),
        };
        if avail == 0 {
            self.done = true;
            return None;
        }
        if let Some(pos) = found {
            let used = pos.saturating_add(1);
            self.pending = used;
            self.offset = self.offset.saturating_add(to_u64(used));
            self.line_no = self.line_no.saturating_add(1);
            if pos > self.max_line_len {
                return Some(Err(ReadError::LineTooLong {
                    line: self.line_no,
                    offset: start,
                    len: to_u64(pos),
                    limit: self.max_line_len,
                }));
            }
            let number = self.line_no;
            // Field-level borrows only: `buf` borrows `self.inner` for the
            // returned line, the error paths touch other fields.
            return match self.inner.fill_buf() {
                Ok(buf) => match buf.get(..pos) {
                    Some(bytes) => Some(Ok(Line { bytes: strip_cr(bytes), number, offset: start })),
                    None => {
                        self.pending = 0;
                        self.done = true;
                        Some(Err(ReadError::Io {
                            line: number,
                            offset: start,
                            source: io::Error::other("inner reader changed its buffer between two fill_buf calls"),
                        }))
                    }
                },
                Err(source) => {
                    self.pending = 0;
                    self.done = true;
                    Some(Err(ReadError::Io { line: number, offset: start, source }))
                }
            };
        }

        // Slow path: the line straddles refills; copy it into scratch, or
        // only count it once it is known to be too long.
        self.scratch.clear();
        let mut len: u64 = 0;
        let mut too_long = false;
        loop {
            let (used, newline) = match self.inner.fill_buf() {
                Ok([]) => break,
                Ok(buf) => {
                    let (part, newline) = match memchr::memchr(b'\n', buf) {
                        Some(pos) => (buf.get(..pos).unwrap_or(buf), true),
                        None => (buf, false),
                    };
                    len = len.saturating_add(to_u64(part.len()));
                    if !too_long {
                        if len > to_u64(self.max_line_len) {
                            too_long = true;
                            self.scratch = Vec::new();
                        } else {
                            self.scratch.extend_from_slice(part);
                        }
                    }
                    (part.len() + usize::from(newline), newline)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let at = self.offset;
                    return Some(Err(self.io_error(e, at)));
                }
            };
            self.inner.consume(used);
            self.offset = self.offset.saturating_add(to_u64(used));
            if newline {
                break;
            }
        }
        self.line_no = self.line_no.saturating_add(1);
        if too_long {
            return Some(Err(ReadError::LineTooLong {
                line: self.line_no,
                offset: start,
                len,
                limit: self.max_line_len,
            }));
        }
        Some(Ok(Line { bytes: strip_cr(&self.scratch), number: self.line_no, offset: start }))
    }

    /// Drives `f` with every line (and every non-fatal or fatal error) until
    /// the input ends or `f` breaks. Returns the break value, if any.
    pub fn for_each_line<B, F>(&mut self, mut f: F) -> Option<B>
    where
        F: FnMut(Result<Line<'_>, ReadError>) -> ControlFlow<B>,
    {
        while let Some(item) = self.next_line() {
            if let ControlFlow::Break(b) = f(item) {
                return Some(b);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    type Item = Result<(Vec<u8>, u64, u64), String>;

    fn collect<R: BufRead>(mut r: LineReader<R>) -> Vec<Item> {
        let mut out = Vec::new();
        while let Some(item) = r.next_line() {
            out.push(match item {
                Ok(l) => Ok((l.bytes.to_vec(), l.number, l.offset)),
                Err(e) => Err(e.to_string()),
            });
        }
        out
    }

    fn ok(s: &str, n: u64, o: u64) -> Item {
        Ok((s.as_bytes().to_vec(), n, o))
    }

    #[test]
    fn basic_and_crlf() {
        let got = collect(LineReader::new(&b"a\nbb\r\n\nccc"[..]));
        assert_eq!(got, vec![ok("a", 1, 0), ok("bb", 2, 2), ok("", 3, 6), ok("ccc", 4, 7)]);
        assert!(collect(LineReader::new(&b""[..])).is_empty());
        assert_eq!(collect(LineReader::new(&b"\n"[..])), vec![ok("", 1, 0)]);
        assert_eq!(collect(LineReader::new(&b"x\r\r\n"[..])), vec![ok("x", 1, 0)]);
    }

    #[test]
    fn nul_and_invalid_utf8() {
        let got = collect(LineReader::new(&b"a\0b\xff\nz"[..]));
        assert_eq!(got, vec![Ok((b"a\0b\xff".to_vec(), 1, 0)), ok("z", 2, 5)]);
    }

    #[test]
    fn straddling_tiny_buffer() {
        let text = b"first line\nsecond, longer line here\r\nthird\n";
        for cap in 1..12 {
            let r = LineReader::new(BufReader::with_capacity(cap, &text[..]));
            assert_eq!(
                collect(r),
                vec![ok("first line", 1, 0), ok("second, longer line here", 2, 11), ok("third", 3, 37)],
                "capacity {cap}"
            );
        }
    }

    #[test]
    fn too_long_is_skipped_and_reading_goes_on() {
        let text = b"ok\n0123456789\nfine\n0123456789";
        for cap in [1, 3, 4, 64] {
            let r = LineReader::with_max_line_len(BufReader::with_capacity(cap, &text[..]), 5);
            let got = collect(r);
            assert_eq!(got.len(), 4, "capacity {cap}");
            assert_eq!(got[0], ok("ok", 1, 0));
            assert!(got[1].as_ref().unwrap_err().contains("line 2 (byte offset 3): line of 10 bytes"));
            assert_eq!(got[2], ok("fine", 3, 14));
            assert!(got[3].as_ref().unwrap_err().contains("line 4 (byte offset 19)"));
        }
    }

    #[test]
    fn io_error_is_fatal() {
        struct Failing(u8);
        impl io::Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("boom"));
                }
                self.0 -= 1;
                let n = buf.len().min(3);
                buf[..n].copy_from_slice(&b"ab\n"[..n]);
                Ok(n)
            }
        }
        let mut r = LineReader::new(BufReader::with_capacity(3, Failing(2)));
        assert_eq!(r.next_line().unwrap().unwrap().bytes, b"ab");
        assert_eq!(r.next_line().unwrap().unwrap().bytes, b"ab");
        let e = r.next_line().unwrap().unwrap_err();
        assert!(e.is_fatal());
        assert!(e.to_string().contains("line 3 (byte offset 6)"), "{e}");
        assert!(r.next_line().is_none());
    }

    #[test]
    fn for_each_stops_early() {
        let mut r = LineReader::new(&b"a\nb\nc\n"[..]);
        let mut seen = 0;
        let stopped = r.for_each_line(|l| {
            seen += 1;
            if l.unwrap().bytes == b"b" {
                ControlFlow::Break(7)
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!((stopped, seen), (Some(7), 2));
        assert_eq!(r.next_line().unwrap().unwrap().bytes, b"c");
    }
}
