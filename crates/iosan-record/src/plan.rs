//! The tracefs set-up, as an ordered list of steps with reasons.
//!
//! A [`Plan`] is pure data computed from a [`SystemProbe`]: nothing is
//! touched until [`crate::apply`] executes it, and [`Plan::to_shell`] renders
//! the same steps as shell commands for a person to read or run by hand.
//!
//! Everything iosan records goes into a tracefs instance of its own,
//! `instances/iosan`, so other tracing on the machine is left alone. Kprobes
//! are global (`kprobe_events`), so they live in a group of their own,
//! `iosan`, and are enabled only inside the instance. Two settings are
//! global and are said to be: `saved_cmdlines_size` and the kprobe
//! definitions themselves.
//!
//! Units: buffer sizes in KiB per CPU, as `buffer_size_kb`; durations in
//! seconds; event rates in events per second for the whole machine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::probe::{Arch, IommuMode, SystemProbe, Tracefs, GROUP};

/// Average size of one event in the ring buffer, in bytes (record header,
/// common fields and a typical payload; kprobe and `dma_map_sg` records are
/// larger, kmem ones smaller).
pub const BYTES_PER_EVENT: u64 = 64;
/// Event rate assumed when the user gives none (a busy NVMe under test).
pub const DEFAULT_EVENTS_PER_SEC: u64 = 50_000;
/// Duration assumed for sizing when the user gives none, in seconds.
pub const DEFAULT_DURATION_S: u64 = 60;
/// Smallest per-CPU buffer iosan asks for, in KiB.
pub const MIN_BUFFER_KB: u64 = 4096;
/// The buffer, summed over CPUs, never exceeds `MemTotal / RAM_FRACTION`.
pub const RAM_FRACTION: u64 = 8;
/// The `saved_cmdlines_size` iosan asks for (pid to task-name cache).
pub const SAVED_CMDLINES: u64 = 32768;

/// What the user asks of the recording.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// How long the recording will run, in seconds (sizing; and the wait or
    /// time limit at run time).
    pub duration_s: Option<u64>,
    /// Expected events per second over the whole machine.
    pub events_per_sec: Option<u64>,
    /// Per-CPU buffer size in KiB, overriding the computed one.
    pub buffer_kb: Option<u64>,
}

/// One change to the system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `mount -t tracefs nodev PATH`.
    MountTracefs(PathBuf),
    /// Create a directory (a tracefs instance).
    Mkdir(PathBuf),
    /// Remove a directory (a tracefs instance).
    Rmdir(PathBuf),
    /// Write a value to a control file, as `echo VALUE > PATH`.
    Write {
        /// The control file.
        path: PathBuf,
        /// The value, without the newline.
        value: String,
    },
    /// Append a line to a control file, as `echo LINE >> PATH`
    /// (`kprobe_events`, where `>` would delete every kprobe on the system).
    Append {
        /// The control file.
        path: PathBuf,
        /// The line, without the newline.
        line: String,
    },
}

/// An [`Action`] with the reason for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What to do.
    pub action: Action,
    /// Why, in a sentence a person can check.
    pub reason: String,
    /// Whether failing it makes the recording pointless (otherwise the
    /// failure is reported and the rest goes on).
    pub required: bool,
}

impl Step {
    fn new(action: Action, reason: impl Into<String>, required: bool) -> Self {
        Self { action, reason: reason.into(), required }
    }
}

/// A kprobe definition of our group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kprobe {
    /// Event name inside group `iosan`.
    pub name: &'static str,
    /// Probed kernel function.
    pub function: &'static str,
    /// The full `kprobe_events` line.
    pub definition: String,
}

/// The ordered set-up for one recording, plus what it cannot see.
#[derive(Clone, Debug)]
pub struct Plan {
    /// tracefs mount point (also when not mounted yet), if any.
    pub tracefs: Option<PathBuf>,
    /// Our instance directory.
    pub instance: Option<PathBuf>,
    /// Set-up steps, in order.
    pub steps: Vec<Step>,
    /// What is missing and what that costs, one sentence each.
    pub warnings: Vec<String>,
    /// Enabled events as `(system, event)`.
    pub events: Vec<(String, String)>,
    /// Kprobes defined and enabled.
    pub kprobes: Vec<Kprobe>,
    /// Per-CPU buffer, KiB.
    pub buffer_size_kb: u64,
    /// Why that size.
    pub buffer_reason: String,
    /// Trace clock, if one is set.
    pub trace_clock: Option<String>,
    /// Seconds to record when there is no command (and the limit when there is).
    pub duration_s: Option<u64>,
    /// Whether the plan can record anything at all once applied.
    pub recordable: bool,
}

/// An event iosan enables, with what it gives.
struct Wanted {
    system: &'static str,
    event: &'static str,
    gives: &'static str,
}

const fn w(system: &'static str, event: &'static str, gives: &'static str) -> Wanted {
    Wanted { system, event, gives }
}

/// Events enabled when present, in this order.
const WANTED: &[Wanted] = &[
    w("kmem", "mm_page_free", "page frees: where freed-while-mapped is checked"),
    w("kmem", "mm_page_alloc", "page allocations: where allocated-while-mapped is checked"),
    w("kmem", "mm_page_free_batched", "batched page frees (older kernels emit only these)"),
    w("iommu", "map", "IOMMU page-table maps: iova, physical address, size"),
    w("iommu", "unmap", "IOMMU page-table unmaps: iova, size, bytes unmapped"),
    w("iommu", "attach_device_to_domain", "device attach (device name only)"),
    w("iommu", "detach_device_from_domain", "device detach (older kernels)"),
    w("iommu", "add_device_to_group", "device to IOMMU group"),
    w("iommu", "remove_device_from_group", "device leaves its group"),
    w("iommu", "io_page_fault", "device accesses with no translation"),
    w("dma", "dma_map_page", "streaming maps with device and physical address"),
    w("dma", "dma_unmap_page", "streaming unmaps with device"),
    w("dma", "dma_map_phys", "streaming maps (name after 6.17)"),
    w("dma", "dma_unmap_phys", "streaming unmaps (name after 6.17)"),
    w("dma", "dma_map_resource", "MMIO resource maps"),
    w("dma", "dma_unmap_resource", "MMIO resource unmaps"),
    w("dma", "dma_map_sg", "scatter-gather maps with device and physical pages"),
    w("dma", "dma_unmap_sg", "scatter-gather unmaps with device"),
    w("dma", "dma_map_sg_err", "failed scatter-gather maps"),
    w("dma", "dma_alloc", "coherent allocations with device"),
    w("dma", "dma_free", "coherent frees with device"),
    w("dma", "dma_alloc_pages", "DMA page allocations"),
    w("dma", "dma_free_pages", "DMA page frees"),
    w("dma", "dma_alloc_sgt", "non-contiguous DMA allocations"),
    w("dma", "dma_alloc_sgt_err", "failed non-contiguous DMA allocations"),
    w("dma", "dma_free_sgt", "non-contiguous DMA frees"),
    w("intel_iommu", "cache_tag_assign", "VT-d domain id of each attached device"),
    w("intel_iommu", "cache_tag_unassign", "VT-d domain id released"),
    w("intel_iommu", "cache_tag_flush_range", "strict-mode IOTLB flush with domain id"),
    w("intel_iommu", "cache_tag_flush_range_np", "flush after map (caching mode)"),
    w("intel_iommu", "cache_tag_flush_all", "lazy-mode flush-queue flush with domain id"),
    w("printk", "console", "kernel log lines on the trace clock"),
];

/// Whole systems enabled when present (vendor drivers whose event names vary).
const WANTED_SYSTEMS: &[(&str, &str)] = &[
    ("arm-smmu-v3", "SMMUv3 driver events"),
    ("arm_smmu_v3", "SMMUv3 driver events"),
    ("amd_iommu", "AMD IOMMU driver events"),
];

/// What each kprobe gives: `(name, function, what is lost without it)`.
const KPROBE_LOSS: &[(&str, &str, &str)] = &[
    ("iommu_map", "__iommu_map", "the IOMMU domain of each iommu:map (IOVAs of different devices collide)"),
    ("iommu_map_ret", "__iommu_map", "whether each __iommu_map succeeded"),
    ("iommu_unmap", "__iommu_unmap", "the IOMMU domain of each iommu:unmap"),
    ("iommu_unmap_ret", "__iommu_unmap", "the bytes each __iommu_unmap removed"),
    ("iommu_attach", "__iommu_attach_device", "which device each domain belongs to"),
    ("iommu_domain_free", "iommu_domain_free", "mappings that vanish with their domain (leak-at-teardown)"),
    ("fq_flush_timeout", "fq_flush_timeout", "when lazy-mode flush-queue timers fire (lazy exposure window)"),
    ("fq_flush_iotlb", "fq_flush_iotlb", "which flush queue each lazy-mode flush serves"),
];

/// The kprobe definition line for `name`, or `None` when the architecture
/// has no argument registers we know.
fn kprobe_line(arch: &Arch, name: &str, function: &str) -> Option<String> {
    let a = |n| arch.arg(n);
    let args = match name {
        // __iommu_map(domain, iova, paddr, size, prot, gfp)
        "iommu_map" => format!(
            "domain={d} dtype=+0({d}):u32 iova={} paddr={} size={} prot={}:s32",
            a(1)?,
            a(2)?,
            a(3)?,
            a(4)?,
            d = a(0)?
        ),
        "iommu_map_ret" => "ret=$retval:s32".to_owned(),
        // __iommu_unmap(domain, iova, size, gather)
        "iommu_unmap" => format!("domain={d} dtype=+0({d}):u32 iova={} size={}", a(1)?, a(2)?, d = a(0)?),
        "iommu_unmap_ret" => "unmapped=$retval:u64".to_owned(),
        // __iommu_attach_device(domain, dev): dev->kobj.name is the first word
        "iommu_attach" => format!("domain={d} dtype=+0({d}):u32 dev=+0(+0({})):string", a(1)?, d = a(0)?),
        "iommu_domain_free" => format!("domain={d} dtype=+0({d}):u32", d = a(0)?),
        "fq_flush_timeout" => String::new(),
        "fq_flush_iotlb" => format!("cookie={}", a(0)?),
        _ => return None,
    };
    let kind = if name.ends_with("_ret") { "r" } else { "p" };
    let mut line = format!("{kind}:{GROUP}/{name} {function}");
    if !args.is_empty() {
        line.push(' ');
        line.push_str(&args);
    }
    Some(line)
}

/// Steps that remove our instance and our kprobes, given what exists now.
///
/// Order matters: the instance goes first (that disables the kprobes it
/// had enabled), then our group is disabled at top level in case someone
/// enabled it there, then each kprobe is deleted.
#[must_use]
pub fn cleanup_steps(tracefs: &Path, instance_exists: bool, kprobes: &[String]) -> Vec<Step> {
    let mut steps = Vec::new();
    let instance = tracefs.join("instances").join(GROUP);
    if instance_exists {
        steps.push(Step::new(
            Action::Write { path: instance.join("tracing_on"), value: "0".into() },
            "stop our instance before removing it",
            false,
        ));
        steps.push(Step::new(Action::Rmdir(instance), "remove our tracefs instance and its buffer", true));
    }
    if !kprobes.is_empty() {
        steps.push(Step::new(
            Action::Write { path: tracefs.join("events").join(GROUP).join("enable"), value: "0".into() },
            "disable our kprobes at top level (in case they were enabled there)",
            false,
        ));
    }
    for k in kprobes {
        steps.push(Step::new(
            Action::Append { path: tracefs.join("kprobe_events"), line: format!("-:{GROUP}/{k}") },
            format!("delete our kprobe {GROUP}/{k} (kprobes are global)"),
            true,
        ));
    }
    steps
}

fn kib_to_mib(kb: u64) -> u64 {
    kb / 1024
}

/// Per-CPU buffer size and the reason for it.
fn size_buffer(probe: &SystemProbe, opts: &PlanOptions, warnings: &mut Vec<String>) -> (u64, String) {
    let cpus = u64::from(probe.cpus.max(1));
    let cap_kb = probe.mem_total_kb.map(|m| (m / RAM_FRACTION / cpus) & !3);
    if let Some(kb) = opts.buffer_kb {
        let mut reason = format!("{kb} KiB per CPU × {cpus} CPUs, as asked (--buffer-kb)");
        if let Some(cap) = cap_kb {
            if kb > cap {
                warnings.push(format!(
                    "--buffer-kb {kb} is more than 1/{RAM_FRACTION} of RAM across {cpus} CPUs \
                     ({cap} KiB per CPU); the kernel may fail to allocate it or squeeze memory"
                ));
                reason.push_str(", above the usual 1/8-of-RAM bound");
            }
        }
        return (kb, reason);
    }
    let rate = opts.events_per_sec.unwrap_or(DEFAULT_EVENTS_PER_SEC);
    let dur = opts.duration_s.unwrap_or(DEFAULT_DURATION_S);
    let total_kb = rate.saturating_mul(dur).saturating_mul(BYTES_PER_EVENT) / 1024;
    // Events do not spread evenly: the CPU running the I/O gets most. Give
    // each CPU twice its even share, but never more than the whole.
    let per_cpu = (total_kb.saturating_mul(2) / cpus).min(total_kb).max(MIN_BUFFER_KB);
    let mut reason = format!(
        "{rate} events/s × {dur} s × {BYTES_PER_EVENT} B/event ≈ {} MiB in all; \
         each of {cpus} CPUs gets twice its even share (I/O concentrates on few CPUs)",
        kib_to_mib(total_kb)
    );
    let mut kb = per_cpu;
    match cap_kb {
        Some(cap) if kb > cap => {
            kb = cap.max(MIN_BUFFER_KB.min(cap));
            let secs = (kb.saturating_mul(cpus).saturating_mul(1024) / BYTES_PER_EVENT).checked_div(rate).unwrap_or(0);
            let _ = write!(reason, ", capped at 1/{RAM_FRACTION} of RAM ({} MiB per CPU)", kib_to_mib(kb));
            warnings.push(format!(
                "the buffer is capped at 1/{RAM_FRACTION} of RAM ({} MiB per CPU): at {rate} \
                 events/s it holds about {secs} s; a longer recording overwrites the oldest \
                 events (counted in the capture as lost events). Record for less time or pass \
                 --buffer-kb",
                kib_to_mib(kb)
            ));
        }
        Some(_) => {}
        None => {
            kb = kb.min(16 * 1024);
            reason.push_str(", at most 16 MiB per CPU because MemTotal is unknown");
            warnings.push("MemTotal unknown (/proc/meminfo unreadable): buffer limited to 16 MiB per CPU".into());
        }
    }
    (kb & !3, reason)
}

impl Plan {
    /// Builds the plan for `probe`.
    #[must_use]
    pub fn build(probe: &SystemProbe, opts: &PlanOptions) -> Self {
        let mut warnings = Vec::new();
        let mut steps = Vec::new();
        if probe.not_root() {
            warnings.push(
                "not running as root: tracefs control files and /proc/kallsyms need root; \
                 --apply will fail"
                    .into(),
            );
        }
        let (tracefs, mounted) = match &probe.tracefs {
            Tracefs::Mounted(p) => (Some(p.clone()), true),
            Tracefs::Unmounted(p) => {
                warnings.push(format!(
                    "tracefs is not mounted at {}; the plan mounts it first, and the event \
                     list below is only known after that (--apply re-probes)",
                    p.display()
                ));
                steps.push(Step::new(Action::MountTracefs(p.clone()), "tracefs holds every control file below", true));
                (Some(p.clone()), false)
            }
            Tracefs::Missing => {
                warnings.push(
                    "no tracefs mount point (/sys/kernel/tracing or /sys/kernel/debug/tracing): \
                     this kernel has no tracing, or /sys is not mounted; nothing can be recorded"
                        .into(),
                );
                (None, false)
            }
        };
        let (buffer_size_kb, buffer_reason) = size_buffer(probe, opts, &mut warnings);
        let mut plan = Self {
            tracefs: tracefs.clone(),
            instance: tracefs.as_ref().map(|t| t.join("instances").join(GROUP)),
            steps,
            warnings,
            events: Vec::new(),
            kprobes: Vec::new(),
            buffer_size_kb,
            buffer_reason,
            trace_clock: None,
            duration_s: opts.duration_s,
            recordable: mounted,
        };
        let (Some(t), true) = (tracefs, mounted) else {
            return plan;
        };
        plan.add_setup(probe, &t);
        plan
    }

    fn add_setup(&mut self, probe: &SystemProbe, t: &Path) {
        let inst = t.join("instances").join(GROUP);
        // 1. leftovers of a run that did not clean up
        if probe.stale_instance || !probe.stale_kprobes.is_empty() {
            self.warnings.push(format!(
                "a previous iosan run left {}{}; the plan removes it first",
                if probe.stale_instance { "its tracefs instance" } else { "" },
                if probe.stale_kprobes.is_empty() {
                    String::new()
                } else {
                    format!(" {} kprobe(s)", probe.stale_kprobes.len())
                }
            ));
            self.steps.extend(cleanup_steps(t, probe.stale_instance, &probe.stale_kprobes));
        }
        // 2. global pid -> comm cache
        if !matches!(probe.saved_cmdlines_size, Some(n) if n >= SAVED_CMDLINES) {
            self.steps.push(Step::new(
                Action::Write { path: t.join("saved_cmdlines_size"), value: SAVED_CMDLINES.to_string() },
                "GLOBAL setting: the pid to task-name cache; too small and task names \
                 print as <...>. About 1 MiB, left in place by cleanup",
                false,
            ));
        }
        // 3. kprobes (global definitions, enabled only in our instance)
        self.add_kprobes(probe, t);
        // 4. the instance and its settings
        self.steps.push(Step::new(
            Action::Mkdir(inst.clone()),
            "a tracefs instance of our own: its buffer, events and on/off switch \
             are separate from any other tracing on this machine",
            true,
        ));
        self.steps.push(Step::new(
            Action::Write { path: inst.join("tracing_on"), value: "0".into() },
            "keep the instance off until the workload starts",
            true,
        ));
        self.steps.push(Step::new(
            Action::Write { path: inst.join("buffer_size_kb"), value: self.buffer_size_kb.to_string() },
            format!("ring buffer per CPU: {}", self.buffer_reason),
            true,
        ));
        let clock = ["global", "local"].into_iter().find(|c| probe.trace_clocks.iter().any(|x| x == c));
        if let Some(c) = clock {
            self.trace_clock = Some(c.to_owned());
            let why = if c == "global" {
                "timestamps comparable across CPUs, so the merged text keeps the real \
                 order of a free on one CPU and an unmap on another"
            } else {
                "this kernel offers no global clock; per-CPU local clock"
            };
            self.steps.push(Step::new(Action::Write { path: inst.join("trace_clock"), value: c.into() }, why, false));
        }
        // 5. events
        self.add_events(probe, &inst);
        for k in &self.kprobes {
            self.steps.push(Step::new(
                Action::Write { path: inst.join("events").join(GROUP).join(k.name).join("enable"), value: "1".into() },
                format!("kprobe {GROUP}:{} on {} in our instance only", k.name, k.function),
                false,
            ));
        }
    }

    fn add_kprobes(&mut self, probe: &SystemProbe, t: &Path) {
        if !probe.kprobe_events {
            self.warnings.push(
                "kprobes are not available (no kprobe_events: CONFIG_KPROBE_EVENTS off or \
                 locked down): no IOMMU domain pointers, so iommu:map/unmap are attributed \
                 only through dma:* events and vendor domain ids, and IOVAs of different \
                 devices may be confused"
                    .into(),
            );
            return;
        }
        if let Arch::Other(a) = &probe.arch {
            self.warnings.push(format!(
                "no kprobe argument registers known for architecture {a:?} (x86_64 and \
                 aarch64 are): no IOMMU domain pointers, attribution only through dma:* events"
            ));
            return;
        }
        if !probe.kallsyms_readable {
            self.warnings.push(
                "/proc/kallsyms unreadable: kprobes are defined without checking that their \
                 functions exist; a failed one is reported and skipped"
                    .into(),
            );
        }
        let mut missing_reported = Vec::new();
        for &(name, function, loss) in KPROBE_LOSS {
            if probe.kallsyms_readable && !probe.kallsyms.contains(function) {
                if !missing_reported.contains(&function) {
                    missing_reported.push(function);
                }
                self.warnings.push(format!(
                    "kprobe {GROUP}:{name} skipped: {function} is not in /proc/kallsyms \
                     (inlined or renamed on this kernel); lost: {loss}"
                ));
                continue;
            }
            let Some(definition) = kprobe_line(&probe.arch, name, function) else {
                continue;
            };
            self.steps.push(Step::new(
                Action::Append { path: t.join("kprobe_events"), line: definition.clone() },
                format!("GLOBAL kprobe definition (group {GROUP}, removed by cleanup): {loss}"),
                false,
            ));
            self.kprobes.push(Kprobe { name, function, definition });
        }
    }

    fn add_events(&mut self, probe: &SystemProbe, inst: &Path) {
        for wanted in WANTED {
            if !probe.has_event(wanted.system, wanted.event) {
                continue;
            }
            self.push_event(inst, wanted.system, wanted.event, wanted.gives);
        }
        for &(system, gives) in WANTED_SYSTEMS {
            let evs: Vec<String> = probe.events.iter().filter(|(s, _)| s == system).map(|(_, e)| e.clone()).collect();
            for e in evs {
                self.push_event(inst, system, &e, gives);
            }
        }
        let missing = |sys: &str, ev: &str| !probe.has_event(sys, ev);
        if missing("kmem", "mm_page_free") && missing("kmem", "mm_page_free_batched") {
            self.warnings.push(
                "no kmem:mm_page_free event: page frees are invisible, so no \
                 freed-while-mapped check is possible"
                    .into(),
            );
        }
        if missing("kmem", "mm_page_alloc") {
            self.warnings.push("no kmem:mm_page_alloc event: allocated-while-mapped cannot be checked".into());
        }
        if missing("iommu", "map") || missing("iommu", "unmap") {
            self.warnings.push(
                "no iommu:map/unmap events (CONFIG_IOMMU_API tracepoints): there is no \
                 mapping to check frees against"
                    .into(),
            );
        }
        if !probe.has_system("dma") {
            self.warnings.push(
                "no dma:* events (they arrived in Linux 6.12): device attribution comes only \
                 from kprobes (attach) and vendor events such as intel_iommu domain ids"
                    .into(),
            );
        }
        if missing("printk", "console") {
            self.warnings.push("no printk:console event: kernel messages are not in the capture".into());
        }
        if missing("ftrace", "print") {
            self.warnings.push("no ftrace:print event: markers written to trace_marker are not recorded".into());
        }
        match probe.iommu_mode {
            IommuMode::Passthrough => self.warnings.push(
                "the IOMMU is in passthrough (identity domains): devices reach memory without \
                 mappings, so there is nothing to check"
                    .into(),
            ),
            IommuMode::Unknown => self.warnings.push(
                "no IOMMU groups found and nothing on the command line: the IOMMU may be \
                 off (intel_iommu=on / amd_iommu=on) and no map event will appear"
                    .into(),
            ),
            _ => {}
        }
        if let Some(c) = probe.cmdline_mode {
            self.warnings.push(format!(
                "the command line asks for {} but the IOMMU groups are {}: the driver \
                 overrode it (VT-d caching mode forces strict); the capture records {}",
                c.name(),
                probe.iommu_mode.name(),
                probe.iommu_mode.name()
            ));
        }
    }

    fn push_event(&mut self, inst: &Path, system: &str, event: &str, gives: &str) {
        self.steps.push(Step::new(
            Action::Write { path: inst.join("events").join(system).join(event).join("enable"), value: "1".into() },
            format!("{system}:{event}: {gives}"),
            false,
        ));
        self.events.push((system.to_owned(), event.to_owned()));
    }

    /// Steps that start recording.
    #[must_use]
    pub fn start_steps(&self) -> Vec<Step> {
        self.instance
            .iter()
            .map(|i| {
                Step::new(Action::Write { path: i.join("tracing_on"), value: "1".into() }, "start recording", true)
            })
            .collect()
    }

    /// Steps that stop recording.
    #[must_use]
    pub fn stop_steps(&self) -> Vec<Step> {
        self.instance
            .iter()
            .map(|i| {
                Step::new(
                    Action::Write { path: i.join("tracing_on"), value: "0".into() },
                    "stop recording (the buffer keeps what was recorded)",
                    true,
                )
            })
            .collect()
    }

    /// Renders the whole recording as a shell script: set-up, start, stop,
    /// collect and cleanup, each step preceded by its reason.
    #[must_use]
    pub fn to_shell(&self) -> String {
        let mut s = String::from("#!/bin/sh\n# iosan record: tracefs set-up\n");
        if !self.warnings.is_empty() {
            s.push_str("#\n# warnings:\n");
            for w in &self.warnings {
                let _ = writeln!(s, "#   - {w}");
            }
        }
        s.push_str("set -e\n");
        let section = |s: &mut String, title: &str, steps: &[Step]| {
            let _ = writeln!(s, "\n# ---- {title}");
            for st in steps {
                let _ = writeln!(s, "# {}", st.reason);
                let _ = writeln!(s, "{}", render(&st.action));
            }
        };
        section(&mut s, "set up", &self.steps);
        section(&mut s, "start", &self.start_steps());
        let _ = writeln!(
            s,
            "\n# ---- run the workload here{}",
            self.duration_s.map_or(String::new(), |d| format!(" (or: sleep {d})"))
        );
        section(&mut s, "stop", &self.stop_steps());
        if let Some(i) = &self.instance {
            let _ = writeln!(
                s,
                "\n# ---- collect (iosan record --apply also writes `# iosan-meta:` lines first)\n\
                 cat {} > iosan-capture.txt",
                sh_quote(&i.join("trace").display().to_string())
            );
        }
        if let Some(t) = &self.tracefs {
            let names: Vec<String> = self.kprobes.iter().map(|k| k.name.to_owned()).collect();
            let mut clean = cleanup_steps(t, true, &names);
            clean.retain(|st| !matches!(st.action, Action::Write { .. }));
            section(&mut s, "clean up (iosan record --cleanup)", &clean);
        }
        s
    }
}

/// One action as a shell command.
#[must_use]
pub fn render(action: &Action) -> String {
    let q = |p: &Path| sh_quote(&p.display().to_string());
    match action {
        Action::MountTracefs(p) => format!("mount -t tracefs nodev {}", q(p)),
        Action::Mkdir(p) => format!("mkdir {}", q(p)),
        Action::Rmdir(p) => format!("rmdir {}", q(p)),
        Action::Write { path, value } => format!("echo {} > {}", sh_quote(value), q(path)),
        Action::Append { path, line } => format!("echo {} >> {}", sh_quote(line), q(path)),
    }
}

/// Quotes `s` for a POSIX shell when it holds anything but plain characters.
#[must_use]
pub fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./:=,+-@".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kprobe_lines_per_arch() {
        let x = kprobe_line(&Arch::X86_64, "iommu_map", "__iommu_map");
        assert_eq!(
            x.as_deref(),
            Some(
                "p:iosan/iommu_map __iommu_map domain=%di dtype=+0(%di):u32 iova=%si \
                 paddr=%dx size=%cx prot=%r8:s32"
            )
        );
        let a = kprobe_line(&Arch::Aarch64, "iommu_unmap", "__iommu_unmap");
        assert_eq!(
            a.as_deref(),
            Some("p:iosan/iommu_unmap __iommu_unmap domain=%x0 dtype=+0(%x0):u32 iova=%x1 size=%x2")
        );
        assert_eq!(
            kprobe_line(&Arch::X86_64, "iommu_map_ret", "__iommu_map").as_deref(),
            Some("r:iosan/iommu_map_ret __iommu_map ret=$retval:s32")
        );
        assert_eq!(
            kprobe_line(&Arch::X86_64, "fq_flush_timeout", "fq_flush_timeout").as_deref(),
            Some("p:iosan/fq_flush_timeout fq_flush_timeout")
        );
        assert_eq!(kprobe_line(&Arch::Other("mips".into()), "iommu_map", "__iommu_map"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/sys/kernel/tracing/x"), "/sys/kernel/tracing/x");
        assert_eq!(sh_quote("ret=$retval:s32"), "'ret=$retval:s32'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
