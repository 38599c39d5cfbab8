//! Address newtypes and ranges.
//!
//! Every address space has its own type so an IOVA can never be passed where
//! a physical address is expected. Arithmetic is checked: it returns `None`
//! instead of wrapping. Ranges use `end` (exclusive) or `last` (inclusive) in
//! their names; [`IovaRange`] and [`PhysRange`] store `last` so a range may
//! touch the top of the 64-bit space.

use core::fmt;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value.
            #[must_use]
            pub const fn get(self) -> u64 {
                self.0
            }
            /// `self + bytes`, or `None` on overflow.
            #[must_use]
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
            /// `self - bytes`, or `None` on underflow.
            #[must_use]
            pub const fn checked_sub(self, bytes: u64) -> Option<Self> {
                match self.0.checked_sub(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
            /// Distance in bytes from `base` to `self`, or `None` if `self < base`.
            #[must_use]
            pub const fn offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }
            /// True if aligned to `1 << lg2` (`lg2 >= 64` is never aligned unless zero).
            #[must_use]
            pub const fn is_aligned(self, lg2: u32) -> bool {
                if lg2 >= 64 {
                    self.0 == 0
                } else {
                    self.0 & ((1u64 << lg2) - 1) == 0
                }
            }
            /// Rounded down to `1 << lg2`.
            #[must_use]
            pub const fn align_down(self, lg2: u32) -> Self {
                if lg2 >= 64 {
                    Self(0)
                } else {
                    Self(self.0 & !((1u64 << lg2) - 1))
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }
        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_type!(
    /// An I/O virtual address: what a device puts on the bus, translated by the IOMMU.
    Iova
);
address_type!(
    /// A CPU physical address.
    PhysAddr
);
address_type!(
    /// A DMA address as returned by the DMA API (`dma_addr_t`); equal to an
    /// IOVA when an IOMMU translates for the device.
    DmaAddr
);

/// A page frame number: a physical address divided by the CPU page size.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(pub u64);

impl Pfn {
    /// The raw frame number.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
    /// `self + pages`, or `None` on overflow.
    #[must_use]
    pub const fn checked_add(self, pages: u64) -> Option<Self> {
        match self.0.checked_add(pages) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }
    /// The physical address of the first byte of this page, or `None` if it
    /// does not fit in 64 bits.
    #[must_use]
    pub fn to_phys(self, page: PageSize) -> Option<PhysAddr> {
        self.0.checked_shl(page.lg2()).filter(|p| p >> page.lg2() == self.0).map(PhysAddr)
    }
}

impl PhysAddr {
    /// The frame holding this address.
    #[must_use]
    pub const fn pfn(self, page: PageSize) -> Pfn {
        Pfn(self.0 >> page.lg2())
    }
}

impl From<DmaAddr> for Iova {
    fn from(d: DmaAddr) -> Self {
        Iova(d.0)
    }
}

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pfn({:#x})", self.0)
    }
}

/// The CPU page size (the kernel's `PAGE_SIZE`), stored as its log2.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PageSize {
    lg2: u32,
}

impl PageSize {
    /// 4 KiB pages.
    pub const SIZE_4K: Self = Self { lg2: 12 };
    /// 16 KiB pages.
    pub const SIZE_16K: Self = Self { lg2: 14 };
    /// 64 KiB pages.
    pub const SIZE_64K: Self = Self { lg2: 16 };

    /// A page size from its log2; only 12, 14 and 16 (4, 16, 64 KiB) are CPU page sizes.
    #[must_use]
    pub const fn from_lg2(lg2: u32) -> Option<Self> {
        match lg2 {
            12 | 14 | 16 => Some(Self { lg2 }),
            _ => None,
        }
    }
    /// A page size from its size in bytes (4096, 16384 or 65536).
    #[must_use]
    pub const fn from_bytes(bytes: u64) -> Option<Self> {
        if !bytes.is_power_of_two() {
            return None;
        }
        Self::from_lg2(bytes.trailing_zeros())
    }
    /// log2 of the size.
    #[must_use]
    pub const fn lg2(self) -> u32 {
        self.lg2
    }
    /// Size in bytes.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        1u64 << self.lg2
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self::SIZE_4K
    }
}

macro_rules! range_type {
    ($(#[$doc:meta])* $name:ident, $addr:ident) => {
        $(#[$doc])*
        ///
        /// Stored as `start` and `last` (inclusive), so it can end at `u64::MAX`;
        /// it is never empty.
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name {
            start: $addr,
            last: $addr,
        }

        impl $name {
            /// `[start, start + len)`, or `None` if `len == 0` or it would pass `u64::MAX`.
            #[must_use]
            pub fn from_start_len(start: $addr, len: u64) -> Option<Self> {
                let last = start.0.checked_add(len.checked_sub(1)?)?;
                Some(Self { start, last: $addr(last) })
            }
            /// `[start, last]`, or `None` if `last < start`.
            #[must_use]
            pub fn from_start_last(start: $addr, last: $addr) -> Option<Self> {
                (last >= start).then_some(Self { start, last })
            }
            /// First address.
            #[must_use]
            pub const fn start(self) -> $addr {
                self.start
            }
            /// Last address (inclusive).
            #[must_use]
            pub const fn last(self) -> $addr {
                self.last
            }
            /// Exclusive end, or `None` if the range ends at `u64::MAX`.
            #[must_use]
            pub const fn end(self) -> Option<$addr> {
                self.last.checked_add(1)
            }
            /// Length in bytes; `None` only for the whole 2^64 space.
            #[must_use]
            pub const fn len(self) -> Option<u64> {
                (self.last.0 - self.start.0).checked_add(1)
            }
            /// Always false: ranges are never empty.
            #[must_use]
            pub const fn is_empty(self) -> bool {
                false
            }
            /// True if `a` lies inside.
            #[must_use]
            pub fn contains(self, a: $addr) -> bool {
                a >= self.start && a <= self.last
            }
            /// The overlap of two ranges.
            #[must_use]
            pub fn intersect(self, other: Self) -> Option<Self> {
                Self::from_start_last(self.start.max(other.start), self.last.min(other.last))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "[{}-{}]", self.start, self.last)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "[{:#x}..={:#x}]"), self.start.0, self.last.0)
            }
        }
    };
}

range_type!(
    /// A non-empty range of IOVAs.
    IovaRange,
    Iova
);
range_type!(
    /// A non-empty range of physical addresses.
    PhysRange,
    PhysAddr
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_arithmetic_never_wraps() {
        assert_eq!(Iova(u64::MAX).checked_add(1), None);
        assert_eq!(PhysAddr(0).checked_sub(1), None);
        assert_eq!(Iova(0x1000).checked_add(0x1000), Some(Iova(0x2000)));
    }

    #[test]
    fn ranges_reach_the_top_of_the_space() {
        let r = IovaRange::from_start_len(Iova(u64::MAX - 0xfff), 0x1000).unwrap();
        assert_eq!(r.last(), Iova(u64::MAX));
        assert_eq!(r.end(), None);
        assert_eq!(r.len(), Some(0x1000));
        assert!(IovaRange::from_start_len(Iova(u64::MAX - 0xfff), 0x1001).is_none());
        assert!(IovaRange::from_start_len(Iova(0), 0).is_none());
        let all = IovaRange::from_start_last(Iova(0), Iova(u64::MAX)).unwrap();
        assert_eq!(all.len(), None);
    }

    #[test]
    fn pfn_conversion_is_checked() {
        assert_eq!(Pfn(0x123).to_phys(PageSize::SIZE_4K), Some(PhysAddr(0x123000)));
        assert_eq!(Pfn(u64::MAX).to_phys(PageSize::SIZE_4K), None);
        assert_eq!(PhysAddr(0x123fff).pfn(PageSize::SIZE_4K), Pfn(0x123));
        assert_eq!(PageSize::from_bytes(65536), Some(PageSize::SIZE_64K));
        assert_eq!(PageSize::from_bytes(8192), None);
    }

    #[test]
    fn display_is_hex() {
        extern crate alloc;
        use alloc::format;
        assert_eq!(format!("{}", Iova(0xfffbe000)), "0xfffbe000");
        assert_eq!(format!("{}", Pfn(0x123589)), "0x123589");
        let r = PhysRange::from_start_len(PhysAddr(0x1000), 0x1000).unwrap();
        assert_eq!(format!("{r}"), "[0x1000-0x1fff]");
    }
}
