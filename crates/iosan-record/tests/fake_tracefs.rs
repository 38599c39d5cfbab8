//! The whole record flow against a fake tracefs tree in a temporary
//! directory, with a fake kernel that does what tracefs does on `mkdir`,
//! `rmdir` and `kprobe_events` writes. No root needed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use iosan_record::{
    apply_with, cleanup_with, collect, run_with, Action, Arch, IommuMode, ModeSource, Ops, Plan, PlanOptions,
    ProbeInput, RecordError, SystemProbe, Tracefs, Workload,
};

const EVENTS: &[(&str, &str)] = &[
    ("kmem", "mm_page_alloc"),
    ("kmem", "mm_page_free"),
    ("kmem", "mm_page_free_batched"),
    ("iommu", "map"),
    ("iommu", "unmap"),
    ("iommu", "attach_device_to_domain"),
    ("dma", "dma_map_page"),
    ("dma", "dma_unmap_page"),
    ("dma", "dma_map_sg"),
    ("intel_iommu", "cache_tag_flush_range"),
    ("intel_iommu", "qi_submit"),
    ("printk", "console"),
    ("ftrace", "print"),
    ("sched", "sched_switch"),
];

const KALLSYMS: &str = "ffffffff81929360 T __iommu_map\n\
ffffffff81929600 t __iommu_unmap\n\
ffffffff81928000 t __iommu_attach_device\n\
ffffffff81927000 T iommu_domain_free\n\
ffffffff81940000 t fq_flush_timeout\n\
ffffffff81940100 t fq_flush_iotlb\n\
ffffffff81000000 T _stext\n";

fn put(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, text).unwrap();
}

/// A fake machine: 2 CPUs, 4 GiB, x86_64, strict VT-d, tracefs mounted.
fn fake_root(events: &[(&str, &str)], kallsyms: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let t = r.join("sys/kernel/tracing");
    put(&t.join("trace"), "# tracer: nop\n");
    put(&t.join("trace_clock"), "[local] global counter uptime perf mono\n");
    put(&t.join("saved_cmdlines_size"), "128\n");
    put(&t.join("kprobe_events"), "p:other/keep do_sys_open\n");
    put(&t.join("kprobe_profile"), "");
    fs::create_dir_all(t.join("instances")).unwrap();
    for (s, e) in events {
        put(&t.join("events").join(s).join(e).join("enable"), "0\n");
    }
    put(&r.join("proc/kallsyms"), kallsyms);
    put(&r.join("proc/meminfo"), "MemTotal:        4194304 kB\nMemFree:  100 kB\n");
    put(&r.join("proc/version"), "Linux version 6.12.107+deb12-amd64 (fake)\n");
    put(&r.join("proc/cmdline"), "console=ttyS0 intel_iommu=on iommu.strict=1\n");
    put(&r.join("proc/sys/kernel/arch"), "x86_64\n");
    put(&r.join("sys/devices/system/cpu/online"), "0-1\n");
    for (g, ty, dev) in [(0, "DMA", "0000:00:02.0"), (1, "DMA", "0000:00:03.0")] {
        let gd = r.join(format!("sys/kernel/iommu_groups/{g}"));
        put(&gd.join("type"), &format!("{ty}\n"));
        fs::create_dir_all(gd.join("devices").join(dev)).unwrap();
    }
    dir
}

fn tracefs(root: &Path) -> PathBuf {
    root.join("sys/kernel/tracing")
}

/// Plays the kernel's part for what tracefs does beyond plain files.
struct FakeKernel {
    tracefs: PathBuf,
    writes: Vec<(PathBuf, String)>,
}

impl FakeKernel {
    fn new(root: &Path) -> Self {
        Self { tracefs: tracefs(root), writes: Vec::new() }
    }
    fn instance_dirs(&self) -> Vec<PathBuf> {
        fs::read_dir(self.tracefs.join("instances"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

fn copy_event_tree(from: &Path, to: &Path) -> io::Result<()> {
    for sys in fs::read_dir(from)?.flatten() {
        for ev in fs::read_dir(sys.path())?.flatten() {
            let d = to.join(sys.file_name()).join(ev.file_name());
            fs::create_dir_all(&d)?;
            fs::write(d.join("enable"), "0\n")?;
        }
    }
    Ok(())
}

impl Ops for FakeKernel {
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        self.writes.push((path.to_path_buf(), value.to_owned()));
        if !path.exists() {
            return Err(io::Error::from_raw_os_error(2));
        }
        fs::write(path, format!("{value}\n"))
    }
    fn append(&mut self, path: &Path, line: &str) -> io::Result<()> {
        self.writes.push((path.to_path_buf(), format!(">>{line}")));
        assert!(path.ends_with("kprobe_events"), "append only to kprobe_events");
        let text = fs::read_to_string(path)?;
        let mut trees = vec![self.tracefs.join("events")];
        trees.extend(self.instance_dirs().into_iter().map(|i| i.join("events")));
        if let Some(target) = line.strip_prefix("-:") {
            let (group, name) = target.split_once('/').unwrap();
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| !l.split_whitespace().next().unwrap_or("").ends_with(&format!(":{target}")))
                .collect();
            fs::write(path, kept.iter().map(|l| format!("{l}\n")).collect::<String>())?;
            for t in trees {
                let _ = fs::remove_dir_all(t.join(group).join(name));
            }
        } else {
            let head = line.split_whitespace().next().unwrap();
            let (group, name) = head.split_once(':').unwrap().1.split_once('/').unwrap();
            fs::write(path, format!("{text}{line}\n"))?;
            for t in trees {
                let d = t.join(group).join(name);
                fs::create_dir_all(&d)?;
                fs::write(d.join("enable"), "0\n")?;
            }
        }
        Ok(())
    }
    fn mkdir(&mut self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)?;
        for (f, v) in
            [("tracing_on", "1"), ("buffer_size_kb", "7"), ("trace_clock", "[local] global"), ("trace_marker", "")]
        {
            fs::write(path.join(f), format!("{v}\n"))?;
        }
        fs::write(
            path.join("trace"),
            "# tracer: nop\n#\n          insmod-194 [000] ..... 10.889546: console: hello\n",
        )?;
        for c in 0..2 {
            let d = path.join(format!("per_cpu/cpu{c}"));
            fs::create_dir_all(&d)?;
            fs::write(
                d.join("stats"),
                format!("entries: 10\noverrun: {c}\ncommit overrun: 0\nbytes: 100\ndropped events: 0\n"),
            )?;
        }
        copy_event_tree(&self.tracefs.join("events"), &path.join("events"))
    }
    fn rmdir(&mut self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }
    fn mount_tracefs(&mut self, _path: &Path) -> io::Result<()> {
        Err(io::Error::other("no mounting in tests"))
    }
}

fn probe(root: &Path) -> SystemProbe {
    SystemProbe::read(root, &ProbeInput { uid: Some(0), fallback_arch: None })
}

#[test]
fn probe_reads_the_facts() {
    let dir = fake_root(EVENTS, KALLSYMS);
    let p = probe(dir.path());
    assert_eq!(p.tracefs, Tracefs::Mounted(tracefs(dir.path())));
    assert!(p.has_event("dma", "dma_map_page"));
    assert!(!p.has_event("dma", "dma_alloc"));
    assert_eq!(p.kallsyms.len(), 6);
    assert!(p.kprobe_events);
    assert_eq!(p.mem_total_kb, Some(4_194_304));
    assert_eq!(p.cpus, 2);
    assert_eq!(p.arch, Arch::X86_64);
    assert_eq!(p.iommu_mode, IommuMode::Strict);
    assert_eq!(p.mode_source, ModeSource::GroupTypes);
    assert_eq!(p.cmdline_mode, None);
    assert!(p.kernel_version.as_deref().unwrap_or("").contains("6.12.107"));
    assert_eq!(p.groups.len(), 2);
    assert_eq!(p.groups[0].devices, vec!["0000:00:02.0"]);
    assert!(p.stale_kprobes.is_empty());
    assert!(!p.stale_instance);
    assert!(p.trace_clocks.iter().any(|c| c == "global"));
}

#[test]
fn plan_uses_our_instance_and_orders_kprobes_first() {
    let dir = fake_root(EVENTS, KALLSYMS);
    let plan = Plan::build(&probe(dir.path()), &PlanOptions::default());
    assert!(plan.recordable);
    let inst = tracefs(dir.path()).join("instances/iosan");
    let mkdir = plan.steps.iter().position(|s| s.action == Action::Mkdir(inst.clone())).expect("mkdir step");
    let last_kprobe =
        plan.steps.iter().rposition(|s| matches!(&s.action, Action::Append { .. })).expect("kprobe steps");
    assert!(last_kprobe < mkdir);
    for s in &plan.steps {
        assert!(!s.reason.is_empty());
        if let Action::Write { path, .. } = &s.action {
            let global = path.ends_with("saved_cmdlines_size");
            assert!(global || path.starts_with(&inst), "{} outside the instance", path.display());
        }
    }
    assert_eq!(plan.kprobes.len(), 8);
    assert!(plan.events.contains(&("kmem".into(), "mm_page_free".into())));
    // noisy, not wanted
    assert!(!plan.events.contains(&("intel_iommu".into(), "qi_submit".into())));
    assert!(!plan.events.iter().any(|(s, _)| s == "sched"));
    assert_eq!(plan.trace_clock.as_deref(), Some("global"));
    assert!(plan.warnings.iter().all(|w| !w.contains("kprobe")), "{:?}", plan.warnings);
}

#[test]
fn buffer_is_bounded_by_ram_and_explained() {
    let dir = fake_root(EVENTS, KALLSYMS);
    let p = probe(dir.path());
    let cap = 4_194_304 / 8 / 2;
    let plan = Plan::build(
        &p,
        &PlanOptions {
            duration_s: Some(3600),
            events_per_sec: Some(1_000_000),
            buffer_kb: None,
            ..PlanOptions::default()
        },
    );
    assert!(plan.buffer_size_kb <= cap);
    assert!(plan.buffer_reason.contains("capped"));
    assert!(plan.warnings.iter().any(|w| w.contains("capped at 1/8 of RAM")));
    let small = Plan::build(
        &p,
        &PlanOptions { duration_s: Some(10), events_per_sec: Some(10_000), buffer_kb: None, ..PlanOptions::default() },
    );
    // 10k/s * 10 s * 64 B = 6250 KiB in all, twice the even share per CPU, capped at the total
    assert_eq!(small.buffer_size_kb, 6248);
    let forced = Plan::build(&p, &PlanOptions { buffer_kb: Some(1024), ..PlanOptions::default() });
    assert_eq!(forced.buffer_size_kb, 1024);
    assert!(forced.buffer_reason.contains("--buffer-kb"));
}

#[test]
fn missing_pieces_become_warnings_that_say_what_is_lost() {
    let no_dma: Vec<(&str, &str)> = EVENTS.iter().copied().filter(|(s, _)| *s != "dma").collect();
    let kallsyms: String = KALLSYMS.lines().filter(|l| !l.contains("fq_flush")).map(|l| format!("{l}\n")).collect();
    let dir = fake_root(&no_dma, &kallsyms);
    let mut p = probe(dir.path());
    p.uid = Some(1000);
    let plan = Plan::build(&p, &PlanOptions::default());
    let all = plan.warnings.join("\n");
    assert!(all.contains("not running as root"), "{all}");
    assert!(all.contains("no dma:* events (they arrived in Linux 6.12)"), "{all}");
    assert!(all.contains("fq_flush_timeout not in /proc/kallsyms"), "{all}");
    assert!(all.contains("lazy exposure window"), "{all}");
    assert_eq!(plan.kprobes.len(), 6);
}

#[test]
fn arm64_uses_x_registers() {
    let dir = fake_root(EVENTS, KALLSYMS);
    put(&dir.path().join("proc/sys/kernel/arch"), "aarch64\n");
    let plan = Plan::build(&probe(dir.path()), &PlanOptions::default());
    let map = plan.kprobes.iter().find(|k| k.name == "iommu_map").unwrap();
    assert!(map.definition.contains("domain=%x0"), "{}", map.definition);
    assert!(map.definition.contains("size=%x3"), "{}", map.definition);
}

#[test]
fn lazy_mode_from_group_types_and_disagreeing_cmdline() {
    let dir = fake_root(EVENTS, KALLSYMS);
    put(&dir.path().join("sys/kernel/iommu_groups/0/type"), "DMA-FQ\n");
    put(&dir.path().join("sys/kernel/iommu_groups/1/type"), "DMA-FQ\n");
    let p = probe(dir.path());
    assert_eq!(p.iommu_mode, IommuMode::Lazy);
    assert_eq!(p.cmdline_mode, Some(IommuMode::Strict));
    let plan = Plan::build(&p, &PlanOptions::default());
    assert!(plan.warnings.iter().any(|w| w.contains("the command line asks for strict")));
}

#[test]
fn shell_rendering_appends_kprobes_and_explains_each_step() {
    let dir = fake_root(EVENTS, KALLSYMS);
    let plan = Plan::build(&probe(dir.path()), &PlanOptions::default());
    let sh = plan.to_shell();
    let ke = tracefs(dir.path()).join("kprobe_events").display().to_string();
    assert!(sh.contains(&format!(
        "echo 'p:iosan/iommu_map __iommu_map domain=%di dtype=+0(%di):u32 iova=%si paddr=%dx size=%cx prot=%r8:s32' >> {ke}"
    )), "{sh}");
    // `>` would delete every kprobe on the system
    assert_eq!(sh.matches(&format!(" > {ke}")).count(), 0, "{sh}");
    assert!(sh.contains(&format!("echo -:iosan/iommu_map >> {ke}")), "{sh}");
    assert!(sh.contains("/instances/iosan/tracing_on"));
    assert!(sh.contains("# ---- clean up"));
    // every command line is preceded by a comment line
    let lines: Vec<&str> = sh.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("echo ") || l.starts_with("mkdir ") {
            assert!(lines[i - 1].starts_with('#'), "no reason before {l}");
        }
    }
}

#[test]
fn apply_run_collect_cleanup_round_trip() {
    let dir = fake_root(EVENTS, KALLSYMS);
    let root = dir.path();
    let t = tracefs(root);
    let p = probe(root);
    let plan = Plan::build(&p, &PlanOptions { duration_s: Some(1), ..PlanOptions::default() });
    let mut k = FakeKernel::new(root);
    let report = apply_with(&mut k, &plan).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let inst = t.join("instances/iosan");
    assert_eq!(fs::read_to_string(inst.join("tracing_on")).unwrap(), "0\n");
    assert_eq!(fs::read_to_string(inst.join("events/kmem/mm_page_free/enable")).unwrap(), "1\n");
    assert_eq!(fs::read_to_string(inst.join("events/iosan/iommu_unmap/enable")).unwrap(), "1\n");
    assert_eq!(fs::read_to_string(t.join("saved_cmdlines_size")).unwrap(), "32768\n");
    let ke = fs::read_to_string(t.join("kprobe_events")).unwrap();
    assert!(ke.starts_with("p:other/keep"), "foreign kprobe kept: {ke}");
    assert_eq!(ke.lines().filter(|l| l.contains(":iosan/")).count(), 8);

    let outcome = run_with(&mut k, &plan, &Workload::Wait(Duration::ZERO), None).unwrap();
    let on: Vec<&String> =
        k.writes.iter().filter(|(p, _)| p.ends_with("instances/iosan/tracing_on")).map(|(_, v)| v).collect();
    assert_eq!(on, ["0", "1", "0"]);

    put(
        &t.join("kprobe_profile"),
        "  iommu_map                                     18175               0\n  \
         iommu_unmap                                   13877              10\n  \
         keep                                              5               7\n",
    );
    let out = root.join("capture.txt");
    let summary = collect(&plan, &p, Some(&outcome), &out).unwrap();
    let text = fs::read_to_string(&out).unwrap();
    let header: Vec<&str> = text.lines().take_while(|l| l.starts_with("# iosan-meta: ")).collect();
    let body: Vec<&str> = text.lines().skip(header.len()).collect();
    assert_eq!(body[0], "# tracer: nop");
    let has = |kv: &str| header.iter().any(|l| l.strip_prefix("# iosan-meta: ") == Some(kv));
    assert!(has("iommu_mode=strict"), "{header:?}");
    assert!(has("cpus=2"));
    assert!(has("cpu1.overrun=1"));
    assert!(has("lost_events=1"));
    assert!(has("kprobe.iommu_unmap.nmissed=10"));
    assert!(has("iommu_group.0=type=DMA devices=0000:00:02.0"));
    assert!(has("cmdline=console=ttyS0 intel_iommu=on iommu.strict=1"));
    assert!(!header.iter().any(|l| l.contains("kprobe.keep")));
    assert!(header.iter().any(|l| l.starts_with("# iosan-meta: tool=iosan-record ")));
    assert!(header.iter().any(|l| l.starts_with("# iosan-meta: kernel=Linux version 6.12.107")));
    assert_eq!(summary.lost_events, 1);
    assert_eq!(summary.kprobe_missed, 10);

    let removed = cleanup_with(&mut k, &t).unwrap();
    assert!(removed.removed_instance);
    assert_eq!(removed.removed_kprobes.len(), 8);
    assert!(!inst.exists());
    assert_eq!(fs::read_to_string(t.join("kprobe_events")).unwrap(), "p:other/keep do_sys_open\n");
    assert!(!t.join("events/iosan/iommu_map").exists());
    // idempotent
    assert_eq!(cleanup_with(&mut k, &t).unwrap(), Default::default());
}

#[test]
fn leftovers_of_a_crashed_run_are_removed_first() {
    let dir = fake_root(EVENTS, KALLSYMS);
    let root = dir.path();
    let t = tracefs(root);
    let mut k = FakeKernel::new(root);
    // a crashed run: our instance and one kprobe still there
    k.append(&t.join("kprobe_events"), "p:iosan/iommu_map __iommu_map domain=%di").unwrap();
    k.mkdir(&t.join("instances/iosan")).unwrap();
    let p = probe(root);
    assert!(p.stale_instance);
    assert_eq!(p.stale_kprobes, vec!["iommu_map"]);
    let plan = Plan::build(&p, &PlanOptions::default());
    assert!(plan.warnings.iter().any(|w| w.contains("previous iosan run")));
    assert!(matches!(plan.steps[1].action, Action::Rmdir(_)), "{:?}", plan.steps[..3].to_vec());
    apply_with(&mut k, &plan).unwrap();
    let ke = fs::read_to_string(t.join("kprobe_events")).unwrap();
    assert_eq!(ke.lines().filter(|l| l.contains(":iosan/iommu_map ")).count(), 1, "{ke}");
    cleanup_with(&mut k, &t).unwrap();
}

#[test]
fn no_tracefs_means_nothing_to_record() {
    let dir = tempfile::tempdir().unwrap();
    let p = probe(dir.path());
    assert_eq!(p.tracefs, Tracefs::Missing);
    let plan = Plan::build(&p, &PlanOptions::default());
    assert!(!plan.recordable);
    let mut k = FakeKernel::new(dir.path());
    assert!(matches!(apply_with(&mut k, &plan), Err(RecordError::NoTracefs { .. })));
}

#[test]
fn unmounted_tracefs_is_mounted_first() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("sys/kernel/tracing")).unwrap();
    let plan = Plan::build(&probe(dir.path()), &PlanOptions::default());
    assert!(matches!(plan.steps[0].action, Action::MountTracefs(_)));
    assert!(!plan.recordable);
    assert!(plan.to_shell().contains("mount -t tracefs nodev "));
}

#[test]
fn commands_report_exit_codes_and_time_limits() {
    let dir = fake_root(EVENTS, KALLSYMS);
    let root = dir.path();
    let plan = Plan::build(&probe(root), &PlanOptions::default());
    let mut k = FakeKernel::new(root);
    apply_with(&mut k, &plan).unwrap();
    let marker_file = root.join("marker-path");
    let script = format!("echo \"$IOSAN_TRACE_MARKER\" > {}; exit 3", marker_file.display());
    let cmd = Workload::Command(vec!["sh".into(), "-c".into(), script]);
    let o = run_with(&mut k, &plan, &cmd, None).unwrap();
    assert_eq!(o.exit_code, Some(3));
    assert!(!o.timed_out);
    assert!(fs::read_to_string(&marker_file).unwrap().trim().ends_with("instances/iosan/trace_marker"));
    let slow = Workload::Command(vec!["sleep".into(), "5".into()]);
    let o = run_with(&mut k, &plan, &slow, Some(Duration::from_millis(100))).unwrap();
    assert!(o.timed_out);
    assert!(o.elapsed < Duration::from_secs(4));
    let bad = Workload::Command(vec!["/nonexistent/iosan-test-binary".into()]);
    let e = run_with(&mut k, &plan, &bad, None).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/iosan-test-binary"));
    // tracing was switched off again despite the failure
    assert_eq!(fs::read_to_string(root.join("sys/kernel/tracing/instances/iosan/tracing_on")).unwrap(), "0\n");
}
