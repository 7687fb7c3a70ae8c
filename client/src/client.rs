//! [`Client`]: the entry point, a cheap-to-clone handle on the connections
//! (to routers, or to the directory and stores in direct mode), with the
//! operations of the `default` keyspace.
//!
//! The operations themselves live on [`Keyspace`]; the client's own methods
//! run them on the `default` keyspace, which is an empty keyspace name on
//! the wire.

use std::ops::RangeBounds;
use std::sync::Arc;

use crate::direct::Direct;
use crate::failover::Failover;
use crate::{CasOutcome, ClientBuilder, Keyspace, KvPair, ReadConsistency, Result};

/// How a client reaches the cluster.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Through routers (proxy mode).
    Routers(Failover),
    /// To the stores directly, regions found through the directory.
    Direct(Direct),
}

/// A client of a tessera cluster: through its routers (proxy mode,
/// [`ClientBuilder::routers`]) or straight to the leaders of its regions
/// (direct mode, [`ClientBuilder::directory`]).
///
/// Cheap to clone: clones share the connections (one per router, or one per
/// store and the directory's). Safe to use from many tasks at once.
///
/// ```no_run
/// use tessera_client::Client;
///
/// # #[tokio::main]
/// # async fn main() -> tessera_client::Result<()> {
/// let client = Client::builder()
///     .routers(["127.0.0.1:7000", "127.0.0.1:7001"])
///     .build()
///     .await?;
/// client.put("greeting", "hello").await?;
/// assert_eq!(client.get("greeting").await?, Some(b"hello".to_vec()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    transport: Arc<Transport>,
    /// How this handle's reads are served.
    consistency: ReadConsistency,
}

impl Client {
    /// Settings for a new client; see [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn from_transport(transport: Transport) -> Client {
        Client {
            transport: Arc::new(transport),
            consistency: ReadConsistency::Linearizable,
        }
    }

    /// A handle on the same connections whose reads (`get`, `batch_get`,
    /// scans, also through [`Client::keyspace`]) are served as
    /// `consistency` says: [`ReadConsistency::Linearizable`] by each
    /// region's leader (the default), [`ReadConsistency::Follower`] by any
    /// of its voters after a ReadIndex round trip to the leader — just as
    /// linearizable, spread over the replicas, one round trip slower —
    /// or [`ReadConsistency::Stale`] by any voter from its own state
    /// without that round trip, if the state is at most `max_age` old
    /// (bounded staleness: the read sees every write acknowledged at least
    /// `max_age` before it was served, and may miss later ones; a bound
    /// outside 1 ms to an hour is refused as `InvalidArgument`). Writes are
    /// unaffected.
    ///
    /// ```no_run
    /// # async fn example(client: tessera_client::Client) -> tessera_client::Result<()> {
    /// use std::time::Duration;
    /// use tessera_client::ReadConsistency;
    ///
    /// let followers = client.with_consistency(ReadConsistency::Follower);
    /// let value = followers.get("k").await?;
    /// let recent = client.with_consistency(ReadConsistency::Stale {
    ///     max_age: Duration::from_millis(500),
    /// });
    /// let maybe_older = recent.get("k").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_consistency(&self, consistency: ReadConsistency) -> Client {
        Client {
            transport: self.transport.clone(),
            consistency,
        }
    }

    /// How this handle's reads are served.
    pub fn consistency(&self) -> ReadConsistency {
        self.consistency
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Whether this client talks to the stores directly (built with
    /// [`ClientBuilder::directory`]) rather than through routers.
    pub fn is_direct(&self) -> bool {
        matches!(*self.transport, Transport::Direct(_))
    }

    /// A handle on a named keyspace (the name is checked on first use).
    ///
    /// ```no_run
    /// # async fn example(client: tessera_client::Client) -> tessera_client::Result<()> {
    /// let sessions = client.keyspace("sessions");
    /// sessions.put("s1", "alice").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn keyspace(&self, name: impl Into<String>) -> Keyspace {
        Keyspace::new(self.clone(), name.into(), self.consistency)
    }

    fn default_keyspace(&self) -> Keyspace {
        Keyspace::new(self.clone(), String::new(), self.consistency)
    }

    /// [`Keyspace::get`] on the `default` keyspace.
    ///
    /// ```no_run
    /// # async fn example(client: tessera_client::Client) -> tessera_client::Result<()> {
    /// let value: Option<Vec<u8>> = client.get("k").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.default_keyspace().get(key).await
    }

    /// [`Keyspace::put`] on the `default` keyspace.
    ///
    /// ```no_run
    /// # async fn example(client: tessera_client::Client) -> tessera_client::Result<()> {
    /// client.put("k", "v").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.default_keyspace().put(key, value).await
    }

    /// [`Keyspace::delete`] on the `default` keyspace.
    ///
    /// ```no_run
    /// # async fn example(client: tessera_client::Client) -> tessera_client::Result<()> {
    /// client.delete("k").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        self.default_keyspace().delete(key).await
    }

    /// [`Keyspace::batch_get`] on the `default` keyspace: the pairs of the
    /// keys that exist, in request order.
    ///
    /// ```no_run
    /// # async fn example(client: tessera_client::Client) -> tessera_client::Result<()> {
    /// let found = client.batch_get(["a", "b"]).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn batch_get<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<KvPair>> {
        self.default_keyspace().batch_get(keys).await
    }

    /// [`Keyspace::batch_put`] on the `default` keyspace.
    ///
    /// ```no_run
    /// # async fn example(client: tessera_client::Client) -> tessera_client::Result<()> {
    /// client.batch_put([("a", "1"), ("b", "2")]).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn batch_put<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        self.default_keyspace().batch_put(pairs).await
    }

    /// [`Keyspace::scan`] on the `default` keyspace: ascending, at most
    /// `limit` pairs (0: no limit).
    ///
    /// ```no_run
    /// # async fn example(client: tessera_client::Client) -> tessera_client::Result<()> {
    /// let page = client.scan("user/".."user0", 100).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn scan<K: AsRef<[u8]>>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        self.default_keyspace().scan(range, limit).await
    }

    /// [`Keyspace::scan_reverse`] on the `default` keyspace: descending, at
    /// most `limit` pairs (0: no limit).
    ///
    /// ```no_run
    /// # async fn example(client: tessera_client::Client) -> tessera_client::Result<()> {
    /// let newest = client.scan_reverse::<&[u8]>(.., 1).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn scan_reverse<K: AsRef<[u8]>>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        self.default_keyspace().scan_reverse(range, limit).await
    }

    /// [`Keyspace::compare_and_swap`] on the `default` keyspace.
    ///
    /// ```no_run
    /// # async fn example(client: tessera_client::Client) -> tessera_client::Result<()> {
    /// let outcome = client.compare_and_swap("n", Some(b"1"), Some(b"2")).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<CasOutcome> {
        self.default_keyspace()
            .compare_and_swap(key, expected, new)
            .await
    }

    /// [`Keyspace::delete_range`] on the `default` keyspace.
    ///
    /// ```no_run
    /// # async fn example(client: tessera_client::Client) -> tessera_client::Result<()> {
    /// client.delete_range("tmp/"..="tmp/~").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_range<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> Result<()> {
        self.default_keyspace().delete_range(range).await
    }
}
