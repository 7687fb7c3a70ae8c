//! The retry loop: one request about one key, sent to the leader of the
//! region that holds it until it succeeds, fails for good, may have applied
//! or runs out of time.
//!
//! Each attempt locates the region ([`crate::locate`]), sends the request to
//! the cached leader (or a voter in turn) and hands any failure to
//! [`crate::reaction::react`], then does what it says: correct the cache,
//! retry at once or after the backoff, or stop. An operation that is
//! [`SendPolicy::AtMostOnce`] stops with [`Error::Indeterminate`] the
//! moment it may have applied; it is never sent twice. A store that keeps
//! refusing over its serving quotas ends the loop with [`Error::Busy`]
//! after a few waits, so the client backs off instead of the router; one
//! whose region is low on disk space ends it with [`Error::NoSpace`] after
//! a few elections' waits (a low leader hands its leadership to a store
//! with space).

use std::future::Future;
use std::time::{Duration, Instant};

use tessera_proto::kvpb::Context;
use tessera_proto::metapb::Region;
use tessera_proto::KvResponse;

use crate::cache::CachedRegion;
use crate::locate::target;
use crate::metrics as m;
use crate::reaction::{
    react, CacheUpdate, Failure, Next, Reaction, SendPolicy, BUSY_REASON, MAX_NO_SPACE_RETRIES,
};
use crate::sent::sent;
use crate::stream::StoreClient;
use crate::{Error, Result, Router};

/// Retries in a row without waiting (following leader hints, fresh
/// epochs) before the router reloads the region from the directory.
const MAX_QUICK_RETRIES: usize = 3;

/// Every this many failed attempts the region is reloaded from the
/// directory, whatever the errors were.
const RELOAD_EVERY_ATTEMPTS: usize = 4;

/// Busy refusals in a row (a store over its serving quotas) after which the
/// router gives up and passes the refusal on (`Error::Busy`): waiting
/// longer inside the router would only hold its own memory and the
/// client's connection while the store sheds load.
const MAX_BUSY_RETRIES: u32 = 3;

/// How much longer than the base backoff to wait for an election.
const ELECTION_WAIT_FACTOR: u32 = 5;

/// What one attempt at one region gave.
pub(crate) enum Attempt<T> {
    Done(T),
    /// Try again: `wait` says when (None: at once).
    Retry {
        wait: Option<Duration>,
        reason: &'static str,
    },
    /// The request may have been applied.
    Unknown(String),
    /// Refused for disk space, not applied (`Next::NoSpace`).
    NoSpace(String),
    Fatal(Error),
}

impl Router {
    /// Applies `r` to the cache and turns it into what the loop does.
    fn apply<T>(&self, r: Reaction, c: &CachedRegion, store_id: u64) -> Attempt<T> {
        let region_id = c.region.id;
        match r.cache {
            CacheUpdate::Keep => {}
            CacheUpdate::SetLeader(l) => self.cache.set_leader(region_id, l),
            CacheUpdate::ClearLeader => self.cache.clear_leader(region_id),
            CacheUpdate::Invalidate => self.cache.invalidate(region_id),
            CacheUpdate::Replace(regions) => {
                for region in regions {
                    self.cache.insert(region, None);
                }
            }
            CacheUpdate::ForgetStore => {
                self.stores.forget(store_id);
                self.cache.clear_leader(region_id);
            }
        }
        let min = self.cfg.backoff.min;
        let wait = |w| Attempt::Retry {
            wait: Some(w),
            reason: r.reason,
        };
        match r.next {
            Next::Now => Attempt::Retry {
                wait: None,
                reason: r.reason,
            },
            Next::Backoff => wait(min),
            Next::BackoffAtLeast(d) => wait(d),
            Next::Election => wait(min * ELECTION_WAIT_FACTOR),
            Next::Indeterminate(m) => Attempt::Unknown(format!("store {store_id}: {m}")),
            Next::InvalidArgument(m) => Attempt::Fatal(Error::InvalidArgument(m)),
            Next::Refused(code, m) => Attempt::Fatal(Error::Refused {
                code,
                message: format!("store {store_id}: {m}"),
            }),
            Next::NoSpace(m) => Attempt::NoSpace(format!("store {store_id}: {m}")),
        }
    }

    /// Counts a request to `store_id` that timed out and logs it, so a
    /// store whose requests keep timing out (a stalled disk) is seen
    /// before clients give up.
    fn count_store_timeout(&self, store_id: u64, region_id: u64, status: &tonic::Status) {
        metrics::counter!(m::STORE_TIMEOUTS_TOTAL, "store_id" => store_id.to_string()).increment(1);
        tracing::warn!(
            store_id,
            region_id,
            "a request to the store timed out: {}",
            status.message()
        );
    }

    /// One attempt at region `c`.
    pub(crate) async fn attempt<R, F, Fut>(
        &self,
        c: &CachedRegion,
        attempt: usize,
        policy: SendPolicy,
        call: &mut F,
    ) -> Attempt<R>
    where
        R: KvResponse,
        F: FnMut(StoreClient, Context) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        // Follower reads take turns over the voters; nothing else touches
        // the shared counter.
        let spread = match policy {
            SendPolicy::AnyVoter => self
                .spread
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            _ => 0,
        };
        let Some(peer) = target(c, attempt, policy, spread) else {
            self.cache.invalidate(c.region.id);
            return Attempt::Retry {
                wait: Some(self.cfg.backoff.min),
                reason: "no_peer",
            };
        };
        let client = match self.stores.client(&self.dir, peer.store_id).await {
            Ok(cl) => cl,
            Err(e) => {
                tracing::debug!(error = %e, "no client for store");
                return Attempt::Retry {
                    wait: Some(self.cfg.backoff.min),
                    reason: "store_lookup",
                };
            }
        };
        let ctx = Context {
            region_id: c.region.id,
            region_epoch: c.region.region_epoch,
            peer: Some(peer),
            follower_read: policy == SendPolicy::AnyVoter,
            stale_max_age_ms: 0,
        };
        let reaction = match call(client, ctx).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                match resp.region_error() {
                    None => return Attempt::Done(resp),
                    Some(e) => react(Failure::Region(e), policy, &c.region, &peer),
                }
            }
            Err(status) => {
                if status.code() == tonic::Code::DeadlineExceeded {
                    self.count_store_timeout(peer.store_id, c.region.id, &status);
                }
                react(
                    Failure::Status(&status, sent(&status)),
                    policy,
                    &c.region,
                    &peer,
                )
            }
        };
        self.apply(reaction, c, peer.store_id)
    }

    /// Sends a request about `key` (encoded) until it succeeds, fails for
    /// good or the deadline passes. Returns the response and the region
    /// that served it.
    pub(crate) async fn route<R, F, Fut>(
        &self,
        op: &'static str,
        key: &[u8],
        policy: SendPolicy,
        mut call: F,
    ) -> Result<(R, Region)>
    where
        R: KvResponse,
        F: FnMut(StoreClient, Context) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let started = Instant::now();
        let deadline = started + self.cfg.timeout;
        let mut failures = 0u32;
        let mut attempts = 0usize;
        let mut quick = 0usize;
        let mut busy = 0u32;
        // The longest wait a busy store asked for in the current run.
        let mut asked = Duration::ZERO;
        let mut no_space = 0u32;
        let result = loop {
            if busy > MAX_BUSY_RETRIES {
                break Err(Error::Busy {
                    message: format!(
                        "{op}: a store over its serving quotas refused it {busy} times in a row; \
                         nothing was applied"
                    ),
                    retry_after: asked,
                });
            }
            if Instant::now() >= deadline {
                // Every attempt so far certainly failed (an unknown outcome
                // ends the loop at once): nothing was applied.
                break Err(Error::Unavailable(format!(
                    "{op} did not complete within {:?}",
                    self.cfg.timeout
                )));
            }
            let c = match self.locate(key).await {
                Ok(c) => c,
                // The directory refused the caller (its identity or role):
                // asking again will not change that.
                Err(e @ Error::Refused { .. }) => break Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "locating a region failed");
                    failures += 1;
                    self.cfg.backoff.wait(failures).await;
                    continue;
                }
            };
            match self.attempt(&c, attempts, policy, &mut call).await {
                Attempt::Done(r) => break Ok((r, c.region)),
                Attempt::Fatal(e) => break Err(e),
                Attempt::Unknown(u) => {
                    break Err(Error::Indeterminate(format!("{op}: {u}")));
                }
                Attempt::NoSpace(refusal) => {
                    no_space += 1;
                    if no_space > MAX_NO_SPACE_RETRIES {
                        break Err(Error::NoSpace(format!("{op}: {refusal}")));
                    }
                    metrics::counter!(m::RETRIES_TOTAL, "reason" => "no_space").increment(1);
                    failures += 1;
                    tokio::time::sleep(self.cfg.backoff.min * ELECTION_WAIT_FACTOR).await;
                }
                Attempt::Retry { wait, reason } => {
                    metrics::counter!(m::RETRIES_TOTAL, "reason" => reason).increment(1);
                    if reason == BUSY_REASON {
                        busy += 1;
                        asked = asked.max(wait.unwrap_or_default());
                    } else {
                        busy = 0;
                        asked = Duration::ZERO;
                    }
                    if attempts % RELOAD_EVERY_ATTEMPTS == RELOAD_EVERY_ATTEMPTS - 1 {
                        // However the failures look, the cached view may be
                        // what is wrong.
                        self.cache.invalidate(c.region.id);
                    }
                    tracing::debug!(op, region_id = c.region.id, reason, attempts, "retrying");
                    match wait {
                        Some(w) => {
                            quick = 0;
                            failures += 1;
                            tokio::time::sleep(w.max(self.cfg.backoff.delay(failures))).await;
                        }
                        // Hints can go round in circles (stale peers naming
                        // each other): after a few, ask the directory again.
                        None if quick >= MAX_QUICK_RETRIES => {
                            quick = 0;
                            self.cache.invalidate(c.region.id);
                            failures += 1;
                            self.cfg.backoff.wait(failures).await;
                        }
                        None => quick += 1,
                    }
                }
            }
            attempts += 1;
        };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(m::REQUESTS_TOTAL, "op" => op, "outcome" => outcome).increment(1);
        metrics::histogram!(m::REQUEST_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
        result
    }
}
