//! Which peers of the regions this store leads are reported **down**: a
//! peer the leader has heard nothing from for `peer_down_after`
//! (`peer_down_after_ms` in the store's configuration, 10 s by default).
//!
//! Raft's own "recently active" flag is not that: a new leader starts
//! with every follower inactive until its first answer, and check-quorum
//! clears the flags every election timeout, so a report taken at the wrong
//! moment would call a healthy follower (after a leader transfer, every
//! one of them) down. Here a peer is down only when every report of its
//! region for `peer_down_after` found it inactive; one look that finds it
//! active clears it. The leader never counts itself. What is down is shown
//! by `tessera region list`; the directory's repairs decide from store
//! liveness, not from this.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tessera_multiraft::mailbox::RegionInfo;
use tessera_proto::metapb::Peer;

/// The default `peer_down_after`.
pub const PEER_DOWN_AFTER: Duration = Duration::from_secs(10);

/// Since when each (region, peer) has been found inactive, for the
/// regions this store leads.
pub struct DownPeers {
    after: Duration,
    silent_since: Mutex<HashMap<(u64, u64), Instant>>,
}

impl DownPeers {
    pub fn new(after: Duration) -> Self {
        DownPeers {
            after,
            silent_since: Mutex::default(),
        }
    }

    /// The peers of `info`'s region (led here) that are down at `now`.
    pub fn observe(&self, info: &RegionInfo, now: Instant) -> Vec<Peer> {
        let region_id = info.region.id;
        let mut silent = self.silent_since.lock();
        let mut down = vec![];
        for p in &info.progress {
            let key = (region_id, p.peer_id);
            if p.recent_active || p.peer_id == info.peer_id {
                silent.remove(&key);
                continue;
            }
            let since = *silent.entry(key).or_insert(now);
            if now.duration_since(since) >= self.after {
                if let Some(peer) = info.region.peers.iter().find(|q| q.id == p.peer_id) {
                    down.push(*peer);
                }
            }
        }
        down
    }

    /// Forgets regions this store no longer leads: a leader that comes
    /// back starts from "not down".
    pub fn retain_leading(&self, leading: &[u64]) {
        let leading: std::collections::HashSet<u64> = leading.iter().copied().collect();
        self.silent_since
            .lock()
            .retain(|(region, _), _| leading.contains(region));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_multiraft::mailbox::PeerProgress;
    use tessera_proto::metapb::{PeerRole, Region};

    fn info(active: &[(u64, bool)]) -> RegionInfo {
        let peer = |id: u64| Peer {
            id,
            store_id: id,
            role: PeerRole::Voter as i32,
        };
        RegionInfo {
            region: Region {
                id: 7,
                peers: vec![peer(1), peer(2), peer(3)],
                ..Default::default()
            },
            peer_id: 1,
            is_leader: true,
            progress: active
                .iter()
                .map(|&(peer_id, recent_active)| PeerProgress {
                    peer_id,
                    matched: 10,
                    recent_active,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_peer_is_down_only_after_being_silent_for_the_whole_period() {
        let d = DownPeers::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let ids = |v: Vec<Peer>| v.iter().map(|p| p.id).collect::<Vec<_>>();
        // A new leader: nobody has answered yet, the leader itself included.
        let fresh = info(&[(1, false), (2, false), (3, false)]);
        assert!(d.observe(&fresh, t0).is_empty());
        assert!(d
            .observe(
                &info(&[(1, false), (2, true), (3, false)]),
                t0 + Duration::from_secs(5)
            )
            .is_empty());
        // Peer 3 stayed silent for 10 s; peer 2 answered in between; the
        // leader never counts itself.
        assert_eq!(
            ids(d.observe(&fresh, t0 + Duration::from_secs(10))),
            vec![3]
        );
        // Peer 2 has been silent since 10 s only.
        assert_eq!(
            ids(d.observe(&fresh, t0 + Duration::from_secs(15))),
            vec![3]
        );
        assert_eq!(
            ids(d.observe(&fresh, t0 + Duration::from_secs(20))),
            vec![2, 3]
        );
        // One answer clears it.
        assert_eq!(
            ids(d.observe(
                &info(&[(1, true), (2, true), (3, false)]),
                t0 + Duration::from_secs(21)
            )),
            vec![3]
        );
        // Leadership lost and regained: counted again from the start.
        d.retain_leading(&[]);
        assert!(d.observe(&fresh, t0 + Duration::from_secs(22)).is_empty());
    }
}
