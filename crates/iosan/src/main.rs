//! `iosan`: find DMA use-after-free in Linux ftrace captures.
//!
//! Glue only: arguments, output formats, progress, exit codes.

mod bench;
mod html;
mod output;
mod perfetto;
mod record_cmd;
mod simulate;
mod timeline;
mod verdict;
mod watch;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use iosan_core::{PageSize, Semantics};
use iosan_trace::input::decode_reader;
use iosan_trace::{
    analyze, analyze_source_streaming, open_capture_with, AnalyzeOptions, CaptureFormat, OpenOptions, Progress, Report,
};

/// The bug capture from a real Linux 6.12 kernel under QEMU, embedded for `iosan demo`.
static DEMO_CAPTURE: &[u8] = include_bytes!("../../../fixtures/captures/bug-strict.trace.txt.xz");

#[derive(Parser)]
#[command(
    name = "iosan",
    version,
    about = "Find DMA use-after-free: pages freed or re-allocated while a device can still reach them through an IOMMU mapping"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Analyse ftrace captures (text of /sys/kernel/tracing/trace or `trace-cmd report`; gzip/xz/zstd ok; `-` for stdin).
    Analyze(AnalyzeArgs),
    /// Analyse an embedded real capture (Linux 6.12, QEMU VT-d, injected DMA use-after-free).
    Demo(OutputArgs),
    /// Run a workload on the kernel model, optionally injecting a bug; print the model sanitizer's findings.
    Simulate(simulate::SimulateArgs),
    /// Print (or with --apply, perform) the tracefs set-up that captures what `analyze` needs on a live system.
    Record(record_cmd::RecordArgs),
    /// Run the built-in benchmarks (core engine, kernel model, trace analysis).
    Bench(bench::BenchArgs),
    /// Set up tracefs as `record --apply` does and analyze its trace_pipe live, printing each finding as it is decided.
    Watch(watch::WatchArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum SemanticsArg {
    Exact,
    Upstream,
}

#[derive(clap::Args, Clone)]
pub(crate) struct OutputArgs {
    /// Output format: a human report, or JSON Lines (schema in the iosan crate docs / README).
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
    /// `exact` (default) or `upstream`: what CONFIG_IOMMU_DEBUG_PAGEALLOC would have reported.
    #[arg(long, value_enum, default_value = "exact")]
    pub(crate) semantics: SemanticsArg,
    /// CPU page size of the traced kernel, bytes (4096, 16384, 65536).
    /// Default: what the capture says (its `page_size` metadata, the kernel
    /// release), else 4096, said in the summary.
    #[arg(long)]
    pub(crate) page_size: Option<u64>,
    /// Colour: auto (only on a terminal), always, never.
    #[arg(long, default_value = "auto")]
    color: String,
    /// Print every event kind and more detail in the summary.
    #[arg(long, short)]
    verbose: bool,
    /// Longest input line accepted, bytes; longer lines are skipped and counted.
    #[arg(long, default_value_t = 1 << 20)]
    pub(crate) max_line: usize,
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// Capture files, or `-` for standard input. Each is a separate capture.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The files are per-CPU parts of one capture: merge them by timestamp into one report.
    #[arg(long)]
    merge: bool,
    /// Also write a Perfetto trace (TrackEvent protobuf) of the report to FILE, for ui.perfetto.dev.
    #[arg(long, value_name = "FILE")]
    perfetto: Option<PathBuf>,
    /// Also write a self-contained HTML report (no network requests) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Threads for a text capture read from a file: N-1 tokenize and decode lines, one replays;
    /// the output is the same for every N. Default: 2 for a file over 8 MiB on a machine with
    /// two or more cores, else 1. Standard input, pipes, trace.dat and perf.data use one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: Option<u16>,
    #[command(flatten)]
    out: OutputArgs,
}

/// Smallest file for which `--threads` defaults to 2: below it the threads
/// cost more than they save.
const PARALLEL_MIN_BYTES: u64 = 8 << 20;

/// The threads to read `path` with: `--threads`, or 2 where that pays.
fn threads_for(path: &std::path::Path, given: Option<u16>) -> usize {
    if let Some(n) = given {
        return usize::from(n);
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let big_file =
        path.as_os_str() != "-" && std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() >= PARALLEL_MIN_BYTES);
    if cores >= 2 && big_file {
        2
    } else {
        1
    }
}

/// Writes the `--perfetto` and `--html` files of `report`.
fn write_files(report: &Report, a: &AnalyzeArgs) -> Result<()> {
    let write = |path: &PathBuf, what: &str, f: &dyn Fn(&mut dyn Write) -> io::Result<()>| -> Result<()> {
        let file = std::fs::File::create(path).with_context(|| format!("{what} {}", path.display()))?;
        let mut w = io::BufWriter::new(file);
        f(&mut w).and_then(|()| w.flush()).with_context(|| format!("{what} {}", path.display()))
    };
    if let Some(p) = &a.perfetto {
        write(p, "--perfetto", &|w| perfetto::write_perfetto(w, report))?;
    }
    if let Some(p) = &a.html {
        write(p, "--html", &|w| html::write_html(w, report))?;
    }
    Ok(())
}

struct Bar {
    total: Option<u64>,
    enabled: bool,
    shown: bool,
}

impl Progress for Bar {
    fn advance(&mut self, bytes: u64) {
        if !self.enabled {
            return;
        }
        let mut err = io::stderr();
        match self.total {
            Some(t) if t > 0 => {
                let pct = (bytes.min(t) * 100) / t;
                let filled = (pct / 4) as usize;
                let _ = write!(
                    err,
                    "\r[{}{}] {pct:>3}% {:>6} MB",
                    "#".repeat(filled),
                    " ".repeat(25 - filled),
                    bytes >> 20
                );
            }
            _ => {
                let _ = write!(err, "\r{:>6} MB read", bytes >> 20);
            }
        }
        self.shown = true;
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if self.shown {
            let _ = write!(io::stderr(), "\r{}\r", " ".repeat(48));
        }
    }
}

fn options(o: &OutputArgs) -> Result<AnalyzeOptions> {
    let mut opts = AnalyzeOptions { max_line_len: o.max_line, ..AnalyzeOptions::default() };
    if let Some(bytes) = o.page_size {
        opts.replay.page_size = PageSize::from_bytes(bytes)
            .with_context(|| format!("--page-size {bytes}: expected 4096, 16384 or 65536"))?;
        opts.replay.page_size_given = true;
    }
    opts.replay.semantics = match o.semantics {
        SemanticsArg::Exact => Semantics::Exact,
        SemanticsArg::Upstream => Semantics::Upstream,
    };
    Ok(opts)
}

/// Whether to colour standard output.
pub(crate) fn color(o: &OutputArgs) -> bool {
    match o.color.as_str() {
        "always" => true,
        "never" => false,
        _ => io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    }
}

pub(crate) fn emit(report: &Report, o: &OutputArgs) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let color = color(o);
    match o.format {
        Format::Json => output::write_json(&mut out, report)?,
        Format::Human => output::write_human(&mut out, report, color, o.verbose)?,
    }
    out.flush()
}

fn run_analyze(a: &AnalyzeArgs) -> Result<u8> {
    let mut opts = options(&a.out)?;
    if (a.perfetto.is_some() || a.html.is_some()) && a.files.len() > 1 && !a.merge {
        anyhow::bail!("--perfetto and --html describe one capture: give one file, or --merge its parts");
    }
    // A timeline or a page describes the whole capture: such a run writes its
    // report at the end, where a plain run streams findings as decided.
    if (a.merge && a.files.len() > 1) || a.perfetto.is_some() || a.html.is_some() {
        let mut inputs = Vec::with_capacity(a.files.len());
        let mut formats = Vec::with_capacity(a.files.len());
        // Parts of one capture pool their page-size evidence: a page may be
        // mapped in one CPU's part and freed in another's.
        let mut samples = iosan_trace::pagesize::Samples::default();
        for path in &a.files {
            let open = OpenOptions { max_line_len: opts.max_line_len, threads: threads_for(path, a.threads) };
            let c = open_capture_with(path, &open).map_err(|e| anyhow::anyhow!("{e}"))?;
            samples.absorb(&c.page_samples);
            formats.push(c.format);
            inputs.push((path.display().to_string(), c.source));
        }
        opts.replay.events_page_size = samples.evidence().decided();
        let name = a.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" + ");
        let report = iosan_trace::analyze_sources(inputs, &name, &opts).with_context(|| format!("reading {name}"))?;
        let format = formats.first().copied().unwrap_or(CaptureFormat::Text { looks_binary: false });
        if let Some(why) = verdict::inconclusive(&report.summary, format) {
            return Err(anyhow::anyhow!("{name}: {why}"));
        }
        write_files(&report, a)?;
        if let Err(e) = emit(&report, &a.out) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                return Err(e.into());
            }
        }
        return Ok(u8::from(report.bugs().next().is_some()));
    }
    let mut status = 0u8;
    for (i, path) in a.files.iter().enumerate() {
        let name = path.display().to_string();
        let open = OpenOptions { max_line_len: opts.max_line_len, threads: threads_for(path, a.threads) };
        let mut capture = open_capture_with(path, &open).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut opts = opts.clone();
        opts.replay.events_page_size = capture.events_page_size;
        let total = if name == "-" { None } else { std::fs::metadata(path).ok().map(|m| m.len()) };
        let mut bar =
            Bar { total, enabled: io::stderr().is_terminal() && total.is_none_or(|t| t > 8 << 20), shown: false };
        // Findings are written as they are decided; the summary at the end.
        let mut w = output::StreamWriter::new(
            io::stdout().lock(),
            a.out.format == Format::Json,
            color(&a.out),
            a.out.verbose,
            &name,
        );
        let title = format!("iosan analyze: {name} ({} semantics)", opts.replay.semantics.name());
        // A blank line between reports, written with the next report's first line.
        w.header(&if i > 0 { format!("\n{title}") } else { title });
        let summary = analyze_source_streaming(capture.source.as_mut(), &name, &opts, &mut bar, &mut w);
        drop(bar);
        let summary = summary.map_err(|e| anyhow::anyhow!("{e}"))?;
        let bugs = w.tally().bugs > 0;
        if let Some(why) = verdict::inconclusive(&summary, capture.format) {
            let _ = writeln!(io::stderr(), "iosan: error: {name}: {why}");
            status = 2;
            // Nothing was printed for it: no summary either (findings printed get theirs).
            if w.tally().by_kind.is_empty() {
                continue;
            }
        }
        if let Err(e) = w.summary(&summary, a.out.verbose) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(status.max(u8::from(bugs)));
            }
            return Err(e.into());
        }
        if bugs {
            status = status.max(1);
        }
    }
    Ok(status)
}

fn run_demo(o: &OutputArgs) -> Result<u8> {
    let opts = options(o)?;
    let reader = decode_reader(io::Cursor::new(DEMO_CAPTURE)).context("embedded capture")?;
    let report = analyze(
        reader,
        "embedded capture: Linux 6.12 + QEMU VT-d, injected DMA use-after-free (bug-strict)",
        &opts,
        &mut (),
    )?;
    if let Err(e) = emit(&report, o) {
        if e.kind() != io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    let found = report.bugs().next().is_some();
    Ok(u8::from(found))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Analyze(a) => run_analyze(a),
        Cmd::Demo(o) => run_demo(o),
        Cmd::Simulate(a) => simulate::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Record(a) => record_cmd::run(a).map(|c| u8::try_from(c).unwrap_or(2)),
        Cmd::Watch(a) => watch::run(a),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let _ = writeln!(io::stderr(), "iosan: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
