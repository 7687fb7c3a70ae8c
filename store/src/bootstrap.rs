//! How a store joins a cluster.
//!
//! 1. **Identity.** A store's id is allocated by the directory the first time
//!    it starts and kept in the engine (`StoreIdent`) with the cluster's id
//!    and the store's own secret, so a restarted store comes back as itself.
//!    On every start it (re-)registers its current address and labels,
//!    presenting its secret (only its holder may change the registration)
//!    and, the first time, the cluster's join token. A store whose recorded
//!    cluster id is not the directory's refuses to start, naming both
//!    (the directory's half is `tessera-directory`'s `join` module).
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

use crate::directory_client::{DirectoryClient, Registration};
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
            // Recorded by the directory; a registration never sets it.
            evict_leaders: false,
        }
    }
}

/// The id this engine belongs to, if it ever joined a cluster.
pub fn load_store_ident(engine: &dyn Engine) -> Result<Option<StoreIdent>> {
    engine
        .get_msg::<StoreIdent>(Cf::Meta, state_keys::STORE_IDENT_KEY)
        .map_err(Error::from)
}

/// Who this store is: its id and its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Joined {
    pub store_id: u64,
    pub cluster_id: u64,
}

/// Learns the cluster's id, allocates and persists this store's identity
/// on first start (or checks the recorded one), and registers the store's
/// current address with the directory. `join_token` is needed the first
/// time only.
pub async fn join(
    engine: &Arc<dyn Engine>,
    directory: &dyn DirectoryClient,
    me: &StoreDescriptor,
    join_token: Option<&str>,
) -> Result<Joined> {
    let cluster_id = directory.cluster_id().await?;
    let ident = match load_store_ident(engine.as_ref())? {
        Some(ident) if ident.cluster_id != 0 => {
            tessera_security::cluster::check(ident.cluster_id, cluster_id, "store_start").map_err(
                |m| {
                    Error::OtherCluster(tessera_security::cluster::Mismatch {
                        from: "directory",
                        ..m
                    })
                },
            )?;
            if ident.secret.is_empty() {
                adopt(engine, ident, cluster_id)?
            } else {
                ident
            }
        }
        // Written before stores recorded their cluster and secret.
        Some(ident) => adopt(engine, ident, cluster_id)?,
        None => {
            let id = directory.alloc_ids(1).await?[0];
            let ident = StoreIdent {
                cluster_id,
                store_id: id,
                secret: tessera_security::secret::generate(),
            };
            save(engine, &ident)?;
            tracing::info!(
                store_id = id,
                cluster_id,
                "allocated this store's id; registering"
            );
            ident
        }
    };
    directory
        .register(Registration {
            store: me.to_store(ident.store_id),
            cluster_id: ident.cluster_id,
            secret: ident.secret.clone(),
            join_token: join_token.map(str::to_string),
        })
        .await?;
    Ok(Joined {
        store_id: ident.store_id,
        cluster_id: ident.cluster_id,
    })
}

fn save(engine: &Arc<dyn Engine>, ident: &StoreIdent) -> Result<()> {
    let mut wb = WriteBatch::default();
    wb.put_msg(Cf::Meta, state_keys::STORE_IDENT_KEY.to_vec(), ident);
    engine.write(&wb, true)?;
    Ok(())
}

/// Completes an identity recorded by an older version: this cluster's id
/// and a new secret (the directory adopts the first secret a store it
/// already knows presents).
fn adopt(engine: &Arc<dyn Engine>, mut ident: StoreIdent, cluster_id: u64) -> Result<StoreIdent> {
    if ident.cluster_id == 0 {
        ident.cluster_id = cluster_id;
    }
    if ident.secret.is_empty() {
        ident.secret = tessera_security::secret::generate();
    }
    save(engine, &ident)?;
    tracing::info!(
        store_id = ident.store_id,
        cluster_id,
        "recorded this store's cluster and secret"
    );
    Ok(ident)
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
