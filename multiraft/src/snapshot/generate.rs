//! Generating a region snapshot from one consistent view of the engine.

use protobuf::Message as _;
use raft::eraftpb::{Entry, Snapshot, SnapshotMetadata};
use tessera_proto::raft_serverpb::{
    MergeRecord, MergeState, RaftApplyState, RegionLocalState, SnapshotData, SnapshotFile,
};

use super::SnapManager;
use crate::engine::{Cf, Engine, ExportRange};
use crate::{region, state_keys, Error, RegionId, Result};

/// Writes the snapshot of `region_id` and returns it as raft-rs expects it.
pub fn generate(engine: &dyn Engine, mgr: &SnapManager, region_id: RegionId) -> Result<Snapshot> {
    let tmp = mgr.tmp_dir(region_id);
    let mut seen = None;
    let mut merge = (None, None);
    let exported = engine.export(&tmp, &mut |view| {
        let state: RegionLocalState = decode(
            view.get(Cf::Meta, &state_keys::region_state_key(region_id))?,
            "region state",
        )?;
        let apply: RaftApplyState = decode(
            view.get(Cf::Meta, &state_keys::apply_state_key(region_id))?,
            "apply state",
        )?;
        let index = apply.applied_index;
        let term = if index == apply.truncated_index {
            apply.truncated_term
        } else {
            let bytes = view
                .get(Cf::Raft, &state_keys::raft_log_key(region_id, index))?
                .ok_or_else(|| {
                    Error::corruption(
                        format!("raft log of region {region_id}"),
                        format!("applied entry {index} is missing"),
                    )
                })?;
            Entry::parse_from_bytes(&bytes)
                .map_err(|e| Error::corruption("raft entry", e))?
                .term
        };
        merge = (
            view.get(Cf::Meta, &state_keys::merge_state_key(region_id))?
                .map(|b| decode::<MergeState>(Some(b), "merge state"))
                .transpose()?,
            view.get(Cf::Meta, &state_keys::merge_record_key(region_id))?
                .map(|b| decode::<MergeRecord>(Some(b), "merge record"))
                .transpose()?,
        );
        let region = state.region.unwrap_or_default();
        let range = ExportRange {
            cf: Cf::Default,
            start: region.start_key.clone(),
            end: state_keys::data_range_end(&region.end_key),
        };
        seen = Some((region, index, term));
        Ok(vec![range])
    });
    let exported = match exported {
        Ok(f) => f,
        Err(e) => {
            mgr.remove(&tmp);
            return Err(e);
        }
    };
    let (region, index, term) = seen.expect("the plan ran");
    let dir = mgr.gen_dir(region_id, term, index);
    mgr.remove(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| Error::Engine(format!("{}: {e}", dir.display())))?;
    mgr.remove_generated_except(region_id, Some(&dir));
    let files = exported
        .iter()
        .map(|f| SnapshotFile {
            cf: f.cf.name().to_string(),
            name: f
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size: f.size,
            crc32: f.crc32,
            keys: f.keys,
        })
        .collect();
    let data = SnapshotData {
        region: Some(region.clone()),
        files,
        merge_state: merge.0,
        merge_record: merge.1,
    };
    let mut snap = Snapshot {
        data: prost::Message::encode_to_vec(&data).into(),
        ..Default::default()
    };
    let mut meta = SnapshotMetadata {
        index,
        term,
        ..Default::default()
    };
    meta.set_conf_state(region::conf_state(&region));
    snap.set_metadata(meta);
    Ok(snap)
}

fn decode<M: prost::Message + Default>(bytes: Option<Vec<u8>>, what: &str) -> Result<M> {
    let bytes = bytes.ok_or_else(|| Error::corruption(what, "missing"))?;
    M::decode(bytes.as_slice()).map_err(|e| Error::corruption(what, e))
}
