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
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tessera_proto::raft_serverpb::raft_client::RaftClient;
use tessera_proto::raft_serverpb::raft_server::{Raft, RaftServer};
use tessera_proto::raft_serverpb::{Done, RaftMessage, RaftMessageBatch, SnapshotChunk};
use tessera_security::Security;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};

use super::{feedback_to, Feedback, FeedbackFn, NetFaults, OutgoingSnapshot, Transport};
use crate::mailbox::Mailbox;
use crate::poller::space::DiskSpace;
use crate::snapshot::{receive, Receive, SnapManager};
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
/// Bytes of snapshot file per chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Snapshots a store sends at once; more wait their turn.
pub const MAX_CONCURRENT_SNAPSHOT_SENDS: usize = 2;
/// Snapshots a store receives at once; more wait their turn.
pub const MAX_CONCURRENT_SNAPSHOT_RECEIVES: usize = 4;
/// A snapshot stream that sends nothing for this long is dropped (it holds
/// one of the receive slots).
pub const SNAPSHOT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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
    cluster_id: u64,
    runtime: tokio::runtime::Handle,
    dialer: Dialer,
    unreachable: Unreachable,
    feedback: FeedbackFn,
    snapshot_slots: Arc<Semaphore>,
    faults: NetFaults,
    conns: HashMap<StoreId, mpsc::Sender<RaftMessageBatch>>,
    pending: HashMap<StoreId, (Vec<RaftMessage>, usize)>,
}

impl GrpcTransport {
    /// A transport for `store_id` of cluster `cluster_id` (stamped on every
    /// batch and snapshot; the directory's own group uses 0) whose
    /// connection tasks run on `runtime`, dial what `resolver` says secured
    /// by `security`, and whose unreachable reports go to `mailbox`.
    pub fn new<O: Send + 'static>(
        store_id: StoreId,
        cluster_id: u64,
        runtime: tokio::runtime::Handle,
        resolver: Arc<dyn AddressResolver>,
        security: Security,
        mailbox: Mailbox<O>,
    ) -> Self {
        let feedback = feedback_to(mailbox);
        let f = feedback.clone();
        let unreachable: Unreachable = Arc::new(move |store_id| f(Feedback::Unreachable(store_id)));
        GrpcTransport {
            store_id,
            cluster_id,
            runtime,
            dialer: Dialer {
                resolver,
                security,
                cluster_id,
            },
            unreachable,
            feedback,
            snapshot_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_SNAPSHOT_SENDS)),
            faults: NetFaults::default(),
            conns: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// Drops traffic to the stores `faults` blocks (test harnesses only).
    pub fn with_faults(mut self, faults: NetFaults) -> Self {
        self.faults = faults;
        self
    }

    fn queue(&mut self, to: StoreId, messages: Vec<RaftMessage>) {
        let batch = RaftMessageBatch {
            from_store_id: self.store_id,
            messages,
            cluster_id: self.cluster_id,
        };
        let n = batch.messages.len() as u64;
        if self.faults.is_blocked(to) {
            // A partition: the messages vanish without an error.
            metrics::counter!(m::RAFT_MESSAGES_DROPPED_TOTAL).increment(n);
            return;
        }
        let tx = self.conns.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(CONNECTION_QUEUE_BATCHES);
            self.runtime.spawn(run_connection(
                to,
                self.dialer.clone(),
                rx,
                self.unreachable.clone(),
            ));
            tx
        });
        if let Some(faults) = self.faults.message_faults_to(to) {
            // A slow, duplicating, reordering link (test builds only):
            // each copy enters the stream when its time comes.
            let (first, copy) = faults.plan(&mut rand::rng());
            let copy = copy.map(|after| (after, batch.clone()));
            for (after, batch) in std::iter::once((first, batch)).chain(copy) {
                let tx = tx.clone();
                self.runtime.spawn(async move {
                    tokio::time::sleep(after).await;
                    if tx.try_send(batch).is_err() {
                        metrics::counter!(m::RAFT_MESSAGES_DROPPED_TOTAL).increment(n);
                    }
                });
            }
            return;
        }
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

    fn send_snapshot(&mut self, to_store: StoreId, snap: OutgoingSnapshot) {
        let dialer = self.dialer.clone();
        let feedback = self.feedback.clone();
        let slots = self.snapshot_slots.clone();
        let faults = self.faults.clone();
        self.runtime.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let region_id = snap.msg.region_id;
            let to_peer = snap.msg.to_peer.map(|p| p.id).unwrap_or_default();
            let started = Instant::now();
            let result = if faults.is_blocked(to_store) {
                Err(Error::Transport(format!(
                    "store {to_store} is partitioned away"
                )))
            } else {
                stream_snapshot(to_store, &dialer, snap).await
            };
            match &result {
                Ok(bytes) => {
                    metrics::counter!(m::SNAPSHOTS_SENT_TOTAL).increment(1);
                    metrics::counter!(m::SNAPSHOT_SENT_BYTES_TOTAL).increment(*bytes);
                    metrics::histogram!(m::SNAPSHOT_SEND_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    tracing::info!(region_id, to_store, bytes, "snapshot sent");
                }
                Err(e) => {
                    tracing::warn!(region_id, to_store, error = %e, "sending a snapshot failed")
                }
            }
            feedback(Feedback::SnapshotStatus {
                region_id,
                to_peer,
                delivered: result.is_ok(),
            });
        });
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
    dialer: Dialer,
    mut rx: mpsc::Receiver<RaftMessageBatch>,
    unreachable: Unreachable,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        // Connect lazily: only when there is something to send.
        let Some(first) = rx.recv().await else { return };
        let channel = match connect(to, &dialer).await {
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
                    match res {
                        // Another cluster, or an identity it does not accept.
                        Err(e) if matches!(
                            e.code(),
                            tonic::Code::FailedPrecondition
                                | tonic::Code::PermissionDenied
                                | tonic::Code::Unauthenticated
                        ) => {
                            tracing::warn!(store_id = to, error = %e.message(), "the store refused our raft stream");
                        }
                        Err(e) => tracing::debug!(store_id = to, error = %e, "raft stream ended"),
                        Ok(_) => {}
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

/// Where stores are and how to reach them.
#[derive(Clone)]
struct Dialer {
    resolver: Arc<dyn AddressResolver>,
    security: Security,
    cluster_id: u64,
}

async fn connect(to: StoreId, dialer: &Dialer) -> Result<tessera_security::Channel> {
    let addr = dialer.resolver.resolve(to).await?;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::Transport(format!("bad address {addr:?} for store {to}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    dialer
        .security
        .connect(endpoint)
        .await
        .map_err(|e| Error::Transport(format!("connecting to store {to} at {addr}: {e}")))
}

/// Streams one snapshot: the message first, then every file in chunks.
/// Returns the bytes of file data sent.
async fn stream_snapshot(to: StoreId, dialer: &Dialer, snap: OutgoingSnapshot) -> Result<u64> {
    let channel = connect(to, dialer).await?;
    let mut client = RaftClient::new(channel)
        .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
    let cluster_id = dialer.cluster_id;
    let producer = tokio::spawn(async move {
        let mut sent = 0u64;
        let first = SnapshotChunk {
            message: Some(snap.msg),
            cluster_id,
            ..Default::default()
        };
        if tx.send(first).await.is_err() {
            return Ok(sent);
        }
        for f in &snap.files {
            let path = snap.dir.join(&f.name);
            let mut file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| Error::Transport(format!("{}: {e}", path.display())))?;
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                let mut filled = 0;
                while filled < buf.len() {
                    let n = file
                        .read(&mut buf[filled..])
                        .await
                        .map_err(|e| Error::Transport(format!("{}: {e}", path.display())))?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                buf.truncate(filled);
                sent += filled as u64;
                let chunk = SnapshotChunk {
                    message: None,
                    file_name: f.name.clone(),
                    data: buf,
                    cluster_id: 0,
                };
                if tx.send(chunk).await.is_err() {
                    return Ok(sent);
                }
            }
        }
        Ok::<u64, Error>(sent)
    });
    client
        .snapshot(ReceiverStream::new(rx))
        .await
        .map_err(|e| Error::Transport(format!("snapshot to store {to}: {}", e.message())))?;
    producer
        .await
        .map_err(|e| Error::Transport(format!("snapshot reader failed: {e}")))?
}

/// The next chunk of a snapshot stream, or an error if the sender went
/// quiet for [`SNAPSHOT_IDLE_TIMEOUT`].
async fn next_chunk(stream: &mut Streaming<SnapshotChunk>) -> Result<Option<SnapshotChunk>> {
    match tokio::time::timeout(SNAPSHOT_IDLE_TIMEOUT, stream.message()).await {
        Ok(r) => r.map_err(|e| Error::Transport(e.to_string())),
        Err(_) => Err(Error::Transport(format!(
            "the snapshot stream sent nothing for {SNAPSHOT_IDLE_TIMEOUT:?}"
        ))),
    }
}

/// Writes the files of a snapshot stream into the snapshot's directory:
/// only files `expected` declared, each within its declared size. Returns
/// the bytes written.
async fn write_files(
    stream: &mut Streaming<SnapshotChunk>,
    expected: &mut receive::Expected,
) -> Result<u64> {
    let dir = expected.dir.clone();
    let io = |e: std::io::Error| Error::Engine(format!("{}: {e}", dir.display()));
    tokio::fs::create_dir_all(&dir).await.map_err(io)?;
    let mut current: Option<(String, tokio::fs::File)> = None;
    let mut bytes = 0u64;
    while let Some(chunk) = next_chunk(stream).await? {
        expected.accept(&chunk.file_name, chunk.data.len())?;
        let file = match current.take() {
            Some((name, f)) if name == chunk.file_name => (name, f),
            earlier => {
                if let Some((_, f)) = earlier {
                    f.sync_all().await.map_err(io)?;
                }
                let f = tokio::fs::File::create(dir.join(&chunk.file_name))
                    .await
                    .map_err(io)?;
                (chunk.file_name, f)
            }
        };
        let (_, f) = current.insert(file);
        f.write_all(&chunk.data).await.map_err(io)?;
        bytes = bytes.saturating_add(chunk.data.len() as u64);
    }
    if let Some((_, f)) = current.take() {
        f.sync_all().await.map_err(io)?;
    }
    Ok(bytes)
}

/// The receiving end: the `Raft` gRPC service of a store.
#[derive(Clone)]
pub struct RaftService {
    store_id: StoreId,
    cluster_id: u64,
    deliver: Arc<dyn Fn(RaftMessage) -> bool + Send + Sync>,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
    snap_mgr: SnapManager,
    receive_slots: Arc<Semaphore>,
    faults: NetFaults,
    /// A store low on disk space takes no snapshot (`poller/space.rs`).
    space: Arc<DiskSpace>,
}

impl RaftService {
    /// The service of `store_id`, which accepts batches and snapshots of
    /// cluster `cluster_id` only (0 for the directory's own group).
    pub fn new<O: Send + 'static>(
        store_id: StoreId,
        cluster_id: u64,
        mailbox: Mailbox<O>,
        snap_mgr: SnapManager,
    ) -> Self {
        RaftService {
            store_id,
            cluster_id,
            deliver: Arc::new(move |msg| mailbox.send_raft_message(msg)),
            stop: None,
            snap_mgr,
            receive_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_SNAPSHOT_RECEIVES)),
            faults: NetFaults::default(),
            space: Arc::default(),
        }
    }

    /// Refuses snapshots while `space` says the store is low on disk space.
    pub fn with_space(mut self, space: Arc<DiskSpace>) -> Self {
        self.space = space;
        self
    }

    /// Drops traffic from the stores `faults` blocks (test harnesses only).
    pub fn with_faults(mut self, faults: NetFaults) -> Self {
        self.faults = faults;
        self
    }

    async fn receive_snapshot(
        &self,
        mut stream: Streaming<SnapshotChunk>,
    ) -> Result<(RaftMessage, u64)> {
        let first = next_chunk(&mut stream)
            .await?
            .ok_or_else(|| Error::Transport("empty snapshot stream".into()))?;
        tessera_security::cluster::check(self.cluster_id, first.cluster_id, "snapshot")?;
        let msg = first.message.ok_or_else(|| {
            Error::Transport("snapshot stream does not start with its message".into())
        })?;
        let from_store = msg
            .from_peer
            .as_ref()
            .map(|p| p.store_id)
            .unwrap_or_default();
        if self.faults.is_blocked(from_store) {
            return Err(Error::Transport(format!(
                "store {from_store} is partitioned away"
            )));
        }
        let to_store = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or_default();
        if to_store != self.store_id {
            return Err(Error::Transport(format!(
                "snapshot for store {to_store} reached store {}",
                self.store_id
            )));
        }
        let mut expected = receive::Expected::of(&self.snap_mgr, &msg)?;
        let dir = expected.dir.clone();
        let _writing = match self.snap_mgr.begin_receive(&dir)? {
            Receive::Write(guard) => guard,
            Receive::Present => {
                // A complete copy is here (perhaps staged for apply): read
                // the stream to its end, within its declared sizes, and
                // write nothing.
                while let Some(chunk) = next_chunk(&mut stream).await? {
                    expected.accept(&chunk.file_name, chunk.data.len())?;
                }
                return Ok((msg, 0));
            }
        };
        let received = async {
            let bytes = write_files(&mut stream, &mut expected).await?;
            tokio::task::spawn_blocking(move || receive::complete(&expected))
                .await
                .map_err(|e| Error::Engine(e.to_string()))??;
            Ok(bytes)
        }
        .await;
        match received {
            Ok(bytes) => Ok((msg, bytes)),
            Err(e) => {
                // Nothing of a refused or broken stream stays on disk.
                self.snap_mgr.remove(&dir);
                Err(e)
            }
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
            tessera_security::cluster::check(self.cluster_id, batch.cluster_id, "raft")?;
            if self.faults.is_blocked(batch.from_store_id) {
                metrics::counter!(m::RAFT_MESSAGES_DROPPED_TOTAL)
                    .increment(batch.messages.len() as u64);
                continue;
            }
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

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        if self.space.is_low() {
            // Refused before a byte is written; the leader sends it again.
            return Err(Status::resource_exhausted(format!(
                "store {} is low on disk space: no snapshot is taken until space is freed",
                self.store_id
            )));
        }
        let _slot = self
            .receive_slots
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the store is stopping"))?;
        let started = Instant::now();
        match self.receive_snapshot(request.into_inner()).await {
            Ok((msg, bytes)) => {
                metrics::counter!(m::SNAPSHOTS_RECEIVED_TOTAL).increment(1);
                metrics::counter!(m::SNAPSHOT_RECEIVED_BYTES_TOTAL).increment(bytes);
                metrics::histogram!(m::SNAPSHOT_RECEIVE_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                tracing::info!(region_id = msg.region_id, bytes, "snapshot received");
                if !(self.deliver)(msg) {
                    return Err(Status::unavailable("the store's mailbox is full"));
                }
                Ok(Response::new(Done {}))
            }
            Err(e) => {
                tracing::warn!(error = %e, "receiving a snapshot failed");
                Err(match e {
                    Error::OtherCluster(m) => m.into(),
                    e => Status::data_loss(e.to_string()),
                })
            }
        }
    }
}
