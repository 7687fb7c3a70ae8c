//! What a router reports for a write that failed on the way. A write whose
//! connection breaks after the store read it has an unknown outcome: the
//! router reports it as indeterminate and never sends it again. Only a
//! connection that could not be made proves a request was not sent. A
//! batch or range write that applied in some regions and then failed in
//! another is indeterminate too, never `INVALID_ARGUMENT` (which promises
//! that nothing was written).
//!
//! The store here is a bare HTTP/2 server: it reads each request whole,
//! counts it, starts an answer and drops the connection — what a store
//! that crashes right after accepting a write looks like. tonic reports
//! "error reading a body from connection". The directory is
//! a fake that places one region on it. For the partial writes, two
//! tonic stores: one applies every request, the other refuses every one
//! as bad input. (Regression: the router once took
//! any error whose message mentioned "connect" — "connection reset",
//! "connection closed" — as not sent, and resent the write.)

use std::net::SocketAddr;

use futures::FutureExt as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tessera_proto::directorypb::directory_server::{Directory, DirectoryServer};
use tessera_proto::directorypb::*;
use tessera_proto::kvpb::kv_server::{Kv, KvServer};
use tessera_proto::kvpb::*;
use tessera_proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
use tessera_routing::{Error, Router, RouterConfig};
use tonic::{Request, Response, Status};

/// A store that reads every request, starts to answer and hangs up.
async fn hanging_up_store() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                if let Some(Ok((request, mut respond))) = conn.accept().await {
                    let response = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    // The stream of requests is answered at once and
                    // never ends: its first message is the request.
                    let stream = request.uri().path().ends_with("/BatchCommands");
                    let mut answer = stream.then(|| respond.send_response(response.clone(), false));
                    let mut body = request.into_body();
                    if stream {
                        // The connection is driven while the first
                        // message is awaited (it comes after the headers).
                        tokio::select! {
                            _ = body.data() => {}
                            _ = futures::future::poll_fn(|cx| conn.poll_closed(cx)) => {}
                        }
                    } else {
                        while let Some(chunk) = body.data().await {
                            if chunk.is_err() {
                                break;
                            }
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    // The answer starts, then the connection goes.
                    if answer.is_none() {
                        answer = Some(respond.send_response(response, false));
                    }
                    let _answer = answer;
                    let _ = futures::future::poll_fn(|cx| conn.poll_closed(cx)).now_or_never();
                }
                // Dropping the connection closes the socket unanswered.
            });
        }
    });
    (addr, received)
}

/// Regions in key order, region `i` with one voter on store `i + 1` at
/// `stores[i]`.
struct FakeDirectory {
    stores: Vec<SocketAddr>,
    /// The keys where regions begin, after the first (empty) start.
    splits: Vec<Vec<u8>>,
    /// Keyspace lookups received (it knows no keyspace but `default`).
    lookups: Arc<AtomicUsize>,
}

impl FakeDirectory {
    fn region(&self, i: usize) -> Region {
        let bound = |j: usize| {
            if j == 0 || j > self.splits.len() {
                vec![]
            } else {
                self.splits[j - 1].clone()
            }
        };
        Region {
            id: 2 + 2 * i as u64,
            start_key: bound(i),
            end_key: bound(i + 1),
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![Peer {
                id: 3 + 2 * i as u64,
                store_id: i as u64 + 1,
                role: PeerRole::Voter as i32,
            }],
        }
    }

    fn info(&self, i: usize) -> RegionInfo {
        let region = self.region(i);
        RegionInfo {
            leader: Some(region.peers[0]),
            region: Some(region),
            ..Default::default()
        }
    }
}

/// The fake's `Directory` impl: the methods given, and every other one
/// answering UNIMPLEMENTED (this test never calls them). The whole impl is
/// generated so that `async_trait` sees the expanded methods.
macro_rules! directory_impl {
    (
        not needed { $($name:ident($req:ty) -> $resp:ty;)* }
        given { $($given:tt)* }
    ) => {
        #[tonic::async_trait]
        impl Directory for FakeDirectory {
            $($given)*
            $(
                async fn $name(&self, _: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(Status::unimplemented(stringify!($name)))
                }
            )*
        }
    };
}

directory_impl! {
    not needed {
        is_bootstrapped(IsBootstrappedRequest) -> IsBootstrappedResponse;
        bootstrap(BootstrapRequest) -> BootstrapResponse;
        alloc_ids(AllocIdsRequest) -> AllocIdsResponse;
        put_store(PutStoreRequest) -> PutStoreResponse;
        list_stores(ListStoresRequest) -> ListStoresResponse;
        store_heartbeat(StoreHeartbeatRequest) -> StoreHeartbeatResponse;
        create_keyspace(CreateKeyspaceRequest) -> CreateKeyspaceResponse;
        list_keyspaces(ListKeyspacesRequest) -> ListKeyspacesResponse;
        split_region(SplitRegionRequest) -> SplitRegionResponse;
        move_region(MoveRegionRequest) -> MoveRegionResponse;
        merge_region(MergeRegionRequest) -> MergeRegionResponse;
        transfer_leader(TransferLeaderRequest) -> TransferLeaderResponse;
        remove_store(RemoveStoreRequest) -> RemoveStoreResponse;
        set_evict_leaders(SetEvictLeadersRequest) -> SetEvictLeadersResponse;
        cluster_status(ClusterStatusRequest) -> ClusterStatusResponse;
        add_member(AddMemberRequest) -> AddMemberResponse;
        remove_member(RemoveMemberRequest) -> RemoveMemberResponse;
        transfer_directory_leader(TransferDirectoryLeaderRequest) -> TransferDirectoryLeaderResponse;
        set_member_role(SetMemberRoleRequest) -> SetMemberRoleResponse;
        rotate_join_token(RotateJoinTokenRequest) -> RotateJoinTokenResponse;
        create_user(CreateUserRequest) -> CreateUserResponse;
        list_users(ListUsersRequest) -> ListUsersResponse;
        revoke_user(RevokeUserRequest) -> RevokeUserResponse;
        user_table(UserTableRequest) -> UserTableResponse;
    }
    given {
    type RegionHeartbeatStream = futures::stream::Empty<Result<RegionHeartbeatResponse, Status>>;

    async fn get_store(
        &self,
        r: Request<GetStoreRequest>,
    ) -> Result<Response<GetStoreResponse>, Status> {
        let id = r.into_inner().store_id;
        let address = self.stores.get(id as usize - 1).ok_or_else(|| Status::not_found("store"))?;
        Ok(Response::new(GetStoreResponse {
            header: None,
            store: Some(Store {
                id,
                address: address.to_string(),
                ..Default::default()
            }),
        }))
    }

    async fn get_region(
        &self,
        r: Request<GetRegionRequest>,
    ) -> Result<Response<GetRegionResponse>, Status> {
        let key = r.into_inner().key;
        let i = self.splits.iter().filter(|s| **s <= key).count();
        Ok(Response::new(GetRegionResponse {
            header: None,
            region: Some(self.info(i)),
        }))
    }

    async fn get_region_by_id(
        &self,
        r: Request<GetRegionByIdRequest>,
    ) -> Result<Response<GetRegionResponse>, Status> {
        let i = (r.into_inner().region_id as usize - 2) / 2;
        Ok(Response::new(GetRegionResponse {
            header: None,
            region: Some(self.info(i.min(self.splits.len()))),
        }))
    }

    async fn get_keyspace(
        &self,
        r: Request<GetKeyspaceRequest>,
    ) -> Result<Response<GetKeyspaceResponse>, Status> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(GetKeyspaceResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                error: Some(DirectoryError {
                    kind: directory_error::Kind::NotFound as i32,
                    message: format!("keyspace {:?} not found", r.into_inner().name),
                    leader_address: String::new(),
                }),
            }),
            keyspace: None,
        }))
    }

    async fn scan_regions(
        &self,
        _: Request<ScanRegionsRequest>,
    ) -> Result<Response<ScanRegionsResponse>, Status> {
        Ok(Response::new(ScanRegionsResponse::default()))
    }

    async fn region_heartbeat(
        &self,
        _: Request<tonic::Streaming<RegionHeartbeatRequest>>,
    ) -> Result<Response<Self::RegionHeartbeatStream>, Status> {
        Err(Status::unimplemented("region_heartbeat"))
    }
    }
}

async fn fake_directory(stores: Vec<SocketAddr>, splits: Vec<Vec<u8>>) -> SocketAddr {
    fake_directory_counting(stores, splits, Arc::default()).await
}

async fn fake_directory_counting(
    stores: Vec<SocketAddr>,
    splits: Vec<Vec<u8>>,
    lookups: Arc<AtomicUsize>,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let directory = FakeDirectory {
        stores,
        splits,
        lookups,
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DirectoryServer::new(directory))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

fn router_of(directory: SocketAddr, timeout: Duration) -> Arc<Router> {
    let mut cfg = RouterConfig::new(
        vec![directory.to_string()],
        tessera_security::Security::insecure(),
    );
    cfg.timeout = timeout;
    Router::new(cfg).unwrap()
}

async fn router() -> (Arc<Router>, Arc<AtomicUsize>) {
    let (store, received) = hanging_up_store().await;
    let directory = fake_directory(vec![store], vec![]).await;
    (router_of(directory, Duration::from_secs(5)), received)
}

#[tokio::test]
async fn a_write_whose_connection_broke_after_sending_is_indeterminate_and_not_resent() {
    let (router, received) = router().await;
    let err = router.put(None, b"k", b"v").await.unwrap_err();
    assert!(matches!(err, Error::Indeterminate(_)), "{err:?}");
    // Give a resend time to arrive, then count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received.load(Ordering::SeqCst), 1, "the put was sent again");

    for (name, result) in [
        ("delete", router.delete(None, b"k").await.map(|_| ())),
        (
            "compare_and_swap",
            router
                .compare_and_swap(None, b"k", None, Some(b"v"))
                .await
                .map(|_| ()),
        ),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::Indeterminate(_)), "{name}: {err:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received.load(Ordering::SeqCst), 3, "a write was sent twice");
}

#[tokio::test]
async fn a_read_whose_connection_broke_is_retried_until_the_deadline() {
    let (router, received) = router().await;
    let err = router.get(None, b"k").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(
        received.load(Ordering::SeqCst) > 1,
        "a read is safe to send again"
    );
}

#[tokio::test]
async fn a_write_that_never_connected_is_retried_then_unavailable() {
    // A port nobody listens on: every attempt fails to connect.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let directory = fake_directory(vec![closed], vec![]).await;
    let router = router_of(directory, Duration::from_secs(2));
    let err = router.put(None, b"k", b"v").await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable(_)),
        "a write that never reached a store did not apply: {err:?}"
    );
}

/// How a [`FakeStore`] answers every request.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Applies it.
    Apply,
    /// Refuses it as bad input with a gRPC status, as a store does for a
    /// request it cannot decode.
    Refuse,
    /// Refuses it unread, over its serving quotas (admission).
    Busy,
}

/// A store that answers every request as its [`Mode`] says, unary or in
/// its stream. Counts what it applied.
#[derive(Clone)]
struct FakeStore {
    mode: Mode,
    applied: Arc<AtomicUsize>,
    seen: Arc<AtomicUsize>,
}

impl FakeStore {
    fn answer<T: Default>(&self) -> Result<Response<T>, Status> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        match self.mode {
            Mode::Refuse => Err(Status::invalid_argument("this store refuses everything")),
            Mode::Busy => Err(tessera_proto::limits::busy_status(
                "server is busy",
                Duration::from_millis(10),
            )),
            Mode::Apply => {
                self.applied.fetch_add(1, Ordering::SeqCst);
                Ok(Response::new(T::default()))
            }
        }
    }
}

impl FakeStore {
    /// The answer to one request carried in the stream.
    fn answer_carried(
        &self,
        cmd: batch_commands_request::request::Cmd,
    ) -> batch_commands_response::response::Cmd {
        use batch_commands_request::request::Cmd as Q;
        use batch_commands_response::response::Cmd as A;
        fn carried<T>(r: Result<Response<T>, Status>, as_answer: fn(T) -> A) -> A {
            match r {
                Ok(r) => as_answer(r.into_inner()),
                Err(s) => A::Status(CommandStatus::from(&s)),
            }
        }
        match cmd {
            Q::Get(_) => carried(self.answer(), A::Get),
            Q::Put(_) => carried(self.answer(), A::Put),
            Q::Delete(_) => carried(self.answer(), A::Delete),
            Q::BatchGet(_) => carried(self.answer(), A::BatchGet),
            Q::BatchPut(_) => carried(self.answer(), A::BatchPut),
            Q::Scan(_) => carried(self.answer(), A::Scan),
            Q::CompareAndSwap(_) => carried(self.answer(), A::CompareAndSwap),
            Q::DeleteRange(_) => carried(self.answer(), A::DeleteRange),
        }
    }
}

type Answers =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<BatchCommandsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Kv for FakeStore {
    type BatchCommandsStream = Answers;

    async fn batch_commands(
        &self,
        r: Request<tonic::Streaming<BatchCommandsRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let store = self.clone();
        let answers = futures::stream::unfold(r.into_inner(), move |mut inbound| {
            let store = store.clone();
            async move {
                let message = inbound.message().await.ok()??;
                let responses = message
                    .requests
                    .into_iter()
                    .filter_map(|q| {
                        Some(batch_commands_response::Response {
                            id: q.id,
                            cmd: Some(store.answer_carried(q.cmd?)),
                        })
                    })
                    .collect();
                Some((Ok(BatchCommandsResponse { responses }), inbound))
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn get(&self, _: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.answer()
    }
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.answer()
    }
    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        self.answer()
    }
    async fn batch_get(
        &self,
        _: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        self.answer()
    }
    async fn batch_put(
        &self,
        _: Request<BatchPutRequest>,
    ) -> Result<Response<BatchPutResponse>, Status> {
        self.answer()
    }
    async fn scan(&self, _: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.answer()
    }
    async fn compare_and_swap(
        &self,
        _: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        self.answer()
    }
    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.answer()
    }
}

/// A fake store: its address, what it applied and what it was sent.
async fn fake_store(mode: Mode) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let applied = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let store = FakeStore {
        mode,
        applied: applied.clone(),
        seen: seen.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::new(store))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, applied, seen)
}

#[tokio::test]
async fn a_store_that_keeps_refusing_over_its_quotas_ends_in_busy_after_a_few_waits() {
    let (busy, applied, seen) = fake_store(Mode::Busy).await;
    let directory = fake_directory(vec![busy], vec![]).await;
    let router = router_of(directory, Duration::from_secs(10));
    let started = std::time::Instant::now();
    // A write too: refused unread, so it is neither indeterminate nor
    // held until the deadline.
    let err = router.put(None, b"k", b"v").await.unwrap_err();
    match &err {
        Error::Busy {
            message,
            retry_after,
        } => {
            assert!(message.contains("serving quotas"), "{message}");
            assert!(*retry_after > Duration::ZERO);
        }
        other => panic!("a busy store's refusal came back as {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        4,
        "tried, then 3 more after waits"
    );
    assert_eq!(applied.load(Ordering::SeqCst), 0);
    let err = router.get(None, b"k").await.unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err:?}");
}

#[tokio::test]
async fn a_batch_or_range_write_that_applied_in_part_is_indeterminate_not_invalid() {
    // Region 2 ([..m) of the default keyspace) applies, region 4 (m..)
    // refuses.
    let (good, applied, _) = fake_store(Mode::Apply).await;
    let (bad, _, _) = fake_store(Mode::Refuse).await;
    let split = tessera_proto::keys::encode(tessera_proto::keys::DEFAULT_KEYSPACE_ID, b"m");
    let directory = fake_directory(vec![good, bad], vec![split]).await;
    let router = router_of(directory, Duration::from_secs(3));
    let pair = |k: &str| (k.as_bytes().to_vec(), b"v".to_vec());

    // Only the refusing region: nothing was written, and the error says so.
    let err = router
        .batch_put(None, &[pair("x"), pair("y")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(applied.load(Ordering::SeqCst), 0);

    // Both regions: one part applied, so the batch is neither done nor
    // untouched.
    let err = router
        .batch_put(None, &[pair("a"), pair("x")])
        .await
        .unwrap_err();
    match &err {
        Error::Indeterminate(m) => assert!(m.contains("applied their part"), "{m}"),
        other => panic!("a half-applied batch put was reported as {other:?}"),
    }
    assert_eq!(
        applied.load(Ordering::SeqCst),
        1,
        "the applied part ran once"
    );

    // A range delete over both: the first region deleted its part.
    let err = router
        .delete_range(None, Some(b"a"), None, None, 0)
        .await
        .unwrap_err();
    match &err {
        Error::Indeterminate(m) => assert!(m.contains("applied their part"), "{m}"),
        other => panic!("a half-applied range delete was reported as {other:?}"),
    }
    assert_eq!(applied.load(Ordering::SeqCst), 2);
    // Starting in the refusing region: nothing applied.
    let err = router
        .delete_range(None, Some(b"x"), None, None, 0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");

    // One region at a time: the first step deletes the first region's part
    // and says where the rest begins; the step that resumes there fails
    // cleanly (nothing of it applied), so a caller knows exactly what is
    // left.
    let step = router
        .delete_range(None, Some(b"a"), None, None, 1)
        .await
        .expect("first step");
    assert_eq!(step.regions, 1);
    assert_eq!(applied.load(Ordering::SeqCst), 3);
    let resume = step.resume.expect("the rest remains");
    let err = router
        .delete_range(None, Some(b"a"), None, Some(&resume), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(
        applied.load(Ordering::SeqCst),
        3,
        "the refused step applied nothing"
    );
    // A resume point outside the range is refused before anything is sent.
    let err = router
        .delete_range(None, Some(b"y"), None, Some(&resume), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");

    // Reads stay reads: a refused part fails the batch get as bad input.
    let err = router
        .batch_get(None, &[b"a".to_vec(), b"x".to_vec()])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

#[tokio::test]
async fn unknown_keyspaces_cost_the_directory_one_lookup_a_second() {
    let (store, _, _) = fake_store(Mode::Apply).await;
    let lookups = Arc::new(AtomicUsize::new(0));
    let directory = fake_directory_counting(vec![store], vec![], lookups.clone()).await;
    let router = router_of(directory, Duration::from_secs(3));
    for _ in 0..50 {
        let err = router.get(Some("nope"), b"k").await.unwrap_err();
        assert!(matches!(err, Error::KeyspaceNotFound(_)), "{err:?}");
    }
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        1,
        "a request naming a missing keyspace asked again"
    );
    // Once the answer expires, the directory is asked again (the keyspace
    // may have been created meanwhile).
    tokio::time::sleep(tessera_routing::router::MISSING_KEYSPACE_TTL + Duration::from_millis(100))
        .await;
    assert!(router.get(Some("nope"), b"k").await.is_err());
    assert_eq!(lookups.load(Ordering::SeqCst), 2);
    // A name no keyspace can have is bad input, and never reaches it.
    let long = "x".repeat(tessera_proto::limits::MAX_KEYSPACE_NAME_BYTES + 1);
    let err = router.get(Some(&long), b"k").await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(lookups.load(Ordering::SeqCst), 2);
}
