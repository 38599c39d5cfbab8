//! Tokenizer for event bodies.
//!
//! A body is a sequence of blank-separated tokens. A token is either
//! `key=value` or a bare word. Values may be quoted (`dev="0000:00:02.0"`,
//! the quotes are removed), a brace array (`{0x1,0x2}`, kept with braces) or
//! a libtraceevent byte array (`ARRAY[00, 20, ...]`, kept with `ARRAY[`..`]`)
//! and then extend to their closing delimiter even across blanks. An
//! unterminated quoted or bracketed value extends to the end of the body.

/// One token of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tok<'a> {
    /// The key of `key=value`; empty for a bare word.
    pub key: &'a [u8],
    /// The value, or the whole bare word.
    pub val: &'a [u8],
}

use super::scan::{find_blank, find_blank_or_eq, is_blank};

/// Iterator over the tokens of a body.
#[derive(Debug, Clone)]
pub struct Toks<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Toks<'a> {
    /// Tokens of `s`.
    #[must_use]
    pub fn new(s: &'a [u8]) -> Self {
        Toks { s, i: 0 }
    }
}

impl<'a> Iterator for Toks<'a> {
    type Item = Tok<'a>;

    #[inline]
    fn next(&mut self) -> Option<Tok<'a>> {
        let s = self.s;
        let mut i = self.i;
        while s.get(i).is_some_and(|&b| is_blank(b)) {
            i += 1;
        }
        let Some(tail) = s.get(i..).filter(|t| !t.is_empty()) else {
            self.i = s.len();
            return None;
        };
        let start = i;
        let k = find_blank_or_eq(tail);
        if k == 0 || tail.get(k) != Some(&b'=') {
            // bare word (a leading '=' makes the whole token a bare word)
            let (val, _) = tail.split_at_checked(find_blank(tail)).unwrap_or((tail, &[]));
            self.i = start + val.len();
            return Some(Tok { key: &[], val });
        }
        let key = tail.get(..k).unwrap_or_default();
        let vstart = start + k + 1;
        let rest = tail.get(k + 1..).unwrap_or_default();
        let (val, next) = match rest.first() {
            Some(b'"') => {
                let inner = rest.get(1..).unwrap_or_default();
                match memchr::memchr(b'"', inner) {
                    Some(p) => (inner.get(..p).unwrap_or_default(), vstart + p + 2),
                    None => (inner, s.len()),
                }
            }
            Some(b'{') => delimited(rest, b'}', vstart, s.len()),
            Some(b'A') if rest.starts_with(b"ARRAY[") => delimited(rest, b']', vstart, s.len()),
            _ => {
                let j = find_blank(rest);
                (rest.get(..j).unwrap_or_default(), vstart + j)
            }
        };
        self.i = next;
        Some(Tok { key, val })
    }
}

/// A value from its opening delimiter up to and including `close`.
fn delimited(rest: &[u8], close: u8, vstart: usize, end: usize) -> (&[u8], usize) {
    match memchr::memchr(close, rest) {
        Some(p) => (rest.get(..=p).unwrap_or(rest), vstart + p + 1),
        None => (rest, end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &[u8]) -> Vec<(String, String)> {
        Toks::new(s).map(|t| (t.key.escape_ascii().to_string(), t.val.escape_ascii().to_string())).collect()
    }

    #[test]
    fn tokens() {
        assert_eq!(
            toks(b"IOMMU: iova=0x1 - 0x2 size=4096"),
            vec![
                ("".into(), "IOMMU:".into()),
                ("iova".into(), "0x1".into()),
                ("".into(), "-".into()),
                ("".into(), "0x2".into()),
                ("size".into(), "4096".into())
            ]
        );
        assert_eq!(
            toks(br#"dev="a b" x={0x1, 0x2} y=ARRAY[00, 01] attrs="#),
            vec![
                ("dev".into(), "a b".into()),
                ("x".into(), "{0x1, 0x2}".into()),
                ("y".into(), "ARRAY[00, 01]".into()),
                ("attrs".into(), "".into())
            ]
        );
        assert_eq!(toks(b"=x k=\"open"), vec![("".into(), "=x".into()), ("k".into(), "open".into())]);
        assert_eq!(toks(b"k={1,2"), vec![("k".into(), "{1,2".into())]);
        assert!(toks(b"   ").is_empty());
    }
}
