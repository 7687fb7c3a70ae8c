//! What the multiraft integration tests share: a state machine that applies
//! nothing, and a poller on one store over the in-memory network.

use std::sync::Arc;

use tessera_multiraft::engine::Engine;
use tessera_multiraft::mailbox::Mailbox;
use tessera_multiraft::poller::{self, PollerHandle, PollerSpec};
use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::transport::MemoryNetwork;
use tessera_multiraft::{ApplyContext, Poller, RaftConfig, StateMachine};
use tessera_proto::metapb::Region;

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
