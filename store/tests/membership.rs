//! Membership changes, snapshots, leader transfer and log compaction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tessera_multiraft::engine::{Cf, EngineExt};
use tessera_multiraft::region::find_peer_on_store;
use tessera_multiraft::RaftConfig;
use tessera_proto::adminpb::ChangePeerKind;
use tessera_proto::kvpb::{Context, GetRequest};
use tessera_proto::metapb::PeerRole;
use tessera_store::Error;
use tessera_testkit::{key, Cluster, ClusterOptions, EngineKind};

/// Small log limits so that compaction (and snapshots) happen in seconds.
fn gc_options(stores: usize) -> ClusterOptions {
    let mut opts = ClusterOptions::new(stores).replicas(3);
    opts.node.raft = RaftConfig {
        log_gc_tick_interval: 5,
        log_gc_threshold: 10,
        log_gc_count_limit: 200,
        ..opts.node.raft
    };
    opts
}

async fn writer(
    cluster: Arc<Cluster>,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut acked = BTreeMap::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = key(format!("{prefix}{:05}", i % 500));
        let v = format!("v{i}").into_bytes();
        if cluster.put(&k, &v).await.is_ok() {
            acked.insert(k, v);
        }
        i += 1;
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_peer_catches_up_by_snapshot_and_a_removed_peer_loses_its_data() {
    let cluster = Cluster::start(gc_options(4).engine(EngineKind::Rocks))
        .await
        .unwrap();
    let region = cluster.bootstrap_regions(&[]).await.unwrap()[0].clone();
    assert!(find_peer_on_store(&region, 4).is_none());
    for i in 0..600 {
        cluster
            .must_put(&key(format!("k{i:04}")), format!("v{i}").as_bytes())
            .await;
    }
    // The log has been compacted: a new peer cannot catch up from it.
    let leader = cluster
        .wait_leader(region.id, Duration::from_secs(10))
        .await
        .unwrap();
    let truncated = cluster
        .region_infos(region.id)
        .await
        .into_iter()
        .find(|(s, _)| *s == leader)
        .unwrap()
        .1
        .truncated_index;
    assert!(
        truncated > 100,
        "the log was compacted (truncated at {truncated})"
    );
    let snapshots_before = cluster
        .poller_stats(4)
        .unwrap()
        .snapshots_applied
        .load(Ordering::Relaxed);

    let r = cluster
        .must_change_peer(region.id, ChangePeerKind::AddLearner, 4)
        .await;
    let learner = *find_peer_on_store(&r, 4).unwrap();
    assert_eq!(learner.role, PeerRole::Learner as i32);
    assert_eq!(
        r.region_epoch.unwrap().conf_ver,
        region.region_epoch.unwrap().conf_ver + 1
    );
    cluster
        .wait_peer_caught_up(region.id, 4, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        cluster
            .poller_stats(4)
            .unwrap()
            .snapshots_applied
            .load(Ordering::Relaxed)
            > snapshots_before,
        "store 4 caught up through a snapshot"
    );
    let r = cluster
        .must_change_peer(region.id, ChangePeerKind::PromoteLearner, 4)
        .await;
    assert_eq!(
        find_peer_on_store(&r, 4).unwrap().role,
        PeerRole::Voter as i32
    );

    // The new voter serves reads: a follower read, then as leader.
    let read = cluster
        .endpoint(4)
        .unwrap()
        .get(GetRequest {
            context: Some(Context {
                region_id: region.id,
                region_epoch: r.region_epoch,
                peer: find_peer_on_store(&r, 4).copied(),
                follower_read: true,
                stale_max_age_ms: 0,
            }),
            key: key("k0599"),
        })
        .await
        .unwrap();
    assert!(read.region_error.is_none(), "{:?}", read.region_error);
    assert_eq!(read.value, b"v599");
    cluster.must_transfer_leader(region.id, 4).await;
    assert_eq!(
        cluster.get_from(4, &key("k0123")).await.unwrap().value,
        b"v123"
    );

    // Remove the peer on store 1: its data leaves store 1.
    let victim = 1;
    assert!(!cluster.region_data(victim, &r).is_empty());
    let r = cluster
        .must_change_peer(region.id, ChangePeerKind::RemovePeer, victim)
        .await;
    assert!(find_peer_on_store(&r, victim).is_none());
    let mut gone = false;
    for _ in 0..200 {
        let hosted = cluster.node(victim).unwrap().regions().await.unwrap();
        if hosted.is_empty() && cluster.region_data(victim, &r).is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gone, "the removed peer's data is still on store {victim}");
    let raft_entries = cluster
        .engine(victim)
        .unwrap()
        .count(Cf::Raft, b"", b"")
        .unwrap();
    assert_eq!(raft_entries, 0, "its raft log is gone too");
    // The region goes on without it.
    cluster.must_put(&key("after-removal"), b"ok").await;
    cluster.assert_consistent(Duration::from_secs(30)).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_moves_across_every_store_under_writes_without_losing_a_write() {
    let cluster = Arc::new(Cluster::start(gc_options(4)).await.unwrap());
    let region = cluster.bootstrap_regions(&[]).await.unwrap()[0].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = ["a", "m", "z"]
        .into_iter()
        .map(|p| tokio::spawn(writer(cluster.clone(), p, stop.clone())))
        .collect();
    // Stores 1,2,3 hold it; move one replica at a time so every store holds
    // it at some point and each original store gives it up.
    for (from, to) in [(1, 4), (2, 1), (3, 2), (4, 3)] {
        let r = cluster.move_peer(region.id, from, to).await.unwrap();
        assert!(find_peer_on_store(&r, to).is_some());
        assert!(find_peer_on_store(&r, from).is_none());
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 100, "writers made progress ({})", acked.len());
    let final_region = cluster.regions()[0].clone();
    let stores: Vec<u64> = final_region.peers.iter().map(|p| p.store_id).collect();
    assert_eq!(stores, vec![1, 2, 3]);
    assert_eq!(
        final_region.region_epoch.unwrap().conf_ver,
        1 + 4 * 3,
        "three changes per move"
    );
    for (k, v) in &acked {
        assert_eq!(
            cluster.must_get(k).await.as_ref(),
            Some(v),
            "acknowledged write lost"
        );
    }
    cluster.assert_consistent(Duration::from_secs(30)).await;
    assert!(
        cluster.region_data(4, &final_region).is_empty(),
        "store 4 gave its replica up"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_each_voter_and_never_to_a_learner() {
    let cluster = Cluster::start(ClusterOptions::new(4).replicas(3))
        .await
        .unwrap();
    let region = cluster.bootstrap_regions(&[]).await.unwrap()[0].clone();
    for store in [2, 3, 1, 3] {
        cluster.must_transfer_leader(region.id, store).await;
        assert_eq!(cluster.leader_of(region.id).await, Some(store));
        cluster
            .must_put(&key(format!("led-by-{store}")), b"x")
            .await;
    }
    cluster
        .must_change_peer(region.id, ChangePeerKind::AddLearner, 4)
        .await;
    match cluster.transfer_leader(region.id, 4).await {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("learner"), "{m}"),
        other => panic!("transfer to a learner: {other:?}"),
    }
    assert_eq!(cluster.leader_of(region.id).await, Some(3));
    // Removing the leader itself is refused too.
    match cluster
        .change_peer(region.id, ChangePeerKind::RemovePeer, 3)
        .await
    {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("transfer leadership first"), "{m}"),
        other => panic!("removing the leader: {other:?}"),
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_compaction_keeps_the_raft_log_bounded() {
    let cluster = Cluster::start(gc_options(3).engine(EngineKind::Rocks))
        .await
        .unwrap();
    cluster.bootstrap_regions(&[key("m")]).await.unwrap();
    let raft_entries = |c: &Cluster| {
        c.store_ids()
            .into_iter()
            .map(|s| c.engine(s).unwrap().count(Cf::Raft, b"", b"").unwrap())
            .max()
            .unwrap()
    };
    let mut peak = 0;
    for i in 0..3000 {
        let k = if i % 2 == 0 { "a" } else { "x" };
        cluster.must_put(&key(format!("{k}{i:05}")), b"value").await;
        if i % 250 == 0 {
            peak = peak.max(raft_entries(&cluster));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = raft_entries(&cluster);
    println!("raft log entries per store: peak {peak} while writing 3000 entries, {after} after");
    assert!(peak < 1000, "the raft log grew to {peak} entries");
    assert!(after < 200, "{after} entries left in the raft log");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joint_change_promotes_and_demotes_at_once_and_leaves_the_joint_state() {
    use tessera_multiraft::mailbox::{ConfChangeItem, ConfChangeKind, EpochCheck};
    let cluster = Cluster::start(ClusterOptions::new(4).replicas(3))
        .await
        .unwrap();
    let region = cluster.bootstrap_regions(&[]).await.unwrap()[0].clone();
    cluster.must_put(&key("k"), b"v").await;
    let r = cluster
        .must_change_peer(region.id, ChangePeerKind::AddLearner, 4)
        .await;
    cluster
        .wait_peer_caught_up(region.id, 4, Duration::from_secs(20))
        .await
        .unwrap();
    let leader = cluster.leader_of(region.id).await.unwrap();
    let demoted = r
        .peers
        .iter()
        .find(|p| p.store_id != leader && p.store_id != 4)
        .copied()
        .unwrap();
    let learner = *find_peer_on_store(&r, 4).unwrap();
    let node = cluster.node(leader).unwrap();
    let joint = node
        .mailbox()
        .change_peers(
            region.id,
            EpochCheck::all(r.region_epoch.unwrap()),
            vec![
                ConfChangeItem {
                    kind: ConfChangeKind::PromoteLearner,
                    peer: learner,
                },
                ConfChangeItem {
                    kind: ConfChangeKind::AddLearner,
                    peer: demoted,
                },
            ],
        )
        .await
        .unwrap();
    drop(node);
    let role = |r: &tessera_proto::metapb::Region, id: u64| {
        r.peers.iter().find(|p| p.id == id).unwrap().role
    };
    assert_eq!(role(&joint, learner.id), PeerRole::IncomingVoter as i32);
    assert_eq!(role(&joint, demoted.id), PeerRole::DemotingVoter as i32);
    // raft-rs leaves the joint configuration by itself.
    let mut left = None;
    for _ in 0..200 {
        let infos = cluster.region_infos(region.id).await;
        if let Some((_, i)) = infos.iter().find(|(s, i)| *s == leader && i.is_leader) {
            if role(&i.region, learner.id) == PeerRole::Voter as i32 {
                left = Some(i.region.clone());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = left.expect("the joint state was left");
    assert_eq!(role(&left, demoted.id), PeerRole::Learner as i32);
    assert_eq!(
        left.region_epoch.unwrap().conf_ver,
        joint.region_epoch.unwrap().conf_ver + 1
    );
    cluster.must_put(&key("k"), b"v2").await;
    cluster.assert_consistent(Duration::from_secs(20)).await;
    cluster.shutdown().await;
}

/// Regression: a snapshot generated for one new peer must not be reused for
/// a peer added later (raft-rs refuses a snapshot whose membership does not
/// include the receiver, and the leader would resend it forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_added_again_gets_a_fresh_snapshot() {
    let cluster = Cluster::start(gc_options(4)).await.unwrap();
    let region = cluster.bootstrap_regions(&[]).await.unwrap()[0].clone();
    for i in 0..300 {
        cluster.must_put(&key(format!("k{i:03}")), b"v").await;
    }
    for round in 0..3 {
        cluster
            .must_change_peer(region.id, ChangePeerKind::AddLearner, 4)
            .await;
        cluster
            .wait_peer_caught_up(region.id, 4, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        cluster
            .must_change_peer(region.id, ChangePeerKind::RemovePeer, 4)
            .await;
    }
    cluster.shutdown().await;
}

/// Regression: a learner added while the leader's store keeps a tombstone
/// of an earlier peer of the same region never caught up. A new peer has
/// no epoch yet, so its answers carry conf_ver 0, and the leader's store
/// dropped them as "messages for a removed peer"; the move stalled until
/// its operator timed out (seen in the end-to-end tests as moves that
/// timed out after regions went back and forth between stores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_once_lost_a_peer_of_a_region_can_lead_it_and_add_learners() {
    let cluster = Cluster::start(ClusterOptions::new(4).replicas(3))
        .await
        .unwrap();
    let region = cluster.bootstrap_regions(&[]).await.unwrap()[0].clone();
    cluster.must_put(&key("a"), b"1").await;
    // Store 1 loses its peer (and keeps a tombstone), then gets one back.
    cluster.move_peer(region.id, 1, 4).await.unwrap();
    cluster.move_peer(region.id, 4, 1).await.unwrap();
    // Store 1 leads; a new learner (on store 4) must catch up.
    cluster.must_transfer_leader(region.id, 1).await;
    cluster.must_put(&key("b"), b"2").await;
    let moved = tokio::time::timeout(Duration::from_secs(20), cluster.move_peer(region.id, 2, 4))
        .await
        .expect("the learner on store 4 catches up and the move finishes")
        .unwrap();
    assert!(find_peer_on_store(&moved, 4).is_some());
    assert!(find_peer_on_store(&moved, 2).is_none());
    assert_eq!(
        cluster.must_get(&key("a")).await.as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        cluster.must_get(&key("b")).await.as_deref(),
        Some(&b"2"[..])
    );
    cluster.shutdown().await;
}

/// Regression: a learner cut off while its removal committed never hears
/// of it (the leader stops sending to a removed peer, and a silent learner
/// draws no tombstone message). When the region added a peer on that store
/// again, the new peer's messages were dropped as "for another peer" while
/// the removed one lingered, and the new peer never started (seen in CI as
/// a re-added learner that never caught up). Now a message for a newer
/// peer sends the store's removal checker to the directory at once; the
/// removed peer goes, and its tombstone lets the newer peer's messages in
/// even at the directory's epoch, which already lists the newer peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_removed_while_cut_off_gives_way_when_its_store_is_added_again() {
    let cluster = Cluster::start(gc_options(4)).await.unwrap();
    let region = cluster.bootstrap_regions(&[]).await.unwrap()[0].clone();
    for i in 0..30 {
        cluster.must_put(&key(format!("k{i:03}")), b"v").await;
    }
    cluster
        .must_change_peer(region.id, ChangePeerKind::AddLearner, 4)
        .await;
    cluster
        .wait_peer_caught_up(region.id, 4, Duration::from_secs(20))
        .await
        .unwrap();
    let removed = find_peer_on_store(&cluster.region_of(&key("k000")).unwrap(), 4)
        .unwrap()
        .id;
    cluster.isolate(4);
    cluster
        .must_change_peer(region.id, ChangePeerKind::RemovePeer, 4)
        .await;
    cluster.must_put(&key("after-removal"), b"v").await;
    cluster.heal();
    let readded = cluster
        .must_change_peer(region.id, ChangePeerKind::AddLearner, 4)
        .await;
    let new_peer = find_peer_on_store(&readded, 4).unwrap().id;
    assert!(new_peer > removed);
    // Well within the removal checker's 10 s pass: only the claim can do it.
    cluster
        .wait_peer_caught_up(region.id, 4, Duration::from_secs(5))
        .await
        .expect("the re-added learner catches up");
    let infos = cluster.region_infos(region.id).await;
    let on_4 = infos.iter().find(|(store, _)| *store == 4).unwrap();
    assert_eq!(on_4.1.peer_id, new_peer, "store 4 hosts the new peer only");
    cluster.assert_consistent(Duration::from_secs(20)).await;
    let data = cluster.region_data(4, &readded);
    assert!(data.iter().any(|(k, _)| k.ends_with(b"after-removal")));
    cluster.shutdown().await;
}
