//! Classifies one line of ftrace text or `trace-cmd report` text.
//!
//! Accepted event line layouts (leading padding is ignored):
//!
//! ```text
//!           <idle>-0       [000] d..2.     0.008000: qi_submit: iec_inv dmar0: 0x4 0x0 0x0 0x0
//!       my-app 2-55        [001] (   55) ....   12.000001: map: IOMMU: ...
//!             init-1     [000]     1.464407: map:                  IOMMU: iova=...
//! ```
//!
//! * `comm` is everything before the last `-<pid>` that precedes the `[cpu]`
//!   column; it may contain spaces, dashes, `/`, `:`, `[` and any byte.
//! * An optional record-tgid column `(  tgid)` (or `(-------)` when unknown)
//!   sits between the pid and the CPU column, as the kernel prints it with
//!   `options/record-tgid`; it is also accepted right after the CPU column.
//! * The irq-info flags column (4 or 5 characters) is optional: `trace-cmd
//!   report` omits it.
//! * Timestamps are seconds with 6 or 9 decimals, converted to nanoseconds.
//! * The event name ends at the first `:` after the timestamp; the body is
//!   the rest of the line after that `:` with leading spaces removed
//!   (`trace-cmd report` pads names to a fixed width).

use super::{num, scan};

/// What a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind<'a> {
    /// A comment/header line (first non-blank byte is `#`); the whole line.
    Header(&'a [u8]),
    /// `CPU:1 [LOST 1234 EVENTS]`, `CPU:1 [LOST EVENTS]` or `[LOST n EVENTS]`:
    /// the ring buffer dropped events on `cpu` before the next event.
    Lost {
        /// The CPU, when the line names it.
        cpu: Option<u32>,
        /// How many events were lost, when the kernel knew (`None` for
        /// `[LOST EVENTS]`).
        events: Option<u64>,
    },
    /// A stack-trace line: ` => func+0x1/0x2` (trimmed), or the
    /// `<stack trace>` / `<user stack trace>` marker (from the marker on).
    Stack(&'a [u8]),
    /// The first line of `trace-cmd report`: `cpus=2`.
    CpusHeader(u32),
    /// `CPU 1 is empty` (printed by `trace-cmd report`).
    CpuEmpty(u32),
    /// An event.
    Event(EventLine<'a>),
    /// An empty or all-blank line.
    Blank,
}

/// The common columns of an event line and its unparsed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLine<'a> {
    /// Task name, exactly as printed (may be `<...>`, contain spaces, or be
    /// invalid UTF-8).
    pub comm: &'a [u8],
    /// Thread id.
    pub pid: u32,
    /// Thread-group id from the record-tgid column; `None` when the column
    /// is absent or printed as `(-------)`.
    pub tgid: Option<u32>,
    /// CPU the event was recorded on.
    pub cpu: u32,
    /// The irq-info flags column (`d..2.`), absent in `trace-cmd report`.
    pub flags: Option<&'a [u8]>,
    /// Timestamp in nanoseconds (`10.889499` is `10_889_499_000`).
    pub ts_ns: u64,
    /// Event name (`map`, `mm_page_free`, a kprobe event's name ...).
    pub name: &'a [u8],
    /// Everything after `name:` and its padding.
    pub body: &'a [u8],
}

/// Which column of an event line is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineErrorKind {
    /// No `-<pid> [<cpu>]` sequence was found.
    MissingTaskPidCpu,
    /// The pid does not fit in 32 bits.
    BadPid,
    /// The CPU number does not fit in 32 bits.
    BadCpu,
    /// The `(tgid)` column is neither digits nor dashes.
    BadTgid,
    /// The flags column is not 4 or 5 characters.
    BadFlags,
    /// The timestamp is not `<secs>.<6 or 9 digits>:`.
    BadTimestamp,
    /// The timestamp does not fit in 64-bit nanoseconds.
    TimestampOverflow,
    /// No `name:` after the timestamp.
    MissingEventName,
    /// A `[LOST ...]` or `cpus=` line with a bad number.
    BadCount,
}

impl LineErrorKind {
    /// The column (field) name.
    #[must_use]
    pub fn field(self) -> &'static str {
        match self {
            LineErrorKind::MissingTaskPidCpu => "TASK-PID [CPU]",
            LineErrorKind::BadPid => "pid",
            LineErrorKind::BadCpu => "cpu",
            LineErrorKind::BadTgid => "tgid",
            LineErrorKind::BadFlags => "flags",
            LineErrorKind::BadTimestamp | LineErrorKind::TimestampOverflow => "timestamp",
            LineErrorKind::MissingEventName => "event name",
            LineErrorKind::BadCount => "count",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            LineErrorKind::MissingTaskPidCpu => "not found",
            LineErrorKind::BadPid | LineErrorKind::BadCpu => "number out of range",
            LineErrorKind::BadTgid => "expected digits or dashes in parentheses",
            LineErrorKind::BadFlags => "expected 4 or 5 characters",
            LineErrorKind::BadTimestamp => "expected seconds with 6 or 9 decimals followed by ':'",
            LineErrorKind::TimestampOverflow => "does not fit in 64-bit nanoseconds",
            LineErrorKind::MissingEventName => "expected `name:` after the timestamp",
            LineErrorKind::BadCount => "bad number",
        }
    }
}

/// A malformed line: which column, and at which byte of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed line: {} at column {column}: {}", kind.field(), kind.reason())]
pub struct LineError {
    /// What is wrong.
    pub kind: LineErrorKind,
    /// 0-based byte index in the line where the bad column starts.
    pub column: usize,
}

#[inline]
fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Index of the first non-blank byte at or after `i`, or `s.len()`.
#[inline]
fn skip_blanks(s: &[u8], mut i: usize) -> usize {
    while let Some(&b) = s.get(i) {
        if !is_blank(b) {
            break;
        }
        i += 1;
    }
    i
}

/// Index of the first blank byte at or after `i`, or `s.len()`.
#[inline]
fn skip_token(s: &[u8], mut i: usize) -> usize {
    while let Some(&b) = s.get(i) {
        if is_blank(b) {
            break;
        }
        i += 1;
    }
    i
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let Some((&b, rest)) = s.split_last() {
        if !is_blank(b) {
            break;
        }
        s = rest;
    }
    s
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let Some((&b, rest)) = s.split_first() {
        if !is_blank(b) {
            break;
        }
        s = rest;
    }
    s
}

fn trim(s: &[u8]) -> &[u8] {
    trim_end(trim_start(s))
}

/// Classifies one line (without its terminator).
///
/// # Errors
///
/// [`LineError`] when the line looks like an event line but a column is
/// malformed, or when it matches no known kind.
pub fn classify_line(line: &[u8]) -> Result<LineKind<'_>, LineError> {
    if let Some(ev) = fast_event_line(line) {
        return Ok(LineKind::Event(ev));
    }
    let start = skip_blanks(line, 0);
    let rest = line.get(start..).unwrap_or_default();
    match rest.first() {
        None => return Ok(LineKind::Blank),
        Some(b'#') => return Ok(LineKind::Header(line)),
        Some(b'=') if rest.starts_with(b"=>") => return Ok(LineKind::Stack(trim_end(rest))),
        Some(b'<') if is_stack_marker(rest) => return Ok(LineKind::Stack(trim_end(rest))),
        Some(b'C' | b'c' | b'[') => {
            if let Some(kind) = special_line(trim_end(rest), start)? {
                return Ok(kind);
            }
        }
        _ => {}
    }
    parse_event_line(line, start).map(|k| match k {
        Parsed::Event(e) => LineKind::Event(e),
        Parsed::Stack(s) => LineKind::Stack(s),
    })
}

/// The event lines the kernel and `trace-cmd report` print, in one
/// forward pass: the general path's first `[` candidate when it succeeds
/// without a record-tgid column. `None` whenever anything differs (a special
/// first byte, a tgid, a malformed or unusual column); the general path then
/// decides, so this only has to be right when it returns `Some`.
#[inline]
fn fast_event_line(line: &[u8]) -> Option<EventLine<'_>> {
    let start = scan::skip_spaces(line);
    let rest = line.get(start..)?;
    match rest.first()? {
        b'#' | b'\t' => return None,
        b'=' if rest.starts_with(b"=>") => return None,
        b'<' if is_stack_marker(rest) => return None,
        b'C' | b'c' | b'[' if !matches!(special_line(trim_end(rest), start), Ok(None)) => return None,
        _ => {}
    }
    // TASK-PID before the first `[`.
    let (head, after) = rest.split_at_checked(scan::find_byte(rest, b'['))?;
    let head = trim_end(head);
    let digits = head.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let (comm_dash, pid) = head.split_at_checked(head.len().checked_sub(digits)?)?;
    let comm = comm_dash.strip_suffix(b"-")?;
    let pid = u32::try_from(small_dec(pid)).ok()?;

    // [cpu]
    let after = after.get(1..)?;
    let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let (cpu, after) = after.split_at_checked(digits)?;
    let cpu = u32::try_from(small_dec(cpu)).ok()?;
    let after = trim_start(after.strip_prefix(b"]")?);
    if after.first() == Some(&b'(') {
        return None;
    }

    // flags, timestamp
    let (tok, after) = after.split_at_checked(scan::find_blank(after))?;
    let (flags, ts, after) = if tok.last() == Some(&b':') && tok.first().is_some_and(u8::is_ascii_digit) {
        (None, tok, after)
    } else {
        if !(4..=5).contains(&tok.len()) {
            return None;
        }
        let after = trim_start(after.get(scan::skip_spaces(after)..)?);
        let (ts, after) = after.split_at_checked(scan::find_blank(after))?;
        (Some(tok), ts, after)
    };
    let ts_ns = fast_timestamp(ts)?;

    // name: body
    let after = trim_start(after);
    let colon = scan::find_byte(after, b':');
    let (name, body) = after.split_at_checked(colon)?;
    if name.is_empty()
        || (name.first() == Some(&b'<') && is_stack_marker(after))
        || scan::find_blank(name) != name.len()
    {
        return None;
    }
    let body = trim_start(body.get(1..)?);
    Some(EventLine { comm, pid, tgid: None, cpu, flags, ts_ns, name, body })
}

/// Up to 19 decimal digits, already checked to be digits.
#[inline]
fn small_dec(s: &[u8]) -> u64 {
    s.iter().fold(0u64, |v, &b| v.wrapping_mul(10).wrapping_add(u64::from(b.wrapping_sub(b'0'))))
}

/// [`parse_timestamp`] for at most 10 digits of seconds (which cannot
/// overflow); `None` for anything else.
#[inline]
fn fast_timestamp(tok: &[u8]) -> Option<u64> {
    let mut it = tok.iter();
    let mut secs = 0u64;
    let mut n = 0;
    loop {
        let b = *it.next()?;
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            if b != b'.' || n == 0 {
                return None;
            }
            break;
        }
        n += 1;
        if n > 10 {
            return None;
        }
        secs = secs * 10 + u64::from(d);
    }
    let mut frac = 0u64;
    let mut n = 0;
    loop {
        let b = *it.next()?;
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            if b != b':' || it.next().is_some() {
                return None;
            }
            break;
        }
        n += 1;
        if n > 9 {
            return None;
        }
        frac = frac * 10 + u64::from(d);
    }
    let scale = match n {
        6 => 1_000,
        9 => 1,
        _ => return None,
    };
    Some(secs * 1_000_000_000 + frac * scale)
}

fn is_stack_marker(s: &[u8]) -> bool {
    s.starts_with(b"<stack trace>") || s.starts_with(b"<user stack trace>")
}

/// `CPU:N [LOST M EVENTS]`, `CPU:N [LOST EVENTS]`, `[LOST M EVENTS]`,
/// `cpus=N`, `CPU N is empty`. `None` when the line is none of these (it
/// may still be an event line whose task name starts like one).
fn special_line(s: &[u8], column: usize) -> Result<Option<LineKind<'_>>, LineError> {
    let bad = |_| LineError { kind: LineErrorKind::BadCount, column };
    if let Some(n) = s.strip_prefix(b"cpus=") {
        if !n.is_empty() && n.iter().all(u8::is_ascii_digit) {
            return num::dec_u32(n).map(|n| Some(LineKind::CpusHeader(n))).map_err(bad);
        }
        return Ok(None);
    }
    if let Some(r) = s.strip_prefix(b"CPU ") {
        if let Some(n) = r.strip_suffix(b" is empty") {
            if !n.is_empty() && n.iter().all(u8::is_ascii_digit) {
                return num::dec_u32(n).map(|n| Some(LineKind::CpuEmpty(n))).map_err(bad);
            }
        }
        return Ok(None);
    }
    let (cpu, lost) = if let Some(r) = s.strip_prefix(b"CPU:") {
        let digits = r.iter().take_while(|b| b.is_ascii_digit()).count();
        let (n, tail) = r.split_at(digits.min(r.len()));
        let tail = trim_start(tail);
        if n.is_empty() || !tail.starts_with(b"[LOST") {
            return Ok(None);
        }
        (Some(n), tail)
    } else {
        (None, s)
    };
    let Some(inner) = lost.strip_prefix(b"[LOST").and_then(|r| r.strip_suffix(b"EVENTS]")) else {
        return Ok(None);
    };
    let count = trim(inner);
    if !count.iter().all(u8::is_ascii_digit) || (count.is_empty() && !inner.iter().all(|&b| is_blank(b))) {
        return Ok(None);
    }
    let cpu = match cpu {
        Some(n) => Some(num::dec_u32(n).map_err(bad)?),
        None => None,
    };
    let events = if count.is_empty() { None } else { Some(num::dec_u64(count).map_err(bad)?) };
    Ok(Some(LineKind::Lost { cpu, events }))
}

enum Parsed<'a> {
    Event(EventLine<'a>),
    Stack(&'a [u8]),
}

/// Tries every `[` in the line as the CPU column, from the left; the first
/// one preceded by `-<digits><blanks>` and followed by a well-formed rest
/// wins. Normally the first `[` is the right one; later ones only matter
/// when the task name itself contains `[`.
fn parse_event_line(line: &[u8], start: usize) -> Result<Parsed<'_>, LineError> {
    let mut first_err: Option<LineError> = None;
    let hay = line.get(start..).unwrap_or_default();
    for rel in memchr::memchr_iter(b'[', hay) {
        let open = start + rel;
        let Some(tp) = task_pid_before(line, start, open) else {
            continue;
        };
        let res = match (tp.pid, tp.tgid) {
            (Ok(pid), None) => parse_after_bracket(line, open).map(|r| (pid, r)),
            (Ok(pid), Some(Ok(tgid))) => parse_after_bracket(line, open).map(|mut r| {
                if let After::Event(ev) = &mut r {
                    ev.tgid = ev.tgid.or(tgid);
                }
                (pid, r)
            }),
            (Err(e), _) | (_, Some(Err(e))) => Err(e),
        };
        match res {
            Ok((pid, After::Event(mut ev))) => {
                ev.comm = line.get(start..tp.comm_end).unwrap_or_default();
                ev.pid = pid;
                return Ok(Parsed::Event(ev));
            }
            Ok((_, After::Stack(s))) => return Ok(Parsed::Stack(s)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(LineError { kind: LineErrorKind::MissingTaskPidCpu, column: start }))
}

/// What precedes a `[cpu]` column.
struct TaskPid {
    /// End of the task name (index of the `-`).
    comm_end: usize,
    pid: Result<u32, LineError>,
    /// The record-tgid column when it precedes the CPU column (the kernel's
    /// layout: `comm-pid (tgid) [cpu]`).
    tgid: Option<Result<Option<u32>, LineError>>,
}

/// For a `[` at `open`, checks that `-<digits>`, an optional `(tgid)` and
/// optional blanks precede it.
fn task_pid_before(line: &[u8], start: usize, open: usize) -> Option<TaskPid> {
    let mut i = open;
    while i > start && line.get(i - 1).is_some_and(|&b| is_blank(b)) {
        i -= 1;
    }
    let mut tgid = None;
    if i > start && line.get(i - 1) == Some(&b')') {
        let close = i - 1;
        let open_t = memchr::memrchr(b'(', line.get(start..close)?)? + start;
        tgid = Some(parse_tgid(line.get(open_t + 1..close)?, open_t));
        i = open_t;
        while i > start && line.get(i - 1).is_some_and(|&b| is_blank(b)) {
            i -= 1;
        }
    }
    let pid_end = i;
    while i > start && line.get(i - 1).is_some_and(u8::is_ascii_digit) {
        i -= 1;
    }
    if i == pid_end || i <= start || line.get(i - 1) != Some(&b'-') {
        return None;
    }
    let digits = line.get(i..pid_end)?;
    let pid = num::dec_u32(digits).map_err(|_| LineError { kind: LineErrorKind::BadPid, column: i });
    Some(TaskPid { comm_end: i - 1, pid, tgid })
}

/// The inside of `(  1977)` or `(-------)`.
fn parse_tgid(inner: &[u8], column: usize) -> Result<Option<u32>, LineError> {
    let inner = trim(inner);
    if !inner.is_empty() && inner.iter().all(|&b| b == b'-') {
        return Ok(None);
    }
    num::dec_u32(inner).map(Some).map_err(|_| LineError { kind: LineErrorKind::BadTgid, column })
}

enum After<'a> {
    Event(EventLine<'a>),
    Stack(&'a [u8]),
}

fn parse_after_bracket(line: &[u8], open: usize) -> Result<After<'_>, LineError> {
    let err = |kind, column| LineError { kind, column };
    // [cpu]
    let mut i = open + 1;
    let cpu_start = i;
    while line.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if i == cpu_start || line.get(i) != Some(&b']') {
        return Err(err(LineErrorKind::MissingTaskPidCpu, open));
    }
    let cpu =
        num::dec_u32(line.get(cpu_start..i).unwrap_or_default()).map_err(|_| err(LineErrorKind::BadCpu, cpu_start))?;
    i = skip_blanks(line, i + 1);

    // optional (tgid)
    let mut tgid = None;
    if line.get(i) == Some(&b'(') {
        let open_t = i;
        let close = line
            .get(i..)
            .and_then(|r| memchr::memchr(b')', r))
            .map(|p| p + i)
            .ok_or(err(LineErrorKind::BadTgid, open_t))?;
        tgid = parse_tgid(line.get(open_t + 1..close).unwrap_or_default(), open_t)?;
        i = skip_blanks(line, close + 1);
    }

    // flags, then timestamp
    let tok_start = i;
    let tok_end = skip_token(line, i);
    let tok = line.get(tok_start..tok_end).unwrap_or_default();
    let (flags, ts_tok, ts_start) = if tok.last() == Some(&b':') && tok.first().is_some_and(u8::is_ascii_digit) {
        (None, tok, tok_start)
    } else {
        if !(4..=5).contains(&tok.len()) {
            return Err(err(LineErrorKind::BadFlags, tok_start));
        }
        let ts_start = skip_blanks(line, tok_end);
        let ts_end = skip_token(line, ts_start);
        (Some(tok), line.get(ts_start..ts_end).unwrap_or_default(), ts_start)
    };
    let ts_ns = parse_timestamp(ts_tok).map_err(|kind| err(kind, ts_start))?;
    i = skip_blanks(line, ts_start + ts_tok.len());

    let rest = line.get(i..).unwrap_or_default();
    if rest.first() == Some(&b'<') && is_stack_marker(rest) {
        return Ok(After::Stack(trim_end(rest)));
    }
    let colon = memchr::memchr(b':', rest).ok_or(err(LineErrorKind::MissingEventName, i))?;
    let name = rest.get(..colon).unwrap_or_default();
    if name.is_empty() || name.iter().any(|&b| is_blank(b)) {
        return Err(err(LineErrorKind::MissingEventName, i));
    }
    let after = rest.get(colon + 1..).unwrap_or_default();
    let body = after.get(skip_blanks(after, 0)..).unwrap_or_default();
    Ok(After::Event(EventLine { comm: &[], pid: 0, tgid, cpu, flags, ts_ns, name, body }))
}

/// Parses `<secs>.<frac>:` with 6 or 9 fraction digits into nanoseconds.
fn parse_timestamp(tok: &[u8]) -> Result<u64, LineErrorKind> {
    let tok = tok.strip_suffix(b":").ok_or(LineErrorKind::BadTimestamp)?;
    let dot = memchr::memchr(b'.', tok).ok_or(LineErrorKind::BadTimestamp)?;
    let secs = tok.get(..dot).unwrap_or_default();
    let frac = tok.get(dot + 1..).unwrap_or_default();
    let scale = match frac.len() {
        6 => 1_000,
        9 => 1,
        _ => return Err(LineErrorKind::BadTimestamp),
    };
    let secs = num::dec_u64(secs).map_err(|e| match e {
        num::NumError::Overflow => LineErrorKind::TimestampOverflow,
        _ => LineErrorKind::BadTimestamp,
    })?;
    let frac = num::dec_u64(frac).map_err(|_| LineErrorKind::BadTimestamp)?;
    secs.checked_mul(1_000_000_000).and_then(|ns| ns.checked_add(frac * scale)).ok_or(LineErrorKind::TimestampOverflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(line: &[u8]) -> EventLine<'_> {
        match classify_line(line) {
            Ok(LineKind::Event(e)) => e,
            other => panic!("not an event: {other:?} for {:?}", line.escape_ascii().to_string()),
        }
    }

    #[test]
    fn ftrace_text_line() {
        let e = ev(b"          <idle>-0       [000] d..2.     0.008000: qi_submit: iec_inv dmar0: 0x4 0x0 0x0 0x0");
        assert_eq!(e.comm, b"<idle>");
        assert_eq!((e.pid, e.cpu, e.tgid), (0, 0, None));
        assert_eq!(e.flags, Some(&b"d..2."[..]));
        assert_eq!(e.ts_ns, 8_000_000);
        assert_eq!(e.name, b"qi_submit");
        assert_eq!(e.body, b"iec_inv dmar0: 0x4 0x0 0x0 0x0");

        let e = ev(b"          insmod-194     [000] .....    10.889499: mm_page_free: page=0000000065c2d467 pfn=0x123589 order=0");
        assert_eq!((e.comm, e.pid, e.cpu, e.ts_ns), (&b"insmod"[..], 194, 0, 10_889_499_000));
        assert_eq!(e.body, b"page=0000000065c2d467 pfn=0x123589 order=0");
    }

    #[test]
    fn trace_cmd_report_line() {
        let e = ev(b"            init-1     [000]     1.464407: map:                  IOMMU: iova=0x0000000000000000 - 0x0000000001000000 paddr=0x0000000000000000 size=16777216");
        assert_eq!((e.comm, e.pid, e.cpu, e.flags), (&b"init"[..], 1, 0, None));
        assert_eq!(e.ts_ns, 1_464_407_000);
        assert_eq!(e.name, b"map");
        assert!(e.body.starts_with(b"IOMMU: iova="));
        let e = ev(b"            init-1     [000]     5.832153: print:                tracing_mark_write: LAB: phase=setup_done mode=bug");
        assert_eq!(e.name, b"print");
        assert_eq!(e.body, b"tracing_mark_write: LAB: phase=setup_done mode=bug");
        assert_eq!(classify_line(b"cpus=2"), Ok(LineKind::CpusHeader(2)));
        assert_eq!(classify_line(b"CPU 3 is empty"), Ok(LineKind::CpuEmpty(3)));
    }

    #[test]
    fn comm_variants() {
        let e = ev(b" kworker/u8:0-123     [001] d.h1.  6.018976: unmap: x");
        assert_eq!((e.comm, e.pid), (&b"kworker/u8:0"[..], 123));
        let e = ev(b"     my-app 2-55      [001] ....  6.018976: unmap: x");
        assert_eq!((e.comm, e.pid, e.flags), (&b"my-app 2"[..], 55, Some(&b"...."[..])));
        let e = ev(b"           <...>-4242  [001] .....  6.018976: unmap: x");
        assert_eq!((e.comm, e.pid), (&b"<...>"[..], 4242));
        let e = ev(b"  a-1-2 [x]-7  [003] .....  6.000001: unmap: x");
        assert_eq!((e.comm, e.pid, e.cpu), (&b"a-1-2 [x]"[..], 7, 3));
        let e = ev(b"  x-9 [000]-7  [003] .....  6.000001: unmap: x");
        assert_eq!((e.comm, e.pid, e.cpu), (&b"x-9 [000]"[..], 7, 3));
        let e = ev(b"  bad\xff\0name-77  [001] .....  1.000000: map: y");
        assert_eq!((e.comm, e.pid), (&b"bad\xff\0name"[..], 77));
    }

    #[test]
    fn tgid_column_and_nine_decimals() {
        let e = ev(b"            bash-1977    (   1977) [000] ...1.  5.000000123: console: hi");
        assert_eq!((e.tgid, e.ts_ns), (Some(1977), 5_000_000_123));
        let e = ev(b"          <idle>-0       (-------) [001] d.h2.  6.019383: console: x");
        assert_eq!((e.tgid, e.cpu), (None, 1));
        // also accepted after the CPU column
        let e = ev(b"            bash-1977    [000] (   1977) ...1.  5.000000: console: hi");
        assert_eq!((e.comm, e.pid, e.tgid), (&b"bash"[..], 1977, Some(1977)));
        let e = ev(b"  my (app)-12 (   10) [000] .....  5.000000: console: hi");
        assert_eq!((e.comm, e.pid, e.tgid), (&b"my (app)"[..], 12, Some(10)));
    }

    #[test]
    fn special_lines() {
        assert_eq!(classify_line(b""), Ok(LineKind::Blank));
        assert_eq!(classify_line(b"  \t "), Ok(LineKind::Blank));
        assert_eq!(classify_line(b"# tracer: nop"), Ok(LineKind::Header(b"# tracer: nop")));
        assert_eq!(classify_line(b"CPU:1 [LOST 1234 EVENTS]"), Ok(LineKind::Lost { cpu: Some(1), events: Some(1234) }));
        assert_eq!(classify_line(b"CPU:0 [LOST EVENTS]"), Ok(LineKind::Lost { cpu: Some(0), events: None }));
        assert_eq!(classify_line(b"[LOST 5 EVENTS]"), Ok(LineKind::Lost { cpu: None, events: Some(5) }));
        assert_eq!(classify_line(b" => __iommu_map+0x0/0x280"), Ok(LineKind::Stack(b"=> __iommu_map+0x0/0x280")));
        assert_eq!(
            classify_line(b"          <idle>-0       [001] d.h2.     6.019383: <stack trace>"),
            Ok(LineKind::Stack(b"<stack trace>"))
        );
        // a task named like a special line is still an event
        let e = ev(b"  cpus=2-5 [000] .....  1.000000: map: x");
        assert_eq!(e.comm, b"cpus=2");
        let e = ev(b"  CPU:1 [LOST-5 [000] .....  1.000000: map: x");
        assert_eq!(e.comm, b"CPU:1 [LOST");
    }

    #[test]
    fn malformed_lines() {
        let k = |l: &[u8]| classify_line(l).unwrap_err().kind;
        assert_eq!(k(b"garbage"), LineErrorKind::MissingTaskPidCpu);
        assert_eq!(k(b"a-1 [000] .....  1.0000001: map: x"), LineErrorKind::BadTimestamp);
        assert_eq!(k(b"a-1 [000] .....  1.000001 map: x"), LineErrorKind::BadTimestamp);
        assert_eq!(k(b"a-1 [000] ..  1.000001: map: x"), LineErrorKind::BadFlags);
        assert_eq!(k(b"a-1 [000] .....  1.000001:"), LineErrorKind::MissingEventName);
        assert_eq!(k(b"a-99999999999 [000] .....  1.000001: x: y"), LineErrorKind::BadPid);
        assert_eq!(k(b"a-1 [99999999999] .....  1.000001: x: y"), LineErrorKind::BadCpu);
        assert_eq!(k(b"a-1 [000] (abc) .....  1.000001: x: y"), LineErrorKind::BadTgid);
        assert_eq!(k(b"a-1 (abc) [000] .....  1.000001: x: y"), LineErrorKind::BadTgid);
        assert_eq!(k(b"a-1 [000] .....  99999999999999999999.000001: x: y"), LineErrorKind::TimestampOverflow);
        assert_eq!(k(b"a-1 [000] .....  18446744074.000001: x: y"), LineErrorKind::TimestampOverflow);
        let e = classify_line(b"a-1 [000] .....  1.000001 map: x").unwrap_err();
        assert_eq!(e.column, 17);
        assert!(e.to_string().contains("timestamp at column 17"), "{e}");
    }

    #[test]
    fn empty_body_and_crlf_free() {
        let e = ev(b"a-1 [000] .....  1.000001: fq_flush_timeout:");
        assert_eq!((e.name, e.body), (&b"fq_flush_timeout"[..], &b""[..]));
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    /// The general path alone (what `classify_line` did before the fast
    /// path), for event lines.
    fn general(line: &[u8]) -> Option<EventLine<'_>> {
        match parse_event_line(line, skip_blanks(line, 0)) {
            Ok(Parsed::Event(e)) => Some(e),
            _ => None,
        }
    }

    #[test]
    fn fast_path_fires_and_agrees() {
        let lines: &[&[u8]] = &[
            b"          <idle>-0       [000] d..2.     0.008000: qi_submit: iec_inv dmar0: 0x4 0x0 0x0 0x0",
            b"          insmod-194     [000] .....    10.889499: mm_page_free: page=0000000065c2d467 pfn=0x123589 order=0",
            b"            init-1     [000]     1.464407: map:                  IOMMU: iova=0x0",
            b" kworker/u8:0-123     [001] d.h1.  6.018976: unmap: x",
            b"     my-app 2-55      [001] ....  6.018976: unmap: x",
            b"  cpus=2-5 [000] .....  1.000000: map: x",
            b"  <...>-4242  [001] .....  6.018976123: unmap:",
            b"a-1 [000] .....  9999999999.000001: fq_flush_timeout:",
            b"  bad\xff\0name-77  [001] .....  1.000000: map: y",
        ];
        for &l in lines {
            let fast = fast_event_line(l);
            assert!(fast.is_some(), "{}", l.escape_ascii());
            assert_eq!(fast, general(l), "{}", l.escape_ascii());
        }
    }

    #[test]
    fn fast_path_declines_what_it_does_not_know() {
        let lines: &[&[u8]] = &[
            b"            bash-1977    (   1977) [000] ...1.  5.000000123: console: hi",
            b"            bash-1977    [000] (   1977) ...1.  5.000000: console: hi",
            b"  a-1-2 [x]-7  [003] .....  6.000001: unmap: x",
            b"\t a-1 [000] .....  1.000001: map: x",
            b"a-1 [000] .....  99999999999.000001: x: y",
            b"a-4294967295 [000] .....  1.000001: x: y",
            b"a-1 [000] .....  1.000001 map: x",
            b"          <idle>-0       [001] d.h2.     6.019383: <stack trace>",
            b"CPU:1 [LOST 1234 EVENTS]",
            // the first `[` is in the task name: left to the general path
            b"  CPU:1 [LOST-5 [000] .....  1.000000: map: x",
        ];
        for &l in lines {
            assert_eq!(fast_event_line(l), None, "{}", l.escape_ascii());
        }
    }
}
