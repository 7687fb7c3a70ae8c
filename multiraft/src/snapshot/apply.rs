//! Applying a received snapshot, in two steps around the round's synced
//! write (see the module above for the crash story).

use std::path::PathBuf;

use raft::eraftpb::Snapshot;
use tessera_proto::metapb::Region;
use tessera_proto::raft_serverpb::{MergeRecord, MergeState, PeerState, RegionLocalState};

use super::{decode_data, SnapManager};
use crate::engine::{Cf, Engine, ExportedFile, WriteBatch};
use crate::storage::PeerStorage;
use crate::{state_keys, Error, Result};

/// The name of the file, in a received snapshot's directory, that describes
/// it (an encoded `SnapshotData`), written once every file has arrived.
pub const META_FILE: &str = "snapshot.meta";

/// What is left to do once the new states are durable.
#[derive(Debug)]
pub struct PendingApply {
    pub region_id: u64,
    /// The range the peer held before (empty for a new peer).
    pub old_region: Region,
    pub region: Region,
    pub index: u64,
    pub term: u64,
    pub dir: PathBuf,
    pub files: Vec<ExportedFile>,
    /// The region's merge state and record as of the snapshot (written
    /// with the staged states).
    pub merge_state: Option<MergeState>,
    pub merge_record: MergeRecord,
}

/// Stages the states of `snap` for the peer whose storage is `storage` into
/// `wb`.
pub fn stage(
    storage: &mut PeerStorage,
    mgr: &SnapManager,
    snap: &Snapshot,
    wb: &mut WriteBatch,
) -> Result<PendingApply> {
    let data = decode_data(snap)?;
    let meta = snap.get_metadata();
    let (index, term) = (meta.index, meta.term);
    let region = data.region.clone().unwrap_or_default();
    let region_id = storage.region_id();
    if region.id != region_id {
        return Err(Error::corruption(
            format!("snapshot for region {region_id}"),
            format!("describes region {}", region.id),
        ));
    }
    let dir = mgr.recv_dir(region_id, term, index);
    let files = SnapManager::received_files(&dir)?;
    let old_region = storage.region().clone();
    storage.apply_snapshot(region.clone(), index, term, wb);
    let merge_record = data.merge_record.clone().unwrap_or_default();
    match &data.merge_state {
        Some(m) => wb.put_msg(Cf::Meta, state_keys::merge_state_key(region_id), m),
        None => wb.delete(Cf::Meta, state_keys::merge_state_key(region_id).to_vec()),
    }
    wb.put_msg(
        Cf::Meta,
        state_keys::merge_record_key(region_id),
        &merge_record,
    );
    Ok(PendingApply {
        region_id,
        old_region,
        region,
        index,
        term,
        dir,
        files,
        merge_state: data.merge_state,
        merge_record,
    })
}

/// Replaces the region's data with the snapshot's and marks the region
/// `Normal`. Safe to run again after a crash.
pub fn finish(engine: &dyn Engine, mgr: &SnapManager, p: &PendingApply) -> Result<()> {
    SnapManager::verify(&p.files)?;
    let mut wb = WriteBatch::default();
    for r in [&p.old_region, &p.region] {
        if !r.peers.is_empty() {
            wb.delete_range(
                Cf::Default,
                r.start_key.clone(),
                state_keys::data_range_end(&r.end_key),
            );
        }
    }
    engine.write(&wb, false)?;
    fail::fail_point!("snapshot_before_ingest");
    engine.ingest(&p.files)?;
    fail::fail_point!("snapshot_after_ingest");
    let mut wb = WriteBatch::default();
    wb.put_msg(
        Cf::Meta,
        state_keys::region_state_key(p.region_id),
        &RegionLocalState {
            region: Some(p.region.clone()),
            state: PeerState::Normal as i32,
        },
    );
    engine.write(&wb, true)?;
    mgr.remove(&p.dir);
    Ok(())
}

/// The unfinished apply of a region found `Applying` at start.
pub fn resume(mgr: &SnapManager, region: Region, term: u64, index: u64) -> Result<PendingApply> {
    let dir = mgr.recv_dir(region.id, term, index);
    let files = SnapManager::received_files(&dir).map_err(|e| {
        Error::corruption(format!("snapshot of region {} being applied", region.id), e)
    })?;
    Ok(PendingApply {
        region_id: region.id,
        old_region: Region::default(),
        region,
        index,
        term,
        dir,
        files,
        // Written with the staged states before the restart.
        merge_state: None,
        merge_record: MergeRecord::default(),
    })
}
