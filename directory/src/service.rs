//! The directory's gRPC service: a thin shell over [`Core`]. Each handler
//! unpacks its request, calls one `Core` method, and packs the result —
//! an error goes in the response header (with the leader's address for
//! `NOT_LEADER`), never as a gRPC status.
//!
//! Only the leader answers (see [`crate::core`]); region heartbeats arrive
//! on a stream per store and are answered with operator steps
//! ([`crate::heartbeats`]).

use std::sync::Arc;

use tessera_proto::directorypb::directory_command::Cmd;
use tessera_proto::directorypb::directory_server::{Directory, DirectoryServer};
use tessera_proto::directorypb::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::core::Core;
use crate::ids::MAX_IDS_PER_REQUEST;
use crate::state::Applied;
use crate::Error;

#[derive(Clone)]
pub struct DirectoryService {
    core: Arc<Core>,
}

impl DirectoryService {
    pub fn new(core: Arc<Core>) -> Self {
        DirectoryService { core }
    }

    pub fn into_server(self) -> DirectoryServer<Self> {
        DirectoryServer::new(self)
    }
}

/// Builds a response from a result: errors go in the header.
macro_rules! respond {
    ($core:expr, $result:expr, $resp:ident { $($field:ident: $value:expr),* $(,)? }) => {{
        match $result {
            Ok(_v) => {
                #[allow(clippy::redundant_closure_call, clippy::needless_update)]
                let resp = $resp {
                    header: $core.header(None),
                    $($field: ($value)(_v),)*
                    ..Default::default()
                };
                Ok(Response::new(resp))
            }
            Err(e) => {
                if let Some(status) = e.refusal() {
                    return Err(status);
                }
                #[allow(clippy::needless_update)]
                let resp = $resp { header: $core.header(Some(&e)), ..Default::default() };
                Ok(Response::new(resp))
            }
        }
    }};
}

#[tonic::async_trait]
impl Directory for DirectoryService {
    async fn is_bootstrapped(
        &self,
        _r: Request<IsBootstrappedRequest>,
    ) -> Result<Response<IsBootstrappedResponse>, Status> {
        let r = self.core.read(|s, _| s.meta.bootstrapped).await;
        respond!(
            self.core,
            r,
            IsBootstrappedResponse {
                bootstrapped: |b| b
            }
        )
    }

    async fn bootstrap(
        &self,
        r: Request<BootstrapRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let r = self.core.node.propose(Cmd::Bootstrap(r.into_inner())).await;
        respond!(self.core, r, BootstrapResponse {})
    }

    async fn alloc_ids(
        &self,
        r: Request<AllocIdsRequest>,
    ) -> Result<Response<AllocIdsResponse>, Status> {
        let count = r.into_inner().count;
        let r = if count == 0 || count > MAX_IDS_PER_REQUEST {
            Err(Error::InvalidArgument(format!(
                "cannot allocate {count} ids (1 to {MAX_IDS_PER_REQUEST})"
            )))
        } else {
            self.core.alloc_ids(count).await
        };
        respond!(
            self.core,
            r,
            AllocIdsResponse {
                first: |f| f,
                count: |_| count
            }
        )
    }

    async fn put_store(
        &self,
        r: Request<PutStoreRequest>,
    ) -> Result<Response<PutStoreResponse>, Status> {
        let r = self.core.register_store(r.into_inner()).await;
        respond!(self.core, r, PutStoreResponse {})
    }

    async fn get_store(
        &self,
        r: Request<GetStoreRequest>,
    ) -> Result<Response<GetStoreResponse>, Status> {
        let id = r.into_inner().store_id;
        let r = self
            .core
            .read(|s, _| s.stores.get(&id).cloned())
            .await
            .and_then(|s| s.ok_or_else(|| Error::NotFound(format!("store {id}"))));
        respond!(self.core, r, GetStoreResponse { store: Some })
    }

    async fn list_stores(
        &self,
        r: Request<ListStoresRequest>,
    ) -> Result<Response<ListStoresResponse>, Status> {
        let include_tombstones = r.into_inner().include_tombstones;
        let r = self.core.list_stores(include_tombstones).await;
        respond!(self.core, r, ListStoresResponse { stores: |v| v })
    }

    async fn store_heartbeat(
        &self,
        r: Request<StoreHeartbeatRequest>,
    ) -> Result<Response<StoreHeartbeatResponse>, Status> {
        let req = r.into_inner();
        let r = match self.core.check_cluster(req.cluster_id, "heartbeat").await {
            Ok(()) => {
                self.core
                    .store_heartbeat(req.stats.unwrap_or_default())
                    .await
            }
            Err(e) => Err(e),
        };
        respond!(
            self.core,
            r,
            StoreHeartbeatResponse {
                report_regions: |v| v
            }
        )
    }

    type RegionHeartbeatStream = ReceiverStream<Result<RegionHeartbeatResponse, Status>>;

    async fn region_heartbeat(
        &self,
        r: Request<Streaming<RegionHeartbeatRequest>>,
    ) -> Result<Response<Self::RegionHeartbeatStream>, Status> {
        let mut inbound = r.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let core = self.core.clone();
        tokio::spawn(async move {
            // A stream belongs to one store: its first report says whose
            // cluster it is.
            let mut checked = false;
            while let Ok(Some(req)) = inbound.message().await {
                if !checked {
                    if let Err(e) = core.check_cluster(req.cluster_id, "heartbeat").await {
                        let reply = match e.refusal() {
                            Some(status) => Err(status),
                            None => Ok(RegionHeartbeatResponse {
                                header: core.header(Some(&e)),
                                ..Default::default()
                            }),
                        };
                        let _ = tx.send(reply).await;
                        return;
                    }
                    checked = true;
                }
                let Some(report) = req.report else { continue };
                match core.handle_region_report(report).await {
                    Ok(Some(resp)) => {
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e @ (Error::NotLeader(_) | Error::Shutdown)) => {
                        let resp = RegionHeartbeatResponse {
                            header: core.header(Some(&e)),
                            ..Default::default()
                        };
                        let _ = tx.send(Ok(resp)).await;
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "region report not recorded"),
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_region(
        &self,
        r: Request<GetRegionRequest>,
    ) -> Result<Response<GetRegionResponse>, Status> {
        let key = r.into_inner().key;
        let core = self.core.clone();
        let r = self
            .core
            .read(|s, ls| {
                s.region_for_key(&key)
                    .map(|r| core.region_info(Some(ls), r))
            })
            .await
            .and_then(|r| r.ok_or(Error::NotBootstrapped));
        respond!(self.core, r, GetRegionResponse { region: Some })
    }

    async fn get_region_by_id(
        &self,
        r: Request<GetRegionByIdRequest>,
    ) -> Result<Response<GetRegionResponse>, Status> {
        let id = r.into_inner().region_id;
        let core = self.core.clone();
        let r = self
            .core
            .read(|s, ls| s.regions.get(&id).map(|r| core.region_info(Some(ls), r)))
            .await
            .and_then(|r| r.ok_or_else(|| Error::NotFound(format!("region {id}"))));
        respond!(self.core, r, GetRegionResponse { region: Some })
    }

    async fn scan_regions(
        &self,
        r: Request<ScanRegionsRequest>,
    ) -> Result<Response<ScanRegionsResponse>, Status> {
        let req = r.into_inner();
        let core = self.core.clone();
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit as usize
        };
        let r = self
            .core
            .read(|s, ls| {
                s.overlapping(&req.start_key, &req.end_key)
                    .into_iter()
                    .take(limit)
                    .map(|r| core.region_info(Some(ls), r))
                    .collect::<Vec<_>>()
            })
            .await;
        respond!(self.core, r, ScanRegionsResponse { regions: |v| v })
    }

    async fn create_keyspace(
        &self,
        r: Request<CreateKeyspaceRequest>,
    ) -> Result<Response<CreateKeyspaceResponse>, Status> {
        let req = r.into_inner();
        // Checked before the log, never at apply: a rule added later must
        // not make replicas replaying older entries disagree.
        let r = if let Err(e) = tessera_proto::limits::validate_keyspace_name(&req.name) {
            Err(Error::InvalidArgument(e))
        } else if req.kind == KeyspaceKind::Hash as i32 && !(1..=4096).contains(&req.regions) {
            Err(Error::InvalidArgument(format!(
                "a hash keyspace needs 1 to 4096 regions, not {}",
                req.regions
            )))
        } else {
            match self
                .core
                .node
                .propose(Cmd::CreateKeyspace(Keyspace {
                    id: 0,
                    name: req.name,
                    kind: req.kind,
                    initial_regions: req.regions,
                    ring_stores: vec![],
                }))
                .await
            {
                Ok(Applied::Keyspace(k)) => Ok(k),
                Ok(_) => Err(Error::InvalidArgument("unexpected result".into())),
                Err(e) => Err(e),
            }
        };
        respond!(self.core, r, CreateKeyspaceResponse { keyspace: Some })
    }

    async fn get_keyspace(
        &self,
        r: Request<GetKeyspaceRequest>,
    ) -> Result<Response<GetKeyspaceResponse>, Status> {
        let name = r.into_inner().name;
        let r = self
            .core
            .read(|s, _| s.keyspace(&name))
            .await
            .and_then(|k| k.ok_or_else(|| Error::NotFound(format!("keyspace {name:?}"))));
        respond!(self.core, r, GetKeyspaceResponse { keyspace: Some })
    }

    async fn list_keyspaces(
        &self,
        _r: Request<ListKeyspacesRequest>,
    ) -> Result<Response<ListKeyspacesResponse>, Status> {
        let r = self
            .core
            .read(|s, _| {
                // `keyspace("default")` always answers; no `expect` needed.
                let mut all: Vec<_> = s.keyspace("default").into_iter().collect();
                all.extend(s.keyspaces.values().cloned());
                all
            })
            .await;
        respond!(self.core, r, ListKeyspacesResponse { keyspaces: |v| v })
    }

    async fn split_region(
        &self,
        r: Request<SplitRegionRequest>,
    ) -> Result<Response<SplitRegionResponse>, Status> {
        let r = self.core.split_region(r.into_inner()).await;
        respond!(self.core, r, SplitRegionResponse { operator: |id| id })
    }

    async fn merge_region(
        &self,
        r: Request<MergeRegionRequest>,
    ) -> Result<Response<MergeRegionResponse>, Status> {
        let r = self.core.merge_region(r.into_inner()).await;
        respond!(self.core, r, MergeRegionResponse { operator: |id| id })
    }

    async fn move_region(
        &self,
        r: Request<MoveRegionRequest>,
    ) -> Result<Response<MoveRegionResponse>, Status> {
        let r = self.core.move_region(r.into_inner()).await;
        respond!(self.core, r, MoveRegionResponse { operator: |id| id })
    }

    async fn transfer_leader(
        &self,
        r: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let r = self.core.transfer_leader(r.into_inner()).await;
        respond!(self.core, r, TransferLeaderResponse { operator: |id| id })
    }

    async fn remove_store(
        &self,
        r: Request<RemoveStoreRequest>,
    ) -> Result<Response<RemoveStoreResponse>, Status> {
        let r = self.core.remove_store(r.into_inner().store_id).await;
        respond!(self.core, r, RemoveStoreResponse {})
    }

    async fn set_evict_leaders(
        &self,
        r: Request<SetEvictLeadersRequest>,
    ) -> Result<Response<SetEvictLeadersResponse>, Status> {
        let r = self.core.set_evict_leaders(r.into_inner()).await;
        respond!(self.core, r, SetEvictLeadersResponse {})
    }

    async fn cluster_status(
        &self,
        _r: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        match self.core.cluster_status().await {
            Ok(s) => Ok(Response::new(s)),
            Err(e) => Ok(Response::new(ClusterStatusResponse {
                header: self.core.header(Some(&e)),
                ..Default::default()
            })),
        }
    }

    async fn add_member(
        &self,
        r: Request<AddMemberRequest>,
    ) -> Result<Response<AddMemberResponse>, Status> {
        let req = r.into_inner();
        let r = async {
            self.core.leading_term().await?;
            if req.id == 0 || req.address.is_empty() {
                return Err(Error::InvalidArgument(
                    "a member needs an id and an address".into(),
                ));
            }
            self.core.check_join_token(&req.join_token)?;
            self.core
                .node
                .add_member(req.id, req.address, req.learner)
                .await
        }
        .await;
        respond!(self.core, r, AddMemberResponse {})
    }

    async fn remove_member(
        &self,
        r: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        let id = r.into_inner().id;
        let r = self.core.node.remove_member(id).await;
        respond!(self.core, r, RemoveMemberResponse {})
    }

    async fn transfer_directory_leader(
        &self,
        r: Request<TransferDirectoryLeaderRequest>,
    ) -> Result<Response<TransferDirectoryLeaderResponse>, Status> {
        let id = r.into_inner().id;
        let r = self.core.node.transfer_leader(id).await;
        respond!(self.core, r, TransferDirectoryLeaderResponse {})
    }

    async fn set_member_role(
        &self,
        r: Request<SetMemberRoleRequest>,
    ) -> Result<Response<SetMemberRoleResponse>, Status> {
        let req = r.into_inner();
        let r = if req.learner {
            self.core.node.demote_member(req.id).await
        } else {
            self.core.node.promote_member(req.id).await
        };
        respond!(self.core, r, SetMemberRoleResponse {})
    }

    async fn rotate_join_token(
        &self,
        _r: Request<RotateJoinTokenRequest>,
    ) -> Result<Response<RotateJoinTokenResponse>, Status> {
        let r = self.core.rotate_join_token().await;
        respond!(self.core, r, RotateJoinTokenResponse { join_token: |t| t })
    }

    async fn create_user(
        &self,
        r: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let r = r.into_inner();
        match self.core.create_user(r.name, r.role).await {
            Ok((user, token)) => Ok(Response::new(CreateUserResponse {
                header: self.core.header(None),
                user: Some(user),
                token,
            })),
            Err(e) => respond!(self.core, Err::<(), _>(e), CreateUserResponse {}),
        }
    }

    async fn list_users(
        &self,
        _r: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let r = self.core.list_users().await;
        respond!(self.core, r, ListUsersResponse { users: |u| u })
    }

    async fn revoke_user(
        &self,
        r: Request<RevokeUserRequest>,
    ) -> Result<Response<RevokeUserResponse>, Status> {
        let r = self.core.revoke_user(r.into_inner().name).await;
        respond!(self.core, r, RevokeUserResponse {})
    }

    async fn user_table(
        &self,
        r: Request<UserTableRequest>,
    ) -> Result<Response<UserTableResponse>, Status> {
        match self.core.user_table(r.into_inner().known_version).await {
            Ok(resp) => Ok(Response::new(UserTableResponse {
                header: self.core.header(None),
                ..resp
            })),
            Err(e) => respond!(self.core, Err::<(), _>(e), UserTableResponse {}),
        }
    }
}
