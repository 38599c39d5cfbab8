//! The whole pipeline (`iosan_trace::analyze`) over arbitrary bytes.
#![no_main]

use iosan_trace::{analyze, AnalyzeOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = AnalyzeOptions { max_line_len: 4096, ..AnalyzeOptions::default() };
    let report = analyze(data, "fuzz", &opts, &mut ()).expect("a slice always reads");
    assert_eq!(report.summary.bytes, data.len() as u64);
    let _ = report.bugs().count();
});
