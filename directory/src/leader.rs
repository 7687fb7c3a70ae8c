//! What only the directory leader keeps, in memory: the last heartbeat of
//! every store and region (leaders, sizes, progress), the id batch it hands
//! out, and the operators in flight. A new leader starts empty and fills it
//! from the next heartbeats; nothing here needs to survive a leader change.
//!
//! Store lifecycle: `Up` while heartbeats arrive; `Disconnected` after
//! `disconnect_after` without one; `Down` after `down_after`. These three
//! are derived here from heartbeat times. `Offline` (decommissioning) and
//! `Tombstone` (gone for good) are decisions, recorded through Raft.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use tessera_common::clock;
use tessera_proto::directorypb::{PeerProgress, StoreStats};
use tessera_proto::metapb::{Peer, Store, StoreState};

use crate::scheduler::operator::Operator;
use crate::state::DirectoryState;

/// The last heartbeat of a region, from its leader.
#[derive(Clone, Debug)]
pub struct RegionStats {
    pub leader: Option<Peer>,
    pub term: u64,
    pub approximate_size_bytes: u64,
    pub down_peers: Vec<Peer>,
    pub progress: Vec<PeerProgress>,
    pub seen: Instant,
    /// Keys read and written per second over the last reported interval.
    pub keys_per_sec: f64,
    /// Bytes read and written per second over the last reported interval.
    pub bytes_per_sec: f64,
    /// Keys written per second over the last reported interval (what
    /// every replica applies).
    pub write_keys_per_sec: f64,
    /// Since when every report has said the region serves more than
    /// the load-split threshold (None while it does not).
    pub hot_since: Option<Instant>,
    /// The key its leader's samples of the last interval divide at (empty:
    /// none); see the store's `load` module.
    pub load_split_key: Vec<u8>,
    /// Since when this leader has known the region with no report of more
    /// than `merge_max_keys_per_sec` (its first report to this leader, or
    /// the last busy one). A region split or merged gets a new epoch, not a
    /// new id: only a new region (a split's new half) starts afresh here.
    pub quiet_since: Instant,
    /// The target this region merges into, while it is a merge's source
    /// (0 otherwise), as its leader reported.
    pub merging_into: u64,
}

impl RegionStats {
    /// The stats of a region's first report to this leader.
    pub fn new(seen: Instant) -> Self {
        RegionStats {
            leader: None,
            term: 0,
            approximate_size_bytes: 0,
            down_peers: vec![],
            progress: vec![],
            seen,
            keys_per_sec: 0.0,
            bytes_per_sec: 0.0,
            write_keys_per_sec: 0.0,
            hot_since: None,
            load_split_key: vec![],
            quiet_since: seen,
            merging_into: 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct StoreRuntime {
    pub stats: StoreStats,
    /// On the process clock (`tessera_common::clock`), like `since`: the
    /// liveness decision is a clock fault's target.
    pub last_heartbeat: Instant,
}

/// Timing of the store lifecycle.
#[derive(Clone, Debug)]
pub struct LifecycleConfig {
    pub disconnect_after: Duration,
    pub down_after: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            disconnect_after: Duration::from_secs(5),
            down_after: Duration::from_secs(60),
        }
    }
}

pub struct LeaderState {
    /// The directory term this state was gathered in.
    pub term: u64,
    pub since: Instant,
    pub regions: HashMap<u64, RegionStats>,
    pub stores: HashMap<u64, StoreRuntime>,
    pub operators: BTreeMap<u64, Operator>,
    /// Ids reserved through Raft and not handed out yet: `[next, end)`.
    pub ids: (u64, u64),
    pub next_operator: u64,
    /// The `Up` stores (sorted) as the scheduler last saw them, and since
    /// when they have been exactly these (hash keyspaces rebalance once
    /// this set has held `placement_rebalance_after`).
    pub up_stores_since: Option<(Vec<u64>, Instant)>,
    /// Keys per second above which a region is hot (load-based split), as
    /// the last scheduler round set it (`rules/split.rs`; infinite until
    /// the first round).
    pub load_split_threshold: f64,
}

impl LeaderState {
    pub fn new(term: u64) -> Self {
        LeaderState {
            term,
            since: clock::now(),
            regions: HashMap::new(),
            stores: HashMap::new(),
            operators: BTreeMap::new(),
            ids: (0, 0),
            next_operator: 1,
            up_stores_since: None,
            load_split_threshold: f64::INFINITY,
        }
    }

    /// The lifecycle state of `store` now.
    pub fn store_state(&self, store: &Store, cfg: &LifecycleConfig) -> StoreState {
        let recorded = StoreState::try_from(store.state).unwrap_or(StoreState::Up);
        if matches!(recorded, StoreState::Offline | StoreState::Tombstone) {
            return recorded;
        }
        // A store that has not reported since this leader took over gets the
        // benefit of the doubt from the takeover.
        let last = self
            .stores
            .get(&store.id)
            .map(|s| s.last_heartbeat)
            .unwrap_or(self.since);
        let silent = clock::now().saturating_duration_since(last);
        if silent >= cfg.down_after {
            StoreState::Down
        } else if silent >= cfg.disconnect_after {
            StoreState::Disconnected
        } else {
            StoreState::Up
        }
    }

    /// The regions taking part in a merge their leaders reported running
    /// (sources and targets), whoever started it (a previous directory
    /// leader, say): the rules leave them alone until it ends.
    /// Only regions `state` still records count: a merged source's last
    /// report said it was merging.
    pub fn reported_merges(&self, state: &DirectoryState) -> HashSet<u64> {
        self.regions
            .iter()
            .filter(|(id, s)| s.merging_into != 0 && state.regions.contains_key(id))
            .flat_map(|(id, s)| [*id, s.merging_into])
            .collect()
    }

    /// Operators that involve `store_id` (as source or target).
    pub fn operators_on(&self, store_id: u64) -> usize {
        self.operators
            .values()
            .filter(|o| o.involves(store_id))
            .count()
    }
}

pub fn state_name(s: StoreState) -> &'static str {
    match s {
        StoreState::Up => "up",
        StoreState::Disconnected => "disconnected",
        StoreState::Down => "down",
        StoreState::Offline => "offline",
        StoreState::Tombstone => "tombstone",
    }
}
