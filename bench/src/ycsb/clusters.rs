//! Local clusters to benchmark, as separate processes on 127.0.0.1 with
//! data in temporary directories, stopped (and their files removed) when
//! dropped — also when a run fails or is interrupted:
//!
//! - [`LocalTessera`]: 3 `tessera-directory`, 3 `tessera-store` and 1
//!   `tessera-router` through the e2e harness, with the binaries' own
//!   (production) timing; every write is fsynced on commit (the store's
//!   group-commit write batch is synced).
//! - [`LocalEtcd`]: an N-member etcd cluster with its defaults (fsync on
//!   commit); [`ensure_etcd`] installs Debian's `etcd-server` when no
//!   `etcd` is on the PATH.
//!
//! Both run in one [`Mode`]: plaintext, or TLS on every connection with
//! client certificates required — tessera as it runs by default (the
//! harness's certificates; clients present `client.admin`), etcd with
//! `--client-cert-auth` and peer TLS (`--peer-client-cert-auth`) using a
//! `tessera cert` bundle of its own (its node certificate serves and
//! dials; clients present `client.admin`).
//!
//! The tessera binaries come from the target directory of `tessera-bench`
//! (`cargo build --release --bins`), and must not be a test build
//! (`tessera_e2e::ensure_plain_binaries`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_e2e::{free_port, E2eCluster, Options};
use tessera_security::certs::{self, CertsDir};
use tessera_security::{Identity, Kind};

use super::Mode;

/// A tessera cluster of separate processes.
pub struct LocalTessera {
    pub cluster: E2eCluster,
}

impl LocalTessera {
    pub async fn start(stores: usize, mode: Mode) -> anyhow::Result<LocalTessera> {
        Self::start_with(stores, mode, &[], &[], true, &[]).await
    }

    /// With `serving` (`key = value` lines) as the `[serving]` table of
    /// every store and router, and `store_toml` (TOML lines) appended to
    /// every store's configuration; `batch_stream` false makes the router
    /// send one unary RPC per request to the stores; `schedule` (`key =
    /// value` lines) in every directory member's `[schedule]` table.
    pub async fn start_with(
        stores: usize,
        mode: Mode,
        serving: &[String],
        store_toml: &[String],
        batch_stream: bool,
        schedule: &[String],
    ) -> anyhow::Result<LocalTessera> {
        tessera_e2e::ensure_plain_binaries()?;
        let serving: Vec<String> = if serving.is_empty() {
            vec![]
        } else {
            std::iter::once("[serving]".to_string())
                .chain(serving.iter().cloned())
                .collect()
        };
        let mut cluster = E2eCluster::start(Options {
            insecure: mode == Mode::Plaintext,
            stores,
            default_timing: true,
            store_extra: serving.iter().chain(store_toml).cloned().collect(),
            schedule_extra: schedule.to_vec(),
            // Top-level keys before the `[serving]` table.
            router_extra: (!batch_stream)
                .then(|| "batch_stream = false".to_string())
                .into_iter()
                .chain(serving)
                .collect(),
            ..Options::default()
        })
        .await;
        cluster.add_router().await;
        cluster.wait_settled(1).await;
        Ok(LocalTessera { cluster })
    }

    pub fn routers(&self) -> Vec<String> {
        self.cluster.router_addrs()
    }

    /// The directory's members, for clients in direct mode.
    pub fn directory(&self) -> Vec<String> {
        self.cluster.directory_addrs()
    }

    /// How its clients connect: as `client.admin` over TLS, or plaintext.
    pub fn security(&self) -> tessera_security::Security {
        self.cluster.security()
    }
}

impl Drop for LocalTessera {
    /// Stops every process before the cluster's temporary directory is
    /// removed, so no server is still writing into it.
    fn drop(&mut self) {
        for r in self.cluster.routers.values_mut() {
            r.proc.kill();
        }
        for s in self.cluster.stores.values_mut() {
            s.proc.kill();
        }
        for d in self.cluster.directories.values_mut() {
            d.proc.kill();
        }
    }
}

/// Finds `name` on the PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Makes sure an `etcd` binary is on the PATH: installs Debian's
/// `etcd-server` with apt-get (through sudo when not root) if it is not.
pub fn ensure_etcd() -> anyhow::Result<PathBuf> {
    if let Some(p) = which("etcd") {
        return Ok(p);
    }
    eprintln!("etcd is not installed: installing Debian's etcd-server with apt-get");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        let status = cmd
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        anyhow::ensure!(status.success(), "apt-get {args:?} failed: {status}");
        Ok(())
    };
    if apt(&["install", "-y", "-q", "etcd-server"]).is_err() {
        apt(&["update", "-q"])?;
        apt(&["install", "-y", "-q", "etcd-server"])?;
    }
    which("etcd").ok_or_else(|| anyhow::anyhow!("etcd-server installed but no etcd on the PATH"))
}

/// An etcd cluster of separate processes.
pub struct LocalEtcd {
    children: Vec<Child>,
    pub endpoints: Vec<String>,
    /// With TLS: ca.crt, node.* (the members) and client.admin.* (clients).
    pub certs: Option<PathBuf>,
    pub dir: tempfile::TempDir,
}

/// etcd-client's options for a cluster whose certificates are in `certs`
/// (TLS, presenting `client.admin`), or plaintext.
pub fn etcd_options(
    certs: Option<&Path>,
    timeout: Duration,
    connect_timeout: Duration,
) -> anyhow::Result<etcd_client::ConnectOptions> {
    let options = etcd_client::ConnectOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(connect_timeout);
    let Some(dir) = certs else {
        return Ok(options);
    };
    let dir = CertsDir::new(dir);
    let admin = Identity::new(Kind::Client, certs::LOCAL_ADMIN)?;
    let read = |p: PathBuf| std::fs::read(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(dir.ca_cert())?))
        .identity(etcd_client::Identity::from_pem(
            read(dir.cert(&admin))?,
            read(dir.key(&admin))?,
        ));
    Ok(options.with_tls(tls))
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

impl LocalEtcd {
    /// The members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.id()).collect()
    }

    /// Starts `members` etcd members (their defaults: fsync on commit,
    /// snapshot every 100,000 entries; an 8 GiB backend quota so long runs
    /// do not hit the 2 GiB default) and waits until the cluster answers.
    pub async fn start(members: usize, mode: Mode) -> anyhow::Result<LocalEtcd> {
        let etcd = ensure_etcd()?;
        let dir = tempfile::Builder::new()
            .prefix("tessera-bench-etcd")
            .tempdir()?;
        let certs = match mode {
            Mode::Plaintext => None,
            Mode::Tls => {
                let path = dir.path().join("certs");
                certs::create_local_bundle(&CertsDir::new(&path), 30)?;
                Some(path)
            }
        };
        let scheme = if certs.is_some() { "https" } else { "http" };
        let tls_flags: Vec<String> = match &certs {
            None => vec![],
            Some(path) => {
                let d = CertsDir::new(path);
                let node = Identity::new(Kind::Node, "node")?;
                let (ca, crt, key) = (
                    d.ca_cert().display().to_string(),
                    d.cert(&node).display().to_string(),
                    d.key(&node).display().to_string(),
                );
                [
                    ("--cert-file", &crt),
                    ("--key-file", &key),
                    ("--trusted-ca-file", &ca),
                    ("--peer-cert-file", &crt),
                    ("--peer-key-file", &key),
                    ("--peer-trusted-ca-file", &ca),
                ]
                .iter()
                .flat_map(|(flag, v)| [flag.to_string(), v.to_string()])
                .chain([
                    "--client-cert-auth".into(),
                    "--peer-client-cert-auth".into(),
                ])
                .collect()
            }
        };
        let ports: Vec<(u16, u16)> = (0..members).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{}={scheme}://127.0.0.1:{peer}", i + 1))
            .collect();
        let mut e = LocalEtcd {
            children: vec![],
            endpoints: ports
                .iter()
                .map(|(client, _)| format!("{scheme}://127.0.0.1:{client}"))
                .collect(),
            certs,
            dir,
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{}", i + 1);
            let log = std::fs::File::create(e.dir.path().join(format!("{name}.log")))?;
            let child = Command::new(&etcd)
                .args([
                    "--name",
                    &name,
                    "--data-dir",
                    &e.dir.path().join(&name).display().to_string(),
                    "--listen-client-urls",
                    &format!("{scheme}://127.0.0.1:{client}"),
                    "--advertise-client-urls",
                    &format!("{scheme}://127.0.0.1:{client}"),
                    "--listen-peer-urls",
                    &format!("{scheme}://127.0.0.1:{peer}"),
                    "--initial-advertise-peer-urls",
                    &format!("{scheme}://127.0.0.1:{peer}"),
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-token",
                    "tessera-bench",
                    "--initial-cluster-state",
                    "new",
                    "--quota-backend-bytes",
                    "8589934592",
                    "--logger",
                    "zap",
                    "--log-outputs",
                    "stderr",
                    "--log-level",
                    "warn",
                ])
                .args(&tls_flags)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?;
            e.children.push(child);
        }
        e.wait_ready().await?;
        Ok(e)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            for (i, c) in self.children.iter_mut().enumerate() {
                if let Some(status) = c.try_wait()? {
                    let log =
                        std::fs::read_to_string(self.dir.path().join(format!("m{}.log", i + 1)))
                            .unwrap_or_default();
                    anyhow::bail!("etcd member m{} exited ({status}):\n{log}", i + 1);
                }
            }
            let ok = async {
                let options = etcd_options(
                    self.certs.as_deref(),
                    Duration::from_secs(2),
                    Duration::from_secs(1),
                )?;
                let mut c = etcd_client::Client::connect(&self.endpoints, Some(options)).await?;
                // A linearizable read needs a leader and a quorum.
                c.get("tessera-bench-probe", None).await?;
                anyhow::Ok(())
            }
            .await;
            if ok.is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "etcd did not become ready within 60 s: {ok:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
