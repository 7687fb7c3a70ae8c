//! [`ClientBuilder`] and [`Backoff`]: the client's settings and their
//! validation.
//!
//! Building checks the settings and parses every address but dials nothing:
//! connections are made by the first operation that needs them, so a client
//! can be built while every router (or directory member) is down.
//!
//! A client is built in one of two modes, chosen by the addresses it is
//! given: [`ClientBuilder::routers`] (proxy mode: routers find the regions)
//! or [`ClientBuilder::directory`] (direct mode: the client finds them
//! itself and talks to their leaders, see `direct`). Neither, or both, is
//! a configuration error.

use std::sync::Arc;
use std::time::Duration;

use tessera_routing::throttle::{self, Throttle};
use tessera_security::Security;
use tonic::transport::Endpoint;

use crate::client::Transport;
use crate::direct::Direct;
use crate::failover::{Failover, Settings};
use crate::{Client, Error, Result};

/// How long one operation may take, retries included, unless set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long dialing one router may take, unless set.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a connection with a request in flight may stay silent before
/// the client pings the router. With [`KEEPALIVE_TIMEOUT`] it bounds how
/// long a router host that vanished without closing its connections (power
/// loss, partition) holds an operation before the client fails over.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);

/// How long the client waits for the answer to a ping before it drops the
/// connection, failing the requests in flight on it.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The wait between two attempts of an operation: exponential with jitter
/// (the routing library's one rule, re-exported unchanged).
pub use tessera_routing::Backoff;

/// Settings of a [`Client`]; made by [`Client::builder`].
///
/// ```
/// use std::time::Duration;
/// use tessera_client::{Backoff, Client};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> tessera_client::Result<()> {
/// // Builds even when no router is up: nothing is dialed yet.
/// let client = Client::builder()
///     .routers(["127.0.0.1:7000", "http://127.0.0.1:7001"])
///     .timeout(Duration::from_secs(5))
///     .connect_timeout(Duration::from_millis(500))
///     .backoff(Backoff { min: Duration::from_millis(10), max: Duration::from_millis(500) })
///     .build()
///     .await?;
/// # drop(client);
///
/// // Direct mode: regions found through the directory, requests sent
/// // straight to their leaders.
/// let direct = Client::builder()
///     .directory(["127.0.0.1:2379", "127.0.0.1:2380", "127.0.0.1:2381"])
///     .build()
///     .await?;
/// assert!(direct.is_direct());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    directory: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    backoff: Backoff,
    security: Security,
    retry_busy: bool,
    batch_stream: bool,
    throttle_ratio: f64,
    throttle_window: Duration,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            endpoints: Vec::new(),
            directory: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            backoff: Backoff::default(),
            security: Security::insecure(),
            retry_busy: true,
            batch_stream: true,
            throttle_ratio: throttle::DEFAULT_RATIO,
            throttle_window: throttle::DEFAULT_WINDOW,
        }
    }
}

impl ClientBuilder {
    /// How connections to the routers are secured: TLS with the cluster's
    /// CA and, to act as a user, either its client certificate
    /// (`Security::client(certs_dir, Some("alice"))`) or its bearer token
    /// from `tessera user create` (`Security::with_token(certs_dir,
    /// token)`). The user's role decides what it may do: a refused request
    /// fails with [`Error::PermissionDenied`], an unknown or revoked token
    /// with [`Error::Unauthenticated`]. Without it the client dials
    /// plaintext, which only an `--insecure` cluster answers.
    pub fn security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// Proxy mode: the routers to talk to, `host:port` or
    /// `http://host:port`, in order of preference. Replaces any routers set
    /// before. The mode for thin clients: the routers find regions, follow
    /// leaders and retry routing errors.
    pub fn routers<I, S>(mut self, routers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints = routers.into_iter().map(Into::into).collect();
        self
    }

    /// The same as [`routers`](Self::routers) (its name before direct
    /// mode existed).
    pub fn endpoints<I, S>(self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.routers(endpoints)
    }

    /// Direct mode: the directory's members, `host:port` (any of them; the
    /// client follows its leader). The client then finds each key's region
    /// and its leader itself (caching them, corrected by the stores'
    /// answers) and sends requests straight to that leader's store: one
    /// process hop fewer than through a router, and no router to run. It
    /// needs to reach every store's advertised address. Replaces any
    /// members set before.
    pub fn directory<I, S>(mut self, members: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.directory = members.into_iter().map(Into::into).collect();
        self
    }

    /// How long one operation may take, retries and failovers included.
    /// Default 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long dialing one router may take. Default 1 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The wait between attempts. Default [`Backoff::default`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Whether a busy refusal (the cluster over its serving quotas, nothing
    /// applied) is waited out — at least the wait the refusal asks for —
    /// and sent again until the operation's deadline (the default), or
    /// returned at once as [`Error::ResourceExhausted`]: for callers that
    /// shed load themselves, such as a service with its own fallback or a
    /// load generator measuring what the cluster admits.
    pub fn retry_busy(mut self, retry: bool) -> Self {
        self.retry_busy = retry;
        self
    }

    /// Direct mode: whether point requests (get, put, delete,
    /// compare-and-swap) travel to each store over one long-lived
    /// `BatchCommands` stream that carries many requests per message (the
    /// default: fewer messages and less CPU per request under load, no
    /// waiting when idle), or as one unary RPC each. No effect through
    /// routers (a router streams to the stores itself, as its
    /// `batch_stream` setting says).
    pub fn batch_stream(mut self, stream: bool) -> Self {
        self.batch_stream = stream;
        self
    }

    /// Client-side throttling (Google SRE's "adaptive throttling"): over
    /// the last `window` the client counts the requests it tried and those
    /// the routers accepted (answered with anything but a busy refusal;
    /// attempts that failed over — no connection, no answer — are not
    /// counted), and once it has tried more than
    /// `ratio` × the accepted ones it holds back that excess share of new
    /// requests itself, at once, as a busy refusal — nothing is sent, so
    /// nothing is applied, and an overloaded cluster does not spend its
    /// CPU refusing them. It lets go as the routers accept again, ramping
    /// back to sending everything within a window or two. A ratio of 0 turns it off; otherwise it must be
    /// at least 1 (2 means: send up to twice what is accepted). Default
    /// ratio 2, window 2 s.
    pub fn throttle(mut self, ratio: f64, window: Duration) -> Self {
        self.throttle_ratio = ratio;
        self.throttle_window = window;
        self
    }

    /// Checks the settings and makes the client. Dials nothing, so it
    /// succeeds with every router down.
    ///
    /// Fails with [`Error::Config`] when it was given neither routers nor
    /// directory members (or both), an address does not parse (or is not
    /// plain `http`), a timeout is zero, or the backoff is empty or
    /// inverted.
    ///
    /// ```
    /// use tessera_client::{Client, Error};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = Client::builder().build().await.err();
    /// assert!(matches!(err, Some(Error::Config(_))));
    /// # }
    /// ```
    pub async fn build(self) -> Result<Client> {
        match (self.endpoints.is_empty(), self.directory.is_empty()) {
            (true, true) => {
                return Err(Error::Config(
                    "give routers (proxy mode) or directory members (direct mode)".into(),
                ))
            }
            (false, false) => {
                return Err(Error::Config(
                    "give routers (proxy mode) or directory members (direct mode), not both".into(),
                ))
            }
            _ => {}
        }
        if self.timeout.is_zero() {
            return Err(Error::Config("the timeout must be positive".into()));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::Config("the connect timeout must be positive".into()));
        }
        if self.backoff.min.is_zero() || self.backoff.min > self.backoff.max {
            return Err(Error::Config(format!(
                "the backoff needs 0 < min <= max, got min {:?}, max {:?}",
                self.backoff.min, self.backoff.max
            )));
        }
        let throttle = if self.throttle_ratio == 0.0 {
            None
        } else {
            Some(Arc::new(
                Throttle::new(self.throttle_ratio, self.throttle_window).ok_or_else(|| {
                    Error::Config(format!(
                        "the throttle needs a ratio of 0 (off) or at least 1 and a window of \
                         at least 10 ms, got ratio {}, window {:?}",
                        self.throttle_ratio, self.throttle_window
                    ))
                })?,
            ))
        };
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| parse_endpoint("router", e, self.connect_timeout))
            .collect::<Result<Vec<_>>>()?;
        let members = self
            .directory
            .iter()
            .map(|e| parse_endpoint("directory member", e, self.connect_timeout).map(|(a, _)| a))
            .collect::<Result<Vec<_>>>()?;
        let settings = Settings {
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            backoff: self.backoff,
            security: self.security,
            retry_busy: self.retry_busy,
            batch_stream: self.batch_stream,
            throttle,
        };
        let transport = if members.is_empty() {
            Transport::Routers(Failover::new(endpoints, settings))
        } else {
            Transport::Direct(Direct::new(members, settings)?)
        };
        Ok(Client::from_transport(transport))
    }
}

/// Parses `host:port` or `http://host:port` (of a `what`, for messages)
/// into a tonic endpoint (not dialed), returning the address as written
/// without the scheme too.
fn parse_endpoint(
    what: &str,
    endpoint: &str,
    connect_timeout: Duration,
) -> Result<(String, Endpoint)> {
    let bad = |why: &str| Error::Config(format!("{what} {endpoint:?}: {why}"));
    let trimmed = endpoint.trim();
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    let address = match trimmed.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(bad(&format!(
                "scheme {scheme:?} is not supported, use host:port or http://host:port"
            )))
        }
        None => trimmed,
    };
    let address = address.strip_suffix('/').unwrap_or(address);
    if address.is_empty() || address.contains('/') {
        return Err(bad("expected host:port"));
    }
    let parsed = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| bad(&format!("does not parse: {e}")))?;
    let uri = parsed.uri();
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if uri.port_u16().is_none() {
        return Err(bad("no port"));
    }
    let parsed = parsed
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(false);
    Ok((address.to_string(), parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(e: &str) -> Result<String> {
        parse_endpoint("router", e, DEFAULT_CONNECT_TIMEOUT).map(|(a, _)| a)
    }

    #[test]
    fn endpoints_with_and_without_scheme() {
        assert_eq!(
            parse("127.0.0.1:7000").ok().as_deref(),
            Some("127.0.0.1:7000")
        );
        assert_eq!(
            parse("http://localhost:7000").ok().as_deref(),
            Some("localhost:7000")
        );
        assert_eq!(
            parse(" http://[::1]:7000/ ").ok().as_deref(),
            Some("[::1]:7000")
        );
    }

    #[test]
    fn bad_endpoints_are_config_errors() {
        for e in [
            "",
            "  ",
            "localhost",
            "http://",
            "https://h:1",
            "h:1/x",
            "h:port",
            "a b:1",
        ] {
            assert!(
                matches!(parse(e), Err(Error::Config(_))),
                "{e:?} was accepted"
            );
        }
    }

    #[tokio::test]
    async fn settings_are_checked() {
        let b = || ClientBuilder::default().endpoints(["127.0.0.1:1"]);
        assert!(b().build().await.is_ok());
        assert!(matches!(
            ClientBuilder::default().build().await,
            Err(Error::Config(_))
        ));
        // Direct mode, and the two modes never together.
        let direct = ClientBuilder::default()
            .directory(["127.0.0.1:1", "http://127.0.0.1:2"])
            .build()
            .await
            .unwrap();
        assert!(direct.is_direct());
        assert!(!b().build().await.unwrap().is_direct());
        assert!(!ClientBuilder::default()
            .routers(["127.0.0.1:1"])
            .build()
            .await
            .unwrap()
            .is_direct());
        match b().directory(["127.0.0.1:2"]).build().await {
            Err(Error::Config(m)) => assert!(m.contains("not both"), "{m}"),
            other => panic!("both modes: {other:?}"),
        }
        match ClientBuilder::default().directory(["nohost"]).build().await {
            Err(Error::Config(m)) => assert!(m.contains("directory member"), "{m}"),
            other => panic!("a bad member: {other:?}"),
        }
        assert!(matches!(
            b().timeout(Duration::ZERO).build().await,
            Err(Error::Config(_))
        ));
        assert!(matches!(
            b().connect_timeout(Duration::ZERO).build().await,
            Err(Error::Config(_))
        ));
        let inverted = Backoff {
            min: Duration::from_secs(2),
            max: Duration::from_secs(1),
        };
        assert!(matches!(
            b().backoff(inverted).build().await,
            Err(Error::Config(_))
        ));
        let second = Duration::from_secs(1);
        assert!(b().throttle(0.0, second).build().await.is_ok());
        assert!(b().throttle(1.0, second).build().await.is_ok());
        for (ratio, window) in [
            (0.5, second),
            (-1.0, second),
            (f64::NAN, second),
            (2.0, Duration::ZERO),
        ] {
            match b().throttle(ratio, window).build().await {
                Err(Error::Config(m)) => assert!(m.contains("throttle"), "{m}"),
                other => panic!("{ratio} {window:?}: {other:?}"),
            }
        }
    }
}
