//! A store whose engine fails the write that creates or removes a peer
//! stops its poller for good, as a failed round does: the caller gets the
//! error, nothing of the change is on disk, and nothing more is
//! acknowledged (`poller/engine_failure.rs`).
#![cfg(feature = "failpoints")]

use std::sync::Arc;
use std::time::Duration;

use tessera_multiraft::engine::{Cf, Engine, EngineExt, MemoryEngine};
use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::state_keys;
use tessera_proto::raft_serverpb::RegionLocalState;

mod common;

fn region_state(engine: &Arc<dyn Engine>) -> Option<RegionLocalState> {
    engine
        .get_msg::<RegionLocalState>(Cf::Meta, &state_keys::region_state_key(common::REGION))
        .unwrap()
}

/// Waits for the poller to record its engine failure.
fn failure_of(stats: &tessera_multiraft::poller::PollerStats) -> String {
    for _ in 0..200 {
        if let Some(why) = stats.engine_failure.get() {
            return why.clone();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the poller did not record an engine failure");
}

#[test]
fn a_failed_peer_write_stops_the_poller_and_leaves_nothing_half_done() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    fail::cfg("engine_peer_write_error", "return").unwrap();

    // Creating a peer: refused, nothing written, the poller stops.
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let (handle, mailbox) = common::spawn_poller(
        1,
        common::manual_ticks_config(),
        engine.clone(),
        SnapManager::new(dir.path().join("create")).unwrap(),
    );
    let err = rt
        .block_on(mailbox.create_region(common::region3()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("injected write error"), "{err}");
    let why = failure_of(handle.stats());
    assert!(why.contains("creating a peer failed"), "{why}");
    assert!(region_state(&engine).is_none(), "a half-created peer");
    handle.shutdown();

    // Removing a peer: refused, its state stays for the restart to find.
    let engine = common::engine_with_region3();
    let (handle, mailbox) = common::spawn_poller(
        1,
        common::manual_ticks_config(),
        engine.clone(),
        SnapManager::new(dir.path().join("destroy")).unwrap(),
    );
    let err = rt
        .block_on(mailbox.destroy_region(common::REGION))
        .unwrap_err()
        .to_string();
    assert!(err.contains("injected write error"), "{err}");
    let why = failure_of(handle.stats());
    assert!(why.contains("removing a peer failed"), "{why}");
    assert!(region_state(&engine).is_some(), "the peer's state was lost");
    handle.shutdown();

    fail::remove("engine_peer_write_error");
}
