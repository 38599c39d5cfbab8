//! Kernel stacks in findings: the same capture printed by ftrace
//! (`<stack trace>` entries with their task, CPU and flags columns) and by
//! `trace-cmd report` (`kernel_stack` entries, no flags column). In both, a
//! hard interrupt's event and stack come between the task's `iommu:map`
//! and the map's stack; the interrupt's stack must not become the map's.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(rel)
}

fn findings(capture: &str) -> (Vec<Value>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_iosan"))
        .args(["analyze", "--format", "json"])
        .arg(fixture(capture))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let mut lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary = lines.pop().unwrap();
    assert!(lines.iter().chain([&summary]).all(|l| l["schema_version"] == 2));
    // A finding is written when it is decided; an unmap of its mapping that
    // comes later is a line of its own, folded back in here.
    let (unmaps, mut lines): (Vec<Value>, Vec<Value>) = lines.into_iter().partition(|l| l["type"] == "unmapped");
    for u in unmaps {
        let f = lines.iter_mut().find(|f| f["type"] == "finding" && f["id"] == u["finding"]).expect("its finding");
        let j = u["mapping"].as_u64().unwrap() as usize;
        f["mappings"][j]["unmapped_at"] = u["time"].clone();
        if !u["unmapped_by"].is_null() {
            f["unmapped_by"] = u["unmapped_by"].clone();
        }
    }
    (lines, summary)
}

fn stack(site: &Value) -> Vec<&str> {
    site["stack"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect()
}

/// Checks one printing; `frame` turns a function and its ftrace offset into
/// the printing's frame text.
fn check(capture: &str, frame: &dyn Fn(&str) -> String) {
    let (findings, summary) = findings(capture);
    assert_eq!(summary["skipped"], serde_json::json!({}), "no line is skipped: the first stack too has its event");
    let free = findings.iter().find(|f| f["kind"] == "freed-while-mapped").expect("the use-after-free");
    assert_eq!(free["pfn"], "0x123589");
    // The map's own stack, not the interrupt's that came first.
    let mapped = stack(&free["mapped_by"]);
    assert_eq!(mapped.first().copied(), Some(frame("iommu_map_nosync").as_str()), "{mapped:?}");
    assert!(mapped.iter().any(|f| f.starts_with("uaf_setup_buffer")));
    assert!(!mapped.iter().any(|f| f.contains("e1000")), "{mapped:?}");
    assert_eq!(free["mapped_by"]["stack_hidden"], 2);
    // The free's stack, tracepoint frames left out but counted.
    let freed = stack(&free["freed_by"]);
    assert_eq!(freed.first().copied(), Some(frame("free_unref_page").as_str()), "{freed:?}");
    assert!(freed.iter().any(|f| f.starts_with("uaf_release_early")));
    assert_eq!(free["freed_by"]["stack_hidden"], 2);
    assert_eq!(free["freed_by"]["time"], 6.0124);
    // The unmap that came after the free.
    assert_eq!(free["unmapped_by"]["time"], 6.013);
    assert_eq!(stack(&free["unmapped_by"]).first().copied(), Some(frame("__iommu_unmap").as_str()));
    assert_eq!(free["mappings"][0]["unmapped_at"], 6.013);
    // The double unmap carries the stack of the repeated unmap.
    let double = findings.iter().find(|f| f["kind"] == "double-unmap").expect("the double unmap");
    assert_eq!(double["unmapped_by"]["time"], 6.014);
    assert!(stack(&double["unmapped_by"]).iter().any(|f| f.starts_with("uaf_teardown")));
    assert_eq!(double["task"], "insmod-196");
    assert_eq!(findings.iter().filter(|f| f["bug"] == true).count(), 2);
}

#[test]
fn ftrace_text_stacks() {
    check("captures/stacks.trace.txt", &|f| {
        let off = match f {
            "iommu_map_nosync" => "0x1a5/0x200",
            "free_unref_page" => "0x1e5/0x2a0",
            _ => "0x129/0x1a0",
        };
        format!("{f}+{off}")
    });
}

#[test]
fn trace_cmd_report_stacks() {
    check("captures/stacks.trace-cmd-report.txt", &|f| {
        let addr = match f {
            "iommu_map_nosync" => "ffffffff81a0f1a5",
            "free_unref_page" => "ffffffff812b1e65",
            _ => "ffffffff81a0fb29",
        };
        format!("{f} ({addr})")
    });
}

/// The human report shows the three stacks.
#[test]
fn human_report_shows_stacks() {
    let out = Command::new(env!("CARGO_BIN_EXE_iosan"))
        .args(["analyze", "--color", "never"])
        .arg(fixture("captures/stacks.trace.txt"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "iommu_map_nosync+0x1a5/0x200",
        "uaf_release_early+0x3a/0x80 [uafdrv]",
        "unmapped  6.013000  cpu 1  insmod-196",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
    assert!(!text.contains("trace_event_raw_event"), "{text}");
}
