//! Merging per-CPU parts of one capture into one time-ordered record
//! stream.
//!
//! Each part is already in time order (ftrace writes each CPU's buffer in
//! order). The merge is a k-way merge on the record timestamp over
//! [`Source::peek`]/[`Source::pop`]: each part holds one pending record, so
//! memory is bounded by the number of parts. Out-of-band items (lost-event
//! markers, metadata, skipped input) reach the sink as each part meets
//! them; records with equal timestamps go in part order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::record::RecordSink;
use crate::source::{Source, SourceError};

/// Pushes the records of `parts` into `sink` in timestamp order.
///
/// # Errors
/// The index of the part that could not be read any further, and why;
/// what was merged before is in the sink.
pub fn merge_into(parts: &mut [&mut dyn Source], sink: &mut dyn RecordSink) -> Result<(), (usize, SourceError)> {
    let mut next: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::with_capacity(parts.len());
    for (i, p) in parts.iter_mut().enumerate() {
        if let Some(ts) = p.peek(sink).map_err(|e| (i, e))? {
            next.push(Reverse((ts, i)));
        }
    }
    while let Some(Reverse((_, i))) = next.pop() {
        let Some(p) = parts.get_mut(i) else { continue };
        p.pop(sink);
        if let Some(ts) = p.peek(sink).map_err(|e| (i, e))? {
            next.push(Reverse((ts, i)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::text::TextSource;

    /// Logs records as `label ts stack-len` and the rest by kind.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl RecordSink for Log {
        fn record(&mut self, r: &crate::record::Record<'_>) {
            self.0.push(format!(
                "{} {} {}",
                r.event.label(),
                r.ts_ns.saturating_sub(1_000_000_000) / 1000,
                r.stack.len()
            ));
        }
        fn lost(&mut self, cpu: Option<u32>, events: Option<u64>, _: crate::record::Origin) {
            self.0.push(format!("lost {cpu:?} {events:?}"));
        }
        fn skipped(&mut self, reason: &str, _: crate::record::Origin) {
            self.0.push(format!("skipped {reason}"));
        }
        fn unknown_event(&mut self, _: &[u8]) {}
        fn meta(&mut self, key: &str, _: &str) {
            self.0.push(format!("meta {key}"));
        }
        fn overwritten(&mut self, _: u64) {}
    }

    fn line(cpu: u32, us: u64, pfn: u64) -> String {
        format!(" a-1 [{cpu:03}] ..... 1.{us:06}: mm_page_free: page=0 pfn={pfn:#x} order=0\n")
    }

    #[test]
    fn merges_by_timestamp_keeping_out_of_band_items_and_stacks() {
        let a = format!("# iosan-meta: part=a\n{}{}{} => f+0x1/0x2\n", line(0, 1, 1), line(0, 3, 3), line(0, 5, 5));
        let b = format!(
            "CPU:1 [LOST 2 EVENTS]\n{}{} => f+0x1/0x2\n => g+0x1/0x2\n{}",
            line(1, 2, 2),
            line(1, 4, 4),
            line(1, 5, 6)
        );
        let mut pa = TextSource::new(a.as_bytes(), 1 << 20);
        let mut pb = TextSource::new(b.as_bytes(), 1 << 20);
        let mut log = Log::default();
        merge_into(&mut [&mut pa, &mut pb], &mut log).unwrap();
        let records: Vec<&str> = log.0.iter().filter(|l| l.starts_with("kmem")).map(String::as_str).collect();
        assert_eq!(
            records,
            [
                "kmem:mm_page_free 1 0",
                "kmem:mm_page_free 2 0",
                "kmem:mm_page_free 3 0",
                // The first stack of each part reaches its event too.
                "kmem:mm_page_free 4 2",
                // Equal timestamps go in part order.
                "kmem:mm_page_free 5 1",
                "kmem:mm_page_free 5 0"
            ]
        );
        assert!(log.0.iter().any(|l| l == "lost Some(1) Some(2)") && log.0.iter().any(|l| l == "meta part"));
        // The out-of-band items come before the records of their part that follow them.
        let pos = |s: &str| log.0.iter().position(|l| l == s).unwrap();
        assert!(pos("lost Some(1) Some(2)") < pos("kmem:mm_page_free 2 0"));
    }

    #[test]
    fn stacks_stay_with_their_event() {
        let a = format!("{} => x+0x1/0x2\n{} => f+0x1/0x2\n => g+0x1/0x2\n", line(0, 1, 1), line(0, 3, 3));
        let b = line(1, 2, 2);
        let mut pa = TextSource::new(a.as_bytes(), 1 << 20);
        let mut pb = TextSource::new(b.as_bytes(), 1 << 20);
        let mut log = Log::default();
        merge_into(&mut [&mut pa, &mut pb], &mut log).unwrap();
        let records: Vec<&str> = log.0.iter().filter(|l| l.starts_with("kmem")).map(String::as_str).collect();
        assert_eq!(records, ["kmem:mm_page_free 1 1", "kmem:mm_page_free 2 0", "kmem:mm_page_free 3 2"]);
    }
}
