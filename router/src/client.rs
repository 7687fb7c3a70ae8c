//! [`Router`]: the routing client.
//!
//! Every operation names an optional keyspace and user keys; the router
//! encodes keys, finds the owning region (cache first, then the directory,
//! prefetching neighbours), sends the request to the region's leader and
//! reacts to routing errors:
//! - `NotLeader` with a leader → retry there at once; without → try the next
//!   peer after a backoff;
//! - `EpochNotMatch` → replace the cached regions with the current ones and
//!   retry;
//! - `RegionNotFound`, `KeyNotInRegion`, `StoreNotMatch` → forget the region,
//!   reload it from the directory;
//! - `ServerIsBusy` → wait the time it asks;
//! - `StaleCommand` → the write was not applied: retry.
//!
//! Retries back off exponentially with jitter, all under the request's
//! deadline. A write whose fate is unknown — the store timed out after
//! accepting it, or the connection broke after it was sent — is reported as
//! [`Error::Indeterminate`] at once, never as failed and never retried:
//! not even a put is safe to send again, since its first attempt may apply,
//! then another client's write, then the retry — one put taking effect
//! twice, around a write it should precede (the nemesis suite found this
//! with seed 44 when puts were still retried as "idempotent").
//!
//! Batches are split per region and sent in parallel; scans walk regions in
//! key order (or reverse), stitching results up to the limit.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tessera_common::directory::DirectoryConn;
use tessera_proto::directorypb::{
    GetKeyspaceRequest, GetRegionRequest, GetStoreRequest, Keyspace, KeyspaceKind,
    ScanRegionsRequest,
};
use tessera_proto::errorpb::region_error::Error as Kind;
use tessera_proto::errorpb::RegionError;
use tessera_proto::keys;
use tessera_proto::kvpb::kv_client::KvClient;
use tessera_proto::kvpb::*;
use tessera_proto::metapb::{Peer, PeerRole, Region};
use tonic::transport::{Channel, Endpoint};

use crate::cache::{CachedRegion, RegionCache};
use crate::{metrics as m, Error, Result};

#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Directory members, `host:port`.
    pub directory: Vec<String>,
    /// How long one operation may take, retries included.
    pub timeout: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl RouterConfig {
    pub fn new(directory: Vec<String>) -> Self {
        RouterConfig {
            directory,
            timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(500),
        }
    }
}

/// Retries in a row without waiting (following leader hints, fresh
/// epochs) before the router reloads the region from the directory.
const MAX_QUICK_RETRIES: usize = 3;

/// Every this many failed attempts the region is reloaded from the
/// directory, whatever the errors were.
const RELOAD_EVERY_ATTEMPTS: usize = 4;

/// Whether an operation writes, for the indeterminate rule: a write is
/// never sent again once it may have reached a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    Read,
    Once,
}

/// The outcome of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    pub succeeded: bool,
    /// The value found before (None: the key was absent).
    pub previous: Option<Vec<u8>>,
}

/// Responses that carry a routing error.
trait Routed {
    fn region_error(&self) -> Option<&RegionError>;
}

macro_rules! routed {
    ($($t:ty),*) => {$(
        impl Routed for $t {
            fn region_error(&self) -> Option<&RegionError> {
                self.region_error.as_ref()
            }
        }
    )*};
}

routed!(
    GetResponse,
    PutResponse,
    DeleteResponse,
    BatchGetResponse,
    BatchPutResponse,
    ScanResponse,
    CompareAndSwapResponse,
    DeleteRangeResponse
);

/// What one attempt at one region gave.
enum Attempt<T> {
    Done(T),
    /// Try again, after `wait` (zero: at once).
    Retry {
        wait: Option<Duration>,
        reason: &'static str,
    },
    /// The request may have been applied.
    Unknown(String),
    Fatal(Error),
}

pub struct Router {
    cfg: RouterConfig,
    dir: DirectoryConn,
    cache: RegionCache,
    stores: DashMap<u64, KvClient<Channel>>,
    keyspaces: DashMap<String, Keyspace>,
}

/// Whether `status` says the request never left: only a failure to
/// connect, found as a typed `tonic::ConnectError` in its source chain,
/// proves that. Every other transport failure — a reset or closed
/// connection above all — may come after the store read the request.
fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.5..1.5))
}

impl Router {
    pub fn new(cfg: RouterConfig) -> Result<Arc<Self>> {
        let dir = DirectoryConn::new(cfg.directory.clone(), cfg.timeout)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(Arc::new(Router {
            cfg,
            dir,
            cache: RegionCache::new(),
            stores: DashMap::new(),
            keyspaces: DashMap::new(),
        }))
    }

    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    pub fn directory(&self) -> &DirectoryConn {
        &self.dir
    }

    pub fn cache(&self) -> &RegionCache {
        &self.cache
    }

    fn dir_err(e: tessera_common::Error) -> Error {
        Error::Directory(e.to_string())
    }

    /// The keyspace named `name` (None or "default": the default one).
    pub async fn keyspace(&self, name: Option<&str>) -> Result<Keyspace> {
        let name = name.unwrap_or("default");
        if name == "default" || name.is_empty() {
            return Ok(Keyspace {
                id: keys::DEFAULT_KEYSPACE_ID,
                name: "default".into(),
                kind: KeyspaceKind::Range as i32,
                initial_regions: 0,
            });
        }
        if let Some(k) = self.keyspaces.get(name) {
            return Ok(k.clone());
        }
        let resp = self
            .dir
            .call("get keyspace", |mut c| {
                let req = GetKeyspaceRequest {
                    name: name.to_string(),
                };
                async move { c.get_keyspace(req).await }
            })
            .await;
        match resp {
            Ok(r) => {
                let k = r
                    .keyspace
                    .ok_or_else(|| Error::KeyspaceNotFound(name.to_string()))?;
                self.keyspaces.insert(name.to_string(), k.clone());
                Ok(k)
            }
            Err(tessera_common::Error::Directory { kind, .. })
                if kind == tessera_proto::directorypb::directory_error::Kind::NotFound as i32 =>
            {
                Err(Error::KeyspaceNotFound(name.to_string()))
            }
            Err(e) => Err(Self::dir_err(e)),
        }
    }

    /// The region holding `key` (encoded), from the cache or the directory.
    async fn locate(&self, key: &[u8]) -> Result<CachedRegion> {
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
            .await
            .map_err(Self::dir_err)?
            .region
            .ok_or_else(|| Error::Directory("the directory knows no region for the key".into()))?;
        let region = info.region.unwrap_or_default();
        let end = region.end_key.clone();
        self.cache.insert(region.clone(), info.leader);
        // Prefetch the neighbours: sequential access is common.
        if !end.is_empty() {
            if let Ok(r) = self
                .dir
                .call("scan regions", |mut c| {
                    let req = ScanRegionsRequest {
                        start_key: end.clone(),
                        end_key: vec![],
                        limit: 8,
                    };
                    async move { c.scan_regions(req).await }
                })
                .await
            {
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
    async fn regions_in(&self, start: &[u8], end: &[u8]) -> Result<Vec<Region>> {
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
            .await
            .map_err(Self::dir_err)?;
        let mut out = vec![];
        for info in r.regions {
            if let Some(reg) = info.region {
                self.cache.insert(reg.clone(), info.leader);
                out.push(reg);
            }
        }
        Ok(out)
    }

    async fn store_client(&self, store_id: u64) -> Result<KvClient<Channel>> {
        if let Some(c) = self.stores.get(&store_id) {
            return Ok(c.clone());
        }
        let store = self
            .dir
            .call("get store", |mut c| async move {
                c.get_store(GetStoreRequest { store_id }).await
            })
            .await
            .map_err(Self::dir_err)?
            .store
            .ok_or_else(|| Error::Directory(format!("store {store_id} is unknown")))?;
        let endpoint = Endpoint::from_shared(format!("http://{}", store.address))
            .map_err(|e| Error::Directory(format!("bad address of store {store_id}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let client = KvClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        self.stores.insert(store_id, client.clone());
        Ok(client)
    }

    /// The peer to address in `c`: the cached leader, else a voter chosen by
    /// `attempt` so retries rotate.
    fn target(c: &CachedRegion, attempt: usize) -> Option<Peer> {
        if let Some(l) = c.leader {
            return Some(l);
        }
        let voters: Vec<&Peer> = c
            .region
            .peers
            .iter()
            .filter(|p| p.role == PeerRole::Voter as i32)
            .collect();
        (!voters.is_empty()).then(|| *voters[attempt % voters.len()])
    }

    /// One attempt at region `c`.
    async fn attempt<R, F, Fut>(
        &self,
        c: &CachedRegion,
        attempt: usize,
        write: Write,
        call: &mut F,
    ) -> Attempt<R>
    where
        R: Routed,
        F: FnMut(KvClient<Channel>, Context) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let Some(peer) = Self::target(c, attempt) else {
            self.cache.invalidate(c.region.id);
            return Attempt::Retry {
                wait: Some(self.cfg.min_backoff),
                reason: "no_peer",
            };
        };
        let client = match self.store_client(peer.store_id).await {
            Ok(cl) => cl,
            Err(e) => {
                tracing::debug!(error = %e, "no client for store");
                return Attempt::Retry {
                    wait: Some(self.cfg.min_backoff),
                    reason: "store_lookup",
                };
            }
        };
        let ctx = Context {
            region_id: c.region.id,
            region_epoch: c.region.region_epoch,
            peer: Some(peer),
            follower_read: false,
        };
        match call(client, ctx).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                let Some(err) = resp.region_error() else {
                    return Attempt::Done(resp);
                };
                match &err.error {
                    Some(Kind::NotLeader(nl)) => match nl.leader {
                        Some(l)
                            if l.id != peer.id && c.region.peers.iter().any(|p| p.id == l.id) =>
                        {
                            self.cache.set_leader(c.region.id, l);
                            Attempt::Retry {
                                wait: None,
                                reason: "not_leader",
                            }
                        }
                        Some(l) if l.id != peer.id => {
                            // A leader the cached region does not list: the
                            // membership changed; reload the region.
                            self.cache.invalidate(c.region.id);
                            Attempt::Retry {
                                wait: None,
                                reason: "not_leader",
                            }
                        }
                        _ => {
                            // Nobody known leads: try another peer soon.
                            self.cache.clear_leader(c.region.id);
                            Attempt::Retry {
                                wait: Some(self.cfg.min_backoff * 5),
                                reason: "no_leader",
                            }
                        }
                    },
                    Some(Kind::EpochNotMatch(e)) => {
                        if e.current_regions.is_empty() {
                            self.cache.invalidate(c.region.id);
                        }
                        for r in &e.current_regions {
                            self.cache.insert(r.clone(), None);
                        }
                        Attempt::Retry {
                            wait: None,
                            reason: "epoch_not_match",
                        }
                    }
                    Some(Kind::ServerIsBusy(b)) => Attempt::Retry {
                        wait: Some(Duration::from_millis(b.backoff_ms.max(1))),
                        reason: "server_is_busy",
                    },
                    Some(Kind::StaleCommand(_)) => Attempt::Retry {
                        wait: None,
                        reason: "stale_command",
                    },
                    _ => {
                        self.cache.invalidate(c.region.id);
                        Attempt::Retry {
                            wait: Some(self.cfg.min_backoff),
                            reason: "region_moved",
                        }
                    }
                }
            }
            Err(status) => {
                use tonic::Code;
                match status.code() {
                    Code::InvalidArgument | Code::OutOfRange => {
                        Attempt::Fatal(Error::InvalidArgument(status.message().to_string()))
                    }
                    Code::DeadlineExceeded if write != Write::Read => {
                        Attempt::Unknown(status.message().to_string())
                    }
                    _ => {
                        // The store is unreachable or failed: forget the
                        // channel and the leader.
                        self.stores.remove(&peer.store_id);
                        self.cache.clear_leader(c.region.id);
                        if write != Write::Read && !is_connect_error(&status) {
                            Attempt::Unknown(format!(
                                "store {}: {}",
                                peer.store_id,
                                status.message()
                            ))
                        } else {
                            Attempt::Retry {
                                wait: Some(self.cfg.min_backoff),
                                reason: "store_unavailable",
                            }
                        }
                    }
                }
            }
        }
    }

    /// Sends a request about `key` (encoded) until it succeeds, fails for
    /// good or the deadline passes. Returns the response and the region
    /// that served it.
    async fn route<R, F, Fut>(
        &self,
        op: &'static str,
        key: &[u8],
        write: Write,
        mut call: F,
    ) -> Result<(R, Region)>
    where
        R: Routed,
        F: FnMut(KvClient<Channel>, Context) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let started = Instant::now();
        let deadline = started + self.cfg.timeout;
        let mut backoff = self.cfg.min_backoff;
        let mut attempts = 0usize;
        let mut quick = 0usize;
        let result = loop {
            if Instant::now() >= deadline {
                // Every attempt so far certainly failed (an unknown outcome
                // ends the loop at once): nothing was applied.
                break Err(Error::Unavailable(format!(
                    "{op} did not complete within {:?}",
                    self.cfg.timeout
                )));
            }
            let c = match self.locate(key).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "locating a region failed");
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                    continue;
                }
            };
            match self.attempt(&c, attempts, write, &mut call).await {
                Attempt::Done(r) => break Ok((r, c.region)),
                Attempt::Fatal(e) => break Err(e),
                Attempt::Unknown(u) => {
                    break Err(Error::Indeterminate(format!("{op}: {u}")));
                }
                Attempt::Retry { wait, reason } => {
                    metrics::counter!(m::RETRIES_TOTAL, "reason" => reason).increment(1);
                    if attempts % RELOAD_EVERY_ATTEMPTS == RELOAD_EVERY_ATTEMPTS - 1 {
                        // However the failures look, the cached view may be
                        // what is wrong.
                        self.cache.invalidate(c.region.id);
                    }
                    tracing::debug!(op, region_id = c.region.id, reason, attempts, "retrying");
                    match wait {
                        Some(w) => {
                            quick = 0;
                            tokio::time::sleep(jitter(w.max(backoff))).await;
                            backoff = (backoff * 2).min(self.cfg.max_backoff);
                        }
                        // Hints can go round in circles (stale peers naming
                        // each other): after a few, ask the directory again.
                        None if quick >= MAX_QUICK_RETRIES => {
                            quick = 0;
                            self.cache.invalidate(c.region.id);
                            tokio::time::sleep(jitter(backoff)).await;
                            backoff = (backoff * 2).min(self.cfg.max_backoff);
                        }
                        None => quick += 1,
                    }
                }
            }
            attempts += 1;
        };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(m::REQUESTS_TOTAL, "op" => op, "outcome" => outcome).increment(1);
        metrics::histogram!(m::REQUEST_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
        result
    }

    fn encode_key(ks: &Keyspace, key: &[u8]) -> Result<Vec<u8>> {
        if key.is_empty() {
            return Err(Error::InvalidArgument("key is empty".into()));
        }
        if key.len() > keys::MAX_KEY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "key is {} bytes; the limit is {}",
                key.len(),
                keys::MAX_KEY_BYTES
            )));
        }
        Ok(keys::encode(ks.id, key))
    }

    fn check_value(value: &[u8]) -> Result<()> {
        keys::validate_value(value).map_err(Error::InvalidArgument)
    }

    fn user_key(encoded: Vec<u8>) -> Vec<u8> {
        keys::decode(&encoded)
            .map(|(_, k)| k.to_vec())
            .unwrap_or(encoded)
    }

    pub async fn get(&self, keyspace: Option<&str>, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let ks = self.keyspace(keyspace).await?;
        let k = Self::encode_key(&ks, key)?;
        let (resp, _) = self
            .route("get", &k, Write::Read, |mut c, ctx| {
                let req = GetRequest {
                    context: Some(ctx),
                    key: k.clone(),
                };
                async move { c.get(req).await }
            })
            .await?;
        Ok(resp.found.then_some(resp.value))
    }

    pub async fn put(&self, keyspace: Option<&str>, key: &[u8], value: &[u8]) -> Result<()> {
        let ks = self.keyspace(keyspace).await?;
        let k = Self::encode_key(&ks, key)?;
        Self::check_value(value)?;
        self.route("put", &k, Write::Once, |mut c, ctx| {
            let req = PutRequest {
                context: Some(ctx),
                key: k.clone(),
                value: value.to_vec(),
            };
            async move { c.put(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn delete(&self, keyspace: Option<&str>, key: &[u8]) -> Result<()> {
        let ks = self.keyspace(keyspace).await?;
        let k = Self::encode_key(&ks, key)?;
        self.route("delete", &k, Write::Once, |mut c, ctx| {
            let req = DeleteRequest {
                context: Some(ctx),
                key: k.clone(),
            };
            async move { c.delete(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Sets `key` to `new` (None deletes it) if its value is `expected`
    /// (None: absent). Never retried once sent: an unknown outcome is
    /// [`Error::Indeterminate`].
    pub async fn compare_and_swap(
        &self,
        keyspace: Option<&str>,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<CasOutcome> {
        let ks = self.keyspace(keyspace).await?;
        let k = Self::encode_key(&ks, key)?;
        if let Some(v) = new {
            Self::check_value(v)?;
        }
        let (resp, _) = self
            .route("compare_and_swap", &k, Write::Once, |mut c, ctx| {
                let req = CompareAndSwapRequest {
                    context: Some(ctx),
                    key: k.clone(),
                    expect_absent: expected.is_none(),
                    expected_value: expected.unwrap_or_default().to_vec(),
                    new_value: new.unwrap_or_default().to_vec(),
                    delete: new.is_none(),
                };
                async move { c.compare_and_swap(req).await }
            })
            .await?;
        Ok(CasOutcome {
            succeeded: resp.succeeded,
            previous: resp.previous_found.then_some(resp.previous_value),
        })
    }

    /// Groups encoded keys by the region that holds them.
    async fn group(&self, keys: Vec<Vec<u8>>) -> Result<Vec<(CachedRegion, Vec<Vec<u8>>)>> {
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

    /// Runs a batch: keys split per region, regions in parallel, failed
    /// parts regrouped and retried until the deadline.
    async fn batch<R, F, Fut>(
        &self,
        op: &'static str,
        keys: Vec<Vec<u8>>,
        write: Write,
        call: F,
    ) -> Result<Vec<R>>
    where
        R: Routed + Send,
        F: Fn(KvClient<Channel>, Context, Vec<Vec<u8>>) -> Fut + Clone,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let started = Instant::now();
        let deadline = started + self.cfg.timeout;
        let mut pending = keys;
        let mut done = vec![];
        let mut round = 0usize;
        while !pending.is_empty() {
            if Instant::now() >= deadline {
                // For a batch write, parts may have applied already: the
                // batch as a whole is indeterminate then.
                return Err(if write != Write::Read && !done.is_empty() {
                    Error::Indeterminate(format!(
                        "{op}: some regions applied their part before the deadline"
                    ))
                } else {
                    Error::Unavailable(format!(
                        "{op} did not complete within {:?}",
                        self.cfg.timeout
                    ))
                });
            }
            let groups = self.group(std::mem::take(&mut pending)).await?;
            let attempts = groups.into_iter().map(|(c, ks)| {
                let call = call.clone();
                async move {
                    let mut f = |client, ctx| call(client, ctx, ks.clone());
                    let outcome = self.attempt(&c, round, write, &mut f).await;
                    (outcome, ks)
                }
            });
            let mut waits = false;
            for (outcome, ks) in futures::future::join_all(attempts).await {
                match outcome {
                    Attempt::Done(r) => done.push(r),
                    Attempt::Fatal(e) => return Err(e),
                    Attempt::Unknown(u) => return Err(Error::Indeterminate(format!("{op}: {u}"))),
                    Attempt::Retry { wait, reason } => {
                        metrics::counter!(m::RETRIES_TOTAL, "reason" => reason).increment(1);
                        waits |= wait.is_some();
                        pending.extend(ks);
                    }
                }
            }
            if waits {
                tokio::time::sleep(jitter(self.cfg.min_backoff * (1 << round.min(6)) as u32)).await;
            }
            round += 1;
        }
        metrics::counter!(m::REQUESTS_TOTAL, "op" => op, "outcome" => "ok").increment(1);
        metrics::histogram!(m::REQUEST_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
        Ok(done)
    }

    /// Values of the keys that exist, in the order asked.
    pub async fn batch_get(
        &self,
        keyspace: Option<&str>,
        keys: &[Vec<u8>],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let ks = self.keyspace(keyspace).await?;
        let encoded = keys
            .iter()
            .map(|k| Self::encode_key(&ks, k))
            .collect::<Result<Vec<_>>>()?;
        let resps = self
            .batch(
                "batch_get",
                encoded.clone(),
                Write::Read,
                |mut c, ctx, keys| async move {
                    c.batch_get(BatchGetRequest {
                        context: Some(ctx),
                        keys,
                    })
                    .await
                },
            )
            .await?;
        let mut found: std::collections::HashMap<Vec<u8>, Vec<u8>> = resps
            .into_iter()
            .flat_map(|r| r.pairs)
            .map(|p| (p.key, p.value))
            .collect();
        Ok(encoded
            .into_iter()
            .filter_map(|k| found.remove(&k).map(|v| (Self::user_key(k), v)))
            .collect())
    }

    pub async fn batch_put(
        &self,
        keyspace: Option<&str>,
        pairs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        let ks = self.keyspace(keyspace).await?;
        let mut values = std::collections::HashMap::new();
        let mut encoded = vec![];
        for (k, v) in pairs {
            Self::check_value(v)?;
            let e = Self::encode_key(&ks, k)?;
            values.insert(e.clone(), v.clone());
            encoded.push(e);
        }
        let values = Arc::new(values);
        self.batch(
            "batch_put",
            encoded,
            Write::Once,
            move |mut c, ctx, keys| {
                let values = values.clone();
                async move {
                    let pairs = keys
                        .into_iter()
                        .map(|k| KvPair {
                            value: values[&k].clone(),
                            key: k,
                        })
                        .collect();
                    c.batch_put(BatchPutRequest {
                        context: Some(ctx),
                        pairs,
                    })
                    .await
                }
            },
        )
        .await
        .map(|_| ())
    }

    /// The encoded `[start, end)` of a user range in `ks` (None: the
    /// keyspace's bound). Hash keyspaces only scan whole.
    fn encoded_range(
        ks: &Keyspace,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let (ks_start, ks_end) = keys::keyspace_range(ks.id);
        if keys::is_hash_keyspace(ks.id) && (start.is_some() || end.is_some()) {
            return Err(Error::InvalidArgument(format!(
                "keyspace {:?} is hash-partitioned: scans cover it whole, without bounds",
                ks.name
            )));
        }
        let s = match start {
            Some(k) if !k.is_empty() => keys::encode(ks.id, k),
            _ => ks_start,
        };
        let e = match end {
            Some(k) if !k.is_empty() => keys::encode(ks.id, k),
            _ => ks_end,
        };
        Ok((s, e))
    }

    /// Pairs in `[start, end)` in key order (descending with `reverse`), up
    /// to `limit` (0: no limit), across regions.
    pub async fn scan(
        &self,
        keyspace: Option<&str>,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let ks = self.keyspace(keyspace).await?;
        let (start, end) = Self::encoded_range(&ks, start, end)?;
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut out = vec![];
        if !reverse {
            let mut cursor = start;
            loop {
                let left = limit - out.len();
                let (resp, region) = self
                    .route("scan", &cursor, Write::Read, |mut c, ctx| {
                        let req = ScanRequest {
                            context: Some(ctx),
                            start_key: cursor.clone(),
                            end_key: end.clone(),
                            limit: left.min(u32::MAX as usize) as u32,
                            reverse: false,
                        };
                        async move { c.scan(req).await }
                    })
                    .await?;
                out.extend(
                    resp.pairs
                        .into_iter()
                        .map(|p| (Self::user_key(p.key), p.value)),
                );
                if out.len() >= limit
                    || region.end_key.is_empty()
                    || (!end.is_empty() && region.end_key >= end)
                {
                    break;
                }
                cursor = region.end_key;
            }
        } else {
            let mut upper = end;
            loop {
                let regions = self.regions_in(&start, &upper).await?;
                let Some(last) = regions.last().cloned() else {
                    break;
                };
                let left = limit - out.len();
                let key = last.start_key.max(start.clone());
                let (resp, region) = self
                    .route("scan", &key, Write::Read, |mut c, ctx| {
                        let req = ScanRequest {
                            context: Some(ctx),
                            start_key: start.clone(),
                            end_key: upper.clone(),
                            limit: left.min(u32::MAX as usize) as u32,
                            reverse: true,
                        };
                        async move { c.scan(req).await }
                    })
                    .await?;
                out.extend(
                    resp.pairs
                        .into_iter()
                        .map(|p| (Self::user_key(p.key), p.value)),
                );
                if out.len() >= limit || region.start_key <= start {
                    break;
                }
                upper = region.start_key;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Deletes every key in `[start, end)` (None: the keyspace's bound).
    pub async fn delete_range(
        &self,
        keyspace: Option<&str>,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
    ) -> Result<()> {
        let ks = self.keyspace(keyspace).await?;
        let (start, end) = Self::encoded_range(&ks, start, end)?;
        if !end.is_empty() && start >= end {
            return Err(Error::InvalidArgument(
                "delete range: start must be below end".into(),
            ));
        }
        let mut cursor = start;
        let mut first = true;
        loop {
            let routed = self
                .route("delete_range", &cursor, Write::Once, |mut c, ctx| {
                    let req = DeleteRangeRequest {
                        context: Some(ctx),
                        start_key: cursor.clone(),
                        end_key: end.clone(),
                    };
                    async move { c.delete_range(req).await }
                })
                .await;
            let (_, region) = match routed {
                // Earlier regions already deleted their part: the range as
                // a whole is half done, not untouched.
                Err(Error::Unavailable(m)) if !first => {
                    return Err(Error::Indeterminate(format!(
                        "delete range: earlier regions applied their part, then {m}"
                    )))
                }
                other => other?,
            };
            first = false;
            if region.end_key.is_empty() || (!end.is_empty() && region.end_key >= end) {
                return Ok(());
            }
            cursor = region.end_key;
        }
    }
}
