//! Printing results: a table for people, JSON for scripts.

use comfy_table::Table;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency summary in microseconds.
#[derive(Serialize, Clone, Debug)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Row {
    pub name: String,
    pub ops_per_sec: f64,
    pub latency: Latency,
    pub errors: u64,
}

impl Row {
    /// A row of one-off durations (in seconds), e.g. how long repairs took;
    /// ops/s is how many of them fit in a second back to back.
    pub fn from_seconds(name: &str, secs: &[f64]) -> Row {
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        for s in secs {
            let _ = h.record((s * 1e6) as u64);
        }
        Row {
            name: name.to_string(),
            ops_per_sec: secs.len() as f64 / secs.iter().sum::<f64>().max(1e-9),
            latency: Latency::from_histogram(&h),
            errors: 0,
        }
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Report {
    pub title: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn print(&self, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(self).expect("serializable")
            );
            return;
        }
        println!("{}", self.title);
        let mut t = Table::new();
        t.set_header([
            "run",
            "ops/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "errors",
        ]);
        for r in &self.rows {
            t.add_row([
                r.name.clone(),
                format!("{:.0}", r.ops_per_sec),
                r.latency.p50_us.to_string(),
                r.latency.p90_us.to_string(),
                r.latency.p99_us.to_string(),
                r.latency.p999_us.to_string(),
                r.latency.max_us.to_string(),
                r.errors.to_string(),
            ]);
        }
        println!("{t}");
        for n in &self.notes {
            println!("{n}");
        }
    }
}
