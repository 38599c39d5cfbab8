//! `perf_event_attr` and the layout of `PERF_RECORD_SAMPLE` and of the
//! `sample_id` trailer of other records, driven by each attr's
//! `sample_type` bits (include/uapi/linux/perf_event.h). Nothing is assumed
//! about which bits a recorder set.

use super::bytes::Bytes;

/// `PERF_SAMPLE_*` bits this reader understands or must step over.
pub mod bits {
    /// `PERF_SAMPLE_IP`.
    pub const IP: u64 = 1 << 0;
    /// `PERF_SAMPLE_TID`.
    pub const TID: u64 = 1 << 1;
    /// `PERF_SAMPLE_TIME`.
    pub const TIME: u64 = 1 << 2;
    /// `PERF_SAMPLE_ADDR`.
    pub const ADDR: u64 = 1 << 3;
    /// `PERF_SAMPLE_READ`.
    pub const READ: u64 = 1 << 4;
    /// `PERF_SAMPLE_CALLCHAIN`.
    pub const CALLCHAIN: u64 = 1 << 5;
    /// `PERF_SAMPLE_ID`.
    pub const ID: u64 = 1 << 6;
    /// `PERF_SAMPLE_CPU`.
    pub const CPU: u64 = 1 << 7;
    /// `PERF_SAMPLE_PERIOD`.
    pub const PERIOD: u64 = 1 << 8;
    /// `PERF_SAMPLE_STREAM_ID`.
    pub const STREAM_ID: u64 = 1 << 9;
    /// `PERF_SAMPLE_RAW`.
    pub const RAW: u64 = 1 << 10;
    /// `PERF_SAMPLE_IDENTIFIER`.
    pub const IDENTIFIER: u64 = 1 << 16;
}

/// `PERF_FORMAT_*` bits of `read_format`.
mod read_format {
    pub const TOTAL_TIME_ENABLED: u64 = 1 << 0;
    pub const TOTAL_TIME_RUNNING: u64 = 1 << 1;
    pub const ID: u64 = 1 << 2;
    pub const GROUP: u64 = 1 << 3;
    pub const LOST: u64 = 1 << 4;
}

/// `PERF_TYPE_TRACEPOINT`.
pub const PERF_TYPE_TRACEPOINT: u32 = 2;

/// The fields of one `perf_event_attr` this reader needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attr {
    /// `type` (2 = tracepoint).
    pub kind: u32,
    /// `config`: the tracepoint id for tracepoints.
    pub config: u64,
    /// `sample_type` bits.
    pub sample_type: u64,
    /// `read_format` bits.
    pub read_format: u64,
    /// `sample_id_all`: non-sample records carry a `sample_id` trailer.
    pub sample_id_all: bool,
    /// Sample ids of this event (from the attr's ids section or `HEADER_ATTR`).
    pub ids: Vec<u64>,
    /// Event name (`HEADER_EVENT_DESC`), e.g. `iommu:map`.
    pub name: Option<String>,
}

impl Attr {
    /// Parses the leading fields of a `perf_event_attr` (at least 48 bytes).
    pub fn parse(b: &mut Bytes<'_>) -> Option<Self> {
        let kind = b.u32()?;
        let _size = b.u32()?;
        let config = b.u64()?;
        let _period = b.u64()?;
        let sample_type = b.u64()?;
        let read_format = b.u64()?;
        let flags = b.u64()?;
        Some(Self { kind, config, sample_type, read_format, sample_id_all: flags & (1 << 18) != 0, ..Self::default() })
    }

    /// Bytes of a `struct read_format` under this attr.
    fn read_size(&self, b: &mut Bytes<'_>) -> Option<()> {
        let rf = self.read_format;
        let per_value = 1 + u64::from(rf & read_format::ID != 0) + u64::from(rf & read_format::LOST != 0);
        let times =
            u64::from(rf & read_format::TOTAL_TIME_ENABLED != 0) + u64::from(rf & read_format::TOTAL_TIME_RUNNING != 0);
        if rf & read_format::GROUP != 0 {
            let nr = b.u64()?;
            let words = times.checked_add(nr.checked_mul(per_value)?)?;
            b.skip(usize::try_from(words.checked_mul(8)?).ok()?)
        } else {
            b.skip(usize::try_from((per_value + times) * 8).ok()?)
        }
    }
}

/// What a sample says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample<'a> {
    /// `PERF_SAMPLE_TID`.
    pub pid: Option<u32>,
    /// Thread id.
    pub tid: Option<u32>,
    /// `PERF_SAMPLE_TIME`, ns.
    pub time: Option<u64>,
    /// `PERF_SAMPLE_ID` or `IDENTIFIER`.
    pub id: Option<u64>,
    /// `PERF_SAMPLE_CPU`.
    pub cpu: Option<u32>,
    /// `PERF_SAMPLE_CALLCHAIN`: instruction pointers, innermost first, with
    /// perf's context markers (`PERF_CONTEXT_*`, above `-4096`) left in.
    pub callchain: &'a [u8],
    /// `PERF_SAMPLE_RAW`: the tracepoint's record, laid out by its format.
    pub raw: Option<&'a [u8]>,
}

/// Parses the body of a `PERF_RECORD_SAMPLE` (after the 8-byte header).
pub fn parse_sample<'a>(attr: &Attr, mut b: Bytes<'a>) -> Option<Sample<'a>> {
    let st = attr.sample_type;
    let mut s = Sample::default();
    if st & bits::IDENTIFIER != 0 {
        s.id = Some(b.u64()?);
    }
    if st & bits::IP != 0 {
        b.u64()?;
    }
    if st & bits::TID != 0 {
        s.pid = Some(b.u32()?);
        s.tid = Some(b.u32()?);
    }
    if st & bits::TIME != 0 {
        s.time = Some(b.u64()?);
    }
    if st & bits::ADDR != 0 {
        b.u64()?;
    }
    if st & bits::ID != 0 {
        s.id = Some(b.u64()?);
    }
    if st & bits::STREAM_ID != 0 {
        b.u64()?;
    }
    if st & bits::CPU != 0 {
        s.cpu = Some(b.u32()?);
        b.u32()?;
    }
    if st & bits::PERIOD != 0 {
        b.u64()?;
    }
    if st & bits::READ != 0 {
        attr.read_size(&mut b)?;
    }
    if st & bits::CALLCHAIN != 0 {
        let nr = b.u64()?;
        let len = usize::try_from(nr.checked_mul(8)?).ok()?;
        s.callchain = b.take(len)?;
    }
    if st & bits::RAW != 0 {
        let size = b.u32()?;
        s.raw = Some(b.take(usize::try_from(size).ok()?)?);
    }
    Some(s)
}

/// Parses the `sample_id` trailer at the end of a non-sample record's body.
pub fn parse_sample_id(attr: &Attr, b: Bytes<'_>) -> Option<Sample<'static>> {
    if !attr.sample_id_all {
        return None;
    }
    let st = attr.sample_type;
    let words = [bits::TID, bits::TIME, bits::ID, bits::STREAM_ID, bits::CPU, bits::IDENTIFIER]
        .iter()
        .filter(|&&bit| st & bit != 0)
        .count();
    let start = b.remaining().checked_sub(words * 8)?;
    let mut b = {
        let mut b = b;
        b.skip(start)?;
        b
    };
    let mut s = Sample::default();
    if st & bits::TID != 0 {
        s.pid = Some(b.u32()?);
        s.tid = Some(b.u32()?);
    }
    if st & bits::TIME != 0 {
        s.time = Some(b.u64()?);
    }
    if st & bits::ID != 0 {
        s.id = Some(b.u64()?);
    }
    if st & bits::STREAM_ID != 0 {
        b.u64()?;
    }
    if st & bits::CPU != 0 {
        s.cpu = Some(b.u32()?);
        b.u32()?;
    }
    if st & bits::IDENTIFIER != 0 {
        s.id = Some(b.u64()?);
    }
    Some(s)
}

/// The sample id of a record, read where every attr's layout puts it:
/// first with `IDENTIFIER`; otherwise by the common layout (perf gives all
/// events of a file the same `sample_type` when it relies on `ID`).
pub fn sample_id_of(first: &Attr, b: Bytes<'_>, is_sample: bool) -> Option<u64> {
    if is_sample {
        parse_sample(first, b)?.id
    } else {
        parse_sample_id(first, b)?.id
    }
}

#[cfg(test)]
mod tests {
    use super::super::bytes::Endian;
    use super::*;

    fn push64(v: &mut Vec<u8>, x: u64) {
        v.extend_from_slice(&x.to_le_bytes());
    }

    #[test]
    fn sample_fields_in_kernel_order() {
        let attr = Attr {
            sample_type: bits::IP | bits::TID | bits::TIME | bits::CPU | bits::PERIOD | bits::RAW | bits::CALLCHAIN,
            ..Attr::default()
        };
        let mut v = Vec::new();
        push64(&mut v, 0xffff_ffff_8100_0000); // ip
        v.extend_from_slice(&7u32.to_le_bytes());
        v.extend_from_slice(&8u32.to_le_bytes());
        push64(&mut v, 123_456); // time
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        push64(&mut v, 1); // period
        push64(&mut v, 1); // callchain nr
        push64(&mut v, 0xdead);
        v.extend_from_slice(&4u32.to_le_bytes());
        v.extend_from_slice(&[1, 2, 3, 4]);
        let s = parse_sample(&attr, Bytes::new(&v, Endian::Little)).unwrap();
        assert_eq!((s.pid, s.tid, s.time, s.cpu), (Some(7), Some(8), Some(123_456), Some(3)));
        assert_eq!(s.raw, Some(&[1u8, 2, 3, 4][..]));
        assert_eq!(s.callchain.len(), 8);
        // Truncated anywhere: None, never a panic.
        for cut in 0..v.len() {
            let t = &v[..cut];
            assert!(parse_sample(&attr, Bytes::new(t, Endian::Little)).is_none(), "cut {cut}");
        }
    }

    #[test]
    fn sample_id_trailer_is_read_from_the_end() {
        let attr = Attr { sample_type: bits::TID | bits::TIME | bits::CPU, sample_id_all: true, ..Attr::default() };
        let mut v = vec![0xaa; 16]; // record-specific part
        v.extend_from_slice(&5u32.to_le_bytes());
        v.extend_from_slice(&6u32.to_le_bytes());
        push64(&mut v, 99);
        v.extend_from_slice(&2u32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        let s = parse_sample_id(&attr, Bytes::new(&v, Endian::Little)).unwrap();
        assert_eq!((s.pid, s.time, s.cpu), (Some(5), Some(99), Some(2)));
    }

    #[test]
    fn group_read_format_with_a_lying_count_fails_closed() {
        let attr = Attr { sample_type: bits::READ | bits::RAW, read_format: 1 << 3, ..Attr::default() };
        let mut v = Vec::new();
        push64(&mut v, u64::MAX / 2);
        assert!(parse_sample(&attr, Bytes::new(&v, Endian::Little)).is_none());
    }
}
