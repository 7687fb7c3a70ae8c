//! The handlers behind the store's `Kv` service.
//!
//! Each request names a region, the epoch the caller believes it has and the
//! peer it addressed. A handler:
//! 1. validates its input (key and value limits, well-formed keys) — bad
//!    input is refused with `InvalidArgument` before anything is proposed;
//! 2. checks that the request is for this store (`StoreNotMatch`);
//! 3. writes go through the region's Raft log (the poller checks leadership
//!    and epoch when proposing, the state machine re-checks at apply); reads
//!    wait for a read index (lease or ReadIndex) and then read the engine,
//!    after re-checking the keys against the region as it is then. A
//!    leader's lease read is decided on the handler's own task from the
//!    state the poller publishes (`tessera_multiraft::local_read`): no
//!    message to the poller; what it read is kept only if the region's data
//!    was not replaced meanwhile, else the read goes to the poller;
//! 4. routing errors are returned in the response's `region_error`.
//!
//! A request that waits longer than [`KvConfig::request_timeout`] fails with
//! `Timeout`; for a write that means the outcome is unknown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tessera_multiraft::engine::{Cf, Engine};
use tessera_multiraft::local_read::LocalReaders;
use tessera_multiraft::mailbox::{EpochCheck, PollerMsg, ReadPolicy, WriteClass};
use tessera_multiraft::metrics::READS_TOTAL;
use tessera_multiraft::region;
use tessera_multiraft::Mailbox;
use tessera_proto::errorpb::RegionError;
use tessera_proto::kvpb::*;
use tessera_proto::metapb::Region;
use tessera_proto::raft_serverpb::{
    command::Cmd, CompareAndSwapCommand, DeleteCommand, DeleteRangeCommand, PutCommand,
};
use tessera_proto::{keys, limits, KvResponse};
use tokio::sync::oneshot;

use super::apply::clip_to_region;
use super::command::{self, CmdResult, KvOutput};
use crate::load::LoadSampler;
use crate::{Error, Result};

/// Reads served through the poller that may find the region's data
/// replaced under them (a snapshot) before the read gives up as busy.
const MAX_REPLACED_READS: usize = 3;

/// A key, value or bound that breaks the rules of `tessera_proto::keys` is
/// bad input.
fn valid(check: std::result::Result<(), String>) -> Result<()> {
    check.map_err(Error::InvalidArgument)
}

/// The most bytes of keys and values one BatchPut may carry.
pub const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct KvConfig {
    /// How long a request may wait for its proposal or read to complete.
    pub request_timeout: Duration,
    /// When set, reads skip the lease and ReadIndex and are served at once
    /// from whatever the addressed peer has applied — NOT linearizable.
    /// The nemesis checker's negative control; only the `failpoints`
    /// build's fault endpoint sets it.
    pub unsafe_reads: Arc<AtomicBool>,
    /// The bytes of keys and values one Scan or BatchGet answer holds
    /// before it stops and says where to continue (a page always holds at
    /// least one pair).
    pub max_response_bytes: usize,
    /// Serve leader lease reads on the handler's task (`[raft] local_reads`).
    pub local_reads: bool,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            request_timeout: Duration::from_secs(5),
            unsafe_reads: Arc::new(AtomicBool::new(false)),
            max_response_bytes: limits::RESPONSE_PAGE_BYTES,
            local_reads: true,
        }
    }
}

pub struct KvApi {
    store_id: u64,
    mailbox: Mailbox<KvOutput>,
    engine: Arc<dyn Engine>,
    /// The leases the poller publishes (`None`: local reads are off).
    local: Option<LocalReaders>,
    cfg: KvConfig,
    load: Arc<LoadSampler>,
}

/// Turns a routing error into a response carrying it; other errors stay
/// errors.
fn respond<R: KvResponse>(result: Result<R>) -> Result<R> {
    match result {
        Err(Error::Region(e)) => Ok(R::refused(*e)),
        other => other,
    }
}

impl KvApi {
    pub fn new(
        store_id: u64,
        mailbox: Mailbox<KvOutput>,
        engine: Arc<dyn Engine>,
        local: Option<LocalReaders>,
        cfg: KvConfig,
    ) -> Self {
        KvApi {
            store_id,
            mailbox,
            engine,
            local,
            cfg,
            load: Arc::default(),
        }
    }

    /// What each region served here since its last report.
    pub fn load(&self) -> &Arc<LoadSampler> {
        &self.load
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// The leases the poller publishes, if local reads are on.
    pub fn local_reads(&self) -> Option<&LocalReaders> {
        self.local.as_ref()
    }

    fn context(&self, ctx: Option<Context>) -> Result<Context> {
        let ctx = ctx.ok_or_else(|| Error::InvalidArgument("the request has no context".into()))?;
        let Some(peer) = ctx.peer.as_ref() else {
            return Err(Error::InvalidArgument(
                "the request context names no peer".into(),
            ));
        };
        if peer.store_id != self.store_id {
            return Err(Error::region(RegionError::store_not_match(
                peer.store_id,
                self.store_id,
            )));
        }
        Ok(ctx)
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<tessera_multiraft::Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.cfg.request_timeout, rx).await {
            Err(_) => Err(Error::Timeout(self.cfg.request_timeout)),
            Ok(Err(_)) => Err(Error::Shutdown),
            Ok(Ok(r)) => r.map_err(Error::from),
        }
    }

    /// Serves a read as `ctx` asks: `serve` reads the engine once the
    /// region may be read, given the region as it is then. Linearizable
    /// (the leader) or a follower read (any replica, after a ReadIndex
    /// round), or a stale read (`stale_max_age_ms`, with `follower_read`:
    /// any replica, from its own state if recent enough; otherwise as a
    /// follower read). A lease read, or a stale read, is tried on this task
    /// first (`tessera_multiraft::local_read`); `serve` runs again through
    /// the poller if what it read there cannot be kept.
    async fn read<T>(&self, ctx: &Context, serve: impl Fn(&Region) -> Result<T>) -> Result<T> {
        let stale = match (ctx.follower_read, ctx.stale_max_age_ms) {
            (_, 0) => None,
            (true, ms) => {
                valid(limits::validate_staleness_ms(ms))?;
                Some(Duration::from_millis(ms))
            }
            (false, ms) => {
                return Err(Error::InvalidArgument(format!(
                    "stale_max_age_ms is {ms} on a read that is not a follower read"
                )))
            }
        };
        let policy = if self.cfg.unsafe_reads.load(Ordering::Relaxed) {
            ReadPolicy::UnsafeLocal
        } else if ctx.follower_read {
            ReadPolicy::Follower
        } else {
            ReadPolicy::Leader
        };
        if let Some(local) = &self.local {
            let epoch = EpochCheck::version(ctx.region_epoch.unwrap_or_default());
            let timeout = self.cfg.request_timeout;
            let began = match (policy, stale) {
                (ReadPolicy::Leader, _) => {
                    tokio::time::timeout(timeout, local.begin(ctx.region_id, &epoch))
                        .await
                        .map_err(|_| Error::Timeout(timeout))?
                }
                (ReadPolicy::Follower, Some(max_age)) => {
                    tokio::time::timeout(timeout, local.begin_stale(ctx.region_id, &epoch, max_age))
                        .await
                        .map_err(|_| Error::Timeout(timeout))?
                }
                _ => None,
            };
            if let Some(grant) = began {
                let served = serve(grant.region());
                if local.finish(&grant) {
                    let path = if stale.is_some() { "stale" } else { "local" };
                    metrics::counter!(READS_TOTAL, "path" => path).increment(1);
                    return served;
                }
            }
        }
        // Through the poller: it answers once the region may be read, and
        // this task reads the engine after. A snapshot applied in between
        // (a follower catching up) replaces the data under the read: what
        // was read then is dropped and the read asked for again.
        for _ in 0..MAX_REPLACED_READS {
            let watch = self.local.as_ref().and_then(|l| l.watch(ctx.region_id));
            let region = self.read_region(ctx, policy).await?;
            let served = serve(&region);
            if watch.is_none_or(|w| w.still_valid()) {
                return served;
            }
        }
        Err(Error::region(RegionError::server_is_busy(
            "the region's data was replaced by snapshots while it was read",
            10,
        )))
    }

    /// Waits until the poller says the region may be read (per `policy`);
    /// returns the region as it is then.
    async fn read_region(&self, ctx: &Context, policy: ReadPolicy) -> Result<Region> {
        let (tx, rx) = oneshot::channel();
        self.mailbox.send(PollerMsg::Read {
            region_id: ctx.region_id,
            epoch: EpochCheck::version(ctx.region_epoch.unwrap_or_default()),
            policy,
            cb: Box::new(move |r| {
                let _ = tx.send(r.cloned());
            }),
        })?;
        self.wait(rx).await
    }

    /// Proposes `cmds` to the region's log and waits until they apply.
    async fn propose(&self, ctx: &Context, cmds: Vec<Cmd>) -> Result<Vec<CmdResult>> {
        let (tx, rx) = oneshot::channel();
        let keys = cmds.len() as u64;
        let first_key = cmds.first().map(command_key).unwrap_or_default().to_vec();
        let data = command::encode(ctx, cmds);
        self.load
            .write(ctx.region_id, keys, data.len() as u64, &first_key);
        self.mailbox.send(PollerMsg::Propose {
            region_id: ctx.region_id,
            epoch: EpochCheck::version(ctx.region_epoch.unwrap_or_default()),
            data,
            class: WriteClass::User,
            cb: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        self.wait(rx).await?.map_err(Error::region)
    }

    fn check_key_in(region: &Region, key: &[u8]) -> Result<()> {
        if region::contains_key(region, key) {
            Ok(())
        } else {
            Err(Error::region(RegionError::key_not_in_region(key, region)))
        }
    }

    fn engine_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.engine
            .get(Cf::Default, key)
            .map_err(|e| Error::Engine(e.to_string()))
    }

    pub async fn get(&self, req: GetRequest) -> Result<GetResponse> {
        valid(keys::validate_key(&req.key))?;
        respond(
            async {
                let ctx = self.context(req.context)?;
                self.read(&ctx, |region| {
                    Self::check_key_in(region, &req.key)?;
                    let value = self.engine_get(&req.key)?;
                    let bytes = req.key.len() + value.as_ref().map_or(0, Vec::len);
                    self.load.read(region.id, 1, bytes as u64, &req.key);
                    Ok(GetResponse {
                        region_error: None,
                        found: value.is_some(),
                        value: value.unwrap_or_default(),
                    })
                })
                .await
            }
            .await,
        )
    }

    /// Each distinct key once, in the order of its first mention: a key
    /// named many times is read and answered once.
    pub async fn batch_get(&self, req: BatchGetRequest) -> Result<BatchGetResponse> {
        valid(limits::validate_batch_len(req.keys.len()))?;
        for k in &req.keys {
            valid(keys::validate_key(k))?;
        }
        respond(
            async {
                let ctx = self.context(req.context)?;
                self.read(&ctx, |region| self.batch_get_in(region, &req.keys))
                    .await
            }
            .await,
        )
    }

    fn batch_get_in(&self, region: &Region, keys: &[Vec<u8>]) -> Result<BatchGetResponse> {
        for k in keys {
            Self::check_key_in(region, k)?;
        }
        let mut pairs = vec![];
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        let mut page = limits::PageBudget::new(self.cfg.max_response_bytes);
        let mut resume_index = 0;
        for (i, key) in keys.iter().enumerate() {
            if !seen.insert(key.as_slice()) {
                continue;
            }
            if let Some(value) = self.engine_get(key)? {
                if !page.admit(key.len() + value.len()) {
                    resume_index = i as u32;
                    break;
                }
                pairs.push(KvPair {
                    key: key.clone(),
                    value,
                });
            }
        }
        let bytes: usize = pairs.iter().map(|p| p.key.len() + p.value.len()).sum();
        let first_key = keys.first().map(Vec::as_slice).unwrap_or_default();
        self.load
            .read(region.id, keys.len() as u64, bytes as u64, first_key);
        Ok(BatchGetResponse {
            region_error: None,
            pairs,
            resume_index,
        })
    }

    pub async fn scan(&self, req: ScanRequest) -> Result<ScanResponse> {
        valid(keys::validate_bound(&req.start_key))?;
        valid(keys::validate_bound(&req.end_key))?;
        respond(
            async {
                let ctx = self.context(req.context)?;
                self.read(&ctx, |region| self.scan_in(region, &req)).await
            }
            .await,
        )
    }

    fn scan_in(&self, region: &Region, req: &ScanRequest) -> Result<ScanResponse> {
        let (start, end) = clip_to_region(region, &req.start_key, &req.end_key);
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit as usize
        };
        let mut pairs = vec![];
        let budget = match req.max_bytes {
            0 => self.cfg.max_response_bytes,
            asked => self.cfg.max_response_bytes.min(asked as usize),
        };
        let mut page = limits::PageBudget::new(budget);
        let mut resume_key = vec![];
        self.engine
            .scan(Cf::Default, &start, &end, req.reverse, &mut |k, v| {
                if !page.admit(k.len() + v.len()) {
                    // The next page starts with this pair: its start is
                    // inclusive, a reverse page's end exclusive.
                    resume_key = if req.reverse {
                        keys::successor(k)
                    } else {
                        k.to_vec()
                    };
                    return false;
                }
                pairs.push(KvPair {
                    key: k.to_vec(),
                    value: v.to_vec(),
                });
                pairs.len() < limit
            })
            .map_err(|e| Error::Engine(e.to_string()))?;
        let bytes: usize = pairs.iter().map(|p| p.key.len() + p.value.len()).sum();
        self.load
            .read(region.id, pairs.len().max(1) as u64, bytes as u64, &start);
        Ok(ScanResponse {
            region_error: None,
            pairs,
            resume_key,
        })
    }

    /// A put's context and command, its input checked.
    pub fn put_command(req: PutRequest) -> Result<(Option<Context>, Cmd)> {
        valid(keys::validate_key(&req.key))?;
        valid(keys::validate_value(&req.value))?;
        let put = Cmd::Put(PutCommand {
            key: req.key,
            value: req.value,
        });
        Ok((req.context, put))
    }

    /// A delete's context and command, its input checked.
    pub fn delete_command(req: DeleteRequest) -> Result<(Option<Context>, Cmd)> {
        valid(keys::validate_key(&req.key))?;
        Ok((req.context, Cmd::Delete(DeleteCommand { key: req.key })))
    }

    /// Proposes the commands of one or more writes sent with the same
    /// context as one Raft entry and waits until it applies: they apply
    /// together or not at all (the `BatchCommands` stream merges the puts
    /// and deletes of one region that arrive in one message).
    pub async fn write(&self, ctx: Option<Context>, cmds: Vec<Cmd>) -> Result<()> {
        let ctx = self.context(ctx)?;
        self.propose(&ctx, cmds).await.map(|_| ())
    }

    pub async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        let (ctx, put) = Self::put_command(req)?;
        respond(
            self.write(ctx, vec![put])
                .await
                .map(|()| PutResponse::default()),
        )
    }

    pub async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        let (ctx, delete) = Self::delete_command(req)?;
        respond(
            self.write(ctx, vec![delete])
                .await
                .map(|()| DeleteResponse::default()),
        )
    }

    pub async fn batch_put(&self, req: BatchPutRequest) -> Result<BatchPutResponse> {
        valid(limits::validate_batch_len(req.pairs.len()))?;
        let mut bytes = 0;
        for p in &req.pairs {
            valid(keys::validate_key(&p.key))?;
            valid(keys::validate_value(&p.value))?;
            bytes += p.key.len() + p.value.len();
        }
        if bytes > MAX_BATCH_BYTES {
            return Err(Error::InvalidArgument(format!(
                "batch holds {bytes} bytes; the limit is {MAX_BATCH_BYTES}"
            )));
        }
        if req.pairs.is_empty() {
            return Ok(BatchPutResponse::default());
        }
        respond(
            async {
                let ctx = self.context(req.context)?;
                let cmds = req
                    .pairs
                    .into_iter()
                    .map(|p| {
                        Cmd::Put(PutCommand {
                            key: p.key,
                            value: p.value,
                        })
                    })
                    .collect();
                self.propose(&ctx, cmds).await?;
                Ok(BatchPutResponse::default())
            }
            .await,
        )
    }

    pub async fn compare_and_swap(
        &self,
        req: CompareAndSwapRequest,
    ) -> Result<CompareAndSwapResponse> {
        valid(keys::validate_key(&req.key))?;
        valid(keys::validate_value(&req.new_value))?;
        valid(keys::validate_value(&req.expected_value))?;
        respond(
            async {
                let ctx = self.context(req.context)?;
                let cas = Cmd::CompareAndSwap(CompareAndSwapCommand {
                    key: req.key,
                    expect_absent: req.expect_absent,
                    expected_value: req.expected_value,
                    new_value: req.new_value,
                    delete: req.delete,
                });
                let results = self.propose(&ctx, vec![cas]).await?;
                match results.into_iter().next() {
                    Some(CmdResult::CompareAndSwap {
                        succeeded,
                        previous,
                    }) => Ok(CompareAndSwapResponse {
                        region_error: None,
                        succeeded,
                        previous_found: previous.is_some(),
                        previous_value: previous.unwrap_or_default(),
                    }),
                    other => Err(Error::Engine(format!(
                        "compare-and-swap applied with result {other:?}"
                    ))),
                }
            }
            .await,
        )
    }

    pub async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        valid(keys::validate_bound(&req.start_key))?;
        valid(keys::validate_bound(&req.end_key))?;
        if !req.end_key.is_empty() && req.start_key >= req.end_key {
            return Err(Error::InvalidArgument(
                "delete range: start key must be below end key".into(),
            ));
        }
        respond(
            async {
                let ctx = self.context(req.context)?;
                let cmd = Cmd::DeleteRange(DeleteRangeCommand {
                    start_key: req.start_key,
                    end_key: req.end_key,
                });
                self.propose(&ctx, vec![cmd]).await?;
                Ok(DeleteRangeResponse::default())
            }
            .await,
        )
    }
}

/// The key a write command starts at (load sampling).
fn command_key(cmd: &Cmd) -> &[u8] {
    match cmd {
        Cmd::Put(c) => &c.key,
        Cmd::Delete(c) => &c.key,
        Cmd::CompareAndSwap(c) => &c.key,
        Cmd::DeleteRange(c) => &c.start_key,
    }
}
