//! The `Kv` gRPC service: a thin shell over [`KvApi`] that maps errors to
//! statuses (routing errors stay in the response body). The
//! `BatchCommands` stream is served by [`super::stream`].

use std::sync::Arc;

use tessera_common::admission::{charged, Admission};
use tessera_proto::kvpb::kv_server::{Kv, KvServer};
use tessera_proto::kvpb::*;
use tessera_security::tls::Authority;
use tonic::{Request, Response, Status, Streaming};

use super::stream::{Answers, StreamServer};
use crate::kv::KvApi;

/// Largest request the service decodes: a BatchPut of up to 32 MiB of data
/// plus framing. Anything larger is refused by gRPC with `OutOfRange`.
pub const MAX_KV_MESSAGE_BYTES: usize = 40 * 1024 * 1024;

#[derive(Clone)]
pub struct KvService {
    api: Arc<KvApi>,
    /// The serving quotas, which the stream applies to each request it
    /// carries (the admission layer exempts the stream itself).
    admission: Option<Admission>,
    /// Ends the streams when the store stops.
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl KvService {
    pub fn new(api: Arc<KvApi>) -> Self {
        KvService {
            api,
            admission: None,
            stop: None,
        }
    }

    /// Ends every stream (after answering what it read) once `stop` turns
    /// true: a graceful stop waits for in-flight calls, and a stream would
    /// never end by itself.
    pub fn with_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Serves the stream's requests under `admission`'s quotas.
    pub fn with_admission(mut self, admission: Admission) -> Self {
        self.admission = Some(admission);
        self
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

    type BatchCommandsStream = Answers;

    async fn batch_commands(
        &self,
        r: Request<Streaming<BatchCommandsRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let (_, extensions, inbound) = r.into_parts();
        // The access guard hands every stream it lets open the authority
        // its requests are checked with; a server without the guard (or a
        // path the guard does not know to be a stream) serves none.
        let authority = extensions.get::<Authority>().cloned().ok_or_else(|| {
            Status::permission_denied("this server cannot check the stream's requests")
        })?;
        let server = StreamServer {
            api: self.api.clone(),
            admission: self.admission.clone(),
            stop: self.stop.clone(),
        };
        Ok(Response::new(server.serve(authority, inbound)))
    }
}
