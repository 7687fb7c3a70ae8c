//! Operations on one key: get, put, delete and compare-and-swap, each one
//! request routed by [`crate::route`]. Writes are at most once: an unknown
//! outcome is [`crate::Error::Indeterminate`], never retried.

use tessera_proto::kvpb::*;

use crate::reaction::SendPolicy;
use crate::{ReadConsistency, Result, Router};

/// The outcome of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    pub succeeded: bool,
    /// The value found before (None: the key was absent).
    pub previous: Option<Vec<u8>>,
}

impl Router {
    /// The value of `key`, read by the leader (linearizable).
    pub async fn get(&self, keyspace: Option<&str>, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_with(keyspace, key, ReadConsistency::Linearizable)
            .await
    }

    /// The value of `key`, read as `consistency` says.
    pub async fn get_with(
        &self,
        keyspace: Option<&str>,
        key: &[u8],
        consistency: ReadConsistency,
    ) -> Result<Option<Vec<u8>>> {
        let consistency = consistency.validate()?;
        let ks = self.keyspace(keyspace).await?;
        let k = Self::encode_key(&ks, key)?;
        let (resp, _) = self
            .route("get", &k, consistency.policy(), |mut c, ctx| {
                let req = GetRequest {
                    context: Some(consistency.stamp(ctx)),
                    key: k.clone(),
                };
                async move { c.get(req).await }
            })
            .await?;
        Ok(resp.found.then_some(resp.value))
    }

    pub async fn put(&self, keyspace: Option<&str>, key: &[u8], value: &[u8]) -> Result<()> {
        let ks = self.keyspace(keyspace).await?;
        let k = Self::encode_key(&ks, key)?;
        Self::check_value(value)?;
        self.route("put", &k, SendPolicy::AtMostOnce, |mut c, ctx| {
            let req = PutRequest {
                context: Some(ctx),
                key: k.clone(),
                value: value.to_vec(),
            };
            async move { c.put(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn delete(&self, keyspace: Option<&str>, key: &[u8]) -> Result<()> {
        let ks = self.keyspace(keyspace).await?;
        let k = Self::encode_key(&ks, key)?;
        self.route("delete", &k, SendPolicy::AtMostOnce, |mut c, ctx| {
            let req = DeleteRequest {
                context: Some(ctx),
                key: k.clone(),
            };
            async move { c.delete(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Sets `key` to `new` (None deletes it) if its value is `expected`
    /// (None: absent). Never retried once sent: an unknown outcome is
    /// [`Error::Indeterminate`](crate::Error::Indeterminate).
    pub async fn compare_and_swap(
        &self,
        keyspace: Option<&str>,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<CasOutcome> {
        let ks = self.keyspace(keyspace).await?;
        let k = Self::encode_key(&ks, key)?;
        if let Some(v) = new {
            Self::check_value(v)?;
        }
        let (resp, _) = self
            .route(
                "compare_and_swap",
                &k,
                SendPolicy::AtMostOnce,
                |mut c, ctx| {
                    let req = CompareAndSwapRequest {
                        context: Some(ctx),
                        key: k.clone(),
                        expect_absent: expected.is_none(),
                        expected_value: expected.unwrap_or_default().to_vec(),
                        new_value: new.unwrap_or_default().to_vec(),
                        delete: new.is_none(),
                    };
                    async move { c.compare_and_swap(req).await }
                },
            )
            .await?;
        Ok(CasOutcome {
            succeeded: resp.succeeded,
            previous: resp.previous_found.then_some(resp.previous_value),
        })
    }
}
