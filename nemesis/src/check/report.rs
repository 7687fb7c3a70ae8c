//! The result of a check: counts, violations, and a human-readable form.
//!
//! [`Report::is_ok`] is true iff no violation was found;
//! [`Report::is_complete`] iff, in addition, every key was searched. A run
//! passes only when both hold (an unchecked key proves nothing).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::linear::LinearizabilityViolation;
use super::lost::{describe_write, fmt_value, LostWrite};
use super::stale::StaleReadViolation;
use crate::history::{Op, OpKind, Outcome};

/// How many violations of each kind [`Report`]'s `Display` shows in full.
const SHOWN: usize = 10;
/// How many ops of a window `Display` shows (the last ones).
const SHOWN_OPS: usize = 60;

/// Ops by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub total: usize,
    pub ok: usize,
    /// CASes whose comparison failed.
    pub mismatch: usize,
    pub fail: usize,
    pub indeterminate: usize,
    pub reads: usize,
    pub writes: usize,
    pub cas: usize,
    /// Reads with bounded staleness (also counted in `reads`).
    #[serde(default)]
    pub stale_reads: usize,
}

impl Counts {
    pub fn of(ops: &[Op]) -> Counts {
        let mut c = Counts {
            total: ops.len(),
            ..Counts::default()
        };
        for op in ops {
            match op.outcome {
                Outcome::Ok { .. } => c.ok += 1,
                Outcome::Mismatch { .. } => c.mismatch += 1,
                Outcome::Fail => c.fail += 1,
                Outcome::Indeterminate => c.indeterminate += 1,
            }
            match op.kind {
                OpKind::Read => c.reads += 1,
                OpKind::StaleRead { .. } => {
                    c.reads += 1;
                    c.stale_reads += 1;
                }
                OpKind::Write { .. } => c.writes += 1,
                OpKind::Cas { .. } => c.cas += 1,
            }
        }
        c
    }
}

/// A key the linearizability search skipped or gave up on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UncheckedKey {
    pub key: String,
    pub ops: usize,
    pub reason: String,
}

/// Everything a check found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub counts: Counts,
    /// Distinct keys in the history.
    pub keys: usize,
    /// Keys the linearizability search completed on (passing or not).
    pub keys_checked: usize,
    pub unchecked: Vec<UncheckedKey>,
    /// One per non-linearizable key, sorted by key.
    pub linearizability: Vec<LinearizabilityViolation>,
    pub lost_writes: Vec<LostWrite>,
    /// Ok reads (and CASes) that saw a value no op that may have taken
    /// effect wrote (see `lost`); found on unchecked keys too.
    pub phantom_reads: Vec<Op>,
    /// Stale reads that saw a state older than their bound allows, or a
    /// value never written (see `stale`).
    #[serde(default)]
    pub stale_reads: Vec<StaleReadViolation>,
    /// Acknowledged writes with no observation after them (not violations).
    pub unverified_writes: usize,
    /// Wall-clock time of the check.
    pub check_ms: u64,
}

impl Report {
    /// No violation found.
    pub fn is_ok(&self) -> bool {
        self.linearizability.is_empty()
            && self.lost_writes.is_empty()
            && self.phantom_reads.is_empty()
            && self.stale_reads.is_empty()
    }

    /// No violation found and every key searched.
    pub fn is_complete(&self) -> bool {
        self.is_ok() && self.unchecked.is_empty()
    }

    /// Keys with a violation of either kind, sorted, deduplicated.
    pub fn bad_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .linearizability
            .iter()
            .map(|v| v.key.as_str())
            .chain(self.lost_writes.iter().map(|l| l.key.as_str()))
            .chain(self.phantom_reads.iter().map(|op| op.key.as_str()))
            .chain(self.stale_reads.iter().map(|v| v.key.as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// A time since the start of the run: seconds with µs precision, or ns
/// below a millisecond.
fn secs(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{ns}ns")
    } else {
        format!("{:.6}s", ns as f64 / 1e9)
    }
}

/// What an op asked for, in words.
fn kind(op: &Op) -> String {
    describe_write(op)
}

fn outcome(op: &Op) -> String {
    match (op.kind, op.outcome) {
        (OpKind::Read | OpKind::StaleRead { .. }, Outcome::Ok { read }) => {
            format!("ok -> {}", fmt_value(read))
        }
        (_, Outcome::Ok { .. }) => "ok".to_string(),
        (_, Outcome::Mismatch { actual }) => format!("mismatch, was {}", fmt_value(actual)),
        (_, Outcome::Fail) => "fail".to_string(),
        (_, Outcome::Indeterminate) => "indeterminate".to_string(),
    }
}

/// One op on one line.
fn op_line(op: &Op) -> String {
    let complete = if op.outcome == Outcome::Indeterminate {
        format!("gave up {}", secs(op.complete_ns))
    } else {
        secs(op.complete_ns)
    };
    format!(
        "#{:<8} client {:<5} {:>11} .. {:<19} {:<28} {}",
        op.id,
        op.client,
        secs(op.invoke_ns),
        complete,
        kind(op),
        outcome(op)
    )
}

impl fmt::Display for LinearizabilityViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?} is not linearizable ({} ops on the key).",
            self.key, self.key_ops
        )?;
        match self.failure_ns {
            Some(t) => writeln!(
                f,
                "  The history up to {} is already not linearizable: it breaks when op(s) {:?} complete.",
                secs(t),
                self.failing_op_ids
            )?,
            None => writeln!(f, "  (the failing prefix could not be narrowed)")?,
        }
        let held = match &self.window_initial {
            None => "absent or any value written before".to_string(),
            Some(values) if values.len() <= 8 => {
                let v: Vec<String> = values.iter().map(|v| fmt_value(*v)).collect();
                format!("one of: {}", v.join(", "))
            }
            Some(values) => format!("one of {} possible values", values.len()),
        };
        match self.window_start_ns {
            Some(s) => writeln!(
                f,
                "  Window from {}, when every op invoked earlier had completed (except ones still running at the failure, treated as indeterminate); whatever the key held then ({held}), these {} ops cannot be linearized:",
                secs(s),
                self.window.len()
            )?,
            None => writeln!(
                f,
                "  From the start of the run (key absent), these {} ops cannot be linearized:",
                self.window.len()
            )?,
        }
        if !self.minimized {
            writeln!(
                f,
                "  (a budget ran out while narrowing: the window may be larger than needed)"
            )?;
        }
        let skip = self.window.len().saturating_sub(SHOWN_OPS);
        if skip > 0 {
            writeln!(f, "    ... {skip} earlier ops of the window not shown")?;
        }
        for op in &self.window[skip..] {
            let mark = if self.failing_op_ids.contains(&op.id) {
                "  <- cannot be linearized"
            } else if self.failure_ns.is_some_and(|t| op.complete_ns > t)
                || op.outcome == Outcome::Indeterminate
            {
                "  (treated as indeterminate)"
            } else {
                ""
            };
            writeln!(f, "    {}{}", op_line(op), mark)?;
        }
        Ok(())
    }
}

impl fmt::Display for LostWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.write;
        let value = w.kind.written_value().unwrap_or_default();
        write!(
            f,
            "acknowledged {} to key {:?} (op #{}, client {}, {} .. {}) {}: ",
            describe_write(w),
            self.key,
            w.id,
            w.client,
            secs(w.invoke_ns),
            secs(w.complete_ns),
            if self.lost_at_end {
                "was lost"
            } else {
                "was missed by a later read"
            }
        )?;
        let o = &self.seen_by;
        let seen = o.observed().flatten();
        write!(
            f,
            "op #{} ({}, client {}, invoked {}) saw {}",
            o.id,
            kind(o),
            o.client,
            secs(o.invoke_ns),
            fmt_value(seen)
        )?;
        match (&self.seen_writer, seen) {
            (_, None) => write!(f, " (the workload never deletes)")?,
            (None, Some(_)) => write!(f, ", which no operation that may have taken effect wrote")?,
            (Some(sw), Some(_)) => write!(
                f,
                ", written by op #{} which completed at {}, before value {value} was written",
                sw.id,
                secs(sw.complete_ns)
            )?,
        }
        if let Some(last) = &self.last_seen {
            write!(f, "; final read returned {}", fmt_value(last.value))?;
            if !self.lost_at_end {
                write!(f, " (the write came back or was superseded)")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        let verdict = if !self.is_ok() {
            "VIOLATIONS FOUND"
        } else if !self.unchecked.is_empty() {
            "no violation found, but some keys were not checked"
        } else if c.stale_reads > 0 {
            "linearizable, nothing lost, stale reads within their bounds"
        } else {
            "linearizable, nothing lost"
        };
        writeln!(f, "check: {verdict}")?;
        writeln!(
            f,
            "  ops: {} ({} reads of which {} stale, {} writes, {} CAS): {} ok, {} CAS mismatch, {} fail, {} indeterminate",
            c.total,
            c.reads,
            c.stale_reads,
            c.writes,
            c.cas,
            c.ok,
            c.mismatch,
            c.fail,
            c.indeterminate
        )?;
        writeln!(
            f,
            "  keys: {} ({} checked, {} unchecked); {} acknowledged writes never observed afterwards; checked in {} ms",
            self.keys,
            self.keys_checked,
            self.unchecked.len(),
            self.unverified_writes,
            self.check_ms
        )?;
        for u in &self.unchecked {
            writeln!(
                f,
                "  unchecked key {:?} ({} ops): {}",
                u.key, u.ops, u.reason
            )?;
        }
        if !self.linearizability.is_empty() {
            writeln!(
                f,
                "\nlinearizability violations: {} key(s)",
                self.linearizability.len()
            )?;
            for v in self.linearizability.iter().take(SHOWN) {
                writeln!(f, "\n{v}")?;
            }
            if self.linearizability.len() > SHOWN {
                writeln!(f, "... and {} more", self.linearizability.len() - SHOWN)?;
            }
        }
        if !self.stale_reads.is_empty() {
            writeln!(
                f,
                "\nstale reads beyond their bound: {}",
                self.stale_reads.len()
            )?;
            for v in self.stale_reads.iter().take(SHOWN) {
                writeln!(f, "  key {:?}: {}: {}", v.key, op_line(&v.read), v.reason)?;
                if let Some(w) = &v.missed {
                    writeln!(f, "    missed {}", op_line(w))?;
                }
            }
            if self.stale_reads.len() > SHOWN {
                writeln!(f, "... and {} more", self.stale_reads.len() - SHOWN)?;
            }
        }
        if !self.phantom_reads.is_empty() {
            writeln!(
                f,
                "\nreads of values no operation that may have taken effect wrote: {}",
                self.phantom_reads.len()
            )?;
            for op in self.phantom_reads.iter().take(SHOWN) {
                writeln!(f, "  key {:?}: {}", op.key, op_line(op))?;
            }
            if self.phantom_reads.len() > SHOWN {
                writeln!(f, "  ... and {} more", self.phantom_reads.len() - SHOWN)?;
            }
        }
        if !self.lost_writes.is_empty() {
            writeln!(f, "\nlost writes: {}", self.lost_writes.len())?;
            for l in self.lost_writes.iter().take(SHOWN) {
                writeln!(f, "  {l}")?;
            }
            if self.lost_writes.len() > SHOWN {
                writeln!(f, "  ... and {} more", self.lost_writes.len() - SHOWN)?;
            }
        }
        Ok(())
    }
}
