//! Checking a recorded history: linearizability per key (todc-utils' WGL
//! checker over a register with read, write and compare-and-swap) and the
//! "nothing lost" check, gathered into a [`Report`].
//!
//! - `model`: the register specification and the translation of a key's
//!   ops into a WGL history, including how indeterminate and failed ops are
//!   modelled (read its docs before trusting a verdict);
//! - `linear`: checking one key and narrowing a violation to a small window;
//! - `lost`: the lost-write and phantom-read checks and their precise
//!   definitions;
//! - `stale`: the bounded-staleness check of stale reads, which are not
//!   linearizable and stay out of the two checks above;
//! - `report`: the [`Report`] and its human-readable form.
//!
//! Keys are independent registers, so the history is split per key
//! (linearizability is compositional) and keys are checked in parallel on
//! `std` threads, largest first. Each key has an op limit and a time and
//! memory budget; a key over one is reported as unchecked, never as passing,
//! and the check never hangs. The lost-write and phantom-read checks run on
//! every key, unchecked ones included.

mod linear;
mod lost;
mod model;
mod report;
mod stale;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use linear::LinearizabilityViolation;
pub use lost::{LastSeen, LostWrite};
pub use report::{Counts, Report, UncheckedKey};
pub use stale::StaleReadViolation;

use crate::history::{validate, HistoryError, Op, OpKind};

/// Limits of a check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Keys with more ops are not searched for linearizability (reported as
    /// unchecked).
    pub max_ops_per_key: usize,
    /// Wall-clock budget of the search for one key (and again for narrowing
    /// a violation down).
    pub key_time_budget: Duration,
    /// Budget for the search caches, in bytes (roughly their memory use),
    /// shared equally by the threads: each key gets `memory_budget /
    /// threads`. WGL's cache costs about (2 × ops on the key) bytes per
    /// entry, so keys that are never quiescent (one search over the whole
    /// key) of more than a few thousand ops can run out.
    pub memory_budget: u64,
    /// Worker threads; 0: the available parallelism.
    pub threads: usize,
    /// Added to every stale read's bound (`stale`): the clocks' drift
    /// between the clients and the stores. 0 on one host (one clock).
    pub stale_slack: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_ops_per_key: 20_000,
            key_time_budget: Duration::from_secs(20),
            memory_budget: 2 << 30,
            threads: 0,
            stale_slack: Duration::ZERO,
        }
    }
}

/// Checks `ops` (any order). Fails only if the history breaks the
/// invariants of [`crate::history`] (duplicate ids or written values, ...).
pub fn check(ops: &[Op], opts: &CheckOptions) -> Result<Report, HistoryError> {
    let started = Instant::now();
    validate(ops)?;
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut stale_by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        let into = match op.kind {
            OpKind::StaleRead { .. } => &mut stale_by_key,
            _ => &mut by_key,
        };
        into.entry(op.key.as_str()).or_default().push(op);
    }
    for key_ops in by_key.values_mut() {
        key_ops.sort_by_key(|op| (op.invoke_ns, op.id));
    }
    let keys: Vec<(&str, Vec<&Op>)> = by_key.into_iter().collect();

    // Largest keys first, so one big key does not finish last alone.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(keys[i].1.len()));
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, keys.len().max(1));
    let key_opts = CheckOptions {
        memory_budget: opts.memory_budget / threads as u64,
        ..opts.clone()
    };
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<linear::KeyVerdict>>> =
        keys.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = order.get(n) else { break };
                let (key, key_ops) = &keys[i];
                let verdict = linear::check_key(key, key_ops, &key_opts);
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
            });
        }
    });

    let mut report = Report {
        counts: Counts::of(ops),
        keys: keys.len(),
        keys_checked: 0,
        unchecked: Vec::new(),
        linearizability: Vec::new(),
        lost_writes: Vec::new(),
        phantom_reads: Vec::new(),
        stale_reads: Vec::new(),
        unverified_writes: 0,
        check_ms: 0,
    };
    for ((key, key_ops), verdict) in keys.iter().zip(results) {
        match verdict
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .expect("every key is checked")
        {
            linear::KeyVerdict::Linearizable => report.keys_checked += 1,
            linear::KeyVerdict::Violation(v) => {
                report.keys_checked += 1;
                report.linearizability.push(*v);
            }
            linear::KeyVerdict::Unchecked(reason) => report.unchecked.push(UncheckedKey {
                key: key.to_string(),
                ops: key_ops.len(),
                reason,
            }),
        }
        let lost = lost::check_key(key, key_ops);
        report.lost_writes.extend(lost.lost);
        report.phantom_reads.extend(lost.phantom);
        report.unverified_writes += lost.unverified;
    }
    let slack_ns = u64::try_from(opts.stale_slack.as_nanos()).unwrap_or(u64::MAX);
    for (key, reads) in &stale_by_key {
        let others = keys
            .iter()
            .find(|(k, _)| k == key)
            .map_or(&[][..], |(_, o)| o.as_slice());
        report
            .stale_reads
            .extend(stale::check_key(key, others, reads, slack_ns));
    }
    report.check_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}
