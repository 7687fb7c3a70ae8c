//! The most recent entries of a region's log, kept in memory so that the
//! leader's retries and `term` lookups rarely touch the engine.
//!
//! Invariant: the cached entries are contiguous by index and at most
//! `limit` of them; an append that does not continue them (or that
//! rewrites a conflicting tail) drops what no longer fits.

use std::collections::VecDeque;

use raft::eraftpb::Entry;

/// The most recent entries of a log, contiguous by index.
pub(super) struct EntryCache {
    entries: VecDeque<Entry>,
    pub(super) limit: usize,
}

impl EntryCache {
    pub(super) fn new(limit: usize) -> Self {
        EntryCache {
            entries: VecDeque::new(),
            limit,
        }
    }

    pub(super) fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    pub(super) fn append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else { return };
        if let Some(front) = self.entries.front().map(|e| e.index) {
            if first.index <= front {
                self.entries.clear();
            } else {
                // Drop a conflicting tail, then require contiguity.
                self.entries.truncate((first.index - front) as usize);
                if self.entries.back().map(|e| e.index + 1) != Some(first.index) {
                    self.entries.clear();
                }
            }
        }
        self.entries.extend(new.iter().cloned());
        while self.entries.len() > self.limit {
            self.entries.pop_front();
        }
    }

    pub(super) fn get(&self, index: u64) -> Option<&Entry> {
        let front = self.first_index()?;
        if index < front {
            return None;
        }
        self.entries.get((index - front) as usize)
    }

    /// Entries in `[low, high)`, which must be inside the cache.
    pub(super) fn range(&self, low: u64, high: u64) -> impl Iterator<Item = &Entry> {
        let front = self.first_index().unwrap_or(low);
        let start = low.saturating_sub(front) as usize;
        let end = (high.saturating_sub(front) as usize).min(self.entries.len());
        self.entries.range(start.min(end)..end)
    }

    pub(super) fn compact_to(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            self.entries.pop_front();
        }
    }
}
