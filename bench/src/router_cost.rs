//! The router's cost: get latency through a `tessera-router` process
//! against straight to the region's leader.
//!
//! Separate processes on 127.0.0.1 with the binaries' default timing: 3
//! `tessera-directory`, 3 `tessera-store` and 1 `tessera-router`. After
//! `--keys` keys (100-byte values) are written, gets of random keys run for
//! `--seconds` per case, closed loop, at each `--concurrency`:
//!
//! - **direct**: the routing library (`tessera_routing::Router`) in this
//!   process, which sends each get to the leader's store itself — one
//!   network hop, what a smart client would do;
//! - **router**: the SDK (`tessera_client`) to the router process, which
//!   routes the get the same way — two hops.
//!
//! Both warm their region caches before measuring. The difference in p50
//! is what the extra hop costs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tessera_e2e::{E2eCluster, Options};

use crate::report::{Latency, Report, Row};

#[derive(clap::Args)]
pub struct Args {
    /// Keys written before measuring.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Seconds each case runs.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent readers, comma-separated: one case per value.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub concurrency: Vec<usize>,
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

/// One way to get a key.
#[derive(Clone)]
enum Path {
    Direct(Arc<tessera_routing::Router>),
    Router(tessera_client::Client),
}

impl Path {
    async fn get(&self, k: &[u8]) -> bool {
        match self {
            Path::Direct(r) => r.get(None, k).await.is_ok_and(|v| v.is_some()),
            Path::Router(c) => c.get(k).await.is_ok_and(|v| v.is_some()),
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    tessera_e2e::ensure_plain_binaries()?;
    let mut c = E2eCluster::start(Options {
        // Plaintext, as the etcd it is compared with (TLS rows: later).
        insecure: true,
        default_timing: true,
        ..Options::default()
    })
    .await;
    c.add_router().await;
    let direct = c.router();
    let client = tessera_client::Client::builder()
        .endpoints(c.router_addrs())
        .timeout(Duration::from_secs(10))
        .build()
        .await?;

    let pb = ProgressBar::new(args.keys).with_message("writing keys");
    let value = vec![b'v'; 100];
    let mut batch = Vec::new();
    for i in 0..args.keys {
        batch.push((key(i), value.clone()));
        if batch.len() == 500 || i + 1 == args.keys {
            direct.batch_put(None, &batch).await?;
            pb.inc(batch.len() as u64);
            batch.clear();
        }
    }
    pb.finish_and_clear();

    let mut rows = Vec::new();
    let mut p50 = std::collections::BTreeMap::new();
    for &concurrency in &args.concurrency {
        for (name, path) in [
            ("direct", Path::Direct(direct.clone())),
            ("router", Path::Router(client.clone())),
        ] {
            // Warm up: caches filled, connections open.
            for i in 0..100 {
                path.get(&key(i % args.keys)).await;
            }
            let (row, p) = measure(
                &format!("{name}, {concurrency} reader(s)"),
                path,
                concurrency,
                args.keys,
                Duration::from_secs(args.seconds),
            )
            .await;
            p50.insert((concurrency, name), p);
            rows.push(row);
        }
    }
    let mut notes = vec![
        "get of a 100-byte value, random keys, linearizable (leader lease), closed loop".into(),
        "direct: routing library in the client process; router: SDK → tessera-router → store"
            .into(),
    ];
    for &concurrency in &args.concurrency {
        if let (Some(d), Some(r)) = (
            p50.get(&(concurrency, "direct")),
            p50.get(&(concurrency, "router")),
        ) {
            notes.push(format!(
                "{concurrency} reader(s): the router adds {} µs at p50 ({:.2}×)",
                *r as i64 - *d as i64,
                *r as f64 / (*d).max(1) as f64
            ));
        }
    }
    Ok(Report {
        title: "get latency: through the router vs straight to the leader".into(),
        rows,
        notes,
    })
}

async fn measure(
    name: &str,
    path: Path,
    concurrency: usize,
    keys: u64,
    duration: Duration,
) -> (Row, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let pb = ProgressBar::new(duration.as_secs()).with_message(name.to_string());
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let path = path.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let mut errors = 0u64;
            let mut i = t as u64 * 7919;
            while !stop.load(Ordering::Relaxed) {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let k = key((i >> 33) % keys);
                let started = Instant::now();
                if path.get(&k).await {
                    let _ = h.record(started.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (h, errors)
        }));
    }
    let started = Instant::now();
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        pb.set_position(started.elapsed().as_secs());
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.expect("reader");
        all.add(&h).expect("histogram");
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let p50 = all.value_at_quantile(0.5);
    (
        Row {
            name: name.to_string(),
            ops_per_sec: all.len() as f64 / elapsed,
            latency: Latency::from_histogram(&all),
            errors,
        },
        p50,
    )
}
