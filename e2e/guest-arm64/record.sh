#!/bin/sh
# record.sh: `iosan record --apply` for a guest with no iosan binary (arm64:
# only the x86-64 Rust target can be built on the test host).
#
# usage: record.sh OUT.txt [DAT] -- COMMAND...
#
# It follows the plan `iosan record --print` renders (crates/iosan-record,
# plan.rs) with arm64 registers in the kprobe fetchargs: our own tracefs
# instance "iosan", the domain kprobes in group "iosan", the same events,
# the global clock; it runs COMMAND with IOSAN_TRACE_MARKER set, then
# writes `# iosan-meta:` lines and the instance's trace text to OUT.txt,
# and removes the instance and the kprobes again. With DAT (and trace-cmd
# in the guest) it also extracts the instance's buffer as a trace.dat.
# Exit status: COMMAND's, or 2 when tracefs is missing.
T=/sys/kernel/tracing
I=$T/instances/iosan
OUT=$1; shift
DAT=""
[ "$1" != "--" ] && { DAT=$1; shift; }
[ "$1" = "--" ] && shift
[ -f $T/trace ] || { echo "record.sh: no tracefs at $T" >&2; exit 2; }
say() { echo "record.sh: $*"; }

# kprobes: __iommu_map(domain, iova, paddr, size, prot, gfp),
# __iommu_unmap(domain, iova, size, gather), __iommu_attach_device(domain,
# dev) with dev->kobj.name as the first word of struct device,
# iommu_domain_free(domain), the flush-queue timer and flush. AAPCS64:
# arguments in x0..x7, the return value in x0 ($retval).
KPROBES="p:iosan/iommu_map __iommu_map domain=%x0 dtype=+0(%x0):u32 iova=%x1 paddr=%x2 size=%x3 prot=%x4:s32
r:iosan/iommu_map_ret __iommu_map ret=\$retval:s32
p:iosan/iommu_unmap __iommu_unmap domain=%x0 dtype=+0(%x0):u32 iova=%x1 size=%x2
r:iosan/iommu_unmap_ret __iommu_unmap unmapped=\$retval:u64
p:iosan/iommu_attach __iommu_attach_device domain=%x0 dtype=+0(%x0):u32 dev=+0(+0(%x1)):string
p:iosan/iommu_domain_free iommu_domain_free domain=%x0 dtype=+0(%x0):u32
p:iosan/fq_flush_timeout fq_flush_timeout
p:iosan/fq_flush_iotlb fq_flush_iotlb cookie=%x0"
EVENTS="kmem/mm_page_free kmem/mm_page_alloc kmem/mm_page_free_batched
iommu/map iommu/unmap iommu/attach_device_to_domain iommu/detach_device_from_domain
iommu/add_device_to_group iommu/remove_device_from_group iommu/io_page_fault
dma/dma_map_page dma/dma_unmap_page dma/dma_map_phys dma/dma_unmap_phys
dma/dma_map_resource dma/dma_unmap_resource dma/dma_map_sg dma/dma_unmap_sg dma/dma_map_sg_err
dma/dma_alloc dma/dma_free dma/dma_alloc_pages dma/dma_free_pages
dma/dma_alloc_sgt dma/dma_alloc_sgt_err dma/dma_free_sgt printk/console"

# ---- set up
[ "$(cat $T/saved_cmdlines_size)" -ge 32768 ] 2>/dev/null || echo 32768 > $T/saved_cmdlines_size
KNAMES=""
echo "$KPROBES" | while read -r def; do
  f=$(echo "$def" | cut -d' ' -f2)
  if ! grep -q " $f\$" /proc/kallsyms; then say "kprobe skipped: $f not in kallsyms"; continue; fi
  echo "$def" >> $T/kprobe_events || say "kprobe FAILED: $def"
done
# (kprobe_events lists a return probe as r<maxactive>:group/name)
KNAMES=$(grep -E '^[pr][0-9]*:iosan/' $T/kprobe_events | sed -E 's#^[pr][0-9]*:iosan/([^ ]*) .*#\1#' | tr '\n' ' ')
mkdir $I || { say "instance $I exists already"; exit 2; }
echo 0 > $I/tracing_on
BUFKB=${RECORD_BUFFER_KB:-65536}
echo $BUFKB > $I/buffer_size_kb
CLOCK=""
grep -qw global $I/trace_clock && { echo global > $I/trace_clock; CLOCK=global; }
ENABLED=""
for e in $EVENTS; do
  [ -d $I/events/$e ] || continue
  echo 1 > $I/events/$e/enable && ENABLED="$ENABLED,${e%%/*}:${e#*/}"
done
for s in arm-smmu-v3 arm_smmu_v3; do
  [ -d $I/events/$s ] || continue
  for d in $I/events/$s/*/; do
    [ -f "$d/enable" ] || continue
    e=${d%/}; e=${e##*/}
    echo 1 > "$d/enable" && ENABLED="$ENABLED,$s:$e"
  done
done
for k in $KNAMES; do echo 1 > $I/events/iosan/$k/enable; done
say "recording${ENABLED}; kprobes: $KNAMES; ${BUFKB} KiB per CPU"

# ---- record
START=$(date +%s)
echo 1 > $I/tracing_on
IOSAN_TRACE_MARKER=$I/trace_marker "$@"
RC=$?
echo 0 > $I/tracing_on
END=$(date +%s)

# ---- collect: the metadata `iosan record` writes, then the trace
meta() { printf '# iosan-meta: %s=%s\n' "$1" "$(printf '%s' "$2" | tr '\n\t' '  ')"; }
groups_mode() {
  s=0; l=0
  for g in /sys/kernel/iommu_groups/*; do
    case "$(cat $g/type 2>/dev/null)" in DMA) s=$((s + 1));; DMA-FQ) l=$((l + 1));; esac
  done
  if [ $s -gt 0 ] && [ $l -gt 0 ]; then echo mixed; elif [ $l -gt 0 ]; then echo lazy; elif [ $s -gt 0 ]; then echo strict; else echo unknown; fi
}
LOST=0
{
  meta tool "iosan-e2e guest-arm64/record.sh (the iosan record plan, in shell)"
  meta kernel "$(cat /proc/version)"
  meta cmdline "$(cat /proc/cmdline)"
  meta arch "$(uname -m)"
  meta iommu_mode "$(groups_mode)"
  meta iommu_mode_source iommu-group-types
  meta cpus "$(grep -c ^processor /proc/cpuinfo)"
  # not written by iosan record: the analyzer takes the page size from --page-size
  meta page_size "$(($(sed -n 's/^KernelPageSize: *\([0-9]*\) kB/\1/p' /proc/self/smaps | head -1) * 1024))"
  meta mem_total_kb "$(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo)"
  meta buffer_size_kb "$(cat $I/buffer_size_kb)"
  [ -n "$CLOCK" ] && meta trace_clock "$CLOCK"
  meta events "${ENABLED#,}"
  meta kprobes "$(echo $KNAMES | tr ' ' ,)"
  for g in /sys/kernel/iommu_groups/*; do
    [ -d "$g" ] || continue
    meta "iommu_group.${g##*/}" "type=$(cat $g/type 2>/dev/null) devices=$(ls $g/devices | tr '\n' , | sed 's/,$//')"
  done
  meta started_unix "$START"
  meta elapsed_s "$((END - START))"
  meta command "$*"
  meta exit_code "$RC"
  meta timed_out no
  for c in $I/per_cpu/cpu*; do
    n=${c##*/cpu}
    o=$(sed -n 's/^overrun: //p' $c/stats); co=$(sed -n 's/^commit overrun: //p' $c/stats)
    d=$(sed -n 's/^dropped events: //p' $c/stats)
    meta "cpu$n.overrun" "$o"; meta "cpu$n.commit_overrun" "$co"; meta "cpu$n.dropped_events" "$d"
    LOST=$((LOST + ${o:-0} + ${d:-0}))
  done
  meta lost_events "$LOST"
  grep '^ *iosan/' $T/kprobe_profile | while read -r name hits missed; do
    meta "kprobe.${name#iosan/}.hits" "$hits"; meta "kprobe.${name#iosan/}.nmissed" "$missed"
  done
} > "$OUT"
cat $I/trace >> "$OUT"
say "wrote $OUT ($(wc -c < "$OUT") bytes; lost events: $LOST)"
if [ -n "$DAT" ] && command -v trace-cmd >/dev/null 2>&1; then
  trace-cmd extract -B iosan -o "$DAT" > /tmp/extract.log 2>&1 || say "trace-cmd extract failed: $(tail -2 /tmp/extract.log)"
  # extract writes the top-level buffer too (empty) and names ours iosan
  say "trace.dat: $(wc -c < "$DAT" 2>/dev/null) bytes"
fi

# ---- clean up: the instance first (that disables its kprobes), then the kprobes
# (trace-cmd extract -B removes the instance itself when it is done)
[ ! -d $I ] || rmdir $I || say "could not remove $I"
for k in $KNAMES; do echo "-:iosan/$k" >> $T/kprobe_events || say "could not delete kprobe $k"; done
exit $RC
