//! The id allocator as the leader serves it: ids for regions, peers and
//! stores come from batches reserved through Raft ([`ID_BATCH`] at a time),
//! so most requests never wait on the log. A batch reserved by a former
//! leader is lost, never handed out twice: the leader view that holds it
//! is reset when the term moves.

use tessera_proto::directorypb::directory_command::Cmd;

use crate::core::Core;
use crate::state::Applied;
use crate::{Error, Result};

/// Ids reserved through Raft at a time.
const ID_BATCH: u32 = 1000;
/// Ids the scheduler keeps reserved so a round never waits on Raft for one.
pub(crate) const SCHEDULER_SPARE_IDS: u64 = 256;
/// The most ids one request may take.
pub const MAX_IDS_PER_REQUEST: u32 = 100_000;

impl Core {
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
    pub(crate) async fn keep_ids_at_hand(&self, term: u64, spare: u64) -> Result<()> {
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
}
