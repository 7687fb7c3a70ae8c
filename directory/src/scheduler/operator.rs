//! Operators: a decision about one region, carried out as a sequence of
//! steps by the region's leader. The directory sends the current step in
//! the reply to each heartbeat of the region and moves to the next once a
//! heartbeat shows it done. An operator that does not finish in time is
//! dropped (the scheduler decides again from the region's state).

use std::time::{Duration, Instant};

use tessera_proto::directorypb::operator_step::{self, Step as StepProto};
use tessera_proto::directorypb::{OperatorInfo, OperatorStep, PeerProgress};
use tessera_proto::metapb::{Peer, PeerRole, Region};

/// Entries a learner may lag behind before it is promoted.
const CATCH_UP_LAG_ENTRIES: u64 = 64;

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    AddLearner {
        store_id: u64,
        peer_id: u64,
    },
    PromoteLearner {
        store_id: u64,
    },
    RemovePeer {
        store_id: u64,
    },
    TransferLeader {
        to_store_id: u64,
    },
    /// Split at `keys` (empty: middle); done once the region's version
    /// passes `from_version`.
    Split {
        keys: Vec<Vec<u8>>,
        from_version: u64,
    },
    /// Merge the region into `target_id` (adjacent, replicas on the same
    /// stores): its leader prepares and drives the merge. The operator
    /// ends once the directory no longer records the region (its target's
    /// report replaced it; see `heartbeats.rs`). `target_stores` are the
    /// target's stores the plan aligned the source to (sorted): if the
    /// target's replicas move meanwhile, the operator is dropped.
    Merge {
        target_id: u64,
        target_stores: Vec<u64>,
    },
}

fn peer_on(region: &Region, store_id: u64) -> Option<&Peer> {
    region.peers.iter().find(|p| p.store_id == store_id)
}

impl Step {
    /// Whether the region (as its leader last reported it) shows this step
    /// done.
    pub fn is_done(&self, region: &Region, leader: Option<&Peer>) -> bool {
        match self {
            Step::AddLearner { store_id, .. } => peer_on(region, *store_id).is_some(),
            Step::PromoteLearner { store_id } => {
                peer_on(region, *store_id).is_some_and(|p| p.role == PeerRole::Voter as i32)
            }
            Step::RemovePeer { store_id } => peer_on(region, *store_id).is_none(),
            Step::TransferLeader { to_store_id } => {
                leader.is_some_and(|l| l.store_id == *to_store_id)
            }
            Step::Split { from_version, .. } => {
                region.region_epoch.unwrap_or_default().version > *from_version
            }
            Step::Merge { .. } => false,
        }
    }

    /// Whether the step may be sent now: a learner is promoted only once it
    /// has caught up; a merge is not asked for again while the source
    /// reports it under way (`merging_into`: its leader drives it to its
    /// end, and a step sent again would be answered "done" at once, and
    /// reported, and sent again, for as long as the merge takes).
    pub fn is_ready(&self, region: &Region, progress: &[PeerProgress], merging_into: u64) -> bool {
        match self {
            Step::Merge { target_id, .. } => merging_into != *target_id,
            Step::PromoteLearner { store_id } => {
                let Some(p) = peer_on(region, *store_id) else {
                    return false;
                };
                let best = progress.iter().map(|x| x.matched).max().unwrap_or(0);
                progress
                    .iter()
                    .find(|x| x.peer_id == p.id)
                    .is_some_and(|x| x.matched + CATCH_UP_LAG_ENTRIES >= best && x.matched > 0)
            }
            _ => true,
        }
    }

    pub fn to_proto(&self) -> OperatorStep {
        let step = match self {
            Step::AddLearner { store_id, peer_id } => {
                StepProto::AddLearner(operator_step::AddLearner {
                    store_id: *store_id,
                    peer_id: *peer_id,
                })
            }
            Step::PromoteLearner { store_id } => {
                StepProto::PromoteLearner(operator_step::PromoteLearner {
                    store_id: *store_id,
                })
            }
            Step::RemovePeer { store_id } => StepProto::RemovePeer(operator_step::RemovePeer {
                store_id: *store_id,
            }),
            Step::TransferLeader { to_store_id } => {
                StepProto::TransferLeader(operator_step::TransferLeader {
                    to_store_id: *to_store_id,
                })
            }
            Step::Split { keys, .. } => StepProto::Split(operator_step::Split {
                split_keys: keys.clone(),
            }),
            Step::Merge { target_id, .. } => StepProto::Merge(operator_step::Merge {
                target_region_id: *target_id,
            }),
        };
        OperatorStep { step: Some(step) }
    }

    /// The store this step needs to be up: the one receiving a replica or
    /// leadership.
    pub fn target_store(&self) -> Option<u64> {
        match self {
            Step::AddLearner { store_id, .. } | Step::PromoteLearner { store_id } => {
                Some(*store_id)
            }
            Step::TransferLeader { to_store_id } => Some(*to_store_id),
            Step::RemovePeer { .. } | Step::Split { .. } | Step::Merge { .. } => None,
        }
    }

    fn stores(&self) -> Option<u64> {
        match self {
            Step::AddLearner { store_id, .. }
            | Step::PromoteLearner { store_id }
            | Step::RemovePeer { store_id } => Some(*store_id),
            Step::TransferLeader { to_store_id } => Some(*to_store_id),
            Step::Split { .. } | Step::Merge { .. } => None,
        }
    }
}

/// The step as `tessera operator list` shows it.
impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::AddLearner { store_id, .. } => write!(f, "add a learner on store {store_id}"),
            Step::PromoteLearner { store_id } => {
                write!(f, "promote the learner on store {store_id}")
            }
            Step::RemovePeer { store_id } => write!(f, "remove the replica on store {store_id}"),
            Step::TransferLeader { to_store_id } => {
                write!(f, "transfer leadership to store {to_store_id}")
            }
            Step::Split { keys, .. } if keys.is_empty() => f.write_str("split at the middle"),
            Step::Split { keys, .. } => write!(f, "split at {} key(s)", keys.len()),
            Step::Merge { target_id, .. } => write!(f, "merge into region {target_id}"),
        }
    }
}

/// What decided an operator: a scheduler rule or an administrator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OperatorKind {
    /// Rule 2: a replica on a bad store, too few or too many voters, a
    /// stray learner.
    Repair,
    /// Rule 3: two replicas in one zone.
    Zone,
    /// Rule 4: a keyspace's boundaries become region boundaries.
    Keyspace,
    /// Rule 5: a hash keyspace's region moves to its ring placement.
    Placement,
    /// Rule 6: a region above 1.5 × the split size.
    SizeSplit,
    /// Rule 6: a region hot for a while, split where its load divides.
    LoadSplit,
    /// Rule 7: small, cold neighbours.
    Merge,
    /// A store whose leaders are evicted (`tessera store evict-leaders`).
    EvictLeader,
    /// Rule 8: leaders of hot regions spread by load.
    HotLeader,
    /// Rule 8: replicas of hot regions spread by the writes they apply.
    HotRegion,
    /// Rule 8.
    BalanceLeader,
    /// Rule 9.
    BalanceRegion,
    /// `tessera region split`.
    AdminSplit,
    /// `tessera region move`.
    AdminMove,
    /// `tessera region transfer-leader`.
    AdminTransferLeader,
    /// `tessera region merge`.
    AdminMerge,
}

impl OperatorKind {
    /// The name in operator ids (`move-12`), `cluster status` and the
    /// `kind` label of `tessera_directory_operators_total`. A split reads
    /// `split`, a merge `merge`, whoever asked for it.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorKind::Repair => "repair",
            OperatorKind::Zone => "zone",
            OperatorKind::Keyspace => "keyspace",
            OperatorKind::Placement => "placement",
            OperatorKind::SizeSplit | OperatorKind::LoadSplit | OperatorKind::AdminSplit => "split",
            OperatorKind::HotLeader => "hot-leader",
            OperatorKind::HotRegion => "hot-region",
            OperatorKind::EvictLeader => "evict-leader",
            OperatorKind::BalanceLeader => "balance-leader",
            OperatorKind::BalanceRegion => "balance-region",
            OperatorKind::AdminMove => "move",
            OperatorKind::AdminTransferLeader => "transfer-leader",
            OperatorKind::Merge | OperatorKind::AdminMerge => "merge",
        }
    }

    /// Merge operators: they end when their region is gone.
    pub fn is_merge(self) -> bool {
        matches!(self, OperatorKind::Merge | OperatorKind::AdminMerge)
    }

    /// Why an operator of this kind exists, when its rule says no more.
    pub fn reason(self) -> &'static str {
        match self {
            OperatorKind::Repair => {
                "a replica on a down, offline or removed store, or the wrong number of voters"
            }
            OperatorKind::Zone => "two replicas in one zone while another zone has room",
            OperatorKind::Keyspace => "a keyspace boundary inside the region",
            OperatorKind::Placement => "the hash keyspace's ring places the region elsewhere",
            OperatorKind::SizeSplit => "above 1.5 × the split size",
            OperatorKind::LoadSplit => {
                "hotter than the load-split threshold for load_split_hot_for_ms"
            }
            OperatorKind::HotLeader => "leaders' load uneven across stores",
            OperatorKind::HotRegion => "replicas' write load uneven across stores",
            OperatorKind::Merge => "small and cold next to a small and cold neighbour",
            OperatorKind::EvictLeader => {
                "its leader's store has its leaders evicted (tessera store evict-leaders)"
            }
            OperatorKind::BalanceLeader => "leaders uneven across stores",
            OperatorKind::BalanceRegion => "replicas uneven across stores",
            OperatorKind::AdminSplit
            | OperatorKind::AdminMove
            | OperatorKind::AdminTransferLeader
            | OperatorKind::AdminMerge => "asked for by an administrator",
        }
    }

    /// Operators of the balance rules, which an admin operator may cancel.
    pub fn is_balance(self) -> bool {
        matches!(
            self,
            OperatorKind::BalanceLeader | OperatorKind::BalanceRegion
        )
    }
}

impl std::fmt::Display for OperatorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Running,
    Finished,
    TimedOut,
}

#[derive(Clone, Debug)]
pub struct Operator {
    pub id: String,
    pub region_id: u64,
    pub kind: OperatorKind,
    pub steps: Vec<Step>,
    pub current: usize,
    pub created: Instant,
    pub timeout: Duration,
    /// Stores the operator moves data off or onto.
    pub stores: Vec<u64>,
    /// Why it exists, for `tessera operator list`.
    pub reason: String,
}

impl Operator {
    /// Operator number `seq` of the leader's term, named `<kind>-<seq>`.
    pub fn new(
        seq: u64,
        region_id: u64,
        kind: OperatorKind,
        steps: Vec<Step>,
        timeout: Duration,
    ) -> Self {
        let stores = steps.iter().filter_map(Step::stores).collect();
        Operator {
            id: format!("{kind}-{seq}"),
            region_id,
            kind,
            steps,
            current: 0,
            created: Instant::now(),
            timeout,
            stores,
            reason: kind.reason().to_string(),
        }
    }

    /// The replicas its steps still to make add (`true`) and remove
    /// (`false`), by store: what the replica rules count as done.
    pub fn pending_replica_changes(&self) -> impl Iterator<Item = (u64, bool)> + '_ {
        self.steps[self.current.min(self.steps.len())..]
            .iter()
            .filter_map(|s| match s {
                Step::AddLearner { store_id, .. } => Some((*store_id, true)),
                Step::RemovePeer { store_id } => Some((*store_id, false)),
                _ => None,
            })
    }

    /// The region this operator merges its region into, if it does.
    pub fn merge_target(&self) -> Option<u64> {
        self.steps.iter().find_map(|s| match s {
            Step::Merge { target_id, .. } => Some(*target_id),
            _ => None,
        })
    }

    /// Why a merge operator can no longer end well: its target is gone
    /// (merged away) or its replicas moved off the stores the plan aligned
    /// the source to. `None` for other operators.
    pub fn merge_outdated(&self, state: &crate::state::DirectoryState) -> Option<String> {
        let (target_id, target_stores) = self.steps.iter().find_map(|s| match s {
            Step::Merge {
                target_id,
                target_stores,
            } => Some((*target_id, target_stores)),
            _ => None,
        })?;
        let Some(target) = state.regions.get(&target_id) else {
            return Some(format!("its target, region {target_id}, is gone"));
        };
        let mut now: Vec<u64> = target.peers.iter().map(|p| p.store_id).collect();
        now.sort_unstable();
        (&now != target_stores).then(|| {
            format!(
                "its target, region {target_id}, moved from stores {target_stores:?} to {now:?}"
            )
        })
    }

    pub fn involves(&self, store_id: u64) -> bool {
        self.stores.contains(&store_id)
    }

    /// Moves past the steps the region shows done; returns the outcome and
    /// the step to send, if any. `merging_into` is the region the report
    /// says the region is merging into (0: none).
    pub fn advance(
        &mut self,
        region: &Region,
        leader: Option<&Peer>,
        progress: &[PeerProgress],
        merging_into: u64,
    ) -> (Outcome, Option<&Step>) {
        while self.current < self.steps.len() && self.steps[self.current].is_done(region, leader) {
            self.current += 1;
        }
        if self.current == self.steps.len() {
            return (Outcome::Finished, None);
        }
        if self.created.elapsed() > self.timeout {
            return (Outcome::TimedOut, None);
        }
        let step = &self.steps[self.current];
        (
            Outcome::Running,
            step.is_ready(region, progress, merging_into)
                .then_some(step),
        )
    }

    pub fn info(&self) -> OperatorInfo {
        OperatorInfo {
            id: self.id.clone(),
            region_id: self.region_id,
            kind: self.kind.as_str().to_string(),
            step: self.current as u32,
            steps: self.steps.len() as u32,
            state: match self.steps.get(self.current) {
                None => "finished".into(),
                Some(step) => step.to_string(),
            },
            age_ms: self.created.elapsed().as_millis() as u64,
            reason: self.reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::metapb::RegionEpoch;

    fn peer(id: u64, store_id: u64, role: PeerRole) -> Peer {
        Peer {
            id,
            store_id,
            role: role as i32,
        }
    }

    #[test]
    fn a_move_advances_as_the_region_changes() {
        let mut op = Operator::new(
            1,
            9,
            OperatorKind::AdminMove,
            vec![
                Step::AddLearner {
                    store_id: 4,
                    peer_id: 40,
                },
                Step::PromoteLearner { store_id: 4 },
                Step::RemovePeer { store_id: 1 },
            ],
            Duration::from_secs(60),
        );
        let mut region = Region {
            id: 9,
            region_epoch: Some(RegionEpoch::new(1, 1)),
            peers: vec![
                peer(10, 1, PeerRole::Voter),
                peer(20, 2, PeerRole::Voter),
                peer(30, 3, PeerRole::Voter),
            ],
            ..Default::default()
        };
        let leader = Some(peer(20, 2, PeerRole::Voter));
        let (o, step) = op.advance(&region, leader.as_ref(), &[], 0);
        assert_eq!(
            (o, step.cloned()),
            (
                Outcome::Running,
                Some(Step::AddLearner {
                    store_id: 4,
                    peer_id: 40
                })
            )
        );

        region.peers.push(peer(40, 4, PeerRole::Learner));
        let lagging = vec![
            PeerProgress {
                peer_id: 10,
                matched: 500,
                recent_active: true,
            },
            PeerProgress {
                peer_id: 40,
                matched: 10,
                recent_active: true,
            },
        ];
        let (o, step) = op.advance(&region, leader.as_ref(), &lagging, 0);
        assert_eq!(
            (o, step),
            (Outcome::Running, None),
            "a lagging learner is not promoted"
        );
        let caught_up = vec![
            PeerProgress {
                peer_id: 10,
                matched: 500,
                recent_active: true,
            },
            PeerProgress {
                peer_id: 40,
                matched: 499,
                recent_active: true,
            },
        ];
        let (_, step) = op.advance(&region, leader.as_ref(), &caught_up, 0);
        assert_eq!(step, Some(&Step::PromoteLearner { store_id: 4 }));

        region.peers[3].role = PeerRole::Voter as i32;
        region.peers.remove(0);
        let (o, _) = op.advance(&region, leader.as_ref(), &caught_up, 0);
        assert_eq!(o, Outcome::Finished);
        assert!(op.involves(4) && op.involves(1) && !op.involves(2));
        assert_eq!(op.id, "move-1");
    }

    #[test]
    fn a_merge_is_not_asked_for_again_while_the_source_reports_it() {
        let mut op = Operator::new(
            2,
            9,
            OperatorKind::AdminMerge,
            vec![Step::Merge {
                target_id: 8,
                target_stores: vec![1, 2, 3],
            }],
            Duration::from_secs(60),
        );
        let region = Region {
            id: 9,
            region_epoch: Some(RegionEpoch::new(1, 1)),
            peers: vec![peer(10, 1, PeerRole::Voter)],
            ..Default::default()
        };
        let leader = Some(peer(10, 1, PeerRole::Voter));
        let merge = |op: &mut Operator, merging_into| {
            op.advance(&region, leader.as_ref(), &[], merging_into)
                .1
                .cloned()
        };
        assert!(
            merge(&mut op, 0).is_some(),
            "not merging yet: the step goes"
        );
        assert_eq!(merge(&mut op, 8), None, "merging into the target");
        assert!(
            merge(&mut op, 7).is_some(),
            "merging elsewhere: the step goes (and is refused)"
        );
    }
}
