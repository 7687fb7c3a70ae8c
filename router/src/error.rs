//! The one error type of `tessera-router`.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: nothing was sent or written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("keyspace {0:?} does not exist")]
    KeyspaceNotFound(String),
    /// A write was sent and its fate is unknown: it may or may not have
    /// been applied. Never reported for a write known not to have applied.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// The request could not be completed within its deadline; nothing of
    /// it was applied (reads, or writes never sent).
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("directory: {0}")]
    Directory(String),
    /// Bad settings of the router process.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Directory(_))
    }
}
