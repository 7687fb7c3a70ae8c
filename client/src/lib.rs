//! The Rust SDK of tessera: a client of its key-value API, in one of two
//! modes.
//!
//! - **Proxy mode** ([`ClientBuilder::routers`]): the SDK talks gRPC to one
//!   or more routers and to nothing else; the routers find regions, follow
//!   leaders and retry routing errors against the stores. What the SDK
//!   owns is the way to the routers — failover between them, deadlines,
//!   and telling a write that failed from one whose fate is unknown. The
//!   mode for thin clients, and the API other languages speak.
//! - **Direct mode** ([`ClientBuilder::directory`]): the SDK embeds the
//!   routing library the router is built on (`tessera-routing`) and sends
//!   each request straight to the leader of the key's region, found
//!   through the directory and cached: one process hop fewer, and no
//!   router to run. The same deadlines, retries and indeterminate rule
//!   apply; see the `direct` module.
//!
//! ```no_run
//! use std::time::Duration;
//! use tessera_client::{Client, Error};
//!
//! # #[tokio::main]
//! # async fn main() -> tessera_client::Result<()> {
//! let client = Client::builder()
//!     .routers(["10.0.0.1:7000", "10.0.0.2:7000"])
//!     // or, in direct mode: .directory(["10.0.0.1:2379", "10.0.0.2:2379"])
//!     .timeout(Duration::from_secs(5))
//!     .build()
//!     .await?;
//!
//! // The `default` keyspace.
//! client.put("user/1", "alice").await?;
//! let users = client.scan("user/".."user0", 100).await?;
//!
//! // A named keyspace.
//! let sessions = client.keyspace("sessions");
//! match sessions.compare_and_swap("s1", None, Some(b"alice")).await {
//!     Ok(outcome) => println!("created: {}", outcome.succeeded),
//!     Err(e) if e.is_indeterminate() => println!("may or may not exist now: {e}"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Failover (proxy mode)
//!
//! The client keeps one gRPC channel per router endpoint, dialed on first
//! use with the connect timeout (TCP nodelay) and kept afterwards; building
//! a client dials nothing, so it succeeds with every router down. tonic
//! re-dials a channel whose connection broke. While a request is in flight
//! the connection is watched with HTTP/2 pings (2 s apart, 2 s to answer),
//! so a router host that vanished without closing its connections holds an
//! operation for about 4 s before the client fails over, not for the whole
//! deadline.
//!
//! Every operation has a deadline, [`ClientBuilder::timeout`] from its
//! start, retries included. It starts with the endpoint that last worked.
//! When an attempt fails — the dial fails, the call ends in a gRPC
//! transport or status error, or the router answers with an error of kind
//! `UNAVAILABLE` — the client backs off ([`Backoff`]: exponential with
//! jitter, capped at `max`) and tries the next endpoint, round-robin, until
//! the deadline. Each attempt's gRPC deadline is the time left.
//!
//! # Indeterminate writes
//!
//! A write whose fate is unknown is reported as [`Error::Indeterminate`],
//! never as failed and never as unavailable:
//! - reads (`get`, `batch_get`, `scan`, `scan_reverse`) are always retried
//!   and end as [`Error::Unavailable`] when the deadline passes;
//! - writes (`put`, `delete`, `batch_put`, `delete_range`,
//!   `compare_and_swap`) are retried only when they certainly were not sent
//!   (the dial failed, or the router answered `UNAVAILABLE`, which says
//!   nothing was applied); any other failure after sending is
//!   [`Error::Indeterminate`] at once. Even a put is not resent: applied
//!   twice, with another client's write in between, it would undo that
//!   write. When you are the only writer of a key, putting it again after
//!   an indeterminate outcome is safe — that is the application's call;
//! - a router answer of kind `INDETERMINATE` is [`Error::Indeterminate`].
//!
//! Router answers of kind `INVALID_ARGUMENT` and `KEYSPACE_NOT_FOUND` end
//! the operation at once as [`Error::InvalidArgument`] and
//! [`Error::KeyspaceNotFound`]. The SDK refuses empty keys itself; size
//! limits (keys up to 8 KiB, values up to 8 MiB) and range checks are the
//! router's.
//!
//! Retries are logged with `tracing` at debug level. In proxy mode the SDK
//! records no metrics; in direct mode the embedded routing library counts
//! what a router does (`tessera_router_requests_total`, retries, region
//! cache hits, ...) through the `metrics` facade — into the application's
//! recorder if it installed one, nowhere otherwise.
//!
//! # Ranges
//!
//! Scans and range deletes take any [`RangeBounds`](std::ops::RangeBounds)
//! over byte-like keys (`"a".."c"`, `b"k".to_vec()..`, `..=key`). The wire
//! carries a half-open `[start, end)` with optional ends; inclusive ends and
//! exclusive starts become the following key, `k ‖ 0x00`.
//!
//! # Modules
//!
//! - `client`: [`Client`], the operations on the `default` keyspace;
//! - `keyspace`: [`Keyspace`], the operations themselves;
//! - `builder`: [`ClientBuilder`] and [`Backoff`];
//! - `failover`: connections to routers, attempts, backoff, the
//!   indeterminate rule;
//! - `direct`: direct mode, the embedded routing library;
//! - `range`: range bounds to the wire's start and end;
//! - `types`: [`KvPair`], [`CasOutcome`];
//! - `error`: [`Error`].

mod builder;
mod client;
mod direct;
mod error;
mod failover;
mod keyspace;
mod range;
mod types;

pub use builder::{Backoff, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
pub use client::Client;
pub use error::{Error, Result};
pub use keyspace::Keyspace;
/// Which replica serves a read: re-exported from the routing library.
pub use tessera_routing::ReadConsistency;
pub use types::{CasOutcome, DeleteRangeStep, KvPair};
