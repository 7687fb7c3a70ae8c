//! Rule 7, **merge**: small, cold neighbours become one region (PD's merge
//! checker, in tessera's terms).
//!
//! A region whose leader reported, with no operator on it or into it, is
//! merged into an adjacent region when all of this holds:
//! - the two regions would together be at most `merge.max_size_bytes`
//!   (by default a fifth of the split size);
//! - neither served more than `merge.max_keys_per_sec` read and written
//!   keys per second in any report for the last `merge.quiet_for` (an
//!   hour by default), and this leader has known both that long: a region
//!   born of a split is not merged back within that time;
//! - the directory's merge check passes (one range keyspace, not across a
//!   keyspace boundary, a target with voters only; see `crate::merge`);
//! - fewer than `merge.max_in_flight` merges run, and no store the
//!   alignment touches is busy.
//!
//! **Hysteresis against the split rules.** A merged region is at most a
//! fifth of the split size by default, and the configuration refuses a
//! merge size above half of it, so a merged region must grow at least
//! twofold before a size split; a split's new region waits `quiet_for`
//! before it may merge. (Load-based split, when it comes, splits only far
//! above `max_keys_per_sec`.) So no region is split and merged back and
//! forth.
//!
//! Of the two neighbours, the one needing fewer replica moves to line up
//! wins, then the smaller. The operator is the same as `tessera region
//! merge`'s (`crate::merge::plan`): align the replicas, then merge.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::time::{Duration, Instant};

use tessera_proto::metapb::Region;

use crate::scheduler::operator::OperatorKind;
use crate::scheduler::round::Round;
use crate::state::DirectoryState;

/// Settings of the merge rule.
#[derive(Clone, Debug)]
pub struct MergeConfig {
    /// The most the two regions may hold together; 0 turns the rule off.
    pub max_size_bytes: u64,
    /// Read and written keys per second above which a region is not cold.
    pub max_keys_per_sec: u64,
    /// How long both regions must have been known and cold.
    pub quiet_for: Duration,
    /// Merges (scheduled or asked for) running at once.
    pub max_in_flight: usize,
}

impl MergeConfig {
    /// The defaults for a split size: a fifth of it, 50 keys/s, one hour,
    /// 8 at once.
    pub fn for_split_size(split_size_bytes: u64) -> Self {
        MergeConfig {
            max_size_bytes: split_size_bytes / 5,
            max_keys_per_sec: 50,
            quiet_for: Duration::from_secs(3600),
            max_in_flight: 8,
        }
    }
}

/// The region ending where `region` starts, and the one starting where it
/// ends.
fn neighbours<'a>(state: &'a DirectoryState, region: &Region) -> Vec<&'a Region> {
    let mut out = vec![];
    if !region.start_key.is_empty() {
        let left = state
            .ranges
            .range::<[u8], _>((
                Bound::Unbounded,
                Bound::Excluded(region.start_key.as_slice()),
            ))
            .next_back()
            .and_then(|(_, id)| state.regions.get(id));
        out.extend(left.filter(|l| l.end_key == region.start_key));
    }
    if !region.end_key.is_empty() {
        out.extend(
            state
                .region_for_key(&region.end_key)
                .filter(|r| r.start_key == region.end_key),
        );
    }
    out
}

/// Replica moves that put `source` on `target`'s stores.
fn moves(source: &Region, target: &Region) -> usize {
    let have: BTreeSet<u64> = source.peers.iter().map(|p| p.store_id).collect();
    let want: BTreeSet<u64> = target.peers.iter().map(|p| p.store_id).collect();
    want.difference(&have).count()
}

pub(in crate::scheduler) fn plan(round: &mut Round, ready: &[&Region]) {
    let cfg = round.cfg.merge.clone();
    if cfg.max_size_bytes == 0 {
        return;
    }
    let state = round.state;
    let now = Instant::now();
    let in_flight = |round: &Round| {
        round
            .leader
            .operators
            .values()
            .filter(|o| o.kind.is_merge())
            .count()
    };
    // Size if the region reported, is cold and has been quiet long enough.
    let cold_size = |round: &Round, id: u64| {
        let s = round.leader.regions.get(&id)?;
        let quiet = now.saturating_duration_since(s.quiet_since) >= cfg.quiet_for;
        let cold = s.keys_per_sec <= cfg.max_keys_per_sec as f64;
        (s.leader.is_some() && quiet && cold).then_some(s.approximate_size_bytes)
    };
    for source in ready {
        if in_flight(round) >= cfg.max_in_flight {
            return;
        }
        if round.has_operator(source.id) {
            continue;
        }
        let Some(source_size) = cold_size(round, source.id) else {
            continue;
        };
        let best = neighbours(state, source)
            .into_iter()
            .filter(|t| !round.has_operator(t.id))
            .filter(|t| crate::merge::check(state, source, t).is_ok())
            .filter_map(|t| Some((t, cold_size(round, t.id)?)))
            .filter(|(_, size)| source_size.saturating_add(*size) <= cfg.max_size_bytes)
            .min_by_key(|(t, size)| (moves(source, t), *size, t.id));
        let Some((target, target_size)) = best else {
            continue;
        };
        let stores: BTreeSet<u64> = source
            .peers
            .iter()
            .chain(&target.peers)
            .map(|p| p.store_id)
            .collect();
        if stores.iter().any(|s| round.busy(*s) || round.is_bad(*s)) {
            continue;
        }
        let mut ids_ok = true;
        let steps = crate::merge::plan(source, target, &mut || {
            round.next_id().unwrap_or_else(|| {
                ids_ok = false;
                0
            })
        });
        if !ids_ok {
            return;
        }
        let reason = format!(
            "merge into region {}: together {} bytes (at most {}), both cold (at most {} keys/s) for {}s",
            target.id,
            source_size + target_size,
            cfg.max_size_bytes,
            cfg.max_keys_per_sec,
            cfg.quiet_for.as_secs()
        );
        round.add_operator_because(source.id, OperatorKind::Merge, steps, reason);
    }
}
