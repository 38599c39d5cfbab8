#!/bin/bash
# Prepare the arm64 legs of the end-to-end test (see README.md): Debian's
# stock arm64 6.12 kernel (4 KiB pages, or 16 KiB with the arm64-16k
# flavour) for `qemu-system-aarch64 -M virt,iommu=smmuv3`, the iosan_uaf
# module cross-built with the compiler the kernel was built with, and an
# initramfs from Debian's arm64 busybox-static (plus trace-cmd when its
# packages can be had). No aarch64 iosan binary can be built here, so the
# host's freshly built iosan prints its plan for aarch64 (`iosan record
# --print --arch aarch64`), the guest's busybox sh runs that script, and
# the capture is analysed on the host.
#
# usage: e2e/setup-arm64.sh [arm64|arm64-16k]      (default arm64)
# Everything goes under e2e/work/arm64/ and e2e/work/<flavour>/.
# Exit status: 0 ready, 1 a build step failed, 77 skip (reason printed).
set -euo pipefail
E2E=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$E2E/.." && pwd)
W=$E2E/work
FLAV=${1:-arm64}
case "$FLAV" in arm64|arm64-16k) ;; *) echo "usage: $0 [arm64|arm64-16k]" >&2; exit 2;; esac
log() { echo "e2e-setup-$FLAV: $*"; }
skip() { echo "e2e-setup-$FLAV: SKIP: $*" >&2; exit 77; }
SECONDS=0
mkdir -p "$W"

# ---- 1. host tools: the emulator and the cross compiler ---------------------------
need=""
for t in qemu-system-aarch64 aarch64-linux-gnu-gcc-12 make pahole xz zstd python3 cpio; do
  command -v "$t" >/dev/null 2>&1 || need="$need $t"
done
if [ -n "$need" ]; then
  log "installing host packages (missing:$need)"
  [ "$(id -u)" = 0 ] || skip "need root to apt-get install:$need"
  command -v apt-get >/dev/null 2>&1 || skip "no apt-get on this machine; install:$need"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq --no-install-recommends qemu-system-arm gcc-12-aarch64-linux-gnu make pahole \
      xz-utils zstd python3 cpio libelf1 libssl3 >"$W/apt-install-arm64.log" 2>&1 \
    || { tail -5 "$W/apt-install-arm64.log" >&2; skip "apt-get install of the arm64 host tools failed (log: $W/apt-install-arm64.log)"; }
fi
# arm64 packages are only downloaded and unpacked, but apt must know the
# architecture to find them.
if ! dpkg --print-foreign-architectures 2>/dev/null | grep -qx arm64; then
  [ "$(id -u)" = 0 ] || skip "need root for dpkg --add-architecture arm64"
  dpkg --add-architecture arm64
  apt-get update -qq >/dev/null 2>&1 || true
fi

# ---- 2. the kernel: the same 6.12 version as the x86 legs when it exists ------------
PREFERRED=${IOSAN_E2E_KVER:-6.12.107+deb12-amd64}
KPKG=${IOSAN_E2E_ARM64_KPKG:-${PREFERRED%-amd64}}
if ! apt-cache show "linux-image-${KPKG}-${FLAV}-unsigned:arm64" >/dev/null 2>&1; then
  KPKG=$(apt-cache search --names-only "^linux-image-6\.12\.[0-9]+\+deb[0-9]+-${FLAV}-unsigned\$" 2>/dev/null \
         | awk '{print $1}' | sed -e 's/^linux-image-//' -e "s/-${FLAV}-unsigned\$//" | sort -V | tail -1 || true)
  [ -n "$KPKG" ] || skip "apt-cache knows no linux-image-6.12.*-${FLAV}-unsigned (arm64)"
fi
KVER=${KPKG}-${FLAV}
log "kernel $KVER"

# ---- 3. download and unpack --------------------------------------------------------
DEBS=$W/arm64/debs; ROOT=$W/$FLAV/root
mkdir -p "$DEBS"
PKGS="linux-image-${KVER}-unsigned:arm64 linux-headers-${KVER}:arm64 linux-headers-${KPKG}-common:all
      linux-kbuild-${KPKG}:amd64 busybox-static:arm64"
# trace-cmd is optional: with it the guest also writes a trace.dat.
TPKGS="trace-cmd:arm64 libtraceevent1:arm64 libtracefs1:arm64 libzstd1:arm64 libc6:arm64"
download() { # pkg:arch -> 0 when its .deb is in $DEBS
  local n=${1%%:*} a=${1##*:}
  ls "$DEBS/${n}_"*"_${a}.deb" >/dev/null 2>&1 && return 0
  log "apt-get download $1"
  (cd "$DEBS" && apt-get download "$1" >/dev/null 2>"$W/download-arm64.err") || { cat "$W/download-arm64.err" >&2; return 1; }
}
for p in $PKGS; do download "$p" || skip "apt-get download $p failed"; done
TRACE_CMD=1
for p in $TPKGS; do download "$p" || { log "no $p: the guest records text only (no trace.dat)"; TRACE_CMD=0; }; done
if [ ! -f "$ROOT/.extracted-$KVER" ]; then
  log "unpacking packages"
  rm -rf "$ROOT"; mkdir -p "$ROOT"
  for f in "$DEBS"/*.deb; do
    case "$(basename "$f")" in
      linux-image-*|linux-headers-*-arm64*) case "$(basename "$f")" in *"${KVER}_"*|*"${KVER}-unsigned_"*) ;; *) continue;; esac;;
    esac
    dpkg-deb -x "$f" "$ROOT"
  done
  touch "$ROOT/.extracted-$KVER"
fi
KDIR=$ROOT/usr/src/linux-headers-$KVER
[ -d "$KDIR" ] || { echo "e2e-setup-$FLAV: headers not found at $KDIR" >&2; exit 1; }
if ! grep -q "^include $ROOT/usr/src/linux-headers-${KPKG}-common/Makefile" "$KDIR/Makefile"; then
  sed -i "s#^include .*/linux-headers-${KPKG}-common/Makefile#include $ROOT/usr/src/linux-headers-${KPKG}-common/Makefile#" "$KDIR/Makefile"
fi
# Debian's arm64 vmlinuz is a plain arm64 Image: QEMU boots it as it is.
cp "$ROOT/boot/vmlinuz-$KVER" "$W/$FLAV/Image"
echo "$KVER" > "$W/$FLAV/kver"

# ---- 4. test module: the x86 source, cross-built -----------------------------------
MB=$W/$FLAV/module
mkdir -p "$MB"
cp -p "$E2E/module/iosan_uaf.c" "$E2E/module/Kbuild" "$MB/"
if [ ! -f "$MB/iosan_uaf.ko" ] || [ "$E2E/module/iosan_uaf.c" -nt "$MB/iosan_uaf.ko" ]; then
  log "cross-building iosan_uaf.ko"
  make -s -C "$KDIR" M="$MB" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- CC=aarch64-linux-gnu-gcc-12 modules \
      >"$W/$FLAV/module-build.log" 2>&1 \
    || { cat "$W/$FLAV/module-build.log" >&2; echo "e2e-setup-$FLAV: module build failed" >&2; exit 1; }
fi

# ---- 5. the recorder: the plan of the host's iosan, printed for aarch64 --------------
# The same build as setup.sh's (the binary analyses the captures afterwards,
# run.sh), so that the plan is the one this tree prints. IOSAN_E2E_BIN uses
# a prebuilt one instead.
IOSAN=$W/iosan
if [ -n "${IOSAN_E2E_BIN:-}" ]; then
  cp "$IOSAN_E2E_BIN" "$IOSAN"
else
  log "building iosan"
  export CARGO_TARGET_DIR=$W/cargo-target
  ( cd "$REPO" && RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --quiet -p iosan --target x86_64-unknown-linux-gnu ) \
    || { echo "e2e-setup-$FLAV: cargo build of iosan failed" >&2; exit 1; }
  cp "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/iosan" "$IOSAN"
fi
# 240 s as the x86 guests' limit; 64 MiB per CPU holds a leg's run without
# loss (the sizing from 50,000 events/s over 240 s would take 1/8 of RAM)
"$IOSAN" record --print --arch aarch64 --duration 240 --buffer-kb 65536 > "$W/$FLAV/plan.sh" \
  || { echo "e2e-setup-$FLAV: iosan record --print --arch aarch64 failed" >&2; exit 1; }

# ---- 6. initramfs --------------------------------------------------------------------
log "building initramfs"
IR=$W/$FLAV/initramfs
rm -rf "$IR"; mkdir -p "$IR"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,out,mod,etc,lib}
cp "$ROOT/bin/busybox" "$IR/bin/busybox"
# An arm64 busybox cannot list its applets on this host: link sh only, and
# /init runs `busybox --install -s` first.
ln -sf busybox "$IR/bin/sh"
MD=$ROOT/lib/modules/$KVER/kernel
for m in net/core/failover drivers/net/net_failover drivers/net/virtio_net drivers/block/virtio_blk \
         drivers/nvme/common/nvme-keyring drivers/nvme/common/nvme-auth drivers/nvme/host/nvme-core \
         drivers/nvme/host/nvme; do
  f=$(ls "$MD/$m.ko"* 2>/dev/null | head -1 || true)
  [ -n "$f" ] || { echo "e2e-setup-$FLAV: module $m not in the kernel package" >&2; exit 1; }
  case "$f" in
    *.xz) xz -dc "$f" > "$IR/mod/$(basename "$m").ko";;
    *.zst) zstd -dcq "$f" > "$IR/mod/$(basename "$m").ko";;
    *) cp "$f" "$IR/mod/$(basename "$m").ko";;
  esac
done
cp "$MB/iosan_uaf.ko" "$IR/mod/"
if [ $TRACE_CMD = 1 ]; then
  L=$IR/lib/aarch64-linux-gnu
  mkdir -p "$L"
  cp "$ROOT/usr/bin/trace-cmd" "$IR/usr/bin/"
  cp -a "$ROOT"/usr/lib/aarch64-linux-gnu/libtrace*.so* "$ROOT"/usr/lib/aarch64-linux-gnu/libzstd.so* "$L/"
  cp -L "$ROOT/lib/aarch64-linux-gnu/libc.so.6" "$L/"
  cp -L "$ROOT/lib/ld-linux-aarch64.so.1" "$IR/lib/"
fi
cp "$E2E/guest-arm64/init" "$IR/init"
cp "$W/$FLAV/plan.sh" "$IR/plan.sh"
cp "$E2E/guest/workload.sh" "$IR/workload.sh"
chmod +x "$IR/init" "$IR/workload.sh"
(cd "$IR" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$W/$FLAV/initramfs.cpio.gz")
log "ready in ${SECONDS}s: kernel $KVER, $(du -h "$W/$FLAV/initramfs.cpio.gz" | cut -f1) initramfs, trace-cmd=$TRACE_CMD"
