//! The per-RPC access check: a tower layer in front of every gRPC service
//! of a process. It reads the connection's [`Peer`], the request's method
//! path and its bearer token (if any), asks the [`crate::policy`] and, for
//! a user, the process's copy of the user table ([`crate::users`]), and
//! answers a refusal itself (`UNAUTHENTICATED` or `PERMISSION_DENIED`,
//! naming what is missing), so the service never sees a request it may not
//! serve. A token the table does not know makes the request wait for one
//! fresh fetch of the table (a user created a moment ago) before it is
//! refused. Without TLS (`insecure`) it lets everything through: there is
//! no identity to check.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::Peer;
use crate::identity::Kind;
use crate::policy::{self, Access};
use crate::users::{Principal, UserTable, Users};

/// Metric: RPCs refused by the access check, by reason
/// (unauthenticated, permission_denied).
pub const REFUSED_RPCS: &str = "tessera_rpc_refused_total";

/// The metadata key of bearer tokens, and the scheme its value starts with.
pub const AUTHORIZATION: &str = "authorization";
pub const BEARER: &str = "Bearer ";

/// The layer (`Server::builder().layer(security.guard())`).
#[derive(Clone, Debug)]
pub struct Guard {
    enforce: bool,
    users: Users,
}

impl Guard {
    pub fn new(enforce: bool, users: Users) -> Self {
        Guard { enforce, users }
    }
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            enforce: self.enforce,
            users: self.users.clone(),
        }
    }
}

/// A service behind the access check.
#[derive(Clone, Debug)]
pub struct Guarded<S> {
    inner: S,
    enforce: bool,
    users: Users,
}

/// What the check decided.
#[derive(Debug)]
pub enum Decision {
    Allow,
    Refuse(tonic::Status),
    /// A well-formed token the table does not know (yet).
    UnknownToken,
}

/// The bearer token of a request: `None` without one, `Err` for a header
/// that is not `Bearer tessera-…`.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<Result<&str, tonic::Status>> {
    let value = headers.get(AUTHORIZATION)?;
    let malformed = || {
        tonic::Status::unauthenticated(
            "the authorization metadata is not `Bearer <token>` with a tessera token \
             (from `tessera user create`)",
        )
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix(BEARER))
        .map(str::trim);
    Some(match token {
        Some(t) if crate::secret::check_form(t).is_ok() => Ok(t),
        _ => Err(malformed()),
    })
}

fn role_check(who: &Principal, role: crate::users::Role, path: &str) -> Decision {
    if who.role >= role {
        Decision::Allow
    } else {
        Decision::Refuse(tonic::Status::permission_denied(format!(
            "user {} (role {}) may not call {path}: it needs the role {role} or above",
            who.name, who.role
        )))
    }
}

/// Whether `peer` (presenting `token`, if any) may call `path`, with the
/// users of `table`.
pub fn decide(
    peer: Option<&Peer>,
    path: &str,
    token: Option<Result<&str, tonic::Status>>,
    table: &UserTable,
) -> Decision {
    let Some(access) = policy::access(path) else {
        return Decision::Refuse(tonic::Status::permission_denied(format!(
            "{path} is not in tessera's access policy"
        )));
    };
    let Access::Kinds(kinds, role) = access else {
        return Decision::Allow;
    };
    let needs = policy::kinds_text(kinds);
    let identity = peer.and_then(|p| p.identity.as_deref());
    match (identity, token) {
        (Some(id), Some(_)) if id.kind == Kind::Client => {
            Decision::Refuse(tonic::Status::unauthenticated(format!(
                "the connection presents the client certificate {id} and a token: \
                 present one of them"
            )))
        }
        (Some(id), _) if !kinds.contains(&id.kind) => {
            Decision::Refuse(tonic::Status::permission_denied(format!(
                "{id} may not call {path}: it needs a {needs} identity"
            )))
        }
        (Some(id), _) if id.kind != Kind::Client => Decision::Allow,
        (Some(id), _) => match table.by_name(&id.name) {
            Some(user) => role_check(&user, role, path),
            None => Decision::Refuse(tonic::Status::permission_denied(format!(
                "{id} is not a user of this cluster: create it with \
                 `tessera user create {} --role ...`",
                id.name
            ))),
        },
        (None, Some(Err(status))) => Decision::Refuse(status),
        (None, Some(Ok(_))) if !kinds.contains(&Kind::Client) => {
            Decision::Refuse(tonic::Status::permission_denied(format!(
                "a user token may not call {path}: it needs a {needs} identity"
            )))
        }
        (None, Some(Ok(token))) => match table.by_token(token) {
            Some(user) => role_check(&user, role, path),
            None => Decision::UnknownToken,
        },
        (None, None) if peer.is_some_and(|p| p.unnamed_certificate) => {
            Decision::Refuse(tonic::Status::unauthenticated(format!(
                "{path} needs a {needs} identity; the client certificate carries none \
                 (one SAN URI tessera://KIND/NAME: make it with `tessera cert`)"
            )))
        }
        (None, None) => Decision::Refuse(tonic::Status::unauthenticated(format!(
            "{path} needs a {needs} identity; the connection presented no client \
             certificate and no token"
        ))),
    }
}

/// Who opened a stream of requests ([`policy::STREAMS`]), kept so that the
/// service checks each carried request as the RPC it stands for, against
/// the user table as it is then. The guard puts it in the request's
/// extensions when it lets such a stream open.
#[derive(Clone, Debug)]
pub struct Authority {
    peer: Option<Peer>,
    token: Option<String>,
    users: Users,
    enforce: bool,
}

impl Authority {
    fn new(
        enforce: bool,
        users: &Users,
        req_peer: Option<&Peer>,
        headers: &http::HeaderMap,
    ) -> Self {
        Authority {
            peer: req_peer.cloned(),
            token: bearer_token(headers)
                .and_then(|t| t.ok())
                .map(str::to_string),
            users: users.clone(),
            enforce,
        }
    }

    /// Whether the stream's caller may call `path` now; the refusal is the
    /// one the guard would answer a unary call with.
    pub fn check(&self, path: &str) -> Result<(), tonic::Status> {
        if !self.enforce {
            return Ok(());
        }
        let token = self.token.as_deref().map(Ok);
        let status = match decide(self.peer.as_ref(), path, token, &self.users.current()) {
            Decision::Allow => return Ok(()),
            Decision::Refuse(status) => status,
            Decision::UnknownToken => unknown_token(),
        };
        count_refusal(path, &status);
        Err(status)
    }
}

/// Hands a stream of requests that may open its [`Authority`].
fn with_authority<B>(mut req: http::Request<B>, enforce: bool, users: &Users) -> http::Request<B> {
    if policy::STREAMS.contains(&req.uri().path()) {
        let authority = Authority::new(
            enforce,
            users,
            req.extensions().get::<Peer>(),
            req.headers(),
        );
        req.extensions_mut().insert(authority);
    }
    req
}

fn unknown_token() -> tonic::Status {
    tonic::Status::unauthenticated(
        "the token is not a current user's: it was revoked, or never issued by this cluster",
    )
}

/// Counts and logs a refused RPC (or a refused request in a stream).
fn count_refusal(path: &str, status: &tonic::Status) {
    let reason = match status.code() {
        tonic::Code::Unauthenticated => "unauthenticated",
        _ => "permission_denied",
    };
    metrics::counter!(REFUSED_RPCS, "reason" => reason).increment(1);
    tracing::debug!(path, %status, "RPC refused");
}

fn refusal<R: Default>(path: &str, status: tonic::Status) -> http::Response<R> {
    count_refusal(path, &status);
    status.into_http()
}

impl<S, B, R> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !self.enforce {
            let req = with_authority(req, false, &self.users);
            return Box::pin(self.inner.call(req));
        }
        let table = self.users.current();
        let decision = decide(
            req.extensions().get::<Peer>(),
            req.uri().path(),
            bearer_token(req.headers()),
            &table,
        );
        match decision {
            Decision::Allow => {
                let req = with_authority(req, true, &self.users);
                Box::pin(self.inner.call(req))
            }
            Decision::Refuse(status) => {
                let response = refusal(req.uri().path(), status);
                Box::pin(std::future::ready(Ok(response)))
            }
            Decision::UnknownToken => {
                // The service was readied for this call: take it, leave a
                // clone for the next.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let users = self.users.clone();
                Box::pin(async move {
                    if let Some(Ok(token)) = bearer_token(req.headers()) {
                        users.wait_for_token(token).await;
                    }
                    let path = req.uri().path().to_string();
                    let decision = decide(
                        req.extensions().get::<Peer>(),
                        &path,
                        bearer_token(req.headers()),
                        &users.current(),
                    );
                    match decision {
                        Decision::Allow => inner.call(with_authority(req, true, &users)).await,
                        Decision::Refuse(status) => Ok(refusal(&path, status)),
                        Decision::UnknownToken => Ok(refusal(&path, unknown_token())),
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::Identity;
    use crate::secret;
    use crate::users::{Role, UserEntry};

    const GET: &str = "/routerpb.Router/Get";
    const PUT: &str = "/routerpb.Router/Put";
    const STORE_PUT: &str = "/kvpb.Kv/Put";
    const SPLIT: &str = "/directorypb.Directory/SplitRegion";
    const RAFT: &str = "/raft_serverpb.Raft/Raft";

    fn peer(kind: Kind, name: &str) -> Peer {
        Peer {
            remote: None,
            tls: true,
            identity: Some(Arc::new(Identity::new(kind, name).unwrap())),
            unnamed_certificate: false,
        }
    }

    fn anonymous() -> Peer {
        Peer {
            remote: None,
            tls: true,
            identity: None,
            unnamed_certificate: false,
        }
    }

    /// A table with `ro` (readonly) and `rw` (readwrite), and their tokens.
    fn table() -> (UserTable, String, String) {
        let (ro, rw) = (secret::generate(), secret::generate());
        let entry = |name: &str, role, token: &str| UserEntry {
            name: name.into(),
            role,
            token_hash: secret::hash(token),
        };
        let t = UserTable::new(
            2,
            [
                entry("ro", Role::Readonly, &ro),
                entry("rw", Role::Readwrite, &rw),
            ],
        );
        (t, ro, rw)
    }

    fn code(d: Decision) -> Option<tonic::Code> {
        match d {
            Decision::Allow => None,
            Decision::Refuse(s) => Some(s.code()),
            Decision::UnknownToken => Some(tonic::Code::Unknown),
        }
    }

    #[test]
    fn a_token_gets_exactly_its_role() {
        let (t, ro, rw) = table();
        let p = anonymous();
        assert_eq!(code(decide(Some(&p), GET, Some(Ok(&ro)), &t)), None);
        assert_eq!(
            code(decide(Some(&p), PUT, Some(Ok(&ro)), &t)),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(code(decide(Some(&p), PUT, Some(Ok(&rw)), &t)), None);
        assert_eq!(code(decide(Some(&p), STORE_PUT, Some(Ok(&rw)), &t)), None);
        assert_eq!(
            code(decide(Some(&p), SPLIT, Some(Ok(&rw)), &t)),
            Some(tonic::Code::PermissionDenied)
        );
        // A user token never passes for a node.
        assert_eq!(
            code(decide(Some(&p), RAFT, Some(Ok(&rw)), &t)),
            Some(tonic::Code::PermissionDenied)
        );
        let Decision::Refuse(s) = decide(Some(&p), PUT, Some(Ok(&ro)), &t) else {
            panic!("refused")
        };
        assert!(s.message().contains("user ro (role readonly)"), "{s:?}");
    }

    #[test]
    fn an_unknown_token_asks_for_a_fresh_table_and_a_bad_one_is_refused() {
        let (t, _, _) = table();
        let p = anonymous();
        let stranger = secret::generate();
        assert!(matches!(
            decide(Some(&p), GET, Some(Ok(&stranger)), &t),
            Decision::UnknownToken
        ));
        let malformed = Err(tonic::Status::unauthenticated("malformed"));
        assert_eq!(
            code(decide(Some(&p), GET, Some(malformed), &t)),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(decide(Some(&p), GET, None, &t)),
            Some(tonic::Code::Unauthenticated)
        );
    }

    #[test]
    fn a_client_certificate_is_the_user_of_its_name() {
        let (t, ro, _) = table();
        assert_eq!(
            code(decide(Some(&peer(Kind::Client, "ro")), GET, None, &t)),
            None
        );
        assert_eq!(
            code(decide(Some(&peer(Kind::Client, "ro")), PUT, None, &t)),
            Some(tonic::Code::PermissionDenied)
        );
        // The built-in admin needs no record.
        assert_eq!(
            code(decide(Some(&peer(Kind::Client, "admin")), SPLIT, None, &t)),
            None
        );
        // A certificate of a name that is not a user gets nothing.
        let Decision::Refuse(s) = decide(Some(&peer(Kind::Client, "mallory")), GET, None, &t)
        else {
            panic!("refused")
        };
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(s.message().contains("tessera user create mallory"), "{s:?}");
        // A certificate and a token together are refused.
        assert_eq!(
            code(decide(
                Some(&peer(Kind::Client, "admin")),
                GET,
                Some(Ok(&ro)),
                &t
            )),
            Some(tonic::Code::Unauthenticated)
        );
    }

    #[test]
    fn nodes_and_routers_are_checked_by_kind_not_by_user() {
        let (t, _, _) = table();
        let node = peer(Kind::Node, "n1");
        let router = peer(Kind::Router, "r1");
        assert_eq!(code(decide(Some(&node), RAFT, None, &t)), None);
        assert_eq!(code(decide(Some(&router), STORE_PUT, None, &t)), None);
        assert_eq!(
            code(decide(Some(&router), RAFT, None, &t)),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            code(decide(Some(&node), SPLIT, None, &t)),
            Some(tonic::Code::PermissionDenied)
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_metadata() {
        let token = secret::generate();
        let mut h = http::HeaderMap::new();
        assert!(bearer_token(&h).is_none());
        h.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        assert_eq!(bearer_token(&h).unwrap().unwrap(), token);
        for bad in ["Basic abc", "Bearer ", "Bearer tessera-xyz", "bearer x"] {
            h.insert(AUTHORIZATION, bad.parse().unwrap());
            assert_eq!(
                bearer_token(&h).unwrap().unwrap_err().code(),
                tonic::Code::Unauthenticated,
                "{bad}"
            );
        }
    }
}
