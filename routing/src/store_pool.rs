//! One gRPC channel per store, dialed lazily and shared by every request.
//!
//! A store's address comes from the directory the first time it is
//! needed. A channel is dropped when a request to its store fails without
//! an answer ([`crate::reaction::CacheUpdate::ForgetStore`]), so the next
//! request asks the directory again: a store that moved is found at its
//! new address.

use std::time::Duration;

use dashmap::DashMap;
use tessera_proto::directorypb::GetStoreRequest;
use tessera_proto::kvpb::kv_client::KvClient;
use tessera_security::{Channel, Security};
use tonic::transport::Endpoint;

use crate::directory::DirectoryConn;
use crate::{Error, Result};

/// How long dialing a store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response a store may send (a scan page) and request sent.
const MAX_DECODING_BYTES: usize = 256 * 1024 * 1024;
const MAX_ENCODING_BYTES: usize = 64 * 1024 * 1024;

pub struct StorePool {
    clients: DashMap<u64, KvClient<Channel>>,
    security: Security,
}

impl StorePool {
    /// An empty pool whose channels are secured by `security`.
    pub fn new(security: Security) -> Self {
        StorePool {
            clients: DashMap::new(),
            security,
        }
    }

    /// The Kv client of `store_id`, asking `dir` for its address once.
    pub async fn client(&self, dir: &DirectoryConn, store_id: u64) -> Result<KvClient<Channel>> {
        if let Some(c) = self.clients.get(&store_id) {
            return Ok(c.clone());
        }
        let store = dir
            .call("get store", |mut c| async move {
                c.get_store(GetStoreRequest { store_id }).await
            })
            .await?
            .store
            .ok_or_else(|| Error::directory(format!("store {store_id} is unknown")))?;
        let endpoint = Endpoint::from_shared(format!("http://{}", store.address))
            .map_err(|e| Error::directory(format!("bad address of store {store_id}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let client = KvClient::new(self.security.channel(endpoint))
            .max_decoding_message_size(MAX_DECODING_BYTES)
            .max_encoding_message_size(MAX_ENCODING_BYTES);
        self.clients.insert(store_id, client.clone());
        Ok(client)
    }

    /// Drops the channel to `store_id` (it failed).
    pub fn forget(&self, store_id: u64) {
        self.clients.remove(&store_id);
    }
}
