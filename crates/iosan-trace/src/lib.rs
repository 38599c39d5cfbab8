//! # iosan-trace: find DMA use-after-free in ftrace captures
//!
//! Reads the text of `/sys/kernel/tracing/trace` (and `trace-cmd report`
//! text), replays the `iommu:*`, `dma:*`, `kmem:*`, `intel_iommu:*` and
//! domain-kprobe events through [`iosan_core::Sanitizer`], and reports every
//! page freed or re-allocated while an IOMMU mapping still covered it, with
//! the device, the IOVA and when it was mapped.
//!
//! Layers: a [`Source`] ([`source::text::TextSource`]) reads a capture
//! and pushes [`Record`]s into a [`RecordSink`] (the replay); events are
//! decoded by [`parse`], where each event kind is described once and
//! filled either from text tokens or from a binary source's decoded fields
//! ([`parse::event_from_fields`]); [`merge`] merges per-CPU parts by
//! record timestamp.
//!
//! Supported envelope: Linux 5.x–7.x ftrace text (4- or 5-character flags,
//! optional tgid column), `dma:*` events of 6.12+ (older kernels work from
//! iommu and kmem events alone, with less attribution), Intel VT-d domain
//! ids, kprobes on `__iommu_map`, `__iommu_unmap`, `__iommu_attach_device`
//! and `iommu_domain_free` under any group or event name; gzip, xz and
//! zstd input.
//!
//! ```
//! use iosan_trace::{analyze, AnalyzeOptions};
//! let trace = b"\
//!  insmod-1 [000] ..... 1.000000: mm_page_alloc: page=0000000011111111 pfn=0x1000 order=0 migratetype=0 gfp_flags=GFP_KERNEL
//!  insmod-1 [000] ..... 1.000100: map: IOMMU: iova=0x00000000fffbe000 - 0x00000000fffbf000 paddr=0x0000000001000000 size=4096
//!  insmod-1 [000] ..... 1.000200: dma_map_page: 0000:00:02.0 dir=BIDIRECTIONAL dma_addr=fffbe000 size=4096 phys_addr=1000000 attrs=
//!  insmod-1 [000] ..... 1.000300: mm_page_free: page=0000000011111111 pfn=0x1000 order=0
//! ";
//! let report = analyze(&trace[..], "example", &AnalyzeOptions::default(), &mut ()).unwrap();
//! let f = report.bugs().next().unwrap();
//! assert_eq!(f.kind.name(), "freed-while-mapped");
//! assert_eq!(f.device.as_deref(), Some("0000:00:02.0"));
//! assert_eq!(f.iova, Some(0xfffbe000));
//! ```
//!
//! ## The replay, room by room
//!
//! [`replay`] is a [`RecordSink`]; its dispatch loop (`replay/mod.rs`) hands
//! each record to one room:
//!
//! - `replay/identity.rs`: the domain store (pointers, VT-d ids, devices, anonymous layers, merges).
//! - `replay/attribute.rs`: which domain a map or unmap belongs to: decided here.
//! - `replay/sequence.rs`: per-CPU, per-context call sequences whose items wait for a domain.
//! - `replay/apply.rs`: a map or unmap of a known domain changes shadow and counters; whole-block and double unmaps.
//! - `replay/lazy.rs`: flush-queue exposure (unmapped, not yet flushed, then freed).
//! - `replay/dma_api.rs`: DMA-API mappings and map/unmap mismatch checks.
//! - `replay/pages.rs`: page free/alloc checks and their findings.
//! - `replay/teardown.rs`: domains freed, or left by their last device, with live mappings.
//! - `replay/tasks.rs`: task names and stacks (a mapping's provenance).
//! - `replay/end.rs`: the end of the capture and the summary's totals.
//! - `replay/lookahead.rs`: how long an undecided item may wait.
//! - [`report`]: the result types; findings collected and the report assembled.
//!
//! ## Streaming
//!
//! [`analyze()`] returns a sorted [`Report`] at the end of the input.
//! [`analyze_streaming`] hands each finding to a [`FindingSink`] as soon as
//! it is decided: within [`replay::LOOKAHEAD_NS`] (100 ms) of trace time or
//! about [`replay::LOOKAHEAD_EVENTS`] events for the one kind of decision
//! that waits (an unmap whose call has not named its domain yet); most
//! findings are decided at their own event. See [`analyze`](mod@analyze).
#![forbid(unsafe_code)]

pub mod analyze;
pub mod field;
pub mod input;
pub mod merge;
pub mod pagesize;
pub mod parse;
pub mod record;
pub mod replay;
pub mod report;
pub mod source;

pub use analyze::{
    analyze, analyze_merged, analyze_source, analyze_source_streaming, analyze_sources, analyze_streaming,
    AnalyzeError, AnalyzeOptions,
};
pub use record::{ExecContext, Origin, Record, RecordSink};
pub use replay::{fmt_ts, Options};
pub use report::{Attribution, FindingSink, FollowUp, Layer, Report, Summary, TraceFinding};
pub use source::open::{open_capture, open_capture_with, open_reader, Capture, CaptureFormat, OpenOptions};
pub use source::{Progress, Source, SourceError};
