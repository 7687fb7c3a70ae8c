//! Operations on key ranges: scans and range deletes, walked region by
//! region in key order (descending for a reverse scan) and stitched
//! together up to the limit.
//!
//! A scan answers in pages: the router stops at its response budget and
//! returns where to resume (an encoded key, opaque to clients, checked to
//! lie inside the range when it comes back); each store does the same
//! inside a region. So `limit = 0` over any amount of data holds one page
//! in memory at the store, the router and the client. Each page reads at
//! one linearizable point per region; a scan of several pages is not one
//! snapshot.
//!
//! A forward walk follows each region's end key; a reverse walk asks the
//! directory for the regions below the current upper bound and takes the
//! last. A range delete that fails after earlier regions applied their part
//! is indeterminate: the range is then neither untouched nor done.

use tessera_proto::directorypb::Keyspace;
use tessera_proto::kvpb::*;
use tessera_proto::{keys, limits};

use crate::reaction::SendPolicy;
use crate::{Error, ReadConsistency, Result, Router};

/// What one [`Router::scan`] call reads: user keys in `[start, end)` (None:
/// the keyspace's bound), in key order (descending with `reverse`), up to
/// `limit` pairs (0: no limit), from where `resume` (an earlier page's)
/// says, each region read as `consistency` says.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scan<'a> {
    pub start: Option<&'a [u8]>,
    pub end: Option<&'a [u8]>,
    pub limit: usize,
    pub reverse: bool,
    pub resume: Option<&'a [u8]>,
    pub consistency: ReadConsistency,
}

/// How a scan walks its regions: which way, and how each is read.
#[derive(Clone, Copy)]
struct Walk {
    reverse: bool,
    consistency: ReadConsistency,
}

/// One page of a scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Pairs with user keys, in scan order.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where the next page starts (pass it back as `resume`); `None`: the
    /// scan is complete.
    pub resume: Option<Vec<u8>>,
}

/// How far one delete-range call went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeProgress {
    /// Regions whose part of the range was deleted.
    pub regions: u32,
    /// Where the rest begins (pass it back as `resume`); `None`: the whole
    /// range is deleted.
    pub resume: Option<Vec<u8>>,
}

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

    /// The range a page resumed at `resume` covers: the rest of
    /// `[start, end)` after it (before it, reversed). `resume` must be what
    /// an earlier page of this scan returned: a bound inside the range.
    fn resumed(
        start: Vec<u8>,
        end: Vec<u8>,
        resume: &[u8],
        reverse: bool,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let inside = !resume.is_empty()
            && keys::validate_bound(resume).is_ok()
            && resume >= start.as_slice()
            && (end.is_empty() || resume <= end.as_slice());
        if !inside {
            return Err(Error::InvalidArgument(
                "`resume` lies outside the range; pass back the `resume` of the previous call \
                 over the same range"
                    .into(),
            ));
        }
        Ok(if reverse {
            (start, resume.to_vec())
        } else {
            (resume.to_vec(), end)
        })
    }

    /// One page of the pairs `scan` names, across regions. The page stops
    /// at [`RouterConfig::max_response_bytes`](crate::RouterConfig) and
    /// then says where the next one starts, so a scan of any size holds one
    /// page in memory here and at the store.
    pub async fn scan(&self, keyspace: Option<&str>, scan: Scan<'_>) -> Result<ScanPage> {
        let Scan {
            start,
            end,
            limit,
            reverse,
            resume,
            consistency,
        } = scan;
        let walk = Walk {
            reverse,
            consistency: consistency.validate()?,
        };
        let ks = self.keyspace(keyspace).await?;
        let (start, end) = Self::encoded_range(&ks, start, end)?;
        let (start, end) = match resume {
            Some(r) => Self::resumed(start, end, r, reverse)?,
            None => (start, end),
        };
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut page = limits::PageBudget::new(self.cfg.max_response_bytes);
        let mut out = vec![];
        let mut resume = None;
        if !reverse {
            let mut cursor = start;
            loop {
                let left = limit - out.len();
                let (region, within) = self
                    .scan_region(&cursor, (&cursor, &end), left, walk, &mut out, &mut page)
                    .await?;
                if out.len() >= limit {
                    break;
                }
                let next = match within {
                    Some(k) => k,
                    None if region.end_key.is_empty()
                        || (!end.is_empty() && region.end_key >= end) =>
                    {
                        break
                    }
                    None => region.end_key,
                };
                if page.is_full() {
                    resume = Some(next);
                    break;
                }
                cursor = next;
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
                let (region, within) = self
                    .scan_region(&key, (&start, &upper), left, walk, &mut out, &mut page)
                    .await?;
                if out.len() >= limit {
                    break;
                }
                let next = match within {
                    Some(k) => k,
                    None if region.start_key <= start => break,
                    None => region.start_key,
                };
                if page.is_full() {
                    resume = Some(next);
                    break;
                }
                upper = next;
            }
        }
        out.truncate(limit);
        Ok(ScanPage { pairs: out, resume })
    }

    /// Scans `[range.0, range.1)` in the region holding `at`, up to `left`
    /// pairs, appending them (as user keys) to `out` while `page` admits
    /// them. Returns the region that answered, whose bounds say where the
    /// next one starts, and where to go on inside it when the store's page
    /// or `page` filled up first.
    async fn scan_region(
        &self,
        at: &[u8],
        range: (&[u8], &[u8]),
        left: usize,
        walk: Walk,
        out: &mut Vec<(Vec<u8>, Vec<u8>)>,
        page: &mut limits::PageBudget,
    ) -> Result<(tessera_proto::metapb::Region, Option<Vec<u8>>)> {
        let room = page.left().max(1);
        let reverse = walk.reverse;
        let (resp, region) = self
            .route("scan", at, walk.consistency.policy(), |mut c, ctx| {
                let req = ScanRequest {
                    context: Some(walk.consistency.stamp(ctx)),
                    start_key: range.0.to_vec(),
                    end_key: range.1.to_vec(),
                    limit: left.min(u32::MAX as usize) as u32,
                    reverse,
                    // No more than this page can still take.
                    max_bytes: room as u64,
                };
                async move { c.scan(req).await }
            })
            .await?;
        for p in resp.pairs {
            if !page.admit(p.key.len() + p.value.len()) {
                // The next page starts with this pair.
                let next = if reverse {
                    keys::successor(&p.key)
                } else {
                    p.key
                };
                return Ok((region, Some(next)));
            }
            out.push((Self::user_key(p.key), p.value));
        }
        let within = (!resp.resume_key.is_empty()).then_some(resp.resume_key);
        Ok((region, within))
    }

    /// Deletes every key in `[start, end)` (None: the keyspace's bound),
    /// from `resume` (an earlier call's) if given, region by region, in at
    /// most `max_regions` regions (0: all). Returns how many regions it
    /// deleted in and where the rest begins (`None`: nothing is left).
    pub async fn delete_range(
        &self,
        keyspace: Option<&str>,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        resume: Option<&[u8]>,
        max_regions: u32,
    ) -> Result<DeleteRangeProgress> {
        let ks = self.keyspace(keyspace).await?;
        let (start, end) = Self::encoded_range(&ks, start, end)?;
        if !end.is_empty() && start >= end {
            return Err(Error::InvalidArgument(
                "delete range: start must be below end".into(),
            ));
        }
        let (start, end) = match resume {
            Some(r) => Self::resumed(start, end, r, false)?,
            None => (start, end),
        };
        let mut cursor = start;
        let mut first = true;
        let mut regions = 0u32;
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
                // a whole is half done, not untouched, whatever stopped it.
                Err(e) if !first && !matches!(e, Error::Indeterminate(_)) => {
                    return Err(Error::Indeterminate(format!(
                        "delete range: earlier regions applied their part, then: {e}"
                    )))
                }
                other => other?,
            };
            first = false;
            regions += 1;
            if region.end_key.is_empty() || (!end.is_empty() && region.end_key >= end) {
                return Ok(DeleteRangeProgress {
                    regions,
                    resume: None,
                });
            }
            cursor = region.end_key;
            if max_regions > 0 && regions >= max_regions {
                return Ok(DeleteRangeProgress {
                    regions,
                    resume: Some(cursor),
                });
            }
        }
    }
}
