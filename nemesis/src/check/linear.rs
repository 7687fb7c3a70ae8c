//! Linearizability of one key, and the minimal window of a violation.
//!
//! # Checking
//!
//! The key's ops are modelled once ([`model::build`], whole history), then
//! cut into *segments* at quiescent points (times no modelled op spans),
//! merged up to a minimum size. Segments are checked in order, carrying the
//! exact set of states the register may hold at each boundary: a segment
//! is run from `Unknown` restricted to that set (from the exact absent state
//! for the first), and its possible final states are the candidates `x`
//! for which the segment followed by a synthetic `Read(x)` is still
//! linearizable. An empty set means no linearization exists. This keeps WGL
//! (whose per-step cost and memory are linear in the history it is given)
//! on small histories, so long, mostly sequential keys stay cheap. A key
//! that is never quiescent is one segment: the plain WGL check.
//!
//! # Narrowing a violation
//!
//! In two searches over monotone predicates (see `model`):
//! 1. the *shortest failing prefix*: the earliest completion time `cut` such
//!    that the history cut there (ops pending at `cut` treated as
//!    indeterminate) is already not linearizable. The ops completing at
//!    `cut` are where the history first goes wrong;
//! 2. the *latest quiescent start*: the latest time `start` at which no
//!    determinate op was in flight such that the ops between `start` and
//!    `cut`, from an unknown initial state (absent, or any value written
//!    before `start`), still cannot be linearized.
//!
//! The report lists exactly the ops of that window that the model keeps, so
//! it is a self-contained proof: no initial state in the stated set makes
//! them linearizable. When no later start fails, the window starts at the
//! failing segment's start, from the exact set of states possible there
//! (at the beginning of the run: absent).

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::model::{self, Exceeded, Item, RegOp, Verdict, Window};
use super::CheckOptions;
use crate::history::{Op, Outcome};

/// Segments are merged up to this many modelled ops.
const MIN_SEGMENT: usize = 64;

/// A key whose history is not linearizable, with the smallest window found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearizabilityViolation {
    pub key: String,
    /// Ops recorded on the key.
    pub key_ops: usize,
    /// Start of the window, a time when no determinate op was in flight;
    /// `None`: the beginning of the run.
    pub window_start_ns: Option<u64>,
    /// What the key may hold at the window's start: `Some(values)` exactly
    /// those (`null`: absent); `None`: absent or any value written before
    /// the start.
    pub window_initial: Option<Vec<Option<u64>>>,
    /// End of the shortest failing prefix: the history cut here is already
    /// not linearizable; `None` if it could not be narrowed.
    pub failure_ns: Option<u64>,
    /// The ops that complete at `failure_ns`: the first completions that
    /// cannot be linearized.
    pub failing_op_ids: Vec<u64>,
    /// The window's ops, by invocation. Ops still running at `failure_ns`
    /// appear as recorded but were treated as indeterminate; ops the model
    /// drops (failed ops, indeterminate reads, indeterminate writes whose
    /// value nobody saw) are left out.
    pub window: Vec<Op>,
    /// False if a budget ran out while narrowing (the window is then larger
    /// than necessary, but still fails).
    pub minimized: bool,
}

/// What came of checking one key (`opts.memory_budget` is this key's).
pub(crate) enum KeyVerdict {
    Linearizable,
    Violation(Box<LinearizabilityViolation>),
    Unchecked(String),
}

fn reason(e: Exceeded, opts: &CheckOptions) -> String {
    match e {
        Exceeded::Time => format!(
            "gave up after {:?} (time budget per key)",
            opts.key_time_budget
        ),
        Exceeded::Memory => format!(
            "gave up: search cache would exceed {} MiB (memory budget per key)",
            opts.memory_budget >> 20
        ),
    }
}

type States = BTreeSet<Option<u64>>;

fn set(states: &States) -> HashSet<Option<u64>> {
    states.iter().copied().collect()
}

/// Splits `items` (sorted by call) at quiescent points into segments of at
/// least `MIN_SEGMENT` items (the last may be smaller).
fn segments(items: &[Item]) -> Vec<&[Item]> {
    let mut out = Vec::new();
    let mut begin = 0;
    let mut busy_until: Option<u64> = Some(0);
    for (j, it) in items.iter().enumerate() {
        let quiet = busy_until.is_some_and(|b| b < it.call);
        if quiet && j - begin >= MIN_SEGMENT {
            out.push(&items[begin..j]);
            begin = j;
        }
        busy_until = match (busy_until, it.response) {
            (Some(b), Some(r)) => Some(b.max(r)),
            _ => None,
        };
    }
    if begin < items.len() {
        out.push(&items[begin..]);
    }
    out
}

/// Values the register may hold after `seg`, from `from`: candidates are
/// the values of writes no definite write follows in real time (and `from`
/// if no write certainly takes effect).
fn final_candidates(seg: &[Item], from: &States) -> States {
    let definite = |it: &Item| matches!(it.op, RegOp::Write(_) | RegOp::Cas { .. });
    let last_definite_call = seg.iter().filter(|it| definite(it)).map(|it| it.call).max();
    let mut c = States::new();
    for it in seg {
        let v = match it.op {
            RegOp::Write(v) | RegOp::Cas { new: v, .. } | RegOp::MaybeCas { new: v, .. } => v,
            _ => continue,
        };
        if last_definite_call.is_none_or(|l| it.response.is_none_or(|r| r >= l)) {
            c.insert(Some(v));
        }
    }
    let may_keep_initial = !seg.iter().any(definite);
    if may_keep_initial {
        c.extend(from.iter().copied());
    }
    c
}

/// Checks one key; `ops` are the key's ops sorted by `(invoke_ns, id)`.
pub(crate) fn check_key(key: &str, ops: &[&Op], opts: &CheckOptions) -> KeyVerdict {
    if ops.len() > opts.max_ops_per_key {
        return KeyVerdict::Unchecked(format!(
            "too large: {} ops > {} (max ops per key)",
            ops.len(),
            opts.max_ops_per_key
        ));
    }
    let deadline = Some(Instant::now() + opts.key_time_budget);
    let mem = opts.memory_budget;
    let mut items = model::build(ops, Window::default());
    items.sort_by_key(|it| (it.call, it.index));
    let segs = segments(&items);
    let mut states: States = [None].into();
    for (i, seg) in segs.iter().enumerate() {
        let unknown = (i > 0).then(|| set(&states));
        let last = i + 1 == segs.len();
        let end = seg.iter().map(|it| it.response).max().flatten();
        let mut next = States::new();
        let failed = match end {
            Some(end) if !last => {
                for x in final_candidates(seg, &states) {
                    let mut with_read = seg.to_vec();
                    with_read.push(Item {
                        index: usize::MAX,
                        call: end + 1,
                        response: Some(end + 2),
                        op: RegOp::Read(x),
                        clamped: false,
                    });
                    match model::run(&with_read, unknown.clone(), deadline, mem) {
                        Verdict::Linearizable => {
                            next.insert(x);
                        }
                        Verdict::NotLinearizable => {}
                        Verdict::GaveUp(e) => return KeyVerdict::Unchecked(reason(e, opts)),
                    }
                }
                next.is_empty()
            }
            // The last segment (an unresolved indeterminate op, with no
            // response, makes its segment the last).
            _ => match model::run(seg, unknown, deadline, mem) {
                Verdict::Linearizable => false,
                Verdict::NotLinearizable => true,
                Verdict::GaveUp(e) => return KeyVerdict::Unchecked(reason(e, opts)),
            },
        };
        if failed {
            let start = (i > 0).then(|| seg[0].call);
            let base = Base {
                start,
                states: (i > 0).then_some(states),
                end: if last { None } else { end },
            };
            return KeyVerdict::Violation(Box::new(narrow(key, ops, opts, base)));
        }
        states = next;
    }
    KeyVerdict::Linearizable
}

/// Where narrowing starts from: a window known (by the segment check) not
/// to be linearizable.
struct Base {
    /// Quiescent start; `None`: the beginning of the run.
    start: Option<u64>,
    /// Exact states possible at `start` (`None` with `start: None`: absent).
    states: Option<States>,
    /// Last response of the failing segment (`None`: the end of the run).
    end: Option<u64>,
}

fn determinate(op: &Op) -> bool {
    matches!(op.outcome, Outcome::Ok { .. } | Outcome::Mismatch { .. })
}

fn narrow(key: &str, ops: &[&Op], opts: &CheckOptions, base: Base) -> LinearizabilityViolation {
    let deadline = Some(Instant::now() + opts.key_time_budget);
    let mut minimized = true;
    let mut fails = |w: Window, unknown: Option<HashSet<Option<u64>>>| -> Option<bool> {
        let items = model::build(ops, w);
        match model::run(&items, unknown, deadline, opts.memory_budget) {
            Verdict::NotLinearizable => Some(true),
            Verdict::Linearizable => Some(false),
            Verdict::GaveUp(_) => {
                minimized = false;
                None
            }
        }
    };
    let base_unknown = base.states.as_ref().map(set);
    let base_window = Window {
        start: base.start,
        cut: base.end,
    };
    // The op-level model of the base window normally fails like the
    // segment did; if it does not, narrow from the whole history instead.
    let base = if base.start.is_none() && base.end.is_none()
        || fails(base_window, base_unknown.clone()) == Some(true)
    {
        base
    } else {
        Base {
            start: None,
            states: None,
            end: None,
        }
    };
    let base_unknown = base.states.as_ref().map(set);

    // 1. Shortest failing prefix: index cuts.len() stands for base.end,
    // known to fail.
    let mut cuts: Vec<u64> = ops
        .iter()
        .filter(|op| determinate(op))
        .map(|op| op.complete_ns)
        .filter(|&t| base.start.is_none_or(|s| t >= s) && base.end.is_none_or(|e| t < e))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let (mut lo, mut hi) = (0, cuts.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        let w = Window {
            start: base.start,
            cut: Some(cuts[mid]),
        };
        match fails(w, base_unknown.clone()) {
            Some(true) => hi = mid,
            Some(false) => lo = mid + 1,
            None => break,
        }
    }
    let cut = cuts.get(hi).copied().or(base.end);

    // 2. Latest quiescent start in (base.start, cut].
    let mut starts = Vec::new();
    let mut busy_until: Option<u64> = None;
    for (j, op) in ops.iter().enumerate() {
        if cut.is_some_and(|c| op.invoke_ns > c) {
            break;
        }
        let after_base = base.start.is_none_or(|s| op.invoke_ns > s);
        if j > 0 && after_base && busy_until.is_none_or(|b| b < op.invoke_ns) {
            starts.push(op.invoke_ns);
        }
        let in_flight_at_cut = cut.is_some_and(|c| op.complete_ns > c);
        if determinate(op) && !in_flight_at_cut {
            busy_until = busy_until.max(Some(op.complete_ns));
        }
    }
    starts.dedup();
    let unknown_at = |start: u64| -> HashSet<Option<u64>> {
        let mut values: HashSet<Option<u64>> = ops
            .iter()
            .filter(|op| op.invoke_ns < start)
            .filter(|op| matches!(op.outcome, Outcome::Ok { .. } | Outcome::Indeterminate))
            .filter_map(|op| op.kind.written_value().map(Some))
            .collect();
        values.insert(None);
        values
    };
    let mut start_fails = |i: usize| {
        let s = starts[i];
        let w = Window {
            start: Some(s),
            cut,
        };
        fails(w, Some(unknown_at(s)))
    };
    // Gallop back from the cut, then bisect; index -1 is the base, known to
    // fail, and failing is monotone (earlier starts fail too).
    let n = starts.len() as isize;
    let (mut lo, mut hi) = (-1_isize, n);
    let mut step = 1;
    while step <= n {
        let i = n - step;
        match start_fails(i as usize) {
            Some(true) => {
                lo = i;
                break;
            }
            Some(false) => hi = i,
            None => break,
        }
        step *= 2;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        match start_fails(mid as usize) {
            Some(true) => lo = mid,
            Some(false) | None => hi = mid,
        }
    }
    let (start, window_initial) = if lo >= 0 {
        (Some(starts[lo as usize]), None)
    } else {
        let initial = match (&base.start, &base.states) {
            (None, _) => Some(vec![None]),
            (Some(_), states) => states.as_ref().map(|s| s.iter().copied().collect()),
        };
        (base.start, initial)
    };

    let window = Window { start, cut };
    let mut window_ops: Vec<Op> = model::build(ops, window)
        .iter()
        .map(|it| ops[it.index].clone())
        .collect();
    window_ops.sort_by_key(|op| (op.invoke_ns, op.id));
    let failing_op_ids = match cut {
        Some(c) => window_ops
            .iter()
            .filter(|op| determinate(op) && op.complete_ns == c)
            .map(|op| op.id)
            .collect(),
        None => Vec::new(),
    };
    LinearizabilityViolation {
        key: key.to_string(),
        key_ops: ops.len(),
        window_start_ns: start,
        window_initial,
        failure_ns: cut,
        failing_op_ids,
        window: window_ops,
        minimized,
    }
}
