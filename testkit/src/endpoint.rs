//! How the harness reaches one store: straight into its Kv API, or through
//! its gRPC `Kv` service.

use std::sync::Arc;

use tessera_proto::kvpb::kv_client::KvClient;
use tessera_proto::kvpb::*;
use tonic::transport::Channel;

use tessera_store::kv::KvApi;
use tessera_store::{Error, Result};

#[derive(Clone)]
pub enum KvEndpoint {
    Local(Arc<KvApi>),
    Remote(KvClient<Channel>),
}

fn status_to_error(s: tonic::Status) -> Error {
    match s.code() {
        tonic::Code::InvalidArgument => Error::InvalidArgument(s.message().to_string()),
        tonic::Code::DeadlineExceeded => Error::Indeterminate(s.message().to_string()),
        _ => Error::Directory(format!("rpc failed: {s}")),
    }
}

macro_rules! endpoint_calls {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        impl KvEndpoint {
            $(
                pub async fn $name(&self, req: $req) -> Result<$resp> {
                    match self {
                        KvEndpoint::Local(api) => api.$name(req).await,
                        KvEndpoint::Remote(client) => client
                            .clone()
                            .$name(req)
                            .await
                            .map(|r| r.into_inner())
                            .map_err(status_to_error),
                    }
                }
            )*
        }
    };
}

endpoint_calls! {
    get(GetRequest) -> GetResponse;
    put(PutRequest) -> PutResponse;
    delete(DeleteRequest) -> DeleteResponse;
    batch_get(BatchGetRequest) -> BatchGetResponse;
    batch_put(BatchPutRequest) -> BatchPutResponse;
    scan(ScanRequest) -> ScanResponse;
    compare_and_swap(CompareAndSwapRequest) -> CompareAndSwapResponse;
    delete_range(DeleteRangeRequest) -> DeleteRangeResponse;
}
