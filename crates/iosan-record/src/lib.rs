//! Record a Linux ftrace capture that `iosan analyze` can replay.
//!
//! Supported envelope: Linux with tracefs (`/sys/kernel/tracing`, or
//! `/sys/kernel/debug/tracing` on older set-ups); best on 6.12 and later,
//! which have the `dma:*` events; kprobes for IOMMU domain identity on
//! x86_64 and aarch64. Everything is recorded in a tracefs instance of our
//! own (`instances/iosan`) with kprobes in group `iosan`, so other tracing on
//! the machine is left alone, and [`cleanup`] removes exactly what we added.
//!
//! The flow, in the order the `iosan record` command runs it:
//!
//! 1. [`SystemProbe::read`] reads the facts (tracefs, events, kallsyms, RAM,
//!    CPUs, IOMMU mode) under a root directory;
//! 2. [`Plan::build`] turns them into ordered, explained steps and warnings
//!    ([`Plan::to_shell`] shows them as shell commands);
//! 3. [`apply`] performs the set-up, [`run`] records while a command runs
//!    (or for a while), [`collect`] writes the capture file, and [`cleanup`]
//!    removes the instance and our kprobes.
//!
//! For a machine iosan cannot run on, [`portable_script`] renders the same
//! set-up as a POSIX shell script (busybox `sh` is enough) that probes the
//! kernel when it runs, picks among alternatives (`__iommu_map` or
//! `iommu_map_nosync`, `dma_map_phys` or `dma_map_page`, `fq_flush_iotlb` or
//! `free_iova_fast`) and writes the same capture. [`Stacks`] adds ftrace
//! `stacktrace` triggers on maps and unmaps, and on the page events an
//! in-kernel filter selects.
//!
//! ```
//! use iosan_record::{Plan, PlanOptions, ProbeInput, SystemProbe};
//! // A root with nothing in it: no tracefs, so the plan says so.
//! let dir = std::env::temp_dir().join("iosan-record-doc-empty-root");
//! let probe = SystemProbe::read(&dir, &ProbeInput::default());
//! let plan = Plan::build(&probe, &PlanOptions::default());
//! assert!(!plan.recordable);
//! assert!(plan.warnings.iter().any(|w| w.contains("tracefs")));
//! ```
//!
//! The library never prints, exits or reads the environment: the caller
//! passes the uid and, if it likes, a fallback architecture in
//! [`ProbeInput`].

#![forbid(unsafe_code)]

mod catalog;
mod error;
mod plan;
mod probe;
mod script;
mod session;

pub use catalog::{PageStacks, Stacks};
pub use error::RecordError;
pub use plan::{
    cleanup_steps, render, sh_quote, Action, Kprobe, Plan, PlanOptions, Step, BYTES_PER_EVENT,
    BYTES_PER_EVENT_WITH_STACKS, DEFAULT_DURATION_S, DEFAULT_EVENTS_PER_SEC, MIN_BUFFER_KB, RAM_FRACTION,
    SAVED_CMDLINES,
};
pub use probe::{
    Arch, IommuGroup, IommuMode, ModeSource, ProbeInput, SystemProbe, Tracefs, EVENT_SYSTEMS, GROUP, KPROBE_FUNCTIONS,
};
pub use script::{portable_script, SCRIPT_ROOT_ENV, SCRIPT_TRACEFS_ENV};
pub use session::{
    apply, apply_with, cleanup, cleanup_with, collect, execute, run, run_with, ApplyReport, CleanupReport,
    CollectSummary, LiveOps, Ops, RunOutcome, Workload, MARKER_ENV,
};
