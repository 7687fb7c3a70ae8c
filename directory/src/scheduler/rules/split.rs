//! Rule 6, **split**, by size and by load.
//!
//! **By size**: a region whose leader reports more than 1.5 × the split
//! size is split at its middle (the leader picks the key). The stores' own
//! split checker usually gets there first; this rule catches a region whose
//! leader's checker has not.
//!
//! **By load** (TiKV's load-base-split, in tessera's terms): a region of a
//! range keyspace whose every report for `load_split.hot_for` said it
//! served more than `load_split.keys_per_sec` read and written keys per
//! second is split at the key its leader's samples divide at (the store's
//! `load` module: a key with at least a quarter of the sampled requests on
//! each side, so one hot key is never "split"). The halves then go where
//! the hot-leader rule and the balancers send them. Regions of a hash
//! keyspace are not split by load: their boundaries are the keyspace's hash
//! ranges and hashing already spreads their keys; a hot one's leadership
//! moves instead (hot-leader).
//!
//! **Hysteresis against merges**: `keys_per_sec` must be at least four
//! times the merge rule's `max_keys_per_sec` (the configuration refuses
//! less), so each half of a load split still serves twice what a merge
//! allows, and a split's new region waits the merge rule's `quiet_for`
//! anyway. A region whose load split was refused (no key, a key outside
//! it) is looked at again at the next report.

use std::time::Duration;

use tessera_proto::keys;
use tessera_proto::metapb::Region;

use crate::scheduler::operator::{OperatorKind, Step};
use crate::scheduler::round::Round;

/// Settings of the load-based split.
#[derive(Clone, Debug)]
pub struct LoadSplitConfig {
    /// Read and written keys per second above which a region is hot; 0
    /// turns load-based split off.
    pub keys_per_sec: u64,
    /// How long a region must stay hot before it is split.
    pub hot_for: Duration,
}

impl Default for LoadSplitConfig {
    fn default() -> Self {
        LoadSplitConfig {
            keys_per_sec: 3000,
            hot_for: Duration::from_secs(10),
        }
    }
}

impl LoadSplitConfig {
    /// Whether a region serving `keys_per_sec` counts as hot.
    pub fn is_hot(&self, keys_per_sec: f64) -> bool {
        self.keys_per_sec > 0 && keys_per_sec > self.keys_per_sec as f64
    }
}

pub(in crate::scheduler) fn plan_region(round: &mut Round, region: &Region) {
    let Some(stats) = round.leader.regions.get(&region.id) else {
        return;
    };
    let from_version = region.region_epoch.unwrap_or_default().version;
    if stats.approximate_size_bytes * 2 > round.cfg.region_split_size_bytes * 3 {
        round.add_operator(
            region.id,
            OperatorKind::SizeSplit,
            vec![Step::Split {
                keys: vec![],
                from_version,
            }],
        );
        return;
    }
    let cfg = &round.cfg.load_split;
    let hot_long_enough = cfg.keys_per_sec > 0
        && stats
            .hot_since
            .is_some_and(|since| since.elapsed() >= cfg.hot_for);
    let key = &stats.load_split_key;
    if !hot_long_enough
        || round.has_operator(region.id)
        || !strictly_inside(region, key)
        || keys::is_hash_keyspace(crate::merge::keyspace_of(region))
    {
        return;
    }
    let reason = format!(
        "served {:.0} keys/s (above {}) for {:?}; split where its load divides",
        stats.keys_per_sec, round.cfg.load_split.keys_per_sec, round.cfg.load_split.hot_for
    );
    let keys = vec![key.clone()];
    round.add_operator_because(
        region.id,
        OperatorKind::LoadSplit,
        vec![Step::Split { keys, from_version }],
        reason,
    );
    // The halves must be hot for `hot_for` again before they split.
    if let Some(stats) = round.leader.regions.get_mut(&region.id) {
        stats.hot_since = None;
    }
}

/// Whether splitting `region` at `key` leaves two non-empty halves.
fn strictly_inside(region: &Region, key: &[u8]) -> bool {
    !key.is_empty()
        && key > region.start_key.as_slice()
        && (region.end_key.is_empty() || key < region.end_key.as_slice())
}
