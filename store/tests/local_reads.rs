//! Lease reads served off the poller's thread stay linearizable in the
//! windows between what the poller does and what it has published: the
//! leader's poller is paused (failpoint `local_read_before_publish`, only
//! on that store's poller thread, only in the round the test picks) after
//! a round's writes were acknowledged or a leader transfer was sent, and
//! reads at that store must not return what a newer write replaced. A
//! follower's poller is paused while a snapshot replaces its data
//! (failpoint `snapshot_before_ingest`: the old data deleted, the
//! snapshot's files not yet ingested), and a stale read there must not be
//! served from it. Needs the failpoints build (`scripts/test`).
#![cfg(feature = "failpoints")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use raft::eraftpb::MessageType;
use tessera_multiraft::engine::Cf;
use tessera_multiraft::mailbox::PollerMsg;
use tessera_multiraft::transport::memory::{Filter, FilterAction, MessageFilter};
use tessera_multiraft::RaftConfig;
use tessera_proto::kvpb::GetResponse;
use tessera_proto::raft_serverpb::RaftMessage;
use tessera_testkit::{key, Cluster, ClusterOptions, EngineKind};

const FAILPOINT: &str = "local_read_before_publish";

/// Failpoints are global to the process: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Pauses one store's poller thread once, at the failpoint, in the first
/// round where `when` holds; [`Pause::release`] lets it go on.
struct Pause {
    failpoint: &'static str,
    paused: Arc<AtomicBool>,
    released: Arc<(Mutex<bool>, Condvar)>,
}

impl Pause {
    fn arm(store_id: u64, when: impl Fn() -> bool + Send + Sync + 'static) -> Pause {
        Pause::arm_at(FAILPOINT, store_id, when)
    }

    /// Like [`Pause::arm`], at `failpoint`.
    fn arm_at(
        failpoint: &'static str,
        store_id: u64,
        when: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Pause {
        let thread = format!("poller-{store_id}");
        let armed = Arc::new(AtomicBool::new(true));
        let paused = Arc::new(AtomicBool::new(false));
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let (p, r) = (paused.clone(), released.clone());
        fail::cfg_callback(failpoint, move || {
            if std::thread::current().name() != Some(thread.as_str()) || !when() {
                return;
            }
            if !armed.swap(false, Ordering::SeqCst) {
                return;
            }
            p.store(true, Ordering::SeqCst);
            let (lock, cv) = &*r;
            let done = lock.lock().unwrap();
            // Never longer than this, whatever the test does.
            let _ = cv
                .wait_timeout_while(done, Duration::from_secs(15), |d| !*d)
                .unwrap();
        })
        .unwrap();
        Pause {
            failpoint,
            paused,
            released,
        }
    }

    fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    async fn wait_paused(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.is_paused() {
            assert!(Instant::now() < deadline, "the poller never paused");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn release(&self) {
        let (lock, cv) = &*self.released;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        self.release();
        fail::remove(self.failpoint);
    }
}

/// A three-store cluster with one region holding `k = v1`, its leader
/// serving lease reads off the poller's thread. Returns the leader.
async fn cluster_with_a_lease() -> (Arc<Cluster>, u64, u64) {
    let cluster = Arc::new(Cluster::start(ClusterOptions::new(3)).await.unwrap());
    let region_id = cluster.bootstrap_regions(&[]).await.unwrap()[0].id;
    cluster.must_put(&k(), b"v1").await;
    let leader = cluster
        .wait_leader(region_id, Duration::from_secs(10))
        .await
        .unwrap();
    let node = cluster.node(leader).unwrap();
    let readers = node.local_reads().expect("local reads are on by default");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = readers.served();
        let got = cluster.get_from(leader, &k()).await.unwrap();
        if got.region_error.is_none() {
            assert_eq!(got.value, b"v1");
        }
        if readers.served() > served {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never served a lease read off its poller"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (cluster, region_id, leader)
}

/// Notes that `from` sent a MsgTimeoutNow; lets every message through.
struct SawTimeoutNow {
    from: u64,
    sent: Arc<AtomicBool>,
}

impl Filter for SawTimeoutNow {
    fn action(&self, from: u64, to: u64, msg: &RaftMessage) -> FilterAction {
        let probe = MessageFilter {
            from_stores: vec![self.from],
            msg_types: vec![MessageType::MsgTimeoutNow],
            ..MessageFilter::new(FilterAction::Drop)
        };
        if probe.action(from, to, msg) == FilterAction::Drop {
            self.sent.store(true, Ordering::SeqCst);
        }
        FilterAction::Pass
    }
}

/// The key every test reads and writes.
fn k() -> Vec<u8> {
    key("k")
}

fn value_of(got: &GetResponse) -> Option<&[u8]> {
    (got.region_error.is_none() && got.found).then_some(got.value.as_slice())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_acknowledged_before_its_apply_is_published_is_seen_by_the_next_lease_read() {
    let _serial = SERIAL.lock().await;
    let (cluster, _region_id, leader) = cluster_with_a_lease().await;
    let node = cluster.node(leader).unwrap();
    let readers = node.local_reads().unwrap().clone();
    let engine = cluster.engine(leader).unwrap();
    // Pause the round that applied v2, after its acknowledgement.
    let pause = Pause::arm(leader, move || {
        engine.get(Cf::Default, &k()).ok().flatten().as_deref() == Some(&b"v2"[..])
    });
    let put = cluster.put_to(leader, &k(), b"v2").await.unwrap();
    assert!(put.region_error.is_none(), "{:?}", put.region_error);
    // Acknowledged in the round that now pauses.
    pause.wait_paused().await;

    let served = readers.served();
    let read = tokio::spawn({
        let c = cluster.clone();
        async move { c.get_from(leader, &k()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !read.is_finished(),
        "the read waits for the applied state its read index needs"
    );
    pause.release();
    let got = read.await.unwrap().unwrap();
    assert_eq!(value_of(&got), Some(&b"v2"[..]), "{got:?}");
    assert_eq!(
        readers.served(),
        served + 1,
        "served off the poller's thread, once the apply was published"
    );
    drop(pause);
    drop(node);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_transfer_ends_the_lease_before_the_new_leader_takes_writes() {
    let _serial = SERIAL.lock().await;
    let (cluster, region_id, old) = cluster_with_a_lease().await;
    let node = cluster.node(old).unwrap();
    let readers = node.local_reads().unwrap().clone();
    let region = cluster.region_of(&k()).unwrap();
    let new = region
        .peers
        .iter()
        .find(|p| p.store_id != old)
        .copied()
        .unwrap();
    // Pause the old leader in the round whose messages carried
    // MsgTimeoutNow, once they left.
    let sent = Arc::new(AtomicBool::new(false));
    cluster.net.add_filter(SawTimeoutNow {
        from: old,
        sent: sent.clone(),
    });
    let pause = Pause::arm(old, move || sent.load(Ordering::SeqCst));
    node.mailbox()
        .send(PollerMsg::TransferLeader {
            region_id,
            to_peer: new.id,
        })
        .unwrap();
    pause.wait_paused().await;

    // The new leader is elected without the old one and takes a write.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let put = cluster.put_to(new.store_id, &k(), b"v2").await;
        if put.as_ref().is_ok_and(|p| p.region_error.is_none()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader never took the write: {put:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The old leader, paused with its last published state, must not
    // answer from its lease.
    let served = readers.served();
    let read = tokio::spawn({
        let c = cluster.clone();
        async move { c.get_from(old, &k()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pause.release();
    let got = read.await.unwrap();
    if let Ok(got) = &got {
        assert_ne!(value_of(got), Some(&b"v1"[..]), "a stale read: {got:?}");
    }
    assert_eq!(readers.served(), served, "no lease read after the transfer");
    drop(pause);
    drop(node);
    // The write stands, wherever it is read.
    assert_eq!(cluster.must_get(&k()).await, Some(b"v2".to_vec()));
    cluster.shutdown().await;
}

/// A follower catching up by snapshot: from the snapshot's staging until
/// its data is in place, the storage names the snapshot's applied index
/// but the engine does not hold its data. A stale read there (whose safe
/// point the new applied index passes) must wait for the poller to finish
/// the snapshot, never read the half-replaced data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_read_waits_while_a_snapshot_replaces_a_followers_data() {
    let _serial = SERIAL.lock().await;
    let mut opts = ClusterOptions::new(3).engine(EngineKind::Rocks);
    opts.node.raft = RaftConfig {
        log_gc_tick_interval: 5,
        log_gc_threshold: 10,
        log_gc_count_limit: 200,
        ..opts.node.raft
    };
    let cluster = Arc::new(Cluster::start(opts).await.unwrap());
    let region_id = cluster.bootstrap_regions(&[]).await.unwrap()[0].id;
    cluster.must_put(&k(), b"v1").await;
    let leader = cluster
        .wait_leader(region_id, Duration::from_secs(10))
        .await
        .unwrap();
    let lagging = (1..=3).find(|s| *s != leader).unwrap();
    cluster
        .wait_replicas_caught_up(region_id, Duration::from_secs(10))
        .await
        .unwrap();
    let max_age = Duration::from_secs(60);
    // The first stale read makes a safe point (a ReadIndex round); the
    // second is served from it.
    for _ in 0..2 {
        let got = cluster
            .stale_get_from(lagging, &k(), max_age)
            .await
            .unwrap();
        assert_eq!(value_of(&got), Some(&b"v1"[..]));
    }

    // The follower falls behind the compacted log: it will need a snapshot.
    cluster.isolate(lagging);
    for i in 0..600 {
        cluster
            .must_put(&key(format!("f{i:04}")), format!("v{i}").as_bytes())
            .await;
    }
    cluster.must_put(&k(), b"v2").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let infos = cluster.region_infos(region_id).await;
        let truncated = infos
            .iter()
            .find(|(s, _)| *s == leader)
            .map_or(0, |(_, i)| i.truncated_index);
        if truncated > 100 {
            break;
        }
        assert!(Instant::now() < deadline, "the log was never compacted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Heal; the follower's poller stops with its data deleted and the
    // snapshot's files not ingested.
    let pause = Pause::arm_at("snapshot_before_ingest", lagging, || true);
    cluster.heal();
    pause.wait_paused().await;
    let read = tokio::spawn({
        let c = cluster.clone();
        async move { c.stale_get_from(lagging, &k(), max_age).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !read.is_finished(),
        "a stale read was answered while the snapshot replaced the data: {:?}",
        read.await
    );
    pause.release();
    let got = read.await.unwrap().unwrap();
    assert_eq!(value_of(&got), Some(&b"v2"[..]), "{got:?}");
    drop(pause);
    let got = cluster
        .stale_get_from(lagging, &k(), max_age)
        .await
        .unwrap();
    assert_eq!(value_of(&got), Some(&b"v2"[..]));
    cluster.shutdown().await;
}
