//! Handing a region's leadership to another voter (admin command; a store
//! on SIGTERM does it for every region it leads, see `StoreNode`).
//!
//! The leader stops accepting proposals, brings the target up to date and
//! tells it to campaign at once; its lease ends when the transfer starts.
//! A learner cannot lead: a transfer to one is refused.

use std::time::{Duration, Instant};

use tessera_multiraft::mailbox::PollerMsg;
use tessera_multiraft::region;
use tessera_proto::metapb::{Peer, PeerRole};

use crate::admin::AdminApi;
use crate::{Error, Result};

/// Moves leadership of `region_id` (led here) to its peer on `to_store` and
/// waits until that peer leads. Returns the new leader.
pub async fn transfer_leader(api: &AdminApi, region_id: u64, to_store: u64) -> Result<Peer> {
    let info = api.region_info(region_id).await?;
    let target = *region::find_peer_on_store(&info.region, to_store).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "region {region_id} has no peer on store {to_store}"
        ))
    })?;
    if PeerRole::try_from(target.role).unwrap_or(PeerRole::Voter) != PeerRole::Voter {
        return Err(Error::InvalidArgument(format!(
            "peer {} of region {region_id} on store {to_store} is a learner and cannot lead; promote it first",
            target.id
        )));
    }
    if info.leader.map(|l| l.id) == Some(target.id) {
        return Ok(target);
    }
    let info = api.leader_info(region_id).await?;
    // A peer the leader has not heard from lately could not take over.
    if info
        .progress
        .iter()
        .any(|p| p.peer_id == target.id && !p.recent_active)
    {
        return Err(Error::InvalidArgument(format!(
            "peer {} of region {region_id} on store {to_store} is not responding; not handing it leadership",
            target.id
        )));
    }
    api.mailbox().send(PollerMsg::TransferLeader {
        region_id,
        to_peer: target.id,
    })?;
    let deadline = Instant::now() + api.timeout();
    let mut next_nudge = Instant::now() + Duration::from_millis(500);
    loop {
        let now_info = api.region_info(region_id).await?;
        if now_info.leader.map(|l| l.id) == Some(target.id) {
            return Ok(target);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(api.timeout()));
        }
        // raft-rs abandons a transfer after an election timeout; ask again.
        if Instant::now() >= next_nudge && now_info.is_leader && now_info.term == info.term {
            api.mailbox().send(PollerMsg::TransferLeader {
                region_id,
                to_peer: target.id,
            })?;
            next_nudge = Instant::now() + Duration::from_millis(500);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
