//! Load sampling: what each region served on this store since its leader
//! last reported it to the directory (read and written keys and bytes),
//! and a sample of the keys it served, for the scheduler's rules that look
//! at traffic: merging cold neighbours, load-based split and hot-region
//! balancing.
//!
//! The Kv API counts every request it serves for a region, whatever the
//! outcome of the engine read or the proposal (a lease read redone through
//! the poller counts twice; an estimate is all the rules need), on the
//! request's task: a few relaxed atomic adds in a `DashMap` entry, no lock
//! held across an await. The heartbeat loop takes a region's counts when it
//! reports the region ([`LoadSampler::take`]), which starts the next
//! interval, and forgets the regions this store no longer hosts. Counts of
//! a region this store does not lead (follower reads) accumulate until it
//! leads it or the region leaves; the interval reported then covers all of
//! it, so the rate stays right. The same reads and writes are counted
//! store-wide in `tessera_kv_served_keys_total` and
//! `tessera_kv_served_bytes_total` (by `op`): the per-store load an
//! operator (and `tessera-bench hot-range`) watches.
//!
//! **Key samples (load-based split).** Each request's first key enters a
//! reservoir of [`SAMPLES`] keys per region and interval (reservoir
//! sampling: every request of the interval has the same chance to be in
//! it, and the lock is taken only for a request that is sampled — rarely,
//! once the reservoir is full). At the report, [`split_key`] picks the
//! sampled key that divides the samples most evenly, and offers it only
//! when each side holds at least a quarter of them: one hot key cannot be
//! divided, and a split there would move nothing. The directory decides
//! whether the region is hot enough, for long enough, to split there.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use parking_lot::Mutex;
use rand::Rng as _;
use tessera_proto::directorypb::RegionLoad;

use crate::metrics as m;

/// Keys sampled per region and report interval.
pub const SAMPLES: usize = 64;

/// Samples needed before a split key is offered.
const MIN_SAMPLES: usize = 16;

/// Bytes of a sampled key kept (its prefix: still a boundary inside the
/// region, at most a little left of the key), so that a region's samples
/// take at most 16 KiB however long its keys are.
const MAX_SAMPLED_KEY: usize = 256;

struct Counters {
    read_keys: AtomicU64,
    read_bytes: AtomicU64,
    write_keys: AtomicU64,
    write_bytes: AtomicU64,
    /// Requests of this interval (the reservoir's denominator).
    requests: AtomicU64,
    samples: Mutex<Vec<Vec<u8>>>,
    since: Mutex<Instant>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            read_keys: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            write_keys: AtomicU64::new(0),
            write_bytes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            samples: Mutex::new(Vec::with_capacity(SAMPLES)),
            since: Mutex::new(Instant::now()),
        }
    }
}

impl Counters {
    /// Reservoir sampling of the requests' keys.
    fn sample(&self, key: &[u8]) {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let slot = if (n as usize) < SAMPLES {
            n as usize
        } else {
            rand::rng().random_range(0..=n) as usize
        };
        if slot >= SAMPLES {
            return;
        }
        let key = key[..key.len().min(MAX_SAMPLED_KEY)].to_vec();
        let mut samples = self.samples.lock();
        if let Some(s) = samples.get_mut(slot) {
            *s = key;
        } else if samples.len() < SAMPLES {
            // Racing requests may fill the slots out of order.
            samples.push(key);
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

    /// A read of `keys` keys and `bytes` bytes served for `region_id`,
    /// starting at `first_key`.
    pub fn read(&self, region_id: u64, keys: u64, bytes: u64, first_key: &[u8]) {
        metrics::counter!(m::SERVED_KEYS_TOTAL, "op" => "read").increment(keys);
        metrics::counter!(m::SERVED_BYTES_TOTAL, "op" => "read").increment(bytes);
        self.with(region_id, |c| {
            c.read_keys.fetch_add(keys, Ordering::Relaxed);
            c.read_bytes.fetch_add(bytes, Ordering::Relaxed);
            c.sample(first_key);
        });
    }

    /// A write of `keys` keys and `bytes` bytes (keys and values) proposed
    /// for `region_id`, starting at `first_key`.
    pub fn write(&self, region_id: u64, keys: u64, bytes: u64, first_key: &[u8]) {
        metrics::counter!(m::SERVED_KEYS_TOTAL, "op" => "write").increment(keys);
        metrics::counter!(m::SERVED_BYTES_TOTAL, "op" => "write").increment(bytes);
        self.with(region_id, |c| {
            c.write_keys.fetch_add(keys, Ordering::Relaxed);
            c.write_bytes.fetch_add(bytes, Ordering::Relaxed);
            c.sample(first_key);
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
        let mut samples = std::mem::take(&mut *c.samples.lock());
        c.requests.store(0, Ordering::Relaxed);
        RegionLoad {
            read_keys: c.read_keys.swap(0, Ordering::Relaxed),
            read_bytes: c.read_bytes.swap(0, Ordering::Relaxed),
            write_keys: c.write_keys.swap(0, Ordering::Relaxed),
            write_bytes: c.write_bytes.swap(0, Ordering::Relaxed),
            interval_ms: now.duration_since(since).as_millis() as u64,
            load_split_key: split_key(&mut samples).unwrap_or_default(),
        }
    }

    /// Forgets the regions not in `hosted` (moved away, merged, destroyed).
    pub fn retain(&self, hosted: &HashSet<u64>) {
        self.regions.retain(|id, _| hosted.contains(id));
    }
}

/// The sampled key that divides `samples` most evenly (keys below it to
/// the left, the rest to the right), if each side then holds at least a
/// quarter of them.
pub fn split_key(samples: &mut [Vec<u8>]) -> Option<Vec<u8>> {
    if samples.len() < MIN_SAMPLES {
        return None;
    }
    samples.sort_unstable();
    let n = samples.len();
    let best = (1..n)
        .filter(|&i| samples[i - 1] < samples[i])
        .min_by_key(|&i| i.abs_diff(n - i))?;
    let smaller = best.min(n - best);
    (smaller * 4 >= n).then(|| samples[best].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_takes_what_was_served_since_the_last_one() {
        let s = LoadSampler::default();
        s.read(1, 1, 5, b"a");
        s.read(1, 3, 7, b"b");
        s.write(1, 2, 100, b"c");
        s.write(2, 1, 10, b"d");
        let first = s.take(1);
        assert_eq!(
            (
                first.read_keys,
                first.read_bytes,
                first.write_keys,
                first.write_bytes
            ),
            (4, 12, 2, 100)
        );
        assert!(first.load_split_key.is_empty(), "three samples are too few");
        let second = s.take(1);
        assert_eq!(
            (second.read_keys, second.write_keys, second.write_bytes),
            (0, 0, 0)
        );
        assert_eq!(s.take(3), RegionLoad::default());
        s.retain(&HashSet::from([1]));
        assert_eq!(s.take(2), RegionLoad::default(), "region 2 was forgotten");
    }

    fn keys(spec: &[(&str, usize)]) -> Vec<Vec<u8>> {
        spec.iter()
            .flat_map(|(k, n)| std::iter::repeat_n(k.as_bytes().to_vec(), *n))
            .collect()
    }

    #[test]
    fn the_split_key_divides_the_sampled_requests_evenly() {
        let mut spread = keys(&[("k1", 8), ("k2", 8), ("k3", 8), ("k4", 8)]);
        assert_eq!(split_key(&mut spread), Some(b"k3".to_vec()));
        // A hot half and a cold tail: the key is where the load divides,
        // not the middle of the key range.
        let mut skewed = keys(&[("a", 1), ("b", 1), ("c", 14), ("d", 16)]);
        assert_eq!(split_key(&mut skewed), Some(b"d".to_vec()));
    }

    #[test]
    fn one_hot_key_or_too_few_samples_offer_no_split_key() {
        assert_eq!(split_key(&mut keys(&[("hot", 64)])), None);
        // One side would hold less than a quarter of the requests.
        assert_eq!(split_key(&mut keys(&[("a", 4), ("hot", 60)])), None);
        assert_eq!(split_key(&mut keys(&[("a", 5), ("b", 5)])), None);
    }

    #[test]
    fn a_long_key_is_sampled_by_its_prefix() {
        let s = LoadSampler::default();
        s.read(1, 1, 1, &[7u8; 8192]);
        let c = s.regions.get(&1).expect("counted");
        assert_eq!(c.samples.lock()[0], vec![7u8; MAX_SAMPLED_KEY]);
    }

    #[test]
    fn the_reservoir_keeps_at_most_its_size_and_starts_again_each_interval() {
        let s = LoadSampler::default();
        for i in 0..10_000u32 {
            s.write(1, 1, 1, format!("k{:05}", i).as_bytes());
        }
        let c = s.regions.get(&1).expect("counted");
        assert_eq!(c.samples.lock().len(), SAMPLES);
        drop(c);
        let load = s.take(1);
        // Uniform keys: the split key lands near the middle of k00000..k09999.
        let key = String::from_utf8(load.load_split_key).expect("utf-8");
        let n: u32 = key[1..].parse().expect("number");
        assert!((2_000..8_000).contains(&n), "split key {key}");
        assert_eq!(s.regions.get(&1).expect("kept").samples.lock().len(), 0);
    }
}
