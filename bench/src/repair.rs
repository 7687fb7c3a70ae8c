//! Replica repair at scale, with separate processes as in production: 3
//! `tessera-directory` and 4 `tessera-store` processes on 127.0.0.1 (the
//! binaries' default Raft and heartbeat timing), a hash keyspace pre-split
//! into `--regions` regions with some data in each, then one store
//! SIGKILLed for good.
//!
//! Reports how long the directory takes to mark the store Down (detection;
//! bounded below by `--down-after-ms`, the `down_after_ms` setting) and how
//! long until every region has 3 healthy voters again on the 3 survivors
//! (restore: a learner added on the spare store, caught up by snapshot,
//! promoted, and the dead peer removed, per region, under the scheduler's
//! per-store operator limit).
//!
//! The binaries come from the same target directory as `tessera-bench`
//! (`cargo build --release --bins`).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tessera_e2e::{E2eCluster, Options};
use tessera_proto::directorypb::{CreateKeyspaceRequest, KeyspaceKind};
use tessera_proto::keys;

use crate::report::{Report, Row};

#[derive(clap::Args)]
pub struct Args {
    /// Regions in the keyspace (plus the default keyspace's own).
    #[arg(long, default_value_t = 1000)]
    pub regions: u32,
    /// The directory's `down_after_ms`: silence after which a store is Down
    /// and its replicas rebuilt (production default 60 s).
    #[arg(long, default_value_t = 10_000)]
    pub down_after_ms: u64,
    /// Keys written (1 KiB values) before the store is killed.
    #[arg(long, default_value_t = 20_000)]
    pub keys: u64,
}

const KEYSPACE: &str = "repair";

fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:40} [{elapsed_precise}] {bar:30} {pos}/{len}")
            .expect("progress template"),
    );
    pb.set_message(what.to_string());
    pb
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    tessera_e2e::ensure_plain_binaries()?;
    let c = E2eCluster::start(Options {
        // Plaintext, as the etcd it is compared with (TLS rows: later).
        insecure: true,
        stores: 4,
        down_after_ms: args.down_after_ms,
        default_timing: true,
        ..Options::default()
    })
    .await;
    let conn = c.directory_conn();

    let ks = conn
        .call("create keyspace", |mut d| async move {
            d.create_keyspace(CreateKeyspaceRequest {
                name: KEYSPACE.into(),
                kind: KeyspaceKind::Hash as i32,
                regions: args.regions,
            })
            .await
        })
        .await?
        .keyspace
        .ok_or_else(|| anyhow::anyhow!("no keyspace in the answer"))?;
    let (ks_start, ks_end) = keys::keyspace_range(ks.id);
    let pb = progress(args.regions as u64, "regions split and fully replicated");
    let setup_started = Instant::now();
    // Settled: every region in place and fully replicated, and no operator
    // seen for 5 s in a row (placement and balance moves done), so the
    // repair measured below does not share the stores with them.
    let mut quiet_since: Option<Instant> = None;
    loop {
        let s = c.status().await?;
        let inside = tessera_e2e::scan_regions(&conn)
            .await?
            .iter()
            .filter_map(|r| r.region.as_ref())
            .filter(|r| r.start_key >= ks_start && !r.end_key.is_empty() && r.end_key <= ks_end)
            .count();
        pb.set_position(inside as u64);
        if inside == args.regions as usize
            && s.under_replicated_regions == 0
            && s.operators.is_empty()
        {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(5) {
                break;
            }
        } else {
            quiet_since = None;
        }
        anyhow::ensure!(
            setup_started.elapsed() < Duration::from_secs(1800),
            "the keyspace's regions were not ready within 30 minutes: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    pb.finish();

    let router = c.router();
    let pb = progress(args.keys, "writing keys");
    let value = vec![b'v'; 1024];
    let mut batch = vec![];
    for i in 0..args.keys {
        batch.push((format!("key{i:08}").into_bytes(), value.clone()));
        if batch.len() == 200 || i + 1 == args.keys {
            router.batch_put(Some(KEYSPACE), &batch).await?;
            pb.inc(batch.len() as u64);
            batch.clear();
        }
    }
    pb.finish();

    // Kill the store holding the most replicas.
    let regions: Vec<_> = tessera_e2e::scan_regions(&conn)
        .await?
        .into_iter()
        .filter_map(|r| r.region)
        .collect();
    let stores = c.list_stores().await?;
    let mut best = (0usize, 0u64, 0usize);
    for (&index, st) in &c.stores {
        let Some(id) = stores
            .iter()
            .filter_map(|s| s.store.as_ref())
            .find(|s| s.address == st.addr)
            .map(|s| s.id)
        else {
            continue;
        };
        let n = regions
            .iter()
            .filter(|r| r.peers.iter().any(|p| p.store_id == id))
            .count();
        if n > best.2 {
            best = (index, id, n);
        }
    }
    let (index, store_id, affected) = best;
    anyhow::ensure!(affected > 0, "no store holds a replica");
    let mut c = c;
    c.stores.get_mut(&index).expect("store").proc.kill();
    let killed = Instant::now();

    let pb = progress(affected as u64, "regions repaired");
    let mut detected = None;
    let restored;
    let mut last_report = Instant::now();
    loop {
        let s = match c.status().await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if detected.is_none() && s.stores.get("down").copied().unwrap_or(0) >= 1 {
            detected = Some(killed.elapsed());
            pb.set_message("regions repaired (store is Down)");
        }
        if detected.is_some() {
            let regions = tessera_e2e::scan_regions(&conn).await?;
            let left = regions
                .iter()
                .filter_map(|r| r.region.as_ref())
                .filter(|r| r.peers.iter().any(|p| p.store_id == store_id))
                .count();
            pb.set_position((affected - left.min(affected)) as u64);
            if last_report.elapsed() > Duration::from_secs(30) {
                last_report = Instant::now();
                let mut ops: Vec<String> = s
                    .operators
                    .iter()
                    .take(5)
                    .map(|o| {
                        format!(
                            "region {} {} step {}/{} {} {} ms",
                            o.region_id, o.kind, o.step, o.steps, o.state, o.age_ms
                        )
                    })
                    .collect();
                if s.operators.len() > 5 {
                    ops.push(format!("and {} more", s.operators.len() - 5));
                }
                let line = format!(
                    "{:?}: {left} regions still have a replica on the dead store, {} under-replicated; operators: {}",
                    killed.elapsed(),
                    s.under_replicated_regions,
                    ops.join("; ")
                );
                pb.suspend(|| eprintln!("{line}"));
            }
            if left == 0 && s.under_replicated_regions == 0 && s.operators.is_empty() {
                restored = killed.elapsed();
                break;
            }
        }
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(3600),
            "replicas were not restored within an hour: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pb.finish();
    let detected = detected.expect("detected before restored");

    // Every key is still there.
    let pb = progress(args.keys, "reading keys back");
    let mut missing = 0u64;
    for i in (0..args.keys).step_by(7) {
        let key = format!("key{i:08}");
        if router.get(Some(KEYSPACE), key.as_bytes()).await?.as_deref() != Some(&value[..]) {
            missing += 1;
        }
        pb.inc(7);
    }
    pb.finish();
    anyhow::ensure!(missing == 0, "{missing} keys did not read back");

    Ok(Report {
        title: format!(
            "replica repair: {} regions, store {store_id} killed, {affected} regions had a replica on it",
            regions.len()
        ),
        rows: vec![
            Row::from_seconds("detect the dead store (Down)", &[detected.as_secs_f64()]),
            Row::from_seconds(
                "restore 3 replicas (from the kill)",
                &[restored.as_secs_f64()],
            ),
            Row::from_seconds(
                "restore 3 replicas (from Down)",
                &[(restored - detected).as_secs_f64()],
            ),
        ],
        notes: vec![
            format!(
                "down_after_ms = {}: Down after {:.1} s, 3 replicas everywhere after {:.1} s ({:.1} s after Down)",
                args.down_after_ms,
                detected.as_secs_f64(),
                restored.as_secs_f64(),
                (restored - detected).as_secs_f64()
            ),
            format!(
                "{} keys of 1 KiB; {:.1} regions repaired per second after detection",
                args.keys,
                affected as f64 / (restored - detected).as_secs_f64().max(1e-9)
            ),
        ],
    })
}
