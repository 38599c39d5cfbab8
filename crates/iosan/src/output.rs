//! Human and JSON Lines output of a trace report.
//!
//! # JSON Lines schema (`--format json`), `schema_version` 1
//!
//! One object per line. Every line has `"schema_version": 1` and `"type"`.
//!
//! `"type": "finding"`:
//! - `kind`: one of `freed-while-mapped`, `allocated-while-mapped`,
//!   `double-unmap`, `unmap-overlaps-unmapped`, `refcount-underflow`,
//!   `refcount-overflow`, `invalid-map-args`, `leak-at-teardown`,
//!   `mapped-at-end` (informational), `lost-events` (confidence warning),
//!   `dma-unmap-mismatch`, `unmapped-more-than-requested`, `identity-window`;
//! - `bug`: true for findings that make the exit status 1: bug kinds, confirmed or doubted only
//!   because events were lost (a bug kind whose attribution is a guess has `bug: false`);
//! - `pfn` (hex string `0x…`, first page, or null), `npages`, `phys` (hex string or null);
//! - `device` (string or null: comma-separated when a domain serves several), `domain`
//!   (kprobe domain pointer `0x…`, `did:N`, `dev:NAME`, or null for the anonymous space),
//!   `attribution` (`kprobe`, `vtd-did`, `dma-device`, `anonymous`);
//! - `layer`: which layer saw the mapping: `iommu` (an IOMMU domain's
//!   `iommu:map`) or `dma-api` (a `dma_map_page`/`_phys`, `dma_map_sg` or
//!   `dma_alloc*` no `iommu:map` covered: dma-direct, passthrough, or no
//!   `iommu:*` events; its `domain` is `dma-api:DEVICE`, its `iova` the DMA address).
//!   A page both layers saw is reported once, as `iommu`;
//! - `iova` (hex string of the IOVA mapping the first page, or null), `size` (bytes);
//! - `confirmed`: false when attribution is uncertain or events were lost between map and event;
//! - `doubt`: why not confirmed: `lost-events`, `attribution`, or null;
//! - `time` (seconds, as printed in the trace), `line`, `cpu`, `task`;
//! - `mapped_at` (seconds, or null), `mapped_by` (`{cpu, task, stack}` or null);
//! - `mappings`: every live mapping covering the pages (`domain`, `device`, `iova`, `phys`, `size`, `mapped_at`);
//! - `follow_ups`: later frees/allocations of the same pages under the same mapping
//!   (`kind`, `time`, `task`, `pfn`, `npages`; at most 16), `follow_up_count` (exact);
//! - `count`, `note`, `input`.
//!
//! `"type": "summary"` (last line per input): `input`, `semantics`, `lines`, `bytes`,
//! `events`, `events_by_kind`, `unknown_events`, `skipped` (reason → `{count, first_line,
//! first_offset}`), `mode`, `exposure`, `lost_events`, `lost_windows`, `domains`,
//! `devices`, `attribution`, `live_at_end`, `findings` (count per kind), `blind_spots`
//! (`[{key, text}]`: what a conclusive capture could not see; keys `no-unmaps`,
//! `lost-events`, `no-identity`, `dma-api-only`), `page_size` (`{bytes, source,
//! warnings}`: the CPU page size analysed with; `source` is `--page-size`,
//! `capture metadata`, `kernel release`, `events` (freed frames inside mapped
//! physical ranges, from the first 4 MiB), `architecture`, `assumed`, or
//! `simulation` for `iosan simulate`), `dma_api`
//! (`{direct, layer_maps, direct_maps, translated_maps, allocs_unchecked,
//! dropped}`: the DMA-API layer; `direct` is true when dma-direct was inferred: no
//! `iommu:map`, DMA address = physical address on every `dma_map_page`), `sources`
//! (`{identity, flush}`: lists of the identity sources and IOTLB flush sources the
//! capture offered, `["none"]` when it had none).

use std::collections::BTreeMap;
use std::io::{self, Write};

use iosan_trace::report::{MapSite, Summary};
use iosan_trace::{fmt_ts, Report, TraceFinding};
use serde_json::{json, Value};

/// JSON schema version.
pub const SCHEMA_VERSION: u32 = 1;

fn hex(v: Option<u64>) -> Value {
    v.map_or(Value::Null, |v| Value::String(format!("{v:#x}")))
}

fn ts(ns: u64) -> Value {
    // Seconds with microseconds, as the trace prints them.
    serde_json::from_str(&fmt_ts(ns)).unwrap_or(Value::Null)
}

fn site(s: &Option<MapSite>) -> Value {
    match s {
        None => Value::Null,
        Some(s) => json!({"cpu": s.cpu, "task": format!("{}-{}", s.task, s.pid), "stack": s.stack}),
    }
}

/// One finding as a JSON object.
pub fn finding_json(f: &TraceFinding, input: &str) -> Value {
    json!({
        "schema_version": SCHEMA_VERSION,
        "type": "finding",
        "kind": f.kind.name(),
        "bug": f.counts_as_bug(),
        "pfn": hex(f.pfn),
        "npages": f.npages,
        "phys": hex(f.phys),
        "device": f.device,
        "domain": f.domain,
        "attribution": f.attribution.name(),
        "layer": f.layer.name(),
        "iova": hex(f.iova),
        "size": f.size,
        "confirmed": f.confirmed,
        "doubt": f.doubt.map(|d| d.name()),
        "time": ts(f.time_ns),
        "line": f.line,
        "cpu": f.cpu,
        "task": f.task,
        "mapped_at": f.mapped_at.as_ref().map_or(Value::Null, |s| ts(s.time_ns)),
        "mapped_by": site(&f.mapped_at),
        "mappings": f.mappings.iter().map(|m| json!({
            "domain": m.domain, "device": m.device, "iova": format!("{:#x}", m.iova),
            "phys": format!("{:#x}", m.phys), "size": m.len, "mapped_at": ts(m.mapped_at.time_ns),
        })).collect::<Vec<_>>(),
        "follow_ups": f.follow_ups.iter().map(|u| json!({
            "kind": u.kind.name(), "time": ts(u.time_ns), "task": u.task,
            "pfn": format!("{:#x}", u.pfn), "npages": u.npages,
        })).collect::<Vec<_>>(),
        "follow_up_count": f.follow_up_count,
        "count": f.count,
        "note": f.note,
        "input": input,
    })
}

/// The summary as a JSON object.
pub fn summary_json(r: &Report) -> Value {
    let s = &r.summary;
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for f in &r.findings {
        *by_kind.entry(f.kind.name()).or_insert(0) += 1;
    }
    let sources = crate::verdict::sources(s);
    json!({
        "schema_version": SCHEMA_VERSION,
        "type": "summary",
        "input": s.input,
        "semantics": s.semantics,
        "lines": s.lines,
        "bytes": s.bytes,
        "events": s.events_read,
        "events_by_kind": s.events_by_kind,
        "unknown_events": s.unknown_events,
        "unknown_by_name": s.unknown_by_name,
        "skipped": s.skipped.iter().map(|(k, v)| (k.clone(), json!({"count": v.count, "first_line": v.first_line, "first_offset": v.first_offset}))).collect::<serde_json::Map<_, _>>(),
        "mode": s.mode,
        "exposure_measurable": s.exposure_measurable,
        "exposure": {"frees": s.exposure.frees, "pages": s.exposure.pages, "bytes": s.exposure.bytes,
                     "longest_window_s": s.exposure.longest_ns as f64 / 1e9, "unflushed_at_end": s.exposure.unflushed_at_end},
        "lost_events": s.lost_events,
        "overwritten_events": s.overwritten_events,
        "lost_windows": s.lost_windows.iter().map(|w| json!({"cpu": w.cpu, "events": w.events, "line": w.line,
            "after": ts(w.after_ns), "before": w.before_ns.map(ts)})).collect::<Vec<_>>(),
        "domains": s.domains,
        "anonymous_space_used": s.anonymous_space_used,
        "devices": s.devices,
        "attribution": {
            "maps": {"kprobe": s.maps_by.kprobe, "vtd_did": s.maps_by.did, "dma_device": s.maps_by.device, "anonymous": s.maps_by.anonymous},
            "unmaps": {"kprobe": s.unmaps_by.kprobe, "vtd_did": s.unmaps_by.did, "dma_device": s.unmaps_by.device,
                       "by_content": s.unmaps_by.content, "ambiguous": s.unmaps_by.ambiguous, "no_translation": s.unmaps_by.none},
            "unmaps_without_translation": s.unmaps_without_translation,
            "stale_mappings_replaced": s.stale_mappings_replaced,
            "merges_refused": s.merges_refused,
        },
        "free_batched_ignored": s.free_batched_ignored,
        "identity_pages_freed": s.identity_pages_freed,
        "counter_bytes": s.counter_bytes,
        "live_at_end": s.live_at_end.iter().map(|g| json!({"device": g.device, "domain": g.domain,
            "attribution": g.attribution.name(), "mappings": g.mappings, "bytes": g.bytes})).collect::<Vec<_>>(),
        "findings": by_kind,
        "blind_spots": crate::verdict::blind_spots(s).iter().map(|b| json!({"key": b.key, "text": b.text})).collect::<Vec<_>>(),
        "page_size": {"bytes": s.page_size, "source": s.page_size_source, "warnings": s.page_size_warnings},
        "dma_api": {"direct": s.dma_direct, "layer_maps": s.dma_layer_maps, "direct_maps": s.dma_direct_maps,
                    "translated_maps": s.dma_translated_maps, "allocs_unchecked": s.dma_allocs_unchecked,
                    "dropped": s.dma_layer_dropped},
        "sources": {"identity": sources.0, "flush": sources.1},
        "meta": s.meta.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
    })
}

/// Writes the report as JSON Lines.
pub fn write_json(out: &mut dyn Write, r: &Report) -> io::Result<()> {
    for f in &r.findings {
        serde_json::to_writer(&mut *out, &finding_json(f, &r.summary.input))?;
        out.write_all(b"\n")?;
    }
    serde_json::to_writer(&mut *out, &summary_json(r))?;
    out.write_all(b"\n")
}

/// Untrusted text made safe for a terminal.
fn esc(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// Writes the human report.
pub fn write_human(out: &mut dyn Write, r: &Report, color: bool, verbose: bool) -> io::Result<()> {
    let st = Style { color };
    let s = &r.summary;
    let bugs: Vec<&TraceFinding> = r.bugs().collect();
    writeln!(out, "{}", st.paint("1", &format!("iosan analyze: {} ({} semantics)", esc(&s.input), s.semantics)))?;
    writeln!(out)?;
    for (i, f) in bugs.iter().enumerate() {
        let title = format!("[{}] {}{}", i + 1, f.kind.name(), if f.confirmed { "" } else { " (unconfirmed)" });
        writeln!(out, "{}", st.paint(if f.confirmed { "1;31" } else { "1;33" }, &title))?;
        if let (Some(pfn), Some(phys)) = (f.pfn, f.phys) {
            let last = pfn + f.npages.max(1) - 1;
            let pages = if f.npages > 1 {
                format!("pfn {pfn:#x}-{last:#x} ({} pages)", f.npages)
            } else {
                format!("pfn {pfn:#x}")
            };
            writeln!(out, "  page      {pages}, phys {phys:#x}")?;
        }
        writeln!(
            out,
            "  device    {}   domain {} (via {})",
            esc(f.device.as_deref().unwrap_or("unknown")),
            esc(f.domain.as_deref().unwrap_or("anonymous")),
            f.attribution.name()
        )?;
        if let Some(iova) = f.iova {
            writeln!(out, "  iova      {iova:#x} ({} bytes)", f.size)?;
        }
        if let Some(m) = &f.mapped_at {
            writeln!(out, "  mapped at {}  cpu {}  {}-{}", fmt_ts(m.time_ns), m.cpu, esc(&m.task), m.pid)?;
            for fr in &m.stack {
                writeln!(out, "              {}", esc(fr))?;
            }
        }
        let verb = if f.kind == iosan_core::FindingKind::AllocatedWhileMapped { "allocated" } else { "event at" };
        writeln!(
            out,
            "  {verb:<9} {}  cpu {}  {}  (line {})",
            fmt_ts(f.time_ns),
            f.cpu.map_or("?".into(), |c| c.to_string()),
            esc(f.task.as_deref().unwrap_or("?")),
            f.line
        )?;
        if f.mappings.len() > 1 {
            writeln!(out, "  also mapped by:")?;
            for m in f.mappings.iter().skip(1) {
                writeln!(
                    out,
                    "    iova {:#x} size {} device {} mapped at {}",
                    m.iova,
                    m.len,
                    esc(m.device.as_deref().unwrap_or("unknown")),
                    fmt_ts(m.mapped_at.time_ns)
                )?;
            }
        }
        if f.follow_up_count > 0 {
            writeln!(out, "  then      {} more free/alloc of these pages while still mapped:", f.follow_up_count)?;
            for u in &f.follow_ups {
                writeln!(
                    out,
                    "              {} {} pfn {:#x} by {}",
                    fmt_ts(u.time_ns),
                    u.kind.name(),
                    u.pfn,
                    esc(&u.task)
                )?;
            }
            if f.follow_up_count > f.follow_ups.len() as u64 {
                writeln!(out, "              ...")?;
            }
        }
        if let Some(n) = &f.note {
            writeln!(out, "  note      {}", esc(n))?;
        }
        writeln!(out, "  why       {}", f.why())?;
        writeln!(out)?;
    }
    let uncertain: Vec<&TraceFinding> = r.uncertain().collect();
    if !uncertain.is_empty() {
        writeln!(
            out,
            "{}",
            st.paint("1;33", &format!("{} more findings whose domain attribution is a guess (not counted; no kprobe, dma or VT-d identity)", uncertain.len()))
        )?;
        let shown = if verbose { uncertain.len() } else { 5 };
        for f in uncertain.iter().take(shown) {
            writeln!(
                out,
                "  {} pfn {:#x} ({} pages) iova {} at {} (line {})",
                f.kind.name(),
                f.pfn.unwrap_or(0),
                f.npages,
                f.iova.map_or("?".into(), |i| format!("{i:#x}")),
                fmt_ts(f.time_ns),
                f.line
            )?;
        }
        if uncertain.len() > shown {
            writeln!(out, "  ... (-v or --format json lists them all)")?;
        }
        writeln!(out)?;
    }
    write_summary(out, r, &st, verbose)
}

fn write_summary(out: &mut dyn Write, r: &Report, st: &Style, verbose: bool) -> io::Result<()> {
    let s: &Summary = &r.summary;
    let bugs = r.bugs().count();
    let pages: u64 = r.bugs().map(|f| f.npages).sum();
    writeln!(out, "{}", st.paint("1", "Summary"))?;
    let uncertain = r.uncertain().count();
    if bugs == 0 && uncertain > 0 {
        writeln!(
            out,
            "  {}",
            st.paint(
                "33",
                &format!(
                    "no confirmed DMA use-after-free; {uncertain} findings whose domain is a guess (listed above)"
                )
            )
        )?;
    } else if bugs == 0 {
        writeln!(out, "  {}", st.paint("32", "no DMA use-after-free found"))?;
    } else {
        writeln!(out, "  {} findings covering {} pages", st.paint("1;31", &bugs.to_string()), pages)?;
    }
    if s.from_model {
        let e = &s.exposure;
        if s.mode == "lazy" {
            writeln!(
                out,
                "  exposure  {} pages ({} bytes) freed inside the flush-queue window, longest {:.3} ms (lazy mode's accepted cost, not a finding)",
                e.pages, e.bytes, e.longest_ns as f64 / 1e6
            )?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "  input     {} lines, {} bytes, {} events ({} unknown)",
        s.lines, s.bytes, s.events_read, s.unknown_events
    )?;
    let span = s.first_ns.map_or("-".into(), |f| format!("{} - {}", fmt_ts(f), fmt_ts(s.last_ns)));
    writeln!(out, "  time      {span}   iommu mode: {}", s.mode)?;
    let mut kinds: Vec<_> = s.events_by_kind.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1));
    let shown: Vec<String> =
        kinds.iter().take(if verbose { usize::MAX } else { 10 }).map(|(k, v)| format!("{k} {v}")).collect();
    writeln!(out, "  events    {}{}", shown.join(", "), if kinds.len() > shown.len() { ", ..." } else { "" })?;
    if s.skipped.is_empty() {
        writeln!(out, "  skipped   0 lines")?;
    } else {
        for (why, c) in &s.skipped {
            writeln!(
                out,
                "  skipped   {} lines: {} (first at line {}, byte offset {})",
                c.count,
                esc(why),
                c.first_line,
                c.first_offset
            )?;
        }
    }
    writeln!(
        out,
        "  domains   {} identified{}; devices: {}",
        s.domains,
        if s.anonymous_space_used { " + anonymous space" } else { "" },
        if s.devices.is_empty() { "none attached in capture".to_string() } else { s.devices.join(", ") }
    )?;
    writeln!(
        out,
        "  attribution  maps: kprobe {}, vt-d did {}, dma device {}, anonymous {};  unmaps: kprobe {}, did {}, device {}, by content {}, ambiguous {}",
        s.maps_by.kprobe, s.maps_by.did, s.maps_by.device, s.maps_by.anonymous,
        s.unmaps_by.kprobe, s.unmaps_by.did, s.unmaps_by.device, s.unmaps_by.content, s.unmaps_by.ambiguous
    )?;
    let (identity, flush) = crate::verdict::sources(s);
    writeln!(out, "  sources   identity: {}; IOTLB flush: {}", identity.join(", "), flush.join(", "))?;
    let ps_note = match s.page_size_source {
        "assumed" => " (assumed: the capture does not say; use --page-size for 16 or 64 KiB kernels)".to_string(),
        src => format!(" (from {src})"),
    };
    writeln!(out, "  page size {} bytes{ps_note}", s.page_size)?;
    for w in &s.page_size_warnings {
        writeln!(out, "  {}", st.paint("33", &format!("page size {}", esc(w))))?;
    }
    if s.dma_layer_maps > 0 || s.dma_allocs_unchecked > 0 {
        let how = if s.dma_direct {
            "dma-direct (no iommu:map, DMA address = physical address on every dma_map_page): "
        } else {
            ""
        };
        writeln!(
            out,
            "  dma-api   {how}{} mappings checked in the DMA-API layer (no iommu:map covered them), {} dma_alloc* unchecked",
            s.dma_layer_maps, s.dma_allocs_unchecked
        )?;
    }
    if s.kprobe_events == 0 {
        writeln!(
            out,
            "  note      no domain kprobes in this capture: domains identified from dma:* and intel_iommu events"
        )?;
    }
    if s.dma_events == 0 {
        writeln!(out, "  note      no dma:* events (kernel before 6.12, or not enabled): device names come only from kprobes or VT-d attach pairing")?;
    }
    // Lost events and a missing identity source have their own lines above and below.
    for b in crate::verdict::blind_spots(s).iter().filter(|b| matches!(b.key, "no-unmaps" | "dma-api-only")) {
        writeln!(out, "  {}", st.paint("33", &format!("blind     {}", b.text)))?;
    }
    if s.unmaps_without_translation > 0 {
        writeln!(
            out,
            "  unmaps    {} with no recorded translation (mapped before the capture started)",
            s.unmaps_without_translation
        )?;
    }
    if s.lost_events > 0 || s.overwritten_events > 0 {
        writeln!(
            out,
            "  {}",
            st.paint(
                "33",
                &format!(
                    "LOST      {} events lost, {} overwritten: results near these windows are unconfirmed",
                    s.lost_events, s.overwritten_events
                )
            )
        )?;
        for w in &s.lost_windows {
            writeln!(
                out,
                "            cpu {} from {} to {}",
                w.cpu.map_or("?".into(), |c| c.to_string()),
                fmt_ts(w.after_ns),
                w.before_ns.map_or("end".into(), fmt_ts)
            )?;
        }
    }
    let e = &s.exposure;
    if s.mode == "lazy" && !s.exposure_measurable {
        writeln!(
            out,
            "  exposure  not measurable: no IOTLB flush events in this capture (enable intel_iommu:* on VT-d, the fq_flush_iotlb or iova_free kprobe elsewhere)"
        )?;
    } else if s.mode == "lazy" || e.frees > 0 {
        writeln!(
            out,
            "  exposure  {} pages ({} bytes) freed after unmap but before the IOTLB flush, {} frees, longest window {:.3} ms (lazy mode's accepted cost, not a finding)",
            e.pages, e.bytes, e.frees, e.longest_ns as f64 / 1e6
        )?;
    }
    if s.identity_pages_freed > 0 {
        writeln!(
            out,
            "  identity  {} pages freed/allocated inside boot-time identity windows (device-reachable by design)",
            s.identity_pages_freed
        )?;
    }
    if !s.live_at_end.is_empty() {
        writeln!(out, "  live at end (informational):")?;
        for g in &s.live_at_end {
            writeln!(
                out,
                "    {:<40} {:>6} mappings {:>12} bytes  domain {}",
                esc(g.device.as_deref().unwrap_or("unknown device")),
                g.mappings,
                g.bytes,
                esc(g.domain.as_deref().unwrap_or("anonymous"))
            )?;
        }
    }
    Ok(())
}
