//! What the directory reports about the cluster: `ClusterStatus` (members,
//! regions, store states, operators in flight, under-replicated regions)
//! and the store list with each store's lifecycle state and last
//! statistics; the alarms of live stores (NOSPACE, SLOW_DISK) from their
//! last heartbeats. Both are linearizable reads on the leader.

use tessera_common::clock;
use tessera_proto::directorypb::*;
use tessera_proto::metapb::{PeerRole, StoreState};

use crate::core::Core;
use crate::leader::state_name;
use crate::scheduler::operator::Operator;
use crate::{Error, Result};

impl Core {
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
        // Up or only briefly silent.
        let live = |store_id: u64| {
            state
                .stores
                .get(&store_id)
                .map(|s| ls.store_state(s, &self.schedule.lifecycle))
                .is_some_and(|st| matches!(st, StoreState::Up | StoreState::Disconnected))
        };
        let under = state
            .regions
            .values()
            .filter(|r| {
                r.peers
                    .iter()
                    .filter(|p| p.role == PeerRole::Voter as i32 && live(p.store_id))
                    .count()
                    < self.schedule.max_replicas
            })
            .count();
        let mut alarms: Vec<Alarm> = ls
            .stores
            .iter()
            .filter(|(id, _)| live(**id))
            .flat_map(|(id, rt)| store_alarms(*id, &rt.stats))
            .collect();
        alarms.sort_by(|a, b| (a.store_id, &a.kind).cmp(&(b.store_id, &b.kind)));
        Ok(ClusterStatusResponse {
            header: self.header(None),
            cluster_id: state.meta.cluster_id,
            bootstrapped: state.meta.bootstrapped,
            members,
            regions: state.regions.len() as u32,
            stores,
            operators: ls.operators.values().map(Operator::info).collect(),
            under_replicated_regions: under as u32,
            alarms,
        })
    }

    /// Every store with its state as the leader sees it (tombstones only
    /// with `include_tombstones`).
    pub async fn list_stores(&self, include_tombstones: bool) -> Result<Vec<StoreInfo>> {
        let lifecycle = self.schedule.lifecycle.clone();
        self.read(|s, ls| {
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
                            .map(|r| {
                                clock::now()
                                    .saturating_duration_since(r.last_heartbeat)
                                    .as_secs()
                            })
                            .unwrap_or(0),
                    })
                })
                .collect::<Vec<_>>()
        })
        .await
    }
}

/// The alarms a store's last heartbeat raises.
fn store_alarms(store_id: u64, s: &StoreStats) -> Vec<Alarm> {
    let mut out = vec![];
    if s.low_space {
        out.push(Alarm {
            store_id,
            kind: "NOSPACE".into(),
            message: format!(
                "{} MiB free for data of {} MiB: below disk.low_space_mib, user writes to its \
                 regions are refused; free or add space",
                s.available_bytes >> 20,
                s.capacity_bytes >> 20
            ),
        });
    }
    if s.degraded {
        out.push(Alarm {
            store_id,
            kind: "SLOW_DISK".into(),
            message: "poller rounds were slow lately: leaderships handed away, nothing placed \
                      on it"
                .into(),
        });
    }
    out
}
