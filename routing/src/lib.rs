//! `tessera-routing`: getting a request to the leader of the region that
//! owns its key, and getting to the directory's leader. The `tessera-router`
//! service serves the public API on top of it; the SDK embeds it — for its
//! [`Backoff`], "was it sent" rule and throttle in proxy mode, and whole in
//! direct mode, where the client talks to the stores itself. It has no server dependencies: no HTTP server, metrics exporter,
//! flag or file parsing.
//!
//! How a request travels, and where each step lives:
//!
//! 1. [`ops`], [`batch`], [`range`]: an operation on user keys encodes them
//!    for its keyspace ([`router`], which also caches keyspaces), splits a
//!    batch per region or walks a range region by region;
//! 2. [`route`]: the retry loop sends each request about one key under the
//!    operation's deadline;
//! 3. [`locate`]: the region holding the key, from the [`cache`] or the
//!    directory ([`directory`]: the connection that follows its leader),
//!    and the peer to address (the leader, or for a follower read any
//!    voter: [`consistency`]);
//! 4. [`store_pool`]: one channel per store;
//! 5. [`reaction`]: what a failure means — one pure function from (routing
//!    or gRPC error, [`sent`] or not, [`reaction::SendPolicy`]) to a cache
//!    correction and what to do next; [`backoff`] says how long to wait.
//!
//! The SDK holds back what an overloaded cluster would refuse anyway
//! ([`throttle`]).
//!
//! Stores and routers also keep their copy of the user table fresh
//! through it ([`users`]).
//!
//! Invariant: an operation that is at most once (every write) is never
//! sent again once it may have reached a store; its outcome is then
//! [`Error::Indeterminate`]. Reads are retried until the deadline.

pub mod backoff;
pub mod batch;
pub mod cache;
pub mod consistency;
pub mod directory;
pub mod error;
pub mod locate;
pub mod metrics;
pub mod ops;
pub mod range;
pub mod reaction;
pub mod route;
pub mod router;
pub mod sent;
pub mod store_pool;
pub mod stream;
pub mod throttle;
pub mod users;

pub use backoff::Backoff;
pub use batch::BatchGetPage;
pub use consistency::ReadConsistency;
pub use error::{Error, Result};
pub use ops::CasOutcome;
pub use range::{DeleteRangeProgress, Scan, ScanPage};
pub use router::{Router, RouterConfig};
