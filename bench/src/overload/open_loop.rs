//! A true open loop: operations start on a schedule of `rate` per second
//! whether or not earlier ones have returned, each in its own task, so a
//! server that slows down is offered the same load and must refuse what it
//! cannot take (the YCSB runner's open loop keeps one operation per client
//! outstanding, which caps what a slow server is offered).
//!
//! Latency counts from each operation's scheduled start. Operations that
//! would pass `max_outstanding` in flight are not sent and are counted as
//! dropped by the generator (the generator's own limit, reported so a run
//! that could not offer its load says so). After the schedule ends the
//! loop waits for the operations in flight (they all end by the client's
//! own deadline).
//!
//! Failures are counted by reason, read from the error text of either
//! system (see [`reason`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::ycsb::backend::Backend;
use crate::ycsb::runner::perform;
use crate::ycsb::stats::LatencyUs;
use crate::ycsb::workload::Workload;

/// Why an operation failed, from either system's error text: `throttled`
/// (held back by the tessera SDK's own throttle, never sent), `busy`
/// (tessera's `ResourceExhausted`/`BUSY`, gRPC `RESOURCE_EXHAUSTED`, etcd's
/// `too many requests`),
/// `timeout` (the client's deadline or gRPC `DEADLINE_EXCEEDED`),
/// `indeterminate` (tessera: a write whose outcome is unknown),
/// `unavailable` (no server answered, transport errors), `too large` (an
/// answer over the client's message limit), `not found`, or `other`.
pub fn reason(error: &str) -> &'static str {
    // Both systems name the kind near the start: look no further (this
    // runs for every refusal, on the generator's CPU).
    let head = error
        .char_indices()
        .nth(160)
        .map_or(error, |(i, _)| &error[..i]);
    let e = head.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| e.contains(w));
    if has(&["held back by this client's throttle"]) {
        "throttled"
    } else if has(&[
        "resource exhausted",
        "resourceexhausted",
        "busy",
        "quota",
        "too many requests",
    ]) {
        "busy"
    } else if has(&["message length too large", "too large", "larger than max"]) {
        "too large"
    } else if has(&["outcome unknown", "indeterminate"]) {
        "indeterminate"
    } else if has(&["deadline", "timed out", "timeout", "elapsed"]) {
        "timeout"
    } else if has(&["unavailable", "transport", "connection", "broken pipe"]) {
        "unavailable"
    } else if has(&["not found"]) {
        "not found"
    } else {
        "other"
    }
}

/// Outcomes of one open-loop run.
#[derive(Serialize, Clone, Debug, Default)]
pub struct OpenLoopResult {
    /// Operations per second asked for.
    pub offered_per_s: f64,
    /// Operations per second actually started.
    pub sent_per_s: f64,
    /// Successful operations per second.
    pub goodput_per_s: f64,
    pub ok: u64,
    /// Failed operations by [`reason`].
    pub failed: BTreeMap<String, u64>,
    /// Not sent: `max_outstanding` were in flight.
    pub dropped_by_generator: u64,
    /// Latency of the successful operations, from their scheduled start.
    pub latency_us: LatencyUs,
    /// One error message per failure reason.
    pub examples: BTreeMap<String, String>,
}

#[derive(Default)]
struct Tally {
    hist: Option<Histogram<u64>>,
    ok: u64,
    failed: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
}

impl Tally {
    fn record(&mut self, latency: Duration, result: &Result<(), String>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                let h = self.hist.get_or_insert_with(|| {
                    // 1 µs to an hour: saturating_record clamps, never resizes.
                    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram")
                });
                h.saturating_record(latency.as_micros() as u64);
            }
            Err(e) => {
                let why = reason(e);
                *self.failed.entry(why.to_string()).or_default() += 1;
                if !self.examples.contains_key(why) {
                    self.examples.insert(why.to_string(), e.clone());
                }
            }
        }
    }
}

/// How one open-loop run goes.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub rate: f64,
    pub duration: Duration,
    pub max_outstanding: usize,
    /// Client objects of the backend, used round-robin.
    pub connections: usize,
    /// How long to wait for the operations in flight at the end.
    pub drain: Duration,
}

/// Runs `workload`'s operation mix against `backend` on `schedule`.
pub async fn run<B: Backend>(
    backend: Arc<B>,
    workload: Arc<Workload>,
    schedule: Schedule,
    seed_client: usize,
    pb: &ProgressBar,
) -> OpenLoopResult {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let outstanding = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let rate = schedule.rate.max(0.001);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut dropped: u64 = 0;
    let mut gen = workload.client(seed_client);
    let mut last_report = Instant::now();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= schedule.duration {
            break;
        }
        let due = (elapsed.as_secs_f64() * rate) as u64;
        while sent + dropped < due {
            let k = sent + dropped;
            let intended = start + Duration::from_secs_f64(k as f64 / rate);
            let op = gen.next_op();
            if outstanding.load(Ordering::Relaxed) >= schedule.max_outstanding {
                dropped += 1;
                continue;
            }
            let value = if op.writes() { gen.value() } else { Vec::new() };
            outstanding.fetch_add(1, Ordering::Relaxed);
            sent += 1;
            let (backend, tally, outstanding, done) = (
                backend.clone(),
                tally.clone(),
                outstanding.clone(),
                done.clone(),
            );
            let client = (k as usize) % schedule.connections.max(1);
            tokio::spawn(async move {
                let r = perform(&*backend, client, op, value, |_, _, _| {}).await;
                let latency = intended.elapsed();
                tally.lock().expect("tally").record(latency, &r);
                outstanding.fetch_sub(1, Ordering::Relaxed);
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        if last_report.elapsed() >= Duration::from_millis(250) {
            last_report = Instant::now();
            pb.set_position(elapsed.as_secs());
            pb.set_message(format!(
                "{:.0} ops/s offered, {} in flight, {} done",
                rate,
                outstanding.load(Ordering::Relaxed),
                done.load(Ordering::Relaxed)
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let scheduled = start.elapsed();
    let drain_until = Instant::now() + schedule.drain;
    while outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < drain_until {
        pb.set_message(format!(
            "waiting for {} in flight",
            outstanding.load(Ordering::Relaxed)
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = std::mem::take(&mut *tally.lock().expect("tally"));
    let secs = scheduled.as_secs_f64().max(1e-9);
    OpenLoopResult {
        offered_per_s: rate,
        sent_per_s: sent as f64 / secs,
        goodput_per_s: t.ok as f64 / secs,
        ok: t.ok,
        failed: t.failed,
        dropped_by_generator: dropped,
        latency_us: t.hist.as_ref().map(LatencyUs::of).unwrap_or_default(),
        examples: t.examples,
    }
}

/// A progress bar over `secs` seconds.
pub fn bar(label: &str, secs: u64, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(secs.max(1));
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:30} [{elapsed_precise}] {bar:30} {pos}/{len} s  {msg}",
        )
        .expect("progress template"),
    );
    pb.set_prefix(label.to_string());
    pb
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ycsb::workload::Spec;

    /// A backend that takes `delay` per operation and fails every third.
    struct Slow {
        delay: Duration,
        calls: AtomicU64,
    }

    impl Slow {
        async fn op(&self) -> Result<(), String> {
            tokio::time::sleep(self.delay).await;
            if self.calls.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
                Err("resource exhausted: server is busy".into())
            } else {
                Ok(())
            }
        }
    }

    impl Backend for Slow {
        async fn read(&self, _: usize, _: &[u8]) -> Result<(), String> {
            self.op().await
        }
        async fn put(&self, _: usize, _: &[u8], _: &[u8]) -> Result<(), String> {
            self.op().await
        }
        async fn scan(&self, _: usize, _: &[u8], _: u32) -> Result<usize, String> {
            self.op().await.map(|_| 1)
        }
    }

    fn workload() -> Arc<Workload> {
        Arc::new(Workload::new(Spec::core("C").unwrap(), 100, 0, 2, 10, 1))
    }

    #[tokio::test]
    async fn offers_the_rate_however_slow_the_server_and_counts_refusals() {
        // 400 ops/s for 1 s against a server that takes 200 ms each: a
        // closed loop of a few clients would send a few dozen; this sends
        // them all, ~80 at once.
        let backend = Arc::new(Slow {
            delay: Duration::from_millis(200),
            calls: AtomicU64::new(0),
        });
        let schedule = Schedule {
            rate: 400.0,
            duration: Duration::from_secs(1),
            max_outstanding: 10_000,
            connections: 1,
            drain: Duration::from_secs(5),
        };
        let r = run(backend, workload(), schedule, 0, &ProgressBar::hidden()).await;
        let failed: u64 = r.failed.values().sum();
        assert!(r.ok + failed >= 350, "sent {} + {failed}", r.ok);
        assert_eq!(r.dropped_by_generator, 0);
        assert_eq!(r.failed.keys().collect::<Vec<_>>(), ["busy"]);
        assert!(r.latency_us.p50 >= 200_000, "{:?}", r.latency_us);
    }

    #[tokio::test]
    async fn drops_what_would_pass_the_outstanding_cap() {
        let backend = Arc::new(Slow {
            delay: Duration::from_millis(500),
            calls: AtomicU64::new(0),
        });
        let schedule = Schedule {
            rate: 200.0,
            duration: Duration::from_millis(400),
            max_outstanding: 10,
            connections: 2,
            drain: Duration::from_secs(5),
        };
        let r = run(backend, workload(), schedule, 0, &ProgressBar::hidden()).await;
        let failed: u64 = r.failed.values().sum();
        assert_eq!(r.ok + failed, 10, "only the first 10 fit");
        assert!(r.dropped_by_generator >= 60, "{r:?}");
    }

    #[test]
    fn reasons_of_both_systems() {
        for (text, want) in [
            ("resource exhausted: get: the cluster was over its serving quotas", "busy"),
            (
                "resource exhausted: put: held back by this client's throttle, not sent",
                "throttled",
            ),
            ("grpc request error: status: ResourceExhausted, message: \"too many\"", "busy"),
            ("unavailable: get: no router served it within 2s", "unavailable"),
            ("outcome unknown: put may or may not have been applied", "indeterminate"),
            ("grpc request error: status: DeadlineExceeded", "timeout"),
            ("grpc request error: status: OutOfRange, message: \"decoded message length too large: found 134217800 bytes\"", "too large"),
            ("not found", "not found"),
            ("something else", "other"),
        ] {
            assert_eq!(reason(text), want, "{text}");
        }
    }
}
