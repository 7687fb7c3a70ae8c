//! The receiving end of a snapshot transfer, shared by every transport.

use std::path::PathBuf;

use protobuf::Message as _;
use raft::eraftpb::Message;
use tessera_proto::raft_serverpb::RaftMessage;

use super::apply::META_FILE;
use super::{decode_data, SnapManager};
use crate::{Error, Result};

/// Where the files of the snapshot in `msg` go on this store.
pub fn target_dir(mgr: &SnapManager, msg: &RaftMessage) -> Result<PathBuf> {
    let m = Message::parse_from_bytes(&msg.message)
        .map_err(|e| Error::corruption("snapshot message", e))?;
    let meta = m.get_snapshot().get_metadata();
    Ok(mgr.recv_dir(msg.region_id, meta.term, meta.index))
}

/// Checks the files of the snapshot in `msg` (already written to
/// [`target_dir`]) and records its description; the message may then be
/// delivered to the poller.
pub fn complete(mgr: &SnapManager, msg: &RaftMessage) -> Result<()> {
    let m = Message::parse_from_bytes(&msg.message)
        .map_err(|e| Error::corruption("snapshot message", e))?;
    let data = decode_data(m.get_snapshot())?;
    let dir = target_dir(mgr, msg)?;
    let files = SnapManager::files_in(&dir, &data.files)?;
    SnapManager::verify(&files)?;
    std::fs::write(dir.join(META_FILE), prost::Message::encode_to_vec(&data))
        .map_err(|e| Error::Engine(format!("{}: {e}", dir.display())))?;
    Ok(())
}
