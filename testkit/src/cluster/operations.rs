//! Region operations on a test cluster, carried out on the region's
//! leader as an operator would — split, membership changes, leader
//! transfer, moves — and the consistency check that compares what every
//! replica holds.

use std::time::{Duration, Instant};

use tessera_multiraft::region as region_util;
use tessera_proto::adminpb::ChangePeerKind;
use tessera_proto::metapb::Region;

use super::Cluster;
use tessera_store::{conf_change, split, transfer_leader, Error, Result};

impl Cluster {
    /// Splits `region_id` at `keys` (empty: at its middle) on its leader.
    pub async fn split(&self, region_id: u64, keys: Vec<Vec<u8>>) -> Result<Vec<Region>> {
        let regions = self
            .on_leader(region_id, |admin| {
                let keys = keys.clone();
                async move { split::split_region(&admin, region_id, keys).await }
            })
            .await?;
        for r in &regions {
            self.learn_region(r.clone());
        }
        Ok(regions)
    }

    pub async fn must_split(&self, region_id: u64, key: &[u8]) -> Vec<Region> {
        match self.split(region_id, vec![key.to_vec()]).await {
            Ok(r) => r,
            Err(e) => panic!("split of region {region_id} failed: {e}"),
        }
    }

    /// Changes the peer of `region_id` on `store_id` (through its leader).
    pub async fn change_peer(
        &self,
        region_id: u64,
        kind: ChangePeerKind,
        store_id: u64,
    ) -> Result<Region> {
        let region = self
            .on_leader(region_id, |admin| async move {
                conf_change::change_peer(&admin, region_id, kind, store_id, 0).await
            })
            .await?;
        self.learn_region(region.clone());
        self.directory.learn(region.clone());
        Ok(region)
    }

    pub async fn must_change_peer(
        &self,
        region_id: u64,
        kind: ChangePeerKind,
        store_id: u64,
    ) -> Region {
        match self.change_peer(region_id, kind, store_id).await {
            Ok(r) => r,
            Err(e) => panic!("{kind:?} of region {region_id} on store {store_id} failed: {e}"),
        }
    }

    /// Moves leadership of `region_id` to its peer on `store_id`.
    pub async fn transfer_leader(&self, region_id: u64, store_id: u64) -> Result<()> {
        self.on_leader(region_id, |admin| async move {
            transfer_leader::transfer_leader(&admin, region_id, store_id).await
        })
        .await?;
        self.leader_hint.lock().insert(region_id, store_id);
        Ok(())
    }

    pub async fn must_transfer_leader(&self, region_id: u64, store_id: u64) {
        if let Err(e) = self.transfer_leader(region_id, store_id).await {
            panic!("transfer of region {region_id} to store {store_id} failed: {e}");
        }
    }

    /// Waits until the peer of `region_id` on `store_id` has replicated as
    /// far as its leader has committed.
    pub async fn wait_peer_caught_up(
        &self,
        region_id: u64,
        store_id: u64,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self.wait_leader(region_id, timeout).await?;
            if let Some(node) = self.node(leader) {
                let infos = node.regions().await?;
                if let Some(info) = infos
                    .into_iter()
                    .find(|i| i.region.id == region_id && i.is_leader)
                {
                    let peer =
                        region_util::find_peer_on_store(&info.region, store_id).map(|p| p.id);
                    let matched = info
                        .progress
                        .iter()
                        .find(|p| Some(p.peer_id) == peer)
                        .map(|p| p.matched);
                    if matched.is_some_and(|m| m >= info.commit_index) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Moves the replica of `region_id` from `from` to `to`: add a learner on
    /// `to`, wait until it caught up, promote it, hand leadership away from
    /// `from` if needed, remove the peer on `from`.
    pub async fn move_peer(&self, region_id: u64, from: u64, to: u64) -> Result<Region> {
        self.change_peer(region_id, ChangePeerKind::AddLearner, to)
            .await?;
        self.wait_peer_caught_up(region_id, to, self.opts.client_deadline)
            .await?;
        self.change_peer(region_id, ChangePeerKind::PromoteLearner, to)
            .await?;
        if self
            .wait_leader(region_id, self.opts.client_deadline)
            .await?
            == from
        {
            self.transfer_leader(region_id, to).await?;
        }
        self.change_peer(region_id, ChangePeerKind::RemovePeer, from)
            .await
    }

    /// The user data of `region` as store `store_id`'s engine holds it.
    pub fn region_data(&self, store_id: u64, region: &Region) -> Vec<(Vec<u8>, Vec<u8>)> {
        let Some(engine) = self.engine(store_id) else {
            return vec![];
        };
        let mut out = vec![];
        engine
            .scan(
                tessera_multiraft::engine::Cf::Default,
                &region.start_key,
                &tessera_multiraft::state_keys::data_range_end(&region.end_key),
                false,
                &mut |k, v| {
                    out.push((k.to_vec(), v.to_vec()));
                    true
                },
            )
            .expect("engine scan");
        out
    }

    /// Waits until every region's replicas have caught up, then checks that
    /// every store holding a region holds the same region (same epoch and
    /// peers) and the same data for it.
    pub async fn assert_consistent(&self, timeout: Duration) {
        // Every region any store hosts.
        let mut ids = std::collections::BTreeSet::new();
        for id in self.store_ids() {
            if let Some(node) = self.node(id) {
                for info in node.regions().await.expect("inspect") {
                    ids.insert(info.region.id);
                }
            }
        }
        for region_id in ids {
            self.wait_leader(region_id, timeout)
                .await
                .unwrap_or_else(|e| panic!("region {region_id} has no leader: {e}"));
            self.wait_replicas_caught_up(region_id, timeout)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            // Caught up is about the log; applying it (a split, say) may
            // take a moment longer, so agreement with the leader's current
            // view (which a split still in flight may change) is awaited.
            let deadline = std::time::Instant::now() + timeout;
            let (region, infos) = loop {
                let infos = self.region_infos(region_id).await;
                let leader_view = infos
                    .iter()
                    .find(|(_, i)| i.is_leader)
                    .map(|(_, i)| i.region.clone());
                let agree = leader_view.as_ref().is_some_and(|region| {
                    region.peers.iter().all(|p| {
                        infos
                            .iter()
                            .any(|(s, i)| *s == p.store_id && i.region == *region)
                    })
                });
                if let Some(region) = leader_view {
                    if agree || std::time::Instant::now() > deadline {
                        break (region, infos);
                    }
                } else if std::time::Instant::now() > deadline {
                    panic!("region {region_id} lost its leader");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let region = &region;
            let reference = self.region_data(region.peers[0].store_id, region);
            for p in &region.peers {
                let Some((_, info)) = infos.iter().find(|(s, _)| *s == p.store_id) else {
                    panic!("store {} has no peer of region {region_id}", p.store_id);
                };
                assert_eq!(
                    info.region, *region,
                    "store {} disagrees about region {region_id}",
                    p.store_id
                );
                let data = self.region_data(p.store_id, region);
                assert!(
                    data == reference,
                    "store {} holds {} keys of region {region_id}, store {} holds {}",
                    p.store_id,
                    data.len(),
                    region.peers[0].store_id,
                    reference.len()
                );
            }
        }
    }
}
