//! Time ordering of perf.data records, as perf itself does it.
//!
//! perf writes each CPU's ring buffer in turn, so records of one pass are
//! not in time order across CPUs. After each pass it writes
//! `PERF_RECORD_FINISHED_ROUND`; no record of a later pass is older than
//! the newest record of the pass before the previous one's end. So at each
//! round boundary every held record up to the previous round's newest
//! timestamp can go out. The window is bounded: past `max_pending` the
//! oldest record leaves early and the caller counts it.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

struct Entry<T> {
    time: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq) == (o.time, o.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.time, self.seq).cmp(&(o.time, o.seq))
    }
}

/// Records held for ordering.
pub struct Reorder<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    ready: VecDeque<T>,
    seq: u64,
    round_max: u64,
    flush_limit: Option<u64>,
    max_pending: usize,
}

impl<T> Reorder<T> {
    /// An empty window holding at most `max_pending` records.
    pub fn new(max_pending: usize) -> Self {
        Self {
            heap: BinaryHeap::new(),
            ready: VecDeque::new(),
            seq: 0,
            round_max: 0,
            flush_limit: None,
            max_pending: max_pending.max(1),
        }
    }

    /// Holds `item`; true when the window was full and the oldest record
    /// had to leave early.
    pub fn push(&mut self, time: u64, item: T) -> bool {
        self.seq += 1;
        self.round_max = self.round_max.max(time);
        self.heap.push(Reverse(Entry { time, seq: self.seq, item }));
        if self.heap.len() > self.max_pending {
            if let Some(Reverse(e)) = self.heap.pop() {
                self.ready.push_back(e.item);
            }
            return true;
        }
        false
    }

    /// Newest timestamp seen.
    pub fn latest(&self) -> u64 {
        self.round_max
    }

    /// A `FINISHED_ROUND`: releases what can no longer be preceded.
    pub fn finish_round(&mut self) {
        if let Some(limit) = self.flush_limit {
            while self.heap.peek().is_some_and(|Reverse(e)| e.time <= limit) {
                if let Some(Reverse(e)) = self.heap.pop() {
                    self.ready.push_back(e.item);
                }
            }
        }
        self.flush_limit = Some(self.round_max);
    }

    /// The end of the input: everything goes out.
    pub fn flush_all(&mut self) {
        while let Some(Reverse(e)) = self.heap.pop() {
            self.ready.push_back(e.item);
        }
    }

    /// The next released record.
    pub fn pop_ready(&mut self) -> Option<T> {
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_across_rounds_like_perf() {
        let mut r = Reorder::new(100);
        // Pass n: cpu0 1,2; cpu1 2,3,4.
        for t in [1, 2, 2, 3, 4] {
            r.push(t, t);
        }
        r.finish_round();
        assert_eq!(r.pop_ready(), None, "nothing is safe after the first round");
        // Pass n+1: cpu0 3,4,5; cpu1 5,6,7.
        for t in [3, 4, 5, 5, 6, 7] {
            r.push(t, t);
        }
        r.finish_round();
        let mut out = Vec::new();
        while let Some(t) = r.pop_ready() {
            out.push(t);
        }
        assert_eq!(out, [1, 2, 2, 3, 3, 4, 4], "everything up to the previous round's newest (4)");
        r.flush_all();
        while let Some(t) = r.pop_ready() {
            out.push(t);
        }
        assert_eq!(out, [1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7]);
    }

    #[test]
    fn a_full_window_releases_the_oldest_and_says_so() {
        let mut r = Reorder::new(2);
        assert!(!r.push(5, 5));
        assert!(!r.push(3, 3));
        assert!(r.push(4, 4));
        assert_eq!(r.pop_ready(), Some(3));
    }
}
