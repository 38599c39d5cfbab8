//! Errors of the trace.dat reader (and of the tracing-data blocks it shares
//! with perf.data). Each names the byte offset and what was being read.

use crate::source::format::FormatError;

/// Why a trace.dat (or a tracing-data block) cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceDatError {
    /// The reader failed.
    #[error("trace.dat: i/o error at byte {offset} reading {what}: {source}")]
    Io {
        /// Byte offset of the read.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not start with the trace.dat magic.
    #[error("not a trace.dat file: no `\\x17\\x08\\x44tracing` magic")]
    NotTraceDat,
    /// A version this reader does not know.
    #[error("trace.dat version `{0}` is not supported (6 and 7 are)")]
    Version(String),
    /// The file ends (or a section ends) before `what`.
    #[error("trace.dat: truncated at byte {offset}: {what} needs {need} bytes, {have} left")]
    Truncated {
        /// Byte offset of the read.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: u64,
        /// Bytes left.
        have: u64,
    },
    /// A header or option places `what` past the end of the file: the
    /// file was cut short (or the offset lies).
    #[error("trace.dat: truncated: its {what} should start at byte {offset}, but the file ends at byte {len}")]
    PastEnd {
        /// Byte offset the file gives for it.
        offset: u64,
        /// What should be there.
        what: &'static str,
        /// File length.
        len: u64,
    },
    /// A size beyond the reader's limit (a lie or a bomb).
    #[error("trace.dat: at byte {offset}: {what} of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// Byte offset of the field.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// The size claimed.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A value that makes no sense.
    #[error("trace.dat: at byte {offset}: {what}")]
    Malformed {
        /// Byte offset of the value.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A format file that does not parse.
    #[error("trace.dat: format file at byte {offset}: {source}")]
    Format {
        /// Byte offset of the format text.
        offset: u64,
        /// The parser's error.
        source: FormatError,
    },
    /// A compression the reader does not have.
    #[error("trace.dat: compression `{0}` is not supported (zstd and zlib are)")]
    Compression(String),
    /// A latency-format file (text, no ring-buffer pages).
    #[error("trace.dat: latency-format files are not supported")]
    Latency,
}

impl TraceDatError {
    pub(crate) fn malformed(offset: u64, what: impl Into<String>) -> Self {
        Self::Malformed { offset, what: what.into() }
    }
}
