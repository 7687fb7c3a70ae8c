//! The store's configuration: a TOML file, overridden by command-line flags
//! (which may also come from `TESSERA_STORE_*` environment variables).
//!
//! Every field has a default, so an empty file (or none) gives a store that
//! listens on 127.0.0.1:20160, serves status on 127.0.0.1:20180, keeps its
//! data in `./tessera-store-data` and looks for a directory on
//! 127.0.0.1:2379.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_multiraft::engine::RocksOptions;
use tessera_multiraft::RaftConfig;

use crate::kv::KvConfig;
use crate::split_check::SplitCheckConfig;
use crate::{Error, NodeConfig, Result};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Where RocksDB keeps the store's data.
    pub data_dir: PathBuf,
    /// The address the gRPC server binds (Kv and Raft services).
    pub listen_addr: String,
    /// The address other processes dial; defaults to `listen_addr`. May be a
    /// DNS name.
    pub advertise_addr: Option<String>,
    /// The address of the HTTP server for /metrics, /health and /ready.
    pub status_addr: String,
    /// Addresses of the directory members.
    pub directory: Vec<String>,
    /// Labels of this store, such as `zone = "a"`, for placement.
    pub labels: BTreeMap<String, String>,
    /// How long a request waits for its proposal or read, in milliseconds.
    pub request_timeout_ms: u64,
    /// The bytes of keys and values one Scan or BatchGet answer holds
    /// before it stops and says where to continue (a page always holds at
    /// least one pair, so it may pass this by one value).
    pub max_response_bytes: usize,
    /// Interval between heartbeats to the directory, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// A hibernating region's leader reports it to the directory this often
    /// (milliseconds) instead of every heartbeat interval.
    pub hibernated_report_interval_ms: u64,
    /// How long a region's leader goes without hearing from a peer before
    /// it reports the peer down (shown by `tessera region list`), in
    /// milliseconds.
    pub peer_down_after_ms: u64,
    /// On SIGTERM, how long to wait for leadership to move away, in
    /// milliseconds, before stopping anyway.
    pub shutdown_grace_ms: u64,
    /// Regions holding more user data than this are split at their middle.
    pub region_split_size_mib: u64,
    /// How often the split checker looks at the regions this store leads.
    pub split_check_interval_ms: u64,
    /// How long a merge's source waits for all its replicas to have its
    /// PrepareMerge before it asks the target to refuse and rolls back.
    pub merge_catch_up_timeout_ms: u64,
    /// `text` or `json`.
    pub log_format: String,
    /// Lets a test build (feature `failpoints`) serve its fault endpoints on
    /// a status address other machines can reach; without it such a build
    /// refuses any non-loopback `status_addr`. No effect on a real build.
    pub allow_fault_endpoints: bool,
    pub raft: RaftSection,
    pub rocksdb: RocksSection,
    /// A slow disk and a stalled one (`[disk]`).
    pub disk: DiskSection,
    /// TLS and who may connect (`[security]`).
    pub security: tessera_security::TlsSettings,
    /// What the gRPC server takes on at once (`[serving]`).
    pub serving: tessera_common::admission::ServingLimits,
    /// The cluster's join token, needed the first time this store
    /// registers (not on restarts). The directory prints it when it
    /// creates the cluster (and writes it to its data directory's
    /// `join-token`).
    pub join_token: Option<String>,
    /// The same, read from a file (a mounted Kubernetes Secret); not with
    /// `join_token`.
    pub join_token_file: Option<PathBuf>,
}

/// How the store tells a slow disk and a stalled one, and how much free
/// space it keeps (`[disk]`; see `disk_space.rs`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DiskSection {
    /// A poller round slower than this (ms) marks the store degraded and
    /// hands its leaderships away (a slow disk).
    pub slow_round_ms: u64,
    /// A poller stuck in one round this long (ms) fails `/ready` until it
    /// moves again (a stalled disk).
    pub stall_timeout_ms: u64,
    /// MiB set aside at start in `<data_dir>/space-reserve`, released when
    /// the store runs low so that Raft's own writes still fit (0: none).
    pub reserve_mib: u64,
    /// Below this many MiB free (not counting the reserve) the store
    /// refuses new user writes with NO_SPACE until space returns (0: never).
    pub low_space_mib: u64,
}

impl Default for DiskSection {
    fn default() -> Self {
        DiskSection {
            slow_round_ms: 2_000,
            stall_timeout_ms: 10_000,
            reserve_mib: 512,
            low_space_mib: 1024,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSection {
    /// Milliseconds between two Raft ticks.
    pub tick_interval_ms: u64,
    /// Ticks before a follower without a leader campaigns.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Largest append message, in bytes.
    pub max_size_per_msg_bytes: u64,
    /// Append messages in flight per follower.
    pub max_inflight_msgs: usize,
    /// Ticks between two checks of whether a leader should compact its log.
    pub log_gc_tick_interval: usize,
    /// Compact once this many entries are replicated to every active peer.
    pub log_gc_threshold: u64,
    /// Past this many entries a leader compacts even if a follower lags
    /// (the follower then catches up by snapshot).
    pub log_gc_count_limit: u64,
    /// The same, in MiB of log.
    pub log_gc_size_limit_mib: u64,
    /// Serve a leader's lease reads on the request's own task, from the
    /// state the poller publishes (`multiraft/src/local_read.rs`); `false`
    /// sends every read through the poller (lease or ReadIndex there).
    pub local_reads: bool,
    /// Idle regions hibernate: no tick and no heartbeat on any replica
    /// until a request or message wakes them (`multiraft/src/hibernate.rs`).
    pub hibernate_regions: bool,
    /// Ticks a leader has nothing to do before it asks to hibernate.
    pub hibernate_after_ticks: usize,
    /// Ticks without a word from a hibernating leader's store before its
    /// followers wake and, an election timeout later, elect a new leader
    /// (at once when the store is unreachable: its process is gone). A
    /// cut-off leader of a hibernating region is replaced within
    /// `store_liveness_ticks + 1 + 4 × election_ticks` ticks.
    pub store_liveness_ticks: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RocksSection {
    pub block_cache_mib: usize,
    pub write_buffer_mib: usize,
    pub max_background_jobs: i32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("tessera-store-data"),
            listen_addr: "127.0.0.1:20160".into(),
            advertise_addr: None,
            status_addr: "127.0.0.1:20180".into(),
            directory: vec!["127.0.0.1:2379".into()],
            labels: BTreeMap::new(),
            request_timeout_ms: 5_000,
            max_response_bytes: tessera_proto::limits::RESPONSE_PAGE_BYTES,
            heartbeat_interval_ms: 1_000,
            hibernated_report_interval_ms: 60_000,
            peer_down_after_ms: crate::down_peers::PEER_DOWN_AFTER.as_millis() as u64,
            shutdown_grace_ms: 10_000,
            region_split_size_mib: 96,
            split_check_interval_ms: 10_000,
            merge_catch_up_timeout_ms: crate::merge::CATCH_UP_TIMEOUT.as_millis() as u64,
            log_format: "text".into(),
            allow_fault_endpoints: false,
            raft: RaftSection::default(),
            rocksdb: RocksSection::default(),
            security: Default::default(),
            serving: Default::default(),
            disk: DiskSection::default(),
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
            max_size_per_msg_bytes: r.max_size_per_msg_bytes,
            max_inflight_msgs: r.max_inflight_msgs,
            log_gc_tick_interval: r.log_gc_tick_interval,
            log_gc_threshold: r.log_gc_threshold,
            log_gc_count_limit: r.log_gc_count_limit,
            log_gc_size_limit_mib: r.log_gc_size_limit_bytes >> 20,
            local_reads: KvConfig::default().local_reads,
            hibernate_regions: r.hibernate_regions,
            hibernate_after_ticks: r.hibernate_after_ticks,
            store_liveness_ticks: r.store_liveness_ticks,
        }
    }
}

impl Default for RocksSection {
    fn default() -> Self {
        let r = RocksOptions::default();
        RocksSection {
            block_cache_mib: r.block_cache_bytes >> 20,
            write_buffer_mib: r.write_buffer_bytes >> 20,
            max_background_jobs: r.max_background_jobs,
        }
    }
}

impl StoreConfig {
    /// Reads a TOML file; unknown keys are an error, missing keys default.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    pub fn advertise_addr(&self) -> &str {
        self.advertise_addr.as_deref().unwrap_or(&self.listen_addr)
    }

    /// Checks the values a store cannot run with.
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
        self.join_token()?;
        tessera_proto::limits::validate_page_bytes(self.max_response_bytes)
            .map_err(Error::Config)?;
        self.serving.validate().map_err(Error::Config)?;
        if self.disk.slow_round_ms == 0 || self.disk.stall_timeout_ms <= self.disk.slow_round_ms {
            return Err(Error::Config(format!(
                "disk.stall_timeout_ms ({}) must exceed disk.slow_round_ms ({}), and both be above 0",
                self.disk.stall_timeout_ms, self.disk.slow_round_ms
            )));
        }
        if self.directory.is_empty() {
            return Err(Error::Config(
                "at least one directory address is required".into(),
            ));
        }
        if self.raft.heartbeat_ticks == 0 || self.raft.election_ticks <= self.raft.heartbeat_ticks {
            return Err(Error::Config(
                "raft.election_ticks must be greater than raft.heartbeat_ticks (and both above 0)"
                    .into(),
            ));
        }
        if self.raft.hibernate_after_ticks == 0
            || self.raft.store_liveness_ticks < 2 * self.raft.heartbeat_ticks
        {
            return Err(Error::Config(format!(
                "raft.hibernate_after_ticks must be above 0 and raft.store_liveness_ticks ({}) at least twice raft.heartbeat_ticks ({}): stores ping once per heartbeat",
                self.raft.store_liveness_ticks, self.raft.heartbeat_ticks
            )));
        }
        if self.hibernated_report_interval_ms < self.heartbeat_interval_ms {
            return Err(Error::Config(format!(
                "hibernated_report_interval_ms ({}) must be at least heartbeat_interval_ms ({})",
                self.hibernated_report_interval_ms, self.heartbeat_interval_ms
            )));
        }
        if self.raft.tick_interval_ms == 0 {
            return Err(Error::Config(
                "raft.tick_interval_ms must be above 0".into(),
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(Error::Config(format!(
                "log_format must be text or json, not {:?}",
                self.log_format
            )));
        }
        Ok(())
    }

    pub fn node_config(&self) -> NodeConfig {
        NodeConfig {
            raft: RaftConfig {
                tick_interval: Duration::from_millis(self.raft.tick_interval_ms),
                election_tick: self.raft.election_ticks,
                heartbeat_tick: self.raft.heartbeat_ticks,
                max_size_per_msg_bytes: self.raft.max_size_per_msg_bytes,
                max_inflight_msgs: self.raft.max_inflight_msgs,
                log_gc_tick_interval: self.raft.log_gc_tick_interval,
                log_gc_threshold: self.raft.log_gc_threshold,
                log_gc_count_limit: self.raft.log_gc_count_limit,
                log_gc_size_limit_bytes: self.raft.log_gc_size_limit_mib << 20,
                slow_round: Duration::from_millis(self.disk.slow_round_ms),
                hibernate_regions: self.raft.hibernate_regions,
                hibernate_after_ticks: self.raft.hibernate_after_ticks,
                store_liveness_ticks: self.raft.store_liveness_ticks,
                ..RaftConfig::default()
            },
            kv: KvConfig {
                request_timeout: Duration::from_millis(self.request_timeout_ms),
                max_response_bytes: self.max_response_bytes,
                local_reads: self.raft.local_reads,
                ..KvConfig::default()
            },
            split_check: SplitCheckConfig {
                region_split_size_bytes: self.region_split_size_mib << 20,
                interval: Duration::from_millis(self.split_check_interval_ms),
            },
            merge_catch_up_timeout: Duration::from_millis(self.merge_catch_up_timeout_ms),
            ..NodeConfig::default()
        }
    }

    pub fn rocks_options(&self) -> RocksOptions {
        RocksOptions {
            block_cache_bytes: self.rocksdb.block_cache_mib << 20,
            write_buffer_bytes: self.rocksdb.write_buffer_mib << 20,
            max_background_jobs: self.rocksdb.max_background_jobs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let cfg: StoreConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, StoreConfig::default());
        cfg.validate().unwrap();
        assert_eq!(cfg.advertise_addr(), "127.0.0.1:20160");
    }

    #[test]
    fn a_file_overrides_what_it_names_and_refuses_unknown_keys() {
        let cfg: StoreConfig = toml::from_str(
            r#"
            listen_addr = "0.0.0.0:30160"
            advertise_addr = "store-1.tessera:30160"
            directory = ["d1:2379", "d2:2379"]
            [labels]
            zone = "a"
            [raft]
            election_ticks = 20
            "#,
        )
        .unwrap();
        assert_eq!(cfg.advertise_addr(), "store-1.tessera:30160");
        assert_eq!(cfg.labels["zone"], "a");
        assert_eq!(cfg.raft.election_ticks, 20);
        assert_eq!(
            cfg.raft.heartbeat_ticks,
            RaftSection::default().heartbeat_ticks
        );
        assert!(toml::from_str::<StoreConfig>("listen = 1").is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let mut cfg = StoreConfig::default();
        cfg.raft.election_ticks = 1;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("election_ticks"), "{err}");
    }

    #[test]
    fn hibernation_settings_that_cannot_work_are_refused() {
        let refused = |edit: &dyn Fn(&mut StoreConfig), what: &str| {
            let mut cfg = StoreConfig::default();
            edit(&mut cfg);
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
        };
        refused(
            &|c| c.raft.hibernate_after_ticks = 0,
            "hibernate_after_ticks",
        );
        // Pings go once per heartbeat: a liveness timeout of one heartbeat
        // would wake followers between two pings.
        refused(&|c| c.raft.store_liveness_ticks = 3, "store_liveness_ticks");
        refused(
            &|c| c.hibernated_report_interval_ms = 500,
            "hibernated_report_interval_ms",
        );
        let mut off = StoreConfig::default();
        off.raft.hibernate_regions = false;
        off.validate().unwrap();
        assert!(!off.node_config().raft.hibernate_regions);
        let on = StoreConfig::default().node_config().raft;
        assert!(on.hibernate_regions, "on by default");
        assert_eq!(on.store_liveness_ticks, 50);
    }
}
