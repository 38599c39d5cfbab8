//! Byte-scanning helpers for the parsers' fast paths.
//!
//! The fast paths read the exact layouts the kernel prints, one pass per
//! field, and give up (`None`) on the first byte that differs; the caller
//! then runs the general parser, which decides the result or the error. So
//! every function here only has to be right when it says `Some`: it must
//! accept a subset of what the general parser accepts and return the same
//! value for it.
//!
//! Searches look at eight bytes at a time (SWAR on a `u64` read with
//! `from_le_bytes`, no `unsafe`): tokens are short, so this beats both a
//! byte loop and a `memchr` call's setup cost.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `x` that is zero. Bytes above the first
/// zero byte may be flagged falsely (borrow), so only the lowest flag is
/// exact, which is all the callers use.
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

#[inline(always)]
fn eq_bytes(x: u64, b: u8) -> u64 {
    zero_bytes(x ^ (LO * u64::from(b)))
}

#[inline(always)]
fn chunk(s: &[u8]) -> Option<u64> {
    let c: [u8; 8] = s.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(c))
}

#[inline(always)]
fn first_flag(m: u64) -> usize {
    (m.trailing_zeros() / 8) as usize
}

/// `' '` or `'\t'`.
#[inline(always)]
pub(crate) fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Index of the first blank in `s`, or `s.len()`.
#[inline]
pub(crate) fn find_blank(s: &[u8]) -> usize {
    let mut i = 0;
    while let Some(x) = s.get(i..).and_then(chunk) {
        let m = eq_bytes(x, b' ') | eq_bytes(x, b'\t');
        if m != 0 {
            return i + first_flag(m);
        }
        i += 8;
    }
    let tail = s.get(i..).unwrap_or_default();
    i + tail.iter().position(|&b| is_blank(b)).unwrap_or(tail.len())
}

/// Index of the first blank or `=` in `s`, or `s.len()`.
#[inline]
pub(crate) fn find_blank_or_eq(s: &[u8]) -> usize {
    let mut i = 0;
    while let Some(x) = s.get(i..).and_then(chunk) {
        let m = eq_bytes(x, b' ') | eq_bytes(x, b'\t') | eq_bytes(x, b'=');
        if m != 0 {
            return i + first_flag(m);
        }
        i += 8;
    }
    let tail = s.get(i..).unwrap_or_default();
    i + tail.iter().position(|&b| is_blank(b) || b == b'=').unwrap_or(tail.len())
}

/// Index of the first byte equal to `b`, or `s.len()`.
#[inline]
pub(crate) fn find_byte(s: &[u8], b: u8) -> usize {
    let mut i = 0;
    while let Some(x) = s.get(i..).and_then(chunk) {
        let m = eq_bytes(x, b);
        if m != 0 {
            return i + first_flag(m);
        }
        i += 8;
    }
    let tail = s.get(i..).unwrap_or_default();
    i + tail.iter().position(|&c| c == b).unwrap_or(tail.len())
}

/// Index of the first byte that is not a space, or `s.len()`. (Tabs are
/// left to the caller's general loop.)
#[inline]
pub(crate) fn skip_spaces(s: &[u8]) -> usize {
    let mut i = 0;
    while let Some(x) = s.get(i..).and_then(chunk) {
        let m = x ^ (LO * u64::from(b' '));
        if m != 0 {
            return i + first_flag(m);
        }
        i += 8;
    }
    let tail = s.get(i..).unwrap_or_default();
    i + tail.iter().position(|&b| b != b' ').unwrap_or(tail.len())
}

/// Value of a hex digit, or 0xff.
#[inline(always)]
fn hexval(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0xff,
    }
}

/// Eight hex digits (first digit in the lowest byte) as a 32-bit value, or
/// `None` when any byte is not a hex digit.
#[inline(always)]
fn hex8(x: u64) -> Option<u64> {
    if x & HI != 0 {
        return None;
    }
    // Bytes are below 0x80, so adding up to 0x7f never carries into the
    // next byte: the high bit of `x + (0x80 - c)` says "byte >= c".
    let ge = |x: u64, c: u8| x.wrapping_add(LO * u64::from(0x80 - c));
    let digit = ge(x, b'0') & !ge(x, b'9' + 1) & HI;
    let lower = x | (LO * 0x20);
    let alpha = ge(lower, b'a') & !ge(lower, b'f' + 1) & HI;
    if digit | alpha != HI {
        return None;
    }
    let n = (x & (LO * 0x0f)) + (alpha >> 7) * 9;
    let n = ((n & 0x000f_000f_000f_000f) << 4) | ((n & 0x0f00_0f00_0f00_0f00) >> 8);
    let n = ((n & 0x0000_00ff_0000_00ff) << 8) | ((n & 0x00ff_0000_00ff_0000) >> 16);
    Some(((n & 0xffff) << 16) | ((n >> 32) & 0xffff))
}

/// The leading hex digits of `s`: their value (meaningful only for up to
/// 16 digits) and their count (exact up to 16; 17 means "more than 16").
#[inline]
pub(crate) fn hex_prefix(s: &[u8]) -> (u64, usize) {
    let mut v: u64 = 0;
    let mut n = 0;
    while n < 16 {
        match s.get(n..).and_then(chunk).and_then(hex8) {
            Some(h) => {
                v = (v << 32) | h;
                n += 8;
            }
            None => break,
        }
    }
    for &b in s.get(n..).unwrap_or_default() {
        let d = hexval(b);
        if d == 0xff || n > 16 {
            break;
        }
        v = (v << 4) | u64::from(d);
        n += 1;
    }
    (v, n)
}

/// A forward cursor over a body. Every reader consumes what it matched and
/// returns `None` (leaving the cursor in an unspecified position) when the
/// bytes differ from what it expects.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cur<'a> {
    pub(crate) s: &'a [u8],
}

impl<'a> Cur<'a> {
    #[inline(always)]
    pub(crate) fn new(s: &'a [u8]) -> Self {
        Cur { s }
    }

    /// Consumes the literal `p`.
    #[inline(always)]
    pub(crate) fn lit(&mut self, p: &[u8]) -> Option<()> {
        self.s = self.s.strip_prefix(p)?;
        Some(())
    }

    /// Nothing is left.
    #[inline(always)]
    pub(crate) fn end(&self) -> Option<()> {
        self.s.is_empty().then_some(())
    }

    /// The next byte is a blank or there is none: the token just read is
    /// complete.
    #[inline(always)]
    fn at_boundary(&self) -> bool {
        self.s.first().is_none_or(|&b| is_blank(b))
    }

    /// Bytes up to the next blank (possibly empty).
    #[inline(always)]
    pub(crate) fn word(&mut self) -> &'a [u8] {
        let n = find_blank(self.s);
        let (w, rest) = self.s.split_at_checked(n).unwrap_or((self.s, &[]));
        self.s = rest;
        w
    }

    /// Bytes up to the next `' '` (tabs included), possibly empty.
    #[inline(always)]
    pub(crate) fn word_sp(&mut self) -> &'a [u8] {
        let n = find_byte(self.s, b' ');
        let (w, rest) = self.s.split_at_checked(n).unwrap_or((self.s, &[]));
        self.s = rest;
        w
    }

    /// A `key=` value up to the next blank that the tokenizer
    /// ([`super::fields::Toks`]) would return unchanged: not quoted, not a
    /// brace array, not `ARRAY[`.
    #[inline(always)]
    pub(crate) fn plain_val(&mut self) -> Option<&'a [u8]> {
        match self.s.first() {
            Some(b'"' | b'{') => None,
            Some(b'A') if self.s.starts_with(b"ARRAY[") => None,
            _ => Some(self.word()),
        }
    }

    /// 1 to 16 hex digits ending at a blank or the end; as
    /// [`super::num::hex_u64`].
    #[inline(always)]
    pub(crate) fn hex(&mut self) -> Option<u64> {
        let (v, n) = hex_prefix(self.s);
        if n == 0 || n > 16 {
            return None;
        }
        self.s = self.s.get(n..)?;
        self.at_boundary().then_some(v)
    }

    /// 1 to 19 decimal digits ending at a blank or the end; as
    /// [`super::num::dec_u64`] (19 digits cannot overflow).
    #[inline(always)]
    pub(crate) fn dec(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        let mut n = 0usize;
        let s = self.s;
        for &b in s {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            if n == 19 {
                return None;
            }
            v = v * 10 + u64::from(d);
            n += 1;
        }
        if n == 0 {
            return None;
        }
        self.s = s.get(n..)?;
        self.at_boundary().then_some(v)
    }

    /// `0x`-hex or decimal; as [`super::num::auto_u64`].
    #[inline(always)]
    pub(crate) fn auto(&mut self) -> Option<u64> {
        match self.s {
            [b'0', b'x' | b'X', rest @ ..] => {
                self.s = rest;
                self.hex()
            }
            _ => self.dec(),
        }
    }

    /// Hex with an optional `0x`; as the dma events' `%llx` reader.
    #[inline(always)]
    pub(crate) fn hex_maybe_0x(&mut self) -> Option<u64> {
        if let [b'0', b'x' | b'X', rest @ ..] = self.s {
            self.s = rest;
        }
        self.hex()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finders() {
        for n in 0..40 {
            let mut s = vec![b'a'; n];
            assert_eq!(find_blank(&s), n);
            assert_eq!(find_blank_or_eq(&s), n);
            assert_eq!(find_byte(&s, b':'), n);
            for at in 0..n {
                for c in [b' ', b'\t', b'=', b':'] {
                    s[at] = c;
                    let blank = if c == b' ' || c == b'\t' { at } else { n };
                    assert_eq!(find_blank(&s), blank);
                    assert_eq!(find_blank_or_eq(&s), if c == b':' { n } else { at });
                    assert_eq!(find_byte(&s, b':'), if c == b':' { at } else { n });
                    // a later match never hides an earlier one
                    let mut t = s.clone();
                    t.push(c);
                    assert_eq!(find_byte(&t, c), at);
                    s[at] = b'a';
                }
            }
            let mut sp = vec![b' '; n];
            assert_eq!(skip_spaces(&sp), n);
            sp.push(b'x');
            assert_eq!(skip_spaces(&sp), n);
            // bytes whose borrow could fake a match
            let odd: Vec<u8> = (0..n).map(|i| [0x21u8, 0x1f, 0x0a, 0x3e, 0x3c, 0x00, 0xff][i % 7]).collect();
            assert_eq!(find_blank(&odd), n);
            assert_eq!(find_blank_or_eq(&odd), n);
            assert_eq!(skip_spaces(&odd), 0);
        }
    }

    #[test]
    fn hex_prefixes() {
        let digits = b"0123456789abcdefABCDEF";
        let mut seed = 1u64;
        for _ in 0..20000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 20) as usize;
            let mut s: Vec<u8> =
                (0..len).map(|i| digits[((seed >> (i % 8 * 8)) as usize + i) % digits.len()]).collect();
            if seed % 3 == 0 && len > 0 {
                let at = (seed >> 40) as usize % len;
                s[at] = [b' ', b'g', b'/', b'G', b'@', b'`', b':', 0x80, 0xb0, b'x'][(seed >> 50) as usize % 10];
            }
            let n = s.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            let (v, m) = hex_prefix(&s);
            assert_eq!(m, n.min(17), "{}", s.escape_ascii());
            if n <= 16 {
                let want =
                    if n == 0 { 0 } else { u64::from_str_radix(std::str::from_utf8(&s[..n]).unwrap(), 16).unwrap() };
                assert_eq!(v, want, "{}", s.escape_ascii());
            }
        }
    }

    #[test]
    fn numbers() {
        fn num(s: &[u8], f: impl Fn(&mut Cur<'_>) -> Option<u64>) -> Option<u64> {
            f(&mut Cur::new(s))
        }
        assert_eq!(num(b"ffffffffffffffff", |c| c.hex()), Some(u64::MAX));
        assert_eq!(num(b"0ffffffffffffffff", |c| c.hex()), None);
        assert_eq!(num(b"1f x", |c| c.hex()), Some(0x1f));
        assert_eq!(num(b"1fg", |c| c.hex()), None);
        assert_eq!(num(b"", |c| c.hex()), None);
        assert_eq!(num(b"9999999999999999999", |c| c.dec()), Some(9_999_999_999_999_999_999));
        assert_eq!(num(b"10000000000000000000", |c| c.dec()), None);
        assert_eq!(num(b"0x10\t", |c| c.auto()), Some(16));
        assert_eq!(num(b"0x", |c| c.auto()), None);
        assert_eq!(num(b"12", |c| c.auto()), Some(12));
        assert_eq!(num(b"12", |c| c.hex_maybe_0x()), Some(0x12));
        assert_eq!(num(b"0X12", |c| c.hex_maybe_0x()), Some(0x12));
    }
}
