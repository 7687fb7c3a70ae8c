//! A store that crashes while applying a snapshot — after the new Raft,
//! apply and region states are durable, before the data is ingested —
//! finishes the apply when it restarts, from the files it kept.

use std::sync::Arc;
use std::time::Duration;

use tessera_multiraft::engine::{Cf, Engine, EngineExt, MemoryEngine, WriteBatch};
use tessera_multiraft::mailbox::PollerMsg;
use tessera_multiraft::snapshot::{self, apply as snap_apply, SnapManager};
use tessera_multiraft::storage::PeerStorage;
use tessera_multiraft::transport::OutgoingSnapshot;
use tessera_multiraft::{region, state_keys, RaftConfig};
use tessera_proto::metapb::{Peer, Region, RegionEpoch};
use tessera_proto::raft_serverpb::{PeerState, RegionLocalState};

mod common;

fn region() -> Region {
    Region {
        id: 7,
        start_key: b"a".to_vec(),
        end_key: b"q".to_vec(),
        region_epoch: Some(RegionEpoch::new(3, 4)),
        peers: vec![
            Peer {
                id: 71,
                store_id: 1,
                role: 0,
            },
            Peer {
                id: 72,
                store_id: 2,
                role: 0,
            },
        ],
    }
}

#[test]
fn a_snapshot_apply_interrupted_by_a_crash_finishes_on_restart() {
    let dir = tempfile::tempdir().unwrap();

    // Store 1 holds the region and its data, and makes a snapshot.
    let source: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let mut wb = WriteBatch::default();
    region::write_initial_state(&region(), &mut wb);
    for i in 0..100u32 {
        wb.put(
            Cf::Default,
            format!("k{i:03}").into_bytes(),
            i.to_be_bytes().to_vec(),
        );
    }
    wb.put(
        Cf::Default,
        b"z-outside".to_vec(),
        b"not in the region".to_vec(),
    );
    source.write(&wb, true).unwrap();
    let source_mgr = SnapManager::new(dir.path().join("snap-1")).unwrap();
    let snap = snapshot::generate(source.as_ref(), &source_mgr, region().id).unwrap();
    let meta = snap.get_metadata().clone();
    let data = snapshot::decode_data(&snap).unwrap();
    assert_eq!(
        data.files.iter().map(|f| f.keys).sum::<u64>(),
        100,
        "only the region's keys"
    );

    // It reaches store 2 (copied the way a transport delivers it).
    let target_mgr = SnapManager::new(dir.path().join("snap-2")).unwrap();
    let mut msg = tessera_proto::raft_serverpb::RaftMessage {
        region_id: region().id,
        ..Default::default()
    };
    let mut raft_msg = raft::eraftpb::Message::default();
    raft_msg.set_msg_type(raft::eraftpb::MessageType::MsgSnapshot);
    raft_msg.set_snapshot(snap.clone());
    msg.message = protobuf::Message::write_to_bytes(&raft_msg).unwrap();
    let out = OutgoingSnapshot {
        msg: msg.clone(),
        dir: source_mgr.gen_dir(region().id, meta.term, meta.index),
        files: data.files.clone(),
    };
    let expected = snapshot::receive::Expected::of(&target_mgr, &msg).unwrap();
    let recv = expected.dir.clone();
    std::fs::create_dir_all(&recv).unwrap();
    for f in &out.files {
        std::fs::copy(out.dir.join(&f.name), recv.join(&f.name)).unwrap();
    }
    snapshot::receive::complete(&expected).unwrap();

    // Store 2 stages the snapshot's states, writes them — and crashes
    // before ingesting the data.
    let target: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let mut storage = PeerStorage::uninitialized(target.clone(), region().id, 16).unwrap();
    let mut wb = WriteBatch::default();
    snap_apply::stage(&mut storage, &target_mgr, &snap, &mut wb).unwrap();
    target.write(&wb, true).unwrap();
    drop(storage);
    let state: RegionLocalState = target
        .get_msg(Cf::Meta, &state_keys::region_state_key(region().id))
        .unwrap()
        .unwrap();
    assert_eq!(state.state, PeerState::Applying as i32);
    assert_eq!(
        target.count(Cf::Default, b"", b"").unwrap(),
        0,
        "no data yet"
    );

    // Restart: the poller finishes the apply before serving.
    let (handle, mailbox) = common::spawn_poller(
        2,
        RaftConfig {
            tick_interval: Duration::from_millis(10),
            ..RaftConfig::default()
        },
        target.clone(),
        target_mgr.clone(),
    );
    assert_eq!(target.count(Cf::Default, b"", b"").unwrap(), 100);
    assert_eq!(
        target.get(Cf::Default, b"k042").unwrap(),
        Some(42u32.to_be_bytes().to_vec())
    );
    assert_eq!(target.get(Cf::Default, b"z-outside").unwrap(), None);
    let state: RegionLocalState = target
        .get_msg(Cf::Meta, &state_keys::region_state_key(region().id))
        .unwrap()
        .unwrap();
    assert_eq!(state.state, PeerState::Normal as i32);
    assert_eq!(state.region, Some(region()));
    assert!(
        !recv.exists(),
        "the received files are removed once applied"
    );

    let (tx, rx) = std::sync::mpsc::channel();
    mailbox
        .send(PollerMsg::Inspect {
            cb: Box::new(move |infos| tx.send(infos).unwrap()),
        })
        .unwrap();
    let infos = rx.recv().unwrap();
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].applied_index, meta.index);
    assert_eq!(infos[0].truncated_index, meta.index);
    handle.shutdown();
}
