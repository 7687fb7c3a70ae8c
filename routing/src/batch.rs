//! Operations on many keys: the keys are grouped by region, the groups
//! sent in parallel (a bounded number at a time), and the parts that failed
//! regrouped (their regions may have split or moved) and sent again until
//! the deadline. A BatchGet answers in pages, like a scan: each store
//! answers a part up to its response budget, and the router answers the
//! longest run of the request's keys that it holds, up to its own.
//!
//! A batch write is at most once per part: a part that may have applied
//! ends the batch as indeterminate. So does any failure once another part
//! applied — the deadline, a part the store refused as bad input, a lost
//! directory — because the batch as a whole is then neither done nor
//! untouched, and `INVALID_ARGUMENT` promises that nothing was written.

use std::collections::{HashMap, HashSet};

use futures::StreamExt as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tessera_proto::kvpb::*;
use tessera_proto::KvResponse;

use crate::metrics as m;
use crate::reaction::{SendPolicy, MAX_NO_SPACE_RETRIES};
use crate::route::Attempt;
use crate::stream::StoreClient;
use crate::{Error, ReadConsistency, Result, Router};

/// How many parts (one per region) of a batch are sent at once. Bounds the
/// answers a BatchGet holds at a time to this many store pages.
const MAX_PARTS_IN_FLIGHT: usize = 16;

/// One page of a BatchGet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchGetPage {
    /// The keys that exist (user keys), each once, in the order of their
    /// first mention.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// 0: every key was answered; otherwise the index in the request's keys
    /// of the first key not answered (ask again from there).
    pub resume_index: usize,
}

/// The outcome of a batch that failed with `e`: a write of which some part
/// applied is indeterminate whatever the failure was.
fn partial(op: &str, policy: SendPolicy, some_applied: bool, e: Error) -> Error {
    match e {
        Error::Indeterminate(_) => e,
        e if policy == SendPolicy::AtMostOnce && some_applied => Error::Indeterminate(format!(
            "{op}: some regions applied their part, then another failed: {e}"
        )),
        e => e,
    }
}

impl Router {
    /// Runs a batch: keys split per region, regions in parallel, failed
    /// parts regrouped and retried until the deadline.
    async fn batch<R, F, Fut>(
        &self,
        op: &'static str,
        keys: Vec<Vec<u8>>,
        policy: SendPolicy,
        call: F,
    ) -> Result<Vec<(R, Vec<Vec<u8>>)>>
    where
        R: KvResponse + Send,
        F: Fn(StoreClient, Context, Vec<Vec<u8>>) -> Fut + Clone,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let started = Instant::now();
        let deadline = started + self.cfg.timeout;
        let mut pending = keys;
        let mut done = vec![];
        let mut round = 0usize;
        while !pending.is_empty() {
            if Instant::now() >= deadline {
                let e = Error::Unavailable(format!(
                    "{op} did not complete within {:?}",
                    self.cfg.timeout
                ));
                return Err(partial(op, policy, !done.is_empty(), e));
            }
            let groups = match self.group(std::mem::take(&mut pending)).await {
                Ok(groups) => groups,
                Err(e) => return Err(partial(op, policy, !done.is_empty(), e)),
            };
            let attempts = groups.into_iter().map(|(c, ks)| {
                let call = call.clone();
                async move {
                    let mut f = |client, ctx| call(client, ctx, ks.clone());
                    let outcome = self.attempt(&c, round, policy, &mut f).await;
                    (outcome, ks)
                }
            });
            let mut waits = false;
            let mut failed = None;
            // At most a few parts in flight: each answer may be a full page.
            let outcomes: Vec<_> = futures::stream::iter(attempts)
                .buffer_unordered(MAX_PARTS_IN_FLIGHT)
                .collect()
                .await;
            for (outcome, ks) in outcomes {
                match outcome {
                    Attempt::Done(r) => done.push((r, ks)),
                    Attempt::Fatal(e) => {
                        failed.get_or_insert(e);
                    }
                    Attempt::Unknown(u) => {
                        failed = Some(Error::Indeterminate(format!("{op}: {u}")));
                    }
                    Attempt::NoSpace(refusal) if round as u32 >= MAX_NO_SPACE_RETRIES => {
                        failed.get_or_insert(Error::NoSpace(format!("{op}: {refusal}")));
                    }
                    Attempt::NoSpace(_) => {
                        metrics::counter!(m::RETRIES_TOTAL, "reason" => "no_space").increment(1);
                        waits = true;
                        pending.extend(ks);
                    }
                    Attempt::Retry { wait, reason } => {
                        metrics::counter!(m::RETRIES_TOTAL, "reason" => reason).increment(1);
                        waits |= wait.is_some();
                        pending.extend(ks);
                    }
                }
            }
            // Parts run in parallel: judge the failure once every part of
            // the round is known, so a part that applied beside it counts.
            if let Some(e) = failed {
                return Err(partial(op, policy, !done.is_empty(), e));
            }
            round += 1;
            if waits {
                self.cfg.backoff.wait(round as u32).await;
            }
        }
        metrics::counter!(m::REQUESTS_TOTAL, "op" => op, "outcome" => "ok").increment(1);
        metrics::histogram!(m::REQUEST_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
        Ok(done)
    }

    /// One page of the values of the keys that exist: each distinct key
    /// once, in the order of its first mention (a key named twice is read
    /// once). The page holds the longest run of the keys, in that order,
    /// that the stores answered and the router's response budget admits;
    /// `resume_index` says where the rest begins.
    pub async fn batch_get(
        &self,
        keyspace: Option<&str>,
        keys: &[Vec<u8>],
    ) -> Result<BatchGetPage> {
        self.batch_get_with(keyspace, keys, ReadConsistency::Linearizable)
            .await
    }

    /// [`Router::batch_get`], each region's part read as `consistency`
    /// says.
    pub async fn batch_get_with(
        &self,
        keyspace: Option<&str>,
        keys: &[Vec<u8>],
        consistency: ReadConsistency,
    ) -> Result<BatchGetPage> {
        tessera_proto::limits::validate_batch_len(keys.len()).map_err(Error::InvalidArgument)?;
        let consistency = consistency.validate()?;
        let ks = self.keyspace(keyspace).await?;
        // The distinct keys, and where each was first named.
        let mut seen = HashSet::with_capacity(keys.len());
        let mut encoded = Vec::with_capacity(keys.len());
        let mut first_at = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let e = Self::encode_key(&ks, k)?;
            if seen.insert(e.clone()) {
                encoded.push(e);
                first_at.push(i);
            }
        }
        drop(seen);
        let parts = self
            .batch(
                "batch_get",
                encoded.clone(),
                consistency.policy(),
                |mut c, ctx, keys| async move {
                    c.batch_get(BatchGetRequest {
                        context: Some(consistency.stamp(ctx)),
                        keys,
                    })
                    .await
                },
            )
            .await?;
        // Each key a store answered: its value, or None for absent. A part
        // whose store page filled up answered only its first keys.
        let mut answered: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        for (resp, part) in parts {
            let covered = match resp.resume_index as usize {
                0 => part.len(),
                r => r.min(part.len()),
            };
            let mut found: HashMap<Vec<u8>, Vec<u8>> =
                resp.pairs.into_iter().map(|p| (p.key, p.value)).collect();
            for k in part.into_iter().take(covered) {
                let v = found.remove(&k);
                answered.insert(k, v);
            }
        }
        let mut page = tessera_proto::limits::PageBudget::new(self.cfg.max_response_bytes);
        let mut out = BatchGetPage::default();
        for (j, k) in encoded.into_iter().enumerate() {
            match answered.remove(&k) {
                None => {
                    out.resume_index = first_at[j];
                    break;
                }
                Some(None) => {}
                Some(Some(v)) => {
                    if !page.admit(k.len() + v.len()) {
                        out.resume_index = first_at[j];
                        break;
                    }
                    out.pairs.push((Self::user_key(k), v));
                }
            }
        }
        Ok(out)
    }

    /// Writes every pair; each region's part applies atomically, the batch
    /// as a whole does not.
    pub async fn batch_put(
        &self,
        keyspace: Option<&str>,
        pairs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        tessera_proto::limits::validate_batch_len(pairs.len()).map_err(Error::InvalidArgument)?;
        let ks = self.keyspace(keyspace).await?;
        let mut values = HashMap::new();
        let mut encoded = vec![];
        for (k, v) in pairs {
            Self::check_value(v)?;
            let e = Self::encode_key(&ks, k)?;
            values.insert(e.clone(), v.clone());
            encoded.push(e);
        }
        let values = Arc::new(values);
        self.batch(
            "batch_put",
            encoded,
            SendPolicy::AtMostOnce,
            move |mut c, ctx, keys| {
                let values = values.clone();
                async move {
                    let pairs = keys
                        .into_iter()
                        .map(|k| KvPair {
                            value: values[&k].clone(),
                            key: k,
                        })
                        .collect();
                    c.batch_put(BatchPutRequest {
                        context: Some(ctx),
                        pairs,
                    })
                    .await
                }
            },
        )
        .await
        .map(|_| ())
    }
}
