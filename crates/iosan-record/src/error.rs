//! Errors of the record library.

use std::io;
use std::path::PathBuf;

/// What went wrong while setting up, running or collecting a capture.
///
/// Every variant names the file or command involved and, where one exists,
/// what the user can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// No usable tracefs was found under the probed root.
    #[error(
        "tracefs is not available (looked in {looked}); mount it with \
         `mount -t tracefs nodev /sys/kernel/tracing` (needs root and CONFIG_TRACING)"
    )]
    NoTracefs {
        /// The directories that were searched, comma separated.
        looked: String,
    },
    /// Writing a tracefs control file failed.
    #[error("cannot write {value:?} to {}: {source}{}", path.display(), hint(source))]
    Write {
        /// The control file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading a file failed.
    #[error("cannot read {}: {source}{}", path.display(), hint(source))]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Creating the tracefs instance directory failed.
    #[error("cannot create {}: {source}{}", path.display(), hint(source))]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Removing the tracefs instance directory failed.
    #[error("cannot remove {}: {source}{}", path.display(), hint(source))]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Starting or waiting for a helper command failed.
    #[error("cannot run `{command}`: {source}")]
    Command {
        /// The command line.
        command: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A helper command ran but failed.
    #[error("`{command}` failed with {status}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
    },
    /// Writing the capture file failed.
    #[error("cannot write the capture to {}: {source}{}", path.display(), hint(source))]
    Output {
        /// The capture file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// A short "what to do" for the error numbers tracefs returns.
fn hint(err: &io::Error) -> &'static str {
    if err.kind() == io::ErrorKind::PermissionDenied {
        return " (run as root)";
    }
    match err.raw_os_error() {
        Some(2) => " (no such file: this kernel lacks the feature, or tracefs is not mounted)",
        Some(12) => " (out of memory: choose a smaller --buffer-kb)",
        Some(16) => {
            " (busy: a reader such as trace_pipe or another tool holds it; stop it, \
             then run `iosan record --cleanup`)"
        }
        Some(17) => " (already exists: a previous run did not clean up; run `iosan record --cleanup`)",
        Some(22) => " (the kernel rejected the value: see the kernel log with `dmesg | tail`)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_and_say_what_to_do() {
        let e = RecordError::Write {
            path: PathBuf::from("/sys/kernel/tracing/kprobe_events"),
            value: "p:iosan/x f".into(),
            source: io::Error::from_raw_os_error(16),
        };
        let msg = e.to_string();
        assert!(msg.contains("/sys/kernel/tracing/kprobe_events"), "{msg}");
        assert!(msg.contains("iosan record --cleanup"), "{msg}");
        let e =
            RecordError::Read { path: PathBuf::from("/x"), source: io::Error::from(io::ErrorKind::PermissionDenied) };
        assert!(e.to_string().contains("run as root"));
    }
}
