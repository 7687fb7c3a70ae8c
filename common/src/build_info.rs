//! What a binary was built from, and the guard on test builds.
//!
//! Every process logs its build when it starts and exports it as the gauge
//! `tessera_build_info{version, git_sha, features} 1`; `--version` prints
//! the same. `features` lists the cargo features that change behaviour,
//! comma-separated, or `none`. Today there is one: `failpoints`, the test
//! build `scripts/test` makes for the nemesis suite, whose stores serve
//! fault endpoints (`PUT /fail/{name}`, `/fault/partition`,
//! `/fault/unsafe-read`) on their status port and arm failpoints from the
//! `FAILPOINTS` environment variable.
//!
//! Such a build must never be mistaken for a real one: it logs a warning at
//! start and refuses a status address that is not a loopback address, so
//! its fault endpoints cannot be reached from another machine, unless the
//! operator passes `--allow-fault-endpoints` (test hosts in network
//! namespaces need it).

use std::net::{SocketAddr, ToSocketAddrs};

use crate::{Error, Result};

/// The workspace version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit built (12 hex digits), or `unknown` without `.git` (as in a
/// container build that was not given `TESSERA_GIT_SHA`).
pub const GIT_SHA: &str = env!("TESSERA_GIT_SHA");

/// Whether this build has failpoints and fault endpoints.
pub const FAILPOINTS: bool = cfg!(feature = "failpoints");

/// The features that change behaviour, comma-separated, or `none`.
pub const FEATURES: &str = if FAILPOINTS { "failpoints" } else { "none" };

/// What `--version` prints after the binary's name.
pub const LONG_VERSION: &str = if FAILPOINTS {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (git ",
        env!("TESSERA_GIT_SHA"),
        ", features: failpoints)"
    )
} else {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (git ",
        env!("TESSERA_GIT_SHA"),
        ", features: none)"
    )
};

/// The gauge carrying the build as labels.
pub const BUILD_INFO: &str = "tessera_build_info";

/// Logs the build of process `name` (a warning for a test build, and for a
/// process running without TLS) and sets `tessera_build_info`. Call once
/// the metrics recorder is installed.
pub fn announce(name: &str, tls: bool) {
    tracing::info!(
        version = VERSION,
        git_sha = GIT_SHA,
        features = FEATURES,
        "starting {name}"
    );
    if FAILPOINTS {
        tracing::warn!(
            "this is a test build (feature failpoints): its status port serves fault \
             endpoints that crash, partition and corrupt this process; never run it \
             with data you keep (build without --features .../failpoints)"
        );
    }
    if !tls {
        tracing::warn!(
            "running INSECURE (--insecure): no TLS, no identities, no access checks; anyone \
             who reaches this process's ports can read and change every key"
        );
    }
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say what this binary was built from (features=failpoints: a test build with fault endpoints) and whether it runs with TLS"
    );
    metrics::gauge!(
        BUILD_INFO,
        "version" => VERSION,
        "git_sha" => GIT_SHA,
        "features" => FEATURES,
        "tls" => if tls { "true" } else { "false" },
    )
    .set(1.0);
}

/// In a test build, refuses a status address another machine could reach
/// unless `allow_fault_endpoints`; in a real build, accepts any.
pub fn check_status_addr(status_addr: &str, allow_fault_endpoints: bool) -> Result<()> {
    check_status_addr_for(FAILPOINTS, status_addr, allow_fault_endpoints)
}

fn check_status_addr_for(failpoints: bool, addr: &str, allow: bool) -> Result<()> {
    if !failpoints || allow || is_loopback(addr) {
        return Ok(());
    }
    Err(Error::Setup(format!(
        "this is a test build with fault endpoints (feature failpoints) and its status \
         address {addr} is not a loopback address: anyone who reaches it could crash or \
         corrupt this process. Build without the feature (`cargo build --release --bins`), \
         or pass --allow-fault-endpoints on an isolated test network"
    )))
}

/// Whether every address `addr` names is a loopback address (a name that
/// does not resolve is not).
fn is_loopback(addr: &str) -> bool {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return sa.ip().is_loopback();
    }
    match addr.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_build_refuses_a_status_address_others_can_reach() {
        for addr in ["0.0.0.0:20180", "10.1.2.3:20180", "[::]:20180"] {
            let err = check_status_addr_for(true, addr, false).unwrap_err();
            assert!(err.to_string().contains("--allow-fault-endpoints"), "{err}");
            assert!(check_status_addr_for(true, addr, true).is_ok());
            assert!(check_status_addr_for(false, addr, false).is_ok());
        }
        for addr in ["127.0.0.1:20180", "[::1]:20180", "localhost:20180"] {
            assert!(check_status_addr_for(true, addr, false).is_ok(), "{addr}");
        }
        assert!(check_status_addr_for(true, "no-such-host.invalid:1", false).is_err());
    }

    #[test]
    fn the_version_line_names_the_commit_and_the_features() {
        assert!(LONG_VERSION.starts_with(VERSION));
        assert!(LONG_VERSION.contains(GIT_SHA));
        assert!(LONG_VERSION.contains(&format!("features: {FEATURES}")));
        assert_eq!(FEATURES == "failpoints", FAILPOINTS);
    }
}
