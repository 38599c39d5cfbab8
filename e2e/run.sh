#!/bin/bash
# iosan end-to-end test on a real kernel (see README.md): a matrix of legs.
#
# usage: e2e/run.sh [LEG...]          (default: both)
#   legs:    vtd-strict vtd-lazy vtd-perf vtd-watch vtd-stacks vtd-superpage virtio-iommu no-iommu amd-iommu
#            arm64-strict arm64-lazy arm64-16k-strict arm64-16k-lazy vtd72-strict vtd72-lazy
#   groups:  both = vtd-strict vtd-lazy (also: strict, lazy = one of them)
#            ci   = the legs whose check passes with today's analyzer
#            all  = every leg
#
# Each leg boots Debian's stock 6.12 kernel under QEMU (TCG) with one IOMMU
# set-up, records a workload that loads the iosan_uaf module (correct DMA,
# then injected DMA use-after-free), and checks `iosan analyze --format
# json` on the capture against the module's ground truth with check.py.
# x86 legs record with `iosan record --apply` in the guest (vtd-watch
# analyzes live there with `iosan watch`); arm64 legs with the script
# `iosan record --print --arch aarch64` printed on the host, run by the
# guest's busybox sh (no aarch64 iosan binary can be built here).
#
# Exit status: 0 every leg passed (or skipped), 1 a leg failed, 77 every
# leg skipped (reasons printed).
set -uo pipefail
E2E=$(cd "$(dirname "$0")" && pwd)
W=$E2E/work
. "$E2E/legs.sh"
LEGS=""
for a in "${@:-both}"; do
  case "$a" in
    both) LEGS="$LEGS vtd-strict vtd-lazy";;
    strict|lazy) LEGS="$LEGS vtd-$a";;
    ci) LEGS="$LEGS $CI_LEGS";;
    all) LEGS="$LEGS $ALL_LEGS";;
    *) case " $ALL_LEGS " in *" $a "*) LEGS="$LEGS $a";; *) echo "usage: $0 [LEG...|both|ci|all]; legs: $ALL_LEGS" >&2; exit 2;; esac;;
  esac
done
T0=$SECONDS

# Setup once per kind of leg; remember what skipped.
declare -A SETUP_RC
setup() { # x86 | arm64 | arm64-16k
  [ -n "${SETUP_RC[$1]:-}" ] && return "${SETUP_RC[$1]}"
  local t=$SECONDS rc
  case "$1" in
    x86) "$E2E/setup.sh";;
    x86-perf) setup x86 && "$E2E/setup-perf.sh";;
    x86-linux72) setup x86 && "$E2E/setup-linux72.sh";;
    *) "$E2E/setup-arm64.sh" "$1";;
  esac
  rc=$?
  echo "e2e: setup $1 took $((SECONDS - t)) s (exit $rc)"
  SETUP_RC[$1]=$rc
  return $rc
}

boot() { # leg -> results in $W/run-$leg
  local leg=$1 dir=$W/run-$1 q cmdline
  rm -rf "$dir"; mkdir -p "$dir"
  truncate -s 128M "$dir/nvme.img"; truncate -s 64M "$dir/vblk.img"; truncate -s 512M "$dir/out.img"
  local devs=(-drive file="$dir/nvme.img",if=none,id=nvm,format=raw
    -device nvme,serial=e2envme,drive=nvm
    -drive file="$dir/vblk.img",if=none,id=vb,format=raw
    -device virtio-blk-pci,drive=vb,serial=e2evblk,iommu_platform=on,disable-legacy=on
    -drive file="$dir/out.img",if=none,id=vo,format=raw
    -device virtio-blk-pci,drive=vo,serial=e2eout,iommu_platform=on,disable-legacy=on
    -netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:1234-cmd:dd if=/dev/zero bs=64k count=64 status=none"
    -device virtio-net-pci,netdev=n0,iommu_platform=on,disable-legacy=on)
  local tail="loglevel=7 log_buf_len=4M panic=-1 e2e.mode=$leg e2e.phases=$PHASES"
  if [ "$ARCH" = x86 ]; then
    cmdline="console=ttyS0 $CMDLINE $tail"
    q=(qemu-system-x86_64
      -machine q35 -accel "tcg,thread=${E2E_TCG_THREAD:-single},tb-size=512" -cpu max -smp 2 -m 3072
      "${IOMMU_ARGS[@]}"
      -kernel "$W/${KERN:+$KERN/}vmlinux" -initrd "$W/$INITRD" -append "$cmdline")
  else
    # pauth-impdef=on: QEMU's cheap pointer-authentication algorithm (the
    # architected one is very slow under TCG)
    cmdline="console=ttyAMA0 $CMDLINE $tail"
    q=(qemu-system-aarch64
      -machine virt,iommu=smmuv3,gic-version=3 -cpu max,pauth-impdef=on -smp 2 -m 3072
      -accel "tcg,thread=${E2E_TCG_THREAD_ARM64:-multi},tb-size=512"
      -kernel "$W/$FLAV/Image" -initrd "$W/$FLAV/initramfs.cpio.gz" -append "$cmdline")
  fi
  q+=(-display none -monitor none -serial stdio -no-reboot "${devs[@]}")
  printf '%q ' "${q[@]}" > "$dir/qemu-cmdline.txt"
  local t=$SECONDS
  timeout "${E2E_QEMU_TIMEOUT:-400}" nice -n "${E2E_NICE:-5}" "${q[@]}" > "$dir/console.log" 2>&1 < /dev/null
  local qrc=$?
  echo "e2e: $leg: QEMU ran $((SECONDS - t)) s (exit $qrc), console: $dir/console.log"
  mkdir -p "$dir/out"
  tar -xf "$dir/out.img" -C "$dir/out" 2>/dev/null || echo "e2e: $leg: no results on the output disk"
  rm -f "$dir"/*.img
  grep -E '^E2E: (record exit|print exit|loaded|insmod)' "$dir/console.log" | sed "s/^/e2e: $leg: guest: /"
  [ -s "$dir/out/$CAPTURE" ]
}

declare -A RESULT WALL
fail=0; ran=0
for leg in $LEGS; do
  lt=$SECONDS
  leg_config "$leg"
  kind=$ARCH; [ "$ARCH" = arm64 ] && kind=$FLAV
  INITRD=initramfs.cpio.gz; CAPTURE=capture.txt
  [ "$RECORDER" = perf ] && { kind=x86-perf; INITRD=initramfs-perf.cpio.gz; CAPTURE=perf.data; }
  [ "$RECORDER" = watch ] && CAPTURE=watch.jsonl
  [ -n "$KERN" ] && { kind=x86-$KERN; INITRD=$KERN/initramfs.cpio.gz; }
  setup "$kind"; rc=$?
  if [ $rc = 77 ]; then
    echo "e2e: $leg: SKIP (setup $kind could not get what it needs, see above)"; RESULT[$leg]=skip; WALL[$leg]=0; continue
  elif [ $rc != 0 ]; then
    echo "e2e: $leg: FAIL: setup $kind exited $rc"; RESULT[$leg]=fail; fail=1; WALL[$leg]=$((SECONDS - lt)); continue
  fi
  qemu="qemu-system-x86_64"; [ "$ARCH" = arm64 ] && qemu="qemu-system-aarch64"
  if ! command -v $qemu >/dev/null; then
    echo "e2e: $leg: SKIP: $qemu not installed"; RESULT[$leg]=skip; WALL[$leg]=0; continue
  fi
  ran=1
  d=$W/run-$leg
  ok=0
  for attempt in 1 2; do
    if boot "$leg"; then ok=1; break; fi
    # A crash of the guest kernel itself (seen under multi-threaded TCG while
    # kprobes patch kernel text) is the emulator's, not iosan's: boot once more.
    if grep -q "Kernel panic" "$d/console.log" && [ $attempt = 1 ]; then
      echo "e2e: $leg: the guest kernel panicked (emulation), booting again:"
      grep -m1 -E "Oops|BUG:|Kernel panic" "$d/console.log"
      continue
    fi
    break
  done
  if [ $ok = 0 ]; then
    echo "e2e: $leg: FAIL: no capture came out of the guest; last console lines:"
    tail -25 "$d/console.log"
    RESULT[$leg]=fail; fail=1; WALL[$leg]=$((SECONDS - lt)); continue
  fi
  extra=(--phases "$PHASES")
  if [ "$RECORDER" = watch ]; then
    # analyzed live in the guest: its findings, with the times they came
    cp "$d/out/watch.jsonl" "$d/findings.jsonl"
    extra+=(--line-times "$d/out/watch.timed" --workload-times "$d/out/workload.timed")
  else
  t=$SECONDS
  "$W/iosan" analyze "${ANALYZE_ARGS[@]}" --format json "$d/out/$CAPTURE" > "$d/findings.jsonl" 2> "$d/analyze.err"
  arc=$?
  echo "e2e: $leg: iosan analyze exit $arc in $((SECONDS - t)) s"
  if [ $arc -ge 2 ]; then
    echo "e2e: $leg: FAIL: iosan analyze failed:"; head -20 "$d/analyze.err"
    RESULT[$leg]=fail; fail=1; WALL[$leg]=$((SECONDS - lt)); continue
  fi
  fi
  case "$leg" in vtd-strict|vtd-stacks|vtd72-strict) # what recording costs, with and without stacks
    python3 - "$d/out/$CAPTURE" "$d/findings.jsonl" "$leg" <<'PY'
import json, os, sys
cap, fnd, leg = sys.argv[1:4]
el = None
with open(cap, errors="replace") as f:
    for line in f:
        if not line.startswith("#"):
            break
        if line.startswith("# iosan-meta: elapsed_s="):
            el = float(line.split("=", 1)[1])
ev = None
for line in open(fnd, errors="replace"):
    try:
        o = json.loads(line)
    except ValueError:
        continue
    if o.get("type") == "summary":
        ev = o.get("events")
size = os.path.getsize(cap)
rate = f"{ev / el:.0f} events/s" if ev and el else "events/s unknown"
print(f"e2e: {leg}: capture {ev} events in {el} s: {rate}, {size} bytes ({size / 1e6:.1f} MB)"
      + (f", {size / ev:.0f} bytes/event" if ev else ""))
PY
  ;; esac
  [ "$ARCH" = x86 ] && extra+=(--crash-recovery "$d/out/crash-recovery.txt")
  if python3 "$E2E/check.py" --leg "$leg" --mode "$EXPECT_MODE" --capture "$d/out/$CAPTURE" \
      --ground-truth "$d/out/dmesg.txt" --findings "$d/findings.jsonl" --after-cleanup "$d/out/after-cleanup.txt" \
      "${extra[@]}" "${CHECK_ARGS[@]}" | tee "$d/check.txt"; then
    RESULT[$leg]=pass
  else
    RESULT[$leg]=fail; fail=1
  fi
  WALL[$leg]=$((SECONDS - lt))
done
echo "e2e: legs:"
for leg in $LEGS; do printf 'e2e:   %-18s %-5s %4s s\n' "$leg" "${RESULT[$leg]}" "${WALL[$leg]}"; done
echo "e2e: total $((SECONDS - T0)) s"
if [ $fail = 1 ]; then echo "e2e: FAIL"; exit 1; fi
if [ $ran = 0 ]; then echo "e2e: SKIP (no leg could run)"; exit 77; fi
echo "e2e: PASS"; exit 0
