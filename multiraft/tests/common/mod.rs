//! What the multiraft integration tests share: a state machine that applies
//! nothing, a poller on one store over the in-memory network, and the
//! region the hostile-input tests hold.

use std::sync::Arc;

use tessera_multiraft::engine::Engine;
use tessera_multiraft::mailbox::Mailbox;
use tessera_multiraft::poller::{self, PollerHandle, PollerSpec};
use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::transport::MemoryNetwork;
use tessera_multiraft::{ApplyContext, Poller, RaftConfig, StateMachine};
use tessera_proto::metapb::{Peer, Region, RegionEpoch};

/// A state machine that applies nothing (the tests never propose).
pub struct Nothing;

impl StateMachine for Nothing {
    type Output = ();
    fn apply(&mut self, _cx: &mut ApplyContext<'_>, _data: &[u8]) {}
    fn compact_log_command(&self, _region: &Region, _index: u64, _term: u64) -> Vec<u8> {
        vec![]
    }
}

fn spec(
    store_id: u64,
    config: RaftConfig,
    engine: Arc<dyn Engine>,
    snap_mgr: SnapManager,
) -> (PollerSpec<Nothing>, Mailbox<()>) {
    let (mailbox, inbox) = poller::mailbox::<()>(1024);
    let net = MemoryNetwork::new();
    let spec = PollerSpec {
        store_id,
        config,
        engine,
        snap_mgr,
        state_machine: Nothing,
        transport: Box::new(net.transport(store_id)),
        inbox,
        removal_reports: None,
        local_reads: None,
    };
    (spec, mailbox)
}

/// Starts the poller of store `store_id` over `engine` (loading every
/// region it holds), alone on an in-memory network.
#[allow(dead_code)]
pub fn spawn_poller(
    store_id: u64,
    config: RaftConfig,
    engine: Arc<dyn Engine>,
    snap_mgr: SnapManager,
) -> (PollerHandle<()>, Mailbox<()>) {
    let (spec, mailbox) = spec(store_id, config, engine, snap_mgr);
    let handle = Poller::spawn(spec, mailbox.clone()).unwrap();
    (handle, mailbox)
}

/// The same poller without a thread: the test runs its rounds
/// (`Poller::run_round`).
#[allow(dead_code)]
pub fn open_poller(
    store_id: u64,
    config: RaftConfig,
    engine: Arc<dyn Engine>,
    snap_mgr: SnapManager,
) -> (Poller<Nothing>, Mailbox<()>) {
    let (spec, mailbox) = spec(store_id, config, engine, snap_mgr);
    let poller = Poller::open(spec, mailbox.clone()).unwrap();
    (poller, mailbox)
}

/// The region the hostile-input tests hold: id 3, voters on stores 1, 2
/// and 3.
#[allow(dead_code)]
pub const REGION: u64 = 3;

/// Region 3's peer on `store`.
#[allow(dead_code)]
pub fn peer(store: u64) -> Peer {
    Peer {
        id: REGION * 10 + store,
        store_id: store,
        role: 0,
    }
}

/// Region 3 at epoch (1, 1).
#[allow(dead_code)]
pub fn region3() -> Region {
    Region {
        id: REGION,
        region_epoch: Some(RegionEpoch::new(1, 1)),
        peers: vec![peer(1), peer(2), peer(3)],
        ..Default::default()
    }
}

/// An in-memory engine holding region 3's initial state.
#[allow(dead_code)]
pub fn engine_with_region3() -> Arc<dyn Engine> {
    let engine: Arc<dyn Engine> = Arc::new(tessera_multiraft::engine::MemoryEngine::new());
    let mut wb = tessera_multiraft::engine::WriteBatch::default();
    tessera_multiraft::region::write_initial_state(&region3(), &mut wb);
    engine.write(&wb, true).expect("initial state");
    engine
}

/// Raft settings of a poller the test ticks by hand.
#[allow(dead_code)]
pub fn manual_ticks_config() -> RaftConfig {
    RaftConfig {
        tick_interval: std::time::Duration::from_millis(1),
        election_tick: 10,
        heartbeat_tick: 2,
        manual_ticks: true,
        ..RaftConfig::default()
    }
}
