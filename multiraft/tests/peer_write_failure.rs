//! A store whose engine fails the write that creates or removes a peer
//! stops its poller for good, as a failed round does: the caller gets the
//! error, nothing of the change is on disk, and nothing more is
//! acknowledged (`poller/engine_failure.rs`).
#![cfg(feature = "failpoints")]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tessera_multiraft::engine::{Cf, Engine, EngineExt, MemoryEngine};
use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::{state_keys, Mailbox};
use tessera_proto::raft_serverpb::RegionLocalState;

mod common;

fn region_state(engine: &Arc<dyn Engine>) -> Option<RegionLocalState> {
    engine
        .get_msg::<RegionLocalState>(Cf::Meta, &state_keys::region_state_key(common::REGION))
        .unwrap()
}

/// Starts store 1's poller on `engine`, makes `change` through its mailbox
/// with `engine_peer_write_error` armed, and returns the error the change
/// got and the reason the poller recorded when it stopped.
fn failed_change<F, Fut>(engine: Arc<dyn Engine>, change: F) -> (String, String)
where
    F: FnOnce(Mailbox<()>) -> Fut,
    Fut: Future<Output = tessera_multiraft::Result<()>>,
{
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (handle, mailbox) = common::spawn_poller(
        1,
        common::manual_ticks_config(),
        engine,
        SnapManager::new(dir.path()).unwrap(),
    );
    let err = rt.block_on(change(mailbox)).unwrap_err().to_string();
    let mut why = None;
    for _ in 0..200 {
        why = handle.stats().engine_failure.get().cloned();
        if why.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.shutdown();
    (
        err,
        why.expect("the poller did not record an engine failure"),
    )
}

#[test]
fn a_failed_peer_write_stops_the_poller_and_leaves_nothing_half_done() {
    fail::cfg("engine_peer_write_error", "return").unwrap();

    // Creating a peer: refused, nothing written, the poller stops.
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let (err, why) = failed_change(engine.clone(), |mailbox| async move {
        mailbox.create_region(common::region3()).await
    });
    assert!(err.contains("injected write error"), "{err}");
    assert!(why.contains("creating a peer failed"), "{why}");
    assert!(region_state(&engine).is_none(), "a half-created peer");

    // Removing a peer: refused, its state stays for the restart to find.
    let engine = common::engine_with_region3();
    let (err, why) = failed_change(engine.clone(), |mailbox| async move {
        mailbox.destroy_region(common::REGION).await
    });
    assert!(err.contains("injected write error"), "{err}");
    assert!(why.contains("removing a peer failed"), "{why}");
    assert!(region_state(&engine).is_some(), "the peer's state was lost");

    fail::remove("engine_peer_write_error");
}
