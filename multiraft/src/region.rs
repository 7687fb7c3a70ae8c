//! Small facts about regions that every module needs: the Raft
//! configuration its peers describe and how a fresh region is written to
//! the engine — and, re-exported from `tessera_proto::region` where they
//! are defined once, whether a key or range is inside one, its epoch and
//! its peers.

use raft::eraftpb::ConfState;
use tessera_proto::metapb::{PeerRole, Region};
use tessera_proto::raft_serverpb::{PeerState, RaftApplyState, RaftLocalState, RegionLocalState};

use crate::engine::{Cf, WriteBatch};
use crate::{state_keys, RAFT_INIT_LOG_INDEX, RAFT_INIT_LOG_TERM};

pub use tessera_proto::region::{
    contains_key, epoch, find_peer, find_peer_on_store, overlaps, ranges_overlap,
};

/// The Raft configuration described by the roles of `region`'s peers. A
/// peer in an incoming or demoting role means a joint configuration.
pub fn conf_state(region: &Region) -> ConfState {
    let mut cs = ConfState::default();
    let mut joint = false;
    for p in &region.peers {
        match PeerRole::try_from(p.role).unwrap_or(PeerRole::Voter) {
            PeerRole::Voter => {
                cs.voters.push(p.id);
                cs.voters_outgoing.push(p.id);
            }
            PeerRole::Learner => cs.learners.push(p.id),
            PeerRole::IncomingVoter => {
                joint = true;
                cs.voters.push(p.id);
            }
            PeerRole::DemotingVoter => {
                joint = true;
                cs.voters_outgoing.push(p.id);
                cs.learners_next.push(p.id);
            }
        }
    }
    if !joint {
        cs.voters_outgoing.clear();
    } else {
        cs.auto_leave = true;
    }
    cs
}

/// Writes the initial state of a new region replica into `wb`: the region
/// itself and a Raft log that starts at [`RAFT_INIT_LOG_INDEX`] with
/// everything before it "applied". Every replica written this way agrees with
/// every other without a snapshot.
pub fn write_initial_state(region: &Region, wb: &mut WriteBatch) {
    let raft_state = RaftLocalState {
        term: RAFT_INIT_LOG_TERM,
        vote: 0,
        commit: RAFT_INIT_LOG_INDEX,
        last_index: RAFT_INIT_LOG_INDEX,
    };
    let apply_state = RaftApplyState {
        applied_index: RAFT_INIT_LOG_INDEX,
        truncated_index: RAFT_INIT_LOG_INDEX,
        truncated_term: RAFT_INIT_LOG_TERM,
    };
    let region_state = RegionLocalState {
        region: Some(region.clone()),
        state: PeerState::Normal as i32,
    };
    wb.put_msg(Cf::Meta, state_keys::raft_state_key(region.id), &raft_state);
    wb.put_msg(
        Cf::Meta,
        state_keys::apply_state_key(region.id),
        &apply_state,
    );
    wb.put_msg(
        Cf::Meta,
        state_keys::region_state_key(region.id),
        &region_state,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::metapb::Peer;

    fn peer(id: u64, role: PeerRole) -> Peer {
        Peer {
            id,
            store_id: id,
            role: role as i32,
        }
    }

    #[test]
    fn key_ranges() {
        let r = Region {
            start_key: b"b".to_vec(),
            end_key: b"d".to_vec(),
            ..Default::default()
        };
        assert!(!contains_key(&r, b"a"));
        assert!(contains_key(&r, b"b"));
        assert!(contains_key(&r, b"c\xff"));
        assert!(!contains_key(&r, b"d"));
        let unbounded = Region {
            start_key: b"d".to_vec(),
            ..Default::default()
        };
        assert!(contains_key(&unbounded, b"zzz"));
        assert!(!overlaps(&r, &unbounded));
        assert!(ranges_overlap(b"", b"", b"x", b"y"));
        assert!(!ranges_overlap(b"a", b"b", b"b", b"c"));
    }

    #[test]
    fn conf_state_follows_roles() {
        let r = Region {
            peers: vec![
                peer(1, PeerRole::Voter),
                peer(2, PeerRole::Voter),
                peer(3, PeerRole::Learner),
            ],
            ..Default::default()
        };
        let cs = conf_state(&r);
        assert_eq!(cs.voters, vec![1, 2]);
        assert_eq!(cs.learners, vec![3]);
        assert!(cs.voters_outgoing.is_empty());

        let joint = Region {
            peers: vec![
                peer(1, PeerRole::Voter),
                peer(2, PeerRole::DemotingVoter),
                peer(3, PeerRole::IncomingVoter),
            ],
            ..Default::default()
        };
        let cs = conf_state(&joint);
        assert_eq!(cs.voters, vec![1, 3]);
        assert_eq!(cs.voters_outgoing, vec![1, 2]);
        assert_eq!(cs.learners_next, vec![2]);
        assert!(cs.auto_leave);
    }
}
