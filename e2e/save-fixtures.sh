#!/bin/bash
# Save the captures of e2e legs as test fixtures for the analyzer:
#   fixtures/captures/<leg>.capture.txt.xz   the capture, xz -9
#   fixtures/captures/<leg>.perf.data        the capture of a perf leg
#   fixtures/captures/<leg>.pipe.perf.data.xz  and its pipe-mode twin, xz -9
#   fixtures/captures/<leg>.truth            the module's ground truth
#   fixtures/captures/<leg>.trace.dat        the same recording as trace-cmd
#                                            wrote it (legs in DAT_LEGS only)
# The .truth file holds the iosan_uaf lines of the guest's dmesg (LEAK and
# GOOD lines as check.py parses them, NOTE/SKIP/BEGIN/END for context),
# without the timestamps, after a few `#` lines naming the leg, kernel,
# page size and QEMU command.
#
# usage: e2e/save-fixtures.sh LEG...      (after e2e/run.sh LEG...)
set -euo pipefail
E2E=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$E2E/.." && pwd)
OUT=$REPO/fixtures/captures
DAT_LEGS=" arm64-strict "
for leg in "$@"; do
  d=$E2E/work/run-$leg
  if [ -s "$d/out/perf.data" ] && [ -s "$d/out/dmesg.txt" ]; then
    # a perf leg: the perf.data as it is (its records are zstd-compressed)
    cp "$d/out/perf.data" "$OUT/$leg.perf.data"
    # its pipe-mode twin, recorded at the same time, uncompressed: xz -9
    [ -s "$d/out/perf.pipe.data" ] && xz -9 -T1 -c "$d/out/perf.pipe.data" > "$OUT/$leg.pipe.perf.data.xz"
    kernel=$(grep -m1 -o 'Linux version .*' "$d/out/dmesg.txt"); ps=""
  else
    [ -s "$d/out/capture.txt" ] && [ -s "$d/out/dmesg.txt" ] || { echo "save-fixtures: no capture for $leg in $d" >&2; exit 1; }
    xz -9 -T1 -c "$d/out/capture.txt" > "$OUT/$leg.capture.txt.xz"
    kernel=$(sed -n 's/^# iosan-meta: kernel=//p' "$d/out/capture.txt" | head -1)
    ps=$(sed -n 's/^# iosan-meta: page_size=//p' "$d/out/capture.txt" | head -1)
  fi
  {
    echo "# iosan e2e ground truth, leg $leg (e2e/run.sh $leg; e2e/module/iosan_uaf.c)"
    echo "# kernel: $kernel"
    [ -s "$d/out/perf-version.txt" ] && echo "# recorder: $(cat "$d/out/perf-version.txt") (Debian linux-perf), perf record -a -k mono -z (and -o - for the pipe-mode twin)"
    echo "# page size: ${ps:-4096}"
    echo "# qemu: $(sed "s#$E2E/work#e2e/work#g" "$d/qemu-cmdline.txt")"
    echo "# LEAK: freed or reallocated while still mapped (must be reported, against dev; dev=none: a domain attached to no device)"
    echo "# GOOD: correct pattern (must not be reported)"
    grep -o 'iosan_uaf: \(LEAK\|GOOD\|NOTE\|SKIP\|BEGIN\|END\|ERROR\).*' "$d/out/dmesg.txt"
  } > "$OUT/$leg.truth"
  if [[ "$DAT_LEGS" == *" $leg "* ]] && [ -s "$d/out/trace.dat" ]; then
    cp "$d/out/trace.dat" "$OUT/$leg.trace.dat"
  fi
  ls -la "$OUT/$leg".* | sed 's/^/save-fixtures: /'
done
