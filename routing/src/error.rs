//! The one error type of `tessera-routing`.

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
    /// A store was over a serving quota and kept refusing the request
    /// (`RESOURCE_EXHAUSTED`, TiKV's `ServerIsBusy`); nothing of it was
    /// applied. Retry after `retry_after`.
    #[error("busy: {message}")]
    Busy {
        message: String,
        retry_after: std::time::Duration,
    },
    /// The stores of the key's region are low on disk space (the NOSPACE
    /// alarm): the write was refused and nothing of it was applied. Reads
    /// go on; retry once space is freed or added.
    #[error("no space: {0}")]
    NoSpace(String),
    /// The directory answered with an error (`kind` is a
    /// `directorypb::directory_error::Kind`).
    #[error("directory: {message}")]
    Directory { kind: i32, message: String },
    /// The directory or a store refused the caller before running
    /// anything: no or the wrong identity, join token or store secret
    /// (`Unauthenticated`), a role too small for the call
    /// (`PermissionDenied`), or another cluster (`FailedPrecondition`).
    /// Nothing changed, and trying again will not help.
    #[error("refused: {message}")]
    Refused { code: tonic::Code, message: String },
    /// No directory member answered in time.
    #[error("directory: {0}")]
    DirectoryUnreachable(String),
    /// Bad settings: an address that is not one, no address at all.
    #[error("setup: {0}")]
    Setup(String),
}

impl Error {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_)
                | Error::Busy { .. }
                | Error::NoSpace(_)
                | Error::Directory { .. }
                | Error::DirectoryUnreachable(_)
        )
    }

    /// An error about the directory's answer (`kind` 0: no particular kind).
    pub(crate) fn directory(message: impl Into<String>) -> Self {
        Error::Directory {
            kind: 0,
            message: message.into(),
        }
    }
}
