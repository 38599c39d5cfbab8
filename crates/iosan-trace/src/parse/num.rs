//! Hand-written number parsing on bytes.
//!
//! Every function takes the exact token (no surrounding whitespace), checks
//! every digit and every arithmetic step, and never panics. They are the only
//! number parsers the trace layer uses, so the bases accepted by each event
//! field are decided here and nowhere else:
//!
//! * [`dec_u64`]: decimal digits only (`%zu`, `%d` with a known sign).
//! * [`hex_u64`]: hexadecimal digits without a prefix (`%llx`, `%lx`).
//! * [`hex0x_u64`]: hexadecimal with a mandatory `0x`/`0X` prefix (`0x%llx`).
//! * [`auto_u64`]: `0x`-prefixed hexadecimal, otherwise decimal. Used where
//!   kernels drift between the two (kmem `pfn`) and for kprobe fetch args,
//!   whose print format the user chooses.
//! * [`auto_i64`]: like [`auto_u64`] with an optional leading `-`.

/// Why a number token was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumError {
    /// The token is empty (or only a prefix such as `0x` or `-`).
    Empty,
    /// A byte that is not a digit of the expected base.
    InvalidDigit,
    /// The value does not fit the target type.
    Overflow,
}

impl NumError {
    /// A short, stable description used in error messages.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            NumError::Empty => "empty number",
            NumError::InvalidDigit => "invalid digit",
            NumError::Overflow => "number out of range",
        }
    }
}

impl core::fmt::Display for NumError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Parses unsigned decimal digits.
///
/// # Errors
///
/// [`NumError::Empty`] for an empty token, [`NumError::InvalidDigit`] for a
/// non-digit byte, [`NumError::Overflow`] past `u64::MAX`.
#[inline]
pub fn dec_u64(s: &[u8]) -> Result<u64, NumError> {
    if s.is_empty() {
        return Err(NumError::Empty);
    }
    // Up to 19 digits cannot overflow a u64, so the common case skips the
    // checked arithmetic.
    if s.len() <= 19 {
        let mut v: u64 = 0;
        for &b in s {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return Err(NumError::InvalidDigit);
            }
            v = v * 10 + u64::from(d);
        }
        return Ok(v);
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return Err(NumError::InvalidDigit);
        }
        v = v.checked_mul(10).and_then(|v| v.checked_add(u64::from(d))).ok_or(NumError::Overflow)?;
    }
    Ok(v)
}

/// Parses unsigned decimal digits into a `u32`.
///
/// # Errors
///
/// As [`dec_u64`], with [`NumError::Overflow`] past `u32::MAX`.
#[inline]
pub fn dec_u32(s: &[u8]) -> Result<u32, NumError> {
    u32::try_from(dec_u64(s)?).map_err(|_| NumError::Overflow)
}

#[inline]
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses hexadecimal digits without a prefix. At most 16 digits are
/// accepted (the most a 64-bit `%llx` or `%016llx` prints), so a longer
/// token is an overflow even when it has leading zeros.
///
/// # Errors
///
/// [`NumError::Empty`], [`NumError::InvalidDigit`] or [`NumError::Overflow`].
#[inline]
pub fn hex_u64(s: &[u8]) -> Result<u64, NumError> {
    if s.is_empty() {
        return Err(NumError::Empty);
    }
    let (v, n) = super::scan::hex_prefix(s);
    if n == s.len() && n <= 16 {
        return Ok(v);
    }
    // The slow loop decides which error: an invalid digit anywhere wins
    // over the length.
    let mut v: u64 = 0;
    for &b in s {
        let d = hex_digit(b).ok_or(NumError::InvalidDigit)?;
        v = (v << 4) | u64::from(d);
    }
    if s.len() > 16 {
        return Err(NumError::Overflow);
    }
    Ok(v)
}

/// Strips a `0x` or `0X` prefix, if present.
#[inline]
#[must_use]
pub fn strip_0x(s: &[u8]) -> Option<&[u8]> {
    match s {
        [b'0', b'x' | b'X', rest @ ..] => Some(rest),
        _ => None,
    }
}

/// Parses `0x`-prefixed hexadecimal.
///
/// # Errors
///
/// [`NumError::InvalidDigit`] when the prefix is missing, otherwise as
/// [`hex_u64`].
#[inline]
pub fn hex0x_u64(s: &[u8]) -> Result<u64, NumError> {
    match strip_0x(s) {
        Some(rest) => hex_u64(rest),
        None if s.is_empty() => Err(NumError::Empty),
        None => Err(NumError::InvalidDigit),
    }
}

/// Parses `0x`-prefixed hexadecimal, or decimal when there is no prefix.
///
/// # Errors
///
/// As [`hex_u64`] or [`dec_u64`].
#[inline]
pub fn auto_u64(s: &[u8]) -> Result<u64, NumError> {
    match strip_0x(s) {
        Some(rest) => hex_u64(rest),
        None => dec_u64(s),
    }
}

/// Parses an optionally negative number, `0x`-hex or decimal. A hex value
/// above `i64::MAX` is taken as the two's complement bit pattern (a `u64`
/// kprobe fetch of a negative return value).
///
/// # Errors
///
/// As [`auto_u64`]; [`NumError::Overflow`] when a negative magnitude exceeds
/// `2^63`.
#[inline]
pub fn auto_i64(s: &[u8]) -> Result<i64, NumError> {
    match s.split_first() {
        Some((b'-', rest)) => {
            let m = auto_u64(rest)?;
            if m <= i64::MAX as u64 {
                Ok(-(m as i64))
            } else if m == 1u64 << 63 {
                Ok(i64::MIN)
            } else {
                Err(NumError::Overflow)
            }
        }
        _ => {
            if strip_0x(s).is_some() {
                Ok(auto_u64(s)? as i64)
            } else {
                i64::try_from(dec_u64(s)?).map_err(|_| NumError::Overflow)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal() {
        assert_eq!(dec_u64(b"0"), Ok(0));
        assert_eq!(dec_u64(b"16777216"), Ok(16_777_216));
        assert_eq!(dec_u64(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(dec_u64(b"18446744073709551616"), Err(NumError::Overflow));
        assert_eq!(dec_u64(b"99999999999999999999999"), Err(NumError::Overflow));
        assert_eq!(dec_u64(b""), Err(NumError::Empty));
        assert_eq!(dec_u64(b"12a"), Err(NumError::InvalidDigit));
        assert_eq!(dec_u64(b"-1"), Err(NumError::InvalidDigit));
        assert_eq!(dec_u32(b"4294967296"), Err(NumError::Overflow));
        assert_eq!(dec_u32(b"4294967295"), Ok(u32::MAX));
    }

    #[test]
    fn hex() {
        assert_eq!(hex_u64(b"ffffb0f8"), Ok(0xffff_b0f8));
        assert_eq!(hex_u64(b"FFFFFFFFFFFFFFFF"), Ok(u64::MAX));
        assert_eq!(hex_u64(b"00000000000000001"), Err(NumError::Overflow));
        assert_eq!(hex_u64(b"0000000000000001"), Ok(1));
        assert_eq!(hex_u64(b"10000000000000000"), Err(NumError::Overflow));
        assert_eq!(hex_u64(b"fg"), Err(NumError::InvalidDigit));
        assert_eq!(hex0x_u64(b"0x00000000ffff8000"), Ok(0xffff_8000));
        assert_eq!(hex0x_u64(b"0x"), Err(NumError::Empty));
        assert_eq!(hex0x_u64(b"1234"), Err(NumError::InvalidDigit));
        assert_eq!(auto_u64(b"0x100ec2"), Ok(0x100ec2));
        assert_eq!(auto_u64(b"1052354"), Ok(1_052_354));
    }

    #[test]
    fn signed() {
        assert_eq!(auto_i64(b"0"), Ok(0));
        assert_eq!(auto_i64(b"-22"), Ok(-22));
        assert_eq!(auto_i64(b"-0x10"), Ok(-16));
        assert_eq!(auto_i64(b"0xffffffffffffffea"), Ok(-22));
        assert_eq!(auto_i64(b"-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(auto_i64(b"-9223372036854775809"), Err(NumError::Overflow));
        assert_eq!(auto_i64(b"9223372036854775808"), Err(NumError::Overflow));
        assert_eq!(auto_i64(b"-"), Err(NumError::Empty));
    }
}
