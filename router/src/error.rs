//! The one error type of `tessera-router`.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad settings of the router process, or a port it cannot bind.
    #[error("configuration: {0}")]
    Config(String),
    /// What the routing library reported.
    #[error(transparent)]
    Routing(#[from] tessera_routing::Error),
}
