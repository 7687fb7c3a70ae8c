//! The gRPC transport: one long-lived client stream per destination store
//! carrying `RaftMessageBatch`es, and the `Raft` service that receives them.
//!
//! Each destination has a task that owns the stream. The poller thread only
//! queues batches into that task's bounded channel and never waits: when the
//! channel is full or the store unreachable, messages are dropped (Raft
//! retransmits) and the poller is told so raft-rs can pause replication to
//! that store. The task connects lazily, resolves the store's address
//! through an [`AddressResolver`] (the directory, in production), and
//! reconnects with exponential backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tessera_proto::raft_serverpb::raft_client::RaftClient;
use tessera_proto::raft_serverpb::raft_server::{Raft, RaftServer};
use tessera_proto::raft_serverpb::{Done, RaftMessage, RaftMessageBatch};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};

use super::Transport;
use crate::router::RaftRouter;
use crate::{metrics as m, Error, Result, StoreId};

/// Largest gRPC message accepted on the Raft stream. One entry may carry an
/// 8 MiB value, and batches are split well below this.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// A batch is cut when it holds this many bytes of messages.
const BATCH_SPLIT_BYTES: usize = 8 * 1024 * 1024;
/// Batches queued for one destination before new ones are dropped.
const CONNECTION_QUEUE_BATCHES: usize = 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Finds the address (`host:port`) of a store.
pub trait AddressResolver: Send + Sync + 'static {
    fn resolve(&self, store_id: StoreId) -> BoxFuture<'static, Result<String>>;
}

/// A fixed store → address map (tests, and clusters configured by hand).
#[derive(Clone, Default)]
pub struct StaticResolver {
    addrs: Arc<parking_lot::RwLock<HashMap<StoreId, String>>>,
}

impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, store_id: StoreId, addr: impl Into<String>) {
        self.addrs.write().insert(store_id, addr.into());
    }
}

impl AddressResolver for StaticResolver {
    fn resolve(&self, store_id: StoreId) -> BoxFuture<'static, Result<String>> {
        let addr = self.addrs.read().get(&store_id).cloned();
        Box::pin(async move {
            addr.ok_or_else(|| Error::Transport(format!("no address known for store {store_id}")))
        })
    }
}

type Unreachable = Arc<dyn Fn(StoreId) + Send + Sync>;

pub struct GrpcTransport {
    store_id: StoreId,
    runtime: tokio::runtime::Handle,
    resolver: Arc<dyn AddressResolver>,
    unreachable: Unreachable,
    conns: HashMap<StoreId, mpsc::Sender<RaftMessageBatch>>,
    pending: HashMap<StoreId, (Vec<RaftMessage>, usize)>,
}

impl GrpcTransport {
    /// A transport for `store_id` whose connection tasks run on `runtime`
    /// and whose unreachable reports go to `router`.
    pub fn new<O: Send + 'static>(
        store_id: StoreId,
        runtime: tokio::runtime::Handle,
        resolver: Arc<dyn AddressResolver>,
        router: RaftRouter<O>,
    ) -> Self {
        let unreachable: Unreachable = Arc::new(move |store_id| {
            let _ = router.send(crate::router::PollerMsg::StoreUnreachable { store_id });
        });
        GrpcTransport {
            store_id,
            runtime,
            resolver,
            unreachable,
            conns: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    fn queue(&mut self, to: StoreId, messages: Vec<RaftMessage>) {
        let batch = RaftMessageBatch {
            from_store_id: self.store_id,
            messages,
        };
        let n = batch.messages.len() as u64;
        let tx = self.conns.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(CONNECTION_QUEUE_BATCHES);
            self.runtime.spawn(run_connection(
                to,
                self.resolver.clone(),
                rx,
                self.unreachable.clone(),
            ));
            tx
        });
        match tx.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!(m::RAFT_MESSAGES_DROPPED_TOTAL).increment(n);
                (self.unreachable)(to);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The task ended (runtime shutting down); start over next time.
                metrics::counter!(m::RAFT_MESSAGES_DROPPED_TOTAL).increment(n);
                self.conns.remove(&to);
            }
        }
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, to_store: StoreId, msg: RaftMessage) {
        let size = msg.message.len() + 64;
        let full = {
            let (msgs, bytes) = self.pending.entry(to_store).or_default();
            msgs.push(msg);
            *bytes += size;
            *bytes >= BATCH_SPLIT_BYTES
        };
        if full {
            let (msgs, _) = self.pending.remove(&to_store).unwrap_or_default();
            self.queue(to_store, msgs);
        }
    }

    fn flush(&mut self) {
        let pending: Vec<_> = self.pending.drain().collect();
        for (to, (msgs, _)) in pending {
            if !msgs.is_empty() {
                self.queue(to, msgs);
            }
        }
    }
}

async fn run_connection(
    to: StoreId,
    resolver: Arc<dyn AddressResolver>,
    mut rx: mpsc::Receiver<RaftMessageBatch>,
    unreachable: Unreachable,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        // Connect lazily: only when there is something to send.
        let Some(first) = rx.recv().await else { return };
        let channel = match connect(to, resolver.as_ref()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(store_id = to, error = %e, "cannot reach store");
                metrics::counter!(m::RAFT_MESSAGES_DROPPED_TOTAL)
                    .increment(first.messages.len() as u64);
                unreachable(to);
                // Drop what piles up while waiting; Raft will resend.
                tokio::time::sleep(backoff).await;
                while rx.try_recv().is_ok() {}
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        let (tx, stream_rx) = mpsc::channel(CONNECTION_QUEUE_BATCHES);
        let _ = tx.send(first).await;
        let mut client = RaftClient::new(channel)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES);
        let call = client.raft(ReceiverStream::new(stream_rx));
        tokio::pin!(call);
        loop {
            tokio::select! {
                res = &mut call => {
                    if let Err(e) = res {
                        tracing::debug!(store_id = to, error = %e, "raft stream ended");
                    }
                    unreachable(to);
                    break;
                }
                batch = rx.recv() => match batch {
                    Some(b) => {
                        if tx.send(b).await.is_err() {
                            break;
                        }
                    }
                    None => {
                        drop(tx);
                        let _ = call.await;
                        return;
                    }
                }
            }
        }
    }
}

async fn connect(to: StoreId, resolver: &dyn AddressResolver) -> Result<tonic::transport::Channel> {
    let addr = resolver.resolve(to).await?;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::Transport(format!("bad address {addr:?} for store {to}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    endpoint
        .connect()
        .await
        .map_err(|e| Error::Transport(format!("connecting to store {to} at {addr}: {e}")))
}

/// The receiving end: the `Raft` gRPC service of a store.
#[derive(Clone)]
pub struct RaftService {
    store_id: StoreId,
    deliver: Arc<dyn Fn(RaftMessage) -> bool + Send + Sync>,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl RaftService {
    pub fn new<O: Send + 'static>(store_id: StoreId, router: RaftRouter<O>) -> Self {
        RaftService {
            store_id,
            deliver: Arc::new(move |msg| router.send_raft_message(msg)),
            stop: None,
        }
    }

    /// Ends every open stream once `stop` turns true, so a server shutting
    /// down is not held open by the long-lived streams of other stores.
    pub fn with_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// The tonic server for this service, with message limits set.
    pub fn into_server(self) -> RaftServer<Self> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn raft(
        &self,
        request: Request<Streaming<RaftMessageBatch>>,
    ) -> Result<Response<Done>, Status> {
        let mut stream = request.into_inner();
        let mut stop = self.stop.clone();
        loop {
            let next = match stop.as_mut() {
                Some(stop) => tokio::select! {
                    m = stream.message() => m?,
                    _ = stop.wait_for(|s| *s) => return Err(Status::unavailable("the store is stopping")),
                },
                None => stream.message().await?,
            };
            let Some(batch) = next else { break };
            for msg in batch.messages {
                let to_store = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or_default();
                if to_store != self.store_id {
                    tracing::warn!(
                        to_store,
                        local = self.store_id,
                        from = batch.from_store_id,
                        "raft message for another store dropped"
                    );
                    continue;
                }
                if !(self.deliver)(msg) {
                    metrics::counter!(m::RAFT_MESSAGES_DROPPED_TOTAL).increment(1);
                }
            }
        }
        Ok(Response::new(Done {}))
    }
}
