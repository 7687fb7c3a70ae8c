//! What a Raft message from another node must satisfy before raft-rs sees
//! it.
//!
//! raft-rs trusts its peers: a message that could only come from a buggy or
//! hostile node trips an assertion (`fatal!`, a panic) or an out-of-range
//! index, and a panic would take the whole store down with it (README,
//! "Security": a node identity is trusted for Raft semantics, not to abort
//! a process). The cheap checks here catch the known cases, each against
//! this peer's own log, and name them; the poller drops such a message and
//! counts it (`tessera_raft_messages_refused_total{reason}`). Whatever these
//! miss is still contained: the poller steps messages with panics caught
//! and reloads the region from its durable state if raft-rs panics
//! (`poller/regions.rs`).
//!
//! No check here refuses a message an honest peer sends: each condition is
//! one raft-rs itself never produces (a leader's heartbeat carries at most
//! the follower's matched index; an append's entries are consecutive; a
//! read index request carries exactly one context; a follower acknowledges
//! only what it has; a snapshot's configuration is a valid one).

use std::collections::HashSet;

use raft::eraftpb::{ConfState, Message, MessageType};
use raft::Raft;

use crate::storage::PeerStorage;

/// Why `m` must not reach `raft`, if it must not.
pub fn refusal(raft: &Raft<PeerStorage>, m: &Message) -> Option<&'static str> {
    let log = &raft.raft_log;
    match m.get_msg_type() {
        // Committing past the log is raft-rs' `commit_to` fatal.
        MessageType::MsgHeartbeat if m.commit > log.last_index() => {
            Some("heartbeat_commit_past_log")
        }
        MessageType::MsgAppend => {
            let contiguous = m
                .entries
                .iter()
                .enumerate()
                .all(|(i, e)| Some(e.index) == m.index.checked_add(i as u64 + 1));
            (!contiguous).then_some("append_not_contiguous")
        }
        // The leader reads `entries[0]` without looking.
        MessageType::MsgReadIndex | MessageType::MsgReadIndexResp if m.entries.len() != 1 => {
            Some("read_index_without_one_context")
        }
        // A leader takes an acknowledgement as the follower's matched
        // index; past its own log it would replicate from nowhere.
        MessageType::MsgAppendResponse
            if !m.reject && m.term == raft.term && m.index > log.last_index() =>
        {
            Some("append_response_past_log")
        }
        MessageType::MsgSnapshot
            if !valid_conf_state(m.get_snapshot().get_metadata().get_conf_state()) =>
        {
            Some("snapshot_invalid_configuration")
        }
        _ => None,
    }
}

/// A configuration raft-rs can restore: no peer both voter and learner,
/// learners waiting to join only from the outgoing voters, and at least one
/// voter.
fn valid_conf_state(cs: &ConfState) -> bool {
    let voters: HashSet<u64> = cs
        .voters
        .iter()
        .chain(&cs.voters_outgoing)
        .copied()
        .collect();
    let outgoing: HashSet<u64> = cs.voters_outgoing.iter().copied().collect();
    !cs.voters.is_empty()
        && !cs.learners.iter().any(|l| voters.contains(l))
        && cs.learners_next.iter().all(|l| outgoing.contains(l))
        && (!cs.auto_leave || !cs.voters_outgoing.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_states_raft_rs_cannot_restore_are_refused() {
        let cs = |v: &[u64], l: &[u64], out: &[u64], next: &[u64]| ConfState {
            voters: v.to_vec(),
            learners: l.to_vec(),
            voters_outgoing: out.to_vec(),
            learners_next: next.to_vec(),
            ..Default::default()
        };
        assert!(valid_conf_state(&cs(&[1, 2, 3], &[4], &[], &[])));
        assert!(valid_conf_state(&cs(&[1, 2, 4], &[], &[1, 2, 3], &[3])));
        assert!(!valid_conf_state(&cs(&[], &[4], &[], &[])), "no voter");
        assert!(
            !valid_conf_state(&cs(&[1, 2], &[2], &[], &[])),
            "voter and learner"
        );
        assert!(
            !valid_conf_state(&cs(&[1, 2], &[3], &[1, 3], &[])),
            "outgoing voter and learner"
        );
        assert!(
            !valid_conf_state(&cs(&[1, 2], &[], &[], &[5])),
            "learner_next not outgoing"
        );
    }
}
