//! Heartbeats: what stores tell the leader about themselves and about the
//! regions they lead.
//!
//! A store heartbeat refreshes the store's statistics and its last-seen
//! time (from which the store lifecycle Up → Disconnected → Down follows);
//! its reply names the regions the store leads that have an operator, so
//! that a hibernating one reports now rather than at its next low-rate
//! report.
//! A region report puts a region through Raft only when its epoch is newer
//! than the recorded one (a split's siblings with it); sizes, leaders and
//! replication progress stay in the leader's memory, and a report of an
//! older Raft term than the last one recorded (a deposed leader that has
//! not heard of its successor) changes none of them. The reply carries the
//! next step of the region's operator, if it has one that can run.

use std::time::Instant;

use tessera_common::clock;
use tessera_proto::directorypb::directory_command::Cmd;
use tessera_proto::directorypb::*;

use crate::core::Core;
use crate::leader::{RegionStats, StoreRuntime};
use crate::scheduler::operator::Outcome;
use crate::{metrics as m, Error, Result};

impl Core {
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
        // Whether this report changed what the directory records (a split,
        // a merge, a membership change): most reports change nothing.
        let mut recorded_now = false;
        if let Ok(fresh) = plan {
            recorded_now = !fresh.is_empty();
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
        // A report that replaced a merged source ends its operator. The
        // check looks at every region, so it runs only when the report
        // changed the records (and once per scheduler round): run on every
        // report, it cost the directory a core at 300,000 regions.
        if recorded_now {
            crate::merge::finish_merged(&self.state(), &mut ls);
        }
        let now = Instant::now();
        let threshold = ls.load_split_threshold;
        let stats = ls
            .regions
            .entry(region.id)
            .or_insert_with(|| RegionStats::new(now));
        if report.term < stats.term {
            // A leader of an older term still reports until it hears of
            // the newer one — cut from its followers, which have elected
            // another, it can go on reaching the directory. What it says
            // is stale, and taking its word for the leader would send
            // routers back to it.
            metrics::counter!(m::STALE_REPORTS_TOTAL).increment(1);
            return Ok(None);
        }
        stats.leader = report.leader;
        stats.term = report.term;
        stats.approximate_size_bytes = report.approximate_size_bytes;
        stats.down_peers = report.down_peers.clone();
        stats.progress = report.progress.clone();
        stats.seen = now;
        stats.merging_into = report.merging_into;
        if let Some(load) = &report.load {
            stats.keys_per_sec = per_sec(load, load.read_keys.saturating_add(load.write_keys));
            stats.bytes_per_sec = per_sec(load, load.read_bytes.saturating_add(load.write_bytes));
            stats.write_keys_per_sec = per_sec(load, load.write_keys);
            if stats.keys_per_sec > self.schedule.merge.max_keys_per_sec as f64 {
                stats.quiet_since = now;
            }
            let hot = stats.keys_per_sec > threshold;
            stats.hot_since = if hot {
                stats.hot_since.or(Some(now))
            } else {
                None
            };
            stats.load_split_key = load.load_split_key.clone();
        }
        let mut reply = None;
        if let Some(op) = ls.operators.get_mut(&region.id) {
            let op_id = op.id.clone();
            let (outcome, step) = op.advance(
                &region,
                report.leader.as_ref(),
                &report.progress,
                report.merging_into,
            );
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
                    metrics::counter!(m::OPERATORS_TOTAL, "kind" => kind.as_str(), "outcome" => outcome)
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

    /// Records a store's heartbeat (leader only; the store must be
    /// registered); returns the regions it leads that have an operator,
    /// for it to report at once (see `StoreHeartbeatResponse`).
    pub async fn store_heartbeat(&self, stats: StoreStats) -> Result<Vec<u64>> {
        let started = Instant::now();
        let store_id = stats.store_id;
        let r = self.record_store_heartbeat(stats).await;
        metrics::histogram!(m::HEARTBEAT_SECONDS).record(started.elapsed().as_secs_f64());
        r?;
        let term = self.leading_term().await?;
        let ls = self.leader_view(term);
        Ok(ls
            .operators
            .keys()
            .copied()
            .filter(|id| {
                ls.regions
                    .get(id)
                    .and_then(|r| r.leader.as_ref())
                    .is_some_and(|l| l.store_id == store_id)
            })
            .collect())
    }

    async fn record_store_heartbeat(&self, stats: StoreStats) -> Result<()> {
        let term = self.leading_term().await?;
        if !self.state().stores.contains_key(&stats.store_id) {
            return Err(Error::NotFound(format!(
                "store {}; register it first",
                stats.store_id
            )));
        }
        self.leader_view(term).stores.insert(
            stats.store_id,
            StoreRuntime {
                stats,
                last_heartbeat: clock::now(),
            },
        );
        Ok(())
    }
}

/// `count` (keys or bytes) per second over a reported interval (an
/// interval under 100 ms counts as 100 ms: a report sent right after
/// another says little about a rate).
fn per_sec(load: &RegionLoad, count: u64) -> f64 {
    count as f64 * 1000.0 / load.interval_ms.max(100) as f64
}
