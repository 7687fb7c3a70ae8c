//! [`Core`]: what the directory's service, its heartbeat streams and its
//! scheduler share — the Raft node, the scheduling settings and the
//! leader's in-memory view — and the reads every handler makes.
//!
//! Only the leader answers. [`Core::leading_term`] says whether this member
//! leads (or names the leader to redirect to); [`Core::leader_view`] hands
//! out the in-memory view of that term, reset when the term moves, so that
//! nothing a former leader learned is taken for current. Reads are
//! linearizable: a ReadIndex barrier first ([`Core::read`]).
//!
//! The rest of `Core` lives by feature: [`crate::ids`] (the id allocator),
//! [`crate::heartbeats`], [`crate::admin`] (operators an operator asks
//! for), [`crate::status`], [`crate::join`] (cluster identity, store
//! registration, join tokens) and [`crate::round`] (the scheduler's round).

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use tessera_proto::directorypb::*;
use tessera_proto::metapb::Region;

use crate::join::JoinSettings;
use crate::leader::LeaderState;
use crate::node::DirectoryNode;
use crate::scheduler::ScheduleConfig;
use crate::state::DirectoryState;
use crate::{Error, Result};

/// What the service and the scheduler share.
pub struct Core {
    pub node: Arc<DirectoryNode>,
    pub schedule: ScheduleConfig,
    pub(crate) join: JoinSettings,
    leader: Mutex<LeaderState>,
    /// Serializes id allocation (which may wait on Raft).
    pub(crate) alloc: tokio::sync::Mutex<()>,
}

impl Core {
    pub fn new(
        node: Arc<DirectoryNode>,
        schedule: ScheduleConfig,
        join: JoinSettings,
    ) -> Arc<Self> {
        Arc::new(Core {
            node,
            schedule,
            join,
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
    pub(crate) fn state(&self) -> parking_lot::RwLockReadGuard<'_, DirectoryState> {
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

    pub(crate) fn header(&self, err: Option<&Error>) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.state().meta.cluster_id,
            error: err.map(Error::to_proto),
        })
    }

    pub(crate) fn region_info(&self, ls: Option<&LeaderState>, r: &Region) -> RegionInfo {
        let stats = ls.and_then(|l| l.regions.get(&r.id));
        RegionInfo {
            region: Some(r.clone()),
            leader: stats.and_then(|s| s.leader),
            approximate_size_bytes: stats.map(|s| s.approximate_size_bytes).unwrap_or(0),
            down_peers: stats.map(|s| s.down_peers.clone()).unwrap_or_default(),
        }
    }

    /// Linearizable read of the state and the leader's view.
    pub(crate) async fn read<T>(
        &self,
        f: impl FnOnce(&DirectoryState, &LeaderState) -> T,
    ) -> Result<T> {
        self.node.read_barrier().await?;
        let term = self.leading_term().await?;
        let ls = self.leader_view(term);
        let state = self.state();
        Ok(f(&state, &ls))
    }
}
