//! Failover between router endpoints: connections, attempts, backoff and
//! the rule that decides between "unavailable" and "indeterminate".
//!
//! [`Failover`] keeps one tonic [`Channel`] per router endpoint, dialed on
//! first use with the connect timeout (TCP nodelay) and then kept; tonic
//! re-dials a broken connection by itself on the next request. An operation
//! starts at the endpoint that last answered, and on a failure backs off
//! and moves to the next endpoint, round-robin, until its deadline. Every
//! attempt's gRPC deadline is the time left; a write that ends
//! indeterminate moves the next operation's start to the next endpoint
//! too. The endpoints come from the
//! builder with HTTP/2 keepalive pings on, so a connection to a router host
//! that went silent fails its requests in seconds instead of holding them
//! to the deadline.
//!
//! Each failed attempt is classified by whether the request may have reached
//! a router:
//! - **not sent**: dialing failed (a connect error, also one tonic reports
//!   when re-dialing inside an established channel), or the router answered
//!   with an error of kind `UNAVAILABLE`, which says nothing was applied;
//! - **maybe sent**: any other gRPC status or transport error, or no answer
//!   within the deadline, once the request went out on a connection.
//!
//! What follows depends on the operation's [`OpKind`]:
//! - reads retry after any failure and end as [`Error::Unavailable`];
//! - writes (all of them: put and delete too) retry only after *not sent*
//!   failures and report [`Error::Indeterminate`] at once after a *maybe
//!   sent* one. Resending a put that may have applied could apply it again
//!   after another client's write, undoing that write — the nemesis suite
//!   caught exactly this when puts were still retried as idempotent.
//!
//! A server over its serving quotas refuses before it reads the request:
//! the router's own admission (gRPC `RESOURCE_EXHAUSTED` with a
//! `tessera-retry-after-ms` wait) or a store behind it (an answer of kind
//! `BUSY` with `retry_after_ms`). Nothing was applied, so reads and writes
//! alike are tried again, on the same router, after at least the asked
//! wait (and the backoff, whichever is longer); when the deadline comes
//! first the operation ends as [`Error::ResourceExhausted`].
//!
//! Before each attempt the client's [`Throttle`] may hold the request
//! back (see `ClientBuilder::throttle`): never sent, so it is a busy
//! refusal like the router's, waited out or returned the same way. Each
//! attempt that was answered tells the throttle whether the router
//! accepted it (any answer) or refused it as busy; failures to connect,
//! `UNAVAILABLE` answers, transport errors and missing answers are
//! failover's business and are not counted (a router that hangs must end
//! reads as `Unavailable`, not held back).
//!
//! Router answers of kind `INVALID_ARGUMENT`, `KEYSPACE_NOT_FOUND` and
//! `INDETERMINATE` end the operation at once with the matching error. So
//! do the gRPC statuses `UNAUTHENTICATED` and `PERMISSION_DENIED` (the
//! router's access check refused the call before anything ran):
//! [`Error::Unauthenticated`] and [`Error::PermissionDenied`], nothing
//! applied, not retried. The statuses `OUT_OF_RANGE` and
//! `INVALID_ARGUMENT` come only from gRPC's framing, never from the
//! router's handlers (which answer in the response's `error`): a message
//! over the router's size limit, or one this client would not encode. The
//! request was never handled, so it is [`Error::InvalidArgument`], final
//! and certainly not applied — not a write that "may have been sent". A
//! router answer of kind `UNKNOWN` (a newer router, say) counts as *maybe
//! sent*.
//!
//! This module knows nothing of keys or ranges; the operations build their
//! requests and hand a closure that sends one attempt.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tessera_proto::routerpb::{self, error::Kind, router_client::RouterClient};
use tessera_security::Channel;
use tokio::time::Instant;
use tonic::transport::Endpoint;

use tessera_routing::sent::{sent, Sent};
use tessera_routing::throttle::{HeldBack, Throttle};

use crate::{Backoff, Error, Result};

/// The largest response the client accepts (a big scan or batch get);
/// tonic's default of 4 MiB is below the largest value a key may hold.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// The largest request the client sends; the router enforces its own
/// limits and answers `INVALID_ARGUMENT` past them.
const MAX_REQUEST_BYTES: usize = 256 * 1024 * 1024;

/// Validated client settings.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// How long one operation may take, retries included.
    pub timeout: Duration,
    /// How long dialing one router may take.
    pub connect_timeout: Duration,
    pub backoff: Backoff,
    /// How the routers are dialed.
    pub security: tessera_security::Security,
    /// Wait out busy refusals until the deadline (else return them).
    pub retry_busy: bool,
    /// Direct mode: point requests over one stream per store.
    pub batch_stream: bool,
    /// Holds back what the routers would refuse (`None`: off).
    pub throttle: Option<std::sync::Arc<Throttle>>,
}

/// What an operation does, for the retry and indeterminate rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Changes nothing: always retried.
    Read,
    /// Must not be applied twice — not even a put, which applied again
    /// after another client's write would undo it: retried only when
    /// certainly not sent.
    Write,
}

/// One operation, for retries, logs and error messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op<'a> {
    /// The operation's name, e.g. `put`.
    pub name: &'static str,
    /// The keyspace as sent (empty: `default`).
    pub keyspace: &'a str,
    pub kind: OpKind,
}

/// A router response, which carries an optional error.
pub(crate) trait Answer {
    fn error(&self) -> Option<&routerpb::Error>;
}

macro_rules! answers {
    ($($t:ident),* $(,)?) => {
        $(impl Answer for routerpb::$t {
            fn error(&self) -> Option<&routerpb::Error> {
                self.error.as_ref()
            }
        })*
    };
}

answers!(
    GetResponse,
    PutResponse,
    DeleteResponse,
    BatchGetResponse,
    BatchPutResponse,
    ScanResponse,
    CompareAndSwapResponse,
    DeleteRangeResponse,
);

/// Wraps a request message for one attempt, with the attempt's deadline
/// (sent as `grpc-timeout`, and enforced by tonic on this side too).
pub(crate) fn request<T: Clone>(message: &T, left: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message.clone());
    request.set_timeout(left);
    request
}

/// One router endpoint and its connection, once dialed.
struct Slot {
    /// `host:port`, for messages.
    address: String,
    endpoint: Endpoint,
    channel: Mutex<Option<Channel>>,
}

impl Slot {
    /// The endpoint's channel, dialing it first if need be. An error means
    /// nothing was sent.
    async fn channel(
        &self,
        left: Duration,
        connect_timeout: Duration,
        security: &tessera_security::Security,
    ) -> Result<Channel, String> {
        if let Some(channel) = self.channel.lock().clone() {
            return Ok(channel);
        }
        // Two operations may dial at once; the last channel stored wins and
        // the other is dropped after its request.
        let wait = left.min(connect_timeout);
        match tokio::time::timeout(wait, security.connect(self.endpoint.clone())).await {
            Ok(Ok(channel)) => {
                *self.channel.lock() = Some(channel.clone());
                Ok(channel)
            }
            Ok(Err(e)) => Err(format!("{}: connect: {}", self.address, chain(&e))),
            Err(_) => Err(format!(
                "{}: connect: no connection within {wait:?}",
                self.address
            )),
        }
    }
}

/// Why one attempt failed.
#[derive(Debug)]
enum Failure {
    /// The request certainly did not reach a router, or the router said
    /// nothing of it was applied.
    NotSent(String),
    /// The request may have reached a router and been applied.
    MaybeSent(String),
    /// A server over its quotas refused it unread: wait at least this.
    Busy(String, Duration),
    /// This client's throttle held it back: never sent.
    HeldBack(HeldBack),
    /// A proper answer that ends the operation.
    Final(Error),
}

/// The router endpoints and the retry loop over them.
pub(crate) struct Failover {
    slots: Vec<Slot>,
    /// The endpoint that answered last; operations start there.
    preferred: AtomicUsize,
    settings: Settings,
}

impl fmt::Debug for Failover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failover")
            .field(
                "endpoints",
                &self.slots.iter().map(|s| &s.address).collect::<Vec<_>>(),
            )
            .field("preferred", &self.preferred.load(Ordering::Relaxed))
            .field("settings", &self.settings)
            .finish()
    }
}

impl Failover {
    /// `endpoints` must not be empty (the builder checks).
    pub(crate) fn new(endpoints: Vec<(String, Endpoint)>, settings: Settings) -> Failover {
        let slots = endpoints
            .into_iter()
            .map(|(address, endpoint)| Slot {
                address,
                endpoint,
                channel: Mutex::new(None),
            })
            .collect();
        Failover {
            slots,
            preferred: AtomicUsize::new(0),
            settings,
        }
    }

    /// Runs `op` until a router answers it or its deadline passes. `send`
    /// makes one attempt on a client of the chosen router, given the time
    /// left (use [`request`] to build the request).
    pub(crate) async fn call<R, F, Fut>(&self, op: Op<'_>, mut send: F) -> Result<R>
    where
        R: Answer,
        F: FnMut(RouterClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let timeout = self.settings.timeout;
        let deadline = Instant::now() + timeout;
        let n = self.slots.len();
        if n == 0 {
            return Err(Error::Config("no router endpoint".into()));
        }
        let mut at = self.preferred.load(Ordering::Relaxed) % n;
        let mut attempts: u32 = 0;
        let mut last_error = String::from("no attempt was made");
        // The last failure was a busy refusal asking for this wait.
        let mut busy: Option<Duration> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            attempts += 1;
            let outcome = match self.settings.throttle.as_deref().map(Throttle::admit) {
                Some(Err(held)) => Err(Failure::HeldBack(held)),
                _ => self.attempt(at, deadline - now, &mut send).await,
            };
            let failure = match outcome {
                Ok(answer) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(failure) => failure,
            };
            match failure {
                Failure::Final(e) => {
                    // The router answered properly: it is a good one to ask.
                    self.preferred.store(at, Ordering::Relaxed);
                    return Err(match e {
                        Error::KeyspaceNotFound(_) => Error::KeyspaceNotFound(keyspace_name(op)),
                        Error::Indeterminate(m) => Error::Indeterminate(format!(
                            "{} may or may not have been applied: {m}",
                            op.name
                        )),
                        e => e,
                    });
                }
                Failure::NotSent(e) => {
                    busy = None;
                    last_error = e;
                }
                Failure::Busy(e, _) if !self.settings.retry_busy => {
                    return Err(Error::ResourceExhausted(format!(
                        "{}: refused by a router over its serving quotas; nothing was \
                         applied (busy refusals are not retried: ClientBuilder::retry_busy). {e}",
                        op.name
                    )));
                }
                Failure::Busy(e, wait) => {
                    busy = Some(wait);
                    last_error = e;
                }
                Failure::HeldBack(held) if !self.settings.retry_busy => {
                    return Err(Error::ResourceExhausted(format!(
                        "{}: {held}; nothing was applied (busy refusals are not retried: \
                         ClientBuilder::retry_busy)",
                        op.name
                    )));
                }
                Failure::HeldBack(held) => {
                    // Tried again after the backoff alone.
                    busy = Some(Duration::ZERO);
                    last_error = held.to_string();
                }
                Failure::MaybeSent(e) => match op.kind {
                    OpKind::Read => {
                        busy = None;
                        last_error = e;
                    }
                    OpKind::Write => {
                        tracing::debug!(
                            op = op.name,
                            keyspace = op.keyspace,
                            error = %e,
                            "the write may have been sent; not retrying"
                        );
                        // The router did not answer properly: the next
                        // operation starts at the next one (unless another
                        // operation already moved on).
                        let _ = self.preferred.compare_exchange(
                            at,
                            (at + 1) % n,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                        return Err(Error::Indeterminate(format!(
                            "{} may or may not have been applied: {e}",
                            op.name
                        )));
                    }
                },
            }
            let backoff = self.settings.backoff.delay(attempts);
            let wait = busy.map_or(backoff, |asked| asked.max(backoff));
            if Instant::now() + wait >= deadline {
                break;
            }
            // A busy router is healthy: stay with it (its neighbours share
            // the same stores); move on after any other failure.
            let next = if busy.is_some() { at } else { (at + 1) % n };
            tracing::debug!(
                op = op.name,
                keyspace = op.keyspace,
                attempt = attempts,
                error = %last_error,
                next = %self.slots[next].address,
                wait_ms = wait.as_millis() as u64,
                "retrying"
            );
            tokio::time::sleep(wait).await;
            at = next;
        }
        // Every attempt certainly failed to apply (a write that may have
        // been sent returned Indeterminate above).
        if busy.is_some() {
            return Err(Error::ResourceExhausted(format!(
                "{}: the cluster was over its serving quotas until the deadline ({timeout:?}, \
                 attempts: {attempts}); nothing was applied. Last refusal: {last_error}",
                op.name
            )));
        }
        Err(Error::Unavailable(format!(
            "{}: no router served it within {timeout:?} (attempts: {attempts}, endpoints: {n}; \
             last error: {last_error})",
            op.name
        )))
    }

    /// One attempt at endpoint `at` with `left` time left.
    async fn attempt<R, F, Fut>(
        &self,
        at: usize,
        left: Duration,
        send: &mut F,
    ) -> Result<R, Failure>
    where
        R: Answer,
        F: FnMut(RouterClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let slot = &self.slots[at];
        let channel = slot
            .channel(left, self.settings.connect_timeout, &self.settings.security)
            .await
            .map_err(Failure::NotSent)?;
        let client = RouterClient::new(channel)
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_REQUEST_BYTES);
        // tonic enforces the deadline too; this bounds the attempt even if a
        // future inside does not.
        let outcome = match tokio::time::timeout(left, send(client, left)).await {
            Err(_) => Err(Failure::MaybeSent(format!(
                "{}: no answer within {left:?}",
                slot.address
            ))),
            Ok(Err(status)) => Err(classify_status(&slot.address, &status)),
            Ok(Ok(response)) => {
                let answer = response.into_inner();
                match answer.error() {
                    None => Ok(answer),
                    Some(e) => Err(classify_answer(&slot.address, e)),
                }
            }
        };
        if let Some(throttle) = &self.settings.throttle {
            match &outcome {
                Ok(_) | Err(Failure::Final(_)) => throttle.record(true),
                Err(Failure::Busy(..)) => throttle.record(false),
                // A router that cannot be reached, is unavailable or does
                // not answer is failover's business, not load's: a hung
                // router stays `Unavailable`, not held back.
                Err(Failure::NotSent(_) | Failure::MaybeSent(_) | Failure::HeldBack(_)) => {}
            }
        }
        outcome
    }
}

/// The keyspace's name for messages: empty is `default`.
pub(crate) fn keyspace_name(op: Op<'_>) -> String {
    if op.keyspace.is_empty() {
        "default".to_string()
    } else {
        op.keyspace.to_string()
    }
}

/// A gRPC status instead of an answer: not sent only when tonic says it
/// could not connect. `UNAUTHENTICATED` and `PERMISSION_DENIED` come only
/// from a router's access check, `OUT_OF_RANGE` and `INVALID_ARGUMENT`
/// only from gRPC's framing (a message over a size limit); each answers
/// before anything runs: not applied, and final.
fn classify_status(address: &str, status: &tonic::Status) -> Failure {
    let message = format!(
        "{address}: {:?}: {}",
        status.code(),
        with_sources(status.message().to_string(), StdError::source(status))
    );
    if let Some(wait) = tessera_proto::limits::busy_retry_after(status) {
        return Failure::Busy(format!("{address}: {}", status.message()), wait);
    }
    match status.code() {
        tonic::Code::Unauthenticated => {
            return Failure::Final(Error::Unauthenticated(format!(
                "{address}: {}",
                status.message()
            )))
        }
        tonic::Code::PermissionDenied => {
            return Failure::Final(Error::PermissionDenied(format!(
                "{address}: {}",
                status.message()
            )))
        }
        tonic::Code::OutOfRange | tonic::Code::InvalidArgument => {
            return Failure::Final(Error::InvalidArgument(format!(
                "{address} refused the request before handling it (nothing was applied): {}",
                status.message()
            )))
        }
        _ => {}
    }
    if sent(status) == Sent::No {
        Failure::NotSent(message)
    } else {
        Failure::MaybeSent(message)
    }
}

/// An answer carrying an error.
fn classify_answer(address: &str, e: &routerpb::Error) -> Failure {
    let message = || format!("{address}: {}", e.message);
    match e.kind() {
        Kind::InvalidArgument => Failure::Final(Error::InvalidArgument(e.message.clone())),
        Kind::KeyspaceNotFound => Failure::Final(Error::KeyspaceNotFound(e.message.clone())),
        Kind::Indeterminate => Failure::Final(Error::Indeterminate(e.message.clone())),
        Kind::NoSpace => Failure::Final(Error::NoSpace(e.message.clone())),
        Kind::Unavailable => Failure::NotSent(message()),
        Kind::Busy => Failure::Busy(
            message(),
            Duration::from_millis(e.retry_after_ms.clamp(1, 60_000)),
        ),
        Kind::Unknown => Failure::MaybeSent(message()),
    }
}

/// An error and its sources, `: `-separated, without repeats (tonic often
/// repeats its source's text in its own).
fn chain(e: &(dyn StdError + 'static)) -> String {
    with_sources(e.to_string(), e.source())
}

/// `text` followed by the texts of `source` and its sources that it does
/// not already contain.
fn with_sources(mut text: String, mut source: Option<&(dyn StdError + 'static)>) -> String {
    while let Some(s) = source {
        let next = s.to_string();
        if !next.is_empty() && !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(kind: Kind) -> routerpb::Error {
        routerpb::Error {
            kind: kind as i32,
            message: "m".into(),
            retry_after_ms: 40,
        }
    }

    #[test]
    fn answers_are_classified() {
        let f = |k| classify_answer("r:1", &answer(k));
        assert!(matches!(
            f(Kind::InvalidArgument),
            Failure::Final(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            f(Kind::KeyspaceNotFound),
            Failure::Final(Error::KeyspaceNotFound(_))
        ));
        assert!(matches!(
            f(Kind::Indeterminate),
            Failure::Final(Error::Indeterminate(_))
        ));
        assert!(matches!(
            f(Kind::NoSpace),
            Failure::Final(Error::NoSpace(_))
        ));
        assert!(matches!(f(Kind::Unavailable), Failure::NotSent(_)));
        assert!(matches!(f(Kind::Unknown), Failure::MaybeSent(_)));
        assert!(matches!(
            f(Kind::Busy),
            Failure::Busy(_, w) if w == Duration::from_millis(40)
        ));
        let odd = routerpb::Error {
            kind: 99,
            message: String::new(),
            retry_after_ms: 0,
        };
        assert!(matches!(
            classify_answer("r:1", &odd),
            Failure::MaybeSent(_)
        ));
    }

    #[test]
    fn statuses_are_maybe_sent_unless_connecting_failed() {
        let plain = tonic::Status::unavailable("stopping");
        assert!(matches!(
            classify_status("r:1", &plain),
            Failure::MaybeSent(_)
        ));
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let connect = tonic::ConnectError(Box::new(refused));
        let status = tonic::Status::from_error(Box::new(connect));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(matches!(
            classify_status("r:1", &status),
            Failure::NotSent(_)
        ));
    }

    #[test]
    fn a_request_refused_by_the_framing_is_final_and_not_applied() {
        // What tonic answers for a message over the receiver's limit (and
        // what it reports when this side would not encode one).
        let too_large = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 50000000 bytes, the limit is: 41943040 bytes",
        );
        match classify_status("r:1", &too_large) {
            Failure::Final(Error::InvalidArgument(m)) => {
                assert!(m.contains("nothing was applied"), "{m}");
                assert!(m.contains("too large"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        let malformed = tonic::Status::invalid_argument("bad grpc-timeout");
        assert!(matches!(
            classify_status("r:1", &malformed),
            Failure::Final(Error::InvalidArgument(_))
        ));
        // A busy refusal by the router's admission: not applied, wait.
        let busy = tessera_proto::limits::busy_status("quota", Duration::from_millis(30));
        assert!(matches!(
            classify_status("r:1", &busy),
            Failure::Busy(_, w) if w == Duration::from_millis(30)
        ));
        // A status from the middle of a call stays "maybe sent", gRPC's
        // own RESOURCE_EXHAUSTED too.
        for code in [
            tonic::Code::ResourceExhausted,
            tonic::Code::Internal,
            tonic::Code::Unknown,
            tonic::Code::Cancelled,
        ] {
            assert!(matches!(
                classify_status("r:1", &tonic::Status::new(code, "x")),
                Failure::MaybeSent(_)
            ));
        }
    }
}
