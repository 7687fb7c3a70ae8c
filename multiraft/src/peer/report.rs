//! What a peer reports of itself: its [`RegionInfo`] (for the store's
//! periodic tasks, the directory and `tessera region`), and its followers'
//! replication progress when it leads.

use super::Peer;
use crate::mailbox::{PeerProgress, RegionInfo};

impl<O: Send + 'static> Peer<O> {
    /// Replication progress of the other peers (leader only).
    pub fn progress(&self) -> Vec<PeerProgress> {
        if !self.is_leader() {
            return vec![];
        }
        let mut out: Vec<PeerProgress> = self
            .raw_node
            .raft
            .prs()
            .iter()
            .map(|(id, pr)| PeerProgress {
                peer_id: *id,
                matched: pr.matched,
                recent_active: pr.recent_active,
            })
            .collect();
        out.sort_by_key(|p| p.peer_id);
        out
    }

    pub fn info(&self) -> RegionInfo {
        let raft = &self.raw_node.raft;
        RegionInfo {
            region: self.region().clone(),
            peer_id: self.peer_id(),
            leader: self.leader(),
            is_leader: self.is_leader(),
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.storage().applied_index(),
            last_index: raft.raft_log.last_index(),
            truncated_index: self.storage().truncated_index(),
            log_bytes: self.storage().log_bytes(),
            applied_bytes: self.applied_bytes,
            initialized: self.is_initialized(),
            progress: self.progress(),
            split_siblings: self.split_siblings.clone(),
            merge_state: self.merge.state.clone(),
            merge_record: self.merge.record.clone(),
            hibernating: self.is_asleep(),
        }
    }
}
