//! `iosan simulate`: run a workload on the kernel model.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use iosan_core::{Finding, PageSize, Semantics};
use iosan_model::{simulate, IommuKind, SimReport, SimSpec};
use iosan_trace::report::{Attribution, MapSite, MappingView, Summary};
use iosan_trace::{Report, TraceFinding};

use crate::{emit, OutputArgs, SemanticsArg};

/// File format of a written trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceFormat {
    /// ftrace text, as `cat /sys/kernel/tracing/trace` prints it.
    Text,
    /// trace.dat version 6, as `trace-cmd record --file-version 6` writes it.
    #[value(name = "trace.dat")]
    TraceDat,
}

/// Arguments of `iosan simulate`.
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// List workloads and bugs, one per line, and exit.
    #[arg(long)]
    list: bool,
    /// Workload (default: the bug's default workload, or nic-rx).
    #[arg(long)]
    workload: Option<String>,
    /// Bug to inject (see --list).
    #[arg(long)]
    bug: Option<String>,
    /// PRNG seed: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Iterations of the workload's main loop (packets, I/Os, buffers).
    #[arg(long, default_value_t = 200)]
    ops: u64,
    /// Lazy (flush-queue) unmap instead of strict.
    #[arg(long)]
    lazy: bool,
    /// IOMMU page-table format: vtd, arm-4k, arm-16k, arm-64k.
    #[arg(long, default_value = "vtd")]
    iommu: String,
    /// Leave the domain kprobe lines out of the written trace (as a stock kernel would).
    #[arg(long)]
    no_kprobes: bool,
    /// Also write what the model did to FILE (`-` for stdout), in `--trace-format`.
    #[arg(long)]
    trace_out: Option<PathBuf>,
    /// Format of `--trace-out`: ftrace text, or a trace.dat (version 6) as trace-cmd writes it.
    #[arg(long, value_enum, default_value = "text")]
    trace_format: TraceFormat,
    #[command(flatten)]
    out: OutputArgs,
}

/// Runs `iosan simulate`.
pub fn run(a: &SimulateArgs) -> Result<u8> {
    if a.list {
        let mut out = io::stdout().lock();
        for (kind, name, desc) in iosan_model::list() {
            if writeln!(out, "{kind} {name}  {desc}").is_err() {
                break;
            }
        }
        return Ok(0);
    }
    let spec = SimSpec {
        workload: a.workload.clone().unwrap_or_default(),
        bug: a.bug.clone(),
        seed: a.seed,
        iterations: a.ops,
        semantics: match a.out.semantics {
            SemanticsArg::Exact => Semantics::Exact,
            SemanticsArg::Upstream => Semantics::Upstream,
        },
        strict: !a.lazy,
        iommu: IommuKind::from_name(&a.iommu)
            .with_context(|| format!("--iommu {}: expected vtd, arm-4k, arm-16k or arm-64k", a.iommu))?,
        kprobes: !a.no_kprobes,
        tracedat: a.trace_format == TraceFormat::TraceDat,
        page_size: PageSize::from_bytes(a.out.page_size.unwrap_or(4096))
            .context("--page-size: expected 4096, 16384 or 65536")?,
    };
    let report = match &a.trace_out {
        None => simulate(&spec, None)?,
        Some(p) if p.as_os_str() == "-" => {
            let mut w = BufWriter::new(io::stdout().lock());
            let r = simulate(&spec, Some(&mut w))?;
            w.flush()?;
            return Ok(u8::from(r.bugs().next().is_some()));
        }
        Some(p) => {
            let mut w = BufWriter::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?);
            let r = simulate(&spec, Some(&mut w))?;
            w.flush().with_context(|| format!("writing {}", p.display()))?;
            r
        }
    };
    let found = report.bugs().next().is_some();
    let view = to_report(&report, &spec);
    if let Err(e) = emit(&view, &a.out) {
        if e.kind() != io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    Ok(u8::from(found))
}

/// The model's findings in the report shape `analyze` prints.
pub fn to_report(r: &SimReport, spec: &SimSpec) -> Report {
    let page_lg2 = spec.page_size.lg2();
    let findings = r.findings.iter().map(|f| view(f, page_lg2)).collect();
    let summary = Summary {
        semantics: spec.semantics.name(),
        input: format!(
            "simulated workload {}{} (seed {}, {} ops, {})",
            r.workload,
            spec.bug.as_deref().map(|b| format!(" with bug {b}")).unwrap_or_default(),
            spec.seed,
            spec.iterations,
            if spec.strict { "strict" } else { "lazy" }
        ),
        mode: if spec.strict { "strict" } else { "lazy" },
        from_model: true,
        page_size: spec.page_size.bytes(),
        page_size_source: "simulation",
        exposure_measurable: true,
        exposure: iosan_trace::report::Exposure {
            frees: r.exposure.queued_unmaps.min(r.exposure.pages),
            pages: r.exposure.pages,
            bytes: r.exposure.bytes,
            longest_ns: r.exposure.longest_window_ns,
            unflushed_at_end: 0,
        },
        events_read: r.stats.trace_lines,
        ..Summary::default()
    };
    Report { findings, summary }
}

fn view(f: &Finding, page_lg2: u32) -> TraceFinding {
    let mut t = TraceFinding::blank(f.kind);
    t.pfn = f.pfn.map(|p| p.get());
    t.npages = f.npages;
    t.phys = f.pfn.and_then(|p| p.get().checked_shl(page_lg2));
    t.count = f.count;
    t.size = f.size;
    t.iova = f.iova.map(|i| i.get());
    t.domain = f.domain.map(|d| format!("{:#x}", d.0));
    t.note = f.invalid.map(|i| i.describe().to_string());
    t.attribution = Attribution::Kprobe;
    if let Some(m) = f.mappings.first() {
        t.device = m.device.as_ref().map(|d| d.to_string());
        t.domain = Some(format!("{:#x}", m.domain.0));
        if let Some(phys) = t.phys {
            t.iova = Some(m.iova.get().wrapping_add(phys.wrapping_sub(m.phys.get())));
            t.size = f.npages << page_lg2;
        }
        t.mapped_at = Some(MapSite { time_ns: m.meta.when, ..MapSite::default() });
    }
    t.mappings = f
        .mappings
        .iter()
        .map(|m| MappingView {
            domain: Some(format!("{:#x}", m.domain.0)),
            device: m.device.as_ref().map(|d| d.to_string()),
            iova: m.iova.get(),
            phys: m.phys.get(),
            len: m.len,
            mapped_at: MapSite { time_ns: m.meta.when, ..MapSite::default() },
            unmapped_ns: None,
        })
        .collect();
    t
}
