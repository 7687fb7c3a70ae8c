//! The systems under test behind one trait, [`Backend`], so the same
//! generator drives both with the same meaning of every operation:
//!
//! - **read**: get one key; a missing key is an error (YCSB's NOT_FOUND);
//! - **insert** and **update**: put the whole record (YCSB's
//!   `writeallfields=true`: a KV store has no field-level update, so an
//!   update writes a new 10-field value over the old one);
//! - **scan**: up to `len` records from the key on, in key order, bounded
//!   by the end of the `user` key prefix;
//! - read-modify-write is read then update, composed by the runner.
//!
//! Connections: a backend holds a pool of `--connections` client objects
//! (default 1), shared by every client task (task *i* uses object *i* mod
//! N): the way an application uses these libraries, one client shared by
//! its threads. Both speak gRPC over HTTP/2, which multiplexes concurrent
//! requests on a connection: the tessera SDK keeps one connection per
//! router, etcd-client one balanced channel with a connection per member.
//! A client per task (64) would measure connection overhead no
//! application has. Measured here (workload C, 20,000 records, 64 tasks,
//! 10 s): tessera 20.7k / 20.6k / 20.4k ops/s with 1 / 4 / 16 objects,
//! etcd 15.4k / 13.9k / 12.9k — one is no bottleneck, and more only cost
//! etcd. The same N applies to both systems.
//!
//! - [`Tessera`]: the Rust SDK (`tessera_client`) to the routers; reads are
//!   linearizable (the leader's lease or ReadIndex).
//! - [`Etcd`]: `etcd-client`, balanced over the members' client URLs;
//!   reads are linearizable unless `serializable` (then a member answers
//!   from its own state, possibly stale).

use std::future::Future;
use std::time::Duration;

/// The exclusive end of YCSB's key range: every key starts with `user`.
pub const KEY_RANGE_END: &[u8] = b"uses";

/// Why an operation failed, as text (kept short for the report).
pub type OpError = String;

/// Puts records `0..records` (`key(n)` → `value`) through `b`, `parallel`
/// at a time (client `i` of a batch puts its `i`-th record); `loaded(k)`
/// after each batch of `k` records. The first failed put ends the load.
pub async fn load_records<B: Backend>(
    b: &std::sync::Arc<B>,
    records: i64,
    key: impl Fn(i64) -> String,
    value: &[u8],
    parallel: usize,
    mut loaded: impl FnMut(u64),
) -> anyhow::Result<()> {
    for chunk in (0..records).collect::<Vec<_>>().chunks(parallel.max(1)) {
        let tasks: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let (b, value, k) = (b.clone(), value.to_vec(), key(n));
                tokio::spawn(async move { b.put(i, k.as_bytes(), &value).await })
            })
            .collect();
        for t in tasks {
            t.await?.map_err(anyhow::Error::msg)?;
        }
        loaded(chunk.len() as u64);
    }
    Ok(())
}

/// One system under test. Clones are cheap; `client` picks the connection.
pub trait Backend: Send + Sync + 'static {
    /// The record, or an error when it is missing.
    fn read(&self, client: usize, key: &[u8]) -> impl Future<Output = Result<(), OpError>> + Send;
    /// Put a whole record.
    fn put(
        &self,
        client: usize,
        key: &[u8],
        value: &[u8],
    ) -> impl Future<Output = Result<(), OpError>> + Send;
    /// Up to `len` records from `key` on; returns how many.
    fn scan(
        &self,
        client: usize,
        key: &[u8],
        len: u32,
    ) -> impl Future<Output = Result<usize, OpError>> + Send;
}

/// tessera, through its routers or (direct mode) straight to the stores.
pub struct Tessera {
    clients: Vec<tessera_client::Client>,
}

impl Tessera {
    /// `endpoints`: the routers, or with `direct` the directory's members.
    /// `security`: how to reach them (the bench's own local clusters run
    /// plaintext or TLS; an existing cluster may need certificates).
    /// `p`: connections, the operation timeout, busy retries, the
    /// throttle and the batch stream.
    pub async fn connect(
        endpoints: &[String],
        direct: bool,
        p: &super::Params,
        security: &tessera_security::Security,
    ) -> anyhow::Result<Tessera> {
        let mut clients = vec![];
        for _ in 0..p.connections.max(1) {
            let builder = tessera_client::Client::builder();
            let builder = match direct {
                true => builder.directory(endpoints.iter().cloned()),
                false => builder.routers(endpoints.iter().cloned()),
            };
            clients.push(
                builder
                    .timeout(p.op_timeout())
                    .retry_busy(!p.no_busy_retry)
                    .batch_stream(!p.no_batch_stream)
                    .throttle(p.sdk_throttle, tessera_routing::throttle::DEFAULT_WINDOW)
                    .security(security.clone())
                    .build()
                    .await?,
            );
        }
        Ok(Tessera { clients })
    }

    /// Every read served as `consistency` says (the default: by the
    /// region's leader).
    pub fn with_consistency(self, consistency: tessera_client::ReadConsistency) -> Tessera {
        let clients = self
            .clients
            .iter()
            .map(|c| c.with_consistency(consistency))
            .collect();
        Tessera { clients }
    }

    fn client(&self, i: usize) -> &tessera_client::Client {
        &self.clients[i % self.clients.len()]
    }
}

impl Backend for Tessera {
    async fn read(&self, client: usize, key: &[u8]) -> Result<(), OpError> {
        match self.client(client).get(key).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("not found".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn put(&self, client: usize, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        self.client(client)
            .put(key, value)
            .await
            .map_err(|e| e.to_string())
    }

    async fn scan(&self, client: usize, key: &[u8], len: u32) -> Result<usize, OpError> {
        self.client(client)
            .scan(key..KEY_RANGE_END, len)
            .await
            .map(|v| v.len())
            .map_err(|e| e.to_string())
    }
}

/// etcd through `etcd-client`.
pub struct Etcd {
    clients: Vec<etcd_client::KvClient>,
    serializable: bool,
}

impl Etcd {
    /// `endpoints` are client URLs (`http://127.0.0.1:2379`) or
    /// `host:port`.
    /// With `certs` (ca.crt, client.admin.*): TLS with a client
    /// certificate.
    pub async fn connect(
        endpoints: &[String],
        connections: usize,
        timeout: Duration,
        serializable: bool,
        certs: Option<&std::path::Path>,
    ) -> anyhow::Result<Etcd> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else if certs.is_some() {
                    format!("https://{e}")
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let mut clients = vec![];
        for _ in 0..connections.max(1) {
            let options = super::clusters::etcd_options(certs, timeout, Duration::from_secs(5))?;
            let c = etcd_client::Client::connect(&endpoints, Some(options)).await?;
            clients.push(c.kv_client());
        }
        Ok(Etcd {
            clients,
            serializable,
        })
    }

    fn client(&self, i: usize) -> etcd_client::KvClient {
        self.clients[i % self.clients.len()].clone()
    }

    fn get_options(&self) -> etcd_client::GetOptions {
        let o = etcd_client::GetOptions::new();
        if self.serializable {
            o.with_serializable()
        } else {
            o
        }
    }
}

impl Backend for Etcd {
    async fn read(&self, client: usize, key: &[u8]) -> Result<(), OpError> {
        let r = self
            .client(client)
            .get(key, Some(self.get_options()))
            .await
            .map_err(|e| e.to_string())?;
        if r.kvs().is_empty() {
            Err("not found".into())
        } else {
            Ok(())
        }
    }

    async fn put(&self, client: usize, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        self.client(client)
            .put(key, value, None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn scan(&self, client: usize, key: &[u8], len: u32) -> Result<usize, OpError> {
        let o = self
            .get_options()
            .with_range(KEY_RANGE_END)
            .with_limit(len as i64);
        self.client(client)
            .get(key, Some(o))
            .await
            .map(|r| r.kvs().len())
            .map_err(|e| e.to_string())
    }
}
