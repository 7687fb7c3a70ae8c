//! A `Peer` at the step level: it runs no callback of its own. Refused
//! requests and failed proposals come back to the caller (the poller) with
//! their answers; what it queues is answered later by the poller.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tessera_proto::errorpb::region_error::Error as Kind;
use tessera_proto::metapb::{Peer as PeerMeta, Region, RegionEpoch};

use super::{Peer, ReadStep};
use crate::config::RaftConfig;
use crate::engine::{Engine, MemoryEngine, WriteBatch};
use crate::mailbox::{EpochCheck, ReadPolicy};
use crate::poller::split::{record_siblings, MAX_SPLIT_SIBLINGS};
use crate::{region, Error};

fn one_voter_region() -> Region {
    Region {
        id: 7,
        region_epoch: Some(RegionEpoch::new(1, 1)),
        peers: vec![PeerMeta {
            id: 71,
            store_id: 1,
            role: 0,
        }],
        ..Default::default()
    }
}

fn peer() -> Peer<u32> {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let mut wb = WriteBatch::default();
    region::write_initial_state(&one_voter_region(), &mut wb);
    engine.write(&wb, true).unwrap();
    Peer::load(1, one_voter_region(), engine, &RaftConfig::default()).unwrap()
}

/// What a callback was answered (None: not yet).
type Seen<T> = Arc<Mutex<Option<crate::Result<T>>>>;

/// A callback that records what it was answered.
fn recorder<T: Send + 'static>() -> (Seen<T>, crate::mailbox::ProposeCallback<T>) {
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    (seen, Box::new(move |r| *s.lock().unwrap() = Some(r)))
}

fn is_not_leader(e: &Error) -> bool {
    matches!(e, Error::Region(r) if matches!(r.error, Some(Kind::NotLeader(_))))
}

fn current() -> EpochCheck {
    EpochCheck::version(RegionEpoch::new(1, 1))
}

#[test]
fn a_follower_hands_a_refused_proposal_back_unanswered() {
    let mut p = peer();
    let (seen, cb) = recorder::<u32>();
    let refusal = p
        .propose(&current(), b"x".to_vec(), cb, Instant::now())
        .expect_err("not the leader");
    assert!(is_not_leader(&refusal.error), "{}", refusal.error);
    assert!(seen.lock().unwrap().is_none(), "the peer ran no callback");
    refusal.answer();
    let answered = seen.lock().unwrap().take().expect("answered by the caller");
    assert!(answered.is_err_and(|e| is_not_leader(&e)));
}

#[test]
fn reads_come_back_refused_or_to_serve_and_are_never_run_by_the_peer() {
    let mut p = peer();
    let ran = Arc::new(Mutex::new(0));
    let read_cb = || {
        let ran = ran.clone();
        Box::new(move |_: crate::Result<&Region>| *ran.lock().unwrap() += 1)
            as crate::mailbox::ReadCallback
    };
    match p.read(current(), ReadPolicy::Leader, read_cb()) {
        ReadStep::Refused(r) => assert!(is_not_leader(&r.error), "{}", r.error),
        _ => panic!("a follower refuses a leader read"),
    }
    let stale = EpochCheck::version(RegionEpoch::new(1, 0));
    match p.read(stale, ReadPolicy::Follower, read_cb()) {
        ReadStep::Refused(r) => assert!(
            matches!(&r.error, Error::Region(e) if matches!(e.error, Some(Kind::EpochNotMatch(_)))),
            "{}",
            r.error
        ),
        _ => panic!("a stale epoch is refused"),
    }
    assert!(matches!(
        p.read(current(), ReadPolicy::UnsafeLocal, read_cb()),
        ReadStep::ServeNow(_)
    ));
    assert!(matches!(
        p.read(current(), ReadPolicy::Follower, read_cb()),
        ReadStep::Queued
    ));
    assert_eq!(*ran.lock().unwrap(), 0, "the peer ran no read callback");
    let answers = p.fail_pending("going away");
    assert_eq!(answers.len(), 1, "the queued read is handed back");
    for a in answers {
        a();
    }
    assert_eq!(*ran.lock().unwrap(), 1);
}

#[test]
fn a_leaders_pending_proposal_fails_through_the_answers_it_returns() {
    let mut p = peer();
    p.campaign().unwrap();
    assert!(p.is_leader(), "a single voter elects itself");
    let (seen, cb) = recorder::<u32>();
    assert!(p
        .propose(&current(), b"x".to_vec(), cb, Instant::now())
        .is_ok());
    let answers = p.fail_pending("the store is shutting down");
    assert_eq!(answers.len(), 1);
    assert!(seen.lock().unwrap().is_none(), "not answered yet");
    for a in answers {
        a();
    }
    let answered = seen.lock().unwrap().take().expect("answered");
    assert!(matches!(answered, Err(Error::Indeterminate(_))));
}

/// A merged source's proposals after its PrepareMerge never apply: they
/// are answered `RegionNotFound` (retry elsewhere); one at or before it
/// may have applied elsewhere: outcome unknown.
#[test]
fn a_merged_sources_proposals_after_the_prepare_are_known_not_applied() {
    let mut p = peer();
    p.campaign().unwrap();
    let (before, cb) = recorder::<u32>();
    assert!(p
        .propose(&current(), b"x".to_vec(), cb, Instant::now())
        .is_ok());
    let prepare_index = p.raw_node.raft.raft_log.last_index();
    let (after, cb) = recorder::<u32>();
    assert!(p
        .propose(&current(), b"y".to_vec(), cb, Instant::now())
        .is_ok());
    p.merge.state = Some(tessera_proto::raft_serverpb::MergeState {
        prepare_index,
        ..Default::default()
    });
    for a in p.end_merged_source() {
        a();
    }
    let before = before.lock().unwrap().take().expect("answered");
    assert!(matches!(before, Err(Error::Indeterminate(_))), "{before:?}");
    let after = after.lock().unwrap().take().expect("answered");
    assert!(
        matches!(&after, Err(Error::Region(r)) if matches!(r.error, Some(Kind::RegionNotFound(_)))),
        "{after:?}"
    );
}

/// Each message raft-rs would abort on is refused, naming why; the honest
/// form of each passes.
#[test]
fn messages_that_would_trip_raft_rs_are_refused_before_it() {
    use raft::eraftpb::{Entry, Message, MessageType};
    let p = peer();
    let last = p.raw_node.raft.raft_log.last_index();
    let term = p.raw_node.raft.term;
    let msg = |t: MessageType| {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = 72;
        m.to = 71;
        m.term = term;
        m
    };
    let entry = |index: u64| Entry {
        index,
        term,
        ..Default::default()
    };

    let mut heartbeat = msg(MessageType::MsgHeartbeat);
    heartbeat.commit = last;
    assert_eq!(p.refusal(&heartbeat), None);
    heartbeat.commit = last + 1;
    assert_eq!(p.refusal(&heartbeat), Some("heartbeat_commit_past_log"));

    let mut append = msg(MessageType::MsgAppend);
    append.index = last;
    append.entries = vec![entry(last + 1), entry(last + 2)].into();
    assert_eq!(p.refusal(&append), None);
    append.entries = vec![entry(last + 1), entry(last + 3)].into();
    assert_eq!(p.refusal(&append), Some("append_not_contiguous"));
    append.index = u64::MAX;
    append.entries = vec![entry(0)].into();
    assert_eq!(p.refusal(&append), Some("append_not_contiguous"));

    let mut read = msg(MessageType::MsgReadIndex);
    assert_eq!(p.refusal(&read), Some("read_index_without_one_context"));
    read.entries = vec![Entry::default()].into();
    assert_eq!(p.refusal(&read), None);

    let mut ack = msg(MessageType::MsgAppendResponse);
    ack.index = last;
    assert_eq!(p.refusal(&ack), None);
    ack.index = last + 10;
    assert_eq!(p.refusal(&ack), Some("append_response_past_log"));
    ack.reject = true;
    assert_eq!(
        p.refusal(&ack),
        None,
        "a rejection carries the follower's hint"
    );

    let mut snap = msg(MessageType::MsgSnapshot);
    snap.mut_snapshot().mut_metadata().mut_conf_state().voters = vec![71, 72];
    assert_eq!(p.refusal(&snap), None);
    snap.mut_snapshot().mut_metadata().mut_conf_state().learners = vec![72];
    assert_eq!(p.refusal(&snap), Some("snapshot_invalid_configuration"));
}

/// A peer created for a message of a region this store does not hold yet
/// votes; if it is dropped (a restart, a reload) and created again by the
/// next message, it must remember that vote, or two candidates could each
/// win its vote in one term.
#[test]
fn an_uninitialized_peer_created_again_keeps_its_vote() {
    use raft::eraftpb::{Message, MessageType};
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let me = PeerMeta {
        id: 81,
        store_id: 1,
        role: 0,
    };
    let create = || Peer::<u32>::uninitialized(8, me, engine.clone(), &RaftConfig::default());
    // Steps a vote request of `candidate` in term 5; persists what the
    // poller would and returns whether the vote was granted.
    let ask = |p: &mut Peer<u32>, candidate: u64| -> bool {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgRequestVote);
        m.from = candidate;
        m.to = 81;
        m.term = 5;
        m.log_term = 5;
        m.index = 10;
        assert_eq!(p.refusal(&m), None);
        p.step(m).unwrap();
        let mut rd = p.ready();
        let mut wb = WriteBatch::default();
        if let Some(hs) = rd.hs() {
            p.storage_mut().set_hard_state(hs);
        }
        p.storage_mut().write_raft_state_if_dirty(&mut wb);
        engine.write(&wb, true).unwrap();
        let mut answers = rd.take_messages();
        answers.extend(rd.take_persisted_messages());
        let _ = p.advance_append(rd);
        let answer = answers
            .iter()
            .find(|m| m.get_msg_type() == MessageType::MsgRequestVoteResponse)
            .expect("a vote answer");
        !answer.reject
    };

    let mut first = create().unwrap();
    assert!(
        ask(&mut first, 82),
        "the first candidate of term 5 gets the vote"
    );
    assert!(!ask(&mut first, 83), "one vote per term");
    drop(first);

    let mut again = create().unwrap();
    assert_eq!(again.raw_node.raft.term, 5);
    assert!(
        !ask(&mut again, 83),
        "created again, the peer still voted for 82 in term 5"
    );
    assert!(ask(&mut again, 82), "a repeated request of 82 is granted");
}

#[test]
fn every_recent_split_is_remembered_not_only_the_last() {
    let mut p = peer();
    let sibling = |id: u64, start: &[u8], end: &[u8]| Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        region_epoch: Some(RegionEpoch::new(1, id)),
        ..Default::default()
    };
    // Two splits applied before the leader reports again.
    record_siblings(&mut p, vec![sibling(16, b"m", b"")]);
    record_siblings(&mut p, vec![sibling(24, b"g", b"m")]);
    let ids = |rs: &[Region]| rs.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(&p.info().split_siblings), vec![16, 24]);
    // A request from before both learns of both.
    let before = EpochCheck::version(RegionEpoch::new(1, 0));
    let Error::Region(e) = p.epoch_not_match(&before) else {
        panic!("not a region error")
    };
    let Some(Kind::EpochNotMatch(m)) = e.error else {
        panic!("not EpochNotMatch: {e:?}")
    };
    assert_eq!(ids(&m.current_regions), vec![7, 16, 24]);

    // Bounded: the oldest go first.
    for id in 100..100 + MAX_SPLIT_SIBLINGS as u64 {
        record_siblings(&mut p, vec![sibling(id, b"x", b"y")]);
    }
    let kept = ids(&p.info().split_siblings);
    assert_eq!(kept.len(), MAX_SPLIT_SIBLINGS);
    assert_eq!(kept[0], 100);

    // One split at more keys than the bound (a 256-way presplit): every
    // region it created is kept, or the directory could never record it.
    let wide: Vec<Region> = (1000..1255).map(|id| sibling(id, b"x", b"y")).collect();
    record_siblings(&mut p, wide);
    let kept = ids(&p.info().split_siblings);
    assert_eq!(kept, (1000..1255).collect::<Vec<u64>>());
}

/// What the poller publishes for lease reads off its thread: a lease only
/// on a leader that has committed an entry of its term, and never while it
/// hands leadership away.
#[test]
fn the_lease_is_published_only_while_this_peer_may_hold_it() {
    let mut p = peer();
    let since = Instant::now();
    p.lease.renew(since);
    assert_eq!(p.lease_view().lease_until, None, "a follower holds none");

    p.campaign().unwrap();
    assert!(p.is_leader());
    assert_eq!(
        p.lease_view().lease_until,
        None,
        "no entry of its term committed yet"
    );
    let rd = p.ready();
    let mut wb = WriteBatch::default();
    p.storage_mut().append(rd.entries(), &mut wb);
    let _ = p.advance_append(rd);
    let view = p.lease_view();
    assert_eq!(
        view.committed,
        raft::Storage::last_index(p.storage()).unwrap()
    );
    assert_eq!(
        view.lease_until,
        Some(since + RaftConfig::default().lease_duration())
    );
    assert_eq!(view.term, p.term());

    let mut higher = raft::eraftpb::Message {
        term: p.term() + 1,
        ..Default::default()
    };
    assert!(p.may_step_down_on(&higher), "a newer term may end it");
    higher.term = p.term();
    assert!(!p.may_step_down_on(&higher));
}
