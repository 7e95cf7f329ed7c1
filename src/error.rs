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
    /// A model checkpoint is missing a key, has an unexpected key or a mis-shaped tensor.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What was wrong, naming the key.
        message: String,
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

    /// A checkpoint error on `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.to_string(),
        }
    }

    /// Inconsistent input data.
    pub fn invalid(message: impl std::fmt::Display) -> Self {
        Error::Invalid(message.to_string())
    }
}
