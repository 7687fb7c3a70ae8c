//! Admission: how much one server process takes on at once, and what it
//! answers when it is full.
//!
//! # How a request is admitted (process overview)
//!
//! The store, the router and the directory serve gRPC the same way
//! ([`ServingLimits::server`], [`limit_connections`], [`Admission`]); the
//! limits are each process's `[serving]` settings:
//!
//! 1. **Connections.** At most `max_connections` connections are open at
//!    once; one past that is closed as soon as it is accepted (counted in
//!    `tessera_admission_refused_total{reason="connections"}`). A
//!    connection that sends nothing at all for `idle_timeout_ms` is closed:
//!    a live HTTP/2 client answers the server's keepalive pings (every
//!    `keepalive_interval_ms`), so this closes only peers that went silent
//!    or never spoke HTTP/2; a peer that stops answering pings is closed
//!    after `keepalive_timeout_ms` by HTTP/2 itself.
//! 2. **Streams.** A connection may carry `max_streams_per_connection`
//!    requests at once (HTTP/2's `SETTINGS_MAX_CONCURRENT_STREAMS`); a
//!    client waits for a free stream on its side.
//! 3. **Requests and bytes.** Every request of a governed service (the
//!    client-facing ones: `Kv` at a store, `Router`, the directory's API
//!    except the stores' heartbeats; never Raft or health) holds a
//!    [`Ticket`] from its first byte until its response has been handed to
//!    the connection, or the connection is gone. The ticket counts the
//!    request's bytes as they arrive and the response's bytes (what the
//!    service [`charge`]s when it builds the response, else the encoded
//!    bytes as they leave). A request that arrives when the process holds
//!    `max_in_flight_requests` requests or `max_in_flight_bytes` bytes is
//!    refused at once, before any of it is read; so is one whose own bytes
//!    would pass the byte quota as they arrive. A response is never cut
//!    off: its bytes count once it is built, which keeps new requests out
//!    until slow readers take their answers.
//! 4. **Requests being served.** Of those, at most `max_serving_requests`
//!    may be *served* at once — admitted, answer not ready yet; an answer
//!    waiting for its reader no longer counts, so readers that never read
//!    hold memory (the quotas above) but cannot take the service's places.
//!    This is the latency bound: a process that serves N requests at once
//!    while it completes C a second keeps each waiting about N / C
//!    (Little's law), so past capacity it refuses at once what it would
//!    otherwise queue until the client's deadline passes. The default
//!    (1,024) is well above what saturates a store or router on a small
//!    machine (64 closed-loop clients do) and keeps the wait there to a
//!    fraction of a second; a smaller one cuts latency further but
//!    refuses bursts and the slow, large requests beside them
//!    (`tessera-bench overload` measured 256, 512 and 1,024; see the
//!    README).
//! 5. **Latency** (opt-in, `adaptive_limit = true`; off by default until
//!    `tessera-bench overload` shows it helps — see the README). Below
//!    `max_serving_requests` the process keeps an adaptive limit
//!    (`limit`): while
//!    the average service time passes `latency_tolerance` × the process's
//!    unloaded latency, it takes on fewer requests at once (never fewer
//!    than `min_adaptive_limit`), so under overload it refuses at once
//!    what it would otherwise queue until the client's deadline.
//!
//! A refusal is `RESOURCE_EXHAUSTED` naming the quota and carrying the
//! wait it asks for ([`tessera_proto::limits::busy_status`]); the service
//! never saw the request, so nothing was applied. The router backs off and
//! tries a busy store again a few times before passing the refusal on; the
//! SDK backs off at least the asked wait and tries again until its
//! deadline, then reports `Error::ResourceExhausted`; and once a client
//! has tried more than twice what the routers accepted over the last
//! seconds, it holds the excess back itself without sending it
//! (`tessera_routing::throttle`), so far past capacity refusals stop
//! costing the servers CPU.
//!
//! Memory bound: what requests and responses hold is at most the byte
//! quota plus one request's last frame and the responses being built when
//! the quota filled (at most `max_in_flight_requests` of them). The margin
//! over the quota under load is measured by `tessera-bench overload`.

mod conn;
mod layer;
mod limit;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use conn::{limit_connections, Admitted};
pub use layer::{charge, charged, Admission, Admitted as AdmittedService, Ticket};
pub use limit::AdaptiveLimit;

/// Metric (gauge): bytes of requests and responses in flight.
pub const IN_FLIGHT_BYTES: &str = "tessera_admission_in_flight_bytes";
/// Metric (gauge): requests in flight.
pub const IN_FLIGHT_REQUESTS: &str = "tessera_admission_in_flight_requests";
/// Metric (gauge): requests being served (answer not ready yet), against
/// `max_serving_requests`.
pub const SERVING_REQUESTS: &str = "tessera_admission_serving_requests";
/// Metric (gauge): the adaptive request limit (see `limit`).
pub const LIMIT: &str = "tessera_admission_limit";
/// Metric (gauge): open connections.
pub const CONNECTIONS: &str = "tessera_admission_connections";
/// Metric (counter): requests and connections refused, by `reason`
/// (`bytes`, `requests`, `serving`, `latency`, `connections`).
pub const REFUSED: &str = "tessera_admission_refused_total";

/// Registers the help text of this module's metrics.
pub fn describe() {
    metrics::describe_gauge!(
        IN_FLIGHT_BYTES,
        metrics::Unit::Bytes,
        "Bytes of admitted requests and their responses not yet handed to the connection"
    );
    metrics::describe_gauge!(IN_FLIGHT_REQUESTS, "Admitted requests in flight");
    metrics::describe_gauge!(
        SERVING_REQUESTS,
        "Admitted requests being served (answer not ready yet)"
    );
    metrics::describe_gauge!(CONNECTIONS, "Open gRPC connections");
    metrics::describe_gauge!(
        LIMIT,
        "Requests taken on at once while latency stays within serving.latency_tolerance"
    );
    metrics::describe_counter!(
        REFUSED,
        "Requests and connections refused over a serving quota, by reason"
    );
}

/// A process's serving quotas (`[serving]` in its TOML file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServingLimits {
    /// Bytes of requests and responses in flight before new requests are
    /// refused. Holds the largest request (40 MiB) with room to spare.
    pub max_in_flight_bytes: u64,
    /// Requests in flight (being served, or answered and not yet taken by
    /// their readers) before new ones are refused: a memory bound.
    pub max_in_flight_requests: usize,
    /// Requests being served at once (admitted, answer not ready yet)
    /// before new ones are refused: the latency bound. An answer waiting
    /// for its reader does not count.
    pub max_serving_requests: usize,
    /// Open connections before new ones are closed at once.
    pub max_connections: usize,
    /// Requests one connection may carry at once.
    pub max_streams_per_connection: u32,
    /// How often the server pings an HTTP/2 connection, in ms.
    pub keepalive_interval_ms: u64,
    /// How long a ping may go unanswered before the connection is closed, in ms.
    pub keepalive_timeout_ms: u64,
    /// How long a connection may send nothing at all before it is closed, in ms.
    pub idle_timeout_ms: u64,
    /// The wait a refusal asks for, in ms.
    pub busy_retry_after_ms: u64,
    /// Keep an adaptive request limit below `max_serving_requests` that
    /// refuses requests while latency shows a queue (`limit`).
    pub adaptive_limit: bool,
    /// The adaptive limit shrinks while average service time passes this
    /// multiple of the process's unloaded latency.
    pub latency_tolerance: f64,
    /// The adaptive limit never goes below this (nor above
    /// `max_serving_requests`).
    pub min_adaptive_limit: usize,
}

impl Default for ServingLimits {
    fn default() -> Self {
        ServingLimits {
            max_in_flight_bytes: 512 * 1024 * 1024,
            max_in_flight_requests: 4096,
            max_serving_requests: 1024,
            max_connections: 10_000,
            max_streams_per_connection: 1024,
            keepalive_interval_ms: 10_000,
            keepalive_timeout_ms: 20_000,
            idle_timeout_ms: 60_000,
            busy_retry_after_ms: 50,
            adaptive_limit: false,
            latency_tolerance: 4.0,
            min_adaptive_limit: 64,
        }
    }
}

impl ServingLimits {
    /// Refuses zero quotas and an idle timeout the keepalive pings could
    /// not keep a healthy connection inside.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_in_flight_bytes", self.max_in_flight_bytes),
            ("max_in_flight_requests", self.max_in_flight_requests as u64),
            ("max_serving_requests", self.max_serving_requests as u64),
            ("max_connections", self.max_connections as u64),
            (
                "max_streams_per_connection",
                u64::from(self.max_streams_per_connection),
            ),
            ("keepalive_interval_ms", self.keepalive_interval_ms),
            ("keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("busy_retry_after_ms", self.busy_retry_after_ms),
            ("min_adaptive_limit", self.min_adaptive_limit as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("serving.{name} must be positive"));
            }
        }
        if self.idle_timeout_ms <= self.keepalive_interval_ms {
            return Err(format!(
                "serving.idle_timeout_ms ({}) must exceed serving.keepalive_interval_ms ({}): \
                 a healthy connection sends something only when pinged",
                self.idle_timeout_ms, self.keepalive_interval_ms
            ));
        }
        if !(self.latency_tolerance.is_finite() && self.latency_tolerance >= 1.0) {
            return Err(format!(
                "serving.latency_tolerance must be at least 1 (a multiple of the unloaded \
                 latency), not {}",
                self.latency_tolerance
            ));
        }
        if self.busy_retry_after_ms > 60_000 {
            return Err("serving.busy_retry_after_ms must be at most 60000".into());
        }
        Ok(())
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// A gRPC server with these limits' HTTP/2 settings: streams per
    /// connection and keepalive pings. Add [`Admission`] as a layer and
    /// serve [`limit_connections`]' stream.
    pub fn server(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .max_concurrent_streams(self.max_streams_per_connection)
            .http2_keepalive_interval(Some(Self::ms(self.keepalive_interval_ms)))
            .http2_keepalive_timeout(Some(Self::ms(self.keepalive_timeout_ms)))
    }

    /// How long a connection may stay silent.
    pub fn idle_timeout(&self) -> Duration {
        Self::ms(self.idle_timeout_ms)
    }

    /// The wait a refusal asks for.
    pub fn retry_after(&self) -> Duration {
        Self::ms(self.busy_retry_after_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        ServingLimits::default().validate().unwrap();
        let zero = ServingLimits {
            max_in_flight_requests: 0,
            ..ServingLimits::default()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .contains("serving.max_in_flight_requests"));
        let idle = ServingLimits {
            idle_timeout_ms: 5_000,
            ..ServingLimits::default()
        };
        assert!(idle.validate().unwrap_err().contains("idle_timeout_ms"));
        let tolerance = ServingLimits {
            latency_tolerance: 0.5,
            ..ServingLimits::default()
        };
        assert!(tolerance
            .validate()
            .unwrap_err()
            .contains("serving.latency_tolerance"));
    }

    #[test]
    fn a_partial_table_keeps_the_other_defaults_and_unknown_keys_are_refused() {
        #[derive(Deserialize)]
        struct File {
            serving: ServingLimits,
        }
        let f: File = toml::from_str("[serving]\nmax_connections = 7\n").unwrap();
        assert_eq!(f.serving.max_connections, 7);
        assert_eq!(
            f.serving.max_in_flight_bytes,
            ServingLimits::default().max_in_flight_bytes
        );
        let unknown = toml::from_str::<File>("[serving]\nmax_conns = 1\n");
        assert!(unknown.is_err());
    }
}
