#!/bin/sh
# iosan record: a self-contained capture script for Linux on @ARCH@, made by
# `iosan record --print` (iosan-record @VERSION@). It needs a POSIX shell
# (busybox sh is enough), root, and a kernel with tracing. It probes the
# kernel when it runs: it mounts tracefs if needed, enables each event and
# kprobe only where this kernel has it, and says what it could not set up.
#
# usage (as root on the machine to record):
#   sh SCRIPT record FILE [COMMAND [ARG...]]
#                        set up, record while COMMAND runs (or for
#                        IOSAN_DURATION seconds), write FILE, clean up
#   sh SCRIPT setup      set up only; recording stays off
#   sh SCRIPT start      switch recording on
#   sh SCRIPT stop       switch recording off (the buffer keeps its events)
#   sh SCRIPT collect FILE
#                        write FILE: `# iosan-meta:` lines, then the trace
#   sh SCRIPT cleanup    remove our instance and kprobes (also after a crash)
#   sh SCRIPT sources    say what this kernel offers; changes nothing
# Then, anywhere: iosan analyze FILE
#
# environment:
#   IOSAN_TRACEFS    the tracefs directory (default: found, or mounted)
#   IOSAN_ROOT       prefix of /proc and /sys (default: none; for tests)
#   IOSAN_DURATION   seconds to record without COMMAND (default @DURATION@)
#   IOSAN_RATE       expected events per second, sizes the buffer (default @RATE@)
#   IOSAN_BUFFER_KB  ring buffer per CPU in KiB (default: from rate, RAM, CPUs)
@HOST@
R=${IOSAN_ROOT:-}
T=${IOSAN_TRACEFS:-}
G=iosan
DURATION=${IOSAN_DURATION:-@DURATION@}
RATE=${IOSAN_RATE:-@RATE@}
BUFFER_KB=${IOSAN_BUFFER_KB:-@BUFFER_KB@}
# ring-buffer bytes per event, for sizing (more with stack traces)
BYTES_PER_EVENT=@BYTES_PER_EVENT@
STACKS='@STACKS@'
# kprobes this run defined, and what the capture metadata says about the run
KP=
COMMAND=
EXIT_CODE=
STARTED=
ELAPSED=

say() { echo "iosan-record: $*" >&2; }
# in `record`, a failure removes what was set up so far (UNDO is set there)
die() {
  say "error: $*"
  if [ -n "${UNDO:-}" ]; then UNDO=; do_cleanup; fi
  exit 2
}

# tracefs: the one given, a mounted one, or (unless $1 is "probe") mount it
find_tracefs() {
  if [ -n "$T" ]; then
    [ -f "$T/trace" ] || die "IOSAN_TRACEFS=$T has no trace file"
  else
    for d in "$R/sys/kernel/tracing" "$R/sys/kernel/debug/tracing"; do
      if [ -f "$d/trace" ]; then T=$d; break; fi
    done
  fi
  if [ -z "$T" ]; then
    [ "${1:-}" = probe ] && return 1
    d=$R/sys/kernel/tracing
    if [ -d "$d" ] && mount -t tracefs nodev "$d" && [ -f "$d/trace" ]; then
      say "mounted tracefs at $d"; T=$d
    elif [ -d "$R/sys/kernel/debug" ] && mount -t debugfs nodev "$R/sys/kernel/debug" \
        && [ -f "$R/sys/kernel/debug/tracing/trace" ]; then
      say "mounted debugfs at $R/sys/kernel/debug"; T=$R/sys/kernel/debug/tracing
    else
      die "tracefs is not available: mounting it on /sys/kernel/tracing failed (needs root and CONFIG_TRACING)"
    fi
  fi
  I=$T/instances/$G
}

machine() {
  if [ -r "$R/proc/sys/kernel/arch" ]; then cat "$R/proc/sys/kernel/arch"; else uname -m; fi
}

# 0 when the kernel has function $1 (kallsyms, else the functions ftrace
# can hook); with no symbol list, 0 too: the kprobe definition then decides
have_sym() {
  if [ -r "$R/proc/kallsyms" ]; then
    grep -q -E "^[0-9a-fA-F]+ [tTwW] $1(\$|[[:space:]])" "$R/proc/kallsyms"
  elif [ -r "$T/available_filter_functions" ]; then
    grep -q -E "^$1(\$|[[:space:]])" "$T/available_filter_functions"
  else
    return 0
  fi
}

# define kprobe $G:$1 on function $2 with definition $3 (kprobes are GLOBAL:
# appended with >>, since > would delete every kprobe on the system)
kprobe() {
  if echo "$3" >> "$T/kprobe_events" 2>/dev/null; then
    KP="$KP $1"; say "kprobe $G:$1 on $2"; return 0
  fi
  say "kprobe $G:$1 on $2 refused by the kernel"; return 1
}
lost() { say "no kprobe $G:$1: $2 not on this kernel (inlined or renamed); lost: $3"; }
has_kp() { case " $KP " in *" $1 "*) return 0;; esac; return 1; }
# kprobe $1 (candidate functions $2...) as a source: enabled by this run
# ($t is "on"), or offered by this kernel
kp_src() {
  n=$1; shift
  if [ "$t" = on ]; then on "$G" "$n"; return; fi
  [ -f "$T/kprobe_events" ] || return 1
  for f in "$@"; do have_sym "$f" && return 0; done
  return 1
}

# event $1:$2 exists in the kernel / in our instance; is enabled there
have_top() { [ -d "$T/events/$1/$2" ]; }
have_ev() { [ -d "$I/events/$1/$2" ]; }
on() {
  v=
  [ -f "$I/events/$1/$2/enable" ] && read -r v < "$I/events/$1/$2/enable"
  case "$v" in 1*) return 0;; esac
  return 1
}
# enable $1:$2 in our instance when this kernel has it
ev() {
  have_ev "$1" "$2" || return 0
  echo 1 > "$I/events/$1/$2/enable" 2>/dev/null || say "cannot enable $1:$2"
}
# enable every event of system $1 in our instance when this kernel has it
sys() {
  [ -f "$I/events/$1/enable" ] || return 0
  echo 1 > "$I/events/$1/enable" 2>/dev/null || say "cannot enable $1:*"
}
# ftrace trigger $3 on $1:$2 when it is enabled: a `<stack trace>` entry
# follows each matching event in the trace
stack() {
  on "$1" "$2" || return 0
  echo "$3" > "$I/events/$1/$2/trigger" 2>/dev/null \
    || say "cannot set a stack trigger on $1:$2 (needs CONFIG_STACKTRACE; instances since Linux 5.17)"
}

our_kprobes() {
  [ -r "$T/kprobe_events" ] || return 0
  sed -n "s/^[pr][0-9]*:$G\/\([^ ]*\) .*/\1/p" "$T/kprobe_events"
}

page_size() {
  if [ -z "$R" ] && command -v getconf >/dev/null 2>&1; then
    getconf PAGESIZE
  else
    k=$(sed -n 's/^KernelPageSize: *\([0-9][0-9]*\) kB$/\1/p' "$R/proc/self/smaps" 2>/dev/null | head -n 1)
    [ -n "$k" ] && echo $((k * 1024))
  fi
}

kernel_release() {
  if [ -r "$R/proc/sys/kernel/osrelease" ]; then cat "$R/proc/sys/kernel/osrelease"; else uname -r; fi
}

count_cpus() {
  CPUS=$(grep -c '^processor' "$R/proc/cpuinfo" 2>/dev/null)
  [ "${CPUS:-0}" -gt 0 ] 2>/dev/null || CPUS=1
  MEM_KB=$(sed -n 's/^MemTotal: *\([0-9][0-9]*\) kB$/\1/p' "$R/proc/meminfo" 2>/dev/null)
}

# per-CPU buffer: rate x duration x bytes per event in all, twice the even
# share per CPU (I/O concentrates on few CPUs), at least 4 MiB, at most
# 1/8 of RAM over all CPUs (16 MiB per CPU when RAM is unknown)
size_buffer() {
  count_cpus
  if [ -n "$BUFFER_KB" ]; then BUF=$BUFFER_KB; return 0; fi
  total=$((RATE * DURATION * BYTES_PER_EVENT / 1024))
  BUF=$((total * 2 / CPUS))
  [ "$BUF" -gt "$total" ] && BUF=$total
  [ "$BUF" -lt 4096 ] && BUF=4096
  if [ -n "$MEM_KB" ]; then
    cap=$((MEM_KB / 8 / CPUS / 4 * 4))
    if [ "$BUF" -gt "$cap" ]; then
      BUF=$cap
      say "buffer capped at 1/8 of RAM ($((cap / 1024)) MiB per CPU): a longer recording loses its oldest events"
    fi
  elif [ "$BUF" -gt 16384 ]; then
    BUF=16384
  fi
  BUF=$((BUF / 4 * 4))
}

# the IOMMU invalidation mode: default domain types of the IOMMU groups
# (what the kernel did), else the kernel command line
iommu_mode() {
  s=0; l=0; p=0
  for f in "$R"/sys/kernel/iommu_groups/*/type; do
    [ -f "$f" ] || continue
    read -r t < "$f"
    case "$t" in DMA) s=$((s + 1));; DMA-FQ) l=$((l + 1));; identity) p=$((p + 1));; esac
  done
  MODE_SOURCE=iommu-group-types
  if [ $s -gt 0 ] && [ $l -gt 0 ]; then MODE=mixed
  elif [ $s -gt 0 ]; then MODE=strict
  elif [ $l -gt 0 ]; then MODE=lazy
  elif [ $p -gt 0 ]; then MODE=passthrough
  else
    MODE=unknown; MODE_SOURCE=none
    set -f
    for w in $(cat "$R/proc/cmdline" 2>/dev/null); do
      case "$w" in
        iommu.strict=1|iommu.strict=[yY]|iommu.strict=on) MODE=strict; MODE_SOURCE=cmdline;;
        iommu.strict=0|iommu.strict=[nN]|iommu.strict=off) MODE=lazy; MODE_SOURCE=cmdline;;
        iommu.passthrough=1|iommu.passthrough=[yY]|iommu.passthrough=on) MODE=passthrough; MODE_SOURCE=cmdline;;
        iommu=pt|iommu=pt,*|iommu=*,pt|iommu=*,pt,*) MODE=passthrough; MODE_SOURCE=cmdline;;
        intel_iommu=*strict*|amd_iommu=*fullflush*) MODE=strict; MODE_SOURCE=cmdline;;
      esac
    done
    set +f
  fi
}

setup_kprobes() {
@KPROBES@}

setup_events() {
@EVENTS@}

setup_stacks() {
@STACKS_SETUP@}

# where the capture learns IOMMU domains and lazy-mode flushes: "on" for
# what this run enabled, "have_top" for what the kernel offers
name_sources() {
  t=$1; IDS=; FLS=
@SOURCES@  IDS=${IDS#,}; FLS=${FLS#,}
  [ -n "$IDS" ] || IDS=none
  [ -n "$FLS" ] || FLS=none
}

do_cleanup() {
  find_tracefs probe || { say "nothing to clean up (tracefs is not mounted)"; return 0; }
  rc=0
  if [ -d "$I" ]; then
    echo 0 > "$I/tracing_on" 2>/dev/null
    # removing the instance also removes its triggers and disables our kprobes in it
    rmdir "$I" || { say "cannot remove $I (busy: stop any reader of its files, then run cleanup again)"; rc=2; }
  fi
  ks=$(our_kprobes)
  if [ -n "$ks" ]; then
    if [ -f "$T/events/$G/enable" ]; then echo 0 > "$T/events/$G/enable" 2>/dev/null; fi
    for k in $ks; do
      echo "-:$G/$k" >> "$T/kprobe_events" || { say "cannot delete kprobe $G:$k"; rc=2; }
    done
  fi
  return $rc
}

do_setup() {
  find_tracefs
  if [ -d "$I" ] || [ -n "$(our_kprobes)" ]; then
    say "a previous run left its instance or kprobes: removing them first"
    do_cleanup || die "cannot remove what a previous run left"
  fi
  # GLOBAL: the pid to task-name cache; too small and task names print as <...>
  n=$(cat "$T/saved_cmdlines_size" 2>/dev/null)
  if [ "${n:-0}" -lt 32768 ] 2>/dev/null; then
    echo 32768 > "$T/saved_cmdlines_size" 2>/dev/null || say "cannot raise saved_cmdlines_size"
  fi
  setup_kprobes
  # a tracefs instance of our own: its buffer, events and switch are apart
  # from any other tracing on this machine
  mkdir "$I" || die "cannot create $I (run as root; after a crash run cleanup)"
  echo 0 > "$I/tracing_on" || die "cannot write $I/tracing_on"
  size_buffer
  echo "$BUF" > "$I/buffer_size_kb" || die "cannot set a $BUF KiB buffer per CPU (out of memory? set IOSAN_BUFFER_KB)"
  # timestamps comparable across CPUs keep the order of a free on one CPU
  # and an unmap on another; else the per-CPU local clock
  clocks=" $(cat "$I/trace_clock" 2>/dev/null | tr '[]' '  ') "
  case "$clocks" in
    *" global "*) echo global > "$I/trace_clock" || say "cannot set the global trace clock";;
    *" local "*) echo local > "$I/trace_clock" || say "cannot set the local trace clock";;
  esac
  setup_events
  setup_stacks
  name_sources on
  say "identity sources: $IDS"
  say "flush sources: $FLS"
  say "stacks: $STACKS"
  say "set up $I with a $BUF KiB buffer on each of $CPUS CPUs; recording is off"
}

switch() {
  find_tracefs probe || die "tracefs is not mounted"
  [ -d "$I" ] || die "no instance $I: run setup first"
  echo "$1" > "$I/tracing_on" || die "cannot write $I/tracing_on"
}

meta() { printf '# iosan-meta: %s=%s\n' "$1" "$(printf '%s' "$2" | tr '\t\r\n' '   ')"; }

enabled_events() {
  out=
  for f in "$I"/events/*/*/enable; do
    [ -f "$f" ] || continue
    v=; read -r v < "$f"
    case "$v" in 1*) ;; *) continue;; esac
    d=${f%/enable}; e=${d##*/}; d=${d%/*}; s=${d##*/}
    out="$out,$s:$e"
  done
  echo "${out#,}"
}

kprobe_functions() {
  [ -r "$T/kprobe_events" ] || return 0
  sed -n "s/^[pr][0-9]*:$G\/\([^ ]*\) \([^ ]*\).*/\1=\2/p" "$T/kprobe_events" | tr '\n' ',' | sed 's/,$//'
}

header() {
  iommu_mode
  count_cpus
  name_sources on
  meta tool "iosan-record @VERSION@ (script for @ARCH@)"
  meta kernel "$(cat "$R/proc/version" 2>/dev/null)"
  meta kernel_release "$(kernel_release)"
  meta cmdline "$(cat "$R/proc/cmdline" 2>/dev/null)"
  meta arch "$(machine)"
  meta page_size "$(page_size)"
  meta iommu_mode "$MODE"
  meta iommu_mode_source "$MODE_SOURCE"
  meta cpus "$CPUS"
  [ -n "$MEM_KB" ] && meta mem_total_kb "$MEM_KB"
  meta buffer_size_kb "$(cat "$I/buffer_size_kb" 2>/dev/null)"
  clock=$(sed -n 's/.*\[\([a-z0-9-]*\)\].*/\1/p' "$I/trace_clock" 2>/dev/null)
  [ -n "$clock" ] && meta trace_clock "$clock"
  meta events "$(enabled_events)"
  meta kprobes "$(our_kprobes | tr '\n' ',' | sed 's/,$//')"
  meta kprobe_functions "$(kprobe_functions)"
  meta identity_sources "$IDS"
  meta flush_sources "$FLS"
  meta stacks "$STACKS"
  for g in "$R"/sys/kernel/iommu_groups/*; do
    [ -d "$g" ] || continue
    t=?; [ -r "$g/type" ] && read -r t < "$g/type"
    devs=
    for d in "$g"/devices/*; do [ -e "$d" ] && devs="$devs,${d##*/}"; done
    meta "iommu_group.${g##*/}" "type=$t devices=${devs#,}"
  done
  if [ -n "$STARTED" ]; then
    meta started_unix "$STARTED"
    meta elapsed_s "$ELAPSED"
  fi
  if [ -n "$COMMAND" ]; then
    meta command "$COMMAND"
    meta exit_code "$EXIT_CODE"
    meta timed_out no
  fi
  lost=0
  for d in "$I"/per_cpu/cpu*; do
    [ -f "$d/stats" ] || continue
    n=${d##*/cpu}
    o=$(sed -n 's/^overrun: *\([0-9]*\).*/\1/p' "$d/stats")
    c=$(sed -n 's/^commit overrun: *\([0-9]*\).*/\1/p' "$d/stats")
    x=$(sed -n 's/^dropped events: *\([0-9]*\).*/\1/p' "$d/stats")
    [ -n "$o" ] && { meta "cpu$n.overrun" "$o"; lost=$((lost + o)); }
    [ -n "$c" ] && meta "cpu$n.commit_overrun" "$c"
    [ -n "$x" ] && { meta "cpu$n.dropped_events" "$x"; lost=$((lost + x)); }
  done
  meta lost_events "$lost"
  ks=" $(our_kprobes | tr '\n' ' ') "
  if [ -r "$T/kprobe_profile" ]; then
    while read -r name hits missed; do
      name=${name#"$G"/}
      case "$ks" in *" $name "*) ;; *) continue;; esac
      meta "kprobe.$name.hits" "$hits"
      meta "kprobe.$name.nmissed" "$missed"
    done < "$T/kprobe_profile"
  fi
}

do_collect() {
  find_tracefs probe || die "tracefs is not mounted: nothing to collect"
  [ -d "$I" ] || die "no instance $I: nothing to collect"
  header > "$1" || die "cannot write $1"
  cat "$I/trace" >> "$1" || die "cannot copy $I/trace to $1"
  say "wrote $1 (lost events: $lost); analyse it with: iosan analyze $1"
  if [ "$lost" -gt 0 ] 2>/dev/null; then
    say "the ring buffer lost events: results are incomplete; set a larger IOSAN_BUFFER_KB or record for less long"
  fi
}

do_record() {
  out=$1; shift
  UNDO=1
  do_setup
  # Ctrl-C or a kill ends the recording, not the collection
  trap 'say "interrupted: collecting what was recorded"' INT TERM
  STARTED=$(date +%s)
  switch 1
  if [ $# -gt 0 ]; then
    COMMAND="$*"
    say "recording while \`$COMMAND\` runs"
    IOSAN_TRACE_MARKER=$I/trace_marker "$@"
    EXIT_CODE=$?
    if [ "$EXIT_CODE" -ne 0 ]; then say "the command exited with status $EXIT_CODE"; fi
  else
    say "recording for $DURATION s"
    sleep "$DURATION"
  fi
  ELAPSED=$(($(date +%s) - STARTED))
  switch 0
  trap - INT TERM
  do_collect "$out"
  do_cleanup || die "capture written, but cleanup failed: run cleanup again"
}

do_sources() {
  find_tracefs probe || die "tracefs is not mounted here; the setup step mounts it"
  name_sources have_top
  echo "identity sources offered: $IDS"
  echo "flush sources offered: $FLS"
}

usage() {
  say "usage: sh $0 record FILE [COMMAND [ARG...]] | setup | start | stop | collect FILE | cleanup | sources"
  say "(the comment at the top of this script says what each does)"
  exit 2
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  record) [ $# -ge 1 ] || usage; do_record "$@";;
  setup) do_setup;;
  start) switch 1;;
  stop) switch 0;;
  collect) [ $# -eq 1 ] || usage; do_collect "$1";;
  cleanup) do_cleanup || exit 2;;
  sources) do_sources;;
  *) usage;;
esac
