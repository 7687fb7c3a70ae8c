//! The `StoreAdmin` gRPC service over [`AdminApi`]. Routing errors go in
//! the response; bad requests are `InvalidArgument`.

use std::sync::Arc;

use tessera_proto::adminpb::store_admin_server::{StoreAdmin, StoreAdminServer};
use tessera_proto::adminpb::*;
use tessera_proto::errorpb::RegionError;
use tonic::{Request, Response, Status};

use crate::admin::AdminApi;
use crate::merge::CommitOutcome;
use crate::{conf_change, merge, split, transfer_leader, Error};

#[derive(Clone)]
pub struct AdminService {
    api: Arc<AdminApi>,
}

impl AdminService {
    pub fn new(api: Arc<AdminApi>) -> Self {
        AdminService { api }
    }

    pub fn into_server(self) -> StoreAdminServer<Self> {
        StoreAdminServer::new(self)
    }
}

/// Splits a result into (routing error, value) or a status.
fn split_err<T>(r: crate::Result<T>) -> Result<(Option<RegionError>, Option<T>), Status> {
    match r {
        Ok(v) => Ok((None, Some(v))),
        Err(Error::Region(e)) => Ok((Some(*e), None)),
        Err(e) => Err(e.into()),
    }
}

#[tonic::async_trait]
impl StoreAdmin for AdminService {
    async fn split_region(
        &self,
        r: Request<SplitRegionRequest>,
    ) -> Result<Response<SplitRegionResponse>, Status> {
        let req = r.into_inner();
        let (region_error, regions) =
            split_err(split::split_region(&self.api, req.region_id, req.split_keys).await)?;
        Ok(Response::new(SplitRegionResponse {
            region_error,
            regions: regions.unwrap_or_default(),
        }))
    }

    async fn change_peer(
        &self,
        r: Request<ChangePeerRequest>,
    ) -> Result<Response<ChangePeerResponse>, Status> {
        let req = r.into_inner();
        let kind = ChangePeerKind::try_from(req.kind)
            .map_err(|_| Status::invalid_argument(format!("unknown change kind {}", req.kind)))?;
        let (region_error, region) = split_err(
            conf_change::change_peer(&self.api, req.region_id, kind, req.store_id, req.peer_id)
                .await,
        )?;
        Ok(Response::new(ChangePeerResponse {
            region_error,
            region,
        }))
    }

    async fn transfer_leader(
        &self,
        r: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let req = r.into_inner();
        let (region_error, leader) = split_err(
            transfer_leader::transfer_leader(&self.api, req.region_id, req.to_store_id).await,
        )?;
        Ok(Response::new(TransferLeaderResponse {
            region_error,
            leader,
        }))
    }

    async fn commit_merge(
        &self,
        r: Request<CommitMergeRequest>,
    ) -> Result<Response<CommitMergeResponse>, Status> {
        let req = r.into_inner();
        let source = req
            .source
            .ok_or_else(|| Status::invalid_argument("a merge needs its source"))?;
        let state = req
            .state
            .ok_or_else(|| Status::invalid_argument("a merge needs its source's merge state"))?;
        let (region_error, outcome) = split_err(
            merge::commit_merge(&self.api, req.target_region_id, source, state, req.refuse).await,
        )?;
        let (merged, refused) = match outcome {
            Some(CommitOutcome::Merged(r)) => (Some(r), String::new()),
            Some(CommitOutcome::Refused(why)) => (None, why),
            None => (None, String::new()),
        };
        Ok(Response::new(CommitMergeResponse {
            region_error,
            merged,
            refused,
        }))
    }

    async fn region_info(
        &self,
        r: Request<RegionInfoRequest>,
    ) -> Result<Response<RegionInfoResponse>, Status> {
        let req = r.into_inner();
        let (region_error, regions) = split_err(self.api.status(req.region_id).await)?;
        Ok(Response::new(RegionInfoResponse {
            region_error,
            regions: regions.unwrap_or_default(),
        }))
    }
}
