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
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "tessera-store",
    version,
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
    cfg.validate()?;
    Ok(cfg)
}

fn init_logging(format: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,slog=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", toml::to_string_pretty(&StoreConfig::default())?);
        return Ok(());
    }
    let cfg = load_config(&args)?;
    init_logging(&cfg.log_format);
    // A panic anywhere (the poller above all) leaves the store unable to
    // make progress safely: stop the process so it restarts from disk.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tessera-store")
        .build()?;
    runtime.block_on(async move {
        let metrics = tessera_store::status::install_metrics_recorder(vec![])?;
        tessera_store::server::run(cfg, Some(metrics), shutdown_signal()).await?;
        Ok(())
    })
}
