//! Splitting a region.
//!
//! A split is an admin command in the region's Raft log carrying the split
//! keys and the ids of the new regions and their peers (allocated from the
//! directory before proposing). When it applies, every replica — in the
//! same apply batch — narrows the region to the range below the first key,
//! creates one new region per key with peers on the same stores and a fresh
//! Raft log (so replicas agree without a snapshot), and bumps `version` of
//! all of them. The store whose peer led the split region campaigns for the
//! new regions at once.
//!
//! The split keys are checked again at apply, against the region as it is
//! then; a command whose epoch (range or membership) changed since it was
//! proposed is refused with EpochNotMatch and changes nothing.

use std::sync::Arc;

use tessera_multiraft::engine::{Cf, Engine};
use tessera_multiraft::mailbox::{EpochCheck, PollerMsg, WriteClass};
use tessera_multiraft::{region, state_keys as raft_keys, ApplyContext};
use tessera_proto::errorpb::RegionError;
use tessera_proto::metapb::{Peer, Region, RegionEpoch};
use tessera_proto::raft_serverpb::{admin_command, NewRegionIds, SplitCommand};
use tokio::sync::oneshot;

use crate::admin::AdminApi;
use crate::kv::command::{self, CmdResult};
use crate::{Error, Result};

pub use tessera_proto::region::check_split_keys;

/// The regions a split of `region` at `keys` produces, the region itself
/// first.
pub fn split_layout(
    region: &Region,
    keys: &[Vec<u8>],
    ids: &[NewRegionIds],
) -> std::result::Result<Vec<Region>, String> {
    check_split_keys(region, keys)?;
    if ids.len() != keys.len() {
        return Err(format!(
            "{} split keys but ids for {} regions",
            keys.len(),
            ids.len()
        ));
    }
    let epoch = region::epoch(region);
    let new_epoch = RegionEpoch::new(epoch.conf_ver, epoch.version + 1);
    let mut derived = region.clone();
    derived.end_key = keys[0].clone();
    derived.region_epoch = Some(new_epoch);
    let mut out = vec![derived];
    for (i, (key, ids)) in keys.iter().zip(ids).enumerate() {
        if ids.peer_ids.len() != region.peers.len() {
            return Err(format!(
                "new region {} has {} peer ids for {} peers",
                ids.region_id,
                ids.peer_ids.len(),
                region.peers.len()
            ));
        }
        let peers = region
            .peers
            .iter()
            .zip(&ids.peer_ids)
            .map(|(p, &id)| Peer {
                id,
                store_id: p.store_id,
                role: p.role,
            })
            .collect();
        out.push(Region {
            id: ids.region_id,
            start_key: key.clone(),
            end_key: keys
                .get(i + 1)
                .cloned()
                .unwrap_or_else(|| region.end_key.clone()),
            region_epoch: Some(new_epoch),
            peers,
        });
    }
    Ok(out)
}

/// Applies a split command (the state machine's half).
pub fn apply(
    cx: &mut ApplyContext<'_>,
    proposed: RegionEpoch,
    split: SplitCommand,
) -> Result<Vec<CmdResult>, RegionError> {
    let region = cx.region().clone();
    let current = region::epoch(&region);
    if proposed != current {
        return Err(RegionError::epoch_not_match(
            format!(
                "region {} epoch is {current} at apply, split has {proposed}",
                region.id
            ),
            vec![region],
        ));
    }
    match split_layout(&region, &split.split_keys, &split.new_regions) {
        Ok(mut regions) => {
            let derived = regions.remove(0);
            cx.split(derived.clone(), regions.clone());
            regions.insert(0, derived);
            Ok(vec![CmdResult::Split { regions }])
        }
        Err(reason) => Ok(vec![CmdResult::Refused(reason)]),
    }
}

/// Size in bytes of the region's data and the key at which about half of it
/// lies below, scanning at most `limit` bytes (the size is then a lower
/// bound). `None` for the key when the region has fewer than two keys.
pub fn size_and_middle_key(
    engine: &dyn Engine,
    region: &Region,
    limit: u64,
) -> Result<(u64, Option<Vec<u8>>)> {
    let end = raft_keys::data_range_end(&region.end_key);
    // Remember a key every `step` bytes; pick the one nearest the middle.
    let step = (limit / 256).max(1);
    let mut samples: Vec<(u64, Vec<u8>)> = vec![];
    let mut size = 0u64;
    let mut next_sample = 0u64;
    engine
        .scan(Cf::Default, &region.start_key, &end, false, &mut |k, v| {
            if size >= next_sample {
                samples.push((size, k.to_vec()));
                next_sample = size + step;
            }
            size += (k.len() + v.len()) as u64;
            size < limit
        })
        .map_err(|e| Error::Engine(e.to_string()))?;
    let half = size / 2;
    let middle = samples
        .into_iter()
        .filter(|(_, k)| k.as_slice() > region.start_key.as_slice())
        .min_by_key(|(at, _)| at.abs_diff(half))
        .map(|(_, k)| k);
    Ok((size, middle))
}

/// Splits `region_id` (led by this store) at `keys`, or at its middle key
/// when `keys` is empty, and waits until the split applies. Returns the
/// region and the new regions in key order.
pub async fn split_region(
    api: &AdminApi,
    region_id: u64,
    keys: Vec<Vec<u8>>,
) -> Result<Vec<Region>> {
    let info = api.leader_info(region_id).await?;
    let region = info.region;
    let keys = if keys.is_empty() {
        let engine: Arc<dyn Engine> = api.engine().clone();
        let r = region.clone();
        let (_, middle) =
            tokio::task::spawn_blocking(move || size_and_middle_key(engine.as_ref(), &r, u64::MAX))
                .await
                .map_err(|e| Error::Engine(e.to_string()))??;
        vec![middle.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "region {region_id} has too few keys to split at its middle"
            ))
        })?]
    } else {
        keys
    };
    check_split_keys(&region, &keys).map_err(Error::InvalidArgument)?;
    let per_region = 1 + region.peers.len();
    let ids = api
        .directory()
        .alloc_ids((keys.len() * per_region) as u32)
        .await?;
    let new_regions = ids
        .chunks(per_region)
        .map(|c| NewRegionIds {
            region_id: c[0],
            peer_ids: c[1..].to_vec(),
        })
        .collect();
    let epoch = region::epoch(&region);
    let data = command::encode_admin(
        region_id,
        epoch,
        admin_command::Cmd::Split(SplitCommand {
            split_keys: keys,
            new_regions,
        }),
    );
    let (tx, rx) = oneshot::channel();
    api.mailbox().send(PollerMsg::Propose {
        region_id,
        epoch: EpochCheck::all(epoch),
        data,
        // A split frees nothing but must not wait for space: it is small.
        class: WriteClass::System,
        cb: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    })?;
    let output = api.wait(rx).await?.map_err(Error::region)?;
    command::split_regions(output).map_err(Error::InvalidArgument)
}
