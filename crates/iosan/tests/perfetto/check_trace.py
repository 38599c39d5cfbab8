"""Decodes an `iosan analyze --perfetto` file with Perfetto's own protobuf
bindings and checks it against the JSON findings of the same run.

Usage: check_trace.py TRACE FINDINGS_JSONL
Exit 0 when every check passes, 1 with a message otherwise, 77 when the
`perfetto` or `protobuf` module is missing (the caller skips).
"""
import json
import sys

try:
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
except ImportError as e:  # pragma: no cover - environment dependent
    print(f"skip: {e}")
    sys.exit(77)


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def main():
    trace_path, findings_path = sys.argv[1], sys.argv[2]
    trace = pb.Trace()
    with open(trace_path, "rb") as f:
        trace.ParseFromString(f.read())
    if not trace.packet:
        fail("no packets")

    tracks = {}
    events = []
    seq_cleared = False
    for p in trace.packet:
        if p.HasField("track_descriptor"):
            td = p.track_descriptor
            if td.uuid in tracks:
                fail(f"track uuid {td.uuid} described twice")
            if td.HasField("parent_uuid") and td.parent_uuid not in tracks:
                fail(f"track {td.name!r} before its parent {td.parent_uuid}")
            tracks[td.uuid] = td
            seq_cleared |= bool(p.sequence_flags & 1)
        elif p.HasField("track_event"):
            if not p.trusted_packet_sequence_id:
                fail("event without a sequence id")
            events.append((p.timestamp, p.track_event))
    if not seq_cleared:
        fail("no packet clears the incremental state")
    for ts, te in events:
        if te.track_uuid not in tracks:
            fail(f"event {te.name!r} on an undescribed track {te.track_uuid}")
    if [ts for ts, _ in events] != sorted(ts for ts, _ in events):
        fail("events out of time order")

    # Slices nest: per track, every end closes an open begin.
    open_by_track = {}
    for ts, te in events:
        if te.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
            open_by_track.setdefault(te.track_uuid, []).append(ts)
        elif te.type == pb.TrackEvent.TYPE_SLICE_END:
            stack = open_by_track.get(te.track_uuid)
            if not stack:
                fail(f"slice end at {ts} with nothing open on track {te.track_uuid}")
            if stack.pop() > ts:
                fail("slice ends before it begins")
    if any(open_by_track.values()):
        fail("slices left open")

    def annotations(te):
        out = {}
        for a in te.debug_annotations:
            kind = a.WhichOneof("value")
            out[a.name] = getattr(a, kind) if kind else None
        return out

    instants = [(ts, te, annotations(te)) for ts, te in events if te.type == pb.TrackEvent.TYPE_INSTANT]
    with open(findings_path) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    bugs = [l for l in lines if l.get("type") == "finding" and l.get("bug")]
    if not bugs:
        fail("the run has no bug finding to look for")
    for b in bugs:
        ts = round(b["time"] * 1e9)
        pfn = int(b["pfn"], 16) if b["pfn"] else None
        device = b["device"] or "unknown"
        want_track = f"device {b['device']}" if b["device"] else (f"domain {b['domain']}" if b["domain"] else "anonymous IOVA space")
        hits = [
            (t, te, a)
            for t, te, a in instants
            if abs(t - ts) <= 1000
            and a.get("kind") == b["kind"]
            and a.get("pfn") == pfn
            and a.get("device") == device
            and tracks[te.track_uuid].name == want_track
        ]
        if not hits:
            fail(f"no instant for {b['kind']} pfn {b['pfn']} at {b['time']} on track {want_track!r}")
        a = hits[0][2]
        if b["iova"] is not None and a.get("iova") != int(b["iova"], 16):
            fail(f"iova annotation {a.get('iova')} != {b['iova']}")
    slices = sum(1 for _, te in events if te.type == pb.TrackEvent.TYPE_SLICE_BEGIN)
    print(f"ok: {len(tracks)} tracks, {len(instants)} instants, {slices} slices, {len(bugs)} bug findings matched")


main()
