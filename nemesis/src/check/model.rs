//! The register model fed to todc-utils' `WGLChecker`, and the translation
//! of one key's ops (optionally cut to a time window) into a WGL history.
//!
//! # Modelling
//!
//! Each op becomes one call/response pair, under its own WGL process id
//! (so `History::from_actions`' per-process FIFO pairing can never mis-pair
//! overlapping ops of one client). Events are ordered by time, calls before
//! responses at equal times (ops that merely touch are treated as
//! concurrent: this can only hide a violation, never invent one).
//!
//! | recorded op                     | model                                   |
//! |---------------------------------|-----------------------------------------|
//! | read, `Ok { read: v }`          | `Read(v)`: valid iff state == v         |
//! | write v, `Ok`                   | `Write(v)`                              |
//! | CAS e→n, `Ok`                   | `Cas`: valid iff state == e; state := n |
//! | CAS e→n, `Mismatch { actual }`  | `Mismatch`: valid iff state == actual != e; no change |
//! | anything, `Fail`                | dropped (definitely no effect)          |
//! | read, `Indeterminate`           | dropped (observes nothing)              |
//! | write v, `Indeterminate`        | `Write(v)`, response after every event  |
//! | CAS e→n, `Indeterminate`        | `MaybeCas`: always valid; state := n if state == e |
//!
//! An indeterminate op whose response comes after every other event can be
//! linearized anywhere after its invocation, including after everything,
//! where nobody can observe it ("never happened"). `MaybeCas` is exact for
//! a CAS of unknown outcome: if it executed, its comparison decided; if it
//! did not, it is the same as executing last.
//!
//! Two exact refinements keep WGL from exploring 2^k orders of k pending
//! indeterminate ops (values are unique per key, see `history`):
//! - an indeterminate write or CAS whose value no op observes (no `Ok` read
//!   returns it, no `Ok` CAS expects it, no `Mismatch` reports it) is
//!   dropped: given any linearization without it, put it last; given one
//!   with it, remove it (no one can tell, since no one saw its value and
//!   nothing in the model asserts only `state != x`);
//! - one whose value *is* observed certainly took effect, before each
//!   observer's linearization point, so before the earliest observer's
//!   response: its response is moved there, and a `MaybeCas` becomes a
//!   successful `Cas` (its comparison must have held).
//!
//! # Windows
//!
//! A [`Window`] cuts the key's history to `[start, cut]` for minimisation:
//! - `cut`: ops invoked after it are dropped; ops pending at it (completing
//!   later, or indeterminate) become indeterminate (reads and mismatched
//!   CASes, which have no effect, are dropped). This is the usual prefix of
//!   a history, and linearizability is prefix-closed, so "prefix at `cut`
//!   fails" is monotone in `cut`.
//! - `start`: must be *quiescent*: every determinate op invoked before it
//!   completed before it. Those ops are dropped and the initial state is
//!   `Unknown`, restricted to a set of values given to [`run`]: the exact
//!   set the segment check computed for `start`, or the over-approximation
//!   "absent, or any value written by an op invoked before `start`". Indeterminate ops invoked before `start` are kept as if
//!   invoked at `start` (taking effect before `start` is absorbed by the
//!   unknown state); one of those observed in the window becomes a plain
//!   write of its value (its comparison, if a CAS, may have been checked
//!   before the window). Every abstraction made from `Unknown` over-approximates
//!   the concrete states, so a window that fails proves a violation of the
//!   full history, and a failing window implies every earlier quiescent
//!   start fails too (monotone in `start`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use todc_utils::linearizability::history::{Action, History};
use todc_utils::{Specification, WGLChecker};

use crate::history::{Op, OpKind, Outcome};

/// The abstract state of one key's register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RegState {
    /// Exactly this value (`None`: absent).
    Known(Option<u64>),
    /// One of the window's possible initial values (see [`Window`]), or the
    /// result of a `MaybeCas` from such a state.
    Unknown,
}

/// A register operation as the WGL checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegOp {
    Read(Option<u64>),
    Write(u64),
    Cas {
        expected: Option<u64>,
        new: u64,
    },
    Mismatch {
        expected: Option<u64>,
        actual: Option<u64>,
    },
    MaybeCas {
        expected: Option<u64>,
        new: u64,
    },
}

thread_local! {
    static BUDGET: Cell<Budget> = const { Cell::new(Budget::UNLIMITED) };
    static EXCEEDED: Cell<Option<Exceeded>> = const { Cell::new(None) };
    /// Values the `Unknown` initial state may hold.
    static UNKNOWN_VALUES: RefCell<HashSet<Option<u64>>> = RefCell::new(HashSet::new());
}

/// Why a check gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Time,
    Memory,
}

/// Limits of one WGL run, enforced from inside `apply` (the only hook the
/// checker offers).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub deadline: Option<Instant>,
    /// Valid applies left: each may add one entry to WGL's cache, whose
    /// entries hold a bit vector as long as the history.
    pub cache_entries: u64,
}

impl Budget {
    const UNLIMITED: Budget = Budget {
        deadline: None,
        cache_entries: u64::MAX,
    };
}

fn over_budget() -> bool {
    let b = BUDGET.with(Cell::get);
    if b.cache_entries == 0 {
        EXCEEDED.with(|e| e.set(Some(Exceeded::Memory)));
        return true;
    }
    if let Some(d) = b.deadline {
        if Instant::now() >= d {
            EXCEEDED.with(|e| e.set(Some(Exceeded::Time)));
            return true;
        }
    }
    false
}

fn spend_cache_entry() {
    BUDGET.with(|b| {
        let mut v = b.get();
        v.cache_entries = v.cache_entries.saturating_sub(1);
        b.set(v);
    });
}

/// Unwinds out of the checker at once when the budget is spent (with
/// `resume_unwind`, which skips the panic hook); without unwinding, every
/// apply fails from then on and the search backtracks to a `false`.
struct OutOfBudget;

fn give_up() {
    #[cfg(panic = "unwind")]
    std::panic::resume_unwind(Box::new(OutOfBudget));
}

fn apply(op: &RegOp, state: &RegState) -> (bool, RegState) {
    if EXCEEDED.with(Cell::get).is_some() || over_budget() {
        give_up();
        return (false, *state);
    }
    let unknown_may_be = |v: Option<u64>| UNKNOWN_VALUES.with(|u| u.borrow().contains(&v));
    let (ok, next) = match (*op, *state) {
        (RegOp::Read(v), RegState::Known(x)) => (v == x, *state),
        (RegOp::Read(v), RegState::Unknown) => (unknown_may_be(v), RegState::Known(v)),
        (RegOp::Write(v), _) => (true, RegState::Known(Some(v))),
        (RegOp::Cas { expected, new }, RegState::Known(x)) => {
            (x == expected, RegState::Known(Some(new)))
        }
        (RegOp::Cas { expected, new }, RegState::Unknown) => {
            (unknown_may_be(expected), RegState::Known(Some(new)))
        }
        (RegOp::Mismatch { expected, actual }, RegState::Known(x)) => {
            (x == actual && actual != expected, *state)
        }
        (RegOp::Mismatch { expected, actual }, RegState::Unknown) => (
            actual != expected && unknown_may_be(actual),
            RegState::Known(actual),
        ),
        (RegOp::MaybeCas { expected, new }, RegState::Known(x)) => (
            true,
            if x == expected {
                RegState::Known(Some(new))
            } else {
                *state
            },
        ),
        // Over-approximation: `Unknown` after this may also be `new`, which
        // `prepare` adds to the unknown values.
        (RegOp::MaybeCas { .. }, RegState::Unknown) => (true, RegState::Unknown),
    };
    if ok {
        spend_cache_entry();
        (true, next)
    } else {
        (false, *state)
    }
}

/// The register with its exact initial state (absent).
pub(crate) struct FromEmpty;
/// The register starting in [`RegState::Unknown`].
pub(crate) struct FromUnknown;

impl Specification for FromEmpty {
    type State = RegState;
    type Operation = RegOp;
    fn init() -> RegState {
        RegState::Known(None)
    }
    fn apply(op: &RegOp, state: &RegState) -> (bool, RegState) {
        apply(op, state)
    }
}

impl Specification for FromUnknown {
    type State = RegState;
    type Operation = RegOp;
    fn init() -> RegState {
        RegState::Unknown
    }
    fn apply(op: &RegOp, state: &RegState) -> (bool, RegState) {
        apply(op, state)
    }
}

/// A cut of one key's history; see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Window {
    /// A quiescent time; `None`: from the beginning, key absent.
    pub start: Option<u64>,
    /// `None`: to the end.
    pub cut: Option<u64>,
}

/// One op of the model: index into the key's ops, call time, response
/// time (`None`: after everything).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Item {
    pub index: usize,
    pub call: u64,
    pub response: Option<u64>,
    pub op: RegOp,
    /// Invoked before the window's start (call clamped to it).
    pub clamped: bool,
}

/// The model of `ops` (one key's ops) restricted to `window`.
pub(crate) fn build(ops: &[&Op], window: Window) -> Vec<Item> {
    let mut items = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        if window.cut.is_some_and(|cut| op.invoke_ns > cut) {
            continue;
        }
        let mut outcome = op.outcome;
        if outcome != Outcome::Fail && window.cut.is_some_and(|cut| op.complete_ns > cut) {
            outcome = Outcome::Indeterminate;
        }
        let determinate = outcome != Outcome::Indeterminate;
        let mut call = op.invoke_ns;
        let mut clamped = false;
        if let Some(start) = window.start {
            if determinate && op.complete_ns < start {
                continue;
            }
            clamped = call < start;
            call = call.max(start);
        }
        let response = determinate.then_some(op.complete_ns);
        let op = match (op.kind, outcome) {
            (_, Outcome::Fail) => continue,
            (OpKind::Read, Outcome::Ok { read }) => RegOp::Read(read),
            (OpKind::Read, _) => continue,
            // Checked for bounded staleness instead (`check::stale`).
            (OpKind::StaleRead { .. }, _) => continue,
            (OpKind::Write { value }, Outcome::Ok { .. } | Outcome::Indeterminate) => {
                RegOp::Write(value)
            }
            (OpKind::Write { .. }, Outcome::Mismatch { .. }) => continue,
            (OpKind::Cas { expected, new }, Outcome::Ok { .. }) => RegOp::Cas { expected, new },
            (OpKind::Cas { expected, .. }, Outcome::Mismatch { actual }) => {
                RegOp::Mismatch { expected, actual }
            }
            // Also a CAS pending at the cut, whatever its recorded outcome.
            (OpKind::Cas { expected, new }, Outcome::Indeterminate) => {
                RegOp::MaybeCas { expected, new }
            }
        };
        items.push(Item {
            index,
            call,
            response,
            op,
            clamped,
        });
    }
    resolve_indeterminate(items)
}

fn written(op: &RegOp) -> Option<u64> {
    match *op {
        RegOp::Write(v) | RegOp::Cas { new: v, .. } | RegOp::MaybeCas { new: v, .. } => Some(v),
        RegOp::Read(_) | RegOp::Mismatch { .. } => None,
    }
}

/// The refinements of the module docs: drop unobserved indeterminate ops,
/// pin observed ones before their first observer.
fn resolve_indeterminate(mut items: Vec<Item>) -> Vec<Item> {
    if items.iter().all(|it| it.response.is_some()) {
        return items;
    }
    // (value observed) -> observers' item positions.
    let mut took_effect: Vec<bool> = items.iter().map(|it| it.response.is_some()).collect();
    let writer_of: HashMap<u64, usize> = items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| written(&it.op).map(|v| (v, i)))
        .collect();
    // Edges writer <- observer, by observed value; a `MaybeCas` observes its
    // expected value only if it took effect.
    let observed = |it: &Item, effective: bool| -> Option<u64> {
        match it.op {
            RegOp::Read(v) => v,
            RegOp::Cas { expected, .. } => expected,
            RegOp::Mismatch { actual, .. } => actual,
            RegOp::MaybeCas { expected, .. } if effective => expected,
            _ => None,
        }
    };
    // Fixpoint: which indeterminate ops certainly took effect.
    loop {
        let mut changed = false;
        for i in 0..items.len() {
            if let Some(w) = observed(&items[i], took_effect[i]).and_then(|v| writer_of.get(&v)) {
                if !took_effect[*w] {
                    took_effect[*w] = true;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    // Relax responses: a writer responds no later than each observer.
    let mut response: Vec<Option<u64>> = items.iter().map(|it| it.response).collect();
    for _ in 0..items.len() {
        let mut changed = false;
        for i in 0..items.len() {
            let Some(r) = response[i] else { continue };
            if let Some(&w) = observed(&items[i], took_effect[i]).and_then(|v| writer_of.get(&v)) {
                if items[w].response.is_none() && response[w].is_none_or(|x| r < x) {
                    response[w] = Some(r);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut keep = Vec::with_capacity(items.len());
    for (i, mut it) in items.drain(..).enumerate() {
        if it.response.is_none() {
            if !took_effect[i] {
                continue;
            }
            it.response = response[i].map(|r| r.max(it.call));
            if let RegOp::MaybeCas { expected, new } = it.op {
                // It took effect, so its comparison held. If it was invoked
                // before the window, it may have taken effect before it,
                // where its comparison was already checked: then only its
                // write matters (linearized first, it is equivalent to the
                // window starting in its value).
                it.op = if it.clamped {
                    RegOp::Write(new)
                } else {
                    RegOp::Cas { expected, new }
                };
            }
        }
        keep.push(it);
    }
    keep
}

/// Result of one WGL run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Linearizable,
    NotLinearizable,
    GaveUp(Exceeded),
}

/// Runs WGL over `items`. `unknown`: the values the initial state may hold
/// (`None`: the exact initial state, absent).
pub(crate) fn run(
    items: &[Item],
    unknown: Option<HashSet<Option<u64>>>,
    deadline: Option<Instant>,
    memory_bytes: u64,
) -> Verdict {
    if items.is_empty() {
        return Verdict::Linearizable;
    }
    // (time, 0 = call / 1 = response, position)
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(items.len() * 2);
    for (p, it) in items.iter().enumerate() {
        events.push((it.call, 0, p));
        events.push((it.response.unwrap_or(u64::MAX), 1, p));
    }
    events.sort_unstable();
    let actions: Vec<(usize, Action<RegOp>)> = events
        .iter()
        .map(|&(_, kind, p)| {
            let op = items[p].op;
            (
                p,
                if kind == 0 {
                    Action::Call(op)
                } else {
                    Action::Response(op)
                },
            )
        })
        .collect();
    let per_entry = actions.len() as u64 + 64;
    let budget = Budget {
        deadline,
        cache_entries: (memory_bytes / per_entry).max(1),
    };
    let with_unknown = unknown.is_some();
    if let Some(values) = unknown {
        let mut values = values;
        // See `apply`: `Unknown` after a `MaybeCas` may hold its new value.
        for it in items {
            if let RegOp::MaybeCas { new, .. } = it.op {
                values.insert(Some(new));
            }
        }
        UNKNOWN_VALUES.with(|u| *u.borrow_mut() = values);
    }
    BUDGET.with(|b| b.set(budget));
    EXCEEDED.with(|e| e.set(None));
    let history = History::from_actions(actions);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if with_unknown {
            WGLChecker::<FromUnknown>::is_linearizable(history)
        } else {
            WGLChecker::<FromEmpty>::is_linearizable(history)
        }
    }));
    BUDGET.with(|b| b.set(Budget::UNLIMITED));
    UNKNOWN_VALUES.with(|u| u.borrow_mut().clear());
    let exceeded = EXCEEDED.with(|e| e.replace(None));
    if let Some(e) = exceeded {
        return Verdict::GaveUp(e);
    }
    match result {
        Ok(true) => Verdict::Linearizable,
        Ok(false) => Verdict::NotLinearizable,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, kind: OpKind, invoke_ns: u64, complete_ns: u64, outcome: Outcome) -> Op {
        Op {
            id,
            client: id,
            key: "k".into(),
            kind,
            invoke_ns,
            complete_ns,
            outcome,
        }
    }

    #[test]
    fn unobserved_indeterminate_ops_are_dropped_observed_ones_pinned() {
        let ops = [
            op(0, OpKind::Write { value: 1 }, 0, 5, Outcome::Indeterminate),
            op(1, OpKind::Write { value: 2 }, 0, 5, Outcome::Indeterminate),
            op(2, OpKind::Read, 10, 20, Outcome::read(Some(2))),
            op(
                3,
                OpKind::Cas {
                    expected: Some(2),
                    new: 3,
                },
                30,
                31,
                Outcome::Indeterminate,
            ),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        let items = build(&refs, Window::default());
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].index, 1);
        assert_eq!(items[0].response, Some(20));
        assert_eq!(items[1].index, 2);
    }

    #[test]
    fn maybe_cas_is_exact() {
        let s = RegState::Known(Some(1));
        let op = RegOp::MaybeCas {
            expected: Some(1),
            new: 2,
        };
        assert_eq!(apply(&op, &s), (true, RegState::Known(Some(2))));
        let op = RegOp::MaybeCas {
            expected: Some(5),
            new: 2,
        };
        assert_eq!(apply(&op, &s), (true, s));
    }
}
