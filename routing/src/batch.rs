//! Operations on many keys: the keys are grouped by region, the groups
//! sent in parallel, and the parts that failed regrouped (their regions may
//! have split or moved) and sent again until the deadline.
//!
//! A batch write is at most once per part: a part that may have applied
//! ends the batch as indeterminate, and so does the deadline once any part
//! applied — the batch as a whole is then neither done nor untouched.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tessera_proto::kvpb::kv_client::KvClient;
use tessera_proto::kvpb::*;
use tessera_proto::KvResponse;
use tessera_security::Channel;

use crate::metrics as m;
use crate::reaction::SendPolicy;
use crate::route::Attempt;
use crate::{Error, Result, Router};

impl Router {
    /// Runs a batch: keys split per region, regions in parallel, failed
    /// parts regrouped and retried until the deadline.
    async fn batch<R, F, Fut>(
        &self,
        op: &'static str,
        keys: Vec<Vec<u8>>,
        policy: SendPolicy,
        call: F,
    ) -> Result<Vec<R>>
    where
        R: KvResponse + Send,
        F: Fn(KvClient<Channel>, Context, Vec<Vec<u8>>) -> Fut + Clone,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let started = Instant::now();
        let deadline = started + self.cfg.timeout;
        let mut pending = keys;
        let mut done = vec![];
        let mut round = 0usize;
        while !pending.is_empty() {
            if Instant::now() >= deadline {
                return Err(if policy == SendPolicy::AtMostOnce && !done.is_empty() {
                    Error::Indeterminate(format!(
                        "{op}: some regions applied their part before the deadline"
                    ))
                } else {
                    Error::Unavailable(format!(
                        "{op} did not complete within {:?}",
                        self.cfg.timeout
                    ))
                });
            }
            let groups = self.group(std::mem::take(&mut pending)).await?;
            let attempts = groups.into_iter().map(|(c, ks)| {
                let call = call.clone();
                async move {
                    let mut f = |client, ctx| call(client, ctx, ks.clone());
                    let outcome = self.attempt(&c, round, policy, &mut f).await;
                    (outcome, ks)
                }
            });
            let mut waits = false;
            for (outcome, ks) in futures::future::join_all(attempts).await {
                match outcome {
                    Attempt::Done(r) => done.push(r),
                    Attempt::Fatal(e) => return Err(e),
                    Attempt::Unknown(u) => return Err(Error::Indeterminate(format!("{op}: {u}"))),
                    Attempt::Retry { wait, reason } => {
                        metrics::counter!(m::RETRIES_TOTAL, "reason" => reason).increment(1);
                        waits |= wait.is_some();
                        pending.extend(ks);
                    }
                }
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

    /// Values of the keys that exist, in the order asked.
    pub async fn batch_get(
        &self,
        keyspace: Option<&str>,
        keys: &[Vec<u8>],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let ks = self.keyspace(keyspace).await?;
        let encoded = keys
            .iter()
            .map(|k| Self::encode_key(&ks, k))
            .collect::<Result<Vec<_>>>()?;
        let resps = self
            .batch(
                "batch_get",
                encoded.clone(),
                SendPolicy::Resendable,
                |mut c, ctx, keys| async move {
                    c.batch_get(BatchGetRequest {
                        context: Some(ctx),
                        keys,
                    })
                    .await
                },
            )
            .await?;
        let mut found: HashMap<Vec<u8>, Vec<u8>> = resps
            .into_iter()
            .flat_map(|r| r.pairs)
            .map(|p| (p.key, p.value))
            .collect();
        Ok(encoded
            .into_iter()
            .filter_map(|k| found.remove(&k).map(|v| (Self::user_key(k), v)))
            .collect())
    }

    /// Writes every pair; each region's part applies atomically, the batch
    /// as a whole does not.
    pub async fn batch_put(
        &self,
        keyspace: Option<&str>,
        pairs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
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
