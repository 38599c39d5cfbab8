//! The CPU page size from the events themselves, for captures whose header
//! does not say (no `page_size` metadata, no telling kernel release).
//!
//! `mm_page_free`/`mm_page_alloc` name pages by frame number, maps name
//! physical addresses (`iommu:map` `paddr`, `dma_map_page` `phys_addr`,
//! `dma_map_sg` `phys_addrs`). Drivers free the pages they mapped, so with
//! the right page size many freed or allocated frames land inside mapped
//! physical ranges; with a wrong one almost none do (a 16 KiB kernel's
//! frames read as 4 KiB frames point at a quarter of the address, below
//! its RAM). The decision is taken from a bounded prefix of the capture,
//! before the replay starts ([`crate::analyze`]), so the analysis still
//! streams in one pass: [`LOOKAHEAD_BYTES`] of text (a file or a pipe,
//! buffered and then replayed), or the first records of a perf.data
//! ([`scan_source`]; a trace.dat's header says), read by a second reader of the same bytes
//! ([`crate::source::open::open_capture`]). Parts of one capture (`--merge`)
//! pool their [`Samples`].

use iosan_core::PageSize;

use crate::parse::event::Event;
use crate::parse::{classify_line, parse_event, LineKind};
use crate::record::{Origin, Record, RecordSink};
use crate::source::Source;

/// Bytes of a text capture looked at before the replay starts.
pub const LOOKAHEAD_BYTES: usize = 4 << 20;
/// Most mapped ranges and page frames collected from the prefix.
const MAX_SAMPLES: usize = 1 << 16;
/// Fewest frames inside mapped ranges for a decision.
const MIN_HITS: usize = 8;

/// What the prefix shows, per candidate size (4, 16, 64 KiB): frames that
/// land inside a mapped physical range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Hits for 4 KiB, 16 KiB and 64 KiB pages.
    pub hits: [usize; 3],
}

const CANDIDATES: [PageSize; 3] = [PageSize::SIZE_4K, PageSize::SIZE_16K, PageSize::SIZE_64K];

impl Evidence {
    /// The page size the evidence decides: at least [`MIN_HITS`] hits and
    /// four times as many as any other size; `None` when undecidable.
    #[must_use]
    pub fn decided(&self) -> Option<PageSize> {
        let (best, &n) = self.hits.iter().enumerate().max_by_key(|(_, &n)| n)?;
        let runner_up = self.hits.iter().enumerate().filter(|&(i, _)| i != best).map(|(_, &n)| n).max().unwrap_or(0);
        (n >= MIN_HITS && n >= runner_up.saturating_mul(4).max(1) && n > runner_up).then(|| CANDIDATES[best])
    }
}

/// Mapped physical ranges and page frames seen in the first events of a
/// capture (or of several parts of one, [`Samples::absorb`]), at most
/// [`MAX_SAMPLES`] of each.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    ranges: Vec<(u64, u64)>,
    pfns: Vec<u64>,
}

impl Samples {
    /// Takes what `ev` shows: a mapped physical range or a page frame.
    pub fn add(&mut self, ev: &Event<'_>) {
        match ev {
            Event::IommuMap(m) => self.add_range(m.paddr, m.size),
            Event::DmaMapPage(m) => self.add_range(m.phys_addr, m.size),
            Event::DmaMapSg(m) if m.sizes.len() == m.phys_addrs.len() => {
                for (&p, &l) in m.phys_addrs.iter().zip(&m.sizes) {
                    self.add_range(p, l);
                }
            }
            Event::PageFree(b) if self.pfns.len() < MAX_SAMPLES => self.pfns.push(b.pfn),
            Event::PageAlloc(a) if !a.page_is_null && self.pfns.len() < MAX_SAMPLES => self.pfns.push(a.pfn),
            _ => {}
        }
    }

    fn add_range(&mut self, phys: u64, size: u64) {
        if size > 0 && self.ranges.len() < MAX_SAMPLES {
            self.ranges.push((phys, phys.saturating_add(size - 1)));
        }
    }

    /// Adds another part's samples (per-CPU parts: the map may be on one
    /// CPU, the free on another), within the same bounds.
    pub fn absorb(&mut self, other: &Samples) {
        let room = MAX_SAMPLES.saturating_sub(self.ranges.len());
        self.ranges.extend(other.ranges.iter().take(room));
        let room = MAX_SAMPLES.saturating_sub(self.pfns.len());
        self.pfns.extend(other.pfns.iter().take(room));
    }

    /// What the samples show.
    #[must_use]
    pub fn evidence(&self) -> Evidence {
        let mut ranges = self.ranges.clone();
        ranges.sort_unstable();
        // Merged, so a lookup is one binary search.
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some((_, last)) if a <= last.saturating_add(1) => *last = (*last).max(b),
                _ => merged.push((a, b)),
            }
        }
        let inside = |phys: u64| {
            let i = merged.partition_point(|&(a, _)| a <= phys);
            i > 0 && merged.get(i - 1).is_some_and(|&(_, b)| phys <= b)
        };
        let mut ev = Evidence::default();
        for (slot, ps) in ev.hits.iter_mut().zip(CANDIDATES) {
            *slot = self
                .pfns
                .iter()
                .filter(|&&p| p.checked_shl(ps.lg2()).is_some_and(|a| a >> ps.lg2() == p && inside(a)))
                .count();
        }
        ev
    }
}

/// Scans a capture prefix (ftrace or `trace-cmd report` text; a partial
/// last line is ignored). Malformed lines are skipped: the replay reports them.
#[must_use]
pub fn scan(prefix: &[u8]) -> Evidence {
    scan_text(prefix).evidence()
}

/// The samples of a text prefix (as [`scan`]).
#[must_use]
pub fn scan_text(prefix: &[u8]) -> Samples {
    let mut samples = Samples::default();
    // Only whole lines: the prefix may end inside one.
    let whole = match prefix.iter().rposition(|&b| b == b'\n') {
        Some(i) => prefix.get(..i).unwrap_or_default(),
        None => &[],
    };
    for line in whole.split(|&b| b == b'\n') {
        let Ok(LineKind::Event(e)) = classify_line(line) else { continue };
        let Ok(Some(ev)) = parse_event(e.name, e.body) else { continue };
        samples.add(&ev);
    }
    samples
}

/// The samples of the first records of a source of any format (trace.dat,
/// perf.data): [`MIN_LOOKAHEAD_RECORDS`], then on until they decide, at
/// most [`LOOKAHEAD_RECORDS`]. A read error ends the scan, keeping what
/// came before it (the replay reports the error where it reaches it).
#[must_use]
pub fn scan_source(source: &mut dyn Source) -> Samples {
    let mut sink = SampleSink::default();
    for n in 1..=LOOKAHEAD_RECORDS {
        match source.peek(&mut sink) {
            Ok(Some(_)) => source.pop(&mut sink),
            Ok(None) | Err(_) => break,
        }
        if n >= MIN_LOOKAHEAD_RECORDS && n % MIN_LOOKAHEAD_RECORDS == 0 && sink.0.evidence().decided().is_some() {
            break;
        }
    }
    sink.0
}

/// Records of a binary capture looked at before the replay starts, at
/// least, and between two looks at the evidence (a second pass over the
/// records costs their decoding: it stops once they decide) ...
pub const MIN_LOOKAHEAD_RECORDS: usize = 4096;
/// ... and at most, when the first ones decide nothing (page events
/// before any map: a recording started before the workload).
pub const LOOKAHEAD_RECORDS: usize = 1 << 18;

/// Collects samples and ignores everything else.
#[derive(Default)]
struct SampleSink(Samples);

impl RecordSink for SampleSink {
    fn record(&mut self, rec: &Record<'_>) {
        self.0.add(rec.event);
    }
    fn lost(&mut self, _: Option<u32>, _: Option<u64>, _: Origin) {}
    fn skipped(&mut self, _: &str, _: Origin) {}
    fn unknown_event(&mut self, _: &[u8]) {}
    fn meta(&mut self, _: &str, _: &str) {}
    fn overwritten(&mut self, _: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(us: u64, event: &str, body: &str) -> String {
        format!("  t-1 [000] .....  1.{us:06}: {event}: {body}\n")
    }

    /// `n` pages of `1 << page_lg2` bytes mapped at `base`, then freed by frame number.
    fn capture(page_lg2: u32, base: u64, n: u64) -> String {
        let mut t = String::new();
        for i in 0..n {
            let phys = base + (i << page_lg2);
            t += &line(
                i,
                "dma_map_page",
                &format!("0000:00:01.0 dir=TO_DEVICE dma_addr={phys:x} size=4096 phys_addr={phys:x} attrs="),
            );
            t += &line(i, "mm_page_free", &format!("page=00001 pfn={:#x} order=0", phys >> page_lg2));
        }
        t
    }

    #[test]
    fn decides_from_frames_inside_mapped_ranges() {
        let e = scan(capture(14, 0x4000_0000, 32).as_bytes());
        assert_eq!(e.decided(), Some(PageSize::SIZE_16K), "{e:?}");
        let e = scan(capture(12, 0x1_2000_0000, 32).as_bytes());
        assert_eq!(e.decided(), Some(PageSize::SIZE_4K), "{e:?}");
        let e = scan(capture(16, 0x8000_0000, 32).as_bytes());
        assert_eq!(e.decided(), Some(PageSize::SIZE_64K), "{e:?}");
    }

    #[test]
    fn parts_pool_their_samples() {
        // Maps on one CPU, the frees of their pages on another.
        let t = capture(14, 0x4000_0000, 32);
        let (maps, frees): (Vec<&str>, Vec<&str>) = t.lines().partition(|l| l.contains("dma_map_page"));
        let (a, b) = (maps.join("\n") + "\n", frees.join("\n") + "\n");
        assert_eq!(scan(a.as_bytes()).decided(), None);
        assert_eq!(scan(b.as_bytes()).decided(), None);
        let mut pooled = scan_text(a.as_bytes());
        pooled.absorb(&scan_text(b.as_bytes()));
        assert_eq!(pooled.evidence().decided(), Some(PageSize::SIZE_16K));
    }

    #[test]
    fn too_little_or_ambiguous_evidence_decides_nothing() {
        assert_eq!(scan(capture(14, 0x4000_0000, 3).as_bytes()).decided(), None);
        assert_eq!(scan(b"").decided(), None);
        assert_eq!(Evidence { hits: [10, 9, 0] }.decided(), None);
        assert_eq!(Evidence { hits: [40, 9, 0] }.decided(), Some(PageSize::SIZE_4K));
        // A partial last line is not read.
        let t = capture(14, 0x4000_0000, 32);
        assert_eq!(scan(t.as_bytes().get(..t.len() - 1).unwrap_or_default()).hits[1], 31);
    }
}
