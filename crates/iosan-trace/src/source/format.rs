//! tracefs `format` files and the binary field decoder.
//!
//! A `format` file (`events/<system>/<event>/format`, written by the
//! kernel's `trace_format_open`/`f_show`) names an event, gives the ID that
//! its records carry in `common_type`, and lists every field of its record
//! with byte offset, size and signedness. trace.dat and perf.data carry
//! these texts verbatim, so one parser and one decoder serve both.
//!
//! Conventions: offsets and sizes are bytes from the start of the record
//! (the `common_type` field is at offset 0); integers are read in the
//! file's byte order; strings are returned without their NUL.

use crate::field::{FieldLookup, FieldValue, IntArray};
use crate::parse::event::{Event, FieldError};
use crate::parse::plan::{event_from_plan, FormatPlan, IndexedFields};

/// How a field's bytes are laid out, derived from its declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A scalar integer (or pointer, enum, bool) of 1, 2, 4 or 8 bytes.
    Int,
    /// `char name[N]`: a NUL-padded string inline in the record.
    CharArray,
    /// `TYPE name[N]`: `N` integers of `elem_size` bytes inline.
    FixedArray {
        /// Bytes per element.
        elem_size: u8,
    },
    /// `__data_loc TYPE[] name` / `__rel_loc TYPE[] name`: a 4-byte (or
    /// 2-byte) locator to bytes elsewhere in the record.
    Dynamic {
        /// Bytes per element (1 for strings).
        elem_size: u8,
        /// Element type is `char`: decode as a string.
        is_str: bool,
        /// `__rel_loc`: the offset counts from the end of this field.
        relative: bool,
    },
    /// Anything else (an inline struct, an odd size): its raw bytes.
    Bytes,
}

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldFormat {
    /// The field's name (`iova`, `common_pid`).
    pub name: String,
    /// The declared type, without the name (`u64`, `__data_loc char[]`).
    pub type_name: String,
    /// Byte offset in the record.
    pub offset: u32,
    /// Byte size in the record.
    pub size: u32,
    /// `signed:1`.
    pub signed: bool,
    /// Layout derived from the declaration.
    pub kind: FieldKind,
}

/// A parsed `format` file: what the kernel's `struct trace_event_call`
/// describes of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFormat {
    /// The event's system (`iommu`, `kmem`, `ftrace`), given by the container.
    pub system: String,
    /// `name:`.
    pub name: String,
    /// `ID:`, the value of `common_type` in its records.
    pub id: u32,
    /// All fields, common ones first, in file order.
    pub fields: Vec<FieldFormat>,
    /// How many leading fields are common (`common_*`).
    pub common_count: usize,
    /// `print fmt:` text (not interpreted).
    pub print_fmt: String,
    /// Its event kind and where the kind's fields are, decided at parse time.
    plan: FormatPlan,
    /// Position of `__probe_ip` (a kprobe's site), if it has one.
    probe_ip: Option<usize>,
}

/// Why a format file could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// No `name:` line.
    #[error("format file has no `name:` line")]
    NoName,
    /// No `ID:` line or an ID that is not a number.
    #[error("format file of `{0}` has no valid `ID:` line")]
    NoId(String),
    /// A `field:` line without a number for `what`.
    #[error("format file of `{event}`: field line {line} has no valid `{what}`")]
    BadField {
        /// The event.
        event: String,
        /// 1-based line in the format text.
        line: usize,
        /// `offset`, `size` or `field`.
        what: &'static str,
    },
}

impl EventFormat {
    /// Parses the text of a `format` file; `long_size` (4 or 8) sizes
    /// `long` elements of dynamic arrays.
    ///
    /// # Errors
    /// [`FormatError`] when `name:`, `ID:` or a field's offset/size is
    /// missing or not a number. Lines the parser does not know are ignored.
    pub fn parse(system: &str, text: &[u8], long_size: u8) -> Result<Self, FormatError> {
        let text = String::from_utf8_lossy(text);
        let mut name = None;
        let mut id = None;
        let mut fields = Vec::new();
        let mut common_count = 0;
        let mut print_fmt = String::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if let Some(v) = t.strip_prefix("name:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = t.strip_prefix("ID:") {
                id = v.trim().parse::<u32>().ok();
            } else if let Some(v) = t.strip_prefix("print fmt:") {
                print_fmt = v.trim().to_string();
            } else if t.starts_with("field:") || t.starts_with("field ") {
                let event = || name.clone().unwrap_or_default();
                let f = parse_field(t, long_size).map_err(|what| FormatError::BadField {
                    event: event(),
                    line: i + 1,
                    what,
                })?;
                if f.name.starts_with("common_") && fields.len() == common_count {
                    common_count += 1;
                }
                fields.push(f);
            }
        }
        let name = name.ok_or(FormatError::NoName)?;
        let id = id.ok_or_else(|| FormatError::NoId(name.clone()))?;
        let plan =
            FormatPlan::new(Some(system.as_bytes()), name.as_bytes(), &|n| fields.iter().position(|f| f.name == n));
        let probe_ip = fields.iter().position(|f| f.name == "__probe_ip");
        Ok(Self { system: system.to_string(), name, id, fields, common_count, print_fmt, plan, probe_ip })
    }

    /// The field called `name`.
    #[must_use]
    #[inline]
    pub fn field(&self, name: &str) -> Option<&FieldFormat> {
        // Length and last byte first: most candidates fail without a memcmp.
        let (n, last) = (name.len(), name.as_bytes().last());
        self.fields.iter().find(|f| f.name.len() == n && f.name.as_bytes().last() == last && f.name == name)
    }

    /// The record's bytes as fields (`data` starts at `common_type`).
    #[must_use]
    pub fn fields_of<'a>(&'a self, data: &'a [u8], big_endian: bool) -> RecordFields<'a> {
        RecordFields { format: self, data, big_endian, probe_func: None }
    }
}

/// Parses `field:TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;`.
fn parse_field(line: &str, long_size: u8) -> Result<FieldFormat, &'static str> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for part in line.split(';') {
        let p = part.trim();
        if let Some(v) = p.strip_prefix("field:") {
            decl = Some(v.trim());
        } else if let Some(v) = p.strip_prefix("offset:") {
            offset = v.trim().parse::<u32>().ok();
        } else if let Some(v) = p.strip_prefix("size:") {
            size = v.trim().parse::<u32>().ok();
        } else if let Some(v) = p.strip_prefix("signed:") {
            signed = v.trim() == "1";
        }
    }
    let decl = decl.ok_or("field")?;
    let offset = offset.ok_or("offset")?;
    let size = size.ok_or("size")?;
    let (type_name, name, count) = split_decl(decl).ok_or("field")?;
    let kind = classify(&type_name, count, size, long_size);
    Ok(FieldFormat { name, type_name, offset, size, signed, kind })
}

/// Splits a declaration into (type, name, array count): `u64 iova`,
/// `char comm[16]`, `__data_loc char[] name`, `unsigned long caller[8]`.
/// The count is `Some(None)` for `[]` or a non-numeric bound.
fn split_decl(decl: &str) -> Option<(String, String, Option<Option<u32>>)> {
    let decl = decl.trim();
    let (head, count) = match decl.strip_suffix(']') {
        Some(d) => {
            let open = d.rfind('[')?;
            let inner = d.get(open + 1..)?;
            (d.get(..open)?, Some(inner.trim().parse::<u32>().ok()))
        }
        None => (decl, None),
    };
    let head = head.trim_end();
    let split = head.rfind(|c: char| c.is_whitespace() || c == '*').map_or(0, |i| i + 1);
    let name = head.get(split..)?.trim();
    if name.is_empty() {
        return None;
    }
    let type_name = head.get(..split)?.trim().to_string();
    Some((type_name, name.to_string(), count))
}

/// Bytes of one element of `ty`, for arrays whose size says nothing.
fn elem_size_of(ty: &str, long_size: u8) -> u8 {
    let t = ty.trim_end_matches("[]").trim();
    let t = t.strip_prefix("const ").unwrap_or(t);
    if t.contains('*') {
        return long_size;
    }
    match t {
        "char" | "unsigned char" | "signed char" | "u8" | "s8" | "bool" | "__u8" | "__s8" => 1,
        "short" | "unsigned short" | "u16" | "s16" | "__u16" | "__s16" | "__le16" | "__be16" => 2,
        "u64" | "s64" | "__u64" | "__s64" | "long long" | "unsigned long long" | "__le64" | "__be64" => 8,
        "long" | "unsigned long" | "size_t" | "ssize_t" | "dma_addr_t" | "phys_addr_t" => long_size,
        _ => 4,
    }
}

fn is_char(ty: &str) -> bool {
    let t = ty.trim_end_matches("[]").trim();
    let t = t.strip_prefix("const ").unwrap_or(t);
    t == "char"
}

fn classify(ty: &str, count: Option<Option<u32>>, size: u32, long_size: u8) -> FieldKind {
    let dynamic =
        ty.strip_prefix("__data_loc").map(|t| (t, false)).or_else(|| ty.strip_prefix("__rel_loc").map(|t| (t, true)));
    if let Some((elem, relative)) = dynamic {
        let elem = elem.trim();
        return FieldKind::Dynamic { elem_size: elem_size_of(elem, long_size), is_str: is_char(elem), relative };
    }
    match count {
        Some(n) => {
            if is_char(ty) {
                return FieldKind::CharArray;
            }
            let elem = match n {
                Some(n) if n > 0 && size % n == 0 && matches!(size / n, 1 | 2 | 4 | 8) => size / n,
                _ => u32::from(elem_size_of(ty, long_size)),
            };
            FieldKind::FixedArray { elem_size: u8::try_from(elem).unwrap_or(1) }
        }
        None if matches!(size, 1 | 2 | 4 | 8) => FieldKind::Int,
        None => FieldKind::Bytes,
    }
}

/// Reads an unsigned integer of 1..=8 bytes in the given order.
#[inline]
#[must_use]
pub fn read_uint(b: &[u8], big_endian: bool) -> u64 {
    // The sizes fields have, as single loads.
    macro_rules! whole {
        ($t:ty) => {
            if let Ok(a) = b.try_into() {
                return u64::from(if big_endian { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) });
            }
        };
    }
    match b.len() {
        8 => whole!(u64),
        4 => whole!(u32),
        2 => whole!(u16),
        1 => whole!(u8),
        _ => {}
    }
    let mut v = 0u64;
    if big_endian {
        for &x in b {
            v = (v << 8) | u64::from(x);
        }
    } else {
        for &x in b.iter().rev() {
            v = (v << 8) | u64::from(x);
        }
    }
    v
}

/// The fields of one binary record, decoded on demand by its format:
/// the [`FieldLookup`] a binary source hands to the event model.
#[derive(Clone, Copy, Debug)]
pub struct RecordFields<'a> {
    format: &'a EventFormat,
    data: &'a [u8],
    big_endian: bool,
    probe_func: Option<&'a [u8]>,
}

impl<'a> RecordFields<'a> {
    /// Adds the `__probe_func` pseudo-field (the symbol of `__probe_ip`).
    #[must_use]
    pub fn with_probe_func(mut self, func: Option<&'a [u8]>) -> Self {
        self.probe_func = func;
        self
    }

    /// The record's bytes.
    #[must_use]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Decodes field `f` (of this record's format). `None` when the record
    /// is too short for it or a locator points outside the record.
    #[must_use]
    #[inline]
    pub fn decode(&self, f: &FieldFormat) -> Option<FieldValue<'a>> {
        let start = usize::try_from(f.offset).ok()?;
        if f.kind == FieldKind::Int {
            // Most fields: one load of a fixed size.
            let be = self.big_endian;
            let (v, bits) = match f.size {
                8 => (
                    self.word::<8>(start).map(|a| if be { u64::from_be_bytes(a) } else { u64::from_le_bytes(a) })?,
                    64,
                ),
                4 => (
                    self.word::<4>(start)
                        .map(|a| if be { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) })?
                        .into(),
                    32,
                ),
                2 => (
                    self.word::<2>(start)
                        .map(|a| if be { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) })?
                        .into(),
                    16,
                ),
                1 => (u8::from_ne_bytes(self.word::<1>(start)?).into(), 8),
                _ => return self.decode_any(f, start),
            };
            return Some(if f.signed {
                let shift = 64 - bits;
                FieldValue::Signed(((v << shift) as i64) >> shift)
            } else {
                FieldValue::Unsigned(v)
            });
        }
        self.decode_any(f, start)
    }

    /// `N` bytes at `start`, if the record holds them.
    #[inline]
    fn word<const N: usize>(&self, start: usize) -> Option<[u8; N]> {
        self.data.get(start..)?.first_chunk::<N>().copied()
    }

    /// [`Self::decode`] of any kind of field starting at `start`.
    fn decode_any(&self, f: &FieldFormat, start: usize) -> Option<FieldValue<'a>> {
        // A flexible array (`char buf[]`, size 0) runs to the record's end.
        let flexible = f.size == 0 && matches!(f.kind, FieldKind::CharArray | FieldKind::FixedArray { .. });
        let end =
            if flexible { self.data.len().max(start) } else { start.checked_add(usize::try_from(f.size).ok()?)? };
        let raw = self.data.get(start..end)?;
        let be = self.big_endian;
        Some(match f.kind {
            FieldKind::Int => {
                let v = read_uint(raw, be);
                if f.signed {
                    let shift = 64 - 8 * raw.len() as u32;
                    FieldValue::Signed(((v << shift) as i64) >> shift)
                } else {
                    FieldValue::Unsigned(v)
                }
            }
            FieldKind::CharArray => FieldValue::Str(trim_nul(raw)),
            FieldKind::FixedArray { elem_size } => {
                FieldValue::Array(IntArray { bytes: raw, elem_size, big_endian: be, signed: f.signed })
            }
            FieldKind::Dynamic { elem_size, is_str, relative } => {
                let loc = read_uint(raw, be);
                // A 4-byte locator is (len << 16) | offset; a 2-byte one is
                // only an offset and the data runs to the end of the record.
                let (off, len) = if raw.len() == 4 {
                    ((loc & 0xffff) as usize, Some((loc >> 16) as usize))
                } else {
                    (loc as usize, None)
                };
                let base = if relative { end } else { 0 };
                let from = base.checked_add(off)?;
                let to = match len {
                    Some(l) => from.checked_add(l)?,
                    None => self.data.len(),
                };
                let bytes = self.data.get(from..to)?;
                if is_str {
                    FieldValue::Str(trim_nul(bytes))
                } else {
                    FieldValue::Array(IntArray {
                        bytes,
                        elem_size,
                        big_endian: be,
                        signed: is_signed_type(&f.type_name),
                    })
                }
            }
            FieldKind::Bytes => FieldValue::Array(IntArray { bytes: raw, elem_size: 1, big_endian: be, signed: false }),
        })
    }

    /// `__probe_ip` (a kprobe's site) as [`Self::uint`] reads it, without a
    /// lookup by name.
    #[must_use]
    pub fn probe_ip(&self) -> Option<u64> {
        match self.decode(self.format.fields.get(self.format.probe_ip?)?)? {
            FieldValue::Unsigned(v) => Some(v),
            FieldValue::Signed(v) => Some(v as u64),
            _ => None,
        }
    }

    /// An integer field's value widened to u64 (signed values sign-extended).
    #[must_use]
    pub fn uint(&self, name: &str) -> Option<u64> {
        match self.field(name)? {
            FieldValue::Unsigned(v) => Some(v),
            FieldValue::Signed(v) => Some(v as u64),
            _ => None,
        }
    }
}

fn is_signed_type(ty: &str) -> bool {
    let t = ty.trim_start_matches("__data_loc").trim_start_matches("__rel_loc").trim().trim_end_matches("[]").trim();
    matches!(t, "s8" | "s16" | "s32" | "s64" | "int" | "long" | "short" | "long long" | "signed char")
}

fn trim_nul(b: &[u8]) -> &[u8] {
    // Most are short (device names, task names): a plain scan costs less
    // than memchr's vector set-up.
    let nul = if b.len() <= 32 { b.iter().position(|&c| c == 0) } else { memchr::memchr(0, b) };
    match nul {
        Some(i) => b.get(..i).unwrap_or(b),
        None => b,
    }
}

impl<'a> RecordFields<'a> {
    /// The record's event, as [`crate::parse::event_from_fields`] reads it,
    /// with the field positions its format decided once.
    ///
    /// # Errors
    /// As [`crate::parse::event_from_fields`].
    pub fn event(&self) -> Result<Option<Event<'a>>, FieldError> {
        event_from_plan(&self.format.plan, self)
    }
}

impl<'a> IndexedFields<'a> for RecordFields<'a> {
    fn at(&self, i: usize) -> Option<FieldValue<'a>> {
        self.format.fields.get(i).and_then(|f| self.decode(f))
    }
    fn probe_func(&self) -> Option<&'a [u8]> {
        self.probe_func
    }
}

impl<'a> FieldLookup<'a> for RecordFields<'a> {
    fn field(&self, name: &str) -> Option<FieldValue<'a>> {
        // A return probe's own `__probe_func` (an address) shows when no
        // symbol was found for it.
        if let (Some(func), "__probe_func") = (self.probe_func, name) {
            return Some(FieldValue::Str(func));
        }
        let f = self.format.field(name)?;
        self.decode(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "name: map\nID: 1124\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:u64 iova;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:__data_loc char[] dev;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:char comm[8];\toffset:20;\tsize:8;\tsigned:0;\n\
\tfield:__data_loc u64[] addrs;\toffset:28;\tsize:4;\tsigned:0;\n\
\tfield:unsigned long caller[2];\toffset:32;\tsize:16;\tsigned:0;\n\
\tfield:s16 delta;\toffset:48;\tsize:2;\tsigned:1;\n\
\tfield:__rel_loc char[] rel;\toffset:50;\tsize:4;\tsigned:0;\n\n\
print fmt: \"iova=%llx\", REC->iova\n";

    fn record() -> Vec<u8> {
        let mut r = vec![0u8; 54];
        r[0..2].copy_from_slice(&1124u16.to_le_bytes());
        r[2] = 0x08;
        r[4..8].copy_from_slice(&(-3i32).to_le_bytes());
        r[8..16].copy_from_slice(&0xfffb_e000u64.to_le_bytes());
        r[20..25].copy_from_slice(b"init\0");
        r[32..40].copy_from_slice(&0x1111u64.to_le_bytes());
        r[40..48].copy_from_slice(&0x2222u64.to_le_bytes());
        r[48..50].copy_from_slice(&(-2i16).to_le_bytes());
        // dev string at 54 (len 4 with NUL), addrs at 58 (2 x u64), rel at 74.
        let dev_off = r.len() as u32;
        r.extend_from_slice(b"abc\0");
        let addrs_off = r.len() as u32;
        r.extend_from_slice(&7u64.to_le_bytes());
        r.extend_from_slice(&9u64.to_le_bytes());
        let rel_off = r.len() as u32 - 54;
        r.extend_from_slice(b"xy\0");
        r[16..20].copy_from_slice(&((4 << 16) | dev_off).to_le_bytes());
        r[28..32].copy_from_slice(&((16 << 16) | addrs_off).to_le_bytes());
        r[50..54].copy_from_slice(&((3 << 16) | rel_off).to_le_bytes());
        r
    }

    /// A kretprobe as the kernel formats it: `__probe_func` and
    /// `__probe_ret_ip` are addresses.
    const RET_PROBE: &str = "name: iommu_map_ret\nID: 1500\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:unsigned long __probe_func;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:unsigned long __probe_ret_ip;\toffset:16;\tsize:8;\tsigned:0;\n\
\tfield:s32 ret;\toffset:24;\tsize:4;\tsigned:1;\n\n\
print fmt: \"(%lx <- %lx) ret=%d\", REC->__probe_func, REC->__probe_ret_ip, REC->ret\n";

    #[test]
    fn a_return_probe_keeps_its_function_address_without_a_symbol() {
        let f = EventFormat::parse("iosan", RET_PROBE.as_bytes(), 8).unwrap();
        let mut r = vec![0u8; 28];
        r[0..2].copy_from_slice(&1500u16.to_le_bytes());
        r[8..16].copy_from_slice(&0xffff_ffff_8123_4560u64.to_le_bytes());
        let v = f.fields_of(&r, false);
        // perf.data carries no kallsyms: the address must still show
        assert_eq!(v.field("__probe_func"), Some(FieldValue::Unsigned(0xffff_ffff_8123_4560)));
        let v = v.with_probe_func(Some(b"__iommu_map"));
        assert_eq!(v.field("__probe_func"), Some(FieldValue::Str(b"__iommu_map")));
    }

    #[test]
    fn parses_every_field_kind() {
        let f = EventFormat::parse("iommu", MAP.as_bytes(), 8).unwrap();
        assert_eq!((f.name.as_str(), f.id, f.common_count, f.fields.len()), ("map", 1124, 4, 11));
        assert_eq!(f.field("iova").unwrap().kind, FieldKind::Int);
        assert_eq!(f.field("dev").unwrap().kind, FieldKind::Dynamic { elem_size: 1, is_str: true, relative: false });
        assert_eq!(f.field("comm").unwrap().kind, FieldKind::CharArray);
        assert_eq!(f.field("caller").unwrap().kind, FieldKind::FixedArray { elem_size: 8 });
        assert_eq!(f.field("addrs").unwrap().kind, FieldKind::Dynamic { elem_size: 8, is_str: false, relative: false });
        assert_eq!(f.field("rel").unwrap().kind, FieldKind::Dynamic { elem_size: 1, is_str: true, relative: true });
        assert_eq!(f.print_fmt, "\"iova=%llx\", REC->iova");
    }

    #[test]
    fn decodes_every_field_kind() {
        let f = EventFormat::parse("iommu", MAP.as_bytes(), 8).unwrap();
        let r = record();
        let v = f.fields_of(&r, false);
        assert_eq!(v.field("common_type"), Some(FieldValue::Unsigned(1124)));
        assert_eq!(v.field("common_pid"), Some(FieldValue::Signed(-3)));
        assert_eq!(v.field("iova"), Some(FieldValue::Unsigned(0xfffb_e000)));
        assert_eq!(v.field("dev"), Some(FieldValue::Str(b"abc")));
        assert_eq!(v.field("comm"), Some(FieldValue::Str(b"init")));
        assert_eq!(v.field("delta"), Some(FieldValue::Signed(-2)));
        assert_eq!(v.field("rel"), Some(FieldValue::Str(b"xy")));
        let Some(FieldValue::Array(a)) = v.field("addrs") else { panic!("addrs") };
        assert_eq!(a.iter().collect::<Vec<_>>(), [7, 9]);
        let Some(FieldValue::Array(c)) = v.field("caller") else { panic!("caller") };
        assert_eq!(c.iter().collect::<Vec<_>>(), [0x1111, 0x2222]);
        assert_eq!(v.field("nope"), None);
        assert_eq!(v.field("__probe_func"), None);
        assert_eq!(v.with_probe_func(Some(b"f")).field("__probe_func"), Some(FieldValue::Str(b"f")));
    }

    #[test]
    fn short_records_and_lying_locators_give_none() {
        let f = EventFormat::parse("iommu", MAP.as_bytes(), 8).unwrap();
        let mut r = record();
        r[16..20].copy_from_slice(&((400u32 << 16) | 54).to_le_bytes());
        let v = f.fields_of(&r, false);
        assert_eq!(v.field("dev"), None);
        let short = f.fields_of(&r[..12], false);
        assert_eq!(short.field("iova"), None);
        assert_eq!(short.field("common_pid"), Some(FieldValue::Signed(-3)));
    }

    #[test]
    fn flexible_arrays_run_to_the_end_of_the_record() {
        let fmt = "name: print\nID: 5\nformat:\n\tfield:unsigned long ip;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:char buf[];\toffset:16;\tsize:0;\tsigned:0;\n\tfield:u32 words[];\toffset:16;\tsize:0;\tsigned:0;\n";
        let f = EventFormat::parse("ftrace", fmt.as_bytes(), 8).unwrap();
        let mut r = vec![0u8; 16];
        r.extend_from_slice(b"LAB: hi\n\0\0\0");
        let v = f.fields_of(&r, false);
        assert_eq!(v.field("buf"), Some(FieldValue::Str(b"LAB: hi\n")));
        let Some(FieldValue::Array(a)) = v.field("words") else { panic!("words") };
        assert_eq!(a.len(), 2, "11 bytes hold two whole u32s");
        assert_eq!(f.fields_of(&r[..10], false).field("buf"), None);
    }

    #[test]
    fn big_endian_and_errors() {
        let f = EventFormat::parse("iommu", MAP.as_bytes(), 8).unwrap();
        let mut r = vec![0u8; 16];
        r[8..16].copy_from_slice(&0x1234u64.to_be_bytes());
        assert_eq!(f.fields_of(&r, true).field("iova"), Some(FieldValue::Unsigned(0x1234)));
        assert_eq!(EventFormat::parse("x", b"ID: 3\n", 8), Err(FormatError::NoName));
        assert!(matches!(EventFormat::parse("x", b"name: a\n", 8), Err(FormatError::NoId(_))));
        let bad = "name: a\nID: 1\n\tfield:int x;\toffset:zz;\tsize:4;\tsigned:1;\n";
        assert!(matches!(
            EventFormat::parse("x", bad.as_bytes(), 8),
            Err(FormatError::BadField { what: "offset", .. })
        ));
    }

    #[test]
    fn header_page_with_spaces_parses() {
        let hp = "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n";
        let f = parse_field(hp.lines().nth(1).unwrap(), 8).unwrap();
        assert_eq!((f.name.as_str(), f.offset, f.size), ("commit", 8, 8));
    }
}
