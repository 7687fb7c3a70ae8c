//! The per-RPC access check: a tower layer in front of every gRPC service
//! of a process. It reads the connection's [`Peer`] and the request's
//! method path, asks the [`crate::policy`], and answers a refusal itself
//! (`UNAUTHENTICATED` or `PERMISSION_DENIED`, naming what is missing), so
//! the service never sees a request it may not serve. Without TLS
//! (`insecure`) it lets everything through: there is no identity to check.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::Peer;
use crate::policy::{self, Access};

/// Metric: RPCs refused by the access check, by reason
/// (unauthenticated, permission_denied).
pub const REFUSED_RPCS: &str = "tessera_rpc_refused_total";

/// The layer (`Server::builder().layer(security.guard())`).
#[derive(Clone, Copy, Debug)]
pub struct Guard {
    enforce: bool,
}

impl Guard {
    pub fn new(enforce: bool) -> Self {
        Guard { enforce }
    }
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            enforce: self.enforce,
        }
    }
}

/// A service behind the access check.
#[derive(Clone, Debug)]
pub struct Guarded<S> {
    inner: S,
    enforce: bool,
}

/// Whether `peer` may call `path`: `Err` is the refusal to send.
pub fn check(peer: Option<&Peer>, path: &str) -> Result<(), tonic::Status> {
    let Some(access) = policy::access(path) else {
        return Err(tonic::Status::permission_denied(format!(
            "{path} is not in tessera's access policy"
        )));
    };
    let Access::Kinds(kinds) = access else {
        return Ok(());
    };
    let needs = policy::kinds_text(kinds);
    match peer.and_then(|p| p.identity.as_deref()) {
        Some(id) if kinds.contains(&id.kind) => Ok(()),
        Some(id) => Err(tonic::Status::permission_denied(format!(
            "{id} may not call {path}: it needs a {needs} identity"
        ))),
        None if peer.is_some_and(|p| p.unnamed_certificate) => {
            Err(tonic::Status::unauthenticated(format!(
                "{path} needs a {needs} identity; the client certificate carries none \
                 (one SAN URI tessera://KIND/NAME: make it with `tessera cert`)"
            )))
        }
        None => Err(tonic::Status::unauthenticated(format!(
            "{path} needs a {needs} identity; the connection presented no client certificate"
        ))),
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.enforce {
            if let Err(status) = check(req.extensions().get::<Peer>(), req.uri().path()) {
                let reason = match status.code() {
                    tonic::Code::Unauthenticated => "unauthenticated",
                    _ => "permission_denied",
                };
                metrics::counter!(REFUSED_RPCS, "reason" => reason).increment(1);
                tracing::debug!(path = req.uri().path(), %status, "RPC refused");
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
        }
        Box::pin(self.inner.call(req))
    }
}
