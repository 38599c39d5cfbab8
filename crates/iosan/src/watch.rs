//! `iosan watch`: set up tracefs as `record --apply` does, read the
//! instance's `trace_pipe` as the kernel writes it, and analyze live.
//!
//! - Each finding is printed (and flushed) as soon as the replay decides
//!   it. `trace_pipe` is opened non-blocking and polled every
//!   [`POLL`]; when it has been idle for [`IDLE_SETTLE`], what still waits
//!   for later events (an unmap whose call has not named its domain) is
//!   settled, so an idle trace does not hold a finding back. With
//!   `--stacks` the text source holds each event until the next line (its
//!   stack may follow); an idle pipe then gets a blank line, which ends the
//!   wait (line numbers of later findings count these lines; the summary's
//!   line count does not).
//! - Memory follows the live mappings, not the time run: the replay's
//!   state is capped (domains 2^16, open call sequences 1024 with 8192
//!   items each, lost-event windows 4096, task names 2^22, stacks 2^16,
//!   DMA-API mappings 2^22, unflushed lazy ranges 2^20, findings remembered
//!   for follow-ups 2^16); findings are written, not kept.
//! - Lost events: `trace_pipe` prints `CPU:N [LOST M EVENTS]` where the
//!   ring buffer overran, which marks the findings near it unconfirmed; the
//!   instance's `per_cpu/cpuN/stats` overrun counters are also polled every
//!   [`STATS_EVERY`] and a growing count is printed at once (and its total
//!   is the summary's `overwritten` count: the two may count the same loss).
//! - SIGINT or SIGTERM ends the watch: tracing is switched off, what is left
//!   in the pipe is read, the summary printed, and the instance and kprobes
//!   removed (a second signal exits at once; `iosan record --cleanup` then
//!   removes what is left). `-- COMMAND` ends it when the command exits, `--duration S`
//!   after S seconds.
//!
//! Text only: `trace_pipe_raw` (binary pages, cheaper to read) is a later step.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use iosan_record::{
    apply_with, cleanup_with, execute, Action, LiveOps, Ops, PageStacks, Plan, PlanOptions, ProbeInput, Stacks,
    SystemProbe, Tracefs, MARKER_ENV,
};
use iosan_trace::analyze::Streaming;
use iosan_trace::replay::Analyzer;
use iosan_trace::source::text::TextSource;
use iosan_trace::{RecordSink, Source};

use crate::output::StreamWriter;
use crate::{color, options, OutputArgs};

/// How often an idle `trace_pipe` is polled.
pub const POLL: Duration = Duration::from_millis(20);
/// Idle time after which waiting decisions are settled.
pub const IDLE_SETTLE: Duration = Duration::from_millis(200);
/// How often the per-CPU overrun counters are read.
pub const STATS_EVERY: Duration = Duration::from_secs(1);

/// Arguments of `iosan watch`.
#[derive(clap::Args)]
pub struct WatchArgs {
    /// Watch for this many seconds (default: until SIGINT/SIGTERM, or until COMMAND exits).
    #[arg(long, value_name = "S")]
    pub duration: Option<u64>,
    /// Record kernel stacks on IOMMU and DMA-API maps and unmaps (as `record --stacks`).
    #[arg(long)]
    pub stacks: bool,
    /// Per-CPU ring buffer size in KiB, instead of the computed one.
    #[arg(long = "buffer-kb", value_name = "KIB")]
    pub buffer_kb: Option<u64>,
    /// Root directory of the system to probe (for tests on a fake tree).
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub root: PathBuf,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Command to watch while it runs (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// When the watch ends.
pub(crate) struct Until {
    /// Set by SIGINT/SIGTERM (or a test).
    pub stop: Arc<AtomicBool>,
    /// Wall-time limit.
    pub duration: Option<Duration>,
    /// The watched command.
    pub command: Vec<String>,
}

/// Runs `iosan watch`; the exit status (1 when a bug was found).
///
/// # Errors
/// Set-up failures, and an unwritable standard output.
pub fn run(a: &WatchArgs) -> Result<u8> {
    let stop = Arc::new(AtomicBool::new(false));
    // Only the binary handles signals: the first ends the watch cleanly, a
    // second one (the watch is stuck) exits at once, leaving the clean-up
    // to `iosan record --cleanup`.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&stop)))
            .context("installing the signal handler")?;
    }
    let until = Until { stop, duration: a.duration.map(Duration::from_secs), command: a.command.clone() };
    let mut probe_now = probe(&a.root);
    if let Tracefs::Unmounted(p) = &probe_now.tracefs {
        let step = iosan_record::Step {
            action: Action::MountTracefs(p.clone()),
            reason: "mount tracefs".into(),
            required: true,
        };
        execute(&mut LiveOps, &step).map_err(|e| anyhow!("{e}"))?;
        probe_now = probe(&a.root);
    }
    let out = io::stdout().lock();
    let w = StreamWriter::new(out, a.out.format == crate::Format::Json, color(&a.out), a.out.verbose, "trace_pipe");
    watch_with(&mut LiveOps, &probe_now, a, &until, w)
}

fn probe(root: &Path) -> SystemProbe {
    let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
    });
    SystemProbe::read(root, &ProbeInput { uid, fallback_arch: Some(std::env::consts::ARCH.to_owned()) })
}

/// Plans, applies, watches and cleans up through `ops`.
pub(crate) fn watch_with<O: Ops, W: Write>(
    ops: &mut O,
    probe_now: &SystemProbe,
    a: &WatchArgs,
    until: &Until,
    mut w: StreamWriter<W>,
) -> Result<u8> {
    let stacks = if a.stacks { Stacks::On { pages: PageStacks::Off } } else { Stacks::Off };
    let opts = PlanOptions { duration_s: a.duration, events_per_sec: None, buffer_kb: a.buffer_kb, stacks };
    let plan = Plan::build(probe_now, &opts);
    for wn in &plan.warnings {
        eprintln!("iosan watch: warning: {wn}");
    }
    let (Some(tracefs), Some(inst), true) = (plan.tracefs.clone(), plan.instance.clone(), plan.recordable) else {
        return Err(anyhow!("tracefs is not available, nothing can be watched"));
    };
    let result = set_up_and_watch(ops, &plan, &inst, a, until, &mut w);
    let cleaned = cleanup_with(ops, &tracefs);
    let status = result?;
    if let Err(e) = cleaned {
        return Err(anyhow!("watch ended, but cleanup failed: {e}"));
    }
    Ok(status)
}

fn set_up_and_watch<O: Ops, W: Write>(
    ops: &mut O,
    plan: &Plan,
    inst: &Path,
    a: &WatchArgs,
    until: &Until,
    w: &mut StreamWriter<W>,
) -> Result<u8> {
    let report = apply_with(ops, plan).map_err(|e| anyhow!("{e}"))?;
    for s in &report.skipped {
        eprintln!("iosan watch: warning: skipped: {s}");
    }
    // The counters before the watch are not its losses.
    let baseline = read_overruns(&inst.join("per_cpu"));
    let pipe_path = inst.join("trace_pipe");
    let pipe = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&pipe_path)
        .with_context(|| format!("opening {}", pipe_path.display()))?;
    for s in plan.start_steps() {
        execute(ops, &s).map_err(|e| anyhow!("{e}"))?;
    }
    let child = match until.command.split_first() {
        None => None,
        Some((prog, args)) => Some(
            Command::new(prog)
                .args(args)
                .env(MARKER_ENV, inst.join("trace_marker"))
                .spawn()
                .with_context(|| format!("starting `{}`", until.command.join(" ")))?,
        ),
    };
    eprintln!(
        "iosan watch: {} events and {} kprobes, {} KiB buffer per CPU; {}",
        plan.events.len(),
        plan.kprobes.len(),
        plan.buffer_size_kb,
        match (&child, until.duration) {
            (Some(_), _) => format!("until `{}` exits", until.command.join(" ")),
            (None, Some(d)) => format!("for {} s", d.as_secs()),
            (None, None) => "until SIGINT or SIGTERM".into(),
        }
    );
    let aopts = options(&a.out)?;
    let mut live = Live::new(pipe, inst.join("per_cpu"), baseline, until, child);
    // The text source holds each event until it knows no stack follows.
    live.flush_held = true;
    let mut w_title = String::from("iosan watch: live trace_pipe");
    if let Some(c) = until.command.first() {
        w_title.push_str(&format!(" while `{c}` runs"));
    }
    w.header(&format!("{w_title} ({} semantics)", aopts.replay.semantics.name()));
    w.write_header();
    let state = Rc::new(std::cell::RefCell::new(Shared { an: Some(Analyzer::streaming(aopts.replay.clone())), w }));
    let summary = {
        let tick_state = Rc::clone(&state);
        let stop = Arc::clone(&until.stop);
        live.on_tick = Some(Box::new(move |t: Tick| {
            let mut s = tick_state.borrow_mut();
            let Shared { an, w } = &mut *s;
            if w.failed() {
                // Nobody reads the findings any more (a closed pipe): end the watch.
                stop.store(true, Ordering::Relaxed);
            }
            let Some(an) = an.as_mut() else { return };
            if let Some(note) = t.overrun_note {
                w.note(&note);
            }
            if t.idle {
                an.settle_pending();
                an.drain_findings(&mut **w);
            }
        }));
        let mut src = TextSource::new(&mut live, aopts.max_line_len).live();
        let mut sink = SharedSink(Rc::clone(&state));
        let ran = src.run(&mut sink, &mut ());
        let pos = src.position();
        drop(src);
        live.on_tick = None;
        for s in plan.stop_steps() {
            let _ = execute(ops, &s);
        }
        ran.map_err(|e| anyhow!("reading trace_pipe: {e}"))?;
        let mut s = state.borrow_mut();
        let Shared { an, w } = &mut *s;
        let Some(mut an) = an.take() else { return Err(anyhow!("analyzer gone")) };
        if live.overrun_total > 0 {
            an.overwritten(live.overrun_total);
        }
        let mut summary = an.finish_streaming(&mut **w);
        summary.lines = pos.lines.saturating_sub(live.blank_lines);
        summary.bytes = pos.bytes;
        summary.input = "trace_pipe".into();
        summary
    };
    if let Some(mut c) = live.child.take() {
        if c.try_wait().ok().flatten().is_none() {
            let _ = c.kill();
        }
        if let Ok(st) = c.wait() {
            if !st.success() {
                eprintln!("iosan watch: warning: the command exited with {st}");
            }
        }
    }
    let Ok(cell) = Rc::try_unwrap(state) else { return Err(anyhow!("writer still shared")) };
    let Shared { w, .. } = cell.into_inner();
    let bugs = w.tally().bugs > 0;
    match w.summary(&summary, a.out.verbose) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(u8::from(bugs))
}

/// The analyzer and the writer, shared by the record sink and the idle tick.
struct Shared<'w, W: Write> {
    an: Option<Analyzer>,
    w: &'w mut StreamWriter<W>,
}

/// Forwards records to the shared streaming analyzer.
struct SharedSink<'w, W: Write>(Rc<std::cell::RefCell<Shared<'w, W>>>);

impl<W: Write> SharedSink<'_, W> {
    fn with(&mut self, f: impl FnOnce(&mut Streaming<'_>)) {
        let mut s = self.0.borrow_mut();
        let Shared { an, w } = &mut *s;
        let Some(a) = an.take() else { return };
        let mut st = Streaming { an: a, sink: &mut **w };
        f(&mut st);
        *an = Some(st.an);
    }
}

impl<W: Write> RecordSink for SharedSink<'_, W> {
    fn record(&mut self, rec: &iosan_trace::Record<'_>) {
        self.with(|s| s.record(rec));
    }
    fn lost(&mut self, cpu: Option<u32>, events: Option<u64>, origin: iosan_trace::Origin) {
        self.with(|s| s.lost(cpu, events, origin));
    }
    fn skipped(&mut self, reason: &str, origin: iosan_trace::Origin) {
        self.with(|s| s.skipped(reason, origin));
    }
    fn unknown_event(&mut self, name: &[u8]) {
        self.with(|s| s.unknown_event(name));
    }
    fn meta(&mut self, key: &str, value: &str) {
        self.with(|s| s.meta(key, value));
    }
    fn overwritten(&mut self, events: u64) {
        self.with(|s| s.overwritten(events));
    }
}

/// What the reader reports before each read.
struct Tick {
    /// The pipe has been idle for [`IDLE_SETTLE`] (reported once per idle spell).
    idle: bool,
    /// Overrun counters grew: what to print.
    overrun_note: Option<String>,
}

type TickFn<'a> = Box<dyn FnMut(Tick) + 'a>;

/// `trace_pipe` as a [`BufRead`] that ends when the watch should, polling
/// a non-blocking descriptor so that time-based work happens while idle.
struct Live<'a> {
    pipe: File,
    per_cpu: PathBuf,
    until: &'a Until,
    child: Option<Child>,
    buf: Vec<u8>,
    pos: usize,
    started: Instant,
    last_data: Instant,
    idle_reported: bool,
    next_stats: Instant,
    overrun: Vec<u64>,
    overrun_total: u64,
    /// Feed a blank line when the pipe goes idle after a complete line: the
    /// text source holds each event back until it knows no stack follows,
    /// and a blank line ends that wait.
    flush_held: bool,
    /// The last bytes read ended a line, and no blank line was fed since.
    held_line: bool,
    /// Blank lines fed (taken off the summary's line count).
    blank_lines: u64,
    /// Stopping: reading what is left, then the end.
    draining: bool,
    ended: bool,
    on_tick: Option<TickFn<'a>>,
}

impl<'a> Live<'a> {
    fn new(pipe: File, per_cpu: PathBuf, overrun: Vec<u64>, until: &'a Until, child: Option<Child>) -> Self {
        let now = Instant::now();
        Self {
            pipe,
            per_cpu,
            until,
            child,
            buf: Vec::new(),
            pos: 0,
            started: now,
            last_data: now,
            idle_reported: false,
            next_stats: now,
            overrun,
            overrun_total: 0,
            flush_held: false,
            held_line: false,
            blank_lines: 0,
            draining: false,
            ended: false,
            on_tick: None,
        }
    }

    fn should_stop(&mut self) -> bool {
        if self.until.stop.load(Ordering::Relaxed) {
            return true;
        }
        if self.until.duration.is_some_and(|d| self.started.elapsed() >= d) {
            return true;
        }
        match &mut self.child {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let idle = !self.idle_reported && now.duration_since(self.last_data) >= IDLE_SETTLE;
        let mut overrun_note = None;
        if now >= self.next_stats {
            self.next_stats = now + STATS_EVERY;
            let cur = read_overruns(&self.per_cpu);
            let (mut grew, mut lost) = (Vec::new(), 0u64);
            for (cpu, &n) in cur.iter().enumerate() {
                let before = self.overrun.get(cpu).copied().unwrap_or(0);
                if n > before {
                    grew.push(format!("{} on cpu {cpu}", n - before));
                    lost = lost.saturating_add(n - before);
                }
            }
            self.overrun_total = self.overrun_total.saturating_add(lost);
            self.overrun = cur;
            if !grew.is_empty() {
                overrun_note = Some(format!(
                    "LOST      ring buffer overran: {lost} events lost ({}); findings near here are unconfirmed",
                    grew.join(", ")
                ));
            }
        }
        if idle {
            self.idle_reported = true;
        }
        if let Some(f) = self.on_tick.as_mut() {
            f(Tick { idle, overrun_note });
        }
    }
}

/// Per-CPU `overrun:` counters under `per_cpu` (`cpuN/stats`), up to the first CPU missing.
fn read_overruns(per_cpu: &Path) -> Vec<u64> {
    let mut v = Vec::new();
    for cpu in 0..iosan_trace::replay::MAX_CPUS {
        let Ok(text) = std::fs::read_to_string(per_cpu.join(format!("cpu{cpu}/stats"))) else { break };
        let n = text.lines().find_map(|l| l.strip_prefix("overrun:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0);
        v.push(n);
    }
    v
}

impl Read for Live<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        iosan_trace::input::read_from_buffer(self, out)
    }
}

impl BufRead for Live<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.buf.len() && !self.ended {
            if self.flush_held && self.held_line && self.last_data.elapsed() >= IDLE_SETTLE {
                self.held_line = false;
                self.blank_lines += 1;
                self.buf.clear();
                self.buf.push(b'\n');
                self.pos = 0;
                break;
            }
            self.tick();
            if !self.draining && self.should_stop() {
                self.draining = true;
            }
            self.buf.resize(1 << 16, 0);
            self.pos = 0;
            match self.pipe.read(&mut self.buf) {
                Ok(n) if n > 0 => {
                    self.buf.truncate(n);
                    self.held_line = self.buf.last() == Some(&b'\n');
                    self.last_data = Instant::now();
                    self.idle_reported = false;
                    continue;
                }
                // A FIFO whose writer is gone reads 0; trace_pipe says EAGAIN: both are "nothing now".
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.buf.truncate(0);
            if self.draining {
                self.ended = true;
            } else {
                std::thread::sleep(POLL);
            }
        }
        Ok(self.buf.get(self.pos..).unwrap_or_default())
    }

    fn consume(&mut self, amt: usize) {
        self.pos = self.pos.saturating_add(amt).min(self.buf.len());
    }
}

#[cfg(test)]
mod tests {
    //! The watch against a fake tracefs tree whose `trace_pipe` is a FIFO
    //! the test writes to, with a fake kernel for `mkdir`/`rmdir` and
    //! `kprobe_events` (no root needed).

    use std::fs;
    use std::sync::Mutex;

    use clap::Parser;

    use super::*;

    const SMALL: &str = include_str!("../../../fixtures/golden/small.trace.txt");
    const EVENTS: &[(&str, &str)] = &[
        ("kmem", "mm_page_alloc"),
        ("kmem", "mm_page_free"),
        ("iommu", "map"),
        ("iommu", "unmap"),
        ("iommu", "attach_device_to_domain"),
        ("dma", "dma_map_page"),
        ("dma", "dma_unmap_page"),
        ("intel_iommu", "cache_tag_flush_range"),
    ];

    fn put(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn fake_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let t = r.join("sys/kernel/tracing");
        put(&t.join("trace"), "# tracer: nop\n");
        put(&t.join("trace_clock"), "[local] global\n");
        put(&t.join("saved_cmdlines_size"), "128\n");
        put(&t.join("kprobe_events"), "p:other/keep do_sys_open\n");
        fs::create_dir_all(t.join("instances")).unwrap();
        for (s, e) in EVENTS {
            put(&t.join("events").join(s).join(e).join("enable"), "0\n");
        }
        put(&r.join("proc/kallsyms"), "ffffffff81929360 T __iommu_map\nffffffff81929600 t __iommu_unmap\n");
        put(&r.join("proc/meminfo"), "MemTotal:        4194304 kB\n");
        put(&r.join("proc/version"), "Linux version 6.12.0 (fake)\n");
        put(&r.join("proc/cmdline"), "intel_iommu=on\n");
        put(&r.join("proc/sys/kernel/arch"), "x86_64\n");
        put(&r.join("sys/devices/system/cpu/online"), "0-1\n");
        put(&r.join("sys/kernel/iommu_groups/0/type"), "DMA\n");
        dir
    }

    /// What tracefs does beyond plain files.
    struct FakeKernel {
        tracefs: PathBuf,
    }

    impl Ops for FakeKernel {
        fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
            if !path.exists() {
                return Err(io::Error::from_raw_os_error(2));
            }
            fs::write(path, format!("{value}\n"))
        }
        fn append(&mut self, path: &Path, line: &str) -> io::Result<()> {
            let text = fs::read_to_string(path)?;
            let events = self.tracefs.join("events");
            if let Some(target) = line.strip_prefix("-:") {
                let kept: String = text
                    .lines()
                    .filter(|l| !l.split_whitespace().next().unwrap_or("").ends_with(&format!(":{target}")))
                    .map(|l| format!("{l}\n"))
                    .collect();
                fs::write(path, kept)?;
                let _ = fs::remove_dir_all(events.join(target));
            } else {
                let head = line.split_whitespace().next().unwrap_or("");
                let target = head.split_once(':').map_or("", |h| h.1);
                fs::write(path, format!("{text}{line}\n"))?;
                put(&events.join(target).join("enable"), "0\n");
            }
            Ok(())
        }
        fn mkdir(&mut self, path: &Path) -> io::Result<()> {
            fs::create_dir(path)?;
            for f in ["tracing_on", "buffer_size_kb", "trace_clock", "trace_marker", "trace", "options/stacktrace"] {
                put(&path.join(f), "0\n");
            }
            for c in 0..2 {
                put(&path.join(format!("per_cpu/cpu{c}/stats")), "entries: 0\noverrun: 5\n");
            }
            for (s, e) in EVENTS {
                put(&path.join("events").join(s).join(e).join("enable"), "0\n");
            }
            // Kprobes defined so far appear in the instance too.
            for l in fs::read_to_string(self.tracefs.join("kprobe_events"))?.lines() {
                if let Some(t) = l.split_whitespace().next().and_then(|h| h.split_once(':')).map(|h| h.1) {
                    put(&path.join("events").join(t).join("enable"), "0\n");
                }
            }
            let st = Command::new("mkfifo").arg(path.join("trace_pipe")).status()?;
            if st.success() {
                Ok(())
            } else {
                Err(io::Error::other("mkfifo failed"))
            }
        }
        fn rmdir(&mut self, path: &Path) -> io::Result<()> {
            fs::remove_dir_all(path)
        }
        fn mount_tracefs(&mut self, _: &Path) -> io::Result<()> {
            Err(io::Error::other("no mounting in tests"))
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        watch: WatchArgs,
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Shared {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
        /// Waits (generously: not a speed test) until the output contains `what`.
        fn wait_for(&self, what: &str) -> bool {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(20) {
                if self.text().contains(what) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        }
    }

    /// Starts a watch on a fake tree in a thread; its output and status.
    fn start(argv: &[&str], until: Until) -> (tempfile::TempDir, Shared, std::thread::JoinHandle<Result<u8>>) {
        let dir = fake_root();
        let root = dir.path().to_path_buf();
        let out = Shared::default();
        let w_out = out.clone();
        let argv: Vec<String> = ["watch", "--color", "never", "--root"]
            .iter()
            .map(|s| s.to_string())
            .chain([root.display().to_string()])
            .chain(argv.iter().map(|s| s.to_string()))
            .collect();
        let h = std::thread::spawn(move || {
            let cli = Cli::try_parse_from(&argv).unwrap();
            let probe_now = probe(&root);
            let json = cli.watch.out.format == crate::Format::Json;
            let w = StreamWriter::new(w_out, json, false, false, "trace_pipe");
            let mut k = FakeKernel { tracefs: root.join("sys/kernel/tracing") };
            watch_with(&mut k, &probe_now, &cli.watch, &until, w)
        });
        (dir, out, h)
    }

    /// Opens the FIFO for writing once the watch reads it.
    fn open_pipe(root: &Path) -> File {
        let p = root.join("sys/kernel/tracing/instances/iosan/trace_pipe");
        let t0 = Instant::now();
        loop {
            // Non-blocking: ENXIO until a reader has it open.
            match OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&p) {
                Ok(f) => return f,
                Err(e) => assert!(t0.elapsed() < Duration::from_secs(20), "no reader on {}: {e}", p.display()),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn assert_cleaned(root: &Path) {
        let t = root.join("sys/kernel/tracing");
        assert!(!t.join("instances/iosan").exists(), "instance left behind");
        let ke = fs::read_to_string(t.join("kprobe_events")).unwrap();
        assert!(!ke.contains("iosan/"), "kprobes left behind: {ke}");
        assert!(ke.contains("other/keep"), "someone else's kprobe removed");
    }

    #[test]
    fn a_finding_is_printed_while_the_pipe_stays_open_and_sigterm_prints_the_summary() {
        let stop = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop)).unwrap();
        let (dir, out, h) = start(&[], Until { stop, duration: None, command: Vec::new() });
        let mut pipe = open_pipe(dir.path());
        // The kernel writes whole lines to trace_pipe: stop at the start of the follow-up's line.
        let at = SMALL.find("my task-77").unwrap();
        let (head, tail) = SMALL.split_at(SMALL.get(..at).unwrap().rfind('\n').unwrap() + 1);
        pipe.write_all(head.as_bytes()).unwrap();
        assert!(out.wait_for("[1] freed-while-mapped"), "no finding while the pipe is open:\n{}", out.text());
        assert!(!out.text().contains("Summary"));
        assert!(dir.path().join("sys/kernel/tracing/instances/iosan").exists());
        assert!(fs::read_to_string(dir.path().join("sys/kernel/tracing/kprobe_events")).unwrap().contains("iosan/"));
        pipe.write_all(tail.as_bytes()).unwrap();
        assert!(out.wait_for("[1] then"), "follow-up not printed:\n{}", out.text());
        // The real signal path: the handler sets the flag the watch polls.
        signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
        assert_eq!(h.join().unwrap().unwrap(), 1);
        let text = out.text();
        assert!(text.contains("Summary\n  1 findings covering 1 pages"), "{text}");
        assert!(text.contains("LOST      12 events lost"), "{text}");
        assert_cleaned(dir.path());
    }

    #[test]
    fn with_stacks_an_event_waiting_for_its_stack_is_not_held_by_an_idle_pipe() {
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, out, h) =
            start(&["--stacks"], Until { stop: Arc::clone(&stop), duration: None, command: Vec::new() });
        let mut pipe = open_pipe(dir.path());
        // Stack lines after the map put the text source in stack mode; the
        // free that is the bug is the last line written.
        let head = SMALL.split_at(SMALL.find("my task-77").unwrap()).0;
        let head = head.split_at(head.rfind('\n').unwrap() + 1).0;
        let with_stack = head.replacen("size=16777216\n", "size=16777216\n => iommu_map+0x20/0x100\n", 1).replacen(
            "size=4096\n",
            "size=4096\n => __iommu_map+0x10/0x200\n => iommu_map+0x20/0x100\n",
            1,
        );
        pipe.write_all(with_stack.as_bytes()).unwrap();
        assert!(out.wait_for("[1] freed-while-mapped"), "the last event waited for more input:\n{}", out.text());
        assert!(out.text().contains("__iommu_map+0x10/0x200"), "stack not attached:\n{}", out.text());
        stop.store(true, Ordering::Relaxed);
        assert_eq!(h.join().unwrap().unwrap(), 1);
        let lines = with_stack.lines().count();
        assert!(out.text().contains(&format!("input     {lines} lines")), "{}", out.text());
        assert_cleaned(dir.path());
    }

    #[test]
    fn watching_a_command_ends_when_it_exits() {
        let until = Until {
            stop: Arc::new(AtomicBool::new(false)),
            duration: Some(Duration::from_secs(60)),
            command: vec!["sh".into(), "-c".into(), "sleep 0.3".into()],
        };
        let t0 = Instant::now();
        let (dir, out, h) = start(&["--format", "json"], until);
        assert_eq!(h.join().unwrap().unwrap(), 0);
        assert!(t0.elapsed() < Duration::from_secs(30), "did not end with the command");
        let text = out.text();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["type"], "summary");
        assert_cleaned(dir.path());
    }

    #[test]
    fn duration_ends_the_watch_and_overruns_are_reported() {
        let until = Until {
            stop: Arc::new(AtomicBool::new(false)),
            duration: Some(Duration::from_secs(3)),
            command: Vec::new(),
        };
        let (dir, out, h) = start(&[], until);
        let inst = dir.path().join("sys/kernel/tracing/instances/iosan");
        let _pipe = open_pipe(dir.path());
        // The ring buffer overruns on cpu 1 while watched.
        fs::write(inst.join("per_cpu/cpu1/stats"), "entries: 0\noverrun: 9\n").unwrap();
        assert_eq!(h.join().unwrap().unwrap(), 0);
        let text = out.text();
        assert!(text.contains("ring buffer overran: 4 events lost (4 on cpu 1)"), "{text}");
        assert!(text.contains("0 events lost, 4 overwritten"), "{text}");
        assert_cleaned(dir.path());
    }
}
