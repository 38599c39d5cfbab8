//! The one by-name field collector every source fills.
//!
//! An event kind's fields are described once ([`FieldSpec`]: the kernel's
//! field name, other names it has had or is printed under, its type, and
//! whether it is required). One collector holds a value per described field:
//! the text tokenizer puts printed tokens in it
//! ([`FieldValue::Text`]), a binary decoder the decoded values
//! ([`FieldValue::Unsigned`], [`FieldValue::Str`], ...). The typed getters
//! then read either kind of value the same way, so each event kind is
//! built by one function whatever the source.

use super::event::{ferr, Counted, DmaDirection, FieldError, FieldProblem, MAX_ARRAY_LEN, MAX_ORDER};
use super::num::{self, NumError};
use crate::field::{FieldLookup, FieldValue};

/// How a field is typed: how a printed token is read, and what a binary
/// value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// An unsigned integer printed as hex (`%llx`; a `0x` is tolerated).
    Hex,
    /// An unsigned integer printed as `0x`-hex or decimal (kmem `pfn`,
    /// kprobe fetch args).
    Auto,
    /// An unsigned integer printed in decimal (`%zu`).
    Dec,
    /// A signed integer (`%d`), decimal or `0x`-hex.
    Signed,
    /// A page-block order (decimal, at most [`MAX_ORDER`]).
    Order,
    /// A string (`char[]`, `__data_loc char[]`).
    Str,
    /// A value the replay keeps only as printed text (flag lists, hashed
    /// pointers): a binary source's number reads as empty.
    Printed,
    /// `__print_symbolic` of an integer: text as printed, a binary value
    /// named by the table (unknown values read as empty).
    Symbol(&'static [(u64, &'static str)]),
    /// `enum dma_data_direction`: symbolic in text, an integer in binary.
    Dir,
    /// An integer array: `{0x1,0x2}` in text, libtraceevent's `ARRAY[..]`
    /// byte dump (elements of the given byte width), or a binary array.
    Array(u8),
    /// `printed/total` (`nents=3/3`), text only.
    Counted,
    /// A boolean (`bool truncated`; text `truncated=1` or ` [TRUNCATED]`).
    Flag,
}

/// One field of an event kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// The name errors use: the printed key where text prints one, else the
    /// kernel's field name.
    pub name: &'static str,
    /// Other names of the same field: the kernel's `field:` name where it
    /// differs from the printed key (`dma_unmap_page` prints `dma_addr=`
    /// for the field `addr`), and names of other kernel versions.
    pub also: &'static [&'static str],
    /// Its type.
    pub ty: FieldType,
    /// An event without it is malformed.
    pub required: bool,
}

impl FieldSpec {
    /// A required field.
    #[must_use]
    pub const fn req(name: &'static str, ty: FieldType) -> Self {
        Self { name, also: &[], ty, required: true }
    }

    /// An optional field.
    #[must_use]
    pub const fn opt(name: &'static str, ty: FieldType) -> Self {
        Self { name, also: &[], ty, required: false }
    }

    /// The same field with other names.
    #[must_use]
    pub const fn also(self, also: &'static [&'static str]) -> Self {
        Self { also, ..self }
    }

    /// `key` names this field.
    #[inline]
    pub(crate) fn matches(&self, key: &[u8]) -> bool {
        eq(self.name.as_bytes(), key) || self.also.iter().any(|a| eq(a.as_bytes(), key))
    }
}

/// The most fields one event kind may describe.
pub const MAX_FIELDS: usize = 12;

/// The values of one event's described fields, by position in its spec.
pub(crate) struct Got<'a> {
    /// The event name errors report.
    pub(crate) event: &'static str,
    fields: &'static [FieldSpec],
    vals: [Option<FieldValue<'a>>; MAX_FIELDS],
}

impl<'a> Got<'a> {
    /// Empty, for `event` described by `fields`.
    #[inline]
    pub(crate) fn new(event: &'static str, fields: &'static [FieldSpec]) -> Self {
        Self { event, fields, vals: [None; MAX_FIELDS] }
    }

    /// Puts `v` in the field a printed `key` names; the first value wins.
    #[inline]
    pub(crate) fn put_key(&mut self, key: &[u8], v: FieldValue<'a>) {
        if let Some(i) = self.fields.iter().position(|f| f.matches(key)) {
            self.put(i, v);
        }
    }

    /// Puts `v` in field `i`; the first value wins.
    #[inline]
    pub(crate) fn put(&mut self, i: usize, v: FieldValue<'a>) {
        if let Some(slot @ None) = self.vals.get_mut(i) {
            *slot = Some(v);
        }
    }

    /// Puts `v` in the field whose spec name is `name`.
    #[inline]
    pub(crate) fn put_name(&mut self, name: &str, v: FieldValue<'a>) {
        if let Some(i) = self.index(name) {
            self.put(i, v);
        }
    }

    /// Fills every field from a binary source, by its names in order.
    pub(crate) fn fill(&mut self, lookup: &dyn FieldLookup<'a>) {
        for (f, slot) in self.fields.iter().zip(self.vals.iter_mut()) {
            *slot = lookup.field(f.name).or_else(|| f.also.iter().find_map(|a| lookup.field(a)));
        }
    }

    /// Every required field has a value.
    ///
    /// # Errors
    /// [`FieldProblem::Missing`] for the first required field without one.
    pub(crate) fn check_required(&self) -> Result<(), FieldError> {
        for (f, v) in self.fields.iter().zip(self.vals.iter()) {
            if f.required && v.is_none() {
                return Err(ferr(self.event, f.name, FieldProblem::Missing, &[]));
            }
        }
        // A spec longer than MAX_FIELDS cannot hold its tail: fail closed.
        match self.fields.get(MAX_FIELDS..) {
            Some([f, ..]) if f.required => Err(ferr(self.event, f.name, FieldProblem::Missing, &[])),
            _ => Ok(()),
        }
    }

    #[inline]
    fn index(&self, name: &str) -> Option<usize> {
        // The builders name fields with the same literals as the specs, which
        // usually share one address: try that before comparing bytes.
        self.fields
            .iter()
            .position(|f| core::ptr::eq(f.name, name))
            .or_else(|| self.fields.iter().position(|f| eq(f.name.as_bytes(), name.as_bytes())))
    }

    /// The raw value of field `name`, with its type.
    #[inline]
    fn get(&self, name: &'static str) -> Option<(FieldType, FieldValue<'a>)> {
        let i = self.index(name)?;
        let v = (*self.vals.get(i)?)?;
        Some((self.fields.get(i)?.ty, v))
    }

    /// The field has a value.
    #[inline]
    pub(crate) fn has(&self, name: &'static str) -> bool {
        self.get(name).is_some()
    }

    #[cold]
    fn missing(&self, name: &'static str) -> FieldError {
        ferr(self.event, name, FieldProblem::Missing, &[])
    }

    fn err(&self, name: &'static str, p: FieldProblem, v: FieldValue<'_>) -> FieldError {
        ferr(self.event, name, p, text_of(v))
    }

    /// An unsigned integer (a signed binary value is taken as its two's
    /// complement bit pattern, as `%lx` prints it).
    pub(crate) fn opt_u64(&self, name: &'static str) -> Result<Option<u64>, FieldError> {
        let Some((ty, v)) = self.get(name) else { return Ok(None) };
        match v {
            FieldValue::Unsigned(n) => Ok(Some(n)),
            FieldValue::Signed(n) => Ok(Some(n as u64)),
            FieldValue::Text(s) | FieldValue::Str(s) => {
                let r = match ty {
                    FieldType::Hex => hex_maybe_0x(s),
                    FieldType::Dec | FieldType::Order => num::dec_u64(s),
                    _ => num::auto_u64(s),
                };
                r.map(Some).map_err(|e| ferr(self.event, name, FieldProblem::Number(e), s))
            }
            FieldValue::Array(_) => Err(self.err(name, FieldProblem::WrongType, v)),
        }
    }

    /// A required unsigned integer.
    #[inline]
    pub(crate) fn u64(&self, name: &'static str) -> Result<u64, FieldError> {
        self.opt_u64(name)?.ok_or_else(|| self.missing(name))
    }

    /// An optional unsigned integer that must fit 32 bits.
    pub(crate) fn opt_u32(&self, name: &'static str) -> Result<Option<u32>, FieldError> {
        match self.opt_u64(name)? {
            None => Ok(None),
            Some(n) => u32::try_from(n).map(Some).map_err(|_| match self.get(name) {
                Some((_, v)) => self.err(name, FieldProblem::Number(NumError::Overflow), v),
                None => self.missing(name),
            }),
        }
    }

    /// A required unsigned integer that must fit 32 bits.
    #[inline]
    pub(crate) fn u32(&self, name: &'static str) -> Result<u32, FieldError> {
        self.opt_u32(name)?.ok_or_else(|| self.missing(name))
    }

    /// A signed integer (an unsigned binary value is taken as a bit pattern,
    /// as a `u64` kprobe fetch of a negative return value).
    pub(crate) fn opt_i64(&self, name: &'static str) -> Result<Option<i64>, FieldError> {
        let Some((_, v)) = self.get(name) else { return Ok(None) };
        match v {
            FieldValue::Signed(n) => Ok(Some(n)),
            FieldValue::Unsigned(n) => Ok(Some(n as i64)),
            FieldValue::Text(s) | FieldValue::Str(s) => {
                num::auto_i64(s).map(Some).map_err(|e| ferr(self.event, name, FieldProblem::Number(e), s))
            }
            FieldValue::Array(_) => Err(self.err(name, FieldProblem::WrongType, v)),
        }
    }

    /// A required signed integer.
    #[inline]
    pub(crate) fn i64(&self, name: &'static str) -> Result<i64, FieldError> {
        self.opt_i64(name)?.ok_or_else(|| self.missing(name))
    }

    /// A page-block order, at most [`MAX_ORDER`].
    pub(crate) fn opt_order(&self, name: &'static str) -> Result<Option<u32>, FieldError> {
        match self.opt_u64(name)? {
            None => Ok(None),
            Some(n) => match u32::try_from(n) {
                Ok(o) if o <= MAX_ORDER => Ok(Some(o)),
                _ => Err(match self.get(name) {
                    Some((_, v)) => self.err(name, FieldProblem::OrderTooLarge, v),
                    None => self.missing(name),
                }),
            },
        }
    }

    /// A required order.
    #[inline]
    pub(crate) fn order(&self, name: &'static str) -> Result<u32, FieldError> {
        self.opt_order(name)?.ok_or_else(|| self.missing(name))
    }

    /// A string.
    pub(crate) fn opt_str(&self, name: &'static str) -> Result<Option<&'a [u8]>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some((_, FieldValue::Text(s) | FieldValue::Str(s))) => Ok(Some(s)),
            Some((_, v)) => Err(self.err(name, FieldProblem::WrongType, v)),
        }
    }

    /// A required string.
    #[inline]
    pub(crate) fn str(&self, name: &'static str) -> Result<&'a [u8], FieldError> {
        self.opt_str(name)?.ok_or_else(|| self.missing(name))
    }

    /// A value as printed: empty when absent, or a number a binary source
    /// gave (a [`FieldType::Symbol`] number reads as its name).
    pub(crate) fn printed(&self, name: &'static str) -> &'a [u8] {
        match self.get(name) {
            Some((_, FieldValue::Text(s) | FieldValue::Str(s))) => s,
            Some((FieldType::Symbol(table), FieldValue::Unsigned(n))) => symbol(table, n),
            Some((FieldType::Symbol(table), FieldValue::Signed(n))) => symbol(table, n as u64),
            _ => &[],
        }
    }

    /// A DMA direction.
    pub(crate) fn dir(&self, name: &'static str) -> Result<DmaDirection, FieldError> {
        self.opt_dir(name)?.ok_or_else(|| self.missing(name))
    }

    /// A DMA direction, when present.
    pub(crate) fn opt_dir(&self, name: &'static str) -> Result<Option<DmaDirection>, FieldError> {
        let Some((_, v)) = self.get(name) else { return Ok(None) };
        let d = match v {
            FieldValue::Unsigned(n) => direction_number(n),
            FieldValue::Signed(n) => u64::try_from(n).ok().and_then(direction_number),
            FieldValue::Text(s) | FieldValue::Str(s) => direction_text(s),
            FieldValue::Array(_) => None,
        };
        d.map(Some).ok_or_else(|| self.err(name, FieldProblem::UnknownDirection, v))
    }

    /// A boolean; absent reads as false.
    pub(crate) fn flag(&self, name: &'static str) -> Result<bool, FieldError> {
        Ok(self.opt_u64(name)?.is_some_and(|n| n != 0))
    }

    /// `printed/total`, when present.
    pub(crate) fn counted(&self, name: &'static str) -> Result<Option<Counted>, FieldError> {
        let Some((_, v)) = self.get(name) else { return Ok(None) };
        let s = match v {
            FieldValue::Text(s) | FieldValue::Str(s) => s,
            _ => return Err(self.err(name, FieldProblem::WrongType, v)),
        };
        let bad = |p| ferr(self.event, name, p, s);
        let slash = memchr::memchr(b'/', s).ok_or_else(|| bad(FieldProblem::Number(NumError::InvalidDigit)))?;
        let part = |p: Option<&[u8]>| -> Result<u32, FieldError> {
            let p = p.unwrap_or_default();
            let n = num::dec_u64(p).map_err(|e| ferr(self.event, name, FieldProblem::Number(e), p))?;
            u32::try_from(n).map_err(|_| ferr(self.event, name, FieldProblem::Number(NumError::Overflow), p))
        };
        Ok(Some(Counted { printed: part(s.get(..slash))?, total: part(s.get(slash + 1..))? }))
    }

    /// A required integer array, at most [`MAX_ARRAY_LEN`] elements.
    pub(crate) fn array(&self, name: &'static str) -> Result<Vec<u64>, FieldError> {
        let Some((ty, v)) = self.get(name) else { return Err(self.missing(name)) };
        match v {
            FieldValue::Array(a) => {
                if a.len() > MAX_ARRAY_LEN {
                    return Err(self.err(name, FieldProblem::TooManyElements, v));
                }
                Ok(a.iter().collect())
            }
            FieldValue::Text(s) | FieldValue::Str(s) => {
                let width = match ty {
                    FieldType::Array(w) => usize::from(w),
                    _ => 8,
                };
                text_array(self.event, name, s, width)
            }
            _ => Err(self.err(name, FieldProblem::WrongType, v)),
        }
    }
}

/// Field names are short: a byte loop beats a `memcmp` call.
#[inline(always)]
fn eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

fn text_of<'v>(v: FieldValue<'v>) -> &'v [u8] {
    match v {
        FieldValue::Text(s) | FieldValue::Str(s) => s,
        _ => &[],
    }
}

fn symbol(table: &'static [(u64, &'static str)], n: u64) -> &'static [u8] {
    table.iter().find(|(k, _)| *k == n).map_or(&[], |(_, s)| s.as_bytes())
}

/// Hex printed with `%llx`; a stray `0x` prefix is tolerated.
#[inline]
pub(crate) fn hex_maybe_0x(s: &[u8]) -> Result<u64, NumError> {
    num::hex_u64(num::strip_0x(s).unwrap_or(s))
}

/// `enum dma_data_direction` by value.
#[inline]
pub(crate) fn direction_number(n: u64) -> Option<DmaDirection> {
    match n {
        0 => Some(DmaDirection::Bidirectional),
        1 => Some(DmaDirection::ToDevice),
        2 => Some(DmaDirection::FromDevice),
        3 => Some(DmaDirection::None),
        _ => None,
    }
}

/// `enum dma_data_direction` as `__print_symbolic` prints it (or its
/// number, as libtraceevent's raw dump does).
#[inline]
pub(crate) fn direction_text(v: &[u8]) -> Option<DmaDirection> {
    match v {
        b"BIDIRECTIONAL" | b"0" => Some(DmaDirection::Bidirectional),
        b"TO_DEVICE" | b"1" => Some(DmaDirection::ToDevice),
        b"FROM_DEVICE" | b"2" => Some(DmaDirection::FromDevice),
        b"NONE" | b"3" => Some(DmaDirection::None),
        _ => None,
    }
}

/// Parses `{0x1,0x2}` (kernel `__print_array`), or `ARRAY[b0, b1, ...]`
/// (libtraceevent raw bytes, little-endian elements of `width` bytes).
fn text_array(event: &'static str, field: &'static str, v: &[u8], width: usize) -> Result<Vec<u64>, FieldError> {
    let bad = |p| ferr(event, field, p, v);
    if let Some(inner) = v.strip_prefix(b"{") {
        let inner = inner.strip_suffix(b"}").ok_or_else(|| bad(FieldProblem::BadArray))?;
        let mut out = Vec::new();
        if inner.iter().all(|&b| b == b' ') {
            return Ok(out);
        }
        for el in inner.split(|&b| b == b',') {
            if out.len() >= MAX_ARRAY_LEN {
                return Err(bad(FieldProblem::TooManyElements));
            }
            let el = trim_blanks(el);
            out.push(num::auto_u64(el).map_err(|e| ferr(event, field, FieldProblem::Number(e), el))?);
        }
        return Ok(out);
    }
    if let Some(inner) = v.strip_prefix(b"ARRAY[") {
        // 1..=8 bytes per element keeps the shifts below 64.
        let width = width.clamp(1, 8);
        let inner = inner.strip_suffix(b"]").ok_or_else(|| bad(FieldProblem::BadArray))?;
        let mut out = Vec::new();
        let mut cur: u64 = 0;
        let mut n = 0usize;
        if inner.iter().all(|&b| b == b' ') {
            return Ok(out);
        }
        for el in inner.split(|&b| b == b',') {
            let el = trim_blanks(el);
            let byte = num::hex_u64(el).map_err(|e| ferr(event, field, FieldProblem::Number(e), el))?;
            if byte > 0xff {
                return Err(ferr(event, field, FieldProblem::Number(NumError::Overflow), el));
            }
            let shift = u32::try_from((n % width) * 8).unwrap_or(0);
            cur |= byte << shift;
            n += 1;
            if n % width == 0 {
                if out.len() >= MAX_ARRAY_LEN {
                    return Err(bad(FieldProblem::TooManyElements));
                }
                out.push(cur);
                cur = 0;
            }
        }
        if n % width != 0 {
            return Err(bad(FieldProblem::BadArray));
        }
        return Ok(out);
    }
    Err(bad(FieldProblem::BadArray))
}

fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let Some((b' ', r)) = s.split_first() {
        s = r;
    }
    while let Some((b' ', r)) = s.split_last() {
        s = r;
    }
    s
}
