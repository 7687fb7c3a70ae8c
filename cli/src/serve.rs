//! `tessera serve KIND --config FILE` (hidden): runs one server — a
//! directory member, a store or a router — in this process, exactly as its
//! own binary (`tessera-directory`, `tessera-store`, `tessera-router`)
//! would with the same TOML file.
//!
//! The playground starts its processes through this subcommand so that the
//! single `tessera` binary is all a user needs; deployments use the
//! dedicated binaries, which take the same configuration files.

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which server to run.
    #[arg(value_enum)]
    pub kind: Kind,
    /// Its TOML configuration file (the format of the dedicated binary's
    /// `--config`).
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Directory,
    Store,
    Router,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Directory => "directory",
            Kind::Store => "store",
            Kind::Router => "router",
        }
    }
}

/// Runs the server until SIGTERM or Ctrl-C, as its own binary would
/// (`tessera_common::run_process`). The file is read and checked before
/// logging starts, so a bad one is one line.
pub fn run(args: Args) -> Result<()> {
    let name = format!("tessera-{}", args.kind.name());
    let filter = "info,slog=warn";
    let shutdown = tessera_common::shutdown_signal;
    match args.kind {
        Kind::Directory => {
            let cfg = tessera_directory::config::DirectoryConfig::from_file(&args.config)?;
            cfg.validate()?;
            let buckets = tessera_directory::metrics::histogram_buckets();
            let (log_format, status_addr) = (cfg.log_format.clone(), cfg.status_addr.clone());
            let opts = tessera_common::ProcessOptions {
                name: &name,
                log_format: &log_format,
                default_filter: filter,
                buckets,
                describe: tessera_directory::metrics::describe,
                status_addr: &status_addr,
                allow_fault_endpoints: cfg.allow_fault_endpoints,
                tls: !cfg.security.insecure,
            };
            tessera_common::run_process(opts, |m| async move {
                Ok(tessera_directory::server::run(cfg, Some(m), shutdown()).await?)
            })
        }
        Kind::Store => {
            let cfg = tessera_store::config::StoreConfig::from_file(&args.config)?;
            cfg.validate()?;
            let buckets = tessera_multiraft::metrics::histogram_buckets();
            let (log_format, status_addr) = (cfg.log_format.clone(), cfg.status_addr.clone());
            let opts = tessera_common::ProcessOptions {
                name: &name,
                log_format: &log_format,
                default_filter: filter,
                buckets,
                describe: tessera_store::metrics::describe,
                status_addr: &status_addr,
                allow_fault_endpoints: cfg.allow_fault_endpoints,
                tls: !cfg.security.insecure,
            };
            tessera_common::run_process(opts, |m| async move {
                Ok(tessera_store::server::run(cfg, Some(m), shutdown()).await?)
            })
        }
        Kind::Router => {
            let cfg = tessera_router::config::ServerConfig::from_file(&args.config)?;
            cfg.validate()?;
            let buckets = tessera_routing::metrics::histogram_buckets();
            let (log_format, status_addr) = (cfg.log_format.clone(), cfg.status_addr.clone());
            let opts = tessera_common::ProcessOptions {
                name: &name,
                log_format: &log_format,
                default_filter: filter,
                buckets,
                describe: tessera_routing::metrics::describe,
                status_addr: &status_addr,
                allow_fault_endpoints: cfg.allow_fault_endpoints,
                tls: !cfg.security.insecure,
            };
            tessera_common::run_process(opts, |m| async move {
                Ok(tessera_router::server::run(cfg, Some(m), shutdown()).await?)
            })
        }
    }
}
