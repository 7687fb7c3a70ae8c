//! The one error type of `tessera-store`, and how it maps to gRPC statuses.
//!
//! Routing errors are not gRPC errors: the services put them in the
//! response's `region_error` field. Everything else becomes a status:
//! bad input → `InvalidArgument`; a write that was sent but whose fate is
//! unknown → `DeadlineExceeded` with "outcome unknown" (the caller must treat
//! it as indeterminate, never as failed); a stopping store → `Unavailable`.

use tessera_proto::errorpb::RegionError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A routing error, returned to the caller as data.
    #[error("{0}")]
    Region(Box<RegionError>),
    /// The request waited longer than its deadline. For a write the outcome
    /// is unknown.
    #[error("timed out after {0:?}; the outcome is unknown")]
    Timeout(std::time::Duration),
    /// A proposal whose outcome is unknown for another reason.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    #[error("the store is shutting down")]
    Shutdown,
    #[error("raft: {0}")]
    Raft(tessera_multiraft::Error),
    #[error("engine: {0}")]
    Engine(String),
    #[error("directory: {0}")]
    Directory(String),
    /// Another store could not be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The directory refused this store: no or the wrong join token, another
    /// process's store id, or another identity. Trying again will not help.
    #[error("the directory refused this store: {0}")]
    Refused(String),
    /// This store's data belongs to another cluster than the directory's.
    #[error("{0}; this store's data directory belongs to another cluster (point it at its own directory, or start it with an empty data directory)")]
    OtherCluster(tessera_security::cluster::Mismatch),
    #[error("configuration: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub fn region(e: RegionError) -> Self {
        Error::Region(Box::new(e))
    }

    /// Whether starting again with the same settings will fail the same
    /// way (the process stops instead of retrying).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::Refused(_) | Error::OtherCluster(_) | Error::Config(_)
        )
    }
}

impl From<RegionError> for Error {
    fn from(e: RegionError) -> Self {
        Error::region(e)
    }
}

impl From<tessera_multiraft::Error> for Error {
    fn from(e: tessera_multiraft::Error) -> Self {
        use tessera_multiraft::Error as E;
        match e {
            E::Region(r) => Error::Region(r),
            E::Shutdown => Error::Shutdown,
            E::Indeterminate(s) => Error::Indeterminate(s),
            E::InvalidArgument(s) => Error::InvalidArgument(s),
            E::Engine(s) => Error::Engine(s),
            other => Error::Raft(other),
        }
    }
}

impl From<&Error> for tonic::Status {
    fn from(e: &Error) -> Self {
        match e {
            Error::InvalidArgument(m) => tonic::Status::invalid_argument(m.clone()),
            Error::Timeout(_) | Error::Indeterminate(_) => {
                tonic::Status::deadline_exceeded(e.to_string())
            }
            Error::Shutdown | Error::Unavailable(_) => tonic::Status::unavailable(e.to_string()),
            Error::Region(r) => tonic::Status::failed_precondition(r.to_string()),
            other => tonic::Status::internal(other.to_string()),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        (&e).into()
    }
}
