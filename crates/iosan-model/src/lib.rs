//! # iosan-model: the kernel side of DMA, modelled
//!
//! A faithful, deterministic model of what Linux does around an IOMMU, with
//! the iosan sanitizer wired in where the kernel puts its hooks, for
//! tests, fault injection, demos and benchmarks:
//!
//! - [`mem`]: physical memory (RAM regions, holes, an MMIO window) and a
//!   buddy allocator (orders 0..=10) whose allocations and frees are
//!   checked like `post_alloc_hook()` / `free_pages_prepare()`;
//! - [`pgtable`]: io-pgtable formats on one radix engine: ARM LPAE stage 1
//!   and 2 (4, 16 and 64 KiB granules, ias/oas 32..=48, concatenated
//!   stage-2 PGDs) and VT-d second level (4 KiB / 2 MiB / 1 GiB, agaw 39,
//!   48, 57); partial-block unmap policies split / refuse / whole block;
//!   page tables implement [`iosan_core::Translate`];
//! - [`kernel`]: the IOMMU API (`iommu_map` with `iommu_pgsize()`,
//!   `iommu_unmap` returning bytes unmapped, `iommu_map_sg`,
//!   `iommu_iova_to_phys`, domain free) with the sanitizer hooks as in
//!   Linux 7.1 (map error path included);
//! - [`dma`]: the DMA API over it (`dma_map_page`, `dma_map_sg`,
//!   `dma_alloc_coherent`, strict and lazy unmap with flush-queue
//!   exposure, a `DMA_API_DEBUG`-style check);
//! - [`iova`]: the per-device top-down IOVA allocator and the lazy-mode
//!   flush queue, which the DMA API drives and the kernel holds;
//! - [`trace`]: an ftrace text writer in the exact line formats of a Linux
//!   6.12 x86_64 capture (`iommu`, `dma`, `kmem`, `intel_iommu` events and
//!   the `lab:*` kprobes that carry domain identity);
//! - [`workload`]: drivers (NIC receive ring, NVMe PRP queue, GPU-like
//!   scatterlists), bug injection, [`simulate`] and [`list`].
//!
//! Kernel versions modelled: the hook placement of Linux 7.1-rc (after the
//! May 2026 fixes); trace formats of Linux 6.12.
//!
//! ```
//! use iosan_core::FindingKind;
//! use iosan_model::{simulate, SimSpec};
//!
//! let spec = SimSpec { bug: Some("free-before-unmap".into()), iterations: 20, ..SimSpec::default() };
//! let mut trace = Vec::new();
//! let report = simulate(&spec, Some(&mut trace)).unwrap();
//! assert_eq!(report.bugs().map(|f| f.kind).collect::<Vec<_>>(), [FindingKind::FreedWhileMapped]);
//! assert!(trace.starts_with(b"# tracer: nop\n"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dma;
pub mod error;
pub mod iova;
pub mod kernel;
pub mod mem;
pub mod pgtable;
pub mod prng;
pub mod trace;
pub mod tracedat;
pub mod workload;

pub use error::{ModelError, Result};
pub use kernel::{Exposure, Kernel, KernelConfig, ModelStats};
pub use trace::{TraceCtx, TraceWriter};
pub use workload::{list, simulate, Injected, IommuKind, SimReport, SimSpec};
