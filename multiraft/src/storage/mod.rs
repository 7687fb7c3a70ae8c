//! A region's Raft log, hard state and apply state on the engine, exposed to
//! raft-rs as a [`raft::Storage`].
//!
//! Invariants:
//! - the log holds exactly the entries `(truncated_index, last_index]`;
//!   `truncated_term` is the term of `truncated_index`;
//! - [`PeerStorage::append`] and [`PeerStorage::set_hard_state`] only stage
//!   changes in a write batch and in memory; the poller writes the batch (one
//!   synced write for every region of the round) before it calls
//!   `advance_append`, so raft-rs never relies on an entry that is not
//!   durable;
//! - the Raft state key is written only when the term or the vote changes
//!   (and when a snapshot replaces the log), not every round: the last
//!   index is the log's last entry, found when the region is loaded, and
//!   the commit index may be persisted behind the real one. Loading raises
//!   it to the applied index (every applied entry was committed; raft-rs
//!   refuses applied > commit) and the leader tells the rest again. At many
//!   regions this saves two of the five memtable inserts a write costs per
//!   replica (Raft state with the append and again with the apply).
//!
//! Recent entries are also kept in a small in-memory cache so that the
//! leader's retries and `term` lookups rarely touch the engine.

use std::cell::Cell;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use tessera_proto::metapb::Region;
use tessera_proto::raft_serverpb::{RaftApplyState, RaftLocalState};

use crate::engine::{Cf, Engine, EngineExt, WriteBatch};
use crate::{region, state_keys, Error, RegionId, Result};

mod entry_cache;
use entry_cache::EntryCache;

pub struct PeerStorage {
    engine: Arc<dyn Engine>,
    region: Region,
    raft_state: RaftLocalState,
    apply_state: RaftApplyState,
    last_term: u64,
    cache: EntryCache,
    /// The hard state changed since it was last written.
    raft_state_dirty: bool,
    /// Approximate bytes of the log entries after the truncated index.
    log_bytes: u64,
    /// raft-rs asked for a snapshot that is not ready yet.
    snapshot_requested: Cell<bool>,
    /// The last snapshot generated for this region, handed to raft-rs.
    generated: Option<Snapshot>,
}

impl PeerStorage {
    /// A peer with no log yet, waiting for a snapshot: `region` names only
    /// the region id. The term and vote an earlier uninitialized peer of
    /// the region persisted on this store are kept (an uninitialized peer
    /// votes, and is dropped at a restart or a reload, then created again
    /// by the next message): forgetting them would let the peer vote twice
    /// in one term. The commit index is not: there is no log for it to
    /// point into.
    pub fn uninitialized(
        engine: Arc<dyn Engine>,
        region_id: RegionId,
        cache_limit: usize,
    ) -> Result<Self> {
        let persisted: RaftLocalState = engine
            .get_msg(Cf::Meta, &state_keys::raft_state_key(region_id))?
            .unwrap_or_default();
        Ok(PeerStorage {
            engine,
            region: Region {
                id: region_id,
                ..Default::default()
            },
            raft_state: RaftLocalState {
                term: persisted.term,
                vote: persisted.vote,
                ..Default::default()
            },
            apply_state: RaftApplyState::default(),
            last_term: 0,
            cache: EntryCache::new(cache_limit),
            raft_state_dirty: false,
            log_bytes: 0,
            snapshot_requested: Cell::new(false),
            generated: None,
        })
    }

    /// Loads the Raft state of `region` from the engine. A region with no
    /// stored Raft state starts empty (an uninitialized peer waiting for a
    /// snapshot).
    /// Empties the in-memory entry cache and frees it (a hibernating
    /// region's, or after a snapshot replaced the log); entries are read
    /// from the engine until appends fill it again.
    pub fn drop_entry_cache(&mut self) {
        self.cache = EntryCache::new(self.cache.limit);
    }

    pub fn load(engine: Arc<dyn Engine>, region: Region, cache_limit: usize) -> Result<Self> {
        let id = region.id;
        let mut raft_state: RaftLocalState = engine
            .get_msg(Cf::Meta, &state_keys::raft_state_key(id))?
            .unwrap_or_default();
        let apply_state: RaftApplyState = engine
            .get_msg(Cf::Meta, &state_keys::apply_state_key(id))?
            .unwrap_or_default();
        let (last_index, last_term) = match last_log_entry(engine.as_ref(), id)? {
            Some(e) if e.index > apply_state.truncated_index => (e.index, e.term),
            Some(e) => {
                return Err(Error::corruption(
                    format!("raft log of region {id}"),
                    format!(
                        "last entry {} is not after the truncated index {}",
                        e.index, apply_state.truncated_index
                    ),
                ))
            }
            None => (apply_state.truncated_index, apply_state.truncated_term),
        };
        if last_index < apply_state.applied_index {
            return Err(Error::corruption(
                format!("raft log of region {id}"),
                format!(
                    "last entry {last_index} is below the applied index {}",
                    apply_state.applied_index
                ),
            ));
        }
        raft_state.last_index = last_index;
        // The commit index is persisted only with term and vote changes.
        raft_state.commit = raft_state.commit.max(apply_state.applied_index);
        Ok(PeerStorage {
            engine,
            region,
            raft_state,
            apply_state,
            last_term,
            cache: EntryCache::new(cache_limit),
            raft_state_dirty: false,
            log_bytes: 0,
            snapshot_requested: Cell::new(false),
            generated: None,
        })
    }

    pub fn region_id(&self) -> RegionId {
        self.region.id
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    pub fn set_region(&mut self, region: Region) {
        self.region = region;
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub fn raft_state(&self) -> &RaftLocalState {
        &self.raft_state
    }

    pub fn apply_state(&self) -> &RaftApplyState {
        &self.apply_state
    }

    pub fn applied_index(&self) -> u64 {
        self.apply_state.applied_index
    }

    pub fn set_applied_index(&mut self, index: u64) {
        self.apply_state.applied_index = index;
        self.cache.compact_to(index);
    }

    pub fn truncated_index(&self) -> u64 {
        self.apply_state.truncated_index
    }

    /// Whether the peer has a Raft log at all (it was bootstrapped, split off
    /// or received a snapshot).
    pub fn is_initialized(&self) -> bool {
        !self.region.peers.is_empty()
    }

    /// Stages `entries` (which raft-rs hands out in order, possibly
    /// overwriting a conflicting tail) into `wb`.
    pub fn append(&mut self, entries: &[Entry], wb: &mut WriteBatch) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let id = self.region.id;
        for e in entries {
            let bytes = e.write_to_bytes().expect("encoding an entry cannot fail");
            wb.put(
                Cf::Raft,
                state_keys::raft_log_key(id, e.index).to_vec(),
                bytes,
            );
        }
        // A conflicting tail beyond the new last entry is gone for good.
        if last.index < self.raft_state.last_index {
            wb.delete_range(
                Cf::Raft,
                state_keys::raft_log_key(id, last.index + 1).to_vec(),
                state_keys::raft_log_key(id, self.raft_state.last_index + 1).to_vec(),
            );
        }
        debug_assert!(first.index > self.apply_state.truncated_index);
        self.log_bytes += entries
            .iter()
            .map(|e| e.data.len() as u64 + 32)
            .sum::<u64>();
        self.cache.append(entries);
        // The log itself records its last index (see the module docs).
        self.raft_state.last_index = last.index;
        self.last_term = last.term;
    }

    /// Takes raft-rs's hard state; it is staged for writing only when the
    /// term or the vote changed (the commit index rides along then).
    pub fn set_hard_state(&mut self, hs: &HardState) {
        if hs.term != self.raft_state.term || hs.vote != self.raft_state.vote {
            self.raft_state.term = hs.term;
            self.raft_state.vote = hs.vote;
            self.raft_state_dirty = true;
        }
        self.raft_state.commit = self.raft_state.commit.max(hs.commit);
    }

    /// Approximate bytes of the log kept (after the truncated index).
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Entries kept in the log.
    pub fn log_entries(&self) -> u64 {
        self.raft_state.last_index - self.apply_state.truncated_index
    }

    /// Drops the log up to and including `index` (whose term is `term`):
    /// the entries are deleted in `wb`, with the new truncated index.
    pub fn compact_to(&mut self, index: u64, term: u64, wb: &mut WriteBatch) {
        let truncated = self.apply_state.truncated_index;
        if index <= truncated || index > self.apply_state.applied_index {
            return;
        }
        let kept_before = self.log_entries().max(1);
        let id = self.region.id;
        wb.delete_range(
            Cf::Raft,
            state_keys::raft_log_key(id, truncated + 1).to_vec(),
            state_keys::raft_log_key(id, index + 1).to_vec(),
        );
        self.apply_state.truncated_index = index;
        self.apply_state.truncated_term = term;
        self.cache.compact_to(index);
        self.log_bytes = self.log_bytes * self.log_entries() / kept_before;
    }

    /// Replaces the log and states with those of a snapshot at (`index`,
    /// `term`) describing `region`; stages them in `wb` with the region
    /// state `Applying`.
    pub fn apply_snapshot(&mut self, region: Region, index: u64, term: u64, wb: &mut WriteBatch) {
        let id = self.region.id;
        wb.delete_range(
            Cf::Raft,
            state_keys::raft_log_key(id, 0).to_vec(),
            state_keys::raft_log_key(id, u64::MAX).to_vec(),
        );
        wb.delete(Cf::Raft, state_keys::raft_log_key(id, u64::MAX).to_vec());
        self.raft_state.last_index = index;
        self.raft_state.commit = self.raft_state.commit.max(index);
        self.raft_state.term = self.raft_state.term.max(term);
        self.last_term = term;
        self.apply_state = RaftApplyState {
            applied_index: index,
            truncated_index: index,
            truncated_term: term,
        };
        self.drop_entry_cache();
        self.log_bytes = 0;
        self.region = region;
        self.raft_state_dirty = true;
        self.write_raft_state_if_dirty(wb);
        self.write_apply_state(wb);
        wb.put_msg(
            Cf::Meta,
            state_keys::region_state_key(id),
            &tessera_proto::raft_serverpb::RegionLocalState {
                region: Some(self.region.clone()),
                state: tessera_proto::raft_serverpb::PeerState::Applying as i32,
            },
        );
    }

    /// Whether raft-rs asked for a snapshot since the last call.
    pub fn take_snapshot_request(&self) -> bool {
        self.snapshot_requested.replace(false)
    }

    /// Whether `snap` covers exactly the region's range as it is now.
    fn has_current_range(&self, snap: &Snapshot) -> bool {
        crate::snapshot::decode_data(snap)
            .ok()
            .and_then(|d| d.region)
            .is_some_and(|r| {
                r.start_key == self.region.start_key && r.end_key == self.region.end_key
            })
    }

    /// Hands a freshly generated snapshot to raft-rs (next time it asks).
    pub fn set_generated_snapshot(&mut self, snap: Snapshot) {
        self.generated = Some(snap);
    }

    /// Records a commit index raft-rs reported; it is not written by itself
    /// (see the module docs).
    pub fn set_commit(&mut self, commit: u64) {
        self.raft_state.commit = self.raft_state.commit.max(commit);
    }

    /// Stages the Raft state into `wb` if the term or vote changed since it
    /// was last written.
    pub fn write_raft_state_if_dirty(&mut self, wb: &mut WriteBatch) {
        if self.raft_state_dirty {
            wb.put_msg(
                Cf::Meta,
                state_keys::raft_state_key(self.region.id),
                &self.raft_state,
            );
            self.raft_state_dirty = false;
        }
    }

    /// Stages the apply state into `wb`.
    pub fn write_apply_state(&self, wb: &mut WriteBatch) {
        wb.put_msg(
            Cf::Meta,
            state_keys::apply_state_key(self.region.id),
            &self.apply_state,
        );
    }

    fn read_entry(&self, index: u64) -> Result<Entry> {
        let key = state_keys::raft_log_key(self.region.id, index);
        let bytes = self.engine.get(Cf::Raft, &key)?.ok_or_else(|| {
            Error::corruption(
                format!("raft log of region {}", self.region.id),
                format!("entry {index} is missing"),
            )
        })?;
        Entry::parse_from_bytes(&bytes).map_err(|e| {
            Error::corruption(format!("entry {index} of region {}", self.region.id), e)
        })
    }

    fn storage_err(e: Error) -> raft::Error {
        raft::Error::Store(StorageError::Other(Box::new(e)))
    }
}

/// The last entry of `region_id`'s log on `engine`, if it holds any.
///
/// Found by forward seeks only, a binary search on "some entry at or after
/// index i": the RocksDB engine keeps the `raft` family's memtable by region,
/// where a seek backwards would copy and sort the whole memtable (see
/// `engine::rocks`), and this runs on the poller whenever a split creates a
/// region. About 2·log₂ of the log's length probes (a split's new region:
/// one).
fn last_log_entry(engine: &dyn Engine, region_id: RegionId) -> Result<Option<Entry>> {
    let first_at_or_after = |index: u64| -> Result<Option<(u64, Vec<u8>)>> {
        let mut found = None;
        engine.scan(
            Cf::Raft,
            &state_keys::raft_log_key(region_id, index),
            &state_keys::raft_log_key(region_id, u64::MAX),
            false,
            &mut |k, v| {
                found = state_keys::raft_log_index(k).map(|i| (i, v.to_vec()));
                false
            },
        )?;
        Ok(found)
    };
    let Some(mut last) = first_at_or_after(0)? else {
        return Ok(None);
    };
    // Gallop past the first entry until a probe finds nothing at or after
    // it: logs are short (compacted), so this bounds the search cheaply.
    let mut step = 1u64;
    let mut hi = loop {
        let probe = last.0.saturating_add(step);
        match first_at_or_after(probe)? {
            Some(found) => last = found,
            None => break probe,
        }
        step = step.saturating_mul(2);
    };
    // Every entry is at most `last` or in [lo, hi); none is at or after `hi`.
    let mut lo = last.0 + 1;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match first_at_or_after(mid)? {
            Some(found) => {
                lo = found.0 + 1;
                last = found;
            }
            None => hi = mid,
        }
    }
    Entry::parse_from_bytes(&last.1)
        .map(Some)
        .map_err(|e| Error::corruption(format!("last log entry of region {region_id}"), e))
}

impl raft::Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let hs = HardState {
            term: self.raft_state.term,
            vote: self.raft_state.vote,
            commit: self.raft_state.commit,
            ..Default::default()
        };
        Ok(RaftState::new(hs, region::conf_state(&self.region)))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.apply_state.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.raft_state.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut entries = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        let cache_first = self.cache.first_index().unwrap_or(u64::MAX);
        let engine_high = high.min(cache_first);
        if low < engine_high {
            let id = self.region.id;
            let mut failure = None;
            self.engine
                .scan(
                    Cf::Raft,
                    &state_keys::raft_log_key(id, low),
                    &state_keys::raft_log_key(id, engine_high),
                    false,
                    &mut |_, v| match Entry::parse_from_bytes(v) {
                        Ok(e) => {
                            size += e.compute_size() as u64;
                            let keep_going = entries.is_empty() || size <= max_size;
                            if keep_going {
                                entries.push(e);
                            }
                            keep_going
                        }
                        Err(e) => {
                            failure = Some(e);
                            false
                        }
                    },
                )
                .map_err(Self::storage_err)?;
            if let Some(e) = failure {
                return Err(Self::storage_err(Error::corruption("raft log entry", e)));
            }
            let expected = engine_high - low;
            if (entries.len() as u64) < expected && (entries.is_empty() || size <= max_size) {
                // A hole in the log: never expected, and raft must not see it.
                return Err(Self::storage_err(Error::corruption(
                    format!("raft log of region {id}"),
                    format!("entries [{low}, {engine_high}) have holes"),
                )));
            }
            if (entries.len() as u64) < expected {
                return Ok(entries);
            }
        }
        if engine_high < high {
            for e in self.cache.range(engine_high.max(low), high) {
                size += e.compute_size() as u64;
                if !entries.is_empty() && size > max_size {
                    break;
                }
                entries.push(e.clone());
            }
        }
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.apply_state.truncated_index {
            return Ok(self.apply_state.truncated_term);
        }
        if idx < self.apply_state.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.raft_state.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx == self.raft_state.last_index {
            return Ok(self.last_term);
        }
        if let Some(e) = self.cache.get(idx) {
            return Ok(e.term);
        }
        self.read_entry(idx)
            .map(|e| e.term)
            .map_err(Self::storage_err)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.apply_state.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.raft_state.last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Snapshots are generated on a worker thread: the poller sees the
        // request after this round and raft-rs asks again later.
        if let Some(snap) = &self.generated {
            let meta = snap.get_metadata();
            let cs = meta.get_conf_state();
            let current = region::conf_state(&self.region);
            // Reuse it only if it is recent enough and describes the region's
            // current membership (a peer added since is not in an older one,
            // and raft-rs would refuse it) and current range: one taken
            // before a split carries the parent's wider range, which a store
            // holding the regions split off refuses — reused, it would be
            // refused forever and the follower would never catch up.
            if meta.index >= request_index
                && meta.index >= self.apply_state.truncated_index
                && cs.voters == current.voters
                && cs.learners == current.learners
                && cs.voters_outgoing == current.voters_outgoing
                && self.has_current_range(snap)
            {
                return Ok(snap.clone());
            }
        }
        self.snapshot_requested.set(true);
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

#[cfg(test)]
mod tests;
