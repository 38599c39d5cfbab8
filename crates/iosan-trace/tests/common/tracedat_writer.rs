//! A small trace.dat writer for tests: v6 and v7, both byte orders, 4- and
//! 8-byte longs, any sub-buffer size, no/zstd/zlib compression, several
//! buffers. Written from the layout facts (FORMATS-2026-12 §1), not from
//! trace-cmd's code; its output is checked by `trace-cmd report` in
//! `tracedat_synth.rs` when trace-cmd is installed.
#![allow(dead_code)]

use std::io::Write;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Codec {
    None,
    Zstd,
    Zlib,
}

/// One CPU's id and raw pages.
pub type CpuPages = (u32, Vec<u8>);

pub struct Writer {
    pub version: u32,
    pub be: bool,
    pub long: u8,
    pub page: u32,
    pub codec: Codec,
    pub ftrace: Vec<String>,
    pub systems: Vec<(String, Vec<String>)>,
    pub kallsyms: String,
    pub printk: String,
    pub cmdlines: String,
    /// (name, per CPU (cpu id, raw pages)).
    pub buffers: Vec<(String, Vec<CpuPages>)>,
    /// Pages per compressed chunk.
    pub pages_per_chunk: usize,
    /// Hostile knobs: every chunk replaced by (stated size, bytes).
    pub chunk_override: Option<(u32, Vec<u8>)>,
    /// The chunk count written instead of the real one.
    pub chunk_count: Option<u32>,
    /// The BUFFER option's CPU count written instead of the real one.
    pub buffer_cpu_count: Option<u32>,
    /// The kallsyms section's stated uncompressed size.
    pub kallsyms_usize: Option<u32>,
    /// The BUFFER options' clock.
    pub clock: String,
    /// More v7 options (id, payload), written before DONE.
    pub extra_options: Vec<(u16, Vec<u8>)>,
}

pub const COMMON: &str = "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n";

/// `iommu:map` with ID 10 (x86/arm64 layout).
pub fn map_format() -> String {
    format!(
        "name: map\nID: 10\nformat:\n{COMMON}\tfield:u64 iova;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:u64 paddr;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:size_t size;\toffset:24;\tsize:8;\tsigned:0;\n\nprint fmt: \"IOMMU: iova=0x%016llx - 0x%016llx paddr=0x%016llx size=%zu\", REC->iova, REC->iova + REC->size, REC->paddr, REC->size\n"
    )
}

/// A kprobe with `__probe_ip` (ID 20).
pub fn kprobe_format() -> String {
    format!(
        "name: iommu_map\nID: 20\nformat:\n{COMMON}\tfield:unsigned long __probe_ip;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:u64 domain;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:__data_loc char[] dev;\toffset:24;\tsize:4;\tsigned:1;\n\nprint fmt: \"(%lx) domain=0x%Lx dev=\\\"%s\\\"\", REC->__probe_ip, REC->domain, __get_str(dev)\n"
    )
}

/// `ftrace:kernel_stack` (ID 4).
pub fn stack_format(long: u8) -> String {
    let (off, size) = if long == 8 { (16, 64) } else { (12, 32) };
    format!(
        "name: kernel_stack\nID: 4\nformat:\n{COMMON}\tfield:int size;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:unsigned long caller[8];\toffset:{off};\tsize:{size};\tsigned:0;\n\nprint fmt: \"\\t=> %ps\\n\\t=> %ps\\n\", (void *)REC->caller[0], (void *)REC->caller[1]\n"
    )
}

pub fn header_page(long: u8, page: u32) -> String {
    let d = 8 + u32::from(long);
    format!(
        "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\tfield: local_t commit;\toffset:8;\tsize:{long};\tsigned:1;\n\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n\tfield: char data;\toffset:{d};\tsize:{};\tsigned:0;\n",
        page - d
    )
}

pub const HEADER_EVENT: &str = "# compressed entry header\n\ttype_len    :    5 bits\n\ttime_delta  :   27 bits\n\tarray       :   32 bits\n\n\tpadding     : type == 29\n\ttime_extend : type == 30\n\ttime_stamp : type == 31\n\tdata max type_len  == 28\n";

/// Builds ring-buffer pages.
pub struct Pages {
    pub be: bool,
    pub long: u8,
    pub page: usize,
    pub out: Vec<u8>,
    cur: Vec<u8>,
    flags: u64,
    stored_lost: Option<u64>,
    last_ts: u64,
    page_ts: u64,
    open: bool,
}

impl Pages {
    pub fn new(be: bool, long: u8, page: u32) -> Self {
        Self {
            be,
            long,
            page: page as usize,
            out: Vec::new(),
            cur: Vec::new(),
            flags: 0,
            stored_lost: None,
            last_ts: 0,
            page_ts: 0,
            open: false,
        }
    }

    fn u32b(&self, v: u32) -> [u8; 4] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn hdr(&self, type_len: u32, delta: u32) -> [u8; 4] {
        let h = if self.be { (type_len << 27) | delta } else { type_len | (delta << 5) };
        self.u32b(h)
    }

    fn data_off(&self) -> usize {
        8 + usize::from(self.long)
    }

    /// Starts a page at absolute `ts`; `lost` marks missed events before it
    /// (`Some(Some(n))` stores the count).
    pub fn start(&mut self, ts: u64, lost: Option<Option<u64>>) {
        self.finish_page();
        self.open = true;
        self.cur.clear();
        self.last_ts = ts;
        self.page_ts = ts;
        self.flags = match lost {
            None => 0,
            Some(None) => 1 << 31,
            Some(Some(_)) => (1 << 31) | (1 << 30),
        };
        self.stored_lost = lost.flatten();
    }

    /// Adds a record at absolute `ts` (time extends inserted as needed);
    /// starts a new page when it does not fit.
    pub fn record(&mut self, ts: u64, payload: &[u8]) {
        let len = payload.len().div_ceil(4) * 4;
        let need = 8 + 4 + len + 8 + usize::from(self.long);
        if !self.open || self.data_off() + self.cur.len() + need > self.page {
            self.start(ts, None);
        }
        let delta = ts - self.last_ts;
        if delta >= 1 << 27 {
            let h = self.hdr(30, (delta & ((1 << 27) - 1)) as u32);
            self.cur.extend_from_slice(&h);
            let a = self.u32b((delta >> 27) as u32);
            self.cur.extend_from_slice(&a);
        }
        let d = if delta >= 1 << 27 { 0 } else { delta as u32 };
        self.last_ts = ts;
        if len <= 28 * 4 && len > 0 {
            let h = self.hdr((len / 4) as u32, d);
            self.cur.extend_from_slice(&h);
        } else {
            let h = self.hdr(0, d);
            self.cur.extend_from_slice(&h);
            let a = self.u32b((len + 4) as u32);
            self.cur.extend_from_slice(&a);
        }
        self.cur.extend_from_slice(payload);
        self.cur.resize(self.cur.len() + (len - payload.len()), 0);
    }

    /// Pads the data to the end of the page with a padding event.
    pub fn padding(&mut self) {
        let h = self.hdr(29, 0);
        self.cur.extend_from_slice(&h);
    }

    fn finish_page(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        let mut p = vec![0u8; self.page];
        let ts = self.first_ts_of_cur();
        p[..8].copy_from_slice(&if self.be { ts.to_be_bytes() } else { ts.to_le_bytes() });
        let commit = self.cur.len() as u64 | self.flags;
        let l = usize::from(self.long);
        if l == 8 {
            p[8..16].copy_from_slice(&if self.be { commit.to_be_bytes() } else { commit.to_le_bytes() });
        } else {
            p[8..12].copy_from_slice(&self.u32b(commit as u32));
        }
        let d = self.data_off();
        p[d..d + self.cur.len()].copy_from_slice(&self.cur);
        if let Some(n) = self.stored_lost {
            let at = d + self.cur.len();
            if l == 8 {
                p[at..at + 8].copy_from_slice(&if self.be { n.to_be_bytes() } else { n.to_le_bytes() });
            } else {
                p[at..at + 4].copy_from_slice(&self.u32b(n as u32));
            }
        }
        self.out.extend_from_slice(&p);
    }

    fn first_ts_of_cur(&self) -> u64 {
        self.page_ts
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.finish_page();
        self.out
    }
}

/// A record payload with the common fields.
pub fn record(be: bool, id: u16, flags: u8, pid: i32, rest: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&if be { id.to_be_bytes() } else { id.to_le_bytes() });
    r.push(flags);
    r.push(0);
    r.extend_from_slice(&if be { pid.to_be_bytes() } else { pid.to_le_bytes() });
    r.extend_from_slice(rest);
    r
}

pub fn u64b(be: bool, v: u64) -> [u8; 8] {
    if be {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    }
}

impl Writer {
    pub fn new(version: u32, codec: Codec) -> Self {
        Self {
            version,
            be: false,
            long: 8,
            page: 4096,
            codec,
            ftrace: vec![stack_format(8)],
            systems: vec![("iommu".into(), vec![map_format()]), ("lab".into(), vec![kprobe_format()])],
            kallsyms: "ffffffff81000000 T _stext\nffffffff81929360 T __iommu_map\nffffffff81929600 T iommu_map\nffffffff81a00000 t dma_helper\t[mydrv]\nffffffff81b00000 T _etext\n".into(),
            printk: String::new(),
            cmdlines: "1 init\n148 insmod\n".into(),
            buffers: Vec::new(),
            pages_per_chunk: 10,
            chunk_override: None,
            chunk_count: None,
            buffer_cpu_count: None,
            kallsyms_usize: None,
            clock: "local".into(),
            extra_options: Vec::new(),
        }
    }

    fn u16b(&self, v: u16) -> [u8; 2] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn u32b(&self, v: u32) -> [u8; 4] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn u64b(&self, v: u64) -> [u8; 8] {
        u64b(self.be, v)
    }

    fn preamble(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\x17\x08\x44tracing");
        out.extend_from_slice(format!("{}\0", self.version).as_bytes());
        out.push(u8::from(self.be));
        out.push(self.long);
        out.extend_from_slice(&self.u32b(self.page));
    }

    fn header_info(&self) -> Vec<u8> {
        let mut b = Vec::new();
        let hp = header_page(self.long, self.page);
        b.extend_from_slice(b"header_page\0");
        b.extend_from_slice(&self.u64b(hp.len() as u64));
        b.extend_from_slice(hp.as_bytes());
        b.extend_from_slice(b"header_event\0");
        b.extend_from_slice(&self.u64b(HEADER_EVENT.len() as u64));
        b.extend_from_slice(HEADER_EVENT.as_bytes());
        b
    }

    fn ftrace_formats(&self) -> Vec<u8> {
        let mut b = self.u32b(self.ftrace.len() as u32).to_vec();
        for f in &self.ftrace {
            b.extend_from_slice(&self.u64b(f.len() as u64));
            b.extend_from_slice(f.as_bytes());
        }
        b
    }

    fn event_formats(&self) -> Vec<u8> {
        let mut b = self.u32b(self.systems.len() as u32).to_vec();
        for (name, fs) in &self.systems {
            b.extend_from_slice(name.as_bytes());
            b.push(0);
            b.extend_from_slice(&self.u32b(fs.len() as u32));
            for f in fs {
                b.extend_from_slice(&self.u64b(f.len() as u64));
                b.extend_from_slice(f.as_bytes());
            }
        }
        b
    }

    fn sized32(&self, s: &str) -> Vec<u8> {
        let mut b = self.u32b(s.len() as u32).to_vec();
        b.extend_from_slice(s.as_bytes());
        b
    }

    fn cmdlines_block(&self) -> Vec<u8> {
        let mut b = self.u64b(self.cmdlines.len() as u64).to_vec();
        b.extend_from_slice(self.cmdlines.as_bytes());
        b
    }

    fn compress(&self, data: &[u8]) -> Vec<u8> {
        match self.codec {
            Codec::None => data.to_vec(),
            Codec::Zstd => zstd::bulk::compress(data, 3).unwrap(),
            Codec::Zlib => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    fn align(out: &mut Vec<u8>, to: usize) {
        let n = out.len().div_ceil(to) * to;
        out.resize(n, 0);
    }

    pub fn build(&self) -> Vec<u8> {
        if self.version == 6 {
            self.build_v6()
        } else {
            self.build_v7()
        }
    }

    fn build_v6(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.preamble(&mut out);
        out.extend_from_slice(&self.header_info());
        out.extend_from_slice(&self.ftrace_formats());
        out.extend_from_slice(&self.event_formats());
        out.extend_from_slice(&self.sized32(&self.kallsyms));
        out.extend_from_slice(&self.sized32(&self.printk));
        out.extend_from_slice(&self.cmdlines_block());
        let ncpu = self.buffers.first().map_or(0, |b| b.1.len());
        out.extend_from_slice(&self.u32b(ncpu as u32));
        out.extend_from_slice(b"options  \0");
        let mut patches = Vec::new();
        for (name, _) in self.buffers.iter().skip(1) {
            out.extend_from_slice(&self.u16b(3));
            out.extend_from_slice(&self.u32b(8 + name.len() as u32 + 1));
            patches.push(out.len());
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
        out.extend_from_slice(&self.u16b(0));
        for (bi, (_, cpus)) in self.buffers.iter().enumerate() {
            if bi > 0 {
                let at = patches[bi - 1];
                let off = self.u64b(out.len() as u64);
                out[at..at + 8].copy_from_slice(&off);
            }
            out.extend_from_slice(b"flyrecord\0");
            let table = out.len();
            out.resize(table + 16 * cpus.len(), 0);
            Self::align(&mut out, self.page as usize);
            for (i, (_, data)) in cpus.iter().enumerate() {
                let off = out.len() as u64;
                out.extend_from_slice(data);
                let t = table + 16 * i;
                let (a, b) = (self.u64b(off), self.u64b(data.len() as u64));
                out[t..t + 8].copy_from_slice(&a);
                out[t + 8..t + 16].copy_from_slice(&b);
                Self::align(&mut out, self.page as usize);
            }
        }
        out
    }

    fn section(&self, out: &mut Vec<u8>, id: u16, body: &[u8]) -> u64 {
        let at = out.len() as u64;
        out.extend_from_slice(&self.u16b(id));
        let compressed = self.codec != Codec::None;
        out.extend_from_slice(&self.u16b(u16::from(compressed)));
        out.extend_from_slice(&self.u32b(0));
        let body = if compressed {
            let c = self.compress(body);
            let mut b = self.u32b(c.len() as u32).to_vec();
            let stated = if id == 19 { self.kallsyms_usize.unwrap_or(body.len() as u32) } else { body.len() as u32 };
            b.extend_from_slice(&self.u32b(stated));
            b.extend_from_slice(&c);
            b
        } else {
            body.to_vec()
        };
        out.extend_from_slice(&self.u64b(body.len() as u64));
        out.extend_from_slice(&body);
        at
    }

    fn build_v7(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.preamble(&mut out);
        match self.codec {
            Codec::None => out.extend_from_slice(b"none\0\0"),
            Codec::Zstd => out.extend_from_slice(b"zstd\x001.5.4\0"),
            Codec::Zlib => out.extend_from_slice(b"zlib\x001.2.13\0"),
        }
        let opt_at = out.len();
        out.extend_from_slice(&[0; 8]);
        let blocks = [
            (16u16, self.header_info()),
            (17, self.ftrace_formats()),
            (18, self.event_formats()),
            (19, self.sized32(&self.kallsyms)),
            (20, self.sized32(&self.printk)),
            (21, self.cmdlines_block()),
        ];
        let sections: Vec<(u16, u64)> = blocks.iter().map(|(id, b)| (*id, self.section(&mut out, *id, b))).collect();
        // Flyrecord sections first, so the OPTIONS section can name them.
        let mut bufopts = Vec::new();
        for (name, cpus) in &self.buffers {
            let sec = out.len() as u64;
            out.extend_from_slice(&self.u16b(3));
            out.extend_from_slice(&self.u16b(u16::from(self.codec != Codec::None)));
            out.extend_from_slice(&self.u32b(0));
            out.extend_from_slice(&self.u64b(0));
            let mut cpu_data = Vec::new();
            for (cpu, data) in cpus {
                if self.codec == Codec::None {
                    Self::align(&mut out, self.page as usize);
                    cpu_data.push((*cpu, out.len() as u64, data.len() as u64));
                    out.extend_from_slice(data);
                } else {
                    let at = out.len() as u64;
                    let chunk = self.page as usize * self.pages_per_chunk;
                    let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
                    out.extend_from_slice(&self.u32b(self.chunk_count.unwrap_or(chunks.len() as u32)));
                    let start = out.len();
                    for c in chunks {
                        let (stated, z) = match &self.chunk_override {
                            Some((n, z)) => (*n, z.clone()),
                            None => (c.len() as u32, self.compress(c)),
                        };
                        out.extend_from_slice(&self.u32b(z.len() as u32));
                        out.extend_from_slice(&self.u32b(stated));
                        out.extend_from_slice(&z);
                    }
                    cpu_data.push((*cpu, at, (out.len() - start) as u64));
                }
            }
            bufopts.push((sec, name.clone(), cpu_data));
        }
        let mut opts = Vec::new();
        for (id, off) in &sections {
            opts.extend_from_slice(&self.u16b(*id));
            opts.extend_from_slice(&self.u32b(8));
            opts.extend_from_slice(&self.u64b(*off));
        }
        for (sec, name, cpus) in &bufopts {
            let mut d = self.u64b(*sec).to_vec();
            d.extend_from_slice(name.as_bytes());
            d.push(0);
            d.extend_from_slice(self.clock.as_bytes());
            d.push(0);
            d.extend_from_slice(&self.u32b(self.page));
            d.extend_from_slice(&self.u32b(self.buffer_cpu_count.unwrap_or(cpus.len() as u32)));
            for (cpu, off, size) in cpus {
                d.extend_from_slice(&self.u32b(*cpu));
                d.extend_from_slice(&self.u64b(*off));
                d.extend_from_slice(&self.u64b(*size));
            }
            opts.extend_from_slice(&self.u16b(3));
            opts.extend_from_slice(&self.u32b(d.len() as u32));
            opts.extend_from_slice(&d);
        }
        for (id, d) in &self.extra_options {
            opts.extend_from_slice(&self.u16b(*id));
            opts.extend_from_slice(&self.u32b(d.len() as u32));
            opts.extend_from_slice(d);
        }
        opts.extend_from_slice(&self.u16b(0));
        opts.extend_from_slice(&self.u32b(8));
        opts.extend_from_slice(&self.u64b(0));
        let at = self.section(&mut out, 0, &opts);
        let a = self.u64b(at);
        out[opt_at..opt_at + 8].copy_from_slice(&a);
        out
    }
}
