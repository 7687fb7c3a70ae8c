//! Membership changes of a region: add a learner, promote a learner to
//! voter, remove a peer — one simple change at a time, each bumping
//! `conf_ver`. Moving a replica is the sequence add learner → wait until it
//! caught up → promote → remove the old one (the directory's operators, or a
//! caller, drive it step by step).
//!
//! What is refused, with a clear reason: adding a second peer on a store;
//! promoting a voter; removing the leader itself (transfer leadership first)
//! or the last voter. The mechanics of applying a change (roles, the peer
//! list, a removed peer destroying its data) live in `tessera-multiraft`.

use tessera_multiraft::mailbox::{ConfChangeItem, ConfChangeKind, EpochCheck};
use tessera_multiraft::region;
use tessera_proto::adminpb::ChangePeerKind;
use tessera_proto::metapb::{Peer, PeerRole, Region};

use crate::admin::AdminApi;
use crate::{Error, Result};

fn role(p: &Peer) -> PeerRole {
    PeerRole::try_from(p.role).unwrap_or(PeerRole::Voter)
}

/// Changes the peer of `region_id` on `store_id` and waits until the change
/// applies; returns the region after it. `peer_id` 0 allocates an id for an
/// added learner.
pub async fn change_peer(
    api: &AdminApi,
    region_id: u64,
    kind: ChangePeerKind,
    store_id: u64,
    peer_id: u64,
) -> Result<Region> {
    let info = api.leader_info(region_id).await?;
    let region = &info.region;
    let existing = region::find_peer_on_store(region, store_id).copied();
    let item = match kind {
        ChangePeerKind::AddLearner => {
            if let Some(p) = existing {
                return Err(Error::InvalidArgument(format!(
                    "store {store_id} already holds peer {} of region {region_id}",
                    p.id
                )));
            }
            let id = if peer_id != 0 {
                peer_id
            } else {
                api.directory().alloc_ids(1).await?[0]
            };
            ConfChangeItem {
                kind: ConfChangeKind::AddLearner,
                peer: Peer {
                    id,
                    store_id,
                    role: PeerRole::Learner as i32,
                },
            }
        }
        ChangePeerKind::PromoteLearner => {
            let p = existing.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "region {region_id} has no peer on store {store_id}"
                ))
            })?;
            if role(&p) != PeerRole::Learner {
                return Err(Error::InvalidArgument(format!(
                    "peer {} of region {region_id} on store {store_id} is not a learner",
                    p.id
                )));
            }
            ConfChangeItem {
                kind: ConfChangeKind::PromoteLearner,
                peer: Peer {
                    role: PeerRole::Voter as i32,
                    ..p
                },
            }
        }
        ChangePeerKind::RemovePeer => {
            let p = existing.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "region {region_id} has no peer on store {store_id}"
                ))
            })?;
            if p.id == info.peer_id {
                return Err(Error::InvalidArgument(format!(
                    "peer {} on store {store_id} leads region {region_id}; transfer leadership first",
                    p.id
                )));
            }
            let voters_left = region
                .peers
                .iter()
                .filter(|q| q.id != p.id && role(q) == PeerRole::Voter)
                .count();
            if role(&p) == PeerRole::Voter && voters_left == 0 {
                return Err(Error::InvalidArgument(format!(
                    "peer {} is the last voter of region {region_id}",
                    p.id
                )));
            }
            ConfChangeItem {
                kind: ConfChangeKind::RemovePeer,
                peer: p,
            }
        }
    };
    let epoch = EpochCheck::all(region::epoch(region));
    let change = api.mailbox().change_peers(region_id, epoch, vec![item]);
    match tokio::time::timeout(api.timeout(), change).await {
        Err(_) => Err(Error::Timeout(api.timeout())),
        Ok(r) => Ok(r?),
    }
}
