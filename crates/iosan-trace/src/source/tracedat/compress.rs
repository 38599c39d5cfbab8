//! Bounded decompression of trace.dat v7 blocks (trace-cmd's
//! `tracecmd_uncompress_block`: u32 compressed size, u32 uncompressed size,
//! data). The output never exceeds the stated uncompressed size, itself
//! capped by the caller: a bomb fails instead of growing.

use super::error::TraceDatError;

/// The codecs trace-cmd writes (`trace-compress-zstd.c`, `-zlib.c`).
pub(crate) enum Codec {
    /// zstd frames without a content size.
    Zstd(Box<zstd::bulk::Decompressor<'static>>),
    /// zlib-wrapped deflate (`compress2`).
    Zlib(Box<flate2::Decompress>),
}

impl Codec {
    /// The codec called `name` in the file header; `None` for `none`.
    pub(crate) fn by_name(name: &[u8]) -> Result<Option<Self>, TraceDatError> {
        match name {
            b"none" | b"" => Ok(None),
            b"zstd" => {
                let d =
                    zstd::bulk::Decompressor::new().map_err(|e| TraceDatError::Compression(format!("zstd: {e}")))?;
                Ok(Some(Self::Zstd(Box::new(d))))
            }
            b"zlib" => Ok(Some(Self::Zlib(Box::new(flate2::Decompress::new(true))))),
            other => Err(TraceDatError::Compression(String::from_utf8_lossy(other).into_owned())),
        }
    }

    /// Decompresses `input` into `out` (cleared), producing at most
    /// `expect` bytes; returns false when the data is corrupt or does not
    /// fit (the caller counts and skips it).
    pub(crate) fn decompress(&mut self, input: &[u8], expect: usize, out: &mut Vec<u8>) -> bool {
        out.clear();
        if out.capacity() < expect {
            out.reserve_exact(expect);
        }
        match self {
            Self::Zstd(d) => {
                // A slice of exactly `expect` bytes is the output bound.
                out.resize(expect, 0);
                match d.decompress_to_buffer(input, &mut out[..]) {
                    Ok(n) => {
                        out.truncate(n);
                        true
                    }
                    Err(_) => {
                        out.clear();
                        false
                    }
                }
            }
            Self::Zlib(d) => {
                d.reset(true);
                out.resize(expect, 0);
                // One call: the whole input and exactly `expect` bytes of room.
                let end = d.decompress(input, &mut out[..], flate2::FlushDecompress::Finish);
                let n = usize::try_from(d.total_out()).unwrap_or(0).min(expect);
                out.truncate(n);
                if matches!(end, Ok(flate2::Status::StreamEnd)) {
                    true
                } else {
                    out.clear();
                    false
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn round_trips_and_refuses_bombs() {
        let data = vec![7u8; 40_000];
        let z = zstd::bulk::compress(&data, 3).unwrap();
        let mut out = Vec::new();
        let mut c = Codec::by_name(b"zstd").unwrap().unwrap();
        assert!(c.decompress(&z, 40_000, &mut out));
        assert_eq!(out, data);
        assert!(!c.decompress(&z, 4_000, &mut out), "zstd output past the stated size");
        assert!(out.len() <= 4_000);
        assert!(!c.decompress(b"garbage", 100, &mut out));

        let mut c = Codec::by_name(b"zlib").unwrap().unwrap();
        let zl = zlib(&data);
        assert!(c.decompress(&zl, 40_000, &mut out));
        assert_eq!(out, data);
        assert!(!c.decompress(&zl, 4_000, &mut out), "zlib output past the stated size");
        assert!(out.len() <= 4_096);
        assert!(!c.decompress(&zl[..zl.len() / 2], 40_000, &mut out));
        assert!(!c.decompress(b"garbage", 100, &mut out));

        assert!(Codec::by_name(b"none").unwrap().is_none());
        assert!(matches!(Codec::by_name(b"lz4"), Err(TraceDatError::Compression(_))));
    }
}
