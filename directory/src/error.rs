//! The one error type of `tessera-directory`.

use tessera_proto::directorypb::{directory_error::Kind, DirectoryError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This member is not the leader; `leader` is the leader's address if
    /// known.
    #[error("this directory member is not the leader{}", .0.as_ref().map(|l| format!("; the leader is {l}")).unwrap_or_default())]
    NotLeader(Option<String>),
    #[error("the cluster is not bootstrapped yet")]
    NotBootstrapped,
    #[error("the cluster is already bootstrapped")]
    AlreadyBootstrapped,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A report older than what is known.
    #[error("stale: {0}")]
    Stale(String),
    /// Another operator is in flight where this one would run; nothing
    /// changed, and the same request may succeed once it finishes.
    #[error("busy: {0}")]
    Busy(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("raft: {0}")]
    Raft(#[from] tessera_multiraft::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the directory is shutting down")]
    Shutdown,
    /// The caller gave no, or no valid, credential (join token, store
    /// secret). Answered as gRPC `UNAUTHENTICATED`.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known and may not do this. Answered as gRPC
    /// `PERMISSION_DENIED`.
    #[error("{0}")]
    PermissionDenied(String),
    /// A store or request of another cluster. Answered as gRPC
    /// `FAILED_PRECONDITION`.
    #[error("this directory belongs to cluster {ours}; the request is from cluster {theirs}")]
    ClusterMismatch { ours: u64, theirs: u64 },
}

impl Error {
    /// A refusal of the caller travels as a gRPC status rather than in the
    /// response header, so every client reports it as a refusal (not
    /// retried, nothing changed).
    pub fn refusal(&self) -> Option<tonic::Status> {
        match self {
            Error::Unauthenticated(m) => Some(tonic::Status::unauthenticated(m.clone())),
            Error::PermissionDenied(m) => Some(tonic::Status::permission_denied(m.clone())),
            Error::ClusterMismatch { .. } => {
                Some(tonic::Status::failed_precondition(self.to_string()))
            }
            _ => None,
        }
    }

    /// The error as it travels in a response header.
    pub fn to_proto(&self) -> DirectoryError {
        let kind = match self {
            Error::NotLeader(_) => Kind::NotLeader,
            Error::NotBootstrapped => Kind::NotBootstrapped,
            Error::AlreadyBootstrapped => Kind::AlreadyBootstrapped,
            Error::InvalidArgument(_) => Kind::InvalidArgument,
            Error::NotFound(_) => Kind::NotFound,
            Error::Stale(_) => Kind::Stale,
            Error::Busy(_) => Kind::Busy,
            _ => Kind::Unknown,
        };
        DirectoryError {
            kind: kind as i32,
            message: self.to_string(),
            leader_address: match self {
                Error::NotLeader(Some(l)) => l.clone(),
                _ => String::new(),
            },
        }
    }
}
