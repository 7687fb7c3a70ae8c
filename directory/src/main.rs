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
    version,
    about = "A tessera directory member: cluster metadata, placement and scheduling"
)]
struct Args {
    /// TOML configuration file; flags override it.
    #[arg(long, env = "TESSERA_DIRECTORY_CONFIG")]
    config: Option<PathBuf>,
    /// This member's id (1, 2, 3, ...).
    #[arg(long, env = "TESSERA_DIRECTORY_ID")]
    id: Option<u64>,
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
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", toml::to_string_pretty(&DirectoryConfig::default())?);
        return Ok(());
    }
    let cfg = load_config(&args)?;
    let log_format = cfg.log_format.clone();
    tessera_common::run_process(
        "tessera-directory",
        &log_format,
        "info,slog=warn",
        tessera_directory::metrics::histogram_buckets(),
        |metrics| async move {
            tessera_directory::server::run(cfg, Some(metrics), tessera_common::shutdown_signal())
                .await?;
            Ok(())
        },
    )
}
