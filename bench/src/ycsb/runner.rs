//! Driving a [`Backend`] with a [`Workload`]: the load phase (every record
//! inserted once, key numbers handed out in order) and the run phase (the
//! workload's operation mix), each by `threads` concurrent client tasks.
//!
//! A "thread" is a tokio task: a closed-loop client that sends its next
//! operation when the previous one returned (YCSB's threads; OS threads
//! would only add scheduling on 2 cores).
//!
//! With a target rate (open loop) each client owns `target / threads` of
//! it: operation *k* of a client has the intended start time
//! `start + offset + k × threads / target` (the offset staggers clients
//! over one interval), the client sleeps until then if it is early, and
//! latency is measured from the intended time, not from when the client
//! got round to sending it — so a stall shows as the latency of every
//! operation that should have been sent during it (no coordinated
//! omission).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;

use super::backend::{Backend, OpError};
use super::gen::key_name;
use super::stats::{self, ClientStats, PhaseResult, Series};
use super::workload::{Op, OpKind, Workload};

/// How a phase runs.
#[derive(Clone, Debug)]
pub struct Limits {
    pub threads: usize,
    /// Stop after this many top-level operations (load: the record count).
    pub operations: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Total intended operations per second (open loop).
    pub target: Option<f64>,
    pub progress: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Load,
    Run,
}

/// Inserts records `0..records`.
pub async fn load<B: Backend>(
    backend: Arc<B>,
    workload: Arc<Workload>,
    threads: usize,
    progress: bool,
    label: &str,
) -> PhaseResult {
    let limits = Limits {
        threads,
        operations: Some(workload.records as u64),
        duration: None,
        target: None,
        progress,
    };
    phase(Phase::Load, backend, workload, limits, label).await
}

/// Runs the workload's operation mix.
pub async fn run<B: Backend>(
    backend: Arc<B>,
    workload: Arc<Workload>,
    limits: Limits,
    label: &str,
) -> PhaseResult {
    phase(Phase::Run, backend, workload, limits, label).await
}

/// Sends one operation and reports each request's latency and outcome to
/// `record` (a read-modify-write is a read, then — if it found the record —
/// an update with `value`); returns the operation's outcome. `value` is
/// the record a write puts (empty for reads and scans).
pub async fn perform<B: Backend>(
    backend: &B,
    client: usize,
    op: Op,
    value: Vec<u8>,
    mut record: impl FnMut(OpKind, Duration, &Result<(), OpError>),
) -> Result<(), OpError> {
    let timed = Instant::now();
    match op {
        Op::Read(n) => {
            let r = backend.read(client, key_name(n).as_bytes()).await;
            record(OpKind::Read, timed.elapsed(), &r);
            r
        }
        Op::Update(n) | Op::Insert(n) => {
            let r = backend.put(client, key_name(n).as_bytes(), &value).await;
            record(op.kind(), timed.elapsed(), &r);
            r
        }
        Op::Scan(n, len) => {
            let r = backend
                .scan(client, key_name(n).as_bytes(), len as u32)
                .await
                .map(|_| ());
            record(OpKind::Scan, timed.elapsed(), &r);
            r
        }
        Op::ReadModifyWrite(n) => {
            let key = key_name(n);
            let r = backend.read(client, key.as_bytes()).await;
            record(OpKind::Read, timed.elapsed(), &r);
            r?;
            let t = Instant::now();
            let r = backend.put(client, key.as_bytes(), &value).await;
            record(OpKind::Update, t.elapsed(), &r);
            r
        }
    }
}

fn bar(limits: &Limits, label: &str) -> ProgressBar {
    if !limits.progress {
        return ProgressBar::hidden();
    }
    let (len, unit) = match (limits.operations, limits.duration) {
        (_, Some(d)) => (d.as_secs().max(1), "s"),
        (Some(n), None) => (n, "ops"),
        (None, None) => (0, "ops"),
    };
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{prefix:28}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit}  {{msg}}"
        ))
        .expect("progress template"),
    );
    pb.set_prefix(label.to_string());
    pb
}

async fn phase<B: Backend>(
    which: Phase,
    backend: Arc<B>,
    workload: Arc<Workload>,
    limits: Limits,
    label: &str,
) -> PhaseResult {
    let threads = limits.threads.max(1);
    let start = Instant::now();
    let series = Arc::new(Series::new(start));
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let next_load_key = Arc::new(AtomicI64::new(0));
    let deadline = limits.duration.map(|d| start + d);
    let tick = limits
        .target
        .filter(|t| *t > 0.0)
        .map(|t| Duration::from_secs_f64(threads as f64 / t));

    let mut tasks = vec![];
    for client in 0..threads {
        let backend = backend.clone();
        let workload = workload.clone();
        let series = series.clone();
        let issued = issued.clone();
        let done = done.clone();
        let stop = stop.clone();
        let next_load_key = next_load_key.clone();
        let operations = limits.operations;
        tasks.push(tokio::spawn(async move {
            let mut gen = workload.client(client);
            let mut st = ClientStats::default();
            let offset = tick.map(|t| t.mul_f64(gen.rng.random::<f64>()));
            let mut k: u32 = 0;
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(n) = operations {
                    if issued.fetch_add(1, Ordering::Relaxed) >= n {
                        break;
                    }
                }
                let intended = match (tick, offset) {
                    (Some(t), Some(o)) => {
                        let at = start + o + t * k;
                        k += 1;
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    _ => Instant::now(),
                };
                if deadline.is_some_and(|d| intended >= d) {
                    break;
                }
                let op = match which {
                    Phase::Load => {
                        let key = next_load_key.fetch_add(1, Ordering::Relaxed);
                        if key >= workload.records {
                            break;
                        }
                        Op::Insert(key)
                    }
                    Phase::Run => gen.next_op(),
                };
                let value = if op.writes() { gen.value() } else { Vec::new() };
                let result = perform(&*backend, client, op, value, |kind, latency, r| {
                    st.record(kind, latency, r)
                })
                .await;
                if let (Phase::Run, Op::Insert(n)) = (which, op) {
                    workload.inserts.acknowledge(n);
                }
                let now = Instant::now();
                let latency = now.saturating_duration_since(intended);
                if let Op::ReadModifyWrite(_) = op {
                    st.record(OpKind::ReadModifyWrite, latency, &result);
                }
                st.record_top(&series, now, latency, &result);
                done.fetch_add(1, Ordering::Relaxed);
                if deadline.is_some_and(|d| now >= d) {
                    break;
                }
            }
            st.flush(&series);
            st
        }));
    }

    let pb = bar(&limits, label);
    let watcher = {
        let pb = pb.clone();
        let done = done.clone();
        let duration = limits.duration;
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let n = done.load(Ordering::Relaxed);
                let now = Instant::now();
                let rate = (n - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, n);
                match duration {
                    Some(_) => pb.set_position(start.elapsed().as_secs()),
                    None => pb.set_position(n),
                }
                pb.set_message(format!("{rate:.0} ops/s, {n} done"));
            }
        })
    };
    let mut clients = vec![];
    for t in tasks {
        match t.await {
            Ok(st) => clients.push(st),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                eprintln!("a client task failed: {e}");
            }
        }
    }
    let elapsed = start.elapsed();
    watcher.abort();
    pb.finish_and_clear();
    let series = Arc::try_unwrap(series).unwrap_or_else(|_| unreachable!("every client finished"));
    stats::finish(
        match which {
            Phase::Load => "load",
            Phase::Run => "run",
        },
        elapsed,
        clients,
        series,
    )
}
