//! A fake router for the SDK's tests: the routerpb `Router` service over an
//! in-memory map, with a scripted way of misbehaving and a call counter.
//!
//! It knows the `default` keyspace (empty name) and `users`; it refuses
//! empty keys and keys over 8 KiB like the real router, and answers scans
//! and batch gets in pages of [`PAGE_PAIRS`] pairs, so the SDK must follow
//! pages the way it does against a real router's byte budget. It is a test
//! double and nothing more: no regions, no limits on values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_proto::routerpb::router_server::{Router, RouterServer};
use tessera_proto::routerpb::{self, error::Kind, *};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// The keyspaces the fake knows.
const KEYSPACES: [&str; 2] = ["", "users"];

/// The longest key the fake accepts, like the router.
const MAX_KEY_BYTES: usize = 8 * 1024;

/// The pairs in one page of a scan or batch get.
pub const PAGE_PAIRS: usize = 2;

/// One keyspace's data: key → value.
type Pairs = BTreeMap<Vec<u8>, Vec<u8>>;

/// How the fake answers every call, before doing the work.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Serves every call.
    Serve,
    /// Answers the first `n` calls with an error of kind `UNAVAILABLE`,
    /// then serves.
    UnavailableFirst(usize),
    /// Refuses the first `n` calls as a router over its serving quotas
    /// does (gRPC RESOURCE_EXHAUSTED asking for [`BUSY_WAIT`]), then serves.
    BusyFirst(usize),
    /// Never answers.
    Hang,
    /// Fails every call with gRPC status INTERNAL.
    Status,
    /// Answers every call with an error of this kind.
    Answer(Kind),
}

/// The wait a [`Behaviour::BusyFirst`] refusal asks for.
pub const BUSY_WAIT: Duration = Duration::from_millis(40);

pub struct Fake {
    behaviour: Behaviour,
    calls: AtomicUsize,
    /// keyspace → its pairs.
    data: Mutex<BTreeMap<String, Pairs>>,
}

impl Fake {
    /// Calls received so far, whatever their answer.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Counts the call and applies the behaviour; `Some` is the error to
    /// answer with.
    async fn enter(&self, keyspace: &str) -> Result<Option<routerpb::Error>, Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        match self.behaviour {
            Behaviour::Serve => {}
            Behaviour::UnavailableFirst(k) if n < k => {
                return Ok(Some(error(Kind::Unavailable, "not yet")))
            }
            Behaviour::UnavailableFirst(_) => {}
            Behaviour::BusyFirst(k) if n < k => {
                return Err(tessera_proto::limits::busy_status(
                    "server is busy: 4096 requests are in flight",
                    BUSY_WAIT,
                ))
            }
            Behaviour::BusyFirst(_) => {}
            Behaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Behaviour::Status => return Err(Status::internal("the fake is broken")),
            Behaviour::Answer(kind) => return Ok(Some(error(kind, "as scripted"))),
        }
        if !KEYSPACES.contains(&keyspace) {
            return Ok(Some(error(
                Kind::KeyspaceNotFound,
                &format!("keyspace {keyspace:?} does not exist"),
            )));
        }
        Ok(None)
    }

    fn with_keyspace<T>(&self, keyspace: &str, f: impl FnOnce(&mut Pairs) -> T) -> T {
        let mut data = self.data.lock().expect("fake data lock");
        f(data.entry(keyspace.to_string()).or_default())
    }
}

fn error(kind: Kind, message: &str) -> routerpb::Error {
    routerpb::Error {
        kind: kind as i32,
        message: message.to_string(),
        retry_after_ms: 0,
    }
}

fn check_key(key: &[u8]) -> Option<routerpb::Error> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Some(error(Kind::InvalidArgument, "bad key size"));
    }
    None
}

fn in_range(key: &[u8], start: &Option<Vec<u8>>, end: &Option<Vec<u8>>) -> bool {
    start.as_ref().is_none_or(|s| key >= s.as_slice())
        && end.as_ref().is_none_or(|e| key < e.as_slice())
}

/// The service, over a shared [`Fake`] the test keeps.
struct Service(Arc<Fake>);

/// Answers early with a `$resp` carrying the error when the gate or the
/// check says so.
macro_rules! gate {
    ($self:ident, $ks:expr, $resp:ident $(, $check:expr)?) => {
        let refused = $self.0.enter($ks).await?;
        $(let refused = refused.or_else(|| $check);)?
        if let Some(e) = refused {
            let mut answer = $resp::default();
            answer.error = Some(e);
            return Ok(Response::new(answer));
        }
    };
}

#[tonic::async_trait]
impl Router for Service {
    async fn get(&self, r: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let r = r.into_inner();
        gate!(self, &r.keyspace, GetResponse, check_key(&r.key));
        let value = self
            .0
            .with_keyspace(&r.keyspace, |m| m.get(&r.key).cloned());
        Ok(Response::new(GetResponse {
            error: None,
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    async fn put(&self, r: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let r = r.into_inner();
        gate!(self, &r.keyspace, PutResponse, check_key(&r.key));
        self.0
            .with_keyspace(&r.keyspace, |m| m.insert(r.key, r.value));
        Ok(Response::new(PutResponse::default()))
    }

    async fn delete(&self, r: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let r = r.into_inner();
        gate!(self, &r.keyspace, DeleteResponse, check_key(&r.key));
        self.0.with_keyspace(&r.keyspace, |m| m.remove(&r.key));
        Ok(Response::new(DeleteResponse::default()))
    }

    async fn batch_get(
        &self,
        r: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let r = r.into_inner();
        gate!(
            self,
            &r.keyspace,
            BatchGetResponse,
            r.keys.iter().find_map(|k| check_key(k))
        );
        let (pairs, resume_index) = self.0.with_keyspace(&r.keyspace, |m| {
            let mut pairs: Vec<KvPair> = vec![];
            for (i, k) in r.keys.iter().enumerate() {
                if pairs.iter().any(|p| &p.key == k) {
                    continue;
                }
                if let Some(v) = m.get(k) {
                    if pairs.len() == PAGE_PAIRS {
                        return (pairs, i as u32);
                    }
                    pairs.push(KvPair {
                        key: k.clone(),
                        value: v.clone(),
                    });
                }
            }
            (pairs, 0)
        });
        Ok(Response::new(BatchGetResponse {
            error: None,
            pairs,
            resume_index,
        }))
    }

    async fn batch_put(
        &self,
        r: Request<BatchPutRequest>,
    ) -> Result<Response<BatchPutResponse>, Status> {
        let r = r.into_inner();
        gate!(
            self,
            &r.keyspace,
            BatchPutResponse,
            r.pairs.iter().find_map(|p| check_key(&p.key))
        );
        self.0.with_keyspace(&r.keyspace, |m| {
            for p in r.pairs {
                m.insert(p.key, p.value);
            }
        });
        Ok(Response::new(BatchPutResponse::default()))
    }

    async fn scan(&self, r: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let r = r.into_inner();
        gate!(self, &r.keyspace, ScanResponse);
        let limit = if r.limit == 0 {
            usize::MAX
        } else {
            r.limit as usize
        };
        // The fake's resume token is the next page's start (its end, in
        // reverse).
        let (start, end) = match (r.resume, r.reverse) {
            (Some(x), false) => (Some(x), r.end),
            (Some(x), true) => (r.start, Some(x)),
            (None, _) => (r.start, r.end),
        };
        let mut pairs: Vec<KvPair> = self.0.with_keyspace(&r.keyspace, |m| {
            let matching = m.iter().filter(|(k, _)| in_range(k, &start, &end));
            let pair = |(k, v): (&Vec<u8>, &Vec<u8>)| KvPair {
                key: k.clone(),
                value: v.clone(),
            };
            if r.reverse {
                matching.rev().take(limit).map(pair).collect()
            } else {
                matching.take(limit).map(pair).collect()
            }
        });
        let resume = (pairs.len() > PAGE_PAIRS).then(|| {
            if r.reverse {
                pairs[PAGE_PAIRS - 1].key.clone()
            } else {
                pairs[PAGE_PAIRS].key.clone()
            }
        });
        pairs.truncate(PAGE_PAIRS);
        Ok(Response::new(ScanResponse {
            error: None,
            pairs,
            resume,
        }))
    }

    async fn compare_and_swap(
        &self,
        r: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let r = r.into_inner();
        gate!(self, &r.keyspace, CompareAndSwapResponse, check_key(&r.key));
        let (succeeded, previous) = self.0.with_keyspace(&r.keyspace, |m| {
            let previous = m.get(&r.key).cloned();
            let succeeded = previous == r.expected;
            if succeeded {
                match r.new_value {
                    Some(v) => m.insert(r.key, v),
                    None => m.remove(&r.key),
                };
            }
            (succeeded, previous)
        });
        Ok(Response::new(CompareAndSwapResponse {
            error: None,
            succeeded,
            previous,
        }))
    }

    async fn delete_range(
        &self,
        r: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let r = r.into_inner();
        gate!(self, &r.keyspace, DeleteRangeResponse);
        self.0.with_keyspace(&r.keyspace, |m| {
            m.retain(|k, _| !in_range(k, &r.start, &r.end))
        });
        Ok(Response::new(DeleteRangeResponse::default()))
    }
}

/// A running fake router.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub fake: Arc<Fake>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl FakeServer {
    /// Starts a fake on a free port of 127.0.0.1.
    pub async fn start(behaviour: Behaviour) -> FakeServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve(listener, behaviour)
    }

    /// Starts a fake on `addr` (to restart one where it was).
    pub async fn start_at(addr: SocketAddr, behaviour: Behaviour) -> FakeServer {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind again");
        Self::serve(listener, behaviour)
    }

    fn serve(listener: tokio::net::TcpListener, behaviour: Behaviour) -> FakeServer {
        let addr = listener.local_addr().expect("local addr");
        let fake = Arc::new(Fake {
            behaviour,
            calls: AtomicUsize::new(0),
            data: Mutex::new(BTreeMap::new()),
        });
        let service = RouterServer::new(Service(fake.clone()))
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        FakeServer {
            addr,
            fake,
            stop,
            task,
        }
    }

    /// `host:port` of the fake.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the fake and waits until it no longer serves.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// An address where nothing listens.
pub fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr.to_string()
}
