//! Sources of the record stream.

pub mod format;
pub mod kallsyms;
pub mod tracedat;
pub mod tracing_data;
