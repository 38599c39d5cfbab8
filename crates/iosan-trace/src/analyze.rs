//! The whole pipeline: a source's records → replay → report, or → a
//! [`FindingSink`] as findings are decided ([`analyze_streaming`]).
//!
//! Streaming lookahead: a finding reaches the sink right after the record
//! that decides it has been replayed. Most are decided at their own event;
//! an unattributed unmap's findings wait at most
//! [`crate::replay::LOOKAHEAD_NS`] (100 ms) of trace time or about
//! [`crate::replay::LOOKAHEAD_EVENTS`] events; a lost-event warning waits
//! for the first event after the loss on its CPU; `mapped-at-end` comes at
//! the end. The text source adds one line when the capture has stack lines
//! (an event waits for the stack printed after it).

use std::io::{BufRead, Cursor, Read};

use crate::merge::merge_into;
use crate::pagesize::{self, LOOKAHEAD_BYTES};
use crate::parse::reader::DEFAULT_MAX_LINE_LEN;
use crate::record::{Origin, Record, RecordSink};
use crate::replay::{Analyzer, Options};
use crate::report::{FindingSink, Report, Summary};
use crate::source::text::TextSource;
pub use crate::source::Progress;
use crate::source::{read_ahead, FailOnce, Position, Source, SourceError};

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
    pub source: SourceError,
}

/// Reads one capture and replays it. The input is ftrace or `trace-cmd
/// report` text (decompress it first: [`crate::input`]).
///
/// # Errors
/// Only when reading fails ([`AnalyzeError`]); malformed lines are skipped
/// and counted in the summary with the first line number and byte offset.
///
/// The first [`LOOKAHEAD_BYTES`] are read ahead to see the CPU page size in
/// the events ([`crate::pagesize`]), then replayed like the rest.
pub fn analyze(
    mut input: impl BufRead,
    name: &str,
    opts: &AnalyzeOptions,
    progress: &mut dyn Progress,
) -> Result<Report, AnalyzeError> {
    // The look-ahead, chunk by chunk: small inputs cost little, large ones
    // at most about twice LOOKAHEAD_BYTES of heap.
    let (head, failed) = read_ahead(&mut input, LOOKAHEAD_BYTES);
    let mut opts = opts.clone();
    if failed.is_none() {
        opts.replay.events_page_size = pagesize::scan(&head).decided();
    }
    // A read error in the look-ahead surfaces where the replay reaches it.
    let input = Cursor::new(head).chain(FailOnce(failed)).chain(input);
    analyze_source(&mut TextSource::new(input, opts.max_line_len), name, &opts, progress)
}

/// Replays the records of any [`Source`].
///
/// # Errors
/// When the source cannot be read any further ([`AnalyzeError`]).
pub fn analyze_source(
    source: &mut dyn Source,
    name: &str,
    opts: &AnalyzeOptions,
    progress: &mut dyn Progress,
) -> Result<Report, AnalyzeError> {
    let mut an = Analyzer::new(opts.replay.clone());
    source.run(&mut an, progress).map_err(|e| AnalyzeError { input: name.to_string(), source: e })?;
    Ok(finish(an, source.position(), name))
}

/// Replays several time-ordered captures (per-CPU parts of one capture)
/// as one, merged by record timestamp. Origins in the report are those of
/// each part's own text.
///
/// # Errors
/// When a part cannot be read any further ([`AnalyzeError`] names it).
pub fn analyze_merged(
    inputs: Vec<(String, Box<dyn BufRead + Send>)>,
    name: &str,
    opts: &AnalyzeOptions,
) -> Result<Report, AnalyzeError> {
    let (names, mut parts): (Vec<String>, Vec<TextSource<Box<dyn BufRead + Send>>>) =
        inputs.into_iter().map(|(n, r)| (n, TextSource::new(r, opts.max_line_len))).unzip();
    let mut an = Analyzer::new(opts.replay.clone());
    let mut sources: Vec<&mut dyn Source> = parts.iter_mut().map(|p| p as &mut dyn Source).collect();
    merge_into(&mut sources, &mut an).map_err(|(i, e)| AnalyzeError {
        input: names.get(i).cloned().unwrap_or_else(|| name.to_string()),
        source: e,
    })?;
    let total = parts.iter().fold(Position::default(), |t, p| {
        let p = p.position();
        Position { lines: t.lines.saturating_add(p.lines), bytes: t.bytes.saturating_add(p.bytes) }
    });
    Ok(finish(an, total, name))
}

/// Replays several time-ordered captures of any format as one, merged
/// by record timestamp (per-CPU parts, or several instances recorded
/// apart).
///
/// # Errors
/// When a part cannot be read any further ([`AnalyzeError`] names it).
pub fn analyze_sources(
    mut inputs: Vec<(String, Box<dyn Source + Send>)>,
    name: &str,
    opts: &AnalyzeOptions,
) -> Result<Report, AnalyzeError> {
    let mut an = Analyzer::new(opts.replay.clone());
    let mut sources: Vec<&mut dyn Source> = inputs.iter_mut().map(|(_, p)| p.as_mut() as &mut dyn Source).collect();
    merge_into(&mut sources, &mut an).map_err(|(i, e)| AnalyzeError {
        input: inputs.get(i).map(|(n, _)| n.clone()).unwrap_or_else(|| name.to_string()),
        source: e,
    })?;
    let total = inputs.iter().fold(Position::default(), |t, (_, p)| {
        let p = p.position();
        Position { lines: t.lines.saturating_add(p.lines), bytes: t.bytes.saturating_add(p.bytes) }
    });
    Ok(finish(an, total, name))
}

/// Reads one capture and hands each finding to `sink` as soon as it is
/// decided (see the module docs for how long that can take); returns the
/// summary at the end of the input. Findings come in decision order, not
/// sorted; later frees of a finding's pages come as
/// [`FindingSink::follow_up`]s.
///
/// # Errors
/// Only when reading fails ([`AnalyzeError`]); the findings decided before
/// have reached `sink`.
pub fn analyze_streaming(
    input: impl BufRead,
    name: &str,
    opts: &AnalyzeOptions,
    progress: &mut dyn Progress,
    sink: &mut dyn FindingSink,
) -> Result<Summary, AnalyzeError> {
    analyze_source_streaming(&mut TextSource::new(input, opts.max_line_len).live(), name, opts, progress, sink)
}

/// [`analyze_streaming`] for any [`Source`] (trace.dat, perf.data, text).
///
/// # Errors
/// When the source cannot be read any further ([`AnalyzeError`]); the
/// findings decided before have reached `sink`.
pub fn analyze_source_streaming(
    source: &mut dyn Source,
    name: &str,
    opts: &AnalyzeOptions,
    progress: &mut dyn Progress,
    sink: &mut dyn FindingSink,
) -> Result<Summary, AnalyzeError> {
    let mut st = Streaming { an: Analyzer::streaming(opts.replay.clone()), sink };
    source.run(&mut st, progress).map_err(|e| AnalyzeError { input: name.to_string(), source: e })?;
    let Streaming { an, sink } = st;
    let mut summary = an.finish_streaming(sink);
    let read = source.position();
    summary.lines = read.lines;
    summary.bytes = read.bytes;
    summary.input = name.to_string();
    Ok(summary)
}

/// A streaming analyzer as a [`RecordSink`]: drains decided findings into
/// `sink` after every item it is given.
pub struct Streaming<'a> {
    /// The replay (made by [`Analyzer::streaming`]).
    pub an: Analyzer,
    /// Where findings go.
    pub sink: &'a mut dyn FindingSink,
}

impl RecordSink for Streaming<'_> {
    fn record(&mut self, rec: &Record<'_>) {
        self.an.record(rec);
        self.an.drain_findings(self.sink);
    }
    fn lost(&mut self, cpu: Option<u32>, events: Option<u64>, origin: Origin) {
        self.an.lost(cpu, events, origin);
    }
    fn skipped(&mut self, reason: &str, origin: Origin) {
        self.an.skipped(reason, origin);
    }
    fn skipped_many(&mut self, reason: &str, origin: Origin, count: u64) {
        self.an.skipped_many(reason, origin, count);
    }
    fn unknown_event(&mut self, name: &[u8]) {
        self.an.unknown_event(name);
    }
    fn meta(&mut self, key: &str, value: &str) {
        self.an.meta(key, value);
    }
    fn overwritten(&mut self, events: u64) {
        self.an.overwritten(events);
    }
}

fn finish(an: Analyzer, read: Position, name: &str) -> Report {
    let mut report = an.finish();
    report.summary.lines = read.lines;
    report.summary.bytes = read.bytes;
    report.summary.input = name.to_string();
    report
}
