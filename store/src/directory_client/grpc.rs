//! The gRPC client of the `tessera-directory` service.
//!
//! The directory is a Raft group of 3 or 5 members; only its leader
//! answers. A follower replies `NOT_LEADER` with the leader's address, which
//! the client follows right away. When a member cannot be reached the client
//! tries the next configured address, backing off exponentially (50 ms up to
//! 1 s) until the call's deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tessera_proto::directorypb::directory_client::DirectoryClient as Rpc;
use tessera_proto::directorypb::*;
use tessera_proto::metapb::{Region, Store};
use tonic::transport::{Channel, Endpoint};

use super::DirectoryClient;
use crate::{Error, Result};

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Responses with a header.
trait Headed {
    fn header(&self) -> Option<&ResponseHeader>;
}

macro_rules! headed {
    ($($t:ty),*) => {$(
        impl Headed for $t {
            fn header(&self) -> Option<&ResponseHeader> {
                self.header.as_ref()
            }
        }
    )*};
}

headed!(
    IsBootstrappedResponse,
    BootstrapResponse,
    AllocIdsResponse,
    PutStoreResponse,
    GetStoreResponse,
    StoreHeartbeatResponse,
    RegionHeartbeatResponse
);

pub struct GrpcDirectoryClient {
    endpoints: Vec<String>,
    /// The member believed to lead, and a channel to it.
    leader: Mutex<Option<(String, Rpc<Channel>)>>,
    next: Mutex<usize>,
    call_deadline: Duration,
    cluster_id: Mutex<u64>,
}

fn channel(addr: &str) -> Result<Rpc<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::Config(format!("bad directory address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    Ok(Rpc::new(endpoint.connect_lazy()))
}

impl GrpcDirectoryClient {
    /// A client for the directory members at `endpoints` (`host:port`). No
    /// connection is made until the first call.
    pub fn new(endpoints: Vec<String>, call_deadline: Duration) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::Config("no directory address given".into()));
        }
        for e in &endpoints {
            channel(e)?;
        }
        Ok(GrpcDirectoryClient {
            endpoints,
            leader: Mutex::new(None),
            next: Mutex::new(0),
            call_deadline,
            cluster_id: Mutex::new(0),
        })
    }

    /// The cluster id the directory reported, once known.
    pub fn cluster_id(&self) -> u64 {
        *self.cluster_id.lock()
    }

    fn pick(&self) -> Result<(String, Rpc<Channel>)> {
        if let Some(l) = self.leader.lock().clone() {
            return Ok(l);
        }
        let mut next = self.next.lock();
        let addr = self.endpoints[*next % self.endpoints.len()].clone();
        *next += 1;
        let client = channel(&addr)?;
        *self.leader.lock() = Some((addr.clone(), client.clone()));
        Ok((addr, client))
    }

    async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        T: Headed,
        F: FnMut(Rpc<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.call_deadline;
        let mut backoff = MIN_BACKOFF;
        let mut last;
        loop {
            let (addr, client) = self.pick()?;
            match f(client).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    let header = resp.header().cloned().unwrap_or_default();
                    if header.cluster_id != 0 {
                        *self.cluster_id.lock() = header.cluster_id;
                    }
                    let Some(err) = header.error else {
                        return Ok(resp);
                    };
                    if err.kind == directory_error::Kind::NotLeader as i32 {
                        last = format!("{addr} is not the leader");
                        let leader = if err.leader_address.is_empty() || err.leader_address == addr
                        {
                            None
                        } else {
                            Some((err.leader_address.clone(), channel(&err.leader_address)?))
                        };
                        let known = leader.is_some();
                        *self.leader.lock() = leader;
                        if known {
                            continue;
                        }
                    } else {
                        return Err(Error::Directory(format!("{what}: {}", err.message)));
                    }
                }
                Err(status) => {
                    last = format!("{addr}: {}", status.message());
                    *self.leader.lock() = None;
                }
            }
            if Instant::now() + backoff > deadline {
                return Err(Error::Directory(format!(
                    "{what}: no directory leader answered within {:?} (last: {last})",
                    self.call_deadline
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[tonic::async_trait]
impl DirectoryClient for GrpcDirectoryClient {
    async fn is_bootstrapped(&self) -> Result<bool> {
        let r = self
            .call("is bootstrapped", |mut c| async move {
                c.is_bootstrapped(IsBootstrappedRequest {}).await
            })
            .await?;
        Ok(r.bootstrapped)
    }

    async fn bootstrap(&self, store: Store, region: Region) -> Result<()> {
        self.call("bootstrap", |mut c| {
            let req = BootstrapRequest {
                store: Some(store.clone()),
                region: Some(region.clone()),
            };
            async move { c.bootstrap(req).await }
        })
        .await?;
        Ok(())
    }

    async fn alloc_ids(&self, count: u32) -> Result<Vec<u64>> {
        let r = self
            .call("allocate ids", |mut c| async move {
                c.alloc_ids(AllocIdsRequest { count }).await
            })
            .await?;
        if r.count < count {
            return Err(Error::Directory(format!(
                "asked for {count} ids, got {}",
                r.count
            )));
        }
        Ok((r.first..r.first + count as u64).collect())
    }

    async fn put_store(&self, store: Store) -> Result<()> {
        self.call("register store", |mut c| {
            let req = PutStoreRequest {
                store: Some(store.clone()),
            };
            async move { c.put_store(req).await }
        })
        .await?;
        Ok(())
    }

    async fn get_store(&self, store_id: u64) -> Result<Store> {
        let r = self
            .call("get store", |mut c| async move {
                c.get_store(GetStoreRequest { store_id }).await
            })
            .await?;
        r.store.ok_or_else(|| {
            Error::Directory(format!("store {store_id} is unknown to the directory"))
        })
    }

    async fn store_heartbeat(&self, stats: StoreStats) -> Result<()> {
        self.call("store heartbeat", |mut c| {
            let req = StoreHeartbeatRequest { stats: Some(stats) };
            async move { c.store_heartbeat(req).await }
        })
        .await?;
        Ok(())
    }

    async fn region_heartbeat(&self, report: RegionReport) -> Result<()> {
        self.call("region heartbeat", |mut c| {
            let req = RegionHeartbeatRequest {
                report: Some(report.clone()),
            };
            async move { c.region_heartbeat(req).await }
        })
        .await?;
        Ok(())
    }
}
