//! Opening capture files: plain, gzip, xz or zstd, detected by magic bytes.
//!
//! Everything streams: memory stays bounded by the buffers, whatever the
//! input size. Decompressed output is additionally capped (default
//! [`DEFAULT_MAX_DECOMPRESSED_BYTES`]) so that a tiny hostile file cannot
//! keep the analysis busy forever; the cap is an error that names the limit.
//! Concatenated gzip members and xz streams are read as one stream; zstd
//! frames always are.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Default cap on decompressed bytes read from one input (64 GiB).
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 64 << 30;

/// Default buffer size of the returned reader (256 KiB).
pub const DEFAULT_BUFFER_SIZE: usize = 256 << 10;

/// The container format of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Lower-case name (`none`, `gzip`, `xz`, `zstd`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }
}

/// Tells the format from the first bytes of an input (6 are enough).
#[must_use]
pub fn detect_compression(prefix: &[u8]) -> Compression {
    if prefix.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Options for [`open_input_with`] and [`decode_reader_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputOptions {
    /// Cap on the decompressed bytes of a compressed input. Reading past it
    /// fails with [`InputError::DecompressedLimit`]. Plain input is not
    /// capped.
    pub max_decompressed_bytes: u64,
    /// Size of the returned reader's buffer.
    pub buffer_size: usize,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions { max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES, buffer_size: DEFAULT_BUFFER_SIZE }
    }
}

/// Errors opening or decoding an input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The path given.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading the first bytes (to detect the format) failed.
    #[error("cannot read {what}: {source}")]
    Read {
        /// The input (`a path`, `standard input`, `reader`).
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The decoder could not be set up.
    #[error("cannot start the {} decoder for {what}: {source}", format.name())]
    Decoder {
        /// The detected format.
        format: Compression,
        /// The input.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// More than the allowed number of bytes came out of the decompressor.
    /// Returned wrapped in an [`io::Error`] (kind `Other`) by the reader.
    #[error(
        "decompressed input exceeds the limit of {limit} bytes (possible decompression bomb); raise InputOptions::max_decompressed_bytes to read it"
    )]
    DecompressedLimit {
        /// The limit in force.
        limit: u64,
    },
}

/// An opened input.
pub struct Input {
    /// The decoded byte stream.
    pub reader: Box<dyn BufRead + Send>,
    /// The detected container format.
    pub compression: Compression,
}

impl core::fmt::Debug for Input {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Input").field("compression", &self.compression).finish_non_exhaustive()
    }
}

/// `Read::read` for a reader that is its own buffer: copies what
/// `fill_buf` has (reading once when it is empty) and consumes it.
///
/// # Errors
/// What `fill_buf` returns.
pub fn read_from_buffer<R: BufRead + ?Sized>(r: &mut R, out: &mut [u8]) -> io::Result<usize> {
    let n = {
        let avail = r.fill_buf()?;
        let n = avail.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        n
    };
    r.consume(n);
    Ok(n)
}

/// Opens a file, or standard input for `-`, decompressing by magic bytes,
/// with default options.
///
/// # Errors
///
/// [`InputError::Open`], [`InputError::Read`], [`InputError::Decoder`].
pub fn open_input(path: &Path) -> Result<Box<dyn BufRead + Send>, InputError> {
    open_input_with(path, &InputOptions::default()).map(|i| i.reader)
}

/// Opens a file, or standard input for `-`, decompressing by magic bytes.
///
/// # Errors
///
/// [`InputError::Open`], [`InputError::Read`], [`InputError::Decoder`].
pub fn open_input_with(path: &Path, opts: &InputOptions) -> Result<Input, InputError> {
    if path.as_os_str() == "-" {
        return decode_named(io::stdin(), "standard input".to_owned(), opts);
    }
    let file = File::open(path).map_err(|source| InputError::Open { path: path.to_path_buf(), source })?;
    decode_named(file, path.display().to_string(), opts)
}

/// Wraps any reader (for example embedded bytes), decompressing by magic
/// bytes, with default options.
///
/// # Errors
///
/// [`InputError::Read`], [`InputError::Decoder`].
pub fn decode_reader<R: Read + Send + 'static>(r: R) -> Result<Box<dyn BufRead + Send>, InputError> {
    decode_reader_with(r, &InputOptions::default()).map(|i| i.reader)
}

/// Wraps any reader, decompressing by magic bytes.
///
/// # Errors
///
/// [`InputError::Read`], [`InputError::Decoder`].
pub fn decode_reader_with<R: Read + Send + 'static>(r: R, opts: &InputOptions) -> Result<Input, InputError> {
    decode_named(r, "reader".to_owned(), opts)
}

fn decode_named<R: Read + Send + 'static>(mut r: R, what: String, opts: &InputOptions) -> Result<Input, InputError> {
    let mut magic = [0u8; 6];
    let mut got = 0;
    while got < magic.len() {
        let Some(dst) = magic.get_mut(got..) else { break };
        match r.read(dst) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(InputError::Read { what, source }),
        }
    }
    let prefix = magic.get(..got).unwrap_or_default().to_vec();
    let compression = detect_compression(&prefix);
    let chained = io::Cursor::new(prefix).chain(r);
    let cap = opts.buffer_size.max(64);
    let limit = opts.max_decompressed_bytes;
    let reader: Box<dyn BufRead + Send> = match compression {
        Compression::None => Box::new(BufReader::with_capacity(cap, chained)),
        Compression::Gzip => {
            Box::new(BufReader::with_capacity(cap, Limited::new(flate2::read::MultiGzDecoder::new(chained), limit)))
        }
        Compression::Xz => Box::new(BufReader::with_capacity(
            cap,
            Limited::new(xz2::read::XzDecoder::new_multi_decoder(chained), limit),
        )),
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::new(chained).map_err(|source| InputError::Decoder {
                format: compression,
                what,
                source,
            })?;
            Box::new(BufReader::with_capacity(cap, Limited::new(dec, limit)))
        }
    };
    Ok(Input { reader, compression })
}

/// Fails once more than `limit` bytes have been read.
struct Limited<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R> Limited<R> {
    fn new(inner: R, limit: u64) -> Self {
        Limited { inner, read: 0, limit }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read = self.read.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        if self.read > self.limit {
            return Err(io::Error::other(InputError::DecompressedLimit { limit: self.limit }));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(mut r: Box<dyn BufRead + Send>) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        Ok(v)
    }

    const TEXT: &[u8] = b"# tracer: nop\n  a-1 [000] ..... 1.000000: map: x\n";

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zst(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 1).unwrap()
    }

    #[test]
    fn detects_and_decodes_every_format() {
        for (bytes, c) in [
            (TEXT.to_vec(), Compression::None),
            (gz(TEXT), Compression::Gzip),
            (xz(TEXT), Compression::Xz),
            (zst(TEXT), Compression::Zstd),
        ] {
            assert_eq!(detect_compression(&bytes), c);
            let input = decode_reader_with(io::Cursor::new(bytes), &InputOptions::default()).unwrap();
            assert_eq!(input.compression, c);
            assert_eq!(read_all(input.reader).unwrap(), TEXT, "{c:?}");
        }
    }

    #[test]
    fn concatenated_members() {
        let mut two = gz(b"one\n");
        two.extend(gz(b"two\n"));
        assert_eq!(read_all(decode_reader(io::Cursor::new(two)).unwrap()).unwrap(), b"one\ntwo\n");
        let mut two = xz(b"one\n");
        two.extend(xz(b"two\n"));
        assert_eq!(read_all(decode_reader(io::Cursor::new(two)).unwrap()).unwrap(), b"one\ntwo\n");
        let mut two = zst(b"one\n");
        two.extend(zst(b"two\n"));
        assert_eq!(read_all(decode_reader(io::Cursor::new(two)).unwrap()).unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn read_from_buffer_hands_out_the_buffer_in_pieces() {
        let mut r = io::Cursor::new(b"abcdef".to_vec());
        let mut out = [0u8; 4];
        assert_eq!(read_from_buffer(&mut r, &mut out).unwrap(), 4);
        assert_eq!(&out, b"abcd");
        assert_eq!(read_from_buffer(&mut r, &mut out).unwrap(), 2);
        assert_eq!(&out[..2], b"ef");
        assert_eq!(read_from_buffer(&mut r, &mut out).unwrap(), 0);
        assert_eq!(read_from_buffer(&mut r, &mut []).unwrap(), 0);
    }

    #[test]
    fn tiny_and_empty_inputs() {
        assert_eq!(read_all(decode_reader(io::Cursor::new(Vec::new())).unwrap()).unwrap(), b"");
        assert_eq!(read_all(decode_reader(io::Cursor::new(vec![0x1f])).unwrap()).unwrap(), [0x1f]);
    }

    #[test]
    fn bomb_limit() {
        let big = vec![b'a'; 100_000];
        let opts = InputOptions { max_decompressed_bytes: 1000, ..InputOptions::default() };
        for bytes in [gz(&big), xz(&big), zst(&big)] {
            let input = decode_reader_with(io::Cursor::new(bytes), &opts).unwrap();
            let err = read_all(input.reader).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("limit of 1000 bytes"), "{msg}");
            assert!(msg.contains("max_decompressed_bytes"), "{msg}");
        }
        // plain input is not capped
        let input = decode_reader_with(io::Cursor::new(big.clone()), &opts).unwrap();
        assert_eq!(read_all(input.reader).unwrap().len(), big.len());
    }

    #[test]
    fn corrupt_stream_is_an_error_not_a_panic() {
        let mut bytes = xz(TEXT);
        let n = bytes.len();
        for b in bytes.iter_mut().skip(12).take(n.saturating_sub(24)) {
            *b ^= 0x55;
        }
        assert!(read_all(decode_reader(io::Cursor::new(bytes)).unwrap()).is_err());
        let mut bytes = gz(TEXT);
        bytes.truncate(bytes.len() / 2);
        assert!(read_all(decode_reader(io::Cursor::new(bytes)).unwrap()).is_err());
    }

    #[test]
    fn open_errors_name_the_path() {
        let e = open_input(Path::new("/nonexistent/iosan/x.trace")).err().unwrap();
        assert!(e.to_string().contains("/nonexistent/iosan/x.trace"), "{e}");
    }
}
