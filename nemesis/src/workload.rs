//! The workload: concurrent clients doing reads, blind writes and
//! compare-and-swaps on a small set of keys through the SDK — through the
//! routers, or with [`WorkloadSpec::direct`] in the SDK's direct mode
//! (straight to the region leaders, no router) — every operation recorded
//! in the history.
//!
//! Rules that make the history checkable:
//! - every written value is unique in the run (one counter), so a read
//!   names the write it saw;
//! - a client is one sequential process; after an operation whose outcome
//!   is unknown (timeout, lost connection) it continues under a new client
//!   id, since the unknown operation may still take effect at any time;
//! - an error that guarantees nothing happened (`Unavailable`,
//!   `InvalidArgument`) is a definite failure; any other error of a write is
//!   indeterminate; a failed read has no effect either way.
//!
//! [`ReadPath::AnyReplica`] sends reads straight to a random replica of the
//! key's region as a follower read instead of through a router: with the
//! store's safe read path it is still linearizable (a ReadIndex round trip
//! to the leader); with unsafe reads switched on it is the negative control
//! the checker must catch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_client::{Client, Error as SdkError};
use tessera_proto::directorypb::{GetRegionRequest, ListStoresRequest};
use tessera_proto::kvpb::kv_client::KvClient;
use tessera_proto::kvpb::{Context, GetRequest};
use tessera_routing::directory::DirectoryConn;
use tessera_security::Channel;
use tessera_security::Security;
use tokio::sync::watch;

use crate::history::{OpHandle, OpKind, Outcome, Recorder};

/// How reads reach the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadPath {
    /// Through the routers, to the leader (what users do).
    Router,
    /// Straight to a random replica, as a follower read.
    AnyReplica,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkloadSpec {
    pub clients: usize,
    pub keys: usize,
    /// Percent of operations that are reads; `cas_percent` are
    /// compare-and-swaps; the rest are blind writes.
    pub read_percent: u32,
    pub cas_percent: u32,
    /// How long the SDK tries one operation before giving up.
    pub op_timeout: Duration,
    pub read_path: ReadPath,
    /// The SDK in direct mode (regions found through the directory,
    /// requests sent to their leaders) instead of through the routers.
    pub direct: bool,
    /// Some clients read with `ReadConsistency::Follower` (any voter
    /// serves, after a ReadIndex round trip to the leader), the others with
    /// the default, linearizable leader reads (or stale reads, below).
    pub follower_reads: bool,
    /// Some clients read with `ReadConsistency::Stale` at this bound (any
    /// voter from its own state), recorded as stale reads and checked for
    /// bounded staleness rather than linearizability. The clients take
    /// turns over the read modes in use: linearizable, then follower (if
    /// on), then stale (if on).
    pub stale_reads: Option<Duration>,
    /// Client c talks to router c mod n only (no failover to another):
    /// each router keeps its own clients through a fault (the clock-skew
    /// negative control needs readers on the router still reaching a
    /// deposed leader while the others write through the new one).
    pub pin_routers: bool,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            clients: 8,
            keys: 16,
            read_percent: 50,
            cas_percent: 20,
            op_timeout: Duration::from_secs(5),
            read_path: ReadPath::Router,
            direct: false,
            follower_reads: false,
            stale_reads: None,
            pin_routers: false,
        }
    }
}

/// The key a workload uses for index `i`.
pub fn key_name(i: usize) -> String {
    format!("nemesis/k{i:03}")
}

/// Shared counters of a run's clients.
#[derive(Default)]
struct Ids {
    next_client: AtomicU64,
    next_value: AtomicU64,
}

/// Where an SDK client connects: the routers, or in direct mode the
/// directory.
pub enum Via<'a> {
    Routers(&'a [String]),
    Direct(&'a [String]),
}

/// Builds an SDK client (dials nothing yet).
pub async fn connect(
    via: Via<'_>,
    timeout: Duration,
    security: &Security,
) -> anyhow::Result<Client> {
    let builder = Client::builder();
    let builder = match via {
        Via::Routers(routers) => builder.routers(routers.iter().cloned()),
        Via::Direct(directory) => builder.directory(directory.iter().cloned()),
    };
    Ok(builder
        .security(security.clone())
        .timeout(timeout)
        .connect_timeout(Duration::from_millis(500))
        .build()
        .await?)
}

/// Runs `spec.clients` clients until `stop` turns true; every operation
/// goes into `recorder`. Returns when every client has finished its last
/// operation.
pub async fn run(
    routers: Vec<String>,
    directory: Vec<String>,
    security: Security,
    spec: WorkloadSpec,
    seed: u64,
    recorder: Recorder,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ids = Arc::new(Ids {
        next_client: AtomicU64::new(1),
        next_value: AtomicU64::new(1),
    });
    let replicas = match spec.read_path {
        ReadPath::Router => None,
        ReadPath::AnyReplica => Some(Arc::new(ReplicaReader::new(
            directory.clone(),
            security.clone(),
        )?)),
    };
    use tessera_client::ReadConsistency as C;
    let mut modes = vec![C::Linearizable];
    if spec.follower_reads {
        modes.push(C::Follower);
    }
    if let Some(max_age) = spec.stale_reads {
        modes.push(C::Stale { max_age });
    }
    let mut tasks = vec![];
    for c in 0..spec.clients {
        // Client c prefers router c mod n (the SDK starts with the first
        // it is given): every router carries clients.
        let mut mine = routers.clone();
        if !mine.is_empty() {
            let n = mine.len();
            mine.rotate_left(c % n);
            if spec.pin_routers {
                mine.truncate(1);
            }
        }
        let via = match spec.direct {
            true => Via::Direct(&directory),
            false => Via::Routers(&mine),
        };
        let consistency = modes[c % modes.len()];
        let client = connect(via, spec.op_timeout, &security)
            .await?
            .with_consistency(consistency);
        let worker = Worker {
            client,
            replicas: replicas.clone(),
            spec: spec.clone(),
            ids: ids.clone(),
            recorder: recorder.clone(),
            rng: StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(c as u64)),
            last_seen: HashMap::new(),
        };
        tasks.push(tokio::spawn(worker.run(stop.clone())));
    }
    for t in tasks {
        t.await.map_err(|e| anyhow!("a client task failed: {e}"))?;
    }
    Ok(())
}

struct Worker {
    client: Client,
    replicas: Option<Arc<ReplicaReader>>,
    spec: WorkloadSpec,
    ids: Arc<Ids>,
    recorder: Recorder,
    rng: StdRng,
    /// The last value this client saw per key (the CAS's expected value).
    last_seen: HashMap<String, Option<u64>>,
}

impl Worker {
    async fn run(mut self, stop: watch::Receiver<bool>) {
        let mut me = self.ids.next_client.fetch_add(1, Ordering::Relaxed);
        while !*stop.borrow() {
            let key = key_name(self.rng.random_range(0..self.spec.keys));
            let roll = self.rng.random_range(0..100);
            let outcome = if roll < self.spec.read_percent {
                self.read(me, &key).await
            } else if roll < self.spec.read_percent + self.spec.cas_percent {
                self.cas(me, &key).await
            } else {
                self.write(me, &key).await
            };
            if outcome == Done::Unknown {
                me = self.ids.next_client.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn next_value(&self) -> u64 {
        self.ids.next_value.fetch_add(1, Ordering::Relaxed)
    }

    async fn read(&mut self, me: u64, key: &str) -> Done {
        // Stale readers read through the SDK whatever the read path.
        let (kind, replicas) = match self.client.consistency() {
            tessera_client::ReadConsistency::Stale { max_age } => (
                OpKind::StaleRead {
                    max_age_ms: u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX),
                },
                None,
            ),
            _ => (OpKind::Read, self.replicas.as_ref()),
        };
        let h = self.recorder.invoke(me, key, kind);
        let result = match replicas {
            None => self.client.get(key).await.map_err(|e| e.to_string()),
            Some(r) => r.get(key.as_bytes(), &mut self.rng).await,
        };
        match result {
            Ok(v) => {
                let read = v.map(|b| parse_value(&b));
                self.last_seen.insert(key.to_string(), read);
                self.recorder.complete(h, Outcome::Ok { read });
            }
            // A read changes nothing, whatever happened to it.
            Err(_) => {
                self.recorder.complete(h, Outcome::Fail);
            }
        }
        Done::Known
    }

    async fn write(&mut self, me: u64, key: &str) -> Done {
        let value = self.next_value();
        let h = self.recorder.invoke(me, key, OpKind::Write { value });
        let result = self.client.put(key, value.to_string()).await;
        self.finish_write(h, result.map(|_| Outcome::OK))
    }

    async fn cas(&mut self, me: u64, key: &str) -> Done {
        let expected = self.last_seen.get(key).copied().flatten();
        let new = self.next_value();
        let h = self.recorder.invoke(me, key, OpKind::Cas { expected, new });
        let exp_bytes = expected.map(|v| v.to_string());
        let result = self
            .client
            .compare_and_swap(
                key,
                exp_bytes.as_deref().map(str::as_bytes),
                Some(new.to_string().as_bytes()),
            )
            .await;
        let result = result.map(|o| {
            if o.succeeded {
                self.last_seen.insert(key.to_string(), Some(new));
                Outcome::OK
            } else {
                let actual = o.previous.as_deref().map(parse_value);
                self.last_seen.insert(key.to_string(), actual);
                Outcome::Mismatch { actual }
            }
        });
        self.finish_write(h, result)
    }

    fn finish_write(&self, h: OpHandle, result: Result<Outcome, SdkError>) -> Done {
        match result {
            Ok(outcome) => {
                self.recorder.complete(h, outcome);
                Done::Known
            }
            // Refusals that say nothing was applied.
            Err(SdkError::Unavailable(_))
            | Err(SdkError::ResourceExhausted(_))
            | Err(SdkError::NoSpace(_))
            | Err(SdkError::InvalidArgument(_)) => {
                self.recorder.complete(h, Outcome::Fail);
                Done::Known
            }
            Err(_) => {
                self.recorder.complete(h, Outcome::Indeterminate);
                Done::Unknown
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Done {
    Known,
    Unknown,
}

/// A stored value as the u64 that was written; a value no client could
/// have written reads as `u64::MAX` (never written, so the checker flags
/// it).
fn parse_value(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Follower reads straight from the stores, for [`ReadPath::AnyReplica`].
struct ReplicaReader {
    directory: DirectoryConn,
    channels: parking_lot::Mutex<HashMap<u64, Channel>>,
    security: Security,
}

impl ReplicaReader {
    fn new(directory: Vec<String>, security: Security) -> anyhow::Result<Self> {
        Ok(ReplicaReader {
            directory: DirectoryConn::new(directory, Duration::from_secs(5), security.clone())?,
            security,
            channels: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    async fn channel(&self, store_id: u64) -> Result<Channel, String> {
        if let Some(c) = self.channels.lock().get(&store_id) {
            return Ok(c.clone());
        }
        let stores = self
            .directory
            .call("list stores", |mut c| async move {
                c.list_stores(ListStoresRequest::default()).await
            })
            .await
            .map_err(|e| e.to_string())?;
        let addr = stores
            .stores
            .iter()
            .filter_map(|s| s.store.as_ref())
            .find(|s| s.id == store_id)
            .map(|s| s.address.clone())
            .ok_or_else(|| format!("store {store_id} unknown"))?;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(3));
        let channel = self.security.channel(channel);
        self.channels.lock().insert(store_id, channel.clone());
        Ok(channel)
    }

    async fn get(&self, user_key: &[u8], rng: &mut StdRng) -> Result<Option<Vec<u8>>, String> {
        let key = tessera_proto::keys::encode(tessera_proto::keys::DEFAULT_KEYSPACE_ID, user_key);
        let k = key.clone();
        let info = self
            .directory
            .call("get region", |mut c| {
                let key = k.clone();
                async move { c.get_region(GetRegionRequest { key }).await }
            })
            .await
            .map_err(|e| e.to_string())?
            .region
            .and_then(|r| r.region)
            .ok_or("no region holds the key")?;
        if info.peers.is_empty() {
            return Err("the region has no peers".into());
        }
        let peer = info.peers[rng.random_range(0..info.peers.len())];
        let channel = self.channel(peer.store_id).await?;
        let resp = KvClient::new(channel)
            .get(GetRequest {
                context: Some(Context {
                    region_id: info.id,
                    region_epoch: info.region_epoch,
                    peer: Some(peer),
                    follower_read: true,
                    stale_max_age_ms: 0,
                }),
                key,
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        if let Some(e) = resp.region_error {
            return Err(format!("{e:?}"));
        }
        Ok(resp.found.then_some(resp.value))
    }
}

/// Reads every key once through the routers after the faults have healed,
/// retrying until each read succeeds (recorded as ordinary reads of fresh
/// clients): the history's final reads, which the lost-write check relies
/// on.
pub async fn final_reads(
    routers: &[String],
    security: &Security,
    keys: usize,
    recorder: &Recorder,
    deadline: Duration,
) -> anyhow::Result<()> {
    let client = connect(Via::Routers(routers), Duration::from_secs(5), security).await?;
    let until = tokio::time::Instant::now() + deadline;
    // Client ids far above the workload's, so they never collide.
    let mut me = 1u64 << 40;
    for i in 0..keys {
        let key = key_name(i);
        loop {
            me += 1;
            let h = recorder.invoke(me, &key, OpKind::Read);
            match client.get(&key).await {
                Ok(v) => {
                    recorder.complete(
                        h,
                        Outcome::Ok {
                            read: v.map(|b| parse_value(&b)),
                        },
                    );
                    break;
                }
                Err(e) => {
                    recorder.complete(h, Outcome::Fail);
                    if tokio::time::Instant::now() > until {
                        return Err(anyhow!("the final read of {key} kept failing: {e}"))
                            .context("the cluster did not recover after the faults healed");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    Ok(())
}
