//! One error type for the whole engine. Every failure a user can cause (bad files, bad config,
//! bad input) surfaces as a variant here with a message that says what was wrong and what to do.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `action` says what failed ("read", "write", "create"), so a full disk is not reported as a read.
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },

    /// `config.json` is missing a key, has a wrong value, or names an unsupported variant.
    #[error("invalid config: {0}")]
    InvalidConfig(String),

    /// A checkpoint or runtime weight file is truncated, malformed, or does not match the config.
    #[error("invalid checkpoint: {0}")]
    InvalidCheckpoint(String),

    /// A pickle asked for something other than plain tensor data (e.g. an arbitrary global).
    #[error("refused unsafe pickle: {0}")]
    UnsafePickle(String),

    /// A file's bytes do not match the sha256 or size recorded in the manifest.
    #[error("integrity check failed: {0}")]
    IntegrityMismatch(String),

    /// The request itself is wrong: token ids out of range, empty prompt, too long, bad option.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The model cannot be held in the memory available (checked before allocating).
    #[error("out of memory: {0}")]
    OutOfMemory(String),

    /// This machine or browser lacks what was asked for (no GPU adapter, a missing feature or limit).
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// The GPU device was lost (driver reset, browser reclaimed it); load the model again.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
}

impl Error {
    /// A stable machine-readable code (used by the JS layer and the CLI's JSON errors).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { .. } => "ModelNotFound",
            Error::InvalidConfig(_) => "InvalidConfig",
            Error::InvalidCheckpoint(_) => "InvalidCheckpoint",
            Error::UnsafePickle(_) => "UnsafePickle",
            Error::IntegrityMismatch(_) => "IntegrityMismatch",
            Error::InvalidInput(_) => "InvalidInput",
            Error::Tokenizer(_) => "Tokenizer",
            Error::OutOfMemory(_) => "OutOfMemory",
            Error::Unsupported(_) => "Unsupported",
            Error::DeviceLost(_) => "DeviceLost",
        }
    }

    /// A failed read of `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action: "read", path: path.into(), source }
    }

    /// A failed write (or create, rename) of `path`.
    pub fn io_write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action: "write", path: path.into(), source }
    }
}
