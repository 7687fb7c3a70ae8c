//! How fast writes come back: for each fault of a run, how long after it
//! was healed until a write was served again, and the longest stretch
//! while it held with no write served; per nemesis kind, the median and
//! the maximum of each.
//!
//! A write is *served* when a write or compare-and-swap got its answer
//! (applied, or a CAS whose comparison failed: either way the cluster
//! ordered it); failed and indeterminate ones are not. A fault's window
//! runs from its first event to the `healed` event after it; "after the
//! heal" is the time from that event to the first served write completing
//! after it. These are measurements, printed and written to
//! `recovery.json`, never asserted: this machine's timing is too noisy for
//! a test to hold a bound.

use std::collections::BTreeMap;

use crate::faults::{Event, Nemesis};
use crate::history::{Op, OpKind, Outcome};

/// One nemesis kind's recovery figures, in milliseconds.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Recovery {
    pub nemesis: Nemesis,
    /// Faults of this kind that were healed.
    pub faults: usize,
    /// From the heal to the first served write after it (median, max);
    /// a fault with no served write after its heal counts until the end
    /// of the history.
    pub after_heal_p50_ms: u64,
    pub after_heal_max_ms: u64,
    /// The longest stretch with no served write while the fault held
    /// (median over the faults, max).
    pub longest_gap_p50_ms: u64,
    pub longest_gap_max_ms: u64,
}

/// A fault's window, in milliseconds since the run started.
struct Window {
    nemesis: Nemesis,
    start: u64,
    healed: u64,
}

fn windows(events: &[Event]) -> Vec<Window> {
    let mut out = vec![];
    let mut open: Option<(Nemesis, u64)> = None;
    for e in events {
        match (e.nemesis, open) {
            (Some(n), None) => open = Some((n, e.at_ms)),
            (None, Some((nemesis, start))) if e.what == "healed" => {
                out.push(Window {
                    nemesis,
                    start,
                    healed: e.at_ms,
                });
                open = None;
            }
            _ => {}
        }
    }
    out
}

/// When each served write completed, in milliseconds, sorted.
fn served_writes(ops: &[Op]) -> Vec<u64> {
    let mut at: Vec<u64> = ops
        .iter()
        .filter(|op| matches!(op.kind, OpKind::Write { .. } | OpKind::Cas { .. }))
        .filter(|op| matches!(op.outcome, Outcome::Ok { .. } | Outcome::Mismatch { .. }))
        .map(|op| op.complete_ns / 1_000_000)
        .collect();
    at.sort_unstable();
    at
}

/// The median (upper) and the maximum of `v`.
fn p50_max(mut v: Vec<u64>) -> (u64, u64) {
    v.sort_unstable();
    (v[v.len() / 2], v[v.len() - 1])
}

/// The recovery figures of a run, one line per nemesis kind that struck.
pub fn recovery(events: &[Event], ops: &[Op]) -> Vec<Recovery> {
    let served = served_writes(ops);
    let end = ops
        .iter()
        .map(|op| op.complete_ns / 1_000_000)
        .max()
        .unwrap_or(0);
    let mut by_kind: BTreeMap<String, (Nemesis, Vec<u64>, Vec<u64>)> = BTreeMap::new();
    for w in windows(events) {
        let first = served.partition_point(|&t| t < w.healed);
        let after = served
            .get(first)
            .map_or(end.saturating_sub(w.healed), |&t| t - w.healed);
        let lo = served.partition_point(|&t| t < w.start);
        let points = std::iter::once(w.start)
            .chain(served[lo..first].iter().copied())
            .chain(std::iter::once(w.healed));
        let mut gap = 0;
        let mut last = None;
        for t in points {
            if let Some(l) = last {
                gap = gap.max(t - l);
            }
            last = Some(t);
        }
        let entry = by_kind
            .entry(format!("{:?}", w.nemesis))
            .or_insert_with(|| (w.nemesis, vec![], vec![]));
        entry.1.push(after);
        entry.2.push(gap);
    }
    by_kind
        .into_values()
        .map(|(nemesis, after, gaps)| {
            let faults = after.len();
            let (after_heal_p50_ms, after_heal_max_ms) = p50_max(after);
            let (longest_gap_p50_ms, longest_gap_max_ms) = p50_max(gaps);
            Recovery {
                nemesis,
                faults,
                after_heal_p50_ms,
                after_heal_max_ms,
                longest_gap_p50_ms,
                longest_gap_max_ms,
            }
        })
        .collect()
}

/// A table of [`recovery`]'s lines for the terminal.
pub fn table(lines: &[Recovery]) -> String {
    let mut t = comfy_table::Table::new();
    t.set_header([
        "nemesis",
        "faults",
        "after heal p50 ms",
        "after heal max ms",
        "longest gap p50 ms",
        "longest gap max ms",
    ]);
    for r in lines {
        t.add_row([
            serde_json::to_value(r.nemesis)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{:?}", r.nemesis)),
            r.faults.to_string(),
            r.after_heal_p50_ms.to_string(),
            r.after_heal_max_ms.to_string(),
            r.longest_gap_p50_ms.to_string(),
            r.longest_gap_max_ms.to_string(),
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at_ms: u64, nemesis: Option<Nemesis>, what: &str) -> Event {
        Event {
            at_ms,
            nemesis,
            what: what.into(),
        }
    }

    fn write(id: u64, complete_ms: u64, outcome: Outcome) -> Op {
        Op {
            id,
            client: 1,
            key: "k".into(),
            kind: OpKind::Write { value: id },
            invoke_ns: complete_ms.saturating_sub(1) * 1_000_000,
            complete_ns: complete_ms * 1_000_000,
            outcome,
        }
    }

    #[test]
    fn measures_the_wait_after_each_heal_and_the_longest_gap_during_each_fault() {
        let cut = Some(Nemesis::PartitionLinks);
        let events = vec![
            event(1_000, cut, "cut every link between a and b"),
            event(3_000, None, "healed"),
            event(5_000, cut, "cut every link between a and c"),
            event(6_000, None, "healed"),
        ];
        let ok = || Outcome::Ok { read: None };
        let ops = vec![
            write(1, 900, ok()),
            write(2, 1_200, ok()),
            // Not served: ignored.
            write(3, 2_000, Outcome::Indeterminate),
            write(4, 3_500, ok()),
            write(5, 5_100, ok()),
            write(6, 6_050, ok()),
        ];
        let r = recovery(&events, &ops);
        assert_eq!(
            r,
            vec![Recovery {
                nemesis: Nemesis::PartitionLinks,
                faults: 2,
                // 500 ms and 50 ms after the heals.
                after_heal_p50_ms: 500,
                after_heal_max_ms: 500,
                // 1,800 ms (1,200 → 3,000) and 900 ms (5,100 → 6,000).
                longest_gap_p50_ms: 1_800,
                longest_gap_max_ms: 1_800,
            }]
        );
        // A fault whose heal no write followed counts to the history's end.
        let events = vec![event(100, cut, "cut"), event(200, None, "healed")];
        let ops = vec![write(1, 150, ok()), write(2, 400, Outcome::Indeterminate)];
        let r = recovery(&events, &ops);
        assert_eq!(r[0].after_heal_max_ms, 200);
        assert_eq!(r[0].longest_gap_max_ms, 50);
        assert!(table(&r).contains("partition-links"));
    }
}
