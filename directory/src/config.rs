//! The directory's configuration: a TOML file overridden by flags (also
//! `TESSERA_DIRECTORY_*` environment variables).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_multiraft::engine::RocksOptions;
use tessera_multiraft::RaftConfig;

use crate::leader::LifecycleConfig;
use crate::scheduler::{
    HotLeaderConfig, HotRegionConfig, LoadSplitConfig, MergeConfig, ScheduleConfig,
};
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    /// This member's id (1, 2, 3, ...): unique among members, never reused.
    pub id: u64,
    pub data_dir: PathBuf,
    /// gRPC address to bind (the Directory service and Raft between members).
    pub listen_addr: String,
    /// Address other processes dial; defaults to `listen_addr`.
    pub advertise_addr: Option<String>,
    /// HTTP address for /metrics, /health and /ready.
    pub status_addr: String,
    /// The members a new cluster starts with, as `id=host:port`; when
    /// joining, the members already there.
    pub initial_members: Vec<String>,
    /// Join an existing cluster (after `AddMember` on its leader) instead of
    /// creating one.
    pub join: bool,
    pub log_format: String,
    /// Lets a test build (feature `failpoints`) serve its fault endpoints on
    /// a status address other machines can reach; without it such a build
    /// refuses any non-loopback `status_addr`. No effect on a real build.
    pub allow_fault_endpoints: bool,
    /// How long a request may wait for the directory's Raft group, in ms.
    pub request_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
    pub raft: RaftSection,
    pub schedule: ScheduleSection,
    /// TLS and who may connect (`[security]`).
    pub security: tessera_security::TlsSettings,
    /// What the gRPC server takes on at once (`[serving]`).
    pub serving: tessera_common::admission::ServingLimits,
    /// The join token a new cluster starts with; without one the first
    /// leader generates one into `<data_dir>/join-token`. Only read when
    /// the cluster is created: rotate it with `tessera cluster
    /// rotate-join-token`.
    pub join_token: Option<String>,
    /// The same, read from a file (a mounted Kubernetes Secret); not with
    /// `join_token`.
    pub join_token_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSection {
    pub tick_interval_ms: u64,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleSection {
    pub interval_ms: u64,
    pub max_replicas: usize,
    pub operator_timeout_ms: u64,
    pub max_operators_per_store: usize,
    pub max_balance_per_round: usize,
    pub balance_threshold: usize,
    pub region_split_size_mib: u64,
    /// A store silent this long is Disconnected.
    pub disconnect_after_ms: u64,
    /// A store silent this long is Down; its replicas are rebuilt elsewhere.
    pub down_after_ms: u64,
    pub zone_label: String,
    /// The merge rule: the most two neighbours may hold together to be
    /// merged (default: a fifth of the split size; 0 turns merging off;
    /// at most half the split size, so merges and splits never undo each
    /// other).
    pub merge_max_size_mib: Option<u64>,
    /// A region serving more read and written keys per second than this is
    /// not merged.
    pub merge_max_keys_per_sec: u64,
    /// How long both neighbours must have been cold (and known to the
    /// directory leader) before they merge; a split's new region waits
    /// this long.
    pub merge_quiet_for_ms: u64,
    /// Merges that may run at once.
    pub max_merges_in_flight: usize,
    /// Load-based split: a range keyspace's region serving more read and
    /// written keys per second than the hot threshold, in every report for
    /// `load_split_hot_for_ms`, is split where its load divides; this is
    /// the highest threshold (0 turns it off; otherwise at least 4 ×
    /// `merge_max_keys_per_sec`).
    pub load_split_keys_per_sec: u64,
    /// The load-split threshold follows the cluster's load (its keys per
    /// second over three times the `Up` stores) between this and
    /// `load_split_keys_per_sec`.
    pub load_split_min_keys_per_sec: u64,
    pub load_split_hot_for_ms: u64,
    /// Hot-leader balancing: leaderships move while the store whose leaders
    /// serve the most keys per second serves more than this ratio times
    /// the least (at least 1.1) ...
    pub hot_leader_ratio: f64,
    /// ... and more than this many keys per second (0 turns it off).
    pub hot_leader_min_keys_per_sec: u64,
    /// Hot-region balancing (more stores than replicas): replicas move
    /// while the store whose replicas apply the most written keys per
    /// second applies more than this ratio times another (at least 1.1)
    /// ...
    pub hot_region_ratio: f64,
    /// ... and more than this many written keys per second (0 turns it
    /// off).
    pub hot_region_min_write_keys_per_sec: u64,
    /// How long the `Up` stores must stay the same set before a hash
    /// keyspace whose ring was built over other stores is rebalanced
    /// over them.
    pub placement_rebalance_after_ms: u64,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            id: 1,
            data_dir: PathBuf::from("tessera-directory-data"),
            listen_addr: "127.0.0.1:2379".into(),
            advertise_addr: None,
            status_addr: "127.0.0.1:2380".into(),
            initial_members: vec!["1=127.0.0.1:2379".into()],
            join: false,
            log_format: "text".into(),
            allow_fault_endpoints: false,
            request_timeout_ms: 5_000,
            shutdown_grace_ms: 5_000,
            raft: RaftSection::default(),
            schedule: ScheduleSection::default(),
            security: Default::default(),
            serving: Default::default(),
            join_token: None,
            join_token_file: None,
        }
    }
}

impl Default for RaftSection {
    fn default() -> Self {
        let r = RaftConfig::default();
        RaftSection {
            tick_interval_ms: r.tick_interval.as_millis() as u64,
            election_ticks: r.election_tick,
            heartbeat_ticks: r.heartbeat_tick,
        }
    }
}

impl Default for ScheduleSection {
    fn default() -> Self {
        let s = ScheduleConfig::default();
        ScheduleSection {
            interval_ms: s.interval.as_millis() as u64,
            max_replicas: s.max_replicas,
            operator_timeout_ms: s.operator_timeout.as_millis() as u64,
            max_operators_per_store: s.max_operators_per_store,
            max_balance_per_round: s.max_balance_per_round,
            balance_threshold: s.balance_threshold,
            region_split_size_mib: s.region_split_size_bytes >> 20,
            disconnect_after_ms: s.lifecycle.disconnect_after.as_millis() as u64,
            down_after_ms: s.lifecycle.down_after.as_millis() as u64,
            zone_label: s.zone_label,
            merge_max_size_mib: None,
            merge_max_keys_per_sec: s.merge.max_keys_per_sec,
            merge_quiet_for_ms: s.merge.quiet_for.as_millis() as u64,
            max_merges_in_flight: s.merge.max_in_flight,
            load_split_keys_per_sec: s.load_split.keys_per_sec,
            load_split_min_keys_per_sec: s.load_split.min_keys_per_sec,
            load_split_hot_for_ms: s.load_split.hot_for.as_millis() as u64,
            hot_leader_ratio: s.hot_leader.ratio,
            hot_leader_min_keys_per_sec: s.hot_leader.min_keys_per_sec,
            hot_region_ratio: s.hot_region.ratio,
            hot_region_min_write_keys_per_sec: s.hot_region.min_write_keys_per_sec,
            placement_rebalance_after_ms: s.placement_rebalance_after.as_millis() as u64,
        }
    }
}

impl DirectoryConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    pub fn advertise_addr(&self) -> &str {
        self.advertise_addr.as_deref().unwrap_or(&self.listen_addr)
    }

    /// `initial_members` as id → address.
    pub fn members(&self) -> Result<BTreeMap<u64, String>> {
        let mut out = BTreeMap::new();
        for m in &self.initial_members {
            let (id, addr) = m
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("member {m:?} is not id=host:port")))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| Error::Config(format!("member id {id:?} is not a number")))?;
            if id == 0 {
                return Err(Error::Config("member id 0 is not valid".into()));
            }
            if out.insert(id, addr.trim().to_string()).is_some() {
                return Err(Error::Config(format!("member {id} is listed twice")));
            }
        }
        Ok(out)
    }

    /// The configured join token (`join_token` or `join_token_file`).
    pub fn join_token(&self) -> Result<Option<String>> {
        tessera_security::secret::resolve(
            "join_token",
            self.join_token.as_deref(),
            self.join_token_file.as_deref(),
        )
        .map_err(|e| Error::Config(e.to_string()))
    }

    pub fn validate(&self) -> Result<()> {
        self.serving.validate().map_err(Error::Config)?;
        if self.id == 0 {
            return Err(Error::Config("id must be above 0".into()));
        }
        self.join_token()?;
        let members = self.members()?;
        if !self.join && !members.contains_key(&self.id) {
            return Err(Error::Config(format!(
                "member {} is not in initial_members {:?}",
                self.id, self.initial_members
            )));
        }
        if self.raft.heartbeat_ticks == 0 || self.raft.election_ticks <= self.raft.heartbeat_ticks {
            return Err(Error::Config(
                "raft.election_ticks must be greater than raft.heartbeat_ticks".into(),
            ));
        }
        if self.schedule.max_replicas == 0 {
            return Err(Error::Config(
                "schedule.max_replicas must be at least 1".into(),
            ));
        }
        if let Some(merge) = self.schedule.merge_max_size_mib {
            if merge * 2 > self.schedule.region_split_size_mib {
                return Err(Error::Config(format!(
                    "schedule.merge_max_size_mib ({merge}) must be at most half of \
                     schedule.region_split_size_mib ({}): a merged region must not be split again",
                    self.schedule.region_split_size_mib
                )));
            }
        }
        let (split, merge) = (
            self.schedule.load_split_keys_per_sec,
            self.schedule.merge_max_keys_per_sec,
        );
        if split != 0 && split < merge.saturating_mul(4) {
            return Err(Error::Config(format!(
                "schedule.load_split_keys_per_sec ({split}) must be 0 or at least 4 × \
                 schedule.merge_max_keys_per_sec ({merge}): a load split's halves must not merge back"
            )));
        }
        let least = self.schedule.load_split_min_keys_per_sec;
        if split != 0 && least.min(split) < merge.saturating_mul(4) {
            return Err(Error::Config(format!(
                "schedule.load_split_min_keys_per_sec ({least}) must be at least 4 × \
                 schedule.merge_max_keys_per_sec ({merge}): a load split's halves must not merge back"
            )));
        }
        for (name, ratio, what) in [
            (
                "hot_leader_ratio",
                self.schedule.hot_leader_ratio,
                "leaderships",
            ),
            (
                "hot_region_ratio",
                self.schedule.hot_region_ratio,
                "replicas",
            ),
        ] {
            if ratio.is_nan() || ratio < 1.1 {
                return Err(Error::Config(format!(
                    "schedule.{name} ({ratio}) must be at least 1.1: {what} would move back and forth"
                )));
            }
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(Error::Config(format!(
                "log_format must be text or json, not {:?}",
                self.log_format
            )));
        }
        Ok(())
    }

    pub fn raft_config(&self) -> RaftConfig {
        RaftConfig {
            tick_interval: Duration::from_millis(self.raft.tick_interval_ms),
            election_tick: self.raft.election_ticks,
            heartbeat_tick: self.raft.heartbeat_ticks,
            // One group, always in use (store heartbeats, leases for
            // reads): it never hibernates.
            hibernate_regions: false,
            ..RaftConfig::default()
        }
    }

    pub fn rocks_options(&self) -> RocksOptions {
        RocksOptions {
            block_cache_bytes: 32 << 20,
            write_buffer_bytes: 16 << 20,
            max_background_jobs: 1,
        }
    }

    pub fn schedule_config(&self) -> ScheduleConfig {
        let s = &self.schedule;
        ScheduleConfig {
            interval: Duration::from_millis(s.interval_ms),
            max_replicas: s.max_replicas,
            operator_timeout: Duration::from_millis(s.operator_timeout_ms),
            max_operators_per_store: s.max_operators_per_store,
            max_balance_per_round: s.max_balance_per_round,
            region_split_size_bytes: s.region_split_size_mib << 20,
            balance_threshold: s.balance_threshold,
            lifecycle: LifecycleConfig {
                disconnect_after: Duration::from_millis(s.disconnect_after_ms),
                down_after: Duration::from_millis(s.down_after_ms),
            },
            zone_label: s.zone_label.clone(),
            merge: {
                let split = s.region_split_size_mib << 20;
                let mut merge = MergeConfig::for_split_size(split);
                if let Some(mib) = s.merge_max_size_mib {
                    merge.max_size_bytes = mib << 20;
                }
                merge.max_keys_per_sec = s.merge_max_keys_per_sec;
                merge.quiet_for = Duration::from_millis(s.merge_quiet_for_ms);
                merge.max_in_flight = s.max_merges_in_flight;
                merge
            },
            load_split: LoadSplitConfig {
                keys_per_sec: s.load_split_keys_per_sec,
                min_keys_per_sec: s.load_split_min_keys_per_sec,
                hot_for: Duration::from_millis(s.load_split_hot_for_ms),
            },
            hot_leader: HotLeaderConfig {
                ratio: s.hot_leader_ratio,
                min_keys_per_sec: s.hot_leader_min_keys_per_sec,
            },
            hot_region: HotRegionConfig {
                ratio: s.hot_region_ratio,
                min_write_keys_per_sec: s.hot_region_min_write_keys_per_sec,
            },
            placement_rebalance_after: Duration::from_millis(s.placement_rebalance_after_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_size_that_a_split_would_undo_is_refused() {
        let cfg: DirectoryConfig =
            toml::from_str("[schedule]\nregion_split_size_mib = 64\nmerge_max_size_mib = 40\n")
                .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("at most half"), "{err}");
        let cfg: DirectoryConfig =
            toml::from_str("[schedule]\nregion_split_size_mib = 64\nmerge_max_size_mib = 32\n")
                .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.schedule_config().merge.max_size_bytes, 32 << 20);
        // By default, a fifth of the split size.
        let cfg: DirectoryConfig =
            toml::from_str("[schedule]\nregion_split_size_mib = 10\n").unwrap();
        assert_eq!(cfg.schedule_config().merge.max_size_bytes, 2 << 20);
    }

    #[test]
    fn defaults_are_valid_and_members_parse() {
        let cfg: DirectoryConfig = toml::from_str("").unwrap();
        cfg.validate().unwrap();
        let cfg: DirectoryConfig = toml::from_str(
            "id = 2\ninitial_members = [\"1=a:1\", \"2=b:2\", \"3=c:3\"]\n[schedule]\ndown_after_ms = 3000\n",
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.members().unwrap()[&3], "c:3");
        assert_eq!(
            cfg.schedule_config().lifecycle.down_after,
            Duration::from_secs(3)
        );
        let bad: DirectoryConfig = toml::from_str("id = 4\ninitial_members = [\"1=a:1\"]").unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not in initial_members"));
        let bad: DirectoryConfig = toml::from_str("initial_members = [\"x\"]").unwrap();
        assert!(bad.validate().is_err());
    }
}
