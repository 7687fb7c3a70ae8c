//! Finding the region that owns a key: the cache first, then the
//! directory, prefetching the regions that follow (sequential access is
//! common), and choosing the peer to address.

use tessera_proto::directorypb::{GetRegionRequest, ScanRegionsRequest};
use tessera_proto::metapb::{Peer, PeerRole, Region};

use crate::cache::CachedRegion;
use crate::metrics as m;
use crate::reaction::SendPolicy;
use crate::{Error, Result, Router};

/// Regions fetched after a missed one.
const PREFETCH_REGIONS: u32 = 8;

impl Router {
    /// The region holding `key` (encoded), from the cache or the directory.
    pub(crate) async fn locate(&self, key: &[u8]) -> Result<CachedRegion> {
        if let Some(c) = self.cache.locate(key) {
            metrics::counter!(m::CACHE_HITS_TOTAL).increment(1);
            return Ok(c);
        }
        metrics::counter!(m::CACHE_MISSES_TOTAL).increment(1);
        let info = self
            .dir
            .call("get region", |mut c| {
                let req = GetRegionRequest { key: key.to_vec() };
                async move { c.get_region(req).await }
            })
            .await?
            .region
            .ok_or_else(|| Error::directory("the directory knows no region for the key"))?;
        let region = info.region.unwrap_or_default();
        let end = region.end_key.clone();
        self.cache.insert(region.clone(), info.leader);
        if !end.is_empty() {
            let next = self
                .dir
                .call("scan regions", |mut c| {
                    let req = ScanRegionsRequest {
                        start_key: end.clone(),
                        end_key: vec![],
                        limit: PREFETCH_REGIONS,
                    };
                    async move { c.scan_regions(req).await }
                })
                .await;
            // A prefetch that failed costs a lookup later, nothing more.
            if let Ok(r) = next {
                for info in r.regions {
                    if let Some(reg) = info.region {
                        self.cache.insert(reg, info.leader);
                    }
                }
            }
        }
        Ok(self.cache.locate(key).unwrap_or(CachedRegion {
            region,
            leader: None,
        }))
    }

    /// Regions overlapping `[start, end)`, straight from the directory.
    pub(crate) async fn regions_in(&self, start: &[u8], end: &[u8]) -> Result<Vec<Region>> {
        let r = self
            .dir
            .call("scan regions", |mut c| {
                let req = ScanRegionsRequest {
                    start_key: start.to_vec(),
                    end_key: end.to_vec(),
                    limit: 0,
                };
                async move { c.scan_regions(req).await }
            })
            .await?;
        let mut out = vec![];
        for info in r.regions {
            if let Some(reg) = info.region {
                self.cache.insert(reg.clone(), info.leader);
                out.push(reg);
            }
        }
        Ok(out)
    }

    /// Groups encoded keys by the region that holds them.
    pub(crate) async fn group(
        &self,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<(CachedRegion, Vec<Vec<u8>>)>> {
        let mut groups: Vec<(CachedRegion, Vec<Vec<u8>>)> = vec![];
        for k in keys {
            let c = self.locate(&k).await?;
            match groups.iter_mut().find(|(g, _)| g.region.id == c.region.id) {
                Some((_, ks)) => ks.push(k),
                None => groups.push((c, vec![k])),
            }
        }
        Ok(groups)
    }
}

/// The peer to address in `c`: the cached leader, else a voter chosen by
/// `attempt` so retries rotate. A follower read ([`SendPolicy::AnyVoter`])
/// goes to the voters in turn from `spread` on, leader or not.
pub(crate) fn target(
    c: &CachedRegion,
    attempt: usize,
    policy: SendPolicy,
    spread: usize,
) -> Option<Peer> {
    let attempt = match (policy, c.leader) {
        (SendPolicy::AnyVoter, _) => attempt.wrapping_add(spread),
        (_, Some(l)) => return Some(l),
        (_, None) => attempt,
    };
    let voters: Vec<&Peer> = c
        .region
        .peers
        .iter()
        .filter(|p| p.role == PeerRole::Voter as i32)
        .collect();
    (!voters.is_empty()).then(|| *voters[attempt % voters.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, role: PeerRole) -> Peer {
        Peer {
            id,
            store_id: id,
            role: role as i32,
        }
    }

    fn cached(leader: Option<u64>) -> CachedRegion {
        CachedRegion {
            region: Region {
                id: 1,
                peers: vec![
                    peer(1, PeerRole::Voter),
                    peer(2, PeerRole::Voter),
                    peer(3, PeerRole::Voter),
                    peer(4, PeerRole::Learner),
                ],
                ..Default::default()
            },
            leader: leader.map(|l| peer(l, PeerRole::Voter)),
        }
    }

    #[test]
    fn leader_reads_and_writes_go_to_the_leader_follower_reads_to_every_voter() {
        let c = cached(Some(2));
        for policy in [SendPolicy::Resendable, SendPolicy::AtMostOnce] {
            for attempt in 0..5 {
                assert_eq!(target(&c, attempt, policy, 7).unwrap().id, 2);
            }
        }
        // Follower reads rotate over the voters (never the learner), the
        // leader among them, whatever the cache says of the leader.
        for c in [cached(Some(2)), cached(None)] {
            let ids: std::collections::BTreeSet<u64> = (0..6)
                .map(|spread| target(&c, 0, SendPolicy::AnyVoter, spread).unwrap().id)
                .collect();
            assert_eq!(ids, [1, 2, 3].into());
        }
        // Without a known leader, attempts rotate over the voters.
        let c = cached(None);
        let ids: std::collections::BTreeSet<u64> = (0..3)
            .map(|a| target(&c, a, SendPolicy::Resendable, 0).unwrap().id)
            .collect();
        assert_eq!(ids, [1, 2, 3].into());
        let empty = CachedRegion {
            region: Region::default(),
            leader: None,
        };
        assert!(target(&empty, 0, SendPolicy::AnyVoter, 0).is_none());
    }
}
