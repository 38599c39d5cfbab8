//! `input::decode_reader_with` over arbitrary bytes (plain, gzip, xz or
//! zstd by magic) with a small decompressed-bytes limit, read to the end.
//! Errors are fine; panics, hangs and unbounded memory are not.
#![no_main]

use std::io::{self, Cursor, Read};

use iosan_trace::input::{decode_reader_with, InputOptions};
use libfuzzer_sys::fuzz_target;

const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let opts = InputOptions { max_decompressed_bytes: LIMIT, buffer_size: 4096 };
    let Ok(input) = decode_reader_with(Cursor::new(data.to_vec()), &opts) else { return };
    let mut reader = input.reader;
    let mut total = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // Plain input is not capped; compressed output is.
    assert!(total <= LIMIT.max(data.len() as u64));
});
