//! The history of a run: every operation the workload invoked, with when it
//! was invoked, when it completed and what came of it.
//!
//! The workload treats each key as a register holding a `u64` (stored as its
//! decimal string; a key never written reads as `None`). Every value written
//! (by a write or a compare-and-swap) is unique within its key, so a value
//! read identifies the one operation that wrote it; the checker relies on
//! this and rejects a history where it does not hold.
//!
//! This module owns:
//! - the model ([`Op`], [`OpKind`], [`Outcome`]) and its JSON-lines form
//!   (one [`Op`] per line, written by [`HistoryWriter`], read back by
//!   [`read_history`]);
//! - the [`Recorder`], shared by the workload's tasks, which stamps times
//!   from one monotonic clock (ns since the recorder was created) and hands
//!   out unique ids.
//!
//! Invariants of a recorded history (checked by [`validate`]):
//! - op ids are unique;
//! - `invoke_ns <= complete_ns`;
//! - [`Outcome::Mismatch`] only on a [`OpKind::Cas`];
//! - written values are unique per key (among ops that did not definitely
//!   fail).
//!
//! For an [`Outcome::Indeterminate`] op, `complete_ns` is only when the
//! client gave up: the checker treats the op as possibly taking effect at
//! any time after `invoke_ns`, however late, or never.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What an operation asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OpKind {
    /// Read the key.
    Read,
    /// Read the key with bounded staleness (`ReadConsistency::Stale`): not
    /// linearizable, so kept out of the linearizability and lost-write
    /// checks and checked on its own (`check::stale`).
    StaleRead { max_age_ms: u64 },
    /// Set the key to `value`.
    Write { value: u64 },
    /// Set the key to `new` if it holds `expected` (`None`: if it is absent,
    /// i.e. "create if absent").
    Cas { expected: Option<u64>, new: u64 },
}

impl OpKind {
    /// The value this operation writes if it takes effect.
    pub fn written_value(&self) -> Option<u64> {
        match *self {
            OpKind::Read | OpKind::StaleRead { .. } => None,
            OpKind::Write { value } => Some(value),
            OpKind::Cas { new, .. } => Some(new),
        }
    }
}

/// What came of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect. For a read, `read` is the value returned (`None`: the
    /// key was absent). For a write or a successful CAS, `read` is ignored
    /// (record `None`).
    Ok {
        #[serde(default)]
        read: Option<u64>,
    },
    /// A CAS whose comparison failed: it had no effect, and the server
    /// reported that the key held `actual` (`None`: absent) instead of the
    /// expected value. This is an observation of the register, like a read.
    Mismatch {
        #[serde(default)]
        actual: Option<u64>,
    },
    /// It definitely did not take effect (an error the server guarantees had
    /// no effect). The checker drops such ops.
    Fail,
    /// Timeout, lost connection...: it may or may not have taken effect, at
    /// any time after its invocation.
    Indeterminate,
}

impl Outcome {
    /// `Ok` for a write or a successful CAS.
    pub const OK: Outcome = Outcome::Ok { read: None };

    /// `Ok` for a read that returned `value`.
    pub fn read(value: Option<u64>) -> Outcome {
        Outcome::Ok { read: value }
    }
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique within the history.
    pub id: u64,
    /// The logical client (a client that saw an indeterminate outcome
    /// continues under a new id).
    pub client: u64,
    pub key: String,
    pub kind: OpKind,
    /// When the client invoked it, in ns since the run started.
    pub invoke_ns: u64,
    /// When the client saw its outcome (or gave up), in ns since the run
    /// started.
    pub complete_ns: u64,
    pub outcome: Outcome,
}

impl Op {
    /// Whether this is a write or CAS the store acknowledged as applied.
    pub fn is_acknowledged_write(&self) -> bool {
        self.kind.written_value().is_some() && matches!(self.outcome, Outcome::Ok { .. })
    }

    /// The value of the register this op observed, if it observed one: the
    /// value an `Ok` read returned, the expected value of a successful CAS,
    /// the actual value of a mismatched CAS. `None` if it observed nothing
    /// (a stale read observes no linearizable value); `Some(None)` if it
    /// observed the key absent.
    pub fn observed(&self) -> Option<Option<u64>> {
        match (self.kind, self.outcome) {
            (OpKind::Read, Outcome::Ok { read }) => Some(read),
            (OpKind::Cas { expected, .. }, Outcome::Ok { .. }) => Some(expected),
            (OpKind::Cas { .. }, Outcome::Mismatch { actual }) => Some(actual),
            _ => None,
        }
    }
}

/// Errors reading, writing or validating a history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("history file {path}, line {line}: {source}")]
    Parse {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid history: {0}")]
    Invalid(String),
}

/// Checks the invariants listed in the module docs.
pub fn validate(ops: &[Op]) -> Result<(), HistoryError> {
    let mut ids = HashSet::with_capacity(ops.len());
    let mut values: HashMap<(&str, u64), u64> = HashMap::new();
    for op in ops {
        if !ids.insert(op.id) {
            return Err(HistoryError::Invalid(format!("duplicate op id {}", op.id)));
        }
        if op.complete_ns < op.invoke_ns {
            return Err(HistoryError::Invalid(format!(
                "op {} completes ({} ns) before it is invoked ({} ns)",
                op.id, op.complete_ns, op.invoke_ns
            )));
        }
        if matches!(op.outcome, Outcome::Mismatch { .. }) && !matches!(op.kind, OpKind::Cas { .. })
        {
            return Err(HistoryError::Invalid(format!(
                "op {}: outcome `mismatch` on a {:?}",
                op.id, op.kind
            )));
        }
        if op.outcome == Outcome::Fail {
            continue;
        }
        if let Some(v) = op.kind.written_value() {
            if let Some(other) = values.insert((op.key.as_str(), v), op.id) {
                return Err(HistoryError::Invalid(format!(
                    "ops {other} and {} both write value {v} to key {:?}: written values must be unique",
                    op.id, op.key
                )));
            }
        }
    }
    Ok(())
}

/// Appends ops to a file as JSON lines.
///
/// Buffered: call [`flush`](Self::flush) at safe points (the [`Recorder`]
/// does after [`Recorder::finish`]); [`with_flush_per_line`]
/// (Self::with_flush_per_line) flushes after every op instead, so a crash
/// of the harness loses at most the line being written.
pub struct HistoryWriter {
    path: PathBuf,
    out: BufWriter<File>,
    flush_per_line: bool,
}

impl HistoryWriter {
    /// Creates (truncates) `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, HistoryError> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|source| HistoryError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(HistoryWriter {
            path,
            out: BufWriter::new(file),
            flush_per_line: false,
        })
    }

    /// Flush after every line.
    pub fn with_flush_per_line(mut self) -> Self {
        self.flush_per_line = true;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&mut self, op: &Op) -> Result<(), HistoryError> {
        let io = |source| HistoryError::Io {
            path: self.path.clone(),
            source,
        };
        serde_json::to_writer(&mut self.out, op).map_err(|e| io(e.into()))?;
        self.out.write_all(b"\n").map_err(io)?;
        if self.flush_per_line {
            self.out.flush().map_err(io)?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), HistoryError> {
        self.out.flush().map_err(|source| HistoryError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Writes a whole history to `path` (one op per line).
pub fn write_history(path: impl AsRef<Path>, ops: &[Op]) -> Result<(), HistoryError> {
    let mut w = HistoryWriter::create(path)?;
    for op in ops {
        w.append(op)?;
    }
    w.flush()
}

/// Reads a JSON-lines history (blank lines are skipped).
pub fn read_history(path: impl AsRef<Path>) -> Result<Vec<Op>, HistoryError> {
    let path = path.as_ref().to_path_buf();
    let io = |source| HistoryError::Io {
        path: path.clone(),
        source,
    };
    let file = File::open(&path).map_err(io)?;
    let mut ops = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            path: path.clone(),
            line: i + 1,
            source,
        })?;
        ops.push(op);
    }
    Ok(ops)
}

/// An invoked operation not yet completed; give it back to
/// [`Recorder::complete`]. Dropping it leaves the op pending: it ends up
/// [`Outcome::Indeterminate`] in the history.
#[derive(Debug)]
#[must_use = "complete the operation with Recorder::complete"]
pub struct OpHandle {
    id: u64,
}

impl OpHandle {
    pub fn id(&self) -> u64 {
        self.id
    }
}

struct RecorderState {
    pending: HashMap<u64, Op>,
    done: Vec<Op>,
    writer: Option<HistoryWriter>,
    error: Option<HistoryError>,
}

/// Records the history of a run. Cheap to clone (an `Arc`); share one
/// between all the workload's tasks.
///
/// Times are ns since [`Recorder::new`] on one monotonic clock. Ops still
/// pending when the history is taken ([`history`](Self::history),
/// [`finish`](Self::finish)) are reported as indeterminate, completed at that
/// moment, so an op whose task was cancelled is never silently lost.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    next_id: Arc<AtomicU64>,
    state: Arc<Mutex<RecorderState>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            next_id: Arc::new(AtomicU64::new(0)),
            state: Arc::new(Mutex::new(RecorderState {
                pending: HashMap::new(),
                done: Vec::new(),
                writer: None,
                error: None,
            })),
        }
    }

    /// Also appends every completed op to `writer` as it completes (the
    /// first write error is kept and returned by [`finish`](Self::finish)).
    pub fn with_writer(writer: HistoryWriter) -> Self {
        let r = Self::new();
        r.lock().writer = Some(writer);
        r
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        // A panic while holding the lock cannot leave the state torn (every
        // critical section is a single insert/remove/push).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// ns since the recorder was created.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records the invocation of an operation, now.
    pub fn invoke(&self, client: u64, key: impl Into<String>, kind: OpKind) -> OpHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let key = key.into();
        let mut st = self.lock();
        // Stamp under the lock so invocation order by time matches the order
        // ops enter the recorder.
        let now = self.now_ns();
        st.pending.insert(
            id,
            Op {
                id,
                client,
                key,
                kind,
                invoke_ns: now,
                complete_ns: now,
                outcome: Outcome::Indeterminate,
            },
        );
        OpHandle { id }
    }

    /// Records the completion of an operation, now; returns the op.
    pub fn complete(&self, handle: OpHandle, outcome: Outcome) -> Op {
        let mut st = self.lock();
        let now = self.now_ns();
        let mut op = st
            .pending
            .remove(&handle.id)
            .expect("OpHandle completed twice or from another Recorder");
        op.complete_ns = now.max(op.invoke_ns);
        op.outcome = outcome;
        st.done.push(op.clone());
        let RecorderState { writer, error, .. } = &mut *st;
        if let Some(w) = writer {
            if let Err(e) = w.append(&op) {
                error.get_or_insert(e);
            }
        }
        op
    }

    /// Number of ops invoked and not yet completed.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// A copy of the history so far, sorted by invocation (pending ops as
    /// indeterminate, completed now).
    pub fn history(&self) -> Vec<Op> {
        let st = self.lock();
        let now = self.now_ns();
        let mut ops = st.done.clone();
        ops.extend(st.pending.values().map(|op| Op {
            complete_ns: now,
            ..op.clone()
        }));
        ops.sort_by_key(|op| (op.invoke_ns, op.id));
        ops
    }

    /// Completes every pending op as indeterminate (appending them to the
    /// writer, if any), flushes the writer and returns the whole history
    /// sorted by invocation.
    pub fn finish(&self) -> Result<Vec<Op>, HistoryError> {
        let mut st = self.lock();
        let now = self.now_ns();
        let mut pending: Vec<Op> = st.pending.drain().map(|(_, op)| op).collect();
        pending.sort_by_key(|op| op.id);
        for op in &mut pending {
            op.complete_ns = now;
            op.outcome = Outcome::Indeterminate;
        }
        let RecorderState {
            writer,
            error,
            done,
            ..
        } = &mut *st;
        if let Some(w) = writer {
            // Ops completed earlier were appended as they completed.
            for op in &pending {
                if let Err(e) = w.append(op) {
                    error.get_or_insert(e);
                }
            }
            if let Err(e) = w.flush() {
                error.get_or_insert(e);
            }
        }
        done.extend(pending);
        if let Some(e) = error.take() {
            return Err(e);
        }
        let mut ops = done.clone();
        ops.sort_by_key(|op| (op.invoke_ns, op.id));
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_round_trip() {
        let ops = vec![
            Op {
                id: 0,
                client: 1,
                key: "k".into(),
                kind: OpKind::Write { value: 7 },
                invoke_ns: 10,
                complete_ns: 20,
                outcome: Outcome::OK,
            },
            Op {
                id: 1,
                client: 2,
                key: "k".into(),
                kind: OpKind::Cas {
                    expected: None,
                    new: 8,
                },
                invoke_ns: 15,
                complete_ns: 30,
                outcome: Outcome::Mismatch { actual: Some(7) },
            },
            Op {
                id: 2,
                client: 2,
                key: "k".into(),
                kind: OpKind::Read,
                invoke_ns: 31,
                complete_ns: 40,
                outcome: Outcome::read(None),
            },
            Op {
                id: 3,
                client: 3,
                key: "k".into(),
                kind: OpKind::Write { value: 9 },
                invoke_ns: 31,
                complete_ns: 90,
                outcome: Outcome::Indeterminate,
            },
        ];
        let dir = std::env::temp_dir().join(format!("nemesis-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.jsonl");
        write_history(&path, &ops).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(
            text.contains(r#""kind":{"type":"write","value":7}"#),
            "{text}"
        );
        assert_eq!(read_history(&path).unwrap(), ops);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recorder_stamps_and_keeps_pending_ops() {
        let r = Recorder::new();
        let a = r.invoke(1, "k", OpKind::Write { value: 1 });
        let b = r.invoke(2, "k", OpKind::Read);
        assert_ne!(a.id(), b.id());
        let op = r.complete(a, Outcome::OK);
        assert!(op.complete_ns >= op.invoke_ns);
        assert_eq!(r.pending(), 1);
        drop(b);
        let h = r.finish().unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].outcome, Outcome::Indeterminate);
        validate(&h).unwrap();
    }

    #[test]
    fn validate_rejects_duplicate_values() {
        let op = |id, value| Op {
            id,
            client: 0,
            key: "k".into(),
            kind: OpKind::Write { value },
            invoke_ns: 0,
            complete_ns: 1,
            outcome: Outcome::OK,
        };
        assert!(validate(&[op(0, 1), op(1, 2)]).is_ok());
        assert!(validate(&[op(0, 1), op(1, 1)]).is_err());
        assert!(validate(&[op(0, 1), op(0, 2)]).is_err());
    }
}
