//! The `tessera-router` process's settings: a TOML file, every field
//! optional (defaults below), flags on top (see `main.rs`).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use tessera_routing::{Backoff, RouterConfig};
use tessera_security::{Security, TlsSettings};

use crate::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The address the gRPC server binds (the public Router service).
    pub listen_addr: String,
    /// The address of the HTTP server for /metrics, /health and /ready.
    pub status_addr: String,
    /// Addresses of the directory members.
    pub directory: Vec<String>,
    /// How long one client request may take, retries included, in ms.
    pub request_timeout_ms: u64,
    /// Backoff between retries: from this (ms) ...
    pub min_backoff_ms: u64,
    /// ... doubling up to this (ms), with jitter.
    pub max_backoff_ms: u64,
    /// On SIGTERM, how long in-flight requests may take to finish, in ms.
    pub shutdown_grace_ms: u64,
    /// The bytes of keys and values one Scan or BatchGet answer holds
    /// before it stops and says where to continue (a page always holds at
    /// least one pair, so it may pass this by one value).
    pub max_response_bytes: usize,
    /// Forward point requests (get, put, delete, compare-and-swap) to each
    /// store over one `BatchCommands` stream, many per message; false: one
    /// unary RPC per request.
    pub batch_stream: bool,
    /// `text` or `json`.
    pub log_format: String,
    /// Lets a test build (feature `failpoints`) serve its fault endpoints on
    /// a status address other machines can reach; without it such a build
    /// refuses any non-loopback `status_addr`. No effect on a real build.
    pub allow_fault_endpoints: bool,
    /// TLS and who may connect (`[security]`).
    pub security: TlsSettings,
    /// What the gRPC server takes on at once (`[serving]`).
    pub serving: tessera_common::admission::ServingLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_addr: "127.0.0.1:14000".into(),
            status_addr: "127.0.0.1:14001".into(),
            directory: vec!["127.0.0.1:2379".into()],
            request_timeout_ms: 10_000,
            min_backoff_ms: 10,
            max_backoff_ms: 500,
            shutdown_grace_ms: 5_000,
            max_response_bytes: tessera_proto::limits::RESPONSE_PAGE_BYTES,
            batch_stream: true,
            log_format: "text".into(),
            allow_fault_endpoints: false,
            security: TlsSettings::default(),
            serving: Default::default(),
        }
    }
}

impl ServerConfig {
    /// Reads a TOML file; unknown keys are an error, missing keys default.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Checks the values a router cannot run with.
    pub fn validate(&self) -> Result<()> {
        self.serving.validate().map_err(Error::Config)?;
        if self.directory.is_empty() {
            return Err(Error::Config(
                "no directory address given (directory = [\"host:port\", ...])".into(),
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err(Error::Config("request_timeout_ms must be above 0".into()));
        }
        if self.min_backoff_ms == 0 || self.min_backoff_ms > self.max_backoff_ms {
            return Err(Error::Config(
                "min_backoff_ms must be above 0 and at most max_backoff_ms".into(),
            ));
        }
        tessera_proto::limits::validate_page_bytes(self.max_response_bytes)
            .map_err(Error::Config)?;
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(Error::Config(format!(
                "log_format must be text or json, not {:?}",
                self.log_format
            )));
        }
        Ok(())
    }

    /// The routing library's settings; its connections secured by
    /// `security`.
    pub fn router_config(&self, security: Security) -> RouterConfig {
        RouterConfig {
            directory: self.directory.clone(),
            security,
            timeout: Duration::from_millis(self.request_timeout_ms),
            backoff: Backoff::new(
                Duration::from_millis(self.min_backoff_ms),
                Duration::from_millis(self.max_backoff_ms),
            ),
            max_response_bytes: self.max_response_bytes,
            batch_stream: self.batch_stream,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_refused() {
        let cfg: ServerConfig = toml::from_str("").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg, ServerConfig::default());
        let cfg: ServerConfig =
            toml::from_str("directory = [\"a:1\", \"b:2\"]\nrequest_timeout_ms = 3000\n").unwrap();
        assert_eq!(
            cfg.router_config(Security::insecure()).timeout,
            Duration::from_secs(3)
        );
        let none: ServerConfig = toml::from_str("directory = []").unwrap();
        assert!(none
            .validate()
            .unwrap_err()
            .to_string()
            .contains("directory"));
        let backoff: ServerConfig =
            toml::from_str("min_backoff_ms = 100\nmax_backoff_ms = 10").unwrap();
        assert!(backoff.validate().is_err());
        assert!(toml::from_str::<ServerConfig>("listen = \"x\"").is_err());
        let page: ServerConfig = toml::from_str("max_response_bytes = 100").unwrap();
        assert!(page
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_response_bytes"));
    }
}
