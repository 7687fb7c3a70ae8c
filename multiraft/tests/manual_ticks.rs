//! With `RaftConfig::manual_ticks` the poller's logical clock moves only
//! when a test ticks it, and an election timeout is exactly `election_tick`
//! ticks: a test decides when a group campaigns, and when a peer has waited
//! too long for its snapshot, whatever the wall clock.

use std::sync::Arc;
use std::time::Duration;

use tessera_multiraft::engine::{Cf, Engine, EngineExt as _, MemoryEngine, WriteBatch};
use tessera_multiraft::mailbox::{Mailbox, PollerMsg, RegionInfo};
use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::{region, state_keys, RaftConfig};
use tessera_proto::metapb::{Peer, Region, RegionEpoch};
use tessera_proto::raft_serverpb::{RaftLocalState, RaftMessage};

mod common;

const ELECTION_TICK: usize = 10;

fn region() -> Region {
    Region {
        id: 3,
        region_epoch: Some(RegionEpoch::new(1, 1)),
        peers: vec![Peer {
            id: 31,
            store_id: 1,
            role: 0,
        }],
        ..Default::default()
    }
}

fn inspect_all(mailbox: &Mailbox<()>) -> Vec<RegionInfo> {
    let (tx, rx) = std::sync::mpsc::channel();
    mailbox
        .send(PollerMsg::Inspect {
            cb: Box::new(move |infos| tx.send(infos).unwrap()),
        })
        .unwrap();
    rx.recv().unwrap()
}

fn inspect(mailbox: &Mailbox<()>) -> RegionInfo {
    inspect_all(mailbox).remove(0)
}

/// Manual ticks of 1 ms (were time ticking it, a region would elect itself
/// in 10-20 ms).
fn manual() -> RaftConfig {
    RaftConfig {
        tick_interval: Duration::from_millis(1),
        election_tick: ELECTION_TICK,
        heartbeat_tick: 2,
        manual_ticks: true,
        ..RaftConfig::default()
    }
}

#[test]
fn a_region_campaigns_exactly_when_its_election_timeout_is_ticked() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let mut wb = WriteBatch::default();
    region::write_initial_state(&region(), &mut wb);
    engine.write(&wb, true).unwrap();
    let (handle, mailbox) = common::spawn_poller(
        1,
        manual(),
        engine,
        SnapManager::new(dir.path().join("snap")).unwrap(),
    );

    std::thread::sleep(Duration::from_millis(200));
    let info = inspect(&mailbox);
    assert!(!info.is_leader, "no tick, no election: {info:?}");
    assert_eq!(info.term, 5, "still the term a region starts in");

    mailbox
        .send(PollerMsg::Tick {
            count: ELECTION_TICK - 1,
        })
        .unwrap();
    assert!(
        !inspect(&mailbox).is_leader,
        "one tick short of the election timeout"
    );

    mailbox.send(PollerMsg::Tick { count: 1 }).unwrap();
    let info = inspect(&mailbox);
    assert!(info.is_leader, "elected on the timeout's tick: {info:?}");
    assert_eq!(info.term, 6);
    handle.shutdown();
}

/// A vote request at `term` from store 2 for `region_id`, a region store 1
/// holds nothing of.
fn vote_for_unknown_region(region_id: u64, term: u64) -> PollerMsg<()> {
    use protobuf::Message as _;
    let (from, to) = (region_id * 10 + 2, region_id * 10 + 1);
    let mut vote = raft::eraftpb::Message::default();
    vote.set_msg_type(raft::eraftpb::MessageType::MsgRequestVote);
    vote.from = from;
    vote.to = to;
    vote.term = term;
    PollerMsg::Raft(Box::new(RaftMessage {
        region_id,
        from_peer: Some(Peer {
            id: from,
            store_id: 2,
            role: 0,
        }),
        to_peer: Some(Peer {
            id: to,
            store_id: 1,
            role: 0,
        }),
        region_epoch: Some(RegionEpoch::new(1, 1)),
        message: vote.write_to_bytes().unwrap(),
        ..Default::default()
    }))
}

/// The term region `region_id`'s peer persisted in `engine` (0: none).
fn persisted_term(engine: &Arc<dyn Engine>, region_id: u64) -> u64 {
    engine
        .get_msg::<RaftLocalState>(Cf::Meta, &state_keys::raft_state_key(region_id))
        .unwrap()
        .map_or(0, |s| s.term)
}

/// A peer created and found past its time in the same round (its vote
/// request and the ticks arrived together) is kept until the round has
/// written its vote: what it decided reaches the disk before it may be
/// forgotten. (A loaded machine once ran a test into exactly this.)
#[test]
fn a_peer_is_not_collected_before_its_vote_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let (mut poller, mailbox) = common::open_poller(
        1,
        RaftConfig {
            uninitialized_peer_ttl: Duration::from_millis(50),
            ..manual()
        },
        engine.clone(),
        SnapManager::new(dir.path().join("snap")).unwrap(),
    );
    mailbox.send(vote_for_unknown_region(100, 7)).unwrap();
    mailbox.send(PollerMsg::Tick { count: 60 }).unwrap();
    poller.run_round();
    assert_eq!(persisted_term(&engine, 100), 7);
    assert_eq!(poller.regions().len(), 1, "kept until its vote was written");
    mailbox.send(PollerMsg::Tick { count: 10 }).unwrap();
    poller.run_round();
    assert!(poller.regions().is_empty(), "collected at the next sweep");
}

/// Messages from regions this store holds nothing of create peers that wait
/// for their snapshot: at most `max_uninitialized_peers` of them (a flood
/// of made-up region ids once grew a store without bound), and one still
/// waiting after `uninitialized_peer_ttl` is dropped, which makes room.
#[test]
fn peers_waiting_for_a_snapshot_are_capped_and_collected() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let disk = engine.clone();
    let (handle, mailbox) = common::spawn_poller(
        1,
        RaftConfig {
            max_uninitialized_peers: 3,
            // 50 ticks of the logical clock.
            uninitialized_peer_ttl: Duration::from_millis(50),
            ..manual()
        },
        engine,
        SnapManager::new(dir.path().join("snap")).unwrap(),
    );
    for region_id in 100..110 {
        mailbox.send(vote_for_unknown_region(region_id, 7)).unwrap();
    }
    let waiting: Vec<u64> = inspect_all(&mailbox).iter().map(|i| i.region.id).collect();
    assert_eq!(waiting, [100, 101, 102], "the limit holds");
    // Their votes reach the disk at the end of the poller's round (the
    // inspection above may be answered before): wait for it, so the
    // ticks below cannot land in that same round.
    let persisted_term = |region_id| persisted_term(&disk, region_id);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (100..103).any(|r| persisted_term(r) != 7) {
        assert!(
            std::time::Instant::now() < deadline,
            "the votes were never persisted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Not yet past their time: kept.
    mailbox.send(PollerMsg::Tick { count: 30 }).unwrap();
    assert_eq!(inspect_all(&mailbox).len(), 3);
    mailbox.send(PollerMsg::Tick { count: 30 }).unwrap();
    assert!(
        inspect_all(&mailbox).is_empty(),
        "never initialized, so collected"
    );
    // Room again; a region seen before comes back with the term it
    // persisted (a vote request of an older term does not move it back).
    mailbox.send(vote_for_unknown_region(100, 5)).unwrap();
    let back = inspect_all(&mailbox);
    assert_eq!(back.len(), 1);
    assert_eq!(
        back[0].term, 7,
        "the term it persisted survived the collection"
    );
    handle.shutdown();
}
