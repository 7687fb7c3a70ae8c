//! The per-request part of admission: a tower layer in front of a
//! process's gRPC services that refuses a request over the in-flight
//! quotas before reading it, and a [`Ticket`] that holds the request's
//! place and bytes until its response has been handed over.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tonic::codegen::Bytes;

use super::limit::AdaptiveLimit;
use super::{ServingLimits, IN_FLIGHT_BYTES, IN_FLIGHT_REQUESTS, LIMIT, REFUSED, SERVING_REQUESTS};

/// What one process has in flight, against its quotas.
#[derive(Debug)]
struct Budget {
    bytes: AtomicU64,
    requests: AtomicUsize,
    limits: ServingLimits,
    /// The latency-driven limit under `max_serving_requests`, if on.
    adaptive: Option<AdaptiveLimit>,
    /// Admitted requests whose answers are not ready yet.
    serving: AtomicUsize,
}

impl Budget {
    fn publish(&self) {
        metrics::gauge!(IN_FLIGHT_BYTES).set(self.bytes.load(Ordering::Relaxed) as f64);
        metrics::gauge!(IN_FLIGHT_REQUESTS).set(self.requests.load(Ordering::Relaxed) as f64);
        metrics::gauge!(SERVING_REQUESTS).set(self.serving.load(Ordering::Relaxed) as f64);
    }

    fn refuse(&self, reason: &'static str, what: String) -> tonic::Status {
        metrics::counter!(REFUSED, "reason" => reason).increment(1);
        tracing::debug!(reason, "request refused: {what}");
        tessera_proto::limits::busy_status(
            format!("server is busy: {what}; nothing was applied, retry later"),
            self.limits.retry_after(),
        )
    }

    /// A place for one more request, or the refusal.
    fn admit(self: &Arc<Self>) -> Result<Arc<Ticket>, tonic::Status> {
        let max = self.limits.max_in_flight_requests;
        let held = self.requests.fetch_add(1, Ordering::AcqRel);
        if held >= max {
            self.requests.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refuse(
                "requests",
                format!("{max} requests are in flight (serving.max_in_flight_requests)"),
            ));
        }
        // Against the requests still being served: an answer waiting for
        // its reader holds memory (the quotas above), not service.
        let most = self.limits.max_serving_requests;
        let adaptive = self
            .adaptive
            .as_ref()
            .map(|a| a.get())
            .filter(|l| *l < most);
        let serving = self.serving.fetch_add(1, Ordering::AcqRel);
        if serving >= adaptive.unwrap_or(most) {
            self.serving.fetch_sub(1, Ordering::AcqRel);
            self.requests.fetch_sub(1, Ordering::AcqRel);
            return Err(match &self.adaptive {
                Some(a) if adaptive.is_some() => {
                    let (median, baseline) = a.latency();
                    self.refuse(
                        "latency",
                        format!(
                            "{serving} requests are being served, the most it takes while \
                             they take {:.1} ms against {:.1} ms unloaded \
                             (serving.latency_tolerance = {})",
                            median.as_secs_f64() * 1e3,
                            baseline.as_secs_f64() * 1e3,
                            self.limits.latency_tolerance
                        ),
                    )
                }
                _ => self.refuse(
                    "serving",
                    format!("{most} requests are being served (serving.max_serving_requests)"),
                ),
            });
        }
        let ticket = Arc::new(Ticket {
            budget: self.clone(),
            bytes: AtomicU64::new(0),
            charged: AtomicBool::new(false),
            serving: AtomicBool::new(true),
            // Only the adaptive limit needs the service time.
            started: self.adaptive.as_ref().map(|_| Instant::now()),
        });
        let used = self.bytes.load(Ordering::Acquire);
        if used >= self.limits.max_in_flight_bytes {
            // Dropping the ticket gives the place back.
            drop(ticket);
            return Err(self.refuse("bytes", self.bytes_text(used)));
        }
        self.publish();
        Ok(ticket)
    }

    fn bytes_text(&self, used: u64) -> String {
        format!(
            "{used} bytes of requests and responses are in flight, the quota is {} \
             (serving.max_in_flight_bytes)",
            self.limits.max_in_flight_bytes
        )
    }
}

/// One admitted request's place and bytes; both go back when the last
/// holder (the response body, the service's request) lets go.
#[derive(Debug)]
pub struct Ticket {
    budget: Arc<Budget>,
    bytes: AtomicU64,
    /// The service charged its response: its encoded bytes are not counted
    /// again.
    charged: AtomicBool,
    /// Counted in `Budget::serving` until its answer is ready.
    serving: AtomicBool,
    /// When it was admitted, if the adaptive limit samples service times.
    started: Option<Instant>,
}

impl Ticket {
    /// Counts `n` more bytes. With `enforce`, refuses (counting nothing)
    /// when they would pass the byte quota.
    fn add(&self, n: u64, enforce: bool) -> Result<(), tonic::Status> {
        let budget = &self.budget;
        let used = budget.bytes.fetch_add(n, Ordering::AcqRel) + n;
        if enforce && used > budget.limits.max_in_flight_bytes {
            budget.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(budget.refuse("bytes", budget.bytes_text(used)));
        }
        self.bytes.fetch_add(n, Ordering::AcqRel);
        metrics::gauge!(IN_FLIGHT_BYTES).set(used as f64);
        Ok(())
    }

    /// The bytes this request holds.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// The answer of a request carried in a stream ([`Admission::admit`])
    /// is ready and holds `bytes` until the ticket is dropped (once the
    /// answer has been handed to the connection): the service time is
    /// sampled and the request no longer counts as being served.
    pub fn answered(&self, bytes: usize) {
        self.sample(false);
        self.end_service();
        self.charged.store(true, Ordering::Release);
        let _ = self.add(bytes as u64, false);
    }

    /// Feeds the adaptive limit this request's service time, unless it
    /// ended in an error status (`refused`): a refusal further in or bad
    /// input ends fast and says nothing about queues.
    fn sample(&self, refused: bool) {
        let budget = &self.budget;
        if let (Some(a), Some(started), false) = (&budget.adaptive, self.started, refused) {
            let serving = budget.serving.load(Ordering::Relaxed);
            if let Some(limit) = a.sample(Instant::now(), started.elapsed(), serving) {
                metrics::gauge!(LIMIT).set(limit as f64);
            }
        }
    }

    /// The answer is ready (or the request is gone): it no longer counts
    /// against `max_serving_requests` and the adaptive limit.
    fn end_service(&self) {
        // The gauge follows at the next admission or release (`publish`):
        // no metrics lookup here, once more per request.
        if self.serving.swap(false, Ordering::AcqRel) {
            self.budget.serving.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.end_service();
        let budget = &self.budget;
        budget
            .bytes
            .fetch_sub(self.bytes.load(Ordering::Acquire), Ordering::AcqRel);
        budget.requests.fetch_sub(1, Ordering::AcqRel);
        budget.publish();
    }
}

/// Counts the bytes of a response the service built (its encoded size, or
/// what its keys and values hold) against the request's ticket, from now
/// until the response has been handed to the connection. Without a ticket
/// (a service the process does not govern, or a test calling the service
/// directly) it does nothing.
pub fn charge(request_extensions: &tonic::Extensions, bytes: usize) {
    if let Some(ticket) = request_extensions.get::<Arc<Ticket>>() {
        ticket.charged.store(true, Ordering::Release);
        // Never refused: the work is done; the bytes keep new requests out.
        let _ = ticket.add(bytes as u64, false);
    }
}

/// A read's answer, its encoded bytes [`charge`]d to its request until it
/// has been handed to the connection (a slow reader's answers keep new
/// requests out instead of piling up).
pub fn charged<T: prost::Message>(
    request_extensions: &tonic::Extensions,
    answer: T,
) -> tonic::Response<T> {
    charge(request_extensions, answer.encoded_len());
    tonic::Response::new(answer)
}

/// The layer: `limits.server().layer(Admission::new(...))`.
#[derive(Clone, Debug)]
pub struct Admission {
    budget: Arc<Budget>,
    /// Method path prefixes governed by the quotas.
    governs: &'static [&'static str],
    /// Paths among them that are not (long-lived streams, heartbeats).
    exempt: &'static [&'static str],
}

impl Admission {
    /// Quotas `limits` over the methods whose paths start with one of
    /// `governs` (e.g. `/kvpb.Kv/`) and are not in `exempt`.
    pub fn new(
        limits: &ServingLimits,
        governs: &'static [&'static str],
        exempt: &'static [&'static str],
    ) -> Self {
        super::describe();
        Admission {
            budget: Arc::new(Budget {
                bytes: AtomicU64::new(0),
                requests: AtomicUsize::new(0),
                serving: AtomicUsize::new(0),
                limits: limits.clone(),
                adaptive: limits.adaptive_limit.then(|| {
                    metrics::gauge!(LIMIT).set(limits.max_serving_requests as f64);
                    AdaptiveLimit::new(
                        limits.min_adaptive_limit,
                        limits.max_serving_requests,
                        limits.latency_tolerance,
                        Instant::now(),
                    )
                }),
            }),
            governs,
            exempt,
        }
    }

    fn governed(&self, path: &str) -> bool {
        self.governs.iter().any(|p| path.starts_with(p)) && !self.exempt.contains(&path)
    }

    /// Bytes in flight now.
    pub fn in_flight_bytes(&self) -> u64 {
        self.budget.bytes.load(Ordering::Acquire)
    }

    /// Admits one request carried in a stream this layer exempts (the
    /// store's `BatchCommands`): the quotas of a unary request, its
    /// `bytes` counted at once (and refused over the byte quota). Call
    /// [`Ticket::answered`] when its answer is built and drop the ticket
    /// once the answer has been handed to the stream.
    pub fn admit(&self, bytes: usize) -> Result<Arc<Ticket>, tonic::Status> {
        let ticket = self.budget.admit()?;
        ticket.add(bytes as u64, true)?;
        Ok(ticket)
    }

    /// Requests in flight now.
    pub fn in_flight_requests(&self) -> usize {
        self.budget.requests.load(Ordering::Acquire)
    }

    /// Requests served at once now: the adaptive limit, or
    /// `max_serving_requests` without one.
    pub fn request_limit(&self) -> usize {
        let max = self.budget.limits.max_serving_requests;
        self.budget
            .adaptive
            .as_ref()
            .map_or(max, |a| a.get().min(max))
    }
}

impl<S> tower::Layer<S> for Admission {
    type Service = Admitted<S>;

    fn layer(&self, inner: S) -> Admitted<S> {
        Admitted {
            inner,
            admission: self.clone(),
        }
    }
}

/// A service behind admission.
#[derive(Clone, Debug)]
pub struct Admitted<S> {
    inner: S,
    admission: Admission,
}

impl<S, R> tower::Service<http::Request<Body>> for Admitted<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<R>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if !self.admission.governed(req.uri().path()) {
            let fut = self.inner.call(req);
            return Box::pin(async move { Ok(fut.await?.map(Body::new)) });
        }
        let ticket = match self.admission.budget.admit() {
            Ok(t) => t,
            Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
        };
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ticket.clone());
        let body = Body::new(Counted {
            inner: body,
            ticket: ticket.clone(),
            request: true,
        });
        let fut = self.inner.call(http::Request::from_parts(parts, body));
        Box::pin(async move {
            let response = fut.await?;
            // The service time: until the answer is ready, not until a
            // (possibly slow) reader has taken it. An answer that is only
            // an error status carries it in its headers.
            ticket.sample(response.headers().contains_key("grpc-status"));
            ticket.end_service();
            Ok(response.map(|inner| {
                Body::new(Counted {
                    inner,
                    ticket,
                    request: false,
                })
            }))
        })
    }
}

/// A body whose data frames count against a ticket: a request's, refused
/// over the quota; a response's, counted unless the service charged it.
struct Counted<B> {
    inner: B,
    ticket: Arc<Ticket>,
    request: bool,
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            if self.request {
                if let Err(status) = self.ticket.add(n, true) {
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
            } else if !self.ticket.charged.load(Ordering::Acquire) {
                let _ = self.ticket.add(n, false);
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn under_the_adaptive_limit_a_request_is_refused_for_latency_then_admitted_again() {
        let limits = ServingLimits {
            adaptive_limit: true,
            min_adaptive_limit: 2,
            max_serving_requests: 100,
            ..ServingLimits::default()
        };
        let admission = Admission::new(&limits, &["/"], &[]);
        let budget = &admission.budget;
        let adaptive = budget.adaptive.as_ref().unwrap();
        let mut t = Instant::now();
        // Fast windows, then slow ones: the limit falls to its floor.
        for (latency, windows) in [(1, 5), (50, 20)] {
            for _ in 0..windows {
                t += Duration::from_millis(100);
                for _ in 0..20 {
                    adaptive.sample(t, Duration::from_millis(latency), 100);
                }
            }
        }
        assert_eq!(admission.request_limit(), 2);
        let a = budget.admit().unwrap();
        let _b = budget.admit().unwrap();
        let refused = budget.admit().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("serving.latency_tolerance"),
            "{}",
            refused.message()
        );
        assert_eq!(admission.in_flight_requests(), 2, "a refusal holds nothing");
        drop(a);
        let c = budget.admit().unwrap();
        // An answer waiting for a slow reader still holds its request's
        // place in the quotas, but not in the adaptive limit.
        c.end_service();
        let _d = budget.admit().unwrap();
        assert_eq!(admission.in_flight_requests(), 3);
        assert!(budget.admit().is_err());
    }

    #[test]
    fn requests_being_served_are_bounded_and_unread_answers_do_not_count() {
        let limits = ServingLimits {
            max_serving_requests: 2,
            max_in_flight_requests: 3,
            ..ServingLimits::default()
        };
        let admission = Admission::new(&limits, &["/"], &[]);
        let budget = &admission.budget;
        assert_eq!(admission.request_limit(), 2);
        let a = budget.admit().unwrap();
        let b = budget.admit().unwrap();
        let refused = budget.admit().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let text = refused.message();
        assert!(text.contains("2 requests are being served"), "{text}");
        assert!(text.contains("serving.max_serving_requests"), "{text}");
        assert!(text.contains("nothing was applied"), "{text}");
        assert_eq!(admission.in_flight_requests(), 2, "a refusal holds nothing");
        // Both answers are ready but unread: two more may be served, up to
        // the in-flight quota (memory), which then refuses.
        a.end_service();
        b.end_service();
        let _c = budget.admit().unwrap();
        let refused = budget.admit().unwrap_err();
        assert!(
            refused.message().contains("serving.max_in_flight_requests"),
            "{}",
            refused.message()
        );
        drop(a);
        let _d = budget.admit().unwrap();
        assert_eq!(admission.in_flight_requests(), 3);
    }
}
