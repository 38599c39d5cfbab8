#!/usr/bin/env python3
"""Check `iosan analyze --format json` findings against iosan_uaf's ground truth.

usage: check.py --mode strict|lazy|unknown --capture capture.txt
                --ground-truth dmesg.txt --findings findings.jsonl
                [--leg NAME] [--after-cleanup after-cleanup.txt]
                [--crash-recovery crash-recovery.txt] [--require-good CASE]...
                [--phases good,bug] [--min-leak-cases N] [--no-meta]
                [--live [--line-times watch.timed --workload-times workload.timed]]

--mode is the IOMMU mode the capture must say it recorded (`unknown`: no
IOMMU); --leg names the leg in the output (default: the mode).

Ground truth: the test module's printk lines (from dmesg, or from the
printk:console events in the capture when dmesg is missing):

    iosan_uaf: LEAK case=<name> dev=<bdf|none> pfn=0x<hex> npages=<n> dma=0x<hex>
    iosan_uaf: GOOD case=<name> dev=<bdf|none> pfn=0x<hex> npages=<n> dma=0x<hex>

Passes when
  * the module phases (--phases, default good,bug) ran, and at least
    --min-leak-cases (default MIN_LEAK_CASES) bug cases logged pages;
  * every LEAK page is covered by a freed-while-mapped or
    allocated-while-mapped finding whose device is the logged one
    (dev=none: a domain attached to no device, so device null);
  * no bug-kind finding covers a GOOD page (pages that a later case or the
    kernel reused for a LEAK are left out);
  * the capture has iosan-record's metadata and lost no events;
  * `iosan record` cleaned up after itself (when --after-cleanup is given);
  * every --require-good case logged its correct-pattern pages.
With --live the findings are `iosan watch --format json`'s output (the
analysis ran in the guest; --capture is that file too): no capture metadata
is checked, lost events come from the summary line (its `lost_events` and
`overwritten_events`). --line-times is the same output with the guest's
monotonic time before each line, --workload-times the workload's marks the
same way: the first freed-while-mapped finding must have come before the
workload's `phase=end` mark (findings came while the module ran, not at the
end).
Bug-kind findings on other pages are listed as "unexplained"; they fail the
check (iosan promises no false positives) unless E2E_FAIL_ON_UNEXPLAINED=0.
Exit status: 0 pass, 1 fail.
"""

import argparse
import json
import lzma
import os
import re
import sys

MIN_LEAK_CASES = 3
HIT_KINDS = {"freed-while-mapped", "allocated-while-mapped"}
BUG_KINDS = HIT_KINDS | {
    "double-unmap",
    "unmap-overlaps-unmapped",
    "refcount-underflow",
    "refcount-overflow",
    "invalid-map-args",
    "leak-at-teardown",
    "dma-unmap-mismatch",
}
TRUTH = re.compile(
    r"iosan_uaf: (?P<verdict>LEAK|GOOD) case=(?P<case>\S+) dev=(?P<dev>\S+) "
    r"pfn=0x(?P<pfn>[0-9a-f]+) npages=(?P<npages>\d+) dma=0x(?P<dma>[0-9a-f]+)"
)
PHASE = re.compile(r"iosan_uaf: (BEGIN|END) phase=(\w+)")
BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


def open_text(path):
    """A text file, or an xz-compressed one (the fixtures)."""
    if path.endswith(".xz"):
        return lzma.open(path, "rt", errors="replace")
    return open(path, errors="replace")


def read_truth(paths):
    """(leak entries, good entries, phases seen, other iosan_uaf lines)."""
    for path in paths:
        if not path or not os.path.exists(path):
            continue
        leaks, goods, phases, notes = [], [], set(), []
        with open_text(path) as f:
            for line in f:
                m = TRUTH.search(line)
                if m:
                    e = {
                        "case": m["case"],
                        "dev": None if m["dev"] == "none" else m["dev"],
                        "pfn": int(m["pfn"], 16),
                        "npages": int(m["npages"]),
                    }
                    (leaks if m["verdict"] == "LEAK" else goods).append(e)
                    continue
                p = PHASE.search(line)
                if p:
                    phases.add((p[1], p[2]))
                elif "iosan_uaf: " in line and ("SKIP" in line or "ERROR" in line):
                    notes.append(line.strip())
        if leaks or goods or phases:
            return leaks, goods, phases, notes, path
    return [], [], set(), [], None


def read_findings(path):
    findings, summary, bad = [], None, 0
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if obj.get("type") == "finding":
                if obj.get("pfn") is None:
                    # Not about a page (a double unmap, a mismatched unmap, a
                    # map that failed): no module case makes one, so a bug
                    # finding here is unexplained.
                    findings.append(
                        {"kind": obj.get("kind"), "pfn": None, "npages": 0, "device": obj.get("device"),
                         "bug": obj.get("bug") is True, "iova": obj.get("iova")}
                    )
                    continue
                try:
                    pfn = int(str(obj.get("pfn")), 16)
                except ValueError:
                    bad += 1
                    continue
                npages = obj.get("npages") or 1
                findings.append(
                    {
                        "kind": obj.get("kind"),
                        "pfn": pfn,
                        "npages": int(npages),
                        "device": obj.get("device"),
                    }
                )
            elif obj.get("type") == "summary":
                summary = obj
    return findings, summary, bad


def first_finding_time(path):
    """(guest uptime when the first freed-while-mapped line of watch's output
    was read, that finding's trace time)."""
    if not os.path.exists(path):
        return None, None
    for line in open(path, errors="replace"):
        up, _, text = line.partition(" ")
        try:
            obj = json.loads(text)
        except ValueError:
            continue
        if obj.get("type") == "finding" and obj.get("kind") == "freed-while-mapped":
            try:
                return float(up), obj.get("time")
            except ValueError:
                return None, None
    return None, None


def read_meta(path):
    meta = {}
    with open_text(path) as f:
        for line in f:
            if not line.startswith("#"):
                break
            if line.startswith("# iosan-meta: "):
                k, _, v = line[len("# iosan-meta: "):].rstrip("\n").partition("=")
                meta[k] = v
    return meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True)
    ap.add_argument("--capture", required=True)
    ap.add_argument("--ground-truth", required=True)
    ap.add_argument("--findings", required=True)
    ap.add_argument("--after-cleanup")
    ap.add_argument("--crash-recovery")
    ap.add_argument("--leg")
    ap.add_argument("--require-good", action="append", default=[])
    ap.add_argument("--phases", default="good,bug", help="module phases that must have run")
    ap.add_argument("--min-leak-cases", type=int, default=MIN_LEAK_CASES)
    ap.add_argument(
        "--no-meta",
        action="store_true",
        help="the capture is not iosan record's (perf.data): no metadata header to check; "
        "lost events come from the findings' summary",
    )
    ap.add_argument("--live", action="store_true", help="findings from `iosan watch --format json`")
    ap.add_argument("--line-times", help="watch's output, each line after the guest's uptime")
    ap.add_argument("--workload-times", help="the workload's output, each line after the guest's uptime")
    a = ap.parse_args()
    if a.live:
        a.no_meta = True
    expect_mode = a.mode
    mode = a.leg or a.mode
    problems = []

    meta = {} if a.no_meta else read_meta(a.capture)
    if a.no_meta:
        pass
    elif "tool" not in meta:
        problems.append("capture has no '# iosan-meta:' header")
    if meta.get("iommu_mode") not in (expect_mode, None):
        problems.append(f"capture says iommu_mode={meta.get('iommu_mode')}, expected {expect_mode}")
    if meta.get("lost_events", "0") != "0":
        problems.append(f"the ring buffer lost {meta['lost_events']} events")
    missed = sum(int(v) for k, v in meta.items() if k.endswith(".nmissed") and v.isdigit())

    # "<instances>:<number of iosan kprobes>" as the guest saw them
    if a.after_cleanup:
        left = open(a.after_cleanup).read().strip() if os.path.exists(a.after_cleanup) else "missing"
        if left != ":0":
            problems.append(f"iosan record left state behind (instances:kprobes = {left})")
    if a.crash_recovery:
        cr = {}
        if os.path.exists(a.crash_recovery):
            for line in open(a.crash_recovery):
                k, _, v = line.strip().partition("=")
                cr[k] = v.strip()
        crashed, cleaned = cr.get("left_after_crash", ""), cr.get("left_after_cleanup")
        if "iosan" not in crashed.split(":")[0].split() or crashed.endswith(":0"):
            problems.append(f"the killed recording left no state to clean up (instances:kprobes = {crashed!r})")
        if cleaned != ":0":
            problems.append(f"iosan record --cleanup after a killed run left {cleaned!r}")
        else:
            print(f"{mode}: killed recording left {crashed!r} (instances:kprobes), --cleanup removed it all")

    leaks, goods, phases, notes, src = read_truth([a.ground_truth, a.capture])
    for n in notes:
        print(f"{mode}: module said: {n}")
    for ph in a.phases.split(","):
        if ("END", ph) not in phases:
            problems.append(f"module phase {ph} did not run to the end (no 'iosan_uaf: END phase={ph}')")
    cases = sorted({e["case"] for e in leaks})
    for c in a.require_good:
        if not any(e["case"] == c for e in goods):
            problems.append(f"correct-pattern case {c} logged no pages (see the module's SKIP line)")
    if len(cases) < a.min_leak_cases:
        problems.append(f"only {len(cases)} use-after-free cases logged pages ({', '.join(cases)})")

    findings, summary, bad = read_findings(a.findings)
    if bad:
        problems.append(f"{bad} unreadable lines in the findings")
    if summary is None:
        problems.append("no summary line in the findings")
    elif a.no_meta and summary.get("lost_events"):
        problems.append(f"the capture lost {summary['lost_events']} events")
    elif a.live and summary.get("overwritten_events"):
        problems.append(f"the ring buffer overwrote {summary['overwritten_events']} events")
    if a.live and a.line_times:
        (first, ftime), end, bug_end = first_finding_time(a.line_times), None, None
        if a.workload_times and os.path.exists(a.workload_times):
            for line in open(a.workload_times, errors="replace"):
                up, _, text = line.rstrip("\n").partition(" ")
                if text.startswith("E2E: phase=end"):
                    end = float(up)
                elif text.startswith("E2E: phase=uaf_bug end"):
                    bug_end = float(up)
        print(
            f"{mode}: first freed-while-mapped line read at {first} s (guest uptime; its event at {ftime} s); "
            f"module's bug phase ended at {bug_end} s, workload ended at {end} s"
        )
        if first is None or end is None:
            problems.append("no time for the first freed-while-mapped finding or the workload's end")
        elif first >= end:
            problems.append(f"the first freed-while-mapped finding came at {first} s, after the workload ended ({end} s)")

    pageless = [f for f in findings if f["pfn"] is None]
    findings = [f for f in findings if f["pfn"] is not None]
    by_page = {}
    for f in findings:
        for p in range(f["pfn"], f["pfn"] + max(f["npages"], 1)):
            by_page.setdefault(p, []).append(f)

    leak_pages = {}  # page -> every LEAK entry covering it (a page can be leaked twice)
    for e in leaks:
        for p in range(e["pfn"], e["pfn"] + e["npages"]):
            leak_pages.setdefault(p, []).append(e)
    good_pages = {}
    for e in goods:
        for p in range(e["pfn"], e["pfn"] + e["npages"]):
            if p not in leak_pages:
                good_pages[p] = e

    def right_device(e, hits):
        if e["dev"] is None:
            return any(f["device"] is None or not BDF.match(str(f["device"])) for f in hits)
        return any(f["device"] == e["dev"] for f in hits)

    reported, missing, wrong_dev = 0, [], []
    per_case = {}
    for p, entries in sorted(leak_pages.items()):
        hits = [f for f in by_page.get(p, []) if f["kind"] in HIT_KINDS]
        page_ok = True
        for e in entries:
            st = per_case.setdefault(e["case"], [0, 0])
            st[1] += 1
            if hits and right_device(e, hits):
                st[0] += 1
            else:
                page_ok = False
        if page_ok:
            reported += 1
        elif not hits:
            missing.append((p, entries[0]))
        else:
            wrong_dev.append((p, entries[0], sorted({str(f["device"]) for f in hits})))

    false_good = []
    for p, e in sorted(good_pages.items()):
        bugs = [f for f in by_page.get(p, []) if f["kind"] in BUG_KINDS]
        if bugs:
            false_good.append((p, e, sorted({f["kind"] for f in bugs})))

    unexplained = [
        f
        for f in findings
        if f["kind"] in BUG_KINDS
        and not any(p in leak_pages for p in range(f["pfn"], f["pfn"] + max(f["npages"], 1)))
    ]
    unexplained_pageless = [f for f in pageless if f["bug"] or f["kind"] in BUG_KINDS]

    kinds = {}
    for f in findings + pageless:
        kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    print(
        f"{mode}: ground truth from {src}: {len(leak_pages)} use-after-free pfns in "
        f"{len(cases)} cases, {len(good_pages)} correct-pattern pfns; "
        f"{len(findings) + len(pageless)} findings {dict(sorted(kinds.items()))}; kprobe misses {missed}"
    )
    for c in sorted(per_case):
        print(f"{mode}:   case {c}: {per_case[c][0]}/{per_case[c][1]} pfns reported with the right device")
    print(
        f"{mode}: {reported} ground-truth pfns reported, {len(missing)} missing, "
        f"{len(wrong_dev)} with the wrong device, {len(false_good)} false findings on "
        f"correct-pattern pfns, {len(unexplained)} unexplained bug findings elsewhere, "
        f"{len(unexplained_pageless)} about no page"
    )
    for p, e in missing[:10]:
        problems.append(f"pfn {p:#x} ({e['case']}, dev {e['dev']}) not reported")
    if len(missing) > 10:
        problems.append(f"... and {len(missing) - 10} more pfns not reported")
    for p, e, devs in wrong_dev[:10]:
        problems.append(f"pfn {p:#x} ({e['case']}) reported against {devs}, expected {e['dev']}")
    for p, e, ks in false_good[:10]:
        problems.append(f"correct-pattern pfn {p:#x} ({e['case']}) reported as {ks}")
    for f in unexplained[:5]:
        print(f"{mode}:   unexplained: {f['kind']} pfn={f['pfn']:#x} npages={f['npages']} device={f['device']}")
    for f in unexplained_pageless[:5]:
        print(f"{mode}:   unexplained: {f['kind']} (no page) iova={f['iova']} device={f['device']}")
    if unexplained and os.environ.get("E2E_FAIL_ON_UNEXPLAINED", "1") == "1":
        problems.append(f"{len(unexplained)} unexplained bug findings")
    if unexplained_pageless:
        problems.append(f"{len(unexplained_pageless)} bug findings about no page (no module case makes one)")

    for pr in problems:
        print(f"{mode}: FAIL: {pr}")
    print(f"{mode}: {'PASS' if not problems else 'FAIL'}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
