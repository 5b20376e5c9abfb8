//! The library's error type: every failure that depends on data or configuration,
//! with the file or config key it concerns, so that a user can act on the message.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in `sae` that is not a programming error.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is readable but its content is not what it should be.
    #[error("{}: {problem}", path.display())]
    BadData {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A file written by another format version of `sae` than this build reads.
    #[error("{}: incompatible {what} version {found}; this build reads {reads}{hint}", path.display())]
    Incompatible {
        /// The file concerned.
        path: PathBuf,
        /// What kind of file (`model`, `checkpoint`, `store`).
        what: &'static str,
        /// The version it holds.
        found: String,
        /// The versions this build reads.
        reads: String,
        /// What to do about it (may be empty).
        hint: &'static str,
    },
    /// A file whose checksum or structure shows it was damaged or cut short.
    #[error("{}: {problem}", path.display())]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A result table could not be built or written.
    #[error("result table: {0}")]
    Table(#[from] polars::error::PolarsError),
    /// A configuration value is invalid.
    #[error("config key `{key}`: {problem}")]
    Config {
        /// The key (dotted path) concerned.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A numerical computation failed (NaN, divergence, singular input).
    #[error("numerical failure: {0}")]
    Numeric(String),
    /// A classifier could not be fitted or applied.
    #[error("classifier: {0}")]
    Classifier(String),
    /// A bug (a panic), caught where it ends one run of a sweep rather than the sweep.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::BadData`] for `path`.
    pub fn bad(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::BadData {
            path: path.as_ref().to_path_buf(),
            problem: problem.into(),
        }
    }

    /// A [`Error::Corrupt`] for `path`.
    pub fn corrupt(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.as_ref().to_path_buf(),
            problem: problem.into(),
        }
    }

    /// A [`Error::Config`] for `key`.
    pub fn config(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// A closure turning an `io::Error` into an [`Error::Io`] about `path`.
    pub fn io(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.as_ref().to_path_buf();
        move |source| Error::Io { path, source }
    }
}
