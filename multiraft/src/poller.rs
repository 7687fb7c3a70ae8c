//! The poller: one thread that drives every peer of a store in rounds.
//!
//! A round:
//! 1. drain the mailbox (Raft messages, proposals, reads, admin) and tick
//!    every peer when the tick interval has passed;
//! 2. turn the round's reads into one ReadIndex request (or a lease read)
//!    per region;
//! 3. take the Ready of every peer that has one; send the leader's append
//!    messages right away, so followers persist in parallel with the leader;
//!    stage entries and hard states of *all* regions into one write batch;
//! 4. write that batch once, synced if any Ready needs it — one fsync serves
//!    every region that had work (group commit);
//! 5. send the messages that depend on persisted state (votes, acks), then
//!    apply committed entries of every region into one apply batch, write
//!    it, and run the proposers' callbacks and the reads now servable.
//!
//! Outgoing messages are handed to the transport per destination store and
//! flushed twice per round (after step 3 and after step 5), so each store
//! receives at most two batches per round.
//!
//! The poller never blocks on the network; it blocks only on the engine.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use protobuf::Message as _;
use raft::eraftpb::Message;
use raft::Ready;
use tessera_proto::errorpb::RegionError;
use tessera_proto::metapb::Region;
use tessera_proto::raft_serverpb::{PeerState, RaftMessage, RegionLocalState};

use crate::apply::{apply_entries, ApplyBatch};
use crate::config::RaftConfig;
use crate::engine::{Cf, Engine, EngineExt, WriteBatch};
use crate::peer::Peer;
use crate::read::ReadPath;
use crate::router::{PollerMsg, RaftRouter};
use crate::state_machine::StateMachine;
use crate::transport::Transport;
use crate::{keys, metrics as m, region, Error, RegionId, Result, StoreId};

/// Counters that show what the poller did; tests read them to check that
/// group commit really batches regions.
#[derive(Debug, Default)]
pub struct PollerStats {
    pub rounds: AtomicU64,
    /// Synced writes of Raft state (fsyncs).
    pub synced_writes: AtomicU64,
    /// Sum over synced writes of the regions each one served.
    pub regions_in_synced_writes: AtomicU64,
    /// The most regions one synced write served.
    pub max_regions_per_synced_write: AtomicU64,
    /// Synced writes that served more than one region.
    pub multi_region_synced_writes: AtomicU64,
    pub applied_entries: AtomicU64,
}

/// What a poller needs to start.
pub struct PollerSpec<S: StateMachine> {
    pub store_id: StoreId,
    pub config: RaftConfig,
    pub engine: Arc<dyn Engine>,
    pub state_machine: S,
    pub transport: Box<dyn Transport>,
    pub mailbox: Receiver<PollerMsg<S::Output>>,
}

/// Creates the mailbox of a poller: the router (to send) and the receiver
/// the poller will own.
pub fn mailbox<O: Send + 'static>(capacity: usize) -> (RaftRouter<O>, Receiver<PollerMsg<O>>) {
    RaftRouter::new(capacity)
}

/// A running poller thread.
pub struct PollerHandle<O: Send + 'static> {
    router: RaftRouter<O>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<PollerStats>,
}

impl<O: Send + 'static> PollerHandle<O> {
    pub fn router(&self) -> &RaftRouter<O> {
        &self.router
    }

    pub fn stats(&self) -> &Arc<PollerStats> {
        &self.stats
    }

    /// Stops the poller after its current round and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            // A full mailbox still takes the shutdown eventually.
            while let Err(Error::Region(_)) = self.router.send(PollerMsg::Shutdown) {
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
    sm: S,
    transport: Box<dyn Transport>,
    mailbox: Receiver<PollerMsg<S::Output>>,
    peers: HashMap<RegionId, Peer<S::Output>>,
    /// Regions with something to do this round.
    touched: BTreeSet<RegionId>,
    stats: Arc<PollerStats>,
    next_tick: Instant,
    stopping: bool,
    roles_changed: bool,
    outbox: Vec<(StoreId, RaftMessage)>,
}

impl<S: StateMachine> Poller<S> {
    /// Loads every region of the store from the engine and starts the poller
    /// thread.
    pub fn spawn(
        spec: PollerSpec<S>,
        router: RaftRouter<S::Output>,
    ) -> Result<PollerHandle<S::Output>> {
        let stats = Arc::new(PollerStats::default());
        let mut poller = Poller {
            store_id: spec.store_id,
            next_tick: Instant::now() + spec.config.tick_interval,
            cfg: spec.config,
            engine: spec.engine,
            sm: spec.state_machine,
            transport: spec.transport,
            mailbox: spec.mailbox,
            peers: HashMap::new(),
            touched: BTreeSet::new(),
            stats: stats.clone(),
            stopping: false,
            roles_changed: true,
            outbox: vec![],
        };
        poller.load_regions()?;
        let thread = std::thread::Builder::new()
            .name(format!("poller-{}", poller.store_id))
            .spawn(move || poller.run())
            .map_err(|e| Error::Engine(format!("cannot start the poller thread: {e}")))?;
        Ok(PollerHandle {
            router,
            thread: Some(thread),
            stats,
        })
    }

    fn load_regions(&mut self) -> Result<()> {
        let (start, end) = keys::region_meta_bounds();
        let mut states = vec![];
        self.engine
            .scan(Cf::Meta, &start, &end, false, &mut |k, v| {
                if keys::decode_region_state_key(k).is_some() {
                    states.push(v.to_vec());
                }
                true
            })?;
        for bytes in states {
            let state: RegionLocalState = prost::Message::decode(bytes.as_slice())?;
            if state.state == PeerState::Tombstone as i32 {
                continue;
            }
            let region = state.region.unwrap_or_default();
            let peer = Peer::load(self.store_id, region, self.engine.clone(), &self.cfg)?;
            self.peers.insert(peer.region_id(), peer);
        }
        metrics::gauge!(m::REGIONS).set(self.peers.len() as f64);
        tracing::info!(
            store_id = self.store_id,
            regions = self.peers.len(),
            "regions loaded"
        );
        Ok(())
    }

    fn run(mut self) {
        while !self.stopping {
            self.round();
        }
        for peer in self.peers.values_mut() {
            peer.fail_pending("the store is shutting down");
        }
        tracing::info!(store_id = self.store_id, "poller stopped");
    }

    fn round(&mut self) {
        let wait = if self.touched.is_empty() {
            self.next_tick.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        match self.mailbox.recv_timeout(wait) {
            Ok(msg) => self.handle(msg),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                self.stopping = true;
            }
        }
        let started = Instant::now();
        for _ in 0..self.cfg.max_msgs_per_round {
            match self.mailbox.try_recv() {
                Ok(msg) => self.handle(msg),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        if now >= self.next_tick {
            self.next_tick = now + self.cfg.tick_interval;
            for (id, peer) in self.peers.iter_mut() {
                peer.tick();
                self.touched.insert(*id);
            }
        }
        for id in &self.touched {
            if let Some(peer) = self.peers.get_mut(id) {
                for path in peer.flush_reads(now) {
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
        }
        self.stats.rounds.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!(m::POLLER_ROUND_SECONDS).record(started.elapsed().as_secs_f64());
    }

    fn handle(&mut self, msg: PollerMsg<S::Output>) {
        let now = Instant::now();
        match msg {
            PollerMsg::Raft(msg) => self.on_raft_message(*msg),
            PollerMsg::Propose {
                region_id,
                epoch,
                data,
                cb,
            } => match self.peers.get_mut(&region_id) {
                Some(peer) => {
                    if peer.propose(&epoch, data, cb, now) {
                        metrics::counter!(m::PROPOSALS_TOTAL).increment(1);
                    } else {
                        metrics::counter!(m::PROPOSALS_REJECTED_TOTAL).increment(1);
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
                Some(peer) => {
                    peer.read(epoch, policy, cb);
                    self.touched.insert(region_id);
                }
                None => cb(Err(Error::region(RegionError::region_not_found(region_id)))),
            },
            PollerMsg::CreateRegion { region, cb } => cb(self.create_region(region)),
            PollerMsg::DestroyRegion { region_id, cb } => cb(self.destroy_region(region_id)),
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
                for peer in self.peers.values_mut() {
                    let targets: Vec<u64> = peer
                        .region()
                        .peers
                        .iter()
                        .filter(|p| p.store_id == store_id)
                        .map(|p| p.id)
                        .collect();
                    for id in targets {
                        peer.raw_node.report_unreachable(id);
                    }
                }
            }
            PollerMsg::Inspect { cb } => {
                let mut infos: Vec<_> = self.peers.values().map(|p| p.info()).collect();
                infos.sort_by_key(|i| i.region.id);
                cb(infos);
            }
            PollerMsg::Shutdown => self.stopping = true,
        }
    }

    fn on_raft_message(&mut self, msg: RaftMessage) {
        metrics::counter!(m::RAFT_MESSAGES_RECEIVED_TOTAL).increment(1);
        let region_id = msg.region_id;
        let Some(peer) = self.peers.get_mut(&region_id) else {
            tracing::debug!(region_id, "message for a region this store does not have");
            return;
        };
        let to = msg.to_peer.as_ref().map(|p| p.id).unwrap_or_default();
        if to != peer.peer_id() {
            tracing::debug!(
                region_id,
                to,
                local = peer.peer_id(),
                "message for another peer of the region dropped"
            );
            return;
        }
        let raft_msg = match Message::parse_from_bytes(&msg.message) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(region_id, error = %e, "undecodable raft message dropped");
                return;
            }
        };
        if let Err(e) = peer.step(raft_msg) {
            tracing::debug!(region_id, error = %e, "raft refused a message");
        }
        self.touched.insert(region_id);
    }

    /// Writes the initial state of `region` and starts its local peer.
    fn create_region(&mut self, region: Region) -> Result<()> {
        if self.peers.contains_key(&region.id) {
            return Err(Error::InvalidArgument(format!(
                "region {} already exists on store {}",
                region.id, self.store_id
            )));
        }
        if let Some(other) = self
            .peers
            .values()
            .find(|p| region::overlaps(p.region(), &region))
        {
            return Err(Error::InvalidArgument(format!(
                "region {} overlaps region {} on store {}",
                region.id,
                other.region_id(),
                self.store_id
            )));
        }
        if region::find_peer_on_store(&region, self.store_id).is_none() {
            return Err(Error::InvalidArgument(format!(
                "region {} has no peer on store {}",
                region.id, self.store_id
            )));
        }
        if self
            .engine
            .get_msg::<RegionLocalState>(Cf::Meta, &keys::region_state_key(region.id))?
            .is_some()
        {
            return Err(Error::InvalidArgument(format!(
                "region {} was already on store {} and was removed",
                region.id, self.store_id
            )));
        }
        let mut wb = WriteBatch::default();
        region::write_initial_state(&region, &mut wb);
        self.engine.write(&wb, true)?;
        let peer = Peer::load(self.store_id, region, self.engine.clone(), &self.cfg)?;
        let id = peer.region_id();
        self.peers.insert(id, peer);
        self.touched.insert(id);
        self.roles_changed = true;
        Ok(())
    }

    fn flush_outbox(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        metrics::counter!(m::RAFT_MESSAGES_SENT_TOTAL).increment(self.outbox.len() as u64);
        for (store_id, msg) in self.outbox.drain(..) {
            self.transport.send(store_id, msg);
        }
        self.transport.flush();
    }

    fn handle_readies(&mut self) {
        let touched = std::mem::take(&mut self.touched);
        let mut readies: Vec<(RegionId, Ready)> = Vec::with_capacity(touched.len());
        let mut wb = WriteBatch::default();
        let mut must_sync = false;
        let mut persisting_regions = 0u64;

        for &id in &touched {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if !peer.raw_node.has_ready() {
                continue;
            }
            let was_leader = peer.is_leader();
            let mut rd = peer.raw_node.ready();
            if let Some(ss) = rd.ss() {
                peer.on_soft_state(ss, was_leader);
                self.roles_changed = true;
            }
            let msgs = rd.take_messages();
            peer.wrap_messages(msgs, &mut self.outbox);
            assert!(
                rd.snapshot().is_empty(),
                "region {id}: raft snapshots are applied by the region operations"
            );
            let before = wb.len();
            peer.storage_mut().append(rd.entries(), &mut wb);
            if let Some(hs) = rd.hs() {
                peer.storage_mut().set_hard_state(hs);
            }
            peer.storage_mut().write_raft_state_if_dirty(&mut wb);
            if wb.len() > before {
                persisting_regions += 1;
            }
            must_sync |= rd.must_sync();
            peer.on_read_states(rd.read_states());
            readies.push((id, rd));
        }
        // Leaders' appends leave before the local write: followers persist
        // in parallel.
        self.flush_outbox();

        if !wb.is_empty() {
            let started = Instant::now();
            if let Err(e) = self.engine.write(&wb, must_sync) {
                // Raft cannot continue with state it may not have persisted.
                panic!("store {}: writing raft state failed: {e}", self.store_id);
            }
            if must_sync {
                metrics::histogram!(m::FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
                metrics::histogram!(m::WRITE_BATCH_BYTES).record(wb.data_bytes() as f64);
                metrics::histogram!(m::WRITE_BATCH_REGIONS).record(persisting_regions as f64);
                self.stats.synced_writes.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .regions_in_synced_writes
                    .fetch_add(persisting_regions, Ordering::Relaxed);
                self.stats
                    .max_regions_per_synced_write
                    .fetch_max(persisting_regions, Ordering::Relaxed);
                if persisting_regions > 1 {
                    self.stats
                        .multi_region_synced_writes
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }

        let mut ab = ApplyBatch::default();
        let mut removed = vec![];
        for (id, mut rd) in readies {
            let peer = self.peers.get_mut(&id).expect("peer of a ready");
            let persisted = rd.take_persisted_messages();
            peer.wrap_messages(persisted, &mut self.outbox);
            let mut committed = rd.take_committed_entries();
            let mut light = peer.raw_node.advance_append(rd);
            if let Some(commit) = light.commit_index() {
                peer.storage_mut().set_commit(commit);
            }
            let msgs = light.take_messages();
            peer.wrap_messages(msgs, &mut self.outbox);
            committed.extend(light.take_committed_entries());
            if apply_entries(peer, committed, &mut self.sm, self.engine.as_ref(), &mut ab) {
                removed.push(id);
            }
        }
        self.flush_outbox();

        if !ab.wb.is_empty() {
            if let Err(e) = self.engine.write(&ab.wb, false) {
                panic!("store {}: writing applied state failed: {e}", self.store_id);
            }
        }
        if ab.entries > 0 {
            metrics::counter!(m::APPLIED_ENTRIES_TOTAL).increment(ab.entries);
            self.stats
                .applied_entries
                .fetch_add(ab.entries, Ordering::Relaxed);
        }
        for cb in ab.deferred {
            cb();
        }
        for id in touched {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            let applied = peer.storage().applied_index();
            peer.raw_node.advance_apply_to(applied);
            peer.fire_ready_reads();
            if peer.raw_node.has_ready() {
                self.touched.insert(id);
            }
        }
        for id in removed {
            self.destroy_peer(id);
        }
    }

    /// Removes the local peer of `region_id` and deletes its log, states and
    /// data, in one synced write.
    fn destroy_region(&mut self, region_id: RegionId) -> Result<()> {
        let Some(mut peer) = self.peers.remove(&region_id) else {
            return Err(Error::region(RegionError::region_not_found(region_id)));
        };
        peer.fail_pending("the region was destroyed on this store");
        let region = peer.region().clone();
        let mut wb = WriteBatch::default();
        wb.delete_range(
            Cf::Raft,
            keys::raft_log_key(region_id, 0).to_vec(),
            keys::raft_log_key(region_id, u64::MAX).to_vec(),
        );
        wb.delete(Cf::Raft, keys::raft_log_key(region_id, u64::MAX).to_vec());
        wb.delete(Cf::Meta, keys::raft_state_key(region_id).to_vec());
        wb.delete(Cf::Meta, keys::apply_state_key(region_id).to_vec());
        wb.delete(Cf::Meta, keys::region_state_key(region_id).to_vec());
        wb.delete_range(
            Cf::Default,
            region.start_key.clone(),
            keys::data_range_end(&region.end_key),
        );
        self.engine.write(&wb, true)?;
        self.roles_changed = true;
        tracing::info!(
            region_id,
            store_id = self.store_id,
            "region destroyed on this store"
        );
        Ok(())
    }

    /// Drops a peer that a membership change removed. Its data and Raft
    /// state are cleaned up by the region operations.
    fn destroy_peer(&mut self, region_id: RegionId) {
        if let Some(mut peer) = self.peers.remove(&region_id) {
            peer.fail_pending("the peer was removed from its region");
            self.roles_changed = true;
            tracing::info!(
                region_id,
                store_id = self.store_id,
                "peer removed from region"
            );
        }
    }
}
