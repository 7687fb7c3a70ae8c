//! The one error type of `tessera-client`.
//!
//! The variants follow the router's answer kinds, so a caller can tell the
//! three outcomes that matter apart: nothing happened and trying again may
//! help ([`Error::Unavailable`], [`Error::ResourceExhausted`],
//! [`Error::NoSpace`]), nothing happened and trying again will not
//! help ([`Error::InvalidArgument`], [`Error::KeyspaceNotFound`],
//! [`Error::Config`]), and a write may or may not have been applied
//! ([`Error::Indeterminate`]). A write is never reported as failed when it
//! may have been applied.

/// `Result` with [`Error`] as its default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with an operation.
///
/// ```
/// use tessera_client::Error;
///
/// let e = Error::Unavailable("no router answered".into());
/// assert!(e.is_retryable());
/// assert!(!e.is_indeterminate());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input: an empty key (caught by the SDK), or a key, value or range
    /// the router refused. Nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The named keyspace does not exist. Carries the keyspace name.
    #[error("keyspace {0:?} does not exist")]
    KeyspaceNotFound(String),
    /// A write was sent and its fate is unknown: it may or may not have been
    /// applied. Read the key back to find out.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// No router could serve the operation within the timeout; nothing of it
    /// was applied (a read, or a write that was never sent). Trying again
    /// later may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The cluster was over its serving quotas (requests being served,
    /// requests or bytes in flight, connections) and refused the operation
    /// until its deadline, or this client's throttle held it back without
    /// sending it (`ClientBuilder::throttle`); the SDK waited what each
    /// refusal asked in between, unless `retry_busy(false)` returned the
    /// first. Nothing was applied. Trying again later may succeed; sending
    /// less at once will.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The stores of the key's region are low on disk space (the cluster's
    /// NOSPACE alarm, see `tessera cluster status`): the write was refused
    /// and nothing of it was applied. Reads go on. Trying again once space
    /// has been freed or added will succeed; the SDK does not retry it.
    #[error("no space: {0}")]
    NoSpace(String),
    /// The cluster does not know who is calling: no client certificate (or
    /// one it does not accept). Nothing was applied; retrying will not
    /// help until the client presents an identity
    /// ([`ClientBuilder::security`](crate::ClientBuilder::security)).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller's identity may not do this. Nothing was applied;
    /// retrying will not help.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Bad [`ClientBuilder`](crate::ClientBuilder) settings.
    #[error("bad client configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether trying the same operation again later may succeed with
    /// nothing applied twice: true for [`Error::Unavailable`],
    /// [`Error::ResourceExhausted`] and [`Error::NoSpace`].
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::ResourceExhausted(_) | Error::NoSpace(_)
        )
    }

    /// Whether this is [`Error::Indeterminate`]: a write that may or may not
    /// have been applied.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Error::Indeterminate(_))
    }
}
