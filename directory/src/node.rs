//! Hosting the directory's Raft group on this member.
//!
//! The group is region [`DIRECTORY_REGION_ID`] of a `tessera-multiraft`
//! store whose store id and peer id are both the member id. A new cluster
//! is created by starting every initial member with the same member list:
//! each writes the same initial region, so they agree without a snapshot. A
//! restarted member resumes from its engine. A member added later starts
//! with `join`: it has no region until the leader adds it and sends a
//! snapshot.
//!
//! **Roles.** Every member joins as a Raft learner; `add_member` promotes
//! it once it has caught up, unless it is to stay a non-voting member.
//! `promote_member` and `demote_member` change a member's role later
//! (demotion is a learner conf change on a voter: one voter changes, a
//! simple change). The group never has fewer than three voters by
//! demotion, and the leader neither demotes nor removes itself.
//!
//! Members find each other through [`MemberResolver`]: addresses recorded
//! in the replicated state, else those given at start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::RwLock;
use tessera_multiraft::engine::{Engine, RocksEngine, RocksOptions};
use tessera_multiraft::mailbox::{
    ConfChangeItem, ConfChangeKind, EpochCheck, PollerMsg, ReadPolicy, RegionInfo, WriteClass,
};
use tessera_multiraft::poller::{self, PollerSpec};
use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::transport::{AddressResolver, GrpcTransport};
use tessera_multiraft::{region, Mailbox, Poller, PollerHandle, RaftConfig};
use tessera_proto::directorypb::directory_command::Cmd;
use tessera_proto::directorypb::Member;
use tessera_proto::errorpb::region_error::Error as RegionErrorKind;
use tessera_proto::metapb::{Peer, PeerRole, Region, RegionEpoch};
use tokio::sync::oneshot;

use crate::state::{Applied, DirectoryState};
use crate::state_machine::{encode, DirOutput, DirectoryStateMachine};
use crate::{Error, Result, DIRECTORY_REGION_ID};

/// Finds members' addresses: the replicated member list first, then the
/// addresses given at start.
#[derive(Clone)]
pub struct MemberResolver {
    initial: Arc<BTreeMap<u64, String>>,
    state: Arc<RwLock<DirectoryState>>,
}

impl MemberResolver {
    pub fn address(&self, member_id: u64) -> Option<String> {
        // Recursive: callers may hold a read guard already (see
        // `core::Core::state`).
        self.state
            .read_recursive()
            .members
            .get(&member_id)
            .map(|m| m.address.clone())
            .or_else(|| self.initial.get(&member_id).cloned())
    }
}

impl AddressResolver for MemberResolver {
    fn resolve(&self, store_id: u64) -> BoxFuture<'static, tessera_multiraft::Result<String>> {
        let addr = self.address(store_id);
        Box::pin(async move {
            addr.ok_or_else(|| {
                tessera_multiraft::Error::Transport(format!(
                    "no address known for directory member {store_id}"
                ))
            })
        })
    }
}

/// How a member starts.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub member_id: u64,
    pub data_dir: std::path::PathBuf,
    /// Member id → address of the members the cluster starts with (or, when
    /// joining, the members already there).
    pub members: BTreeMap<u64, String>,
    /// Join an existing cluster instead of creating one.
    pub join: bool,
    pub raft: RaftConfig,
    pub rocksdb: RocksOptions,
    /// How long a proposal or read may wait.
    pub timeout: Duration,
    /// How the members' Raft connections are secured.
    pub security: tessera_security::Security,
}

pub struct DirectoryNode {
    member_id: u64,
    engine: Arc<dyn Engine>,
    state: Arc<RwLock<DirectoryState>>,
    poller: PollerHandle<DirOutput>,
    resolver: MemberResolver,
    snap_mgr: SnapManager,
    timeout: Duration,
}

impl DirectoryNode {
    pub async fn start(spec: NodeSpec) -> Result<Self> {
        let engine: Arc<dyn Engine> = {
            let path = spec.data_dir.join("db");
            let opts = spec.rocksdb.clone();
            Arc::new(
                tokio::task::spawn_blocking(move || RocksEngine::open(Path::new(&path), &opts))
                    .await
                    .map_err(|e| Error::Config(e.to_string()))??,
            )
        };
        let snap_mgr = SnapManager::new(spec.data_dir.join("snap"))?;
        let state = Arc::new(RwLock::new(DirectoryState::load(engine.as_ref())?));
        let resolver = MemberResolver {
            initial: Arc::new(spec.members.clone()),
            state: state.clone(),
        };
        let (mailbox, inbox) = poller::mailbox(16 * 1024);
        // The directory's own group carries no cluster id: it chooses the
        // id through this group (members are admitted with the join token).
        let transport = GrpcTransport::new(
            spec.member_id,
            0,
            tokio::runtime::Handle::current(),
            Arc::new(resolver.clone()),
            spec.security.clone(),
            mailbox.clone(),
        );
        let poller = Poller::spawn(
            PollerSpec {
                store_id: spec.member_id,
                config: spec.raft.clone(),
                engine: engine.clone(),
                snap_mgr: snap_mgr.clone(),
                state_machine: DirectoryStateMachine::new(state.clone()),
                transport: Box::new(transport),
                inbox,
                removal_reports: None,
                local_reads: None,
            },
            mailbox.clone(),
        )?;
        let node = DirectoryNode {
            member_id: spec.member_id,
            engine,
            state,
            poller,
            resolver,
            snap_mgr,
            timeout: spec.timeout,
        };
        let has_group = node.raft_info().await?.is_some();
        if !has_group && !spec.join {
            if !spec.members.contains_key(&spec.member_id) {
                return Err(Error::Config(format!(
                    "member {} is not among the initial members {:?}",
                    spec.member_id,
                    spec.members.keys().collect::<Vec<_>>()
                )));
            }
            let region = Region {
                id: DIRECTORY_REGION_ID,
                start_key: vec![],
                end_key: vec![],
                region_epoch: Some(RegionEpoch::new(1, 1)),
                peers: spec
                    .members
                    .keys()
                    .map(|&id| Peer {
                        id,
                        store_id: id,
                        role: PeerRole::Voter as i32,
                    })
                    .collect(),
            };
            node.mailbox().create_region(region).await?;
            tracing::info!(member_id = spec.member_id, members = ?spec.members, "created a new directory group");
        }
        Ok(node)
    }

    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    pub fn mailbox(&self) -> &Mailbox<DirOutput> {
        self.poller.mailbox()
    }

    /// Why the engine failed and the poller stopped, once it has.
    pub fn engine_failure(&self) -> Option<String> {
        self.poller.stats().engine_failure.get().cloned()
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub fn snap_mgr(&self) -> &SnapManager {
        &self.snap_mgr
    }

    pub fn state(&self) -> &Arc<RwLock<DirectoryState>> {
        &self.state
    }

    pub fn resolver(&self) -> &MemberResolver {
        &self.resolver
    }

    /// This member's view of the directory group, once it has one.
    pub async fn raft_info(&self) -> Result<Option<RegionInfo>> {
        Ok(self
            .mailbox()
            .inspect()
            .await?
            .into_iter()
            .find(|i| i.region.id == DIRECTORY_REGION_ID))
    }

    fn map_error(&self, e: tessera_multiraft::Error) -> Error {
        if let Some(RegionErrorKind::NotLeader(nl)) =
            e.as_region_error().and_then(|r| r.error.clone())
        {
            return Error::NotLeader(nl.leader.and_then(|l| self.resolver.address(l.id)));
        }
        match e {
            tessera_multiraft::Error::Region(r)
                if matches!(r.error, Some(RegionErrorKind::RegionNotFound(_))) =>
            {
                Error::NotLeader(None)
            }
            tessera_multiraft::Error::Shutdown => Error::Shutdown,
            other => Error::Raft(other),
        }
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<tessera_multiraft::Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => Err(Error::Timeout(format!(
                "no answer from the directory group in {:?}",
                self.timeout
            ))),
            Ok(Err(_)) => Err(Error::Shutdown),
            Ok(Ok(r)) => r.map_err(|e| self.map_error(e)),
        }
    }

    /// Proposes a command and waits until it applies.
    pub async fn propose(&self, cmd: Cmd) -> Result<Applied> {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        self.mailbox()
            .send(PollerMsg::Propose {
                region_id: DIRECTORY_REGION_ID,
                epoch: EpochCheck::default(),
                data: encode(cmd),
                // The directory runs no disk-space monitor: never refused.
                class: WriteClass::User,
                cb: Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            })
            .map_err(|e| self.map_error(e))?;
        let out = self.wait(rx).await?;
        metrics::histogram!(crate::metrics::RAFT_COMMIT_SECONDS)
            .record(started.elapsed().as_secs_f64());
        out
    }

    /// Returns once this member is the leader and has applied everything
    /// committed before the call (a linearizable read may follow).
    pub async fn read_barrier(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.mailbox()
            .send(PollerMsg::Read {
                region_id: DIRECTORY_REGION_ID,
                epoch: EpochCheck::default(),
                policy: ReadPolicy::Leader,
                cb: Box::new(move |r| {
                    let _ = tx.send(r.map(|_| ()));
                }),
            })
            .map_err(|e| self.map_error(e))?;
        self.wait(rx).await
    }

    /// The leader's address as this member knows it.
    pub async fn leader_address(&self) -> Option<String> {
        let info = self.raft_info().await.ok()??;
        info.leader.and_then(|l| self.resolver.address(l.id))
    }

    /// Adds a member: records its address and adds it as a learner; unless
    /// `learner`, waits until it caught up and promotes it.
    pub async fn add_member(&self, id: u64, address: String, learner: bool) -> Result<()> {
        self.propose(Cmd::PutMember(Member {
            id,
            address,
            is_leader: false,
            // The group's configuration says who is a learner (status).
            is_learner: false,
        }))
        .await?;
        let peer = Peer {
            id,
            store_id: id,
            role: PeerRole::Learner as i32,
        };
        self.change(ConfChangeKind::AddLearner, peer).await?;
        if learner {
            return Ok(());
        }
        self.promote_member(id).await
    }

    /// Makes the learner member `id` a voter once it has caught up with
    /// the log (`tessera cluster promote-member`); a voter stays one.
    pub async fn promote_member(&self, id: u64) -> Result<()> {
        let info = self.leader_raft_info().await?;
        let peer = member_peer(&info, id)?;
        if peer.role == PeerRole::Voter as i32 {
            return Ok(());
        }
        if peer.role != PeerRole::Learner as i32 {
            return Err(Error::InvalidArgument(format!(
                "directory member {id} is in a membership change; try again"
            )));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info = self.leader_raft_info().await?;
            let matched = info
                .progress
                .iter()
                .find(|p| p.peer_id == id)
                .map(|p| p.matched);
            if matched.is_some_and(|m| m >= info.commit_index) {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!("member {id} did not catch up")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.change(
            ConfChangeKind::PromoteLearner,
            Peer {
                role: PeerRole::Voter as i32,
                ..peer
            },
        )
        .await
    }

    /// Makes the voter member `id` a learner: it keeps following the log
    /// without voting (`tessera cluster demote-member`); a learner stays
    /// one. Refused for the leader itself (transfer leadership first) and
    /// when fewer than three voters would remain (one failure would then
    /// stop the directory).
    pub async fn demote_member(&self, id: u64) -> Result<()> {
        let info = self.leader_raft_info().await?;
        let peer = member_peer(&info, id)?;
        if peer.role == PeerRole::Learner as i32 {
            return Ok(());
        }
        if id == self.member_id {
            return Err(Error::InvalidArgument(
                "the leader cannot demote itself; transfer leadership first".into(),
            ));
        }
        let voters = info
            .region
            .peers
            .iter()
            .filter(|p| p.role == PeerRole::Voter as i32)
            .count();
        if voters <= 3 {
            return Err(Error::InvalidArgument(format!(
                "demoting directory member {id} would leave {} voters; keep at least three \
                 (promote or add a member first)",
                voters - 1
            )));
        }
        self.change(
            ConfChangeKind::AddLearner,
            Peer {
                role: PeerRole::Learner as i32,
                ..peer
            },
        )
        .await
    }

    /// Removes a member from the group.
    pub async fn remove_member(&self, id: u64) -> Result<()> {
        let info = self.leader_raft_info().await?;
        if id == self.member_id {
            return Err(Error::InvalidArgument(
                "the leader cannot remove itself; transfer leadership first".into(),
            ));
        }
        let peer = member_peer(&info, id)?;
        self.change(ConfChangeKind::RemovePeer, peer).await?;
        self.propose(Cmd::RemoveMember(id)).await.map(|_| ())
    }

    /// The group's Raft state, if this member leads it; else `NotLeader`
    /// with the leader's address when known.
    async fn leader_raft_info(&self) -> Result<RegionInfo> {
        let info = self.raft_info().await?.ok_or(Error::NotLeader(None))?;
        if !info.is_leader {
            return Err(Error::NotLeader(
                info.leader.and_then(|l| self.resolver.address(l.id)),
            ));
        }
        Ok(info)
    }

    async fn change(&self, kind: ConfChangeKind, peer: Peer) -> Result<()> {
        let info = self.raft_info().await?.ok_or(Error::NotLeader(None))?;
        let epoch = EpochCheck::all(region::epoch(&info.region));
        match tokio::time::timeout(
            self.timeout,
            self.mailbox().change_peers(
                DIRECTORY_REGION_ID,
                epoch,
                vec![ConfChangeItem { kind, peer }],
            ),
        )
        .await
        {
            Err(_) => Err(Error::Timeout("membership change".into())),
            Ok(r) => r.map(|_| ()).map_err(|e| self.map_error(e)),
        }
    }

    /// Hands the group's leadership to member `id` (`tessera cluster
    /// transfer-leader`) and waits until it leads. Refused for an unknown
    /// member, a learner, or one the leader has not heard from lately (it
    /// could not take over); a no-op when `id` leads already.
    pub async fn transfer_leader(&self, id: u64) -> Result<()> {
        let info = self.raft_info().await?.ok_or(Error::NotLeader(None))?;
        if info.leader.map(|l| l.id) == Some(id) {
            return Ok(());
        }
        let info = self.leader_raft_info().await?;
        let peer = member_peer(&info, id)?;
        if peer.role != tessera_proto::metapb::PeerRole::Voter as i32 {
            return Err(Error::InvalidArgument(format!(
                "directory member {id} does not vote and cannot lead"
            )));
        }
        if info
            .progress
            .iter()
            .any(|p| p.peer_id == id && !p.recent_active)
        {
            return Err(Error::InvalidArgument(format!(
                "directory member {id} is not responding; not handing it leadership"
            )));
        }
        self.mailbox().send(PollerMsg::TransferLeader {
            region_id: DIRECTORY_REGION_ID,
            to_peer: id,
        })?;
        let deadline = Instant::now() + self.timeout;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.raft_info().await?.ok_or(Error::NotLeader(None))?;
            if now.leader.map(|l| l.id) == Some(id) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "leadership transfer to directory member {id}"
                )));
            }
        }
    }

    /// Hands leadership to another member (on shutdown).
    pub async fn transfer_leadership_away(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.raft_info().await {
                Ok(Some(info)) if info.is_leader => {
                    let (tx, rx) = oneshot::channel();
                    if self
                        .mailbox()
                        .send(PollerMsg::TransferAllLeaders {
                            cb: Box::new(move |n| {
                                let _ = tx.send(n);
                            }),
                        })
                        .is_err()
                    {
                        return;
                    }
                    let _ = rx.await;
                }
                _ => return,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn shutdown(self) {
        self.poller.shutdown();
    }
}

/// Member `id`'s peer in the group's region.
fn member_peer(info: &RegionInfo, id: u64) -> Result<Peer> {
    region::find_peer(&info.region, id)
        .copied()
        .ok_or_else(|| Error::NotFound(format!("directory member {id}")))
}
