//! The directory's replicated state: what every member holds after applying
//! the same log — the cluster's id and bootstrap flag, the id allocator,
//! stores, regions and their range index, keyspaces, recorded placements and
//! directory members.
//!
//! Invariants (checked by [`DirectoryState::check_coverage`] and a property
//! test):
//! - once bootstrapped, the range index covers the whole key space with no
//!   gap and no overlap;
//! - a region record is only replaced by one with a newer epoch (`version`
//!   and `conf_ver` never go back), and a region overlapping others only
//!   replaces older ones. A batch of regions (a split's parts) is recorded
//!   only if it covers every range it replaces — a lone part of a split
//!   waits until all parts arrive, so no gap ever opens.
//!
//! Everything here is pure: [`DirectoryState::apply`] returns the engine
//! changes for the caller to write in the apply batch.

use std::collections::BTreeMap;
use std::ops::Bound;

use prost::Message as _;
use tessera_multiraft::engine::{Cf, Engine};
use tessera_proto::directorypb::{
    directory_command::Cmd, BootstrapRequest, ClusterMeta, Keyspace, KeyspaceKind, Member,
    Placement, RebalancePlacement, SetEvictLeadersRequest, SetStoreState, StoreSecret, User,
};
use tessera_proto::keys::{DEFAULT_KEYSPACE_ID, HASH_KEYSPACE_BIT};
use tessera_proto::metapb::{Region, Store, StoreState};
use tessera_proto::region::{
    contains_key, epoch, is_newer_report, ranges_overlap, supersedes, went_back,
};

use crate::{records, Error, Result};

mod join;
mod users;

/// A change to the directory's records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// What applying a command returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    Done,
    /// Ids `[first, first + count)`.
    Ids {
        first: u64,
        count: u32,
    },
    Keyspace(Keyspace),
    /// Regions recorded (a heartbeat's batch may be partly stale).
    Regions(Vec<u64>),
}

#[derive(Clone, Debug, Default)]
pub struct DirectoryState {
    pub meta: ClusterMeta,
    pub stores: BTreeMap<u64, Store>,
    pub regions: BTreeMap<u64, Region>,
    /// start key → region id.
    pub ranges: BTreeMap<Vec<u8>, u64>,
    pub keyspaces: BTreeMap<String, Keyspace>,
    pub placements: BTreeMap<u64, Vec<u64>>,
    pub members: BTreeMap<u64, Member>,
    /// Store id → SHA-256 of the store's own secret ([`join`]).
    pub store_secrets: BTreeMap<u64, Vec<u8>>,
    /// Name → user (`users`).
    pub users: BTreeMap<String, User>,
}

/// Whether the union of `parts` covers `[start, end)` (empty end: +∞).
fn covers(parts: &[(&[u8], &[u8])], start: &[u8], end: &[u8]) -> bool {
    let mut sorted: Vec<_> = parts.to_vec();
    sorted.sort();
    let mut cursor = start.to_vec();
    loop {
        if !end.is_empty() && cursor.as_slice() >= end {
            return true;
        }
        // A part that starts at or before the cursor and reaches past it.
        let next = sorted
            .iter()
            .filter(|(s, e)| *s <= cursor.as_slice() && (e.is_empty() || *e > cursor.as_slice()))
            .map(|(_, e)| *e)
            .max_by(|a, b| match (a.is_empty(), b.is_empty()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => a.cmp(b),
            });
        match next {
            None => return false,
            Some([]) => return true,
            Some(e) => cursor = e.to_vec(),
        }
    }
}

impl DirectoryState {
    /// Rebuilds the state from the engine.
    pub fn load(engine: &dyn Engine) -> Result<Self> {
        let mut s = DirectoryState::default();
        if let Some(bytes) = engine.get(Cf::Default, records::CLUSTER_META)? {
            s.meta = ClusterMeta::decode(bytes.as_slice())
                .map_err(|e| Error::Config(format!("cluster meta: {e}")))?;
        }
        let mut records: Vec<(u8, Vec<u8>)> = vec![];
        for kind in [
            records::STORES,
            records::REGIONS,
            records::KEYSPACES,
            records::PLACEMENTS,
            records::MEMBERS,
            records::STORE_SECRETS,
            records::USERS,
        ] {
            let (start, end) = records::kind_bounds(kind);
            engine.scan(Cf::Default, &start, &end, false, &mut |_, v| {
                records.push((kind, v.to_vec()));
                true
            })?;
        }
        let bad = |what: &str, e: prost::DecodeError| Error::Config(format!("{what} record: {e}"));
        for (kind, v) in records {
            match kind {
                records::STORES => {
                    let st = Store::decode(v.as_slice()).map_err(|e| bad("store", e))?;
                    s.stores.insert(st.id, st);
                }
                records::REGIONS => {
                    let r = Region::decode(v.as_slice()).map_err(|e| bad("region", e))?;
                    s.ranges.insert(r.start_key.clone(), r.id);
                    s.regions.insert(r.id, r);
                }
                records::KEYSPACES => {
                    let k = Keyspace::decode(v.as_slice()).map_err(|e| bad("keyspace", e))?;
                    s.keyspaces.insert(k.name.clone(), k);
                }
                records::PLACEMENTS => {
                    let p = Placement::decode(v.as_slice()).map_err(|e| bad("placement", e))?;
                    s.placements.insert(p.region_id, p.store_ids);
                }
                records::STORE_SECRETS => {
                    let k =
                        StoreSecret::decode(v.as_slice()).map_err(|e| bad("store secret", e))?;
                    s.store_secrets.insert(k.store_id, k.hash);
                }
                records::USERS => {
                    let u = User::decode(v.as_slice()).map_err(|e| bad("user", e))?;
                    s.users.insert(u.name.clone(), u);
                }
                _ => {
                    let m = Member::decode(v.as_slice()).map_err(|e| bad("member", e))?;
                    s.members.insert(m.id, m);
                }
            }
        }
        Ok(s)
    }

    fn put_meta(&self, out: &mut Vec<Change>) {
        out.push(Change::Put(
            records::CLUSTER_META.to_vec(),
            self.meta.encode_to_vec(),
        ));
    }

    /// Applies one command. Errors are deterministic outcomes (every member
    /// reaches the same one) and change nothing.
    pub fn apply(&mut self, cmd: Cmd, out: &mut Vec<Change>) -> Result<Applied> {
        match cmd {
            Cmd::InitCluster(id) => {
                if self.meta.cluster_id == 0 {
                    self.meta.cluster_id = id;
                    self.put_meta(out);
                }
                Ok(Applied::Done)
            }
            Cmd::SetJoinToken(hash) => self.set_join_token(hash, out),
            Cmd::RegisterStore(r) => self.register_store(r, out),
            Cmd::CreateUser(u) => self.create_user(u, out),
            Cmd::RevokeUser(name) => self.revoke_user(name, out),
            Cmd::Bootstrap(b) => self.bootstrap(b, out),
            Cmd::AllocIds(count) => {
                let first = self.meta.next_id.max(1);
                self.meta.next_id = first + count as u64;
                self.put_meta(out);
                Ok(Applied::Ids { first, count })
            }
            // Only in logs written before registrations were checked; the
            // service proposes RegisterStore.
            Cmd::PutStore(store) => self.put_store(store, out),
            Cmd::SetStoreState(s) => self.set_store_state(s, out),
            Cmd::SetEvictLeaders(s) => self.set_evict_leaders(s, out),
            Cmd::PutRegion(region) => self.put_regions(vec![region], out),
            Cmd::PutRegions(batch) => self.put_regions(batch.regions, out),
            Cmd::CreateKeyspace(k) => self.create_keyspace(k, out),
            Cmd::PutPlacement(p) => {
                self.put_placement(p, out);
                Ok(Applied::Done)
            }
            Cmd::RebalancePlacement(r) => self.rebalance_placement(r, out),
            Cmd::PutMember(m) => {
                out.push(Change::Put(records::member(m.id), m.encode_to_vec()));
                self.members.insert(m.id, m);
                Ok(Applied::Done)
            }
            Cmd::RemoveMember(id) => {
                out.push(Change::Delete(records::member(id)));
                self.members.remove(&id);
                Ok(Applied::Done)
            }
            Cmd::CompactLog(_) => Ok(Applied::Done),
        }
    }

    fn bootstrap(&mut self, b: BootstrapRequest, out: &mut Vec<Change>) -> Result<Applied> {
        if self.meta.bootstrapped {
            return Err(Error::AlreadyBootstrapped);
        }
        let (Some(store), Some(region)) = (b.store, b.region) else {
            return Err(Error::InvalidArgument(
                "bootstrap needs a store and a region".into(),
            ));
        };
        if !region.start_key.is_empty() || !region.end_key.is_empty() {
            return Err(Error::InvalidArgument(
                "the first region must cover the whole key space".into(),
            ));
        }
        // The store registered itself first (with its secret and the join
        // token); its record stays as registered.
        if !self.stores.contains_key(&store.id) {
            return Err(Error::InvalidArgument(format!(
                "store {} must register before it bootstraps the cluster",
                store.id
            )));
        }
        if region.peers.iter().any(|p| p.store_id != store.id) {
            return Err(Error::InvalidArgument(
                "the first region's peers must all be on the bootstrapping store".into(),
            ));
        }
        self.meta.bootstrapped = true;
        self.meta.next_id = self.meta.next_id.max(store.id + 1).max(region.id + 1);
        for p in &region.peers {
            self.meta.next_id = self.meta.next_id.max(p.id + 1);
        }
        self.put_meta(out);
        out.push(Change::Put(
            records::region(region.id),
            region.encode_to_vec(),
        ));
        self.ranges.insert(region.start_key.clone(), region.id);
        self.regions.insert(region.id, region);
        Ok(Applied::Done)
    }

    pub(crate) fn put_store(&mut self, mut store: Store, out: &mut Vec<Change>) -> Result<Applied> {
        if store.id == 0 {
            return Err(Error::InvalidArgument("store id 0 is not valid".into()));
        }
        self.refuse_if_removed(store.id)?;
        if let Some(known) = self.stores.get(&store.id) {
            // Registering again keeps a decommission and an eviction going.
            store.state = known.state;
            store.evict_leaders = known.evict_leaders;
        } else {
            store.state = StoreState::Up as i32;
        }
        out.push(Change::Put(records::store(store.id), store.encode_to_vec()));
        self.stores.insert(store.id, store);
        Ok(Applied::Done)
    }

    /// A removed store never registers again, whoever asks.
    fn refuse_if_removed(&self, store_id: u64) -> Result<()> {
        let removed = self.stores.get(&store_id).is_some_and(|known| {
            StoreState::try_from(known.state).unwrap_or(StoreState::Up) == StoreState::Tombstone
        });
        if removed {
            return Err(Error::InvalidArgument(format!(
                "store {store_id} was removed from the cluster and cannot come back; wipe its data and start it anew"
            )));
        }
        Ok(())
    }

    fn set_store_state(&mut self, s: SetStoreState, out: &mut Vec<Change>) -> Result<Applied> {
        let Some(store) = self.stores.get_mut(&s.store_id) else {
            return Err(Error::NotFound(format!("store {}", s.store_id)));
        };
        store.state = s.state;
        out.push(Change::Put(records::store(store.id), store.encode_to_vec()));
        Ok(Applied::Done)
    }

    fn set_evict_leaders(
        &mut self,
        s: SetEvictLeadersRequest,
        out: &mut Vec<Change>,
    ) -> Result<Applied> {
        self.refuse_if_removed(s.store_id)?;
        let Some(store) = self.stores.get_mut(&s.store_id) else {
            return Err(Error::NotFound(format!("store {}", s.store_id)));
        };
        store.evict_leaders = s.evict;
        out.push(Change::Put(records::store(store.id), store.encode_to_vec()));
        Ok(Applied::Done)
    }

    fn create_keyspace(&mut self, mut k: Keyspace, out: &mut Vec<Change>) -> Result<Applied> {
        if k.name.is_empty() || k.name == "default" {
            return Err(Error::InvalidArgument(format!(
                "keyspace name {:?} is reserved or empty",
                k.name
            )));
        }
        if let Some(existing) = self.keyspaces.get(&k.name) {
            return Err(Error::InvalidArgument(format!(
                "keyspace {:?} already exists (id {})",
                k.name, existing.id
            )));
        }
        let n = self.meta.next_keyspace_id.max(1);
        if n >= HASH_KEYSPACE_BIT {
            return Err(Error::InvalidArgument("no keyspace id left".into()));
        }
        self.meta.next_keyspace_id = n + 1;
        k.id = if k.kind == KeyspaceKind::Hash as i32 {
            n | HASH_KEYSPACE_BIT
        } else {
            n
        };
        self.put_meta(out);
        out.push(Change::Put(records::keyspace(&k.name), k.encode_to_vec()));
        self.keyspaces.insert(k.name.clone(), k.clone());
        Ok(Applied::Keyspace(k))
    }

    fn put_placement(&mut self, p: Placement, out: &mut Vec<Change>) {
        out.push(Change::Put(
            records::placement(p.region_id),
            p.encode_to_vec(),
        ));
        self.placements.insert(p.region_id, p.store_ids);
    }

    /// Records that hash keyspace `r.keyspace_id`'s ring is now built over
    /// `r.ring_stores`, with the placements that changed.
    fn rebalance_placement(
        &mut self,
        r: RebalancePlacement,
        out: &mut Vec<Change>,
    ) -> Result<Applied> {
        let Some(k) = self
            .keyspaces
            .values_mut()
            .find(|k| k.id == r.keyspace_id && k.kind == KeyspaceKind::Hash as i32)
        else {
            return Err(Error::InvalidArgument(format!(
                "no hash keyspace with id {}",
                r.keyspace_id
            )));
        };
        k.ring_stores = r.ring_stores;
        out.push(Change::Put(records::keyspace(&k.name), k.encode_to_vec()));
        for p in r.placements {
            self.put_placement(p, out);
        }
        Ok(Applied::Done)
    }

    /// The keyspace named `name` (`default` is always there).
    pub fn keyspace(&self, name: &str) -> Option<Keyspace> {
        if name == "default" || name.is_empty() {
            return Some(Keyspace {
                id: DEFAULT_KEYSPACE_ID,
                name: "default".into(),
                kind: KeyspaceKind::Range as i32,
                ..Default::default()
            });
        }
        self.keyspaces.get(name).cloned()
    }

    /// Which of `batch` would be recorded, or why none can be: stale parts
    /// are dropped; the rest must replace only older regions and cover
    /// every range they replace.
    pub fn plan_regions(&self, batch: Vec<Region>) -> Result<Vec<Region>> {
        let fresh: Vec<Region> = batch
            .iter()
            .enumerate()
            .filter(|(i, r)| match self.regions.get(&r.id) {
                // A split sibling (after the report's own region) that the
                // directory does not know and that a region as new or
                // newer — recorded, or in this batch — overlaps is long
                // gone (merged away since the split): dropped, so it
                // neither blocks nor revives anything.
                None if *i > 0 => {
                    let v = epoch(r).version;
                    let superseded = self
                        .overlapping(&r.start_key, &r.end_key)
                        .iter()
                        .any(|o| epoch(o).version >= v)
                        || batch.iter().any(|b| {
                            b.id != r.id
                                && ranges_overlap(
                                    &b.start_key,
                                    &b.end_key,
                                    &r.start_key,
                                    &r.end_key,
                                )
                                && epoch(b).version > v
                        });
                    !superseded
                }
                None => true,
                Some(known) => is_newer_report(&epoch(r), &epoch(known)),
            })
            .map(|(_, r)| r.clone())
            .collect();
        if fresh.is_empty() {
            return Err(Error::Stale("no newer region in the report".into()));
        }
        let mut replaced: Vec<&Region> = vec![];
        for r in &fresh {
            if let Some(known) = self.regions.get(&r.id) {
                if went_back(&epoch(r), &epoch(known)) {
                    return Err(Error::Stale(format!("region {} epoch went back", r.id)));
                }
                replaced.push(known);
            }
            for other in self.overlapping(&r.start_key, &r.end_key) {
                if fresh.iter().any(|f| f.id == other.id) {
                    continue;
                }
                if !supersedes(r, other) {
                    return Err(Error::Stale(format!(
                        "region {} (version {}) overlaps region {} which is as new (version {})",
                        r.id,
                        epoch(r).version,
                        other.id,
                        epoch(other).version
                    )));
                }
                replaced.push(other);
            }
        }
        let parts: Vec<(&[u8], &[u8])> = fresh
            .iter()
            .map(|r| (r.start_key.as_slice(), r.end_key.as_slice()))
            .collect();
        for old in replaced {
            if !covers(&parts, &old.start_key, &old.end_key) {
                return Err(Error::Stale(format!(
                    "replacing region {} would leave a gap; waiting for the rest of its split",
                    old.id
                )));
            }
        }
        Ok(fresh)
    }

    fn put_regions(&mut self, batch: Vec<Region>, out: &mut Vec<Change>) -> Result<Applied> {
        let fresh = self.plan_regions(batch)?;
        let mut recorded = vec![];
        for r in fresh {
            if let Some(old) = self.regions.remove(&r.id) {
                if self.ranges.get(&old.start_key) == Some(&old.id) {
                    self.ranges.remove(&old.start_key);
                }
            }
            let doomed: Vec<u64> = self
                .overlapping(&r.start_key, &r.end_key)
                .iter()
                .map(|o| o.id)
                .collect();
            for id in doomed {
                if let Some(o) = self.regions.remove(&id) {
                    self.ranges.remove(&o.start_key);
                    out.push(Change::Delete(records::region(id)));
                }
            }
            out.push(Change::Put(records::region(r.id), r.encode_to_vec()));
            self.ranges.insert(r.start_key.clone(), r.id);
            recorded.push(r.id);
            self.regions.insert(r.id, r);
        }
        Ok(Applied::Regions(recorded))
    }

    /// Regions meeting `[start, end)`, in key order.
    pub fn overlapping(&self, start: &[u8], end: &[u8]) -> Vec<&Region> {
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        // The region holding `start` begins at or before it.
        let first = self
            .ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back()
            .map(|(k, _)| k.clone())
            .unwrap_or_default();
        self.ranges
            .range::<[u8], _>((Bound::Included(first.as_slice()), upper))
            .filter_map(|(_, id)| self.regions.get(id))
            .filter(|r| ranges_overlap(&r.start_key, &r.end_key, start, end))
            .collect()
    }

    /// The region holding `key`.
    pub fn region_for_key(&self, key: &[u8]) -> Option<&Region> {
        let (_, id) = self
            .ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let r = self.regions.get(id)?;
        contains_key(r, key).then_some(r)
    }

    /// Checks that the regions tile the key space exactly.
    pub fn check_coverage(&self) -> std::result::Result<(), String> {
        if self.regions.is_empty() {
            return Ok(());
        }
        let mut expected_start: Vec<u8> = vec![];
        let mut last_open = false;
        for (start, id) in &self.ranges {
            let r = self
                .regions
                .get(id)
                .ok_or(format!("index names missing region {id}"))?;
            if &r.start_key != start {
                return Err(format!("index key of region {id} is not its start key"));
            }
            if last_open {
                return Err(format!("region {id} starts after an unbounded region"));
            }
            if *start != expected_start {
                return Err(format!(
                    "gap or overlap before region {id}: expected start {:?}, found {:?}",
                    expected_start, start
                ));
            }
            expected_start = r.end_key.clone();
            last_open = r.end_key.is_empty();
        }
        if self.ranges.len() != self.regions.len() {
            return Err(format!(
                "{} regions but {} index entries",
                self.regions.len(),
                self.ranges.len()
            ));
        }
        if !last_open {
            return Err("the last region does not reach the end of the key space".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
