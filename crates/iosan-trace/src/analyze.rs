//! The whole pipeline: bytes → lines → events → replay → report.

use std::io::BufRead;

use crate::parse::event::parse_event;
use crate::parse::line::{classify_line, EventLine, LineKind};
use crate::parse::reader::{LineReader, ReadError, DEFAULT_MAX_LINE_LEN};
use crate::record::{ExecContext, Origin, Record, RecordSink};
use crate::replay::{Analyzer, Options};
use crate::report::Report;

/// Options for [`analyze`].
#[derive(Clone, Debug)]
pub struct AnalyzeOptions {
    /// Replay options.
    pub replay: Options,
    /// Longest line accepted; longer lines are skipped and counted.
    pub max_line_len: usize,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        Self { replay: Options::default(), max_line_len: DEFAULT_MAX_LINE_LEN }
    }
}

/// A fatal error: the input could not be read at all any more.
#[derive(Debug, thiserror::Error)]
#[error("{input}: {source}")]
pub struct AnalyzeError {
    /// Input name.
    pub input: String,
    /// What failed.
    #[source]
    pub source: ReadError,
}

/// Receives progress: bytes read so far.
pub trait Progress {
    /// Called every few MB.
    fn advance(&mut self, bytes: u64);
}

impl Progress for () {
    fn advance(&mut self, _: u64) {}
}

fn is_stack_line(b: &[u8]) -> bool {
    let t = b.iter().position(|c| *c != b' ' && *c != b'\t').and_then(|i| b.get(i..)).unwrap_or(&[]);
    t.starts_with(b"=> ") || t == b"=>" || t.starts_with(b"<stack trace>")
}

/// Reads one capture and replays it.
///
/// # Errors
/// Only when reading fails ([`AnalyzeError`]); malformed lines are skipped
/// and counted in the summary with the first line number and byte offset.
pub fn analyze(
    input: impl BufRead,
    name: &str,
    opts: &AnalyzeOptions,
    progress: &mut dyn Progress,
) -> Result<Report, AnalyzeError> {
    let mut reader = LineReader::with_max_line_len(input, opts.max_line_len);
    let mut an = Analyzer::new(opts.replay.clone());
    // Events are processed straight from the read buffer. Once the capture
    // shows stack lines (the stacktrace option), each event is held back one
    // line so that the stack printed after it reaches it.
    let mut stack_mode = false;
    let mut prev: Vec<u8> = Vec::with_capacity(512);
    let mut prev_loc: Option<(u64, u64)> = None;
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut next_progress = 4u64 << 20;
    loop {
        let line = match reader.next_line() {
            None => break,
            Some(Err(e)) if e.is_fatal() => return Err(AnalyzeError { input: name.to_string(), source: e }),
            Some(Err(ReadError::LineTooLong { line, offset, .. })) => {
                an.skipped("line longer than the limit", Origin::line(line, offset));
                continue;
            }
            Some(Err(_)) => continue,
            Some(Ok(line)) => line,
        };
        if line.offset >= next_progress {
            progress.advance(line.offset);
            next_progress = line.offset + (4 << 20);
        }
        let kind = classify_line(line.bytes);
        if matches!(kind, Ok(LineKind::Stack(_))) || (kind.is_err() && is_stack_line(line.bytes)) {
            if !stack_mode {
                stack_mode = true;
                an.skipped(
                    "stack line of an event read before stack lines appeared",
                    Origin::line(line.number, line.offset),
                );
            } else if prev_loc.is_some() && stack.len() < 128 {
                stack.push(line.bytes.to_vec());
            }
            continue;
        }
        if let Some((l, o)) = prev_loc.take() {
            process(&mut an, &prev, l, o, &stack);
            stack.clear();
        }
        match kind {
            Ok(LineKind::Event(ev)) => {
                if stack_mode {
                    prev.clear();
                    prev.extend_from_slice(line.bytes);
                    prev_loc = Some((line.number, line.offset));
                } else {
                    process_event(&mut an, &ev, line.number, line.offset, &[]);
                }
            }
            Ok(LineKind::Header(h)) => header(&mut an, h),
            Ok(LineKind::Lost { cpu, events }) => an.lost(cpu, events, Origin::line(line.number, line.offset)),
            Ok(LineKind::Stack(_)) => {}
            Ok(LineKind::CpusHeader(_) | LineKind::CpuEmpty(_) | LineKind::Blank) => {}
            Err(e) => {
                an.skipped(&format!("malformed line ({})", e.kind.field()), Origin::line(line.number, line.offset))
            }
        }
    }
    if let Some((l, o)) = prev_loc.take() {
        process(&mut an, &prev, l, o, &stack);
    }
    let lines = reader.lines_read();
    let bytes = reader.bytes_read();
    let mut report = an.finish();
    report.summary.lines = lines;
    report.summary.bytes = bytes;
    report.summary.input = name.to_string();
    progress.advance(bytes);
    Ok(report)
}

fn process(an: &mut dyn RecordSink, bytes: &[u8], line: u64, offset: u64, stack: &[Vec<u8>]) {
    if let Ok(LineKind::Event(ev)) = classify_line(bytes) {
        let frames: Vec<&[u8]> = stack.iter().map(|s| s.as_slice()).collect();
        process_event(an, &ev, line, offset, &frames);
    }
}

fn process_event(sink: &mut dyn RecordSink, ev: &EventLine, line: u64, offset: u64, stack: &[&[u8]]) {
    let origin = Origin::line(line, offset);
    match parse_event(ev.name, ev.body) {
        Ok(Some(event)) => {
            let rec = Record {
                ts_ns: ev.ts_ns,
                cpu: ev.cpu,
                pid: ev.pid,
                comm: ev.comm,
                context: ExecContext::from_ftrace_flags(ev.flags),
                event: &event,
                stack,
                origin,
            };
            sink.record(&rec);
        }
        Ok(None) => sink.unknown_event(ev.name),
        Err(e) => sink.skipped(&format!("bad field: event `{}` field `{}`: {}", e.event, e.field, e.problem), origin),
    }
}

/// A header line (`# ...`): the overwritten-entries count and iosan's metadata.
fn header(sink: &mut dyn RecordSink, text: &[u8]) {
    let t = String::from_utf8_lossy(text);
    let t = t.trim_start_matches('#').trim();
    if let Some(rest) = t.strip_prefix("entries-in-buffer/entries-written:") {
        let nums: Vec<u64> = rest.split(|c: char| !c.is_ascii_digit()).filter_map(|x| x.parse().ok()).collect();
        if let (Some(&a), Some(&b)) = (nums.first(), nums.get(1)) {
            if a < b {
                sink.overwritten(b - a);
            }
        }
    } else if let Some(rest) = t.strip_prefix("iosan-meta:") {
        if let Some((k, v)) = rest.trim().split_once('=') {
            sink.meta(k.trim(), v.trim());
        }
    }
}
