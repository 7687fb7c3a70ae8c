//! The harness's side of TLS: the certificates a cluster runs with and
//! the identities the harness and tests connect as.

use std::path::PathBuf;
use std::time::Duration;

use tessera_routing::directory::DirectoryConn;
use tessera_security::certs::{self, CertsDir};
use tessera_security::{Kind, Security, TlsSettings};

use crate::E2eCluster;

/// A CA, a node certificate and a router certificate (valid for `hosts`)
/// and the client certificate `admin` in `dir`.
pub fn make_certs(dir: &std::path::Path, hosts: &[String]) -> PathBuf {
    certs::create_bundle(&CertsDir::new(dir), hosts, 30).expect("certificates");
    dir.to_path_buf()
}

impl E2eCluster {
    /// How the harness's clients connect: TLS as the client `admin`, or
    /// plaintext for an insecure cluster.
    pub fn security(&self) -> Security {
        match &self.certs {
            Some(dir) => Security::client(dir, Some("admin")).expect("client certificate"),
            None => Security::insecure(),
        }
    }

    /// A node's identity (for node-only RPCs: StoreAdmin, store reports).
    pub fn node_security(&self) -> Security {
        match &self.certs {
            Some(dir) => Security::from_settings(
                &TlsSettings {
                    certs_dir: Some(dir.clone()),
                    ..TlsSettings::default()
                },
                Kind::Node,
            )
            .expect("node certificate"),
            None => Security::insecure(),
        }
    }

    /// The flags that tell a process how to secure itself.
    pub(crate) fn security_args(&self) -> Vec<String> {
        match &self.certs {
            Some(dir) => vec!["--certs-dir".into(), dir.display().to_string()],
            None => vec!["--insecure".into()],
        }
    }

    /// The CLI's flags for this cluster's security.
    pub fn cli_security_args(&self) -> Vec<String> {
        match &self.certs {
            Some(dir) => vec!["--certs-dir".into(), dir.display().to_string()],
            None => vec![],
        }
    }

    /// A directory connection with a node's identity, for the RPCs only
    /// stores may call (ids, store registration, reports).
    pub fn node_directory_conn(&self) -> DirectoryConn {
        DirectoryConn::new(
            self.directory_addrs(),
            Duration::from_secs(20),
            self.node_security(),
        )
        .expect("directory connection")
    }
}
