//! The directory's gRPC service.
//!
//! Only the leader answers: a follower (or a member that lost leadership)
//! replies with `NOT_LEADER` and the leader's address in the response
//! header. Reads are linearizable (a ReadIndex, usually served by the
//! leader's lease); writes go through the directory's Raft log. Heartbeats
//! update the leader's in-memory view, and region metadata goes through
//! Raft only when a region's epoch changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};
use tessera_proto::directorypb::directory_command::Cmd;
use tessera_proto::directorypb::directory_server::{Directory, DirectoryServer};
use tessera_proto::directorypb::*;
use tessera_proto::metapb::{Peer, PeerRole, Region, StoreState};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::leader::{state_name, LeaderState, RegionStats, StoreRuntime};
use crate::node::DirectoryNode;
use crate::scheduler::operator::{Operator, Outcome, Step};
use crate::scheduler::{self, ScheduleConfig};
use crate::state::{Applied, DirectoryState};
use crate::{metrics as m, Error, Result};

/// Ids reserved through Raft at a time.
const ID_BATCH: u32 = 1000;
/// Ids the scheduler keeps reserved so a round never waits on Raft for one.
const SCHEDULER_SPARE_IDS: u64 = 256;

/// What the service and the scheduler share.
pub struct Core {
    pub node: Arc<DirectoryNode>,
    pub schedule: ScheduleConfig,
    leader: Mutex<LeaderState>,
    /// Serializes id allocation (which may wait on Raft).
    alloc: tokio::sync::Mutex<()>,
}

impl Core {
    pub fn new(node: Arc<DirectoryNode>, schedule: ScheduleConfig) -> Arc<Self> {
        Arc::new(Core {
            node,
            schedule,
            leader: Mutex::new(LeaderState::new(0)),
            alloc: tokio::sync::Mutex::new(()),
        })
    }

    /// A read of the replicated state. Recursive on purpose: handlers read
    /// the state while already holding a read guard (`header`, the member
    /// resolver), and a plain `read` blocks behind a queued writer (the
    /// poller applying an entry), which then waits for the outer guard
    /// forever. Found as a hang of every directory member under
    /// `tessera-bench repair` with 1,000 regions.
    fn state(&self) -> parking_lot::RwLockReadGuard<'_, DirectoryState> {
        self.node.state().read_recursive()
    }

    /// This member's term if it leads, else NotLeader with the leader.
    pub async fn leading_term(&self) -> Result<u64> {
        let info = self.node.raft_info().await?.ok_or(Error::NotLeader(None))?;
        if !info.is_leader {
            return Err(Error::NotLeader(
                info.leader.and_then(|l| self.node.resolver().address(l.id)),
            ));
        }
        Ok(info.term)
    }

    /// The leader's in-memory view for `term` (reset when the term moved).
    pub fn leader_view(&self, term: u64) -> MutexGuard<'_, LeaderState> {
        let mut ls = self.leader.lock();
        if ls.term != term {
            *ls = LeaderState::new(term);
        }
        ls
    }

    fn header(&self, err: Option<&Error>) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.state().meta.cluster_id,
            error: err.map(Error::to_proto),
        })
    }

    /// `count` fresh ids, from the batch the leader reserved through Raft.
    pub async fn alloc_ids(&self, count: u32) -> Result<u64> {
        let term = self.leading_term().await?;
        let _serial = self.alloc.lock().await;
        {
            let mut ls = self.leader_view(term);
            if ls.ids.1 - ls.ids.0 >= count as u64 {
                let first = ls.ids.0;
                ls.ids.0 += count as u64;
                return Ok(first);
            }
        }
        let n = count.max(ID_BATCH);
        let Applied::Ids { first, .. } = self.node.propose(Cmd::AllocIds(n)).await? else {
            return Err(Error::InvalidArgument(
                "unexpected allocation result".into(),
            ));
        };
        let mut ls = self.leader_view(term);
        ls.ids = (first + count as u64, first + n as u64);
        Ok(first)
    }

    /// Reserves a fresh batch through Raft when fewer than `spare` ids are
    /// left (requests for ids may have emptied the batch).
    async fn keep_ids_at_hand(&self, term: u64, spare: u64) -> Result<()> {
        let _serial = self.alloc.lock().await;
        {
            let ls = self.leader_view(term);
            if ls.ids.1 - ls.ids.0 >= spare {
                return Ok(());
            }
        }
        let n = ID_BATCH.max(spare as u32);
        let Applied::Ids { first, .. } = self.node.propose(Cmd::AllocIds(n)).await? else {
            return Err(Error::InvalidArgument(
                "unexpected allocation result".into(),
            ));
        };
        self.leader_view(term).ids = (first, first + n as u64);
        Ok(())
    }

    fn region_info(&self, ls: Option<&LeaderState>, r: &Region) -> RegionInfo {
        let stats = ls.and_then(|l| l.regions.get(&r.id));
        RegionInfo {
            region: Some(r.clone()),
            leader: stats.and_then(|s| s.leader),
            approximate_size_bytes: stats.map(|s| s.approximate_size_bytes).unwrap_or(0),
            down_peers: stats.map(|s| s.down_peers.clone()).unwrap_or_default(),
        }
    }

    /// Linearizable read of the state and the leader's view.
    async fn read<T>(&self, f: impl FnOnce(&DirectoryState, &LeaderState) -> T) -> Result<T> {
        self.node.read_barrier().await?;
        let term = self.leading_term().await?;
        let ls = self.leader_view(term);
        let state = self.state();
        Ok(f(&state, &ls))
    }

    /// Records a region report; returns the operator step for its leader,
    /// if there is one.
    pub async fn handle_region_report(
        &self,
        report: RegionReport,
    ) -> Result<Option<RegionHeartbeatResponse>> {
        let started = Instant::now();
        let term = self.leading_term().await?;
        let Some(region) = report.region.clone() else {
            return Err(Error::InvalidArgument(
                "region report without a region".into(),
            ));
        };
        let mut batch = vec![region.clone()];
        batch.extend(report.split_siblings.iter().cloned());
        let plan = self.state().plan_regions(batch);
        if let Ok(fresh) = plan {
            match self
                .node
                .propose(Cmd::PutRegions(RegionBatch { regions: fresh }))
                .await
            {
                Ok(_) | Err(Error::Stale(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // A report older than what is recorded says nothing useful.
        let recorded = self.state().regions.get(&region.id).cloned();
        match &recorded {
            Some(known) if known.region_epoch != region.region_epoch => return Ok(None),
            None => return Ok(None),
            _ => {}
        }
        let mut ls = self.leader_view(term);
        ls.regions.insert(
            region.id,
            RegionStats {
                leader: report.leader,
                term: report.term,
                approximate_size_bytes: report.approximate_size_bytes,
                down_peers: report.down_peers.clone(),
                progress: report.progress.clone(),
                seen: Instant::now(),
            },
        );
        let mut reply = None;
        if let Some(op) = ls.operators.get_mut(&region.id) {
            let op_id = op.id.clone();
            let (outcome, step) = op.advance(&region, report.leader.as_ref(), &report.progress);
            match outcome {
                Outcome::Running => {
                    reply = step.map(|s| RegionHeartbeatResponse {
                        header: None,
                        region_id: region.id,
                        region_epoch: region.region_epoch,
                        step: Some(s.to_proto()),
                        operator: op_id,
                    });
                }
                done => {
                    let kind = op.kind;
                    let op = op.clone();
                    let outcome = if done == Outcome::Finished {
                        "finished"
                    } else {
                        "timed_out"
                    };
                    tracing::info!(region_id = region.id, operator = %op.id, outcome, "operator ended");
                    ls.operators.remove(&region.id);
                    metrics::counter!(m::OPERATORS_TOTAL, "kind" => kind, "outcome" => outcome)
                        .increment(1);
                }
            }
        }
        metrics::histogram!(m::HEARTBEAT_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(reply.map(|mut r| {
            r.header = self.header(None);
            r
        }))
    }

    /// Starts an admin operator on a region. An operator the balance
    /// schedulers started is cancelled in its favour (an admin knows what it
    /// wants; whatever a cancelled balance leaves behind, such as an extra
    /// learner, the repair rule tidies up); any other operator (repair,
    /// placement, a split, another admin's) makes the request fail.
    fn admin_operator(
        &self,
        term: u64,
        region_id: u64,
        kind: &'static str,
        steps: Vec<Step>,
    ) -> Result<String> {
        let mut ls = self.leader_view(term);
        if let Some(op) = ls.operators.get(&region_id) {
            if !scheduler::is_balance(op.kind) {
                return Err(Error::InvalidArgument(format!(
                    "region {region_id} already has operator {} in progress",
                    op.id
                )));
            }
            tracing::info!(region_id, operator = %op.id, "operator cancelled for an admin operator");
            metrics::counter!(m::OPERATORS_TOTAL, "kind" => op.kind, "outcome" => "cancelled")
                .increment(1);
            ls.operators.remove(&region_id);
        }
        let id = format!("{kind}-{}", ls.next_operator);
        ls.next_operator += 1;
        ls.operators.insert(
            region_id,
            Operator::new(
                id.clone(),
                region_id,
                kind,
                steps,
                self.schedule.operator_timeout,
            ),
        );
        metrics::counter!(m::OPERATORS_TOTAL, "kind" => kind, "outcome" => "created").increment(1);
        Ok(id)
    }

    /// One round of the scheduler (leader only).
    pub async fn schedule_once(&self) -> Result<()> {
        let term = self.leading_term().await?;
        if self.state().meta.cluster_id == 0 {
            self.node
                .propose(Cmd::InitCluster(rand::random::<u64>() | 1))
                .await?;
        }
        if !self.state().meta.bootstrapped {
            return Ok(());
        }
        // Keep ids at hand so planning never waits on Raft.
        self.keep_ids_at_hand(term, SCHEDULER_SPARE_IDS).await?;
        let decisions = {
            let state = self.state();
            let mut ls = self.leader_view(term);
            let mut ids = ls.ids;
            let d = scheduler::plan(&state, &mut ls, &self.schedule, &mut || {
                (ids.0 < ids.1).then(|| {
                    ids.0 += 1;
                    ids.0 - 1
                })
            });
            ls.ids = ids;
            // Gauges: regions, and stores by state.
            metrics::gauge!(m::REGIONS).set(state.regions.len() as f64);
            let mut by_state: BTreeMap<&'static str, usize> = BTreeMap::new();
            for s in state.stores.values() {
                *by_state
                    .entry(state_name(ls.store_state(s, &self.schedule.lifecycle)))
                    .or_default() += 1;
            }
            for name in ["up", "disconnected", "down", "offline", "tombstone"] {
                metrics::gauge!(m::STORES, "state" => name)
                    .set(by_state.get(name).copied().unwrap_or(0) as f64);
            }
            d
        };
        for kind in &decisions.created {
            metrics::counter!(m::OPERATORS_TOTAL, "kind" => *kind, "outcome" => "created")
                .increment(1);
        }
        for kind in &decisions.cancelled {
            metrics::counter!(m::OPERATORS_TOTAL, "kind" => *kind, "outcome" => "cancelled")
                .increment(1);
        }
        for cmd in decisions.commands {
            if let Err(e) = self.node.propose(cmd).await {
                tracing::debug!(error = %e, "scheduler command not applied");
            }
        }
        Ok(())
    }

    pub async fn cluster_status(&self) -> Result<ClusterStatusResponse> {
        self.node.read_barrier().await?;
        let info = self.node.raft_info().await?.ok_or(Error::NotLeader(None))?;
        let term = self.leading_term().await?;
        let ls = self.leader_view(term);
        let state = self.state();
        let members = info
            .region
            .peers
            .iter()
            .map(|p| Member {
                id: p.id,
                address: self.node.resolver().address(p.id).unwrap_or_default(),
                is_leader: info.leader.map(|l| l.id) == Some(p.id),
                is_learner: p.role == PeerRole::Learner as i32,
            })
            .collect();
        let mut stores: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        for s in state.stores.values() {
            *stores
                .entry(state_name(ls.store_state(s, &self.schedule.lifecycle)).to_string())
                .or_default() += 1;
        }
        let healthy = |p: &Peer| {
            state
                .stores
                .get(&p.store_id)
                .map(|s| ls.store_state(s, &self.schedule.lifecycle))
                .is_some_and(|st| matches!(st, StoreState::Up | StoreState::Disconnected))
        };
        let under = state
            .regions
            .values()
            .filter(|r| {
                r.peers
                    .iter()
                    .filter(|p| p.role == PeerRole::Voter as i32 && healthy(p))
                    .count()
                    < self.schedule.max_replicas
            })
            .count();
        Ok(ClusterStatusResponse {
            header: self.header(None),
            cluster_id: state.meta.cluster_id,
            bootstrapped: state.meta.bootstrapped,
            members,
            regions: state.regions.len() as u32,
            stores,
            operators: ls.operators.values().map(Operator::info).collect(),
            under_replicated_regions: under as u32,
        })
    }
}

#[derive(Clone)]
pub struct DirectoryService {
    core: Arc<Core>,
}

impl DirectoryService {
    pub fn new(core: Arc<Core>) -> Self {
        DirectoryService { core }
    }

    pub fn into_server(self) -> DirectoryServer<Self> {
        DirectoryServer::new(self)
    }
}

/// Builds a response from a result: errors go in the header.
macro_rules! respond {
    ($core:expr, $result:expr, $resp:ident { $($field:ident: $value:expr),* $(,)? }) => {{
        match $result {
            Ok(_v) => {
                #[allow(clippy::redundant_closure_call)]
                let resp = $resp { header: $core.header(None), $($field: ($value)(_v)),* };
                Ok(Response::new(resp))
            }
            Err(e) => {
                #[allow(clippy::needless_update)]
                let resp = $resp { header: $core.header(Some(&e)), ..Default::default() };
                Ok(Response::new(resp))
            }
        }
    }};
}

#[tonic::async_trait]
impl Directory for DirectoryService {
    async fn is_bootstrapped(
        &self,
        _r: Request<IsBootstrappedRequest>,
    ) -> Result<Response<IsBootstrappedResponse>, Status> {
        let r = self.core.read(|s, _| s.meta.bootstrapped).await;
        respond!(
            self.core,
            r,
            IsBootstrappedResponse {
                bootstrapped: |b| b
            }
        )
    }

    async fn bootstrap(
        &self,
        r: Request<BootstrapRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let r = self.core.node.propose(Cmd::Bootstrap(r.into_inner())).await;
        respond!(self.core, r, BootstrapResponse {})
    }

    async fn alloc_ids(
        &self,
        r: Request<AllocIdsRequest>,
    ) -> Result<Response<AllocIdsResponse>, Status> {
        let count = r.into_inner().count;
        let r = if count == 0 || count > 100_000 {
            Err(Error::InvalidArgument(format!(
                "cannot allocate {count} ids (1 to 100000)"
            )))
        } else {
            self.core.alloc_ids(count).await
        };
        respond!(
            self.core,
            r,
            AllocIdsResponse {
                first: |f| f,
                count: |_| count
            }
        )
    }

    async fn put_store(
        &self,
        r: Request<PutStoreRequest>,
    ) -> Result<Response<PutStoreResponse>, Status> {
        let r = match r.into_inner().store {
            Some(s) => self.core.node.propose(Cmd::PutStore(s)).await,
            None => Err(Error::InvalidArgument("no store given".into())),
        };
        respond!(self.core, r, PutStoreResponse {})
    }

    async fn get_store(
        &self,
        r: Request<GetStoreRequest>,
    ) -> Result<Response<GetStoreResponse>, Status> {
        let id = r.into_inner().store_id;
        let r = self
            .core
            .read(|s, _| s.stores.get(&id).cloned())
            .await
            .and_then(|s| s.ok_or_else(|| Error::NotFound(format!("store {id}"))));
        respond!(self.core, r, GetStoreResponse { store: Some })
    }

    async fn list_stores(
        &self,
        r: Request<ListStoresRequest>,
    ) -> Result<Response<ListStoresResponse>, Status> {
        let include_tombstones = r.into_inner().include_tombstones;
        let lifecycle = self.core.schedule.lifecycle.clone();
        let r = self
            .core
            .read(|s, ls| {
                s.stores
                    .values()
                    .filter_map(|st| {
                        let state = ls.store_state(st, &lifecycle);
                        if state == StoreState::Tombstone && !include_tombstones {
                            return None;
                        }
                        let runtime = ls.stores.get(&st.id);
                        Some(StoreInfo {
                            store: Some(tessera_proto::metapb::Store {
                                state: state as i32,
                                ..st.clone()
                            }),
                            stats: runtime.map(|r| r.stats),
                            seconds_since_heartbeat: runtime
                                .map(|r| r.last_heartbeat.elapsed().as_secs())
                                .unwrap_or(0),
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        respond!(self.core, r, ListStoresResponse { stores: |v| v })
    }

    async fn store_heartbeat(
        &self,
        r: Request<StoreHeartbeatRequest>,
    ) -> Result<Response<StoreHeartbeatResponse>, Status> {
        let started = Instant::now();
        let stats = r.into_inner().stats.unwrap_or_default();
        let r = match self.core.leading_term().await {
            Ok(term) => {
                if !self.core.state().stores.contains_key(&stats.store_id) {
                    Err(Error::NotFound(format!(
                        "store {}; register it first",
                        stats.store_id
                    )))
                } else {
                    self.core.leader_view(term).stores.insert(
                        stats.store_id,
                        StoreRuntime {
                            stats,
                            last_heartbeat: Instant::now(),
                        },
                    );
                    Ok(())
                }
            }
            Err(e) => Err(e),
        };
        metrics::histogram!(m::HEARTBEAT_SECONDS).record(started.elapsed().as_secs_f64());
        respond!(self.core, r, StoreHeartbeatResponse {})
    }

    type RegionHeartbeatStream = ReceiverStream<Result<RegionHeartbeatResponse, Status>>;

    async fn region_heartbeat(
        &self,
        r: Request<Streaming<RegionHeartbeatRequest>>,
    ) -> Result<Response<Self::RegionHeartbeatStream>, Status> {
        let mut inbound = r.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let core = self.core.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let Some(report) = req.report else { continue };
                match core.handle_region_report(report).await {
                    Ok(Some(resp)) => {
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e @ (Error::NotLeader(_) | Error::Shutdown)) => {
                        let resp = RegionHeartbeatResponse {
                            header: core.header(Some(&e)),
                            ..Default::default()
                        };
                        let _ = tx.send(Ok(resp)).await;
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "region report not recorded"),
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn ask_split(
        &self,
        r: Request<AskSplitRequest>,
    ) -> Result<Response<AskSplitResponse>, Status> {
        let req = r.into_inner();
        let peers = req.region.map(|r| r.peers.len()).unwrap_or(0) as u32;
        let per = 1 + peers;
        let n = req.split_count.max(1);
        let r = self.core.alloc_ids(per * n).await.map(|first| {
            (0..n as u64)
                .map(|i| {
                    let base = first + i * per as u64;
                    SplitIds {
                        region_id: base,
                        peer_ids: (1..per as u64).map(|j| base + j).collect(),
                    }
                })
                .collect::<Vec<_>>()
        });
        respond!(self.core, r, AskSplitResponse { ids: |v| v })
    }

    async fn get_region(
        &self,
        r: Request<GetRegionRequest>,
    ) -> Result<Response<GetRegionResponse>, Status> {
        let key = r.into_inner().key;
        let core = self.core.clone();
        let r = self
            .core
            .read(|s, ls| {
                s.region_for_key(&key)
                    .map(|r| core.region_info(Some(ls), r))
            })
            .await
            .and_then(|r| r.ok_or(Error::NotBootstrapped));
        respond!(self.core, r, GetRegionResponse { region: Some })
    }

    async fn get_region_by_id(
        &self,
        r: Request<GetRegionByIdRequest>,
    ) -> Result<Response<GetRegionResponse>, Status> {
        let id = r.into_inner().region_id;
        let core = self.core.clone();
        let r = self
            .core
            .read(|s, ls| s.regions.get(&id).map(|r| core.region_info(Some(ls), r)))
            .await
            .and_then(|r| r.ok_or_else(|| Error::NotFound(format!("region {id}"))));
        respond!(self.core, r, GetRegionResponse { region: Some })
    }

    async fn scan_regions(
        &self,
        r: Request<ScanRegionsRequest>,
    ) -> Result<Response<ScanRegionsResponse>, Status> {
        let req = r.into_inner();
        let core = self.core.clone();
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit as usize
        };
        let r = self
            .core
            .read(|s, ls| {
                s.overlapping(&req.start_key, &req.end_key)
                    .into_iter()
                    .take(limit)
                    .map(|r| core.region_info(Some(ls), r))
                    .collect::<Vec<_>>()
            })
            .await;
        respond!(self.core, r, ScanRegionsResponse { regions: |v| v })
    }

    async fn create_keyspace(
        &self,
        r: Request<CreateKeyspaceRequest>,
    ) -> Result<Response<CreateKeyspaceResponse>, Status> {
        let req = r.into_inner();
        let r = if req.kind == KeyspaceKind::Hash as i32 && !(1..=4096).contains(&req.regions) {
            Err(Error::InvalidArgument(format!(
                "a hash keyspace needs 1 to 4096 regions, not {}",
                req.regions
            )))
        } else {
            match self
                .core
                .node
                .propose(Cmd::CreateKeyspace(Keyspace {
                    id: 0,
                    name: req.name,
                    kind: req.kind,
                    initial_regions: req.regions,
                }))
                .await
            {
                Ok(Applied::Keyspace(k)) => Ok(k),
                Ok(_) => Err(Error::InvalidArgument("unexpected result".into())),
                Err(e) => Err(e),
            }
        };
        respond!(self.core, r, CreateKeyspaceResponse { keyspace: Some })
    }

    async fn get_keyspace(
        &self,
        r: Request<GetKeyspaceRequest>,
    ) -> Result<Response<GetKeyspaceResponse>, Status> {
        let name = r.into_inner().name;
        let r = self
            .core
            .read(|s, _| s.keyspace(&name))
            .await
            .and_then(|k| k.ok_or_else(|| Error::NotFound(format!("keyspace {name:?}"))));
        respond!(self.core, r, GetKeyspaceResponse { keyspace: Some })
    }

    async fn list_keyspaces(
        &self,
        _r: Request<ListKeyspacesRequest>,
    ) -> Result<Response<ListKeyspacesResponse>, Status> {
        let r = self
            .core
            .read(|s, _| {
                let mut all = vec![s.keyspace("default").expect("default keyspace")];
                all.extend(s.keyspaces.values().cloned());
                all
            })
            .await;
        respond!(self.core, r, ListKeyspacesResponse { keyspaces: |v| v })
    }

    async fn split_region(
        &self,
        r: Request<SplitRegionRequest>,
    ) -> Result<Response<SplitRegionResponse>, Status> {
        let req = r.into_inner();
        let r = async {
            let term = self.core.leading_term().await?;
            let region = self
                .core
                .state()
                .regions
                .get(&req.region_id)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("region {}", req.region_id)))?;
            for k in &req.split_keys {
                let inside = k.as_slice() > region.start_key.as_slice()
                    && (region.end_key.is_empty() || k.as_slice() < region.end_key.as_slice());
                if !inside {
                    return Err(Error::InvalidArgument(format!(
                        "split key {} is not inside region {}",
                        tessera_proto::escape(k),
                        region.id
                    )));
                }
            }
            let mut keys = req.split_keys.clone();
            keys.sort();
            keys.dedup();
            let from_version = region.region_epoch.unwrap_or_default().version;
            self.core.admin_operator(
                term,
                region.id,
                "split",
                vec![Step::Split { keys, from_version }],
            )
        }
        .await;
        respond!(self.core, r, SplitRegionResponse { operator: |id| id })
    }

    async fn move_region(
        &self,
        r: Request<MoveRegionRequest>,
    ) -> Result<Response<MoveRegionResponse>, Status> {
        let req = r.into_inner();
        let r = async {
            let term = self.core.leading_term().await?;
            let (region, target) = {
                let state = self.core.state();
                let region = state
                    .regions
                    .get(&req.region_id)
                    .cloned()
                    .ok_or_else(|| Error::NotFound(format!("region {}", req.region_id)))?;
                (region, state.stores.get(&req.to_store_id).cloned())
            };
            if !region.peers.iter().any(|p| p.store_id == req.from_store_id) {
                return Err(Error::InvalidArgument(format!(
                    "region {} has no replica on store {}",
                    region.id, req.from_store_id
                )));
            }
            if region.peers.iter().any(|p| p.store_id == req.to_store_id) {
                return Err(Error::InvalidArgument(format!(
                    "region {} already has a replica on store {}",
                    region.id, req.to_store_id
                )));
            }
            let target =
                target.ok_or_else(|| Error::NotFound(format!("store {}", req.to_store_id)))?;
            let state = self
                .core
                .leader_view(term)
                .store_state(&target, &self.core.schedule.lifecycle);
            if state != StoreState::Up {
                return Err(Error::InvalidArgument(format!(
                    "store {} is {} and cannot take a replica",
                    target.id,
                    state_name(state)
                )));
            }
            let peer_id = self.core.alloc_ids(1).await?;
            self.core.admin_operator(
                term,
                region.id,
                "move",
                vec![
                    Step::AddLearner {
                        store_id: req.to_store_id,
                        peer_id,
                    },
                    Step::PromoteLearner {
                        store_id: req.to_store_id,
                    },
                    Step::RemovePeer {
                        store_id: req.from_store_id,
                    },
                ],
            )
        }
        .await;
        respond!(self.core, r, MoveRegionResponse { operator: |id| id })
    }

    async fn transfer_leader(
        &self,
        r: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let req = r.into_inner();
        let r = async {
            let term = self.core.leading_term().await?;
            let region = self
                .core
                .state()
                .regions
                .get(&req.region_id)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("region {}", req.region_id)))?;
            let peer = region
                .peers
                .iter()
                .find(|p| p.store_id == req.to_store_id)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "region {} has no replica on store {}",
                        region.id, req.to_store_id
                    ))
                })?;
            if peer.role != PeerRole::Voter as i32 {
                return Err(Error::InvalidArgument(format!(
                    "the replica of region {} on store {} is a learner and cannot lead",
                    region.id, req.to_store_id
                )));
            }
            self.core.admin_operator(
                term,
                region.id,
                "transfer-leader",
                vec![Step::TransferLeader {
                    to_store_id: req.to_store_id,
                }],
            )
        }
        .await;
        respond!(self.core, r, TransferLeaderResponse { operator: |id| id })
    }

    async fn remove_store(
        &self,
        r: Request<RemoveStoreRequest>,
    ) -> Result<Response<RemoveStoreResponse>, Status> {
        let id = r.into_inner().store_id;
        let r = async {
            let store = self
                .core
                .state()
                .stores
                .get(&id)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("store {id}")))?;
            match StoreState::try_from(store.state).unwrap_or(StoreState::Up) {
                StoreState::Tombstone => {
                    return Err(Error::InvalidArgument(format!(
                        "store {id} is already removed"
                    )))
                }
                StoreState::Offline => return Ok(()),
                _ => {}
            }
            self.core
                .node
                .propose(Cmd::SetStoreState(SetStoreState {
                    store_id: id,
                    state: StoreState::Offline as i32,
                }))
                .await
                .map(|_| ())
        }
        .await;
        respond!(self.core, r, RemoveStoreResponse {})
    }

    async fn cluster_status(
        &self,
        _r: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        match self.core.cluster_status().await {
            Ok(s) => Ok(Response::new(s)),
            Err(e) => Ok(Response::new(ClusterStatusResponse {
                header: self.core.header(Some(&e)),
                ..Default::default()
            })),
        }
    }

    async fn add_member(
        &self,
        r: Request<AddMemberRequest>,
    ) -> Result<Response<AddMemberResponse>, Status> {
        let req = r.into_inner();
        let r = async {
            self.core.leading_term().await?;
            if req.id == 0 || req.address.is_empty() {
                return Err(Error::InvalidArgument(
                    "a member needs an id and an address".into(),
                ));
            }
            self.core.node.add_member(req.id, req.address).await
        }
        .await;
        respond!(self.core, r, AddMemberResponse {})
    }

    async fn remove_member(
        &self,
        r: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        let id = r.into_inner().id;
        let r = self.core.node.remove_member(id).await;
        respond!(self.core, r, RemoveMemberResponse {})
    }
}
