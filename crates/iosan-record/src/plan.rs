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

use crate::catalog::{
    kprobe_line, kprobe_source, Role, Stacks, DMA_MAP_PAIRS, EVENT_FLUSH, EVENT_IDENTITY, KPROBES, PAGE_STACK_EVENTS,
    STACK_EVENTS, WANTED, WANTED_SYSTEMS,
};
use crate::probe::{Arch, IommuMode, SystemProbe, Tracefs, GROUP};

/// Average size of one event in the ring buffer, in bytes (record header,
/// common fields and a typical payload; kprobe and `dma_map_sg` records are
/// larger, kmem ones smaller).
pub const BYTES_PER_EVENT: u64 = 64;
/// The same with `--stacks`: about half the events are maps and unmaps, and
/// each of those is followed by a stack of 16 to 25 frames (8 bytes each
/// plus a header), about 200 bytes.
pub const BYTES_PER_EVENT_WITH_STACKS: u64 = 192;
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
    /// Kernel stacks on maps, unmaps and (filtered) page events.
    pub stacks: Stacks,
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
    /// Where the capture learns IOMMU domains (`kprobe:iommu_map`, `dma`,
    /// `intel_iommu:did`), in the words of the `identity_sources` metadata.
    pub identity_sources: Vec<String>,
    /// Where the capture learns lazy-mode flushes
    /// (`intel_iommu:cache_tag_flush_all`, `kprobe:fq_flush_iotlb`, ...).
    pub flush_sources: Vec<String>,
    /// Which alternative was chosen where this kernel offers one, one
    /// sentence each (kprobe functions, `dma:*` event names).
    pub choices: Vec<String>,
    /// Stack triggers, as asked.
    pub stacks: Stacks,
    /// `stacktrace` triggers set: `(system, event, trigger)`.
    pub triggers: Vec<(String, String, String)>,
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

/// Ring-buffer bytes per event used for sizing.
pub(crate) fn bytes_per_event(stacks: &Stacks) -> u64 {
    if matches!(stacks, Stacks::Off) {
        BYTES_PER_EVENT
    } else {
        BYTES_PER_EVENT_WITH_STACKS
    }
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
    let per_event = bytes_per_event(&opts.stacks);
    let total_kb = rate.saturating_mul(dur).saturating_mul(per_event) / 1024;
    // Events do not spread evenly: the CPU running the I/O gets most. Give
    // each CPU twice its even share, but never more than the whole.
    let per_cpu = (total_kb.saturating_mul(2) / cpus).min(total_kb).max(MIN_BUFFER_KB);
    let mut reason = format!(
        "{rate} events/s × {dur} s × {per_event} B/event ≈ {} MiB in all; \
         each of {cpus} CPUs gets twice its even share (I/O concentrates on few CPUs)",
        kib_to_mib(total_kb)
    );
    let mut kb = per_cpu;
    match cap_kb {
        Some(cap) if kb > cap => {
            kb = cap.max(MIN_BUFFER_KB.min(cap));
            let secs = (kb.saturating_mul(cpus).saturating_mul(1024) / per_event).checked_div(rate).unwrap_or(0);
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
            identity_sources: Vec::new(),
            flush_sources: Vec::new(),
            choices: Vec::new(),
            stacks: opts.stacks.clone(),
            triggers: Vec::new(),
        };
        let (Some(t), true) = (tracefs, mounted) else {
            return plan;
        };
        plan.add_setup(probe, &t);
        plan.name_sources();
        plan
    }

    /// Fills [`Self::identity_sources`] and [`Self::flush_sources`] from
    /// what the plan enables.
    fn name_sources(&mut self) {
        let has_event = |s: &str, e: &str| self.events.iter().any(|(a, b)| a == s && b == e);
        let mut identity = Vec::new();
        let mut flush = Vec::new();
        for k in &self.kprobes {
            let role = KPROBES.iter().find(|s| s.name == k.name).map(|s| s.role);
            match role {
                Some(Role::Identity) => identity.push(kprobe_source(k.name)),
                Some(Role::Flush) => flush.push(kprobe_source(k.name)),
                _ => {}
            }
        }
        for (list, table) in [(&mut identity, EVENT_IDENTITY), (&mut flush, EVENT_FLUSH)] {
            for &(source, sys, ev) in table {
                if has_event(sys, ev) && !list.iter().any(|x| x == source) {
                    list.push(source.to_owned());
                }
            }
        }
        self.identity_sources = identity;
        self.flush_sources = flush;
    }

    /// What this kernel offers, one line each, for the plan output.
    #[must_use]
    pub fn offer_lines(&self) -> Vec<String> {
        let list = |v: &[String]| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
        let mut out = vec![
            format!("identity sources: {}", list(&self.identity_sources)),
            format!("flush sources: {}", list(&self.flush_sources)),
            format!("stacks: {}", self.stacks.meta()),
        ];
        out.extend(self.choices.iter().map(|c| format!("chosen: {c}")));
        out
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
        // 6. stack triggers (removed with the instance)
        self.add_stacks(&inst);
    }

    fn add_stacks(&mut self, inst: &Path) {
        if matches!(self.stacks, Stacks::Off) {
            return;
        }
        let mut want: Vec<(&str, &str, String, &str)> = STACK_EVENTS
            .iter()
            .map(|&(s, e)| (s, e, "stacktrace".to_owned(), "the kernel stack of every map and unmap (DMA rate)"))
            .collect();
        match self.stacks.page_trigger() {
            Some(t) => want.extend(PAGE_STACK_EVENTS.iter().map(|&(s, e)| {
                (s, e, t.clone(), "the kernel stack of the page frees and allocations the filter selects")
            })),
            None => self.warnings.push(
                "--stacks without --stacks-filter: no stacks on page frees and allocations (they fire for \
                 every page on the machine); findings carry the map and unmap stacks. Name the freeing \
                 task of a finding with --stacks-filter 'comm == \"NAME\"' to get its free stack"
                    .into(),
            ),
        }
        for (sys, ev, trigger, why) in want {
            if !self.events.iter().any(|(a, b)| a == sys && b == ev) {
                continue;
            }
            self.steps.push(Step::new(
                Action::Write { path: inst.join("events").join(sys).join(ev).join("trigger"), value: trigger.clone() },
                format!("{sys}:{ev} stack trigger: {why}"),
                false,
            ));
            self.triggers.push((sys.to_owned(), ev.to_owned(), trigger));
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
        for spec in KPROBES {
            if let Some(primary) = spec.fallback_for {
                if self.kprobes.iter().any(|k| k.name == primary) {
                    continue;
                }
            }
            // Without a symbol list, try the first candidate: the kernel
            // refuses an unknown symbol and apply reports it.
            let chosen = if probe.kallsyms_readable {
                spec.candidates.iter().find(|c| probe.kallsyms.contains(c.function))
            } else {
                spec.candidates.first()
            };
            let Some(chosen) = chosen else {
                let names: Vec<&str> = spec.candidates.iter().map(|c| c.function).collect();
                let fallback = KPROBES.iter().find(|f| f.fallback_for == Some(spec.name)).map_or(String::new(), |f| {
                    let on = f.candidates.first().map_or("", |c| c.function);
                    format!("; falling back to kprobe {GROUP}:{} on {on}", f.name)
                });
                self.warnings.push(format!(
                    "kprobe {GROUP}:{} skipped: {} not in {} (inlined or renamed on this kernel); \
                     lost: {}{fallback}",
                    spec.name,
                    names.join(" nor "),
                    probe.symbols_from.unwrap_or("/proc/kallsyms"),
                    spec.gives
                ));
                continue;
            };
            if spec.candidates.len() > 1 && !spec.name.ends_with("_ret") {
                self.choices.push(format!("kprobe {GROUP}:{} on {} ({})", spec.name, chosen.function, chosen.when));
            }
            if spec.fallback_for.is_some() {
                self.choices.push(format!("kprobe {GROUP}:{} on {} ({})", spec.name, chosen.function, spec.gives));
            }
            let Some(definition) = kprobe_line(&probe.arch, spec.name, chosen.function) else {
                continue;
            };
            self.steps.push(Step::new(
                Action::Append { path: t.join("kprobe_events"), line: definition.clone() },
                format!("GLOBAL kprobe definition (group {GROUP}, removed by cleanup): {}", spec.gives),
                false,
            ));
            self.kprobes.push(Kprobe { name: spec.name, function: chosen.function, definition });
        }
    }

    fn add_events(&mut self, probe: &SystemProbe, inst: &Path) {
        for wanted in WANTED {
            if !probe.has_event(wanted.system, wanted.event) {
                continue;
            }
            self.push_event(inst, wanted.system, wanted.event, wanted.gives);
        }
        match DMA_MAP_PAIRS.iter().find(|p| probe.has_event("dma", p.map)) {
            Some(p) => {
                self.push_event(
                    inst,
                    "dma",
                    p.map,
                    &format!("streaming maps with device and physical address ({})", p.when),
                );
                if probe.has_event("dma", p.unmap) {
                    self.push_event(inst, "dma", p.unmap, &format!("streaming unmaps with device ({})", p.when));
                }
                if probe.has_system("dma") {
                    self.choices.push(format!("dma:{} and dma:{} ({})", p.map, p.unmap, p.when));
                }
            }
            None if probe.has_system("dma") => self.warnings.push(
                "dma:* events without dma_map_phys or dma_map_page: single-page DMA-API maps are not seen".into(),
            ),
            None => {}
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
        s.push_str("#\n# this kernel offers:\n");
        for l in self.offer_lines() {
            let _ = writeln!(s, "#   {l}");
        }
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
    use crate::catalog::kprobe_line;

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
