#!/bin/bash
# iosan end-to-end test on a real kernel (see README.md).
#
# usage: e2e/run.sh [strict|lazy|both]      (default: both)
#
# Prepares everything with setup.sh, boots Debian's stock 6.12 kernel under
# QEMU (TCG, q35, emulated Intel VT-d; NVMe, virtio-blk and virtio-net behind
# it) once per IOMMU mode, lets `iosan record --apply` capture a workload that
# loads the iosan_uaf module (correct DMA, then injected DMA use-after-free),
# and checks `iosan analyze --format json` on each capture against the
# module's ground truth with check.py.
#
# Exit status: 0 pass, 1 fail, 77 skip (reason printed).
set -uo pipefail
E2E=$(cd "$(dirname "$0")" && pwd)
W=$E2E/work
MODES=${1:-both}
case "$MODES" in both) MODES="strict lazy";; strict|lazy) ;; *) echo "usage: $0 [strict|lazy|both]" >&2; exit 2;; esac
T0=$SECONDS

"$E2E/setup.sh"
rc=$?
if [ $rc = 77 ]; then echo "e2e: SKIP (setup could not get what it needs, see above)"; exit 77; fi
if [ $rc != 0 ]; then echo "e2e: FAIL: setup.sh exited $rc"; exit 1; fi
echo "e2e: setup took $((SECONDS - T0)) s"
command -v qemu-system-x86_64 >/dev/null || { echo "e2e: SKIP: qemu-system-x86_64 not installed"; exit 77; }
IOSAN=$W/iosan

boot() { # mode -> results in $W/run-$mode
  local mode=$1 strict cm dir
  case "$mode" in
    # caching-mode=on makes the VT-d driver force strict mode, so lazy
    # needs caching-mode=off
    strict) strict=1; cm=on;;
    lazy) strict=0; cm=off;;
  esac
  dir=$W/run-$mode
  rm -rf "$dir"; mkdir -p "$dir"
  truncate -s 128M "$dir/nvme.img"; truncate -s 64M "$dir/vblk.img"; truncate -s 512M "$dir/out.img"
  local cmdline="console=ttyS0 loglevel=7 log_buf_len=4M panic=-1 intel_iommu=on iommu.strict=$strict e2e.mode=$mode"
  local q=(qemu-system-x86_64
    -machine q35 -accel tcg,thread=${E2E_TCG_THREAD:-single},tb-size=512 -cpu max -smp 2 -m 3072
    -device intel-iommu,intremap=on,caching-mode=$cm
    -kernel "$W/vmlinux" -initrd "$W/initramfs.cpio.gz" -append "$cmdline"
    -display none -monitor none -serial stdio -no-reboot
    -drive file="$dir/nvme.img",if=none,id=nvm,format=raw
    -device nvme,serial=e2envme,drive=nvm
    -drive file="$dir/vblk.img",if=none,id=vb,format=raw
    -device virtio-blk-pci,drive=vb,serial=e2evblk,iommu_platform=on,disable-legacy=on
    -drive file="$dir/out.img",if=none,id=vo,format=raw
    -device virtio-blk-pci,drive=vo,serial=e2eout,iommu_platform=on,disable-legacy=on
    -netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:1234-cmd:dd if=/dev/zero bs=64k count=64 status=none"
    -device virtio-net-pci,netdev=n0,iommu_platform=on,disable-legacy=on)
  printf '%q ' "${q[@]}" > "$dir/qemu-cmdline.txt"
  local t=$SECONDS
  timeout "${E2E_QEMU_TIMEOUT:-300}" "${q[@]}" > "$dir/console.log" 2>&1 < /dev/null
  local qrc=$?
  echo "e2e: $mode: QEMU ran $((SECONDS - t)) s (exit $qrc), console: $dir/console.log"
  mkdir -p "$dir/out"
  tar -xf "$dir/out.img" -C "$dir/out" 2>/dev/null || echo "e2e: $mode: no results on the output disk"
  rm -f "$dir"/*.img
  grep -E '^E2E: (record exit|print exit)' "$dir/console.log" | sed "s/^/e2e: $mode: guest: /"
  [ -s "$dir/out/capture.txt" ]
}

fail=0
for mode in $MODES; do
  ok=0
  for attempt in 1 2; do
    if boot "$mode"; then ok=1; break; fi
    # A crash of the guest kernel itself (seen under multi-threaded TCG while
    # kprobes patch kernel text) is the emulator's, not iosan's: boot once more.
    if grep -q "Kernel panic" "$W/run-$mode/console.log" && [ $attempt = 1 ]; then
      echo "e2e: $mode: the guest kernel panicked (emulation), booting again:"
      grep -m1 -E "Oops|BUG:|Kernel panic" "$W/run-$mode/console.log"
      continue
    fi
    break
  done
  if [ $ok = 0 ]; then
    echo "e2e: FAIL: $mode: no capture came out of the guest; last console lines:"
    tail -25 "$W/run-$mode/console.log"
    fail=1; continue
  fi
  d=$W/run-$mode
  t=$SECONDS
  "$IOSAN" analyze --format json "$d/out/capture.txt" > "$d/findings.jsonl" 2> "$d/analyze.err"
  arc=$?
  echo "e2e: $mode: iosan analyze exit $arc in $((SECONDS - t)) s"
  if [ $arc -ge 2 ]; then
    echo "e2e: FAIL: $mode: iosan analyze failed:"; head -20 "$d/analyze.err"; fail=1; continue
  fi
  python3 "$E2E/check.py" --mode "$mode" --capture "$d/out/capture.txt" \
    --ground-truth "$d/out/dmesg.txt" --findings "$d/findings.jsonl" --after-cleanup "$d/out/after-cleanup.txt" \
    --crash-recovery "$d/out/crash-recovery.txt" \
    || fail=1
done
echo "e2e: total $((SECONDS - T0)) s"
if [ $fail = 0 ]; then echo "e2e: PASS"; exit 0; else echo "e2e: FAIL"; exit 1; fi
