//! What an authenticated node sends is still checked where a mistake is
//! fatal (README, "Security"): replayed attacks from a valid node identity
//! against a store of a running cluster. Each is refused with a clear
//! error, leaves nothing behind, and the store keeps serving.

use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType, Snapshot};
use tessera_e2e::{metric_value, E2eCluster, Options};
use tessera_proto::metapb::{Peer, Region};
use tessera_proto::raft_serverpb::raft_client::RaftClient;
use tessera_proto::raft_serverpb::{
    RaftMessage, RaftMessageBatch, SnapshotChunk, SnapshotData, SnapshotFile,
};
use tonic::transport::Endpoint;

/// A snapshot for `region_id` from store 2 to `to_store`, declaring `files`.
fn snapshot(region_id: u64, to_store: u64, files: Vec<SnapshotFile>) -> RaftMessage {
    let data = SnapshotData {
        region: Some(Region {
            id: region_id,
            ..Default::default()
        }),
        files,
        ..Default::default()
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

/// The value of `series` on a status page (0 if it is not there).
fn counted(status: &str, series: &str) -> f64 {
    metric_value(status, series).unwrap_or(0.0)
}

/// One Raft message of `region` from `from` to `to`.
fn raft_message(region: &Region, from: &Peer, to: &Peer, m: Message) -> RaftMessage {
    RaftMessage {
        region_id: region.id,
        from_peer: Some(*from),
        to_peer: Some(*to),
        region_epoch: region.region_epoch,
        message: m.write_to_bytes().unwrap(),
        ..Default::default()
    }
}

fn message(t: MessageType, from: &Peer, to: &Peer) -> Message {
    let mut m = Message::default();
    m.set_msg_type(t);
    m.from = from.id;
    m.to = to.id;
    m
}

/// A snapshot of `region` far ahead of its log (term 1,000,000, index
/// 2^40), from `from` to `to`, declaring `files`.
fn snapshot_of(region: &Region, from: &Peer, to: &Peer, files: Vec<SnapshotFile>) -> Message {
    let mut snap = message(MessageType::MsgSnapshot, from, to);
    snap.term = 1_000_000;
    let data = SnapshotData {
        region: Some(region.clone()),
        files,
        ..Default::default()
    };
    let s = snap.mut_snapshot();
    s.set_data(prost::Message::encode_to_vec(&data).into());
    let meta = s.mut_metadata();
    meta.index = 1 << 40;
    meta.term = 1_000_000;
    meta.mut_conf_state().voters = region.peers.iter().map(|p| p.id).collect();
    snap
}

/// An SST file, written by a real RocksDB engine, holding `key`.
fn sst_holding(dir: &std::path::Path, key: &[u8]) -> (SnapshotFile, Vec<u8>) {
    use tessera_multiraft::engine::{Cf, Engine, ExportRange, RocksEngine, RocksOptions};
    let engine = RocksEngine::open(&dir.join("db"), &RocksOptions::default()).unwrap();
    let mut wb = tessera_multiraft::WriteBatch::default();
    wb.put(Cf::Default, key.to_vec(), b"planted".to_vec());
    engine.write(&wb, true).unwrap();
    let files = engine
        .export(&dir.join("out"), &mut |_| {
            Ok(vec![ExportRange {
                cf: Cf::Default,
                start: vec![],
                end: vec![],
            }])
        })
        .unwrap();
    let f = &files[0];
    let name = f.path.file_name().unwrap().to_string_lossy().to_string();
    let sst = SnapshotFile {
        cf: "default".into(),
        name,
        size: f.size,
        crc32: f.crc32,
        keys: f.keys,
    };
    (sst, std::fs::read(&f.path).unwrap())
}

/// The attacks the security issue traced, replayed from a valid node
/// identity against a running cluster with a region `[m, +inf)`: forged
/// tombstones for every replica and messages for a newer peer of the region
/// on each replica's store (both claim the replica was removed), a
/// heartbeat committing past the log, a
/// read-index request without its context, a `MsgSnapshot` sent without
/// its files, and a snapshot whose SST holds a key outside the region. No
/// replica is lost, no process aborts, nothing is written, each refusal is
/// counted, and the cluster keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_raft_messages_lose_no_replica_and_abort_no_store() {
    let c = E2eCluster::start(Options::default()).await;
    c.wait_settled(1).await;
    let cluster_id = c.status().await.unwrap().cluster_id;
    let router = c.router();
    router.put(None, b"n-before", b"v").await.unwrap();
    let conn = c.directory_conn();
    let first = tessera_e2e::scan_regions(&conn).await.unwrap()[0]
        .region
        .clone()
        .unwrap();
    c.try_cli(&["region", "split", &first.id.to_string(), "--at", "m"])
        .unwrap();
    c.wait_settled(2).await;
    // The region [m, +inf) (keys carry their keyspace's prefix) with a
    // leader reported and a peer on each store.
    let mut target = None;
    for _ in 0..100 {
        let regions = tessera_e2e::scan_regions(&conn).await.unwrap();
        target = regions.into_iter().find(|r| {
            let region = r.region.as_ref().unwrap();
            region.start_key.ends_with(b"m") && region.peers.len() == 3 && r.leader.is_some()
        });
        if target.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(target) = target else {
        let all = tessera_e2e::scan_regions(&conn).await;
        panic!("no region [m, +inf) with a leader: {all:?}");
    };
    let region = target.region.clone().unwrap();
    let leader = target.leader.unwrap();

    let mut clients = vec![];
    for (&index, store) in &c.stores {
        let store_id = c.store_id(index).await.unwrap();
        let peer = *region
            .peers
            .iter()
            .find(|p| p.store_id == store_id)
            .unwrap();
        let other = *region.peers.iter().find(|p| p.id != peer.id).unwrap();
        let endpoint = Endpoint::from_shared(format!("http://{}", store.addr))
            .unwrap()
            .timeout(Duration::from_secs(20));
        let raft = RaftClient::new(c.node_security().connect(endpoint).await.unwrap());
        clients.push((index, store.status.clone(), peer, other, raft));
    }
    let batch = |from: &Peer, messages: Vec<RaftMessage>| RaftMessageBatch {
        from_store_id: from.store_id,
        messages,
        cluster_id,
    };

    for (_, _, peer, other, raft) in clients.iter_mut() {
        // Three tombstones (one per replica) claiming a newer membership.
        let mut epoch = region.region_epoch.unwrap();
        epoch.conf_ver += 100;
        let tombstone = RaftMessage {
            region_id: region.id,
            from_peer: Some(*other),
            to_peer: Some(*peer),
            region_epoch: Some(epoch),
            is_tombstone: true,
            from_store_low_space: false,
            hibernation: None,
            ..Default::default()
        };
        // A heartbeat committing far past anything in the log.
        let mut heartbeat = message(MessageType::MsgHeartbeat, other, peer);
        heartbeat.term = 1_000_000;
        heartbeat.commit = 1 << 40;
        // A snapshot message in a plain batch: its files never came.
        let snap = snapshot_of(&region, other, peer, vec![file("default", "a.sst", 10)]);
        // A message for a newer peer of the region on the same store, at
        // a newer membership: a claim that the local peer was removed.
        let newer = Peer {
            id: peer.id + 1000,
            ..*peer
        };
        let mut for_newer = raft_message(
            &region,
            other,
            &newer,
            message(MessageType::MsgHeartbeat, other, &newer),
        );
        for_newer.region_epoch = Some(epoch);
        let mut messages = vec![
            tombstone,
            raft_message(&region, other, peer, heartbeat),
            raft_message(&region, other, peer, snap),
            for_newer,
        ];
        if peer.id == leader.id {
            // A read-index request without its context, to the leader.
            let read = message(MessageType::MsgReadIndex, other, peer);
            messages.push(raft_message(&region, other, peer, read));
        }
        raft.raft(tokio_stream::iter(vec![batch(other, messages)]))
            .await
            .unwrap();
    }

    // A snapshot stream whose SST holds a key outside the region, to the
    // first store: it arrives whole, and is refused before raft-rs sees it.
    let scratch = tempfile::tempdir().unwrap();
    // Keys are stored with their keyspace's prefix: the region starts at
    // <prefix>m, and the planted key is <prefix>a-planted.
    let prefix = &region.start_key[..region.start_key.len() - 1];
    let planted = [prefix, b"a-planted"].concat();
    let (sst, bytes) = sst_holding(scratch.path(), &planted);
    let (index1, status1, peer1, other1, raft1) = &mut clients[0];
    let snap = snapshot_of(&region, other1, peer1, vec![sst.clone()]);
    let stream = vec![
        SnapshotChunk {
            message: Some(raft_message(&region, other1, peer1, snap)),
            cluster_id,
            ..Default::default()
        },
        SnapshotChunk {
            file_name: sst.name.clone(),
            data: bytes,
            ..Default::default()
        },
    ];
    raft1.snapshot(tokio_stream::iter(stream)).await.unwrap();
    let (index1, status1) = (*index1, status1.clone());

    // Each refusal is counted where it happened.
    let stores: Vec<(String, bool)> = clients
        .iter()
        .map(|(_, status, peer, ..)| (status.clone(), peer.id == leader.id))
        .collect();
    c.wait_for("every refusal counted", Duration::from_secs(20), |_| {
        let (stores, status1) = (stores.clone(), status1.clone());
        async move {
            stores.iter().all(|(status, leads)| {
                let refused = |reason: &str| {
                    counted(
                        status,
                        &format!("tessera_raft_messages_refused_total{{reason=\"{reason}\"}}"),
                    )
                };
                refused("heartbeat_commit_past_log") >= 1.0
                    && refused("snapshot_not_received") >= 1.0
                    && (!leads || refused("read_index_without_one_context") >= 1.0)
                    && counted(
                        status,
                        "tessera_raft_tombstone_messages_total{outcome=\"reported\"}",
                    ) >= 1.0
                    && counted(
                        status,
                        "tessera_raft_superseded_peer_messages_total{outcome=\"reported\"}",
                    ) >= 1.0
            }) && counted(
                &status1,
                "tessera_raft_messages_refused_total{reason=\"snapshot_files_refused\"}",
            ) >= 1.0
        }
    })
    .await;

    // The removal checker asked the directory about every reported replica
    // and kept it: each store still hosts both regions, every process runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (index, status, ..) in &clients {
        assert_eq!(
            metric_value(status, "tessera_regions"),
            Some(2.0),
            "store {index} lost a replica"
        );
        assert!(c.stores[index].proc.is_running(), "store {index} is down");
        assert_eq!(
            counted(
                status,
                "tessera_region_reloads_total{reason=\"step_panicked\"}"
            ),
            0.0,
            "store {index}: a forged message got past the checks into raft-rs"
        );
    }
    let snap_dir = c.dir.path().join(format!("store-{index1}")).join("snap");
    let left: Vec<_> = std::fs::read_dir(&snap_dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left.iter().any(|n| n.to_string_lossy().starts_with("rcv_")),
        "{left:?}"
    );
    let regions = tessera_e2e::scan_regions(&conn).await.unwrap();
    let now = regions
        .iter()
        .find(|r| r.region.as_ref().unwrap().id == region.id)
        .unwrap();
    assert_eq!(now.region.as_ref().unwrap().peers, region.peers);
    assert_eq!(router.get(None, b"a-planted").await.unwrap(), None);
    router.put(None, b"z-after", b"v").await.unwrap();
    assert_eq!(
        router.get(None, b"n-before").await.unwrap(),
        Some(b"v".to_vec())
    );
}
