//! Rule 8, **balance-leader**: leaders spread evenly over the `Up` stores
//! that are not degraded (a degraded store hands its leaderships away by
//! itself; balancing them back would undo that) and whose leaders are not
//! evicted (see `evict_leader`).
//!
//! Leaders are counted per store, a leader transfer in flight counting at
//! its destination. While the most and the fewest differ by more than
//! `balance_threshold`, a region led from the busiest store that has a
//! voter on the least busy one hands its leadership over — at most
//! `max_balance_per_round` a round, so that decisions made from slightly
//! old reports do not overshoot and flap. Of the regions that may move, the
//! coldest goes; a move that would leave the destination's leaders serving
//! more than `hot_leader.ratio` times the source's (see `hot_leader`) is
//! not made, so counting never undoes the load balance.

use std::collections::HashMap;

use tessera_proto::metapb::Region;

use super::hot_leader;
use crate::scheduler::operator::{OperatorKind, Step};
use crate::scheduler::round::{is_voter, Round};

pub(in crate::scheduler) fn plan(round: &mut Round, ready: &[&Region]) {
    let evicted = round.evicted_stores();
    let mut up = round.healthy_stores();
    up.retain(|s| !evicted.contains(s));
    if up.len() < 2 {
        return;
    }
    let mut leaders: HashMap<u64, usize> = up.iter().map(|s| (*s, 0)).collect();
    for r in ready {
        if let Some(c) = round
            .leader_destination(r.id)
            .and_then(|s| leaders.get_mut(&s))
        {
            *c += 1;
        }
    }
    let mut loads = hot_leader::leader_loads(round, ready, &up);
    for _ in 0..round.cfg.max_balance_per_round {
        let (&max_s, &max_c) = leaders
            .iter()
            .max_by_key(|(s, c)| (**c, **s))
            .expect("stores");
        let (&min_s, &min_c) = leaders
            .iter()
            .min_by_key(|(s, c)| (**c, **s))
            .expect("stores");
        if max_c <= min_c + round.cfg.balance_threshold {
            break;
        }
        // The coldest region that may move, so that counts even out with
        // the least load moved, and never against the hot-leader rule.
        let candidate = ready
            .iter()
            .filter(|r| {
                !round.has_operator(r.id)
                    && round.leader_store(r.id) == Some(max_s)
                    && r.peers.iter().any(|p| p.store_id == min_s && is_voter(p))
            })
            .map(|r| (r, round.keys_per_sec(r.id)))
            .filter(|(_, load)| {
                !round
                    .cfg
                    .hot_leader
                    .unbalances(*load, loads[&max_s] - load, loads[&min_s] + load)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let Some((r, load)) = candidate else { break };
        round.add_operator(
            r.id,
            OperatorKind::BalanceLeader,
            vec![Step::TransferLeader { to_store_id: min_s }],
        );
        *leaders.get_mut(&max_s).expect("store") -= 1;
        *leaders.get_mut(&min_s).expect("store") += 1;
        *loads.get_mut(&max_s).expect("store") -= load;
        *loads.get_mut(&min_s).expect("store") += load;
    }
}
