//! With `RaftConfig::manual_ticks` the poller's logical clock moves only
//! when a test ticks it, and an election timeout is exactly `election_tick`
//! ticks: a test decides when a group campaigns, whatever the wall clock.

use std::sync::Arc;
use std::time::Duration;

use tessera_multiraft::engine::{Engine, MemoryEngine, WriteBatch};
use tessera_multiraft::mailbox::{Mailbox, PollerMsg, RegionInfo};
use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::{region, RaftConfig};
use tessera_proto::metapb::{Peer, Region, RegionEpoch};

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

fn inspect(mailbox: &Mailbox<()>) -> RegionInfo {
    let (tx, rx) = std::sync::mpsc::channel();
    mailbox
        .send(PollerMsg::Inspect {
            cb: Box::new(move |infos| tx.send(infos).unwrap()),
        })
        .unwrap();
    rx.recv().unwrap().remove(0)
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
        RaftConfig {
            // Were time ticking it, the region would elect itself in
            // 10-20 ms.
            tick_interval: Duration::from_millis(1),
            election_tick: ELECTION_TICK,
            heartbeat_tick: 2,
            manual_ticks: true,
            ..RaftConfig::default()
        },
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
