//! Raft settings shared by every region of a store.

use std::time::Duration;

/// How the poller drives Raft. Defaults follow etcd's timing (100 ms ticks,
/// 200 ms heartbeats, 1 s election timeout); tests shorten the tick.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// Time between two logical clock ticks of every Raft group.
    pub tick_interval: Duration,
    /// Ticks without hearing from the leader before a follower campaigns
    /// (raft-rs randomizes it in `[election_tick, 2 * election_tick)`).
    pub election_tick: usize,
    /// Ticks between two heartbeats of a leader.
    pub heartbeat_tick: usize,
    /// Largest append message, in bytes. raft-rs' default 0 would send one
    /// entry per message.
    pub max_size_per_msg_bytes: u64,
    /// Append messages in flight to one follower before waiting for acks.
    pub max_inflight_msgs: usize,
    /// Largest batch of committed entries handed to apply in one Ready.
    pub max_committed_size_per_ready_bytes: u64,
    /// A ReadIndex request that got no answer in this many ticks is sent
    /// again (raft-rs drops it silently when the leader has not yet committed
    /// in its term).
    pub read_index_retry_ticks: usize,
    /// The leader lease is this fraction of the election timeout, counted from
    /// the moment a quorum was last known to follow the leader (the *send*
    /// time of the message that proved it; followers start their election
    /// timers later, on receipt). What is left of the shortest time a
    /// follower can take to vote for another leader is the stated
    /// clock-drift bound ([`RaftConfig::max_clock_drift`]).
    pub lease_ratio: f64,
    /// Messages the poller drains from its mailbox in one round at most.
    pub max_msgs_per_round: usize,
    /// Entries kept in a peer's in-memory log cache beyond what is applied.
    pub entry_cache_limit: usize,
    /// Ticks between two checks of whether a leader should compact its log.
    pub log_gc_tick_interval: usize,
    /// A leader compacts once this many entries are replicated everywhere.
    pub log_gc_threshold: u64,
    /// Past this many entries, a leader compacts up to what it applied even
    /// if a follower lags (that follower then gets a snapshot).
    pub log_gc_count_limit: u64,
    /// Past this many bytes of log, the same.
    pub log_gc_size_limit_bytes: u64,
    /// At most this many peers waiting for their first snapshot (created by
    /// a message from a region this store holds nothing of yet) exist at
    /// once; a message that would create one more is dropped.
    pub max_uninitialized_peers: usize,
    /// A peer still waiting for its first snapshot after this long is
    /// dropped from memory (its persisted term and vote stay on disk).
    pub uninitialized_peer_ttl: Duration,
    /// A poller round slower than this (a slow fsync, a slow disk) marks
    /// the store degraded and hands its leaderships away (`poller/slow.rs`).
    pub slow_round: Duration,
    /// Idle regions hibernate (`crate::hibernate`): their peers stop
    /// ticking and their leaders stop heartbeating until something happens.
    pub hibernate_regions: bool,
    /// Ticks a leader must have had nothing to do (no proposal, no read,
    /// everything replicated and applied) before it asks its followers to
    /// hibernate.
    pub hibernate_after_ticks: usize,
    /// A hibernating follower wakes (and, its election timeout later,
    /// campaigns) as soon as the transport reports its leader's store
    /// unreachable (its process is gone: stores with asleep followers ping
    /// their leaders' stores every `heartbeat_tick` ticks, and a ping that
    /// cannot be delivered says so), or once it has heard nothing from that
    /// store for this many ticks (a partition, a hung store: stores whose
    /// leaders hibernate ping the stores of their followers as often). A
    /// hibernating region whose leader's store died or was cut off has a
    /// new leader within [`RaftConfig::hibernated_failover_ticks`] (on a
    /// store whose mailbox stays backed up, where a ping may wait unread,
    /// silence counts twice as long). Followers woken this way sleep again
    /// if the store is heard from before they elect: a store that stalled a
    /// few seconds (a long round) does not wake the cluster.
    pub store_liveness_ticks: usize,
    /// Tests only: the poller never ticks on its own — every tick is a
    /// `PollerMsg::Tick` — and election timeouts are pinned to exactly
    /// `election_tick` ticks (not randomized), so a test decides when each
    /// group may campaign and runs are deterministic. No configuration file
    /// reaches it.
    pub manual_ticks: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            tick_interval: Duration::from_millis(100),
            election_tick: 10,
            heartbeat_tick: 2,
            max_size_per_msg_bytes: 1024 * 1024,
            max_inflight_msgs: 256,
            max_committed_size_per_ready_bytes: 16 * 1024 * 1024,
            read_index_retry_ticks: 3,
            lease_ratio: 0.8,
            max_msgs_per_round: 4096,
            entry_cache_limit: 4096,
            log_gc_tick_interval: 30,
            log_gc_threshold: 50,
            log_gc_count_limit: 50_000,
            log_gc_size_limit_bytes: 64 * 1024 * 1024,
            max_uninitialized_peers: 1024,
            uninitialized_peer_ttl: Duration::from_secs(300),
            slow_round: Duration::from_secs(2),
            hibernate_regions: true,
            hibernate_after_ticks: 20,
            store_liveness_ticks: 50,
            manual_ticks: false,
        }
    }
}

impl RaftConfig {
    /// The shortest election timeout of a follower.
    pub fn election_timeout(&self) -> Duration {
        self.tick_interval * self.election_tick as u32
    }

    /// How long a leader may serve reads locally after a quorum confirmed it.
    pub fn lease_duration(&self) -> Duration {
        self.election_timeout().mul_f64(self.lease_ratio)
    }

    /// The clock drift the lease tolerates (100 ms at the defaults).
    ///
    /// A follower counts its election timeout in ticks of its own clock
    /// from the last message it received from the leader, and the first of
    /// those ticks may come at once: it campaigns, or grants a vote (with
    /// check-quorum it refuses one while it still hears from a leader), no
    /// sooner than `election_tick − 1` tick intervals after that receipt.
    /// The leader's lease ends `lease_duration` on its own clock after that
    /// message was sent. The lease is safe as long as, over that time, the
    /// leader's clock falls behind the followers' by at most this much: at
    /// the defaults (0.8 s lease, 0.9 s), a leader's clock may run at most
    /// 11% slower than a follower's. The nemesis's `clock-skew` stays
    /// within this bound; its negative control goes beyond it and the
    /// checker catches the stale reads.
    pub fn max_clock_drift(&self) -> Duration {
        (self.tick_interval * self.election_tick.saturating_sub(1) as u32)
            .saturating_sub(self.lease_duration())
    }

    /// The most ticks between a hibernating region's leader's store going
    /// silent (cut off, hung) and a new leader: the followers notice after
    /// `store_liveness_ticks` (checked every tick), the first of them
    /// campaigns within `2 × election_tick` of waking (raft-rs' randomized
    /// timeout), and a follower woken a tick later may turn down that first
    /// pre-vote (it is still in its leader's lease), which costs one more
    /// randomized timeout: `store_liveness_ticks + 1 + 4 × election_tick`
    /// (91 ticks, 9.1 s, at the defaults). A store whose process died is
    /// reported unreachable by the transport at the next ping instead (a
    /// `heartbeat_tick` and a failed connection), which replaces
    /// `store_liveness_ticks` in that sum: about 1–3 s at the defaults.
    pub fn hibernated_failover_ticks(&self) -> usize {
        self.store_liveness_ticks + 1 + 4 * self.election_tick
    }

    /// The raft-rs configuration of one peer.
    pub fn raft_config(&self, peer_id: u64, applied: u64) -> raft::Config {
        raft::Config {
            id: peer_id,
            election_tick: self.election_tick,
            heartbeat_tick: self.heartbeat_tick,
            applied,
            max_size_per_msg: self.max_size_per_msg_bytes,
            max_inflight_msgs: self.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            max_committed_size_per_ready: self.max_committed_size_per_ready_bytes,
            // Every proposal of a round to a region leaves in one MsgAppend
            // per follower (raft-rs otherwise sends one per proposal, each
            // answered separately and each taking an inflight slot).
            batch_append: true,
            // A commit is not announced with its own MsgAppend to every
            // follower: followers learn it from the next append or heartbeat
            // (a ReadIndex heartbeat carries it too, so follower reads do not
            // wait). Halves the messages per write when writes spread over
            // many regions. raft-rs still announces conf-change commits.
            skip_bcast_commit: true,
            // Pinned election timeouts under manual ticks (max is exclusive).
            min_election_tick: if self.manual_ticks {
                self.election_tick
            } else {
                0
            },
            max_election_tick: if self.manual_ticks {
                self.election_tick + 1
            } else {
                0
            },
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::RaftConfig;

    #[test]
    fn the_drift_bound_leaves_a_tick_to_the_followers() {
        let c = RaftConfig::default();
        assert_eq!(c.lease_duration(), Duration::from_millis(800));
        // A follower votes no sooner than 9 ticks (900 ms) after it last
        // heard from the leader: 100 ms are left for drift.
        assert_eq!(c.max_clock_drift(), Duration::from_millis(100));
        let tight = RaftConfig {
            lease_ratio: 0.95,
            ..RaftConfig::default()
        };
        assert_eq!(tight.max_clock_drift(), Duration::ZERO);
    }
}
