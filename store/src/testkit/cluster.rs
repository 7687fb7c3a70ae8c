//! The cluster: stores, their engines and network, the region layout, and a
//! client that retries the way a router does.

mod operations;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tessera_multiraft::engine::{Engine, MemoryEngine, RocksEngine, RocksOptions};
use tessera_multiraft::region as region_util;
use tessera_multiraft::router::{PollerMsg, RegionInfo};
use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::transport::{
    feedback_to, FilterAction, GrpcTransport, MemoryNetwork, MessageFilter, RaftService,
    StaticResolver,
};
use tessera_multiraft::{PollerStats, RaftConfig};
use tessera_proto::errorpb::region_error::Error as Kind;
use tessera_proto::kvpb::kv_client::KvClient;
use tessera_proto::kvpb::*;
use tessera_proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};

use super::client::KvEndpoint;
use crate::admin::AdminApi;
use crate::directory_client::{DirectoryClient, TestDirectory};
use crate::kv::KvConfig;
use crate::service::{AdminService, KvService};
use crate::split_check::SplitCheckConfig;
use crate::{split_check, Error, NodeConfig, Result, StoreNode};
use tessera_proto::KvResponse;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Memory,
    Rocks,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// The in-memory network with filters; the client calls the Kv API
    /// directly.
    Memory,
    /// gRPC on 127.0.0.1 between stores, and from the client to the stores.
    Grpc,
}

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub stores: usize,
    /// Replicas of each region laid out by [`Cluster::bootstrap_regions`].
    pub replicas: usize,
    pub engine: EngineKind,
    pub transport: TransportKind,
    pub node: NodeConfig,
    /// How long the harness client keeps retrying one request.
    pub client_deadline: Duration,
}

impl ClusterOptions {
    /// Fast ticks (20 ms, 400 ms elections) so failover tests take seconds.
    pub fn new(stores: usize) -> Self {
        ClusterOptions {
            stores,
            replicas: stores.min(3),
            engine: EngineKind::Memory,
            transport: TransportKind::Memory,
            node: NodeConfig {
                raft: RaftConfig {
                    tick_interval: Duration::from_millis(20),
                    election_tick: 20,
                    heartbeat_tick: 4,
                    ..RaftConfig::default()
                },
                kv: KvConfig {
                    request_timeout: Duration::from_secs(3),
                    ..KvConfig::default()
                },
                ..NodeConfig::default()
            },
            client_deadline: Duration::from_secs(20),
        }
    }

    pub fn engine(mut self, engine: EngineKind) -> Self {
        self.engine = engine;
        self
    }

    pub fn transport(mut self, transport: TransportKind) -> Self {
        self.transport = transport;
        self
    }

    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }
}

struct Server {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

struct Slot {
    engine: Option<Arc<dyn Engine>>,
    node: Option<Arc<StoreNode>>,
    server: Option<Server>,
    endpoint: Option<KvEndpoint>,
}

pub struct Cluster {
    opts: ClusterOptions,
    pub net: MemoryNetwork,
    pub directory: Arc<TestDirectory>,
    resolver: StaticResolver,
    dir: tempfile::TempDir,
    slots: Mutex<BTreeMap<u64, Slot>>,
    /// The layout the client believes, by region id.
    regions: Mutex<BTreeMap<u64, Region>>,
    leader_hint: Mutex<HashMap<u64, u64>>,
}

impl Cluster {
    /// Starts `opts.stores` stores with ids 1..=N and no regions. Logs go
    /// to the test output when `RUST_LOG` is set.
    pub async fn start(opts: ClusterOptions) -> Result<Cluster> {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let cluster = Cluster {
            net: MemoryNetwork::new(),
            directory: Arc::new(TestDirectory::new()),
            resolver: StaticResolver::new(),
            dir: tempfile::tempdir()?,
            slots: Mutex::new(BTreeMap::new()),
            regions: Mutex::new(BTreeMap::new()),
            leader_hint: Mutex::new(HashMap::new()),
            opts,
        };
        for id in 1..=cluster.opts.stores as u64 {
            cluster.slots.lock().insert(
                id,
                Slot {
                    engine: None,
                    node: None,
                    server: None,
                    endpoint: None,
                },
            );
            cluster.start_store(id).await?;
        }
        Ok(cluster)
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    pub fn store_ids(&self) -> Vec<u64> {
        self.slots.lock().keys().copied().collect()
    }

    fn open_engine(&self, store_id: u64) -> Result<Arc<dyn Engine>> {
        if let Some(e) = self
            .slots
            .lock()
            .get(&store_id)
            .and_then(|s| s.engine.clone())
        {
            return Ok(e);
        }
        Ok(match self.opts.engine {
            EngineKind::Memory => Arc::new(MemoryEngine::new()),
            EngineKind::Rocks => {
                let path = self.dir.path().join(format!("store-{store_id}"));
                let opts = RocksOptions {
                    block_cache_bytes: 8 << 20,
                    write_buffer_bytes: 8 << 20,
                    max_background_jobs: 1,
                };
                Arc::new(RocksEngine::open(&path, &opts)?)
            }
        })
    }

    /// Where store `store_id` keeps its snapshot files.
    pub fn snap_dir(&self, store_id: u64) -> std::path::PathBuf {
        self.dir.path().join(format!("store-{store_id}-snap"))
    }

    /// Starts (or restarts) store `store_id` over its engine.
    pub async fn start_store(&self, store_id: u64) -> Result<()> {
        let engine = self.open_engine(store_id)?;
        let snap_mgr = SnapManager::new(self.snap_dir(store_id))?;
        let directory: Arc<dyn DirectoryClient> = self.directory.clone();
        let cfg = self.opts.node.clone();
        let (node, server, endpoint) = match self.opts.transport {
            TransportKind::Memory => {
                let net = self.net.clone();
                let mgr = snap_mgr.clone();
                let node = StoreNode::start(
                    store_id,
                    engine.clone(),
                    snap_mgr,
                    directory,
                    &cfg,
                    |router| {
                        let inbox = router.clone();
                        net.register(
                            store_id,
                            move |m| {
                                inbox.send_raft_message(m);
                            },
                            feedback_to(router.clone()),
                            mgr,
                        );
                        Box::new(net.transport(store_id))
                    },
                )?;
                let node = Arc::new(node);
                let endpoint = KvEndpoint::Local(node.kv().clone());
                (node, None, endpoint)
            }
            TransportKind::Grpc => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                self.resolver.insert(store_id, addr.to_string());
                let resolver = Arc::new(self.resolver.clone());
                let runtime = tokio::runtime::Handle::current();
                let node = Arc::new(StoreNode::start(
                    store_id,
                    engine.clone(),
                    snap_mgr.clone(),
                    directory,
                    &cfg,
                    |router| {
                        Box::new(GrpcTransport::new(
                            store_id,
                            runtime,
                            resolver,
                            router.clone(),
                        ))
                    },
                )?);
                let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
                let raft = RaftService::new(store_id, node.router().clone(), snap_mgr)
                    .with_stop(stop_rx.clone())
                    .into_server();
                let kv = KvService::new(node.kv().clone()).into_server();
                let admin = AdminService::new(node.admin().clone()).into_server();
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                let done = tokio::spawn(async move {
                    let _ = tonic::transport::Server::builder()
                        .add_service(raft)
                        .add_service(kv)
                        .add_service(admin)
                        .serve_with_incoming_shutdown(incoming, async move {
                            let _ = stop_rx.wait_for(|s| *s).await;
                        })
                        .await;
                });
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("valid address")
                    .connect_lazy();
                let client = KvClient::new(channel).max_decoding_message_size(usize::MAX);
                let server = Server { addr, stop, done };
                (node, Some(server), KvEndpoint::Remote(client))
            }
        };
        self.directory
            .put_store(Store {
                id: store_id,
                address: server
                    .as_ref()
                    .map(|s| s.addr.to_string())
                    .unwrap_or_default(),
                ..Default::default()
            })
            .await?;
        let mut slots = self.slots.lock();
        let slot = slots.get_mut(&store_id).expect("store slot exists");
        slot.engine = Some(engine);
        slot.node = Some(node);
        slot.server = server;
        slot.endpoint = Some(endpoint);
        Ok(())
    }

    /// Stops store `store_id` as if its process died after its last write:
    /// the poller stops, the network forgets it. With RocksDB the database is
    /// closed (and reopened by [`Cluster::restart_store`]).
    pub async fn stop_store(&self, store_id: u64) {
        let (node, server) = {
            let mut slots = self.slots.lock();
            let slot = slots.get_mut(&store_id).expect("store exists");
            slot.endpoint = None;
            (slot.node.take(), slot.server.take())
        };
        self.net.unregister(store_id);
        if let Some(server) = server {
            let _ = server.stop.send(true);
            let abort = server.done.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), server.done)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        if let Some(node) = node {
            // Wait for in-flight requests to let go of the node.
            let mut node = node;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match Arc::try_unwrap(node) {
                    Ok(n) => {
                        n.shutdown();
                        break;
                    }
                    Err(n) => {
                        assert!(
                            Instant::now() < deadline,
                            "store {store_id} is still in use"
                        );
                        node = n;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
        if self.opts.engine == EngineKind::Rocks {
            // Close the database so it can be reopened.
            let engine = self
                .slots
                .lock()
                .get_mut(&store_id)
                .and_then(|s| s.engine.take());
            if let Some(engine) = engine {
                let deadline = Instant::now() + Duration::from_secs(10);
                while Arc::strong_count(&engine) > 1 {
                    assert!(
                        Instant::now() < deadline,
                        "engine of store {store_id} is still in use"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                drop(engine);
            }
        }
    }

    pub async fn restart_store(&self, store_id: u64) -> Result<()> {
        self.stop_store(store_id).await;
        self.start_store(store_id).await
    }

    pub fn node(&self, store_id: u64) -> Option<Arc<StoreNode>> {
        self.slots
            .lock()
            .get(&store_id)
            .and_then(|s| s.node.clone())
    }

    pub fn engine(&self, store_id: u64) -> Option<Arc<dyn Engine>> {
        self.slots
            .lock()
            .get(&store_id)
            .and_then(|s| s.engine.clone())
    }

    /// The gRPC address of a running store (gRPC transport only).
    pub fn address(&self, store_id: u64) -> Option<SocketAddr> {
        self.slots
            .lock()
            .get(&store_id)
            .and_then(|s| s.server.as_ref().map(|srv| srv.addr))
    }

    pub fn endpoint(&self, store_id: u64) -> Option<KvEndpoint> {
        self.slots
            .lock()
            .get(&store_id)
            .and_then(|s| s.endpoint.clone())
    }

    pub fn poller_stats(&self, store_id: u64) -> Option<Arc<PollerStats>> {
        self.node(store_id).map(|n| n.stats().clone())
    }

    /// Lays out regions split at `split_keys` (encoded, ascending), each with
    /// `replicas` peers placed round-robin over the stores, creates them on
    /// their stores and waits for every region to elect a leader.
    pub async fn bootstrap_regions(&self, split_keys: &[Vec<u8>]) -> Result<Vec<Region>> {
        let stores = self.store_ids();
        let mut bounds = vec![Vec::new()];
        bounds.extend(split_keys.iter().cloned());
        let mut regions = vec![];
        for (i, start) in bounds.iter().enumerate() {
            let end = bounds.get(i + 1).cloned().unwrap_or_default();
            let ids = self
                .directory
                .alloc_ids(1 + self.opts.replicas as u32)
                .await?;
            let peers = (0..self.opts.replicas)
                .map(|j| Peer {
                    id: ids[1 + j],
                    store_id: stores[(i + j) % stores.len()],
                    role: PeerRole::Voter as i32,
                })
                .collect();
            regions.push(Region {
                id: ids[0],
                start_key: start.clone(),
                end_key: end,
                region_epoch: Some(RegionEpoch::new(1, 1)),
                peers,
            });
        }
        for region in &regions {
            for p in &region.peers {
                let node = self.node(p.store_id).ok_or(Error::Shutdown)?;
                node.create_region(region.clone()).await?;
            }
            self.regions.lock().insert(region.id, region.clone());
            // Elect the first peer's store right away instead of waiting for
            // an election timeout.
            let first = region.peers[0].store_id;
            if let Some(node) = self.node(first) {
                node.router().send(PollerMsg::Campaign {
                    region_id: region.id,
                })?;
            }
        }
        for region in &regions {
            self.wait_leader(region.id, Duration::from_secs(20)).await?;
        }
        Ok(regions)
    }

    /// The regions the client currently believes in, in key order.
    pub fn regions(&self) -> Vec<Region> {
        let mut v: Vec<Region> = self.regions.lock().values().cloned().collect();
        v.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        v
    }

    /// Every running store's view of `region_id`.
    pub async fn region_infos(&self, region_id: u64) -> Vec<(u64, RegionInfo)> {
        let mut out = vec![];
        for id in self.store_ids() {
            if let Some(node) = self.node(id) {
                if let Ok(infos) = node.regions().await {
                    if let Some(info) = infos.into_iter().find(|i| i.region.id == region_id) {
                        out.push((id, info));
                    }
                }
            }
        }
        out
    }

    /// The store whose peer leads `region_id` now (highest term wins).
    pub async fn leader_of(&self, region_id: u64) -> Option<u64> {
        self.region_infos(region_id)
            .await
            .into_iter()
            .filter(|(_, i)| i.is_leader)
            .max_by_key(|(_, i)| i.term)
            .map(|(s, _)| s)
    }

    pub async fn wait_leader(&self, region_id: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.leader_of(region_id).await {
                self.leader_hint.lock().insert(region_id, s);
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Drops every message between the two groups of stores.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        for f in MessageFilter::partition(a, b) {
            self.net.add_filter(f);
        }
    }

    /// Cuts `store_id` off from every other store.
    pub fn isolate(&self, store_id: u64) {
        for f in MessageFilter::isolate(store_id) {
            self.net.add_filter(f);
        }
    }

    /// Delays every message by `delay`.
    pub fn delay_all(&self, delay: Duration) {
        self.net
            .add_filter(MessageFilter::new(FilterAction::Delay(delay)));
    }

    /// Removes every filter.
    pub fn heal(&self) {
        self.net.clear_filters();
    }

    fn region_for_key(&self, key: &[u8]) -> Option<Region> {
        self.regions
            .lock()
            .values()
            .find(|r| region_util::contains_key(r, key))
            .cloned()
    }

    /// The newest version of the region holding `key` any running store
    /// reports; learned for later requests.
    async fn region_from_stores(&self, key: &[u8]) -> Option<Region> {
        let version = |r: &Region| r.region_epoch.unwrap_or_default().version;
        let mut best: Option<Region> = None;
        for id in self.store_ids() {
            let Some(node) = self.node(id) else { continue };
            let Ok(infos) = node.regions().await else {
                continue;
            };
            for info in infos {
                let r = info.region;
                if region_util::contains_key(&r, key)
                    && best.as_ref().is_none_or(|b| version(&r) > version(b))
                {
                    best = Some(r);
                }
            }
        }
        self.learn_region(best.clone()?);
        best
    }

    fn context_for(&self, region: &Region, store_id: u64) -> Option<Context> {
        let peer = *region_util::find_peer_on_store(region, store_id)?;
        Some(Context {
            region_id: region.id,
            region_epoch: region.region_epoch,
            peer: Some(peer),
            follower_read: false,
        })
    }

    /// Sends a request for the region holding `key`, following NotLeader
    /// hints and epoch changes, until it succeeds or the client deadline
    /// passes. With `retry_unknown`, a request whose outcome is unknown is
    /// sent again (only for idempotent requests).
    pub async fn request<R, F, Fut>(
        &self,
        key: &[u8],
        retry_unknown: bool,
        mut call: F,
    ) -> Result<R>
    where
        R: KvResponse,
        F: FnMut(KvEndpoint, Context) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let deadline = Instant::now() + self.opts.client_deadline;
        let mut attempt = 0usize;
        let mut last_err = Error::Timeout(self.opts.client_deadline);
        while Instant::now() < deadline {
            attempt += 1;
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let region = match self.region_for_key(key) {
                Some(r) => r,
                // An EpochNotMatch names the regions of the last split only;
                // after several splits, ask the stores (as a router asks the
                // directory).
                None => match self.region_from_stores(key).await {
                    Some(r) => r,
                    None => return Err(Error::InvalidArgument("no region holds the key".into())),
                },
            };
            let stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
            let hint = self.leader_hint.lock().get(&region.id).copied();
            let store = match hint {
                Some(s) if stores.contains(&s) => s,
                _ => stores[attempt % stores.len()],
            };
            let Some(endpoint) = self.endpoint(store) else {
                self.leader_hint
                    .lock()
                    .insert(region.id, stores[(attempt + 1) % stores.len()]);
                continue;
            };
            let ctx = self.context_for(&region, store).expect("peer on its store");
            match call(endpoint, ctx).await {
                Ok(resp) => {
                    let Some(err) = resp.region_error() else {
                        self.leader_hint.lock().insert(region.id, store);
                        return Ok(resp);
                    };
                    match &err.error {
                        Some(Kind::NotLeader(nl)) => {
                            let next = nl
                                .leader
                                .as_ref()
                                .map(|l| l.store_id)
                                .unwrap_or(stores[(attempt + 1) % stores.len()]);
                            self.leader_hint.lock().insert(region.id, next);
                        }
                        Some(Kind::EpochNotMatch(e)) => {
                            let mut regions = self.regions.lock();
                            for r in &e.current_regions {
                                regions.retain(|_, known| {
                                    known.id == r.id || !region_util::overlaps(known, r)
                                });
                                regions.insert(r.id, r.clone());
                            }
                        }
                        _ => {
                            self.leader_hint.lock().remove(&region.id);
                        }
                    }
                    last_err = Error::region(err.clone());
                }
                Err(Error::InvalidArgument(m)) => return Err(Error::InvalidArgument(m)),
                Err(e @ (Error::Timeout(_) | Error::Indeterminate(_))) if !retry_unknown => {
                    return Err(e)
                }
                Err(e) => {
                    self.leader_hint.lock().remove(&region.id);
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.request(key, true, |kv, ctx| {
            let req = PutRequest {
                context: Some(ctx),
                key: key.to_vec(),
                value: value.to_vec(),
            };
            async move { kv.put(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let resp = self
            .request(key, true, |kv, ctx| {
                let req = GetRequest {
                    context: Some(ctx),
                    key: key.to_vec(),
                };
                async move { kv.get(req).await }
            })
            .await?;
        Ok(resp.found.then_some(resp.value))
    }

    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        self.request(key, true, |kv, ctx| {
            let req = DeleteRequest {
                context: Some(ctx),
                key: key.to_vec(),
            };
            async move { kv.delete(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Compare-and-swap; an unknown outcome is returned as an error, never
    /// retried.
    pub async fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<CompareAndSwapResponse> {
        self.request(key, false, |kv, ctx| {
            let req = CompareAndSwapRequest {
                context: Some(ctx),
                key: key.to_vec(),
                expect_absent: expected.is_none(),
                expected_value: expected.unwrap_or_default().to_vec(),
                new_value: new.to_vec(),
                delete: false,
            };
            async move { kv.compare_and_swap(req).await }
        })
        .await
    }

    /// Deletes `[start, end)` in every region it touches, region by region.
    pub async fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        let mut cursor = start.to_vec();
        loop {
            let key = cursor.clone();
            let mut served = None;
            self.request(&key, true, |kv, ctx| {
                served = self
                    .regions
                    .lock()
                    .get(&ctx.region_id)
                    .map(|r| r.end_key.clone());
                let req = DeleteRangeRequest {
                    context: Some(ctx),
                    start_key: key.clone(),
                    end_key: end.to_vec(),
                };
                async move { kv.delete_range(req).await }
            })
            .await?;
            let region_end = served.unwrap_or_default();
            if region_end.is_empty() || (!end.is_empty() && region_end.as_slice() >= end) {
                return Ok(());
            }
            cursor = region_end;
        }
    }

    /// Every pair in `[start, end)`, across regions, in key order: region by
    /// region, following epoch changes the way a router does.
    pub async fn scan(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        let mut cursor = start.to_vec();
        loop {
            let key = cursor.clone();
            let mut served = None;
            let resp = self
                .request(&key, true, |kv, ctx| {
                    // The range that goes with the epoch being sent.
                    served = self
                        .regions
                        .lock()
                        .get(&ctx.region_id)
                        .map(|r| r.end_key.clone());
                    let req = ScanRequest {
                        context: Some(ctx),
                        start_key: key.clone(),
                        end_key: end.to_vec(),
                        limit: 0,
                        reverse: false,
                    };
                    async move { kv.scan(req).await }
                })
                .await?;
            out.extend(resp.pairs.into_iter().map(|p| (p.key, p.value)));
            let region_end = served.unwrap_or_default();
            if region_end.is_empty() || (!end.is_empty() && region_end.as_slice() >= end) {
                return Ok(out);
            }
            cursor = region_end;
        }
    }

    pub async fn must_put(&self, key: &[u8], value: &[u8]) {
        if let Err(e) = self.put(key, value).await {
            panic!("put {:?} failed: {e}", tessera_proto::escape(key));
        }
    }

    pub async fn must_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.get(key).await {
            Ok(v) => v,
            Err(e) => panic!("get {:?} failed: {e}", tessera_proto::escape(key)),
        }
    }

    pub async fn must_delete(&self, key: &[u8]) {
        if let Err(e) = self.delete(key).await {
            panic!("delete {:?} failed: {e}", tessera_proto::escape(key));
        }
    }

    /// Reads `key` from exactly `store_id`, once, without retries.
    pub async fn get_from(&self, store_id: u64, key: &[u8]) -> Result<GetResponse> {
        let region = self
            .region_for_key(key)
            .ok_or_else(|| Error::InvalidArgument("no region".into()))?;
        let ctx = self
            .context_for(&region, store_id)
            .ok_or_else(|| Error::InvalidArgument(format!("no peer on store {store_id}")))?;
        let endpoint = self.endpoint(store_id).ok_or(Error::Shutdown)?;
        endpoint
            .get(GetRequest {
                context: Some(ctx),
                key: key.to_vec(),
            })
            .await
    }

    /// Writes `key` through exactly `store_id`, once, without retries.
    pub async fn put_to(&self, store_id: u64, key: &[u8], value: &[u8]) -> Result<PutResponse> {
        let region = self
            .region_for_key(key)
            .ok_or_else(|| Error::InvalidArgument("no region".into()))?;
        let ctx = self
            .context_for(&region, store_id)
            .ok_or_else(|| Error::InvalidArgument(format!("no peer on store {store_id}")))?;
        let endpoint = self.endpoint(store_id).ok_or(Error::Shutdown)?;
        endpoint
            .put(PutRequest {
                context: Some(ctx),
                key: key.to_vec(),
                value: value.to_vec(),
            })
            .await
    }

    /// Waits until every running replica of `region_id` has applied as far as
    /// its leader has committed.
    pub async fn wait_replicas_caught_up(&self, region_id: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let infos = self.region_infos(region_id).await;
            let leader = infos
                .iter()
                .filter(|(_, i)| i.is_leader)
                .max_by_key(|(_, i)| i.term);
            if let Some((_, leader)) = leader {
                // Every peer the leader lists, on a running store, is there
                // and has applied what the leader committed.
                let expected: Vec<u64> = self
                    .store_ids()
                    .into_iter()
                    .filter(|s| self.node(*s).is_some())
                    .filter(|s| region_util::find_peer_on_store(&leader.region, *s).is_some())
                    .collect();
                let done = expected.iter().all(|s| {
                    infos.iter().any(|(st, i)| {
                        st == s && i.initialized && i.applied_index >= leader.commit_index
                    })
                });
                if done {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let views: Vec<String> = infos
                    .iter()
                    .map(|(s, i)| {
                        format!(
                            "store {s}: leader={} term={} commit={} applied={} last={} truncated={}",
                            i.is_leader, i.term, i.commit_index, i.applied_index, i.last_index, i.truncated_index
                        )
                    })
                    .collect();
                return Err(Error::Raft(tessera_multiraft::Error::Transport(format!(
                    "replicas of region {region_id} did not catch up in {timeout:?}: {}",
                    views.join("; ")
                ))));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn admin(&self, store_id: u64) -> Option<Arc<AdminApi>> {
        self.node(store_id).map(|n| n.admin().clone())
    }

    /// Starts the size-based split checker on every running store.
    ///
    /// The checkers run until the returned guard is dropped (or the test's
    /// runtime ends).
    #[must_use = "the split checkers stop when the guard is dropped"]
    pub fn start_split_checkers(&self, cfg: SplitCheckConfig) -> SplitCheckers {
        let mut tasks = Vec::new();
        for id in self.store_ids() {
            if let Some(admin) = self.admin(id) {
                tasks.push(tokio::spawn(split_check::run(admin, cfg.clone())));
            }
        }
        SplitCheckers(tasks)
    }

    /// Records what the client should believe about `region`.
    pub fn learn_region(&self, region: Region) {
        let mut regions = self.regions.lock();
        regions.retain(|_, known| known.id == region.id || !region_util::overlaps(known, &region));
        regions.insert(region.id, region);
    }

    /// Runs `op` on the store that leads `region_id`, following leadership
    /// changes, until it succeeds or the client deadline passes.
    async fn on_leader<T, F, Fut>(&self, region_id: u64, mut op: F) -> Result<T>
    where
        F: FnMut(Arc<AdminApi>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.opts.client_deadline;
        loop {
            let leader = self
                .wait_leader(region_id, self.opts.client_deadline)
                .await?;
            let Some(admin) = self.admin(leader) else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            match op(admin).await {
                Ok(v) => return Ok(v),
                Err(Error::Region(e)) if Instant::now() < deadline => {
                    tracing::debug!(region_id, error = %e, "admin operation retried");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(Error::InvalidArgument(m))
                    if m.contains("in progress") && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The region that holds `key`, as the client believes.
    pub fn region_of(&self, key: &[u8]) -> Option<Region> {
        self.region_for_key(key)
    }

    /// Stops every store.
    pub async fn shutdown(&self) {
        for id in self.store_ids() {
            self.stop_store(id).await;
        }
    }
}

/// The split checkers [`Cluster::start_split_checkers`] started; dropping
/// this stops them, so a test can check a cluster that no longer splits.
pub struct SplitCheckers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for SplitCheckers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
