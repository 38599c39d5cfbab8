//! A fast hasher for small integer keys (page-node indexes, IOVAs, ids).

use core::hash::Hasher;

/// A multiply-rotate hasher: a few cycles per key where SipHash takes tens.
/// Not collision resistant; use it for maps whose size is bounded by other
/// means, so that chosen collisions can cost time but never memory.
#[derive(Default, Clone, Copy, Debug)]
pub struct FastHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // Fold the high half in and mix again: hash tables use both the low
        // bits (bucket) and the top bits (tag).
        (self.0 ^ (self.0 >> 32)).wrapping_mul(K)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hash::{BuildHasher, BuildHasherDefault};

    #[test]
    fn spreads_consecutive_keys() {
        let b = BuildHasherDefault::<FastHasher>::default();
        let h: alloc::vec::Vec<u64> = (0u64..64).map(|k| b.hash_one(k) >> 58).collect();
        let distinct = h.iter().collect::<alloc::collections::BTreeSet<_>>().len();
        assert!(distinct > 32, "{distinct}");
    }
}
