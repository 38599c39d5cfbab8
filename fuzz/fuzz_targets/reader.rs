//! `parse::reader::LineReader` over arbitrary bytes with a small line limit
//! and a small inner buffer (so lines straddle refills), checking its
//! conventions: no terminator in a line, lengths within the limit, line
//! numbers counting every line, offsets adding up to the input length.
#![no_main]

use std::io::BufReader;

use iosan_trace::parse::{LineReader, ReadError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&a, rest)) = data.split_first() else { return };
    let Some((&b, input)) = rest.split_first() else { return };
    let max = usize::from(a % 64) + 1;
    let cap = usize::from(b % 32) + 1;
    let mut r = LineReader::with_max_line_len(BufReader::with_capacity(cap, input), max);
    let mut expect_no = 0u64;
    let mut last_offset = None::<u64>;
    while let Some(item) = r.next_line() {
        expect_no += 1;
        let (no, off) = match item {
            Ok(line) => {
                assert!(line.bytes.len() <= max, "line longer than the limit");
                assert!(!line.bytes.contains(&b'\n'));
                assert!(line.bytes.last() != Some(&b'\r'));
                let start = usize::try_from(line.offset).unwrap();
                assert_eq!(input.get(start..start + line.bytes.len()), Some(line.bytes));
                (line.number, line.offset)
            }
            Err(ReadError::LineTooLong { line, offset, len, limit }) => {
                assert_eq!(limit, max);
                assert!(len > max as u64);
                (line, offset)
            }
            Err(e) => panic!("reading a slice cannot fail: {e}"),
        };
        assert_eq!(no, expect_no);
        assert!(last_offset.is_none_or(|l| off > l));
        last_offset = Some(off);
    }
    assert_eq!(r.lines_read(), expect_no);
    assert_eq!(r.bytes_read(), input.len() as u64);
});
