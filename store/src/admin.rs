//! The store's admin operations, for the directory and the CLI: split,
//! merge, membership changes, leader transfer and region status. Each operation
//! lives in its own module; this one holds what they share and maps them to
//! the `StoreAdmin` gRPC service's messages.
//!
//! Operations that change a region run on its leader: elsewhere they fail
//! with NotLeader naming the leader, like data requests.

use std::sync::Arc;
use std::time::Duration;

use tessera_multiraft::engine::{Cf, Engine};
use tessera_multiraft::mailbox::RegionInfo;
use tessera_multiraft::{state_keys as raft_keys, Mailbox};
use tessera_proto::adminpb::{PeerProgress, RegionStatus};
use tessera_proto::errorpb::RegionError;
use tokio::sync::oneshot;

use crate::directory_client::DirectoryClient;
use crate::kv::KvOutput;
use crate::merge::TargetLeaders;
use crate::{Error, Result};

pub struct AdminApi {
    store_id: u64,
    mailbox: Mailbox<KvOutput>,
    engine: Arc<dyn Engine>,
    directory: Arc<dyn DirectoryClient>,
    timeout: Duration,
    /// How merges reach their target's leader on other stores (set once
    /// the process can dial them; see `merge`).
    target_leaders: std::sync::OnceLock<Arc<dyn TargetLeaders>>,
    /// Merging sources a driver runs for on this store.
    merge_drivers: parking_lot::Mutex<std::collections::HashSet<u64>>,
    merge_catch_up_timeout: parking_lot::Mutex<Duration>,
}

impl AdminApi {
    pub fn new(
        store_id: u64,
        mailbox: Mailbox<KvOutput>,
        engine: Arc<dyn Engine>,
        directory: Arc<dyn DirectoryClient>,
        timeout: Duration,
    ) -> Self {
        AdminApi {
            store_id,
            mailbox,
            engine,
            directory,
            timeout,
            target_leaders: std::sync::OnceLock::new(),
            merge_drivers: Default::default(),
            merge_catch_up_timeout: parking_lot::Mutex::new(crate::merge::CATCH_UP_TIMEOUT),
        }
    }

    /// How long a merging source led here waits for its peers to catch up.
    pub fn set_merge_catch_up_timeout(&self, timeout: Duration) {
        *self.merge_catch_up_timeout.lock() = timeout;
    }

    pub fn merge_catch_up_timeout(&self) -> Duration {
        *self.merge_catch_up_timeout.lock()
    }

    /// Lets merges driven here reach target leaders on other stores.
    pub fn set_target_leaders(&self, remote: Arc<dyn TargetLeaders>) {
        let _ = self.target_leaders.set(remote);
    }

    pub fn target_leaders(&self) -> Option<&Arc<dyn TargetLeaders>> {
        self.target_leaders.get()
    }

    pub fn merge_drivers(&self) -> &parking_lot::Mutex<std::collections::HashSet<u64>> {
        &self.merge_drivers
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    pub fn mailbox(&self) -> &Mailbox<KvOutput> {
        &self.mailbox
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub fn directory(&self) -> &Arc<dyn DirectoryClient> {
        &self.directory
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Waits for a poller callback, up to the admin timeout.
    pub async fn wait<T>(&self, rx: oneshot::Receiver<tessera_multiraft::Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => Err(Error::Timeout(self.timeout)),
            Ok(Err(_)) => Err(Error::Shutdown),
            Ok(Ok(r)) => r.map_err(Error::from),
        }
    }

    /// This store's view of `region_id`.
    pub async fn region_info(&self, region_id: u64) -> Result<RegionInfo> {
        self.mailbox
            .inspect_region(region_id)
            .await?
            .ok_or_else(|| Error::region(RegionError::region_not_found(region_id)))
    }

    /// `region_id` as its leader sees it; NotLeader if this store does not
    /// lead it.
    pub async fn leader_info(&self, region_id: u64) -> Result<RegionInfo> {
        let info = self.region_info(region_id).await?;
        if !info.is_leader {
            return Err(Error::region(RegionError::not_leader(
                region_id,
                info.leader,
            )));
        }
        Ok(info)
    }

    /// Status of one region (or all, with `region_id` 0) for the CLI.
    pub async fn status(&self, region_id: u64) -> Result<Vec<RegionStatus>> {
        let infos = if region_id == 0 {
            self.mailbox.inspect().await?
        } else {
            vec![self.region_info(region_id).await?]
        };
        let mut out = Vec::with_capacity(infos.len());
        for i in infos {
            let size = self
                .engine
                .approximate_size(
                    Cf::Default,
                    &i.region.start_key,
                    &raft_keys::data_range_end(&i.region.end_key),
                )
                .unwrap_or(0);
            out.push(RegionStatus {
                leader: i.leader,
                is_leader: i.is_leader,
                term: i.term,
                commit_index: i.commit_index,
                applied_index: i.applied_index,
                last_index: i.last_index,
                truncated_index: i.truncated_index,
                approximate_size_bytes: size,
                progress: i
                    .progress
                    .iter()
                    .map(|p| PeerProgress {
                        peer_id: p.peer_id,
                        matched: p.matched,
                        recent_active: p.recent_active,
                    })
                    .collect(),
                region: Some(i.region),
            });
        }
        Ok(out)
    }
}
