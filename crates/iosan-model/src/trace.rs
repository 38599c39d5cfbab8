//! An ftrace text writer: what the model did, in exactly the kernel's line
//! formats (`cat /sys/kernel/tracing/trace` of a Linux 6.12 x86_64 guest,
//! see `traces/FORMATS.md`).
//!
//! A line is `%16s-%-7d [%03d] %5s %5llu.%06lu: event: body`, with the body
//! formatted by the event's `print fmt`. Hashed `%p` pointers (`page=`,
//! `virt_addr=`) are printed as the kernel does with pointer hashing: 16 hex
//! digits whose upper half is zero; they are derived deterministically from
//! the real value, and, as in a real trace, carry no address.
//!
//! Units: timestamps in nanoseconds, printed in seconds with microsecond
//! resolution; sizes in bytes.
//!
//! The writer streams: lines are formatted into a buffer that is handed to
//! the [`io::Write`] in large chunks; formatting uses no allocation per line.

use std::io::{self, Write};

use crate::tracedat::Val::{self, Str, U32s, U64s, U};

/// Where an event was emitted: the task, its pid, the CPU and the five
/// latency flag characters (`irqs-off`, `need-resched`, `hardirq/softirq`,
/// `preempt-depth`, `migrate-disable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceCtx {
    /// Task name (`comm`), at most 15 characters in a real kernel.
    pub comm: &'static str,
    /// Task id.
    pub pid: u32,
    /// CPU number.
    pub cpu: u32,
    /// The five flag characters, e.g. `*b"....."` or `*b"d.h2."`.
    pub flags: [u8; 5],
}

impl TraceCtx {
    /// A process-context task.
    #[must_use]
    pub const fn task(comm: &'static str, pid: u32, cpu: u32) -> Self {
        Self { comm, pid, cpu, flags: *b"....." }
    }
    /// The idle task in hard-irq context (a completion interrupt).
    #[must_use]
    pub const fn irq(cpu: u32) -> Self {
        Self { comm: "<idle>", pid: 0, cpu, flags: *b"d.h2." }
    }
    /// The same context in softirq (timer) context.
    #[must_use]
    pub const fn softirq(self) -> Self {
        Self { flags: *b"..s..", ..self }
    }
}

/// `enum dma_data_direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmaDir {
    /// `DMA_BIDIRECTIONAL`.
    Bidirectional,
    /// `DMA_TO_DEVICE`.
    ToDevice,
    /// `DMA_FROM_DEVICE`.
    FromDevice,
}

impl DmaDir {
    /// The value of `enum dma_data_direction`, as binary events store it.
    #[must_use]
    pub const fn code(self) -> u64 {
        match self {
            Self::Bidirectional => 0,
            Self::ToDevice => 1,
            Self::FromDevice => 2,
        }
    }
    /// The name the `dma:*` events print.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bidirectional => "BIDIRECTIONAL",
            Self::ToDevice => "TO_DEVICE",
            Self::FromDevice => "FROM_DEVICE",
        }
    }
    /// The `IOMMU_*` protection `dma_info_to_prot()` gives this direction.
    #[must_use]
    pub const fn prot(self) -> u32 {
        match self {
            Self::Bidirectional => crate::pgtable::IOMMU_READ | crate::pgtable::IOMMU_WRITE,
            Self::ToDevice => crate::pgtable::IOMMU_READ,
            Self::FromDevice => crate::pgtable::IOMMU_WRITE,
        }
    }
}

/// The deterministic stand-in for a hashed `%p` pointer.
#[must_use]
pub fn hashed_ptr(v: u64) -> u64 {
    let mut z = v.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) & 0xffff_ffff
}

const FLUSH_AT: usize = 1 << 16;

/// Streams ftrace text to `W`.
///
/// Each method writes one event line. I/O errors are kept and returned by
/// [`TraceWriter::finish`] (and by [`TraceWriter::error`]); after an error
/// further lines are dropped, so a closed pipe costs nothing.
pub struct TraceWriter<W: Write> {
    out: W,
    /// Binary output instead of text: the events go to a trace.dat.
    dat: Option<Box<crate::tracedat::TraceDatWriter>>,
    buf: Vec<u8>,
    error: Option<io::ErrorKind>,
    lines: u64,
    bytes: u64,
}

impl<W: Write> TraceWriter<W> {
    /// A writer to `out`; nothing is written until the first line.
    pub fn new(out: W) -> Self {
        Self { out, dat: None, buf: Vec::with_capacity(FLUSH_AT + 4096), error: None, lines: 0, bytes: 0 }
    }

    /// A writer of the same events as a trace.dat (version 6) to `out`,
    /// written whole by [`TraceWriter::finish`], for a kernel with
    /// `page_size` bytes per CPU page.
    pub fn tracedat(out: W, page_size: usize) -> Self {
        Self { dat: Some(Box::new(crate::tracedat::TraceDatWriter::with_page_size(page_size))), ..Self::new(out) }
    }

    /// One binary event; `true` when this writer writes trace.dat.
    fn dat(&mut self, ctx: &TraceCtx, ts: u64, system: &str, name: &str, fields: &[(&str, Val<'_>)]) -> bool {
        let Some(d) = self.dat.as_deref_mut() else { return false };
        self.lines += 1;
        if let Err(e) = d.event(system, name, ts, ctx.cpu, ctx.pid, ctx.comm, common_flags(&ctx.flags), fields) {
            self.error.get_or_insert(e.kind());
        }
        true
    }

    /// Writes the `# tracer: nop` header, as `cat trace` prints it.
    /// `entries` is printed as both `entries-in-buffer` and
    /// `entries-written` (equal: nothing was lost); a streaming writer that
    /// does not know the count yet passes 0.
    pub fn header(&mut self, entries: u64, nr_cpus: u32) {
        if self.dat.is_some() {
            return;
        }
        let _ = write!(
            self.buf,
            "# tracer: nop\n#\n# entries-in-buffer/entries-written: {entries}/{entries}   #P:{nr_cpus}\n#\n\
#                                _-----=> irqs-off/BH-disabled\n\
#                               / _----=> need-resched\n\
#                              | / _---=> hardirq/softirq\n\
#                              || / _--=> preempt-depth\n\
#                              ||| / _-=> migrate-disable\n\
#                              |||| /     delay\n\
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION\n\
#              | |         |   |||||     |         |\n"
        );
        self.maybe_flush();
    }

    /// Lines written so far.
    #[must_use]
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Bytes handed to the output so far (including buffered ones).
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes + self.buf.len() as u64
    }

    /// The first I/O error, if any.
    #[must_use]
    pub fn error(&self) -> Option<io::ErrorKind> {
        self.error
    }

    /// Flushes and returns the output.
    ///
    /// # Errors
    /// The first I/O error met while writing.
    pub fn finish(mut self) -> io::Result<W> {
        if let Some(d) = self.dat.take() {
            if let Some(kind) = self.error {
                return Err(io::Error::from(kind));
            }
            d.finish(&mut self.out)?;
            return Ok(self.out);
        }
        self.flush_buf();
        if let Some(kind) = self.error {
            return Err(io::Error::from(kind));
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn flush_buf(&mut self) {
        if self.error.is_none() && !self.buf.is_empty() {
            if let Err(e) = self.out.write_all(&self.buf) {
                self.error = Some(e.kind());
            }
        }
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
    }

    fn maybe_flush(&mut self) {
        if self.buf.len() >= FLUSH_AT {
            self.flush_buf();
        }
    }

    /// The line prefix up to and including `event: `.
    fn prefix(&mut self, ctx: &TraceCtx, ts_ns: u64, event: &str) {
        self.lines += 1;
        // Rounded to the microsecond, as the kernel prints (ns2usecs).
        let us = ts_ns.saturating_add(500) / 1000;
        let (secs, usecs) = (us / 1_000_000, us % 1_000_000);
        let flags = std::str::from_utf8(&ctx.flags).unwrap_or(".....");
        let _ = write!(
            self.buf,
            "{:>16}-{:<7} [{:03}] {} {:>5}.{:06}: {}: ",
            ctx.comm, ctx.pid, ctx.cpu, flags, secs, usecs, event
        );
    }

    fn end(&mut self) {
        self.buf.push(b'\n');
        self.maybe_flush();
    }

    fn hex_array(&mut self, vals: &[u64]) {
        self.buf.push(b'{');
        for (i, v) in vals.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            let _ = write!(self.buf, "{v:#x}");
        }
        self.buf.push(b'}');
    }

    /// `iommu:map`.
    pub fn iommu_map(&mut self, ctx: &TraceCtx, ts: u64, iova: u64, paddr: u64, size: u64) {
        if self.dat(ctx, ts, "iommu", "map", &[("iova", U(iova)), ("paddr", U(paddr)), ("size", U(size))]) {
            return;
        }
        self.prefix(ctx, ts, "map");
        let _ = write!(
            self.buf,
            "IOMMU: iova=0x{iova:016x} - 0x{:016x} paddr=0x{paddr:016x} size={size}",
            iova.wrapping_add(size)
        );
        self.end();
    }

    /// `iommu:unmap`.
    pub fn iommu_unmap(&mut self, ctx: &TraceCtx, ts: u64, iova: u64, size: u64, unmapped: u64) {
        if self.dat(ctx, ts, "iommu", "unmap", &[("iova", U(iova)), ("size", U(size)), ("unmapped_size", U(unmapped))])
        {
            return;
        }
        self.prefix(ctx, ts, "unmap");
        let _ = write!(
            self.buf,
            "IOMMU: iova=0x{iova:016x} - 0x{:016x} size={size} unmapped_size={unmapped}",
            iova.wrapping_add(size)
        );
        self.end();
    }

    /// `iommu:add_device_to_group`.
    pub fn add_device_to_group(&mut self, ctx: &TraceCtx, ts: u64, group: u32, dev: &str) {
        if self.dat(ctx, ts, "iommu", "add_device_to_group", &[("gid", U(u64::from(group))), ("device", Str(dev))]) {
            return;
        }
        self.prefix(ctx, ts, "add_device_to_group");
        let _ = write!(self.buf, "IOMMU: groupID={group} device={dev}");
        self.end();
    }

    /// `iommu:remove_device_from_group`.
    pub fn remove_device_from_group(&mut self, ctx: &TraceCtx, ts: u64, group: u32, dev: &str) {
        if self.dat(ctx, ts, "iommu", "remove_device_from_group", &[("gid", U(u64::from(group))), ("device", Str(dev))])
        {
            return;
        }
        self.prefix(ctx, ts, "remove_device_from_group");
        let _ = write!(self.buf, "IOMMU: groupID={group} device={dev}");
        self.end();
    }

    /// `iommu:attach_device_to_domain`.
    pub fn attach_device_to_domain(&mut self, ctx: &TraceCtx, ts: u64, dev: &str) {
        if self.dat(ctx, ts, "iommu", "attach_device_to_domain", &[("device", Str(dev))]) {
            return;
        }
        self.prefix(ctx, ts, "attach_device_to_domain");
        let _ = write!(self.buf, "IOMMU: device={dev}");
        self.end();
    }

    /// `intel_iommu:cache_tag_assign` (iotlb tag, pasid 0, first user).
    pub fn cache_tag_assign(&mut self, ctx: &TraceCtx, ts: u64, did: u32) {
        if self.dat(
            ctx,
            ts,
            "intel_iommu",
            "cache_tag_assign",
            &[
                ("iommu", Str("dmar0")),
                ("dev", Str("dmar0")),
                ("type", U(0)),
                ("domain_id", U(u64::from(did))),
                ("users", U(1)),
            ],
        ) {
            return;
        }
        self.prefix(ctx, ts, "cache_tag_assign");
        let _ = write!(self.buf, "dmar0/dmar0 type iotlb did {did} pasid 0 ref 1");
        self.end();
    }

    /// `intel_iommu:cache_tag_flush_range` for `[start, last]` (inclusive),
    /// with the page-selective-invalidation address and mask computed as the
    /// VT-d driver does (smallest aligned power-of-two block covering it).
    pub fn cache_tag_flush_range(&mut self, ctx: &TraceCtx, ts: u64, did: u32, start: u64, last: u64) {
        let (addr, pages, mask) = psi_aligned(start, last);
        let fields = [
            ("iommu", Str("dmar0")),
            ("dev", Str("dmar0[0]")),
            ("type", U(0)),
            ("domain_id", U(u64::from(did))),
            ("start", U(start)),
            ("end", U(last)),
            ("addr", U(addr)),
            ("pages", U(pages)),
            ("mask", U(mask)),
        ];
        if self.dat(ctx, ts, "intel_iommu", "cache_tag_flush_range", &fields) {
            return;
        }
        self.prefix(ctx, ts, "cache_tag_flush_range");
        let _ = write!(
            self.buf,
            "dmar0 dmar0[0] type iotlb did {did} [{start:#x}-{last:#x}] addr {addr:#x} pages {pages:#x} mask {mask:#x}"
        );
        self.end();
    }

    /// `intel_iommu:cache_tag_flush_all`.
    pub fn cache_tag_flush_all(&mut self, ctx: &TraceCtx, ts: u64, did: u32) {
        if self.dat(
            ctx,
            ts,
            "intel_iommu",
            "cache_tag_flush_all",
            &[
                ("iommu", Str("dmar0")),
                ("dev", Str("dmar0")),
                ("type", U(0)),
                ("domain_id", U(u64::from(did))),
                ("users", U(1)),
            ],
        ) {
            return;
        }
        self.prefix(ctx, ts, "cache_tag_flush_all");
        let _ = write!(self.buf, "dmar0/dmar0 type iotlb did {did} pasid 0 ref 1");
        self.end();
    }

    /// `kmem:mm_page_alloc`.
    pub fn mm_page_alloc(&mut self, ctx: &TraceCtx, ts: u64, pfn: u64, order: u32, migratetype: u32, gfp: &str) {
        if self.dat(
            ctx,
            ts,
            "kmem",
            "mm_page_alloc",
            &[
                ("pfn", U(pfn)),
                ("order", U(u64::from(order))),
                ("migratetype", U(u64::from(migratetype))),
                ("gfp_flags", U(gfp_bits(gfp))),
            ],
        ) {
            return;
        }
        self.prefix(ctx, ts, "mm_page_alloc");
        let _ = write!(
            self.buf,
            "page={:016x} pfn={pfn:#x} order={order} migratetype={migratetype} gfp_flags={gfp}",
            hashed_ptr(pfn)
        );
        self.end();
    }

    /// `kmem:mm_page_free`.
    pub fn mm_page_free(&mut self, ctx: &TraceCtx, ts: u64, pfn: u64, order: u32) {
        if self.dat(ctx, ts, "kmem", "mm_page_free", &[("pfn", U(pfn)), ("order", U(u64::from(order)))]) {
            return;
        }
        self.prefix(ctx, ts, "mm_page_free");
        let _ = write!(self.buf, "page={:016x} pfn={pfn:#x} order={order}", hashed_ptr(pfn));
        self.end();
    }

    /// `dma:dma_map_page`.
    #[allow(clippy::too_many_arguments)] // one per event field
    pub fn dma_map_page(&mut self, ctx: &TraceCtx, ts: u64, dev: &str, dir: DmaDir, dma: u64, size: u64, phys: u64) {
        if self.dat(
            ctx,
            ts,
            "dma",
            "dma_map_page",
            &[
                ("device", Str(dev)),
                ("phys_addr", U(phys)),
                ("dma_addr", U(dma)),
                ("size", U(size)),
                ("dir", U(dir.code())),
            ],
        ) {
            return;
        }
        self.prefix(ctx, ts, "dma_map_page");
        let _ = write!(self.buf, "{dev} dir={} dma_addr={dma:x} size={size} phys_addr={phys:x} attrs=", dir.name());
        self.end();
    }

    /// `dma:dma_unmap_page`.
    pub fn dma_unmap_page(&mut self, ctx: &TraceCtx, ts: u64, dev: &str, dir: DmaDir, dma: u64, size: u64) {
        if self.dat(
            ctx,
            ts,
            "dma",
            "dma_unmap_page",
            &[("device", Str(dev)), ("addr", U(dma)), ("size", U(size)), ("dir", U(dir.code()))],
        ) {
            return;
        }
        self.prefix(ctx, ts, "dma_unmap_page");
        let _ = write!(self.buf, "{dev} dir={} dma_addr={dma:x} size={size} attrs=", dir.name());
        self.end();
    }

    /// `dma:dma_map_sg`: `phys` are the CPU segments, `dma` the merged DMA
    /// segments as `(address, length)`. At most 128 entries of each are
    /// printed, with ` [TRUNCATED]` after `ents=` when either list is cut.
    pub fn dma_map_sg(&mut self, ctx: &TraceCtx, ts: u64, dev: &str, dir: DmaDir, phys: &[u64], dma: &[(u64, u64)]) {
        const MAX: usize = 128;
        if self.dat.is_some() {
            let addrs: Vec<u64> = dma.iter().take(MAX).map(|d| d.0).collect();
            let lens: Vec<u32> = dma.iter().take(MAX).map(|d| u32::try_from(d.1).unwrap_or(u32::MAX)).collect();
            let fields = [
                ("device", Str(dev)),
                ("full_nents", U(phys.len() as u64)),
                ("full_ents", U(dma.len() as u64)),
                ("truncated", U(u64::from(phys.len() > MAX || dma.len() > MAX))),
                ("phys_addrs", U64s(phys.get(..phys.len().min(MAX)).unwrap_or(&[]))),
                ("dma_addrs", U64s(&addrs)),
                ("lengths", U32s(&lens)),
                ("dir", U(dir.code())),
            ];
            self.dat(ctx, ts, "dma", "dma_map_sg", &fields);
            return;
        }
        self.prefix(ctx, ts, "dma_map_sg");
        let (np, nd) = (phys.len(), dma.len());
        let trunc = if np > MAX || nd > MAX { " [TRUNCATED]" } else { "" };
        let _ = write!(
            self.buf,
            "{dev} dir={} nents={}/{np} ents={}/{nd}{trunc} dma_addrs=",
            dir.name(),
            np.min(MAX),
            nd.min(MAX)
        );
        let addrs: Vec<u64> = dma.iter().take(MAX).map(|d| d.0).collect();
        let lens: Vec<u64> = dma.iter().take(MAX).map(|d| d.1).collect();
        self.hex_array(&addrs);
        self.buf.extend_from_slice(b" sizes=");
        self.hex_array(&lens);
        self.buf.extend_from_slice(b" phys_addrs=");
        self.hex_array(&phys[..np.min(MAX)]);
        self.buf.extend_from_slice(b" attrs=");
        self.end();
    }

    /// `dma:dma_map_sg_err`: a scatterlist map that failed with `err`
    /// (the kernel prints the list's physical addresses as `dma_addrs`).
    pub fn dma_map_sg_err(&mut self, ctx: &TraceCtx, ts: u64, dev: &str, dir: DmaDir, phys: &[u64], err: i64) {
        const MAX: usize = 128;
        let phys = phys.get(..phys.len().min(MAX)).unwrap_or(&[]);
        if self.dat.is_some() {
            // The field is a two's complement int.
            let err = u64::from(i32::try_from(err).unwrap_or(i32::MIN) as u32);
            let fields = [("device", Str(dev)), ("phys_addrs", U64s(phys)), ("err", U(err)), ("dir", U(dir.code()))];
            self.dat(ctx, ts, "dma", "dma_map_sg_err", &fields);
            return;
        }
        self.prefix(ctx, ts, "dma_map_sg_err");
        let _ = write!(self.buf, "{dev} dir={} dma_addrs=", dir.name());
        self.hex_array(phys);
        let _ = write!(self.buf, " err={err} attrs=");
        self.end();
    }

    /// `dma:dma_unmap_sg`.
    pub fn dma_unmap_sg(&mut self, ctx: &TraceCtx, ts: u64, dev: &str, dir: DmaDir, phys: &[u64]) {
        if self.dat(
            ctx,
            ts,
            "dma",
            "dma_unmap_sg",
            &[
                ("device", Str(dev)),
                ("addrs", U64s(phys.get(..phys.len().min(128)).unwrap_or(&[]))),
                ("dir", U(dir.code())),
            ],
        ) {
            return;
        }
        self.prefix(ctx, ts, "dma_unmap_sg");
        let _ = write!(self.buf, "{dev} dir={} phys_addrs=", dir.name());
        self.hex_array(&phys[..phys.len().min(128)]);
        self.buf.extend_from_slice(b" attrs=");
        self.end();
    }

    /// `dma:dma_alloc` (coherent allocation; `virt` is hashed).
    #[allow(clippy::too_many_arguments)] // one per event field
    pub fn dma_alloc(&mut self, ctx: &TraceCtx, ts: u64, dev: &str, dma: u64, size: u64, virt: u64, gfp: &str) {
        if self.dat(
            ctx,
            ts,
            "dma",
            "dma_alloc",
            &[
                ("device", Str(dev)),
                ("virt_addr", U(hashed_ptr(virt))),
                ("dma_addr", U(dma)),
                ("size", U(size)),
                ("flags", U(gfp_bits(gfp))),
            ],
        ) {
            return;
        }
        self.prefix(ctx, ts, "dma_alloc");
        let _ = write!(
            self.buf,
            "{dev} dir=BIDIRECTIONAL dma_addr={dma:x} size={size} virt_addr={:016x} flags={gfp} attrs=",
            hashed_ptr(virt)
        );
        self.end();
    }

    /// `dma:dma_free`.
    pub fn dma_free(&mut self, ctx: &TraceCtx, ts: u64, dev: &str, dma: u64, size: u64, virt: u64) {
        if self.dat(
            ctx,
            ts,
            "dma",
            "dma_free",
            &[("device", Str(dev)), ("virt_addr", U(hashed_ptr(virt))), ("dma_addr", U(dma)), ("size", U(size))],
        ) {
            return;
        }
        self.prefix(ctx, ts, "dma_free");
        let _ = write!(
            self.buf,
            "{dev} dir=BIDIRECTIONAL dma_addr={dma:x} size={size} virt_addr={:016x} attrs=",
            hashed_ptr(virt)
        );
        self.end();
    }

    /// Kprobe `iommu_attach` on `__iommu_attach_device`.
    pub fn kp_iommu_attach(&mut self, ctx: &TraceCtx, ts: u64, domain: u64, dtype: u32, dev: &str) {
        if self.dat(
            ctx,
            ts,
            "kprobes",
            "iommu_attach",
            &[
                ("__probe_ip", U(sym("__iommu_attach_device"))),
                ("domain", U(domain)),
                ("dtype", U(u64::from(dtype))),
                ("dev", Str(dev)),
            ],
        ) {
            return;
        }
        self.prefix(ctx, ts, "iommu_attach");
        let _ = write!(self.buf, "(__iommu_attach_device+0x0/0x90) domain={domain:#x} dtype={dtype} dev=\"{dev}\"");
        self.end();
    }

    /// Kprobe `iommu_map` on `__iommu_map`.
    #[allow(clippy::too_many_arguments)]
    pub fn kp_iommu_map(
        &mut self,
        ctx: &TraceCtx,
        ts: u64,
        domain: u64,
        dtype: u32,
        iova: u64,
        paddr: u64,
        size: u64,
        prot: u32,
    ) {
        let fields = [
            ("__probe_ip", U(sym("__iommu_map"))),
            ("domain", U(domain)),
            ("dtype", U(u64::from(dtype))),
            ("iova", U(iova)),
            ("paddr", U(paddr)),
            ("size", U(size)),
            ("prot", U(u64::from(prot))),
        ];
        if self.dat(ctx, ts, "kprobes", "iommu_map", &fields) {
            return;
        }
        self.prefix(ctx, ts, "iommu_map");
        let _ = write!(
            self.buf,
            "(__iommu_map+0x0/0x280) domain={domain:#x} dtype={dtype} iova={iova:#x} paddr={paddr:#x} size={size:#x} prot={prot}"
        );
        self.end();
    }

    /// Return probe `iommu_map_ret`; `from_sg` names `iommu_map_sg` as the
    /// caller instead of `iommu_map`.
    pub fn kp_iommu_map_ret(&mut self, ctx: &TraceCtx, ts: u64, from_sg: bool, ret: i32) {
        if self.dat(
            ctx,
            ts,
            "kprobes",
            "iommu_map_ret",
            &[
                ("__probe_func", U(sym("__iommu_map"))),
                (
                    "__probe_ret_ip",
                    U(sym(if from_sg { "iommu_map_sg" } else { "iommu_map" }) + if from_sg { 0xc2 } else { 0x42 }),
                ),
                ("ret", U(i64::from(ret) as u64)),
            ],
        ) {
            return;
        }
        self.prefix(ctx, ts, "iommu_map_ret");
        let caller = if from_sg { "iommu_map_sg+0xc2/0x1c0" } else { "iommu_map+0x42/0xd0" };
        let _ = write!(self.buf, "({caller} <- __iommu_map) ret={ret}");
        self.end();
    }

    /// Kprobe `iommu_unmap` on `__iommu_unmap`.
    pub fn kp_iommu_unmap(&mut self, ctx: &TraceCtx, ts: u64, domain: u64, dtype: u32, iova: u64, size: u64) {
        if self.dat(
            ctx,
            ts,
            "kprobes",
            "iommu_unmap",
            &[
                ("__probe_ip", U(sym("__iommu_unmap"))),
                ("domain", U(domain)),
                ("dtype", U(u64::from(dtype))),
                ("iova", U(iova)),
                ("size", U(size)),
            ],
        ) {
            return;
        }
        self.prefix(ctx, ts, "iommu_unmap");
        let _ = write!(
            self.buf,
            "(__iommu_unmap+0x0/0x1d0) domain={domain:#x} dtype={dtype} iova={iova:#x} size={size:#x}"
        );
        self.end();
    }

    /// Return probe `iommu_unmap_ret`; `from_dma` names `__iommu_dma_unmap`
    /// as the caller instead of `iommu_unmap`.
    pub fn kp_iommu_unmap_ret(&mut self, ctx: &TraceCtx, ts: u64, from_dma: bool, unmapped: u64) {
        if self.dat(
            ctx,
            ts,
            "kprobes",
            "iommu_unmap_ret",
            &[
                ("__probe_func", U(sym("__iommu_unmap"))),
                (
                    "__probe_ret_ip",
                    U(sym(if from_dma { "__iommu_dma_unmap" } else { "iommu_unmap" })
                        + if from_dma { 0xba } else { 0x3d }),
                ),
                ("unmapped", U(unmapped)),
            ],
        ) {
            return;
        }
        self.prefix(ctx, ts, "iommu_unmap_ret");
        let caller = if from_dma { "__iommu_dma_unmap+0xba/0x2d0" } else { "iommu_unmap+0x3d/0x80" };
        let _ = write!(self.buf, "({caller} <- __iommu_unmap) unmapped={unmapped}");
        self.end();
    }

    /// Kprobe `iommu_domain_free`.
    pub fn kp_iommu_domain_free(&mut self, ctx: &TraceCtx, ts: u64, domain: u64, dtype: u32) {
        if self.dat(
            ctx,
            ts,
            "kprobes",
            "iommu_domain_free",
            &[("__probe_ip", U(sym("iommu_domain_free") + 4)), ("domain", U(domain)), ("dtype", U(u64::from(dtype)))],
        ) {
            return;
        }
        self.prefix(ctx, ts, "iommu_domain_free");
        let _ = write!(self.buf, "(iommu_domain_free+0x4/0x50) domain={domain:#x} dtype={dtype}");
        self.end();
    }

    /// Kprobe `fq_flush_timeout`.
    pub fn kp_fq_flush_timeout(&mut self, ctx: &TraceCtx, ts: u64) {
        if self.dat(ctx, ts, "kprobes", "fq_flush_timeout", &[("__probe_ip", U(sym("fq_flush_timeout") + 4))]) {
            return;
        }
        self.prefix(ctx, ts, "fq_flush_timeout");
        self.buf.extend_from_slice(b"(fq_flush_timeout+0x4/0xd0)");
        self.end();
    }

    /// Kprobe `fq_flush_iotlb`.
    pub fn kp_fq_flush_iotlb(&mut self, ctx: &TraceCtx, ts: u64, cookie: u64) {
        if self.dat(
            ctx,
            ts,
            "kprobes",
            "fq_flush_iotlb",
            &[("__probe_ip", U(sym("fq_flush_iotlb"))), ("cookie", U(cookie))],
        ) {
            return;
        }
        self.prefix(ctx, ts, "fq_flush_iotlb");
        let _ = write!(self.buf, "(fq_flush_iotlb+0x0/0x40) cookie={cookie:#x}");
        self.end();
    }

    /// `ftrace:print` from `trace_marker`.
    pub fn marker(&mut self, ctx: &TraceCtx, ts: u64, text: &str) {
        if self.dat.is_some() {
            // The model's formats have no ftrace:print; markers are text-only.
            return;
        }
        self.prefix(ctx, ts, "tracing_mark_write");
        self.buf.extend_from_slice(text.as_bytes());
        self.end();
    }
}

/// The address the model gives `name` in the trace.dat's kallsyms.
fn sym(name: &str) -> u64 {
    crate::tracedat::KALLSYMS.iter().find(|(_, n)| *n == name).map_or(0, |(a, _)| *a)
}

/// The `common_flags` byte (`enum trace_flag_type`) of ftrace's flag characters.
fn common_flags(f: &[u8; 5]) -> u8 {
    let mut v = 0;
    if f[0] == b'd' {
        v |= 0x01;
    }
    match f[2] {
        b'h' => v |= 0x08,
        b's' => v |= 0x10,
        b'H' => v |= 0x18,
        b'z' => v |= 0x40,
        b'Z' => v |= 0x48,
        _ => {}
    }
    v
}

/// `gfp_t` bits of the flag names the model prints (the common x86 values).
fn gfp_bits(names: &str) -> u64 {
    names
        .split('|')
        .map(|n| match n {
            "GFP_KERNEL" => 0xcc0,
            "GFP_ATOMIC" => 0xa20,
            "GFP_NOWAIT" => 0x800,
            "__GFP_ZERO" => 0x100,
            "__GFP_COMP" => 0x4000,
            "__GFP_NOWARN" => 0x2000,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

/// The VT-d page-selective invalidation of `[start, last]`: an address
/// aligned to `2^mask` pages and the mask, the smallest such block covering
/// the range; `pages` is the number of 4 KiB pages in the range.
#[must_use]
pub fn psi_aligned(start: u64, last: u64) -> (u64, u64, u64) {
    let pages = ((last >> 12) - (start >> 12)) + 1;
    let mut mask = 64 - (pages - 1).leading_zeros();
    if pages == 1 {
        mask = 0;
    }
    loop {
        let sz_lg2 = 12 + mask;
        if sz_lg2 >= 63 {
            return (0, pages, u64::from(mask));
        }
        let addr = start & !((1u64 << sz_lg2) - 1);
        if addr + (1u64 << sz_lg2) > last {
            return (addr, pages, u64::from(mask));
        }
        mask += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(f: impl FnOnce(&mut TraceWriter<Vec<u8>>)) -> String {
        let mut w = TraceWriter::new(Vec::new());
        f(&mut w);
        String::from_utf8(w.finish().unwrap()).unwrap()
    }

    #[test]
    fn lines_match_real_captures() {
        let ctx = TraceCtx::task("insmod", 154, 1);
        assert_eq!(
            one(|w| w.iommu_map(&ctx, 5_945_167_000, 0xffffe000, 0x10f4ff000, 4096)),
            "          insmod-154     [001] .....     5.945167: map: IOMMU: iova=0x00000000ffffe000 - 0x00000000fffff000 paddr=0x000000010f4ff000 size=4096\n"
        );
        let irq = TraceCtx::irq(1);
        assert_eq!(
            one(|w| w.iommu_unmap(&irq, 6_019_338_000, 0xffff8000, 4096, 4096)),
            "          <idle>-0       [001] d.h2.     6.019338: unmap: IOMMU: iova=0x00000000ffff8000 - 0x00000000ffff9000 size=4096 unmapped_size=4096\n"
        );
        let dd = TraceCtx { comm: "dd", pid: 180, cpu: 1, flags: *b"d.h2." };
        assert_eq!(
            one(|w| w.cache_tag_flush_range(&dd, 8_377_091_000, 4, 0xfff80000, 0xfff9ffff)),
            "              dd-180     [001] d.h2.     8.377091: cache_tag_flush_range: dmar0 dmar0[0] type iotlb did 4 [0xfff80000-0xfff9ffff] addr 0xfff80000 pages 0x20 mask 0x5\n"
        );
        let init = TraceCtx::task("init", 1, 0);
        assert_eq!(
            one(|w| w.kp_iommu_map(&init, 1_463_505_000, 0xffff888101f5d8a0, 3, 0, 0, 0x1000000, 3)),
            "            init-1       [000] .....     1.463505: iommu_map: (__iommu_map+0x0/0x280) domain=0xffff888101f5d8a0 dtype=3 iova=0x0 paddr=0x0 size=0x1000000 prot=3\n"
        );
        let ins = TraceCtx { comm: "insmod", pid: 156, cpu: 1, flags: *b"d..1." };
        assert_eq!(
            one(|w| w.dma_map_page(&ins, 6_015_739_000, "0000:00:03.0", DmaDir::ToDevice, 0xffffb0f8, 16, 0x1236b00f8)),
            "          insmod-156     [001] d..1.     6.015739: dma_map_page: 0000:00:03.0 dir=TO_DEVICE dma_addr=ffffb0f8 size=16 phys_addr=1236b00f8 attrs=\n"
        );
    }

    #[test]
    fn psi_matches_the_driver() {
        assert_eq!(psi_aligned(0xffff8000, 0xffff8fff), (0xffff8000, 1, 0));
        assert_eq!(psi_aligned(0xffffe000, 0xffffffff), (0xffffe000, 2, 1));
        assert_eq!(psi_aligned(0xffefc000, 0xffefffff), (0xffefc000, 4, 2));
    }
}
