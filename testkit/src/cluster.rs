//! The cluster: stores, their engines and network, the region layout;
//! its client is in `requests.rs`, region operations in `operations.rs`
//! (merges in `merge.rs`).

mod merge;
mod operations;

pub use merge::MergeEnd;
mod requests;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tessera_multiraft::engine::{Engine, MemoryEngine, RocksEngine, RocksOptions};
use tessera_multiraft::mailbox::{PollerMsg, RegionInfo};
use tessera_multiraft::region as region_util;
use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::transport::{
    feedback_to, FilterAction, GrpcTransport, MemoryNetwork, MessageFilter, StaticResolver,
};
use tessera_multiraft::{PollerStats, RaftConfig};
use tessera_proto::kvpb::kv_client::KvClient;
use tessera_proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
use tessera_store::admin::AdminApi;
use tessera_store::directory_client::{DirectoryClient, Registration};
use tessera_store::kv::KvConfig;
use tessera_store::service::serve;
use tessera_store::split_check::SplitCheckConfig;
use tessera_store::{split_check, Error, NodeConfig, Result, StoreNode};

use crate::directory::TEST_CLUSTER_ID;
use crate::{KvEndpoint, TestDirectory};

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
    /// The stores' serving quotas (gRPC transport).
    pub serving: tessera_common::admission::ServingLimits,
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
            serving: Default::default(),
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
    /// The admin APIs of running stores, for merges driven by a store on
    /// the in-memory network (`merge.rs`).
    admins: merge::Admins,
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
            admins: Default::default(),
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
                    |mailbox| {
                        let inbox = mailbox.clone();
                        net.register(
                            store_id,
                            move |m| {
                                inbox.send_raft_message(m);
                            },
                            feedback_to(mailbox.clone()),
                            mgr,
                        );
                        Box::new(net.transport(store_id))
                    },
                )?;
                let node = Arc::new(node);
                node.admin()
                    .set_target_leaders(Arc::new(merge::LocalTargetLeaders(self.admins.clone())));
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
                    |mailbox| {
                        Box::new(GrpcTransport::new(
                            store_id,
                            TEST_CLUSTER_ID,
                            runtime,
                            resolver,
                            tessera_security::Security::insecure(),
                            mailbox.clone(),
                        ))
                    },
                )?);
                node.admin().set_target_leaders(Arc::new(
                    tessera_store::merge::GrpcTargetLeaders::new(
                        Arc::new(self.resolver.clone()),
                        tessera_security::Security::insecure(),
                    ),
                ));
                let (stop, stop_rx) = tokio::sync::watch::channel(false);
                let served = serve::spawn(
                    listener,
                    &node,
                    serve::Serving {
                        cluster_id: TEST_CLUSTER_ID,
                        snap_mgr,
                        net_faults: Default::default(),
                        security: &tessera_security::Security::insecure(),
                        limits: &self.opts.serving,
                    },
                    stop_rx,
                );
                let done = tokio::spawn(async move {
                    let _ = served.task.await;
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
            .register(Registration {
                store: Store {
                    id: store_id,
                    address: server
                        .as_ref()
                        .map(|s| s.addr.to_string())
                        .unwrap_or_default(),
                    ..Default::default()
                },
                cluster_id: TEST_CLUSTER_ID,
                secret: String::new(),
                join_token: None,
            })
            .await?;
        self.admins.lock().insert(store_id, node.admin().clone());
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
        self.admins.lock().remove(&store_id);
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
                node.mailbox().send(PollerMsg::Campaign {
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
                // Refusals of a moment: another admin command runs, or a
                // merge's source has a peer that lags (the directory's
                // operator sends its step again too).
                Err(Error::InvalidArgument(m))
                    if (m.contains("in progress") || m.ends_with("; try again"))
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
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
