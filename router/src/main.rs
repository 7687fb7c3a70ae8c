//! `tessera-router`: a stateless router. Clients (the SDK, the `tessera`
//! CLI) send it user keys; it finds the owning region's leader and handles
//! every routing error. Run as many as you like.
//!
//! Configuration comes from a TOML file (`--config`), overridden by flags,
//! which may also be given as `TESSERA_ROUTER_*` environment variables.
//! `tessera-router --print-default-config` prints every setting.

use std::path::PathBuf;

use clap::Parser;
use tessera_router::config::ServerConfig;

#[derive(Parser, Debug)]
#[command(
    name = "tessera-router",
    version = tessera_common::build_info::LONG_VERSION,
    about = "A tessera router: serves the Kv API and sends each request to the leader of the owning region"
)]
struct Args {
    /// TOML configuration file; flags override it.
    #[arg(long, env = "TESSERA_ROUTER_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC address to bind, e.g. 0.0.0.0:14000.
    #[arg(long, env = "TESSERA_ROUTER_LISTEN_ADDR")]
    listen_addr: Option<String>,
    /// HTTP address for /metrics, /health and /ready.
    #[arg(long, env = "TESSERA_ROUTER_STATUS_ADDR")]
    status_addr: Option<String>,
    /// Directory members, comma-separated host:port.
    #[arg(long, env = "TESSERA_ROUTER_DIRECTORY", value_delimiter = ',')]
    directory: Vec<String>,
    /// How long one request may take, retries included, in milliseconds.
    #[arg(long, env = "TESSERA_ROUTER_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: Option<u64>,
    /// Log format: text or json.
    #[arg(long, env = "TESSERA_ROUTER_LOG_FORMAT")]
    log_format: Option<String>,
    /// On SIGTERM, how long to drain (hand leaderships away) before exiting, in ms.
    #[arg(long, env = "TESSERA_ROUTER_SHUTDOWN_GRACE_MS")]
    shutdown_grace_ms: Option<u64>,
    /// Let a test build (feature failpoints) serve its fault endpoints on a
    /// non-loopback status address. No effect on a real build.
    #[arg(long, env = "TESSERA_ROUTER_ALLOW_FAULT_ENDPOINTS")]
    allow_fault_endpoints: bool,
    #[command(flatten)]
    security: tessera_security::SecurityArgs,
    /// Print the default configuration as TOML and exit.
    #[arg(long)]
    print_default_config: bool,
}

fn load_config(args: &Args) -> anyhow::Result<ServerConfig> {
    let mut cfg = match &args.config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    if let Some(v) = &args.listen_addr {
        cfg.listen_addr = v.clone();
    }
    if let Some(v) = &args.status_addr {
        cfg.status_addr = v.clone();
    }
    if !args.directory.is_empty() {
        cfg.directory = args.directory.clone();
    }
    if let Some(v) = args.request_timeout_ms {
        cfg.request_timeout_ms = v;
    }
    if let Some(v) = &args.log_format {
        cfg.log_format = v.clone();
    }
    if args.allow_fault_endpoints {
        cfg.allow_fault_endpoints = true;
    }
    if let Some(v) = args.shutdown_grace_ms {
        cfg.shutdown_grace_ms = v;
    }
    args.security.apply(&mut cfg.security);
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", toml::to_string_pretty(&ServerConfig::default())?);
        return Ok(());
    }
    let cfg = load_config(&args)?;
    let (log_format, status_addr) = (cfg.log_format.clone(), cfg.status_addr.clone());
    tessera_common::run_process(
        tessera_common::ProcessOptions {
            name: "tessera-router",
            log_format: &log_format,
            default_filter: "info",
            buckets: tessera_routing::metrics::histogram_buckets(),
            describe: tessera_routing::metrics::describe,
            status_addr: &status_addr,
            allow_fault_endpoints: cfg.allow_fault_endpoints,
            tls: !cfg.security.insecure,
        },
        |metrics| async move {
            tessera_router::server::run(cfg, Some(metrics), tessera_common::shutdown_signal())
                .await?;
            Ok(())
        },
    )
}
