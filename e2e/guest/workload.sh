#!/bin/sh
# The recorded workload: load the storage and network drivers, do some I/O
# on NVMe and virtio-blk and a little network, then run the iosan_uaf test
# module's correct phase and its use-after-free phase, then more I/O so the
# leaked pages get reused. Phases are marked in the capture through our
# tracefs instance's trace_marker (iosan record exports its path).
M=${IOSAN_TRACE_MARKER:-/dev/null}
mark() { echo "E2E: $*"; echo "E2E: $*" > "$M"; }

mark "phase=load_drivers begin"
for m in failover net_failover virtio_net virtio_blk nvme-keyring nvme-auth nvme-core nvme; do
  insmod /mod/$m.ko || echo "E2E: insmod $m failed"
done
NVME=""; VBLK=""
for i in 1 2 3 4 5 6 7 8 9 10; do
  for d in /sys/block/*; do
    s=$(cat $d/serial $d/device/serial 2>/dev/null | tr -d ' ')
    case "$s" in e2envme) NVME=/dev/${d##*/};; e2evblk) VBLK=/dev/${d##*/};; esac
  done
  [ -n "$NVME" ] && [ -n "$VBLK" ] && break
  sleep 1
done
mark "phase=load_drivers end nvme=$NVME vblk=$VBLK"

io() { # device tag MiB
  [ -b "$1" ] || { echo "E2E: no block device for $2"; return; }
  mark "phase=$2 begin"
  dd if="$1" of=/dev/null bs=1M count="$3" 2>/dev/null
  dd if=/dev/zero of="$1" bs=64k count=$(($3 * 4)) oflag=direct 2>/dev/null
  dd if="$1" of=/dev/null bs=128k count=$(($3 * 2)) iflag=direct 2>/dev/null
  dd if=/dev/urandom of="$1" bs=1M count=$(($3 / 2)) seek="$3" 2>/dev/null
  sync
  mark "phase=$2 end"
}

io "$NVME" nvme 8
io "$VBLK" vblk 4

NETIF=$(ls /sys/class/net | grep -v '^lo$' | head -1)
if [ -n "$NETIF" ]; then
  mark "phase=net begin"
  ip link set lo up
  ip addr add 10.0.2.15/24 dev "$NETIF" && ip link set "$NETIF" up
  # QEMU user networking forwards 10.0.2.100:1234 to a local command that
  # sends 4 MiB of zeros (see run.sh); nothing leaves the machine.
  timeout 20 nc 10.0.2.100 1234 > /tmp/rx.bin
  echo "E2E: net rx bytes $(wc -c < /tmp/rx.bin)"
  rm -f /tmp/rx.bin
  mark "phase=net end"
fi

# The module phases this leg runs (run.sh puts e2e.phases=a,b,.. on the
# kernel command line; default good,bug).
# e2e.uafargs=a=1,b=2 passes more module parameters.
PHASES=$(sed -n 's/.*e2e\.phases=\([a-z,]*\).*/\1/p' /proc/cmdline)
UAFARGS=$(sed -n 's/.*e2e\.uafargs=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
for ph in $(echo "${PHASES:-good,bug}" | tr , ' '); do
  mark "phase=uaf_$ph begin"
  # shellcheck disable=SC2086
  insmod /mod/iosan_uaf.ko phase=$ph $UAFARGS && rmmod iosan_uaf
  mark "phase=uaf_$ph end"
done

io "$NVME" nvme_after 8
mark "phase=drop_caches begin"
sync; echo 3 > /proc/sys/vm/drop_caches
mark "phase=drop_caches end"
mark "phase=end"
