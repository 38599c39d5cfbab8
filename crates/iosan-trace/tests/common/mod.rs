//! Helpers shared by the integration tests.
pub mod tracedat_writer;
