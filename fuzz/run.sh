#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS_PER_TARGET (default 60) and
# prints, per target, libFuzzer's executions and coverage.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Needs a nightly toolchain (cargo-fuzz builds with -Zsanitizer); installs
# cargo-fuzz with `cargo install cargo-fuzz` if it is missing. Without a
# nightly it prints why it skips and exits 0. Seed corpora are generated
# from fixtures/captures into fuzz/corpus/<target> (gitignored); crashes
# land in fuzz/artifacts/<target>/ and belong in fixtures/regressions/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
secs="${1:-60}"
# The code under test is safe Rust (forbid(unsafe_code)), so no sanitizer by
# default (twice the executions); FUZZ_SANITIZER=address also checks the C
# decompressors (liblzma, zstd) that the `input` target drives.
sanitizer="${FUZZ_SANITIZER:-none}"
shift || true
all_targets=(line event reader input analyze analyze_structured engine pgtable tracedat perf_data)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

if ! { rustup toolchain list 2>/dev/null | grep -q nightly || cargo +nightly --version >/dev/null 2>&1; }; then
    echo "fuzz/run.sh: skipped: no nightly toolchain (cargo-fuzz needs one: rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz"
    cargo install cargo-fuzz
fi

# ---------------------------------------------------------------- seeds
corpus="$here/corpus"
seed_lines=3000
gen_seeds() {
    local t="$1" dir="$corpus/$1"
    mkdir -p "$dir"
    # A corpus of a few inputs (left by a run stopped early, or only what
    # libFuzzer found from nothing) gets the seeds again: a trace.dat target
    # started without them never gets past the file header.
    [ "$(ls -A "$dir" 2>/dev/null | wc -l)" -ge 16 ] && return 0
    local tmp
    tmp="$(mktemp -d)"
    for cap in "$root"/fixtures/captures/*.xz; do
        xz -dc "$cap" | head -n "$seed_lines" >"$tmp/$(basename "$cap" .xz)" || true
    done
    case "$t" in
    line | analyze_structured)
        # One file per distinct event name (a few lines each), plus headers.
        cat "$tmp"/* | awk -v dir="$dir" '
            { key = ($0 ~ /^#/) ? "header" : $0; sub(/^.*[0-9]: /, "", key); sub(/:.*/, "", key)
              if (seen[key]++ < 4) { f = sprintf("%s/l%05d", dir, n++); printf "%s", $0 > f; close(f) } }'
        ;;
    event)
        # First byte: index of the name in event_names.txt; then the body.
        cat "$tmp"/* | awk -v dir="$dir" -v names="$here/event_names.txt" '
            BEGIN { i = 0; while ((getline nm < names) > 0) idx[nm] = i++ }
            /^#/ { next }
            { if (!match($0, /[0-9]\.[0-9]+: [a-z_0-9]+: /)) next
              head = substr($0, RSTART, RLENGTH); body = substr($0, RSTART + RLENGTH)
              name = head; sub(/^[0-9.]+: /, "", name); sub(/: $/, "", name)
              if (!(name in idx) || seen[name]++ >= 8) next
              f = sprintf("%s/e%05d", dir, n++); printf "%c%s", idx[name] + i, body > f; close(f) }'
        # `+ i` (the list length) keeps NUL out of awk's printf; the target
        # takes the first byte modulo the list length.
        ;;
    reader | analyze)
        for f in "$tmp"/*; do
            split -l 200 -a 3 "$f" "$dir/$(basename "$f")."
        done
        ;;
    input)
        local i=0
        for f in "$tmp"/*; do
            head -n 300 "$f" >"$tmp/small"
            gzip -c "$tmp/small" >"$dir/gz$i"
            xz -c "$tmp/small" >"$dir/xz$i"
            if command -v zstd >/dev/null; then zstd -q -c "$tmp/small" >"$dir/zst$i"; fi
            cp "$tmp/small" "$dir/plain$i"
            i=$((i + 1))
        done
        ;;
    tracedat)
        # Small generated trace.dat files (v6/v7, none/zstd/zlib, both byte orders).
        (cd "$root" && IOSAN_SEED_DIR="$dir" cargo test -q -p iosan-trace --test tracedat_synth write_fuzz_seeds -- --ignored >/dev/null)
        ;;
    perf_data)
        # The real perf.data fixtures: file mode, zstd-compressed records, pipe mode.
        cp "$root"/fixtures/perf/*.perf.data "$dir/" 2>/dev/null || true
        ;;
    *) : ;; # engine, pgtable: structured input, libFuzzer starts from nothing
    esac
    rm -rf "$tmp"
}

# ---------------------------------------------------------------- run
summary=()
cd "$here"
for t in "${targets[@]}"; do
    gen_seeds "$t"
    # Regression inputs are seeds too.
    extra=()
    [ -d "$root/fixtures/regressions/$t" ] && extra=("$root/fixtures/regressions/$t")
    mkdir -p "$here/artifacts/logs"
    log="$here/artifacts/logs/$t.log"
    echo "== $t: ${secs}s"
    set +e
    cargo +nightly fuzz run -s "$sanitizer" "$t" "$corpus/$t" "${extra[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs="$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')"
    cov="$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -o 'cov: [0-9]*' | awk '{print $2}')"
    ft="$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -o 'ft: [0-9]*' | awk '{print $2}')"
    corp="$(find "$corpus/$t" -type f | wc -l)"
    status="ok"
    [ "$rc" -ne 0 ] && status="FAILED (exit $rc; see fuzz/artifacts/logs/$t.log and fuzz/artifacts/$t/)"
    line="$(printf '%-20s execs=%-12s cov=%-6s ft=%-6s corpus=%-6s %s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$corp" "$status")"
    echo "$line"
    summary+=("$line")
done
echo
echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
