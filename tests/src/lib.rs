//! The end-to-end harness: starts real `tessera-directory` and
//! `tessera-store` processes on 127.0.0.1 (or each on a network host of its
//! own, [`Options::network_namespaces`], see [`netns`]) with temporary data
//! directories,
//! kills them (SIGKILL) and restarts them, and hands tests a directory
//! connection and a routing client to look at the cluster as users do.
//!
//! The cluster runs with TLS unless `Options::insecure`: the harness makes
//! a CA, one node certificate and a router certificate (127.0.0.1,
//! localhost and every network host's address) and the client certificate
//! `admin` in `certs/` of its directory, and
//! [`E2eCluster::security`] is what its own clients (and tests' SDK
//! clients, the CLI) use.
//!
//! The binaries come from the target directory of this build (`cargo build
//! --release --bins`, which `scripts/test` runs first). Every process this
//! harness starts is killed when the cluster is dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_proto::directorypb::{
    ClusterStatusRequest, ClusterStatusResponse, ListStoresRequest, RegionInfo, ScanRegionsRequest,
    SplitRegionRequest, StoreInfo,
};
use tessera_routing::directory::DirectoryConn;
use tessera_routing::{Router, RouterConfig};

pub mod builds;
mod diagnose;
mod members;
pub mod netns;
mod ports;
mod process;
mod raw_grpc;
mod security;
mod status;
pub mod tmpfs;
pub use builds::{ensure_plain_binaries, ensure_plain_binaries_in};
pub use ports::free_port;
pub use process::Proc;
pub use raw_grpc::RawCodec;
pub use security::make_certs;
pub use status::{http_get, http_request, metric_value};

/// The directory holding the binaries of this build.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TESSERA_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test binary>, or target/<profile>/<binary>.
    let exe = std::env::current_exe().expect("binary path");
    let dir = exe.parent().expect("binary directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (`cargo build --release --bins`; scripts/test does it)",
        p.display()
    );
    p
}

/// Every region the directory knows, in key order.
pub async fn scan_regions(conn: &DirectoryConn) -> anyhow::Result<Vec<RegionInfo>> {
    Ok(conn
        .call("scan regions", |mut c| async move {
            c.scan_regions(ScanRegionsRequest::default()).await
        })
        .await?
        .regions)
}

/// Timing and sizes for a test cluster (fast, so tests take seconds).
#[derive(Clone, Debug)]
pub struct Options {
    pub directories: usize,
    pub stores: usize,
    /// After how long a silent store is Down and its replicas rebuilt.
    pub down_after_ms: u64,
    pub region_split_size_mib: u64,
    /// Extra TOML for every store (e.g. labels), after its other tables.
    pub store_extra: Vec<String>,
    /// Extra `key = value` lines for every directory member's `[schedule]`
    /// table (e.g. the merge rule's settings).
    pub schedule_extra: Vec<String>,
    /// Extra TOML for every router, after its other settings (e.g. a
    /// `[serving]` table).
    pub router_extra: Vec<String>,
    /// Extra `key = value` lines for every store's `[raft]` table (e.g.
    /// small log-GC thresholds so snapshots happen).
    pub store_raft_extra: Vec<String>,
    /// Keep the binaries' own Raft and heartbeat timing (benchmarks)
    /// instead of the fast timing tests use.
    pub default_timing: bool,
    /// Run plaintext (`--insecure`) instead of TLS.
    pub insecure: bool,
    /// Put every store's data directory on a tmpfs of this many MiB
    /// ([`tmpfs::Tmpfs`]; needs root), so a test can fill its disk.
    pub store_disk_mib: Option<u64>,
    /// Run every process on a network host of its own ([`netns`]; needs
    /// root), so a test can cut the links between them
    /// ([`E2eCluster::net`]).
    pub network_namespaces: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            directories: 3,
            stores: 3,
            down_after_ms: 4_000,
            region_split_size_mib: 96,
            store_extra: vec![],
            schedule_extra: vec![],
            router_extra: vec![],
            store_raft_extra: vec![],
            default_timing: false,
            insecure: false,
            store_disk_mib: None,
            network_namespaces: false,
        }
    }
}

pub struct Directory {
    pub id: u64,
    pub addr: String,
    pub status: String,
    pub proc: Proc,
}

pub struct Store {
    pub index: usize,
    pub addr: String,
    pub status: String,
    pub proc: Proc,
    /// The size-limited file system under its data directory, if any
    /// (dropped after `proc`, which is killed first).
    pub disk: Option<tmpfs::Tmpfs>,
}

/// A `tessera-router` process: `addr` serves the public Kv API.
pub struct RouterProc {
    pub index: usize,
    pub addr: String,
    pub status: String,
    pub proc: Proc,
}

pub struct E2eCluster {
    pub dir: tempfile::TempDir,
    pub opts: Options,
    pub directories: BTreeMap<u64, Directory>,
    pub stores: BTreeMap<usize, Store>,
    pub routers: BTreeMap<usize, RouterProc>,
    /// The certificates directory, unless insecure.
    pub certs: Option<PathBuf>,
    /// The join token the cluster is created with; every store is given it.
    pub join_token: String,
    /// The network hosts, with [`Options::network_namespaces`] (dropped
    /// last: after every process in them).
    pub net: Option<netns::Network>,
}

impl Drop for E2eCluster {
    fn drop(&mut self) {
        // Stores on their own file systems: stop them and unmount before
        // the temporary directory goes.
        for s in self.stores.values_mut() {
            if s.disk.is_some() {
                s.proc.kill();
                s.disk = None;
            }
        }
        if std::env::var_os("TESSERA_E2E_KEEP").is_some() {
            eprintln!(
                "keeping the cluster's files in {}",
                self.dir.path().display()
            );
            for d in self.directories.values_mut() {
                d.proc.kill();
            }
            for s in self.stores.values_mut() {
                s.proc.kill();
            }
            for r in self.routers.values_mut() {
                r.proc.kill();
            }
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            let _ = dir.keep();
        }
    }
}

impl E2eCluster {
    /// Starts the directories, then the stores; returns once the directory
    /// has a leader and every store registered.
    pub async fn start(opts: Options) -> E2eCluster {
        if let Ok(filter) = std::env::var("TESSERA_E2E_CLIENT_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let net = opts.network_namespaces.then(|| {
            netns::Network::create()
                .unwrap_or_else(|e| panic!("this test runs processes on network hosts: {e}"))
        });
        let hosts: Vec<String> = ["127.0.0.1".to_string(), "localhost".to_string()]
            .into_iter()
            .chain(
                net.iter()
                    .flat_map(|n| n.all_addresses())
                    .map(|a| a.to_string()),
            )
            .collect();
        let certs = (!opts.insecure).then(|| make_certs(&dir.path().join("certs"), &hosts));
        let mut c = E2eCluster {
            dir,
            opts: opts.clone(),
            directories: BTreeMap::new(),
            stores: BTreeMap::new(),
            routers: BTreeMap::new(),
            certs,
            join_token: tessera_security::secret::generate(),
            net,
        };
        let ids: Vec<u64> = (1..=opts.directories as u64).collect();
        let ports: Vec<u16> = ids.iter().map(|_| free_port()).collect();
        let members: Vec<String> = ids
            .iter()
            .zip(&ports)
            .map(|(id, p)| format!("{id}={}:{p}", c.host(&format!("directory-{id}")).0))
            .collect();
        for (id, port) in ids.iter().zip(&ports) {
            c.spawn_directory(*id, *port, &members, false);
        }
        for _ in 0..opts.stores {
            c.add_store();
        }
        c.wait_for("every store registered", Duration::from_secs(60), |c| {
            let want = c.stores.len();
            async move {
                c.list_stores()
                    .await
                    .map(|s| {
                        s.iter()
                            .filter(|s| s.seconds_since_heartbeat < 5 && s.stats.is_some())
                            .count()
                            >= want
                    })
                    .unwrap_or(false)
            }
        })
        .await;
        c
    }

    pub fn directory_addrs(&self) -> Vec<String> {
        self.directories.values().map(|d| d.addr.clone()).collect()
    }

    fn spawn_directory(&mut self, id: u64, port: u16, members: &[String], join: bool) {
        let data = self.dir.path().join(format!("directory-{id}"));
        let (ip, netns) = self.host(&format!("directory-{id}"));
        let status = format!("{ip}:{}", free_port());
        let config = self.dir.path().join(format!("directory-{id}.toml"));
        std::fs::write(
            &config,
            if self.opts.default_timing {
                format!(
                    "id = {id}\ndata_dir = {data:?}\nlisten_addr = \"{ip}:{port}\"\nstatus_addr = {status:?}\n\
                     initial_members = {members:?}\njoin = {join}\njoin_token = {:?}\n\
                     [schedule]\ndown_after_ms = {}\nregion_split_size_mib = {}\n{}\n",
                    self.join_token,
                    self.opts.down_after_ms,
                    self.opts.region_split_size_mib,
                    self.opts.schedule_extra.join("\n")
                )
            } else {
                format!(
                    "id = {id}\ndata_dir = {data:?}\nlisten_addr = \"{ip}:{port}\"\nstatus_addr = {status:?}\n\
                     initial_members = {members:?}\njoin = {join}\njoin_token = {:?}\n\
                     [raft]\ntick_interval_ms = 50\nelection_ticks = 10\nheartbeat_ticks = 2\n\
                     [schedule]\ninterval_ms = 200\ndisconnect_after_ms = 1000\ndown_after_ms = {}\n\
                     operator_timeout_ms = 30000\nregion_split_size_mib = {}\nmax_balance_per_round = 8\n{}\n",
                    self.join_token,
                    self.opts.down_after_ms,
                    self.opts.region_split_size_mib,
                    self.opts.schedule_extra.join("\n")
                )
            },
        )
        .expect("config");
        let proc = Proc::spawn(
            binary("tessera-directory"),
            format!("directory-{id}"),
            ["--config".into(), config.display().to_string()]
                .into_iter()
                .chain(self.security_args())
                .chain(self.network_args())
                .collect(),
            self.dir.path().join(format!("directory-{id}.log")),
            netns,
        );
        self.directories.insert(
            id,
            Directory {
                id,
                addr: format!("{ip}:{port}"),
                status,
                proc,
            },
        );
    }

    /// Gives the stopped store `index` a new listen address (a free port)
    /// in its configuration, for its next start; returns the address. The
    /// store registers it with the directory itself when it starts.
    pub fn move_store(&mut self, index: usize) -> String {
        let store = self.stores.get_mut(&index).expect("store index");
        assert!(
            !store.proc.is_running(),
            "stop store {index} before moving it"
        );
        let config = self.dir.path().join(format!("store-{index}.toml"));
        let ip = store.addr.rsplit_once(':').expect("host:port").0;
        let new_addr = format!("{ip}:{}", free_port());
        let text = std::fs::read_to_string(&config).expect("store config");
        let old = format!("listen_addr = {:?}", store.addr);
        assert!(text.contains(&old), "{} has no {old}", config.display());
        let text = text.replace(&old, &format!("listen_addr = {new_addr:?}"));
        std::fs::write(&config, text).expect("store config");
        store.addr = new_addr.clone();
        new_addr
    }

    /// Starts one more store and waits until it registered; returns its
    /// index and id.
    pub async fn add_registered_store(&mut self) -> (usize, u64) {
        let index = self.add_store();
        self.wait_for(
            "the new store to register",
            Duration::from_secs(30),
            |c| async move { c.store_id(index).await.is_some() },
        )
        .await;
        (index, self.store_id(index).await.expect("registered"))
    }

    /// Starts one more store; returns its index.
    pub fn add_store(&mut self) -> usize {
        let index = self.stores.keys().max().map(|i| i + 1).unwrap_or(1);
        let (ip, netns) = self.host(&format!("store-{index}"));
        let addr = format!("{ip}:{}", free_port());
        let status = format!("{ip}:{}", free_port());
        let data = self.dir.path().join(format!("store-{index}"));
        let disk = self
            .opts
            .store_disk_mib
            .map(|mib| tmpfs::Tmpfs::mount(&data, mib).unwrap_or_else(|e| panic!("{e}")));
        let config = self.dir.path().join(format!("store-{index}.toml"));
        let mut extra = self.opts.store_extra.join("\n");
        if !extra.contains("[labels]") {
            extra.push_str(&format!("\n[labels]\nhost = \"h{index}\"\n"));
        }
        std::fs::write(
            &config,
            if self.opts.default_timing {
                format!(
                    "data_dir = {data:?}\nlisten_addr = {addr:?}\nstatus_addr = {status:?}\ndirectory = {:?}\n\
                     join_token = {:?}\nregion_split_size_mib = {}\n{extra}\n",
                    self.directory_addrs(),
                    self.join_token,
                    self.opts.region_split_size_mib
                )
            } else {
                format!(
                    "data_dir = {data:?}\nlisten_addr = {addr:?}\nstatus_addr = {status:?}\ndirectory = {:?}\n\
                     join_token = {:?}\nheartbeat_interval_ms = 200\nrequest_timeout_ms = 5000\nshutdown_grace_ms = 3000\n\
                     region_split_size_mib = {}\nsplit_check_interval_ms = 500\nmerge_catch_up_timeout_ms = 5000\npeer_down_after_ms = 2000\n\
                     [raft]\ntick_interval_ms = 50\nelection_ticks = 10\nheartbeat_ticks = 2\n{}\n\
                     [rocksdb]\nblock_cache_mib = 16\nwrite_buffer_mib = 8\nmax_background_jobs = 1\n{extra}\n",
                    self.directory_addrs(),
                    self.join_token,
                    self.opts.region_split_size_mib,
                    self.opts.store_raft_extra.join("\n"),
                )
            },
        )
        .expect("config");
        let proc = Proc::spawn(
            binary("tessera-store"),
            format!("store-{index}"),
            ["--config".into(), config.display().to_string()]
                .into_iter()
                .chain(self.security_args())
                .chain(self.network_args())
                .collect(),
            self.dir.path().join(format!("store-{index}.log")),
            netns,
        );
        self.stores.insert(
            index,
            Store {
                index,
                addr,
                status,
                proc,
                disk,
            },
        );
        index
    }

    /// Starts one more `tessera-router` and waits until it is ready;
    /// returns its index.
    pub async fn add_router(&mut self) -> usize {
        let index = self.routers.keys().max().map(|i| i + 1).unwrap_or(1);
        let (ip, netns) = self.host(&format!("router-{index}"));
        let addr = format!("{ip}:{}", free_port());
        let status = format!("{ip}:{}", free_port());
        let config = self.dir.path().join(format!("router-{index}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen_addr = {addr:?}\nstatus_addr = {status:?}\ndirectory = {:?}\nrequest_timeout_ms = 20000\n{}\n",
                self.directory_addrs(),
                self.opts.router_extra.join("\n")
            ),
        )
        .expect("config");
        let proc = Proc::spawn(
            binary("tessera-router"),
            format!("router-{index}"),
            ["--config".into(), config.display().to_string()]
                .into_iter()
                .chain(self.security_args())
                .chain(self.network_args())
                .collect(),
            self.dir.path().join(format!("router-{index}.log")),
            netns,
        );
        self.routers.insert(
            index,
            RouterProc {
                index,
                addr,
                status: status.clone(),
                proc,
            },
        );
        self.wait_for("the router is ready", Duration::from_secs(60), |_| {
            let status = status.clone();
            async move { matches!(http_get(&status, "/ready"), Some((200, _))) }
        })
        .await;
        index
    }

    /// Waits until the directory knows at least `regions` regions, each
    /// fully replicated, with no operator in flight.
    pub async fn wait_settled(&self, regions: u32) {
        self.wait_for(
            &format!("{regions} fully replicated regions"),
            Duration::from_secs(120),
            move |c| async move {
                c.status()
                    .await
                    .map(|s| {
                        s.regions >= regions
                            && s.under_replicated_regions == 0
                            && s.operators.is_empty()
                    })
                    .unwrap_or(false)
            },
        )
        .await;
    }

    /// Splits the cluster's one region at `at` (keys of the default
    /// keyspace) and waits until every piece is fully replicated.
    pub async fn split_first_region(&self, at: &[String]) {
        self.wait_settled(1).await;
        let conn = self.directory_conn();
        let first = scan_regions(&conn).await.expect("regions")[0]
            .region
            .clone()
            .expect("region");
        let split_keys: Vec<Vec<u8>> = at
            .iter()
            .map(|k| tessera_proto::keys::encode(0, k.as_bytes()))
            .collect();
        conn.call("split region", |mut c| {
            let req = SplitRegionRequest {
                region_id: first.id,
                split_keys: split_keys.clone(),
            };
            async move { c.split_region(req).await }
        })
        .await
        .expect("split");
        self.wait_settled(at.len() as u32 + 1).await;
    }

    /// Runs the `tessera` CLI against this cluster's directory (and routers,
    /// if any) with a 20 s timeout; stdout on success, stderr on failure.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(bin_dir().join("tessera"));
        cmd.arg("--directory").arg(self.directory_addrs().join(","));
        if !self.routers.is_empty() {
            cmd.arg("--router").arg(self.router_addrs().join(","));
        }
        let out = cmd
            .arg("--timeout")
            .arg("20")
            .args(self.cli_security_args())
            .args(args)
            .env_remove("TESSERA_OUTPUT")
            .env_remove("TESSERA_CERTS_DIR")
            .output()
            .expect("run tessera");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Every process's name (`directory-<id>`, `store-<index>`,
    /// `router-<index>`) and status address (health, `/metrics`).
    pub fn status_addrs(&self) -> Vec<(String, String)> {
        let directories = self
            .directories
            .values()
            .map(|d| (format!("directory-{}", d.id), d.status.clone()));
        let stores = self
            .stores
            .values()
            .map(|s| (format!("store-{}", s.index), s.status.clone()));
        let routers = self
            .routers
            .values()
            .map(|r| (format!("router-{}", r.index), r.status.clone()));
        directories.chain(stores).chain(routers).collect()
    }

    /// Every process's name (as in [`E2eCluster::status_addrs`]) and its
    /// `/metrics` page; the error names a process whose page could not be
    /// read.
    pub fn metrics_pages(&self) -> Result<Vec<(String, String)>, String> {
        self.status_addrs()
            .into_iter()
            .map(|(name, addr)| match http_get(&addr, "/metrics") {
                Some((200, body)) => Ok((name, body)),
                other => Err(format!("{name} ({addr}): GET /metrics answered {other:?}")),
            })
            .collect()
    }

    /// The public addresses of the running routers.
    pub fn router_addrs(&self) -> Vec<String> {
        self.routers.values().map(|r| r.addr.clone()).collect()
    }

    pub fn directory_conn(&self) -> DirectoryConn {
        DirectoryConn::new(
            self.directory_addrs(),
            Duration::from_secs(20),
            self.security(),
        )
        .expect("directory connection")
    }

    pub fn router(&self) -> Arc<Router> {
        let mut cfg = RouterConfig::new(self.directory_addrs(), self.security());
        cfg.timeout = Duration::from_secs(20);
        Router::new(cfg).expect("router")
    }

    pub async fn list_stores(&self) -> anyhow::Result<Vec<StoreInfo>> {
        let conn = self.directory_conn();
        Ok(conn
            .call("list stores", |mut c| async move {
                c.list_stores(ListStoresRequest {
                    include_tombstones: true,
                })
                .await
            })
            .await?
            .stores)
    }

    pub async fn status(&self) -> anyhow::Result<ClusterStatusResponse> {
        let conn = self.directory_conn();
        Ok(conn
            .call("cluster status", |mut c| async move {
                c.cluster_status(ClusterStatusRequest {}).await
            })
            .await?)
    }

    /// The id of the directory member that leads now.
    pub async fn directory_leader(&self) -> Option<u64> {
        let s = self.status().await.ok()?;
        s.members.iter().find(|m| m.is_leader).map(|m| m.id)
    }

    /// The store id the directory gave the store at `index`.
    pub async fn store_id(&self, index: usize) -> Option<u64> {
        let addr = &self.stores.get(&index)?.addr;
        self.list_stores()
            .await
            .ok()?
            .into_iter()
            .filter_map(|s| s.store)
            .find(|s| &s.address == addr)
            .map(|s| s.id)
    }

    /// Polls `cond` until it holds; panics with the processes' last log
    /// lines after `timeout`.
    pub async fn wait_for<'a, F, Fut>(&'a self, what: &str, timeout: Duration, mut cond: F)
    where
        F: FnMut(&'a E2eCluster) -> Fut,
        Fut: std::future::Future<Output = bool> + 'a,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self).await {
                return;
            }
            if Instant::now() > deadline {
                let mut logs = String::new();
                for d in self.directories.values() {
                    logs.push_str(&format!("--- {} ---\n{}\n", d.proc.name, d.proc.tail(15)));
                }
                for s in self.stores.values() {
                    logs.push_str(&format!("--- {} ---\n{}\n", s.proc.name, s.proc.tail(15)));
                }
                for r in self.routers.values() {
                    logs.push_str(&format!("--- {} ---\n{}\n", r.proc.name, r.proc.tail(15)));
                }
                let status = self.status().await;
                panic!("timed out after {timeout:?} waiting for: {what}\n{logs}\ndirectory status: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
