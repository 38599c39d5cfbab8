//! The tracing-data blocks trace-cmd and perf share: `header_page`,
//! `header_event`, the ftrace and event `format` files, kallsyms, printk
//! formats and saved cmdlines, in the order `trace-cmd.dat.v6` lists them
//! (and perf's `HEADER_TRACING_DATA` feature repeats). trace.dat v7 stores
//! each block in its own section with the same body.

use std::io::{Cursor, Read, Seek};

use super::format::{EventFormat, FieldFormat};
use super::kallsyms::Kallsyms;
use super::tracedat::error::TraceDatError;
use super::tracedat::io::Src;

/// The layout of a ring-buffer sub-buffer header, from `header_page`
/// (the kernel's `ring_buffer_print_page_header`: `struct buffer_data_page`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderPage {
    /// Offset of the page's u64 timestamp.
    pub timestamp_offset: u32,
    /// Offset of `commit`.
    pub commit_offset: u32,
    /// Size of `commit`: the kernel's `sizeof(long)` (4 or 8).
    pub commit_size: u32,
    /// Offset where events start.
    pub data_offset: u32,
    /// `data`'s size: the sub-buffer capacity on kernels that print it.
    pub data_size: u32,
}

impl HeaderPage {
    /// The layout of a kernel with `long_size`-byte longs and 4 KiB pages,
    /// for files whose `header_page` says nothing usable.
    #[must_use]
    pub fn default_for(long_size: u8) -> Self {
        let l = u32::from(long_size);
        Self { timestamp_offset: 0, commit_offset: 8, commit_size: l, data_offset: 8 + l, data_size: 4096 - 8 - l }
    }

    /// Parses the `header_page` text; missing fields keep the defaults.
    #[must_use]
    pub fn parse(text: &[u8], long_size: u8) -> Self {
        let mut h = Self::default_for(long_size);
        let Ok(f) = EventFormat::parse(
            "header_page",
            format!("name: header_page\nID: 0\n{}", String::from_utf8_lossy(text)).as_bytes(),
            long_size,
        ) else {
            return h;
        };
        let get = |n: &str| f.field(n).map(|x: &FieldFormat| (x.offset, x.size));
        if let Some((o, _)) = get("timestamp").filter(|&(_, s)| s == 8) {
            h.timestamp_offset = o;
        }
        if let Some((o, s)) = get("commit").filter(|&(_, s)| s == 4 || s == 8) {
            h.commit_offset = o;
            h.commit_size = s;
        }
        if let Some((o, s)) = get("data") {
            h.data_offset = o;
            h.data_size = s;
        }
        h
    }

    /// `data_offset + data_size` when it is a power of two: the sub-buffer
    /// size of kernels that print the capacity.
    #[must_use]
    pub fn subbuf_size(&self) -> Option<u32> {
        self.data_offset.checked_add(self.data_size).filter(|s| s.is_power_of_two())
    }
}

/// Event formats, looked up by the ID in each record's `common_type`.
#[derive(Clone, Debug, Default)]
pub struct Formats {
    list: Vec<EventFormat>,
    by_id: Vec<u32>,
}

impl Formats {
    /// Adds a format (a later one with the same ID replaces the earlier).
    pub fn push(&mut self, f: EventFormat) {
        let Ok(id) = usize::try_from(f.id) else { return };
        if id > usize::from(u16::MAX) {
            return;
        }
        if self.by_id.len() <= id {
            self.by_id.resize(id + 1, 0);
        }
        self.list.push(f);
        if let (Some(slot), Ok(n)) = (self.by_id.get_mut(id), u32::try_from(self.list.len())) {
            *slot = n;
        }
    }

    /// The format with this ID.
    #[inline]
    #[must_use]
    pub fn by_id(&self, id: u32) -> Option<&EventFormat> {
        let i = *self.by_id.get(usize::try_from(id).ok()?)?;
        self.list.get(i.checked_sub(1)? as usize)
    }

    /// The format `system:name`.
    #[must_use]
    pub fn by_name(&self, system: &str, name: &str) -> Option<&EventFormat> {
        self.list.iter().find(|f| f.system == system && f.name == name)
    }

    /// All formats, in file order.
    #[must_use]
    pub fn all(&self) -> &[EventFormat] {
        &self.list
    }
}

/// pid → comm, from `saved_cmdlines`, sorted by pid (binary search: no
/// hash a hostile file could flood).
#[derive(Clone, Debug, Default)]
pub struct Cmdlines(Vec<(u32, Box<[u8]>)>);

impl Cmdlines {
    /// Parses `PID COMM` lines; a later line for a pid wins.
    #[must_use]
    pub fn parse(text: &[u8]) -> Self {
        let mut v: Vec<(u32, Box<[u8]>)> = Vec::new();
        for line in text.split(|&c| c == b'\n') {
            let Some(sp) = memchr::memchr(b' ', line) else { continue };
            let (pid, comm) = (line.get(..sp).unwrap_or_default(), line.get(sp + 1..).unwrap_or_default());
            if let Some(pid) = std::str::from_utf8(pid).ok().and_then(|p| p.trim().parse::<u32>().ok()) {
                v.push((pid, comm.into()));
            }
        }
        // Stable sort, then keep the last of equal pids.
        v.sort_by_key(|e| e.0);
        let mut out: Vec<(u32, Box<[u8]>)> = Vec::with_capacity(v.len());
        for e in v {
            match out.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => out.push(e),
            }
        }
        Self(out)
    }

    /// The task name of `pid`.
    #[inline]
    #[must_use]
    pub fn comm(&self, pid: u32) -> Option<&[u8]> {
        let i = self.0.binary_search_by_key(&pid, |e| e.0).ok()?;
        self.0.get(i).map(|e| &e.1[..])
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `printk_formats`: address → format string of `trace_printk` call sites.
#[derive(Clone, Debug, Default)]
pub struct PrintkFormats(Vec<(u64, Box<[u8]>)>);

impl PrintkFormats {
    /// Parses `0xADDR : "FMT"` lines.
    #[must_use]
    pub fn parse(text: &[u8]) -> Self {
        let mut v = Vec::new();
        for line in text.split(|&c| c == b'\n') {
            let Some(colon) = memchr::memchr(b':', line) else { continue };
            let addr = String::from_utf8_lossy(line.get(..colon).unwrap_or_default());
            let addr = addr.trim().trim_start_matches("0x");
            let Ok(addr) = u64::from_str_radix(addr, 16) else { continue };
            let fmt = line.get(colon + 1..).unwrap_or_default().trim_ascii();
            let fmt = fmt.strip_prefix(b"\"").and_then(|f| f.strip_suffix(b"\"")).unwrap_or(fmt);
            v.push((addr, fmt.into()));
        }
        v.sort_by_key(|e| e.0);
        Self(v)
    }

    /// The format string at `addr`.
    #[must_use]
    pub fn get(&self, addr: u64) -> Option<&[u8]> {
        let i = self.0.binary_search_by_key(&addr, |e| e.0).ok()?;
        self.0.get(i).map(|e| &e.1[..])
    }
}

/// Everything a capture says about its events, independent of its container.
#[derive(Clone, Debug)]
pub struct TracingData {
    /// Records are big-endian.
    pub big_endian: bool,
    /// The recording tool's `sizeof(long)` (the kernel's is
    /// `header_page.commit_size`).
    pub long_size: u8,
    /// The `header_page` layout.
    pub header_page: HeaderPage,
    /// The `header_event` text.
    pub header_event: Vec<u8>,
    /// ftrace and event formats.
    pub formats: Formats,
    /// Kernel symbols.
    pub kallsyms: Kallsyms,
    /// trace_printk formats.
    pub printk: PrintkFormats,
    /// pid → comm.
    pub cmdlines: Cmdlines,
    /// Format files that did not parse (their events are skipped).
    pub bad_formats: u64,
}

impl TracingData {
    pub(crate) fn empty(big_endian: bool, long_size: u8) -> Self {
        Self {
            big_endian,
            long_size,
            header_page: HeaderPage::default_for(long_size),
            header_event: Vec::new(),
            formats: Formats::default(),
            kallsyms: Kallsyms::default(),
            printk: PrintkFormats::default(),
            cmdlines: Cmdlines::default(),
            bad_formats: 0,
        }
    }

    /// Parses a complete tracing-data blob: the `\x17\x08\x44tracing`
    /// preamble (version, endianness, long size, page size) and the blocks
    /// after it, as perf's `HEADER_TRACING_DATA` holds them (versions
    /// `0.5` without cmdlines, `0.6` and trace.dat's `6` with).
    ///
    /// # Errors
    /// [`TraceDatError`] when the magic is missing or a block is truncated.
    pub fn parse(blob: &[u8]) -> Result<Self, TraceDatError> {
        let mut src = Src::new(Cursor::new(blob))?;
        let (version, big_endian, long_size, _page) = read_preamble(&mut src)?;
        let mut td = Self::empty(big_endian, long_size);
        td.read_blocks(&mut src, version != b"0.5")?;
        Ok(td)
    }

    /// Reads the v6 blocks from `header_page` to (when `cmdlines`) the saved cmdlines.
    pub(crate) fn read_blocks<R: Read + Seek>(
        &mut self,
        src: &mut Src<R>,
        cmdlines: bool,
    ) -> Result<(), TraceDatError> {
        self.read_header_info(src)?;
        self.read_ftrace_formats(src)?;
        self.read_event_formats(src)?;
        self.read_kallsyms(src)?;
        self.read_printk(src)?;
        if cmdlines {
            self.read_cmdlines(src)?;
        }
        Ok(())
    }

    pub(crate) fn read_header_info<R: Read + Seek>(&mut self, src: &mut Src<R>) -> Result<(), TraceDatError> {
        let at = src.pos();
        if src.cstr("header_page tag")? != b"header_page" {
            return Err(TraceDatError::malformed(at, "expected `header_page`"));
        }
        let n = src.u64("header_page size")?;
        let text = src.bytes(n, "header_page")?;
        self.header_page = HeaderPage::parse(&text, self.long_size);
        let at = src.pos();
        if src.cstr("header_event tag")? != b"header_event" {
            return Err(TraceDatError::malformed(at, "expected `header_event`"));
        }
        let n = src.u64("header_event size")?;
        self.header_event = src.bytes(n, "header_event")?;
        Ok(())
    }

    fn push_format<R: Read + Seek>(&mut self, src: &mut Src<R>, system: &str) -> Result<(), TraceDatError> {
        let n = src.u64("format size")?;
        let text = src.bytes(n, "format file")?;
        // Field types are the kernel's: its `long` is the size of `commit`.
        let long = match self.header_page.commit_size {
            4 => 4,
            8 => 8,
            _ => self.long_size,
        };
        match EventFormat::parse(system, &text, long) {
            Ok(f) => self.formats.push(f),
            Err(_) => self.bad_formats += 1,
        }
        Ok(())
    }

    pub(crate) fn read_ftrace_formats<R: Read + Seek>(&mut self, src: &mut Src<R>) -> Result<(), TraceDatError> {
        let count = src.u32("ftrace format count")?;
        for _ in 0..count {
            self.push_format(src, "ftrace")?;
        }
        Ok(())
    }

    pub(crate) fn read_event_formats<R: Read + Seek>(&mut self, src: &mut Src<R>) -> Result<(), TraceDatError> {
        let systems = src.u32("system count")?;
        for _ in 0..systems {
            let name = String::from_utf8_lossy(&src.cstr("system name")?).into_owned();
            let count = src.u32("event count")?;
            for _ in 0..count {
                self.push_format(src, &name)?;
            }
        }
        Ok(())
    }

    pub(crate) fn read_kallsyms<R: Read + Seek>(&mut self, src: &mut Src<R>) -> Result<(), TraceDatError> {
        let n = src.u32("kallsyms size")?;
        self.kallsyms = Kallsyms::parse(&src.bytes(u64::from(n), "kallsyms")?);
        Ok(())
    }

    pub(crate) fn read_printk<R: Read + Seek>(&mut self, src: &mut Src<R>) -> Result<(), TraceDatError> {
        let n = src.u32("printk size")?;
        self.printk = PrintkFormats::parse(&src.bytes(u64::from(n), "printk formats")?);
        Ok(())
    }

    pub(crate) fn read_cmdlines<R: Read + Seek>(&mut self, src: &mut Src<R>) -> Result<(), TraceDatError> {
        let n = src.u64("cmdlines size")?;
        self.cmdlines = Cmdlines::parse(&src.bytes(n, "cmdlines")?);
        Ok(())
    }
}

/// Reads magic, version, endianness, long size and page size; sets the
/// source's byte order.
pub(crate) fn read_preamble<R: Read + Seek>(src: &mut Src<R>) -> Result<(Vec<u8>, bool, u8, u32), TraceDatError> {
    let mut magic = [0u8; 10];
    src.fill(&mut magic, "magic").map_err(|_| TraceDatError::NotTraceDat)?;
    if &magic != b"\x17\x08\x44tracing" {
        return Err(TraceDatError::NotTraceDat);
    }
    let version = src.cstr("version")?;
    let at = src.pos();
    let big_endian = match src.u8("endianness")? {
        0 => false,
        1 => true,
        e => return Err(TraceDatError::malformed(at, format!("endianness byte {e}"))),
    };
    src.big_endian = big_endian;
    let at = src.pos();
    let long_size = src.u8("long size")?;
    if long_size != 4 && long_size != 8 {
        return Err(TraceDatError::malformed(at, format!("long size {long_size}")));
    }
    let page_size = src.u32("page size")?;
    Ok((version, big_endian, long_size, page_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn blob(version: &str, cmdlines: bool) -> Vec<u8> {
        let mut b = b"\x17\x08\x44tracing".to_vec();
        b.extend_from_slice(version.as_bytes());
        b.extend_from_slice(&[0, 8]);
        b.extend_from_slice(&4096u32.to_le_bytes());
        let hp = b"\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n\tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;\n";
        b.extend_from_slice(b"header_page\0");
        b.extend_from_slice(&(hp.len() as u64).to_le_bytes());
        b.extend_from_slice(hp);
        b.extend_from_slice(b"header_event\0");
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(b"abc");
        b.extend_from_slice(&1u32.to_le_bytes());
        let f = b"name: kernel_stack\nID: 4\nformat:\n\tfield:int size;\toffset:8;\tsize:4;\tsigned:1;\n";
        b.extend_from_slice(&(f.len() as u64).to_le_bytes());
        b.extend_from_slice(f);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(b"iommu\0");
        b.extend_from_slice(&2u32.to_le_bytes());
        let m = b"name: map\nID: 7\nformat:\n\tfield:u64 iova;\toffset:8;\tsize:8;\tsigned:0;\n";
        b.extend_from_slice(&(m.len() as u64).to_le_bytes());
        b.extend_from_slice(m);
        b.extend_from_slice(&5u64.to_le_bytes());
        b.extend_from_slice(b"bogus");
        let k = b"ffffffff81000000 T _stext\n";
        b.extend_from_slice(&(k.len() as u32).to_le_bytes());
        b.extend_from_slice(k);
        let p = b"0xffffffff81000010 : \"hello %d\\n\"\n";
        b.extend_from_slice(&(p.len() as u32).to_le_bytes());
        b.extend_from_slice(p);
        if cmdlines {
            let c = b"1 init\n42 kworker/0:0\n42 kworker/0:1\n";
            b.extend_from_slice(&(c.len() as u64).to_le_bytes());
            b.extend_from_slice(c);
        }
        b
    }

    #[test]
    fn parses_a_tracing_data_blob() {
        let td = TracingData::parse(&blob("0.6\0", true)).unwrap();
        assert_eq!(td.header_page.data_offset, 16);
        assert_eq!(td.header_page.subbuf_size(), Some(4096));
        assert_eq!(td.formats.by_id(4).unwrap().system, "ftrace");
        assert_eq!(td.formats.by_id(7).unwrap().name, "map");
        assert!(td.formats.by_name("iommu", "map").is_some());
        assert_eq!(td.bad_formats, 1);
        assert_eq!(td.kallsyms.len(), 1);
        assert_eq!(td.printk.get(0xffff_ffff_8100_0010), Some(&b"hello %d\\n"[..]));
        assert_eq!(td.cmdlines.comm(42), Some(&b"kworker/0:1"[..]));
        let old = TracingData::parse(&blob("0.5\0", false)).unwrap();
        assert!(old.cmdlines.is_empty());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = blob("0.6\0", true);
        for cut in 0..b.len() {
            assert!(TracingData::parse(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut lie = blob("0.6\0", true);
        lie[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(TracingData::parse(&lie), Err(TraceDatError::TooLarge { .. })));
    }

    #[test]
    fn header_page_of_a_16k_arm64_kernel() {
        let hp = b"\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n\tfield: char data;\toffset:16;\tsize:16368;\tsigned:0;\n";
        assert_eq!(HeaderPage::parse(hp, 8).subbuf_size(), Some(16384));
        assert_eq!(HeaderPage::parse(b"junk", 4), HeaderPage::default_for(4));
    }
}
