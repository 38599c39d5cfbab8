#!/bin/bash
# Check the analyzer against the saved e2e captures, without QEMU:
# `iosan analyze` on fixtures/captures/<leg>.capture.txt.xz (<leg>.perf.data
# for a perf leg), then check.py
# against <leg>.truth, as run.sh would have checked the live leg.
#
# usage: e2e/check-fixtures.sh [LEG...]   (default: every leg with a fixture)
#   env: IOSAN=path/to/iosan (default: target/release/iosan, built if missing)
# Exit status: 0 every leg passed, 1 a leg failed.
set -uo pipefail
E2E=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$E2E/.." && pwd)
FX=$REPO/fixtures/captures
. "$E2E/legs.sh"
IOSAN=${IOSAN:-$REPO/target/release/iosan}
if [ ! -x "$IOSAN" ]; then
  (cd "$REPO" && cargo build --release --quiet -p iosan) || { echo "check-fixtures: cannot build iosan" >&2; exit 1; }
fi
LEGS=("$@")
if [ ${#LEGS[@]} = 0 ]; then
  for l in $ALL_LEGS; do [ -f "$FX/$l.truth" ] && LEGS+=("$l"); done
fi
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
fail=0
for leg in "${LEGS[@]}"; do
  leg_config "$leg"
  cap=$FX/$leg.capture.txt.xz
  [ "$RECORDER" = perf ] && cap=$FX/$leg.perf.data
  [ -f "$cap" ] && [ -f "$FX/$leg.truth" ] || { echo "check-fixtures: no fixture for $leg"; fail=1; continue; }
  "$IOSAN" analyze "${ANALYZE_ARGS[@]}" --format json "$cap" > "$TMP/$leg.jsonl" 2> "$TMP/$leg.err"
  if [ $? -ge 2 ]; then echo "check-fixtures: $leg: iosan analyze failed: $(head -3 "$TMP/$leg.err")"; fail=1; continue; fi
  python3 "$E2E/check.py" --leg "$leg" --mode "$EXPECT_MODE" --capture "$cap" --ground-truth "$FX/$leg.truth" \
    --findings "$TMP/$leg.jsonl" --phases "$PHASES" "${CHECK_ARGS[@]}" || fail=1
done
exit $fail
