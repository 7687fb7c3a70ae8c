//! `tessera playground`: a whole local cluster from one command.
//!
//! The playground starts `--directories` directory members, `--stores`
//! stores and one router on 127.0.0.1, waits until every one of them
//! answers `/ready` and the first region has its replicas, prints their addresses and an example command, and
//! runs until Ctrl-C (or SIGTERM), when it stops them in order: the router,
//! then the stores, then the directory.
//!
//! # One command, separate processes
//!
//! Each server runs as its own child process of this binary (`tessera
//! serve KIND --config FILE`, hidden), not as threads of one process: the
//! servers then talk gRPC to each other exactly as in a deployment, each
//! has its own `/metrics`, and `kill -9` of one store is a real fault to
//! play with. The children are in their own process group, so Ctrl-C
//! reaches only the playground, which stops them in order; if the
//! playground itself dies, the kernel sends them SIGTERM
//! (`PR_SET_PDEATHSIG`).
//!
//! # Ports and files
//!
//! From `--base-port` B (default 14000): the router listens on B and serves
//! its metrics on B+1; directory member i (1-based) on B+10+2(i-1) and
//! B+11+2(i-1); store j on B+20+2(j-1) and B+21+2(j-1). The CLI's default
//! `--router` and `--directory` are the default layout's addresses.
//!
//! The data directory holds one subdirectory per server, its TOML
//! configuration (`<name>.toml`, usable with the dedicated binaries), its
//! log (`<name>.log`) and the cluster's join token (`join-token`, mode
//! 0600: every directory member starts with it and every store joins with
//! it; give it to a store you add by hand), and the certificates
//! (`certs/`: a CA, the node and router certificates for 127.0.0.1 and
//! localhost, and the client certificate `admin`). Every server runs over
//! TLS with them, so the CLI needs them too: the banner prints the line to
//! paste (`export TESSERA_CERTS_DIR=<data dir>/certs`). `--insecure` runs
//! plaintext instead (every process warns). Without `--data-dir` a temporary directory is
//! used and removed on exit; with one, the cluster's data survives a
//! restart of the playground, which must then be given the same number of
//! directories (recorded in `playground.toml`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use tessera_routing::directory::DirectoryConn;

use crate::serve::Kind;

/// The router the playground serves; the CLI's default `--router`.
pub const DEFAULT_ROUTER: &str = "127.0.0.1:14000";
/// The playground's directory members; the CLI's default `--directory`.
pub const DEFAULT_DIRECTORY: &str = "127.0.0.1:14010,127.0.0.1:14012,127.0.0.1:14014";

/// How long the cluster may take to become ready before the playground
/// gives up (RocksDB opening and the first elections take a few seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long each group of servers may take to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Run a local cluster: directory members, stores and a router on
/// 127.0.0.1, each its own process. Stop it with Ctrl-C.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Keep the cluster's data here (created if missing) so it survives a
    /// restart; by default a temporary directory, removed on exit.
    #[arg(long, env = "TESSERA_PLAYGROUND_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of stores (1 to 20); regions keep 3 replicas when there are
    /// at least 3.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub stores: u16,
    /// Number of directory members: 1, 3 or 5.
    #[arg(long, default_value_t = 3, value_parser = parse_directories)]
    pub directories: u16,
    /// First port of the layout: the router listens on B and serves
    /// metrics on B+1; directory member i on B+10+2(i-1), store j on
    /// B+20+2(j-1), each with its metrics port one above. The default
    /// matches the CLI's default addresses.
    #[arg(long, default_value_t = 14000, value_parser = clap::value_parser!(u16).range(1024..=65000))]
    pub base_port: u16,
    /// Run plaintext, without certificates: anyone who reaches the ports
    /// may read and write everything (every process logs a warning). By
    /// default the playground makes its own CA and certificates in the data
    /// directory and runs everything over TLS.
    #[arg(long)]
    pub insecure: bool,
}

fn parse_directories(s: &str) -> std::result::Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n @ (1 | 3 | 5)) => Ok(n),
        _ => Err("the directory runs with 1, 3 or 5 members".into()),
    }
}

/// The addresses of one playground layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub router: String,
    pub router_status: String,
    /// (id, address, status address)
    pub directories: Vec<(u64, String, String)>,
    /// (index, address, status address)
    pub stores: Vec<(u16, String, String)>,
}

impl Layout {
    pub fn new(base: u16, directories: u16, stores: u16) -> Layout {
        let addr = |offset: u16| format!("127.0.0.1:{}", base + offset);
        Layout {
            router: addr(0),
            router_status: addr(1),
            directories: (1..=directories)
                .map(|i| (i as u64, addr(10 + 2 * (i - 1)), addr(11 + 2 * (i - 1))))
                .collect(),
            stores: (1..=stores)
                .map(|j| (j, addr(20 + 2 * (j - 1)), addr(21 + 2 * (j - 1))))
                .collect(),
        }
    }

    fn directory_addrs(&self) -> Vec<String> {
        self.directories.iter().map(|d| d.1.clone()).collect()
    }
}

/// What a data directory was created with.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Recorded {
    directories: u16,
}

/// One server process of the playground.
struct Server {
    name: String,
    kind: Kind,
    addr: String,
    status: String,
    child: Child,
    log: PathBuf,
    exited: bool,
}

pub async fn run(args: Args) -> Result<()> {
    let layout = Layout::new(args.base_port, args.directories, args.stores);
    // The temporary directory lives until the end of this function.
    let (root, _temp) = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            (dir.canonicalize()?, None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("tessera-playground-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    check_recorded(&root, args.directories)?;
    for port_addr in all_addrs(&layout) {
        if std::net::TcpListener::bind(&port_addr).is_err() {
            bail!(
                "{port_addr} is in use (another playground?); stop it or pick other ports with --base-port"
            );
        }
    }

    let certs = if args.insecure {
        None
    } else {
        Some(local_certs(&root)?)
    };
    let exe = std::env::current_exe().context("cannot find the tessera binary")?;
    let mut servers = Vec::new();
    let started = start_all(&exe, &root, &layout, certs.as_deref(), &mut servers).await;
    if let Err(e) = started {
        stop_all(&mut servers).await;
        return Err(e);
    }

    print_banner(&root, args.data_dir.is_some(), &layout, certs.as_deref());
    let mut interrupted = std::pin::pin!(tessera_common::shutdown_signal());
    let mut watch = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut interrupted => break,
            _ = watch.tick() => report_exits(&mut servers),
        }
    }
    println!("stopping the playground…");
    stop_all(&mut servers).await;
    println!("stopped");
    Ok(())
}

fn all_addrs(layout: &Layout) -> Vec<String> {
    let mut out = vec![layout.router.clone(), layout.router_status.clone()];
    for (_, a, s) in &layout.directories {
        out.extend([a.clone(), s.clone()]);
    }
    for (_, a, s) in &layout.stores {
        out.extend([a.clone(), s.clone()]);
    }
    out
}

/// Refuses a data directory made with another number of directory
/// members (their Raft group would not match its configuration).
fn check_recorded(root: &Path, directories: u16) -> Result<()> {
    let path = root.join("playground.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let recorded: Recorded =
                toml::from_str(&text).with_context(|| format!("cannot read {}", path.display()))?;
            if recorded.directories != directories {
                bail!(
                    "{} holds a cluster with {} directory member(s); run with --directories {}",
                    root.display(),
                    recorded.directories,
                    recorded.directories
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, toml::to_string(&Recorded { directories })?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The playground's join token: made with its data directory
/// (`join-token`, mode 0600) and kept across restarts.
fn join_token(root: &Path) -> Result<String> {
    use tessera_security::secret;
    let path = root.join("join-token");
    if let Some(token) = secret::load(&path)? {
        return Ok(token);
    }
    let token = secret::generate();
    secret::save(&path, &token)?;
    Ok(token)
}

/// The playground's certificates (`<data dir>/certs`): made at its first
/// start, kept with a kept data directory.
fn local_certs(root: &Path) -> Result<PathBuf> {
    use tessera_security::certs::{self, CertsDir};
    let dir = root.join("certs");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    certs::create_local_bundle(&CertsDir::new(&dir), certs::LEAF_DAYS)
        .context("cannot create the playground's certificates")?;
    Ok(dir)
}

/// How every server secures itself: TLS with the playground's
/// certificates, or plaintext when `--insecure` was said.
fn security_settings(certs: Option<&Path>) -> tessera_security::TlsSettings {
    match certs {
        Some(dir) => tessera_security::TlsSettings {
            certs_dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
        None => tessera_security::TlsSettings {
            insecure: true,
            ..Default::default()
        },
    }
}

/// Starts every server and waits until all are ready, with a spinner.
async fn start_all(
    exe: &Path,
    root: &Path,
    layout: &Layout,
    certs: Option<&Path>,
    servers: &mut Vec<Server>,
) -> Result<()> {
    let members: Vec<String> = layout
        .directories
        .iter()
        .map(|(id, addr, _)| format!("{id}={addr}"))
        .collect();
    let join_token = join_token(root)?;
    for (id, addr, status) in &layout.directories {
        let name = format!("directory-{id}");
        let cfg = tessera_directory::config::DirectoryConfig {
            id: *id,
            data_dir: root.join(&name),
            listen_addr: addr.clone(),
            status_addr: status.clone(),
            initial_members: members.clone(),
            security: security_settings(certs),
            join_token: Some(join_token.clone()),
            ..Default::default()
        };
        let config = write_config(root, &name, &cfg)?;
        servers.push(spawn(
            exe,
            Kind::Directory,
            name,
            addr,
            status,
            &config,
            root,
        )?);
    }
    for (index, addr, status) in &layout.stores {
        let name = format!("store-{index}");
        let mut cfg = tessera_store::config::StoreConfig {
            data_dir: root.join(&name),
            listen_addr: addr.clone(),
            status_addr: status.clone(),
            directory: layout.directory_addrs(),
            // Everything stops together; a short grace keeps Ctrl-C quick.
            shutdown_grace_ms: 3000,
            security: security_settings(certs),
            join_token: Some(join_token.clone()),
            ..Default::default()
        };
        cfg.labels.insert("host".into(), name.clone());
        let config = write_config(root, &name, &cfg)?;
        servers.push(spawn(exe, Kind::Store, name, addr, status, &config, root)?);
    }
    let cfg = tessera_router::config::ServerConfig {
        listen_addr: layout.router.clone(),
        status_addr: layout.router_status.clone(),
        directory: layout.directory_addrs(),
        security: security_settings(certs),
        ..Default::default()
    };
    let config = write_config(root, "router", &cfg)?;
    servers.push(spawn(
        exe,
        Kind::Router,
        "router".into(),
        &layout.router,
        &layout.router_status,
        &config,
        root,
    )?);

    // How the playground itself asks the directory whether it settled.
    let admin = match certs {
        Some(dir) => {
            tessera_security::Security::client(dir, Some(tessera_security::certs::LOCAL_ADMIN))
                .context("cannot load the playground's client certificate")?
        }
        None => tessera_security::Security::insecure(),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        for s in servers.iter_mut() {
            if let Some(status) = s.child.try_wait()? {
                s.exited = true;
                bar.finish_and_clear();
                bail!(
                    "{} exited during start-up ({status}); the end of {}:\n{}",
                    s.name,
                    s.log.display(),
                    log_tail(&s.log, 10)
                );
            }
        }
        let mut waiting = Vec::new();
        for s in servers.iter() {
            if !matches!(http_status(&s.status, "/ready").await, Some(200)) {
                waiting.push(s.name.as_str());
            }
        }
        if waiting.is_empty() {
            if settled(layout, &admin).await {
                bar.finish_and_clear();
                return Ok(());
            }
            waiting.push("the first region's replicas");
        }
        if Instant::now() > deadline {
            bar.finish_and_clear();
            bail!(
                "not ready after {:?}: {} (logs in {})",
                READY_TIMEOUT,
                waiting.join(", "),
                root.display()
            );
        }
        bar.set_message(format!(
            "starting {} of {} servers: waiting for {}",
            servers.len() - waiting.len(),
            servers.len(),
            waiting.join(", ")
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether the directory has placed every replica it wants: no operator in
/// flight and (with 3 stores or more) no region short of replicas. Until
/// then admin commands would be refused ("operator in progress").
async fn settled(layout: &Layout, security: &tessera_security::Security) -> bool {
    use tessera_proto::directorypb::ClusterStatusRequest;
    let Ok(conn) = DirectoryConn::new(
        layout.directory_addrs(),
        Duration::from_secs(2),
        security.clone(),
    ) else {
        return false;
    };
    let status = conn
        .call("cluster status", |mut c| async move {
            c.cluster_status(ClusterStatusRequest {}).await
        })
        .await;
    match status {
        Ok(s) => {
            s.bootstrapped
                && s.regions > 0
                && s.operators.is_empty()
                && (s.under_replicated_regions == 0 || layout.stores.len() < 3)
        }
        Err(_) => false,
    }
}

fn write_config<T: Serialize>(root: &Path, name: &str, cfg: &T) -> Result<PathBuf> {
    let path = root.join(format!("{name}.toml"));
    let text = format!(
        "# Written by `tessera playground`; rewritten at every start.\n{}",
        toml::to_string_pretty(cfg)?
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn spawn(
    exe: &Path,
    kind: Kind,
    name: String,
    addr: &str,
    status: &str,
    config: &Path,
    root: &Path,
) -> Result<Server> {
    use std::os::unix::process::CommandExt as _;
    let log = root.join(format!("{name}.log"));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg(kind.name())
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .env_remove("RUST_LOG")
        // Ctrl-C in the terminal reaches the playground only.
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches only this child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok(Server {
        name,
        kind,
        addr: addr.to_string(),
        status: status.to_string(),
        child,
        log,
        exited: false,
    })
}

fn print_banner(root: &Path, kept: bool, layout: &Layout, certs: Option<&Path>) {
    println!("tessera playground is running.");
    println!();
    println!(
        "  router       {:<18} metrics http://{}/metrics",
        layout.router, layout.router_status
    );
    for (id, addr, status) in &layout.directories {
        println!("  directory {id:<2} {addr:<18} metrics http://{status}/metrics");
    }
    for (index, addr, status) in &layout.stores {
        println!("  store {index:<6} {addr:<18} metrics http://{status}/metrics");
    }
    println!();
    println!(
        "  data and logs: {}{}",
        root.display(),
        if kept { "" } else { " (removed on exit)" }
    );
    let flags = if layout.router == DEFAULT_ROUTER {
        String::new()
    } else {
        format!(
            " --router {} --directory {}",
            layout.router,
            layout.directory_addrs().join(",")
        )
    };
    println!();
    println!("Try, in another terminal:");
    match certs {
        Some(dir) => println!("  export TESSERA_CERTS_DIR={}", dir.display()),
        None => println!("  (plaintext: --insecure was given)"),
    }
    let tessera = command_name();
    println!("  {tessera}{flags} put greeting hello");
    println!("  {tessera}{flags} get greeting");
    println!("  {tessera}{flags} region list");
    println!();
    println!("Press Ctrl-C to stop.");
}

/// How to run this binary from another terminal: `tessera` when that is
/// on the PATH, else its full path (e.g. `target/release/tessera` after
/// `cargo run`).
fn command_name() -> String {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("tessera").is_file()));
    match std::env::current_exe() {
        Ok(exe) if !on_path => exe.display().to_string(),
        _ => "tessera".to_string(),
    }
}

/// Tells about servers that exited while the playground runs; the rest
/// keep serving (a cluster survives the loss of a minority).
fn report_exits(servers: &mut [Server]) {
    for s in servers.iter_mut().filter(|s| !s.exited) {
        if let Ok(Some(status)) = s.child.try_wait() {
            s.exited = true;
            eprintln!(
                "warning: {} ({}) exited ({status}); see {}",
                s.name,
                s.addr,
                s.log.display()
            );
        }
    }
}

/// SIGTERM to the router, then the stores, then the directory members,
/// each group killed if it takes longer than [`STOP_TIMEOUT`].
async fn stop_all(servers: &mut [Server]) {
    for kind in [Kind::Router, Kind::Store, Kind::Directory] {
        let group: Vec<&mut Server> = servers
            .iter_mut()
            .filter(|s| s.kind == kind && !s.exited)
            .collect();
        for s in &group {
            // SAFETY: kill(2) on a child we started and have not reaped.
            unsafe {
                libc::kill(s.child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for s in group {
            loop {
                match s.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        eprintln!("warning: {} did not stop in time; killed", s.name);
                        let _ = s.child.kill();
                        let _ = s.child.wait();
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            s.exited = true;
        }
    }
}

/// The last `n` lines of a log file.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The HTTP status code of GET `path` on `addr`, if it answers within a
/// second.
async fn http_status(addr: &str, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut head = [0u8; 64];
        let n = s.read(&mut head).await.ok()?;
        let text = std::str::from_utf8(&head[..n]).ok()?;
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_layout_is_what_the_cli_dials() {
        let layout = Layout::new(14000, 3, 3);
        assert_eq!(layout.router, DEFAULT_ROUTER);
        assert_eq!(layout.directory_addrs().join(","), DEFAULT_DIRECTORY);
        let all = all_addrs(&Layout::new(14000, 5, 20));
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "no two servers share a port");
    }

    #[test]
    fn a_data_dir_keeps_its_directory_count() {
        let dir = tempfile::tempdir().unwrap();
        check_recorded(dir.path(), 3).unwrap();
        check_recorded(dir.path(), 3).unwrap();
        let e = check_recorded(dir.path(), 1).unwrap_err().to_string();
        assert!(e.contains("--directories 3"), "{e}");
    }
}
