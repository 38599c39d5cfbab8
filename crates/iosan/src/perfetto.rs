//! `--perfetto FILE`: a Perfetto trace (TrackEvent protobuf) of a report,
//! for ui.perfetto.dev.
//!
//! Layout:
//! - one track per device (or per domain when no device is known, and one
//!   "anonymous IOVA space" track), named after it;
//! - each bug finding is an instant event on its device's track at the
//!   time of the free or allocation, with debug annotations `kind`, `pfn`,
//!   `npages`, `iova`, `size`, `device`, `domain`, `task`, `confirmed`;
//! - the mappings that matter to findings (the live mappings covering the
//!   reported pages) are slices from their map to their unmap, or to the end
//!   of the capture when they were never unmapped in it, on child tracks
//!   ("lanes") of their device so that overlapping lifetimes stay visible;
//!   other mappings are not drawn: the summary's `live_at_end` groups are an
//!   instant per group at the end, with their mapping count and bytes;
//! - lazy-mode exposure, when measured, is a counter-free summary instant
//!   on a "lazy-mode exposure" track.
//!
//! Timestamps are the capture's own (ns of the trace clock). The encoder is
//! a few lines of protobuf wire format (varints and length-delimited
//! fields), with field numbers from Perfetto's `trace_packet.proto`,
//! `track_event.proto`, `track_descriptor.proto` and `debug_annotation.proto`.

use std::io::{self, Write};

use iosan_trace::Report;

use crate::timeline::{build, Ann};

/// Protobuf wire-format writer.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.varint(u64::from(field) << 3);
        self.varint(v);
        self
    }
    fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.varint((u64::from(field) << 3) | 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }
    fn msg(&mut self, field: u32, m: &Msg) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

// Field numbers.
const TRACE_PACKET: u32 = 1;
const PKT_TIMESTAMP: u32 = 8;
const PKT_SEQ_ID: u32 = 10;
const PKT_TRACK_EVENT: u32 = 11;
const PKT_SEQ_FLAGS: u32 = 13;
const PKT_TRACK_DESCRIPTOR: u32 = 60;
const TD_UUID: u32 = 1;
const TD_NAME: u32 = 2;
const TD_PARENT: u32 = 5;
const TE_ANNOTATIONS: u32 = 4;
const TE_TYPE: u32 = 9;
const TE_TRACK: u32 = 11;
const TE_CATEGORIES: u32 = 22;
const TE_NAME: u32 = 23;
const DA_UINT: u32 = 3;
const DA_BOOL: u32 = 2;
const DA_STRING: u32 = 6;
const DA_NAME: u32 = 10;
const TYPE_SLICE_BEGIN: u64 = 1;
const TYPE_SLICE_END: u64 = 2;
const TYPE_INSTANT: u64 = 3;
const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
const SEQ: u64 = 1;

/// One track event to write.
struct Packet<'a> {
    ts: u64,
    /// Ends (0) before begins and instants (1) at one timestamp.
    order: u8,
    track: u64,
    kind: u64,
    name: &'a str,
    annotations: &'a [(&'static str, Ann)],
}

/// Writes the Perfetto trace of `report`.
///
/// # Errors
/// Errors of `out`.
pub fn write_perfetto(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let tl = build(report);
    let mut trace = Msg::default();
    let mut first = true;
    for t in &tl.tracks {
        let mut td = Msg::default();
        td.uint(TD_UUID, t.uuid).str(TD_NAME, &t.name);
        if let Some(p) = &t.parent {
            td.uint(TD_PARENT, *p);
        }
        let mut pkt = Msg::default();
        pkt.uint(PKT_SEQ_ID, SEQ).msg(PKT_TRACK_DESCRIPTOR, &td);
        if first {
            pkt.uint(PKT_SEQ_FLAGS, SEQ_INCREMENTAL_STATE_CLEARED);
            first = false;
        }
        trace.msg(TRACE_PACKET, &pkt);
    }
    // Slices become a begin and an end; ends sort before begins at one
    // instant (a slice lasts at least 1 ns, so its own end is later).
    let mut packets: Vec<Packet<'_>> = Vec::new();
    for e in &tl.events {
        match e.end {
            Some(end) => {
                packets.push(Packet {
                    ts: e.ts,
                    order: 1,
                    track: e.track,
                    kind: TYPE_SLICE_BEGIN,
                    name: &e.name,
                    annotations: &e.annotations,
                });
                packets.push(Packet {
                    ts: end,
                    order: 0,
                    track: e.track,
                    kind: TYPE_SLICE_END,
                    name: "",
                    annotations: &[],
                });
            }
            None => packets.push(Packet {
                ts: e.ts,
                order: 1,
                track: e.track,
                kind: TYPE_INSTANT,
                name: &e.name,
                annotations: &e.annotations,
            }),
        }
    }
    packets.sort_by_key(|p| (p.ts, p.order));
    for Packet { ts, track, kind, name, annotations, .. } in packets {
        let mut te = Msg::default();
        te.uint(TE_TYPE, kind).uint(TE_TRACK, track).str(TE_CATEGORIES, "iosan");
        if !name.is_empty() {
            te.str(TE_NAME, name);
        }
        for (k, v) in annotations {
            let mut da = Msg::default();
            da.str(DA_NAME, k);
            match v {
                Ann::U(u) => da.uint(DA_UINT, *u),
                Ann::S(s) => da.str(DA_STRING, s),
                Ann::B(b) => da.uint(DA_BOOL, u64::from(*b)),
            };
            te.msg(TE_ANNOTATIONS, &da);
        }
        let mut pkt = Msg::default();
        pkt.uint(PKT_TIMESTAMP, ts).uint(PKT_SEQ_ID, SEQ).msg(PKT_TRACK_EVENT, &te);
        trace.msg(TRACE_PACKET, &pkt);
    }
    out.write_all(&trace.0)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let mut m = Msg::default();
        m.uint(1, 300);
        assert_eq!(m.0, [0x08, 0xac, 0x02]);
    }
}
