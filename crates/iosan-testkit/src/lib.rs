//! # iosan-testkit: the reference models of iosan's tests
//!
//! One copy of what the property tests, the regression tests and the fuzz
//! targets check iosan against. Dev-only: it is never a normal dependency
//! of a library, only a `[dev-dependencies]` entry (and a path dependency of
//! the fuzz crate).
//!
//! - [`refcount`]: the per-page IOMMU mapping counts a sanitizer must hold,
//!   exact and as the kernel's `CONFIG_IOMMU_DEBUG_PAGEALLOC` counts them;
//! - [`iommu`]: what `__iommu_unmap()` removes on an IOMMU that splits
//!   blocks and on one whose leaves cannot be split;
//! - [`engine`]: the model-based check of `Sanitizer` + `ShadowDomain`
//!   against both, one operation at a time;
//! - [`pgtable`]: io-pgtable leaves as a `BTreeMap`, the reference for the
//!   model's page tables;
//! - [`rng`]: a small deterministic PRNG for generated test inputs.
//!
//! Checks return `Err(message)` rather than panic, so that a proptest can
//! shrink the case and a fuzz target can panic with the message.
//!
//! ```
//! use iosan_core::Semantics;
//! use iosan_testkit::engine::{Harness, Op};
//!
//! let mut h = Harness::new(12, Semantics::Exact);
//! h.step(0, &Op::Map { d: 0, iova_slot: 1, phys_slot: 2, n: 3 }).unwrap();
//! // Freeing a page that is still mapped must be reported, and is.
//! h.step(1, &Op::Free { page: 8, order: 0 }).unwrap();
//! h.check_counts().unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod engine;
pub mod iommu;
pub mod pgtable;
pub mod refcount;
pub mod rng;

pub use rng::Rng;
