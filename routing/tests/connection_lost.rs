//! A write whose connection breaks after the store read it has an unknown
//! outcome: the router reports it as indeterminate and never sends it
//! again. Only a connection that could not be made proves a request was
//! not sent.
//!
//! The store here is a bare HTTP/2 server: it reads each request whole,
//! counts it, starts an answer and drops the connection — what a store
//! that crashes right after accepting a write looks like. tonic reports
//! "error reading a body from connection". The directory is
//! a fake that places one region on it. (Regression: the router once took
//! any error whose message mentioned "connect" — "connection reset",
//! "connection closed" — as not sent, and resent the write.)

use std::net::SocketAddr;

use futures::FutureExt as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tessera_proto::directorypb::directory_server::{Directory, DirectoryServer};
use tessera_proto::directorypb::*;
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
                    let mut body = request.into_body();
                    while let Some(chunk) = body.data().await {
                        if chunk.is_err() {
                            break;
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    // The answer starts, then the connection goes.
                    let response = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    let _stream = respond.send_response(response, false);
                    let _ = futures::future::poll_fn(|cx| conn.poll_closed(cx)).now_or_never();
                }
                // Dropping the connection closes the socket unanswered.
            });
        }
    });
    (addr, received)
}

/// One region, all keys, one voter on store 1 at `store`.
struct FakeDirectory {
    store: SocketAddr,
}

fn region() -> Region {
    Region {
        id: 2,
        start_key: vec![],
        end_key: vec![],
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![Peer {
            id: 3,
            store_id: 1,
            role: PeerRole::Voter as i32,
        }],
    }
}

fn leader() -> Peer {
    region().peers[0]
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
        get_keyspace(GetKeyspaceRequest) -> GetKeyspaceResponse;
        list_keyspaces(ListKeyspacesRequest) -> ListKeyspacesResponse;
        split_region(SplitRegionRequest) -> SplitRegionResponse;
        move_region(MoveRegionRequest) -> MoveRegionResponse;
        transfer_leader(TransferLeaderRequest) -> TransferLeaderResponse;
        remove_store(RemoveStoreRequest) -> RemoveStoreResponse;
        cluster_status(ClusterStatusRequest) -> ClusterStatusResponse;
        add_member(AddMemberRequest) -> AddMemberResponse;
        remove_member(RemoveMemberRequest) -> RemoveMemberResponse;
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
        _: Request<GetStoreRequest>,
    ) -> Result<Response<GetStoreResponse>, Status> {
        Ok(Response::new(GetStoreResponse {
            header: None,
            store: Some(Store {
                id: 1,
                address: self.store.to_string(),
                ..Default::default()
            }),
        }))
    }

    async fn get_region(
        &self,
        _: Request<GetRegionRequest>,
    ) -> Result<Response<GetRegionResponse>, Status> {
        Ok(Response::new(GetRegionResponse {
            header: None,
            region: Some(RegionInfo {
                region: Some(region()),
                leader: Some(leader()),
                ..Default::default()
            }),
        }))
    }

    async fn get_region_by_id(
        &self,
        r: Request<GetRegionByIdRequest>,
    ) -> Result<Response<GetRegionResponse>, Status> {
        self.get_region(Request::new(GetRegionRequest {
            key: vec![r.into_inner().region_id as u8],
        }))
        .await
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

async fn fake_directory(store: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DirectoryServer::new(FakeDirectory { store }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

async fn router() -> (Arc<Router>, Arc<AtomicUsize>) {
    let (store, received) = hanging_up_store().await;
    let directory = fake_directory(store).await;
    let mut cfg = RouterConfig::new(
        vec![directory.to_string()],
        tessera_security::Security::insecure(),
    );
    cfg.timeout = Duration::from_secs(5);
    (Router::new(cfg).unwrap(), received)
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
    let directory = fake_directory(closed).await;
    let mut cfg = RouterConfig::new(
        vec![directory.to_string()],
        tessera_security::Security::insecure(),
    );
    cfg.timeout = Duration::from_secs(2);
    let router = Router::new(cfg).unwrap();
    let err = router.put(None, b"k", b"v").await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable(_)),
        "a write that never reached a store did not apply: {err:?}"
    );
}
