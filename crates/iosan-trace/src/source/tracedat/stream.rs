//! One CPU of one buffer as a stream of records: its pages are read one at
//! a time (or one compressed chunk of a few pages at a time), so memory is
//! a page or a chunk per CPU whatever the file's size.

use std::io::{Read, Seek};

use super::compress::Codec;
use super::error::TraceDatError;
use super::io::Src;
use super::page::{parse_header, Entry, PageCursor, PageFault, PageLayout};

/// Largest uncompressed chunk accepted (trace-cmd writes 10 pages).
pub(crate) const CHUNK_LIMIT: u64 = 64 << 20;
/// Default for [`Limits::memory`].
pub(crate) const MEM_LIMIT: u64 = 1 << 30;

/// Resource limits of a reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of page and chunk buffers held by all CPU streams
    /// together (default 1 GiB); a file that needs more is an error.
    pub memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { memory: MEM_LIMIT }
    }
}

/// Counts of input that was skipped, for the caller's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Pages whose header lies (commit past the end, too short).
    pub pages: u64,
    /// Pages whose events stop making sense part-way (the rest skipped).
    pub damaged_pages: u64,
    /// Compressed chunks that do not decompress to their stated size.
    pub chunks: u64,
    /// Records of an ID no format file describes.
    pub unknown_ids: u64,
    /// Records too short for their common fields.
    pub short_records: u64,
    /// CPU data whose offset or size runs past the end of the file.
    pub cpu_ranges: u64,
    /// File offset of the first thing skipped (a page, chunk, record or
    /// CPU range), for messages.
    pub first_offset: Option<u64>,
}

impl Skipped {
    /// Everything skipped, all kinds together.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.pages + self.damaged_pages + self.chunks + self.unknown_ids + self.short_records + self.cpu_ranges
    }

    pub(crate) fn at(&mut self, offset: u64) {
        self.first_offset.get_or_insert(offset);
    }
}

/// What a stream yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Raw {
    /// A record: timestamp, payload range in [`CpuStream::buf`], file offset.
    Data { ts: u64, start: usize, end: usize, offset: u64 },
    /// Events lost before the page at `offset` (count when stored).
    Lost { ts: u64, count: Option<u64>, offset: u64 },
}

enum Layout {
    /// Raw pages from `next` to `end`.
    Pages,
    /// Compressed chunks: `left` more after `next`.
    Chunks { left: u32 },
}

pub(crate) struct CpuStream {
    pub(crate) buffer: usize,
    pub(crate) cpu: u32,
    page_size: usize,
    layout: Layout,
    /// File offset of the next page or chunk.
    next: u64,
    end: u64,
    /// The loaded page or chunk.
    pub(crate) buf: Vec<u8>,
    /// File offset of `buf` (the chunk's, when compressed).
    buf_offset: u64,
    /// Start of the current page in `buf`.
    page_start: usize,
    cursor: Option<PageCursor>,
    pending_lost: Option<Raw>,
    done: bool,
}

/// What a stream needs from its reader.
pub(crate) struct Ctx<'a, R> {
    pub(crate) src: &'a mut Src<R>,
    pub(crate) codec: Option<&'a mut Codec>,
    pub(crate) scratch: &'a mut Vec<u8>,
    pub(crate) layout: &'a PageLayout,
    pub(crate) skipped: &'a mut Skipped,
    /// Bytes of stream buffers allocated, against `mem_limit`.
    pub(crate) mem: &'a mut u64,
    pub(crate) mem_limit: u64,
}

impl CpuStream {
    /// A stream over `[offset, offset + size)`; `compressed` when it is a
    /// chunk table.
    pub(crate) fn open<R: Read + Seek>(
        buffer: usize,
        cpu: u32,
        offset: u64,
        size: u64,
        page_size: u32,
        compressed: bool,
        ctx: &mut Ctx<'_, R>,
    ) -> Result<Self, TraceDatError> {
        let mut s = Self {
            buffer,
            cpu,
            page_size: page_size as usize,
            layout: Layout::Pages,
            next: offset,
            end: offset.saturating_add(size),
            buf: Vec::new(),
            buf_offset: offset,
            page_start: 0,
            cursor: None,
            pending_lost: None,
            done: size == 0,
        };
        if s.end > ctx.src.len() || offset > ctx.src.len() {
            ctx.skipped.cpu_ranges += 1;
            ctx.skipped.at(offset);
            s.end = s.end.min(ctx.src.len());
            s.done |= s.next >= s.end;
        }
        if compressed && s.end.saturating_sub(offset) < 4 {
            ctx.skipped.cpu_ranges += 1;
            ctx.skipped.at(offset);
            s.done = true;
        }
        if compressed && !s.done {
            ctx.src.seek(offset, "chunk count")?;
            let left = ctx.src.u32("chunk count")?;
            s.next = ctx.src.pos();
            // trace-cmd's size counts the chunks, not the count before them.
            s.end = s.next.saturating_add(size).min(ctx.src.len());
            s.layout = Layout::Chunks { left };
        }
        Ok(s)
    }

    /// The next record or loss marker.
    #[inline]
    pub(crate) fn next<R: Read + Seek>(&mut self, ctx: &mut Ctx<'_, R>) -> Result<Option<Raw>, TraceDatError> {
        loop {
            if let Some(l) = self.pending_lost.take() {
                return Ok(Some(l));
            }
            if let Some(c) = self.cursor.as_mut() {
                let page = self.buf.get(self.page_start..).unwrap_or_default();
                let page = page.get(..self.page_size.min(page.len())).unwrap_or_default();
                match c.next(page, ctx.layout.big_endian) {
                    Entry::Data { ts, start, end } => {
                        let offset = match self.layout {
                            Layout::Pages => self.buf_offset + start as u64,
                            Layout::Chunks { .. } => self.buf_offset,
                        };
                        return Ok(Some(Raw::Data {
                            ts,
                            start: self.page_start + start,
                            end: self.page_start + end,
                            offset,
                        }));
                    }
                    Entry::Skip => continue,
                    Entry::End(damaged) => {
                        if damaged {
                            ctx.skipped.damaged_pages += 1;
                            ctx.skipped.at(self.buf_offset);
                        }
                        self.cursor = None;
                        self.page_start += self.page_size;
                    }
                }
            }
            if !self.load_page(ctx)? {
                return Ok(None);
            }
        }
    }

    /// Sets up the next page with a sane header; false at the end.
    fn load_page<R: Read + Seek>(&mut self, ctx: &mut Ctx<'_, R>) -> Result<bool, TraceDatError> {
        loop {
            if self.page_start >= self.buf.len() && !self.fill(ctx)? {
                return Ok(false);
            }
            let page = self.buf.get(self.page_start..).unwrap_or_default();
            let page = page.get(..self.page_size.min(page.len())).unwrap_or_default();
            match parse_header(page, ctx.layout) {
                Ok(h) => {
                    if let Some(count) = h.missed {
                        self.pending_lost = Some(Raw::Lost { ts: h.ts, count, offset: self.buf_offset });
                    }
                    self.cursor = Some(PageCursor::new(&h, ctx.layout));
                    return Ok(true);
                }
                Err(PageFault::Short | PageFault::CommitPastEnd) => {
                    ctx.skipped.pages += 1;
                    ctx.skipped.at(self.buf_offset);
                    self.page_start += self.page_size;
                }
            }
        }
    }

    /// Makes room for `n` bytes in `buf` within the shared memory budget.
    fn reserve<R>(&mut self, n: usize, ctx: &mut Ctx<'_, R>) -> Result<(), TraceDatError> {
        let have = self.buf.capacity() as u64;
        if n as u64 <= have {
            return Ok(());
        }
        let total = ctx.mem.saturating_sub(have).saturating_add(n as u64);
        if total > ctx.mem_limit {
            return Err(TraceDatError::TooLarge {
                offset: self.next,
                what: "page buffers of all CPUs",
                size: total,
                limit: ctx.mem_limit,
            });
        }
        self.buf.clear();
        self.buf.reserve_exact(n);
        *ctx.mem = ctx.mem.saturating_sub(have).saturating_add(self.buf.capacity() as u64);
        Ok(())
    }

    /// Loads the next page or chunk into `buf`; false at the end.
    fn fill<R: Read + Seek>(&mut self, ctx: &mut Ctx<'_, R>) -> Result<bool, TraceDatError> {
        loop {
            if self.done || self.next >= self.end {
                if !self.done && matches!(self.layout, Layout::Chunks { left } if left > 0) {
                    // The table promised chunks the data does not hold.
                    ctx.skipped.chunks += 1;
                    ctx.skipped.at(self.next);
                }
                self.done = true;
                self.buf.clear();
                return Ok(false);
            }
            self.page_start = 0;
            match self.layout {
                Layout::Pages => {
                    let n = (self.end - self.next).min(self.page_size as u64) as usize;
                    self.reserve(n, ctx)?;
                    self.buf.resize(n, 0);
                    ctx.src.seek(self.next, "cpu page")?;
                    ctx.src.fill(&mut self.buf, "cpu page")?;
                    self.buf_offset = self.next;
                    self.next += n as u64;
                    return Ok(true);
                }
                Layout::Chunks { ref mut left } => {
                    if *left == 0 {
                        self.done = true;
                        continue;
                    }
                    *left -= 1;
                    let at = self.next;
                    if self.end - at < 8 {
                        // The count promised more chunks than the data holds.
                        ctx.skipped.chunks += 1;
                        ctx.skipped.at(self.next);
                        self.done = true;
                        continue;
                    }
                    ctx.src.seek(at, "chunk")?;
                    let csize = u64::from(ctx.src.u32("chunk compressed size")?);
                    let usize_ = u64::from(ctx.src.u32("chunk size")?);
                    let data_at = ctx.src.pos();
                    if csize > self.end.saturating_sub(data_at) {
                        // The table lies about this chunk; nothing after it can be found.
                        ctx.skipped.chunks += 1;
                        ctx.skipped.at(self.next);
                        self.done = true;
                        continue;
                    }
                    self.next = data_at + csize;
                    if usize_ > CHUNK_LIMIT || csize > CHUNK_LIMIT {
                        ctx.skipped.chunks += 1;
                        ctx.skipped.at(at);
                        continue;
                    }
                    self.reserve(usize_ as usize, ctx)?;
                    ctx.scratch.resize(csize as usize, 0);
                    ctx.src.fill(ctx.scratch, "chunk data")?;
                    let Some(codec) = ctx.codec.as_deref_mut() else {
                        return Err(TraceDatError::malformed(at, "compressed data in a file without compression"));
                    };
                    if !codec.decompress(ctx.scratch, usize_ as usize, &mut self.buf) {
                        ctx.skipped.chunks += 1;
                        ctx.skipped.at(at);
                        continue;
                    }
                    self.buf_offset = at;
                    return Ok(true);
                }
            }
        }
    }
}
