//! Operators an administrator asks for (`tessera region split | move |
//! transfer-leader`, `tessera store remove | evict-leaders |
//! restore-leaders`; `region merge` is in `merge.rs`), checked before they
//! start.
//!
//! A request is refused, and nothing changes, when it cannot make sense: a
//! region or store that does not exist, a split key outside the region, a
//! move onto a store that already holds a replica or is not `Up`, a
//! transfer to a learner, removing a store twice. An admin operator cancels
//! a balance operator on its region (an admin knows what it wants; whatever
//! a cancelled balance leaves behind, such as an extra learner, the repair
//! rule tidies up) and is refused while any other operator runs there, or
//! while a merge into the region runs. A merge treats its target the same
//! way: a balance operator there is cancelled, any other refuses it.

use tessera_proto::directorypb::directory_command::Cmd;
use tessera_proto::directorypb::*;
use tessera_proto::metapb::{PeerRole, Region, Store, StoreState};

use crate::core::Core;
use crate::leader::state_name;
use crate::scheduler::operator::{Operator, OperatorKind, Step};
use crate::{metrics as m, Error, Result};

impl Core {
    /// The region as the directory knows it, or `NotFound`.
    pub(crate) fn known_region(&self, region_id: u64) -> Result<Region> {
        self.state()
            .regions
            .get(&region_id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("region {region_id}")))
    }

    /// Starts an admin operator on a region, cancelling a balance operator
    /// there; any other operator makes the request fail.
    pub(crate) fn admin_operator(
        &self,
        term: u64,
        region_id: u64,
        kind: OperatorKind,
        steps: Vec<Step>,
    ) -> Result<String> {
        let mut ls = self.leader_view(term);
        // A merge also holds its target: nothing else may change it.
        let merge_target = steps.iter().find_map(|s| match s {
            Step::Merge { target_id, .. } => Some(*target_id),
            _ => None,
        });
        for id in std::iter::once(region_id).chain(merge_target) {
            if let Some(op) = ls.operators.values().find(|o| o.merge_target() == Some(id)) {
                return Err(Error::Busy(format!(
                    "region {id} is the target of operator {} (merge of region {}); retry once \
                     it finishes (`tessera operator list` lists it)",
                    op.id, op.region_id
                )));
            }
            if ls.reported_merges(&self.state()).contains(&id) {
                return Err(Error::Busy(format!(
                    "region {id} takes part in a merge still running at its source's leader; \
                     retry once it ends"
                )));
            }
            if let Some(op) = ls.operators.get(&id) {
                if !op.kind.is_balance() {
                    return Err(Error::Busy(format!(
                        "region {id} has operator {} ({}) in progress; retry once it \
                         finishes (`tessera operator list` lists it)",
                        op.id,
                        op.kind.as_str()
                    )));
                }
            }
        }
        for id in std::iter::once(region_id).chain(merge_target) {
            if let Some(op) = ls.operators.remove(&id) {
                tracing::info!(region_id = id, operator = %op.id, "operator cancelled for an admin operator");
                metrics::counter!(m::OPERATORS_TOTAL, "kind" => op.kind.as_str(), "outcome" => "cancelled")
                    .increment(1);
            }
        }
        let op = Operator::new(
            ls.next_operator,
            region_id,
            kind,
            steps,
            self.schedule.operator_timeout,
        );
        ls.next_operator += 1;
        let id = op.id.clone();
        ls.operators.insert(region_id, op);
        metrics::counter!(m::OPERATORS_TOTAL, "kind" => kind.as_str(), "outcome" => "created")
            .increment(1);
        Ok(id)
    }

    /// Splits a region at `split_keys` (none: at its middle).
    pub async fn split_region(&self, req: SplitRegionRequest) -> Result<String> {
        let term = self.leading_term().await?;
        let region = self.known_region(req.region_id)?;
        let keys = tessera_proto::region::normalize_split_keys(&region, &req.split_keys)
            .map_err(Error::InvalidArgument)?;
        let from_version = region.region_epoch.unwrap_or_default().version;
        self.admin_operator(
            term,
            region.id,
            OperatorKind::AdminSplit,
            vec![Step::Split { keys, from_version }],
        )
    }

    /// Moves the replica of a region on one store to another.
    pub async fn move_region(&self, req: MoveRegionRequest) -> Result<String> {
        let term = self.leading_term().await?;
        let region = self.known_region(req.region_id)?;
        let target = self.state().stores.get(&req.to_store_id).cloned();
        if !region.peers.iter().any(|p| p.store_id == req.from_store_id) {
            return Err(Error::InvalidArgument(format!(
                "region {} has no replica on store {}",
                region.id, req.from_store_id
            )));
        }
        if region.peers.iter().any(|p| p.store_id == req.to_store_id) {
            return Err(Error::InvalidArgument(format!(
                "region {} already has a replica on store {}",
                region.id, req.to_store_id
            )));
        }
        let target = target.ok_or_else(|| Error::NotFound(format!("store {}", req.to_store_id)))?;
        let state = self
            .leader_view(term)
            .store_state(&target, &self.schedule.lifecycle);
        if state != StoreState::Up {
            return Err(Error::InvalidArgument(format!(
                "store {} is {} and cannot take a replica",
                target.id,
                state_name(state)
            )));
        }
        let peer_id = self.alloc_ids(1).await?;
        self.admin_operator(
            term,
            region.id,
            OperatorKind::AdminMove,
            vec![
                Step::AddLearner {
                    store_id: req.to_store_id,
                    peer_id,
                },
                Step::PromoteLearner {
                    store_id: req.to_store_id,
                },
                Step::RemovePeer {
                    store_id: req.from_store_id,
                },
            ],
        )
    }

    /// Hands a region's leadership to its voter on a store.
    pub async fn transfer_leader(&self, req: TransferLeaderRequest) -> Result<String> {
        let term = self.leading_term().await?;
        let region = self.known_region(req.region_id)?;
        let peer = region
            .peers
            .iter()
            .find(|p| p.store_id == req.to_store_id)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "region {} has no replica on store {}",
                    region.id, req.to_store_id
                ))
            })?;
        if peer.role != PeerRole::Voter as i32 {
            return Err(Error::InvalidArgument(format!(
                "the replica of region {} on store {} is a learner and cannot lead",
                region.id, req.to_store_id
            )));
        }
        if self
            .state()
            .stores
            .get(&req.to_store_id)
            .is_some_and(|s| s.evict_leaders)
        {
            return Err(Error::InvalidArgument(format!(
                "store {} has its leaders evicted (tessera store restore-leaders {} ends that)",
                req.to_store_id, req.to_store_id
            )));
        }
        self.admin_operator(
            term,
            region.id,
            OperatorKind::AdminTransferLeader,
            vec![Step::TransferLeader {
                to_store_id: req.to_store_id,
            }],
        )
    }

    /// How many stores `keep` accepts, with their state as this leader
    /// sees it now.
    fn count_stores(&self, term: u64, keep: impl Fn(&Store, StoreState) -> bool) -> usize {
        let state = self.state();
        let ls = self.leader_view(term);
        state
            .stores
            .values()
            .filter(|s| keep(s, ls.store_state(s, &self.schedule.lifecycle)))
            .count()
    }

    /// Evicts every leadership from a store (`evict`), or lets it lead again.
    /// Recorded through Raft, so it outlives a directory leader change and
    /// the store's restarts; the scheduler's evict-leader rule carries it
    /// out. Refused for an unknown or removed store, and when no other
    /// store could lead.
    pub async fn set_evict_leaders(&self, req: SetEvictLeadersRequest) -> Result<()> {
        let term = self.leading_term().await?;
        if req.evict {
            let others = self.count_stores(term, |s, state| {
                s.id != req.store_id && !s.evict_leaders && state == StoreState::Up
            });
            if others == 0 {
                return Err(Error::InvalidArgument(format!(
                    "no store but {} could lead: nothing to hand its leaders to",
                    req.store_id
                )));
            }
        }
        self.node
            .propose(Cmd::SetEvictLeaders(req))
            .await
            .map(|_| ())
    }

    /// Decommissions a store: `Offline`, then `Tombstone` once its replicas
    /// have moved away. Refused when the stores left that can take
    /// replicas (`Up` or `Disconnected`) would be fewer than a region's
    /// replicas (`max_replicas`): its regions could not be rebuilt
    /// elsewhere, and the store would stay `Offline` for good.
    pub async fn remove_store(&self, id: u64) -> Result<()> {
        let term = self.leading_term().await?;
        let store = self
            .state()
            .stores
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("store {id}")))?;
        match StoreState::try_from(store.state).unwrap_or(StoreState::Up) {
            StoreState::Tombstone => {
                return Err(Error::InvalidArgument(format!(
                    "store {id} is already removed"
                )))
            }
            StoreState::Offline => return Ok(()),
            _ => {}
        }
        let left = self.count_stores(term, |s, state| {
            s.id != id && matches!(state, StoreState::Up | StoreState::Disconnected)
        });
        let needed = self.schedule.max_replicas;
        if left < needed {
            return Err(Error::InvalidArgument(format!(
                "removing store {id} would leave {left} working store(s), and regions keep \
                 {needed} replicas: add a store first"
            )));
        }
        self.node
            .propose(Cmd::SetStoreState(SetStoreState {
                store_id: id,
                state: StoreState::Offline as i32,
            }))
            .await
            .map(|_| ())
    }
}
