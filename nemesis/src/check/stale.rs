//! The bounded-staleness check of stale reads ([`OpKind::StaleRead`]).
//!
//! **What a stale read promises** (`tessera_routing::ReadConsistency`): it
//! returns a state the region really had, and that state holds every write
//! acknowledged at least `max_age` before the read was sent. On one host
//! every process reads one monotonic clock, so the only slack is
//! [`super::CheckOptions::stale_slack`] (0 by default; across hosts, add
//! the clocks' rate drift over `max_age`).
//!
//! **Definition.** An `Ok` stale read `r` of key `K` invoked at `t` with
//! bound `m` that returned `u` is a violation if:
//! - *phantom*: `u` is a value no op that may have taken effect wrote, or
//!   its writer was invoked after `r` completed (a read from the future);
//! - *too stale*: some acknowledged write (or successful CAS) `w` of `K`
//!   completed before `t − m − slack` and surely follows what `r` saw: `u`
//!   is absent (the workload never deletes), or the op that wrote `u`
//!   completed (determinately) before `w` was invoked. Values are unique,
//!   so a state that holds `w` (or anything after it) cannot hold `u`.
//!
//! Sound, not complete: a writer with an unknown outcome is never used as
//! a witness, and neither is a `w` that overlaps the writer of `u`.
//! `O(n log n)` per key: the acknowledged writes sorted by invocation, with
//! the earliest completion of every suffix.

use serde::{Deserialize, Serialize};

use crate::history::{Op, OpKind, Outcome};

/// A stale read that broke its promise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleReadViolation {
    pub key: String,
    /// The stale read.
    pub read: Op,
    /// What is wrong, in words.
    pub reason: String,
    /// The acknowledged write it should have seen, if that is the reason.
    pub missed: Option<Op>,
}

/// Checks the stale reads `reads` of one key against the key's other ops
/// `ops` (its writes and CASes; reads are ignored); `slack_ns` widens
/// every read's bound.
pub fn check_key(key: &str, ops: &[&Op], reads: &[&Op], slack_ns: u64) -> Vec<StaleReadViolation> {
    // Acknowledged writes by invocation, and the earliest completion from
    // each position on.
    let mut acked: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|o| o.is_acknowledged_write())
        .collect();
    acked.sort_by_key(|o| o.invoke_ns);
    let mut earliest_from = vec![u64::MAX; acked.len() + 1];
    for i in (0..acked.len()).rev() {
        earliest_from[i] = earliest_from[i + 1].min(acked[i].complete_ns);
    }
    // Which op wrote each value (any that may have taken effect).
    let writers: std::collections::HashMap<u64, &Op> = ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok { .. } | Outcome::Indeterminate))
        .filter_map(|o| o.kind.written_value().map(|v| (v, *o)))
        .collect();

    let mut out = vec![];
    for r in reads {
        let (OpKind::StaleRead { max_age_ms }, Outcome::Ok { read }) = (r.kind, r.outcome) else {
            continue;
        };
        let bound = max_age_ms
            .saturating_mul(1_000_000)
            .saturating_add(slack_ns);
        let deadline = r.invoke_ns.saturating_sub(bound);
        // The first acknowledged write (by invocation) that surely follows
        // what the read saw, if any does.
        let after = match read {
            None => 0,
            Some(v) => match writers.get(&v) {
                None => {
                    out.push(violation(
                        key,
                        r,
                        format!("it read {v}, which no op wrote"),
                        None,
                    ));
                    continue;
                }
                Some(w) if w.invoke_ns > r.complete_ns => {
                    out.push(violation(
                        key,
                        r,
                        format!(
                            "it read {v}, written by op {} invoked after it completed",
                            w.id
                        ),
                        None,
                    ));
                    continue;
                }
                Some(w) if matches!(w.outcome, Outcome::Indeterminate) => continue,
                Some(w) => acked.partition_point(|o| o.invoke_ns <= w.complete_ns),
            },
        };
        if earliest_from[after] < deadline {
            let missed = acked[after..]
                .iter()
                .find(|o| o.complete_ns < deadline)
                .copied()
                .cloned();
            let seen = match read {
                None => "the key absent".to_string(),
                Some(v) => format!("{v}"),
            };
            out.push(violation(
                key,
                r,
                format!(
                    "it read {seen}, but a later write was acknowledged more than {max_age_ms} ms \
                     before the read was sent"
                ),
                missed,
            ));
        }
    }
    out
}

fn violation(key: &str, read: &Op, reason: String, missed: Option<Op>) -> StaleReadViolation {
    StaleReadViolation {
        key: key.to_string(),
        read: read.clone(),
        reason,
        missed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn op(id: u64, kind: OpKind, invoke_ms: u64, complete_ms: u64, outcome: Outcome) -> Op {
        Op {
            id,
            client: id,
            key: "k".into(),
            kind,
            invoke_ns: invoke_ms * MS,
            complete_ns: complete_ms * MS,
            outcome,
        }
    }

    fn write(id: u64, value: u64, from: u64, to: u64) -> Op {
        op(id, OpKind::Write { value }, from, to, Outcome::OK)
    }

    fn stale(id: u64, at: u64, max_age_ms: u64, read: Option<u64>) -> Op {
        op(
            id,
            OpKind::StaleRead { max_age_ms },
            at,
            at + 1,
            Outcome::read(read),
        )
    }

    fn check(ops: &[Op], reads: &[Op], slack_ns: u64) -> Vec<StaleReadViolation> {
        let ops: Vec<&Op> = ops.iter().collect();
        let reads: Vec<&Op> = reads.iter().collect();
        check_key("k", &ops, &reads, slack_ns)
    }

    #[test]
    fn a_read_within_its_bound_passes_and_one_beyond_it_is_caught() {
        // 1 written over [0, 10] ms, then 2 over [20, 30] ms.
        let writes = [write(1, 1, 0, 10), write(2, 2, 20, 30)];
        // Reading 1 at 100 ms with a 100 ms bound: 2 was acknowledged at
        // 30 ms, within the bound.
        assert!(check(&writes, &[stale(10, 100, 100, Some(1))], 0).is_empty());
        // With a 50 ms bound it must have seen 2.
        let v = check(&writes, &[stale(11, 100, 50, Some(1))], 0);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].missed.as_ref().map(|o| o.id), Some(2));
        // ... unless the slack covers the difference.
        assert!(check(&writes, &[stale(12, 100, 50, Some(1))], 30 * MS).is_empty());
        // The newest value always passes.
        assert!(check(&writes, &[stale(13, 1000, 1, Some(2))], 0).is_empty());
    }

    #[test]
    fn absent_after_an_old_acknowledged_write_is_caught() {
        let writes = [write(1, 1, 0, 10)];
        assert!(check(&writes, &[stale(10, 50, 100, None)], 0).is_empty());
        assert_eq!(check(&writes, &[stale(11, 500, 100, None)], 0).len(), 1);
    }

    #[test]
    fn phantom_and_future_values_are_caught() {
        let writes = [write(1, 1, 0, 10), write(2, 2, 200, 210)];
        let v = check(&writes, &[stale(10, 50, 100, Some(9))], 0);
        assert!(v[0].reason.contains("no op wrote"), "{v:?}");
        let v = check(&writes, &[stale(11, 50, 100, Some(2))], 0);
        assert!(v[0].reason.contains("invoked after"), "{v:?}");
    }

    #[test]
    fn overlapping_or_unknown_writers_are_never_witnesses() {
        // 2 overlaps 1: either order is possible, so reading 1 is fine.
        let overlapping = [write(1, 1, 0, 30), write(2, 2, 10, 20)];
        assert!(check(&overlapping, &[stale(10, 1000, 1, Some(1))], 0).is_empty());
        // 1's outcome is unknown: it may have taken effect after 2.
        let unknown = [
            op(1, OpKind::Write { value: 1 }, 0, 10, Outcome::Indeterminate),
            write(2, 2, 20, 30),
        ];
        assert!(check(&unknown, &[stale(10, 1000, 1, Some(1))], 0).is_empty());
        // A failed or unacknowledged later write is no witness either.
        let failed = [
            write(1, 1, 0, 10),
            op(2, OpKind::Write { value: 2 }, 20, 30, Outcome::Fail),
            op(
                3,
                OpKind::Write { value: 3 },
                20,
                30,
                Outcome::Indeterminate,
            ),
        ];
        assert!(check(&failed, &[stale(10, 1000, 1, Some(1))], 0).is_empty());
        // Failed and unknown stale reads say nothing.
        let mut r = stale(11, 1000, 1, None);
        r.outcome = Outcome::Fail;
        assert!(check(&failed, &[r], 0).is_empty());
    }
}
