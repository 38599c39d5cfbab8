//! `iosan record`: set up tracefs for a capture, record, collect, clean up.
//!
//! Without `--apply` (or with `--print`) it prints a self-contained POSIX
//! shell script that records on the target (it probes the kernel when it
//! runs, so it is complete even where tracefs is not mounted), for the host's
//! architecture or `--arch`. Without `--arch`, on a machine with tracefs, the
//! script opens with what this kernel offers and the warnings go to stderr.
//! With `--apply` it performs the set-up, records
//! while `-- COMMAND...` runs (or for `--duration` seconds), writes the
//! capture to `--out` and removes everything it added. `--cleanup` removes a
//! crashed run's instance and kprobes: if iosan is killed while recording,
//! tracing stays on and the kprobes stay defined until then.
//!
//! Exit status: 0 done, 2 error.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use iosan_record::{
    apply, cleanup, collect, execute, portable_script, run as record_run, Action, Arch, LiveOps, PageStacks, Plan,
    PlanOptions, ProbeInput, Stacks, SystemProbe, Tracefs, Workload, DEFAULT_DURATION_S,
};

/// Architectures `--arch` plans for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchArg {
    /// x86-64: kprobe arguments in `%di %si %dx %cx %r8 %r9`.
    #[value(name = "x86_64")]
    X86_64,
    /// 64-bit Arm: kprobe arguments in `%x0`..`%x7`.
    #[value(name = "aarch64", alias = "arm64")]
    Aarch64,
}

/// Arguments of `iosan record`.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Print the set-up as shell commands with reasons (the default).
    #[arg(long)]
    pub print: bool,
    /// Perform the set-up, record, write the capture to --out, then clean up.
    #[arg(long, conflicts_with = "cleanup")]
    pub apply: bool,
    /// Seconds to record when there is no COMMAND; the time limit of COMMAND
    /// otherwise. Also sizes the ring buffer.
    #[arg(long, value_name = "S")]
    pub duration: Option<u64>,
    /// The capture file to write.
    #[arg(long, value_name = "FILE", default_value = "iosan-capture.txt")]
    pub out: PathBuf,
    /// Remove iosan's tracefs instance and kprobes (left by a crashed run).
    #[arg(long)]
    pub cleanup: bool,
    /// Per-CPU ring buffer size in KiB, instead of the computed one.
    #[arg(long = "buffer-kb", value_name = "KIB")]
    pub buffer_kb: Option<u64>,
    /// Expected events per second on the whole machine (sizes the buffer).
    #[arg(long, value_name = "N")]
    pub rate: Option<u64>,
    /// Plan for another machine: the script's kprobes use this architecture's
    /// argument registers (default: this machine's). Nothing of this machine
    /// is probed then.
    #[arg(long, value_enum, value_name = "ARCH", conflicts_with_all = ["apply", "cleanup"])]
    pub arch: Option<ArchArg>,
    /// Record kernel stacks (ftrace `stacktrace` triggers) on every IOMMU and
    /// DMA-API map and unmap; with --stacks-filter also on page frees and
    /// allocations.
    #[arg(long)]
    pub stacks: bool,
    /// Stacks on the page frees and allocations this ftrace filter selects,
    /// tested in the kernel before unwinding (`comm == "insmod"`,
    /// `pfn >= 0x123000 && pfn < 0x124000`), or `all` (costly). Implies --stacks.
    #[arg(long = "stacks-filter", value_name = "FILTER")]
    pub stacks_filter: Option<String>,
    /// Root directory of the system to probe (for tests on a fake tree).
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub root: PathBuf,
    /// Command to record while it runs (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Effective uid from `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn probe(root: &Path) -> SystemProbe {
    SystemProbe::read(
        root,
        &ProbeInput { uid: effective_uid(), fallback_arch: Some(std::env::consts::ARCH.to_owned()) },
    )
}

fn warn(msg: &str) {
    eprintln!("iosan record: warning: {msg}");
}

fn fail(msg: &str) -> i32 {
    eprintln!("iosan record: error: {msg}");
    2
}

/// Runs `iosan record`. Returns the exit status.
///
/// # Errors
/// Only when stdout cannot be written for a reason other than a closed pipe.
pub fn run(args: &RecordArgs) -> anyhow::Result<i32> {
    let probe_now = probe(&args.root);
    if args.cleanup {
        return Ok(do_cleanup(&probe_now));
    }
    let opts = plan_options(args);
    if !args.apply {
        let text = print_text(args, &probe_now, &opts);
        let mut out = io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => {}
        }
        return Ok(0);
    }
    Ok(apply_and_record(args, probe_now, &opts))
}

fn plan_options(args: &RecordArgs) -> PlanOptions {
    let stacks = match args.stacks_filter.as_deref().map(str::trim) {
        Some("all") => Stacks::On { pages: PageStacks::All },
        Some(f) if !f.is_empty() => Stacks::On { pages: PageStacks::Filtered(f.to_owned()) },
        _ if args.stacks => Stacks::On { pages: PageStacks::Off },
        _ => Stacks::Off,
    };
    PlanOptions { duration_s: args.duration, events_per_sec: args.rate, buffer_kb: args.buffer_kb, stacks }
}

/// What `--print` writes: the portable script. With `--arch` it depends on
/// the arguments only; without, on a machine whose tracefs is mounted, it
/// opens with what this kernel offers (and the warnings go to stderr).
fn print_text(args: &RecordArgs, probe_now: &SystemProbe, opts: &PlanOptions) -> String {
    let arch = match args.arch {
        Some(ArchArg::X86_64) => Arch::X86_64,
        Some(ArchArg::Aarch64) => Arch::Aarch64,
        None => probe_now.arch.clone(),
    };
    let mut notes = Vec::new();
    if args.arch.is_none() && probe_now.tracefs_dir().is_some() {
        let plan = Plan::build(probe_now, opts);
        for w in &plan.warnings {
            warn(w);
        }
        notes.push(format!(
            "probed when printed, on {} ({}):",
            probe_now.kernel_release.as_deref().unwrap_or("an unknown kernel"),
            probe_now.arch.name()
        ));
        notes.extend(plan.offer_lines().into_iter().map(|l| format!("  {l}")));
    }
    portable_script(&arch, opts, &notes)
}

fn do_cleanup(probe: &SystemProbe) -> i32 {
    let Some(t) = probe.tracefs_dir() else {
        eprintln!("iosan record: nothing to clean up (tracefs is not mounted)");
        return 0;
    };
    match cleanup(t) {
        Ok(r) => {
            eprintln!(
                "iosan record: cleanup: instance {}, {} kprobe(s) deleted{}",
                if r.removed_instance { "removed" } else { "absent" },
                r.removed_kprobes.len(),
                if r.removed_kprobes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.removed_kprobes.join(", "))
                }
            );
            0
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn apply_and_record(args: &RecordArgs, mut probe_now: SystemProbe, opts: &PlanOptions) -> i32 {
    // tracefs not mounted: mount it, then look again (the event list and
    // everything else depend on it).
    if let Tracefs::Unmounted(p) = &probe_now.tracefs {
        let step = iosan_record::Step {
            action: Action::MountTracefs(p.clone()),
            reason: "mount tracefs".into(),
            required: true,
        };
        if let Err(e) = execute(&mut LiveOps, &step) {
            return fail(&e.to_string());
        }
        probe_now = probe(&args.root);
    }
    let plan = Plan::build(&probe_now, opts);
    for w in &plan.warnings {
        warn(w);
    }
    for l in plan.offer_lines() {
        eprintln!("iosan record: {l}");
    }
    let Some(tracefs) = plan.tracefs.clone().filter(|_| plan.recordable) else {
        return fail("tracefs is not available, nothing can be recorded");
    };
    let undo = |why: &str| -> i32 {
        let code = fail(why);
        if let Err(e) = cleanup(&tracefs) {
            warn(&format!("cleanup after the error failed too: {e}"));
        }
        code
    };
    match apply(&plan) {
        Ok(report) => {
            for s in &report.skipped {
                warn(&format!("skipped: {s}"));
            }
        }
        Err(e) => return undo(&e.to_string()),
    }
    let (workload, limit) = if args.command.is_empty() {
        let secs = args.duration.unwrap_or(DEFAULT_DURATION_S);
        (Workload::Wait(Duration::from_secs(secs)), None)
    } else {
        (Workload::Command(args.command.clone()), args.duration.map(Duration::from_secs))
    };
    eprintln!(
        "iosan record: recording {} events and {} kprobes, {} KiB buffer per CPU, {}",
        plan.events.len(),
        plan.kprobes.len(),
        plan.buffer_size_kb,
        match &workload {
            Workload::Command(c) => format!("while `{}` runs", c.join(" ")),
            Workload::Wait(d) => format!("for {} s", d.as_secs()),
        }
    );
    let outcome = match record_run(&plan, &workload, limit) {
        Ok(o) => o,
        Err(e) => return undo(&e.to_string()),
    };
    if outcome.timed_out {
        warn("the command was stopped by the --duration limit");
    }
    match outcome.exit_code {
        Some(0) | None if outcome.command.is_none() => {}
        Some(0) => {}
        Some(c) => warn(&format!("the command exited with status {c}")),
        None => warn("the command was killed by a signal"),
    }
    let summary = match collect(&plan, &probe_now, Some(&outcome), &args.out) {
        Ok(s) => s,
        Err(e) => return undo(&e.to_string()),
    };
    eprintln!(
        "iosan record: wrote {} ({} bytes of trace in {:.1} s; lost events: {}; kprobe misses: {})",
        args.out.display(),
        summary.trace_bytes,
        outcome.elapsed.as_secs_f64(),
        summary.lost_events,
        summary.kprobe_missed
    );
    if summary.lost_events > 0 {
        warn("the ring buffer lost events: results are incomplete; use a larger --buffer-kb or a shorter recording");
    }
    match cleanup(&tracefs) {
        Ok(_) => 0,
        Err(e) => fail(&format!("capture written, but cleanup failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    //! Golden output of `iosan record --print --arch ...`: the script must not
    //! depend on the machine that prints it. Regenerate the golden files with
    //! `IOSAN_BLESS=1 cargo test -p iosan record_cmd` and review the diff.

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        record: RecordArgs,
    }

    fn printed(argv: &[&str]) -> String {
        let cli = Cli::try_parse_from(std::iter::once("record").chain(argv.iter().copied())).unwrap();
        // A root with nothing in it: with --arch nothing of it may show.
        let probe_now = probe(Path::new("/nonexistent-iosan-golden-root"));
        print_text(&cli.record, &probe_now, &plan_options(&cli.record))
    }

    fn golden(name: &str, argv: &[&str]) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden").join(name);
        let got = printed(argv);
        if std::env::var_os("IOSAN_BLESS").is_some() {
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (IOSAN_BLESS=1 writes it)", path.display()));
        if got != want {
            let line = got.lines().zip(want.lines()).position(|(a, b)| a != b).map_or(0, |i| i + 1);
            panic!(
                "{} differs from `iosan record {}` at line {line} (IOSAN_BLESS=1 cargo test -p iosan record_cmd \
                 rewrites it)",
                path.display(),
                argv.join(" ")
            );
        }
    }

    #[test]
    fn print_aarch64_matches_golden() {
        golden("record-print-aarch64.sh", &["--print", "--arch", "aarch64"]);
    }

    #[test]
    fn print_x86_64_matches_golden() {
        golden("record-print-x86_64.sh", &["--print", "--arch", "x86_64"]);
    }

    #[test]
    fn print_with_stacks_matches_golden() {
        golden(
            "record-print-x86_64-stacks.sh",
            &["--print", "--arch", "x86_64", "--stacks-filter", "comm == \"insmod\"", "--duration", "240"],
        );
    }

    #[test]
    fn arch_is_for_printing_only() {
        assert!(Cli::try_parse_from(["record", "--apply", "--arch", "aarch64"]).is_err());
        assert!(Cli::try_parse_from(["record", "--print", "--arch", "arm64"]).is_ok());
        assert!(Cli::try_parse_from(["record", "--print", "--arch", "mips"]).is_err());
    }

    #[test]
    fn stack_options() {
        let parse = |argv: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("record").chain(argv.iter().copied())).unwrap();
            plan_options(&cli.record).stacks
        };
        assert_eq!(parse(&[]), Stacks::Off);
        assert_eq!(parse(&["--stacks"]), Stacks::On { pages: PageStacks::Off });
        assert_eq!(parse(&["--stacks-filter", "all"]), Stacks::On { pages: PageStacks::All });
        assert_eq!(
            parse(&["--stacks", "--stacks-filter", "order > 0"]),
            Stacks::On { pages: PageStacks::Filtered("order > 0".into()) }
        );
    }
}
