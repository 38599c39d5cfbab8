//! Task names and kernel stacks: who mapped, and from where.
//!
//! A mapping's provenance travels through the sanitizer as one opaque
//! [`MapMeta`] tag (stack id, CPU, pid); this room packs it at map time and
//! unpacks it into a [`MapSite`] when a finding is reported.

use std::sync::Arc;

use iosan_core::MapMeta;

use crate::record::Record;
use crate::report::MapSite;

/// Keys come from the capture; the map is bounded, so chosen collisions
/// cost time, never memory.
type HashMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<iosan_core::hash::FastHasher>>;

/// Most distinct stacks kept; later ones are not recorded.
const MAX_STACKS: usize = 1 << 16;
/// Most task names kept.
const MAX_COMMS: usize = 1 << 22;

/// Task names by pid, and distinct stacks by id.
#[derive(Default)]
pub(super) struct Tasks {
    comms: HashMap<u32, Arc<str>>,
    stacks: Vec<Arc<[String]>>,
    stack_ids: HashMap<Arc<[String]>, usize>,
}

impl Tasks {
    /// The task name of `ctx`, remembered for its pid (a `<...>` keeps the name known).
    pub(super) fn comm(&mut self, ctx: &Record) -> Arc<str> {
        match self.remember_comm(ctx) {
            Some(c) => c.clone(),
            None => String::from_utf8_lossy(ctx.comm).into(),
        }
    }

    /// Notes the task name of `ctx` and returns the one kept for its pid
    /// (`None` when the table is full and has none); no reference count is
    /// touched when it is unchanged.
    fn remember_comm(&mut self, ctx: &Record) -> Option<&Arc<str>> {
        if !self.note_comm(ctx) {
            return None;
        }
        self.comms.get(&ctx.pid)
    }

    /// Notes the task name of `ctx` (one table lookup when it is unchanged);
    /// false when the table is full and keeps another name or none.
    fn note_comm(&mut self, ctx: &Record) -> bool {
        let same = self.comms.get(&ctx.pid).is_some_and(|c| c.as_bytes() == ctx.comm || ctx.comm == b"<...>");
        if same {
            return true;
        }
        if self.comms.len() >= MAX_COMMS {
            return false;
        }
        self.comms.insert(ctx.pid, String::from_utf8_lossy(ctx.comm).into());
        true
    }

    /// The name remembered for `pid`, without learning anything.
    pub(super) fn known(&self, pid: u32) -> Option<&Arc<str>> {
        self.comms.get(&pid)
    }

    /// 1-based id of a stack (0: none, or past the cap).
    fn stack_id(&mut self, stack: &[&[u8]]) -> usize {
        if stack.is_empty() {
            return 0;
        }
        let frames: Arc<[String]> = stack
            .iter()
            .take(64)
            .map(|f| {
                let t = String::from_utf8_lossy(f);
                let t = t.trim();
                t.strip_prefix("=>").unwrap_or(t).trim().to_string()
            })
            .collect::<Vec<_>>()
            .into();
        if let Some(&i) = self.stack_ids.get(&frames) {
            return i;
        }
        if self.stacks.len() >= MAX_STACKS {
            return 0;
        }
        self.stacks.push(frames.clone());
        let id = self.stacks.len(); // 1-based: 0 means none
        self.stack_ids.insert(frames, id);
        id
    }

    /// The provenance tag of a map at `ctx` with `stack`.
    pub(super) fn meta(&mut self, ctx: &Record, stack: &[&[u8]]) -> MapMeta {
        let _ = self.note_comm(ctx);
        let sid = self.stack_id(stack) as u64;
        MapMeta { when: ctx.ts_ns, tag: (sid << 44) | (u64::from(ctx.cpu & 0xfff) << 32) | u64::from(ctx.pid) }
    }

    /// Where and when a mapping with `meta` was made.
    pub(super) fn site(&self, meta: MapMeta) -> MapSite {
        let pid = (meta.tag & 0xffff_ffff) as u32;
        let cpu = ((meta.tag >> 32) & 0xfff) as u32;
        let sid = (meta.tag >> 44) as usize;
        let frames: &[String] = sid.checked_sub(1).and_then(|i| self.stacks.get(i)).map_or(&[], |s| s);
        let hidden = frames.iter().take_while(|f| is_tracepoint_frame(f)).count();
        MapSite {
            time_ns: meta.when,
            cpu,
            pid,
            task: self.comms.get(&pid).map(|c| c.to_string()).unwrap_or_else(|| "<...>".into()),
            stack: frames.get(hidden..).unwrap_or_default().to_vec(),
            stack_hidden: hidden,
        }
    }

    /// Where and when the event `ctx` happened, with its stack.
    pub(super) fn event_site(&mut self, ctx: &Record) -> MapSite {
        let meta = self.meta(ctx, ctx.stack);
        self.site(meta)
    }
}

/// A frame of the tracepoint machinery that recorded the stack, not of the
/// code that hit it: the event's `trace_event_raw_event_CLASS` (or
/// `perf_trace_`, `__bpf_trace_`), `__traceiter_NAME`, the inline
/// `trace_NAME` wrapper, and the trigger's own frames.
fn is_tracepoint_frame(frame: &str) -> bool {
    ["trace_", "__traceiter_", "perf_trace_", "__bpf_trace_", "event_trigger", "__trace_stack", "stacktrace_trigger"]
        .iter()
        .any(|p| frame.starts_with(p))
}
