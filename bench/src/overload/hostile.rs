//! The hostile mix: requests that are well-formed and legal yet cost a
//! server far more than they cost the client, sent while ordinary load
//! runs beside them. The same four attacks against either system:
//!
//! - **duplicate-key batch gets** of a large value: tessera `BatchGet`
//!   naming one 1 MiB key `batch_copies` times; etcd a `Txn` of 128
//!   `Range` gets of it (`--max-txn-ops`' default, etcd has no batch get).
//!   Values are 1 MiB because etcd refuses requests over 1.5 MiB.
//! - **unbounded scans** over 64 such values: tessera `Scan` with
//!   `limit = 0` (the SDK follows the pages), etcd a `Range` without a
//!   limit.
//! - **slow readers**: connections that send scans and never read the
//!   answers (HTTP/2 windows of 64 KiB, response bodies never polled),
//!   each holding its streams open for the whole phase.
//! - **idle connections**: plain TCP connections that send nothing.
//!
//! Each attack's outcomes are counted by kind (`ok`, or the failure's
//! [`reason`]) with one example message.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use serde::Serialize;
use tonic::transport::Endpoint;

use tessera_e2e::RawCodec;

use super::open_loop::reason;
use crate::ycsb::clusters::etcd_options;

/// Key of the large value the batch gets name.
const BIG_KEY: &[u8] = b"hostile-big";
/// Prefix of the values the scans cover.
const SCAN_PREFIX: &str = "hostile-scan/";
const SCAN_END: &[u8] = b"hostile-scan0";
const VALUE_BYTES: usize = 1 << 20;
const SCAN_VALUES: usize = 64;
/// Deadline of the writes that prepare the attacks (1 MiB values to a
/// cluster that may still be working off the last overload step).
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);
/// etcd's default `--max-txn-ops`.
const ETCD_TXN_OPS: usize = 128;

/// How hard each attack pushes.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct HostileParams {
    /// Concurrent senders of duplicate-key batch gets.
    #[arg(long, default_value_t = 4)]
    pub batch_senders: usize,
    /// Times a tessera batch get names the key (etcd: 128, its limit).
    #[arg(long, default_value_t = 300)]
    pub batch_copies: usize,
    /// Concurrent senders of unbounded scans.
    #[arg(long, default_value_t = 2)]
    pub scan_senders: usize,
    /// Connections that never read their answers.
    #[arg(long, default_value_t = 8)]
    pub slow_connections: usize,
    /// Unread scans held open on each of them.
    #[arg(long, default_value_t = 8)]
    pub slow_streams: usize,
    /// Idle TCP connections (the open-file limit is raised to its hard
    /// limit first).
    #[arg(long, default_value_t = 2000)]
    pub idle_connections: usize,
}

/// What one attack got.
#[derive(Serialize, Clone, Debug, Default)]
pub struct AttackResult {
    pub attack: String,
    pub attempts: u64,
    /// By outcome: `ok` or a failure reason.
    pub outcomes: BTreeMap<String, u64>,
    /// One message per failure reason.
    pub examples: BTreeMap<String, String>,
}

impl AttackResult {
    fn new(attack: &str) -> Self {
        AttackResult {
            attack: attack.into(),
            ..Default::default()
        }
    }

    fn add(&mut self, outcome: Result<String, String>) {
        self.attempts += 1;
        let (kind, example) = match outcome {
            Ok(kind) => (kind, None),
            Err(e) => (reason(&e).to_string(), Some(e)),
        };
        if let Some(e) = example {
            let mut e = e.replace('\n', " ");
            e.truncate(240);
            self.examples.entry(kind.clone()).or_insert(e);
        }
        *self.outcomes.entry(kind).or_default() += 1;
    }

    /// Outcomes as `ok 12, busy 3`.
    pub fn summary(&self) -> String {
        self.outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The system the attacks go to.
#[derive(Clone)]
pub enum Target {
    Tessera {
        routers: Vec<String>,
        security: tessera_security::Security,
        timeout: Duration,
    },
    Etcd {
        endpoints: Vec<String>,
        certs: Option<PathBuf>,
        timeout: Duration,
    },
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A tessera client whose operations end by `timeout`; `retry_busy` as
/// the SDK's option.
async fn tessera_client(
    routers: &[String],
    security: &tessera_security::Security,
    timeout: Duration,
    retry_busy: bool,
) -> Result<tessera_client::Client, String> {
    tessera_client::Client::builder()
        .endpoints(routers.iter().cloned())
        .security(security.clone())
        .timeout(timeout)
        .retry_busy(retry_busy)
        .build()
        .await
        .map_err(err)
}

/// An etcd client whose operations end by `timeout`.
async fn etcd_client(
    endpoints: &[String],
    certs: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<etcd_client::Client, String> {
    let options = etcd_options(certs, timeout, Duration::from_secs(5)).map_err(err)?;
    etcd_client::Client::connect(endpoints, Some(options))
        .await
        .map_err(err)
}

impl Target {
    /// Writes the large value and the values the scans cover (waiting out
    /// busy refusals: this is set-up, not an attack).
    pub async fn prepare(&self) -> anyhow::Result<()> {
        let value = vec![b'x'; VALUE_BYTES];
        let keys = std::iter::once(BIG_KEY.to_vec())
            .chain((0..SCAN_VALUES).map(|i| scan_key(i).into_bytes()));
        match self {
            Target::Tessera {
                routers, security, ..
            } => {
                let c = tessera_client(routers, security, PREPARE_TIMEOUT, true)
                    .await
                    .map_err(anyhow::Error::msg)?;
                for k in keys {
                    c.put(&k, &value).await?;
                }
            }
            Target::Etcd {
                endpoints, certs, ..
            } => {
                let mut c = etcd_client(endpoints, certs.as_deref(), PREPARE_TIMEOUT)
                    .await
                    .map_err(anyhow::Error::msg)?;
                for k in keys {
                    c.put(k, value.clone(), None).await?;
                }
            }
        }
        Ok(())
    }

    /// A client of the system, connected once per sender; refusals are
    /// outcomes, not retried.
    async fn conn(&self) -> Result<Conn, String> {
        Ok(match self {
            Target::Tessera {
                routers,
                security,
                timeout,
            } => Conn::Tessera(tessera_client(routers, security, *timeout, false).await?),
            Target::Etcd {
                endpoints,
                certs,
                timeout,
            } => Conn::Etcd(Box::new(
                etcd_client(endpoints, certs.as_deref(), *timeout).await?,
            )),
        })
    }

    /// A channel with 64 KiB HTTP/2 windows (what a client that never
    /// reads gets to hold up).
    async fn slow_channel(&self) -> Result<SlowChannel, String> {
        let tune = |e: Endpoint| {
            e.initial_stream_window_size(65_535)
                .initial_connection_window_size(65_535)
                .connect_timeout(Duration::from_secs(5))
        };
        match self {
            Target::Tessera {
                routers, security, ..
            } => {
                let e = Endpoint::from_shared(format!("http://{}", routers[0])).map_err(err)?;
                let ch = security.connect(tune(e)).await.map_err(err)?;
                Ok(SlowChannel::Tessera(tonic::client::Grpc::new(ch)))
            }
            Target::Etcd {
                endpoints, certs, ..
            } => {
                let mut e = tune(Endpoint::from_shared(endpoints[0].clone()).map_err(err)?);
                if let Some(dir) = certs {
                    e = e.tls_config(etcd_tls(dir).map_err(err)?).map_err(err)?;
                }
                let ch = e.connect().await.map_err(err)?;
                Ok(SlowChannel::Etcd(tonic::client::Grpc::new(ch)))
            }
        }
    }
}

/// One sender's client.
enum Conn {
    Tessera(tessera_client::Client),
    Etcd(Box<etcd_client::Client>),
}

impl Conn {
    /// One duplicate-key batch get of the large value.
    async fn batch_get(&mut self, copies: usize) -> Result<String, String> {
        match self {
            Conn::Tessera(c) => {
                let got = c.batch_get(vec![BIG_KEY; copies]).await.map_err(err)?;
                Ok(format!("ok ({} value(s))", got.len()))
            }
            Conn::Etcd(c) => {
                let gets = vec![etcd_client::TxnOp::get(BIG_KEY, None); ETCD_TXN_OPS];
                c.txn(etcd_client::Txn::new().and_then(gets))
                    .await
                    .map_err(err)?;
                Ok("ok".into())
            }
        }
    }

    /// One scan of every value under the scan prefix, without a limit.
    async fn scan(&mut self) -> Result<String, String> {
        match self {
            Conn::Tessera(c) => {
                let got = c
                    .scan(SCAN_PREFIX.as_bytes()..SCAN_END, 0)
                    .await
                    .map_err(err)?;
                Ok(format!("ok ({} values)", got.len()))
            }
            Conn::Etcd(c) => {
                let r = c
                    .get(
                        SCAN_PREFIX,
                        Some(etcd_client::GetOptions::new().with_range(SCAN_END)),
                    )
                    .await
                    .map_err(err)?;
                Ok(format!("ok ({} values)", r.kvs().len()))
            }
        }
    }
}

fn scan_key(i: usize) -> String {
    format!("{SCAN_PREFIX}{i:03}")
}

fn etcd_tls(dir: &std::path::Path) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    use tessera_security::certs::{CertsDir, LOCAL_ADMIN};
    use tessera_security::{Identity, Kind};
    let d = CertsDir::new(dir);
    let admin = Identity::new(Kind::Client, LOCAL_ADMIN)?;
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(
            d.ca_cert(),
        )?))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(d.cert(&admin))?,
            std::fs::read(d.key(&admin))?,
        )))
}

/// The two fields of etcd's `etcdserverpb.RangeRequest` a scan needs
/// (etcd-client keeps its generated messages private).
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdRangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    range_end: Vec<u8>,
}

enum SlowChannel {
    Tessera(tonic::client::Grpc<tessera_security::Channel>),
    Etcd(tonic::client::Grpc<tonic::transport::Channel>),
}

impl SlowChannel {
    /// Sends one unbounded scan and returns its answer unread.
    async fn unread_scan(&mut self) -> Result<tonic::Streaming<Vec<u8>>, String> {
        macro_rules! call {
            ($grpc:expr, $path:expr, $body:expr) => {{
                $grpc.ready().await.map_err(err)?;
                $grpc
                    .server_streaming(
                        tonic::Request::new($body),
                        tonic::codegen::http::uri::PathAndQuery::from_static($path),
                        RawCodec,
                    )
                    .await
                    .map(|r| r.into_inner())
                    .map_err(err)
            }};
        }
        match self {
            SlowChannel::Tessera(g) => {
                let req = tessera_proto::routerpb::ScanRequest {
                    start: Some(SCAN_PREFIX.into()),
                    end: Some(SCAN_END.to_vec()),
                    ..Default::default()
                };
                call!(g, "/routerpb.Router/Scan", req.encode_to_vec())
            }
            SlowChannel::Etcd(g) => {
                let req = EtcdRangeRequest {
                    key: SCAN_PREFIX.into(),
                    range_end: SCAN_END.to_vec(),
                };
                call!(g, "/etcdserverpb.KV/Range", req.encode_to_vec())
            }
        }
    }
}

/// Runs every attack against `target` for `duration`; returns each
/// attack's outcomes.
pub async fn run(target: &Target, p: &HostileParams, duration: Duration) -> Vec<AttackResult> {
    let until = Instant::now() + duration;
    let copies = p.batch_copies;
    let repeat = |name: &'static str, senders: usize, batch: bool| {
        let result = Arc::new(Mutex::new(AttackResult::new(name)));
        let tasks: Vec<_> = (0..senders)
            .map(|_| {
                let (target, result) = (target.clone(), result.clone());
                tokio::spawn(async move {
                    let mut conn = match target.conn().await {
                        Ok(c) => c,
                        Err(e) => return result.lock().expect("result").add(Err(e)),
                    };
                    while Instant::now() < until {
                        let r = if batch {
                            conn.batch_get(copies).await
                        } else {
                            conn.scan().await
                        };
                        result.lock().expect("result").add(r);
                    }
                })
            })
            .collect();
        (result, tasks)
    };
    let (batch, batch_tasks) = repeat("duplicate-key batch get", p.batch_senders, true);
    let (scan, scan_tasks) = repeat("unbounded scan", p.scan_senders, false);
    let slow = slow_readers(target, p, until);
    let idle = idle_connections(target, p.idle_connections, until);
    let (slow, idle) = tokio::join!(slow, idle);
    for t in batch_tasks.into_iter().chain(scan_tasks) {
        let _ = t.await;
    }
    let take = |r: Arc<Mutex<AttackResult>>| std::mem::take(&mut *r.lock().expect("result"));
    vec![take(batch), take(scan), slow, idle]
}

/// Opens `slow_connections` connections, sends `slow_streams` scans on
/// each, never reads them and holds them until `until`.
async fn slow_readers(target: &Target, p: &HostileParams, until: Instant) -> AttackResult {
    let mut result = AttackResult::new("slow reader (unread scan)");
    let (mut held, mut channels) = (vec![], vec![]);
    for _ in 0..p.slow_connections {
        let mut ch = match target.slow_channel().await {
            Ok(ch) => ch,
            Err(e) => {
                result.add(Err(format!("connect: {e}")));
                continue;
            }
        };
        for _ in 0..p.slow_streams {
            if Instant::now() >= until {
                break;
            }
            let r = tokio::time::timeout(Duration::from_secs(10), ch.unread_scan())
                .await
                .unwrap_or_else(|_| Err("timed out waiting for the answer's headers".into()));
            match r {
                Ok(stream) => {
                    held.push(stream);
                    result.add(Ok("held unread".into()));
                }
                Err(e) => result.add(Err(e)),
            }
        }
        channels.push(ch);
    }
    tokio::time::sleep_until(until.into()).await;
    drop(held);
    drop(channels);
    result
}

/// Opens `n` TCP connections that send nothing, holds them until
/// `until`, and counts how many the server had closed by then.
async fn idle_connections(target: &Target, n: usize, until: Instant) -> AttackResult {
    let mut result = AttackResult::new("idle connection");
    let addr = match target {
        Target::Tessera { routers, .. } => routers[0].clone(),
        Target::Etcd { endpoints, .. } => endpoints[0]
            .split_once("://")
            .map_or(endpoints[0].clone(), |(_, a)| a.to_string()),
    };
    let mut conns = vec![];
    for _ in 0..n {
        match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            Ok(Ok(s)) => conns.push(s),
            Ok(Err(e)) => result.add(Err(format!("connect: {e}"))),
            Err(_) => result.add(Err("connect: timed out".into())),
        }
    }
    tokio::time::sleep_until(until.into()).await;
    for s in &conns {
        let mut buf = [0u8; 1];
        let outcome = match s.try_read(&mut buf) {
            Ok(0) => "closed by the server",
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => "held open",
            Ok(_) => "held open (server spoke)",
            Err(_) => "closed by the server",
        };
        result.add(Ok(outcome.into()));
    }
    result
}
