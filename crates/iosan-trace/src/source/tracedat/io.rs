//! Position-tracked, bounds-checked reads of a `Read + Seek` container in
//! the file's byte order. Every size is checked against the bytes left
//! before anything is allocated.

use std::io::{Read, Seek, SeekFrom};

use super::error::TraceDatError;

/// Largest block the reader allocates for one metadata section (format
/// files, kallsyms, cmdlines). Real kallsyms with modules are ~20 MiB.
pub(crate) const BLOCK_LIMIT: u64 = 256 << 20;

/// Longest NUL-terminated string in a header or option.
const CSTR_LIMIT: usize = 4096;

pub(crate) struct Src<R> {
    r: R,
    pos: u64,
    len: u64,
    pub(crate) big_endian: bool,
}

impl<R: Read + Seek> Src<R> {
    /// Wraps `r`, reading from its start; the length comes from seeking to the end.
    pub(crate) fn new(mut r: R) -> Result<Self, TraceDatError> {
        let len = r.seek(SeekFrom::End(0)).map_err(|e| io(0, "file length", e))?;
        r.seek(SeekFrom::Start(0)).map_err(|e| io(0, "file start", e))?;
        Ok(Self { r, pos: 0, len, big_endian: false })
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    pub(crate) fn seek(&mut self, pos: u64, what: &'static str) -> Result<(), TraceDatError> {
        if pos > self.len {
            return Err(TraceDatError::PastEnd { offset: pos, what, len: self.len });
        }
        if pos != self.pos {
            self.r.seek(SeekFrom::Start(pos)).map_err(|e| io(pos, what, e))?;
            self.pos = pos;
        }
        Ok(())
    }

    fn need(&self, n: u64, what: &'static str) -> Result<(), TraceDatError> {
        if n > self.left() {
            return Err(TraceDatError::Truncated { offset: self.pos, what, need: n, have: self.left() });
        }
        Ok(())
    }

    /// Fills `buf` from the current position.
    pub(crate) fn fill(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), TraceDatError> {
        self.need(buf.len() as u64, what)?;
        self.r.read_exact(buf).map_err(|e| io(self.pos, what, e))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], TraceDatError> {
        let mut b = [0u8; N];
        self.fill(&mut b, what)?;
        Ok(b)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, TraceDatError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, TraceDatError> {
        let b = self.array(what)?;
        Ok(if self.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, TraceDatError> {
        let b = self.array(what)?;
        Ok(if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, TraceDatError> {
        let b = self.array(what)?;
        Ok(if self.big_endian { u64::from_be_bytes(b) } else { u64::from_le_bytes(b) })
    }

    /// `n` bytes into a new vector, `n` checked against the bytes left and
    /// [`BLOCK_LIMIT`] first.
    pub(crate) fn bytes(&mut self, n: u64, what: &'static str) -> Result<Vec<u8>, TraceDatError> {
        if n > BLOCK_LIMIT {
            return Err(TraceDatError::TooLarge { offset: self.pos, what, size: n, limit: BLOCK_LIMIT });
        }
        self.need(n, what)?;
        let mut v = vec![0u8; n as usize];
        self.fill(&mut v, what)?;
        Ok(v)
    }

    /// A NUL-terminated string (without its NUL).
    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<Vec<u8>, TraceDatError> {
        let start = self.pos;
        let mut v = Vec::new();
        loop {
            let c = self.u8(what)?;
            if c == 0 {
                return Ok(v);
            }
            if v.len() >= CSTR_LIMIT {
                return Err(TraceDatError::TooLarge {
                    offset: start,
                    what,
                    size: v.len() as u64,
                    limit: CSTR_LIMIT as u64,
                });
            }
            v.push(c);
        }
    }

    pub(crate) fn into_inner(self) -> R {
        self.r
    }
}

pub(crate) fn io(offset: u64, what: &'static str, source: std::io::Error) -> TraceDatError {
    TraceDatError::Io { offset, what, source }
}

/// Reads integers from an in-memory block (a decompressed section, an
/// option's payload) with the same checks.
pub(crate) struct Bytes<'a> {
    b: &'a [u8],
    pos: usize,
    /// File offset of `b[0]`, for messages.
    base: u64,
    big_endian: bool,
}

impl<'a> Bytes<'a> {
    pub(crate) fn new(b: &'a [u8], base: u64, big_endian: bool) -> Self {
        Self { b, pos: 0, base, big_endian }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.base.saturating_add(self.pos as u64)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.b.len()
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TraceDatError> {
        let have = self.b.len().saturating_sub(self.pos);
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len()).ok_or(TraceDatError::Truncated {
            offset: self.offset(),
            what,
            need: n as u64,
            have: have as u64,
        })?;
        let s = self.b.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }

    fn int(&mut self, n: usize, what: &'static str) -> Result<u64, TraceDatError> {
        let s = self.take(n, what)?;
        Ok(crate::source::format::read_uint(s, self.big_endian))
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, TraceDatError> {
        Ok(self.int(2, what)? as u16)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, TraceDatError> {
        Ok(self.int(4, what)? as u32)
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, TraceDatError> {
        self.int(8, what)
    }

    /// A NUL-terminated string; the rest of the block when there is no NUL.
    pub(crate) fn cstr(&mut self) -> &'a [u8] {
        let rest = self.b.get(self.pos..).unwrap_or_default();
        match memchr::memchr(0, rest) {
            Some(i) => {
                self.pos += i + 1;
                rest.get(..i).unwrap_or_default()
            }
            None => {
                self.pos = self.b.len();
                rest
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn src_checks_sizes_before_allocating() {
        let mut s = Src::new(Cursor::new(vec![1u8, 0, 0, 0, b'a', 0])).unwrap();
        assert_eq!(s.u32("n").unwrap(), 1);
        assert_eq!(s.cstr("s").unwrap(), b"a");
        assert!(matches!(s.u8("x"), Err(TraceDatError::Truncated { offset: 6, .. })));
        assert!(matches!(s.bytes(u64::MAX, "huge"), Err(TraceDatError::TooLarge { .. })));
        assert!(matches!(s.bytes(1000, "big"), Err(TraceDatError::Truncated { .. })));
        assert!(matches!(s.seek(7, "past"), Err(TraceDatError::PastEnd { offset: 7, len: 6, .. })));
    }

    #[test]
    fn bytes_reads_both_orders() {
        let mut b = Bytes::new(&[0, 1, 2, 3, b'x', 0, b'y'], 100, true);
        assert_eq!(b.u16("a").unwrap(), 1);
        assert_eq!(b.u16("b").unwrap(), 0x0203);
        assert_eq!(b.cstr(), b"x");
        assert_eq!(b.cstr(), b"y");
        assert!(b.is_empty());
        assert!(matches!(b.u32("c"), Err(TraceDatError::Truncated { offset: 107, .. })));
    }
}
