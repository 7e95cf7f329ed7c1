//! The library's error type: every failure names the file, frame, key or field it concerns.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a named path failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An image file could not be decoded or encoded.
    #[error("{path}: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },
    /// A JSON or TOML document is malformed or does not have the expected structure.
    #[error("{path}: {message}")]
    Parse {
        /// The document.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },
    /// Input data are inconsistent (sizes, ids, frame lists, ...).
    #[error("{0}")]
    Invalid(String),
    /// A configuration value is unknown or out of range.
    #[error("configuration: {0}")]
    Config(String),
    /// A model checkpoint is unreadable, lacks a key, has unexpected keys or a mis-shaped
    /// tensor.
    #[error("checkpoint {path}: {problem}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What was wrong, naming the key.
        problem: CheckpointProblem,
    },
    /// An external program (ffmpeg, pip, npm) failed or is missing.
    #[error("{program}: {message}")]
    External {
        /// The program.
        program: String,
        /// What happened, with a hint for fixing it.
        message: String,
    },
    /// The integer-program solver failed.
    #[error("consensus solver: {0}")]
    Solver(String),
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An image error on `path`.
    pub fn image(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Image {
            path: path.into(),
            message: message.to_string(),
        }
    }

    /// A parse error on `path`.
    pub fn parse(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Parse {
            path: path.into(),
            message: message.to_string(),
        }
    }

    /// A checkpoint error on `path` that is none of the typed [`CheckpointProblem`]s
    /// (an unreadable or malformed file, a wrong model family).
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Checkpoint {
            path: path.into(),
            problem: CheckpointProblem::Other(message.to_string()),
        }
    }

    /// Inconsistent input data.
    pub fn invalid(message: impl std::fmt::Display) -> Self {
        Error::Invalid(message.to_string())
    }
}

/// What is wrong with a checkpoint, with the key and shapes involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointProblem {
    /// The network asks for a key the file does not have.
    #[error("missing key {key}{}", expected.as_ref().map(|s| format!(" (expected shape {s:?})")).unwrap_or_default())]
    Missing {
        /// The full key.
        key: String,
        /// The shape the network expects, when it says.
        expected: Option<Vec<usize>>,
    },
    /// A tensor has another shape than the network expects.
    #[error("key {key} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The full key.
        key: String,
        /// The shape the network expects.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has a type the network cannot use (e.g. integers for a weight).
    #[error("key {key} has type {found}, expected {expected}")]
    Type {
        /// The full key.
        key: String,
        /// The type the network expects.
        expected: String,
        /// The type in the file.
        found: String,
    },
    /// Keys of the file that the network did not use (sorted).
    #[error("unexpected key {} ({} unused keys in all)", keys.first().map(String::as_str).unwrap_or(""), keys.len())]
    Unexpected {
        /// Every unused key.
        keys: Vec<String>,
    },
    /// Anything else: an unreadable or malformed file, a wrong model family.
    #[error("{0}")]
    Other(String),
}
