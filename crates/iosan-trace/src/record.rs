//! The record stream: what every source (ftrace text, `trace-cmd report`
//! text, trace.dat, perf.data, a live pipe) produces and the replay consumes.
//!
//! A [`Record`] is one decoded event with where and when it happened. The
//! replay sees only records and the few out-of-band items of
//! [`RecordSink`]; it never sees text or bytes of a container.

use core::fmt;

use crate::parse::event::Event;

/// The execution context an event ran in. Nested contexts on one CPU are
/// separate call sequences (an interrupt may slip between a task's events).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExecContext {
    /// Process context.
    #[default]
    Task,
    /// Softirq (bottom half).
    SoftIrq,
    /// Hard interrupt.
    HardIrq,
    /// NMI.
    Nmi,
}

impl ExecContext {
    /// From ftrace's latency-format flags column (`d..1.` etc.): the third
    /// character is `h`/`H` in hardirq, `s` in softirq, `z`/`Z` in NMI.
    #[must_use]
    pub fn from_ftrace_flags(flags: Option<&[u8]>) -> Self {
        match flags.and_then(|f| f.get(2)) {
            Some(b'h' | b'H') => Self::HardIrq,
            Some(b's') => Self::SoftIrq,
            Some(b'z' | b'Z') => Self::Nmi,
            _ => Self::Task,
        }
    }

    /// From the `common_flags` byte of a binary event (the kernel's
    /// `enum trace_flag_type`: 0x08 hardirq, 0x10 softirq, 0x40 NMI).
    #[must_use]
    pub fn from_common_flags(flags: u8) -> Self {
        if flags & 0x40 != 0 {
            Self::Nmi
        } else if flags & 0x08 != 0 {
            Self::HardIrq
        } else if flags & 0x10 != 0 {
            Self::SoftIrq
        } else {
            Self::Task
        }
    }

    /// A small number for keys: task 0, softirq 1, hardirq 2, NMI 3.
    #[must_use]
    pub fn index(self) -> u8 {
        match self {
            Self::Task => 0,
            Self::SoftIrq => 1,
            Self::HardIrq => 2,
            Self::Nmi => 3,
        }
    }
}

/// Where a record came from, for messages only. Text sources give a 1-based
/// line and its byte offset; binary sources give `line == 0` and the byte
/// offset of the record in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// 1-based line number; 0 when the source has no lines.
    pub line: u64,
    /// Byte offset of the line or record.
    pub offset: u64,
}

impl Origin {
    /// A text line.
    #[must_use]
    pub fn line(line: u64, offset: u64) -> Self {
        Self { line, offset }
    }

    /// A record of a binary file at `offset`.
    #[must_use]
    pub fn byte(offset: u64) -> Self {
        Self { line: 0, offset }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {} (byte {})", self.line, self.offset)
        } else {
            write!(f, "byte {}", self.offset)
        }
    }
}

/// One decoded event.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Timestamp, ns of the trace clock.
    pub ts_ns: u64,
    /// CPU.
    pub cpu: u32,
    /// Task id.
    pub pid: u32,
    /// Task name, raw bytes (`<...>` when the source does not know it).
    pub comm: &'a [u8],
    /// Task, softirq, hardirq or NMI.
    pub context: ExecContext,
    /// The decoded event.
    pub event: &'a Event<'a>,
    /// Kernel stack frames of the event, innermost first, as ftrace prints
    /// them (`func+0xoff/0xlen [module]`, optionally with `=> `); empty if none.
    pub stack: &'a [&'a [u8]],
    /// Where it was read, for messages.
    pub origin: Origin,
}

/// The consumer of a record stream: the replay, or anything that wants the
/// decoded events (statistics, a converter). Sources drive; sinks receive.
pub trait RecordSink {
    /// One decoded event.
    fn record(&mut self, rec: &Record<'_>);
    /// Events the kernel dropped (ring-buffer overrun) on `cpu` (all CPUs
    /// when `None`), `events` of them when known.
    fn lost(&mut self, cpu: Option<u32>, events: Option<u64>, origin: Origin);
    /// Input that was not used, with why: counted, never silent.
    fn skipped(&mut self, reason: &str, origin: Origin);
    /// `count` inputs skipped for one reason, the first at `origin` (a
    /// binary reader counts damaged records as it goes and reports them
    /// once). The default reports them one by one.
    fn skipped_many(&mut self, reason: &str, origin: Origin, count: u64) {
        for _ in 0..count {
            self.skipped(reason, origin);
        }
    }
    /// An event of a kind the analysis does not use.
    fn unknown_event(&mut self, name: &[u8]);
    /// Capture metadata (`# iosan-meta: key=value`, trace.dat options).
    fn meta(&mut self, key: &str, value: &str);
    /// Events the ring buffer overwrote before the capture was read (the
    /// `entries-in-buffer/entries-written` header; a trace.dat's overrun stats).
    fn overwritten(&mut self, events: u64);
}
