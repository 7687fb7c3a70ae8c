//! Process plumbing shared by `tessera-store`, `tessera-directory` and
//! `tessera-router`: the HTTP status server (`/metrics`, `/health`,
//! `/ready`), the Prometheus recorder with explicit histogram buckets,
//! logging set-up, the build a process runs, the shutdown signal, and the
//! clock leases and liveness read (skewable in a test build).
//! Nothing here knows about Raft or keys; the connection that follows the
//! directory's leader is `tessera_routing::directory`.

pub mod admission;
pub mod build_info;
pub mod clock;
pub mod engine_failure;
mod panics;
pub mod status;

pub use panics::{abort_on_panic, contain};

/// The error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Setup(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Logs to stderr as text or JSON; `RUST_LOG` overrides `default_filter`.
pub fn init_logging(format: &str, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// How [`run_process`] starts one server process.
pub struct ProcessOptions<'a> {
    /// The binary's name (`tessera-store`); also names the runtime's threads.
    pub name: &'a str,
    /// `text` or `json`.
    pub log_format: &'a str,
    /// The log filter when `RUST_LOG` is unset.
    pub default_filter: &'a str,
    /// Explicit buckets for the process's histograms.
    pub buckets: Vec<(&'static str, Vec<f64>)>,
    /// Registers the help text of the process's metrics.
    pub describe: fn(),
    /// Where the status server will listen (checked in a test build).
    pub status_addr: &'a str,
    /// Lets a test build serve its fault endpoints on a non-loopback
    /// address ([`build_info::check_status_addr`]).
    pub allow_fault_endpoints: bool,
    /// Whether the process serves TLS (`tessera_build_info{tls}`; a
    /// warning at start when not).
    pub tls: bool,
}

/// The life of one server process: logs (`log_format`; `RUST_LOG` over
/// `default_filter`), the build it runs (refusing a test build's
/// non-loopback status address), any panic aborts, a multi-threaded
/// runtime whose threads are named `name`, the Prometheus recorder with
/// `buckets`, `tessera_build_info` and the help text `describe` registers
/// — then `serve` with the recorder's handle, until it returns. The
/// binaries and `tessera serve` (the playground's processes) all start
/// this way.
pub fn run_process<E, Fut>(
    opts: ProcessOptions<'_>,
    serve: impl FnOnce(metrics_exporter_prometheus::PrometheusHandle) -> Fut,
) -> std::result::Result<(), E>
where
    Fut: std::future::Future<Output = std::result::Result<(), E>>,
    E: From<Error> + From<std::io::Error>,
{
    init_logging(opts.log_format, opts.default_filter);
    build_info::check_status_addr(opts.status_addr, opts.allow_fault_endpoints)?;
    abort_on_panic();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(opts.name)
        .build()?;
    let (name, buckets, describe, tls) = (opts.name, opts.buckets, opts.describe, opts.tls);
    runtime.block_on(async move {
        let metrics = status::install_metrics_recorder(buckets)?;
        build_info::announce(name, tls);
        describe();
        serve(metrics).await
    })
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}
