//! Carrying a [`Plan`] out: apply, run, collect, cleanup.
//!
//! Changes go through the small [`Ops`] trait so that tests can play the
//! kernel's part on a fake tree (create an instance's files on `mkdir`,
//! define an event on a `kprobe_events` append). [`LiveOps`] is the real
//! thing: plain file writes, `mkdir`, `rmdir` and the `mount` command.
//! Reads are plain file reads in both cases.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::RecordError;
use crate::plan::{cleanup_steps, render, Action, Plan, Step};
use crate::probe::{our_kprobes, SystemProbe, GROUP};

/// How steps touch the system.
pub trait Ops {
    /// Writes `value` and a newline to an existing control file (no truncation).
    ///
    /// # Errors
    /// The I/O error of the open or the write.
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()>;
    /// Appends `line` and a newline (`O_APPEND`).
    ///
    /// # Errors
    /// The I/O error of the open or the write.
    fn append(&mut self, path: &Path, line: &str) -> io::Result<()>;
    /// Creates one directory.
    ///
    /// # Errors
    /// The I/O error of `mkdir`.
    fn mkdir(&mut self, path: &Path) -> io::Result<()>;
    /// Removes one directory.
    ///
    /// # Errors
    /// The I/O error of `rmdir`.
    fn rmdir(&mut self, path: &Path) -> io::Result<()>;
    /// Mounts tracefs at `path`.
    ///
    /// # Errors
    /// Why the mount failed.
    fn mount_tracefs(&mut self, path: &Path) -> io::Result<()>;
}

/// [`Ops`] on the live system.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveOps;

impl Ops for LiveOps {
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        // No O_TRUNC and no O_CREAT: tracefs files exist, and truncating
        // some of them (trace, kprobe_events) clears them.
        let mut f = OpenOptions::new().write(true).open(path)?;
        f.write_all(format!("{value}\n").as_bytes())
    }
    fn append(&mut self, path: &Path, line: &str) -> io::Result<()> {
        let mut f = OpenOptions::new().append(true).open(path)?;
        f.write_all(format!("{line}\n").as_bytes())
    }
    fn mkdir(&mut self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }
    fn rmdir(&mut self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }
    fn mount_tracefs(&mut self, path: &Path) -> io::Result<()> {
        let out = Command::new("mount").args(["-t", "tracefs", "nodev"]).arg(path).output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "mount exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// Executes one step.
///
/// # Errors
/// [`RecordError::Write`], [`RecordError::Mkdir`], [`RecordError::Remove`]
/// or [`RecordError::Command`] naming the file.
pub fn execute<O: Ops>(ops: &mut O, step: &Step) -> Result<(), RecordError> {
    match &step.action {
        Action::MountTracefs(p) => {
            ops.mount_tracefs(p).map_err(|source| RecordError::Command { command: render(&step.action), source })
        }
        Action::Mkdir(p) => ops.mkdir(p).map_err(|source| RecordError::Mkdir { path: p.clone(), source }),
        Action::Rmdir(p) => ops.rmdir(p).map_err(|source| RecordError::Remove { path: p.clone(), source }),
        Action::Write { path, value } => ops.write(path, value).map_err(|source| RecordError::Write {
            path: path.clone(),
            value: value.clone(),
            source,
        }),
        Action::Append { path, line } => ops.append(path, line).map_err(|source| RecordError::Write {
            path: path.clone(),
            value: line.clone(),
            source,
        }),
    }
}

/// What [`apply`] could not do without failing the whole set-up.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Optional steps that failed (an event or kprobe the kernel refused),
    /// each with the error.
    pub skipped: Vec<String>,
}

/// Applies the set-up steps of `plan` to the live system.
///
/// # Errors
/// The first required step that fails; see [`apply_with`].
pub fn apply(plan: &Plan) -> Result<ApplyReport, RecordError> {
    apply_with(&mut LiveOps, plan)
}

/// Applies the set-up steps of `plan` through `ops`. Optional steps that
/// fail are listed in the report; a required one stops the set-up, and what
/// was done so far is left for [`cleanup`] to remove.
///
/// # Errors
/// [`RecordError::NoTracefs`] when the plan cannot record, otherwise the
/// error of the first failing required step.
pub fn apply_with<O: Ops>(ops: &mut O, plan: &Plan) -> Result<ApplyReport, RecordError> {
    if plan.tracefs.is_none() {
        return Err(RecordError::NoTracefs { looked: "/sys/kernel/tracing, /sys/kernel/debug/tracing".into() });
    }
    let mut report = ApplyReport::default();
    for step in &plan.steps {
        match execute(ops, step) {
            Ok(()) => {}
            Err(e) if !step.required => report.skipped.push(format!("{} ({e})", step.reason)),
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// What to record during.
#[derive(Clone, Debug)]
pub enum Workload {
    /// Run this command (program and arguments) and record until it exits.
    Command(Vec<String>),
    /// Record for this long.
    Wait(Duration),
}

/// How the recording went.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// Start time, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Wall time between start and stop.
    pub elapsed: Duration,
    /// The command line, when there was one.
    pub command: Option<String>,
    /// Its exit code (`None`: killed by a signal, or no command).
    pub exit_code: Option<i32>,
    /// Whether the time limit ended it.
    pub timed_out: bool,
}

/// Name of the environment variable that tells the workload where our
/// instance's `trace_marker` is, so it can mark phases in the capture.
pub const MARKER_ENV: &str = "IOSAN_TRACE_MARKER";

/// Starts recording, runs the workload, stops recording.
///
/// # Errors
/// See [`run_with`].
pub fn run(plan: &Plan, workload: &Workload, limit: Option<Duration>) -> Result<RunOutcome, RecordError> {
    run_with(&mut LiveOps, plan, workload, limit)
}

/// Starts recording, runs the workload (the command is killed when `limit`
/// passes), and stops recording, also when the command could not start.
/// The child inherits stdin, stdout and stderr, and gets [`MARKER_ENV`].
///
/// # Errors
/// [`RecordError::Write`] when tracing cannot be switched on or off,
/// [`RecordError::Command`] when the command cannot be started or waited for.
pub fn run_with<O: Ops>(
    ops: &mut O,
    plan: &Plan,
    workload: &Workload,
    limit: Option<Duration>,
) -> Result<RunOutcome, RecordError> {
    for s in plan.start_steps() {
        execute(ops, &s)?;
    }
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let t0 = Instant::now();
    let result = match workload {
        Workload::Wait(d) => {
            thread::sleep(*d);
            Ok((None, None, false))
        }
        Workload::Command(argv) => run_command(plan, argv, limit),
    };
    let elapsed = t0.elapsed();
    let mut stop_err = None;
    for s in plan.stop_steps() {
        if let Err(e) = execute(ops, &s) {
            stop_err.get_or_insert(e);
        }
    }
    let (command, exit_code, timed_out) = result?;
    if let Some(e) = stop_err {
        return Err(e);
    }
    Ok(RunOutcome { started_unix, elapsed, command, exit_code, timed_out })
}

type CommandResult = (Option<String>, Option<i32>, bool);

fn run_command(plan: &Plan, argv: &[String], limit: Option<Duration>) -> Result<CommandResult, RecordError> {
    let line = argv.join(" ");
    let Some((prog, args)) = argv.split_first() else {
        return Err(RecordError::Command {
            command: line,
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
        });
    };
    let mut cmd = Command::new(prog);
    cmd.args(args);
    if let Some(i) = &plan.instance {
        cmd.env(MARKER_ENV, i.join("trace_marker"));
    }
    let mut child = cmd.spawn().map_err(|source| RecordError::Command { command: line.clone(), source })?;
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok((Some(line), status.code(), false)),
            Ok(None) => {}
            Err(source) => return Err(RecordError::Command { command: line, source }),
        }
        if limit.is_some_and(|l| t0.elapsed() >= l) {
            // Best effort: the child may have exited in the meantime.
            let _ = child.kill();
            let status = child.wait().map_err(|source| RecordError::Command { command: line.clone(), source })?;
            return Ok((Some(line), status.code(), true));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Numbers worth a line on the terminal after collecting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectSummary {
    /// Events overwritten or dropped, summed over CPUs.
    pub lost_events: u64,
    /// Kprobe hits missed, summed over our kprobes.
    pub kprobe_missed: u64,
    /// Bytes of trace text copied.
    pub trace_bytes: u64,
}

/// One `key: value` from a per-CPU `stats` file.
fn stat(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn meta(out: &mut impl Write, key: &str, value: &str) -> io::Result<()> {
    let clean: String = value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    writeln!(out, "# iosan-meta: {key}={}", clean.trim())
}

/// Writes the capture file: `# iosan-meta: key=value` lines, then our
/// instance's `trace` text verbatim (which opens with `# tracer: nop`).
///
/// Keys: `tool`, `kernel`, `kernel_release`, `cmdline`, `arch`,
/// `page_size`, `iommu_mode`, `iommu_mode_source`, `cpus`, `mem_total_kb`,
/// `buffer_size_kb`, `trace_clock`, `events`, `kprobes`,
/// `kprobe_functions` (`name=function,...`), `identity_sources`,
/// `flush_sources` (comma-separated, or `none`), `stacks`
/// (`off`, `map-unmap`, `map-unmap,pages`, `map-unmap,pages-if FILTER`),
/// `iommu_group.<n>`, `started_unix`,
/// `elapsed_s`, `command`, `exit_code`, `timed_out`, `cpu<n>.overrun`,
/// `cpu<n>.commit_overrun`, `cpu<n>.dropped_events`, `lost_events`,
/// `kprobe.<name>.hits`, `kprobe.<name>.nmissed`.
///
/// # Errors
/// [`RecordError::Output`] when the file cannot be written,
/// [`RecordError::Read`] when the trace cannot be read.
pub fn collect(
    plan: &Plan,
    probe: &SystemProbe,
    outcome: Option<&RunOutcome>,
    out: &Path,
) -> Result<CollectSummary, RecordError> {
    let (Some(tracefs), Some(inst)) = (&plan.tracefs, &plan.instance) else {
        return Err(RecordError::NoTracefs { looked: "/sys/kernel/tracing, /sys/kernel/debug/tracing".into() });
    };
    let oerr = |source| RecordError::Output { path: out.to_path_buf(), source };
    let file = File::create(out).map_err(oerr)?;
    let mut w = BufWriter::new(file);
    let mut summary = CollectSummary::default();
    write_header(&mut w, plan, probe, outcome, tracefs, inst, &mut summary).map_err(oerr)?;
    let trace = inst.join("trace");
    let mut src = File::open(&trace).map_err(|source| RecordError::Read { path: trace.clone(), source })?;
    // Errors of the copy cannot tell reading from writing apart; name both.
    summary.trace_bytes = io::copy(&mut src, &mut w).map_err(|source| RecordError::Output {
        path: out.to_path_buf(),
        source: io::Error::new(source.kind(), format!("copying from {}: {source}", trace.display())),
    })?;
    w.flush().map_err(oerr)?;
    Ok(summary)
}

fn write_header(
    w: &mut impl Write,
    plan: &Plan,
    probe: &SystemProbe,
    outcome: Option<&RunOutcome>,
    tracefs: &Path,
    inst: &Path,
    summary: &mut CollectSummary,
) -> io::Result<()> {
    let read = |p: PathBuf| fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    meta(w, "tool", concat!("iosan-record ", env!("CARGO_PKG_VERSION")))?;
    meta(w, "kernel", probe.kernel_version.as_deref().unwrap_or("unknown"))?;
    meta(w, "cmdline", probe.cmdline.as_deref().unwrap_or(""))?;
    if let Some(r) = &probe.kernel_release {
        meta(w, "kernel_release", r)?;
    }
    meta(w, "arch", probe.arch.name())?;
    if let Some(p) = probe.page_size {
        meta(w, "page_size", &p.to_string())?;
    }
    meta(w, "iommu_mode", probe.iommu_mode.name())?;
    let source = match probe.mode_source {
        crate::probe::ModeSource::GroupTypes => "iommu-group-types",
        crate::probe::ModeSource::Cmdline => "cmdline",
        crate::probe::ModeSource::None => "none",
    };
    meta(w, "iommu_mode_source", source)?;
    meta(w, "cpus", &probe.cpus.to_string())?;
    if let Some(m) = probe.mem_total_kb {
        meta(w, "mem_total_kb", &m.to_string())?;
    }
    let buf = read(inst.join("buffer_size_kb")).unwrap_or_else(|| plan.buffer_size_kb.to_string());
    meta(w, "buffer_size_kb", &buf)?;
    if let Some(c) = &plan.trace_clock {
        meta(w, "trace_clock", c)?;
    }
    let events: Vec<String> = plan.events.iter().map(|(s, e)| format!("{s}:{e}")).collect();
    meta(w, "events", &events.join(","))?;
    let kprobes: Vec<&str> = plan.kprobes.iter().map(|k| k.name).collect();
    meta(w, "kprobes", &kprobes.join(","))?;
    let kfuncs: Vec<String> = plan.kprobes.iter().map(|k| format!("{}={}", k.name, k.function)).collect();
    meta(w, "kprobe_functions", &kfuncs.join(","))?;
    let list = |v: &[String]| if v.is_empty() { "none".to_owned() } else { v.join(",") };
    meta(w, "identity_sources", &list(&plan.identity_sources))?;
    meta(w, "flush_sources", &list(&plan.flush_sources))?;
    meta(w, "stacks", &plan.stacks.meta())?;
    for g in &probe.groups {
        meta(
            w,
            &format!("iommu_group.{}", g.id),
            &format!("type={} devices={}", g.domain_type.as_deref().unwrap_or("?"), g.devices.join(",")),
        )?;
    }
    if let Some(o) = outcome {
        meta(w, "started_unix", &o.started_unix.to_string())?;
        meta(w, "elapsed_s", &format!("{:.3}", o.elapsed.as_secs_f64()))?;
        if let Some(c) = &o.command {
            meta(w, "command", c)?;
            meta(w, "exit_code", &o.exit_code.map_or("signal".into(), |c| c.to_string()))?;
            meta(w, "timed_out", if o.timed_out { "yes" } else { "no" })?;
        }
    }
    // Lost events, per CPU.
    let mut cpus: Vec<(u32, PathBuf)> = fs::read_dir(inst.join("per_cpu"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    cpus.sort();
    for (n, dir) in cpus {
        let Some(text) = read(dir.join("stats")) else {
            continue;
        };
        for (key, name) in
            [("overrun", "overrun"), ("commit overrun", "commit_overrun"), ("dropped events", "dropped_events")]
        {
            if let Some(v) = stat(&text, key) {
                meta(w, &format!("cpu{n}.{name}"), &v.to_string())?;
                if key != "commit overrun" {
                    summary.lost_events = summary.lost_events.saturating_add(v);
                }
            }
        }
    }
    meta(w, "lost_events", &summary.lost_events.to_string())?;
    // Kprobe hits and misses.
    if let Some(profile) = read(tracefs.join("kprobe_profile")) {
        for line in profile.lines() {
            let mut it = line.split_whitespace();
            let (Some(name), Some(hits), Some(missed)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let name = match name.split_once('/') {
                Some((g, n)) if g == GROUP => n,
                Some(_) => continue,
                None => name,
            };
            if !plan.kprobes.iter().any(|k| k.name == name) {
                continue;
            }
            meta(w, &format!("kprobe.{name}.hits"), hits)?;
            meta(w, &format!("kprobe.{name}.nmissed"), missed)?;
            summary.kprobe_missed = summary.kprobe_missed.saturating_add(missed.parse().unwrap_or(0));
        }
    }
    Ok(())
}

/// What [`cleanup`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Whether our instance existed and was removed.
    pub removed_instance: bool,
    /// Our kprobes that were deleted.
    pub removed_kprobes: Vec<String>,
}

/// Removes our instance and our kprobes (group `iosan` only) from the
/// tracefs at `tracefs`. Safe to run at any time: after a finished run,
/// after a crashed one, or when there is nothing to remove.
///
/// # Errors
/// See [`cleanup_with`].
pub fn cleanup(tracefs: &Path) -> Result<CleanupReport, RecordError> {
    cleanup_with(&mut LiveOps, tracefs)
}

/// [`cleanup`] through `ops`. Every step is tried; the first failure of a
/// required one is returned after the rest has been attempted.
///
/// # Errors
/// [`RecordError::Remove`] when the instance is busy (a reader holds its
/// files), [`RecordError::Write`] when a kprobe cannot be deleted.
pub fn cleanup_with<O: Ops>(ops: &mut O, tracefs: &Path) -> Result<CleanupReport, RecordError> {
    let instance = tracefs.join("instances").join(GROUP);
    let instance_exists = instance.is_dir();
    let ke = tracefs.join("kprobe_events");
    let kprobes = match fs::read_to_string(&ke) {
        Ok(text) => our_kprobes(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(RecordError::Read { path: ke, source }),
    };
    let mut report = CleanupReport::default();
    let mut first_err = None;
    for step in cleanup_steps(tracefs, instance_exists, &kprobes) {
        match execute(ops, &step) {
            Ok(()) => match &step.action {
                Action::Rmdir(_) => report.removed_instance = true,
                Action::Append { line, .. } => {
                    if let Some(k) = line.strip_prefix(&format!("-:{GROUP}/")) {
                        report.removed_kprobes.push(k.to_owned());
                    }
                }
                _ => {}
            },
            Err(e) if step.required => {
                first_err.get_or_insert(e);
            }
            Err(_) => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}
