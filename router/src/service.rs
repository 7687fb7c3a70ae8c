//! The public `Router` gRPC service (routerpb): a thin shell over
//! [`Router`] that turns its errors into response errors.
//!
//! An empty keyspace name means the `default` keyspace. Every answer that
//! reaches the client carries either a result or an `Error` with a kind the
//! client acts on; gRPC status errors are left to transport failures.

use std::sync::Arc;

use tessera_common::admission::charged;
use tessera_proto::routerpb::router_server::{Router as RouterRpc, RouterServer};
use tessera_proto::routerpb::{self, error::Kind, *};
use tonic::{Request, Response, Status};

use tessera_routing::{Error, ReadConsistency, Router, Scan};

/// Largest request the service decodes: a BatchPut of up to 32 MiB of data
/// plus framing.
pub const MAX_MESSAGE_BYTES: usize = 40 * 1024 * 1024;

#[derive(Clone)]
pub struct RouterService {
    router: Arc<Router>,
}

impl RouterService {
    pub fn new(router: Arc<Router>) -> Self {
        RouterService { router }
    }

    pub fn into_server(self) -> RouterServer<Self> {
        RouterServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(usize::MAX)
    }
}

fn keyspace(name: &str) -> Option<&str> {
    (!name.is_empty()).then_some(name)
}

/// The response error for a failed operation.
fn error(e: Error) -> Option<routerpb::Error> {
    let retry_after_ms = match &e {
        Error::Busy { retry_after, .. } => retry_after.as_millis().max(1) as u64,
        _ => 0,
    };
    let kind = match &e {
        Error::Busy { .. } => Kind::Busy,
        Error::NoSpace(_) => Kind::NoSpace,
        Error::InvalidArgument(_) => Kind::InvalidArgument,
        Error::KeyspaceNotFound(_) => Kind::KeyspaceNotFound,
        Error::Indeterminate(_) => Kind::Indeterminate,
        Error::Unavailable(_)
        | Error::Directory { .. }
        | Error::DirectoryUnreachable(_)
        // The directory or a store refused the router itself: its
        // certificate or settings, nothing the client can change.
        | Error::Refused { .. }
        | Error::Setup(_) => Kind::Unavailable,
    };
    Some(routerpb::Error {
        kind: kind as i32,
        message: e.to_string(),
        retry_after_ms,
    })
}

fn pairs(v: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<KvPair> {
    v.into_iter()
        .map(|(key, value)| KvPair { key, value })
        .collect()
}

#[tonic::async_trait]
impl RouterRpc for RouterService {
    async fn get(&self, r: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let (_, extensions, r) = r.into_parts();
        let read = async {
            let consistency = ReadConsistency::from_wire(r.consistency, r.stale_max_age_ms)?;
            self.router
                .get_with(keyspace(&r.keyspace), &r.key, consistency)
                .await
        };
        let resp = match read.await {
            Ok(Some(value)) => GetResponse {
                error: None,
                found: true,
                value,
            },
            Ok(None) => GetResponse::default(),
            Err(e) => GetResponse {
                error: error(e),
                ..Default::default()
            },
        };
        Ok(charged(&extensions, resp))
    }

    async fn put(&self, r: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let r = r.into_inner();
        let error = self
            .router
            .put(keyspace(&r.keyspace), &r.key, &r.value)
            .await
            .err()
            .and_then(error);
        Ok(Response::new(PutResponse { error }))
    }

    async fn delete(&self, r: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let r = r.into_inner();
        let error = self
            .router
            .delete(keyspace(&r.keyspace), &r.key)
            .await
            .err()
            .and_then(error);
        Ok(Response::new(DeleteResponse { error }))
    }

    async fn batch_get(
        &self,
        r: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let (_, extensions, r) = r.into_parts();
        let read = async {
            let consistency = ReadConsistency::from_wire(r.consistency, r.stale_max_age_ms)?;
            self.router
                .batch_get_with(keyspace(&r.keyspace), &r.keys, consistency)
                .await
        };
        let resp = match read.await {
            Ok(page) => BatchGetResponse {
                error: None,
                pairs: pairs(page.pairs),
                resume_index: page.resume_index as u32,
            },
            Err(e) => BatchGetResponse {
                error: error(e),
                ..Default::default()
            },
        };
        Ok(charged(&extensions, resp))
    }

    async fn batch_put(
        &self,
        r: Request<BatchPutRequest>,
    ) -> Result<Response<BatchPutResponse>, Status> {
        let r = r.into_inner();
        let batch: Vec<(Vec<u8>, Vec<u8>)> =
            r.pairs.into_iter().map(|p| (p.key, p.value)).collect();
        let error = self
            .router
            .batch_put(keyspace(&r.keyspace), &batch)
            .await
            .err()
            .and_then(error);
        Ok(Response::new(BatchPutResponse { error }))
    }

    async fn scan(&self, r: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let (_, extensions, r) = r.into_parts();
        let read = async {
            let scan = Scan {
                start: r.start.as_deref(),
                end: r.end.as_deref(),
                limit: r.limit as usize,
                reverse: r.reverse,
                resume: r.resume.as_deref(),
                consistency: ReadConsistency::from_wire(r.consistency, r.stale_max_age_ms)?,
            };
            self.router.scan(keyspace(&r.keyspace), scan).await
        };
        let resp = match read.await {
            Ok(page) => ScanResponse {
                error: None,
                pairs: pairs(page.pairs),
                resume: page.resume,
            },
            Err(e) => ScanResponse {
                error: error(e),
                ..Default::default()
            },
        };
        Ok(charged(&extensions, resp))
    }

    async fn compare_and_swap(
        &self,
        r: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let r = r.into_inner();
        let resp = match self
            .router
            .compare_and_swap(
                keyspace(&r.keyspace),
                &r.key,
                r.expected.as_deref(),
                r.new_value.as_deref(),
            )
            .await
        {
            Ok(outcome) => CompareAndSwapResponse {
                error: None,
                succeeded: outcome.succeeded,
                previous: outcome.previous,
            },
            Err(e) => CompareAndSwapResponse {
                error: error(e),
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        r: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let r = r.into_inner();
        let resp = match self
            .router
            .delete_range(
                keyspace(&r.keyspace),
                r.start.as_deref(),
                r.end.as_deref(),
                r.resume.as_deref(),
                r.max_regions,
            )
            .await
        {
            Ok(done) => DeleteRangeResponse {
                error: None,
                resume: done.resume,
                regions: done.regions,
            },
            Err(e) => DeleteRangeResponse {
                error: error(e),
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }
}
