//! The `BatchCommands` stream: one long-lived stream per client (or
//! router) and store, many requests per message each way.
//!
//! # How a message is served (process overview)
//!
//! The client side is `tessera_routing::stream`: it sends whatever its
//! callers queued while the previous message was going out, so an idle
//! client sends each request at once and a busy one sends many per
//! message, without a timer. Here, for each message that arrives:
//!
//! 1. **Each request on its own terms.** A request is authorized as the
//!    unary RPC it stands for ([`Authority::check`], with the user table
//!    as it is now: a `readonly` user's stream reads but cannot write) and
//!    admitted under the same serving quotas as that RPC
//!    ([`Admission::admit`]: requests in flight, requests being served,
//!    bytes). A refusal answers that request alone, with the status the
//!    unary call would have got; nothing of it was applied.
//! 2. **Writes of one region share an entry.** The puts and deletes of the
//!    message that name the same region, epoch and peer (a client sends
//!    them with the same cached view) are proposed as one Raft command, up
//!    to [`MAX_MERGED_WRITES`] requests and [`MAX_MERGED_BYTES`] of keys
//!    and values per entry — well below `raft.max_size_per_msg_bytes` and
//!    the 64 MiB Raft message limit. They apply together or not at all,
//!    so each gets the same outcome it would have got alone (the epoch and
//!    leadership checks are the same for all of them); a request whose
//!    input is bad is answered `InvalidArgument` alone and kept out.
//! 3. **Everything else runs as its unary RPC** on its own task (reads
//!    take the lease path or the poller's, as unary reads do).
//! 4. **Answers go back batched.** Each answer carries its request's id;
//!    the stream sends whatever answers are ready when it can send, in one
//!    message. An answer's admission ticket (its place and bytes in the
//!    quotas) is released once the answer has been handed to the stream.
//!
//! A message may carry at most [`MAX_REQUESTS_PER_MESSAGE`] requests (more
//! ends the stream with `INVALID_ARGUMENT`), and a stream reads no further
//! message while twice that many of its requests wait for their answers to
//! be taken: a client that sends without reading is held back by HTTP/2
//! flow control, and the store's memory for one stream stays bounded,
//! refusals included.
//!
//! Each request is bounded by the store's request timeout as a unary
//! request is. The stream ends when the client ends its side and every
//! answer has been sent, or when the store stops: it reads no more
//! requests, sends the answers of those it read, and ends the stream (the
//! client fails what it sent meanwhile as "may have applied" and opens a
//! stream to wherever the region is served next). A client that goes away
//! leaves its requests to finish (bounded the same way) with their
//! answers dropped.

use std::collections::HashMap;
use std::sync::Arc;

use futures::Stream;
use prost::Message as _;
use tessera_common::admission::{Admission, Ticket};
use tessera_proto::kvpb::batch_commands_request::request::Cmd;
use tessera_proto::kvpb::batch_commands_response::response::Cmd as Answer;
use tessera_proto::kvpb::batch_commands_response::Response;
use tessera_proto::kvpb::*;
use tessera_proto::raft_serverpb::command::Cmd as RaftCmd;
use tessera_proto::KvResponse;
use tessera_security::tls::Authority;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::kv::KvApi;
use crate::metrics::{MERGED_WRITES_TOTAL, STREAM_MESSAGES_TOTAL, STREAM_REQUESTS_TOTAL};
use crate::{Error, Result};

/// The most requests one Raft entry of merged writes carries.
pub const MAX_MERGED_WRITES: usize = 256;
/// The most bytes of keys and values one entry of merged writes carries.
pub const MAX_MERGED_BYTES: usize = 256 * 1024;
/// The most answers one outgoing message carries.
const MAX_ANSWERS_PER_MESSAGE: usize = 1024;
/// The most requests one incoming message may carry; a message with more
/// ends the stream with `INVALID_ARGUMENT` (the routing library sends at
/// most 512).
pub const MAX_REQUESTS_PER_MESSAGE: usize = 10_000;
/// The most requests of one stream read and not yet answered to the
/// connection: past it the stream reads nothing more until its reader
/// takes answers (a client that sends without reading is held back by
/// HTTP/2 flow control instead of growing the store's memory with
/// answers, refusals included).
const MAX_UNSENT_ANSWERS: usize = 2 * MAX_REQUESTS_PER_MESSAGE;

/// What a request holds until its answer is handed to the stream: its
/// admission ticket (if admitted) and its message's room in the stream.
struct Hold {
    ticket: Option<Arc<Ticket>>,
    _room: Arc<OwnedSemaphorePermit>,
}

/// One answer on its way out, with what it holds; or the status that ends
/// the stream.
type Outgoing = std::result::Result<(Response, Hold), tonic::Status>;

type Out = mpsc::UnboundedSender<Outgoing>;

/// What one stream serves with.
#[derive(Clone)]
pub struct StreamServer {
    pub api: Arc<KvApi>,
    /// The quotas (`None`: a server without admission, in tests).
    pub admission: Option<Admission>,
    /// Turns true when the store stops serving (`None`: never).
    pub stop: Option<watch::Receiver<bool>>,
}

/// The answers' stream.
pub type Answers = std::pin::Pin<
    Box<dyn Stream<Item = std::result::Result<BatchCommandsResponse, tonic::Status>> + Send>,
>;

impl StreamServer {
    /// Serves `inbound` for the caller `authority` speaks for; the answers
    /// come out of the returned stream.
    pub fn serve(
        self,
        authority: Authority,
        mut inbound: tonic::Streaming<BatchCommandsRequest>,
    ) -> Answers {
        let (out, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let stopped = async {
                match self.stop.clone() {
                    Some(mut stop) => {
                        let _ = stop.wait_for(|s| *s).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(stopped);
            let room = Arc::new(Semaphore::new(MAX_UNSENT_ANSWERS));
            // A broken stream (the client went away, or sent something
            // that is not a message) ends the reading, and so does the
            // store stopping; what was read is still served.
            loop {
                let message = tokio::select! {
                    m = inbound.message() => m,
                    _ = &mut stopped => break,
                };
                let Ok(Some(message)) = message else { break };
                metrics::counter!(STREAM_MESSAGES_TOTAL, "direction" => "in").increment(1);
                let n = message.requests.len();
                if n > MAX_REQUESTS_PER_MESSAGE {
                    let _ = out.send(Err(tonic::Status::invalid_argument(format!(
                        "a BatchCommands message carries {n} requests; the limit is \
                         {MAX_REQUESTS_PER_MESSAGE}"
                    ))));
                    break;
                }
                let room = tokio::select! {
                    r = room.clone().acquire_many_owned(n as u32) => r,
                    _ = &mut stopped => break,
                };
                let Ok(room) = room else { break };
                self.dispatch(&authority, message, &out, Arc::new(room));
            }
        });
        // The state: the answers still to come, and a refusal that ends
        // the stream once the answers before it are out.
        let start = (Some(rx), None::<tonic::Status>);
        Box::pin(futures::stream::unfold(start, |(rx, fatal)| async move {
            if let Some(status) = fatal {
                return Some((Err(status), (None, None)));
            }
            let mut rx = rx?;
            let mut responses = vec![];
            // What the answers hold is released once the message is
            // handed over.
            let mut held = vec![];
            let mut fatal = None;
            while responses.len() < MAX_ANSWERS_PER_MESSAGE {
                let next = match responses.is_empty() {
                    true => rx.recv().await,
                    false => rx.try_recv().ok(),
                };
                match next {
                    Some(Ok((response, hold))) => {
                        responses.push(response);
                        held.push(hold);
                    }
                    Some(Err(status)) => {
                        fatal = Some(status);
                        break;
                    }
                    None => break,
                }
            }
            if responses.is_empty() {
                // Every sender is gone (the stream ends), or a refusal
                // ends it.
                return fatal.map(|status| (Err(status), (None, None)));
            }
            metrics::counter!(STREAM_MESSAGES_TOTAL, "direction" => "out").increment(1);
            drop(held);
            Some((Ok(BatchCommandsResponse { responses }), (Some(rx), fatal)))
        }))
    }

    /// Serves the requests of one message (see the module docs).
    fn dispatch(
        &self,
        authority: &Authority,
        message: BatchCommandsRequest,
        out: &Out,
        room: Arc<OwnedSemaphorePermit>,
    ) {
        metrics::counter!(STREAM_REQUESTS_TOTAL).increment(message.requests.len() as u64);
        let mut checked: HashMap<&'static str, std::result::Result<(), tonic::Status>> =
            HashMap::new();
        let mut writes = Merger::default();
        for request in message.requests {
            let id = request.id;
            let hold = |ticket| Hold {
                ticket,
                _room: room.clone(),
            };
            let Some(cmd) = request.cmd else {
                answer(
                    out,
                    id,
                    hold(None),
                    Err(tonic::Status::invalid_argument(
                        "a request in the stream carries no command",
                    )),
                );
                continue;
            };
            let method = cmd.method();
            let access = checked
                .entry(method)
                .or_insert_with(|| authority.check(method));
            if let Err(refused) = access {
                answer(out, id, hold(None), Err(refused.clone()));
                continue;
            }
            let ticket = match &self.admission {
                None => None,
                Some(a) => match a.admit(cmd.encoded_len()) {
                    Ok(t) => Some(t),
                    Err(busy) => {
                        answer(out, id, hold(None), Err(busy));
                        continue;
                    }
                },
            };
            let hold = hold(ticket);
            let write = match cmd {
                Cmd::Put(r) => KvApi::put_command(r).map(|w| (w, true)),
                Cmd::Delete(r) => KvApi::delete_command(r).map(|w| (w, false)),
                other => {
                    self.spawn_one(id, other, hold, out);
                    continue;
                }
            };
            match write {
                Ok(((ctx, cmd), is_put)) => writes.add(Pending {
                    id,
                    hold,
                    is_put,
                    ctx,
                    cmd,
                }),
                Err(e) => answer(out, id, hold, Err(e.into())),
            }
        }
        for group in writes.groups() {
            self.spawn_merged(group, out);
        }
    }

    /// Serves one request as its unary RPC.
    fn spawn_one(&self, id: u64, cmd: Cmd, hold: Hold, out: &Out) {
        let api = self.api.clone();
        let out = out.clone();
        tokio::spawn(async move {
            let a = &api;
            let result: Result<Answer> = match cmd {
                Cmd::Get(r) => a.get(r).await.map(Answer::Get),
                Cmd::Put(r) => a.put(r).await.map(Answer::Put),
                Cmd::Delete(r) => a.delete(r).await.map(Answer::Delete),
                Cmd::BatchGet(r) => a.batch_get(r).await.map(Answer::BatchGet),
                Cmd::BatchPut(r) => a.batch_put(r).await.map(Answer::BatchPut),
                Cmd::Scan(r) => a.scan(r).await.map(Answer::Scan),
                Cmd::CompareAndSwap(r) => a.compare_and_swap(r).await.map(Answer::CompareAndSwap),
                Cmd::DeleteRange(r) => a.delete_range(r).await.map(Answer::DeleteRange),
            };
            answer(&out, id, hold, result.map_err(tonic::Status::from));
        });
    }

    /// Proposes a group of writes as one entry and answers each.
    fn spawn_merged(&self, group: Vec<Pending>, out: &Out) {
        let api = self.api.clone();
        let out = out.clone();
        if group.len() > 1 {
            metrics::counter!(MERGED_WRITES_TOTAL).increment(group.len() as u64);
        }
        tokio::spawn(async move {
            let ctx = group[0].ctx;
            // The keys and values move into the entry; what answers each
            // request stays.
            let (cmds, waiting): (Vec<_>, Vec<_>) = group
                .into_iter()
                .map(|p| (p.cmd, (p.id, p.hold, p.is_put)))
                .unzip();
            let outcome = api.write(ctx, cmds).await;
            for (id, hold, is_put) in waiting {
                let result = match &outcome {
                    Ok(()) if is_put => Ok(Answer::Put(PutResponse::default())),
                    Ok(()) => Ok(Answer::Delete(DeleteResponse::default())),
                    Err(Error::Region(e)) if is_put => {
                        Ok(Answer::Put(PutResponse::refused((**e).clone())))
                    }
                    Err(Error::Region(e)) => {
                        Ok(Answer::Delete(DeleteResponse::refused((**e).clone())))
                    }
                    Err(e) => Err(tonic::Status::from(e)),
                };
                answer(&out, id, hold, result);
            }
        });
    }
}

/// Sends request `id`'s answer (or the status a unary call would have
/// ended with).
fn answer(out: &Out, id: u64, hold: Hold, result: std::result::Result<Answer, tonic::Status>) {
    let cmd = match result {
        Ok(a) => a,
        Err(status) => Answer::Status(CommandStatus::from(&status)),
    };
    let response = Response { id, cmd: Some(cmd) };
    if let Some(t) = &hold.ticket {
        t.answered(response.encoded_len());
    }
    // The stream is gone when the client went away: nobody to tell.
    let _ = out.send(Ok((response, hold)));
}

/// A write waiting to be proposed with others.
struct Pending {
    id: u64,
    hold: Hold,
    is_put: bool,
    ctx: Option<Context>,
    cmd: RaftCmd,
}

impl Pending {
    fn bytes(&self) -> usize {
        match &self.cmd {
            RaftCmd::Put(p) => p.key.len() + p.value.len(),
            RaftCmd::Delete(d) => d.key.len(),
            _ => 0,
        }
    }
}

/// Which writes may share an entry: the same region, epoch and addressed
/// peer (a request without a context is refused when proposed, alone).
type GroupKey = Option<(u64, u64, u64, u64, u64)>;

fn group_key(ctx: &Option<Context>) -> GroupKey {
    let ctx = ctx.as_ref()?;
    let epoch = ctx.region_epoch.unwrap_or_default();
    let peer = ctx.peer?;
    Some((
        ctx.region_id,
        epoch.version,
        epoch.conf_ver,
        peer.id,
        peer.store_id,
    ))
}

/// Groups a message's writes into entries (see the module docs).
#[derive(Default)]
struct Merger {
    open: HashMap<GroupKey, (Vec<Pending>, usize)>,
    full: Vec<Vec<Pending>>,
}

impl Merger {
    fn add(&mut self, p: Pending) {
        let key = group_key(&p.ctx);
        if key.is_none() {
            self.full.push(vec![p]);
            return;
        }
        let bytes = p.bytes();
        let (group, held) = self.open.entry(key).or_default();
        if !group.is_empty()
            && (group.len() >= MAX_MERGED_WRITES || *held + bytes > MAX_MERGED_BYTES)
        {
            self.full.push(std::mem::take(group));
            *held = 0;
        }
        group.push(p);
        *held += bytes;
    }

    fn groups(self) -> impl Iterator<Item = Vec<Pending>> {
        self.full
            .into_iter()
            .chain(self.open.into_values().map(|(g, _)| g))
            .filter(|g| !g.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use tessera_proto::metapb::{Peer, RegionEpoch};

    use super::*;

    fn put(id: u64, region_id: u64, version: u64, bytes: usize) -> Pending {
        let room = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        Pending {
            id,
            hold: Hold {
                ticket: None,
                _room: Arc::new(room),
            },
            is_put: true,
            ctx: Some(Context {
                region_id,
                region_epoch: Some(RegionEpoch {
                    version,
                    conf_ver: 1,
                }),
                peer: Some(Peer {
                    id: 1,
                    store_id: 1,
                    ..Default::default()
                }),
                follower_read: false,
                stale_max_age_ms: 0,
            }),
            cmd: RaftCmd::Put(tessera_proto::raft_serverpb::PutCommand {
                key: b"k".to_vec(),
                value: vec![0; bytes.saturating_sub(1)],
            }),
        }
    }

    fn ids(mut groups: Vec<Vec<Pending>>) -> Vec<Vec<u64>> {
        groups.sort_by_key(|g| g[0].id);
        groups
            .into_iter()
            .map(|g| g.into_iter().map(|p| p.id).collect())
            .collect()
    }

    #[test]
    fn writes_share_an_entry_only_with_the_same_region_and_epoch_up_to_the_caps() {
        let mut m = Merger::default();
        m.add(put(1, 7, 1, 10));
        m.add(put(2, 8, 1, 10));
        m.add(put(3, 7, 1, 10));
        // Another epoch of region 7: its own entry (it may be refused).
        m.add(put(4, 7, 2, 10));
        let mut no_context = put(5, 7, 1, 10);
        no_context.ctx = None;
        m.add(no_context);
        assert_eq!(
            ids(m.groups().collect()),
            vec![vec![1, 3], vec![2], vec![4], vec![5]]
        );

        let mut m = Merger::default();
        for id in 0..(MAX_MERGED_WRITES as u64 + 1) {
            m.add(put(id, 7, 1, 10));
        }
        let sizes: Vec<usize> = m.groups().map(|g| g.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), MAX_MERGED_WRITES + 1);
        assert!(sizes.iter().all(|s| *s <= MAX_MERGED_WRITES), "{sizes:?}");

        let mut m = Merger::default();
        let big = MAX_MERGED_BYTES / 2 + 1;
        for id in 0..3 {
            m.add(put(id, 7, 1, big));
        }
        // Two would pass the byte cap: one each, in arrival order.
        assert_eq!(ids(m.groups().collect()), vec![vec![0], vec![1], vec![2]]);
    }
}
