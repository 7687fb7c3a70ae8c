//! [`Router`]: the routing client's state and settings, and what it knows
//! about keyspaces.
//!
//! A router holds the region cache ([`crate::cache`]), one channel per
//! store ([`crate::store_pool`]), the keyspaces it has looked up and the
//! connection that follows the directory's leader. Its operations are in
//! [`crate::ops`] (single keys), [`crate::batch`] (many keys) and
//! [`crate::range`] (scans, range deletes); each goes through the retry
//! loop of [`crate::route`].

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tessera_proto::directorypb::{directory_error, GetKeyspaceRequest, Keyspace, KeyspaceKind};
use tessera_proto::{keys, limits};
use tessera_security::Security;

use crate::cache::RegionCache;
use crate::directory::DirectoryConn;
use crate::store_pool::StorePool;
use crate::{Backoff, Error, Result};

#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Directory members, `host:port`.
    pub directory: Vec<String>,
    /// How long one operation may take, retries included.
    pub timeout: Duration,
    /// The wait between attempts.
    pub backoff: Backoff,
    /// How connections to the directory and the stores are secured.
    pub security: Security,
    /// The bytes of keys and values one Scan or BatchGet answer holds
    /// before it stops and says where to continue (a page always holds at
    /// least one pair).
    pub max_response_bytes: usize,
    /// Send each store's point requests (get, put, delete,
    /// compare-and-swap) through one `BatchCommands` stream, many per
    /// message ([`crate::stream`]); off: one unary RPC each.
    pub batch_stream: bool,
}

impl RouterConfig {
    pub fn new(directory: Vec<String>, security: Security) -> Self {
        RouterConfig {
            directory,
            security,
            timeout: Duration::from_secs(10),
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(500)),
            max_response_bytes: limits::RESPONSE_PAGE_BYTES,
            batch_stream: true,
        }
    }
}

pub struct Router {
    pub(crate) cfg: RouterConfig,
    pub(crate) dir: DirectoryConn,
    pub(crate) cache: RegionCache,
    pub(crate) stores: StorePool,
    keyspaces: DashMap<String, Keyspace>,
    missing_keyspaces: MissingKeyspaces,
    /// Turns of follower reads, so they spread over a region's voters.
    pub(crate) spread: std::sync::atomic::AtomicUsize,
}

/// Keyspace names the directory said do not exist, for
/// [`MISSING_KEYSPACE_TTL`]: requests naming one are answered
/// `KEYSPACE_NOT_FOUND` here instead of each costing the directory a
/// linearizable read. A keyspace created meanwhile is found once its
/// entry expires. At most [`MAX_MISSING_KEYSPACES`] names are kept (a
/// client naming ever new keyspaces empties the set, it cannot grow it).
#[derive(Default)]
struct MissingKeyspaces(DashMap<String, std::time::Instant>);

/// How long a keyspace found missing is answered as missing without asking.
pub const MISSING_KEYSPACE_TTL: Duration = Duration::from_secs(1);
const MAX_MISSING_KEYSPACES: usize = 10_000;

impl MissingKeyspaces {
    fn is_missing(&self, name: &str) -> bool {
        self.0
            .get(name)
            .is_some_and(|at| at.elapsed() < MISSING_KEYSPACE_TTL)
    }

    fn remember(&self, name: &str) {
        if self.0.len() >= MAX_MISSING_KEYSPACES {
            self.0.clear();
        }
        self.0.insert(name.to_string(), std::time::Instant::now());
    }
}

impl Router {
    pub fn new(cfg: RouterConfig) -> Result<Arc<Self>> {
        let dir = DirectoryConn::new(cfg.directory.clone(), cfg.timeout, cfg.security.clone())?;
        let stores = StorePool::new(cfg.security.clone(), cfg.batch_stream);
        Ok(Arc::new(Router {
            cfg,
            dir,
            cache: RegionCache::new(),
            stores,
            keyspaces: DashMap::new(),
            missing_keyspaces: MissingKeyspaces::default(),
            spread: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    pub fn directory(&self) -> &DirectoryConn {
        &self.dir
    }

    pub fn cache(&self) -> &RegionCache {
        &self.cache
    }

    /// The keyspace named `name` (None or "default": the default one).
    pub async fn keyspace(&self, name: Option<&str>) -> Result<Keyspace> {
        let name = name.unwrap_or("default");
        if name == "default" || name.is_empty() {
            return Ok(Keyspace {
                id: keys::DEFAULT_KEYSPACE_ID,
                name: "default".into(),
                kind: KeyspaceKind::Range as i32,
                initial_regions: 0,
                ring_stores: vec![],
            });
        }
        if let Some(k) = self.keyspaces.get(name) {
            return Ok(k.clone());
        }
        limits::validate_keyspace_name(name).map_err(Error::InvalidArgument)?;
        if self.missing_keyspaces.is_missing(name) {
            return Err(Error::KeyspaceNotFound(name.to_string()));
        }
        let resp = self
            .dir
            .call("get keyspace", |mut c| {
                let req = GetKeyspaceRequest {
                    name: name.to_string(),
                };
                async move { c.get_keyspace(req).await }
            })
            .await;
        match resp {
            Ok(r) => {
                let k = r
                    .keyspace
                    .ok_or_else(|| Error::KeyspaceNotFound(name.to_string()))?;
                self.keyspaces.insert(name.to_string(), k.clone());
                Ok(k)
            }
            Err(Error::Directory { kind, .. })
                if kind == directory_error::Kind::NotFound as i32 =>
            {
                self.missing_keyspaces.remember(name);
                Err(Error::KeyspaceNotFound(name.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// `key` of keyspace `ks`, encoded as the engine stores it; refuses
    /// keys outside the size limits.
    pub(crate) fn encode_key(ks: &Keyspace, key: &[u8]) -> Result<Vec<u8>> {
        if key.is_empty() {
            return Err(Error::InvalidArgument("key is empty".into()));
        }
        if key.len() > keys::MAX_KEY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "key is {} bytes; the limit is {}",
                key.len(),
                keys::MAX_KEY_BYTES
            )));
        }
        Ok(keys::encode(ks.id, key))
    }

    pub(crate) fn check_value(value: &[u8]) -> Result<()> {
        keys::validate_value(value).map_err(Error::InvalidArgument)
    }

    /// The user key of an encoded key.
    pub(crate) fn user_key(encoded: Vec<u8>) -> Vec<u8> {
        keys::decode(&encoded)
            .map(|(_, k)| k.to_vec())
            .unwrap_or(encoded)
    }
}
