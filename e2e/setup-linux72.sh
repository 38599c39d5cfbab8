#!/bin/bash
# Prepare the Linux 7.2 legs (vtd72-*) of the iosan end-to-end test (see
# README.md, "The Linux 7.2 legs"), after setup.sh: Debian sid's prebuilt
# 7.2 kernel, its modules and headers, fetched with `apt-get download`
# through a private apt state under work/linux72/apt (the host's apt
# sources are left alone) and unpacked with `dpkg-deb -x`; the iosan_uaf
# module, built in a minimal sid chroot (debootstrap, cached under
# work/linux72/sid) with the gcc the kernel was built with; and an
# initramfs with setup.sh's static iosan.
#
# Why a chroot: the sid headers were configured with gcc-16 (gcc-12 rejects
# -fmin-function-alignment) and sid's objtool and resolve_btfids need glibc
# 2.38, newer than bookworm's.
#
# Exit status: 0 ready, 1 a build step failed, 77 skip (a package or the
# chroot could not be had; the reason is printed).
set -euo pipefail
E2E=$(cd "$(dirname "$0")" && pwd)
W=$E2E/work
L=$W/linux72
mkdir -p "$L"
log() { echo "e2e-setup-linux72: $*"; }
skip() { echo "e2e-setup-linux72: SKIP: $*" >&2; exit 77; }
SECONDS=0
KVER=${IOSAN_E2E_KVER72:-7.2.13+deb14-amd64}
KPKG=${KVER%-amd64}                 # 7.2.13+deb14
MIRROR=${IOSAN_E2E_SID_MIRROR:-http://deb.debian.org/debian}
[ -x "$W/iosan" ] || { echo "e2e-setup-linux72: $W/iosan missing: run setup.sh first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || skip "need root for the build chroot"

# ---- 1. sid packages through a private apt state ---------------------------------
APT=$L/apt
mkdir -p "$APT/state/lists/partial" "$APT/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR sid main" > "$APT/sources.list"
A=(-o Dir::Etc::sourcelist="$APT/sources.list" -o Dir::Etc::sourceparts=- -o Dir::Etc::parts=-
   -o Dir::State="$APT/state" -o Dir::Cache="$APT/cache" -o APT::Architecture=amd64
   -o APT::Architectures=amd64 -o Acquire::Languages=none)
DEBS=$L/debs; mkdir -p "$DEBS"
# The image package is a meta package since trixie: vmlinuz is in
# linux-binary-*, the modules in linux-modules-*.
PKGS="linux-binary-$KVER linux-modules-$KVER linux-headers-$KVER linux-headers-$KPKG-common linux-kbuild-$KPKG busybox-static"
missing=""
for p in $PKGS; do ls "$DEBS/${p}_"*.deb >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  t=$SECONDS
  log "apt-get update (sid, private state)"
  apt-get "${A[@]}" update >"$L/apt-update.log" 2>&1 \
    || { tail -3 "$L/apt-update.log" >&2; skip "apt-get update of sid ($MIRROR) failed"; }
  for p in $missing; do
    log "apt-get download $p"
    # -o APT::Sandbox::User=root: the download directory is root's
    (cd "$DEBS" && apt-get "${A[@]}" -o APT::Sandbox::User=root download "$p" >/dev/null 2>"$L/download.err") \
      || { cat "$L/download.err" >&2; skip "apt-get download $p from sid failed (is $KVER still in sid?)"; }
  done
  log "downloads took $((SECONDS - t)) s"
fi
ROOT=$L/root
if [ ! -f "$ROOT/.extracted-$KVER" ]; then
  t=$SECONDS
  rm -rf "$ROOT"; mkdir -p "$ROOT"
  for f in "$DEBS"/linux-binary-*.deb "$DEBS"/linux-modules-*.deb "$DEBS"/busybox-static_*.deb; do
    dpkg-deb -x "$f" "$ROOT"
  done
  touch "$ROOT/.extracted-$KVER"
  log "unpacked in $((SECONDS - t)) s"
fi
# /usr/lib since trixie (merged /usr), /lib before
MODROOT=$ROOT/usr/lib/modules/$KVER; [ -d "$MODROOT" ] || MODROOT=$ROOT/lib/modules/$KVER
VMLINUZ=$MODROOT/vmlinuz; [ -f "$VMLINUZ" ] || VMLINUZ=$ROOT/boot/vmlinuz-$KVER
[ -f "$VMLINUZ" ] || { echo "e2e-setup-linux72: no vmlinuz for $KVER in the packages" >&2; exit 1; }

# ---- 2. vmlinux for QEMU's PVH boot (as setup.sh: the zstd payload) --------------
if [ ! -s "$L/vmlinux" ] || [ "$VMLINUZ" -nt "$L/vmlinux" ]; then
  log "extracting vmlinux"
  python3 "$E2E/extract-vmlinux.py" "$VMLINUZ" "$L/vmlinux"
fi

# ---- 3. the build chroot ---------------------------------------------------------
# The compiler the kernel was built with, from the headers' own variables.
SID=$L/sid
HDR=$SID/usr/src/linux-headers-$KVER
if [ ! -f "$SID/.ready-$KVER" ]; then
  tmp=$L/hdr-probe; rm -rf "$tmp"; mkdir -p "$tmp"
  dpkg-deb -x "$DEBS"/linux-headers-"${KVER}"_*.deb "$tmp"
  GCC=$(grep -o 'gcc-[0-9][0-9]*' "$tmp/usr/src/linux-headers-$KVER/.kernelvariables" | head -1)
  rm -rf "$tmp"
  [ -n "$GCC" ] || { echo "e2e-setup-linux72: no gcc-NN in the headers' .kernelvariables" >&2; exit 1; }
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    apt-get install -y -qq --no-install-recommends debootstrap >"$L/apt-install.log" 2>&1 \
      || { tail -3 "$L/apt-install.log" >&2; skip "apt-get install debootstrap failed"; }
  fi
  t=$SECONDS
  rm -rf "$SID"
  log "debootstrap sid with $GCC (a few minutes, cached)"
  debootstrap --variant=minbase --include="$GCC,make,libc6-dev,libelf1t64,pahole,kmod" \
      sid "$SID" "$MIRROR" >"$L/debootstrap.log" 2>&1 \
    || { tail -5 "$L/debootstrap.log" >&2; rm -rf "$SID"; skip "debootstrap of sid with $GCC failed (log: $L/debootstrap.log)"; }
  for f in "$DEBS"/linux-headers-*.deb "$DEBS"/linux-kbuild-*.deb; do dpkg-deb -x "$f" "$SID"; done
  touch "$SID/.ready-$KVER"
  log "chroot ready in $((SECONDS - t)) s ($(du -sh "$SID" | cut -f1))"
fi
[ -d "$HDR" ] || { echo "e2e-setup-linux72: headers not found at $HDR" >&2; exit 1; }

# ---- 4. test module --------------------------------------------------------------
KO=$L/iosan_uaf.ko
if [ ! -f "$KO" ] || [ "$E2E/module/iosan_uaf.c" -nt "$KO" ]; then
  t=$SECONDS
  log "building iosan_uaf.ko in the chroot"
  rm -rf "$SID/build"; mkdir -p "$SID/build"
  cp -p "$E2E/module/iosan_uaf.c" "$E2E/module/Kbuild" "$SID/build/"
  # objtool reads /proc; unmount whatever happens
  mount -t proc proc "$SID/proc"
  rc=0
  chroot "$SID" /bin/sh -c "cd /build && make -s -C /usr/src/linux-headers-$KVER M=/build modules" \
      >"$L/module-build.log" 2>&1 || rc=$?
  umount "$SID/proc"
  [ $rc = 0 ] || { cat "$L/module-build.log" >&2; echo "e2e-setup-linux72: module build failed" >&2; exit 1; }
  cp "$SID/build/iosan_uaf.ko" "$KO"
  log "module built in $((SECONDS - t)) s"
fi

# ---- 5. initramfs (as setup.sh, with this kernel's modules) ----------------------
log "building initramfs"
IR=$L/initramfs
rm -rf "$IR"; mkdir -p "$IR"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,out,mod,etc}
BB=$ROOT/usr/bin/busybox; [ -x "$BB" ] || BB=$ROOT/bin/busybox
cp "$BB" "$IR/bin/busybox"
for a in $("$BB" --list); do [ "$a" = busybox ] || ln -sf busybox "$IR/bin/$a"; done
MD=$MODROOT/kernel
for m in net/core/failover drivers/net/net_failover drivers/net/virtio_net drivers/block/virtio_blk \
         drivers/nvme/common/nvme-keyring drivers/nvme/common/nvme-auth drivers/nvme/host/nvme-core \
         drivers/nvme/host/nvme drivers/iommu/virtio-iommu drivers/pci/pci-stub; do
  f=$(ls "$MD/$m.ko"* 2>/dev/null | head -1 || true)
  [ -n "$f" ] || { echo "e2e-setup-linux72: module $m not in the kernel package" >&2; exit 1; }
  case "$f" in
    *.xz) xz -dc "$f" > "$IR/mod/$(basename "$m").ko";;
    *.zst) zstd -dcq "$f" > "$IR/mod/$(basename "$m").ko";;
    *) cp "$f" "$IR/mod/$(basename "$m").ko";;
  esac
done
cp "$KO" "$IR/mod/"
cp "$W/iosan" "$IR/bin/iosan"
cp "$E2E/guest/init" "$IR/init"; cp "$E2E/guest/workload.sh" "$IR/workload.sh"
chmod +x "$IR/init" "$IR/workload.sh"
(cd "$IR" && find . | "$BB" cpio -o -H newc 2>/dev/null | gzip -1 > "$L/initramfs.cpio.gz")
log "ready in ${SECONDS}s: kernel $KVER, $(du -h "$L/initramfs.cpio.gz" | cut -f1) initramfs"
