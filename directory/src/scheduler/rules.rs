//! The scheduling rules (see the module above for their order). `plan` is
//! pure: it reads the replicated state and the leader's view, adds
//! operators to the leader's view and returns the commands to propose.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use consistent_hash_ring::RingBuilder;
use tessera_proto::directorypb::directory_command::Cmd;
use tessera_proto::directorypb::{KeyspaceKind, Placement, SetStoreState};
use tessera_proto::metapb::{Peer, PeerRole, Region, StoreState};
use tessera_store::keys::keyspace_range;

use super::operator::{Operator, Step};
use super::ScheduleConfig;
use crate::leader::LeaderState;
use crate::state::DirectoryState;

/// What one round decided.
#[derive(Default, Debug)]
pub struct Decisions {
    /// Kinds of the operators created this round.
    pub created: Vec<&'static str>,
    /// Kinds of the operators dropped this round.
    pub cancelled: Vec<&'static str>,
    pub commands: Vec<Cmd>,
}

struct View<'a> {
    state: &'a DirectoryState,
    cfg: &'a ScheduleConfig,
    store_states: BTreeMap<u64, StoreState>,
    region_counts: HashMap<u64, usize>,
}

impl View<'_> {
    fn state_of(&self, store_id: u64) -> StoreState {
        self.store_states
            .get(&store_id)
            .copied()
            .unwrap_or(StoreState::Tombstone)
    }

    fn is_bad(&self, store_id: u64) -> bool {
        matches!(
            self.state_of(store_id),
            StoreState::Down | StoreState::Offline | StoreState::Tombstone
        )
    }

    fn zone(&self, store_id: u64) -> Option<&str> {
        self.state.stores.get(&store_id).and_then(|s| {
            s.labels
                .iter()
                .find(|l| l.key == self.cfg.zone_label)
                .map(|l| l.value.as_str())
        })
    }

    fn up_stores(&self) -> Vec<u64> {
        self.store_states
            .iter()
            .filter(|(_, s)| **s == StoreState::Up)
            .map(|(id, _)| *id)
            .collect()
    }
}

fn is_voter(p: &Peer) -> bool {
    matches!(
        PeerRole::try_from(p.role).unwrap_or(PeerRole::Voter),
        PeerRole::Voter | PeerRole::IncomingVoter
    )
}

fn busy(leader: &LeaderState, view: &View, store_id: u64) -> bool {
    // Nothing runs on a store that is down; it does not limit anything.
    !view.is_bad(store_id) && leader.operators_on(store_id) >= view.cfg.max_operators_per_store
}

fn add_operator(
    leader: &mut LeaderState,
    out: &mut Decisions,
    region_id: u64,
    kind: &'static str,
    steps: Vec<Step>,
    cfg: &ScheduleConfig,
) {
    if leader.operators.contains_key(&region_id) || steps.is_empty() {
        return;
    }
    let id = format!("{kind}-{}", leader.next_operator);
    leader.next_operator += 1;
    leader.operators.insert(
        region_id,
        Operator::new(id, region_id, kind, steps, cfg.operator_timeout),
    );
    out.created.push(kind);
}

/// The best `Up` store to receive a replica of `region`: not holding it,
/// not busy, in a zone the region does not use yet if possible, with the
/// fewest regions.
fn pick_target(
    leader: &LeaderState,
    view: &View,
    region: &Region,
    leaving: Option<u64>,
) -> Option<u64> {
    let used_zones: BTreeSet<&str> = region
        .peers
        .iter()
        .filter(|p| Some(p.store_id) != leaving && !view.is_bad(p.store_id))
        .filter_map(|p| view.zone(p.store_id))
        .collect();
    view.up_stores()
        .into_iter()
        .filter(|s| region.peers.iter().all(|p| p.store_id != *s))
        .filter(|s| !busy(leader, view, *s))
        .min_by_key(|s| {
            let zone_clash = view.zone(*s).is_some_and(|z| used_zones.contains(z));
            (
                zone_clash,
                view.region_counts.get(s).copied().unwrap_or(0),
                *s,
            )
        })
}

fn move_steps(target: u64, peer_id: u64, source: Option<u64>) -> Vec<Step> {
    let mut steps = vec![
        Step::AddLearner {
            store_id: target,
            peer_id,
        },
        Step::PromoteLearner { store_id: target },
    ];
    if let Some(s) = source {
        steps.push(Step::RemovePeer { store_id: s });
    }
    steps
}

/// Decides one round.
pub fn plan(
    state: &DirectoryState,
    leader: &mut LeaderState,
    cfg: &ScheduleConfig,
    alloc_id: &mut dyn FnMut() -> Option<u64>,
) -> Decisions {
    let mut out = Decisions::default();
    let store_states = state
        .stores
        .values()
        .map(|s| (s.id, leader.store_state(s, &cfg.lifecycle)))
        .collect();
    let mut region_counts: HashMap<u64, usize> = HashMap::new();
    for r in state.regions.values() {
        for p in &r.peers {
            *region_counts.entry(p.store_id).or_default() += 1;
        }
    }
    let view = View {
        state,
        cfg,
        store_states,
        region_counts,
    };

    // Operators whose target can no longer take part are dropped; the rules
    // below decide again.
    let stale: Vec<u64> = leader
        .operators
        .values()
        .filter(|op| {
            op.steps[op.current.min(op.steps.len() - 1)..]
                .iter()
                .any(|s| {
                    s.target_store()
                        .is_some_and(|t| view.state_of(t) != StoreState::Up)
                })
        })
        .map(|op| op.region_id)
        .collect();
    for region_id in stale {
        if let Some(op) = leader.operators.remove(&region_id) {
            tracing::info!(region_id, operator = %op.id, "operator cancelled: its target store is not up");
            out.cancelled.push(op.kind);
        }
    }

    // 1. tombstone
    for (id, s) in &view.store_states {
        if *s == StoreState::Offline && view.region_counts.get(id).copied().unwrap_or(0) == 0 {
            out.commands.push(Cmd::SetStoreState(SetStoreState {
                store_id: *id,
                state: StoreState::Tombstone as i32,
            }));
        }
    }

    // Regions whose leader reported: only those can carry out steps.
    let ready: Vec<&Region> = state
        .regions
        .values()
        .filter(|r| {
            leader
                .regions
                .get(&r.id)
                .is_some_and(|s| s.leader.is_some())
        })
        .collect();

    // 2. repair, 3. zone
    for region in &ready {
        if leader.operators.contains_key(&region.id) {
            continue;
        }
        let bad: Vec<&Peer> = region
            .peers
            .iter()
            .filter(|p| view.is_bad(p.store_id))
            .collect();
        let healthy_voters: Vec<&Peer> = region
            .peers
            .iter()
            .filter(|p| is_voter(p) && !view.is_bad(p.store_id))
            .collect();
        let learners: Vec<&Peer> = region.peers.iter().filter(|p| !is_voter(p)).collect();
        let leader_store = leader.regions[&region.id].leader.map(|l| l.store_id);
        if healthy_voters.len() < cfg.max_replicas {
            let healthy_learner = learners.iter().find(|p| !view.is_bad(p.store_id));
            let steps = match healthy_learner {
                Some(l) => {
                    let mut s = vec![Step::PromoteLearner {
                        store_id: l.store_id,
                    }];
                    if let Some(b) = bad.first() {
                        s.push(Step::RemovePeer {
                            store_id: b.store_id,
                        });
                    }
                    s
                }
                None => {
                    let leaving = bad.first().map(|b| b.store_id);
                    let Some(target) = pick_target(leader, &view, region, leaving) else {
                        continue;
                    };
                    let Some(id) = alloc_id() else { continue };
                    move_steps(target, id, leaving)
                }
            };
            add_operator(leader, &mut out, region.id, "repair", steps, cfg);
            continue;
        }
        if let Some(b) = bad.first() {
            add_operator(
                leader,
                &mut out,
                region.id,
                "repair",
                vec![Step::RemovePeer {
                    store_id: b.store_id,
                }],
                cfg,
            );
            continue;
        }
        if healthy_voters.len() > cfg.max_replicas {
            let extra = healthy_voters
                .iter()
                .filter(|p| Some(p.store_id) != leader_store)
                .max_by_key(|p| {
                    (
                        view.region_counts.get(&p.store_id).copied().unwrap_or(0),
                        p.store_id,
                    )
                });
            if let Some(p) = extra {
                add_operator(
                    leader,
                    &mut out,
                    region.id,
                    "repair",
                    vec![Step::RemovePeer {
                        store_id: p.store_id,
                    }],
                    cfg,
                );
            }
            continue;
        }
        if let Some(l) = learners.first() {
            add_operator(
                leader,
                &mut out,
                region.id,
                "repair",
                vec![Step::RemovePeer {
                    store_id: l.store_id,
                }],
                cfg,
            );
            continue;
        }
        // zone: two replicas in one zone, and a free store in another zone.
        let mut by_zone: BTreeMap<&str, Vec<&Peer>> = BTreeMap::new();
        for p in &region.peers {
            if let Some(z) = view.zone(p.store_id) {
                by_zone.entry(z).or_default().push(p);
            }
        }
        if let Some((_, crowded)) = by_zone.iter().find(|(_, ps)| ps.len() > 1) {
            let source = crowded
                .iter()
                .filter(|p| Some(p.store_id) != leader_store)
                .max_by_key(|p| view.region_counts.get(&p.store_id).copied().unwrap_or(0))
                .map(|p| p.store_id);
            let target = pick_target(leader, &view, region, source);
            let target_zone_new = target
                .and_then(|t| view.zone(t))
                .is_some_and(|z| !by_zone.contains_key(z));
            if let (Some(source), Some(target), true) = (source, target, target_zone_new) {
                if let Some(id) = alloc_id() {
                    add_operator(
                        leader,
                        &mut out,
                        region.id,
                        "zone",
                        move_steps(target, id, Some(source)),
                        cfg,
                    );
                }
            }
        }
    }

    // 4. keyspace boundaries, 5. placement
    let mut placed: BTreeSet<u64> = state.placements.keys().copied().collect();
    for ks in state.keyspaces.values() {
        let (start, end) = keyspace_range(ks.id);
        let mut bounds = vec![start.clone()];
        if !end.is_empty() {
            bounds.push(end.clone());
        }
        let hash = ks.kind == KeyspaceKind::Hash as i32 && ks.initial_regions > 1;
        if hash {
            let n = ks.initial_regions as u64;
            for i in 1..n {
                let mut k = start.clone();
                k.extend_from_slice(&((i * 65536 / n) as u16).to_be_bytes());
                bounds.push(k);
            }
        }
        let mut wanted: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
        for b in &bounds {
            if let Some(r) = state.region_for_key(b) {
                if &r.start_key != b {
                    wanted.entry(r.id).or_default().push(b.clone());
                }
            }
        }
        let complete = wanted.is_empty();
        for (region_id, mut keys) in wanted {
            if leader
                .regions
                .get(&region_id)
                .is_none_or(|s| s.leader.is_none())
            {
                continue;
            }
            keys.sort();
            let from_version = state.regions[&region_id]
                .region_epoch
                .unwrap_or_default()
                .version;
            add_operator(
                leader,
                &mut out,
                region_id,
                "keyspace",
                vec![Step::Split { keys, from_version }],
                cfg,
            );
        }
        if !hash || !complete {
            continue;
        }
        let up = view.up_stores();
        if up.len() < cfg.max_replicas {
            continue;
        }
        let ring = RingBuilder::default()
            .vnodes(64)
            .nodes_iter(up.iter().copied())
            .build();
        for r in state.overlapping(&start, &end) {
            if state.placements.contains_key(&r.id) {
                continue;
            }
            let stores: Vec<u64> = ring
                .replicas(&r.start_key)
                .take(cfg.max_replicas)
                .copied()
                .collect();
            placed.insert(r.id);
            out.commands.push(Cmd::PutPlacement(Placement {
                region_id: r.id,
                store_ids: stores,
            }));
        }
    }
    for region in &ready {
        let Some(want) = state.placements.get(&region.id) else {
            continue;
        };
        if leader.operators.contains_key(&region.id) {
            continue;
        }
        // A placement that names a store no longer Up is obsolete, and a
        // region with a replica on a bad store is repair's business.
        if want.iter().any(|s| view.state_of(*s) != StoreState::Up)
            || region.peers.iter().any(|p| view.is_bad(p.store_id))
        {
            continue;
        }
        let have: BTreeSet<u64> = region.peers.iter().map(|p| p.store_id).collect();
        let target = want.iter().copied().find(|s| {
            !have.contains(s) && view.state_of(*s) == StoreState::Up && !busy(leader, &view, *s)
        });
        let leader_store = leader.regions[&region.id].leader.map(|l| l.store_id);
        let source = have
            .iter()
            .copied()
            .filter(|s| !want.contains(s))
            .min_by_key(|s| Some(*s) == leader_store);
        if let (Some(t), Some(s)) = (target, source) {
            if let Some(id) = alloc_id() {
                add_operator(
                    leader,
                    &mut out,
                    region.id,
                    "placement",
                    move_steps(t, id, Some(s)),
                    cfg,
                );
            }
        }
    }

    // 6. split by size
    for region in &ready {
        let size = leader.regions[&region.id].approximate_size_bytes;
        if size * 2 > cfg.region_split_size_bytes * 3 {
            let from_version = region.region_epoch.unwrap_or_default().version;
            add_operator(
                leader,
                &mut out,
                region.id,
                "split",
                vec![Step::Split {
                    keys: vec![],
                    from_version,
                }],
                cfg,
            );
        }
    }

    // Balancing waits while anything needs repair, and counts what the
    // operators in flight will change, so that decisions made from slightly
    // old reports do not overshoot and flap.
    let repairing = leader.operators.values().any(|o| o.kind == "repair")
        || ready
            .iter()
            .any(|r| r.peers.iter().any(|p| view.is_bad(p.store_id)));

    // 7. balance leaders
    let up = view.up_stores();
    if up.len() > 1 && !repairing {
        let mut leaders: HashMap<u64, usize> = up.iter().map(|s| (*s, 0)).collect();
        for r in &ready {
            let pending = leader.operators.get(&r.id).and_then(|o| {
                o.steps[o.current.min(o.steps.len() - 1)..]
                    .iter()
                    .find_map(|s| match s {
                        Step::TransferLeader { to_store_id } => Some(*to_store_id),
                        _ => None,
                    })
            });
            let store = pending.or(leader.regions[&r.id].leader.map(|l| l.store_id));
            if let Some(c) = store.and_then(|s| leaders.get_mut(&s)) {
                *c += 1;
            }
        }
        for _ in 0..cfg.max_balance_per_round {
            let (&max_s, &max_c) = leaders
                .iter()
                .max_by_key(|(s, c)| (**c, **s))
                .expect("stores");
            let (&min_s, &min_c) = leaders
                .iter()
                .min_by_key(|(s, c)| (**c, **s))
                .expect("stores");
            if max_c <= min_c + cfg.balance_threshold {
                break;
            }
            let candidate = ready.iter().find(|r| {
                !leader.operators.contains_key(&r.id)
                    && leader.regions[&r.id].leader.map(|l| l.store_id) == Some(max_s)
                    && r.peers.iter().any(|p| p.store_id == min_s && is_voter(p))
            });
            let Some(r) = candidate else { break };
            add_operator(
                leader,
                &mut out,
                r.id,
                "balance-leader",
                vec![Step::TransferLeader { to_store_id: min_s }],
                cfg,
            );
            *leaders.get_mut(&max_s).expect("store") -= 1;
            *leaders.get_mut(&min_s).expect("store") += 1;
        }
    }

    // 8. balance regions
    if up.len() > 1 && !repairing {
        let mut counts: HashMap<u64, usize> = up
            .iter()
            .map(|s| (*s, view.region_counts.get(s).copied().unwrap_or(0)))
            .collect();
        // Replicas that operators in flight will add or remove.
        for op in leader.operators.values() {
            for s in &op.steps[op.current.min(op.steps.len())..] {
                match s {
                    Step::AddLearner { store_id, .. } => {
                        if let Some(c) = counts.get_mut(store_id) {
                            *c += 1;
                        }
                    }
                    Step::RemovePeer { store_id } => {
                        if let Some(c) = counts.get_mut(store_id) {
                            *c = c.saturating_sub(1);
                        }
                    }
                    _ => {}
                }
            }
        }
        for _ in 0..cfg.max_balance_per_round {
            let (&max_s, &max_c) = counts
                .iter()
                .max_by_key(|(s, c)| (**c, **s))
                .expect("stores");
            let candidates: Vec<u64> = counts
                .iter()
                .filter(|(s, _)| !busy(leader, &view, **s))
                .map(|(s, _)| *s)
                .collect();
            let Some(&min_s) = candidates.iter().min_by_key(|s| (counts[s], **s)) else {
                break;
            };
            if max_c <= counts[&min_s] + cfg.balance_threshold || busy(leader, &view, max_s) {
                break;
            }
            let candidate = ready.iter().find(|r| {
                !leader.operators.contains_key(&r.id)
                    && !placed.contains(&r.id)
                    && r.peers.iter().any(|p| p.store_id == max_s)
                    && r.peers.iter().all(|p| p.store_id != min_s)
                    && r.peers.iter().all(|p| !view.is_bad(p.store_id))
            });
            let Some(r) = candidate else { break };
            let Some(id) = alloc_id() else { break };
            add_operator(
                leader,
                &mut out,
                r.id,
                "balance-region",
                move_steps(min_s, id, Some(max_s)),
                cfg,
            );
            *counts.get_mut(&max_s).expect("store") -= 1;
            *counts.get_mut(&min_s).expect("store") += 1;
        }
    }
    out
}
