//! The store's [`DirectoryClient`] over gRPC: a thin layer over the
//! leader-following [`DirectoryConn`] of `tessera-common`.

use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use tessera_proto::directorypb::*;
use tessera_proto::metapb::{Region, Store};
use tessera_routing::directory::DirectoryConn;

use super::{DirectoryClient, RegionHeartbeatStream, Registration};
use crate::{Error, Result};

pub struct GrpcDirectoryClient {
    conn: DirectoryConn,
    /// This store's cluster, once registered: stamped on heartbeats.
    ours: OnceLock<u64>,
}

fn map(e: tessera_routing::Error) -> Error {
    use tessera_routing::Error as E;
    match e {
        E::Refused { message, .. } => Error::Refused(message),
        E::Directory { message, .. } | E::DirectoryUnreachable(message) => {
            Error::Directory(message)
        }
        other => Error::Directory(other.to_string()),
    }
}

impl GrpcDirectoryClient {
    /// A client for the directory members at `endpoints` (`host:port`). No
    /// connection is made until the first call.
    pub fn new(
        endpoints: Vec<String>,
        call_deadline: Duration,
        security: tessera_security::Security,
    ) -> Result<Self> {
        Ok(GrpcDirectoryClient {
            conn: DirectoryConn::new(endpoints, call_deadline, security)
                .map_err(|e| Error::Config(e.to_string()))?,
            ours: OnceLock::new(),
        })
    }

    fn ours(&self) -> u64 {
        self.ours.get().copied().unwrap_or(0)
    }
}

#[tonic::async_trait]
impl DirectoryClient for GrpcDirectoryClient {
    async fn is_bootstrapped(&self) -> Result<bool> {
        let r = self
            .conn
            .call("is bootstrapped", |mut c| async move {
                c.is_bootstrapped(IsBootstrappedRequest {}).await
            })
            .await
            .map_err(map)?;
        Ok(r.bootstrapped)
    }

    async fn bootstrap(&self, store: Store, region: Region) -> Result<()> {
        self.conn
            .call("bootstrap", |mut c| {
                let req = BootstrapRequest {
                    store: Some(store.clone()),
                    region: Some(region.clone()),
                };
                async move { c.bootstrap(req).await }
            })
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn alloc_ids(&self, count: u32) -> Result<Vec<u64>> {
        let r = self
            .conn
            .call("allocate ids", |mut c| async move {
                c.alloc_ids(AllocIdsRequest { count }).await
            })
            .await
            .map_err(map)?;
        if r.count < count {
            return Err(Error::Directory(format!(
                "asked for {count} ids, got {}",
                r.count
            )));
        }
        Ok((r.first..r.first + count as u64).collect())
    }

    async fn cluster_id(&self) -> Result<u64> {
        self.is_bootstrapped().await?;
        match self.conn.cluster_id() {
            0 => Err(Error::Directory(
                "the directory has not chosen the cluster's id yet".into(),
            )),
            id => Ok(id),
        }
    }

    async fn register(&self, r: Registration) -> Result<()> {
        self.conn
            .call("register store", |mut c| {
                let req = PutStoreRequest {
                    store: Some(r.store.clone()),
                    cluster_id: r.cluster_id,
                    store_secret: r.secret.clone(),
                    join_token: r.join_token.clone().unwrap_or_default(),
                };
                async move { c.put_store(req).await }
            })
            .await
            .map_err(map)?;
        let _ = self.ours.set(r.cluster_id);
        Ok(())
    }

    async fn get_store(&self, store_id: u64) -> Result<Store> {
        let r = self
            .conn
            .call("get store", |mut c| async move {
                c.get_store(GetStoreRequest { store_id }).await
            })
            .await
            .map_err(map)?;
        r.store.ok_or_else(|| {
            Error::Directory(format!("store {store_id} is unknown to the directory"))
        })
    }

    async fn get_region(&self, region_id: u64) -> Result<Option<Region>> {
        let r = self
            .conn
            .call("get region", |mut c| async move {
                c.get_region_by_id(GetRegionByIdRequest { region_id }).await
            })
            .await
            .map_err(map)?;
        Ok(r.region.and_then(|r| r.region))
    }

    async fn store_heartbeat(&self, stats: StoreStats) -> Result<Vec<u64>> {
        let r = self
            .conn
            .call("store heartbeat", |mut c| {
                let req = StoreHeartbeatRequest {
                    stats: Some(stats),
                    cluster_id: self.ours(),
                };
                async move { c.store_heartbeat(req).await }
            })
            .await
            .map_err(map)?;
        Ok(r.report_regions)
    }

    async fn region_heartbeats(&self) -> Result<RegionHeartbeatStream> {
        let (addr, mut client) = self.conn.pick().map_err(map)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<RegionReport>(1024);
        let cluster_id = self.ours();
        let requests = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |report| {
            RegionHeartbeatRequest {
                report: Some(report),
                cluster_id,
            }
        });
        let replies = match client.region_heartbeat(requests).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                self.conn.forget_leader();
                return Err(Error::Directory(format!(
                    "region heartbeats to {addr}: {}",
                    status.message()
                )));
            }
        };
        // A follower answers once with NOT_LEADER and ends the stream; the
        // next stream goes to the leader it named.
        let hint = self.conn.leader_hint();
        let replies = replies
            .map(move |r| match r {
                Ok(resp) => match resp.header.as_ref().and_then(|h| h.error.as_ref()) {
                    Some(e) if e.kind == directory_error::Kind::NotLeader as i32 => {
                        if !e.leader_address.is_empty() {
                            *hint.lock() = Some(e.leader_address.clone());
                        }
                        Err(Error::Directory(format!(
                            "{addr} is not the directory leader"
                        )))
                    }
                    Some(e) => Err(Error::Directory(e.message.clone())),
                    None => Ok(resp),
                },
                Err(status) if tessera_routing::directory::is_refusal(status.code()) => {
                    Err(Error::Refused(status.message().to_string()))
                }
                Err(status) => Err(Error::Directory(format!(
                    "region heartbeat stream: {}",
                    status.message()
                ))),
            })
            .boxed();
        Ok(RegionHeartbeatStream {
            reports: tx,
            replies,
        })
    }
}
