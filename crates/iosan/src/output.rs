//! Human and JSON Lines output of a trace report.
//!
//! # JSON Lines schema (`--format json`), `schema_version` 2
//!
//! One object per line. Every line has `"schema_version": 2` and `"type"`.
//!
//! Version 2 added the kernel stacks of a finding's events: `freed_by`,
//! `unmapped_by`, `stack_hidden` in every site object, and `unmapped_at` of
//! each mapping; and the summary's `exposure_windows`. Nothing of version 1 changed meaning; a reader of version 1
//! that ignores unknown fields reads version 2.
//!
//! A *site* object is `{time, cpu, task, stack, stack_hidden}`: `time` in
//! seconds, `task` as `comm-pid`, `stack` the kernel stack of the event,
//! innermost first, one string per frame as ftrace prints it
//! (`func+0xoff/0xlen [module]`; `func (addr)` from `trace-cmd report`),
//! without the tracepoint's own leading frames (`trace_event_raw_event_*`,
//! `__traceiter_*`, `trace_*`), whose number is `stack_hidden`. `stack` is
//! empty when the capture has no stack for the event (`iosan record
//! --stacks` adds them).
//!
//! `"type": "finding"`:
//! - `kind`: one of `freed-while-mapped`, `allocated-while-mapped`,
//!   `double-unmap`, `unmap-overlaps-unmapped`, `refcount-underflow`,
//!   `refcount-overflow`, `invalid-map-args`, `leak-at-teardown`,
//!   `mapped-at-end` (informational), `lost-events` (confidence warning),
//!   `dma-unmap-mismatch`, `unmapped-more-than-requested`, `identity-window`,
//!   `unmap-already-removed`, `partial-block-unmap-refused`, `map-failed`
//!   (informational: a map that failed, its `note` says how);
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
//! - `mapped_at` (seconds, or null), `mapped_by` (site of the map that still covers the pages, or null);
//! - `freed_by`: site of the free or allocation of a page finding, or null;
//! - `unmapped_by`: site of the unmap that matters, or null: the repeated unmap of a
//!   `double-unmap`, the DMA-API unmap of a `dma-unmap-mismatch`, the later unmap of the
//!   mapping that covered a freed or allocated page (null when not unmapped in the capture);
//! - `mappings`: every live mapping covering the pages (`domain`, `device`, `iova`, `phys`, `size`,
//!   `mapped_at`, `unmapped_at`: seconds, or null when not unmapped in the capture);
//! - `follow_ups`: later frees/allocations of the same pages under the same mapping
//!   (`kind`, `time`, `task`, `pfn`, `npages`; at most 16), `follow_up_count` (exact);
//! - `count`, `note`, `input`.
//!
//! - `id` (streaming output of `analyze` and `watch` only): the finding's number
//!   in decision order, from 1 per input; `follow_up` lines refer to it.
//!
//! Streaming (`iosan analyze` of one capture at a time, `iosan watch`): each
//! finding line is written and flushed as soon as the finding is decided (see
//! the README for the lookahead bound), so lines come in decision order, not
//! sorted, and a finding line has `follow_ups: []`, `follow_up_count: 0`. A
//! later free or allocation of its pages under the same mapping comes as its
//! own line (the first 16 per finding; all are counted in the summary):
//!
//! `"type": "follow_up"`: `finding` (the `id`), `kind`, `time`, `task`, `pfn`,
//! `npages`, `count` (the finding's follow-ups so far, this one included), `input`.
//!
//! `"type": "unmapped"`: a mapping of an already written finding was unmapped:
//! `finding` (the `id`), `mapping` (index into its `mappings`), `time`, and
//! `unmapped_by` (the site, as in a finding, when this unmap is the finding's
//! own; else null), `input`. A report written at the end (`--merge`,
//! `--perfetto`, `--html`) has these in the finding itself.
//!
//! `"type": "summary"` (last line per input; streaming adds `follow_ups`, the total): `input`, `semantics`, `lines`, `bytes`,
//! `events`, `events_by_kind`, `unknown_events`, `skipped` (reason → `{count, first_line,
//! first_offset}`), `mode`, `exposure`, `exposure_windows` (version 2: the longest lazy-mode
//! windows, at most 8 per domain: `{device, domain, freed, flushed, pages}`, times in seconds),
//! `lost_events`, `lost_windows`, `domains`,
//! `devices`, `attribution`, `live_at_end`, `findings` (count per kind), `blind_spots`
//! (`[{key, text}]`: what a conclusive capture could not see; keys `no-unmaps`,
//! `lost-events`, `no-identity`, `dma-api-only`, `page-size`), `page_size` (`{bytes, source,
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
use iosan_trace::{fmt_ts, FindingSink, FollowUp, Report, TraceFinding};
use serde_json::{json, Value};

/// JSON schema version.
pub const SCHEMA_VERSION: u32 = 2;

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
        Some(s) => json!({"time": ts(s.time_ns), "cpu": s.cpu, "task": format!("{}-{}", s.task, s.pid),
            "stack": s.stack, "stack_hidden": s.stack_hidden}),
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
        "freed_by": site(&f.freed_by),
        "unmapped_by": site(&f.unmapped_by),
        "mappings": f.mappings.iter().map(|m| json!({
            "domain": m.domain, "device": m.device, "iova": format!("{:#x}", m.iova),
            "phys": format!("{:#x}", m.phys), "size": m.len, "mapped_at": ts(m.mapped_at.time_ns),
            "unmapped_at": m.unmapped_ns.map_or(Value::Null, ts),
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
    let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
    for f in &r.findings {
        *by_kind.entry(f.kind.name()).or_insert(0) += 1;
    }
    summary_json_of(&r.summary, &by_kind)
}

/// The summary line, given the findings per kind.
fn summary_json_of(s: &Summary, by_kind: &BTreeMap<&'static str, u64>) -> Value {
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
        "exposure_windows": s.exposure_windows.iter().map(|w| json!({"device": w.device, "domain": w.domain,
            "freed": ts(w.freed_ns), "flushed": ts(w.flushed_ns), "pages": w.pages})).collect::<Vec<_>>(),
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
        write_bug(out, &st, i + 1, f)?;
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

/// One bug finding, numbered `n`, as a block.
fn write_bug(out: &mut dyn Write, st: &Style, n: usize, f: &TraceFinding) -> io::Result<()> {
    let title = format!("[{}] {}{}", n, f.kind.name(), if f.confirmed { "" } else { " (unconfirmed)" });
    writeln!(out, "{}", st.paint(if f.confirmed { "1;31" } else { "1;33" }, &title))?;
    if let (Some(pfn), Some(phys)) = (f.pfn, f.phys) {
        let last = pfn + f.npages.max(1) - 1;
        let pages =
            if f.npages > 1 { format!("pfn {pfn:#x}-{last:#x} ({} pages)", f.npages) } else { format!("pfn {pfn:#x}") };
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
        write_stack(out, &m.stack)?;
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
    if let Some(b) = &f.freed_by {
        write_stack(out, &b.stack)?;
    }
    if let Some(u) = &f.unmapped_by {
        writeln!(out, "  unmapped  {}  cpu {}  {}-{}", fmt_ts(u.time_ns), u.cpu, esc(&u.task), u.pid)?;
        write_stack(out, &u.stack)?;
    }
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
    Ok(())
}

fn write_stack(out: &mut dyn Write, stack: &[String]) -> io::Result<()> {
    for fr in stack {
        writeln!(out, "              {}", esc(fr))?;
    }
    Ok(())
}

fn write_summary(out: &mut dyn Write, r: &Report, st: &Style, verbose: bool) -> io::Result<()> {
    let tally = Tally {
        bugs: r.bugs().count() as u64,
        pages: r.bugs().map(|f| f.npages).sum(),
        uncertain: r.uncertain().count() as u64,
        ..Tally::default()
    };
    write_summary_of(out, &r.summary, &tally, st, verbose)
}

fn write_summary_of(out: &mut dyn Write, s: &Summary, t: &Tally, st: &Style, verbose: bool) -> io::Result<()> {
    let (bugs, pages, uncertain) = (t.bugs, t.pages, t.uncertain);
    writeln!(out, "{}", st.paint("1", "Summary"))?;
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
    if let Some(n) = t.by_kind.get(iosan_core::FindingKind::MapFailed.name()).filter(|&&n| n > 0) {
        writeln!(
            out,
            "  failed    {n} maps failed: nothing of them stays mapped (`map-failed` in --format json, with how)"
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

/// Counts the summary needs, from a report or tallied from a stream.
#[derive(Default)]
pub struct Tally {
    /// Findings that decide the exit status.
    pub bugs: u64,
    /// Pages they cover.
    pub pages: u64,
    /// Bug kinds whose attribution is a guess.
    pub uncertain: u64,
    /// Findings per kind.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Follow-ups of all findings.
    pub follow_ups: u64,
}

/// Follow-up lines written per finding; more are only counted.
const MAX_FOLLOW_UP_LINES: u64 = 16;
/// Uncertain findings shown as they come without `-v`.
const UNCERTAIN_SHOWN: u64 = 5;

/// Writes findings as they are decided (a [`FindingSink`]): JSON Lines, or
/// the human blocks; each finding is flushed at once. Call [`Self::header`]
/// first and [`Self::summary`] at the end. Write errors stop the output and
/// are kept for [`Self::summary`] to return.
pub struct StreamWriter<W: Write> {
    out: W,
    json: bool,
    st: Style,
    verbose: bool,
    input: String,
    tally: Tally,
    /// Human numbers of bug findings, by finding id.
    numbers: std::collections::HashMap<u64, usize>,
    /// The title (and the blank lines before it), written before the first output.
    header: Option<(String, String)>,
    err: Option<io::Error>,
}

impl<W: Write> StreamWriter<W> {
    /// A writer for the findings of `input`.
    pub fn new(out: W, json: bool, color: bool, verbose: bool, input: &str) -> Self {
        Self {
            out,
            json,
            st: Style { color },
            verbose,
            input: input.to_string(),
            tally: Tally::default(),
            numbers: std::collections::HashMap::new(),
            header: None,
            err: None,
        }
    }

    /// Writes the title now (a live watch shows it before any finding).
    pub fn write_header(&mut self) {
        self.write(|_, _| Ok(()));
    }

    /// Whether a write failed (the output is gone).
    pub fn failed(&self) -> bool {
        self.err.is_some()
    }

    /// What was tallied so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Runs `f` unless an earlier write failed, then flushes.
    fn write(&mut self, f: impl FnOnce(&mut W, &Style) -> io::Result<()>) {
        if self.err.is_some() {
            return;
        }
        if let Some((lead, h)) = self.header.take() {
            if let Err(e) = writeln!(self.out, "{lead}{}\n", self.st.paint("1", &h)) {
                self.err = Some(e);
                return;
            }
        }
        if let Err(e) = f(&mut self.out, &self.st).and_then(|()| self.out.flush()) {
            self.err = Some(e);
        }
    }

    /// The human title line (nothing in JSON), written before the first
    /// finding or the summary.
    pub fn header(&mut self, title: &str) {
        if !self.json {
            // Leading newlines (a separator) are kept; the rest is escaped.
            let body = title.trim_start_matches('\n');
            let lead = &title[..title.len() - body.len()];
            self.header = Some((lead.to_string(), esc(body)));
        }
    }

    /// A line about the run itself (human only), e.g. ring-buffer overruns.
    pub fn note(&mut self, text: &str) {
        if !self.json {
            let t = esc(text);
            self.write(|o, st| writeln!(o, "{}", st.paint("33", &t)));
        }
    }

    /// Writes the summary (the last line in JSON).
    ///
    /// # Errors
    /// The first write error met, then or before.
    pub fn summary(&mut self, s: &Summary, verbose: bool) -> io::Result<()> {
        let tally = std::mem::take(&mut self.tally);
        if self.json {
            let mut v = summary_json_of(s, &tally.by_kind);
            if let Some(m) = v.as_object_mut() {
                m.insert("follow_ups".into(), json!(tally.follow_ups));
            }
            let line = v.to_string();
            self.write(|o, _| writeln!(o, "{line}"));
        } else {
            let hidden = tally.uncertain.saturating_sub(UNCERTAIN_SHOWN);
            let (verbose_all, follow_ups) = (self.verbose, tally.follow_ups);
            let t = tally;
            self.write(|o, st| {
                if hidden > 0 && !verbose_all {
                    writeln!(o, "  ... {hidden} more findings whose attribution is a guess (-v or --format json lists them all)\n")?;
                }
                write_summary_of(o, s, &t, st, verbose)?;
                if follow_ups > 0 {
                    writeln!(o, "  follow-ups {follow_ups} later frees/allocations of reported pages while still mapped")?;
                }
                Ok(())
            });
        }
        match self.err.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<W: Write> FindingSink for StreamWriter<W> {
    fn finding(&mut self, id: u64, f: &TraceFinding) {
        *self.tally.by_kind.entry(f.kind.name()).or_insert(0) += 1;
        if self.json {
            let mut v = finding_json(f, &self.input);
            if let Some(m) = v.as_object_mut() {
                m.insert("id".into(), json!(id));
            }
            let line = v.to_string();
            self.write(|o, _| writeln!(o, "{line}"));
            if f.counts_as_bug() {
                self.tally.bugs += 1;
                self.tally.pages += f.npages;
            } else if f.kind.is_bug() {
                self.tally.uncertain += 1;
            }
            return;
        }
        if f.counts_as_bug() {
            self.tally.bugs += 1;
            self.tally.pages += f.npages;
            let n = self.numbers.len() + 1;
            self.numbers.insert(id, n);
            self.write(|o, st| write_bug(o, st, n, f));
        } else if f.kind.is_bug() {
            self.tally.uncertain += 1;
            if self.verbose || self.tally.uncertain <= UNCERTAIN_SHOWN {
                let line = format!(
                    "guess     {} pfn {:#x} ({} pages) iova {} at {} (line {}): domain attribution is a guess, not counted\n",
                    f.kind.name(),
                    f.pfn.unwrap_or(0),
                    f.npages,
                    f.iova.map_or("?".into(), |i| format!("{i:#x}")),
                    fmt_ts(f.time_ns),
                    f.line
                );
                self.write(|o, st| writeln!(o, "{}", st.paint("33", &line)));
            }
        }
    }

    fn follow_up(&mut self, id: u64, up: &FollowUp, count: u64) {
        self.tally.follow_ups += 1;
        if count > MAX_FOLLOW_UP_LINES {
            return;
        }
        if self.json {
            let v = json!({
                "schema_version": SCHEMA_VERSION, "type": "follow_up", "finding": id,
                "kind": up.kind.name(), "time": ts(up.time_ns), "task": up.task,
                "pfn": format!("{:#x}", up.pfn), "npages": up.npages, "count": count, "input": self.input,
            });
            let line = v.to_string();
            self.write(|o, _| writeln!(o, "{line}"));
        } else if let Some(&n) = self.numbers.get(&id) {
            let line = format!(
                "[{n}] then   {} {} pfn {:#x} by {} while still mapped{}\n",
                fmt_ts(up.time_ns),
                up.kind.name(),
                up.pfn,
                esc(&up.task),
                if count == MAX_FOLLOW_UP_LINES { " (further ones only counted)" } else { "" }
            );
            self.write(|o, _| writeln!(o, "{line}"));
        }
    }

    fn unmapped(&mut self, id: u64, mapping: usize, ts_ns: u64, by: Option<&MapSite>) {
        if self.json {
            let v = json!({
                "schema_version": SCHEMA_VERSION, "type": "unmapped", "finding": id, "mapping": mapping,
                "time": ts(ts_ns), "unmapped_by": site(&by.cloned()), "input": self.input,
            });
            let line = v.to_string();
            self.write(|o, _| writeln!(o, "{line}"));
        } else if let (Some(&n), Some(u)) = (self.numbers.get(&id), by) {
            let mut text =
                format!("[{n}] unmapped  {}  cpu {}  {}-{}\n", fmt_ts(u.time_ns), u.cpu, esc(&u.task), u.pid);
            for fr in &u.stack {
                text.push_str(&format!("              {}\n", esc(fr)));
            }
            self.write(|o, _| write!(o, "{text}"));
        }
    }
}
