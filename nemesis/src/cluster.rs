//! The cluster a nemesis run faults: 3 directories, 5 stores and 2 routers
//! as separate processes on 127.0.0.1 (the `tessera-e2e` harness), with
//! small log-GC thresholds so that lagging replicas catch up by snapshot.
//!
//! It owns every fault the harness can inflict and how to undo it:
//! SIGKILL + restart and SIGSTOP + SIGCONT of any process; partitions
//! between stores through each store's `/fault/partition` endpoint (both
//! directions are cut at the store that blocks); message faults (delay,
//! duplication, reordering of Raft batches) through `/fault/messages`;
//! clock skew of any process through `/fault/clock`; unsafe reads through
//! `/fault/unsafe-read`; failpoints through `/fail/{name}`; and directory
//! operators (leader transfers, splits, moves). The fault endpoints exist
//! only in store binaries built with the `failpoints` feature:
//! [`NemesisCluster::start`] checks for them and fails with a clear message.
//!
//! Invariant: [`NemesisCluster::heal`] returns the cluster to a state with
//! every process running and unpaused, no partition or message fault, and
//! every clock at real speed, so the final reads
//! of a run see the cluster whole.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tessera_e2e::{http_request, E2eCluster, Options};
use tessera_proto::directorypb::{
    MergeRegionRequest, MoveRegionRequest, RegionInfo, ScanRegionsRequest, SplitRegionRequest,
    TransferLeaderRequest,
};

/// Settings of the cluster under test.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub directories: usize,
    pub stores: usize,
    pub routers: usize,
    /// Raft log entries kept before compaction (small: snapshots happen).
    pub log_gc_count_limit: u64,
    /// Regions split past this size (small: the workload's keys span
    /// several regions, and splits happen during the run).
    pub region_split_size_mib: u64,
    /// Extra lines of every store's configuration file, after its other
    /// tables (start them with a table header, e.g. `[disk]`).
    pub store_extra: Vec<String>,
    /// Put every store on a tmpfs of this many MiB (needs root), with
    /// [`RESERVE_MIB`] and [`LOW_SPACE_MIB`] as its `[disk]` settings, so
    /// the `disk-full` nemesis and tests can fill it.
    pub store_disk_mib: Option<u64>,
    /// Extra `key = value` lines for every directory member's `[schedule]`
    /// table (e.g. load-driven rules off where a test picks the regions it
    /// splits and merges).
    pub schedule_extra: Vec<String>,
    /// Run every process on a network host of its own
    /// (`tessera_e2e::netns`; needs root), for the nemeses that cut links
    /// from outside the processes.
    pub network_hosts: bool,
}

/// `[disk] reserve_mib` of stores on a tmpfs ([`ClusterSpec::store_disk_mib`]).
pub const RESERVE_MIB: u64 = 16;
/// `[disk] low_space_mib` of stores on a tmpfs.
pub const LOW_SPACE_MIB: u64 = 64;

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            directories: 3,
            stores: 5,
            routers: 2,
            log_gc_count_limit: 200,
            region_split_size_mib: 1,
            store_extra: vec![],
            store_disk_mib: None,
            schedule_extra: vec![],
            network_hosts: false,
        }
    }
}

/// A process kind the nemesis can kill or pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcKind {
    Store,
    Directory,
    Router,
}

pub struct NemesisCluster {
    pub e2e: E2eCluster,
    /// Store index (harness) → store id (directory).
    store_ids: BTreeMap<usize, u64>,
    paused: BTreeSet<(ProcKind, usize)>,
}

impl NemesisCluster {
    /// Starts the processes and waits until the first region is fully
    /// replicated and every router is ready.
    pub async fn start(spec: &ClusterSpec) -> anyhow::Result<NemesisCluster> {
        let mut e2e = E2eCluster::start(Options {
            directories: spec.directories,
            stores: spec.stores,
            region_split_size_mib: spec.region_split_size_mib,
            store_raft_extra: vec![
                // Regions hibernate 200 ms after their last request (4 ticks
                // of 50 ms): the run keeps putting regions to sleep and
                // waking them, under every fault.
                "hibernate_after_ticks = 4".into(),
                "log_gc_tick_interval = 10".into(),
                "log_gc_threshold = 20".into(),
                format!("log_gc_count_limit = {}", spec.log_gc_count_limit),
            ],
            store_extra: match spec.store_disk_mib {
                Some(_) => {
                    let mut extra = spec.store_extra.clone();
                    anyhow::ensure!(
                        !extra.iter().any(|l| l.trim() == "[disk]"),
                        "stores on a tmpfs get their [disk] table from the harness"
                    );
                    extra.extend([
                        "[disk]".into(),
                        format!("reserve_mib = {RESERVE_MIB}"),
                        format!("low_space_mib = {LOW_SPACE_MIB}"),
                    ]);
                    extra
                }
                None => spec.store_extra.clone(),
            },
            store_disk_mib: spec.store_disk_mib,
            schedule_extra: spec.schedule_extra.clone(),
            network_namespaces: spec.network_hosts,
            ..Options::default()
        })
        .await;
        for _ in 0..spec.routers {
            e2e.add_router().await;
        }
        e2e.wait_settled(1).await;
        let mut store_ids = BTreeMap::new();
        for &index in e2e.stores.keys() {
            let id = e2e
                .store_id(index)
                .await
                .ok_or_else(|| anyhow!("store {index} has no id"))?;
            store_ids.insert(index, id);
        }
        let c = NemesisCluster {
            e2e,
            store_ids,
            paused: BTreeSet::new(),
        };
        c.check_fault_endpoints()?;
        Ok(c)
    }

    fn check_fault_endpoints(&self) -> anyhow::Result<()> {
        let store = self.e2e.stores.values().next().context("no store")?;
        match http_request(&store.status, "GET", "/fail", "") {
            Ok((200, _)) => Ok(()),
            Ok((404, _)) => bail!(
                "the tessera-store binary has no fault endpoints: build it with \
                 `cargo build --release --bins --features tessera-store/failpoints` \
                 (scripts/test does)"
            ),
            Ok((code, body)) => bail!("GET /fail answered {code}: {body}"),
            Err(e) => bail!("cannot reach store status {}: {e}", store.status),
        }
    }

    pub fn router_addrs(&self) -> Vec<String> {
        self.e2e.router_addrs()
    }

    pub fn store_indexes(&self) -> Vec<usize> {
        self.e2e.stores.keys().copied().collect()
    }

    pub fn store_id(&self, index: usize) -> u64 {
        self.store_ids[&index]
    }

    pub fn store_index(&self, id: u64) -> Option<usize> {
        self.store_ids
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| *k)
    }

    /// The network host of a process (`store-2`; see `tessera_e2e::netns`).
    pub fn host(&self, kind: ProcKind, index: usize) -> String {
        match kind {
            ProcKind::Directory => format!("directory-{index}"),
            ProcKind::Store => format!("store-{index}"),
            ProcKind::Router => format!("router-{index}"),
        }
    }

    /// Every process's network host.
    pub fn hosts(&self) -> Vec<String> {
        [ProcKind::Directory, ProcKind::Store, ProcKind::Router]
            .into_iter()
            .flat_map(|kind| {
                self.indexes(kind)
                    .into_iter()
                    .map(move |i| self.host(kind, i))
            })
            .collect()
    }

    /// Cuts every link between a host of `a` and a host of `b`, in the
    /// network between them; [`NemesisCluster::heal`] heals them.
    pub fn cut_links(&mut self, a: &[String], b: &[String]) -> anyhow::Result<()> {
        let net = self
            .e2e
            .net
            .as_mut()
            .ok_or_else(|| anyhow!("link cuts need the cluster on network hosts"))?;
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let b: Vec<&str> = b.iter().map(String::as_str).collect();
        net.cut_between(&a, &b).map_err(|e| anyhow!(e))
    }

    pub fn indexes(&self, kind: ProcKind) -> Vec<usize> {
        match kind {
            ProcKind::Store => self.e2e.stores.keys().copied().collect(),
            ProcKind::Directory => self.e2e.directories.keys().map(|&i| i as usize).collect(),
            ProcKind::Router => self.e2e.routers.keys().copied().collect(),
        }
    }

    fn proc_mut(&mut self, kind: ProcKind, index: usize) -> anyhow::Result<&mut tessera_e2e::Proc> {
        let p = match kind {
            ProcKind::Store => self.e2e.stores.get_mut(&index).map(|s| &mut s.proc),
            ProcKind::Directory => self
                .e2e
                .directories
                .get_mut(&(index as u64))
                .map(|d| &mut d.proc),
            ProcKind::Router => self.e2e.routers.get_mut(&index).map(|r| &mut r.proc),
        };
        p.ok_or_else(|| anyhow!("no {kind:?} {index}"))
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self, kind: ProcKind, index: usize) -> anyhow::Result<()> {
        self.paused.remove(&(kind, index));
        self.proc_mut(kind, index)?.kill();
        Ok(())
    }

    /// Starts a killed (or crashed) process again with its data.
    pub fn restart(&mut self, kind: ProcKind, index: usize) -> anyhow::Result<()> {
        let p = self.proc_mut(kind, index)?;
        p.has_exited();
        if !p.is_running() {
            p.start();
        }
        Ok(())
    }

    /// SIGKILLs store `index` and starts it again at a new address, which
    /// it registers with the directory (with its own secret); returns the
    /// address.
    pub fn move_store(&mut self, index: usize) -> anyhow::Result<String> {
        self.kill(ProcKind::Store, index)?;
        let addr = self.e2e.move_store(index);
        self.restart(ProcKind::Store, index)?;
        Ok(addr)
    }

    /// SIGSTOP (`pause`) or SIGCONT.
    pub fn signal_pause(
        &mut self,
        kind: ProcKind,
        index: usize,
        pause: bool,
    ) -> anyhow::Result<()> {
        let p = self.proc_mut(kind, index)?;
        if !p.is_running() {
            return Ok(());
        }
        p.pause(pause);
        if pause {
            self.paused.insert((kind, index));
        } else {
            self.paused.remove(&(kind, index));
        }
        Ok(())
    }

    /// The status address of a process.
    fn status_addr(&self, kind: ProcKind, index: usize) -> anyhow::Result<String> {
        let status = match kind {
            ProcKind::Store => self.e2e.stores.get(&index).map(|s| &s.status),
            ProcKind::Directory => self.e2e.directories.get(&(index as u64)).map(|d| &d.status),
            ProcKind::Router => self.e2e.routers.get(&index).map(|r| &r.status),
        };
        status
            .cloned()
            .ok_or_else(|| anyhow!("no {kind:?} {index}"))
    }

    /// A request to a process's status server that must answer 200.
    fn status_request(
        &self,
        kind: ProcKind,
        index: usize,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<()> {
        let status = self.status_addr(kind, index)?;
        match http_request(&status, method, path, body) {
            Ok((200, _)) => Ok(()),
            Ok((code, body)) => bail!("{kind:?} {index} {method} {path}: {code} {body}"),
            // A killed or paused process: its faults are moot until it is back.
            Err(e) => bail!("{kind:?} {index} {method} {path}: {e}"),
        }
    }

    fn fault_request(
        &self,
        index: usize,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<()> {
        self.status_request(ProcKind::Store, index, method, path, body)
    }

    /// Message faults (`faults`: `delay=50ms jitter=20ms duplicate=0.1
    /// reorder=0.2`, see `tessera_multiraft::transport::MessageFaults`)
    /// on the Raft batches store `from` sends to the stores `to`
    /// (indexes); [`NemesisCluster::heal`] clears them.
    pub fn set_message_faults(
        &self,
        from: usize,
        to: &[usize],
        faults: &str,
    ) -> anyhow::Result<()> {
        let ids: Vec<String> = to.iter().map(|&i| self.store_id(i).to_string()).collect();
        let body = format!("stores={} {faults}", ids.join(","));
        self.fault_request(from, "PUT", "/fault/messages", &body)
    }

    /// Skews a process's clock (`rate=0.9`, `jump=500ms`, `normal`; see
    /// `tessera_common::clock`); [`NemesisCluster::heal`] sets every
    /// clock back to real speed (a jump made stays: the clock is
    /// monotonic).
    pub fn skew_clock(&self, kind: ProcKind, index: usize, fault: &str) -> anyhow::Result<()> {
        self.status_request(kind, index, "PUT", "/fault/clock", fault)
    }

    /// Clears every partition and message fault and sets every clock
    /// back to real speed; returns the errors (a restarted process starts
    /// with none).
    fn heal_faults(&self) -> Vec<String> {
        let mut errors = self.heal_partitions();
        for i in self.store_indexes() {
            if let Err(e) = self.fault_request(i, "DELETE", "/fault/messages", "") {
                errors.push(e.to_string());
            }
        }
        for kind in [ProcKind::Directory, ProcKind::Store, ProcKind::Router] {
            for i in self.indexes(kind) {
                if let Err(e) = self.skew_clock(kind, i, "normal") {
                    errors.push(e.to_string());
                }
            }
        }
        errors
    }

    /// Cuts the stores into `groups` (store indexes): Raft traffic flows only
    /// within a group. A store in no group keeps every link (a bridge).
    pub fn partition(&self, groups: &[Vec<usize>]) -> Vec<String> {
        let mut errors = vec![];
        for (gi, group) in groups.iter().enumerate() {
            let others: Vec<String> = groups
                .iter()
                .enumerate()
                .filter(|(gj, _)| *gj != gi)
                .flat_map(|(_, g)| g.iter().map(|i| self.store_id(*i).to_string()))
                .collect();
            for &i in group {
                if let Err(e) = self.fault_request(i, "PUT", "/fault/partition", &others.join(","))
                {
                    errors.push(e.to_string());
                }
            }
        }
        errors
    }

    /// Removes every partition (errors from stores that are down are
    /// returned; a restarted store starts with none).
    pub fn heal_partitions(&self) -> Vec<String> {
        self.store_indexes()
            .into_iter()
            .filter_map(|i| {
                self.fault_request(i, "DELETE", "/fault/partition", "")
                    .err()
            })
            .map(|e| e.to_string())
            .collect()
    }

    /// Switches unsafe (stale) reads on every store: the negative control.
    pub fn set_unsafe_reads(&self, on: bool) -> anyhow::Result<()> {
        for i in self.store_indexes() {
            self.fault_request(
                i,
                "PUT",
                "/fault/unsafe-read",
                if on { "on" } else { "off" },
            )?;
        }
        Ok(())
    }

    /// Arms failpoint `name` with `actions` (`fail` syntax) on a store.
    /// Fills store `index`'s tmpfs until `free` bytes are left, or with
    /// `None` gives the space back.
    pub fn fill_disk(&self, index: usize, free: Option<u64>) -> anyhow::Result<()> {
        let store = self.e2e.stores.get(&index).context("no such store")?;
        let Some(disk) = store.disk.as_ref() else {
            if free.is_some() {
                bail!("store {index} is not on a tmpfs (run with --store-disk-mib)");
            }
            return Ok(());
        };
        match free {
            Some(free) => disk.fill_to(free)?,
            None => disk.free_ballast()?,
        }
        Ok(())
    }

    pub fn arm_failpoint(&self, index: usize, name: &str, actions: &str) -> anyhow::Result<()> {
        self.fault_request(index, "PUT", &format!("/fail/{name}"), actions)
    }

    /// Every process running and unpaused, no partition or message fault,
    /// every clock at real speed.
    pub async fn heal(&mut self) -> anyhow::Result<()> {
        if let Some(net) = self.e2e.net.as_mut() {
            net.heal_all()
                .map_err(|e| anyhow!("cannot heal the network: {e}"))?;
        }
        for (kind, index) in std::mem::take(&mut self.paused) {
            self.signal_pause(kind, index, false)?;
        }
        for index in self.store_indexes() {
            self.fill_disk(index, None)?;
        }
        for kind in [ProcKind::Directory, ProcKind::Store, ProcKind::Router] {
            for index in self.indexes(kind) {
                self.restart(kind, index)?;
            }
        }
        // Restarted stores need a moment before their endpoints answer.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let errors = self.heal_faults();
            if errors.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "cannot heal partitions, message faults and clocks: {}",
                    errors.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn regions(&self) -> anyhow::Result<Vec<RegionInfo>> {
        let conn = self.e2e.directory_conn();
        Ok(conn
            .call("scan regions", |mut c| async move {
                c.scan_regions(ScanRegionsRequest::default()).await
            })
            .await?
            .regions)
    }

    /// Asks the directory to move `region`'s leadership to `to_store` (id).
    pub async fn transfer_leader(&self, region_id: u64, to_store_id: u64) -> anyhow::Result<()> {
        let conn = self.e2e.directory_conn();
        conn.call("transfer leader", |mut c| async move {
            c.transfer_leader(TransferLeaderRequest {
                region_id,
                to_store_id,
            })
            .await
        })
        .await?;
        Ok(())
    }

    /// Asks the directory to split `region` at its middle.
    pub async fn split(&self, region_id: u64) -> anyhow::Result<()> {
        let conn = self.e2e.directory_conn();
        conn.call("split region", |mut c| async move {
            c.split_region(SplitRegionRequest {
                region_id,
                split_keys: vec![],
            })
            .await
        })
        .await?;
        Ok(())
    }

    /// Asks the directory to merge `source` into the adjacent `target`.
    pub async fn merge(&self, source: u64, target: u64) -> anyhow::Result<()> {
        let conn = self.e2e.directory_conn();
        conn.call("merge regions", |mut c| async move {
            c.merge_region(MergeRegionRequest {
                source_region_id: source,
                target_region_id: target,
            })
            .await
        })
        .await?;
        Ok(())
    }

    /// Asks the directory to move `region`'s replica between stores (ids).
    pub async fn move_region(&self, region_id: u64, from: u64, to: u64) -> anyhow::Result<()> {
        let conn = self.e2e.directory_conn();
        conn.call("move region", |mut c| async move {
            c.move_region(MoveRegionRequest {
                region_id,
                from_store_id: from,
                to_store_id: to,
            })
            .await
        })
        .await?;
        Ok(())
    }

    /// The sum of a store metric over the stores running now.
    pub fn store_metric_sum(&self, series: &str) -> f64 {
        self.e2e
            .stores
            .values()
            .filter_map(|s| tessera_e2e::metric_value(&s.status, series))
            .sum()
    }

    /// The last lines of every process's log (for failure reports).
    pub fn tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for d in self.e2e.directories.values() {
            out.push_str(&format!("--- {}\n{}\n", d.proc.name, d.proc.tail(lines)));
        }
        for s in self.e2e.stores.values() {
            out.push_str(&format!("--- {}\n{}\n", s.proc.name, s.proc.tail(lines)));
        }
        for r in self.e2e.routers.values() {
            out.push_str(&format!("--- {}\n{}\n", r.proc.name, r.proc.tail(lines)));
            // Why its requests were retried: its log shows only warnings.
            if let Some((_, metrics)) = tessera_e2e::http_get(&r.status, "/metrics") {
                for l in metrics.lines() {
                    if l.starts_with("tessera_router_retries_total") {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}
