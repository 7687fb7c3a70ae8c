//! The mailbox of a store's poller and the messages it takes.
//!
//! Every region's mail goes through one channel: the poller runs on one
//! thread and drains it each round, so a per-region queue would only add
//! locking. Messages are typed; each carries its region id.

use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tessera_proto::metapb::{self, Region, RegionEpoch};
use tessera_proto::raft_serverpb::RaftMessage;

pub use crate::poller::space::WriteClass;
use crate::{Error, RegionId, Result, StoreId};

/// Called once with the outcome of a proposal: the state machine's output,
/// or why it was not (or may not have been) applied.
pub type ProposeCallback<O> = Box<dyn FnOnce(Result<O>) + Send>;

/// Called once a read may be served: with the region as it is at that
/// moment (the caller re-checks its keys against it), or an error.
pub type ReadCallback = Box<dyn FnOnce(Result<&Region>) + Send>;

/// Called once a membership change applied, with the region after it.
pub type ConfChangeCallback = Box<dyn FnOnce(Result<Region>) + Send>;

/// One membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeKind {
    /// Add `peer` as a learner (it receives the log, does not vote).
    AddLearner,
    /// Make the learner `peer` a voter.
    PromoteLearner,
    /// Remove `peer` from the region.
    RemovePeer,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfChangeItem {
    pub kind: ConfChangeKind,
    pub peer: metapb::Peer,
}

/// Which parts of the epoch a request must match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpochCheck {
    pub epoch: RegionEpoch,
    /// Data commands must match `version` (the range).
    pub check_version: bool,
    /// Membership commands must match `conf_ver` too.
    pub check_conf_ver: bool,
}

impl EpochCheck {
    /// The check for data commands: the range must be unchanged.
    pub fn version(epoch: RegionEpoch) -> Self {
        EpochCheck {
            epoch,
            check_version: true,
            check_conf_ver: false,
        }
    }

    /// The check for admin commands: range and membership unchanged.
    pub fn all(epoch: RegionEpoch) -> Self {
        EpochCheck {
            epoch,
            check_version: true,
            check_conf_ver: true,
        }
    }

    /// Whether `current` passes the check.
    pub fn matches(&self, current: &RegionEpoch) -> bool {
        (!self.check_version || self.epoch.version == current.version)
            && (!self.check_conf_ver || self.epoch.conf_ver == current.conf_ver)
    }
}

/// How a read is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPolicy {
    /// On the leader: a valid lease, else a ReadIndex round.
    Leader,
    /// On any peer: a ReadIndex round trip to the leader, then wait for the
    /// local apply to reach the read index.
    Follower,
    /// NOT linearizable: on any peer, at once, from whatever it has applied
    /// — no lease, no ReadIndex. It exists as the negative control of the
    /// nemesis checker (which must catch the stale reads it returns) and is
    /// only reachable in builds with the `failpoints` feature.
    UnsafeLocal,
}

/// A snapshot of one region as its peer on this store sees it.
#[derive(Clone, Debug, Default)]
pub struct RegionInfo {
    pub region: Region,
    pub peer_id: u64,
    pub leader: Option<metapb::Peer>,
    pub is_leader: bool,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub truncated_index: u64,
    /// Approximate bytes of Raft log kept.
    pub log_bytes: u64,
    /// Bytes of commands applied by this peer since it started: a hint of
    /// how much the region grew.
    pub applied_bytes: u64,
    /// Whether the peer has its region's data (not waiting for a snapshot).
    pub initialized: bool,
    /// On the leader: how far each other peer has replicated.
    pub progress: Vec<PeerProgress>,
    /// The regions this peer's splits created, oldest first (at most
    /// `poller::split::MAX_SPLIT_SIBLINGS`).
    pub split_siblings: Vec<Region>,
    /// Set while the region is a merging source (`crate::merge`).
    pub merge_state: Option<tessera_proto::raft_serverpb::MergeState>,
    /// What the region decided as a merge target.
    pub merge_record: tessera_proto::raft_serverpb::MergeRecord,
    /// The peer hibernates (`crate::hibernate`): it does not tick.
    pub hibernating: bool,
}

/// What a filter of [`PollerMsg::InspectWhere`] sees of a region.
#[derive(Clone, Copy, Debug)]
pub struct RegionBrief {
    pub id: RegionId,
    pub is_leader: bool,
    pub initialized: bool,
    pub hibernating: bool,
}

/// How many regions a store hosts, leads, and has hibernating.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionCounts {
    pub regions: usize,
    pub leaders: usize,
    pub hibernating: usize,
}

/// Replication progress of one peer, as its leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    pub peer_id: u64,
    pub matched: u64,
    pub recent_active: bool,
}

pub enum PollerMsg<O> {
    /// A Raft message from another store.
    Raft(Box<RaftMessage>),
    /// Propose `data` to the region's log.
    Propose {
        region_id: RegionId,
        epoch: EpochCheck,
        data: Vec<u8>,
        /// Whether the NOSPACE rules may refuse it (`poller/space.rs`).
        class: WriteClass,
        cb: ProposeCallback<O>,
    },
    /// Propose a membership change (one change, or several entered as a
    /// joint configuration).
    ProposeConfChange {
        region_id: RegionId,
        epoch: EpochCheck,
        changes: Vec<ConfChangeItem>,
        cb: ConfChangeCallback,
    },
    /// Serve a read linearizably.
    Read {
        region_id: RegionId,
        epoch: EpochCheck,
        policy: ReadPolicy,
        cb: ReadCallback,
    },
    /// Create a peer of a new region from its full metadata (bootstrap, or a
    /// test that lays out regions by hand). Fails if the range overlaps a
    /// region already here.
    CreateRegion {
        region: Region,
        cb: Box<dyn FnOnce(Result<()>) + Send>,
    },
    /// Remove this store's peer of a region and delete everything it held:
    /// its Raft log and states and its data range. Used for a peer that must
    /// never have existed (a lost bootstrap race).
    DestroyRegion {
        region_id: RegionId,
        /// Keep a tombstone at this epoch (the peer was removed from its
        /// region) so late messages cannot bring it back.
        tombstone: Option<RegionEpoch>,
        cb: Box<dyn FnOnce(Result<()>) + Send>,
    },
    /// Start an election now (used after bootstrap, and by tests).
    Campaign { region_id: RegionId },
    /// Hand leadership of the region to `to_peer`.
    TransferLeader { region_id: RegionId, to_peer: u64 },
    /// Hand leadership of every region led here to another voter; answers
    /// with how many transfers were started.
    TransferAllLeaders { cb: Box<dyn FnOnce(usize) + Send> },
    /// The transport could not reach this store.
    StoreUnreachable { store_id: StoreId },
    /// A snapshot sent to `to_peer` arrived, or not.
    SnapshotStatus {
        region_id: RegionId,
        to_peer: u64,
        delivered: bool,
    },
    /// The snapshot worker finished generating a region's snapshot.
    SnapshotGenerated {
        region_id: RegionId,
        result: Result<raft::eraftpb::Snapshot>,
    },
    /// Tick every region `count` times now (the only ticks a poller with
    /// `RaftConfig::manual_ticks` gets).
    Tick { count: usize },
    /// Report every region's state.
    Inspect {
        cb: Box<dyn FnOnce(Vec<RegionInfo>) + Send>,
    },
    /// Report one region's state (`None`: this store has no peer of it),
    /// without copying every other region's as `Inspect` does.
    InspectRegion {
        region_id: RegionId,
        cb: Box<dyn FnOnce(Option<RegionInfo>) + Send>,
    },
    /// Report the state of the regions `filter` picks, and counts of all:
    /// a store of many idle regions does not copy each one's state for a
    /// periodic task that wants a few.
    InspectWhere {
        filter: Box<dyn Fn(&RegionBrief) -> bool + Send>,
        /// Look only at awake peers: the cost is then that of the awake
        /// ones, not of every region the store hosts.
        awake_only: bool,
        cb: Box<dyn FnOnce(Vec<RegionInfo>, RegionCounts) + Send>,
    },
    /// Stop the poller after this round.
    Shutdown,
}

/// The sending side of a poller's mailbox; cheap to clone.
pub struct Mailbox<O> {
    tx: Sender<PollerMsg<O>>,
    created: Instant,
}

impl<O> Clone for Mailbox<O> {
    fn clone(&self) -> Self {
        Mailbox {
            tx: self.tx.clone(),
            created: self.created,
        }
    }
}

impl<O: Send + 'static> Mailbox<O> {
    pub(crate) fn new(capacity: usize) -> (Self, Receiver<PollerMsg<O>>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        (
            Mailbox {
                tx,
                created: Instant::now(),
            },
            rx,
        )
    }

    /// Queues `msg`. A full mailbox is reported as `ServerIsBusy` so callers
    /// back off instead of piling up.
    pub fn send(&self, msg: PollerMsg<O>) -> Result<()> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Error::region(
                tessera_proto::errorpb::RegionError::server_is_busy("raft mailbox is full", 10),
            )),
            Err(TrySendError::Disconnected(_)) => Err(Error::Shutdown),
        }
    }

    /// Queues a Raft message from another store; dropped if the mailbox is
    /// full (Raft retransmits).
    pub fn send_raft_message(&self, msg: RaftMessage) -> bool {
        self.tx.try_send(PollerMsg::Raft(Box::new(msg))).is_ok()
    }

    /// Proposes and waits for the outcome (for callers outside async code).
    pub fn propose_blocking(
        &self,
        region_id: RegionId,
        epoch: EpochCheck,
        data: Vec<u8>,
    ) -> Result<O> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(PollerMsg::Propose {
            region_id,
            epoch,
            data,
            class: WriteClass::User,
            cb: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        rx.recv().map_err(|_| Error::Shutdown)?
    }

    /// Proposes a membership change and waits until it applies.
    pub async fn change_peers(
        &self,
        region_id: RegionId,
        epoch: EpochCheck,
        changes: Vec<ConfChangeItem>,
    ) -> Result<Region> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(PollerMsg::ProposeConfChange {
            region_id,
            epoch,
            changes,
            cb: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    /// Every region's state, as the poller sees it now.
    pub async fn inspect(&self) -> Result<Vec<RegionInfo>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(PollerMsg::Inspect {
            cb: Box::new(move |infos| {
                let _ = tx.send(infos);
            }),
        })?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// One region's state (`None`: this store has no peer of it).
    pub async fn inspect_region(&self, region_id: RegionId) -> Result<Option<RegionInfo>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(PollerMsg::InspectRegion {
            region_id,
            cb: Box::new(move |info| {
                let _ = tx.send(info);
            }),
        })?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// The state of the regions `filter` picks, and counts of all of them.
    pub async fn inspect_where(
        &self,
        filter: impl Fn(&RegionBrief) -> bool + Send + 'static,
    ) -> Result<(Vec<RegionInfo>, RegionCounts)> {
        self.inspect_where_among(filter, false).await
    }

    /// [`Mailbox::inspect_where`] among the awake peers only (hibernating
    /// ones are not looked at); the counts are still of all.
    pub async fn inspect_awake_where(
        &self,
        filter: impl Fn(&RegionBrief) -> bool + Send + 'static,
    ) -> Result<(Vec<RegionInfo>, RegionCounts)> {
        self.inspect_where_among(filter, true).await
    }

    async fn inspect_where_among(
        &self,
        filter: impl Fn(&RegionBrief) -> bool + Send + 'static,
        awake_only: bool,
    ) -> Result<(Vec<RegionInfo>, RegionCounts)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(PollerMsg::InspectWhere {
            filter: Box::new(filter),
            awake_only,
            cb: Box::new(move |infos, counts| {
                let _ = tx.send((infos, counts));
            }),
        })?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// Destroys this store's peer of a region and its data.
    pub async fn destroy_region(&self, region_id: RegionId) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(PollerMsg::DestroyRegion {
            region_id,
            tombstone: None,
            cb: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    /// Destroys this store's peer of a region it was removed from (as the
    /// directory knows the region at `epoch`), leaving a tombstone.
    pub async fn destroy_removed_peer(
        &self,
        region_id: RegionId,
        epoch: RegionEpoch,
    ) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(PollerMsg::DestroyRegion {
            region_id,
            tombstone: Some(epoch),
            cb: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    /// Creates a region's peer here and waits until it exists.
    pub async fn create_region(&self, region: Region) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(PollerMsg::CreateRegion {
            region,
            cb: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        rx.await.map_err(|_| Error::Shutdown)?
    }
}
