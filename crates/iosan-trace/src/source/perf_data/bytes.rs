//! A bounds-checked reader of integers in a file's byte order.

/// Byte order of a perf.data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endian {
    /// Little-endian (x86, arm64).
    Little,
    /// Big-endian.
    Big,
}

/// A cursor over a byte slice that fails closed: every read past the end
/// returns `None` and leaves the cursor where it was.
#[derive(Clone, Copy, Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
    endian: Endian,
}

impl<'a> Bytes<'a> {
    /// A cursor at the start of `data`.
    #[must_use]
    pub fn new(data: &'a [u8], endian: Endian) -> Self {
        Self { data, pos: 0, endian }
    }

    /// Bytes consumed.
    #[must_use]
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn int<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        if self.endian == Endian::Big {
            a.reverse();
        }
        Some(a)
    }

    /// A u16.
    pub fn u16(&mut self) -> Option<u16> {
        self.int::<2>().map(u16::from_le_bytes)
    }

    /// A u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.int::<4>().map(u32::from_le_bytes)
    }

    /// A u64.
    pub fn u64(&mut self) -> Option<u64> {
        self.int::<8>().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_orders_and_fails_closed() {
        let d = [1, 0, 0, 0, 0, 0, 0, 2];
        let mut le = Bytes::new(&d, Endian::Little);
        assert_eq!(le.u32(), Some(1));
        assert_eq!(le.u64(), None);
        assert_eq!(le.pos(), 4);
        let mut be = Bytes::new(&d, Endian::Big);
        assert_eq!(be.u64(), Some(0x0100_0000_0000_0002));
        assert_eq!(be.u16(), None);
    }
}
