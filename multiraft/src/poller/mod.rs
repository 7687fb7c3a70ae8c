//! The poller: one thread that drives every peer of a store in rounds.
//!
//! A round:
//! 1. drain the mailbox (Raft messages, proposals, reads, admin) and tick
//!    every peer when the tick interval has passed (with
//!    `RaftConfig::manual_ticks`, only when a `PollerMsg::Tick` says so:
//!    tests drive the logical clock themselves);
//! 2. turn the round's reads into one ReadIndex request (or a lease read)
//!    per region;
//! 3. take the Ready of every peer that has one; send the leader's append
//!    messages right away, so followers persist in parallel with the leader;
//!    stage entries, hard states and received snapshots of *all* regions
//!    into one write batch;
//! 4. write that batch once, synced if any Ready needs it — one fsync serves
//!    every region that had work (group commit);
//! 5. finish applying received snapshots, send the messages that depend on
//!    persisted state (votes, acks) of every region — before applying
//!    anything, as a leader waits on them to commit — then apply committed
//!    entries of every region into one apply batch, write it, and run the
//!    proposers' callbacks and the reads now servable.
//!
//! Outgoing messages are handed to the transport per destination store and
//! flushed after step 3, before the apply in step 5 and at the end of the
//! round.
//!
//! The poller never blocks on the network; it blocks only on the engine.
//! An engine write that fails stops it for good (`engine_failure.rs`):
//! nothing of that round is acknowledged, and the process is told through
//! [`PollerStats::engine_failure`].
//! Snapshots are generated on a separate worker thread.
//!
//! A store spawns its poller on its own thread ([`Poller::spawn`]). Tests
//! may instead open one ([`Poller::open`]) and run its rounds themselves
//! ([`Poller::run_round`]); with manual ticks its clock is logical (one tick
//! interval per tick), so a script of ticks, rounds and deliveries replays
//! the same way every time (`multiraft/tests/scripts/`).

mod engine_failure;
mod hibernate;
mod local_reads;
pub(crate) mod log_gc;
mod merge;
mod ready;
mod regions;
mod removed;
pub mod slow;
pub mod space;
pub(crate) mod split;
mod uninitialized;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tessera_common::clock;
use tessera_proto::errorpb::RegionError;

use crate::config::RaftConfig;
use crate::engine::Engine;
use crate::mailbox::{Mailbox, PollerMsg};
use crate::peer::{Outgoing, Peer, ReadStep};
use crate::read::ReadPath;
use crate::snapshot::SnapManager;
use crate::state_machine::StateMachine;
use crate::transport::Transport;
use crate::{metrics as m, Error, RegionId, Result, StoreId};

impl PollerStats {
    /// How many regions the store hosts, leads and has hibernating.
    pub fn counts(&self) -> crate::mailbox::RegionCounts {
        crate::mailbox::RegionCounts {
            regions: self.regions.load(Ordering::Relaxed) as usize,
            leaders: self.leaders.load(Ordering::Relaxed) as usize,
            hibernating: self.hibernating.load(Ordering::Relaxed) as usize,
        }
    }
}

/// How long an idle poller with manual ticks waits for a message before it
/// looks again (nothing falls due in between: time does not tick it).
const MANUAL_TICKS_IDLE_WAIT: Duration = Duration::from_millis(100);

/// Counters that show what the poller did; tests read them to check that
/// group commit really batches regions.
#[derive(Debug, Default)]
pub struct PollerStats {
    pub rounds: AtomicU64,
    /// Ticks of single peers (a tick of the poller ticks every awake peer:
    /// hibernating ones are not ticked, `hibernate.rs`).
    pub peer_ticks: AtomicU64,
    /// Synced writes of Raft state (fsyncs).
    pub synced_writes: AtomicU64,
    /// Sum over synced writes of the regions each one served.
    pub regions_in_synced_writes: AtomicU64,
    /// The most regions one synced write served.
    pub max_regions_per_synced_write: AtomicU64,
    /// Synced writes that served more than one region.
    pub multi_region_synced_writes: AtomicU64,
    pub applied_entries: AtomicU64,
    pub snapshots_applied: AtomicU64,
    pub snapshots_generated: AtomicU64,
    /// Peers reloaded from their durable state after raft-rs panicked on a
    /// message or a received snapshot could not be staged.
    pub region_reloads: AtomicU64,
    /// When the work of the round now running began ([`slow::mono_ms`]);
    /// 0 between rounds. See `slow.rs`.
    pub round_started_ms: AtomicU64,
    /// Regions hosted, led and hibernating, as of the last round that
    /// changed a role (regions, leaders) and the last tick (hibernating):
    /// read by the store's heartbeat without asking the poller.
    pub regions: AtomicU64,
    pub leaders: AtomicU64,
    pub hibernating: AtomicU64,
    /// Rounds slower than `RaftConfig::slow_round`.
    pub slow_rounds: AtomicU64,
    /// When the last slow round ended ([`slow::mono_ms`]; 0: never).
    pub last_slow_round_ms: AtomicU64,
    /// Set once when the engine failed a write and the poller stopped:
    /// why. The process then stops for good (see `engine_failure.rs`).
    pub engine_failure: std::sync::OnceLock<String>,
}

/// What a poller needs to start.
pub struct PollerSpec<S: StateMachine> {
    pub store_id: StoreId,
    pub config: RaftConfig,
    pub engine: Arc<dyn Engine>,
    pub snap_mgr: SnapManager,
    pub state_machine: S,
    pub transport: Box<dyn Transport>,
    pub inbox: Receiver<PollerMsg<S::Output>>,
    /// Where tombstone messages for local peers are reported, to be
    /// confirmed with the directory before anything is destroyed (the
    /// store's removal checker). `None`: nothing can confirm them, and they
    /// are ignored (the directory's own group; its members are removed by
    /// applying the change).
    pub removal_reports: Option<RemovalReports>,
    /// Where the poller publishes each region's lease for reads served off
    /// its thread (`crate::local_read`); `None`: every read comes through
    /// the mailbox.
    pub local_reads: Option<crate::local_read::LocalReaders>,
}

/// The channel of [`PollerSpec::removal_reports`]: region ids whose local
/// peer someone said was removed.
pub type RemovalReports = tokio::sync::mpsc::Sender<RegionId>;

/// Creates the mailbox of a poller: the [`Mailbox`] (to send) and the
/// inbox the poller will own.
pub fn mailbox<O: Send + 'static>(capacity: usize) -> (Mailbox<O>, Receiver<PollerMsg<O>>) {
    Mailbox::new(capacity)
}

/// A running poller thread.
pub struct PollerHandle<O: Send + 'static> {
    mailbox: Mailbox<O>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<PollerStats>,
    space: Arc<space::DiskSpace>,
}

impl<O: Send + 'static> PollerHandle<O> {
    pub fn mailbox(&self) -> &Mailbox<O> {
        &self.mailbox
    }

    pub fn stats(&self) -> &Arc<PollerStats> {
        &self.stats
    }

    /// The local store's disk-space flag the poller acts on (`space.rs`).
    pub fn space(&self) -> &Arc<space::DiskSpace> {
        &self.space
    }

    /// Stops the poller after its current round and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            // A full mailbox still takes the shutdown eventually.
            while let Err(Error::Region(_)) = self.mailbox.send(PollerMsg::Shutdown) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = t.join();
        }
    }
}

impl<O: Send + 'static> Drop for PollerHandle<O> {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Poller<S: StateMachine> {
    store_id: StoreId,
    cfg: RaftConfig,
    engine: Arc<dyn Engine>,
    snap_mgr: SnapManager,
    sm: S,
    transport: Box<dyn Transport>,
    inbox: Receiver<PollerMsg<S::Output>>,
    mailbox: Mailbox<S::Output>,
    peers: HashMap<RegionId, Peer<S::Output>>,
    /// Initialized regions by start key (ranges never overlap).
    ranges: BTreeMap<Vec<u8>, RegionId>,
    /// Regions whose peer here was removed, with what it left (`removed.rs`).
    tombstones: HashMap<RegionId, removed::Tombstone>,
    removal_reports: Option<RemovalReports>,
    /// Regions with something to do this round.
    touched: BTreeSet<RegionId>,
    /// Regions whose snapshot the worker is generating.
    generating: BTreeSet<RegionId>,
    snap_worker: Option<Sender<RegionId>>,
    snap_worker_thread: Option<JoinHandle<()>>,
    stats: Arc<PollerStats>,
    next_tick: Instant,
    ticks: u64,
    /// Log GC passes so far, and the hibernating peers' log entries and
    /// bytes as of the last full one (`log_gc.rs`).
    log_gc_passes: u64,
    asleep_logs: (u64, u64),
    stopping: bool,
    roles_changed: bool,
    outbox: Vec<Outgoing>,
    /// Vote requests for regions a split has not created here yet.
    early_votes: split::early_votes::EarlyVotes,
    /// Peers waiting for their first snapshot, with when each was created
    /// (see `uninitialized.rs`).
    uninitialized: HashMap<RegionId, Instant>,
    /// Time zero of the logical clock (manual ticks).
    clock_origin: Instant,
    /// When a slow round last handed leaderships away (`slow.rs`).
    last_slow_handoff: Option<Instant>,
    /// Which stores are low on disk space (`space.rs`).
    space: space::SpaceView,
    /// Leases published for reads off this thread (`local_reads.rs`).
    leases: local_reads::Publisher,
    /// Merge targets holding committed entries until their local source
    /// is ready (`crate::merge`), applied again every round.
    merge_holds: BTreeSet<RegionId>,
    /// Which peers tick, and the asleep ones (`hibernate.rs`).
    sleepers: hibernate::Sleepers,
}

impl<S: StateMachine> Poller<S> {
    /// Loads every region of the store from the engine and starts the poller
    /// thread.
    pub fn spawn(
        spec: PollerSpec<S>,
        mailbox: Mailbox<S::Output>,
    ) -> Result<PollerHandle<S::Output>> {
        let poller = Self::open(spec, mailbox.clone())?;
        let stats = poller.stats.clone();
        let space = poller.space.local.clone();
        let thread = std::thread::Builder::new()
            .name(format!("poller-{}", poller.store_id))
            .spawn(move || poller.run())
            .map_err(|e| Error::Engine(format!("cannot start the poller thread: {e}")))?;
        Ok(PollerHandle {
            mailbox,
            thread: Some(thread),
            stats,
            space,
        })
    }

    /// Loads every region of the store from the engine, without a thread:
    /// the caller drives the rounds ([`Poller::run_round`]). With
    /// `RaftConfig::manual_ticks` nothing then happens that the caller did
    /// not ask for, which is how the step-level scripts
    /// (`multiraft/tests/scripts/`) run a cluster deterministically.
    pub fn open(spec: PollerSpec<S>, mailbox: Mailbox<S::Output>) -> Result<Self> {
        let stats = Arc::new(PollerStats::default());
        let early_votes = split::early_votes::EarlyVotes::new(spec.config.election_timeout());
        let leases = local_reads::Publisher::new(spec.local_reads, &spec.config);
        let mut poller = Poller {
            store_id: spec.store_id,
            next_tick: clock::now() + spec.config.tick_interval,
            cfg: spec.config,
            engine: spec.engine,
            snap_mgr: spec.snap_mgr,
            sm: spec.state_machine,
            transport: spec.transport,
            inbox: spec.inbox,
            mailbox: mailbox.clone(),
            peers: HashMap::new(),
            ranges: BTreeMap::new(),
            tombstones: HashMap::new(),
            removal_reports: spec.removal_reports,
            touched: BTreeSet::new(),
            generating: BTreeSet::new(),
            snap_worker: None,
            snap_worker_thread: None,
            stats: stats.clone(),
            ticks: 0,
            log_gc_passes: 0,
            asleep_logs: (0, 0),
            stopping: false,
            roles_changed: true,
            outbox: vec![],
            early_votes,
            uninitialized: HashMap::new(),
            clock_origin: Instant::now(),
            last_slow_handoff: None,
            space: space::SpaceView::default(),
            leases,
            merge_holds: BTreeSet::new(),
            sleepers: Default::default(),
        };
        poller.load_regions()?;
        poller.start_snapshot_worker()?;
        Ok(poller)
    }

    pub fn stats(&self) -> &Arc<PollerStats> {
        &self.stats
    }

    /// What every region of this store looks like now, by region id.
    pub fn regions(&self) -> Vec<crate::mailbox::RegionInfo> {
        let mut infos: Vec<_> = self.peers.values().map(|p| p.info()).collect();
        infos.sort_by_key(|i| i.region.id);
        infos
    }

    /// The regions `filter` picks (by region id) among all peers, or the
    /// awake ones only; and counts of all (as `PollerStats` has them).
    pub fn regions_where(
        &self,
        filter: &dyn Fn(&crate::mailbox::RegionBrief) -> bool,
        awake_only: bool,
    ) -> (
        Vec<crate::mailbox::RegionInfo>,
        crate::mailbox::RegionCounts,
    ) {
        let pick = |(&id, p): (&RegionId, &Peer<S::Output>)| {
            let brief = crate::mailbox::RegionBrief {
                id,
                is_leader: p.is_leader(),
                initialized: p.is_initialized(),
                hibernating: p.is_asleep(),
            };
            filter(&brief).then(|| p.info())
        };
        let mut infos: Vec<_> = if awake_only {
            self.awake_peers().filter_map(pick).collect()
        } else {
            self.peers.iter().filter_map(pick).collect()
        };
        infos.sort_by_key(|i| i.region.id);
        (infos, self.stats.counts())
    }

    /// Runs one round on the caller's thread over what is in the mailbox
    /// now; never waits. Returns whether the round did anything (a message,
    /// a Ready) — a cluster of opened pollers is quiet once no round does.
    pub fn run_round(&mut self) -> bool {
        let had_work = !self.touched.is_empty() || !self.inbox.is_empty();
        self.round(Duration::ZERO);
        had_work
    }

    /// The poller's clock: the process clock (`tessera_common::clock`: real
    /// time, skewable in a test build, which then skews the ticks too), or
    /// with manual ticks a logical clock that moves one tick interval per
    /// tick — leases and held votes then expire after a number of ticks,
    /// whatever the machine's speed.
    fn now(&self) -> Instant {
        if self.cfg.manual_ticks {
            self.clock_origin + self.cfg.tick_interval * self.ticks.min(u32::MAX.into()) as u32
        } else {
            clock::now()
        }
    }

    fn run(mut self) {
        while !self.stopping {
            let wait = if !self.touched.is_empty() {
                Duration::ZERO
            } else if self.cfg.manual_ticks {
                // Nothing happens until a message arrives.
                MANUAL_TICKS_IDLE_WAIT
            } else {
                clock::real(self.next_tick.saturating_duration_since(clock::now()))
            };
            self.round(wait);
        }
        for peer in self.peers.values_mut() {
            for answer in peer.fail_pending("the store is shutting down") {
                answer();
            }
        }
        self.snap_worker = None;
        if let Some(t) = self.snap_worker_thread.take() {
            let _ = t.join();
        }
        tracing::info!(store_id = self.store_id, "poller stopped");
    }

    /// One round, waiting up to `wait` for the first message.
    fn round(&mut self, wait: Duration) {
        let first = self.inbox.recv_timeout(wait);
        let started = Instant::now();
        self.round_begins();
        match first {
            Ok(msg) => self.handle(msg),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                self.stopping = true;
            }
        }
        for _ in 0..self.cfg.max_msgs_per_round {
            if self.stats.engine_failure.get().is_some() {
                break;
            }
            match self.inbox.try_recv() {
                Ok(msg) => self.handle(msg),
                Err(_) => break,
            }
        }
        if self.stats.engine_failure.get().is_some() {
            // A peer's creation or removal failed to write: nothing more
            // of this round may be persisted or acknowledged.
            return;
        }
        if !self.cfg.manual_ticks {
            let now = clock::now();
            if now >= self.next_tick {
                self.next_tick = now + self.cfg.tick_interval;
                self.tick_all();
            }
        }
        self.reconcile_ticking();
        let now = self.now();
        for id in &self.touched {
            if let Some(peer) = self.peers.get_mut(id) {
                let flushed = peer.flush_reads(now);
                for read in flushed.refused {
                    read.answer(peer.region());
                }
                for path in flushed.paths {
                    let path = match path {
                        ReadPath::Lease => "lease",
                        ReadPath::ReadIndex => "read_index",
                    };
                    metrics::counter!(m::READS_TOTAL, "path" => path).increment(1);
                }
            }
        }
        self.handle_readies();
        if self.roles_changed {
            self.roles_changed = false;
            let leaders = self.peers.values().filter(|p| p.is_leader()).count();
            metrics::gauge!(m::LEADERS).set(leaders as f64);
            metrics::gauge!(m::REGIONS).set(self.peers.len() as f64);
            self.stats.leaders.store(leaders as u64, Ordering::Relaxed);
            self.stats
                .regions
                .store(self.peers.len() as u64, Ordering::Relaxed);
        }
        self.stats.rounds.fetch_add(1, Ordering::Relaxed);
        let took = started.elapsed();
        metrics::histogram!(m::POLLER_ROUND_SECONDS).record(took.as_secs_f64());
        self.round_ends(took);
    }

    fn tick_all(&mut self) {
        self.ticks += 1;
        let gc_due = self.cfg.log_gc_tick_interval > 0
            && self
                .ticks
                .is_multiple_of(self.cfg.log_gc_tick_interval as u64);
        self.tick_awake();
        if gc_due {
            self.collect_logs();
        }
        if self.ticks.is_multiple_of(uninitialized::SWEEP_TICKS) {
            self.sweep_uninitialized();
        }
        self.hand_off_for_space();
    }

    fn handle(&mut self, msg: PollerMsg<S::Output>) {
        let now = self.now();
        match msg {
            PollerMsg::Raft(msg) => {
                metrics::counter!(m::RAFT_MESSAGES_RECEIVED_TOTAL).increment(1);
                self.on_raft_message(*msg)
            }
            PollerMsg::Propose {
                region_id,
                epoch,
                data,
                class,
                cb,
            } => match self.peers.get_mut(&region_id) {
                Some(peer) => {
                    if class != space::WriteClass::Merge {
                        if let Some(e) = peer.merging_refusal() {
                            metrics::counter!(m::PROPOSALS_REJECTED_TOTAL).increment(1);
                            cb(Err(e));
                            return;
                        }
                    }
                    // Only a leader that would take the write refuses it
                    // for space; others answer as they always do.
                    let no_space = (class == space::WriteClass::User
                        && peer.refusal_reason(&epoch).is_none())
                    .then(|| self.space.refusal(self.store_id, peer.region()))
                    .flatten();
                    if let Some(e) = no_space {
                        metrics::counter!(m::PROPOSALS_REJECTED_TOTAL).increment(1);
                        cb(Err(Error::region(e)));
                        return;
                    }
                    match peer.propose(&epoch, data, cb, now) {
                        Ok(()) => metrics::counter!(m::PROPOSALS_TOTAL).increment(1),
                        Err(refusal) => {
                            metrics::counter!(m::PROPOSALS_REJECTED_TOTAL).increment(1);
                            refusal.answer();
                        }
                    }
                    self.touched.insert(region_id);
                }
                None => cb(Err(Error::region(RegionError::region_not_found(region_id)))),
            },
            PollerMsg::ProposeConfChange {
                region_id,
                epoch,
                changes,
                cb,
            } => match self.peers.get_mut(&region_id) {
                Some(peer) if peer.merge.is_merging() => {
                    cb(Err(peer.merging_refusal().expect("merging")));
                }
                Some(peer) => {
                    if let Err(refusal) = peer.propose_conf_change(&epoch, changes, cb, now) {
                        refusal.answer();
                    }
                    self.touched.insert(region_id);
                }
                None => cb(Err(Error::region(RegionError::region_not_found(region_id)))),
            },
            PollerMsg::Read {
                region_id,
                epoch,
                policy,
                cb,
            } => match self.peers.get_mut(&region_id) {
                Some(peer) if peer.is_initialized() => {
                    match peer.read(epoch, policy, cb) {
                        ReadStep::Queued => {}
                        ReadStep::ServeNow(cb) => cb(Ok(peer.region())),
                        ReadStep::Refused(r) => (r.cb)(Err(r.error)),
                    }
                    self.touched.insert(region_id);
                }
                _ => cb(Err(Error::region(RegionError::region_not_found(region_id)))),
            },
            PollerMsg::CreateRegion { region, cb } => cb(self.create_region(region)),
            PollerMsg::DestroyRegion {
                region_id,
                tombstone,
                cb,
            } => cb(self.destroy_region(region_id, tombstone)),
            PollerMsg::Campaign { region_id } => {
                if let Some(peer) = self.peers.get_mut(&region_id) {
                    if let Err(e) = peer.campaign() {
                        tracing::warn!(region_id, error = %e, "campaign failed");
                    }
                    self.touched.insert(region_id);
                }
            }
            PollerMsg::TransferLeader { region_id, to_peer } => {
                if let Some(peer) = self.peers.get_mut(&region_id) {
                    peer.transfer_leader(to_peer);
                    self.touched.insert(region_id);
                }
            }
            PollerMsg::TransferAllLeaders { cb } => {
                let mut started = 0;
                for (id, peer) in self.peers.iter_mut() {
                    if !peer.is_leader() {
                        continue;
                    }
                    if let Some(to) = peer.best_transferee() {
                        peer.transfer_leader(to);
                        self.touched.insert(*id);
                        started += 1;
                    }
                }
                cb(started);
            }
            PollerMsg::StoreUnreachable { store_id } => {
                // Asleep leaders send nothing: they learn it if they wake.
                for peer in self.peers.values_mut().filter(|p| !p.is_asleep()) {
                    peer.report_store_unreachable(store_id);
                }
                self.on_store_unreachable(store_id);
            }
            PollerMsg::SnapshotStatus {
                region_id,
                to_peer,
                delivered,
            } => {
                if let Some(peer) = self.peers.get_mut(&region_id) {
                    peer.report_snapshot(to_peer, delivered);
                    self.touched.insert(region_id);
                }
            }
            PollerMsg::SnapshotGenerated { region_id, result } => {
                self.on_snapshot_generated(region_id, result)
            }
            PollerMsg::Tick { count } => {
                for _ in 0..count {
                    self.tick_all();
                }
            }
            PollerMsg::Inspect { cb } => cb(self.regions()),
            PollerMsg::InspectRegion { region_id, cb } => {
                cb(self.peers.get(&region_id).map(|p| p.info()))
            }
            PollerMsg::InspectWhere {
                filter,
                awake_only,
                cb,
            } => {
                let (infos, counts) = self.regions_where(filter.as_ref(), awake_only);
                cb(infos, counts)
            }
            PollerMsg::Shutdown => self.stopping = true,
        }
    }

    fn flush_outbox(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        metrics::counter!(m::RAFT_MESSAGES_SENT_TOTAL).increment(self.outbox.len() as u64);
        for out in self.outbox.drain(..) {
            match out {
                Outgoing::Message(store_id, mut msg) => {
                    self.space.stamp(&mut msg);
                    self.transport.send(store_id, msg)
                }
                Outgoing::Snapshot(store_id, snap) => self.transport.send_snapshot(store_id, snap),
            }
        }
        self.transport.flush();
    }
}
