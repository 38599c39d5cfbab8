//! The model's error type.
//!
//! Expected outcomes are values, not errors: an unmap that removes fewer
//! bytes than asked returns that number. `Err` is for what the kernel
//! reports with an errno (`-EINVAL`, `-EEXIST`, `-ENOMEM`, `-ERANGE`) and
//! for requests the model cannot honour.

use iosan_core::{Iova, Pfn};

/// Errors of the model, each named after the errno the kernel would return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// `-ENOMEM` from the page allocator: no free block of that order.
    #[error("out of memory: no free block of order {order}")]
    OutOfMemory {
        /// The order asked for.
        order: u32,
    },
    /// The order is above `MAX_PAGE_ORDER`.
    #[error("order {order} is above the largest order {max}")]
    OrderTooLarge {
        /// The order asked for.
        order: u32,
        /// The largest order the allocator supports.
        max: u32,
    },
    /// A free of a block that is not allocated with that order (double free
    /// or a bad pfn): the kernel's `bad_page()`.
    #[error("bad free of pfn {pfn} order {order}: not an allocated block of that order")]
    BadFree {
        /// First page of the block.
        pfn: Pfn,
        /// Order given to the free.
        order: u32,
    },
    /// A RAM region that overlaps another, is empty, or is not page aligned.
    #[error("bad memory region: {0}")]
    BadRegion(&'static str),
    /// `-EINVAL`: an argument is misaligned, zero, overflows, or is not a
    /// size the domain supports.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// `-EEXIST`: a leaf entry already maps (part of) the range.
    #[error("iova {iova} is already mapped")]
    Exists {
        /// First IOVA found mapped.
        iova: Iova,
    },
    /// `-ERANGE`: the IOVA is beyond the input size or the physical address
    /// beyond the output size of the table.
    #[error("address out of range: {0}")]
    Range(&'static str),
    /// The page-table configuration cannot be built (granule, ias, oas).
    #[error("unsupported page-table configuration: {0}")]
    BadConfig(&'static str),
    /// No domain with that id.
    #[error("no such domain {0}")]
    NoDomain(u32),
    /// No device with that id.
    #[error("no such device {0}")]
    NoDevice(u32),
    /// The IOVA allocator has no free range of that size below the DMA mask.
    #[error("iova space exhausted for {size:#x} bytes")]
    IovaExhausted {
        /// Bytes asked for.
        size: u64,
    },
    /// The DMA address handed to an unmap or free is not a live mapping.
    #[error("dma address {0:#x} is not mapped")]
    NotMapped(u64),
    /// Writing the trace failed.
    #[error("trace write failed: {0}")]
    Io(String),
}

impl From<std::io::Error> for ModelError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// Result alias of the model.
pub type Result<T, E = ModelError> = core::result::Result<T, E>;
