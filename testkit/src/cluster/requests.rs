//! The harness's client: requests about one key sent to the leader of the
//! region that holds it, following leader hints and epoch changes the way
//! a router does — with the router's own reactions
//! (`tessera_routing::reaction::react`), so there is no third retry policy
//! — plus scans and range deletes region by region, and single-shot
//! requests to one chosen store.

use std::future::Future;
use std::time::{Duration, Instant};

use tessera_proto::kvpb::*;
use tessera_proto::metapb::Region;
use tessera_proto::region as region_util;
use tessera_proto::region::{epoch, supersedes, went_back};
use tessera_proto::KvResponse;
use tessera_routing::reaction::{react, CacheUpdate, Failure, Next, SendPolicy};
use tessera_routing::sent::Sent;
use tessera_store::{Error, Result};

use super::Cluster;
use crate::KvEndpoint;

/// The pause before a retry that has to wait (the harness runs fast ticks).
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Retries in a row without a pause (following leader hints and fresh
/// epochs) before the client pauses anyway.
const MAX_QUICK_RETRIES: usize = 3;

impl Cluster {
    fn region_for_key(&self, key: &[u8]) -> Option<Region> {
        self.regions
            .lock()
            .values()
            .find(|r| region_util::contains_key(r, key))
            .cloned()
    }

    /// The newest version of the region holding `key` any running store
    /// reports; learned for later requests.
    async fn region_from_stores(&self, key: &[u8]) -> Option<Region> {
        let version = |r: &Region| r.region_epoch.unwrap_or_default().version;
        let mut best: Option<Region> = None;
        for id in self.store_ids() {
            let Some(node) = self.node(id) else { continue };
            let Ok(infos) = node.regions().await else {
                continue;
            };
            for info in infos {
                let r = info.region;
                if region_util::contains_key(&r, key)
                    && best.as_ref().is_none_or(|b| version(&r) > version(b))
                {
                    best = Some(r);
                }
            }
        }
        self.learn_region(best.clone()?);
        best
    }

    fn context_for(&self, region: &Region, store_id: u64) -> Option<Context> {
        let peer = *region_util::find_peer_on_store(region, store_id)?;
        Some(Context {
            region_id: region.id,
            region_epoch: region.region_epoch,
            peer: Some(peer),
            follower_read: false,
            stale_max_age_ms: 0,
        })
    }

    /// Sends a request for the region holding `key` until it succeeds, fails
    /// for good or the client deadline passes. Each failure goes through the
    /// router's own decision table ([`react`]): leader hints and epoch
    /// changes correct what the client believes, and a request that is
    /// [`SendPolicy::AtMostOnce`] stops as indeterminate the moment it may
    /// have applied instead of being sent again.
    pub async fn request<R, F, Fut>(&self, key: &[u8], policy: SendPolicy, mut call: F) -> Result<R>
    where
        R: KvResponse,
        F: FnMut(KvEndpoint, Context) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let deadline = Instant::now() + self.opts.client_deadline;
        let mut attempt = 0usize;
        let mut quick = 0usize;
        let mut wait = None;
        let mut last_err = Error::Timeout(self.opts.client_deadline);
        while Instant::now() < deadline {
            attempt += 1;
            if let Some(w) = wait.take() {
                tokio::time::sleep(w).await;
            }
            let region = match self.region_for_key(key) {
                Some(r) => r,
                // An EpochNotMatch names the regions of the last split only;
                // after several splits, ask the stores (as a router asks the
                // directory).
                None => match self.region_from_stores(key).await {
                    Some(r) => r,
                    None => return Err(Error::InvalidArgument("no region holds the key".into())),
                },
            };
            let stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
            let hint = self.leader_hint.lock().get(&region.id).copied();
            let store = match hint {
                Some(s) if stores.contains(&s) => s,
                _ => stores[attempt % stores.len()],
            };
            let Some(endpoint) = self.endpoint(store) else {
                // A stopped store: try the next one.
                self.leader_hint
                    .lock()
                    .insert(region.id, stores[(attempt + 1) % stores.len()]);
                wait = Some(RETRY_PAUSE);
                continue;
            };
            let ctx = self.context_for(&region, store).expect("peer on its store");
            let addressed = ctx.peer.expect("context names its peer");
            let (reaction, err) = match call(endpoint, ctx).await {
                Ok(resp) => {
                    let Some(e) = resp.region_error() else {
                        self.leader_hint.lock().insert(region.id, store);
                        return Ok(resp);
                    };
                    let e = e.clone();
                    let r = react(Failure::Region(&e), policy, &region, &addressed);
                    (r, Error::region(e))
                }
                // A refusal the API returned instead of carrying it.
                Err(Error::Region(e)) => {
                    let r = react(Failure::Region(&e), policy, &region, &addressed);
                    (r, Error::Region(e))
                }
                Err(e) => {
                    // The harness reaches a store in process or over gRPC;
                    // either way the request may have arrived.
                    let status = tonic::Status::from(&e);
                    let r = react(
                        Failure::Status(&status, Sent::Maybe),
                        policy,
                        &region,
                        &addressed,
                    );
                    (r, e)
                }
            };
            self.correct(key, &region, reaction.cache).await;
            last_err = err;
            wait = match reaction.next {
                Next::Now if quick < MAX_QUICK_RETRIES => {
                    quick += 1;
                    None
                }
                // A test harness keeps trying until its deadline; the
                // refusal is the last error if space never returns.
                Next::Now | Next::Backoff | Next::Election | Next::NoSpace(_) => Some(RETRY_PAUSE),
                Next::BackoffAtLeast(d) => Some(d.max(RETRY_PAUSE)),
                Next::Indeterminate(m) => return Err(Error::Indeterminate(m)),
                Next::InvalidArgument(m) => return Err(Error::InvalidArgument(m)),
                // The access check refused the caller: the error as it came.
                Next::Refused(..) => return Err(last_err),
            };
            if wait.is_some() {
                quick = 0;
            }
        }
        Err(last_err)
    }

    /// Corrects what the client believes about `region` as `update` says.
    async fn correct(&self, key: &[u8], region: &Region, update: CacheUpdate) {
        match update {
            CacheUpdate::Keep => {}
            CacheUpdate::SetLeader(peer) => {
                self.leader_hint.lock().insert(region.id, peer.store_id);
            }
            CacheUpdate::ClearLeader | CacheUpdate::ForgetStore => {
                self.leader_hint.lock().remove(&region.id);
            }
            CacheUpdate::Replace(regions) => {
                for r in regions {
                    self.learn_region(r);
                }
            }
            CacheUpdate::Invalidate => {
                // Reload: the newest region the stores report for the key
                // replaces the cached one (kept if none reports it now).
                self.leader_hint.lock().remove(&region.id);
                let _ = self.region_from_stores(key).await;
            }
        }
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.request(key, SendPolicy::Resendable, |kv, ctx| {
            let req = PutRequest {
                context: Some(ctx),
                key: key.to_vec(),
                value: value.to_vec(),
            };
            async move { kv.put(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let resp = self
            .request(key, SendPolicy::Resendable, |kv, ctx| {
                let req = GetRequest {
                    context: Some(ctx),
                    key: key.to_vec(),
                };
                async move { kv.get(req).await }
            })
            .await?;
        Ok(resp.found.then_some(resp.value))
    }

    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        self.request(key, SendPolicy::Resendable, |kv, ctx| {
            let req = DeleteRequest {
                context: Some(ctx),
                key: key.to_vec(),
            };
            async move { kv.delete(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Compare-and-swap; an unknown outcome is returned as an error, never
    /// retried.
    pub async fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<CompareAndSwapResponse> {
        self.request(key, SendPolicy::AtMostOnce, |kv, ctx| {
            let req = CompareAndSwapRequest {
                context: Some(ctx),
                key: key.to_vec(),
                expect_absent: expected.is_none(),
                expected_value: expected.unwrap_or_default().to_vec(),
                new_value: new.to_vec(),
                delete: false,
            };
            async move { kv.compare_and_swap(req).await }
        })
        .await
    }

    /// Deletes `[start, end)` in every region it touches, region by region.
    pub async fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        let mut cursor = start.to_vec();
        loop {
            let key = cursor.clone();
            let mut served = None;
            self.request(&key, SendPolicy::Resendable, |kv, ctx| {
                served = self
                    .regions
                    .lock()
                    .get(&ctx.region_id)
                    .map(|r| r.end_key.clone());
                let req = DeleteRangeRequest {
                    context: Some(ctx),
                    start_key: key.clone(),
                    end_key: end.to_vec(),
                };
                async move { kv.delete_range(req).await }
            })
            .await?;
            let region_end = served.unwrap_or_default();
            if region_end.is_empty() || (!end.is_empty() && region_end.as_slice() >= end) {
                return Ok(());
            }
            cursor = region_end;
        }
    }

    /// Every pair in `[start, end)`, across regions, in key order: region by
    /// region and page by page, following epoch changes the way a router
    /// does.
    pub async fn scan(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        let mut cursor = start.to_vec();
        loop {
            let key = cursor.clone();
            let mut served = None;
            let resp = self
                .request(&key, SendPolicy::Resendable, |kv, ctx| {
                    // The range that goes with the epoch being sent.
                    served = self
                        .regions
                        .lock()
                        .get(&ctx.region_id)
                        .map(|r| r.end_key.clone());
                    let req = ScanRequest {
                        context: Some(ctx),
                        start_key: key.clone(),
                        end_key: end.to_vec(),
                        limit: 0,
                        reverse: false,
                        max_bytes: 0,
                    };
                    async move { kv.scan(req).await }
                })
                .await?;
            out.extend(resp.pairs.into_iter().map(|p| (p.key, p.value)));
            if !resp.resume_key.is_empty() {
                // The store's page was full: the same region goes on.
                cursor = resp.resume_key;
                continue;
            }
            let region_end = served.unwrap_or_default();
            if region_end.is_empty() || (!end.is_empty() && region_end.as_slice() >= end) {
                return Ok(out);
            }
            cursor = region_end;
        }
    }

    pub async fn must_put(&self, key: &[u8], value: &[u8]) {
        if let Err(e) = self.put(key, value).await {
            panic!("put {:?} failed: {e}", tessera_proto::escape(key));
        }
    }

    pub async fn must_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.get(key).await {
            Ok(v) => v,
            Err(e) => panic!("get {:?} failed: {e}", tessera_proto::escape(key)),
        }
    }

    pub async fn must_delete(&self, key: &[u8]) {
        if let Err(e) = self.delete(key).await {
            panic!("delete {:?} failed: {e}", tessera_proto::escape(key));
        }
    }

    /// The endpoint of `store_id` and the context of its peer of the region
    /// holding `key`, for a request sent there once.
    fn single_shot(&self, store_id: u64, key: &[u8]) -> Result<(KvEndpoint, Context)> {
        let region = self
            .region_for_key(key)
            .ok_or_else(|| Error::InvalidArgument("no region".into()))?;
        let ctx = self
            .context_for(&region, store_id)
            .ok_or_else(|| Error::InvalidArgument(format!("no peer on store {store_id}")))?;
        let endpoint = self.endpoint(store_id).ok_or(Error::Shutdown)?;
        Ok((endpoint, ctx))
    }

    /// Reads `key` from exactly `store_id`, once, without retries.
    pub async fn get_from(&self, store_id: u64, key: &[u8]) -> Result<GetResponse> {
        let (endpoint, ctx) = self.single_shot(store_id, key)?;
        endpoint
            .get(GetRequest {
                context: Some(ctx),
                key: key.to_vec(),
            })
            .await
    }

    /// Reads `key` from exactly `store_id` as a stale read (any replica,
    /// from its own state if at most `max_age` old), once, without retries.
    pub async fn stale_get_from(
        &self,
        store_id: u64,
        key: &[u8],
        max_age: Duration,
    ) -> Result<GetResponse> {
        let (endpoint, mut ctx) = self.single_shot(store_id, key)?;
        ctx.follower_read = true;
        ctx.stale_max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        endpoint
            .get(GetRequest {
                context: Some(ctx),
                key: key.to_vec(),
            })
            .await
    }

    /// Writes `key` through exactly `store_id`, once, without retries.
    pub async fn put_to(&self, store_id: u64, key: &[u8], value: &[u8]) -> Result<PutResponse> {
        let (endpoint, ctx) = self.single_shot(store_id, key)?;
        endpoint
            .put(PutRequest {
                context: Some(ctx),
                key: key.to_vec(),
                value: value.to_vec(),
            })
            .await
    }

    /// Records what the client should believe about `region`, unless it
    /// knows better already: the same region at an epoch that went back, or
    /// an overlapping region from a later split (a reload that raced with a
    /// split must not bring the old range back; the epoch rules are
    /// `tessera_proto::region`'s).
    pub fn learn_region(&self, region: Region) {
        let mut regions = self.regions.lock();
        if let Some(known) = regions.get(&region.id) {
            if went_back(&epoch(&region), &epoch(known)) {
                return;
            }
        }
        if regions.values().any(|k| {
            k.id != region.id && region_util::overlaps(k, &region) && supersedes(k, &region)
        }) {
            return;
        }
        regions.retain(|_, known| known.id == region.id || !region_util::overlaps(known, &region));
        regions.insert(region.id, region);
    }

    /// The region that holds `key`, as the client believes.
    pub fn region_of(&self, key: &[u8]) -> Option<Region> {
        self.region_for_key(key)
    }
}
