//! A trace.dat (trace-cmd file format version 6) writer: what the model did,
//! as `trace-cmd record` would have stored it, for benchmarks and for tests
//! that compare the binary and the text readers on the same events.
//!
//! Events are laid out by real format files of a Linux 6.12 x86_64 kernel
//! (`formats/`, as tracefs printed them), with every field placed by name
//! at its offset; `__data_loc` strings and arrays are appended after the
//! fixed part as the kernel does. Each CPU's events go to ring-buffer pages
//! (u64 page timestamp, u64 commit, then 4-byte-aligned event headers of
//! `type_len:5, time_delta:27`, with a time-extend event when a delta does
//! not fit 27 bits). The file is: the common prefix, `header_page`,
//! `header_event`, the event formats, a kallsyms block for the probed
//! functions, the cmdlines, a CPU-count option, the flyrecord table with
//! the trace clock, and the page-aligned CPU data.
//!
//! Units: timestamps in nanoseconds.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// The format files of the events the model emits, as `system.event`.
const FORMATS: &[(&str, &str)] = &[
    ("iommu.map", include_str!("../formats/iommu.map.format")),
    ("iommu.unmap", include_str!("../formats/iommu.unmap.format")),
    ("iommu.attach_device_to_domain", include_str!("../formats/iommu.attach_device_to_domain.format")),
    ("iommu.add_device_to_group", include_str!("../formats/iommu.add_device_to_group.format")),
    ("iommu.remove_device_from_group", include_str!("../formats/iommu.remove_device_from_group.format")),
    ("kmem.mm_page_alloc", include_str!("../formats/kmem.mm_page_alloc.format")),
    ("kmem.mm_page_free", include_str!("../formats/kmem.mm_page_free.format")),
    ("dma.dma_map_page", include_str!("../formats/dma.dma_map_page.format")),
    ("dma.dma_map_sg_err", include_str!("../formats/dma.dma_map_sg_err.format")),
    ("dma.dma_unmap_page", include_str!("../formats/dma.dma_unmap_page.format")),
    ("dma.dma_map_sg", include_str!("../formats/dma.dma_map_sg.format")),
    ("dma.dma_unmap_sg", include_str!("../formats/dma.dma_unmap_sg.format")),
    ("dma.dma_alloc", include_str!("../formats/dma.dma_alloc.format")),
    ("dma.dma_free", include_str!("../formats/dma.dma_free.format")),
    ("intel_iommu.cache_tag_assign", include_str!("../formats/intel_iommu.cache_tag_assign.format")),
    ("intel_iommu.cache_tag_flush_range", include_str!("../formats/intel_iommu.cache_tag_flush_range.format")),
    ("intel_iommu.cache_tag_flush_all", include_str!("../formats/intel_iommu.cache_tag_flush_all.format")),
    ("kprobes.iommu_map", include_str!("../formats/kprobes.iommu_map.format")),
    ("kprobes.iommu_unmap", include_str!("../formats/kprobes.iommu_unmap.format")),
    ("kprobes.iommu_attach", include_str!("../formats/kprobes.iommu_attach.format")),
    ("kprobes.iommu_domain_free", include_str!("../formats/kprobes.iommu_domain_free.format")),
    ("kprobes.iommu_map_ret", include_str!("../formats/kprobes.iommu_map_ret.format")),
    ("kprobes.iommu_unmap_ret", include_str!("../formats/kprobes.iommu_unmap_ret.format")),
    ("kprobes.fq_flush_timeout", include_str!("../formats/kprobes.fq_flush_timeout.format")),
    ("kprobes.fq_flush_iotlb", include_str!("../formats/kprobes.fq_flush_iotlb.format")),
];

/// Addresses the model gives the functions its kprobes probe (and their
/// callers, for return probes): a kallsyms block names them.
pub const KALLSYMS: &[(u64, &str)] = &[
    (0xffff_ffff_8192_0000, "iommu_map"),
    (0xffff_ffff_8192_1000, "__iommu_map"),
    (0xffff_ffff_8192_2000, "iommu_unmap"),
    (0xffff_ffff_8192_3000, "__iommu_unmap"),
    (0xffff_ffff_8192_4000, "__iommu_attach_device"),
    (0xffff_ffff_8192_5000, "iommu_domain_free"),
    (0xffff_ffff_8192_6000, "iommu_map_sg"),
    (0xffff_ffff_8192_7000, "fq_flush_timeout"),
    (0xffff_ffff_8192_8000, "fq_flush_iotlb"),
    (0xffff_ffff_8192_9000, "iommu_dma_unmap_page"),
    (0xffff_ffff_8192_a000, "iommu_dma_map_page"),
];

/// `header_page` for sub-buffers of `page` bytes (the data follows a
/// 16-byte header, as the kernel prints it).
fn header_page(page: usize) -> String {
    format!(
        "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\
\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n\
\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n\
\tfield: char data;\toffset:16;\tsize:{};\tsigned:0;\n",
        page - PAGE_HEADER
    )
}

const HEADER_EVENT: &str = "# compressed entry header\n\ttype_len    :    5 bits\n\ttime_delta  :   27 bits\n\
\tarray       :   32 bits\n\n\tpadding     : type == 29\n\ttime_extend : type == 30\n\ttime_stamp : type == 31\n\
\tdata max type_len  == 28\n";

/// The default ring-buffer sub-buffer: one 4 KiB CPU page.
const PAGE: usize = 4096;
/// Page header: u64 timestamp + u64 commit.
const PAGE_HEADER: usize = 16;
/// Largest payload a `type_len` can describe (28 words).
const MAX_SMALL: usize = 112;
/// `type_len` of a time-extend event.
const TIME_EXTEND: u32 = 30;

/// A value for one field.
#[derive(Clone, Copy, Debug)]
pub enum Val<'a> {
    /// An integer, truncated to the field's size.
    U(u64),
    /// A string (`char[]` or `__data_loc char[]`); a NUL is added.
    Str(&'a str),
    /// An array of u64 (`__data_loc u64[]`).
    U64s(&'a [u64]),
    /// An array of u32 (`__data_loc unsigned int[]`).
    U32s(&'a [u32]),
}

#[derive(Debug)]
struct Field {
    name: String,
    offset: usize,
    size: usize,
    data_loc: bool,
}

#[derive(Debug)]
struct Format {
    system: String,
    name: String,
    id: u16,
    text: &'static str,
    fields: Vec<Field>,
    fixed_len: usize,
}

fn parse_format(key: &str, text: &'static str) -> Format {
    let (system, name) = key.split_once('.').unwrap_or(("", key));
    let mut id = 0;
    let mut fields = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("ID: ") {
            id = v.trim().parse().unwrap_or(0);
        }
        let Some(rest) = line.trim().strip_prefix("field:") else { continue };
        let mut parts = rest.split(';').map(str::trim);
        let decl = parts.next().unwrap_or("");
        let num = |p: &str, k: &str| p.strip_prefix(k).and_then(|v| v.parse::<usize>().ok());
        let (mut offset, mut size) = (0, 0);
        for p in parts {
            offset = num(p, "offset:").unwrap_or(offset);
            size = num(p, "size:").unwrap_or(size);
        }
        let fname = decl.rsplit([' ', '*']).next().unwrap_or("");
        let fname = fname.split('[').next().unwrap_or(fname).to_string();
        fields.push(Field { name: fname, offset, size, data_loc: decl.starts_with("__data_loc") });
    }
    let fixed_len = fields.iter().map(|f| f.offset + f.size).max().unwrap_or(8);
    Format { system: system.into(), name: name.into(), id, text, fields, fixed_len }
}

#[derive(Default)]
struct Cpu {
    /// Sub-buffer size: the kernel's PAGE_SIZE unless `buffer_subbuf_size_kb` changed it.
    subbuf: usize,
    pages: Vec<u8>,
    page: Vec<u8>,
    page_ts: u64,
    last_ts: u64,
}

impl Cpu {
    fn close_page(&mut self) {
        if self.page.is_empty() {
            return;
        }
        let mut p = Vec::with_capacity(self.subbuf);
        p.extend_from_slice(&self.page_ts.to_le_bytes());
        p.extend_from_slice(&(self.page.len() as u64).to_le_bytes());
        p.extend_from_slice(&self.page);
        p.resize(self.subbuf, 0);
        self.pages.extend_from_slice(&p);
        self.page.clear();
    }

    fn push(&mut self, ts: u64, payload: &[u8]) {
        let body = if payload.len() <= MAX_SMALL { payload.len() } else { payload.len() + 4 };
        let need = 4 + body + 8;
        if self.page.len() + need > self.subbuf - PAGE_HEADER {
            self.close_page();
        }
        if self.page.is_empty() {
            self.page_ts = ts;
            self.last_ts = ts;
        }
        let mut delta = ts.saturating_sub(self.last_ts);
        if delta >= 1 << 27 {
            let hdr = TIME_EXTEND | (((delta & ((1 << 27) - 1)) as u32) << 5);
            self.page.extend_from_slice(&hdr.to_le_bytes());
            self.page.extend_from_slice(&((delta >> 27) as u32).to_le_bytes());
            delta = 0;
        }
        self.last_ts = ts.max(self.last_ts);
        let type_len = if payload.len() <= MAX_SMALL { (payload.len() / 4) as u32 } else { 0 };
        let hdr = type_len | ((delta as u32) << 5);
        self.page.extend_from_slice(&hdr.to_le_bytes());
        if type_len == 0 {
            self.page.extend_from_slice(&((payload.len() + 4) as u32).to_le_bytes());
        }
        self.page.extend_from_slice(payload);
    }
}

/// Writes a trace.dat of events given by name and field values.
pub struct TraceDatWriter {
    /// Header page size and sub-buffer size, bytes.
    page: usize,
    formats: Vec<Format>,
    cpus: Vec<Cpu>,
    comms: BTreeMap<u32, String>,
    events: u64,
}

impl Default for TraceDatWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceDatWriter {
    /// A writer with the model's event formats.
    #[must_use]
    pub fn new() -> Self {
        Self::with_page_size(PAGE)
    }

    /// A writer for a kernel with `page` bytes per CPU page (the file's
    /// page size and its ring-buffer sub-buffers, as the kernel's default
    /// sub-buffer is one page); sizes below 4 KiB read as 4 KiB.
    #[must_use]
    pub fn with_page_size(page: usize) -> Self {
        Self {
            page: page.max(PAGE),
            formats: FORMATS.iter().map(|(k, t)| parse_format(k, t)).collect(),
            cpus: Vec::new(),
            comms: BTreeMap::new(),
            events: 0,
        }
    }

    /// Events written.
    #[must_use]
    pub fn events(&self) -> u64 {
        self.events
    }

    /// One event of `system:name` at `ts` ns on `cpu` by task `pid`
    /// (`comm`), `flags` being the `common_flags` byte (TRACE_FLAG_*: 0x01
    /// irqs off, 0x08 hardirq, 0x10 softirq). Fields not given are zero.
    ///
    /// # Errors
    /// `InvalidInput` for an event without a format, an unknown field or a
    /// record larger than a page.
    #[allow(clippy::too_many_arguments)]
    pub fn event(
        &mut self,
        system: &str,
        name: &str,
        ts: u64,
        cpu: u32,
        pid: u32,
        comm: &str,
        flags: u8,
        fields: &[(&str, Val<'_>)],
    ) -> io::Result<()> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let fmt = self
            .formats
            .iter()
            .find(|f| f.system == system && f.name == name)
            .ok_or_else(|| bad(format!("no format for {system}:{name}")))?;
        let mut rec = vec![0u8; fmt.fixed_len];
        put(&mut rec, 0, 2, u64::from(fmt.id));
        put(&mut rec, 2, 1, u64::from(flags));
        put(&mut rec, 4, 4, u64::from(pid));
        for (fname, val) in fields {
            let f = fmt
                .fields
                .iter()
                .find(|f| f.name == *fname)
                .ok_or_else(|| bad(format!("{system}:{name} has no field {fname}")))?;
            let bytes: Vec<u8> = match val {
                Val::U(v) => {
                    put(&mut rec, f.offset, f.size, *v);
                    continue;
                }
                Val::Str(s) => {
                    let mut b = s.as_bytes().to_vec();
                    b.push(0);
                    b
                }
                Val::U64s(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
                Val::U32s(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            if f.data_loc {
                let at = rec.len();
                put(&mut rec, f.offset, 4, ((bytes.len() as u64) << 16) | at as u64);
                rec.extend_from_slice(&bytes);
            } else {
                let n = bytes.len().min(f.size);
                rec.get_mut(f.offset..f.offset + n).unwrap_or(&mut []).copy_from_slice(bytes.get(..n).unwrap_or(&[]));
            }
        }
        while rec.len() % 4 != 0 {
            rec.push(0);
        }
        if rec.len() + 8 > self.page - PAGE_HEADER {
            return Err(bad(format!("{system}:{name} record of {} bytes does not fit a page", rec.len())));
        }
        let i = cpu as usize;
        if self.cpus.len() <= i {
            let subbuf = self.page;
            self.cpus.resize_with(i + 1, || Cpu { subbuf, ..Cpu::default() });
        }
        if let Some(c) = self.cpus.get_mut(i) {
            c.push(ts, &rec);
        }
        if !self.comms.contains_key(&pid) && self.comms.len() < 1 << 16 {
            self.comms.insert(pid, comm.to_string());
        }
        self.events += 1;
        Ok(())
    }

    /// Writes the file.
    ///
    /// # Errors
    /// Errors of `out`.
    pub fn finish(mut self, mut out: impl Write) -> io::Result<()> {
        for c in &mut self.cpus {
            c.close_page();
        }
        let mut h = Vec::new();
        h.extend_from_slice(b"\x17\x08Dtracing6\0");
        h.push(0); // little-endian
        h.push(8); // user-space long size
        h.extend_from_slice(&(self.page as u32).to_le_bytes());
        let page_text = header_page(self.page);
        for (tag, text) in [("header_page", page_text.as_str()), ("header_event", HEADER_EVENT)] {
            h.extend_from_slice(tag.as_bytes());
            h.push(0);
            h.extend_from_slice(&(text.len() as u64).to_le_bytes());
            h.extend_from_slice(text.as_bytes());
        }
        h.extend_from_slice(&0u32.to_le_bytes()); // no ftrace formats
        let mut systems: BTreeMap<&str, Vec<&Format>> = BTreeMap::new();
        for f in &self.formats {
            systems.entry(&f.system).or_default().push(f);
        }
        h.extend_from_slice(&(systems.len() as u32).to_le_bytes());
        for (sys, fmts) in &systems {
            h.extend_from_slice(sys.as_bytes());
            h.push(0);
            h.extend_from_slice(&(fmts.len() as u32).to_le_bytes());
            for f in fmts {
                h.extend_from_slice(&(f.text.len() as u64).to_le_bytes());
                h.extend_from_slice(f.text.as_bytes());
            }
        }
        let kallsyms: String = KALLSYMS.iter().map(|(a, n)| format!("{a:016x} T {n}\n")).collect();
        h.extend_from_slice(&(kallsyms.len() as u32).to_le_bytes());
        h.extend_from_slice(kallsyms.as_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // no printk formats
        let cmdlines: String = self.comms.iter().map(|(p, c)| format!("{p} {c}\n")).collect();
        h.extend_from_slice(&(cmdlines.len() as u64).to_le_bytes());
        h.extend_from_slice(cmdlines.as_bytes());
        let ncpus = self.cpus.len().max(1) as u32;
        h.extend_from_slice(&ncpus.to_le_bytes());
        h.extend_from_slice(b"options  \0");
        h.extend_from_slice(&8u16.to_le_bytes()); // CPUCOUNT
        h.extend_from_slice(&4u32.to_le_bytes());
        h.extend_from_slice(&ncpus.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // end of options
        h.extend_from_slice(b"flyrecord\0");
        let clock = b"[local] global counter uptime perf mono mono_raw boot";
        let table_len = ncpus as usize * 16 + 8 + clock.len();
        let data_start = (h.len() + table_len).div_ceil(self.page) * self.page;
        let mut at = data_start as u64;
        for i in 0..ncpus as usize {
            let len = self.cpus.get(i).map_or(0, |c| c.pages.len() as u64);
            h.extend_from_slice(&at.to_le_bytes());
            h.extend_from_slice(&len.to_le_bytes());
            at += len;
        }
        h.extend_from_slice(&(clock.len() as u64).to_le_bytes());
        h.extend_from_slice(clock);
        h.resize(data_start, 0);
        out.write_all(&h)?;
        for c in &self.cpus {
            out.write_all(&c.pages)?;
        }
        out.flush()
    }
}

/// Writes `v` little-endian into `size` bytes at `offset` (ignored when out of range).
fn put(rec: &mut [u8], offset: usize, size: usize, v: u64) {
    let bytes = v.to_le_bytes();
    if let (Some(dst), Some(src)) = (rec.get_mut(offset..offset + size), bytes.get(..size.min(8))) {
        if let Some(d) = dst.get_mut(..src.len()) {
            d.copy_from_slice(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_with_their_fields() {
        let w = TraceDatWriter::new();
        let map = w.formats.iter().find(|f| f.name == "map").unwrap();
        assert_eq!(map.id, 1265);
        let names: Vec<_> = map.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["common_type", "common_flags", "common_preempt_count", "common_pid", "iova", "paddr", "size"]
        );
        let sg = w.formats.iter().find(|f| f.name == "dma_map_sg").unwrap();
        assert!(sg.fields.iter().any(|f| f.name == "phys_addrs" && f.data_loc));
    }

    #[test]
    fn events_land_in_pages_with_extends_for_long_gaps() {
        let mut w = TraceDatWriter::new();
        for i in 0..500u64 {
            w.event(
                "kmem",
                "mm_page_free",
                1_000 + i * 300_000_000,
                (i % 2) as u32,
                7,
                "t",
                0,
                &[("pfn", Val::U(i)), ("order", Val::U(0))],
            )
            .unwrap();
        }
        w.event(
            "dma",
            "dma_map_sg",
            5,
            0,
            7,
            "t",
            0,
            &[("device", Val::Str("0000:00:02.0")), ("phys_addrs", Val::U64s(&[1, 2]))],
        )
        .unwrap();
        assert!(w.event("kmem", "nope", 1, 0, 1, "t", 0, &[]).is_err());
        assert!(w.event("kmem", "mm_page_free", 1, 0, 1, "t", 0, &[("nope", Val::U(1))]).is_err());
        let mut out = Vec::new();
        w.finish(&mut out).unwrap();
        if let Some(p) = std::env::var_os("IOSAN_TRACEDAT_OUT") {
            std::fs::write(p, &out).unwrap();
        }
        assert!(out.starts_with(b"\x17\x08Dtracing6\0"));
        assert_eq!(out.len() % PAGE, 0);
    }
}
