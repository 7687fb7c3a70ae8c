//! Operations on key ranges: scans and range deletes, walked region by
//! region in key order (descending for a reverse scan) and stitched
//! together up to the limit.
//!
//! A forward walk follows each region's end key; a reverse walk asks the
//! directory for the regions below the current upper bound and takes the
//! last. A range delete that fails after earlier regions applied their part
//! is indeterminate: the range is then neither untouched nor done.

use tessera_proto::directorypb::Keyspace;
use tessera_proto::keys;
use tessera_proto::kvpb::*;

use crate::reaction::SendPolicy;
use crate::{Error, Result, Router};

impl Router {
    /// The encoded `[start, end)` of a user range in `ks` (None: the
    /// keyspace's bound). Hash keyspaces only scan whole.
    pub(crate) fn encoded_range(
        ks: &Keyspace,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let (ks_start, ks_end) = keys::keyspace_range(ks.id);
        if keys::is_hash_keyspace(ks.id) && (start.is_some() || end.is_some()) {
            return Err(Error::InvalidArgument(format!(
                "keyspace {:?} is hash-partitioned: scans cover it whole, without bounds",
                ks.name
            )));
        }
        let s = match start {
            Some(k) if !k.is_empty() => keys::encode(ks.id, k),
            _ => ks_start,
        };
        let e = match end {
            Some(k) if !k.is_empty() => keys::encode(ks.id, k),
            _ => ks_end,
        };
        Ok((s, e))
    }

    /// Pairs in `[start, end)` in key order (descending with `reverse`), up
    /// to `limit` (0: no limit), across regions.
    pub async fn scan(
        &self,
        keyspace: Option<&str>,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let ks = self.keyspace(keyspace).await?;
        let (start, end) = Self::encoded_range(&ks, start, end)?;
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut out = vec![];
        if !reverse {
            let mut cursor = start;
            loop {
                let left = limit - out.len();
                let region = self
                    .scan_region(&cursor, (&cursor, &end), left, false, &mut out)
                    .await?;
                if out.len() >= limit
                    || region.end_key.is_empty()
                    || (!end.is_empty() && region.end_key >= end)
                {
                    break;
                }
                cursor = region.end_key;
            }
        } else {
            let mut upper = end;
            loop {
                let regions = self.regions_in(&start, &upper).await?;
                let Some(last) = regions.last().cloned() else {
                    break;
                };
                let left = limit - out.len();
                let key = last.start_key.max(start.clone());
                let region = self
                    .scan_region(&key, (&start, &upper), left, true, &mut out)
                    .await?;
                if out.len() >= limit || region.start_key <= start {
                    break;
                }
                upper = region.start_key;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Scans `[range.0, range.1)` in the region holding `at`, up to `left`
    /// pairs, appending them (as user keys) to `out`; returns the region
    /// that answered, whose bounds say where the next one starts.
    async fn scan_region(
        &self,
        at: &[u8],
        range: (&[u8], &[u8]),
        left: usize,
        reverse: bool,
        out: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<tessera_proto::metapb::Region> {
        let (resp, region) = self
            .route("scan", at, SendPolicy::Resendable, |mut c, ctx| {
                let req = ScanRequest {
                    context: Some(ctx),
                    start_key: range.0.to_vec(),
                    end_key: range.1.to_vec(),
                    limit: left.min(u32::MAX as usize) as u32,
                    reverse,
                };
                async move { c.scan(req).await }
            })
            .await?;
        out.extend(
            resp.pairs
                .into_iter()
                .map(|p| (Self::user_key(p.key), p.value)),
        );
        Ok(region)
    }

    /// Deletes every key in `[start, end)` (None: the keyspace's bound).
    pub async fn delete_range(
        &self,
        keyspace: Option<&str>,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
    ) -> Result<()> {
        let ks = self.keyspace(keyspace).await?;
        let (start, end) = Self::encoded_range(&ks, start, end)?;
        if !end.is_empty() && start >= end {
            return Err(Error::InvalidArgument(
                "delete range: start must be below end".into(),
            ));
        }
        let mut cursor = start;
        let mut first = true;
        loop {
            let routed = self
                .route(
                    "delete_range",
                    &cursor,
                    SendPolicy::AtMostOnce,
                    |mut c, ctx| {
                        let req = DeleteRangeRequest {
                            context: Some(ctx),
                            start_key: cursor.clone(),
                            end_key: end.clone(),
                        };
                        async move { c.delete_range(req).await }
                    },
                )
                .await;
            let (_, region) = match routed {
                // Earlier regions already deleted their part: the range as
                // a whole is half done, not untouched.
                Err(Error::Unavailable(m)) if !first => {
                    return Err(Error::Indeterminate(format!(
                        "delete range: earlier regions applied their part, then {m}"
                    )))
                }
                other => other?,
            };
            first = false;
            if region.end_key.is_empty() || (!end.is_empty() && region.end_key >= end) {
                return Ok(());
            }
            cursor = region.end_key;
        }
    }
}
