//! Tests of the history checker: hand-written linearizable and
//! non-linearizable histories, property tests over histories generated from
//! a real in-memory register, and a timing run at the scale of a soak.

use std::collections::HashMap;
use std::time::Instant;

use proptest::prelude::*;
use tessera_nemesis::check::{check, CheckOptions, Report};
use tessera_nemesis::history::{Op, OpKind, Outcome};

/// Builds histories by hand; times in ns.
#[derive(Default)]
struct H {
    ops: Vec<Op>,
}

impl H {
    fn op(&mut self, key: &str, kind: OpKind, t: (u64, u64), outcome: Outcome) -> u64 {
        let id = self.ops.len() as u64;
        self.ops.push(Op {
            id,
            client: id,
            key: key.to_string(),
            kind,
            invoke_ns: t.0,
            complete_ns: t.1,
            outcome,
        });
        id
    }
    fn w(&mut self, key: &str, value: u64, t: (u64, u64)) -> u64 {
        self.op(key, OpKind::Write { value }, t, Outcome::OK)
    }
    fn w_indet(&mut self, key: &str, value: u64, t: (u64, u64)) -> u64 {
        self.op(key, OpKind::Write { value }, t, Outcome::Indeterminate)
    }
    fn r(&mut self, key: &str, read: Option<u64>, t: (u64, u64)) -> u64 {
        self.op(key, OpKind::Read, t, Outcome::read(read))
    }
    fn cas(&mut self, key: &str, e: Option<u64>, n: u64, t: (u64, u64), o: Outcome) -> u64 {
        self.op(
            key,
            OpKind::Cas {
                expected: e,
                new: n,
            },
            t,
            o,
        )
    }
    fn check(&self) -> Report {
        check(&self.ops, &CheckOptions::default()).expect("well-formed history")
    }
}

fn assert_ok(h: &H) {
    let r = h.check();
    assert!(r.is_complete(), "expected a clean report:\n{r}");
}

/// Asserts exactly one linearizability violation, on `key`, with a window
/// of at most `max_window` ops that includes every op of `must_include`.
fn assert_violation(h: &H, key: &str, max_window: usize, must_include: &[u64]) -> Report {
    let r = h.check();
    println!("{r}");
    assert_eq!(r.linearizability.len(), 1, "{r}");
    let v = &r.linearizability[0];
    assert_eq!(v.key, key);
    assert!(v.window.len() <= max_window, "window too large:\n{r}");
    for id in must_include {
        assert!(
            v.window.iter().any(|op| op.id == *id),
            "op {id} missing from the window:\n{r}"
        );
    }
    r
}

#[test]
fn sequential_history_passes() {
    let mut h = H::default();
    h.r("k", None, (0, 1));
    h.w("k", 1, (2, 3));
    h.r("k", Some(1), (4, 5));
    h.w("k", 2, (6, 7));
    h.cas("k", Some(2), 3, (8, 9), Outcome::OK);
    h.cas(
        "k",
        Some(2),
        4,
        (10, 11),
        Outcome::Mismatch { actual: Some(3) },
    );
    h.r("k", Some(3), (12, 13));
    h.cas("j", None, 10, (0, 1), Outcome::OK);
    h.cas(
        "j",
        None,
        11,
        (2, 3),
        Outcome::Mismatch { actual: Some(10) },
    );
    h.r("j", Some(10), (4, 5));
    let r = h.check();
    assert!(r.is_complete(), "{r}");
    assert_eq!(r.keys, 2);
    assert_eq!(r.keys_checked, 2);
    assert_eq!(r.counts.total, 10);
    assert_eq!(r.counts.mismatch, 2);
    assert_eq!(r.unverified_writes, 0);
}

#[test]
fn concurrent_writes_may_linearize_in_any_order() {
    // w1 |--------------------|
    // w2   |----------------|
    // r      |--| -> 2
    // r           |--| -> 1
    let mut h = H::default();
    h.w("k", 1, (0, 100));
    h.w("k", 2, (10, 90));
    h.r("k", Some(2), (20, 30));
    h.r("k", Some(1), (40, 50));
    h.r("k", Some(1), (110, 120));
    assert_ok(&h);
}

#[test]
fn touching_ops_are_concurrent() {
    // A read invoked at the instant a write completes may or may not see it.
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    h.w("k", 2, (20, 30));
    h.r("k", Some(1), (30, 40));
    h.r("k", Some(2), (50, 60));
    assert_ok(&h);
}

#[test]
fn indeterminate_write_that_took_effect_late() {
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    h.w_indet("k", 2, (20, 30));
    // Takes effect long after the client gave up.
    h.r("k", Some(1), (40, 50));
    h.r("k", Some(2), (1000, 1010));
    h.r("k", Some(2), (1020, 1030));
    assert_ok(&h);
}

#[test]
fn indeterminate_write_that_never_took_effect() {
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    h.w_indet("k", 2, (20, 30));
    h.w_indet("k", 3, (20, 35));
    h.r("k", Some(1), (40, 50));
    h.r("k", Some(1), (1000, 1010));
    assert_ok(&h);
}

#[test]
fn indeterminate_write_is_applied_at_most_once() {
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    h.w_indet("k", 2, (20, 30));
    h.r("k", Some(2), (40, 50));
    h.w("k", 3, (60, 70));
    let bad = h.r("k", Some(2), (80, 90));
    // All four are needed: without the first read, the indeterminate write
    // could have taken effect after the write of 3.
    assert_violation(&h, "k", 4, &[bad]);
}

#[test]
fn indeterminate_cas_either_way() {
    // Comparison holds and it took effect.
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    h.cas("k", Some(1), 2, (20, 30), Outcome::Indeterminate);
    h.r("k", Some(2), (40, 50));
    assert_ok(&h);
    // Comparison holds and it did not take effect.
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    h.cas("k", Some(1), 2, (20, 30), Outcome::Indeterminate);
    h.r("k", Some(1), (40, 50));
    assert_ok(&h);
    // Comparison fails: it cannot have taken effect.
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    h.cas("k", Some(7), 2, (20, 30), Outcome::Indeterminate);
    h.r("k", Some(1), (40, 50));
    assert_ok(&h);
    // ...so its value must not appear.
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    h.cas("k", Some(7), 2, (20, 30), Outcome::Indeterminate);
    let bad = h.r("k", Some(2), (40, 50));
    assert_violation(&h, "k", 3, &[bad]);
}

#[test]
fn cas_success_and_failure() {
    let mut h = H::default();
    h.cas("k", None, 1, (0, 10), Outcome::OK);
    // Concurrent create-if-absent that lost the race.
    h.cas("k", None, 2, (5, 15), Outcome::Mismatch { actual: Some(1) });
    h.cas("k", Some(1), 3, (20, 30), Outcome::OK);
    h.cas(
        "k",
        Some(1),
        4,
        (25, 35),
        Outcome::Mismatch { actual: Some(3) },
    );
    h.r("k", Some(3), (40, 50));
    assert_ok(&h);
}

#[test]
fn cas_that_succeeded_on_a_wrong_value_is_caught() {
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    let bad = h.cas("k", None, 2, (20, 30), Outcome::OK);
    assert_violation(&h, "k", 2, &[bad]);
}

#[test]
fn cas_mismatch_reporting_the_expected_value_is_caught() {
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    let bad = h.cas(
        "k",
        Some(1),
        2,
        (20, 30),
        Outcome::Mismatch { actual: Some(1) },
    );
    assert_violation(&h, "k", 2, &[bad]);
}

#[test]
fn failed_ops_are_dropped_and_must_not_take_effect() {
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    h.op("k", OpKind::Write { value: 2 }, (20, 30), Outcome::Fail);
    h.op("k", OpKind::Read, (20, 30), Outcome::Fail);
    h.r("k", Some(1), (40, 50));
    assert_ok(&h);
    let bad = h.r("k", Some(2), (60, 70));
    let r = assert_violation(&h, "k", 2, &[bad]);
    assert_eq!(r.phantom_reads.len(), 1);
}

#[test]
fn stale_read_after_completed_write_is_caught() {
    let mut h = H::default();
    h.w("a", 100, (0, 10));
    h.r("a", Some(100), (20, 30));
    let w1 = h.w("b", 1, (0, 10));
    let w2 = h.w("b", 2, (20, 30));
    let stale = h.r("b", Some(1), (40, 50));
    h.r("b", Some(2), (60, 70));
    let r = assert_violation(&h, "b", 3, &[w2, stale]);
    let v = &r.linearizability[0];
    assert_eq!(v.failing_op_ids, vec![stale]);
    assert!(v.window.iter().any(|op| op.id == w1) || v.window_start_ns.is_some());
    // The lost-write check flags it too: a read saw the value w2 replaced.
    assert_eq!(r.lost_writes.len(), 1);
    assert_eq!(r.lost_writes[0].write.id, w2);
    assert_eq!(r.lost_writes[0].seen_by.id, stale);
    // ...but not lost for good: the last read sees it.
    assert!(!r.lost_writes[0].lost_at_end);
}

#[test]
fn read_of_a_value_never_written_is_caught() {
    let mut h = H::default();
    for i in 0..50 {
        h.w("k", i + 1, (i * 100, i * 100 + 10));
        h.r("k", Some(i + 1), (i * 100 + 20, i * 100 + 30));
    }
    let bad = h.r("k", Some(999), (6000, 6010));
    h.r("k", Some(50), (7000, 7010));
    let r = assert_violation(&h, "k", 1, &[bad]);
    assert!(r.linearizability[0].window_start_ns.is_some());
    assert!(r.to_string().contains("999"));
    // A phantom read, not a loss of every earlier write.
    assert_eq!(r.phantom_reads.len(), 1);
    assert_eq!(r.phantom_reads[0].id, bad);
    assert!(r.lost_writes.is_empty(), "{r}");
}

#[test]
fn reads_seeing_writes_in_opposite_orders_are_caught() {
    let mut h = H::default();
    h.w("k", 1, (0, 1000));
    h.w("k", 2, (0, 1000));
    h.r("k", Some(1), (10, 20)); // client A: 1 then 2
    h.r("k", Some(2), (10, 20)); // client B: 2 then 1
    h.r("k", Some(2), (30, 40));
    let bad = h.r("k", Some(1), (30, 40));
    // Every op is needed to show the contradiction.
    assert_violation(&h, "k", 6, &[bad]);
}

#[test]
fn lost_acknowledged_write_is_caught() {
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    let lost = h.w("k", 2, (20, 30));
    for i in 0..20 {
        h.w("other", i + 10, (i * 10, i * 10 + 5));
    }
    // The final read, after healing, sees the older value.
    let fin = h.r("k", Some(1), (1000, 1010));
    let r = assert_violation(&h, "k", 3, &[lost, fin]);
    assert_eq!(r.lost_writes.len(), 1);
    let l = &r.lost_writes[0];
    assert_eq!((l.key.as_str(), l.write.id, l.seen_by.id), ("k", lost, fin));
    assert!(l.lost_at_end);
    let msg = l.to_string();
    assert!(
        msg.contains("write of 2") && msg.contains("final read returned 1"),
        "{msg}"
    );

    // Lost to "absent".
    let mut h = H::default();
    let lost = h.w("k", 1, (0, 10));
    h.r("k", None, (1000, 1010));
    let r = h.check();
    assert_eq!(r.lost_writes.len(), 1, "{r}");
    assert_eq!(r.lost_writes[0].write.id, lost);
}

#[test]
fn overlapping_writes_are_not_lost() {
    // Neither write supersedes the other in real time; the final read may
    // see either.
    let mut h = H::default();
    h.w("k", 1, (0, 100));
    h.w("k", 2, (50, 150));
    h.r("k", Some(1), (200, 210));
    let r = h.check();
    assert!(r.is_complete(), "{r}");
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    h.r("k", Some(1), (20, 30));
    h.w("k", 2, (40, 50));
    assert_eq!(h.check().unverified_writes, 1);
}

#[test]
fn small_window_in_a_long_history() {
    let mut h = H::default();
    let mut t = 0;
    for i in 0..2000 {
        h.w("k", i + 1, (t, t + 10));
        h.r("k", Some(i + 1), (t + 5, t + 20));
        t += 25;
    }
    let stale = h.r("k", Some(1990), (t + 100, t + 110));
    for i in 0..100 {
        h.r("k", Some(2000), (t + 200 + i * 10, t + 205 + i * 10));
    }
    let r = assert_violation(&h, "k", 4, &[stale]);
    assert!(r.linearizability[0].minimized);
}

#[test]
fn too_large_keys_are_reported_unchecked() {
    let mut h = H::default();
    for i in 0..10 {
        h.w("k", i + 1, (i * 10, i * 10 + 5));
    }
    h.r("k", Some(1), (1000, 1010));
    let opts = CheckOptions {
        max_ops_per_key: 5,
        ..CheckOptions::default()
    };
    let r = check(&h.ops, &opts).unwrap();
    println!("{r}");
    assert_eq!(r.unchecked.len(), 1);
    assert_eq!(r.keys_checked, 0);
    assert!(r.linearizability.is_empty());
    // The lost-write check still runs.
    assert_eq!(r.lost_writes.len(), 9);
    assert!(!r.is_ok());
}

#[test]
fn empty_history_is_fine() {
    let r = check(&[], &CheckOptions::default()).unwrap();
    assert!(r.is_complete());
    assert_eq!((r.keys, r.counts.total), (0, 0));
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
}

#[test]
fn malformed_histories_are_rejected() {
    let mut h = H::default();
    h.w("k", 1, (0, 10));
    h.w("k", 1, (20, 30));
    assert!(check(&h.ops, &CheckOptions::default()).is_err());
    let mut h = H::default();
    h.w("k", 1, (10, 0));
    assert!(check(&h.ops, &CheckOptions::default()).is_err());
}

/// splitmix64, for the generated histories.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A linearizable history: `clients` clients each run ops back to back on
/// `keys` keys; every op takes effect atomically at a random point of its
/// interval on a real register (or never, for failed ops and some
/// indeterminate ones). `faulty` in 0..=100: percent of non-ok outcomes.
fn generate(seed: u64, n: usize, keys: usize, clients: usize, faulty: u64) -> Vec<Op> {
    let mut rng = Rng(seed);
    struct Planned {
        op: Op,
        lin: u64,
        fate: u64,
    }
    let mut planned = Vec::with_capacity(n);
    let mut free_at = vec![0_u64; clients];
    let mut client_id: Vec<u64> = (0..clients as u64).collect();
    let mut next_client = clients as u64;
    for id in 0..n as u64 {
        let c = (0..clients).min_by_key(|&c| free_at[c]).unwrap();
        let invoke = free_at[c] + rng.below(50);
        let duration = 1 + rng.below(2000);
        let lin = invoke + rng.below(duration);
        let complete = invoke + duration;
        free_at[c] = complete;
        let key = format!("key{}", rng.below(keys as u64));
        let kind = match rng.below(10) {
            0..=3 => OpKind::Read,
            4..=7 => OpKind::Write { value: id + 1 },
            _ => OpKind::Cas {
                expected: None, // filled in below
                new: id + 1,
            },
        };
        // fate: 0 ok, 1 fail, 2 indeterminate and applied, 3 indeterminate
        // and not applied.
        let fate = if rng.below(100) < faulty {
            1 + rng.below(3)
        } else {
            0
        };
        if fate >= 2 {
            // After an indeterminate outcome the client continues as a new one.
            client_id[c] = next_client;
            next_client += 1;
        }
        planned.push(Planned {
            op: Op {
                id,
                client: client_id[c],
                key,
                kind,
                invoke_ns: invoke,
                complete_ns: complete,
                outcome: Outcome::OK,
            },
            lin,
            fate,
        });
    }
    planned.sort_by_key(|p| (p.lin, p.op.id));
    let mut reg: HashMap<String, Option<u64>> = HashMap::new();
    let mut written: HashMap<String, Vec<u64>> = HashMap::new();
    for p in &mut planned {
        let cur = reg.get(&p.op.key).copied().flatten();
        let op = &mut p.op;
        let applies = p.fate == 0 || p.fate == 2;
        op.outcome = match p.fate {
            0 => Outcome::OK,
            1 => Outcome::Fail,
            _ => Outcome::Indeterminate,
        };
        match &mut op.kind {
            OpKind::Read | OpKind::StaleRead { .. } => {
                if p.fate == 0 {
                    op.outcome = Outcome::read(cur);
                }
            }
            OpKind::Write { value } => {
                if applies {
                    reg.insert(op.key.clone(), Some(*value));
                    written.entry(op.key.clone()).or_default().push(*value);
                }
            }
            OpKind::Cas { expected, new } => {
                // Mostly the current value, sometimes an old or absent one.
                let old = written
                    .get(&op.key)
                    .map(|w| w[rng.below(w.len() as u64) as usize]);
                *expected = match rng.below(3) {
                    0 => old,
                    _ => cur,
                };
                if *expected == cur {
                    if applies {
                        reg.insert(op.key.clone(), Some(*new));
                        written.entry(op.key.clone()).or_default().push(*new);
                    }
                } else if p.fate == 0 {
                    op.outcome = Outcome::Mismatch { actual: cur };
                }
            }
        }
    }
    let mut ops: Vec<Op> = planned.into_iter().map(|p| p.op).collect();
    ops.sort_by_key(|op| op.id);
    ops
}

/// Makes an ok read of `ops[i]` stale if possible: it returns a value that
/// an acknowledged write completed before the read began had replaced.
/// Returns whether it did.
fn make_stale(ops: &mut [Op], i: usize) -> bool {
    let r = ops[i].clone();
    if r.kind != OpKind::Read || !matches!(r.outcome, Outcome::Ok { .. }) {
        return false;
    }
    let same_key = |op: &&Op| op.key == r.key;
    // The latest-invoked acknowledged write that completed before r began.
    let Some(w) = ops
        .iter()
        .filter(same_key)
        .filter(|op| op.is_acknowledged_write() && op.complete_ns < r.invoke_ns)
        .max_by_key(|op| op.invoke_ns)
    else {
        return false;
    };
    // A value written (and acknowledged) before w began, else absent.
    let stale = ops
        .iter()
        .filter(same_key)
        .filter(|op| op.is_acknowledged_write() && op.complete_ns < w.invoke_ns)
        .max_by_key(|op| op.complete_ns)
        .and_then(|op| op.kind.written_value());
    ops[i].outcome = Outcome::read(stale);
    true
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=5000 for a longer run.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn generated_histories_are_linearizable(
        seed in any::<u64>(),
        n in 1_usize..300,
        keys in 1_usize..4,
        clients in 1_usize..8,
        faulty in 0_u64..40,
    ) {
        let ops = generate(seed, n, keys, clients, faulty);
        let r = check(&ops, &CheckOptions::default()).unwrap();
        prop_assert!(r.is_complete(), "{}", r);
    }

    #[test]
    fn injected_stale_read_is_caught(
        seed in any::<u64>(),
        n in 10_usize..300,
        keys in 1_usize..4,
        clients in 1_usize..8,
        faulty in 0_u64..30,
        pick in any::<prop::sample::Index>(),
    ) {
        let mut ops = generate(seed, n, keys, clients, faulty);
        // The first op from the picked one on that can be made stale.
        let (start, len) = (pick.index(ops.len()), ops.len());
        let Some(i) = (0..len)
            .map(|k| (start + k) % len)
            .find(|&i| make_stale(&mut ops, i))
        else {
            return Ok(());
        };
        let r = check(&ops, &CheckOptions::default()).unwrap();
        prop_assert!(!r.is_ok());
        prop_assert_eq!(r.linearizability.len(), 1, "{}", r);
        let v = &r.linearizability[0];
        prop_assert_eq!(&v.key, &ops[i].key);
        prop_assert!(v.window.iter().any(|op| op.id == ops[i].id), "{}", r);
        prop_assert!(v.failing_op_ids.contains(&ops[i].id), "{}", r);
        // The lost-write check sees it as well.
        prop_assert!(r.lost_writes.iter().any(|l| l.seen_by.id == ops[i].id), "{}", r);
    }
}

#[test]
fn soak_sized_history_checks_quickly() {
    // The last case is one hot key that 10 clients keep busy without a
    // pause, so it cannot be cut into segments: WGL's cost there grows
    // about quadratically (memory too), ~1 s for 2,000 ops.
    for (n, keys, clients, faulty) in [
        (20_000, 50, 10, 0),
        (20_000, 50, 10, 10),
        (200_000, 50, 10, 10),
        (2_000, 1, 10, 10),
    ] {
        let ops = generate(7, n, keys, clients, faulty);
        let t = Instant::now();
        let r = check(&ops, &CheckOptions::default()).unwrap();
        println!(
            "{n} ops, {keys} keys, {clients} clients, {faulty}% faulty: checked in {:?}",
            t.elapsed()
        );
        println!("{r}");
        assert!(r.is_complete(), "{r}");
    }
}

/// Stale reads are not linearizable: a stale read of an old value does not
/// make the key non-linearizable, is not a lost write, and is judged by
/// its bound alone (with the checker's slack).
#[test]
fn stale_reads_are_judged_by_their_bound_not_by_linearizability() {
    const MS: u64 = 1_000_000;
    let stale = |max_age_ms| OpKind::StaleRead { max_age_ms };
    let mut h = H::default();
    h.w("k", 1, (0, 10 * MS));
    h.w("k", 2, (20 * MS, 30 * MS));
    // Misses 2, acknowledged 70 ms before it was sent: within 100 ms.
    h.op(
        "k",
        stale(100),
        (100 * MS, 101 * MS),
        Outcome::read(Some(1)),
    );
    h.r("k", Some(2), (200 * MS, 201 * MS));
    let r = h.check();
    assert!(r.is_complete(), "{r}");
    assert_eq!((r.counts.reads, r.counts.stale_reads), (2, 1));
    assert!(
        r.to_string().contains("stale reads within their bounds"),
        "{r}"
    );

    // The same read with a 20 ms bound is past it.
    h.op("k", stale(20), (100 * MS, 101 * MS), Outcome::read(Some(1)));
    let r = h.check();
    assert!(!r.is_ok(), "{r}");
    assert_eq!(r.stale_reads.len(), 1, "{r}");
    assert!(
        r.linearizability.is_empty() && r.lost_writes.is_empty(),
        "{r}"
    );
    assert!(
        r.to_string().contains("stale reads beyond their bound: 1"),
        "{r}"
    );
    assert_eq!(r.bad_keys(), vec!["k"]);
    // A slack of 60 ms (clock drift across hosts) covers it.
    let slack = CheckOptions {
        stale_slack: std::time::Duration::from_millis(60),
        ..CheckOptions::default()
    };
    assert!(check(&h.ops, &slack).unwrap().is_ok());
}
