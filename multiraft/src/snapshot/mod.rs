//! Region snapshots: how a replica that is missing log entries (a new
//! learner, a follower behind a compacted log) gets the region's state.
//!
//! - **Generate** ([`generate`], on a worker thread of the leader's store):
//!   one consistent view of the engine gives the region state, the apply
//!   state and the region's data; the data is written to files (SST with
//!   RocksDB) in `snap/gen_<region>_<term>_<index>/`. The snapshot's index is
//!   the applied index of that view, so data and index agree.
//! - **Send**: the transport streams the files in ~1 MiB chunks on their own
//!   gRPC stream, then delivers the MsgSnapshot; the receiver keeps them in
//!   `snap/rcv_<region>_<term>_<index>/` and checks sizes and checksums;
//!   a second stream of a snapshot already received keeps the first copy
//!   (see [`SnapManager`]).
//! - **Apply** (the poller, [`apply`]): the region's new Raft, apply and
//!   region state (marked `Applying`) are written with the round's synced
//!   batch; then the region's data range is deleted and the files ingested;
//!   then the state becomes `Normal` and the files are removed. A crash in
//!   between restarts the peer in `Applying`, and the data step is redone
//!   from the kept files.

pub mod apply;
mod generate;
mod manager;
pub mod receive;

pub use generate::generate;
pub use manager::{Receive, ReceiveGuard, SnapManager};

use raft::eraftpb::Snapshot;
use tessera_proto::raft_serverpb::SnapshotData;

use crate::{Error, Result};

/// The region and files described by a raft-rs snapshot.
pub fn decode_data(snap: &Snapshot) -> Result<SnapshotData> {
    prost::Message::decode(snap.data.as_ref()).map_err(|e| Error::corruption("snapshot data", e))
}
