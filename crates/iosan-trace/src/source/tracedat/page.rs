//! One ring-buffer sub-buffer ("page") as the kernel writes it
//! (`struct buffer_data_page` + `struct ring_buffer_event`, kernel
//! `kernel/trace/ring_buffer.c`): a u64 timestamp, a `commit` long whose low
//! 27 bits are the data length and whose bits 31/30 say events were lost
//! before the page (and whether their count is stored after the data), then
//! events with a 32-bit header `type_len:5, time_delta:27`.

use crate::source::format::read_uint;
use crate::source::tracing_data::HeaderPage;

/// `RB_MISSED_EVENTS`.
const MISSED_EVENTS: u64 = 1 << 31;
/// `RB_MISSED_STORED`.
const MISSED_STORED: u64 = 1 << 30;
/// Data length bits of `commit`.
const COMMIT_MASK: u64 = (1 << 27) - 1;
/// `TS_SHIFT`.
const TS_SHIFT: u32 = 27;
/// Top bits of a timestamp an absolute-time event does not carry (`TS_MSB`).
const TS_MSB: u64 = 0xf8 << 56;

/// `RINGBUF_TYPE_PADDING`, `_TIME_EXTEND`, `_TIME_STAMP`.
const TYPE_PADDING: u32 = 29;
const TYPE_TIME_EXTEND: u32 = 30;
const TYPE_TIME_STAMP: u32 = 31;

/// Where the page header's fields are, in the file's byte order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageLayout {
    pub(crate) ts_offset: usize,
    pub(crate) commit_offset: usize,
    pub(crate) commit_size: usize,
    pub(crate) data_offset: usize,
    pub(crate) big_endian: bool,
}

impl PageLayout {
    pub(crate) fn new(h: &HeaderPage, big_endian: bool) -> Self {
        Self {
            ts_offset: h.timestamp_offset as usize,
            commit_offset: h.commit_offset as usize,
            commit_size: h.commit_size as usize,
            data_offset: h.data_offset as usize,
            big_endian,
        }
    }
}

/// A page whose header makes sense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageHeader {
    pub(crate) ts: u64,
    /// End of the event data, from the page start.
    pub(crate) data_end: usize,
    /// Events were lost before this page: `Some(count)` when stored.
    pub(crate) missed: Option<Option<u64>>,
}

/// Why a page was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageFault {
    /// Shorter than its header.
    Short,
    /// `commit` claims more data than the page holds.
    CommitPastEnd,
}

/// Parses a page header; `page` is exactly one sub-buffer (or what the
/// file has of the last one).
pub(crate) fn parse_header(page: &[u8], l: &PageLayout) -> Result<PageHeader, PageFault> {
    let be = l.big_endian;
    let ts = page.get(l.ts_offset..l.ts_offset + 8).map(|b| read_uint(b, be)).ok_or(PageFault::Short)?;
    let commit =
        page.get(l.commit_offset..l.commit_offset + l.commit_size).map(|b| read_uint(b, be)).ok_or(PageFault::Short)?;
    if page.len() < l.data_offset {
        return Err(PageFault::Short);
    }
    let len = (commit & COMMIT_MASK) as usize;
    let data_end = l.data_offset.checked_add(len).filter(|&e| e <= page.len()).ok_or(PageFault::CommitPastEnd)?;
    let missed = if commit & MISSED_EVENTS == 0 {
        None
    } else if commit & MISSED_STORED != 0 {
        Some(page.get(data_end..data_end + l.commit_size).map(|b| read_uint(b, be)))
    } else {
        Some(None)
    };
    Ok(PageHeader { ts, data_end, missed })
}

/// One item of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A data record: absolute timestamp and its payload's range in the page.
    Data { ts: u64, start: usize, end: usize },
    /// An event header that is not a record (time extend, padding).
    Skip,
    /// The rest of the page is not usable: `true` when that is damage.
    End(bool),
}

/// Walks the events of one page.
pub(crate) struct PageCursor {
    pub(crate) pos: usize,
    pub(crate) end: usize,
    pub(crate) ts: u64,
}

impl PageCursor {
    pub(crate) fn new(h: &PageHeader, l: &PageLayout) -> Self {
        Self { pos: l.data_offset, end: h.data_end, ts: h.ts }
    }

    /// The next entry of `page`.
    #[inline]
    pub(crate) fn next(&mut self, page: &[u8], be: bool) -> Entry {
        if self.pos >= self.end {
            return Entry::End(false);
        }
        let Some(hdr) = page.get(self.pos..self.pos + 4).filter(|_| self.pos + 4 <= self.end) else {
            return self.damaged();
        };
        let h = read_uint(hdr, be) as u32;
        // The bit-field order follows the byte order of the writer.
        let (type_len, delta) = if be { (h >> 27, h & ((1 << 27) - 1)) } else { (h & 0x1f, h >> 5) };
        let at = self.pos + 4;
        let array0 = || page.get(at..at + 4).filter(|_| at + 4 <= self.end).map(|b| read_uint(b, be));
        match type_len {
            1..=28 => {
                let end = at + 4 * type_len as usize;
                if end > self.end {
                    return self.damaged();
                }
                self.ts = self.ts.wrapping_add(u64::from(delta));
                self.pos = end;
                Entry::Data { ts: self.ts, start: at, end }
            }
            0 => {
                let Some(len) = array0() else { return self.damaged() };
                // array[0] counts itself; the payload follows it.
                let Some(end) = (len as usize).checked_add(at).filter(|&e| len >= 4 && e <= self.end) else {
                    return self.damaged();
                };
                self.ts = self.ts.wrapping_add(u64::from(delta));
                self.pos = (end + 3) & !3;
                Entry::Data { ts: self.ts, start: at + 4, end }
            }
            TYPE_PADDING => {
                if delta == 0 {
                    self.pos = self.end;
                    return Entry::End(false);
                }
                // A discarded event: array[0] is its length.
                let Some(len) = array0() else { return self.damaged() };
                match (len as usize).checked_add(at).filter(|&e| e <= self.end && len > 0) {
                    Some(e) => {
                        self.pos = (e + 3) & !3;
                        Entry::Skip
                    }
                    None => self.damaged(),
                }
            }
            TYPE_TIME_EXTEND => {
                let Some(hi) = array0() else { return self.damaged() };
                self.ts = self.ts.wrapping_add((hi << TS_SHIFT) + u64::from(delta));
                self.pos = at + 4;
                Entry::Skip
            }
            _ => {
                debug_assert_eq!(type_len, TYPE_TIME_STAMP);
                let Some(hi) = array0() else { return self.damaged() };
                let abs = ((hi << TS_SHIFT) + u64::from(delta)) | (self.ts & TS_MSB);
                self.ts = abs;
                self.pos = at + 4;
                Entry::Skip
            }
        }
    }

    fn damaged(&mut self) -> Entry {
        self.pos = self.end;
        Entry::End(true)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn layout() -> PageLayout {
        PageLayout { ts_offset: 0, commit_offset: 8, commit_size: 8, data_offset: 16, big_endian: false }
    }

    /// Builds a 4 KiB LE page from raw event words.
    pub(crate) fn page(ts: u64, flags: u64, words: &[u32], size: usize) -> Vec<u8> {
        let mut p = vec![0u8; size];
        p[0..8].copy_from_slice(&ts.to_le_bytes());
        let len = (words.len() * 4) as u64;
        p[8..16].copy_from_slice(&(len | flags).to_le_bytes());
        for (i, w) in words.iter().enumerate() {
            p[16 + 4 * i..20 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        p
    }

    fn hdr(type_len: u32, delta: u32) -> u32 {
        type_len | (delta << 5)
    }

    fn all(p: &[u8]) -> Vec<Entry> {
        let l = layout();
        let h = parse_header(p, &l).unwrap();
        let mut c = PageCursor::new(&h, &l);
        let mut v = Vec::new();
        loop {
            let e = c.next(p, false);
            v.push(e);
            if matches!(e, Entry::End(_)) {
                return v;
            }
        }
    }

    #[test]
    fn every_event_type() {
        let words = [
            hdr(2, 5),
            0xaaaa,
            0xbbbb, // data, 8 bytes, ts 105
            hdr(TYPE_TIME_EXTEND, 1),
            1, // +(1<<27)+1
            hdr(0, 2),
            12,
            0xcccc,
            0xdddd, // long form: 8 bytes of payload
            hdr(TYPE_PADDING, 9),
            8,
            0, // discarded event of 12 bytes
            hdr(TYPE_TIME_STAMP, 7),
            0, // absolute ts 7
            hdr(1, 0),
            0xeeee,
            hdr(TYPE_PADDING, 0), // rest of page
        ];
        let p = page(100, 0, &words, 4096);
        let ext = 105 + (1 << 27) + 1 + 2;
        assert_eq!(
            all(&p),
            [
                Entry::Data { ts: 105, start: 20, end: 28 },
                Entry::Skip,
                Entry::Data { ts: ext, start: 44, end: 52 },
                Entry::Skip,
                Entry::Skip,
                Entry::Data { ts: 7, start: 76, end: 80 },
                Entry::End(false),
            ]
        );
    }

    #[test]
    fn missed_events_flags() {
        let l = layout();
        let mut p = page(1, MISSED_EVENTS | MISSED_STORED, &[hdr(1, 0), 0], 4096);
        p[24..32].copy_from_slice(&17u64.to_le_bytes());
        assert_eq!(parse_header(&p, &l).unwrap().missed, Some(Some(17)));
        let p = page(1, MISSED_EVENTS, &[hdr(1, 0), 0], 4096);
        assert_eq!(parse_header(&p, &l).unwrap().missed, Some(None));
        let p = page(1, 0, &[hdr(1, 0), 0], 4096);
        assert_eq!(parse_header(&p, &l).unwrap().missed, None);
    }

    #[test]
    fn damage_is_reported_not_followed() {
        let l = layout();
        let mut p = page(1, 0, &[], 64);
        p[8..16].copy_from_slice(&100u64.to_le_bytes());
        assert_eq!(parse_header(&p, &l), Err(PageFault::CommitPastEnd));
        assert_eq!(parse_header(&p[..10], &l), Err(PageFault::Short));
        // A record longer than the data.
        assert_eq!(all(&page(1, 0, &[hdr(28, 0), 1], 4096)), [Entry::End(true)]);
        // A long-form length of 0 and one past the end.
        assert_eq!(all(&page(1, 0, &[hdr(0, 0), 0], 4096)), [Entry::End(true)]);
        assert_eq!(all(&page(1, 0, &[hdr(0, 0), 4000], 4096)), [Entry::End(true)]);
        // A time extend cut short.
        assert_eq!(all(&page(1, 0, &[hdr(TYPE_TIME_EXTEND, 0)], 4096)), [Entry::End(true)]);
    }

    #[test]
    fn big_endian_bitfields() {
        let mut l = layout();
        l.big_endian = true;
        let mut p = vec![0u8; 64];
        p[0..8].copy_from_slice(&10u64.to_be_bytes());
        p[8..16].copy_from_slice(&8u64.to_be_bytes());
        p[16..20].copy_from_slice(&((1u32 << 27) | 3).to_be_bytes());
        let h = parse_header(&p, &l).unwrap();
        let mut c = PageCursor::new(&h, &l);
        assert_eq!(c.next(&p, true), Entry::Data { ts: 13, start: 20, end: 24 });
        assert_eq!(c.next(&p, true), Entry::End(false));
    }
}
