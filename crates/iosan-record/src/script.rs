//! A self-contained POSIX shell script that records on a machine iosan
//! never saw: it probes the kernel when it runs.
//!
//! [`portable_script`] renders it for one architecture from the same tables
//! as [`crate::Plan`] ([`crate::catalog`]), so it enables the same events
//! and kprobes, with the same reasons, and writes the same `# iosan-meta:`
//! keys as [`crate::collect`]. Each optional event or kprobe is guarded by a
//! run-time test (does the event directory exist? is the function in
//! `/proc/kallsyms` or `available_filter_functions`?), and where kernels
//! differ the script picks among alternatives (`__iommu_map` or
//! `iommu_map_nosync`; `dma_map_phys` or `dma_map_page`) or falls back
//! (`free_iova_fast` where `fq_flush_iotlb` is inlined), saying what is lost.
//!
//! The output depends only on its arguments, never on the machine that
//! renders it: the golden tests compare it byte for byte.
//!
//! Two variables let a test run it against a fake tree:
//! [`SCRIPT_TRACEFS_ENV`] (the tracefs directory) and [`SCRIPT_ROOT_ENV`]
//! (a prefix for `/proc` and `/sys`).

use std::fmt::Write as _;

use crate::catalog::{
    kprobe_line, kprobe_source, KprobeSpec, Role, Stacks, DMA_MAP_PAIRS, EVENT_FLUSH, EVENT_IDENTITY, KPROBES,
    PAGE_STACK_EVENTS, STACK_EVENTS, WANTED, WANTED_SYSTEMS,
};
use crate::plan::{bytes_per_event, sh_quote, PlanOptions, DEFAULT_DURATION_S, DEFAULT_EVENTS_PER_SEC};
use crate::probe::{Arch, GROUP};

/// The variable that points the script at a tracefs directory.
pub const SCRIPT_TRACEFS_ENV: &str = "IOSAN_TRACEFS";
/// The variable that prefixes every `/proc` and `/sys` path of the script.
pub const SCRIPT_ROOT_ENV: &str = "IOSAN_ROOT";

const TEMPLATE: &str = include_str!("script_template.sh");

/// The recording script for `arch`, sized and configured by `opts`.
///
/// `host_notes` are extra comment lines placed after the usage comment
/// (what the machine that printed it offers); pass none for a script that
/// depends only on `arch` and `opts`.
#[must_use]
pub fn portable_script(arch: &Arch, opts: &PlanOptions, host_notes: &[String]) -> String {
    let mut host = String::new();
    if !host_notes.is_empty() {
        host.push_str("#\n");
        for n in host_notes {
            let _ = writeln!(host, "# {}", one_line(n));
        }
    }
    let stacks_comment = match &opts.stacks {
        Stacks::Off => String::new(),
        s => format!("# stacks: {}\n", one_line(&s.meta())),
    };
    host.push_str(&stacks_comment);
    TEMPLATE
        .replace("@HOST@\n", &host)
        .replace("@ARCH@", arch.name())
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"))
        .replace("@DURATION@", &opts.duration_s.unwrap_or(DEFAULT_DURATION_S).to_string())
        .replace("@RATE@", &opts.events_per_sec.unwrap_or(DEFAULT_EVENTS_PER_SEC).to_string())
        .replace("@BUFFER_KB@", &opts.buffer_kb.map_or(String::new(), |b| b.to_string()))
        .replace("@BYTES_PER_EVENT@", &bytes_per_event(&opts.stacks).to_string())
        .replace("'@STACKS@'", &sh_quote(&opts.stacks.meta()))
        .replace("@KPROBES@", &kprobes_section(arch))
        .replace("@EVENTS@", &events_section())
        .replace("@STACKS_SETUP@", &stacks_section(&opts.stacks))
        .replace("@SOURCES@", &sources_section())
}

/// A comment must stay on one line.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// `uname -m` spellings of `arch`, as a `case` pattern.
fn arch_pattern(arch: &Arch) -> String {
    match arch {
        Arch::X86_64 => "x86_64|amd64".into(),
        Arch::Aarch64 => "aarch64|arm64".into(),
        Arch::Other(a) => sh_quote(a),
    }
}

fn kprobes_section(arch: &Arch) -> String {
    let mut s = String::new();
    if let Arch::Other(a) = arch {
        let _ = writeln!(
            s,
            "  say \"no kprobe argument registers known for {} (x86_64 and aarch64 are): no IOMMU domain \
             pointers; attribution only through dma:* events and vendor domain ids\"",
            one_line(a).replace(['"', '$', '`', '\\'], "")
        );
        return s;
    }
    s.push_str(
        "  if [ ! -f \"$T/kprobe_events\" ]; then\n    \
         say \"kprobes are not available (no kprobe_events: CONFIG_KPROBE_EVENTS off, or locked down): \
         no IOMMU domain pointers; attribution only through dma:* events and vendor domain ids\"\n    \
         return 0\n  fi\n",
    );
    let _ = write!(
        s,
        "  # the registers below are {arch}'s; another machine needs its own script\n  \
         case \"$(machine)\" in\n    {pat}) ;;\n    \
         *) say \"this script is for {arch} but this machine is $(machine): no kprobes \
         (iosan record --print --arch $(machine) makes the right script)\"; return 0;;\n  esac\n",
        arch = arch.name(),
        pat = arch_pattern(arch)
    );
    s.push_str(
        "  [ -r \"$R/proc/kallsyms\" ] || [ -r \"$T/available_filter_functions\" ] \\\n    \
         || say \"no symbol list readable: each kprobe is tried and the kernel's answer decides\"\n",
    );
    let mut flush_note = false;
    for spec in KPROBES {
        s.push('\n');
        if spec.role == Role::Flush && !flush_note {
            flush_note = true;
            s.push_str(match arch {
                Arch::Aarch64 => {
                    "  # lazy mode: SMMUv3 and virtio-iommu have no flush tracepoints, so the\n  \
                     # flush-queue kprobes below are the only way to see when a flush happened\n"
                }
                _ => {
                    "  # lazy mode: VT-d shows its flushes as intel_iommu:* events; AMD has no\n  \
                     # flush tracepoints, so there the flush-queue kprobes below are the only way\n"
                }
            });
        }
        kprobe_block(&mut s, arch, spec);
    }
    s
}

fn kprobe_block(s: &mut String, arch: &Arch, spec: &KprobeSpec) {
    let _ = writeln!(s, "  # {GROUP}:{}: {}", spec.name, spec.gives);
    let alts: Vec<String> = spec.candidates.iter().map(|c| format!("{} ({})", c.function, c.when)).collect();
    let _ = writeln!(s, "  # on {}", alts.join(", else "));
    let mut indent = "  ";
    if let Some(primary) = spec.fallback_for {
        let _ = writeln!(s, "  # only where {GROUP}:{primary} could not be set up");
        let _ = writeln!(s, "  if ! has_kp {primary}; then");
        indent = "    ";
    }
    for (i, c) in spec.candidates.iter().enumerate() {
        let Some(line) = kprobe_line(arch, spec.name, c.function) else {
            continue;
        };
        let kw = if i == 0 { "if" } else { "elif" };
        let _ = writeln!(
            s,
            "{indent}{kw} have_sym {f} && kprobe {n} {f} {d}; then :",
            f = c.function,
            n = spec.name,
            d = sh_quote(&line)
        );
    }
    let names: Vec<&str> = spec.candidates.iter().map(|c| c.function).collect();
    let fallback = KPROBES
        .iter()
        .find(|f| f.fallback_for == Some(spec.name))
        .map_or(String::new(), |f| format!("; falling back to {GROUP}:{}", f.name));
    let _ = writeln!(
        s,
        "{indent}else lost {} {} {}\n{indent}fi",
        spec.name,
        sh_quote(&names.join(" nor ")),
        sh_quote(&format!("{}{fallback}", spec.gives))
    );
    if spec.fallback_for.is_some() {
        s.push_str("  fi\n");
    }
}

fn events_section() -> String {
    let mut s = String::new();
    for w in WANTED {
        let _ = writeln!(s, "  # {}:{}: {}", w.system, w.event, w.gives);
        let _ = writeln!(s, "  ev {} {}", w.system, w.event);
    }
    let names: Vec<String> = DMA_MAP_PAIRS.iter().map(|p| format!("{}/{} ({})", p.map, p.unmap, p.when)).collect();
    let _ =
        writeln!(s, "  # dma streaming maps and unmaps with device and physical address: {}", names.join(", else "));
    for (i, p) in DMA_MAP_PAIRS.iter().enumerate() {
        let kw = if i == 0 { "if" } else { "elif" };
        let _ = writeln!(s, "  {kw} have_ev dma {m}; then ev dma {m}; ev dma {u}", m = p.map, u = p.unmap);
    }
    s.push_str(
        "  elif [ -d \"$I/events/dma\" ]; then say \"dma:* events without dma_map_phys or dma_map_page: \
         single-page DMA-API maps are not seen\"\n  fi\n",
    );
    for (system, gives) in WANTED_SYSTEMS {
        let _ = writeln!(s, "  # {system}:*: {gives}");
        let _ = writeln!(s, "  sys {system}");
    }
    s.push_str("  # our kprobes, enabled in our instance only\n  for k in $KP; do ev \"$G\" \"$k\"; done\n");
    s.push_str("  # what this kernel cannot show, and what that costs\n");
    let checks: &[(&str, &str)] = &[
        (
            "have_ev kmem mm_page_free || have_ev kmem mm_page_free_batched",
            "no kmem:mm_page_free event: page frees are invisible, so no freed-while-mapped check is possible",
        ),
        ("have_ev kmem mm_page_alloc", "no kmem:mm_page_alloc event: allocated-while-mapped cannot be checked"),
        (
            "{ have_ev iommu map && have_ev iommu unmap; }",
            "no iommu:map/unmap events (CONFIG_IOMMU_API tracepoints): there is no mapping to check frees against",
        ),
        (
            "[ -d \"$I/events/dma\" ]",
            "no dma:* events (they arrived in Linux 6.12): device attribution comes only from kprobes (attach) \
             and vendor events such as intel_iommu domain ids",
        ),
        ("have_ev printk console", "no printk:console event: kernel messages are not in the capture"),
    ];
    for (test, msg) in checks {
        let _ = writeln!(s, "  {test} || say {}", sh_quote(msg));
    }
    s.push_str(
        "  iommu_mode\n  case \"$MODE\" in\n    \
         passthrough) say \"the IOMMU is in passthrough (identity domains): devices reach memory without \
         mappings; only dma:* events can show a bug\";;\n    \
         unknown) say \"no IOMMU groups and nothing on the command line: the IOMMU may be off \
         (intel_iommu=on / amd_iommu=on), and no iommu:map event will appear\";;\n  esac\n",
    );
    s
}

fn stacks_section(stacks: &Stacks) -> String {
    let mut s = String::new();
    if matches!(stacks, Stacks::Off) {
        s.push_str("  # no stack traces (iosan record --stacks adds them)\n  :\n");
        return s;
    }
    s.push_str(
        "  # the kernel stack of every map and unmap (IOMMU and DMA API) and coherent\n  \
         # allocation: they come at the DMA rate, so a stack on each is affordable\n",
    );
    for (sys, ev) in STACK_EVENTS {
        let _ = writeln!(s, "  stack {sys} {ev} stacktrace");
    }
    match stacks.page_trigger() {
        Some(t) => {
            s.push_str(
                "  # page frees and allocations fire for every page on the machine: a stack\n  \
                 # only on those the filter selects, tested in the kernel before any unwinding\n",
            );
            for (sys, ev) in PAGE_STACK_EVENTS {
                let _ = writeln!(s, "  stack {sys} {ev} {}", sh_quote(&t));
            }
        }
        None => s.push_str(
            "  # no stacks on page frees and allocations (they fire for every page on the\n  \
             # machine); iosan record --stacks-filter 'comm == \"NAME\"' adds them for one task\n",
        ),
    }
    s
}

fn sources_section() -> String {
    let mut s = String::new();
    for (list, role) in [("IDS", Role::Identity), ("FLS", Role::Flush)] {
        for spec in KPROBES.iter().filter(|k| k.role == role) {
            let funcs: Vec<&str> = spec.candidates.iter().map(|c| c.function).collect();
            let guard = spec.fallback_for.map_or(String::new(), |p| {
                let pf: Vec<&str> = KPROBES
                    .iter()
                    .find(|k| k.name == p)
                    .map(|k| k.candidates.iter().map(|c| c.function).collect())
                    .unwrap_or_default();
                format!("! kp_src {p} {} && ", pf.join(" "))
            });
            let _ = writeln!(
                s,
                "  {guard}kp_src {} {} && {list}=\"${list},{}\"",
                spec.name,
                funcs.join(" "),
                kprobe_source(spec.name)
            );
        }
        let table = if role == Role::Identity { EVENT_IDENTITY } else { EVENT_FLUSH };
        let mut sources: Vec<&str> = Vec::new();
        for (src, _, _) in table {
            if !sources.contains(src) {
                sources.push(src);
            }
        }
        for src in sources {
            let tests: Vec<String> =
                table.iter().filter(|(x, _, _)| *x == src).map(|(_, sys, ev)| format!("$t {sys} {ev}")).collect();
            let _ = writeln!(s, "  {{ {}; }} && {list}=\"${list},{src}\"", tests.join(" || "));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_placeholder_survives() {
        for arch in [Arch::X86_64, Arch::Aarch64, Arch::Other("riscv64".into())] {
            let s = portable_script(&arch, &PlanOptions::default(), &["host note".into()]);
            let left = s.split('@').skip(1).find(|w| w.starts_with(|c: char| c.is_ascii_uppercase()));
            assert_eq!(left, None);
            assert!(s.starts_with("#!/bin/sh\n"));
        }
    }

    #[test]
    fn registers_follow_the_arch() {
        let a = portable_script(&Arch::Aarch64, &PlanOptions::default(), &[]);
        assert!(a.contains("'p:iosan/iommu_map __iommu_map domain=%x0 dtype=+0(%x0):u32 iova=%x1"), "{a}");
        assert!(a.contains("'p:iosan/iommu_map iommu_map_nosync domain=%x0"));
        assert!(!a.contains("%di"));
        let x = portable_script(&Arch::X86_64, &PlanOptions::default(), &[]);
        assert!(x.contains("'p:iosan/iova_free free_iova_fast iovad=%di pfn=%si pages=%dx'"), "{x}");
        assert!(!x.contains("%x0"));
        let o = portable_script(&Arch::Other("riscv64".into()), &PlanOptions::default(), &[]);
        assert!(!o.contains("p:iosan/"));
    }

    #[test]
    fn options_reach_the_script() {
        let opts = PlanOptions {
            duration_s: Some(240),
            events_per_sec: Some(1000),
            buffer_kb: Some(2048),
            stacks: Stacks::On { pages: crate::PageStacks::Filtered("comm == \"insmod\"".into()) },
        };
        let s = portable_script(&Arch::X86_64, &opts, &[]);
        assert!(s.contains("DURATION=${IOSAN_DURATION:-240}\n"));
        assert!(s.contains("RATE=${IOSAN_RATE:-1000}\n"));
        assert!(s.contains("BUFFER_KB=${IOSAN_BUFFER_KB:-2048}\n"));
        assert!(s.contains("BYTES_PER_EVENT=192\n"));
        assert!(s.contains("  stack iommu map stacktrace\n"));
        assert!(s.contains("  stack kmem mm_page_free 'stacktrace if comm == \"insmod\"'\n"), "{s}");
        assert!(s.contains("STACKS='map-unmap,pages-if comm == \"insmod\"'\n"));
    }
}
