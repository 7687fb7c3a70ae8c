//! One gRPC channel per store, dialed lazily and shared by every request.
//!
//! A store's address comes from the directory the first time it is
//! needed. A channel is dropped when a request to its store fails without
//! an answer ([`crate::reaction::CacheUpdate::ForgetStore`]), so the next
//! request asks the directory again: a store that moved is found at its
//! new address.
//!
//! While a request is in flight its connection is watched with HTTP/2
//! pings (`KEEPALIVE` apart, as long to answer): a store host that went
//! silent without closing its connections (power loss, a partition, a
//! paused process) fails the requests on them within seconds — reads are
//! then tried elsewhere, writes end indeterminate — instead of holding
//! them to the operation's deadline. A live store always answers: its Kv
//! service bounds every request with its own timeout.

use std::time::Duration;

use dashmap::DashMap;
use tessera_proto::directorypb::GetStoreRequest;
use tessera_proto::kvpb::kv_client::KvClient;
use tessera_security::Security;
use tonic::transport::Endpoint;

use crate::directory::DirectoryConn;
use crate::stream::StoreClient;
use crate::{Error, Result};

/// How long dialing a store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection with a request in flight may stay silent before
/// it is pinged, and how long the ping may go unanswered.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// Largest response a store may send (a scan page) and request sent.
const MAX_DECODING_BYTES: usize = 256 * 1024 * 1024;
const MAX_ENCODING_BYTES: usize = 64 * 1024 * 1024;

pub struct StorePool {
    clients: DashMap<u64, StoreClient>,
    security: Security,
    /// Point requests go through one `BatchCommands` stream per store.
    stream: bool,
}

impl StorePool {
    /// An empty pool whose channels are secured by `security`; with
    /// `stream`, each store's point requests share one `BatchCommands`
    /// stream ([`crate::stream`]).
    pub fn new(security: Security, stream: bool) -> Self {
        StorePool {
            clients: DashMap::new(),
            security,
            stream,
        }
    }

    /// The Kv client of `store_id`, asking `dir` for its address once.
    pub async fn client(&self, dir: &DirectoryConn, store_id: u64) -> Result<StoreClient> {
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
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(false);
        let unary = KvClient::new(self.security.channel(endpoint))
            .max_decoding_message_size(MAX_DECODING_BYTES)
            .max_encoding_message_size(MAX_ENCODING_BYTES);
        let client = StoreClient::new(unary, self.stream);
        self.clients.insert(store_id, client.clone());
        Ok(client)
    }

    /// Drops the channel to `store_id` (it failed).
    pub fn forget(&self, store_id: u64) {
        self.clients.remove(&store_id);
    }
}
