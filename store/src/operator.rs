//! Carrying out the directory's operator steps on regions this store
//! leads. A step comes with the epoch it was planned for; if the region has
//! moved on since, the step is ignored (the directory plans again from the
//! next heartbeat). Steps are idempotent from the directory's point of view:
//! it re-sends a step until a heartbeat shows it done.

use std::time::Duration;

use tessera_multiraft::region;
use tessera_proto::adminpb::ChangePeerKind;
use tessera_proto::directorypb::operator_step::Step;
use tessera_proto::directorypb::RegionHeartbeatResponse;
use tessera_proto::metapb::PeerRole;

use crate::admin::AdminApi;
use crate::{conf_change, merge, split, transfer_leader, Error};

/// How long one step may take here; the directory sends it again if it
/// is still wanted.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one operator step; failures are logged (the directory retries).
pub async fn execute(admin: &std::sync::Arc<AdminApi>, resp: RegionHeartbeatResponse) {
    let (region_id, operator) = (resp.region_id, resp.operator.clone());
    if tokio::time::timeout(STEP_TIMEOUT, execute_step(admin, resp))
        .await
        .is_err()
    {
        tracing::info!(region_id, %operator, "operator step did not finish in time");
    }
}

async fn execute_step(admin: &std::sync::Arc<AdminApi>, resp: RegionHeartbeatResponse) {
    let region_id = resp.region_id;
    let Some(step) = resp.step.and_then(|s| s.step) else {
        return;
    };
    let info = match admin.leader_info(region_id).await {
        Ok(i) => i,
        Err(_) => return,
    };
    if Some(region::epoch(&info.region)) != resp.region_epoch {
        tracing::debug!(region_id, operator = %resp.operator, "operator step planned for another epoch; ignored");
        return;
    }
    let result = match step {
        Step::AddLearner(s) => conf_change::change_peer(
            admin,
            region_id,
            ChangePeerKind::AddLearner,
            s.store_id,
            s.peer_id,
        )
        .await
        .map(|_| ()),
        Step::PromoteLearner(s) => conf_change::change_peer(
            admin,
            region_id,
            ChangePeerKind::PromoteLearner,
            s.store_id,
            0,
        )
        .await
        .map(|_| ()),
        Step::RemovePeer(s) => {
            let own = region::find_peer_on_store(&info.region, admin.store_id()).map(|p| p.id);
            let target = region::find_peer_on_store(&info.region, s.store_id).map(|p| p.id);
            if own.is_some() && own == target {
                // The leader is the peer to remove: hand leadership to the
                // most caught-up voter that answers; the new leader gets the
                // step next.
                let matched = |id: u64| {
                    info.progress
                        .iter()
                        .find(|p| p.peer_id == id && p.recent_active)
                        .map(|p| p.matched)
                };
                match info
                    .region
                    .peers
                    .iter()
                    .filter(|p| p.store_id != admin.store_id() && p.role == PeerRole::Voter as i32)
                    .filter(|p| matched(p.id).is_some())
                    .max_by_key(|p| matched(p.id))
                {
                    Some(p) => transfer_leader::transfer_leader(admin, region_id, p.store_id)
                        .await
                        .map(|_| ()),
                    None => Err(Error::InvalidArgument(
                        "no other voter that answers can take the lead".into(),
                    )),
                }
            } else {
                conf_change::change_peer(
                    admin,
                    region_id,
                    ChangePeerKind::RemovePeer,
                    s.store_id,
                    0,
                )
                .await
                .map(|_| ())
            }
        }
        Step::TransferLeader(s) => {
            transfer_leader::transfer_leader(admin, region_id, s.to_store_id)
                .await
                .map(|_| ())
        }
        Step::Split(s) => split::split_region(admin, region_id, s.split_keys)
            .await
            .map(|_| ()),
        Step::Merge(s) => merge::start(admin, region_id, s.target_region_id).await,
    };
    match result {
        Ok(()) => tracing::info!(region_id, operator = %resp.operator, "operator step done"),
        Err(e) => {
            tracing::info!(region_id, operator = %resp.operator, error = %e, "operator step failed")
        }
    }
}
