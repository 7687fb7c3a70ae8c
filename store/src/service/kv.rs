//! The `Kv` gRPC service: a thin shell over [`KvApi`] that maps errors to
//! statuses (routing errors stay in the response body).

use std::sync::Arc;

use tessera_common::admission::charged;
use tessera_proto::kvpb::kv_server::{Kv, KvServer};
use tessera_proto::kvpb::*;
use tonic::{Request, Response, Status};

use crate::kv::KvApi;

/// Largest request the service decodes: a BatchPut of up to 32 MiB of data
/// plus framing. Anything larger is refused by gRPC with `OutOfRange`.
pub const MAX_KV_MESSAGE_BYTES: usize = 40 * 1024 * 1024;

#[derive(Clone)]
pub struct KvService {
    api: Arc<KvApi>,
}

impl KvService {
    pub fn new(api: Arc<KvApi>) -> Self {
        KvService { api }
    }

    pub fn into_server(self) -> KvServer<Self> {
        KvServer::new(self)
            .max_decoding_message_size(MAX_KV_MESSAGE_BYTES)
            .max_encoding_message_size(usize::MAX)
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, r: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let (_, extensions, r) = r.into_parts();
        Ok(charged(&extensions, self.api.get(r).await?))
    }

    async fn put(&self, r: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(self.api.put(r.into_inner()).await?))
    }

    async fn delete(&self, r: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Ok(Response::new(self.api.delete(r.into_inner()).await?))
    }

    async fn batch_get(
        &self,
        r: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let (_, extensions, r) = r.into_parts();
        Ok(charged(&extensions, self.api.batch_get(r).await?))
    }

    async fn batch_put(
        &self,
        r: Request<BatchPutRequest>,
    ) -> Result<Response<BatchPutResponse>, Status> {
        Ok(Response::new(self.api.batch_put(r.into_inner()).await?))
    }

    async fn scan(&self, r: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let (_, extensions, r) = r.into_parts();
        Ok(charged(&extensions, self.api.scan(r).await?))
    }

    async fn compare_and_swap(
        &self,
        r: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        Ok(Response::new(
            self.api.compare_and_swap(r.into_inner()).await?,
        ))
    }

    async fn delete_range(
        &self,
        r: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(self.api.delete_range(r.into_inner()).await?))
    }
}
