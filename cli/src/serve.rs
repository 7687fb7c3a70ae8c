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

/// Runs the server until SIGTERM or Ctrl-C, on a runtime of its own.
pub fn run(args: Args) -> Result<()> {
    // Load and validate before logging starts, so a bad file is one line.
    enum Loaded {
        Directory(tessera_directory::config::DirectoryConfig),
        Store(tessera_store::config::StoreConfig),
        Router(tessera_router::config::ServerConfig),
    }
    let loaded = match args.kind {
        Kind::Directory => {
            let cfg = tessera_directory::config::DirectoryConfig::from_file(&args.config)?;
            cfg.validate()?;
            Loaded::Directory(cfg)
        }
        Kind::Store => {
            let cfg = tessera_store::config::StoreConfig::from_file(&args.config)?;
            cfg.validate()?;
            Loaded::Store(cfg)
        }
        Kind::Router => {
            let cfg = tessera_router::config::ServerConfig::from_file(&args.config)?;
            cfg.validate()?;
            Loaded::Router(cfg)
        }
    };
    let log_format = match &loaded {
        Loaded::Directory(c) => c.log_format.clone(),
        Loaded::Store(c) => c.log_format.clone(),
        Loaded::Router(c) => c.log_format.clone(),
    };
    tessera_common::init_logging(&log_format, "info,slog=warn");
    tessera_common::abort_on_panic();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(format!("tessera-{}", args.kind.name()))
        .build()?;
    runtime.block_on(async move {
        let shutdown = tessera_common::shutdown_signal();
        match loaded {
            Loaded::Directory(cfg) => {
                let metrics = tessera_common::status::install_metrics_recorder(
                    tessera_directory::metrics::histogram_buckets(),
                )?;
                tessera_directory::server::run(cfg, Some(metrics), shutdown).await?;
            }
            Loaded::Store(cfg) => {
                let metrics = tessera_common::status::install_metrics_recorder(
                    tessera_multiraft::metrics::histogram_buckets(),
                )?;
                tessera_store::server::run(cfg, Some(metrics), shutdown).await?;
            }
            Loaded::Router(cfg) => {
                let metrics = tessera_common::status::install_metrics_recorder(
                    tessera_router::metrics::histogram_buckets(),
                )?;
                tessera_router::server::run(cfg, Some(metrics), shutdown).await?;
            }
        }
        Ok(())
    })
}
