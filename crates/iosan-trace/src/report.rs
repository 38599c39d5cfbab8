//! What an analysis produces: findings with provenance, and a summary.
//!
//! The types here are the analysis's public result. `Findings` is where
//! the replay puts findings as it decides them: capped, with later events on
//! the same mapping folded into the first finding as follow-ups; at the end
//! it becomes the sorted list of a [`Report`]. Times are ns of the trace
//! clock, printed with [`fmt_ts`].

use std::collections::BTreeMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use iosan_core::FindingKind;

use crate::record::Record;

/// Seconds with 6 decimals, as ftrace prints them.
#[must_use]
pub fn fmt_ts(ns: u64) -> String {
    // Rounded to the microsecond as the kernel prints it (ns2usecs adds
    // 500 ns), so a trace.dat's nanoseconds print as its text would.
    let us = ns.saturating_add(500) / 1000;
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// How a domain's identity was learnt, best first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attribution {
    /// A kprobe recorded the domain pointer.
    Kprobe,
    /// A VT-d domain id from an `intel_iommu` flush in the same call.
    DomainId,
    /// The device of a `dma:*` event wrapping the call.
    Device,
    /// Nothing identified the domain: one anonymous IOVA space.
    #[default]
    Anonymous,
}

impl Attribution {
    /// Stable name used in reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Kprobe => "kprobe",
            Self::DomainId => "vtd-did",
            Self::Device => "dma-device",
            Self::Anonymous => "anonymous",
        }
    }
}

/// Which layer saw the mapping a finding is about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layer {
    /// An IOMMU domain's page table (`iommu:map`/`iommu:unmap`).
    #[default]
    Iommu,
    /// A DMA-API mapping no `iommu:map` covered (`dma_map_page`/`_phys`,
    /// `dma_map_sg`, `dma_alloc*`): dma-direct, passthrough, or a capture
    /// without `iommu:*` events.
    DmaApi,
}

impl Layer {
    /// Stable name used in reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Iommu => "iommu",
            Self::DmaApi => "dma-api",
        }
    }
}

/// Why a finding is not confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Doubt {
    /// The ring buffer lost events between the map and the event: the unmap may be among them.
    LostEvents,
    /// The mapping lies in an anonymous IOVA space where some unmap had to be
    /// attributed by a guess (no kprobe, dma or VT-d identity): it may belong to another domain.
    Attribution,
}

impl Doubt {
    /// Stable name used in reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::LostEvents => "lost-events",
            Self::Attribution => "attribution",
        }
    }
}

/// Where and when an event happened (a map, unmap, free or allocation),
/// with its kernel stack when the capture has one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapSite {
    /// Trace timestamp, ns.
    pub time_ns: u64,
    /// CPU.
    pub cpu: u32,
    /// Task id.
    pub pid: u32,
    /// Task name.
    pub task: String,
    /// Kernel stack, innermost first, as ftrace prints its frames
    /// (`func+0xoff/0xlen [module]`), without the tracepoint's own frames;
    /// empty when the capture has no stack for the event.
    pub stack: Vec<String>,
    /// Frames of the tracepoint itself (`trace_event_raw_event_*`,
    /// `__traceiter_*`, `trace_*`) left out of `stack`.
    pub stack_hidden: usize,
}

/// The event site of an event of the analysis.
pub type EventSite = MapSite;

/// A live mapping covering a reported page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingView {
    /// Domain label (kprobe pointer, `did:N`, `dev:NAME`) or `None` for the anonymous space.
    pub domain: Option<String>,
    /// Device(s) using the domain.
    pub device: Option<String>,
    /// First IOVA of the mapping.
    pub iova: u64,
    /// Physical address of `iova`.
    pub phys: u64,
    /// Length, bytes.
    pub len: u64,
    /// When it was mapped.
    pub mapped_at: MapSite,
    /// When it was unmapped, if in the capture (known for the mappings of
    /// page findings, up to 65,536 of them).
    pub unmapped_ns: Option<u64>,
}

/// A later event on the same pages while the same mapping still covered them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowUp {
    /// Freed or allocated again.
    pub kind: FindingKind,
    /// When, ns.
    pub time_ns: u64,
    /// Task (`comm-pid`).
    pub task: String,
    /// First page.
    pub pfn: u64,
    /// Pages.
    pub npages: u64,
}

/// One finding of a trace analysis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceFinding {
    /// What.
    pub kind: FindingKind,
    /// First page, when about pages.
    pub pfn: Option<u64>,
    /// Contiguous pages.
    pub npages: u64,
    /// Physical address of the first page.
    pub phys: Option<u64>,
    /// Highest mapping count over the pages.
    pub count: u32,
    /// Device(s) of the mapping's domain.
    pub device: Option<String>,
    /// Domain label.
    pub domain: Option<String>,
    /// How the domain was identified.
    pub attribution: Attribution,
    /// Which layer saw the mapping: an IOMMU domain or the DMA API alone.
    pub layer: Layer,
    /// IOVA that maps the first page (or of the call, for map/unmap findings).
    pub iova: Option<u64>,
    /// Bytes concerned.
    pub size: u64,
    /// False when attribution is uncertain or events were lost in between.
    pub confirmed: bool,
    /// Why it is not confirmed.
    pub doubt: Option<Doubt>,
    /// When it happened, ns.
    pub time_ns: u64,
    /// Line of the event in the capture.
    pub line: u64,
    /// CPU of the event.
    pub cpu: Option<u32>,
    /// Task of the event (`comm-pid`).
    pub task: Option<String>,
    /// The map that still covers the pages.
    pub mapped_at: Option<MapSite>,
    /// The free or allocation that made a page finding.
    pub freed_by: Option<EventSite>,
    /// The unmap that matters: the one a double unmap repeated, the DMA-API
    /// unmap of a mismatch, or the later unmap of the mapping that covered
    /// a freed page.
    pub unmapped_by: Option<EventSite>,
    /// Every live mapping covering the pages.
    pub mappings: Vec<MappingView>,
    /// Later frees/allocations of the same pages under the same mapping (capped).
    pub follow_ups: Vec<FollowUp>,
    /// Number of follow-ups (exact, uncapped).
    pub follow_up_count: u64,
    /// Extra explanation.
    pub note: Option<String>,
}

impl TraceFinding {
    /// An empty finding of `kind`.
    #[must_use]
    pub fn blank(kind: FindingKind) -> Self {
        Self {
            kind,
            pfn: None,
            npages: 0,
            phys: None,
            count: 0,
            device: None,
            domain: None,
            attribution: Attribution::Anonymous,
            layer: Layer::Iommu,
            iova: None,
            size: 0,
            confirmed: true,
            doubt: None,
            time_ns: 0,
            line: 0,
            cpu: None,
            task: None,
            mapped_at: None,
            freed_by: None,
            unmapped_by: None,
            mappings: Vec::new(),
            follow_ups: Vec::new(),
            follow_up_count: 0,
            note: None,
        }
    }

    /// Marks the finding unconfirmed for `doubt` (or confirmed for `None`).
    pub fn set_doubt(&mut self, doubt: Option<Doubt>) {
        self.doubt = doubt;
        self.confirmed = doubt.is_none();
    }

    /// A bug finding that decides the exit status: confirmed, or doubted
    /// only because events were lost. Findings whose attribution is a guess
    /// are reported but do not count.
    #[must_use]
    pub fn counts_as_bug(&self) -> bool {
        self.kind.is_bug() && self.doubt != Some(Doubt::Attribution)
    }

    /// A finding of `kind` at the event `ctx`.
    #[must_use]
    pub fn at(kind: FindingKind, ctx: &Record, comm: Arc<str>) -> Self {
        let mut f = Self::blank(kind);
        f.time_ns = ctx.ts_ns;
        f.line = ctx.origin.line;
        f.cpu = Some(ctx.cpu);
        f.task = Some(format!("{comm}-{}", ctx.pid));
        f
    }

    /// Why this kind matters, in one line.
    #[must_use]
    pub fn why(&self) -> &'static str {
        match self.kind {
            FindingKind::FreedWhileMapped => {
                "the page allocator got this memory back while a device could still DMA into it: the next owner's data can be corrupted or leaked"
            }
            FindingKind::AllocatedWhileMapped => {
                "this memory was handed to a new owner while a device could still DMA into it"
            }
            FindingKind::DoubleUnmap => "an unmap found nothing mapped",
            FindingKind::UnmapOverlapsUnmapped => "an unmap range was only partly mapped",
            FindingKind::RefcountUnderflow => "more was unmapped than was mapped: the analysis lost track of a mapping",
            FindingKind::RefcountOverflow => "a page counter overflowed",
            FindingKind::InvalidMapArgs => "a map or unmap had impossible arguments",
            FindingKind::LeakAtTeardown => "a domain was freed with this memory still mapped in it",
            FindingKind::MappedAtEnd => "still mapped when the capture ended (informational)",
            FindingKind::LostEvents => "the ring buffer dropped events: nearby results are incomplete",
            FindingKind::DmaUnmapMismatch => "the DMA-API unmap differs from its map in size or direction",
            FindingKind::UnmappedMoreThanRequested => "the IOMMU removed more than the caller asked",
            FindingKind::IdentityWindow => {
                "a static identity mapping made at boot: every page inside is device-reachable by design"
            }
            FindingKind::UnmapAlreadyRemoved => {
                "an earlier unmap removed a whole block including this range (informational, not a double unmap)"
            }
            FindingKind::PartialBlockUnmapRefused => {
                "the IOMMU refused to unmap part of a block mapping: the whole block stays mapped (informational)"
            }
            FindingKind::MapFailed => {
                "a map failed and the kernel unmapped what it had mapped of it: nothing stays mapped (informational)"
            }
        }
    }
}

/// How often something was attributed by each method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttributionCounts {
    /// By kprobe domain pointer.
    pub kprobe: u64,
    /// By VT-d domain id.
    pub did: u64,
    /// By dma:* device.
    pub device: u64,
    /// By which domain's shadow translated the range (unmaps only).
    pub content: u64,
    /// By the likeliest of several candidates (unmaps only; uncertain).
    pub ambiguous: u64,
    /// Nowhere: no domain translated it (the mapping predates the capture).
    pub none: u64,
    /// To the anonymous space (maps only).
    pub anonymous: u64,
}

/// Pages freed after their unmap but before the IOTLB flush that made the
/// unmap effective (lazy mode's accepted exposure).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exposure {
    /// Free events concerned.
    pub frees: u64,
    /// Pages.
    pub pages: u64,
    /// Bytes.
    pub bytes: u64,
    /// Longest time from such a free to the flush, ns.
    pub longest_ns: u64,
    /// Ranges freed and never flushed before the capture ended.
    pub unflushed_at_end: u64,
}

/// One lazy-mode exposure window: pages freed after their unmap and
/// before the IOTLB flush that made the unmap effective.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExposureWindow {
    /// Device(s) of the domain.
    pub device: Option<String>,
    /// Domain label.
    pub domain: Option<String>,
    /// When the first page of the range was freed, ns.
    pub freed_ns: u64,
    /// When the flush came (or the capture ended), ns.
    pub flushed_ns: u64,
    /// Pages of the unmapped range (or of the held free).
    pub pages: u64,
}

/// Mappings still live at the end, per domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveGroup {
    /// Device(s).
    pub device: Option<String>,
    /// Domain label.
    pub domain: Option<String>,
    /// How the domain was identified.
    pub attribution: Attribution,
    /// Mappings.
    pub mappings: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Where events were lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWindow {
    /// CPU, when the marker names one.
    pub cpu: Option<u32>,
    /// How many, when it says.
    pub events: Option<u64>,
    /// Line of the marker.
    pub line: u64,
    /// Last event time before the loss on that CPU, ns.
    pub after_ns: u64,
    /// First event time after it, ns.
    pub before_ns: Option<u64>,
}

/// Lines skipped for one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkipCount {
    /// How many.
    pub count: u64,
    /// First such line.
    pub first_line: u64,
    /// Its byte offset.
    pub first_offset: u64,
}

/// Statistics of one analysis.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Semantics used.
    pub semantics: &'static str,
    /// Input name.
    pub input: String,
    /// True when the report comes from the kernel model, not a capture.
    pub from_model: bool,
    /// Lines read.
    pub lines: u64,
    /// Bytes read (decompressed).
    pub bytes: u64,
    /// Events read (known and unknown).
    pub events_read: u64,
    /// Known events by name.
    pub events_by_kind: BTreeMap<&'static str, u64>,
    /// Events of unknown names.
    pub unknown_events: u64,
    /// Unknown events by name (first 256 names).
    pub unknown_by_name: BTreeMap<String, u64>,
    /// Lines skipped, by reason.
    pub skipped: BTreeMap<String, SkipCount>,
    /// `# iosan-meta:` header entries written by `iosan record`.
    pub meta: Vec<(String, String)>,
    /// First and last timestamps, ns.
    pub first_ns: Option<u64>,
    /// Last timestamp, ns.
    pub last_ns: u64,
    /// Events lost per `[LOST]` markers.
    pub lost_events: u64,
    /// Events overwritten before the capture was read (header counts).
    pub overwritten_events: u64,
    /// Lost-event windows.
    pub lost_windows: Vec<LostWindow>,
    /// Times a CPU's clock went backwards.
    pub time_went_backwards: u64,
    /// Domains identified.
    pub domains: u64,
    /// Whether the anonymous space was needed.
    pub anonymous_space_used: bool,
    /// Devices seen attaching.
    pub devices: Vec<String>,
    /// Domains freed (kprobe on iommu_domain_free).
    pub domains_freed: u64,
    /// Maps by attribution method.
    pub maps_by: AttributionCounts,
    /// Unmaps by attribution method.
    pub unmaps_by: AttributionCounts,
    /// Maps waiting for attribution (transient).
    pub maps_pending: u64,
    /// Unmaps waiting for attribution (transient).
    pub unmaps_pending: u64,
    /// Unmaps with no recorded translation (mapping made before the capture, or a double unmap).
    pub unmaps_without_translation: u64,
    /// Unmaps whose range was only partly recorded.
    pub unmaps_partly_translated: u64,
    /// Unmaps that removed more than asked.
    pub unmapped_more_than_requested: u64,
    /// Maps over a range the analysis still thought mapped (an unmap was missed).
    pub stale_mappings_replaced: u64,
    /// Findings not kept once the cap (65,536) was reached.
    pub findings_dropped: u64,
    /// Lost-event windows merged once the cap (4096) was reached.
    pub lost_windows_merged: u64,
    /// Domain identities beyond the cap (2^16), folded into the anonymous space.
    pub domains_over_cap: u64,
    /// VT-d domain ids tied to a domain by the flush queue's timing.
    pub dids_linked_by_flush: u64,
    /// Alias merges refused because the domains overlapped.
    pub merges_refused: u64,
    /// Counter inconsistencies (should be 0).
    pub count_inconsistencies: u64,
    /// `mm_page_free_batched` events ignored (duplicates of `mm_page_free`).
    pub free_batched_ignored: u64,
    /// Failed allocations (pfn 0, null page).
    pub failed_allocs: u64,
    /// kprobe events seen.
    pub kprobe_events: u64,
    /// dma:* events seen.
    pub dma_events: u64,
    /// intel_iommu events seen.
    pub vtd_events: u64,
    /// Evidence of lazy mode (DMA-FQ domains, flush-queue events).
    pub lazy_evidence: u64,
    /// Evidence of strict mode.
    pub strict_evidence: u64,
    /// "strict", "lazy" or "unknown".
    pub mode: &'static str,
    /// Lazy-mode exposure.
    pub exposure: Exposure,
    /// IOTLB flush events were seen, so exposure could be measured.
    pub exposure_measurable: bool,
    /// The longest exposure windows, at most 8 per domain (of 1024 domains),
    /// longest first per domain.
    pub exposure_windows: Vec<ExposureWindow>,
    /// Pages freed or allocated inside static identity windows.
    pub identity_pages_freed: u64,
    /// Bytes mapped outside tracked memory.
    pub untracked_bytes: u64,
    /// Bytes of counter storage used.
    pub counter_bytes: u64,
    /// Live mappings at the end, per domain.
    pub live_at_end: Vec<LiveGroup>,
    /// CPU page size the capture was analysed with, bytes.
    pub page_size: u64,
    /// Where it came from: "--page-size", "capture metadata", "kernel
    /// release", "events" (freed frames inside mapped ranges),
    /// "architecture", or "assumed" (nothing in the capture said).
    pub page_size_source: &'static str,
    /// The page size given contradicts the capture, or came too late.
    pub page_size_warnings: Vec<String>,
    /// DMA-API mappings counted in the DMA-API layer (no `iommu:map` covered them).
    pub dma_layer_maps: u64,
    /// `dma_map_page`/`_phys` events whose DMA address was the physical address.
    pub dma_direct_maps: u64,
    /// `dma_map_page`/`_phys` events whose DMA address differed from the physical one.
    pub dma_translated_maps: u64,
    /// `dma_alloc*` buffers that no layer could check: no physical address
    /// in the event and no `iommu:map` in its call.
    pub dma_allocs_unchecked: u64,
    /// DMA-API mappings past the layer's caps, not checked.
    pub dma_layer_dropped: u64,
    /// dma-direct inferred: no `iommu:map` event, and every `dma_map_page`
    /// had its DMA address equal to its physical address.
    pub dma_direct: bool,
}

/// Findings and summary of one capture.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Findings, bug kinds first by time, then mappings live at the end.
    pub findings: Vec<TraceFinding>,
    /// Statistics.
    pub summary: Summary,
}

impl Report {
    /// Findings of bug kinds that decide the exit status (see
    /// [`TraceFinding::counts_as_bug`]).
    pub fn bugs(&self) -> impl Iterator<Item = &TraceFinding> {
        self.findings.iter().filter(|f| f.counts_as_bug())
    }

    /// Bug-kind findings whose attribution is a guess.
    pub fn uncertain(&self) -> impl Iterator<Item = &TraceFinding> {
        self.findings.iter().filter(|f| f.kind.is_bug() && !f.counts_as_bug())
    }
}

/// Most findings kept; more are counted in the summary.
const MAX_FINDINGS: usize = 1 << 16;
/// Most mappings remembered, when streaming, to fold later events into
/// their first finding; the oldest is forgotten first (a later free under
/// it is then a new finding).
const MAX_EPISODES: usize = 1 << 16;

/// Receives findings as the replay decides them (ripgrep's `Sink`): the
/// streaming counterpart of [`Report::findings`].
///
/// A finding is delivered once, when it is final; later frees or
/// allocations of its pages under the same mapping come as follow-ups
/// (the finding's `follow_ups` field stays empty in the delivered copy).
pub trait FindingSink {
    /// A decided finding; `id` numbers findings of one analysis from 1, in
    /// decision order.
    fn finding(&mut self, id: u64, f: &TraceFinding);
    /// A later free or allocation of finding `id`'s pages under the same
    /// mapping; `count` is that finding's follow-ups so far, this one included.
    fn follow_up(&mut self, id: u64, up: &FollowUp, count: u64) {
        let _ = (id, up, count);
    }
    /// Mapping `mapping` (an index into finding `id`'s `mappings`) was
    /// unmapped at `ts_ns`; `by` is the unmap's site when that unmap is the
    /// one that matters to the finding (its `unmapped_by`). Streaming only:
    /// a [`Report`]'s findings have these filled in.
    fn unmapped(&mut self, id: u64, mapping: usize, ts_ns: u64, by: Option<&EventSite>) {
        let _ = (id, mapping, ts_ns, by);
    }
}

/// One mapping's life, as the replay names it: (domain slot, IOVA, time
/// mapped). Findings on pages of one episode are one finding with follow-ups.
pub(crate) type EpisodeKey = (usize, u64, u64);

/// A finding an episode caused: its id, pages, and follow-ups so far.
#[derive(Clone, Copy)]
struct EpisodeFinding {
    id: u64,
    first: u64,
    npages: u64,
    follow_ups: u64,
}

/// Most mappings of findings watched for their unmap.
const MAX_WATCHED: usize = 1 << 16;

/// A mapping of a finding, as the shadow names it: (IOVA, physical
/// address, time mapped).
pub(crate) type WatchKey = (u64, u64, u64);

/// The findings of a replay so far (crate-internal: the replay's outbox).
///
/// Kept until the end for a [`Report`], or, when streaming, held only
/// until [`Self::drain`] hands them to a [`FindingSink`] (after every record).
#[derive(Default)]
pub(crate) struct Findings {
    /// Kept findings (report), or those not yet drained (streaming).
    list: Vec<TraceFinding>,
    /// Id of `list[0]` minus one (streaming: findings drained so far).
    drained: u64,
    /// Follow-ups not yet drained (streaming): finding id, event, count.
    ups: Vec<(u64, FollowUp, u64)>,
    episodes:
        std::collections::HashMap<EpisodeKey, Vec<EpisodeFinding>, BuildHasherDefault<iosan_core::hash::FastHasher>>,
    /// Episodes in insertion order (streaming: the oldest is forgotten first).
    episode_order: std::collections::VecDeque<EpisodeKey>,
    streaming: bool,
    /// Live mappings named by findings → (finding id, mapping index, the
    /// finding's own mapping): their unmap sets `unmapped_ns` (and the
    /// finding's `unmapped_by`), or, for a finding already streamed, goes
    /// to the sink as [`FindingSink::unmapped`].
    watched:
        std::collections::HashMap<WatchKey, Vec<(u64, usize, bool)>, BuildHasherDefault<iosan_core::hash::FastHasher>>,
    watched_count: usize,
    /// Unmaps of mappings of findings already written (streaming): finding
    /// id, mapping index, time, and the site when it is the finding's own.
    unmaps: Vec<(u64, usize, u64, Option<EventSite>)>,
    dropped: u64,
}

impl Findings {
    /// An outbox that hands findings on instead of keeping them.
    pub(crate) fn streaming() -> Self {
        Self { streaming: true, ..Self::default() }
    }

    /// Whether findings are handed on rather than kept.
    pub(crate) fn is_streaming(&self) -> bool {
        self.streaming
    }

    /// Keeps a finding, or counts it once the cap (65,536) is reached; its id.
    pub(crate) fn push(&mut self, f: TraceFinding) -> Option<u64> {
        if self.streaming || self.list.len() < MAX_FINDINGS {
            self.list.push(f);
            Some(self.drained + self.list.len() as u64)
        } else {
            self.dropped += 1;
            None
        }
    }

    /// Keeps a page finding caused by mapping `episode`.
    pub(crate) fn push_episode(&mut self, f: TraceFinding, episode: Option<EpisodeKey>) {
        let (first, npages) = (f.pfn.unwrap_or(0), f.npages.max(1));
        let id = self.push(f);
        if let (Some(key), Some(id)) = (episode, id) {
            let v = self.episodes.entry(key).or_default();
            if v.is_empty() {
                self.episode_order.push_back(key);
            }
            v.push(EpisodeFinding { id, first, npages, follow_ups: 0 });
            if self.streaming && self.episode_order.len() > MAX_EPISODES {
                if let Some(old) = self.episode_order.pop_front() {
                    self.episodes.remove(&old);
                }
            }
        }
        if let Some(id) = id {
            self.watch(id);
        }
    }

    /// Index in `list` of finding `id`, while it is there.
    fn index_of(&self, id: u64) -> Option<usize> {
        id.checked_sub(self.drained + 1).and_then(|i| usize::try_from(i).ok())
    }

    /// Watches the mappings of finding `id` for their unmap (report mode).
    fn watch(&mut self, id: u64) {
        let Some(i) = self.index_of(id) else { return };
        let (list, watched) = (&self.list, &mut self.watched);
        let Some(f) = list.get(i) else { return };
        for (j, m) in f.mappings.iter().enumerate() {
            if self.watched_count >= MAX_WATCHED {
                break;
            }
            self.watched_count += 1;
            // The mapping whose unmap is the finding's own: it maps the
            // finding's IOVA and was made when the finding says.
            let cause = f.iova.is_some_and(|iova| iova.wrapping_sub(m.iova) < m.len)
                && f.mapped_at.as_ref().is_some_and(|at| at.time_ns == m.mapped_at.time_ns);
            watched.entry((m.iova, m.phys, m.mapped_at.time_ns)).or_default().push((id, j, cause));
        }
    }

    /// Whether any mapping is watched for its unmap.
    pub(crate) fn watching(&self) -> bool {
        !self.watched.is_empty()
    }

    /// The mapping `key` was unmapped at `ts_ns` by the event `site` gives:
    /// the findings that name it learn when, and the finding it caused
    /// (the mapping its `mapped_at` names) learns by whom.
    pub(crate) fn unmapped(&mut self, key: WatchKey, ts_ns: u64, site: impl FnOnce() -> EventSite) {
        let Some(list) = self.watched.remove(&key) else { return };
        self.watched_count = self.watched_count.saturating_sub(list.len());
        let mut site = Some(site);
        let mut made: Option<EventSite> = None;
        for (id, j, cause) in list {
            if cause && made.is_none() {
                made = site.take().map(|s| s());
            }
            let by = if cause { made.clone() } else { None };
            match self.index_of(id).and_then(|i| self.list.get_mut(i)) {
                Some(f) => {
                    if let Some(m) = f.mappings.get_mut(j) {
                        m.unmapped_ns.get_or_insert(ts_ns);
                    }
                    if f.unmapped_by.is_none() {
                        f.unmapped_by = by;
                    }
                }
                // Already written (streaming): the unmap goes out on its own.
                None if self.streaming && self.unmaps.len() < MAX_WATCHED => self.unmaps.push((id, j, ts_ns, by)),
                None => {}
            }
        }
    }

    /// Adds a follow-up to the finding of `episode` on pages overlapping
    /// `[first, first + npages)`, keeping at most `max` of them in a report
    /// (the count is exact). False when no such finding exists.
    pub(crate) fn follow_up(&mut self, episode: EpisodeKey, first: u64, npages: u64, up: FollowUp, max: usize) -> bool {
        let Some(e) = self.episodes.get_mut(&episode).and_then(|v| {
            v.iter_mut().find(|e| first < e.first.saturating_add(e.npages) && e.first < first.saturating_add(npages))
        }) else {
            return false;
        };
        e.follow_ups += 1;
        let (id, count) = (e.id, e.follow_ups);
        let idx = id.checked_sub(self.drained + 1).and_then(|i| usize::try_from(i).ok());
        match idx.and_then(|i| self.list.get_mut(i)) {
            Some(f) if !self.streaming => {
                f.follow_up_count += 1;
                if f.follow_ups.len() < max {
                    f.follow_ups.push(up);
                }
            }
            _ => self.ups.push((id, up, count)),
        }
        true
    }

    /// Hands the findings and follow-ups decided since the last call to `sink` (streaming).
    pub(crate) fn drain(&mut self, sink: &mut dyn FindingSink) {
        // Called after every record: most of the time there is nothing.
        if !self.streaming || (self.list.is_empty() && self.ups.is_empty() && self.unmaps.is_empty()) {
            return;
        }
        for f in self.list.drain(..) {
            self.drained += 1;
            sink.finding(self.drained, &f);
        }
        for (id, up, count) in self.ups.drain(..) {
            sink.follow_up(id, &up, count);
        }
        for (id, j, ts, by) in self.unmaps.drain(..) {
            sink.unmapped(id, j, ts, by.as_ref());
        }
    }

    /// Findings not kept because of the cap.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The report: bug kinds first by time, then mappings live at the end.
    pub(crate) fn into_report(mut self, summary: Summary) -> Report {
        self.list.sort_by_key(|f| (f.kind == FindingKind::MappedAtEnd, f.time_ns, f.line));
        Report { findings: self.list, summary }
    }
}

impl LostWindow {
    /// The `lost-events` confidence warning for this window.
    pub(crate) fn finding(&self) -> TraceFinding {
        let mut f = TraceFinding::blank(FindingKind::LostEvents);
        f.time_ns = self.after_ns;
        f.line = self.line;
        f.cpu = self.cpu;
        f.set_doubt(Some(Doubt::LostEvents));
        f.note = Some(format!(
            "{} events lost on {} between {} and {}",
            self.events.map_or("some".to_string(), |n| n.to_string()),
            self.cpu.map_or("a CPU".to_string(), |c| format!("CPU {c}")),
            fmt_ts(self.after_ns),
            self.before_ns.map_or("the end".to_string(), fmt_ts)
        ));
        f
    }
}
