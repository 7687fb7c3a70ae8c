//! Merges as the directory sees them (`tessera region merge A B`; the
//! process and its safety argument are `tessera_multiraft::merge`'s).
//!
//! A merge is one operator on the **source**: first the steps that move its
//! replicas onto the target's stores (add a learner, promote it, remove the
//! replica the target does not have, pair by pair), then one `Merge` step to
//! the source's leader, which prepares the merge and drives it to its end
//! on its own (a leader change or a new directory leader does not stop
//! it). The operator ends when the directory no longer records the source:
//! the target's report (its `version` above both regions') replaced it. A
//! merge the target refused rolls the source back; the operator then sends
//! the step again, until it times out.
//!
//! Refused before anything starts, and nothing changes: a region merged
//! into itself, regions that are not adjacent, a target that has a learner
//! or a membership change in progress, two regions of different keyspaces
//! (keyspace boundaries stay region boundaries: the keyspace rule would
//! split them again), and regions of a **hash keyspace**: its regions are
//! the hash slices it was created with, each placed by the ring and
//! recorded; they stay as they are (a size split inside a slice does too).

use std::collections::BTreeSet;

use tessera_proto::directorypb::MergeRegionRequest;
use tessera_proto::keys;
use tessera_proto::metapb::{PeerRole, Region};

use crate::core::Core;
use crate::leader::LeaderState;
use crate::scheduler::operator::{OperatorKind, Step};
use crate::state::DirectoryState;
use crate::{metrics as m, Error, Result};

/// The keyspace id a region's keys belong to (by its start key; the first
/// region starts at the default keyspace).
pub(crate) fn keyspace_of(region: &Region) -> u32 {
    let mut prefix = [0u8; 4];
    for (i, b) in region.start_key.iter().take(4).enumerate() {
        prefix[i] = *b;
    }
    u32::from_be_bytes(prefix)
}

/// Why `source` cannot merge into `target` as the directory records them.
pub fn check(
    state: &DirectoryState,
    source: &Region,
    target: &Region,
) -> std::result::Result<(), String> {
    if source.id == target.id {
        return Err(format!("region {} cannot merge into itself", source.id));
    }
    let boundary = if !source.end_key.is_empty() && source.end_key == target.start_key {
        source.end_key.clone()
    } else if !target.end_key.is_empty() && target.end_key == source.start_key {
        target.end_key.clone()
    } else {
        return Err(format!(
            "regions {} and {} are not adjacent",
            source.id, target.id
        ));
    };
    for r in [source, target] {
        if keys::is_hash_keyspace(keyspace_of(r)) {
            return Err(format!(
                "region {} belongs to a hash keyspace, whose regions do not merge",
                r.id
            ));
        }
    }
    if let Some(ks) = state
        .keyspaces
        .values()
        .find(|ks| keys::keyspace_range(ks.id).0 == boundary)
    {
        return Err(format!(
            "regions {} and {} meet at the start of keyspace {:?}; keyspaces never share a region",
            source.id, target.id, ks.name
        ));
    }
    if let Some(p) = target
        .peers
        .iter()
        .find(|p| p.role != PeerRole::Voter as i32)
    {
        return Err(format!(
            "region {} has a replica on store {} that is not a voter; retry once its membership change ends",
            target.id, p.store_id
        ));
    }
    Ok(())
}

/// The steps that put `source`'s replicas on `target`'s stores, then the
/// merge; `next_id` gives ids for new peers.
pub fn plan(source: &Region, target: &Region, next_id: &mut dyn FnMut() -> u64) -> Vec<Step> {
    let have: BTreeSet<u64> = source.peers.iter().map(|p| p.store_id).collect();
    let want: BTreeSet<u64> = target.peers.iter().map(|p| p.store_id).collect();
    let mut adds = want.difference(&have).copied();
    let mut removes = have.difference(&want).copied();
    let mut steps = vec![];
    // A learner of the source (left by an unfinished move) on a target
    // store is promoted.
    for p in &source.peers {
        if want.contains(&p.store_id) && p.role != PeerRole::Voter as i32 {
            steps.push(Step::PromoteLearner {
                store_id: p.store_id,
            });
        }
    }
    loop {
        match (adds.next(), removes.next()) {
            (None, None) => break,
            (add, remove) => {
                if let Some(store_id) = add {
                    steps.push(Step::AddLearner {
                        store_id,
                        peer_id: next_id(),
                    });
                    steps.push(Step::PromoteLearner { store_id });
                }
                if let Some(store_id) = remove {
                    steps.push(Step::RemovePeer { store_id });
                }
            }
        }
    }
    let mut target_stores: Vec<u64> = want.into_iter().collect();
    target_stores.sort_unstable();
    steps.push(Step::Merge {
        target_id: target.id,
        target_stores,
    });
    steps
}

/// Ends the merge operators whose source the directory no longer records
/// (merged away), and forgets what merged-away sources last reported.
/// Returns how many operators ended.
pub fn finish_merged(state: &DirectoryState, leader: &mut LeaderState) -> usize {
    leader
        .regions
        .retain(|id, s| s.merging_into == 0 || state.regions.contains_key(id));
    let done: Vec<u64> = leader
        .operators
        .values()
        .filter(|op| op.kind.is_merge() && !state.regions.contains_key(&op.region_id))
        .map(|op| op.region_id)
        .collect();
    for region_id in &done {
        if let Some(op) = leader.operators.remove(region_id) {
            tracing::info!(region_id, operator = %op.id, "operator ended: the region merged");
            metrics::counter!(m::OPERATORS_TOTAL, "kind" => op.kind.as_str(), "outcome" => "finished")
                .increment(1);
        }
    }
    done.len()
}

impl Core {
    /// Merges a region into an adjacent one.
    pub async fn merge_region(&self, req: MergeRegionRequest) -> Result<String> {
        let term = self.leading_term().await?;
        let source = self.known_region(req.source_region_id)?;
        let target = self.known_region(req.target_region_id)?;
        check(&self.state(), &source, &target).map_err(Error::InvalidArgument)?;
        let have: BTreeSet<u64> = source.peers.iter().map(|p| p.store_id).collect();
        let adds = target
            .peers
            .iter()
            .filter(|p| !have.contains(&p.store_id))
            .count() as u32;
        let mut next = if adds > 0 {
            self.alloc_ids(adds).await?
        } else {
            0
        };
        let steps = plan(&source, &target, &mut || {
            next += 1;
            next - 1
        });
        self.admin_operator(term, source.id, OperatorKind::AdminMerge, steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::directorypb::{Keyspace, KeyspaceKind};
    use tessera_proto::metapb::Peer;

    fn region(id: u64, start: &[u8], end: &[u8], stores: &[u64]) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            peers: stores
                .iter()
                .map(|&s| Peer {
                    id: id * 10 + s,
                    store_id: s,
                    role: PeerRole::Voter as i32,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_adjacent_regions_of_one_range_keyspace_merge() {
        let mut state = DirectoryState::default();
        let a = region(1, b"", &keys::encode(0, b"m"), &[1, 2, 3]);
        let b = region(2, &keys::encode(0, b"m"), &keys::encode(5, b""), &[1, 2, 3]);
        let c = region(3, &keys::encode(5, b""), b"", &[1, 2, 3]);
        assert_eq!(check(&state, &a, &b), Ok(()));
        assert_eq!(check(&state, &b, &a), Ok(()));
        assert!(check(&state, &a, &a).unwrap_err().contains("itself"));
        assert!(check(&state, &a, &c).unwrap_err().contains("not adjacent"));
        state.keyspaces.insert(
            "five".into(),
            Keyspace {
                id: 5,
                name: "five".into(),
                kind: KeyspaceKind::Range as i32,
                initial_regions: 1,
                ring_stores: vec![],
            },
        );
        assert!(check(&state, &b, &c)
            .unwrap_err()
            .contains("keyspace \"five\""));
        let hash = keys::HASH_KEYSPACE_BIT | 7;
        let h1 = region(
            4,
            &keys::encode(hash, b""),
            &keys::encode(hash, b"x"),
            &[1, 2, 3],
        );
        let h2 = region(
            5,
            &keys::encode(hash, b"x"),
            &keys::encode(hash + 1, b""),
            &[1, 2, 3],
        );
        assert!(check(&state, &h1, &h2)
            .unwrap_err()
            .contains("hash keyspace"));
        let mut learner = b.clone();
        learner.peers[2].role = PeerRole::Learner as i32;
        assert!(check(&state, &a, &learner)
            .unwrap_err()
            .contains("not a voter"));
    }

    #[test]
    fn the_plan_moves_the_source_onto_the_target_stores_then_merges() {
        let source = region(1, b"", b"m", &[1, 2, 3]);
        let target = region(2, b"m", b"", &[2, 3, 4]);
        let mut id = 100;
        let steps = plan(&source, &target, &mut || {
            id += 1;
            id
        });
        assert_eq!(
            steps,
            vec![
                Step::AddLearner {
                    store_id: 4,
                    peer_id: 101
                },
                Step::PromoteLearner { store_id: 4 },
                Step::RemovePeer { store_id: 1 },
                Step::Merge {
                    target_id: 2,
                    target_stores: vec![2, 3, 4]
                },
            ]
        );
        let aligned = plan(&region(1, b"", b"m", &[3, 2, 4]), &target, &mut || 0);
        assert_eq!(
            aligned,
            vec![Step::Merge {
                target_id: 2,
                target_stores: vec![2, 3, 4]
            }]
        );
    }
}
