//! Crash a store at each failpoint, restart it, and check that the history
//! around the crashes is linearizable and that no acknowledged write was
//! lost.
//!
//! One cluster (3 directories, 3 stores, 1 router; small log-GC limits)
//! serves every failpoint in turn while a workload runs:
//! - `raft_before_persist`, `raft_after_persist`, `apply_before_write`:
//!   armed with `panic` on a running store, which aborts at its next write;
//! - `split_between_write_and_start`: armed on one store, then a split of a
//!   region it holds is requested;
//! - `merge_after_prepare`, `merge_before_commit`: armed on two stores,
//!   then a merge of the split's halves is requested; each crashes in
//!   turn, restarts, and the merge ends;
//! - `merge_before_rollback`: a merge whose drivers see a source peer that
//!   never catches up (`merge_catch_up_stall`) rolls back; the stores crash
//!   before writing the rollback, all three restart, and the merge, asked
//!   again, ends;
//! - `snapshot_before_ingest`, `snapshot_after_ingest`: a store is killed,
//!   the workload runs until its regions' logs are compacted past it, and
//!   it restarts with `FAILPOINTS` set, so it aborts while applying the
//!   snapshot it is sent; it then restarts clean and must catch up.
//!
//! A second cluster fails a store's engine writes (`engine_write_error`,
//! `engine_apply_write_error` return an error in place of RocksDB's
//! write): the store must stop once with its marker, stay down across a
//! restart, and come back once the marker is deleted, with no
//! acknowledged write lost. A third slows and then stalls a store's Raft
//! writes (`raft_before_persist` armed with `sleep`): slow rounds move its
//! leaderships away, a stall fails its `/ready` until the write returns.
//! A fourth runs its stores on 256 MiB tmpfs file systems (root, as CI
//! has) and fills them: writes are refused with `NoSpace`, reads go on,
//! nothing crashes, and writes resume once space is freed — with the
//! checked workload running throughout.
#![cfg(feature = "failpoints")]

use std::time::{Duration, Instant};

use tessera_common::engine_failure;
use tessera_nemesis::check::{self, CheckOptions};
use tessera_nemesis::cluster::{ClusterSpec, NemesisCluster, ProcKind, LOW_SPACE_MIB, RESERVE_MIB};
use tessera_nemesis::history::Recorder;
use tessera_nemesis::workload::{self, WorkloadSpec};
use tokio::sync::watch;

/// Waits until the store at `index` has exited on its own.
async fn wait_for_crash(c: &mut NemesisCluster, index: usize, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let exited = c
            .e2e
            .stores
            .get_mut(&index)
            .expect("store")
            .proc
            .has_exited();
        if exited {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "store {index} did not crash at {what} within {within:?}:\n{}",
            c.tails(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The checked workload the tests run around their faults.
struct Workload {
    recorder: Recorder,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    spec: WorkloadSpec,
}

impl Workload {
    /// 4 clients over 8 keys through the cluster's routers, seeded.
    fn start(c: &NemesisCluster, seed: u64) -> Workload {
        let recorder = Recorder::new();
        let (stop, stop_rx) = watch::channel(false);
        let spec = WorkloadSpec {
            clients: 4,
            keys: 8,
            ..WorkloadSpec::default()
        };
        let task = tokio::spawn(workload::run(
            c.router_addrs(),
            c.e2e.directory_addrs(),
            c.e2e.security(),
            spec.clone(),
            seed,
            recorder.clone(),
            stop_rx,
        ));
        Workload {
            recorder,
            stop,
            task,
            spec,
        }
    }

    /// Stops it, reads every key back and checks the history: no
    /// violation (asserted); the report, for progress checks.
    async fn finish(self, c: &NemesisCluster) -> check::Report {
        self.stop.send(true).expect("stop");
        self.task.await.expect("workload task").expect("workload");
        workload::final_reads(
            &c.router_addrs(),
            &c.e2e.security(),
            self.spec.keys,
            &self.recorder,
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.tails(30)));
        let ops = self.recorder.finish().expect("history");
        let report = check::check(&ops, &CheckOptions::default()).expect("check");
        assert!(report.is_ok(), "violations:\n{report}\n{}", c.tails(20));
        report
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_crashed_at_any_failpoint_restarts_and_loses_no_acknowledged_write() {
    let mut c = NemesisCluster::start(&ClusterSpec {
        stores: 3,
        routers: 1,
        log_gc_count_limit: 100,
        // The test splits and merges regions it picks: no load-based split
        // may change their epochs, and no hot-leader or hot-region operator
        // may hold them (a merge is refused while one runs). The nemesis
        // suite runs with these rules on.
        schedule_extra: vec![
            "load_split_keys_per_sec = 0".into(),
            "hot_leader_min_keys_per_sec = 0".into(),
            "hot_region_min_write_keys_per_sec = 0".into(),
        ],
        ..ClusterSpec::default()
    })
    .await
    .expect("cluster");
    let workload = Workload::start(&c, 7);
    tokio::time::sleep(Duration::from_secs(2)).await;

    for (i, fp) in [
        "raft_before_persist",
        "raft_after_persist",
        "apply_before_write",
    ]
    .into_iter()
    .enumerate()
    {
        let index = 1 + i % 3;
        c.arm_failpoint(index, fp, "panic").expect("arm");
        wait_for_crash(&mut c, index, fp, Duration::from_secs(20)).await;
        c.restart(ProcKind::Store, index).expect("restart");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    // A split applied on store 1 crashes it before the new regions start.
    c.arm_failpoint(1, "split_between_write_and_start", "panic")
        .expect("arm");
    let region = c.regions().await.expect("regions")[0]
        .region
        .clone()
        .expect("region");
    c.split(region.id).await.expect("split");
    wait_for_crash(
        &mut c,
        1,
        "split_between_write_and_start",
        Duration::from_secs(20),
    )
    .await;
    c.restart(ProcKind::Store, 1).expect("restart");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A merge of the split's two halves: store 2 crashes right after it
    // wrote the source's PrepareMerge, store 3 right before it writes the
    // target's merge; each restarts, and the merge ends on every store.
    let before = c.regions().await.expect("regions").len();
    let regions: Vec<_> = c
        .regions()
        .await
        .expect("regions")
        .into_iter()
        .filter_map(|r| r.region)
        .collect();
    let (target, source) = (regions[0].id, regions[1].id);
    c.arm_failpoint(2, "merge_after_prepare", "panic")
        .expect("arm");
    c.arm_failpoint(3, "merge_before_commit", "panic")
        .expect("arm");
    c.merge(source, target).await.expect("merge");
    for (index, fp) in [(2, "merge_after_prepare"), (3, "merge_before_commit")] {
        wait_for_crash(&mut c, index, fp, Duration::from_secs(60)).await;
        c.restart(ProcKind::Store, index).expect("restart");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.regions().await.map(|r| r.len()).unwrap_or(before) >= before {
        assert!(
            Instant::now() < deadline,
            "the merge did not end after the crashes:\n{}",
            c.tails(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A merge that rolls back: every store's merge driver sees a source
    // peer that never catches up (`merge_catch_up_stall`), so after the
    // catch-up timeout (5 s in tests) the target refuses and the source
    // rolls back — and the stores crash right before writing the rollback.
    // Once all three are back, the rollback applies, the directory's
    // operator asks again, and the merge ends.
    let count = c.regions().await.expect("regions").len();
    let region = c.regions().await.expect("regions")[0]
        .region
        .clone()
        .expect("region");
    c.split(region.id).await.expect("split");
    let deadline = Instant::now() + Duration::from_secs(30);
    let regions = loop {
        let now = c.regions().await.unwrap_or_default();
        if now.len() > count {
            break now;
        }
        assert!(Instant::now() < deadline, "the split did not happen");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let before = regions.len();
    let regions: Vec<_> = regions.into_iter().filter_map(|r| r.region).collect();
    let (target, source) = (regions[0].id, regions[1].id);
    for index in [1, 2, 3] {
        c.arm_failpoint(index, "merge_catch_up_stall", "return")
            .expect("arm");
        c.arm_failpoint(index, "merge_before_rollback", "panic")
            .expect("arm");
    }
    c.merge(source, target).await.expect("merge");
    // The source's leader applies the rollback first; a follower learns
    // that it is committed from the leader's next message, which may never
    // come. So: one crash, then the others are disarmed (or crashed).
    let deadline = Instant::now() + Duration::from_secs(60);
    let crashed = loop {
        let exited: Vec<usize> = [1, 2, 3]
            .into_iter()
            .filter(|i| c.e2e.stores.get_mut(i).expect("store").proc.has_exited())
            .collect();
        if !exited.is_empty() {
            break exited;
        }
        assert!(
            Instant::now() < deadline,
            "no store crashed at merge_before_rollback within 60 s:\n{}",
            c.tails(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    for index in [1, 2, 3] {
        if !crashed.contains(&index) {
            let _ = c.arm_failpoint(index, "merge_before_rollback", "off");
        }
    }
    for index in [1, 2, 3] {
        // A restart also clears `merge_catch_up_stall`.
        c.restart(ProcKind::Store, index).expect("restart");
    }
    // The merge is asked for again (refused while the first operator still
    // runs, which then sends its step again itself) until it ends.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut asked = Instant::now();
    while c.regions().await.map(|r| r.len()).unwrap_or(before) >= before {
        assert!(
            Instant::now() < deadline,
            "the merge did not end after the rollback and the crashes:\n{}",
            c.tails(30)
        );
        if asked.elapsed() > Duration::from_secs(5) {
            let _ = c.merge(source, target).await;
            asked = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Snapshot applies: store 2 misses enough of the log to need one.
    for fp in ["snapshot_before_ingest", "snapshot_after_ingest"] {
        c.kill(ProcKind::Store, 2).expect("kill");
        tokio::time::sleep(Duration::from_secs(6)).await;
        let store = c.e2e.stores.get_mut(&2).expect("store 2");
        store
            .proc
            .set_env("FAILPOINTS", Some(&format!("{fp}=panic")));
        c.restart(ProcKind::Store, 2).expect("restart");
        wait_for_crash(&mut c, 2, fp, Duration::from_secs(40)).await;
        let store = c.e2e.stores.get_mut(&2).expect("store 2");
        store.proc.set_env("FAILPOINTS", None);
        c.restart(ProcKind::Store, 2).expect("restart");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    c.heal().await.expect("heal");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = workload.finish(&c).await;
    assert!(
        report.counts.ok >= 200,
        "too little progress to prove anything:\n{report}"
    );
    // Every replica of every region is back.
    c.e2e.wait_settled(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_engine_write_error_stops_the_store_once_and_it_stays_down_until_cleared() {
    let mut c = NemesisCluster::start(&ClusterSpec {
        stores: 3,
        routers: 1,
        ..ClusterSpec::default()
    })
    .await
    .expect("cluster");
    let workload = Workload::start(&c, 11);
    tokio::time::sleep(Duration::from_secs(2)).await;

    for (index, fp) in [(1, "engine_write_error"), (2, "engine_apply_write_error")] {
        c.arm_failpoint(index, fp, "return").expect("arm");
        wait_for_crash(&mut c, index, fp, Duration::from_secs(20)).await;
        let status = c.e2e.stores[&index].proc.exit_status().expect("exited");
        assert_eq!(
            status.code(),
            Some(engine_failure::EXIT_CODE),
            "store {index} after {fp}: {status:?}\n{}",
            c.tails(20)
        );
        let data_dir = c.e2e.dir.path().join(format!("store-{index}"));
        let marker = engine_failure::marker(&data_dir);
        let text = std::fs::read_to_string(&marker).expect("the marker is written");
        assert!(text.contains(fp), "{text}");

        // A restart stays down, saying why; it opens nothing.
        c.restart(ProcKind::Store, index).expect("restart");
        wait_for_crash(
            &mut c,
            index,
            "its start with the marker",
            Duration::from_secs(20),
        )
        .await;
        let store = &c.e2e.stores[&index];
        assert_ne!(store.proc.exit_status().and_then(|s| s.code()), Some(0));
        // (RUST_BACKTRACE may follow the error with many lines.)
        let tail = store.proc.tail(200);
        assert!(tail.contains("failed earlier"), "{tail}");

        // The operator deletes the marker: the store starts and catches up.
        std::fs::remove_file(&marker).expect("delete the marker");
        c.restart(ProcKind::Store, index).expect("restart");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !c.e2e
                .stores
                .get_mut(&index)
                .expect("store")
                .proc
                .has_exited(),
            "store {index} did not stay up once the marker was deleted:\n{}",
            c.tails(20)
        );
    }

    c.heal().await.expect("heal");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = workload.finish(&c).await;
    assert!(
        report.counts.ok >= 100,
        "too little progress to prove anything:\n{report}"
    );
    c.e2e.wait_settled(1).await;
}

/// An SDK client of the cluster's routers (10 s deadline).
async fn client(c: &NemesisCluster) -> tessera_client::Client {
    workload::connect(
        workload::Via::Routers(&c.router_addrs()),
        Duration::from_secs(10),
        &c.e2e.security(),
    )
    .await
    .expect("client")
}

/// Whether any region's leader is on store `store_id`, as the directory
/// last heard.
async fn leads_any(c: &NemesisCluster, store_id: u64) -> bool {
    c.regions()
        .await
        .expect("regions")
        .iter()
        .any(|r| r.leader.is_some_and(|l| l.store_id == store_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_disk_moves_leaders_away_and_a_stalled_one_fails_ready() {
    let mut c = NemesisCluster::start(&ClusterSpec {
        stores: 3,
        routers: 1,
        store_extra: vec![
            "[disk]".into(),
            "slow_round_ms = 300".into(),
            "stall_timeout_ms = 1500".into(),
        ],
        ..ClusterSpec::default()
    })
    .await
    .expect("cluster");
    let slow = c.store_id(1);
    let status = c.e2e.stores[&1].status.clone();
    // Store 1 leads a region.
    let region = c.regions().await.expect("regions")[0]
        .region
        .clone()
        .expect("region");
    c.transfer_leader(region.id, slow).await.expect("transfer");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !leads_any(&c, slow).await {
        assert!(
            Instant::now() < deadline,
            "store 1 never led:\n{}",
            c.tails(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let workload = Workload::start(&c, 13);

    // A slow disk: every Raft write of store 1 takes 400 ms, past the
    // 300 ms bound. The store is degraded and hands its leaderships away.
    c.arm_failpoint(1, "raft_before_persist", "sleep(400)")
        .expect("arm");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let degraded = tessera_e2e::metric_value(&status, "tessera_store_degraded");
        if degraded == Some(1.0) && !leads_any(&c, slow).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store 1 did not hand its leaderships away (degraded: {degraded:?}):\n{}",
            c.tails(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Slow is not stalled: it still serves.
    let (code, _) = tessera_e2e::http_get(&status, "/ready").expect("ready");
    assert_eq!(code, 200);
    // With the leaders gone, clients no longer wait on the slow disk: a
    // write's quorum is the two healthy stores. Every write succeeds; the
    // latencies are printed for the record (measured, not asserted).
    let client = client(&c).await;
    let mut latencies = vec![];
    for i in 0..100 {
        let started = Instant::now();
        client
            .put(format!("slow-disk-{i}"), "v")
            .await
            .expect("a write while one store's disk is slow");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    eprintln!(
        "writes with store 1's disk slow (400 ms per Raft write) after its leaders left: \
         p50 {:?}, p99 {:?}, max {:?}",
        latencies[50], latencies[98], latencies[99]
    );

    // A stalled disk: a write that takes 4 s, past the 1.5 s bound.
    c.arm_failpoint(1, "raft_before_persist", "sleep(4000)")
        .expect("arm");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some((503, body)) = tessera_e2e::http_get(&status, "/ready") {
            assert!(body.contains("stuck in one round"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stall never failed /ready:\n{}",
            c.tails(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        tessera_e2e::metric_value(&status, "tessera_store_disk_stalled"),
        Some(1.0)
    );
    // The disk answers again: ready again, by itself.
    c.arm_failpoint(1, "raft_before_persist", "off")
        .expect("disarm");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tessera_e2e::http_get(&status, "/ready").map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "store 1 stayed not ready after the stall:\n{}",
            c.tails(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    c.heal().await.expect("heal");
    workload.finish(&c).await;
}

/// Writes 128 KiB values to fresh keys until one is refused for space;
/// returns the refusal. Writes that may have applied around the moment the
/// stores ran low (in flight when followers stopped taking data) are
/// allowed; any other error is not.
async fn write_until_no_space(
    client: &tessera_client::Client,
    c: &NemesisCluster,
    next: &mut u64,
) -> String {
    let value = vec![0x5au8; 128 << 10];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            Instant::now() < deadline,
            "no write was refused for space:\n{}",
            c.tails(20)
        );
        *next += 1;
        match client.put(format!("big-{next}"), &value).await {
            Ok(()) => {}
            Err(tessera_client::Error::NoSpace(m)) => return m,
            Err(e @ tessera_client::Error::Indeterminate(_))
            | Err(e @ tessera_client::Error::Unavailable(_)) => {
                eprintln!("a write around the edge: {e}");
            }
            Err(e) => panic!("a full disk gave {e:?}:\n{}", c.tails(20)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_disks_refuse_writes_with_no_space_and_take_them_again_once_freed() {
    let c = NemesisCluster::start(&ClusterSpec {
        stores: 3,
        routers: 1,
        store_disk_mib: Some(256),
        // 1 MiB regions: the test's 128 KiB values split a region every few
        // writes, so stores go low between a split's commit and its apply
        // on them, and a leader may apply two splits between reports (the
        // directory must still record them: `poller::split::record_siblings`).
        region_split_size_mib: 1,
        ..ClusterSpec::default()
    })
    .await
    .expect("cluster");
    let statuses: Vec<String> = c.e2e.stores.values().map(|s| s.status.clone()).collect();
    for s in &statuses {
        let held = tessera_e2e::metric_value(s, "tessera_store_reserve_bytes").unwrap_or(0.0);
        assert!(held >= (RESERVE_MIB << 20) as f64, "{s}: reserve {held}");
    }
    let workload = Workload::start(&c, 17);
    let client = client(&c).await;

    // Leave 24 MiB above the threshold on every store, then write.
    for s in c.e2e.stores.values() {
        let disk = s.disk.as_ref().expect("tmpfs");
        disk.fill_to((LOW_SPACE_MIB + 24) << 20).expect("ballast");
    }
    let mut next = 0;
    let refusal = write_until_no_space(&client, &c, &mut next).await;
    assert!(refusal.contains("disk.low_space_mib"), "{refusal}");

    // Low: the alarm everywhere an operator looks, reads still served,
    // the reserve released, and no process lost.
    let low: Vec<&String> = statuses
        .iter()
        .filter(|s| tessera_e2e::metric_value(s, "tessera_store_low_space") == Some(1.0))
        .collect();
    assert!(!low.is_empty(), "no store says it is low:\n{}", c.tails(20));
    for s in &low {
        let (code, body) = tessera_e2e::http_get(s, "/ready").expect("ready");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("alarm NOSPACE"), "{body}");
        assert_eq!(
            tessera_e2e::metric_value(s, "tessera_store_reserve_bytes"),
            Some(0.0)
        );
    }
    c.e2e
        .wait_for(
            "the NOSPACE alarm in cluster status",
            Duration::from_secs(10),
            |c| async move {
                c.status()
                    .await
                    .is_ok_and(|s| s.alarms.iter().any(|a| a.kind == "NOSPACE"))
            },
        )
        .await;
    let got = client.get("big-1").await.expect("a read while low");
    assert_eq!(got.map(|v| v.len()), Some(128 << 10));
    let mut c = c;
    for s in c.e2e.stores.values_mut() {
        assert!(!s.proc.has_exited(), "store {} died:\n", s.index);
    }

    // Space returns: writes resume without a restart.
    for s in c.e2e.stores.values() {
        s.disk
            .as_ref()
            .expect("tmpfs")
            .free_ballast()
            .expect("free");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        next += 1;
        match client.put(format!("big-{next}"), b"after").await {
            Ok(()) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "writes did not resume after space was freed: {e}\n{}",
                c.tails(20)
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.e2e
        .wait_for(
            "every store's NOSPACE state cleared",
            Duration::from_secs(10),
            |_| {
                let statuses = statuses.clone();
                async move {
                    statuses.iter().all(|s| {
                        tessera_e2e::metric_value(s, "tessera_store_low_space") == Some(0.0)
                    })
                }
            },
        )
        .await;
    workload.finish(&c).await;
}
