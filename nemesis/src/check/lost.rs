//! The "nothing lost" check.
//!
//! An *observation* of a key is an op that saw the register's value at its
//! linearization point: an `Ok` read (the value returned), a successful CAS
//! (its expected value), a mismatched CAS (the actual value reported).
//!
//! **Definition.** An acknowledged write `w` (an `Ok` write or `Ok` CAS) of
//! value `v` to key `K` is *lost* if some observation `o` of `K` invoked
//! after `w` completed saw a value `u` ≠ `v` that no op could have written
//! after `w`: `u` is absent (the workload never deletes), or
//! the op that wrote `u` completed (determinately) before `w` was invoked.
//!
//! An observation of a value that no op which may have taken effect wrote
//! (never written, or written only by definitely failed ops) is a *phantom
//! read*, reported on its own rather than as a loss of every earlier write.
//!
//! Linearizability implies it: in any linearization `w` precedes `o`
//! (real time), so the value `o` sees was written by an op linearized
//! between `w` and `o`, hence not one that completed before `w` began;
//! values are unique, so `u` names that op. The check is weaker but gives a
//! direct message, and it is cheap (`O(n log n)` per key), so it also runs
//! on keys too large for the linearizability search.
//!
//! A lost write whose key's last observation (normally the driver's final
//! read) does not contradict it is flagged `lost_at_end: false`: a later
//! read missed it (a stale read), but it was not gone for good.
//!
//! An acknowledged write with no observation invoked after it completed is
//! *unverified* (counted, not a violation): the driver's final read of each
//! key after healing should leave none.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::history::{Op, OpKind, Outcome};

/// An acknowledged write that a later observation contradicts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWrite {
    pub key: String,
    /// The acknowledged write (or CAS).
    pub write: Op,
    /// The first observation (by invocation) that contradicts it.
    pub seen_by: Op,
    /// The op that wrote what `seen_by` saw, if any op did.
    pub seen_writer: Option<Op>,
    /// The last observation of the key (by invocation), normally the
    /// driver's final read.
    pub last_seen: Option<LastSeen>,
    /// Whether the last observation contradicts the write too (the write is
    /// gone for good); if not, `seen_by` was a stale read and the write
    /// came back, or was superseded, by the end.
    pub lost_at_end: bool,
}

/// The last observation of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSeen {
    pub op_id: u64,
    /// `None`: absent.
    pub value: Option<u64>,
}

/// Result of the check on one key.
pub(crate) struct KeyLost {
    pub lost: Vec<LostWrite>,
    /// Observations of values no op that may have taken effect wrote.
    pub phantom: Vec<Op>,
    pub unverified: usize,
}

/// `ops`: one key's ops sorted by `(invoke_ns, id)`.
pub(crate) fn check_key(key: &str, ops: &[&Op]) -> KeyLost {
    // Writers of each value among ops that may have taken effect.
    let writer: HashMap<u64, &Op> = ops
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Ok { .. } | Outcome::Indeterminate))
        .filter_map(|op| op.kind.written_value().map(|v| (v, *op)))
        .collect();
    // Observations by invocation, and for each a threshold: it contradicts
    // every acknowledged write invoked after the threshold (i128 so that
    // "always" is -1 and "never" is above every time).
    const NEVER: i128 = u64::MAX as i128 + 1;
    let obs: Vec<(&Op, Option<u64>, i128)> = ops
        .iter()
        .filter_map(|op| op.observed().map(|v| (*op, v)))
        .map(|(op, v)| {
            let threshold = match v.map(|v| writer.get(&v)) {
                None => -1,
                // A phantom read: reported apart.
                Some(None) => NEVER,
                Some(Some(w)) if w.outcome == Outcome::Indeterminate => NEVER,
                Some(Some(w)) => i128::from(w.complete_ns),
            };
            (op, v, threshold)
        })
        .collect();
    // suffix_min[i] = min threshold over obs[i..].
    let mut suffix_min = vec![NEVER; obs.len() + 1];
    for i in (0..obs.len()).rev() {
        suffix_min[i] = suffix_min[i + 1].min(obs[i].2);
    }
    let last_seen = obs.last().map(|(op, v, _)| LastSeen {
        op_id: op.id,
        value: *v,
    });
    let mut out = KeyLost {
        lost: Vec::new(),
        phantom: obs
            .iter()
            .filter(|(_, v, _)| v.is_some_and(|v| !writer.contains_key(&v)))
            .map(|(op, _, _)| (*op).clone())
            .collect(),
        unverified: 0,
    };
    for w in ops.iter().filter(|op| op.is_acknowledged_write()) {
        // First observation invoked strictly after w completed.
        let first = obs.partition_point(|(o, _, _)| o.invoke_ns <= w.complete_ns);
        if first == obs.len() {
            out.unverified += 1;
            continue;
        }
        // A threshold equal to w's own completion (w's value) never
        // contradicts w, since it is not below w.invoke_ns.
        if suffix_min[first] >= i128::from(w.invoke_ns) {
            continue;
        }
        let (seen_by, seen, _) = obs[first..]
            .iter()
            .find(|(_, _, t)| *t < i128::from(w.invoke_ns))
            .expect("suffix minimum says one exists");
        out.lost.push(LostWrite {
            key: key.to_string(),
            write: (*w).clone(),
            seen_by: (*seen_by).clone(),
            seen_writer: seen.and_then(|v| writer.get(&v)).map(|op| (*op).clone()),
            last_seen: last_seen.clone(),
            lost_at_end: obs
                .last()
                .is_some_and(|(_, _, t)| *t < i128::from(w.invoke_ns)),
        });
    }
    out
}

/// The value a write or CAS writes, for messages.
pub(crate) fn describe_write(op: &Op) -> String {
    match op.kind {
        OpKind::Write { value } => format!("write of {value}"),
        OpKind::Cas { expected, new } => format!("CAS {} -> {new}", fmt_value(expected)),
        OpKind::Read => "read".to_string(),
        OpKind::StaleRead { max_age_ms } => format!("stale read (≤ {max_age_ms} ms)"),
    }
}

/// `None` shown as "absent".
pub(crate) fn fmt_value(v: Option<u64>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "absent".to_string(),
    }
}
