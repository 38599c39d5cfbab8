#!/bin/bash
# Prepare the iosan end-to-end test (see README.md): host tools from Debian,
# a stock Debian 6.12 kernel + headers fetched with `apt-get download` and
# unpacked under e2e/work/ (nothing is installed into the host's boot flow),
# the iosan_uaf test module, a static iosan binary for the guest, and the
# guest initramfs.
#
# Exit status: 0 ready, 1 a build step failed, 77 skip (a package could not
# be installed or downloaded; the reason is printed).
set -euo pipefail
E2E=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$E2E/.." && pwd)
W=$E2E/work
mkdir -p "$W"
log() { echo "e2e-setup: $*"; }
skip() { echo "e2e-setup: SKIP: $*" >&2; exit 77; }
SECONDS=0

# ---- 1. host tools -------------------------------------------------------------
HOST_PKGS="qemu-system-x86 gcc-12 make pahole zstd xz-utils libelf1 libssl3"
need=""
for t in qemu-system-x86_64 gcc-12 make pahole zstd xz; do
  command -v "$t" >/dev/null 2>&1 || need="$need $t"
done
command -v python3 >/dev/null 2>&1 || HOST_PKGS="$HOST_PKGS python3"
if [ -n "$need" ] || ! command -v python3 >/dev/null 2>&1; then
  log "installing host packages (missing:$need)"
  [ "$(id -u)" = 0 ] || skip "need root to apt-get install:$need"
  command -v apt-get >/dev/null 2>&1 || skip "no apt-get on this machine; install:$need"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $HOST_PKGS >"$W/apt-install.log" 2>&1 \
    || { tail -5 "$W/apt-install.log" >&2; skip "apt-get install $HOST_PKGS failed (log: $W/apt-install.log)"; }
fi

# ---- 2. pick the kernel ----------------------------------------------------------
# Prefer the version the reference captures were made with; otherwise the
# newest 6.12 flavour-amd64 image the archive offers.
PREFERRED=${IOSAN_E2E_KVER:-6.12.107+deb12-amd64}
if [ -f "$W/kver" ]; then
  KVER=$(cat "$W/kver")
else
  avail=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64-unsigned$' 2>/dev/null \
          | awk '{print $1}' | sed -e 's/^linux-image-//' -e 's/-unsigned$//' | sort -V || true)
  if [ -z "$avail" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    avail=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64-unsigned$' 2>/dev/null \
            | awk '{print $1}' | sed -e 's/^linux-image-//' -e 's/-unsigned$//' | sort -V || true)
  fi
  [ -n "$avail" ] || skip "apt-cache knows no linux-image-6.12.*-amd64-unsigned (is a Debian bookworm/trixie source configured?)"
  if echo "$avail" | grep -qxF "$PREFERRED"; then KVER=$PREFERRED; else KVER=$(echo "$avail" | tail -1); fi
fi
KPKG=${KVER%-amd64}            # 6.12.107+deb12
log "kernel $KVER"

# ---- 3. download and unpack ------------------------------------------------------
DEBS=$W/debs; ROOT=$W/root
mkdir -p "$DEBS"
PKGS="linux-image-${KVER}-unsigned linux-headers-${KVER} linux-headers-${KPKG}-common linux-kbuild-${KPKG} busybox-static"
for p in $PKGS; do
  if ! ls "$DEBS/${p}_"*.deb >/dev/null 2>&1; then
    log "apt-get download $p"
    (cd "$DEBS" && apt-get download "$p" >/dev/null 2>"$W/download.err") \
      || { cat "$W/download.err" >&2; skip "apt-get download $p failed"; }
  fi
done
echo "$KVER" > "$W/kver"
if [ ! -f "$ROOT/.extracted-$KVER" ]; then
  log "unpacking packages"
  rm -rf "$ROOT"; mkdir -p "$ROOT"
  for f in "$DEBS"/*.deb; do dpkg-deb -x "$f" "$ROOT"; done
  touch "$ROOT/.extracted-$KVER"
fi
KDIR=$ROOT/usr/src/linux-headers-$KVER
[ -d "$KDIR" ] || { echo "e2e-setup: headers not found at $KDIR" >&2; exit 1; }
# The flavour Makefile includes the -common tree by its absolute /usr/src path:
# point it at our unpacked copy.
if ! grep -q "^include $ROOT/usr/src/linux-headers-${KPKG}-common/Makefile" "$KDIR/Makefile"; then
  sed -i "s#^include .*/linux-headers-${KPKG}-common/Makefile#include $ROOT/usr/src/linux-headers-${KPKG}-common/Makefile#" "$KDIR/Makefile"
fi

# ---- 4. vmlinux ------------------------------------------------------------------
# QEMU PVH-boots an uncompressed ELF. Debian's bzImage carries a zstd
# payload: find the zstd frame magic and decompress from there.
if [ ! -s "$W/vmlinux" ] || [ "$ROOT/boot/vmlinuz-$KVER" -nt "$W/vmlinux" ]; then
  log "extracting vmlinux"
  python3 "$E2E/extract-vmlinux.py" "$ROOT/boot/vmlinuz-$KVER" "$W/vmlinux"
fi

# ---- 5. test module --------------------------------------------------------------
MB=$W/module
mkdir -p "$MB"
cp -p "$E2E/module/iosan_uaf.c" "$E2E/module/Kbuild" "$MB/"
if [ ! -f "$MB/iosan_uaf.ko" ] || [ "$E2E/module/iosan_uaf.c" -nt "$MB/iosan_uaf.ko" ] || [ "$KDIR/Makefile" -nt "$MB/iosan_uaf.ko" ]; then
  log "building iosan_uaf.ko"
  make -s -C "$KDIR" M="$MB" CC=gcc-12 modules >"$W/module-build.log" 2>&1 \
    || { cat "$W/module-build.log" >&2; echo "e2e-setup: module build failed" >&2; exit 1; }
fi

# ---- 6. static iosan for the guest -----------------------------------------------
# The same binary analyses the captures on the host afterwards (run.sh).
# IOSAN_E2E_BIN=/path/to/static/iosan uses a prebuilt one instead.
IOSAN=$W/iosan
if [ -n "${IOSAN_E2E_BIN:-}" ]; then
  cp "$IOSAN_E2E_BIN" "$IOSAN"
else
  log "building static iosan"
  export CARGO_TARGET_DIR=$W/cargo-target
  ( cd "$REPO" && RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --quiet -p iosan --target x86_64-unknown-linux-gnu ) \
    || { echo "e2e-setup: cargo build of the static iosan failed" >&2; exit 1; }
  cp "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/iosan" "$IOSAN"
fi
"$IOSAN" record --help >/dev/null 2>&1 \
  || { echo "e2e-setup: $IOSAN has no working 'record' subcommand (not static, or not built in?)" >&2; exit 1; }

# ---- 7. initramfs ----------------------------------------------------------------
log "building initramfs"
IR=$W/initramfs
rm -rf "$IR"; mkdir -p "$IR"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,out,mod,etc}
BB=$ROOT/bin/busybox
cp "$BB" "$IR/bin/busybox"
for a in $("$BB" --list); do [ "$a" = busybox ] || ln -sf busybox "$IR/bin/$a"; done
MD=$ROOT/lib/modules/$KVER/kernel
# drivers the workload loads, dependencies first (virtio-iommu and pci-stub:
# guest/init loads them before recording in the virtio-iommu leg)
for m in net/core/failover drivers/net/net_failover drivers/net/virtio_net drivers/block/virtio_blk \
         drivers/nvme/common/nvme-keyring drivers/nvme/common/nvme-auth drivers/nvme/host/nvme-core \
         drivers/nvme/host/nvme drivers/iommu/virtio-iommu drivers/pci/pci-stub; do
  f=$(ls "$MD/$m.ko"* 2>/dev/null | head -1 || true)
  [ -n "$f" ] || { echo "e2e-setup: module $m not in the kernel package" >&2; exit 1; }
  case "$f" in
    *.xz) xz -dc "$f" > "$IR/mod/$(basename "$m").ko";;
    *.zst) zstd -dcq "$f" > "$IR/mod/$(basename "$m").ko";;
    *) cp "$f" "$IR/mod/$(basename "$m").ko";;
  esac
done
cp "$MB/iosan_uaf.ko" "$IR/mod/"
cp "$IOSAN" "$IR/bin/iosan"
cp "$E2E/guest/init" "$IR/init"; cp "$E2E/guest/workload.sh" "$IR/workload.sh"
chmod +x "$IR/init" "$IR/workload.sh"
(cd "$IR" && find . | "$BB" cpio -o -H newc 2>/dev/null | gzip -1 > "$W/initramfs.cpio.gz")
log "ready in ${SECONDS}s: kernel $KVER, $(du -h "$W/initramfs.cpio.gz" | cut -f1) initramfs"
