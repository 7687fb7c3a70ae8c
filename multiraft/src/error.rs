//! The one error type of `tessera-multiraft`.
//!
//! Routing errors (not leader, stale epoch, unknown region, ...) are carried
//! as the protocol's `RegionError` so they can be returned to clients as data
//! without translation.

use tessera_proto::errorpb::RegionError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A routing error: the caller should refresh its view and retry.
    #[error("{0}")]
    Region(Box<RegionError>),
    #[error("engine: {0}")]
    Engine(String),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("corrupted {what}: {detail}")]
    Corruption { what: String, detail: String },
    #[error("transport: {0}")]
    Transport(String),
    /// The poller has stopped; the store is shutting down.
    #[error("the store is shutting down")]
    Shutdown,
    /// The command was proposed but its outcome is unknown: it may or may not
    /// be applied (for example the peer was destroyed before it committed).
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A message or snapshot of another cluster.
    #[error(transparent)]
    OtherCluster(#[from] tessera_security::cluster::Mismatch),
}

impl Error {
    pub fn region(err: RegionError) -> Self {
        Error::Region(Box::new(err))
    }

    pub fn corruption(what: impl Into<String>, detail: impl ToString) -> Self {
        Error::Corruption {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// The routing error inside, if this is one.
    pub fn as_region_error(&self) -> Option<&RegionError> {
        match self {
            Error::Region(e) => Some(e),
            _ => None,
        }
    }
}

impl From<RegionError> for Error {
    fn from(e: RegionError) -> Self {
        Error::region(e)
    }
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::corruption("protobuf message", e)
    }
}
