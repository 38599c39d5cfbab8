//! Merging per-CPU parts of one capture into one time-ordered stream.
//!
//! Each input is already in time order (ftrace writes each CPU's buffer in
//! order). The merge is a k-way merge on the event timestamp; lines that are
//! not events (headers, lost-event markers) go out as they are met, and stack
//! lines stay with the event before them.

use std::io::{self, BufRead, Read};

use crate::parse::line::{classify_line, LineKind};
use crate::parse::reader::{LineReader, ReadError};

struct Part {
    reader: LineReader<Box<dyn BufRead + Send>>,
    /// The next event line (with its stack lines), waiting to be merged.
    pending: Option<(u64, Vec<u8>)>,
    done: bool,
}

/// A reader that yields the lines of several captures merged by timestamp.
pub struct MergedCaptures {
    parts: Vec<Part>,
    out: Vec<u8>,
    pos: usize,
}

impl MergedCaptures {
    /// Merges `inputs`, each a time-ordered capture (or per-CPU part of one).
    #[must_use]
    pub fn new(inputs: Vec<Box<dyn BufRead + Send>>, max_line_len: usize) -> Self {
        let parts = inputs
            .into_iter()
            .map(|r| Part { reader: LineReader::with_max_line_len(r, max_line_len), pending: None, done: false })
            .collect();
        Self { parts, out: Vec::new(), pos: 0 }
    }

    /// Reads ahead in `part` until it holds one event (or ends); other lines
    /// are passed straight to `out`.
    fn fill(part: &mut Part, out: &mut Vec<u8>) -> io::Result<()> {
        while part.pending.is_none() && !part.done {
            match part.reader.next_line() {
                None => part.done = true,
                Some(Err(ReadError::Io { source, .. })) => return Err(source),
                // An over-long line is skipped by the analysis reader too; keep a marker so it is counted.
                Some(Err(ReadError::LineTooLong { .. })) => {
                    out.extend_from_slice(b"# iosan: over-long line dropped while merging\n")
                }
                Some(Ok(line)) => match classify_line(line.bytes) {
                    Ok(LineKind::Event(ev)) => {
                        let mut v = line.bytes.to_vec();
                        v.push(b'\n');
                        part.pending = Some((ev.ts_ns, v));
                    }
                    _ => {
                        out.extend_from_slice(line.bytes);
                        out.push(b'\n');
                    }
                },
            }
        }
        Ok(())
    }

    /// Emits the earliest pending event (with any stack lines after it).
    fn step(&mut self) -> io::Result<bool> {
        for p in &mut self.parts {
            Self::fill(p, &mut self.out)?;
        }
        let next = self.parts.iter().enumerate().filter_map(|(i, p)| p.pending.as_ref().map(|(ts, _)| (*ts, i))).min();
        let Some((_, i)) = next else { return Ok(!self.out.is_empty()) };
        let Some(part) = self.parts.get_mut(i) else { return Ok(false) };
        if let Some((_, line)) = part.pending.take() {
            self.out.extend_from_slice(&line);
        }
        Ok(true)
    }
}

impl Read for MergedCaptures {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.out.len() {
            self.out.clear();
            self.pos = 0;
            if !self.step()? {
                return Ok(0);
            }
        }
        let avail = self.out.get(self.pos..).unwrap_or(&[]);
        let n = avail.len().min(buf.len());
        buf.get_mut(..n).unwrap_or(&mut []).copy_from_slice(avail.get(..n).unwrap_or(&[]));
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(s: &'static str) -> Box<dyn BufRead + Send> {
        Box::new(io::Cursor::new(s.as_bytes()))
    }

    #[test]
    fn merges_by_timestamp_keeping_headers_and_stacks() {
        let a = "# tracer: nop\n  a-1 [000] ..... 1.000000: x: 1\n  a-1 [000] ..... 3.000000: x: 3\n => f+0x1/0x2\n";
        let b = "CPU:1 [LOST 2 EVENTS]\n  b-2 [001] ..... 2.000000: x: 2\n  b-2 [001] ..... 4.000000: x: 4\n";
        let mut m = MergedCaptures::new(vec![boxed(a), boxed(b)], 1 << 20);
        let mut s = String::new();
        m.read_to_string(&mut s).unwrap();
        let events: Vec<&str> =
            s.lines().filter(|l| l.contains(": x: ")).map(|l| l.rsplit(' ').next().unwrap()).collect();
        assert_eq!(events, ["1", "2", "3", "4"]);
        assert!(s.contains("# tracer: nop") && s.contains("[LOST 2 EVENTS]"));
        // The stack line follows its event.
        let i3 = s.find("3.000000").unwrap();
        let istack = s.find("=> f").unwrap();
        let i4 = s.find("4.000000").unwrap();
        assert!(i3 < istack && istack < i4);
    }
}
