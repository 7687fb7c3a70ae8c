//! Measurements of one phase (load or run): per operation type an HDR
//! histogram of successful latencies (µs) and an error count, every
//! top-level operation in an "all" histogram, and a 1-second time series;
//! then the serializable results ([`PhaseResult`]) and their tables.
//!
//! Each client task records into its own [`ClientStats`] and hands a
//! finished second to the shared [`Series`] (one lock per client per
//! second), so measuring costs no contention on the hot path.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use comfy_table::Table;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::OpKind;

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("histogram")
}

/// Latency summary in microseconds.
#[derive(Serialize, Clone, Debug, Default)]
pub struct LatencyUs {
    pub avg: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl LatencyUs {
    pub fn of(h: &Histogram<u64>) -> LatencyUs {
        if h.is_empty() {
            return LatencyUs::default();
        }
        LatencyUs {
            avg: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One operation type of a phase. `count` includes the errors; latencies
/// are of the successful operations.
#[derive(Serialize, Clone, Debug)]
pub struct OpResult {
    pub op: String,
    pub count: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    pub latency_us: LatencyUs,
}

/// One second of a phase (all top-level operations).
#[derive(Serialize, Clone, Debug)]
pub struct SecondResult {
    /// Seconds since the phase started (this second ends at `second + 1`).
    pub second: u64,
    pub ops: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// A finished phase.
#[derive(Serialize, Clone, Debug)]
pub struct PhaseResult {
    pub phase: String,
    pub elapsed_s: f64,
    /// Top-level operations (a read-modify-write counts once).
    pub operations: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    /// Latency of every successful top-level operation.
    pub latency_us: LatencyUs,
    /// Per operation type; READ and UPDATE include the halves of
    /// READ-MODIFY-WRITE, as in YCSB.
    pub ops: Vec<OpResult>,
    pub series: Vec<SecondResult>,
    /// The first few error messages.
    pub first_errors: Vec<String>,
}

#[derive(Default)]
struct Bucket {
    hist: Option<Histogram<u64>>,
    ops: u64,
    errors: u64,
}

/// The shared 1-second buckets.
pub struct Series {
    start: Instant,
    buckets: Mutex<BTreeMap<u64, Bucket>>,
}

impl Series {
    pub fn new(start: Instant) -> Series {
        Series {
            start,
            buckets: Mutex::new(BTreeMap::new()),
        }
    }

    fn add(&self, second: u64, hist: &Histogram<u64>, ops: u64, errors: u64) {
        let mut b = self.buckets.lock().expect("series");
        let e = b.entry(second).or_default();
        e.hist
            .get_or_insert_with(histogram)
            .add(hist)
            .expect("histogram add");
        e.ops += ops;
        e.errors += errors;
    }
}

/// What one client task measured.
pub struct ClientStats {
    ops: Vec<(Histogram<u64>, u64, u64)>,
    all: Histogram<u64>,
    second: u64,
    sec_hist: Histogram<u64>,
    sec_ops: u64,
    sec_errors: u64,
    pub first_errors: Vec<String>,
}

impl Default for ClientStats {
    fn default() -> Self {
        ClientStats {
            ops: OpKind::ALL.iter().map(|_| (histogram(), 0, 0)).collect(),
            all: histogram(),
            second: 0,
            sec_hist: histogram(),
            sec_ops: 0,
            sec_errors: 0,
            first_errors: vec![],
        }
    }
}

impl ClientStats {
    /// One operation of type `kind` (sub-operations of read-modify-write
    /// too).
    pub fn record(&mut self, kind: OpKind, latency: Duration, result: &Result<(), String>) {
        let e = &mut self.ops[kind.index()];
        e.1 += 1;
        match result {
            Ok(()) => {
                let _ = e.0.record((latency.as_micros() as u64).max(1));
            }
            Err(msg) => {
                e.2 += 1;
                if self.first_errors.len() < 3 {
                    self.first_errors.push(format!("{kind}: {msg}"));
                }
            }
        }
    }

    /// One top-level operation, finished at `now`.
    pub fn record_top(
        &mut self,
        series: &Series,
        now: Instant,
        latency: Duration,
        result: &Result<(), String>,
    ) {
        let second = now.saturating_duration_since(series.start).as_secs();
        if second != self.second {
            self.flush(series);
            self.second = second;
        }
        self.sec_ops += 1;
        match result {
            Ok(()) => {
                let us = (latency.as_micros() as u64).max(1);
                let _ = self.all.record(us);
                let _ = self.sec_hist.record(us);
            }
            Err(_) => self.sec_errors += 1,
        }
    }

    /// Hands the current second to `series`.
    pub fn flush(&mut self, series: &Series) {
        if self.sec_ops > 0 {
            series.add(self.second, &self.sec_hist, self.sec_ops, self.sec_errors);
        }
        self.sec_hist.reset();
        self.sec_ops = 0;
        self.sec_errors = 0;
    }
}

/// Merges the clients' measurements into a [`PhaseResult`].
pub fn finish(
    phase: &str,
    elapsed: Duration,
    clients: Vec<ClientStats>,
    series: Series,
) -> PhaseResult {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut ops: Vec<(Histogram<u64>, u64, u64)> =
        OpKind::ALL.iter().map(|_| (histogram(), 0, 0)).collect();
    let mut all = histogram();
    let mut first_errors = vec![];
    for c in &clients {
        for (i, (h, n, e)) in c.ops.iter().enumerate() {
            ops[i].0.add(h).expect("histogram add");
            ops[i].1 += n;
            ops[i].2 += e;
        }
        all.add(&c.all).expect("histogram add");
        for e in &c.first_errors {
            if first_errors.len() < 5 {
                first_errors.push(e.clone());
            }
        }
    }
    let buckets = series.buckets.into_inner().expect("series");
    let operations: u64 = buckets.values().map(|b| b.ops).sum();
    let errors: u64 = buckets.values().map(|b| b.errors).sum();
    let series = buckets
        .into_iter()
        .map(|(second, b)| {
            let l = b.hist.as_ref().map(LatencyUs::of).unwrap_or_default();
            SecondResult {
                second,
                ops: b.ops,
                errors: b.errors,
                p50_us: l.p50,
                p99_us: l.p99,
                max_us: l.max,
            }
        })
        .collect();
    PhaseResult {
        phase: phase.to_string(),
        elapsed_s: secs,
        operations,
        errors,
        ops_per_sec: operations as f64 / secs,
        latency_us: LatencyUs::of(&all),
        ops: OpKind::ALL
            .iter()
            .zip(ops)
            .filter(|(_, (_, n, _))| *n > 0)
            .map(|(k, (h, n, e))| OpResult {
                op: k.to_string(),
                count: n,
                errors: e,
                ops_per_sec: n as f64 / secs,
                latency_us: LatencyUs::of(&h),
            })
            .collect(),
        series,
        first_errors,
    }
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else {
        format!("{v} µs")
    }
}

impl PhaseResult {
    /// The per-operation table.
    pub fn table(&self) -> Table {
        let mut t = Table::new();
        t.set_header([
            "operation",
            "count",
            "errors",
            "ops/s",
            "avg",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
        ]);
        let mut row = |name: &str, count: u64, errors: u64, rate: f64, l: &LatencyUs| {
            t.add_row([
                name.to_string(),
                count.to_string(),
                errors.to_string(),
                format!("{rate:.0}"),
                us(l.avg as u64),
                us(l.p50),
                us(l.p90),
                us(l.p99),
                us(l.p999),
                us(l.max),
            ]);
        };
        for o in &self.ops {
            row(&o.op, o.count, o.errors, o.ops_per_sec, &o.latency_us);
        }
        row(
            "(all operations)",
            self.operations,
            self.errors,
            self.ops_per_sec,
            &self.latency_us,
        );
        t
    }

    /// The 1-second series as compact lines.
    pub fn series_lines(&self) -> Vec<String> {
        self.series
            .iter()
            .map(|s| {
                format!(
                    "  {:>4}s  {:>7} ops  {:>3} errors  p50 {:>9}  p99 {:>9}  max {:>9}",
                    s.second + 1,
                    s.ops,
                    s.errors,
                    us(s.p50_us),
                    us(s.p99_us),
                    us(s.max_us)
                )
            })
            .collect()
    }
}
