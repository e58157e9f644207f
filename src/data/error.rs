//! The data layer's error type: every message names the file (or the line) and the problem.

use std::path::{Path, PathBuf};

/// Errors of the data layer; every message names the file (or the line) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A required file (or directory) does not exist.
    #[error("{}: missing: {what}", path.display())]
    Missing { path: PathBuf, what: String },
    /// Operating-system I/O failure.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// The HDF5 reader or writer failed (unreadable/truncated file, failed read or write).
    #[error("{}: {context}: {source}", path.display())]
    Hdf5 {
        path: PathBuf,
        context: String,
        source: rust_hdf5::Hdf5Error,
    },
    /// The file is readable but its content violates the AVE layout.
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    /// A line of an `Annotations.txt` (1-based `line`) is malformed.
    #[error("{}", annotation_message(.file.as_deref(), *.line, .msg))]
    Annotation {
        file: Option<PathBuf>,
        line: usize,
        msg: String,
    },
    /// A split name other than `train`, `val`, `test`.
    #[error("unknown split {0:?} (expected train, val or test)")]
    UnknownSplit(String),
}

fn annotation_message(file: Option<&Path>, line: usize, msg: &str) -> String {
    match file {
        Some(f) => format!("{}: line {line}: {msg}", f.display()),
        None => format!("annotations line {line}: {msg}"),
    }
}
