//! The contract between a source's field reader and the event model.
//!
//! An event kind is described once (its field names, which are required,
//! how each is typed) in the event model. Each source offers the fields of
//! one event by name through [`FieldLookup`]: the text tokenizer gives the
//! printed tokens ([`FieldValue::Text`]), a binary decoder gives the values
//! read at the offsets of the capture's own format file (integers, strings,
//! integer arrays). Field names are the kernel's (the `field:` names of
//! `events/<system>/<event>/format`).

/// One field's value, as a source has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// An unsigned integer field of a binary record.
    Unsigned(u64),
    /// A signed integer field of a binary record.
    Signed(i64),
    /// A string (`char[N]` or `__data_loc char[]`), without its NUL.
    Str(&'a [u8]),
    /// An integer array (`__data_loc u64[]`, `u32 x[N]`).
    Array(IntArray<'a>),
    /// A token as a text format prints it (hex with or without `0x`,
    /// decimal, a symbolic name); the event model knows how to read it.
    Text(&'a [u8]),
}

/// Integers packed in a binary record, in the file's byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntArray<'a> {
    /// The raw bytes; a trailing partial element is ignored.
    pub bytes: &'a [u8],
    /// Bytes per element: 1, 2, 4 or 8 (anything else reads as empty).
    pub elem_size: u8,
    /// Elements are big-endian.
    pub big_endian: bool,
    /// Elements are signed (sign-extended by [`IntArray::get`]).
    pub signed: bool,
}

impl<'a> IntArray<'a> {
    /// Number of whole elements.
    #[must_use]
    pub fn len(&self) -> usize {
        match self.elem_size {
            1 | 2 | 4 | 8 => self.bytes.len() / usize::from(self.elem_size),
            _ => 0,
        }
    }

    /// No elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i`, widened to 64 bits (sign-extended when signed).
    #[must_use]
    pub fn get(&self, i: usize) -> Option<u64> {
        let n = usize::from(self.elem_size);
        if i >= self.len() {
            return None;
        }
        let start = i.checked_mul(n)?;
        let b = self.bytes.get(start..start.checked_add(n)?)?;
        let mut v: u64 = 0;
        if self.big_endian {
            for &x in b {
                v = (v << 8) | u64::from(x);
            }
        } else {
            for &x in b.iter().rev() {
                v = (v << 8) | u64::from(x);
            }
        }
        if self.signed && n < 8 {
            let shift = 64 - 8 * n as u32;
            v = (((v << shift) as i64) >> shift) as u64;
        }
        Some(v)
    }

    /// All elements.
    pub fn iter(&self) -> impl Iterator<Item = u64> + 'a {
        let a = *self;
        (0..a.len()).filter_map(move |i| a.get(i))
    }
}

/// Fields of one event, by the kernel's field name.
pub trait FieldLookup<'a> {
    /// The value of field `name`, or `None` when the event has no such field.
    fn field(&self, name: &str) -> Option<FieldValue<'a>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_array_reads_both_orders_and_signs() {
        let le = IntArray { bytes: &[1, 0, 0xff, 0xff], elem_size: 2, big_endian: false, signed: true };
        assert_eq!(le.iter().collect::<Vec<_>>(), [1, u64::MAX]);
        let be = IntArray { bytes: &[0, 1, 0xff], elem_size: 2, big_endian: true, signed: false };
        assert_eq!(be.iter().collect::<Vec<_>>(), [1]);
        let odd = IntArray { bytes: &[1, 2, 3], elem_size: 3, big_endian: false, signed: false };
        assert!(odd.is_empty() && odd.get(0).is_none());
    }
}
