//! Facts about a live system, read from files under a root directory.
//!
//! [`SystemProbe::read`] looks at `<root>/sys/kernel/tracing` (or the older
//! `<root>/sys/kernel/debug/tracing`), `<root>/proc/*` and
//! `<root>/sys/kernel/iommu_groups`. On a real system the root is `/`; tests
//! point it at a fake tree in a temporary directory. Probing never fails: a
//! file that cannot be read is a fact too (the feature is absent or hidden),
//! and the [`crate::Plan`] built from the probe says what that costs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Name of our tracefs instance and of our kprobe group.
pub const GROUP: &str = "iosan";

/// Kernel functions iosan may put kprobes on (for IOMMU domain identity
/// and lazy-mode flushes), alternatives included; the plan picks per kernel.
pub const KPROBE_FUNCTIONS: [&str; 8] = [
    "__iommu_map",
    "iommu_map_nosync",
    "__iommu_unmap",
    "__iommu_attach_device",
    "iommu_domain_free",
    "fq_flush_timeout",
    "fq_flush_iotlb",
    "free_iova_fast",
];

/// Trace event systems iosan may use (both spellings of the SMMUv3 one).
pub const EVENT_SYSTEMS: [&str; 8] =
    ["iommu", "dma", "intel_iommu", "arm-smmu-v3", "arm_smmu_v3", "amd_iommu", "kmem", "printk"];

/// CPU architecture, which decides the register names in kprobe fetchargs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arch {
    /// x86-64: arguments in `%di %si %dx %cx %r8 %r9`.
    X86_64,
    /// 64-bit Arm: arguments in `%x0`..`%x7`.
    Aarch64,
    /// Anything else: no kprobe arguments are defined for it.
    Other(String),
}

impl Arch {
    /// Parses `uname -m` output (`x86_64`, `aarch64`, `arm64`, ...).
    #[must_use]
    pub fn from_uname(machine: &str) -> Self {
        match machine.trim() {
            "x86_64" | "amd64" => Self::X86_64,
            "aarch64" | "arm64" => Self::Aarch64,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Register holding the `n`-th integer argument at function entry
    /// (0-based), in kprobe fetcharg syntax, or `None` if unknown.
    #[must_use]
    pub fn arg(&self, n: usize) -> Option<&'static str> {
        const X86: [&str; 6] = ["%di", "%si", "%dx", "%cx", "%r8", "%r9"];
        const ARM: [&str; 8] = ["%x0", "%x1", "%x2", "%x3", "%x4", "%x5", "%x6", "%x7"];
        match self {
            Self::X86_64 => X86.get(n).copied(),
            Self::Aarch64 => ARM.get(n).copied(),
            Self::Other(_) => None,
        }
    }

    /// The `uname -m` spelling.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
            Self::Other(s) => s,
        }
    }
}

/// How the IOMMU invalidates its TLB after an unmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuMode {
    /// Every unmap is flushed before it returns (`iommu.strict=1`, domain
    /// type `DMA`).
    Strict,
    /// Unmaps are flushed later from a flush queue (`iommu.strict=0`, domain
    /// type `DMA-FQ`): a freed page can stay reachable for milliseconds.
    Lazy,
    /// Groups disagree (some `DMA`, some `DMA-FQ`).
    Mixed,
    /// Devices bypass translation (`identity` domains, `iommu=pt`): nothing
    /// is mapped, so there is nothing to check.
    Passthrough,
    /// No IOMMU group and nothing on the command line says.
    Unknown,
}

impl IommuMode {
    /// Stable lower-case name used in the capture metadata.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Lazy => "lazy",
            Self::Mixed => "mixed",
            Self::Passthrough => "passthrough",
            Self::Unknown => "unknown",
        }
    }
}

/// Where the [`IommuMode`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeSource {
    /// The default domain types in `/sys/kernel/iommu_groups/*/type` (what
    /// the kernel actually did).
    GroupTypes,
    /// The kernel command line (`iommu.strict=`, `iommu.passthrough=`,
    /// `iommu=pt`).
    Cmdline,
    /// Neither.
    None,
}

/// One IOMMU group as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IommuGroup {
    /// Group number.
    pub id: u32,
    /// Default domain type (`DMA`, `DMA-FQ`, `identity`, ...), if readable.
    pub domain_type: Option<String>,
    /// Device names (PCI BDFs) in the group, sorted.
    pub devices: Vec<String>,
}

/// State of tracefs under the probed root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracefs {
    /// Mounted at this path (it has a `trace` file).
    Mounted(PathBuf),
    /// The mount point exists but nothing is mounted on it.
    Unmounted(PathBuf),
    /// Neither mount point exists.
    Missing,
}

/// What the binary tells the probe about the process (the library does not
/// look at its own process).
#[derive(Clone, Debug, Default)]
pub struct ProbeInput {
    /// Effective user id of the process that will apply the plan, if known.
    pub uid: Option<u32>,
    /// `uname -m` to use when `<root>/proc/sys/kernel/arch` is unreadable.
    pub fallback_arch: Option<String>,
}

/// Facts read from a live system (or a fake tree) that decide the [`crate::Plan`].
#[derive(Clone, Debug)]
pub struct SystemProbe {
    /// The root the facts were read from (`/` on a live system).
    pub root: PathBuf,
    /// Where tracefs is.
    pub tracefs: Tracefs,
    /// Every `(system, event)` under `events/`.
    pub events: BTreeSet<(String, String)>,
    /// Which of [`KPROBE_FUNCTIONS`] appear in `/proc/kallsyms` (or, when
    /// that is unreadable, in tracefs `available_filter_functions`).
    pub kallsyms: BTreeSet<String>,
    /// Whether a symbol list could be read at all.
    pub kallsyms_readable: bool,
    /// Which list [`Self::kallsyms`] came from: `/proc/kallsyms` or
    /// `available_filter_functions`.
    pub symbols_from: Option<&'static str>,
    /// The CPU page size in bytes (`KernelPageSize` of `/proc/self/smaps`).
    pub page_size: Option<u64>,
    /// `/proc/sys/kernel/osrelease` (`uname -r`).
    pub kernel_release: Option<String>,
    /// Whether tracefs has a `kprobe_events` file (CONFIG_KPROBE_EVENTS).
    pub kprobe_events: bool,
    /// Kprobes of our group already defined (left by an earlier run):
    /// event names without the group.
    pub stale_kprobes: Vec<String>,
    /// Whether our instance directory already exists.
    pub stale_instance: bool,
    /// `MemTotal` in KiB.
    pub mem_total_kb: Option<u64>,
    /// Number of online CPUs (at least 1).
    pub cpus: u32,
    /// Contents of `/proc/version`, trimmed.
    pub kernel_version: Option<String>,
    /// Contents of `/proc/cmdline`, trimmed.
    pub cmdline: Option<String>,
    /// Architecture.
    pub arch: Arch,
    /// IOMMU groups, by number.
    pub groups: Vec<IommuGroup>,
    /// Effective IOMMU invalidation mode.
    pub iommu_mode: IommuMode,
    /// Where [`Self::iommu_mode`] came from.
    pub mode_source: ModeSource,
    /// What the command line says, when it disagrees with the group types.
    pub cmdline_mode: Option<IommuMode>,
    /// Clocks offered by `trace_clock`.
    pub trace_clocks: Vec<String>,
    /// Current global `saved_cmdlines_size`.
    pub saved_cmdlines_size: Option<u64>,
    /// Effective uid, as passed in.
    pub uid: Option<u32>,
}

fn read_trim(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Strips a leading `/` so `root.join` stays under `root`.
pub(crate) fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

impl SystemProbe {
    /// Reads every fact from the tree under `root`.
    #[must_use]
    pub fn read(root: &Path, input: &ProbeInput) -> Self {
        let tracefs = find_tracefs(root);
        let mut events = BTreeSet::new();
        let mut kprobe_events = false;
        let mut stale_kprobes = Vec::new();
        let mut stale_instance = false;
        let mut trace_clocks = Vec::new();
        let mut saved_cmdlines_size = None;
        if let Tracefs::Mounted(t) = &tracefs {
            events = list_events(&t.join("events"));
            let ke = t.join("kprobe_events");
            kprobe_events = ke.is_file();
            if let Ok(text) = fs::read_to_string(&ke) {
                stale_kprobes = our_kprobes(&text);
            }
            stale_instance = t.join("instances").join(GROUP).is_dir();
            if let Some(c) = read_trim(&t.join("trace_clock")) {
                trace_clocks =
                    c.split_whitespace().map(|w| w.trim_matches(|ch| ch == '[' || ch == ']').to_owned()).collect();
            }
            saved_cmdlines_size = read_trim(&t.join("saved_cmdlines_size")).and_then(|s| s.parse().ok());
        }
        // kallsyms first; without it (kptr_restrict does not hide names,
        // but a locked-down /proc may), the functions ftrace can hook.
        let mut symbols_from = None;
        let mut kallsyms = BTreeSet::new();
        if let Ok(text) = fs::read_to_string(under(root, "/proc/kallsyms")) {
            kallsyms = find_symbols(&text, 2);
            symbols_from = Some("/proc/kallsyms");
        } else if let Some(t) = tracefs_mounted(&tracefs) {
            if let Ok(text) = fs::read_to_string(t.join("available_filter_functions")) {
                kallsyms = find_symbols(&text, 0);
                symbols_from = Some("available_filter_functions");
            }
        }
        let kallsyms_readable = symbols_from.is_some();
        let cmdline = read_trim(&under(root, "/proc/cmdline"));
        let groups = read_groups(&under(root, "/sys/kernel/iommu_groups"));
        let group_mode = mode_from_groups(&groups);
        let cmd_mode = cmdline.as_deref().and_then(mode_from_cmdline);
        let (iommu_mode, mode_source, cmdline_mode) = match (group_mode, cmd_mode) {
            (Some(g), c) => (g, ModeSource::GroupTypes, c.filter(|c| *c != g)),
            (None, Some(c)) => (c, ModeSource::Cmdline, None),
            (None, None) => (IommuMode::Unknown, ModeSource::None, None),
        };
        let arch = read_trim(&under(root, "/proc/sys/kernel/arch"))
            .filter(|s| !s.is_empty())
            .or_else(|| input.fallback_arch.clone())
            .map_or(Arch::Other("unknown".into()), |m| Arch::from_uname(&m));
        Self {
            root: root.to_path_buf(),
            tracefs,
            events,
            kallsyms,
            kallsyms_readable,
            symbols_from,
            page_size: fs::read_to_string(under(root, "/proc/self/smaps")).ok().and_then(|t| page_size(&t)),
            kernel_release: read_trim(&under(root, "/proc/sys/kernel/osrelease")).filter(|s| !s.is_empty()),
            kprobe_events,
            stale_kprobes,
            stale_instance,
            mem_total_kb: fs::read_to_string(under(root, "/proc/meminfo")).ok().and_then(|t| mem_total_kb(&t)),
            cpus: count_cpus(root),
            kernel_version: read_trim(&under(root, "/proc/version")),
            cmdline,
            arch,
            groups,
            iommu_mode,
            mode_source,
            cmdline_mode,
            trace_clocks,
            saved_cmdlines_size,
            uid: input.uid,
        }
    }

    /// The tracefs directory, if mounted.
    #[must_use]
    pub fn tracefs_dir(&self) -> Option<&Path> {
        match &self.tracefs {
            Tracefs::Mounted(p) => Some(p),
            _ => None,
        }
    }

    /// Whether `system:event` exists on this kernel.
    #[must_use]
    pub fn has_event(&self, system: &str, event: &str) -> bool {
        self.events.contains(&(system.to_owned(), event.to_owned()))
    }

    /// Whether any event of `system` exists.
    #[must_use]
    pub fn has_system(&self, system: &str) -> bool {
        self.events.iter().any(|(s, _)| s == system)
    }

    /// Whether root privileges are known to be missing.
    #[must_use]
    pub fn not_root(&self) -> bool {
        matches!(self.uid, Some(u) if u != 0)
    }
}

fn tracefs_mounted(t: &Tracefs) -> Option<&Path> {
    match t {
        Tracefs::Mounted(p) => Some(p),
        _ => None,
    }
}

fn find_tracefs(root: &Path) -> Tracefs {
    let candidates = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    for c in candidates {
        let p = under(root, c);
        if p.join("trace").is_file() {
            return Tracefs::Mounted(p);
        }
    }
    let first = under(root, candidates[0]);
    if first.is_dir() {
        Tracefs::Unmounted(first)
    } else {
        Tracefs::Missing
    }
}

fn list_events(dir: &Path) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let Ok(systems) = fs::read_dir(dir) else {
        return out;
    };
    for sys in systems.flatten() {
        let Ok(sys_name) = sys.file_name().into_string() else {
            continue;
        };
        if !sys.path().is_dir() {
            continue;
        }
        let Ok(evs) = fs::read_dir(sys.path()) else {
            continue;
        };
        for ev in evs.flatten() {
            if ev.path().is_dir() {
                if let Ok(name) = ev.file_name().into_string() {
                    out.insert((sys_name.clone(), name));
                }
            }
        }
    }
    out
}

/// Event names of our group in `kprobe_events` text
/// (`p:iosan/iommu_map __iommu_map ...`).
pub(crate) fn our_kprobes(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(head) = line.split_whitespace().next() else {
            continue;
        };
        let Some((_, name)) = head.split_once(':') else {
            continue;
        };
        if let Some((group, event)) = name.split_once('/') {
            if group == GROUP && !event.is_empty() {
                out.push(event.to_owned());
            }
        }
    }
    out
}

/// The [`KPROBE_FUNCTIONS`] named in a symbol list whose name is word
/// `column` of each line: 2 in kallsyms (`ffffffff81929360 T __iommu_map`,
/// modules add `\t[mod]`), 0 in `available_filter_functions`
/// (`__iommu_map`, or `name [mod]`).
fn find_symbols(text: &str, column: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(name) = line.split_whitespace().nth(column) else {
            continue;
        };
        if KPROBE_FUNCTIONS.contains(&name) {
            out.insert(name.to_owned());
        }
    }
    out
}

/// `KernelPageSize:        4 kB` in bytes.
fn page_size(smaps: &str) -> Option<u64> {
    smaps.lines().find_map(|l| {
        let rest = l.strip_prefix("KernelPageSize:")?;
        let mut it = rest.split_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        (it.next()? == "kB").then(|| n.checked_mul(1024)).flatten()
    })
}

fn mem_total_kb(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Parses a CPU list such as `0-3,6,8-9`.
fn cpu_list_len(list: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        n = n.checked_add(b.checked_sub(a)?.checked_add(1)?)?;
    }
    (n > 0).then_some(n)
}

fn count_cpus(root: &Path) -> u32 {
    if let Some(n) = read_trim(&under(root, "/sys/devices/system/cpu/online")).as_deref().and_then(cpu_list_len) {
        return n;
    }
    let n = fs::read_to_string(under(root, "/proc/cpuinfo"))
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

fn read_groups(dir: &Path) -> Vec<IommuGroup> {
    let mut groups = BTreeMap::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    for e in entries.flatten() {
        let Some(id) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let mut devices: Vec<String> = fs::read_dir(e.path().join("devices"))
            .map(|d| d.flatten().filter_map(|x| x.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        devices.sort();
        groups.insert(id, IommuGroup { id, domain_type: read_trim(&e.path().join("type")), devices });
    }
    groups.into_values().collect()
}

fn mode_from_groups(groups: &[IommuGroup]) -> Option<IommuMode> {
    let (mut strict, mut lazy, mut ident) = (0, 0, 0);
    for g in groups {
        match g.domain_type.as_deref() {
            Some("DMA") => strict += 1,
            Some("DMA-FQ") => lazy += 1,
            Some("identity") => ident += 1,
            _ => {}
        }
    }
    match (strict > 0, lazy > 0) {
        (true, true) => Some(IommuMode::Mixed),
        (true, false) => Some(IommuMode::Strict),
        (false, true) => Some(IommuMode::Lazy),
        (false, false) if ident > 0 => Some(IommuMode::Passthrough),
        (false, false) => None,
    }
}

/// The mode the kernel command line asks for (the last word wins, as in the
/// kernel's own parsing).
fn mode_from_cmdline(cmdline: &str) -> Option<IommuMode> {
    let mut mode = None;
    for word in cmdline.split_whitespace() {
        let (key, val) = word.split_once('=').unwrap_or((word, ""));
        let on = matches!(val, "1" | "y" | "Y" | "on");
        let off = matches!(val, "0" | "n" | "N" | "off");
        match key {
            "iommu.strict" if on => mode = Some(IommuMode::Strict),
            "iommu.strict" if off => mode = Some(IommuMode::Lazy),
            "iommu.passthrough" if on => mode = Some(IommuMode::Passthrough),
            "iommu" if val.split(',').any(|v| v == "pt") => mode = Some(IommuMode::Passthrough),
            "intel_iommu" | "amd_iommu" if val.split(',').any(|v| v == "strict" || v == "fullflush") => {
                mode = Some(IommuMode::Strict);
            }
            _ => {}
        }
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_modes() {
        assert_eq!(mode_from_cmdline("quiet iommu.strict=0"), Some(IommuMode::Lazy));
        assert_eq!(mode_from_cmdline("iommu.strict=0 iommu.strict=1"), Some(IommuMode::Strict));
        assert_eq!(mode_from_cmdline("iommu=pt"), Some(IommuMode::Passthrough));
        assert_eq!(mode_from_cmdline("intel_iommu=on,strict"), Some(IommuMode::Strict));
        assert_eq!(mode_from_cmdline("console=ttyS0"), None);
    }

    #[test]
    fn every_catalog_function_is_looked_for() {
        for f in crate::catalog::kprobe_functions() {
            assert!(KPROBE_FUNCTIONS.contains(&f), "{f}");
        }
        for f in KPROBE_FUNCTIONS {
            assert!(crate::catalog::kprobe_functions().any(|c| c == f), "{f}");
        }
    }

    #[test]
    fn symbol_lists_and_page_size() {
        let k = find_symbols("ffff0000 t iommu_map_nosync\nffff0001 T free_iova_fast\t[iova]\nffff2 t other\n", 2);
        assert_eq!(k.into_iter().collect::<Vec<_>>(), ["free_iova_fast", "iommu_map_nosync"]);
        let f = find_symbols("__iommu_map\nfq_flush_iotlb [dma_iommu]\nx\n", 0);
        assert_eq!(f.into_iter().collect::<Vec<_>>(), ["__iommu_map", "fq_flush_iotlb"]);
        assert_eq!(page_size("Size: 4 kB\nKernelPageSize:       16 kB\n"), Some(16384));
        assert_eq!(page_size("KernelPageSize: 4 MB\n"), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list_len("0-1\n"), Some(2));
        assert_eq!(cpu_list_len("0-3,6,8-9"), Some(7));
        assert_eq!(cpu_list_len("3-1"), None);
        assert_eq!(cpu_list_len(""), None);
    }

    #[test]
    fn arch_registers() {
        assert_eq!(Arch::from_uname("x86_64").arg(0), Some("%di"));
        assert_eq!(Arch::from_uname("arm64").arg(3), Some("%x3"));
        assert_eq!(Arch::from_uname("riscv64").arg(0), None);
    }

    #[test]
    fn kprobe_lines_of_our_group_only() {
        let text = "p:iosan/iommu_map __iommu_map domain=%di\n\
                    r10:iosan/iommu_map_ret __iommu_map ret=$retval:s32\n\
                    p:lab/iommu_map __iommu_map\n";
        assert_eq!(our_kprobes(text), vec!["iommu_map", "iommu_map_ret"]);
    }

    #[test]
    fn group_types_beat_cmdline() {
        let g = |t: &str| IommuGroup { id: 0, domain_type: Some(t.into()), devices: vec![] };
        assert_eq!(mode_from_groups(&[g("DMA"), g("DMA")]), Some(IommuMode::Strict));
        assert_eq!(mode_from_groups(&[g("DMA-FQ")]), Some(IommuMode::Lazy));
        assert_eq!(mode_from_groups(&[g("DMA-FQ"), g("DMA")]), Some(IommuMode::Mixed));
        assert_eq!(mode_from_groups(&[g("identity")]), Some(IommuMode::Passthrough));
        assert_eq!(mode_from_groups(&[]), None);
    }
}
