//! The client side of the store's `BatchCommands` stream: one long-lived
//! stream per store carries the point requests (get, put, delete,
//! compare-and-swap) of every caller, many per message.
//!
//! One task per store owns the stream. It sends whatever callers queued
//! while it was busy, in one message: an idle client's request goes out at
//! once, alone, and a loaded client's requests ride together, with no
//! timer (batching comes from the load, never from waiting). Answers come
//! back batched the same way and are handed to their callers by request
//! id. The store serves each carried request as its unary RPC (see
//! `tessera_store::service::stream`): the same access rules, quotas,
//! timeouts and answers; the puts and deletes of one region in one message
//! may share one Raft entry.
//!
//! "Was it sent?" ([`crate::sent`]) keeps its meaning: a request is
//! reported unsent only when the stream could not be opened (the
//! connection could not be made: the status carries tonic's
//! `ConnectError`). Once a request was queued on an open stream, a stream
//! that breaks fails it as "may have been applied". A store that does not
//! know the stream (an older version) answers `UNIMPLEMENTED` when it is
//! opened: nothing was sent, and [`StoreClient`] sends that store's
//! requests as unary calls from then on.
//!
//! Multi-key requests (batch get and put, scans, delete-range) stay unary:
//! their payloads and answers can be large, and one in the stream would
//! hold back the small requests behind it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tessera_proto::kvpb::batch_commands_request::request::Cmd;
use tessera_proto::kvpb::batch_commands_request::Request;
use tessera_proto::kvpb::batch_commands_response::response::Cmd as Answer;
use tessera_proto::kvpb::kv_client::KvClient;
use tessera_proto::kvpb::*;
use tessera_security::Channel;
use tokio::sync::{mpsc, oneshot};
use tonic::{Response, Status, Streaming};

/// The most requests one outgoing message carries.
const MAX_REQUESTS_PER_MESSAGE: usize = 512;

/// Why a request has no answer.
enum Failed {
    /// It never left: the stream could not be opened (the caller is given
    /// the command back, for a unary call when the store lacks the stream).
    Unsent(Box<(Status, Cmd)>),
    /// It may have reached the store.
    Lost(Box<Status>),
}

impl Failed {
    fn lost(status: Status) -> Self {
        Failed::Lost(Box::new(status))
    }
}

struct Queued {
    cmd: Cmd,
    reply: oneshot::Sender<Result<Answer, Failed>>,
}

/// One store's stream: a handle to the task that owns it.
struct CommandStream {
    queue: mpsc::UnboundedSender<Queued>,
}

impl CommandStream {
    fn start(client: KvClient<Channel>) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(client, rx));
        CommandStream { queue }
    }

    async fn call(&self, cmd: Cmd) -> Result<Answer, Failed> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(q)) = self.queue.send(Queued { cmd, reply }) {
            return Err(Failed::Unsent(Box::new((
                Status::unavailable("the store's stream has stopped"),
                q.cmd,
            ))));
        }
        answer.await.unwrap_or_else(|_| {
            Err(Failed::lost(Status::unavailable(
                "the store's stream stopped",
            )))
        })
    }
}

/// The stream's outgoing half and its answers.
type Open = (
    mpsc::UnboundedSender<BatchCommandsRequest>,
    Streaming<BatchCommandsResponse>,
);

async fn open(client: &mut KvClient<Channel>) -> Result<Open, Status> {
    let (out, rx) = mpsc::unbounded_channel();
    let requests = requests_from(rx);
    let answers = client.batch_commands(requests).await?.into_inner();
    Ok((out, answers))
}

/// An unbounded receiver as a request stream.
fn requests_from(
    mut rx: mpsc::UnboundedReceiver<BatchCommandsRequest>,
) -> impl futures::Stream<Item = BatchCommandsRequest> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The next message of the open stream (never ready without one).
async fn next_answers(open: &mut Option<Open>) -> Result<Option<BatchCommandsResponse>, Status> {
    match open {
        Some((_, answers)) => answers.message().await,
        None => std::future::pending().await,
    }
}

fn fail_all(waiting: &mut HashMap<u64, oneshot::Sender<Result<Answer, Failed>>>, why: &Status) {
    for (_, reply) in waiting.drain() {
        let _ = reply.send(Err(Failed::lost(why.clone())));
    }
}

/// Owns one store's stream: opens it when there is something to send,
/// sends what is queued, hands answers out, fails what is in flight when
/// the stream breaks (and opens a new one for the next request).
async fn drive(mut client: KvClient<Channel>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let mut waiting = HashMap::new();
    let mut next_id = 0u64;
    let mut stream: Option<Open> = None;
    loop {
        tokio::select! {
            queued = queue.recv() => {
                let Some(first) = queued else { break };
                let mut batch = vec![first];
                while batch.len() < MAX_REQUESTS_PER_MESSAGE {
                    match queue.try_recv() {
                        Ok(q) => batch.push(q),
                        Err(_) => break,
                    }
                }
                if stream.is_none() {
                    match open(&mut client).await {
                        Ok(s) => stream = Some(s),
                        Err(status) => {
                            for q in batch {
                                let unsent = Box::new((status.clone(), q.cmd));
                                let _ = q.reply.send(Err(Failed::Unsent(unsent)));
                            }
                            continue;
                        }
                    }
                }
                let mut requests = Vec::with_capacity(batch.len());
                for q in batch {
                    next_id += 1;
                    waiting.insert(next_id, q.reply);
                    requests.push(Request { id: next_id, cmd: Some(q.cmd) });
                }
                let sent = stream
                    .as_ref()
                    .is_some_and(|(out, _)| out.send(BatchCommandsRequest { requests }).is_ok());
                if !sent {
                    fail_all(&mut waiting, &Status::unavailable("the stream to the store broke"));
                    stream = None;
                }
            }
            answers = next_answers(&mut stream) => match answers {
                Ok(Some(message)) => {
                    for r in message.responses {
                        // An id not waited for (answered already, or made
                        // up by a broken peer) is dropped.
                        let Some(reply) = waiting.remove(&r.id) else {
                            continue;
                        };
                        let answer = r.cmd.ok_or_else(|| {
                            Failed::lost(Status::internal("the store sent an empty answer"))
                        });
                        let _ = reply.send(answer);
                    }
                }
                Ok(None) => {
                    fail_all(&mut waiting, &Status::unavailable("the store ended the stream"));
                    stream = None;
                }
                Err(status) => {
                    fail_all(&mut waiting, &status);
                    stream = None;
                }
            },
        }
    }
    fail_all(
        &mut waiting,
        &Status::unavailable("the client closed the store's stream"),
    );
}

/// A store's Kv API for one request: through the store's stream (point
/// requests) or unary.
#[derive(Clone)]
pub struct StoreClient {
    unary: KvClient<Channel>,
    stream: Option<Arc<CommandStream>>,
    /// Set once the store answered that it has no stream (shared by every
    /// clone of this store's client).
    unsupported: Arc<AtomicBool>,
}

impl StoreClient {
    /// A store's client; with `stream`, point requests go through one
    /// stream shared by every clone.
    pub(crate) fn new(unary: KvClient<Channel>, stream: bool) -> Self {
        let commands = stream.then(|| Arc::new(CommandStream::start(unary.clone())));
        StoreClient {
            unary,
            stream: commands,
            unsupported: Arc::new(AtomicBool::new(false)),
        }
    }

    fn stream(&self) -> Option<&CommandStream> {
        match &self.stream {
            Some(s) if !self.unsupported.load(Ordering::Relaxed) => Some(s),
            _ => None,
        }
    }

    /// Sends `cmd` through the stream; `Err(cmd)` when it must go unary
    /// (the store has no stream).
    async fn through_stream(
        &self,
        s: &CommandStream,
        cmd: Cmd,
    ) -> Result<Result<Answer, Status>, Cmd> {
        match s.call(cmd).await {
            Ok(Answer::Status(status)) => Ok(Err(status.into_status())),
            Ok(answer) => Ok(Ok(answer)),
            Err(Failed::Unsent(unsent)) if unsent.0.code() == tonic::Code::Unimplemented => {
                tracing::info!("a store has no BatchCommands stream: unary requests to it");
                self.unsupported.store(true, Ordering::Relaxed);
                Err(unsent.1)
            }
            Err(Failed::Unsent(unsent)) => Ok(Err(unsent.0)),
            Err(Failed::Lost(status)) => Ok(Err(*status)),
        }
    }
}

/// A store that answered a request with another request's answer is
/// broken: for a write, the outcome is unknown.
fn mismatched(op: &str) -> Status {
    Status::internal(format!(
        "the store answered a {op} with another request's answer"
    ))
}

macro_rules! point_request {
    ($name:ident, $variant:ident, $req:ty, $resp:ty, $op:literal) => {
        pub async fn $name(&mut self, r: $req) -> Result<Response<$resp>, Status> {
            let r = match self.stream() {
                None => r,
                Some(s) => match self.through_stream(s, Cmd::$variant(r)).await {
                    Ok(Ok(Answer::$variant(a))) => return Ok(Response::new(a)),
                    Ok(Ok(_)) => return Err(mismatched($op)),
                    Ok(Err(status)) => return Err(status),
                    Err(Cmd::$variant(r)) => r,
                    Err(_) => return Err(mismatched($op)),
                },
            };
            self.unary.$name(r).await
        }
    };
}

impl StoreClient {
    point_request!(get, Get, GetRequest, GetResponse, "get");
    point_request!(put, Put, PutRequest, PutResponse, "put");
    point_request!(delete, Delete, DeleteRequest, DeleteResponse, "delete");
    point_request!(
        compare_and_swap,
        CompareAndSwap,
        CompareAndSwapRequest,
        CompareAndSwapResponse,
        "compare-and-swap"
    );

    pub async fn batch_get(
        &mut self,
        r: BatchGetRequest,
    ) -> Result<Response<BatchGetResponse>, Status> {
        self.unary.batch_get(r).await
    }

    pub async fn batch_put(
        &mut self,
        r: BatchPutRequest,
    ) -> Result<Response<BatchPutResponse>, Status> {
        self.unary.batch_put(r).await
    }

    pub async fn scan(&mut self, r: ScanRequest) -> Result<Response<ScanResponse>, Status> {
        self.unary.scan(r).await
    }

    pub async fn delete_range(
        &mut self,
        r: DeleteRangeRequest,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.unary.delete_range(r).await
    }
}
