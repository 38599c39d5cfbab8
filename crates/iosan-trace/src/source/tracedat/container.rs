//! The container around the ring-buffer pages: trace.dat v6 (fixed order,
//! `options  ` / `flyrecord` tags) and v7 (sections reached from a chain of
//! OPTIONS sections), as trace-cmd 3.x's `trace-input.c` reads them. Where
//! the v7 man page and the code disagree (section size is 8 bytes; BUFFER
//! carries a u32 sub-buffer size after the clock), this follows the code.

use std::collections::HashSet;
use std::io::{Cursor, Read, Seek};

use super::compress::Codec;
use super::error::TraceDatError;
use super::io::{Bytes, Src, BLOCK_LIMIT};
use crate::source::tracing_data::{read_preamble, TracingData};

/// Option ids (trace-cmd's `enum tracecmd_file_options`).
mod opt {
    pub const DONE: u16 = 0;
    pub const DATE: u16 = 1;
    pub const CPUSTAT: u16 = 2;
    pub const BUFFER: u16 = 3;
    pub const TRACECLOCK: u16 = 4;
    pub const UNAME: u16 = 5;
    pub const OFFSET: u16 = 7;
    pub const CPUCOUNT: u16 = 8;
    pub const VERSION: u16 = 9;
    pub const TSC2NSEC: u16 = 14;
    pub const HEADER_INFO: u16 = 16;
    pub const FTRACE_EVENTS: u16 = 17;
    pub const EVENT_FORMATS: u16 = 18;
    pub const KALLSYMS: u16 = 19;
    pub const PRINTK: u16 = 20;
    pub const CMDLINES: u16 = 21;
    pub const BUFFER_TEXT: u16 = 22;
}

/// Section flag: the body is compressed.
const SECTION_COMPRESSED: u16 = 1;
/// Most OPTIONS sections followed in a chain, and most options in one.
const CHAIN_LIMIT: usize = 1024;
const OPTIONS_LIMIT: usize = 1 << 20;
/// Most CPUs of one buffer, and buffers of one file.
pub(crate) const CPU_LIMIT: u32 = 8192;
const BUFFER_LIMIT: usize = 1024;

/// The initial header of a trace.dat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// File version (6 or 7).
    pub version: u32,
    /// Numbers are big-endian.
    pub big_endian: bool,
    /// The recording tool's `sizeof(long)`.
    pub long_size: u8,
    /// The recording host's page size.
    pub page_size: u32,
    /// v7 compression name and version (`zstd`, `1.5.4`); `None` for none.
    pub compression: Option<(String, String)>,
}

/// One CPU's ring-buffer data in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuData {
    /// CPU number.
    pub cpu: u32,
    /// File offset of its pages (or, compressed, of its chunk table).
    pub offset: u64,
    /// Bytes in the file.
    pub size: u64,
}

/// One ftrace instance (trace-cmd "buffer") of the capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferInfo {
    /// Instance name; `""` for the top-level buffer.
    pub name: String,
    /// Its trace clock, when the file says.
    pub clock: Option<String>,
    /// Sub-buffer size in bytes.
    pub page_size: u32,
    /// The data is in compressed chunks.
    pub compressed: bool,
    /// CPUs with data.
    pub cpus: Vec<CpuData>,
}

/// Everything of a file except its pages.
pub(crate) struct Container {
    pub(crate) header: FileHeader,
    pub(crate) data: TracingData,
    pub(crate) buffers: Vec<BufferInfo>,
    pub(crate) meta: Vec<(String, String)>,
    pub(crate) codec: Option<Codec>,
    /// TSC2NSEC: (mult, shift, offset).
    pub(crate) tsc2nsec: Option<(u32, u32, u64)>,
    /// `--ts-offset` of the recording.
    pub(crate) ts_offset: i64,
    /// Sum of the `overrun:` lines of the CPUSTAT options.
    pub(crate) overrun: u64,
}

/// Options seen so far.
#[derive(Default)]
struct Opts {
    /// v6 BUFFER: (offset of its flyrecord, name).
    v6_buffers: Vec<(u64, String)>,
    /// v7 BUFFER.
    v7_buffers: Vec<(u64, BufferInfo)>,
    sections: Vec<(u16, u64)>,
    clock: Option<String>,
    meta: Vec<(String, String)>,
    tsc2nsec: Option<(u32, u32, u64)>,
    ts_offset: i64,
    overrun: u64,
    latency: bool,
}

impl Container {
    pub(crate) fn read<R: Read + Seek>(src: &mut Src<R>) -> Result<Self, TraceDatError> {
        let (version, big_endian, long_size, page_size) = read_preamble(src)?;
        let version = match version.as_slice() {
            b"6" => 6,
            b"7" => 7,
            v => return Err(TraceDatError::Version(String::from_utf8_lossy(v).into_owned())),
        };
        let mut header = FileHeader { version, big_endian, long_size, page_size, compression: None };
        let mut data = TracingData::empty(big_endian, long_size);
        let mut opts = Opts::default();
        let mut codec = None;
        let mut buffers = Vec::new();
        if version == 6 {
            data.read_blocks(src, true)?;
            let at = src.pos();
            let cpus = src.u32("CPU count")?;
            if cpus > CPU_LIMIT {
                return Err(TraceDatError::TooLarge {
                    offset: at,
                    what: "CPU count",
                    size: cpus.into(),
                    limit: CPU_LIMIT.into(),
                });
            }
            let top = read_v6_tags(src, cpus, &mut opts)?;
            let fallback = data.header_page.subbuf_size().unwrap_or(page_size);
            buffers.push(BufferInfo {
                name: String::new(),
                clock: opts.clock.clone(),
                page_size: fallback,
                compressed: false,
                cpus: top,
            });
            for (off, name) in std::mem::take(&mut opts.v6_buffers) {
                src.seek(off, "buffer flyrecord")?;
                let cpus = read_v6_tags(src, cpus, &mut opts)?;
                buffers.push(BufferInfo { name, clock: None, page_size: fallback, compressed: false, cpus });
            }
        } else {
            let name = src.cstr("compression name")?;
            let ver = src.cstr("compression version")?;
            codec = Codec::by_name(&name)?;
            if codec.is_some() {
                header.compression =
                    Some((String::from_utf8_lossy(&name).into_owned(), String::from_utf8_lossy(&ver).into_owned()));
            }
            let mut next = src.u64("options offset")?;
            let mut seen = HashSet::new();
            while next != 0 {
                if !seen.insert(next) || seen.len() > CHAIN_LIMIT {
                    return Err(TraceDatError::malformed(next, "OPTIONS sections form a loop"));
                }
                let (id, body, base) = read_section(src, next, codec.as_mut(), "OPTIONS section")?;
                if id != opt::DONE {
                    return Err(TraceDatError::malformed(next, format!("section {id} where OPTIONS was expected")));
                }
                next = parse_options(&body, base, big_endian, 7, &mut opts)?;
            }
            if opts.latency {
                return Err(TraceDatError::Latency);
            }
            // header_page first: the format files' `long` depends on it.
            opts.sections.sort_by_key(|s| s.0);
            for &(id, off) in &opts.sections {
                let what = match id {
                    opt::HEADER_INFO => "header-info section",
                    opt::FTRACE_EVENTS => "ftrace-formats section",
                    opt::EVENT_FORMATS => "event-formats section",
                    opt::KALLSYMS => "kallsyms section",
                    opt::PRINTK => "printk section",
                    _ => "cmdlines section",
                };
                let (_, body, _) = read_section(src, off, codec.as_mut(), what)?;
                let mut s = Src::new(Cursor::new(&body[..]))?;
                s.big_endian = big_endian;
                match id {
                    opt::HEADER_INFO => data.read_header_info(&mut s)?,
                    opt::FTRACE_EVENTS => data.read_ftrace_formats(&mut s)?,
                    opt::EVENT_FORMATS => data.read_event_formats(&mut s)?,
                    opt::KALLSYMS => data.read_kallsyms(&mut s)?,
                    opt::PRINTK => data.read_printk(&mut s)?,
                    _ => data.read_cmdlines(&mut s)?,
                }
            }
            for (off, mut b) in std::mem::take(&mut opts.v7_buffers) {
                // The flyrecord section header says whether its data is compressed.
                src.seek(off, "buffer section")?;
                let _id = src.u16("section id")?;
                let flags = src.u16("section flags")?;
                b.compressed = flags & SECTION_COMPRESSED != 0 && codec.is_some();
                if b.clock.is_none() {
                    b.clock.clone_from(&opts.clock);
                }
                buffers.push(b);
            }
        }
        if opts.latency {
            return Err(TraceDatError::Latency);
        }
        Ok(Self {
            header,
            data,
            buffers,
            meta: opts.meta,
            codec,
            tsc2nsec: opts.tsc2nsec,
            ts_offset: opts.ts_offset,
            overrun: opts.overrun,
        })
    }
}

/// Reads a v7 section at `off`: (id, body, file offset of the body).
fn read_section<R: Read + Seek>(
    src: &mut Src<R>,
    off: u64,
    codec: Option<&mut Codec>,
    what: &'static str,
) -> Result<(u16, Vec<u8>, u64), TraceDatError> {
    src.seek(off, what)?;
    let id = src.u16("section id")?;
    let flags = src.u16("section flags")?;
    let _string = src.u32("section string")?;
    let size = src.u64("section size")?;
    let base = src.pos();
    if flags & SECTION_COMPRESSED == 0 {
        return Ok((id, src.bytes(size, "section body")?, base));
    }
    let Some(codec) = codec else {
        return Err(TraceDatError::malformed(off, "compressed section in a file without compression"));
    };
    let csize = src.u32("compressed size")?;
    let at = src.pos();
    let usize_ = src.u32("uncompressed size")?;
    if u64::from(usize_) > BLOCK_LIMIT {
        return Err(TraceDatError::TooLarge {
            offset: at,
            what: "uncompressed section",
            size: usize_.into(),
            limit: BLOCK_LIMIT,
        });
    }
    let input = src.bytes(csize.into(), "compressed section")?;
    let mut out = Vec::new();
    if !codec.decompress(&input, usize_ as usize, &mut out) {
        return Err(TraceDatError::malformed(base, format!("section {id} does not decompress to its {usize_} bytes")));
    }
    Ok((id, out, base))
}

/// Parses one OPTIONS body; returns the DONE option's next offset (v7) or 0.
fn parse_options(body: &[u8], base: u64, be: bool, version: u32, o: &mut Opts) -> Result<u64, TraceDatError> {
    let mut b = Bytes::new(body, base, be);
    let mut n = 0;
    while !b.is_empty() {
        n += 1;
        if n > OPTIONS_LIMIT {
            return Err(TraceDatError::malformed(b.offset(), "too many options"));
        }
        let id = b.u16("option id")?;
        let size = b.u32("option size")?;
        let at = b.offset();
        let d = b.take(size as usize, "option data")?;
        let mut d = Bytes::new(d, at, be);
        let text =
            |d: &[u8]| String::from_utf8_lossy(d.split(|&c| c == 0).next().unwrap_or_default()).trim().to_string();
        match id {
            opt::DONE => return if version == 7 { d.u64("next options offset") } else { Ok(0) },
            opt::BUFFER if version == 6 => {
                let off = d.u64("buffer offset")?;
                let name = String::from_utf8_lossy(d.cstr()).into_owned();
                if o.v6_buffers.len() < BUFFER_LIMIT {
                    o.v6_buffers.push((off, name));
                }
            }
            opt::BUFFER => {
                let off = d.u64("buffer offset")?;
                let name = String::from_utf8_lossy(d.cstr()).into_owned();
                let clock = String::from_utf8_lossy(d.cstr()).into_owned();
                let page_at = d.offset();
                let page_size = d.u32("buffer page size")?;
                if !(64..=(64 << 20)).contains(&page_size) {
                    return Err(TraceDatError::malformed(page_at, format!("sub-buffer size {page_size}")));
                }
                let count = d.u32("buffer CPU count")?;
                if count > CPU_LIMIT {
                    return Err(TraceDatError::TooLarge {
                        offset: d.offset(),
                        what: "buffer CPU count",
                        size: count.into(),
                        limit: CPU_LIMIT.into(),
                    });
                }
                let mut cpus = Vec::new();
                for _ in 0..count {
                    let cpu = d.u32("cpu id")?;
                    let offset = d.u64("cpu data offset")?;
                    let size = d.u64("cpu data size")?;
                    cpus.push(CpuData { cpu, offset, size });
                }
                if o.v7_buffers.len() < BUFFER_LIMIT {
                    let clock = (!clock.is_empty()).then_some(clock);
                    o.v7_buffers.push((off, BufferInfo { name, clock, page_size, compressed: false, cpus }));
                }
            }
            opt::TRACECLOCK => {
                // `[local] global counter …`: the bracketed one is in use.
                let t = text(d.take(size as usize, "clock")?);
                let cur = t.split_whitespace().find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')));
                o.clock = Some(cur.unwrap_or(&t).to_string());
            }
            opt::DATE | opt::UNAME | opt::VERSION | opt::CPUCOUNT => {
                let name = match id {
                    opt::DATE => "date",
                    opt::UNAME => "uname",
                    opt::VERSION => "version",
                    _ => "cpucount",
                };
                let v = if id == opt::CPUCOUNT {
                    d.u32("cpu count")?.to_string()
                } else {
                    text(d.take(size as usize, "text")?)
                };
                o.meta.push((name.to_string(), v));
            }
            opt::CPUSTAT => {
                let t = text(d.take(size as usize, "cpustat")?);
                for line in t.lines() {
                    if let Some(v) = line.strip_prefix("overrun:") {
                        o.overrun = o.overrun.saturating_add(v.trim().parse().unwrap_or(0));
                    }
                }
            }
            opt::OFFSET => {
                let t = text(d.take(size as usize, "offset")?);
                o.ts_offset = t.parse().unwrap_or(0);
            }
            opt::TSC2NSEC => {
                let mult = d.u32("tsc2nsec mult")?;
                let shift = d.u32("tsc2nsec shift")?;
                let offset = d.u64("tsc2nsec offset")?;
                // trace-cmd holds mult in an int: larger values are not a rate.
                if shift < 64 && mult != 0 && mult <= i32::MAX as u32 {
                    o.tsc2nsec = Some((mult, shift, offset));
                }
            }
            opt::HEADER_INFO..=opt::CMDLINES if version == 7 => {
                let off = d.u64("section offset")?;
                if !o.sections.iter().any(|s| s.0 == id) {
                    o.sections.push((id, off));
                }
            }
            opt::BUFFER_TEXT => o.latency = true,
            _ => {}
        }
    }
    Ok(0)
}

/// Reads v6 tags from the current position until `flyrecord` (or `latency`).
fn read_v6_tags<R: Read + Seek>(src: &mut Src<R>, cpus: u32, o: &mut Opts) -> Result<Vec<CpuData>, TraceDatError> {
    for _ in 0..CHAIN_LIMIT {
        let at = src.pos();
        let mut tag = [0u8; 10];
        src.fill(&mut tag, "section tag")?;
        match &tag {
            b"options  \0" => {
                // {u16 id, u32 size, data} until id 0; read them into a block.
                let mut body = Vec::new();
                for _ in 0..OPTIONS_LIMIT {
                    let id = src.u16("option id")?;
                    let (idb, szb) = if src.big_endian {
                        (id.to_be_bytes(), 0u32.to_be_bytes())
                    } else {
                        (id.to_le_bytes(), 0u32.to_le_bytes())
                    };
                    if id == opt::DONE {
                        body.extend_from_slice(&idb);
                        body.extend_from_slice(&szb);
                        break;
                    }
                    let size = src.u32("option size")?;
                    let d = src.bytes(size.into(), "option data")?;
                    body.extend_from_slice(&idb);
                    body.extend_from_slice(&if src.big_endian { size.to_be_bytes() } else { size.to_le_bytes() });
                    body.extend_from_slice(&d);
                    if body.len() as u64 > BLOCK_LIMIT {
                        return Err(TraceDatError::TooLarge {
                            offset: at,
                            what: "options",
                            size: body.len() as u64,
                            limit: BLOCK_LIMIT,
                        });
                    }
                }
                parse_options(&body, at + 10, src.big_endian, 6, o)?;
            }
            b"latency  \0" => return Err(TraceDatError::Latency),
            b"flyrecord\0" => {
                let mut v = Vec::new();
                for cpu in 0..cpus {
                    let offset = src.u64("cpu data offset")?;
                    let size = src.u64("cpu data size")?;
                    v.push(CpuData { cpu, offset, size });
                }
                return Ok(v);
            }
            _ => return Err(TraceDatError::malformed(at, "expected `options`, `latency` or `flyrecord`")),
        }
    }
    Err(TraceDatError::malformed(src.pos(), "too many option blocks"))
}
