//! Applying a committed membership change (ConfChange or ConfChangeV2) to a
//! peer: raft-rs computes the new configuration, and the region's peer list
//! is rewritten to match it, with `conf_ver` bumped, in the apply batch.
//!
//! Roles follow the configuration: a voter only in the incoming half of a
//! joint configuration is `IncomingVoter`, a voter being demoted to learner
//! is `DemotingVoter`. The stores of newly named peers come from the entry's
//! [`ConfChangeContext`]. Removing a voter inside a joint configuration has
//! no role to record, so whoever proposes changes must demote first.
//!
//! Deciding which changes to make (and when to leave a joint state that the
//! leader failed to leave) belongs to the store's region operations.

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType};
use raft_proto::ConfChangeI;
use tessera_proto::metapb::{Peer as PeerMeta, PeerRole, Region};
use tessera_proto::raft_serverpb::{ConfChangeContext, PeerState, RegionLocalState};

use crate::engine::{Cf, WriteBatch};
use crate::peer::Peer;
use crate::state_keys;

/// What a membership change did.
#[derive(Debug, PartialEq)]
pub enum ConfChangeOutcome {
    /// The change applied: the region after it, and the peers it removed
    /// (possibly the local one).
    Applied {
        region: Region,
        removed: Vec<PeerMeta>,
        removed_self: bool,
    },
    /// The entry could not be decoded or was refused by raft-rs; nothing
    /// changed.
    Ignored,
}

/// Applies the membership change `entry` to `peer`, staging the new region
/// state in `wb`.
pub fn apply<O: Send + 'static>(
    peer: &mut Peer<O>,
    entry: &Entry,
    wb: &mut WriteBatch,
) -> ConfChangeOutcome {
    let region_id = peer.region_id();
    if peer.merge.is_merging() {
        // Proposed before the region prepared to merge, committed after:
        // a merging region's membership is frozen (`crate::merge`), on
        // every replica alike.
        tracing::warn!(
            region_id,
            index = entry.index,
            "membership change of a merging region ignored"
        );
        return ConfChangeOutcome::Ignored;
    }
    let cc: ConfChangeV2 = match entry.get_entry_type() {
        EntryType::EntryConfChange => match ConfChange::parse_from_bytes(&entry.data) {
            Ok(cc) => cc.into_v2(),
            Err(e) => {
                tracing::error!(region_id, index = entry.index, error = %e, "undecodable conf change");
                return ConfChangeOutcome::Ignored;
            }
        },
        _ => match ConfChangeV2::parse_from_bytes(&entry.data) {
            Ok(cc) => cc,
            Err(e) => {
                tracing::error!(region_id, index = entry.index, error = %e, "undecodable conf change");
                return ConfChangeOutcome::Ignored;
            }
        },
    };
    let context = ConfChangeContext::decode(cc.context.as_ref()).unwrap_or_default();
    let cs = match peer.apply_conf_change(&cc) {
        Ok(cs) => cs,
        Err(e) => {
            tracing::warn!(region_id, index = entry.index, error = %e, "conf change refused by raft");
            return ConfChangeOutcome::Ignored;
        }
    };
    let mut region = peer.region().clone();
    region.peers = peers_for(&cs, &region, &context.peers);
    let removed_peers: Vec<PeerMeta> = peer
        .region()
        .peers
        .iter()
        .filter(|old| !region.peers.iter().any(|p| p.id == old.id))
        .copied()
        .collect();
    let epoch = region.region_epoch.get_or_insert_with(Default::default);
    epoch.conf_ver += 1;
    let removed = !region.peers.iter().any(|p| p.id == peer.peer_id());
    let state = RegionLocalState {
        region: Some(region.clone()),
        state: if removed {
            PeerState::Tombstone as i32
        } else {
            PeerState::Normal as i32
        },
    };
    wb.put_msg(Cf::Meta, state_keys::region_state_key(region_id), &state);
    tracing::info!(region_id, conf_ver = region.region_epoch.unwrap_or_default().conf_ver, peers = ?region.peers, "membership changed");
    peer.storage_mut().set_region(region.clone());
    metrics::counter!(crate::metrics::CONF_CHANGES_TOTAL).increment(1);
    ConfChangeOutcome::Applied {
        region,
        removed: removed_peers,
        removed_self: removed,
    }
}

/// The region's peers as described by `cs`, ordered by peer id.
fn peers_for(cs: &ConfState, region: &Region, named: &[PeerMeta]) -> Vec<PeerMeta> {
    let joint = !cs.voters_outgoing.is_empty();
    let store_of = |id: u64| {
        named
            .iter()
            .chain(region.peers.iter())
            .find(|p| p.id == id)
            .map(|p| p.store_id)
    };
    let mut out: Vec<PeerMeta> = vec![];
    let mut push = |id: u64, role: PeerRole| {
        if out.iter().any(|p| p.id == id) {
            return;
        }
        match store_of(id) {
            Some(store_id) => out.push(PeerMeta {
                id,
                store_id,
                role: role as i32,
            }),
            None => tracing::error!(
                region_id = region.id,
                peer_id = id,
                "conf change names a peer without a store"
            ),
        }
    };
    for &id in &cs.voters {
        let role = if joint && !cs.voters_outgoing.contains(&id) {
            PeerRole::IncomingVoter
        } else {
            PeerRole::Voter
        };
        push(id, role);
    }
    for &id in &cs.learners_next {
        push(id, PeerRole::DemotingVoter);
    }
    for &id in &cs.learners {
        push(id, PeerRole::Learner);
    }
    out.sort_by_key(|p| p.id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u64, role: PeerRole) -> PeerMeta {
        PeerMeta {
            id,
            store_id: id * 10,
            role: role as i32,
        }
    }

    #[test]
    fn roles_follow_a_joint_configuration() {
        let region = Region {
            id: 1,
            peers: vec![
                meta(1, PeerRole::Voter),
                meta(2, PeerRole::Voter),
                meta(3, PeerRole::Learner),
            ],
            ..Default::default()
        };
        let cs = ConfState {
            voters: vec![1, 3],
            voters_outgoing: vec![1, 2],
            learners_next: vec![2],
            ..Default::default()
        };
        let peers = peers_for(&cs, &region, &[]);
        assert_eq!(
            peers,
            vec![
                meta(1, PeerRole::Voter),
                meta(2, PeerRole::DemotingVoter),
                meta(3, PeerRole::IncomingVoter)
            ]
        );
        assert_eq!(
            crate::region::conf_state(&Region {
                peers,
                ..Default::default()
            })
            .voters_outgoing,
            vec![1, 2]
        );
    }

    #[test]
    fn new_peers_take_their_store_from_the_context() {
        let region = Region {
            id: 1,
            peers: vec![meta(1, PeerRole::Voter)],
            ..Default::default()
        };
        let cs = ConfState {
            voters: vec![1],
            learners: vec![4],
            ..Default::default()
        };
        let peers = peers_for(&cs, &region, &[meta(4, PeerRole::Learner)]);
        assert_eq!(
            peers,
            vec![meta(1, PeerRole::Voter), meta(4, PeerRole::Learner)]
        );
    }
}
