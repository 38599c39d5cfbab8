# The legs of the end-to-end matrix (sourced by run.sh and check-fixtures.sh).
# shellcheck shell=bash
ALL_LEGS="vtd-strict vtd-lazy vtd-perf vtd-watch vtd-stacks vtd-superpage virtio-iommu no-iommu amd-iommu arm64-strict arm64-lazy arm64-16k-strict arm64-16k-lazy vtd72-strict vtd72-lazy"
# Legs whose check passes today; the others record fine but the analysis
# is not exact yet (README.md lists their numbers).
CI_LEGS="vtd-strict vtd-lazy vtd-perf vtd-watch vtd-stacks vtd-superpage amd-iommu virtio-iommu no-iommu arm64-strict arm64-lazy arm64-16k-strict arm64-16k-lazy vtd72-strict vtd72-lazy"

# leg -> ARCH FLAV IOMMU_ARGS(array) CMDLINE EXPECT_MODE PHASES CHECK_ARGS(array)
#        ANALYZE_ARGS(array) RECORDER (iosan | perf: capture in out/perf.data
#        | watch: findings in out/watch.jsonl, analyzed in the guest)
#        KERN ("" Debian 6.12 | linux72: sid's 7.2, setup-linux72.sh)
leg_config() {
  ARCH=x86; FLAV=""; PHASES=good,bug; CHECK_ARGS=(); IOMMU_ARGS=(); ANALYZE_ARGS=(); RECORDER=iosan; KERN=""
  case "$1" in
    # caching-mode=on makes the VT-d driver force strict mode, so lazy
    # needs caching-mode=off
    vtd-strict) IOMMU_ARGS=(-device intel-iommu,intremap=on,caching-mode=on)
                CMDLINE="intel_iommu=on iommu.strict=1"; EXPECT_MODE=strict;;
    vtd-lazy)   IOMMU_ARGS=(-device intel-iommu,intremap=on,caching-mode=off)
                CMDLINE="intel_iommu=on iommu.strict=0"; EXPECT_MODE=lazy;;
    # vtd-strict recorded by Debian's perf (perf.data; iosan's domain
    # kprobes defined in tracefs for it): no iosan-meta header to check
    vtd-perf)   IOMMU_ARGS=(-device intel-iommu,intremap=on,caching-mode=on)
                CMDLINE="intel_iommu=on iommu.strict=1 e2e.rec=perf${E2E_PERF_KPROBES:+ e2e.perfkp=$E2E_PERF_KPROBES}"; EXPECT_MODE=strict; RECORDER=perf
                CHECK_ARGS=(--no-meta);;
    # vtd-strict analyzed live by `iosan watch` in the guest: findings come
    # from its JSON Lines (out/watch.jsonl), there is no capture
    vtd-watch)  IOMMU_ARGS=(-device intel-iommu,intremap=on,caching-mode=on)
                CMDLINE="intel_iommu=on iommu.strict=1 e2e.rec=watch"; EXPECT_MODE=strict; RECORDER=watch
                CHECK_ARGS=(--live);;
    # vtd-strict recorded with `iosan record --stacks` (stacks on every map
    # and unmap), for what stacks cost
    vtd-stacks) IOMMU_ARGS=(-device intel-iommu,intremap=on,caching-mode=on)
                CMDLINE="intel_iommu=on iommu.strict=1 e2e.rec=stacks"; EXPECT_MODE=strict;;
    # QEMU's "edu" device has no driver: the module attaches its own domain
    # to it, and VT-d then offers 2 MiB pages. Only the superpage phase
    # runs, so that no other case reuses its pages: nothing may be reported.
    vtd-superpage) IOMMU_ARGS=(-device intel-iommu,intremap=on,caching-mode=on -device edu)
                CMDLINE="intel_iommu=on iommu.strict=1"; EXPECT_MODE=strict; PHASES=superpage
                CHECK_ARGS=(--require-good superpage --min-leak-cases 0);;
    # virtio-iommu cannot map a domain before it is attached: the module
    # attaches its unmanaged domain to the edu device, bound to pci-stub
    # so that it has an IOMMU at all (init does both)
    virtio-iommu) IOMMU_ARGS=(-device virtio-iommu-pci -device edu)
                CMDLINE="iommu.strict=1 e2e.premod=virtio-iommu e2e.stub=1234:11e8 e2e.uafargs=unmanaged_attach=1"
                EXPECT_MODE=strict;;
    # dma-direct: the DMA address is the physical address; the unmanaged
    # cases find no IOMMU and say SKIP
    no-iommu)   CMDLINE="intel_iommu=off"; EXPECT_MODE=unknown;;
    amd-iommu)  IOMMU_ARGS=(-device amd-iommu)
                CMDLINE="iommu.strict=1"; EXPECT_MODE=strict;;
    # vtd-strict and vtd-lazy on Debian sid's prebuilt Linux 7.2 (generic
    # iommupt page tables, dma_map_phys, iommu_map_nosync)
    vtd72-strict) IOMMU_ARGS=(-device intel-iommu,intremap=on,caching-mode=on); KERN=linux72
                CMDLINE="intel_iommu=on iommu.strict=1"; EXPECT_MODE=strict;;
    # 7.2's VT-d offers 2 MiB pages before any attach, so the unattached
    # domain's 1 MiB unmap removes the whole 2 MiB (vtd72-strict: both
    # unmanaged cases are correct); vtd72-lazy attaches it to edu and maps
    # halves, so that unmanaged-partial leaks the upper half
    vtd72-lazy) IOMMU_ARGS=(-device intel-iommu,intremap=on,caching-mode=off -device edu); KERN=linux72
                CMDLINE="intel_iommu=on iommu.strict=0 e2e.uafargs=unmanaged_attach=1"; EXPECT_MODE=lazy;;
    # arm64 guests record with the plan `iosan record --print --arch
    # aarch64` printed on the host; E2E_TRACE_DAT=1 also writes a trace.dat
    arm64-strict) ARCH=arm64; FLAV=arm64; CMDLINE="iommu.strict=1"; EXPECT_MODE=strict;;
    arm64-lazy) ARCH=arm64; FLAV=arm64; CMDLINE="iommu.strict=0"; EXPECT_MODE=lazy;;
    # the analyzer takes the 16 KiB page size from the capture's metadata
    arm64-16k-strict) ARCH=arm64; FLAV=arm64-16k; CMDLINE="iommu.strict=1"; EXPECT_MODE=strict;;
    arm64-16k-lazy) ARCH=arm64; FLAV=arm64-16k; CMDLINE="iommu.strict=0"; EXPECT_MODE=lazy;;
  esac
  if [ "$ARCH" = arm64 ] && [ "${E2E_TRACE_DAT:-0}" = 1 ]; then CMDLINE="$CMDLINE e2e.dat=1"; fi
}

