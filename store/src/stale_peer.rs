//! The removal checker: the only place a store decides that one of its
//! peers was removed from its region, and always by asking the directory.
//!
//! A removed peer normally learns it by applying the membership change. If
//! it was cut off at the time it lingers: it never hears from a leader
//! again and keeps answering with stale leader hints. Two things send this
//! checker looking:
//!
//! - **claims in messages**: a tombstone message (a leader that removed a
//!   peer tells it so), or a message for a newer peer of the region on this
//!   store (`multiraft/src/poller/removed.rs`). The poller does not
//!   act on a claim — any node may send one, and three forged ones would
//!   erase every replica of a region — but reports the region here
//!   ([`tessera_multiraft::poller::RemovalReports`]), and the region is
//!   checked at once, at most once per [`REPORT_GAP`] (a new peer's leader
//!   sends it several messages a second, each a claim);
//! - **every `interval`**, every initialized region this store does not
//!   lead — a hibernating one (`multiraft/src/hibernate.rs`) only every
//!   `HIBERNATING_EVERY` intervals, so an idle store does not ask about
//!   each of its regions every few seconds.
//!
//! A peer is destroyed (leaving a tombstone at the directory's epoch) only
//! if the directory knows the region at a newer membership (`conf_ver`)
//! that no longer lists it. A directory that cannot be reached, or does not
//! know the region, changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_multiraft::{region, Mailbox, RegionInfo};
use tokio::sync::mpsc::Receiver;

use crate::directory_client::DirectoryClient;
use crate::kv::KvOutput;
use crate::node::{hibernating_due, turn, Turn};

/// Reports the poller may queue before further ones are dropped (the
/// periodic pass still covers their regions).
pub const REPORTS_CAPACITY: usize = 64;

/// A hibernating follower is checked once in this many passes.
const HIBERNATING_EVERY: u64 = 30;

/// A reported region is checked again at most this often.
pub const REPORT_GAP: Duration = Duration::from_secs(1);

/// The reported regions checked within the last [`REPORT_GAP`].
#[derive(Default)]
struct RecentReports(HashMap<u64, Instant>);

impl RecentReports {
    /// Whether a report of `region_id` at `now` is checked (and if so, it
    /// is remembered as checked then).
    fn admit(&mut self, region_id: u64, now: Instant) -> bool {
        if self
            .0
            .get(&region_id)
            .is_some_and(|at| now.saturating_duration_since(*at) < REPORT_GAP)
        {
            return false;
        }
        if self.0.len() >= 1024 {
            self.0
                .retain(|_, at| now.saturating_duration_since(*at) < REPORT_GAP);
        }
        self.0.insert(region_id, now);
        true
    }
}

/// Checks reported regions as they come and every region every `interval`,
/// until the poller stops.
pub async fn run(
    mailbox: Mailbox<KvOutput>,
    directory: Arc<dyn DirectoryClient>,
    mut reports: Receiver<u64>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pass = 0u64;
    let mut recent = RecentReports::default();
    loop {
        let only = tokio::select! {
            _ = ticker.tick() => {
                pass += 1;
                None
            }
            r = reports.recv() => match r {
                Some(region_id) if recent.admit(region_id, Instant::now()) => Some(region_id),
                Some(_) => continue,
                None => return,
            },
        };
        // A hibernating follower was in step with its leader when it fell
        // asleep, and the change that removes it normally wakes it: it is
        // checked once every HIBERNATING_EVERY passes, and only one pass in
        // FULL_SCAN_EVERY looks at hibernating regions at all.
        let picked = match (only, hibernating_due(pass, HIBERNATING_EVERY)) {
            (Some(region_id), _) => mailbox.inspect_region(region_id).await.map(|info| {
                let info = info.filter(|i| i.initialized);
                (info.into_iter().collect(), Default::default())
            }),
            (None, Some(due)) => {
                mailbox
                    .inspect_where(move |b| {
                        !b.is_leader && b.initialized && (!b.hibernating || due(b.id))
                    })
                    .await
            }
            (None, None) => {
                mailbox
                    .inspect_awake_where(|b| !b.is_leader && b.initialized && !b.hibernating)
                    .await
            }
        };
        let candidates = match turn(picked.map_err(crate::Error::from), "removal checker") {
            Turn::Go((candidates, _)) => candidates,
            Turn::Skip => continue,
            Turn::Stop => return,
        };
        for info in candidates {
            check(&mailbox, directory.as_ref(), &info).await;
        }
    }
}

/// Destroys the local peer of `info`'s region if the directory says it was
/// removed.
async fn check(mailbox: &Mailbox<KvOutput>, directory: &dyn DirectoryClient, info: &RegionInfo) {
    let region_id = info.region.id;
    let known = match directory.get_region(region_id).await {
        Ok(Some(known)) => known,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(region_id, error = %e, "cannot ask the directory about a region");
            return;
        }
    };
    let local = region::epoch(&info.region);
    let newer = region::epoch(&known);
    let still_member = known.peers.iter().any(|p| p.id == info.peer_id);
    if newer.conf_ver > local.conf_ver && !still_member {
        tracing::info!(
            region_id,
            peer_id = info.peer_id,
            "the directory says this peer was removed from its region; destroying it"
        );
        if let Err(e) = mailbox.destroy_removed_peer(region_id, newer).await {
            tracing::warn!(region_id, error = %e, "cannot destroy a stale peer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_reported_again_within_the_gap_is_not_checked_again() {
        let mut recent = RecentReports::default();
        let t0 = Instant::now();
        assert!(recent.admit(7, t0), "the first report is checked");
        assert!(!recent.admit(7, t0 + REPORT_GAP / 2), "a repeat is not");
        assert!(recent.admit(8, t0 + REPORT_GAP / 2), "another region is");
        assert!(
            recent.admit(7, t0 + REPORT_GAP),
            "after the gap it is again"
        );
        assert!(!recent.admit(7, t0 + REPORT_GAP + REPORT_GAP / 2));
    }

    #[test]
    fn old_reports_are_forgotten_once_many_regions_were_reported() {
        let mut recent = RecentReports::default();
        let t0 = Instant::now();
        for id in 0..1024 {
            assert!(recent.admit(id, t0));
        }
        let later = t0 + REPORT_GAP;
        assert!(recent.admit(5000, later));
        assert_eq!(recent.0.len(), 1, "every older entry was dropped");
        assert!(recent.admit(3, later), "and its region is checked again");
    }
}
