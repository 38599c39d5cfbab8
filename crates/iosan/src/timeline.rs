//! The timeline of a report, shared by the Perfetto and HTML outputs.
//!
//! - one track per device (or per domain when no device is known, and one
//!   "anonymous IOVA space" track);
//! - each bug finding is an instant on its device's track at the time of
//!   the free or allocation;
//! - the mappings that matter to findings (the live mappings covering the
//!   reported pages) are slices from their map to their unmap, or to the
//!   end of the capture when they were not unmapped in it, on child tracks
//!   ("lanes") of their device so that overlapping lifetimes stay apart;
//!   no other mapping is drawn: each `live_at_end` group of the summary is
//!   one instant at the end with its mapping count and bytes;
//! - lazy-mode exposure, when measured: the replay's longest windows (at
//!   most 8 per domain, from the free to the IOTLB flush) are slices on an
//!   "exposure" lane of their device, and one instant at the end of the
//!   capture on a "lazy-mode exposure" track gives the totals of all of them.
//!
//! Bounds: at most [`MAX_SLICES`] mapping slices; past it one instant at
//! the end says how many mappings were left out. A slice lasts at least
//! 1 ns, so that its end never comes before its begin.
//!
//! Timestamps are the capture's (ns of the trace clock).

use std::collections::{BTreeMap, BTreeSet};

use iosan_trace::{fmt_ts, Report, TraceFinding};

/// Most mapping slices drawn.
pub const MAX_SLICES: usize = 10_000;
/// Most stack frames put in an annotation.
const MAX_FRAMES: usize = 12;

/// A debug annotation value.
pub enum Ann {
    /// Unsigned integer.
    U(u64),
    /// Text.
    S(String),
    /// Flag.
    B(bool),
}

/// A track.
pub struct Track {
    /// 1-based id.
    pub uuid: u64,
    /// The device track a lane belongs to.
    pub parent: Option<u64>,
    /// Shown name.
    pub name: String,
}

/// An instant (`end: None`) or a slice.
pub struct TimelineEvent {
    /// Start, ns.
    pub ts: u64,
    /// End of a slice, ns.
    pub end: Option<u64>,
    /// Track uuid.
    pub track: u64,
    /// A bug finding.
    pub bug: bool,
    /// Shown name.
    pub name: String,
    /// Debug annotations.
    pub annotations: Vec<(&'static str, Ann)>,
}

/// Tracks and events.
#[derive(Default)]
pub struct Timeline {
    /// Tracks, parents before their lanes.
    pub tracks: Vec<Track>,
    by_name: BTreeMap<String, u64>,
    lanes: BTreeMap<u64, Vec<u64>>,
    named_lanes: BTreeMap<String, Vec<u64>>,
    /// Events by start time.
    pub events: Vec<TimelineEvent>,
}

impl Timeline {
    fn named(&mut self, name: String, parent: Option<u64>) -> u64 {
        if let Some(&u) = self.by_name.get(&name) {
            return u;
        }
        let uuid = self.tracks.len() as u64 + 1;
        self.tracks.push(Track { uuid, parent, name: name.clone() });
        self.by_name.insert(name, uuid);
        uuid
    }

    /// The track named `name`.
    pub fn track(&mut self, name: &str) -> u64 {
        self.named(name.to_string(), None)
    }

    /// A lane of `parent` named `base` (numbered past the first) free at
    /// `start`; it stays busy until `end`.
    pub fn lane_named(&mut self, parent: u64, base: &str, start: u64, end: u64) -> u64 {
        let ends = self.named_lanes.entry(base.to_string()).or_default();
        let i = match ends.iter().position(|&e| e <= start) {
            Some(i) => i,
            None => {
                ends.push(0);
                ends.len() - 1
            }
        };
        if let Some(e) = ends.get_mut(i) {
            *e = end;
        }
        let name = if i == 0 { base.to_string() } else { format!("{base} {}", i + 1) };
        self.named(name, Some(parent))
    }

    /// A lane of `parent` free at `start`; it stays busy until `end`.
    pub fn lane(&mut self, parent: u64, start: u64, end: u64) -> u64 {
        let ends = self.lanes.entry(parent).or_default();
        let i = match ends.iter().position(|&e| e <= start) {
            Some(i) => i,
            None => {
                ends.push(0);
                ends.len() - 1
            }
        };
        if let Some(e) = ends.get_mut(i) {
            *e = end;
        }
        let parent_name = self.tracks.iter().find(|t| t.uuid == parent).map_or(String::new(), |t| t.name.clone());
        self.named(format!("{parent_name} · mappings {}", i + 1), Some(parent))
    }
}

fn device_track_name(device: Option<&str>, domain: Option<&str>) -> String {
    match (device, domain) {
        (Some(d), _) => format!("device {d}"),
        (None, Some(dom)) => format!("domain {dom}"),
        (None, None) => "anonymous IOVA space".to_string(),
    }
}

fn finding_annotations(f: &TraceFinding) -> Vec<(&'static str, Ann)> {
    let mut a = vec![("kind", Ann::S(f.kind.name().to_string()))];
    if let Some(p) = f.pfn {
        a.push(("pfn", Ann::U(p)));
    }
    a.push(("npages", Ann::U(f.npages)));
    if let Some(i) = f.iova {
        a.push(("iova", Ann::U(i)));
    }
    a.push(("size", Ann::U(f.size)));
    a.push(("device", Ann::S(f.device.clone().unwrap_or_else(|| "unknown".into()))));
    a.push(("domain", Ann::S(f.domain.clone().unwrap_or_else(|| "anonymous".into()))));
    if let Some(t) = &f.task {
        a.push(("task", Ann::S(t.clone())));
    }
    a.push(("confirmed", Ann::B(f.confirmed)));
    a.push(("bug", Ann::B(f.counts_as_bug())));
    a.push(("line", Ann::U(f.line)));
    if let Some(m) = &f.mapped_at {
        a.push(("mapped_at", Ann::S(fmt_ts(m.time_ns))));
    }
    let sites =
        [("mapped_by_stack", &f.mapped_at), ("freed_by_stack", &f.freed_by), ("unmapped_by_stack", &f.unmapped_by)];
    for (key, site) in sites {
        if let Some(s) = site.as_ref().filter(|s| !s.stack.is_empty()) {
            let frames: Vec<&str> = s.stack.iter().take(MAX_FRAMES).map(String::as_str).collect();
            a.push((key, Ann::S(frames.join("\n"))));
        }
    }
    a
}

/// The timeline of `report`.
#[must_use]
pub fn build(report: &Report) -> Timeline {
    let mut tl = Timeline::default();
    let end = report.summary.last_ns;
    let mut drawn: BTreeSet<(u64, u64, u64)> = BTreeSet::new();
    let mut left_out = 0u64;
    for f in report.findings.iter().filter(|f| f.kind.is_bug()) {
        let track = tl.track(&device_track_name(f.device.as_deref(), f.domain.as_deref()));
        tl.events.push(TimelineEvent {
            ts: f.time_ns,
            end: None,
            track,
            bug: true,
            name: format!("{} pfn {:#x}", f.kind.name(), f.pfn.unwrap_or(0)),
            annotations: finding_annotations(f),
        });
        for m in &f.mappings {
            if !drawn.insert((m.iova, m.phys, m.mapped_at.time_ns)) {
                continue;
            }
            if drawn.len() > MAX_SLICES {
                left_out += 1;
                continue;
            }
            let parent = tl.track(&device_track_name(m.device.as_deref(), m.domain.as_deref()));
            let start = m.mapped_at.time_ns;
            let stop = m.unmapped_ns.unwrap_or(end).max(start.saturating_add(1));
            let lane = tl.lane(parent, start, stop);
            tl.events.push(TimelineEvent {
                ts: start,
                end: Some(stop),
                track: lane,
                bug: false,
                name: format!("iova {:#x} +{:#x}", m.iova, m.len),
                annotations: vec![
                    ("iova", Ann::U(m.iova)),
                    ("phys", Ann::U(m.phys)),
                    ("size", Ann::U(m.len)),
                    ("mapped_by", Ann::S(format!("{}-{}", m.mapped_at.task, m.mapped_at.pid))),
                    (
                        "unmapped",
                        Ann::S(if m.unmapped_ns.is_some() { "in the capture" } else { "not before its end" }.into()),
                    ),
                ],
            });
        }
    }
    if left_out > 0 {
        let track = tl.track("mappings not drawn");
        tl.events.push(TimelineEvent {
            ts: end,
            end: None,
            track,
            bug: false,
            name: format!("{left_out} more mappings of findings (past {MAX_SLICES})"),
            annotations: vec![("mappings", Ann::U(left_out))],
        });
    }
    for g in &report.summary.live_at_end {
        let track = tl.track(&device_track_name(g.device.as_deref(), g.domain.as_deref()));
        tl.events.push(TimelineEvent {
            ts: end,
            end: None,
            track,
            bug: false,
            name: format!("{} mappings live at the end", g.mappings),
            annotations: vec![("mappings", Ann::U(g.mappings)), ("bytes", Ann::U(g.bytes))],
        });
    }
    for w in &report.summary.exposure_windows {
        let parent = tl.track(&device_track_name(w.device.as_deref(), w.domain.as_deref()));
        let parent_name = tl.tracks.iter().find(|t| t.uuid == parent).map_or(String::new(), |t| t.name.clone());
        let start = w.freed_ns;
        let stop = w.flushed_ns.max(start.saturating_add(1));
        let lane = tl.lane_named(parent, &format!("{parent_name} · lazy exposure"), start, stop);
        tl.events.push(TimelineEvent {
            ts: start,
            end: Some(stop),
            track: lane,
            bug: false,
            name: format!("{} pages freed before their IOTLB flush", w.pages),
            annotations: vec![("pages", Ann::U(w.pages)), ("window_ns", Ann::U(stop - start))],
        });
    }
    let e = &report.summary.exposure;
    if e.frees > 0 {
        let track = tl.track("lazy-mode exposure");
        tl.events.push(TimelineEvent {
            ts: end,
            end: None,
            track,
            bug: false,
            name: format!("{} pages freed before their IOTLB flush", e.pages),
            annotations: vec![
                ("frees", Ann::U(e.frees)),
                ("pages", Ann::U(e.pages)),
                ("bytes", Ann::U(e.bytes)),
                ("longest_window_ns", Ann::U(e.longest_ns)),
            ],
        });
    }
    tl.events.sort_by_key(|e| e.ts);
    tl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_lifetimes_get_separate_lanes() {
        let mut tl = Timeline::default();
        let dev = tl.track("device a");
        let l1 = tl.lane(dev, 0, 10);
        let l2 = tl.lane(dev, 5, 20);
        let l3 = tl.lane(dev, 10, 30);
        assert_ne!(l1, l2);
        assert_eq!(l1, l3, "a lane is reused once free");
    }
}
