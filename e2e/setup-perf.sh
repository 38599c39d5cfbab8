#!/bin/bash
# Prepare the vtd-perf leg (see README.md): after setup.sh, Debian's perf
# for the 6.12 kernel (bookworm-backports' linux-perf, else bookworm's)
# fetched with `apt-get download`, unpacked with `dpkg-deb -x`, and added
# with the shared libraries it needs to a copy of the x86 initramfs
# (work/initramfs-perf.cpio.gz).
#
# Exit status: 0 ready, 1 a build step failed, 77 skip (no perf package).
set -euo pipefail
E2E=$(cd "$(dirname "$0")" && pwd)
W=$E2E/work
log() { echo "e2e-setup-perf: $*"; }
skip() { echo "e2e-setup-perf: SKIP: $*" >&2; exit 77; }
[ -d "$W/initramfs" ] || { echo "e2e-setup-perf: run setup.sh first" >&2; exit 1; }
D=$W/debs-perf
mkdir -p "$D"
# bookworm itself has perf 6.1 only; the 6.12 perf is in bookworm-backports.
# A private apt state keeps the host's sources untouched.
BPO=$W/apt-bpo
A=(-o "Dir::Etc::SourceList=$BPO/sources.list" -o Dir::Etc::SourceParts=/nonexistent -o "Dir::State::Lists=$BPO/lists")
if ! ls "$D"/linux-perf_*.deb >/dev/null 2>&1; then
  mkdir -p "$BPO/lists/partial"
  echo 'deb http://deb.debian.org/debian bookworm-backports main' > "$BPO/sources.list"
  if apt-get "${A[@]}" update -qq >/dev/null 2>&1; then
    v=$(apt-cache "${A[@]}" madison linux-perf | awk -F'|' '$2 ~ /6\.12\./ {gsub(/ /, "", $2); print $2}' | sort -V | tail -1)
    [ -n "$v" ] && (cd "$D" && apt-get "${A[@]}" download "linux-perf=$v" >/dev/null 2>&1) || true
  fi
  ls "$D"/linux-perf_*.deb >/dev/null 2>&1 || (cd "$D" && apt-get download linux-perf >/dev/null 2>&1) \
    || skip "apt-get download linux-perf failed"
fi
DEB=$(ls "$D"/linux-perf_*.deb | sort -V | tail -1)
log "perf from $(basename "$DEB")"
PR=$W/perf-root
rm -rf "$PR"; mkdir -p "$PR"; dpkg-deb -x "$DEB" "$PR"
[ -x "$PR/usr/bin/perf" ] || { echo "e2e-setup-perf: no usr/bin/perf in $DEB" >&2; exit 1; }
# The libraries come from the host, which must be bookworm (the package's
# own release) for ldd to resolve them all.
if ldd "$PR/usr/bin/perf" | grep -q 'not found'; then
  ldd "$PR/usr/bin/perf" | grep 'not found' >&2
  skip "perf's libraries are not all on this host (apt-get install the ones listed)"
fi
IR=$W/initramfs-perf
rm -rf "$IR"; cp -a "$W/initramfs" "$IR"
mkdir -p "$IR/lib/x86_64-linux-gnu" "$IR/lib64"
cp "$PR/usr/bin/perf" "$IR/usr/bin/perf"
ldd "$PR/usr/bin/perf" | awk '/=> \//{print $3}' | while read -r l; do cp -L "$l" "$IR/lib/x86_64-linux-gnu/"; done
cp -L /lib64/ld-linux-x86-64.so.2 "$IR/lib64/"
(cd "$IR" && find . | "$IR/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$W/initramfs-perf.cpio.gz")
log "ready: $(du -h "$W/initramfs-perf.cpio.gz" | cut -f1) initramfs"
