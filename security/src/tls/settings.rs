//! How a process is told to secure itself: the `[security]` table of its
//! TOML configuration, and the same settings as flags (and environment
//! variables) shared by every binary.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[security]` table of a process's configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificates directory: `ca.crt` and this process's certificate
    /// and key (`node.*` for stores and directory members, `router.*` for
    /// routers). Required unless `insecure`.
    pub certs_dir: Option<PathBuf>,
    /// Serve and dial plaintext, with no identities and no access checks.
    /// For experiments only; the process logs a warning and exports
    /// `tessera_build_info{tls="false"}`.
    pub insecure: bool,
    /// Networks (CIDR, or single addresses) whose connections the gRPC
    /// port accepts; empty accepts every network.
    pub allowed_networks: Vec<String>,
    /// Serve the status port's `/metrics` over TLS only (HTTPS with this
    /// process's certificate; a plaintext request is refused with 403).
    /// `/health` and `/ready` answer plaintext and TLS alike, for probes.
    pub metrics_tls: bool,
}

/// The security flags of every server binary; they override the
/// configuration file's `[security]` table.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// Certificates directory (ca.crt and this process's node.* or
    /// router.*); see `tessera cert`.
    #[arg(long, env = "TESSERA_CERTS_DIR", value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// Run without TLS, identities or access checks (never in production).
    #[arg(long, env = "TESSERA_INSECURE")]
    pub insecure: bool,
    /// Accept gRPC connections only from these networks (comma-separated
    /// CIDRs, e.g. 10.0.0.0/8,127.0.0.1).
    #[arg(long, env = "TESSERA_ALLOWED_NETWORKS", value_delimiter = ',')]
    pub allowed_networks: Vec<String>,
    /// Serve /metrics over TLS only (HTTPS on the status port, with this
    /// process's certificate); /health and /ready stay plaintext too.
    #[arg(long, env = "TESSERA_METRICS_TLS")]
    pub metrics_tls: bool,
}

impl SecurityArgs {
    /// Lays the flags over `settings`. `--certs-dir` clears an
    /// `insecure = true` from the file; `--insecure` clears its
    /// `certs_dir`.
    pub fn apply(&self, settings: &mut TlsSettings) {
        if let Some(d) = &self.certs_dir {
            settings.certs_dir = Some(d.clone());
            settings.insecure = false;
        }
        if self.insecure {
            settings.insecure = true;
            settings.certs_dir = None;
        }
        if !self.allowed_networks.is_empty() {
            settings.allowed_networks = self.allowed_networks.clone();
        }
        if self.metrics_tls {
            settings.metrics_tls = true;
        }
    }
}
