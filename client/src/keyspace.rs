//! [`Keyspace`]: the key-value operations, on one keyspace.
//!
//! Each operation checks what is cheap to check here (no empty keys) and
//! runs with its kind: reads (`get`, `batch_get`, `scan`, `scan_reverse`)
//! or writes (`put`, `delete`, `batch_put`, `delete_range`,
//! `compare_and_swap`), which are never sent twice once they may have
//! reached a router or a store. Through routers it builds its router
//! request once and hands it to the [failover](crate::failover) loop; in
//! direct mode it calls the embedded routing library ([`crate::direct`]).
//! Size limits and range checks are left to the routing library (the
//! router's, or the embedded one), which knows them.

use std::ops::RangeBounds;

use tessera_proto::routerpb;

use crate::client::Transport;
use crate::failover::{request, Op, OpKind};
use crate::range::WireRange;
use crate::{CasOutcome, Client, DeleteRangeStep, Error, KvPair, ReadConsistency, Result};

/// A handle on one keyspace. Cheap to clone; clones share the client's
/// connections.
///
/// Made by [`Client::keyspace`]. The name is not checked until the first
/// operation, which fails with [`Error::KeyspaceNotFound`] if the router
/// does not know it.
///
/// ```no_run
/// # async fn example() -> tessera_client::Result<()> {
/// use tessera_client::Client;
///
/// let client = Client::builder().endpoints(["127.0.0.1:7000"]).build().await?;
/// let users = client.keyspace("users");
/// users.put("alice", "admin").await?;
/// assert_eq!(users.get("alice").await?, Some(b"admin".to_vec()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Keyspace {
    client: Client,
    /// As sent on the wire; empty for the `default` keyspace.
    name: String,
    /// How its reads are served.
    consistency: ReadConsistency,
}

impl Keyspace {
    pub(crate) fn new(client: Client, name: String, consistency: ReadConsistency) -> Keyspace {
        Keyspace {
            client,
            name,
            consistency,
        }
    }

    /// The same keyspace, its reads served as `consistency` says (see
    /// [`Client::with_consistency`]).
    pub fn with_consistency(&self, consistency: ReadConsistency) -> Keyspace {
        Keyspace {
            consistency,
            ..self.clone()
        }
    }

    /// The keyspace's name, as given to [`Client::keyspace`].
    pub fn name(&self) -> &str {
        &self.name
    }

    fn op(&self, name: &'static str, kind: OpKind) -> Op<'_> {
        Op {
            name,
            keyspace: &self.name,
            kind,
        }
    }

    /// The keyspace as the routing library names it (None: `default`).
    fn routing_name(&self) -> Option<&str> {
        (!self.name.is_empty()).then_some(self.name.as_str())
    }

    /// The value of `key`, or `None` if it does not exist.
    ///
    /// ```no_run
    /// # async fn example(ks: tessera_client::Keyspace) -> tessera_client::Result<()> {
    /// if let Some(value) = ks.get("k").await? {
    ///     println!("{}", String::from_utf8_lossy(&value));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let key = checked_key(key.as_ref())?;
        let op = self.op("get", OpKind::Read);
        let failover = match self.client.transport() {
            Transport::Direct(d) => {
                let (ks, key, c) = (self.routing_name(), key.as_slice(), self.consistency);
                return d
                    .run(op, |r| async move { r.get_with(ks, key, c).await })
                    .await;
            }
            Transport::Routers(f) => f,
        };
        let (consistency, stale_max_age_ms) = self.consistency.to_wire();
        let message = routerpb::GetRequest {
            keyspace: self.name.clone(),
            key,
            consistency,
            stale_max_age_ms,
        };
        let answer = failover
            .call(op, |mut c, left| {
                let r = request(&message, left);
                async move { c.get(r).await }
            })
            .await?;
        Ok(answer.found.then_some(answer.value))
    }

    /// Sets `key` to `value`. Retried until it succeeds or the timeout
    /// passes; [`Error::Indeterminate`] if it may have been applied then.
    ///
    /// ```no_run
    /// # async fn example(ks: tessera_client::Keyspace) -> tessera_client::Result<()> {
    /// ks.put("k", "v").await?;
    /// ks.put(b"bytes", vec![0u8, 1, 2]).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let key = checked_key(key.as_ref())?;
        let op = self.op("put", OpKind::Write);
        let failover = match self.client.transport() {
            Transport::Direct(d) => {
                let (ks, key, value) = (self.routing_name(), key.as_slice(), value.as_ref());
                return d
                    .run(op, |r| async move { r.put(ks, key, value).await })
                    .await;
            }
            Transport::Routers(f) => f,
        };
        let message = routerpb::PutRequest {
            keyspace: self.name.clone(),
            key,
            value: value.as_ref().to_vec(),
        };
        failover
            .call(op, |mut c, left| {
                let r = request(&message, left);
                async move { c.put(r).await }
            })
            .await?;
        Ok(())
    }

    /// Deletes `key`; deleting a missing key succeeds.
    ///
    /// ```no_run
    /// # async fn example(ks: tessera_client::Keyspace) -> tessera_client::Result<()> {
    /// ks.delete("k").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        let key = checked_key(key.as_ref())?;
        let op = self.op("delete", OpKind::Write);
        let failover = match self.client.transport() {
            Transport::Direct(d) => {
                let (ks, key) = (self.routing_name(), key.as_slice());
                return d.run(op, |r| async move { r.delete(ks, key).await }).await;
            }
            Transport::Routers(f) => f,
        };
        let message = routerpb::DeleteRequest {
            keyspace: self.name.clone(),
            key,
        };
        failover
            .call(op, |mut c, left| {
                let r = request(&message, left);
                async move { c.delete(r).await }
            })
            .await?;
        Ok(())
    }

    /// The pairs of the `keys` that exist, each distinct key once, in the
    /// order of its first mention. No keys: no request. At most
    /// 10,000 keys (more: [`Error::InvalidArgument`]). The router answers
    /// in pages of bounded size; this follows them, one request each, so
    /// a batch of large values never has to fit one response.
    ///
    /// ```no_run
    /// # async fn example(ks: tessera_client::Keyspace) -> tessera_client::Result<()> {
    /// for pair in ks.batch_get(["a", "b", "c"]).await? {
    ///     println!("{:?} = {:?}", pair.key, pair.value);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn batch_get<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<KvPair>> {
        let keys = keys
            .into_iter()
            .map(|k| checked_key(k.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut from = 0;
        while from < keys.len() {
            let (pairs, resume_index) = self.batch_get_page(&keys[from..]).await?;
            // A key answered on an earlier page may be named again later.
            for p in pairs {
                if seen.insert(p.key.clone()) {
                    out.push(p);
                }
            }
            match resume_index {
                0 => break,
                r => from += r,
            }
        }
        Ok(out)
    }

    /// One page of a batch get, and how many of `keys` it covers (0: all).
    async fn batch_get_page(&self, keys: &[Vec<u8>]) -> Result<(Vec<KvPair>, usize)> {
        let op = self.op("batch_get", OpKind::Read);
        let failover = match self.client.transport() {
            Transport::Direct(d) => {
                let (ks, c) = (self.routing_name(), self.consistency);
                let page = d
                    .run(op, |r| async move { r.batch_get_with(ks, keys, c).await })
                    .await?;
                return Ok((pairs(page.pairs), page.resume_index));
            }
            Transport::Routers(f) => f,
        };
        let (consistency, stale_max_age_ms) = self.consistency.to_wire();
        let message = routerpb::BatchGetRequest {
            keyspace: self.name.clone(),
            keys: keys.to_vec(),
            consistency,
            stale_max_age_ms,
        };
        let answer = failover
            .call(op, |mut c, left| {
                let r = request(&message, left);
                async move { c.batch_get(r).await }
            })
            .await?;
        let pairs = answer.pairs.into_iter().map(KvPair::from).collect();
        Ok((pairs, answer.resume_index as usize))
    }

    /// Sets every key to its value. The router may apply a batch spanning
    /// several regions region by region, so it is not atomic; it is retried
    /// as a whole like [`put`](Self::put). No pairs: no request.
    ///
    /// ```no_run
    /// # async fn example(ks: tessera_client::Keyspace) -> tessera_client::Result<()> {
    /// ks.batch_put([("a", "1"), ("b", "2")]).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn batch_put<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| Ok((checked_key(k.as_ref())?, v.as_ref().to_vec())))
            .collect::<Result<Vec<_>>>()?;
        if pairs.is_empty() {
            return Ok(());
        }
        let op = self.op("batch_put", OpKind::Write);
        let failover = match self.client.transport() {
            Transport::Direct(d) => {
                let (ks, pairs) = (self.routing_name(), pairs.as_slice());
                return d
                    .run(op, |r| async move { r.batch_put(ks, pairs).await })
                    .await;
            }
            Transport::Routers(f) => f,
        };
        let message = routerpb::BatchPutRequest {
            keyspace: self.name.clone(),
            pairs: pairs
                .into_iter()
                .map(|(key, value)| routerpb::KvPair { key, value })
                .collect(),
        };
        failover
            .call(op, |mut c, left| {
                let r = request(&message, left);
                async move { c.batch_put(r).await }
            })
            .await?;
        Ok(())
    }

    /// The pairs in `range`, in ascending key order, at most `limit` of them
    /// (0: no limit). The router answers in pages of bounded size; this
    /// follows them and gathers the result, so with `limit` 0 it holds
    /// the whole range: use [`scan_stream`](Self::scan_stream) for a range
    /// that may not fit in memory. Each page is linearizable on its own,
    /// the result as a whole is not one snapshot.
    ///
    /// With `..` the key type cannot be inferred; name it.
    ///
    /// ```no_run
    /// # async fn example(ks: tessera_client::Keyspace) -> tessera_client::Result<()> {
    /// let some = ks.scan("a".."m", 10).await?;
    /// let all = ks.scan::<&[u8]>(.., 0).await?;
    /// let tail = ks.scan(b"k".to_vec().., 0).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn scan<K: AsRef<[u8]>>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        self.scan_wire("scan", WireRange::from_bounds(&range), limit, false)
            .await
    }

    /// The pairs in `range`, in descending key order, at most `limit` of
    /// them (0: no limit).
    ///
    /// ```no_run
    /// # async fn example(ks: tessera_client::Keyspace) -> tessera_client::Result<()> {
    /// // The last 5 keys up to and including "m".
    /// let last = ks.scan_reverse(..="m", 5).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn scan_reverse<K: AsRef<[u8]>>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        self.scan_wire("scan_reverse", WireRange::from_bounds(&range), limit, true)
            .await
    }

    /// Every pair of `range` in ascending key order, read a page at a time
    /// as the stream is polled: however large the range, this side holds
    /// one page (the router's response budget, 4 MiB by default). Each
    /// page is linearizable on its own; the scan as a whole is not one
    /// snapshot (a write between two pages shows in the later one).
    ///
    /// ```no_run
    /// # async fn example(ks: tessera_client::Keyspace) -> tessera_client::Result<()> {
    /// use futures::TryStreamExt as _;
    ///
    /// let mut pairs = std::pin::pin!(ks.scan_stream::<&[u8]>(..));
    /// while let Some(pair) = pairs.try_next().await? {
    ///     println!("{:?}", pair.key);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn scan_stream<K: AsRef<[u8]>>(
        &self,
        range: impl RangeBounds<K>,
    ) -> impl futures::Stream<Item = Result<KvPair>> + Send + '_ {
        use futures::{StreamExt as _, TryStreamExt as _};
        let range = WireRange::from_bounds(&range);
        // The state: where the next page starts; `None` once the last
        // page was read.
        let first = Some(None::<Vec<u8>>);
        futures::stream::try_unfold(first, move |state| {
            let range = range.clone();
            async move {
                let Some(resume) = state else {
                    return Ok(None);
                };
                let (pairs, next) = self.scan_page("scan", &range, 0, false, resume).await?;
                Ok(Some((pairs, next.map(Some))))
            }
        })
        .map_ok(|pairs| futures::stream::iter(pairs.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    /// A scan of up to `limit` pairs (0: all), following the router's pages.
    async fn scan_wire(
        &self,
        name: &'static str,
        range: WireRange,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<KvPair>> {
        let mut out = Vec::new();
        let mut resume = None;
        loop {
            let left = if limit == 0 {
                0
            } else {
                limit.saturating_sub(out.len() as u32)
            };
            let (pairs, next) = self.scan_page(name, &range, left, reverse, resume).await?;
            out.extend(pairs);
            match next {
                Some(r) if limit == 0 || (out.len() as u32) < limit => resume = Some(r),
                _ => break,
            }
        }
        if limit != 0 {
            out.truncate(limit as usize);
        }
        Ok(out)
    }

    /// One page of a scan, and where the next one starts.
    async fn scan_page(
        &self,
        name: &'static str,
        range: &WireRange,
        limit: u32,
        reverse: bool,
        resume: Option<Vec<u8>>,
    ) -> Result<(Vec<KvPair>, Option<Vec<u8>>)> {
        let op = self.op(name, OpKind::Read);
        let failover = match self.client.transport() {
            Transport::Direct(d) => {
                let ks = self.routing_name();
                let scan = tessera_routing::Scan {
                    start: range.start.as_deref(),
                    end: range.end.as_deref(),
                    limit: limit as usize,
                    reverse,
                    resume: resume.as_deref(),
                    consistency: self.consistency,
                };
                let page = d.run(op, |r| async move { r.scan(ks, scan).await }).await?;
                return Ok((pairs(page.pairs), page.resume));
            }
            Transport::Routers(f) => f,
        };
        let (consistency, stale_max_age_ms) = self.consistency.to_wire();
        let message = routerpb::ScanRequest {
            keyspace: self.name.clone(),
            start: range.start.clone(),
            end: range.end.clone(),
            limit,
            reverse,
            resume,
            consistency,
            stale_max_age_ms,
        };
        let answer = failover
            .call(op, |mut c, left| {
                let r = request(&message, left);
                async move { c.scan(r).await }
            })
            .await?;
        let pairs = answer.pairs.into_iter().map(KvPair::from).collect();
        Ok((pairs, answer.resume))
    }

    /// Sets `key` to `new` (deletes it when `new` is `None`) if its value is
    /// `expected` (it is absent when `expected` is `None`).
    ///
    /// Like every write, it is retried only when it certainly did not reach
    /// a router; otherwise a lost answer is reported as
    /// [`Error::Indeterminate`] at once.
    ///
    /// ```no_run
    /// # async fn example(ks: tessera_client::Keyspace) -> tessera_client::Result<()> {
    /// // Create "lock" only if it does not exist.
    /// let taken = ks.compare_and_swap("lock", None, Some(b"me")).await?;
    /// if !taken.succeeded {
    ///     println!("held by {:?}", taken.previous);
    /// }
    /// // Release it only if we still hold it.
    /// ks.compare_and_swap("lock", Some(b"me"), None).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<CasOutcome> {
        let key = checked_key(key.as_ref())?;
        let op = self.op("compare_and_swap", OpKind::Write);
        let failover = match self.client.transport() {
            Transport::Direct(d) => {
                let (ks, key) = (self.routing_name(), key.as_slice());
                let outcome = d
                    .run(op, |r| async move {
                        r.compare_and_swap(ks, key, expected, new).await
                    })
                    .await?;
                return Ok(CasOutcome {
                    succeeded: outcome.succeeded,
                    previous: outcome.previous,
                });
            }
            Transport::Routers(f) => f,
        };
        let message = routerpb::CompareAndSwapRequest {
            keyspace: self.name.clone(),
            key,
            expected: expected.map(<[u8]>::to_vec),
            new_value: new.map(<[u8]>::to_vec),
        };
        let answer = failover
            .call(op, |mut c, left| {
                let r = request(&message, left);
                async move { c.compare_and_swap(r).await }
            })
            .await?;
        Ok(CasOutcome {
            succeeded: answer.succeeded,
            previous: answer.previous,
        })
    }

    /// Deletes every key in `range`. Not atomic across regions; retried as a
    /// whole like [`put`](Self::put).
    ///
    /// ```no_run
    /// # async fn example(ks: tessera_client::Keyspace) -> tessera_client::Result<()> {
    /// ks.delete_range("tmp/".."tmp0").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_range<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> Result<()> {
        self.send_delete_range(range, None, 0).await.map(|_| ())
    }

    /// One DeleteRange request (`max_regions` 0: every region), retried
    /// like a write.
    async fn send_delete_range<K: AsRef<[u8]>>(
        &self,
        range: impl RangeBounds<K>,
        resume: Option<&[u8]>,
        max_regions: u32,
    ) -> Result<DeleteRangeStep> {
        let range = WireRange::from_bounds(&range);
        let op = self.op("delete_range", OpKind::Write);
        let failover = match self.client.transport() {
            Transport::Direct(d) => {
                let ks = self.routing_name();
                let (start, end) = (range.start.as_deref(), range.end.as_deref());
                let done = d
                    .run(op, |r| async move {
                        r.delete_range(ks, start, end, resume, max_regions).await
                    })
                    .await?;
                return Ok(DeleteRangeStep {
                    regions: done.regions,
                    resume: done.resume,
                });
            }
            Transport::Routers(f) => f,
        };
        let message = routerpb::DeleteRangeRequest {
            keyspace: self.name.clone(),
            start: range.start,
            end: range.end,
            resume: resume.map(<[u8]>::to_vec),
            max_regions,
        };
        let answer = failover
            .call(op, |mut c, left| {
                let r = request(&message, left);
                async move { c.delete_range(r).await }
            })
            .await?;
        Ok(DeleteRangeStep {
            regions: answer.regions,
            resume: answer.resume,
        })
    }

    /// Deletes the part of `range` in the next `max_regions` regions (at
    /// least 1), starting where `resume` (the previous step's) says, and
    /// tells where the rest begins — for a large range, with progress to
    /// show and a point to resume from after a failure: deleting again
    /// from an earlier point is safe (it deletes only keys written since).
    /// Each step is retried like [`put`](Self::put); a failed step that
    /// may have applied is [`Error::Indeterminate`](crate::Error::Indeterminate)
    /// for its regions only.
    ///
    /// ```no_run
    /// # async fn example(ks: tessera_client::Keyspace) -> tessera_client::Result<()> {
    /// let mut resume = None;
    /// loop {
    ///     let step = ks.delete_range_step("logs/".."logs0", resume.as_deref(), 1).await?;
    ///     match step.resume {
    ///         Some(r) => resume = Some(r),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_range_step<K: AsRef<[u8]>>(
        &self,
        range: impl RangeBounds<K>,
        resume: Option<&[u8]>,
        max_regions: u32,
    ) -> Result<DeleteRangeStep> {
        self.send_delete_range(range, resume, max_regions.max(1))
            .await
    }
}

/// The routing library's pairs as the SDK's.
fn pairs(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<KvPair> {
    pairs
        .into_iter()
        .map(|(key, value)| KvPair { key, value })
        .collect()
}

/// `key` as sent, or [`Error::InvalidArgument`] when it is empty.
fn checked_key(key: &[u8]) -> Result<Vec<u8>> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("keys must not be empty".into()));
    }
    Ok(key.to_vec())
}
