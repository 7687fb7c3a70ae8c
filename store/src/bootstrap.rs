//! How a store joins a cluster.
//!
//! 1. **Identity.** A store's id is allocated by the directory the first time
//!    it starts and kept in the engine (`StoreIdent`), so a restarted store
//!    comes back as itself. On every start it (re-)registers its current
//!    address and labels.
//! 2. **Bootstrap.** If the directory has no regions yet, the store creates
//!    the first region — the whole key space, one voter on itself — and asks
//!    the directory to record it. The directory accepts exactly one
//!    bootstrap; a store that loses the race destroys its local copy (it was
//!    never used). Replicas are added later by the directory's scheduler.

use std::sync::Arc;

use tessera_multiraft::engine::{Cf, Engine, EngineExt, WriteBatch};
use tessera_multiraft::state_keys;
use tessera_proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store, StoreLabel, StoreState};
use tessera_proto::raft_serverpb::StoreIdent;

use crate::directory_client::DirectoryClient;
use crate::node::StoreNode;
use crate::{Error, Result};

/// What a store tells the directory about itself.
#[derive(Clone, Debug, Default)]
pub struct StoreDescriptor {
    pub address: String,
    pub status_address: String,
    pub labels: Vec<(String, String)>,
}

impl StoreDescriptor {
    pub fn to_store(&self, store_id: u64) -> Store {
        Store {
            id: store_id,
            address: self.address.clone(),
            state: StoreState::Up as i32,
            labels: self
                .labels
                .iter()
                .map(|(k, v)| StoreLabel {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            status_address: self.status_address.clone(),
        }
    }
}

/// The id this engine belongs to, if it ever joined a cluster.
pub fn load_store_ident(engine: &dyn Engine) -> Result<Option<StoreIdent>> {
    engine
        .get_msg::<StoreIdent>(Cf::Meta, state_keys::STORE_IDENT_KEY)
        .map_err(Error::from)
}

/// Returns this store's id, allocating and persisting one on first start,
/// and registers the store's current address with the directory.
pub async fn join(
    engine: &Arc<dyn Engine>,
    directory: &dyn DirectoryClient,
    me: &StoreDescriptor,
) -> Result<u64> {
    let store_id = match load_store_ident(engine.as_ref())? {
        Some(ident) => ident.store_id,
        None => {
            let id = directory.alloc_ids(1).await?[0];
            let mut wb = WriteBatch::default();
            wb.put_msg(
                Cf::Meta,
                state_keys::STORE_IDENT_KEY.to_vec(),
                &StoreIdent {
                    cluster_id: 0,
                    store_id: id,
                },
            );
            engine.write(&wb, true)?;
            tracing::info!(store_id = id, "this store joined the cluster");
            id
        }
    };
    directory.put_store(me.to_store(store_id)).await?;
    Ok(store_id)
}

/// Creates the cluster's first region on this store if the directory has
/// none yet.
pub async fn bootstrap_if_needed(
    node: &StoreNode,
    directory: &dyn DirectoryClient,
    me: &StoreDescriptor,
) -> Result<()> {
    if directory.is_bootstrapped().await? {
        return Ok(());
    }
    let local = node.regions().await?;
    let region = match local.into_iter().next() {
        // A previous attempt created it and stopped before the directory
        // recorded it.
        Some(info) => info.region,
        None => {
            let ids = directory.alloc_ids(2).await?;
            let region = Region {
                id: ids[0],
                start_key: vec![],
                end_key: vec![],
                region_epoch: Some(RegionEpoch::new(1, 1)),
                peers: vec![Peer {
                    id: ids[1],
                    store_id: node.store_id(),
                    role: PeerRole::Voter as i32,
                }],
            };
            node.create_region(region.clone()).await?;
            region
        }
    };
    match directory
        .bootstrap(me.to_store(node.store_id()), region.clone())
        .await
    {
        Ok(()) => {
            tracing::info!(
                region_id = region.id,
                "bootstrapped the cluster with its first region"
            );
            node.mailbox()
                .send(tessera_multiraft::mailbox::PollerMsg::Campaign {
                    region_id: region.id,
                })?;
            Ok(())
        }
        Err(e) if directory.is_bootstrapped().await.unwrap_or(false) => {
            tracing::info!(error = %e, "another store bootstrapped the cluster first");
            node.mailbox().destroy_region(region.id).await?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}
