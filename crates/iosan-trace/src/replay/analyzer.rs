//! The replay's state: one field per room, its options, and the helpers
//! every room uses to report (a finding at an event, lost-event doubt).

use std::hash::BuildHasherDefault;

use iosan_core::{Config, Finding, PageSize, Sanitizer, Semantics};

use super::dma_api::DmaApi;
use super::identity::Domains;
use super::lazy::Lazy;
use super::sequence::Sequences;
use super::tasks::Tasks;
use crate::record::Record;
use crate::report::{FindingSink, Findings, LostWindow, Summary, TraceFinding};

/// Maps keyed by values from the capture; each is bounded in size, so
/// collisions chosen by an attacker cost time, never memory.
type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<iosan_core::hash::FastHasher>>;

/// Analysis options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Exact (default) or the kernel's algorithm.
    pub semantics: Semantics,
    /// CPU page size of the traced kernel: what is assumed until the
    /// capture says otherwise (see [`Options::page_size_given`]).
    pub page_size: PageSize,
    /// `page_size` was given by the user (`--page-size`): the capture's
    /// metadata does not override it, a contradiction is only warned about.
    pub page_size_given: bool,
    /// The page size the capture's events show ([`crate::pagesize`]),
    /// when a look ahead decided one: used unless given or stated by the
    /// capture's header; warned about when it contradicts `page_size`.
    pub events_page_size: Option<PageSize>,
    /// IOMMU page sizes assumed for domains (the trace does not say):
    /// 4 KiB granule with 2 MiB and 1 GiB superpages, as VT-d, AMD and SMMU with 4K pages.
    pub pgsize_bitmap: u64,
    /// Most follow-up events kept per finding (the count is always exact).
    pub max_follow_ups: usize,
    /// Most unflushed (lazy-mode) unmapped ranges tracked at once.
    pub max_unflushed: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            semantics: Semantics::Exact,
            page_size: PageSize::SIZE_4K,
            page_size_given: false,
            events_page_size: None,
            pgsize_bitmap: (1 << 12) | (1 << 21) | (1 << 30),
            max_follow_ups: 16,
            max_unflushed: 1 << 20,
        }
    }
}

/// Replays events; call [`Analyzer::finish`] for the report.
pub struct Analyzer {
    pub(super) opts: Options,
    /// The page counters (iosan-core).
    pub(super) san: Sanitizer,
    /// Domains and their shadows (`identity`).
    pub(super) domains: Domains,
    /// Open call sequences (`sequence`).
    pub(super) seqs: Sequences,
    /// An empty buffer [`Analyzer::resolve`] reuses.
    pub(super) spare_items: Vec<super::sequence::Item>,
    /// What an unmap removed from the shadow: one buffer for every unmap.
    pub(super) spare_gone: Vec<iosan_core::ShadowMapping>,
    /// Task names and stacks (`tasks`).
    pub(super) tasks: Tasks,
    /// Unflushed ranges (`lazy`).
    pub(super) lazy: Lazy,
    /// Live DMA-API mappings (`dma_api`).
    pub(super) dma: DmaApi,
    /// Findings so far.
    pub(super) findings: Findings,
    /// Lost-event windows, in order.
    pub(super) lost: Vec<LostWindow>,
    /// Last timestamp per CPU (CPU numbers are below MAX_CPUS).
    pub(super) last_ts_by_cpu: Vec<Option<u64>>,
    pub(super) summary: Summary,
    /// Events per kind (few distinct labels: a list beats a map).
    pub(super) kind_counts: Vec<(&'static str, u64)>,
    /// An event that can identify a domain (kprobe, dma:*, VT-d) was seen:
    /// until then maps cannot wait for an identity.
    pub(super) identity_seen: bool,
    /// Devices already listed in the summary.
    pub(super) devices_seen: HashMap<std::sync::Arc<str>, ()>,
    /// Which lost-event windows were handed to the findings (streaming).
    pub(super) lost_emitted: Vec<bool>,
    /// When the next lookahead sweep is due (`lookahead`).
    pub(super) sweep: Sweep,
    /// An `iommu:map` event was seen: DMA addresses that differ from the
    /// physical address are the IOMMU layer's to count.
    pub(super) iommu_map_seen: bool,
}

/// The lookahead sweep's schedule.
#[derive(Default)]
pub(super) struct Sweep {
    /// Trace time of the next sweep, ns.
    pub(super) next_ns: u64,
    /// Event count of the next count sweep.
    pub(super) next_events: u64,
    /// Newest timestamp at the previous count sweep, ns.
    pub(super) mark_ns: u64,
}

impl Analyzer {
    /// A new analyzer.
    #[must_use]
    pub fn new(mut opts: Options) -> Self {
        let mut warning = None;
        match opts.events_page_size {
            Some(ps) if ps != opts.page_size && opts.page_size_given => {
                warning = Some(format!(
                    "--page-size {} contradicts the capture (events: its freed pages lie in mapped ranges with {}-byte pages); analysed with {}",
                    opts.page_size.bytes(),
                    ps.bytes(),
                    opts.page_size.bytes()
                ));
            }
            Some(ps) if !opts.page_size_given => opts.page_size = ps,
            _ => {}
        }
        let san = Sanitizer::new(Config { semantics: opts.semantics, page_size: opts.page_size, ..Config::default() });
        let summary = Summary {
            semantics: opts.semantics.name(),
            page_size: opts.page_size.bytes(),
            page_size_source: match (opts.page_size_given, opts.events_page_size) {
                (true, _) => "--page-size",
                (false, Some(_)) => "events",
                (false, None) => "assumed",
            },
            page_size_warnings: warning.into_iter().collect(),
            ..Summary::default()
        };
        Self {
            san,
            domains: Domains::new(opts.pgsize_bitmap),
            seqs: Sequences::default(),
            spare_items: Vec::new(),
            spare_gone: Vec::new(),
            tasks: Tasks::default(),
            lazy: Lazy::new(opts.max_unflushed, opts.page_size.lg2()),
            dma: DmaApi::default(),
            findings: Findings::default(),
            lost: Vec::new(),
            last_ts_by_cpu: Vec::new(),
            summary,
            kind_counts: Vec::new(),
            identity_seen: false,
            devices_seen: HashMap::default(),
            lost_emitted: Vec::new(),
            sweep: Sweep::default(),
            iommu_map_seen: false,
            opts,
        }
    }

    /// A new analyzer that hands each finding on as soon as it is decided
    /// ([`Self::drain_findings`]) instead of keeping it for a report; end
    /// it with [`Self::finish_streaming`]. How long a decision can wait is
    /// bounded: see [`super::LOOKAHEAD_NS`].
    #[must_use]
    pub fn streaming(opts: Options) -> Self {
        let mut an = Self::new(opts);
        an.findings = Findings::streaming();
        an
    }

    /// Hands the findings decided since the last call to `sink` (call it
    /// after every record). Does nothing for an analyzer made by [`Self::new`].
    pub fn drain_findings(&mut self, sink: &mut dyn FindingSink) {
        self.findings.drain(sink);
    }

    /// CPU page size, log2.
    pub(super) fn page_lg2(&self) -> u32 {
        self.opts.page_size.lg2()
    }

    /// The capture says its CPU page size is `ps` (`source` says how it
    /// knows). Decided before the first event: the counters are rebuilt
    /// for it. A size given by the user, or one that arrives after events
    /// were replayed, stays, with a warning when the two differ.
    pub(super) fn capture_page_size(&mut self, ps: PageSize, source: &'static str) {
        if let Some(seen) = self.opts.events_page_size.filter(|&e| e != ps && !self.opts.page_size_given) {
            // The header outranks the events; a trace.dat's page is its ring
            // buffer's sub-buffer, which `buffer_subbuf_size_kb` can change.
            self.summary.page_size_warnings.push(format!(
                "the {source} says {}-byte pages but the events show {}-byte pages (their freed pages lie in \
                 mapped ranges with that size); analysed with {}: pass --page-size if the events are right",
                ps.bytes(),
                seen.bytes(),
                ps.bytes()
            ));
        }
        if ps == self.opts.page_size {
            if !self.opts.page_size_given {
                self.summary.page_size_source = source;
            }
            return;
        }
        if self.opts.page_size_given {
            self.summary.page_size_warnings.push(format!(
                "--page-size {} contradicts the capture ({source}: {}); analysed with {}",
                self.opts.page_size.bytes(),
                ps.bytes(),
                self.opts.page_size.bytes()
            ));
            return;
        }
        if self.summary.events_read > 0 {
            self.summary.page_size_warnings.push(format!(
                "the capture gives the page size ({source}: {}) only after its first events; analysed with {}",
                ps.bytes(),
                self.opts.page_size.bytes()
            ));
            return;
        }
        self.opts.page_size = ps;
        let config = Config { semantics: self.opts.semantics, page_size: ps, ..Config::default() };
        self.san = Sanitizer::new(config);
        self.lazy = Lazy::new(self.opts.max_unflushed, ps.lg2());
        self.summary.page_size = ps.bytes();
        self.summary.page_size_source = source;
    }

    /// Whether events were lost on some CPU between `from_ns` and `to_ns`.
    pub(super) fn lost_between(&self, from_ns: u64, to_ns: u64) -> bool {
        self.lost.iter().any(|w| w.after_ns <= to_ns && w.before_ns.unwrap_or(u64::MAX) >= from_ns)
    }

    /// A finding that is not about a page run (map/unmap level).
    pub(super) fn plain(&self, ctx: &Record, f: Finding) -> TraceFinding {
        let mut tf = TraceFinding::at(
            f.kind,
            ctx,
            self.tasks.known(ctx.pid).cloned().unwrap_or_else(|| String::from_utf8_lossy(ctx.comm).into()),
        );
        tf.pfn = f.pfn.map(|p| p.get());
        tf.npages = f.npages;
        tf.phys = f.pfn.and_then(|p| p.get().checked_shl(self.page_lg2()));
        tf.iova = f.iova.map(|i| i.get());
        tf.size = f.size;
        tf.count = f.count;
        if let Some(d) = f.domain.filter(|d| (d.0 as usize) < self.domains.len()) {
            tf.domain = self.domains.label_ro(d.0 as usize);
            tf.attribution = self.domains.slot(d.0 as usize).via;
            tf.layer = self.domains.slot(d.0 as usize).layer;
        }
        if let Some(why) = f.invalid {
            tf.note = Some(why.describe().to_string());
        }
        tf
    }
}
