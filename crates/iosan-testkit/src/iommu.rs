//! What an IOMMU driver removes when asked to unmap a range: the
//! reference for `__iommu_unmap()`'s return value ("bytes unmapped").
//!
//! `__iommu_unmap()` calls the driver's `unmap_pages()` chunk by chunk and
//! stops at the first chunk that unmaps nothing, so the bytes unmapped are
//! always a prefix of the range, cut at its first hole. How much of a leaf
//! goes depends on whether the table can split it:
//!
//! - [`Leaves::Split`]: an io-pgtable that splits a block it is asked to
//!   unmap part of (ARM LPAE's former `arm_lpae_split_blk_unmap()`, the
//!   model's `PartialUnmap::Split`): exactly the part asked of each leaf
//!   goes;
//! - [`Leaves::Block`]: an IOMMU that maps each call as one leaf it cannot
//!   split (VT-d superpages, AMD v1, generic_pt): a leaf that starts at the
//!   cursor goes whole, even past the end asked (so more than `size` may
//!   be unmapped, the case behind upstream's false leak), and a leaf that
//!   starts before the cursor stops the unmap.

use iosan_core::{Iova, IovaRange};

/// Whether the IOMMU's leaves can be split by a partial unmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaves {
    /// Leaves are split: exactly the range asked is removed.
    Split,
    /// Leaves go whole or not at all.
    Block,
}

/// The pieces the IOMMU removes for an unmap of `[iova, iova + size)`, in
/// IOVA order; their lengths add up to the bytes unmapped. `entry_at(a)`
/// is the live entry containing IOVA `a`, as an inclusive range. Empty for
/// a zero or wrapping size.
pub fn unmap_pieces(
    iova: u64,
    size: u64,
    leaves: Leaves,
    entry_at: impl Fn(u64) -> Option<IovaRange>,
) -> Vec<IovaRange> {
    let mut pieces = Vec::new();
    let Some(asked) = IovaRange::from_start_len(Iova(iova), size) else { return pieces };
    let last = asked.last().get();
    let mut cur = iova;
    while let Some(entry) = entry_at(cur) {
        let piece = match leaves {
            Leaves::Block if entry.start().get() != cur => break,
            Leaves::Block => entry,
            Leaves::Split => {
                let Some(p) = IovaRange::from_start_last(Iova(cur), Iova(entry.last().get().min(last))) else { break };
                p
            }
        };
        pieces.push(piece);
        let piece_last = piece.last().get();
        if piece_last >= last {
            break;
        }
        cur = piece_last + 1;
    }
    pieces
}

/// The bytes unmapped: the sum of the pieces' lengths.
#[must_use]
pub fn unmapped_bytes(pieces: &[IovaRange]) -> u64 {
    pieces.iter().map(|p| p.len().unwrap_or(u64::MAX)).fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, len: u64) -> IovaRange {
        IovaRange::from_start_len(Iova(start), len).unwrap()
    }

    /// Entries [0x1000, 0x3000) and [0x3000, 0x5000), a hole, [0x6000, 0x7000).
    fn entry_at(a: u64) -> Option<IovaRange> {
        [r(0x1000, 0x2000), r(0x3000, 0x2000), r(0x6000, 0x1000)].into_iter().find(|e| e.contains(Iova(a)))
    }

    #[test]
    fn split_cuts_exactly_and_stops_at_a_hole() {
        let p = unmap_pieces(0x2000, 0x6000, Leaves::Split, entry_at);
        assert_eq!(p, vec![r(0x2000, 0x1000), r(0x3000, 0x2000)]);
        assert_eq!(unmapped_bytes(&p), 0x3000);
        assert_eq!(unmap_pieces(0x3000, 0x1000, Leaves::Split, entry_at), vec![r(0x3000, 0x1000)]);
        assert!(unmap_pieces(0x5000, 0x2000, Leaves::Split, entry_at).is_empty(), "starts in a hole");
    }

    #[test]
    fn block_takes_whole_leaves_or_refuses() {
        let p = unmap_pieces(0x1000, 0x1000, Leaves::Block, entry_at);
        assert_eq!(p, vec![r(0x1000, 0x2000)], "more than asked");
        assert_eq!(unmap_pieces(0x1000, 0x3000, Leaves::Block, entry_at), vec![r(0x1000, 0x2000), r(0x3000, 0x2000)]);
        assert!(unmap_pieces(0x2000, 0x1000, Leaves::Block, entry_at).is_empty(), "leaf starts before");
        assert!(unmap_pieces(0x1000, 0, Leaves::Block, entry_at).is_empty());
    }

    #[test]
    fn top_of_the_address_space() {
        let top = IovaRange::from_start_last(Iova(u64::MAX - 0xfff), Iova(u64::MAX)).unwrap();
        let at = |a: u64| top.contains(Iova(a)).then_some(top);
        assert_eq!(unmap_pieces(u64::MAX - 0xfff, 0x1000, Leaves::Split, at), vec![top]);
        assert!(unmap_pieces(u64::MAX - 0xfff, 0x2000, Leaves::Split, at).is_empty(), "wraps");
    }
}
