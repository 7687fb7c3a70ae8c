//! Rule 2, **repair**: every region keeps `max_replicas` healthy voters.
//!
//! In order, for a region with no operator:
//! - too few healthy voters: promote a healthy learner if there is one,
//!   else add a replica on the best target ([`Round::pick_target`]) — in
//!   both cases removing one replica on a bad store (down, offline,
//!   tombstone) as the last step;
//! - enough voters but a replica on a bad store: remove it;
//! - too many voters: remove one, never the leader's, from the store with
//!   the most replicas;
//! - a stray learner (left by a cancelled move): remove it.
//!
//! A region this rule had something to say about is left alone by the zone
//! rule this round, even when no operator could start (no target, no id).

use tessera_proto::metapb::{Peer, Region};

use crate::scheduler::operator::{OperatorKind, Step};
use crate::scheduler::round::{is_voter, move_steps, Round};

/// Plans repair of `region`; whether it needed any.
pub(in crate::scheduler) fn plan_region(round: &mut Round, region: &Region) -> bool {
    let bad: Vec<&Peer> = region
        .peers
        .iter()
        .filter(|p| round.is_bad(p.store_id))
        .collect();
    let healthy_voters: Vec<&Peer> = region
        .peers
        .iter()
        .filter(|p| is_voter(p) && !round.is_bad(p.store_id))
        .collect();
    let learners: Vec<&Peer> = region.peers.iter().filter(|p| !is_voter(p)).collect();
    let leader_store = round.leader_store(region.id);
    let remove = |p: &Peer| {
        vec![Step::RemovePeer {
            store_id: p.store_id,
        }]
    };
    if healthy_voters.len() < round.cfg.max_replicas {
        let healthy_learner = learners.iter().find(|p| !round.is_bad(p.store_id));
        let steps = match healthy_learner {
            Some(l) => {
                let mut s = vec![Step::PromoteLearner {
                    store_id: l.store_id,
                }];
                if let Some(b) = bad.first() {
                    s.extend(remove(b));
                }
                s
            }
            None => {
                let leaving = bad.first().map(|b| b.store_id);
                let Some(target) = round.pick_target(region, leaving) else {
                    return true;
                };
                let Some(id) = round.next_id() else {
                    return true;
                };
                move_steps(target, id, leaving)
            }
        };
        round.add_operator(region.id, OperatorKind::Repair, steps);
        return true;
    }
    if let Some(b) = bad.first() {
        round.add_operator(region.id, OperatorKind::Repair, remove(b));
        return true;
    }
    if healthy_voters.len() > round.cfg.max_replicas {
        let extra = healthy_voters
            .iter()
            .filter(|p| Some(p.store_id) != leader_store)
            .max_by_key(|p| (round.replicas_on(p.store_id), p.store_id));
        if let Some(p) = extra {
            round.add_operator(region.id, OperatorKind::Repair, remove(p));
        }
        return true;
    }
    if let Some(l) = learners.first() {
        round.add_operator(region.id, OperatorKind::Repair, remove(l));
        return true;
    }
    false
}
