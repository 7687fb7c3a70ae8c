//! Load sampling: what each region served on this store since its leader
//! last reported it to the directory (read and written keys, written
//! bytes), for the scheduler's rules that look at traffic (merging cold
//! neighbours; later, load-based split and hot-region balancing).
//!
//! The Kv API counts every request it serves for a region, whatever the
//! outcome of the engine read or the proposal (a lease read redone through
//! the poller counts twice; an estimate is all the rules need), on the
//! request's task:
//! three relaxed atomic adds in a `DashMap` entry, no lock held across an
//! await. The heartbeat loop takes a region's counts when it reports the
//! region ([`LoadSampler::take`]), which starts the next interval, and
//! forgets the regions this store no longer hosts. Counts of a region this
//! store does not lead (follower reads) accumulate until it leads it or
//! the region leaves; the interval reported then covers all of it, so the
//! rate stays right.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use parking_lot::Mutex;
use tessera_proto::directorypb::RegionLoad;

struct Counters {
    read_keys: AtomicU64,
    write_keys: AtomicU64,
    write_bytes: AtomicU64,
    since: Mutex<Instant>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            read_keys: AtomicU64::new(0),
            write_keys: AtomicU64::new(0),
            write_bytes: AtomicU64::new(0),
            since: Mutex::new(Instant::now()),
        }
    }
}

/// Per-region traffic counters of one store.
#[derive(Default)]
pub struct LoadSampler {
    regions: DashMap<u64, Counters>,
}

impl LoadSampler {
    fn with(&self, region_id: u64, f: impl FnOnce(&Counters)) {
        if let Some(c) = self.regions.get(&region_id) {
            return f(&c);
        }
        f(&self.regions.entry(region_id).or_default());
    }

    /// A read of `keys` keys served for `region_id`.
    pub fn read(&self, region_id: u64, keys: u64) {
        self.with(region_id, |c| {
            c.read_keys.fetch_add(keys, Ordering::Relaxed);
        });
    }

    /// A write of `keys` keys and `bytes` bytes (keys and values) proposed
    /// for `region_id`.
    pub fn write(&self, region_id: u64, keys: u64, bytes: u64) {
        self.with(region_id, |c| {
            c.write_keys.fetch_add(keys, Ordering::Relaxed);
            c.write_bytes.fetch_add(bytes, Ordering::Relaxed);
        });
    }

    /// What `region_id` served since the last call (or since it was first
    /// counted), and starts a new interval.
    pub fn take(&self, region_id: u64) -> RegionLoad {
        let now = Instant::now();
        let Some(c) = self.regions.get(&region_id) else {
            return RegionLoad::default();
        };
        let since = std::mem::replace(&mut *c.since.lock(), now);
        RegionLoad {
            read_keys: c.read_keys.swap(0, Ordering::Relaxed),
            write_keys: c.write_keys.swap(0, Ordering::Relaxed),
            write_bytes: c.write_bytes.swap(0, Ordering::Relaxed),
            interval_ms: now.duration_since(since).as_millis() as u64,
        }
    }

    /// Forgets the regions not in `hosted` (moved away, merged, destroyed).
    pub fn retain(&self, hosted: &HashSet<u64>) {
        self.regions.retain(|id, _| hosted.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_takes_what_was_served_since_the_last_one() {
        let s = LoadSampler::default();
        s.read(1, 1);
        s.read(1, 3);
        s.write(1, 2, 100);
        s.write(2, 1, 10);
        let first = s.take(1);
        assert_eq!(
            (first.read_keys, first.write_keys, first.write_bytes),
            (4, 2, 100)
        );
        let second = s.take(1);
        assert_eq!(
            (second.read_keys, second.write_keys, second.write_bytes),
            (0, 0, 0)
        );
        assert_eq!(s.take(3), RegionLoad::default());
        s.retain(&HashSet::from([1]));
        assert_eq!(s.take(2), RegionLoad::default(), "region 2 was forgotten");
    }
}
