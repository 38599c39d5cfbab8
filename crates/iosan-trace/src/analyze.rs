//! The whole pipeline: a source's records → replay → report.

use std::io::{BufRead, Cursor, Read};

use crate::merge::merge_into;
use crate::pagesize::{self, LOOKAHEAD_BYTES};
use crate::parse::reader::DEFAULT_MAX_LINE_LEN;
use crate::replay::{Analyzer, Options};
use crate::report::Report;
use crate::source::text::TextSource;
pub use crate::source::Progress;
use crate::source::{Position, Source, SourceError};

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
    let mut head = Vec::new();
    let mut failed = None;
    while head.len() < LOOKAHEAD_BYTES {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        if buf.is_empty() {
            break;
        }
        let n = buf.len().min(LOOKAHEAD_BYTES - head.len());
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        input.consume(n);
    }
    let mut opts = opts.clone();
    if failed.is_none() {
        opts.replay.events_page_size = pagesize::scan(&head).decided();
    }
    // A read error in the look-ahead surfaces where the replay reaches it.
    let input = Cursor::new(head).chain(FailOnce(failed)).chain(input);
    analyze_source(&mut TextSource::new(input, opts.max_line_len), name, &opts, progress)
}

/// Yields its error once, then nothing: a failed read of the look-ahead,
/// replayed at its place in the input.
struct FailOnce(Option<std::io::Error>);

impl Read for FailOnce {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        self.0.take().map_or(Ok(0), Err)
    }
}

impl BufRead for FailOnce {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        match self.0.take() {
            Some(e) => Err(e),
            None => Ok(&[]),
        }
    }

    fn consume(&mut self, _: usize) {}
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

fn finish(an: Analyzer, read: Position, name: &str) -> Report {
    let mut report = an.finish();
    report.summary.lines = read.lines;
    report.summary.bytes = read.bytes;
    report.summary.input = name.to_string();
    report
}
