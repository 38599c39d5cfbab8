//! The sanitizer: map and unmap hooks that count, check hooks that report.

use alloc::vec::Vec;
use core::ops::ControlFlow;
use core::sync::atomic::Ordering::Relaxed;

use crate::sync::{AtomicBool, AtomicU64, RwLock};
use smallvec::SmallVec;

use crate::addr::{Iova, IovaRange, PageSize, Pfn, PhysAddr, PhysRange};
use crate::finding::{DomainId, Finding, FindingKind, InvalidArgs, MappingSource};
use crate::store::{push_run, PageStore, Shortfall};
use crate::translate::{granule_lg2, LeafRun, Translate};

/// Which algorithm the sanitizer runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Semantics {
    /// iosan's algorithm: counts every CPU page, exact whatever the IOMMU
    /// unmaps, reports bad unmaps and teardown leaks.
    #[default]
    Exact,
    /// The kernel's `CONFIG_IOMMU_DEBUG_PAGEALLOC` algorithm, gaps included:
    /// steps by the granule with one `iova_to_phys` per step, decrements in
    /// `unmap_begin` and re-increments in `unmap_end`, only warns when the
    /// IOMMU unmapped more than asked, skips physical address 0, and ignores
    /// domain teardown.
    Upstream,
}

impl Semantics {
    /// The name used on the command line and in reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Upstream => "upstream",
        }
    }
}

/// Sanitizer configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Algorithm.
    pub semantics: Semantics,
    /// CPU page size (`PAGE_SIZE`).
    pub page_size: PageSize,
    /// Registered RAM: only pages inside are counted. Defaults to every
    /// address below 2^52 (`MAX_PHYSMEM_BITS` on x86-64 and arm64) for hosts
    /// that do not know the memory map, such as a trace analyser.
    pub ram: Vec<PhysRange>,
    /// Largest page-allocator order accepted by the check hooks.
    pub max_order: u32,
    /// Upstream semantics loops once per granule, like the kernel; calls
    /// needing more steps than this are refused (bounded work on hostile input).
    pub upstream_max_steps: u64,
}

/// 2^52: the largest physical address space Linux supports.
pub const PHYS_LIMIT: u64 = 1 << 52;

impl Default for Config {
    fn default() -> Self {
        Self {
            semantics: Semantics::Exact,
            page_size: PageSize::SIZE_4K,
            ram: alloc::vec![PhysRange::from_start_len(PhysAddr(0), PHYS_LIMIT).expect("constant range")],
            max_order: 20,
            upstream_max_steps: 1 << 24,
        }
    }
}

/// A static identity window: IOVA == phys, mapped before any page allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IdentityWindow {
    domain: DomainId,
    first: u64,
    last: u64,
}

/// Counters kept by the sanitizer.
///
/// No call counters: a relaxed increment is still a locked instruction, two
/// per map+unmap pair cost about 7% of a 4 KiB pair, and the host knows how
/// many calls it made. The kernel's algorithm keeps none either.
#[derive(Default, Debug)]
struct Stats {
    untracked_bytes: AtomicU64,
    unmapped_more: AtomicU64,
    identity_pages_freed: AtomicU64,
    identity_pages_allocated: AtomicU64,
}

/// A snapshot of the sanitizer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Bytes mapped outside registered RAM (MMIO, holes): not counted.
    pub untracked_bytes: u64,
    /// Unmaps where the IOMMU removed more than asked.
    pub unmapped_more: u64,
    /// Pages freed inside a static identity window (exposure, not findings).
    pub identity_pages_freed: u64,
    /// Pages allocated inside a static identity window.
    pub identity_pages_allocated: u64,
    /// Bytes of counter storage.
    pub counter_bytes: u64,
}

/// State carried from [`Sanitizer::unmap_begin`] to [`Sanitizer::unmap_end`].
#[derive(Clone, Debug)]
pub struct UnmapTicket {
    domain: DomainId,
    iova: Iova,
    size: u64,
    valid: bool,
    /// The domain's granule at `unmap_begin` (when valid).
    granule_lg2: u32,
    /// Exact: the translation of the range and of straddling leaves.
    runs: SmallVec<[LeafRun; 2]>,
}

impl UnmapTicket {
    /// The domain being unmapped.
    #[must_use]
    pub fn domain(&self) -> DomainId {
        self.domain
    }
    /// The IOVA asked for.
    #[must_use]
    pub fn iova(&self) -> Iova {
        self.iova
    }
    /// The size asked for.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Bytes of the asked range that had a translation (exact semantics).
    #[must_use]
    pub fn mapped_bytes(&self) -> u64 {
        let Some(asked) = IovaRange::from_start_len(self.iova, self.size) else { return 0 };
        self.runs.iter().filter_map(|r| r.iova_range()?.intersect(asked)?.len()).fold(0u64, u64::saturating_add)
    }
}

/// The DMA use-after-free sanitizer.
///
/// Models `drivers/iommu/iommu-debug-pagealloc.c`: hosts call [`map`] after
/// a successful (or partial) `iommu_map`, [`unmap_begin`] before and
/// [`unmap_end`] after `iommu_unmap`, and [`check_free`] / [`check_alloc`]
/// where the page allocator frees (`free_pages_prepare`) or hands out
/// (`post_alloc_hook`) a block. Every call returns its findings as values
/// and never panics. `Sync`: counters are relaxed atomics.
///
/// [`map`]: Sanitizer::map
/// [`unmap_begin`]: Sanitizer::unmap_begin
/// [`unmap_end`]: Sanitizer::unmap_end
/// [`check_free`]: Sanitizer::check_free
/// [`check_alloc`]: Sanitizer::check_alloc
pub struct Sanitizer {
    config: Config,
    store: PageStore,
    identity: RwLock<Vec<IdentityWindow>>,
    /// Fast check before taking the `identity` lock.
    has_identity: AtomicBool,
    allocator_seen: AtomicBool,
    warned_unmapped_more: AtomicBool,
    stats: Stats,
}

impl Default for Sanitizer {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

/// `missing` counts short (or over) on one page, found by a map or unmap.
fn page_finding(kind: FindingKind, domain: DomainId, iova: Iova, size: u64, pfn: u64, missing: u32) -> Finding {
    let mut f = Finding::pages(kind, Pfn(pfn), 1, missing);
    f.domain = Some(domain);
    f.iova = Some(iova);
    f.size = size;
    f
}

fn invalid(domain: DomainId, iova: Iova, size: u64, why: InvalidArgs) -> Vec<Finding> {
    alloc::vec![Finding::invalid(domain, iova, size, why)]
}

impl Sanitizer {
    /// A sanitizer with the given configuration.
    #[must_use]
    pub fn new(config: Config) -> Self {
        let store = PageStore::new(config.page_size, &config.ram);
        Self {
            config,
            store,
            identity: RwLock::new(Vec::new()),
            has_identity: AtomicBool::new(false),
            allocator_seen: AtomicBool::new(false),
            warned_unmapped_more: AtomicBool::new(false),
            stats: Stats::default(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The semantics in use.
    #[must_use]
    pub fn semantics(&self) -> Semantics {
        self.config.semantics
    }

    /// The CPU page size.
    #[must_use]
    pub fn page_size(&self) -> PageSize {
        self.config.page_size
    }

    /// The number of mappings covering page `pfn` (exact semantics), or the
    /// kernel's signed counter (upstream semantics, may be negative).
    #[must_use]
    pub fn count(&self, pfn: Pfn) -> i64 {
        match self.config.semantics {
            Semantics::Exact => i64::try_from(self.store.count(pfn.get())).unwrap_or(i64::MAX),
            Semantics::Upstream => i64::from(self.store.page_signed(pfn.get())),
        }
    }

    /// The counter store (for hosts that inspect memory use or seed counts).
    #[must_use]
    pub fn store(&self) -> &PageStore {
        &self.store
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            untracked_bytes: s.untracked_bytes.load(Relaxed),
            unmapped_more: s.unmapped_more.load(Relaxed),
            identity_pages_freed: s.identity_pages_freed.load(Relaxed),
            identity_pages_allocated: s.identity_pages_allocated.load(Relaxed),
            counter_bytes: self.store.counter_bytes(),
        }
    }

    /// Exact semantics' per-domain step: min(granule, CPU page).
    fn step_lg2(&self, granule_lg2: u32) -> u32 {
        granule_lg2.min(self.config.page_size.lg2())
    }

    /// Adds or removes one count per step of `[phys, phys + len)` (exact).
    fn exact_apply(&self, phys: u64, len: u64, step_lg2: u32, add: bool) -> Vec<Shortfall> {
        let page_lg2 = self.config.page_size.lg2();
        let Some((first, last)) = self.store.pages_of(PhysAddr(phys), len) else { return Vec::new() };
        if first == last && step_lg2 >= page_lg2 {
            return self.apply_page(first, len, add);
        }
        let untracked = if add { self.store.untracked_pages(first, last) } else { 0 };
        if untracked > 0 {
            let bytes = untracked.saturating_mul(self.config.page_size.bytes()).min(len);
            self.stats.untracked_bytes.fetch_add(bytes, Relaxed);
        }
        let apply = |a: u64, b: u64, d: u32| if add { self.store.add(a, b, d) } else { self.store.sub(a, b, d) };
        if step_lg2 >= page_lg2 {
            return apply(first, last, 1);
        }
        // Granule smaller than the CPU page: a page holds several steps.
        let full = 1u32 << (page_lg2 - step_lg2);
        let end = phys.saturating_add(len);
        let steps_in = |p: u64| -> u32 {
            let ps = p << page_lg2;
            let pe = ps.saturating_add(1 << page_lg2);
            let bytes = end.min(pe).saturating_sub(phys.max(ps));
            u32::try_from(bytes >> step_lg2).unwrap_or(full)
        };
        let mut out = Vec::new();
        let head = steps_in(first);
        if first == last {
            return apply(first, first, head);
        }
        let tail = steps_in(last);
        let mid_first = if head == full { first } else { first + 1 };
        let mid_last = if tail == full { last } else { last - 1 };
        if head != full {
            out.extend(apply(first, first, head));
        }
        if mid_first <= mid_last {
            out.extend(apply(mid_first, mid_last, full));
        }
        if tail != full {
            out.extend(apply(last, last, tail));
        }
        out
    }

    /// [`Self::exact_apply`] on a range inside page `pfn`, counted once: the
    /// page's own counter only (out of line, as [`Self::map_page`]).
    #[inline(never)]
    fn apply_page(&self, pfn: u64, len: u64, add: bool) -> Vec<Shortfall> {
        let missing = if add {
            match self.store.add_page(pfn, 1) {
                Some(true) => 0,
                Some(false) => 1,
                None => {
                    self.stats.untracked_bytes.fetch_add(len, Relaxed);
                    0
                }
            }
        } else {
            self.store.sub_page(pfn, 1)
        };
        if missing == 0 {
            Vec::new()
        } else {
            alloc::vec![Shortfall { first: pfn, npages: 1, missing }]
        }
    }

    fn shortfall_findings(
        &self,
        kind: FindingKind,
        domain: DomainId,
        iova: Iova,
        size: u64,
        short: Vec<Shortfall>,
    ) -> Vec<Finding> {
        if short.is_empty() {
            return Vec::new();
        }
        short
            .into_iter()
            .map(|s| {
                let mut f = Finding::pages(kind, Pfn(s.first), s.npages, s.missing);
                f.domain = Some(domain);
                f.iova = Some(iova);
                f.size = size;
                f
            })
            .collect()
    }

    /// Records `size` bytes at `iova` → `phys` just mapped in `domain`
    /// (`iommu_debug_map()`, called with the bytes actually mapped, also on
    /// the map error path).
    #[inline]
    #[must_use]
    pub fn map(&self, domain: DomainId, dom: &dyn Translate, iova: Iova, phys: PhysAddr, size: u64) -> Vec<Finding> {
        let Some(g) = granule_lg2(dom.pgsize_bitmap()) else {
            return invalid(domain, iova, size, InvalidArgs::NoPageSizes);
        };
        match self.config.semantics {
            Semantics::Exact => self.map_exact(domain, g, iova, phys, size),
            Semantics::Upstream => self.map_upstream(domain, g, iova, phys, size),
        }
    }

    fn map_exact(&self, domain: DomainId, g: u32, iova: Iova, phys: PhysAddr, size: u64) -> Vec<Finding> {
        // One CPU page (a 4 KiB map on 4 KiB pages), first: page-sized and
        // aligned, so neither end wraps and every check below passes.
        if let Some(pfn) = self.whole_page(g, phys.get(), size).filter(|_| iova.is_aligned(g)) {
            let mut out = Vec::new();
            if iova.get() == phys.get() && !self.allocator_seen.load(Relaxed) {
                out.push(self.identity_window(domain, iova, phys, size));
            }
            if let Some(f) = self.map_page(domain, iova, size, pfn) {
                out.push(f);
            }
            return out;
        }
        if size == 0 {
            return invalid(domain, iova, size, InvalidArgs::ZeroSize);
        }
        if iova.checked_add(size - 1).is_none() {
            return invalid(domain, iova, size, InvalidArgs::IovaOverflow);
        }
        if phys.checked_add(size - 1).is_none() {
            return invalid(domain, iova, size, InvalidArgs::PhysOverflow);
        }
        if !iova.is_aligned(g) || !phys.is_aligned(g) || !PhysAddr(size).is_aligned(g) {
            return invalid(domain, iova, size, InvalidArgs::Misaligned);
        }
        let mut out = Vec::new();
        if iova.get() == phys.get() && !self.allocator_seen.load(Relaxed) {
            out.push(self.identity_window(domain, iova, phys, size));
        }
        let short = self.exact_apply(phys.get(), size, self.step_lg2(g), true);
        out.extend(self.shortfall_findings(FindingKind::RefcountOverflow, domain, iova, size, short));
        out
    }

    /// Records a static identity window (IOVA == phys before any page
    /// allocation) and returns its informational finding.
    #[cold]
    fn identity_window(&self, domain: DomainId, iova: Iova, phys: PhysAddr, size: u64) -> Finding {
        let (first, last) = self.store.pages_of(phys, size).unwrap_or((0, 0));
        self.identity.write().push(IdentityWindow { domain, first, last });
        self.has_identity.store(true, Relaxed);
        Finding::range(FindingKind::IdentityWindow, domain, iova, size)
    }

    /// Counts one CPU page mapped whole: the kernel's per-page refcount, no
    /// block machinery. Kept out of line so that the general path of its
    /// callers stays as lean as before.
    #[inline(always)]
    fn map_page(&self, domain: DomainId, iova: Iova, size: u64, pfn: u64) -> Option<Finding> {
        match self.store.add_page(pfn, 1) {
            Some(true) => None,
            Some(false) => Some(page_finding(FindingKind::RefcountOverflow, domain, iova, size, pfn, 1)),
            None => {
                self.stats.untracked_bytes.fetch_add(size, Relaxed);
                None
            }
        }
    }

    /// Removes the count of one CPU page unmapped whole (see [`Self::map_page`]).
    #[inline(always)]
    fn unmap_page(&self, ticket: &UnmapTicket, pfn: u64) -> Vec<Finding> {
        let (domain, iova, size) = (ticket.domain, ticket.iova, ticket.size);
        if self.has_identity.load(Relaxed) {
            if let Some(gone) = IovaRange::from_start_len(iova, size) {
                self.forget_identity(domain, &ticket.runs, gone);
            }
        }
        match self.store.sub_page(pfn, 1) {
            0 => Vec::new(),
            missing => alloc::vec![page_finding(FindingKind::RefcountUnderflow, domain, iova, size, pfn, missing)],
        }
    }

    /// The page frame when `[phys, phys + len)` is exactly one CPU page
    /// counted once (granule == CPU page): a 4 KiB map on 4 KiB pages.
    fn whole_page(&self, g: u32, phys: u64, len: u64) -> Option<u64> {
        let page_lg2 = self.config.page_size.lg2();
        (g == page_lg2 && len == 1 << page_lg2 && phys & (len - 1) == 0).then_some(phys >> page_lg2)
    }

    /// Steps of `granule` over `size`, or `None` beyond the upstream bound.
    fn upstream_steps(&self, g: u32, size: u64) -> Option<u64> {
        let steps = size.div_ceil(1u64 << g.min(63));
        (steps <= self.config.upstream_max_steps).then_some(steps)
    }

    fn map_upstream(&self, domain: DomainId, g: u32, iova: Iova, phys: PhysAddr, size: u64) -> Vec<Finding> {
        if phys.get() == 0 {
            return invalid(domain, iova, size, InvalidArgs::PhysZero);
        }
        if size > 0 && phys.checked_add(size - 1).is_none() || phys.checked_add(size).is_none() {
            return invalid(domain, iova, size, InvalidArgs::PhysOverflow);
        }
        let Some(steps) = self.upstream_steps(g, size) else {
            return invalid(domain, iova, size, InvalidArgs::IovaOverflow);
        };
        let mut short = Vec::new();
        let page_lg2 = self.config.page_size.lg2();
        for i in 0..steps {
            let p = phys.get().wrapping_add(i << g) >> page_lg2;
            match self.store.add_page_signed(p, 1) {
                Some(v) if v <= 0 => push_run(&mut short, Shortfall { first: p, npages: 1, missing: 1 }),
                Some(_) => {}
                None => {
                    self.stats.untracked_bytes.fetch_add(1 << g, Relaxed);
                }
            }
        }
        self.shortfall_findings(FindingKind::RefcountOverflow, domain, iova, size, short)
    }

    /// Called before the IOMMU unmaps `[iova, iova + size)` of `domain`
    /// (`iommu_debug_unmap_begin()`). Records the translation (exact) or
    /// counts down (upstream). Pass the ticket to [`Sanitizer::unmap_end`].
    #[inline]
    #[must_use]
    pub fn unmap_begin(
        &self,
        domain: DomainId,
        dom: &dyn Translate,
        iova: Iova,
        size: u64,
    ) -> (UnmapTicket, Vec<Finding>) {
        let mut ticket = UnmapTicket { domain, iova, size, valid: false, granule_lg2: 0, runs: SmallVec::new() };
        let Some(g) = granule_lg2(dom.pgsize_bitmap()) else {
            return (ticket, invalid(domain, iova, size, InvalidArgs::NoPageSizes));
        };
        ticket.granule_lg2 = g;
        if size == 0 {
            return (ticket, invalid(domain, iova, size, InvalidArgs::ZeroSize));
        }
        let Some(range) = IovaRange::from_start_len(iova, size) else {
            return (ticket, invalid(domain, iova, size, InvalidArgs::IovaOverflow));
        };
        ticket.valid = true;
        match self.config.semantics {
            Semantics::Exact => {
                dom.walk_leaves(range, &mut |run| {
                    ticket.runs.push(run);
                    ControlFlow::Continue(())
                });
                let covered = match ticket.runs.as_slice() {
                    // Common case: one leaf holds the whole range.
                    [r] if r.iova <= iova && r.iova_range().is_some_and(|rr| rr.last() >= range.last()) => size,
                    _ => ticket.mapped_bytes(),
                };
                let out = if covered == 0 {
                    alloc::vec![Finding::range(FindingKind::DoubleUnmap, domain, iova, size)]
                } else if covered < size {
                    alloc::vec![Finding::range(FindingKind::UnmapOverlapsUnmapped, domain, iova, size)]
                } else {
                    Vec::new()
                };
                (ticket, out)
            }
            Semantics::Upstream => {
                let Some(steps) = self.upstream_steps(g, size) else {
                    ticket.valid = false;
                    return (ticket, invalid(domain, iova, size, InvalidArgs::IovaOverflow));
                };
                let mut short = Vec::new();
                let page_lg2 = self.config.page_size.lg2();
                for i in 0..steps {
                    let Some(phys) = dom.iova_to_phys(Iova(iova.get().wrapping_add(i << g))) else { continue };
                    if phys.get() == 0 {
                        continue;
                    }
                    let p = phys.get() >> page_lg2;
                    if let Some(v) = self.store.add_page_signed(p, -1) {
                        if v < 0 {
                            push_run(&mut short, Shortfall { first: p, npages: 1, missing: 1 });
                        }
                    }
                }
                (ticket, self.shortfall_findings(FindingKind::RefcountUnderflow, domain, iova, size, short))
            }
        }
    }

    /// Called after the IOMMU unmapped `unmapped` bytes from the ticket's
    /// IOVA (`iommu_debug_unmap_end()`); `dom` is the domain after the unmap.
    /// Exact: removes exactly the bytes that went, fewer or more than asked.
    #[inline]
    #[must_use]
    pub fn unmap_end(&self, ticket: UnmapTicket, dom: &dyn Translate, unmapped: u64) -> Vec<Finding> {
        if !ticket.valid {
            return Vec::new();
        }
        if let ([run], Semantics::Exact, true) =
            (ticket.runs.as_slice(), self.config.semantics, unmapped == ticket.size)
        {
            // One leaf, unmapped exactly: the common 4 KiB unmap.
            if run.iova == ticket.iova && run.len == unmapped {
                if let Some(pfn) = self.whole_page(ticket.granule_lg2, run.phys.get(), unmapped) {
                    return self.unmap_page(&ticket, pfn);
                }
            }
        }
        let g = granule_lg2(dom.pgsize_bitmap()).unwrap_or(12);
        let (domain, iova, size) = (ticket.domain, ticket.iova, ticket.size);
        if unmapped > size {
            self.stats.unmapped_more.fetch_add(1, Relaxed);
        }
        match self.config.semantics {
            Semantics::Exact => {
                let Some(gone) = IovaRange::from_start_len(iova, unmapped)
                    .or_else(|| IovaRange::from_start_last(iova, Iova(u64::MAX)).filter(|_| unmapped > 0))
                else {
                    return Vec::new();
                };
                // An IOMMU that removed more than asked removed whole leaves, which may
                // start before `iova` (unmap inside a superpage): when the leaves touching
                // the asked range add up to exactly what went, they went whole.
                let asked = IovaRange::from_start_len(iova, size);
                let touching = |r: &LeafRun| asked.zip(r.iova_range()).is_some_and(|(a, rr)| a.intersect(rr).is_some());
                let leaves_went_whole = unmapped > size
                    && ticket.runs.iter().filter(|r| touching(r)).map(|r| r.len).fold(0, u64::saturating_add)
                        == unmapped;
                let mut short = Vec::new();
                for run in &ticket.runs {
                    let Some(rr) = run.iova_range() else { continue };
                    let cut = if leaves_went_whole {
                        if !touching(run) {
                            continue;
                        }
                        rr
                    } else {
                        let Some(cut) = rr.intersect(gone) else { continue };
                        cut
                    };
                    let off = cut.start().get() - run.iova.get();
                    let Some(len) = cut.len() else { continue };
                    short.extend(self.exact_apply(run.phys.get().wrapping_add(off), len, self.step_lg2(g), false));
                }
                self.forget_identity(domain, &ticket.runs, gone);
                self.shortfall_findings(FindingKind::RefcountUnderflow, domain, iova, size, short)
            }
            Semantics::Upstream => {
                if unmapped == size {
                    return Vec::new();
                }
                if unmapped > size {
                    // WARN_ON_ONCE: the stale counts stay, as in the kernel.
                    if !self.warned_unmapped_more.swap(true, Relaxed) {
                        return alloc::vec![Finding::range(
                            FindingKind::UnmappedMoreThanRequested,
                            domain,
                            iova,
                            unmapped
                        )];
                    }
                    return Vec::new();
                }
                let page_lg2 = self.config.page_size.lg2();
                let mut short = Vec::new();
                let mut off = unmapped;
                while off < size {
                    if let Some(phys) = dom.iova_to_phys(Iova(iova.get().wrapping_add(off))) {
                        if phys.get() != 0 {
                            let p = phys.get() >> page_lg2;
                            if let Some(v) = self.store.add_page_signed(p, 1) {
                                if v <= 0 {
                                    push_run(&mut short, Shortfall { first: p, npages: 1, missing: 1 });
                                }
                            }
                        }
                    }
                    off = match off.checked_add(1 << g) {
                        Some(o) => o,
                        None => break,
                    };
                }
                self.shortfall_findings(FindingKind::RefcountOverflow, domain, iova, size, short)
            }
        }
    }

    /// Drops identity windows of `domain` that an unmap touched: they are no
    /// longer static.
    fn forget_identity(&self, domain: DomainId, runs: &[LeafRun], gone: IovaRange) {
        if !self.has_identity.load(Relaxed) {
            return;
        }
        let page_lg2 = self.config.page_size.lg2();
        let mut w = self.identity.write();
        w.retain(|win| {
            win.domain != domain
                || !runs.iter().any(|r| {
                    r.iova_range().and_then(|rr| rr.intersect(gone)).is_some_and(|cut| {
                        let p = (r.phys.get().wrapping_add(cut.start().get() - r.iova.get())) >> page_lg2;
                        p >= win.first && p <= win.last
                    })
                })
        });
    }

    /// Checks a block of `2^order` pages being freed (`free_pages_prepare`).
    #[must_use]
    pub fn check_free(&self, pfn: Pfn, order: u32, src: &dyn MappingSource) -> Vec<Finding> {
        self.check(FindingKind::FreedWhileMapped, pfn, order, src)
    }

    /// Checks a block of `2^order` pages being handed out (`post_alloc_hook`).
    #[must_use]
    pub fn check_alloc(&self, pfn: Pfn, order: u32, src: &dyn MappingSource) -> Vec<Finding> {
        self.check(FindingKind::AllocatedWhileMapped, pfn, order, src)
    }

    fn check(&self, kind: FindingKind, pfn: Pfn, order: u32, src: &dyn MappingSource) -> Vec<Finding> {
        self.allocator_seen.store(true, Relaxed);
        if order > self.config.max_order || order >= 63 {
            let mut f = Finding::pages(FindingKind::InvalidMapArgs, pfn, 0, 0);
            f.invalid = Some(InvalidArgs::OrderTooLarge);
            return alloc::vec![f];
        }
        let n = 1u64 << order;
        let n = n.min(u64::MAX - pfn.get()).max(1);
        let mut runs: Vec<(u64, u64, u32)> = Vec::new();
        let mut exposed = 0u64;
        let no_windows = alloc::vec::Vec::new();
        let guard = self.has_identity.load(Relaxed).then(|| self.identity.read());
        let windows = guard.as_deref().unwrap_or(&no_windows);
        let mut record = |p: u64, c: u64| {
            if c == 0 {
                return;
            }
            let in_windows = windows.iter().filter(|w| p >= w.first && p <= w.last).count() as u64;
            if self.config.semantics == Semantics::Exact && in_windows >= c {
                exposed += 1;
                return;
            }
            let c32 = u32::try_from(c).unwrap_or(u32::MAX);
            match runs.last_mut() {
                Some((first, len, max)) if *first + *len == p => {
                    *len += 1;
                    *max = (*max).max(c32);
                }
                _ => runs.push((p, 1, c32)),
            }
        };
        match self.config.semantics {
            Semantics::Exact => self.store.counts(pfn.get(), n, &mut record),
            Semantics::Upstream => {
                for p in pfn.get()..pfn.get() + n {
                    let v = self.store.page_signed(p);
                    if v != 0 {
                        record(p, u64::from(v.unsigned_abs()));
                    }
                }
            }
        }
        drop(guard);
        if exposed > 0 {
            let stat = match kind {
                FindingKind::FreedWhileMapped => &self.stats.identity_pages_freed,
                _ => &self.stats.identity_pages_allocated,
            };
            stat.fetch_add(exposed, Relaxed);
        }
        let page_lg2 = self.config.page_size.lg2();
        runs.into_iter()
            .map(|(first, npages, count)| {
                let mut f = Finding::pages(kind, Pfn(first), npages, count);
                if let Some(phys) = first.checked_shl(page_lg2) {
                    let len = npages.saturating_mul(1 << page_lg2);
                    src.mappings_covering(PhysAddr(phys), len, &mut |m| f.mappings.push(m));
                }
                f
            })
            .collect()
    }

    /// Called when `domain` is freed (`iommu_domain_free()`), before its
    /// tables go. Exact: every live mapping is a `leak-at-teardown` finding
    /// and stops counting. Upstream has no such hook: nothing happens, and
    /// the stale counts stay (a later free of those pages reports a leak).
    #[must_use]
    pub fn domain_destroyed(&self, domain: DomainId, dom: &dyn Translate) -> Vec<Finding> {
        if self.config.semantics == Semantics::Upstream {
            return Vec::new();
        }
        let Some(all) = IovaRange::from_start_last(Iova(0), Iova(u64::MAX)) else { return Vec::new() };
        let g = granule_lg2(dom.pgsize_bitmap()).unwrap_or(12);
        let mut runs: Vec<LeafRun> = Vec::new();
        dom.walk_leaves(all, &mut |r| {
            runs.push(r);
            ControlFlow::Continue(())
        });
        let page_lg2 = self.config.page_size.lg2();
        let mut out = Vec::new();
        for r in &runs {
            let short = self.exact_apply(r.phys.get(), r.len, self.step_lg2(g), false);
            let mut f = Finding::range(FindingKind::LeakAtTeardown, domain, r.iova, r.len);
            f.pfn = Some(r.phys.pfn(self.config.page_size));
            f.npages = r.len.div_ceil(1 << page_lg2);
            out.push(f);
            out.extend(self.shortfall_findings(FindingKind::RefcountUnderflow, domain, r.iova, r.len, short));
        }
        self.identity.write().retain(|w| w.domain != domain);
        out
    }
}
