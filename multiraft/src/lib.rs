//! `tessera-multiraft` hosts many Raft groups (one per region) over one
//! storage engine.
//!
//! What it owns:
//! - [`engine`]: the `Engine` trait over column families `default`, `raft` and
//!   `meta`, with a RocksDB implementation (what users run) and an in-memory
//!   one (for deterministic tests);
//! - [`storage`]: a region's Raft log and hard state on the engine, as a
//!   `raft::Storage`;
//! - [`peer`]: one replica of a region — a raft-rs `RawNode`, the proposals
//!   waiting to be applied and the ReadIndex queue. A `Peer` does no IO;
//! - [`poller`]: the single thread that drives every peer of a store in rounds
//!   and writes the Ready state of all of them in ONE synced write batch
//!   (group commit), then sends messages and applies committed entries; the
//!   Raft side of a split (`poller/split/`) and of log GC
//!   (`poller/log_gc.rs`) each live in one module with its process overview;
//! - [`merge`]: region merge — prepare on the source, commit on the
//!   target, rollback — with its process overview and safety argument;
//! - [`hibernate`]: idle regions stop ticking on every replica — the
//!   process, who notices a dead leader, and why leases stay sound;
//! - [`mailbox`]: the poller's mailbox and the messages it takes;
//! - [`read`] and [`local_read`]: linearizable reads — the ReadIndex queue
//!   and the lease on the poller, and lease reads served off the poller's
//!   thread from the state it publishes per region;
//! - [`transport`]: how Raft messages reach other stores (gRPC, or an
//!   in-memory network with fault filters for tests).
//!
//! Failpoints (the `fail` crate; compiled in only with the `failpoints`
//! feature, armed by tests through a store's fault endpoints):
//! `raft_before_persist` / `raft_after_persist` around the round's synced
//! Raft write; `apply_before_write` before the applied state is written;
//! `split_between_write_and_start` after a split is written and before the
//! new regions' peers start; `snapshot_before_ingest` /
//! `snapshot_after_ingest` inside a snapshot's apply;
//! `merge_after_prepare`, `merge_before_commit` and
//! `merge_before_rollback` around a merge's steps (see [`merge`]);
//! `local_read_before_publish` after a round's writes were acknowledged and
//! before the applied state is published for reads off the poller's thread.
//!
//! What it leaves to its users: the meaning of a committed entry. The store's
//! KV state machine and the directory's metadata state machine plug in through
//! [`StateMachine`].

pub mod apply;
pub mod conf_change;
pub mod config;
pub mod engine;
pub mod error;
pub mod hibernate;
pub mod local_read;
pub mod logger;
pub mod mailbox;
pub mod merge;
pub mod metrics;
pub mod peer;
pub mod poller;
pub mod read;
pub mod region;
pub mod snapshot;
pub mod state_keys;
pub mod state_machine;
pub mod storage;
pub mod transport;

pub use config::RaftConfig;
pub use engine::{Cf, Engine, MemoryEngine, RocksEngine, WriteBatch};
pub use error::{Error, Result};
pub use mailbox::{Mailbox, PollerMsg, RegionInfo};
pub use poller::{Poller, PollerHandle, PollerStats};
pub use state_machine::{ApplyContext, StateMachine};
pub use transport::Transport;

/// Identifies a store (one process with one engine).
pub type StoreId = u64;
/// Identifies a region (one key range, one Raft group).
pub type RegionId = u64;
/// Identifies a peer (one replica of one region); also its Raft node id.
pub type PeerId = u64;

/// The term and index at which every freshly bootstrapped region starts, on
/// every replica, so that replicas agree without exchanging a snapshot.
pub const RAFT_INIT_LOG_TERM: u64 = 5;
/// See [`RAFT_INIT_LOG_TERM`].
pub const RAFT_INIT_LOG_INDEX: u64 = 5;
