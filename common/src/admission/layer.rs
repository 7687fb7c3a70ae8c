//! The per-request part of admission: a tower layer in front of a
//! process's gRPC services that refuses a request over the in-flight
//! quotas before reading it, and a [`Ticket`] that holds the request's
//! place and bytes until its response has been handed over.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tonic::codegen::Bytes;

use super::{ServingLimits, IN_FLIGHT_BYTES, IN_FLIGHT_REQUESTS, REFUSED};

/// What one process has in flight, against its quotas.
#[derive(Debug)]
struct Budget {
    bytes: AtomicU64,
    requests: AtomicUsize,
    limits: ServingLimits,
}

impl Budget {
    fn publish(&self) {
        metrics::gauge!(IN_FLIGHT_BYTES).set(self.bytes.load(Ordering::Relaxed) as f64);
        metrics::gauge!(IN_FLIGHT_REQUESTS).set(self.requests.load(Ordering::Relaxed) as f64);
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
        if self.requests.fetch_add(1, Ordering::AcqRel) >= max {
            self.requests.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refuse(
                "requests",
                format!("{max} requests are in flight (serving.max_in_flight_requests)"),
            ));
        }
        let ticket = Arc::new(Ticket {
            budget: self.clone(),
            bytes: AtomicU64::new(0),
            charged: AtomicBool::new(false),
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
}

impl Drop for Ticket {
    fn drop(&mut self) {
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
                limits: limits.clone(),
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

    /// Requests in flight now.
    pub fn in_flight_requests(&self) -> usize {
        self.budget.requests.load(Ordering::Acquire)
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
