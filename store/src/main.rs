//! `tessera-store`: one storage process of a tessera cluster.
//!
//! Configuration comes from a TOML file (`--config`), overridden by flags,
//! which may also be given as `TESSERA_STORE_*` environment variables. Run
//! `tessera-store --print-default-config` for every setting with its
//! default.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use tessera_store::config::StoreConfig;

#[derive(Parser, Debug)]
#[command(
    name = "tessera-store",
    version = tessera_common::build_info::LONG_VERSION,
    about = "A tessera store: hosts many Raft groups (regions) over one RocksDB"
)]
struct Args {
    /// TOML configuration file; flags override it.
    #[arg(long, env = "TESSERA_STORE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for RocksDB's files.
    #[arg(long, env = "TESSERA_STORE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC address to bind (Kv and Raft services), e.g. 0.0.0.0:20160.
    #[arg(long, env = "TESSERA_STORE_LISTEN_ADDR")]
    listen_addr: Option<String>,
    /// Address other processes dial (defaults to --listen-addr); may be a DNS name.
    #[arg(long, env = "TESSERA_STORE_ADVERTISE_ADDR")]
    advertise_addr: Option<String>,
    /// HTTP address for /metrics, /health and /ready.
    #[arg(long, env = "TESSERA_STORE_STATUS_ADDR")]
    status_addr: Option<String>,
    /// Directory members, comma-separated host:port.
    #[arg(long, env = "TESSERA_STORE_DIRECTORY", value_delimiter = ',')]
    directory: Vec<String>,
    /// Store labels for placement, comma-separated key=value (e.g. zone=a).
    #[arg(long = "label", env = "TESSERA_STORE_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// Log format: text or json.
    #[arg(long, env = "TESSERA_STORE_LOG_FORMAT")]
    log_format: Option<String>,
    /// On SIGTERM, how long to drain (hand leaderships away) before exiting, in ms.
    #[arg(long, env = "TESSERA_STORE_SHUTDOWN_GRACE_MS")]
    shutdown_grace_ms: Option<u64>,
    /// Let a test build (feature failpoints) serve its fault endpoints on a
    /// non-loopback status address. No effect on a real build.
    #[arg(long, env = "TESSERA_STORE_ALLOW_FAULT_ENDPOINTS")]
    allow_fault_endpoints: bool,
    #[command(flatten)]
    security: tessera_security::SecurityArgs,
    /// The cluster's join token (`tessera-` and 64 hex digits), needed the
    /// first time this store registers; the directory prints it when it
    /// creates the cluster.
    #[arg(long, env = "TESSERA_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// The same, read from a file (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "TESSERA_JOIN_TOKEN_FILE", conflicts_with = "join_token")]
    join_token_file: Option<std::path::PathBuf>,
    /// Print the default configuration as TOML and exit.
    #[arg(long)]
    print_default_config: bool,
}

fn load_config(args: &Args) -> anyhow::Result<StoreConfig> {
    let mut cfg = match &args.config {
        Some(path) => StoreConfig::from_file(path)?,
        None => StoreConfig::default(),
    };
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
    if !args.directory.is_empty() {
        cfg.directory = args.directory.clone();
    }
    for label in &args.labels {
        let (k, v) = label
            .split_once('=')
            .with_context(|| format!("label {label:?} is not key=value"))?;
        cfg.labels.insert(k.to_string(), v.to_string());
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", toml::to_string_pretty(&StoreConfig::default())?);
        return Ok(());
    }
    let cfg = load_config(&args)?;
    let (log_format, status_addr) = (cfg.log_format.clone(), cfg.status_addr.clone());
    tessera_common::run_process(
        tessera_common::ProcessOptions {
            name: "tessera-store",
            log_format: &log_format,
            default_filter: "info,slog=warn",
            buckets: tessera_multiraft::metrics::histogram_buckets(),
            describe: tessera_store::metrics::describe,
            status_addr: &status_addr,
            allow_fault_endpoints: cfg.allow_fault_endpoints,
            tls: !cfg.security.insecure,
        },
        |metrics| async move {
            tessera_store::server::run(cfg, Some(metrics), tessera_common::shutdown_signal())
                .await?;
            Ok(())
        },
    )
}
