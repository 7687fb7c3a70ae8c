//! `tessera-directory`: one member of tessera's directory (the control
//! plane). Run 3 or 5 of them with the same `--initial-members`.
//!
//! Configuration comes from a TOML file (`--config`), overridden by flags,
//! which may also be given as `TESSERA_DIRECTORY_*` environment variables.
//! `tessera-directory --print-default-config` prints every setting.

use std::path::PathBuf;

use clap::Parser;
use tessera_directory::config::DirectoryConfig;

#[derive(Parser, Debug)]
#[command(
    name = "tessera-directory",
    version = tessera_common::build_info::LONG_VERSION,
    about = "A tessera directory member: cluster metadata, placement and scheduling"
)]
struct Args {
    /// TOML configuration file; flags override it.
    #[arg(long, env = "TESSERA_DIRECTORY_CONFIG")]
    config: Option<PathBuf>,
    /// This member's id (1, 2, 3, ...).
    #[arg(long, env = "TESSERA_DIRECTORY_ID", conflicts_with = "id_from_ordinal")]
    id: Option<u64>,
    /// Take the id from a StatefulSet ordinal: the host name's `-N` suffix
    /// plus 1 (`tessera-directory-0` is member 1).
    #[arg(long, env = "TESSERA_DIRECTORY_ID_FROM_ORDINAL")]
    id_from_ordinal: bool,
    #[arg(long, env = "TESSERA_DIRECTORY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC address to bind, e.g. 0.0.0.0:2379.
    #[arg(long, env = "TESSERA_DIRECTORY_LISTEN_ADDR")]
    listen_addr: Option<String>,
    /// Address other processes dial (defaults to --listen-addr).
    #[arg(long, env = "TESSERA_DIRECTORY_ADVERTISE_ADDR")]
    advertise_addr: Option<String>,
    /// HTTP address for /metrics, /health and /ready.
    #[arg(long, env = "TESSERA_DIRECTORY_STATUS_ADDR")]
    status_addr: Option<String>,
    /// Initial members, comma-separated id=host:port (the same on every member).
    #[arg(long, env = "TESSERA_DIRECTORY_INITIAL_MEMBERS", value_delimiter = ',')]
    initial_members: Vec<String>,
    /// Join an existing directory (after AddMember on its leader).
    #[arg(long, env = "TESSERA_DIRECTORY_JOIN")]
    join: bool,
    /// Log format: text or json.
    #[arg(long, env = "TESSERA_DIRECTORY_LOG_FORMAT")]
    log_format: Option<String>,
    /// On SIGTERM, how long to drain (hand leaderships away) before exiting, in ms.
    #[arg(long, env = "TESSERA_DIRECTORY_SHUTDOWN_GRACE_MS")]
    shutdown_grace_ms: Option<u64>,
    /// Let a test build (feature failpoints) serve its fault endpoints on a
    /// non-loopback status address. No effect on a real build.
    #[arg(long, env = "TESSERA_DIRECTORY_ALLOW_FAULT_ENDPOINTS")]
    allow_fault_endpoints: bool,
    #[command(flatten)]
    security: tessera_security::SecurityArgs,
    /// The join token a new cluster starts with (`tessera-` and 64 hex
    /// digits); without one the first leader generates one, prints it and
    /// writes it to <data-dir>/join-token. Only read when the cluster is
    /// created.
    #[arg(long, env = "TESSERA_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// The same, read from a file (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "TESSERA_JOIN_TOKEN_FILE", conflicts_with = "join_token")]
    join_token_file: Option<std::path::PathBuf>,
    /// Print the default configuration as TOML and exit.
    #[arg(long)]
    print_default_config: bool,
}

fn load_config(args: &Args) -> anyhow::Result<DirectoryConfig> {
    let mut cfg = match &args.config {
        Some(path) => DirectoryConfig::from_file(path)?,
        None => DirectoryConfig::default(),
    };
    if let Some(v) = args.id {
        cfg.id = v;
    }
    if args.id_from_ordinal {
        let host = host_name()?;
        cfg.id = id_from_ordinal(&host)?;
    }
    if let Some(v) = &args.data_dir {
        cfg.data_dir = v.clone();
    }
    if let Some(v) = &args.listen_addr {
        cfg.listen_addr = v.clone();
    }
    if let Some(v) = &args.advertise_addr {
        cfg.advertise_addr = Some(v.clone());
    }
    if let Some(v) = &args.status_addr {
        cfg.status_addr = v.clone();
    }
    if !args.initial_members.is_empty() {
        cfg.initial_members = args.initial_members.clone();
    }
    if args.join {
        cfg.join = true;
    }
    if let Some(v) = &args.log_format {
        cfg.log_format = v.clone();
    }
    if args.allow_fault_endpoints {
        cfg.allow_fault_endpoints = true;
    }
    args.security.apply(&mut cfg.security);
    if let Some(v) = &args.join_token {
        cfg.join_token = Some(v.clone());
    }
    if let Some(v) = &args.join_token_file {
        cfg.join_token_file = Some(v.clone());
    }
    if let Some(v) = args.shutdown_grace_ms {
        cfg.shutdown_grace_ms = v;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// This machine's host name: `$HOSTNAME` when set (Kubernetes sets it to
/// the pod name), else gethostname(2).
fn host_name() -> anyhow::Result<String> {
    if let Ok(name) = std::env::var("HOSTNAME") {
        if !name.is_empty() {
            return Ok(name);
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    anyhow::ensure!(
        rc == 0,
        "gethostname failed: {}",
        std::io::Error::last_os_error()
    );
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The member id of a StatefulSet pod: `name-N` is member N + 1.
fn id_from_ordinal(host: &str) -> anyhow::Result<u64> {
    // A pod's host name is its name; a fully qualified name keeps it first.
    let pod = host.split('.').next().unwrap_or(host);
    let ordinal = pod
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--id-from-ordinal: host name {host:?} does not end in -N (a StatefulSet ordinal)"
            )
        })?;
    Ok(ordinal + 1)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", toml::to_string_pretty(&DirectoryConfig::default())?);
        return Ok(());
    }
    let cfg = load_config(&args)?;
    let (log_format, status_addr) = (cfg.log_format.clone(), cfg.status_addr.clone());
    tessera_common::run_process(
        tessera_common::ProcessOptions {
            name: "tessera-directory",
            log_format: &log_format,
            default_filter: "info,slog=warn",
            buckets: tessera_directory::metrics::histogram_buckets(),
            describe: tessera_directory::metrics::describe,
            status_addr: &status_addr,
            allow_fault_endpoints: cfg.allow_fault_endpoints,
            tls: !cfg.security.insecure,
        },
        |metrics| async move {
            tessera_directory::server::run(cfg, Some(metrics), tessera_common::shutdown_signal())
                .await?;
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::id_from_ordinal;

    #[test]
    fn the_ordinal_of_a_statefulset_pod_is_its_member_id_minus_one() {
        assert_eq!(id_from_ordinal("tessera-directory-0").unwrap(), 1);
        assert_eq!(id_from_ordinal("tessera-directory-4").unwrap(), 5);
        assert_eq!(
            id_from_ordinal("tessera-directory-2.tessera-directory.ns.svc").unwrap(),
            3
        );
        let err = id_from_ordinal("laptop").unwrap_err().to_string();
        assert!(err.contains("does not end in -N"), "{err}");
        assert!(id_from_ordinal("tessera-directory-x").is_err());
    }
}
