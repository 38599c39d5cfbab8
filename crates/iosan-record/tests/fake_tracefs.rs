//! The whole record flow against a fake tracefs tree in a temporary
//! directory, with a fake kernel that does what tracefs does on `mkdir`,
//! `rmdir` and `kprobe_events` writes. No root needed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use iosan_record::{
    apply_with, cleanup_with, collect, run_with, Action, Arch, IommuMode, ModeSource, Ops, PageStacks, Plan,
    PlanOptions, ProbeInput, RecordError, Stacks, SystemProbe, Tracefs, Workload,
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
            fs::write(d.join("trigger"), "")?;
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

/// A later kernel (a real 6.18.44 build has this shape, and 7.x):
/// `__iommu_map` became `iommu_map_nosync`, `fq_flush_iotlb` is inlined,
/// `free_iova_fast` stays; `dma_map_page` became `dma_map_phys`.
const KALLSYMS_7X: &str = "ffffffff81929360 T iommu_map_nosync\n\
ffffffff81929600 t __iommu_unmap\n\
ffffffff81928000 t __iommu_attach_device\n\
ffffffff81927000 T iommu_domain_free\n\
ffffffff81940000 t fq_flush_timeout\n\
ffffffff81941000 T free_iova_fast\n\
ffffffff81000000 T _stext\n";

fn events_7x() -> Vec<(&'static str, &'static str)> {
    EVENTS
        .iter()
        .map(|&(s, e)| match e {
            "dma_map_page" => (s, "dma_map_phys"),
            "dma_unmap_page" => (s, "dma_unmap_phys"),
            _ => (s, e),
        })
        .collect()
}

fn meta_of(capture: &str) -> Vec<(String, String)> {
    capture
        .lines()
        .map_while(|l| l.strip_prefix("# iosan-meta: "))
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

#[test]
fn symbol_choice_follows_the_kernel() {
    let events = events_7x();
    let dir = fake_root(&events, KALLSYMS_7X);
    let root = dir.path();
    put(&root.join("proc/sys/kernel/osrelease"), "7.1.0\n");
    put(&root.join("proc/self/smaps"), "Size:   4 kB\nKernelPageSize:        4 kB\n");
    let p = probe(root);
    assert!(p.kallsyms.contains("iommu_map_nosync") && !p.kallsyms.contains("__iommu_map"));
    assert_eq!(p.page_size, Some(4096));
    let plan = Plan::build(&p, &PlanOptions::default());
    let map = plan.kprobes.iter().find(|k| k.name == "iommu_map").expect("iommu_map kprobe");
    assert_eq!(map.function, "iommu_map_nosync");
    assert!(map.definition.starts_with("p:iosan/iommu_map iommu_map_nosync domain=%di "), "{}", map.definition);
    let ret = plan.kprobes.iter().find(|k| k.name == "iommu_map_ret").expect("ret probe");
    assert_eq!(ret.definition, "r:iosan/iommu_map_ret iommu_map_nosync ret=$retval:s32");
    // fq_flush_iotlb is inlined: fall back to free_iova_fast, and say what is lost
    assert!(!plan.kprobes.iter().any(|k| k.name == "fq_flush_iotlb"));
    let fb = plan.kprobes.iter().find(|k| k.name == "iova_free").expect("fallback kprobe");
    assert_eq!(fb.definition, "p:iosan/iova_free free_iova_fast iovad=%di pfn=%si pages=%dx");
    let all = plan.warnings.join("\n");
    assert!(all.contains("iosan:fq_flush_iotlb skipped"), "{all}");
    assert!(all.contains("falling back to kprobe iosan:iova_free on free_iova_fast"), "{all}");
    assert!(
        plan.choices.iter().any(|c| c.contains("iosan:iommu_map on iommu_map_nosync (its name by 6.18")),
        "{:?}",
        plan.choices
    );
    assert!(plan.choices.iter().any(|c| c.contains("dma:dma_map_phys and dma:dma_unmap_phys")), "{:?}", plan.choices);
    assert!(plan.events.contains(&("dma".into(), "dma_map_phys".into())));
    assert!(!plan.events.iter().any(|(_, e)| e == "dma_map_page"));
    assert_eq!(
        plan.flush_sources,
        ["kprobe:fq_flush_timeout", "kprobe:iova_free", "intel_iommu:cache_tag_flush_range"]
    );
    assert_eq!(
        plan.identity_sources,
        [
            "kprobe:iommu_map",
            "kprobe:iommu_unmap",
            "kprobe:iommu_attach",
            "kprobe:iommu_domain_free",
            "dma",
            "intel_iommu:did"
        ]
    );
    assert!(plan
        .offer_lines()
        .iter()
        .any(|l| l.starts_with("flush sources: kprobe:fq_flush_timeout, kprobe:iova_free, ")));

    // the capture says what was chosen
    let mut k = FakeKernel::new(root);
    apply_with(&mut k, &plan).unwrap();
    let out = root.join("capture.txt");
    collect(&plan, &p, None, &out).unwrap();
    let meta = meta_of(&fs::read_to_string(&out).unwrap());
    let get = |key: &str| meta.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(get("kernel_release"), Some("7.1.0"));
    assert_eq!(get("page_size"), Some("4096"));
    assert_eq!(
        get("flush_sources"),
        Some("kprobe:fq_flush_timeout,kprobe:iova_free,intel_iommu:cache_tag_flush_range")
    );
    assert!(get("kprobe_functions").unwrap_or("").contains("iommu_map=iommu_map_nosync,"), "{meta:?}");
    assert_eq!(get("stacks"), Some("off"));
    cleanup_with(&mut k, &tracefs(root)).unwrap();
}

#[test]
fn kernel_without_dma_events() {
    let no_dma: Vec<(&str, &str)> = EVENTS.iter().copied().filter(|(s, _)| *s != "dma").collect();
    let dir = fake_root(&no_dma, KALLSYMS);
    let plan = Plan::build(&probe(dir.path()), &PlanOptions::default());
    assert!(!plan.events.iter().any(|(s, _)| s == "dma"));
    assert!(!plan.identity_sources.iter().any(|s| s == "dma"), "{:?}", plan.identity_sources);
    assert!(plan.identity_sources.iter().any(|s| s == "kprobe:iommu_map"));
    assert!(!plan.choices.iter().any(|c| c.starts_with("dma:")));
    assert!(plan.warnings.iter().any(|w| w.contains("no dma:* events")));
    // with the VT-d flush events of a lazy kernel, the flush source is the tracepoint
    let mut with_flush = no_dma.clone();
    with_flush.push(("intel_iommu", "cache_tag_flush_all"));
    let dir = fake_root(&with_flush, KALLSYMS);
    let plan = Plan::build(&probe(dir.path()), &PlanOptions::default());
    assert_eq!(
        plan.flush_sources,
        [
            "kprobe:fq_flush_timeout",
            "kprobe:fq_flush_iotlb",
            "intel_iommu:cache_tag_flush_all",
            "intel_iommu:cache_tag_flush_range"
        ]
    );
    // no fallback while fq_flush_iotlb exists
    assert!(!plan.kprobes.iter().any(|k| k.name == "iova_free"));
}

#[test]
fn symbols_from_available_filter_functions_when_kallsyms_is_hidden() {
    let dir = fake_root(EVENTS, KALLSYMS);
    fs::remove_file(dir.path().join("proc/kallsyms")).unwrap();
    put(
        &tracefs(dir.path()).join("available_filter_functions"),
        "iommu_map_nosync\n__iommu_unmap\nfq_flush_iotlb [dma_iommu]\n",
    );
    let p = probe(dir.path());
    assert_eq!(p.symbols_from, Some("available_filter_functions"));
    let plan = Plan::build(&p, &PlanOptions::default());
    let names: Vec<(&str, &str)> = plan.kprobes.iter().map(|k| (k.name, k.function)).collect();
    assert_eq!(
        names,
        [
            ("iommu_map", "iommu_map_nosync"),
            ("iommu_map_ret", "iommu_map_nosync"),
            ("iommu_unmap", "__iommu_unmap"),
            ("iommu_unmap_ret", "__iommu_unmap"),
            ("fq_flush_iotlb", "fq_flush_iotlb"),
        ]
    );
    assert!(plan.warnings.iter().any(|w| w.contains("iommu_domain_free not in available_filter_functions")));
}

#[test]
fn stacks_on_maps_always_and_on_pages_only_with_a_filter() {
    let dir = fake_root(EVENTS, KALLSYMS);
    let root = dir.path();
    let p = probe(root);
    let plan =
        Plan::build(&p, &PlanOptions { stacks: Stacks::On { pages: PageStacks::Off }, ..PlanOptions::default() });
    let on: Vec<(&str, &str)> = plan.triggers.iter().map(|(s, e, _)| (s.as_str(), e.as_str())).collect();
    assert_eq!(
        on,
        [
            ("iommu", "map"),
            ("iommu", "unmap"),
            ("dma", "dma_map_page"),
            ("dma", "dma_unmap_page"),
            ("dma", "dma_map_sg")
        ]
    );
    assert!(plan.triggers.iter().all(|(_, _, t)| t == "stacktrace"));
    assert!(plan.warnings.iter().any(|w| w.contains("no stacks on page frees")));
    // more bytes per event when sizing
    let plain = Plan::build(&p, &PlanOptions::default());
    assert!(plan.buffer_size_kb > plain.buffer_size_kb, "{} vs {}", plan.buffer_size_kb, plain.buffer_size_kb);

    let filter = "comm == \"insmod\"".to_owned();
    let plan = Plan::build(
        &p,
        &PlanOptions { stacks: Stacks::On { pages: PageStacks::Filtered(filter) }, ..PlanOptions::default() },
    );
    let free = plan.triggers.iter().find(|(s, e, _)| s == "kmem" && e == "mm_page_free").expect("free trigger");
    assert_eq!(free.2, "stacktrace if comm == \"insmod\"");
    let mut k = FakeKernel::new(root);
    apply_with(&mut k, &plan).unwrap();
    let inst = tracefs(root).join("instances/iosan");
    assert_eq!(fs::read_to_string(inst.join("events/iommu/map/trigger")).unwrap(), "stacktrace\n");
    assert_eq!(
        fs::read_to_string(inst.join("events/kmem/mm_page_alloc/trigger")).unwrap(),
        "stacktrace if comm == \"insmod\"\n"
    );
    assert_eq!(fs::read_to_string(inst.join("events/printk/console/trigger")).unwrap(), "");
    let out = root.join("capture.txt");
    collect(&plan, &p, None, &out).unwrap();
    let meta = meta_of(&fs::read_to_string(&out).unwrap());
    assert!(meta.contains(&("stacks".into(), "map-unmap,pages-if comm == \"insmod\"".into())), "{meta:?}");
    cleanup_with(&mut k, &tracefs(root)).unwrap();
}

/// The fake kernel of [`FakeKernel`], as commands on `PATH` for the shell
/// script: `mkdir` of an instance fills it as tracefs would (control files,
/// a trace, per-CPU stats, every event of the top level and every kprobe
/// defined so far), `rmdir` of an instance removes it with its files.
const FAKE_MKDIR: &str = r#"#!/bin/sh
/bin/mkdir "$@" || exit $?
for d in "$@"; do
  case "$d" in */instances/*) ;; *) continue;; esac
  t=${d%/instances/*}
  printf '0\n' > "$d/tracing_on"; printf '7\n' > "$d/buffer_size_kb"
  printf '[local] global counter\n' > "$d/trace_clock"; : > "$d/trace_marker"
  printf '# tracer: nop\n#\n          insmod-194 [000] ..... 10.889546: console: hello\n' > "$d/trace"
  for c in 0 1; do
    /bin/mkdir -p "$d/per_cpu/cpu$c"
    printf 'entries: 10\noverrun: %s\ncommit overrun: 0\nbytes: 100\ndropped events: 0\n' "$c" > "$d/per_cpu/cpu$c/stats"
  done
  for e in "$t"/events/*/*/; do
    e=${e%/}; n=${e##*/}; s=${e%/*}; s=${s##*/}
    /bin/mkdir -p "$d/events/$s/$n"; printf '0\n' > "$d/events/$s/$n/enable"; : > "$d/events/$s/$n/trigger"
    printf '0\n' > "$d/events/$s/enable"
  done
  sed -n 's/^[pr][0-9]*:\([^/ ]*\)\/\([^ ]*\) .*/\1 \2/p' "$t/kprobe_events" | while read -r g n; do
    /bin/mkdir -p "$d/events/$g/$n"; printf '0\n' > "$d/events/$g/$n/enable"; : > "$d/events/$g/$n/trigger"
  done
done
"#;

const FAKE_RMDIR: &str = r#"#!/bin/sh
for d in "$@"; do
  case "$d" in */instances/*) rm -rf "$d";; *) /bin/rmdir "$d" || exit $?;; esac
done
"#;

fn busybox() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("busybox")).find(|p| p.is_file())
}

/// Runs the portable script under `busybox sh` against the fake tree.
fn run_script(root: &Path, script: &str, args: &[&str]) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let bin = root.join("fakebin");
    fs::create_dir_all(&bin).unwrap();
    for (name, text) in [("mkdir", FAKE_MKDIR), ("rmdir", FAKE_RMDIR)] {
        let p = bin.join(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let file = root.join("iosan-record.sh");
    fs::write(&file, script).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    std::process::Command::new(busybox().unwrap())
        .arg("sh")
        .arg(&file)
        .args(args)
        .env("PATH", path)
        .env(iosan_record::SCRIPT_ROOT_ENV, root)
        .env_remove(iosan_record::SCRIPT_TRACEFS_ENV)
        .output()
        .unwrap()
}

/// A 7.x x86_64 machine for the script: what `fake_root` has, plus the
/// files only the script reads.
fn script_root() -> tempfile::TempDir {
    let dir = fake_root(&events_7x(), KALLSYMS_7X);
    let r = dir.path();
    put(&r.join("proc/cpuinfo"), "processor\t: 0\nmodel name\t: fake\nprocessor\t: 1\n");
    put(&r.join("proc/self/smaps"), "Size:   4 kB\nKernelPageSize:        4 kB\n");
    put(&r.join("proc/sys/kernel/osrelease"), "7.1.0\n");
    dir
}

#[test]
fn printed_script_records_under_busybox() {
    if busybox().is_none() {
        eprintln!("skipped: busybox is not installed (apt-get install -y busybox)");
        return;
    }
    let dir = script_root();
    let root = dir.path();
    let t = tracefs(root);
    let script = iosan_record::portable_script(&Arch::X86_64, &PlanOptions::default(), &[]);
    let cap = root.join("capture.txt");
    let marker = root.join("marker.txt");
    let cmd = format!("echo \"$IOSAN_TRACE_MARKER\" > {}; exit 3", marker.display());
    let o = run_script(root, &script, &["record", cap.to_str().unwrap(), "sh", "-c", &cmd]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("kprobe iosan:iommu_map on iommu_map_nosync"), "{err}");
    assert!(err.contains("no kprobe iosan:fq_flush_iotlb"), "{err}");
    assert!(err.contains("kprobe iosan:iova_free on free_iova_fast"), "{err}");
    // what `record --apply` says too: the command failed, the buffer lost events
    assert!(err.contains("the command exited with status 3"), "{err}");
    assert!(err.contains("the ring buffer lost events"), "{err}");

    // global settings and kprobes: appended, foreign ones kept, ours deleted at the end
    assert_eq!(fs::read_to_string(t.join("saved_cmdlines_size")).unwrap(), "32768\n");
    let ke = fs::read_to_string(t.join("kprobe_events")).unwrap();
    let lines: Vec<&str> = ke.lines().collect();
    assert_eq!(lines[0], "p:other/keep do_sys_open");
    assert!(
        lines.contains(
            &"p:iosan/iommu_map iommu_map_nosync domain=%di dtype=+0(%di):u32 iova=%si paddr=%dx size=%cx prot=%r8:s32"
        ),
        "{ke}"
    );
    assert!(lines.contains(&"p:iosan/iova_free free_iova_fast iovad=%di pfn=%si pages=%dx"), "{ke}");
    assert!(!ke.contains("__iommu_map") && !ke.contains("fq_flush_iotlb"), "{ke}");
    let defined = lines.iter().filter(|l| l.starts_with("p:iosan/") || l.starts_with("r:iosan/")).count();
    let deleted = lines.iter().filter(|l| l.starts_with("-:iosan/")).count();
    assert_eq!((defined, deleted), (8, 8), "{ke}");
    assert!(!t.join("instances/iosan").exists(), "instance left behind");
    assert_eq!(
        fs::read_to_string(&marker).unwrap().trim(),
        t.join("instances/iosan/trace_marker").display().to_string()
    );

    // the capture: meta header, then the trace verbatim
    let text = fs::read_to_string(&cap).unwrap();
    let meta = meta_of(&text);
    let get = |key: &str| meta.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert!(get("tool").unwrap_or("").starts_with("iosan-record "), "{meta:?}");
    assert_eq!(get("kernel_release"), Some("7.1.0"));
    assert_eq!(get("arch"), Some("x86_64"));
    assert_eq!(get("page_size"), Some("4096"));
    assert_eq!(get("iommu_mode"), Some("strict"));
    assert_eq!(get("iommu_mode_source"), Some("iommu-group-types"));
    assert_eq!(get("cpus"), Some("2"));
    assert_eq!(get("mem_total_kb"), Some("4194304"));
    // 50,000 events/s x 60 s x 64 B = 187,500 KiB, the same as Plan::build
    assert_eq!(get("buffer_size_kb"), Some("187500"));
    assert_eq!(Plan::build(&probe(root), &PlanOptions::default()).buffer_size_kb, 187_500);
    let events = get("events").unwrap_or("");
    for e in [
        "kmem:mm_page_free",
        "iommu:map",
        "dma:dma_map_phys",
        "dma:dma_unmap_phys",
        "iosan:iommu_map",
        "printk:console",
    ] {
        assert!(events.split(',').any(|x| x == e), "{e} not in {events}");
    }
    assert!(!events.contains("qi_submit") && !events.contains("sched"), "{events}");
    assert_eq!(get("kprobes"), Some("iommu_map,iommu_map_ret,iommu_unmap,iommu_unmap_ret,iommu_attach,iommu_domain_free,fq_flush_timeout,iova_free"));
    assert!(get("kprobe_functions").unwrap_or("").starts_with("iommu_map=iommu_map_nosync,"), "{meta:?}");
    assert_eq!(
        get("identity_sources"),
        Some("kprobe:iommu_map,kprobe:iommu_unmap,kprobe:iommu_attach,kprobe:iommu_domain_free,dma,intel_iommu:did")
    );
    assert_eq!(
        get("flush_sources"),
        Some("kprobe:fq_flush_timeout,kprobe:iova_free,intel_iommu:cache_tag_flush_range")
    );
    assert_eq!(get("stacks"), Some("off"));
    assert_eq!(get("iommu_group.0"), Some("type=DMA devices=0000:00:02.0"));
    assert_eq!(get("command"), Some(format!("sh -c {cmd}").as_str()));
    assert_eq!(get("exit_code"), Some("3"));
    assert_eq!(get("cpu1.overrun"), Some("1"));
    assert_eq!(get("lost_events"), Some("1"));
    let body: Vec<&str> = text.lines().skip(meta.len()).collect();
    assert_eq!(body.first(), Some(&"# tracer: nop"), "{text}");
    // what analyze reads from it
    assert!(text.lines().take(meta.len()).all(|l| l.starts_with("# iosan-meta: ") && !l.contains('\t')));
}

#[test]
fn printed_script_steps_stacks_and_sources_under_busybox() {
    if busybox().is_none() {
        eprintln!("skipped: busybox is not installed (apt-get install -y busybox)");
        return;
    }
    let dir = script_root();
    let root = dir.path();
    let t = tracefs(root);
    let inst = t.join("instances/iosan");
    let stacks = Stacks::On { pages: PageStacks::Filtered("comm == \"insmod\"".into()) };
    let script = iosan_record::portable_script(&Arch::X86_64, &PlanOptions { stacks, ..PlanOptions::default() }, &[]);

    let o = run_script(root, &script, &["sources"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("identity sources offered: kprobe:iommu_map,"), "{out}");
    assert!(out.contains("flush sources offered: kprobe:fq_flush_timeout,kprobe:iova_free,"), "{out}");
    assert!(!inst.exists(), "sources changed something");

    let o = run_script(root, &script, &["setup"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |p: &str| fs::read_to_string(inst.join(p)).unwrap();
    assert_eq!(read("tracing_on"), "0\n");
    assert_eq!(read("trace_clock"), "global\n");
    // stacks take more room: 192 B per event
    assert_eq!(read("buffer_size_kb"), "262144\n");
    assert_eq!(read("events/kmem/mm_page_free/enable"), "1\n");
    assert_eq!(read("events/iosan/iommu_unmap/enable"), "1\n");
    assert_eq!(read("events/intel_iommu/qi_submit/enable"), "0\n");
    assert_eq!(read("events/iommu/map/trigger"), "stacktrace\n");
    assert_eq!(read("events/dma/dma_map_phys/trigger"), "stacktrace\n");
    assert_eq!(read("events/kmem/mm_page_free/trigger"), "stacktrace if comm == \"insmod\"\n");
    assert_eq!(read("events/printk/console/trigger"), "");
    run_script(root, &script, &["start"]);
    assert_eq!(read("tracing_on"), "1\n");
    run_script(root, &script, &["stop"]);
    assert_eq!(read("tracing_on"), "0\n");
    let cap = root.join("c.txt");
    let o = run_script(root, &script, &["collect", cap.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta = meta_of(&fs::read_to_string(&cap).unwrap());
    assert!(meta.contains(&("stacks".into(), "map-unmap,pages-if comm == \"insmod\"".into())), "{meta:?}");

    // a second setup finds the first one's leftovers and removes them first
    let o = run_script(root, &script, &["setup"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("a previous run left"), "{o:?}");
    let o = run_script(root, &script, &["cleanup"]);
    assert!(o.status.success());
    assert!(!inst.exists());

    // a script for another architecture defines no kprobes here, and says why
    // (the fake kprobe_events keeps deleted lines: count the definitions)
    let arm = iosan_record::portable_script(&Arch::Aarch64, &PlanOptions::default(), &[]);
    let defs = || {
        let text = fs::read_to_string(t.join("kprobe_events")).unwrap();
        text.lines().filter(|l| l.starts_with("p:") || l.starts_with("r:")).count()
    };
    let before = defs();
    let o = run_script(root, &arm, &["setup"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("this script is for aarch64 but this machine is x86_64"));
    assert_eq!(defs(), before);
    run_script(root, &arm, &["cleanup"]);
    // no argument: usage, exit 2
    assert_eq!(run_script(root, &arm, &[]).status.code(), Some(2));
}

#[test]
fn script_and_apply_write_the_same_metadata_keys() {
    if busybox().is_none() {
        eprintln!("skipped: busybox is not installed (apt-get install -y busybox)");
        return;
    }
    let dir = script_root();
    let root = dir.path();
    let script = iosan_record::portable_script(&Arch::X86_64, &PlanOptions::default(), &[]);
    let from_script = root.join("script.txt");
    let o = run_script(root, &script, &["record", from_script.to_str().unwrap(), "true"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let p = probe(root);
    let plan = Plan::build(&p, &PlanOptions::default());
    let mut k = FakeKernel::new(root);
    apply_with(&mut k, &plan).unwrap();
    let cmd = Workload::Command(vec!["true".into()]);
    let outcome = run_with(&mut k, &plan, &cmd, None).unwrap();
    let from_apply = root.join("apply.txt");
    collect(&plan, &p, Some(&outcome), &from_apply).unwrap();
    cleanup_with(&mut k, &tracefs(root)).unwrap();

    let keys = |f: &Path| {
        let mut v: Vec<String> = meta_of(&fs::read_to_string(f).unwrap()).into_iter().map(|(k, _)| k).collect();
        v.sort();
        v
    };
    // the fake instance's trace_clock holds what was written, without the
    // brackets the kernel shows around the chosen clock
    let mut script_keys = keys(&from_script);
    script_keys.push("trace_clock".into());
    script_keys.sort();
    assert_eq!(script_keys, keys(&from_apply));
    let values = |f: &Path| meta_of(&fs::read_to_string(f).unwrap());
    let (s, a) = (values(&from_script), values(&from_apply));
    for key in [
        "kernel_release",
        "page_size",
        "iommu_mode",
        "cpus",
        "buffer_size_kb",
        "kprobes",
        "kprobe_functions",
        "identity_sources",
        "flush_sources",
        "stacks",
        "lost_events",
    ] {
        let get = |v: &[(String, String)]| v.iter().find(|(k, _)| k == key).map(|(_, x)| x.clone());
        assert_eq!(get(&s), get(&a), "{key}");
    }
}
