//! `--html FILE`: one self-contained page (no script, no font, no image, no
//! URL: nothing to fetch) with the summary, a card per bug finding (page,
//! device, IOVA, when mapped, freed and unmapped, and the kernel stacks of
//! those events) and an inline SVG timeline with one row per device track
//! ([`crate::timeline`]: the findings and the mappings that matter to them).
//!
//! Every string from the capture goes through [`esc`]; nothing else
//! reaches the page unescaped. The page marks what a test can count:
//! `#finding-count`, one `.card` per bug finding.

use std::fmt::Write as _;
use std::io::{self, Write};

use iosan_trace::report::MapSite;
use iosan_trace::{fmt_ts, Report, TraceFinding};

use crate::timeline::{Timeline, TimelineEvent};

/// HTML-escapes text for element content and quoted attributes.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em}\
.card{border:1px solid #ccc;border-left:6px solid #c62828;border-radius:4px;padding:.6em 1em;margin:1em 0}\
.card.unconfirmed{border-left-color:#f9a825}.card h3{margin:.2em 0 .5em;font-size:1.05em}\
table{border-collapse:collapse}td,th{padding:.15em .8em .15em 0;text-align:left;vertical-align:top}\
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:12px}\
.ok{color:#2e7d32}.bad{color:#c62828}svg text{font:11px sans-serif}";

fn row(out: &mut String, k: &str, v: &str) {
    let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
}

fn card(out: &mut String, i: usize, f: &TraceFinding) {
    let class = if f.confirmed { "card" } else { "card unconfirmed" };
    let _ = write!(
        out,
        "<div class=\"{class}\" data-kind=\"{}\"><h3>[{}] {}{}</h3><table>",
        esc(f.kind.name()),
        i + 1,
        esc(f.kind.name()),
        if f.confirmed { "" } else { " (unconfirmed)" }
    );
    if let Some(pfn) = f.pfn {
        row(out, "page", &format!("pfn {pfn:#x} ({} pages), phys {:#x}", f.npages.max(1), f.phys.unwrap_or(0)));
    }
    row(out, "device", f.device.as_deref().unwrap_or("unknown"));
    row(out, "domain", &format!("{} (via {})", f.domain.as_deref().unwrap_or("anonymous"), f.attribution.name()));
    if let Some(iova) = f.iova {
        row(out, "iova", &format!("{iova:#x} ({} bytes)", f.size));
    }
    if let Some(m) = &f.mapped_at {
        row(out, "mapped at", &format!("{} on cpu {} by {}-{}", fmt_ts(m.time_ns), m.cpu, m.task, m.pid));
    }
    let verb = match f.kind {
        iosan_core::FindingKind::FreedWhileMapped => "freed at",
        iosan_core::FindingKind::AllocatedWhileMapped => "allocated at",
        _ => "event at",
    };
    row(
        out,
        verb,
        &format!(
            "{} on cpu {} by {} (line {})",
            fmt_ts(f.time_ns),
            f.cpu.map_or("?".into(), |c| c.to_string()),
            f.task.as_deref().unwrap_or("?"),
            f.line
        ),
    );
    if let Some(u) = &f.unmapped_by {
        row(out, "unmapped at", &format!("{} on cpu {} by {}-{}", fmt_ts(u.time_ns), u.cpu, u.task, u.pid));
    } else if f.mapped_at.is_some() {
        row(out, "unmapped at", "not in the capture");
    }
    if let Some(d) = f.doubt {
        row(out, "doubt", d.name());
    }
    if f.follow_up_count > 0 {
        row(out, "follow-ups", &format!("{} later frees or allocations under the same mapping", f.follow_up_count));
    }
    if let Some(n) = &f.note {
        row(out, "note", n);
    }
    out.push_str("</table>");
    stack(out, "map", f.mapped_at.as_ref());
    stack(
        out,
        if f.kind == iosan_core::FindingKind::AllocatedWhileMapped { "allocation" } else { "free" },
        f.freed_by.as_ref(),
    );
    stack(out, "unmap", f.unmapped_by.as_ref());
    out.push_str("</div>");
}

/// The kernel stack of one event of a card, if the capture has it.
fn stack(out: &mut String, what: &str, site: Option<&MapSite>) {
    let Some(s) = site.filter(|s| !s.stack.is_empty()) else { return };
    let _ = write!(
        out,
        "<p class=\"stack-title\">stack of the {what} ({} tracepoint frames not shown)</p><pre class=\"stack\">{}</pre>",
        s.stack_hidden,
        esc(&s.stack.join("\n"))
    );
}

/// An SVG timeline: one row per track, slices as bars, instants as marks.
fn svg(out: &mut String, tl: &Timeline) {
    let (Some(t0), Some(t1)) = (tl.events.iter().map(|e| e.ts).min(), tl.events.iter().map(|e| e.ts).max()) else {
        out.push_str("<p>nothing to draw</p>");
        return;
    };
    let span = (t1 - t0).max(1) as f64;
    let (label_w, plot_w, row_h) = (260.0, 900.0, 22.0);
    let x = |t: u64| label_w + (t - t0) as f64 / span * plot_w;
    let h = row_h * tl.tracks.len() as f64 + 30.0;
    // A viewBox: the drawing scales down to the page's width.
    let w = label_w + plot_w + 20.0;
    let _ = write!(
        out,
        "<svg viewBox=\"0 0 {w} {h}\" width=\"100%\" style=\"max-width:{w}px\" role=\"img\" aria-label=\"timeline\">"
    );
    for (row_i, t) in tl.tracks.iter().enumerate() {
        let y = row_h * row_i as f64 + 4.0;
        let _ = write!(out, "<text x=\"4\" y=\"{}\">{}</text>", y + 13.0, esc(&t.name));
        let _ = write!(
            out,
            "<line x1=\"{label_w}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#eee\"/>",
            label_w + plot_w,
            y + 10.0,
            y + 10.0
        );
    }
    let row_of = |uuid: u64| tl.tracks.iter().position(|t| t.uuid == uuid).unwrap_or(0) as f64;
    for e in &tl.events {
        let y = row_h * row_of(e.track) + 4.0;
        match e {
            TimelineEvent { end: Some(end), .. } => {
                let (a, b) = (x(e.ts), x(*end).max(x(e.ts) + 1.0));
                let _ = write!(
                    out,
                    "<rect x=\"{a:.1}\" y=\"{}\" width=\"{:.1}\" height=\"12\" fill=\"#90caf9\"><title>{}</title></rect>",
                    y + 4.0,
                    b - a,
                    esc(&e.name)
                );
            }
            TimelineEvent { end: None, .. } => {
                let color = if e.bug { "#c62828" } else { "#757575" };
                let _ = write!(
                    out,
                    "<path class=\"mark\" d=\"M{:.1} {} l5 8 l-10 0 z\" fill=\"{color}\"><title>{}</title></path>",
                    x(e.ts),
                    y + 2.0,
                    esc(&e.name)
                );
            }
        }
    }
    let _ = write!(out, "<text x=\"{label_w}\" y=\"{}\">{}</text>", h - 6.0, esc(&fmt_ts(t0)));
    let _ = write!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
        label_w + plot_w,
        h - 6.0,
        esc(&fmt_ts(t1))
    );
    out.push_str("</svg>");
}

/// Writes the page.
///
/// # Errors
/// Errors of `out`.
pub fn write_html(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let s = &report.summary;
    let bugs: Vec<&TraceFinding> = report.bugs().collect();
    let mut p = String::new();
    let _ = write!(
        p,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>iosan: {}</title><style>{STYLE}</style></head><body>",
        esc(&s.input)
    );
    let _ = write!(p, "<h1>iosan analyze: {} ({} semantics)</h1>", esc(&s.input), esc(s.semantics));
    let verdict = if bugs.is_empty() {
        "<p class=\"ok\" id=\"verdict\">no DMA use-after-free found</p>".to_string()
    } else {
        format!(
            "<p class=\"bad\" id=\"verdict\"><span id=\"finding-count\">{}</span> DMA use-after-free finding(s)</p>",
            bugs.len()
        )
    };
    p.push_str(&verdict);
    p.push_str("<h2>Summary</h2><table>");
    row(&mut p, "events", &format!("{} ({} unknown)", s.events_read, s.unknown_events));
    row(&mut p, "time", &format!("{} – {}", fmt_ts(s.first_ns.unwrap_or(0)), fmt_ts(s.last_ns)));
    row(&mut p, "mode", s.mode);
    row(&mut p, "domains", &format!("{}; devices: {}", s.domains, s.devices.join(", ")));
    row(&mut p, "lost events", &format!("{} lost, {} overwritten", s.lost_events, s.overwritten_events));
    let skipped: u64 = s.skipped.values().map(|c| c.count).sum();
    row(&mut p, "input", &format!("{} lines, {} bytes, {skipped} lines skipped", s.lines, s.bytes));
    let uncertain = report.uncertain().count();
    if uncertain > 0 {
        row(
            &mut p,
            "uncertain",
            &format!("{uncertain} more findings whose domain attribution is a guess (not counted)"),
        );
    }
    if s.exposure.frees > 0 {
        row(
            &mut p,
            "lazy-mode exposure",
            &format!(
                "{} pages in {} frees, longest window {} ns",
                s.exposure.pages, s.exposure.frees, s.exposure.longest_ns
            ),
        );
    }
    p.push_str("</table><h2>Timeline</h2>");
    svg(&mut p, &crate::timeline::build(report));
    p.push_str("<h2>Findings</h2>");
    for (i, f) in bugs.iter().enumerate() {
        card(&mut p, i, f);
    }
    p.push_str("</body></html>\n");
    out.write_all(p.as_bytes())?;
    out.flush()
}
