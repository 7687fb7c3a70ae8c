//! What an authenticated node sends is still checked where a mistake is
//! fatal (README, "Security"): replayed attacks from a valid node identity
//! against a store of a running cluster. Each is refused with a clear
//! error, leaves nothing behind, and the store keeps serving.

use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType, Snapshot};
use tessera_e2e::{E2eCluster, Options};
use tessera_proto::metapb::{Peer, Region};
use tessera_proto::raft_serverpb::raft_client::RaftClient;
use tessera_proto::raft_serverpb::{RaftMessage, SnapshotChunk, SnapshotData, SnapshotFile};
use tonic::transport::Endpoint;

/// A snapshot for `region_id` from store 2 to `to_store`, declaring `files`.
fn snapshot(region_id: u64, to_store: u64, files: Vec<SnapshotFile>) -> RaftMessage {
    let data = SnapshotData {
        region: Some(Region {
            id: region_id,
            ..Default::default()
        }),
        files,
    };
    let mut snap = Snapshot::default();
    snap.set_data(prost::Message::encode_to_vec(&data).into());
    snap.mut_metadata().index = 1_000_000;
    snap.mut_metadata().term = 1_000;
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.set_snapshot(snap);
    RaftMessage {
        region_id,
        from_peer: Some(Peer {
            id: 999_001,
            store_id: 2,
            ..Default::default()
        }),
        to_peer: Some(Peer {
            id: 999_002,
            store_id: to_store,
            ..Default::default()
        }),
        message: m.write_to_bytes().unwrap(),
        ..Default::default()
    }
}

fn file(cf: &str, name: &str, size: u64) -> SnapshotFile {
    SnapshotFile {
        cf: cf.into(),
        name: name.into(),
        size,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_snapshot_streams_are_refused_and_leave_nothing_behind() {
    let c = E2eCluster::start(Options::default()).await;
    c.wait_settled(1).await;
    let cluster_id = c.status().await.unwrap().cluster_id;
    let store_id = c.store_id(1).await.unwrap();
    let endpoint = Endpoint::from_shared(format!("http://{}", c.stores[&1].addr))
        .unwrap()
        .timeout(Duration::from_secs(20));
    let mut raft = RaftClient::new(c.node_security().connect(endpoint).await.unwrap());
    let router = c.router();
    router.put(None, b"before", b"v").await.unwrap();

    let region = 424_242;
    let data_chunk = |name: &str, data: &[u8]| SnapshotChunk {
        file_name: name.into(),
        data: data.to_vec(),
        ..Default::default()
    };
    let attacks: Vec<(&str, Vec<SnapshotChunk>, &str)> = vec![
        (
            "a file for the raft column family",
            vec![],
            "column family \"raft\"",
        ),
        (
            "a file for the meta column family",
            vec![],
            "column family \"meta\"",
        ),
        (
            "a chunk for a file it did not declare",
            vec![data_chunk("../../escape.sst", b"x")],
            "was not declared",
        ),
        (
            "more bytes than declared",
            vec![data_chunk("a.sst", &[0u8; 64])],
            "longer than",
        ),
        (
            "a snapshot whose files never arrive",
            vec![],
            "a.sst: No such file",
        ),
    ];
    let declared = [
        vec![file("raft", "a.sst", 10)],
        vec![file("meta", "a.sst", 10)],
        vec![file("default", "a.sst", 10)],
        vec![file("default", "a.sst", 10)],
        vec![file("default", "a.sst", 10)],
    ];
    for ((what, chunks, says), files) in attacks.into_iter().zip(declared) {
        let mut stream = vec![SnapshotChunk {
            message: Some(snapshot(region, store_id, files)),
            cluster_id,
            ..Default::default()
        }];
        stream.extend(chunks);
        let refused = raft
            .snapshot(tokio_stream::iter(stream))
            .await
            .expect_err(what);
        assert!(refused.message().contains(says), "{what}: {refused:?}");
    }

    // Nothing was left in the store's snapshot directory, no region was
    // created, and the store still serves.
    let snap_dir = c.dir.path().join("store-1").join("snap");
    let left: Vec<_> = std::fs::read_dir(&snap_dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left
            .iter()
            .any(|n| n.to_string_lossy().contains(&region.to_string())),
        "{left:?}"
    );
    assert!(c.stores.get(&1).unwrap().proc.is_running());
    router.put(None, b"after", b"v").await.unwrap();
    assert_eq!(
        router.get(None, b"before").await.unwrap(),
        Some(b"v".to_vec())
    );
}
