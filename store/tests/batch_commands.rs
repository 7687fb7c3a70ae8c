//! The store's `BatchCommands` stream over gRPC: many requests in one
//! message, each answered by id as its unary RPC would be; the writes of
//! one region in one message share a Raft entry; bad requests, foreign
//! regions and requests over the serving quotas are answered one by one
//! and change nothing.

use std::collections::HashMap;
use std::time::Duration;

use tessera_proto::errorpb::region_error;
use tessera_proto::kvpb::batch_commands_request::{request::Cmd, Request};
use tessera_proto::kvpb::batch_commands_response::response::Cmd as Answer;
use tessera_proto::kvpb::kv_client::KvClient;
use tessera_proto::kvpb::*;
use tessera_proto::metapb::Region;
use tessera_testkit::{key, Cluster, ClusterOptions, TransportKind};
use tonic::transport::Channel;

/// One open stream to a store.
struct Stream {
    out: tokio::sync::mpsc::UnboundedSender<BatchCommandsRequest>,
    answers: tonic::Streaming<BatchCommandsResponse>,
}

impl Stream {
    async fn open(cluster: &Cluster, store_id: u64) -> Stream {
        let addr = cluster.address(store_id).unwrap();
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (out, rx) = tokio::sync::mpsc::unbounded_channel();
        let answers = KvClient::new(channel)
            .batch_commands(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Stream { out, answers }
    }

    /// Sends `requests` in one message; every answer by id.
    async fn send(&mut self, requests: Vec<Request>) -> HashMap<u64, Answer> {
        let want = requests.len();
        self.out.send(BatchCommandsRequest { requests }).unwrap();
        let mut got = HashMap::new();
        let mut messages = 0;
        while got.len() < want {
            let message = tokio::time::timeout(Duration::from_secs(10), self.answers.message())
                .await
                .expect("answers within the store's request timeout")
                .unwrap()
                .expect("the stream stays open");
            messages += 1;
            for r in message.responses {
                assert!(
                    got.insert(r.id, r.cmd.unwrap()).is_none(),
                    "request {} answered twice",
                    r.id
                );
            }
        }
        assert!(messages <= want, "{messages} messages for {want} answers");
        got
    }
}

fn context(region: &Region, leader_store: u64) -> Context {
    let peer = region
        .peers
        .iter()
        .find(|p| p.store_id == leader_store)
        .copied();
    Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer,
        follower_read: false,
        stale_max_age_ms: 0,
    }
}

fn put(id: u64, ctx: &Context, k: &[u8], v: &[u8]) -> Request {
    Request {
        id,
        cmd: Some(Cmd::Put(PutRequest {
            context: Some(*ctx),
            key: k.to_vec(),
            value: v.to_vec(),
        })),
    }
}

fn get(id: u64, ctx: &Context, k: &[u8]) -> Request {
    Request {
        id,
        cmd: Some(Cmd::Get(GetRequest {
            context: Some(*ctx),
            key: k.to_vec(),
        })),
    }
}

fn status_of(a: &Answer) -> Option<tonic::Status> {
    match a {
        Answer::Status(s) => Some(s.clone().into_status()),
        _ => None,
    }
}

async fn applied(cluster: &Cluster, region_id: u64, store_id: u64) -> u64 {
    cluster
        .region_infos(region_id)
        .await
        .into_iter()
        .find(|(s, _)| *s == store_id)
        .unwrap()
        .1
        .applied_index
}

async fn one_region(opts: ClusterOptions) -> (Cluster, Region, u64) {
    let cluster = Cluster::start(opts.transport(TransportKind::Grpc))
        .await
        .unwrap();
    let region = cluster.bootstrap_regions(&[]).await.unwrap().remove(0);
    let leader = cluster
        .wait_leader(region.id, Duration::from_secs(10))
        .await
        .unwrap();
    // The leader has committed an entry of its term.
    cluster.must_put(&key("warm"), b"up").await;
    (cluster, region, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_in_one_message_each_answered_and_one_regions_writes_share_an_entry() {
    let (cluster, region, leader) = one_region(ClusterOptions::new(3)).await;
    let ctx = context(&region, leader);
    let mut stream = Stream::open(&cluster, leader).await;
    let before = applied(&cluster, region.id, leader).await;

    let mut requests: Vec<Request> = (0..100u64)
        .map(|i| {
            put(
                i,
                &ctx,
                &key(format!("k{i:03}")),
                format!("v{i}").as_bytes(),
            )
        })
        .collect();
    // Hostile and bad requests beside them, each answered alone.
    requests.push(Request { id: 100, cmd: None });
    requests.push(put(101, &ctx, b"", b"no key"));
    let mut foreign = ctx;
    foreign.peer.as_mut().unwrap().store_id = 99;
    requests.push(put(102, &foreign, &key("foreign"), b"x"));
    let mut stale = ctx;
    stale.region_epoch.as_mut().unwrap().version += 7;
    requests.push(put(103, &stale, &key("stale"), b"x"));
    requests.push(get(104, &ctx, &key("warm")));
    let answers = stream.send(requests).await;

    for i in 0..100 {
        match &answers[&i] {
            Answer::Put(p) => assert!(p.region_error.is_none(), "put {i}: {p:?}"),
            other => panic!("put {i} answered {other:?}"),
        }
    }
    for id in [100, 101] {
        let s = status_of(&answers[&id]).unwrap_or_else(|| panic!("{id}: {:?}", answers[&id]));
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{id}: {s:?}");
    }
    match &answers[&102] {
        Answer::Put(p) => assert!(
            matches!(
                p.region_error.as_ref().unwrap().error,
                Some(region_error::Error::StoreNotMatch(_))
            ),
            "{p:?}"
        ),
        other => panic!("{other:?}"),
    }
    match &answers[&103] {
        Answer::Put(p) => assert!(
            matches!(
                p.region_error.as_ref().unwrap().error,
                Some(region_error::Error::EpochNotMatch(_))
            ),
            "{p:?}"
        ),
        other => panic!("{other:?}"),
    }
    match &answers[&104] {
        Answer::Get(g) => assert_eq!((g.found, g.value.as_slice()), (true, &b"up"[..])),
        other => panic!("{other:?}"),
    }

    // The hundred puts took one entry (the refused ones none that
    // applied anything): far fewer log entries than requests.
    let after = applied(&cluster, region.id, leader).await;
    assert!(
        after - before <= 3,
        "100 puts in one message took {} entries",
        after - before
    );
    // Every put is there, read back in one message too; nothing refused is.
    let reads: Vec<Request> = (0..100u64)
        .map(|i| get(i, &ctx, &key(format!("k{i:03}"))))
        .chain([
            get(200, &ctx, &key("foreign")),
            get(201, &ctx, &key("stale")),
        ])
        .collect();
    let answers = stream.send(reads).await;
    for i in 0..100u64 {
        match &answers[&i] {
            Answer::Get(g) => assert_eq!(g.value, format!("v{i}").into_bytes(), "{i}"),
            other => panic!("{other:?}"),
        }
    }
    for id in [200, 201] {
        assert!(matches!(&answers[&id], Answer::Get(g) if !g.found), "{id}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_a_stream_are_admitted_one_by_one_under_the_serving_quotas() {
    let mut opts = ClusterOptions::new(3);
    opts.serving.max_serving_requests = 4;
    opts.serving.busy_retry_after_ms = 70;
    let (cluster, region, leader) = one_region(opts).await;
    let ctx = context(&region, leader);
    let mut stream = Stream::open(&cluster, leader).await;
    // Writes are admitted as the message is read and answered once their
    // entry applies: four are served, the rest refused at once.
    let requests = (0..20u64)
        .map(|i| put(i, &ctx, &key(format!("q{i:02}")), b"v"))
        .collect();
    let answers = stream.send(requests).await;
    let mut busy = vec![];
    for i in 0..20u64 {
        match status_of(&answers[&i]) {
            None => assert!(i < 4, "put {i} was served past the quota"),
            Some(s) => {
                assert_eq!(
                    tessera_proto::limits::busy_retry_after(&s),
                    Some(Duration::from_millis(70)),
                    "{s:?}"
                );
                assert!(s.message().contains("max_serving_requests"), "{s:?}");
                busy.push(i);
            }
        }
    }
    assert_eq!(busy, (4..20).collect::<Vec<_>>());
    // What was refused was not applied; the stream serves again once the
    // answers are out.
    let answers = stream
        .send(
            (0..20u64)
                .map(|i| get(i, &ctx, &key(format!("q{i:02}"))))
                .take(4)
                .collect(),
        )
        .await;
    assert_eq!(answers.len(), 4);
    for i in 4..20u64 {
        assert_eq!(
            cluster.must_get(&key(format!("q{i:02}"))).await,
            None,
            "{i}"
        );
    }
    for i in 0..4u64 {
        assert!(cluster.must_get(&key(format!("q{i:02}"))).await.is_some());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_store_answers_what_it_read_and_ends_its_streams() {
    let (cluster, region, leader) = one_region(ClusterOptions::new(3)).await;
    let ctx = context(&region, leader);
    let mut stream = Stream::open(&cluster, leader).await;
    let answers = stream.send(vec![get(1, &ctx, &key("warm"))]).await;
    assert!(matches!(&answers[&1], Answer::Get(g) if g.found));
    // A graceful stop waits for calls in flight: the open stream must not
    // hold it (the harness aborts the server after 5 s).
    let started = std::time::Instant::now();
    cluster.stop_store(leader).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopping took {:?} with a stream open",
        started.elapsed()
    );
    let end = tokio::time::timeout(Duration::from_secs(5), stream.answers.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "the stream ended with {end:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_too_many_requests_ends_the_stream_and_changes_nothing() {
    use tessera_store::service::stream::MAX_REQUESTS_PER_MESSAGE;
    let (cluster, region, leader) = one_region(ClusterOptions::new(3)).await;
    let ctx = context(&region, leader);
    let mut stream = Stream::open(&cluster, leader).await;
    let n = MAX_REQUESTS_PER_MESSAGE as u64 + 1;
    let requests = (0..n)
        .map(|i| put(i, &ctx, &key(format!("over{i}")), b"v"))
        .collect();
    stream.out.send(BatchCommandsRequest { requests }).unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.answers.message())
        .await
        .expect("the store answers");
    match end {
        Err(s) => {
            assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
            assert!(s.message().contains("the limit is 10000"), "{s:?}");
        }
        other => panic!("the stream went on: {other:?}"),
    }
    assert_eq!(cluster.must_get(&key("over0")).await, None);
    // The store still serves a new stream.
    let mut again = Stream::open(&cluster, leader).await;
    let answers = again.send(vec![get(1, &ctx, &key("warm"))]).await;
    assert!(matches!(&answers[&1], Answer::Get(g) if g.found));
    cluster.shutdown().await;
}
