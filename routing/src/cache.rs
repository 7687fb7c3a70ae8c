//! The region cache: what a router believes about regions, by start key.
//!
//! Entries are hints: a request carries the cached epoch, and a routing
//! error corrects the cache (`EpochNotMatch` brings the current regions,
//! `NotLeader` the leader). Inserting a region drops every cached region it
//! overlaps unless that one is newer, so the cache never holds two regions
//! for one key.

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;
use tessera_proto::metapb::{Peer, Region};
use tessera_proto::region::{contains_key, epoch, is_newer_report, overlaps, supersedes};

#[derive(Clone, Debug, PartialEq)]
pub struct CachedRegion {
    pub region: Region,
    pub leader: Option<Peer>,
}

#[derive(Default)]
pub struct RegionCache {
    by_start: RwLock<BTreeMap<Vec<u8>, CachedRegion>>,
}

impl RegionCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached region holding `key`.
    pub fn locate(&self, key: &[u8]) -> Option<CachedRegion> {
        let map = self.by_start.read();
        let (_, c) = map
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        contains_key(&c.region, key).then(|| c.clone())
    }

    /// Records `region` (and its leader, if known), dropping what it
    /// overlaps — unless a cached region wins (`tessera_proto::region`'s
    /// rules): the same region with a newer or incomparable epoch, or
    /// another region `region` does not supersede. Then `region` is stale
    /// and ignored.
    pub fn insert(&self, region: Region, leader: Option<Peer>) {
        let mut map = self.by_start.write();
        let overlapping: Vec<Vec<u8>> = map
            .iter()
            .filter(|(_, c)| overlaps(&c.region, &region))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &overlapping {
            let c = &map[k];
            let stale = if c.region.id == region.id {
                let (new, held) = (epoch(&region), epoch(&c.region));
                new != held && !is_newer_report(&new, &held)
            } else {
                !supersedes(&region, &c.region)
            };
            if stale {
                return;
            }
        }
        let mut kept_leader = None;
        for k in overlapping {
            if let Some(c) = map.remove(&k) {
                if c.region.id == region.id {
                    kept_leader = c.leader;
                }
            }
        }
        let leader = leader
            .or(kept_leader)
            .filter(|l| region.peers.iter().any(|p| p.id == l.id));
        map.insert(region.start_key.clone(), CachedRegion { region, leader });
    }

    pub fn set_leader(&self, region_id: u64, leader: Peer) {
        let mut map = self.by_start.write();
        if let Some(c) = map.values_mut().find(|c| c.region.id == region_id) {
            if c.region.peers.iter().any(|p| p.id == leader.id) {
                c.leader = Some(leader);
            }
        }
    }

    /// Forgets who leads a region (the leader did not answer).
    pub fn clear_leader(&self, region_id: u64) {
        let mut map = self.by_start.write();
        if let Some(c) = map.values_mut().find(|c| c.region.id == region_id) {
            c.leader = None;
        }
    }

    /// Forgets a region (it moved, or its store is gone).
    pub fn invalidate(&self, region_id: u64) {
        self.by_start
            .write()
            .retain(|_, c| c.region.id != region_id);
    }

    pub fn len(&self) -> usize {
        self.by_start.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::metapb::RegionEpoch;

    fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(RegionEpoch::new(1, version)),
            peers: vec![Peer {
                id: id * 10,
                store_id: 1,
                role: 0,
            }],
        }
    }

    #[test]
    fn newer_regions_replace_what_they_overlap_and_stale_ones_do_not() {
        let c = RegionCache::new();
        c.insert(region(1, b"", b"", 1), None);
        assert_eq!(c.locate(b"q").unwrap().region.id, 1);
        // A split: both halves replace the old region.
        c.insert(region(1, b"", b"m", 2), None);
        c.insert(region(2, b"m", b"", 2), None);
        assert_eq!(c.locate(b"a").unwrap().region.id, 1);
        assert_eq!(c.locate(b"z").unwrap().region.id, 2);
        assert_eq!(c.len(), 2);
        // The old version again: ignored.
        c.insert(region(1, b"", b"", 1), None);
        assert_eq!(c.locate(b"z").unwrap().region.id, 2);
        c.set_leader(
            2,
            Peer {
                id: 20,
                store_id: 1,
                role: 0,
            },
        );
        assert_eq!(c.locate(b"z").unwrap().leader.unwrap().id, 20);
        c.set_leader(
            2,
            Peer {
                id: 99,
                store_id: 1,
                role: 0,
            },
        );
        assert_eq!(
            c.locate(b"z").unwrap().leader.unwrap().id,
            20,
            "not a peer of the region"
        );
        c.invalidate(2);
        assert!(c.locate(b"z").is_none());
    }
}
