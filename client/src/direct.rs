//! Direct mode: the SDK finds regions itself and talks to their leaders,
//! with no router in between.
//!
//! A client built with [`ClientBuilder::directory`](crate::ClientBuilder::directory)
//! embeds the routing library (`tessera-routing`, the same code the router
//! runs): the region cache, the connection that follows the directory's
//! leader, one channel per store, the typed reactions to routing errors
//! (leader hints, epochs, retries after an election's wait) and the rule
//! that a write that may have reached a store is never sent again (its
//! outcome is [`Error::Indeterminate`]). Each operation is one process
//! hop shorter than through a router: SDK → leader's store.
//!
//! What this module adds on top of the library is what the proxy mode's
//! [failover](crate::failover) does at the client: the operation's
//! deadline ([`ClientBuilder::timeout`](crate::ClientBuilder::timeout),
//! retries included), busy refusals waited out (or returned, with
//! `retry_busy(false)`), the client's [`Throttle`], and the library's
//! errors turned into the SDK's.
//!
//! Security: the client dials the directory and the stores with the
//! builder's [`Security`](tessera_security::Security), as the user of its
//! client certificate or bearer token. Stores check the same roles as
//! routers (`readonly` reads, `readwrite` writes); a refusal is
//! [`Error::PermissionDenied`] or [`Error::Unauthenticated`], nothing
//! applied.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tessera_routing::throttle::Throttle;
use tessera_routing::{Router, RouterConfig};
use tokio::time::Instant;

use crate::failover::{keyspace_name, Op, OpKind, Settings};
use crate::{Error, Result};

/// How long after the operation's deadline an attempt still in flight is
/// given to end by itself (the library stops at the same deadline) before
/// it is abandoned.
const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// The embedded routing library and the client's settings.
pub(crate) struct Direct {
    router: Arc<Router>,
    settings: Settings,
    /// The directory members, for messages.
    directory: Vec<String>,
}

impl fmt::Debug for Direct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Direct")
            .field("directory", &self.directory)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Direct {
    /// A client of the directory members at `directory` (`host:port`,
    /// checked by the builder). Dials nothing.
    pub(crate) fn new(directory: Vec<String>, settings: Settings) -> Result<Direct> {
        let mut cfg = RouterConfig::new(directory.clone(), settings.security.clone());
        cfg.timeout = settings.timeout;
        cfg.backoff = settings.backoff.clone();
        cfg.batch_stream = settings.batch_stream;
        let router = Router::new(cfg).map_err(|e| Error::Config(e.to_string()))?;
        Ok(Direct {
            router,
            settings,
            directory,
        })
    }

    /// Runs `op` on the embedded router until it succeeds, fails for good
    /// or the deadline passes. `call` makes one attempt (the library's own
    /// retry loop inside it); this loop only waits out busy refusals.
    pub(crate) async fn run<T, F, Fut>(&self, op: Op<'_>, mut call: F) -> Result<T>
    where
        F: FnMut(Arc<Router>) -> Fut,
        Fut: Future<Output = tessera_routing::Result<T>>,
    {
        let timeout = self.settings.timeout;
        let deadline = Instant::now() + timeout;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let refusal = match self.settings.throttle.as_deref().map(Throttle::admit) {
                Some(Err(held)) => (held.to_string(), Duration::ZERO),
                _ => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let outcome =
                        tokio::time::timeout(left + DEADLINE_GRACE, call(self.router.clone()))
                            .await;
                    let outcome = match outcome {
                        Ok(outcome) => outcome,
                        Err(_) => return Err(self.abandoned(op)),
                    };
                    self.record(&outcome);
                    match outcome {
                        Err(tessera_routing::Error::Busy {
                            message,
                            retry_after,
                        }) => (message, retry_after),
                        other => return other.map_err(|e| self.error(op, e)),
                    }
                }
            };
            let (message, asked) = refusal;
            if !self.settings.retry_busy {
                return Err(Error::ResourceExhausted(format!(
                    "{}: {message}; nothing was applied (busy refusals are not retried: \
                     ClientBuilder::retry_busy)",
                    op.name
                )));
            }
            let wait = asked.max(self.settings.backoff.delay(attempts));
            if Instant::now() + wait >= deadline {
                return Err(Error::ResourceExhausted(format!(
                    "{}: the cluster was over its serving quotas until the deadline \
                     ({timeout:?}, attempts: {attempts}); nothing was applied. Last refusal: \
                     {message}",
                    op.name
                )));
            }
            tracing::debug!(op = op.name, attempt = attempts, %message, "busy; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Tells the throttle what the cluster did with an attempt: accepted
    /// (any answer but a busy refusal) or refused as busy. Failures to
    /// reach it say nothing of load and are left out.
    fn record<T>(&self, outcome: &tessera_routing::Result<T>) {
        use tessera_routing::Error as E;
        let Some(throttle) = &self.settings.throttle else {
            return;
        };
        match outcome {
            Err(E::Busy { .. }) => throttle.record(false),
            Err(E::Unavailable(_) | E::DirectoryUnreachable(_) | E::Directory { .. }) => {}
            _ => throttle.record(true),
        }
    }

    /// An attempt still running past the deadline: a read failed, a write
    /// may have been sent.
    fn abandoned(&self, op: Op<'_>) -> Error {
        let why = format!(
            "no answer within {:?} (directory {})",
            self.settings.timeout,
            self.directory.join(",")
        );
        match op.kind {
            OpKind::Read => Error::Unavailable(format!("{}: {why}", op.name)),
            OpKind::Write => Error::Indeterminate(format!(
                "{} may or may not have been applied: {why}",
                op.name
            )),
        }
    }

    /// The SDK's error for the library's.
    fn error(&self, op: Op<'_>, e: tessera_routing::Error) -> Error {
        use tessera_routing::Error as E;
        match e {
            E::InvalidArgument(m) => Error::InvalidArgument(m),
            E::KeyspaceNotFound(_) => Error::KeyspaceNotFound(keyspace_name(op)),
            E::Indeterminate(m) => {
                Error::Indeterminate(format!("{} may or may not have been applied: {m}", op.name))
            }
            E::NoSpace(m) => Error::NoSpace(m),
            E::Refused { code, message } => match code {
                tonic::Code::Unauthenticated => Error::Unauthenticated(message),
                tonic::Code::PermissionDenied => Error::PermissionDenied(message),
                // Another cluster's directory, say: nothing this client can
                // retry its way out of, but nothing applied either.
                _ => Error::Unavailable(format!("{}: refused: {message}", op.name)),
            },
            E::Busy { message, .. } => Error::ResourceExhausted(message),
            E::Setup(m) => Error::Config(m),
            E::Unavailable(m) => Error::Unavailable(m),
            e @ (E::Directory { .. } | E::DirectoryUnreachable(_)) => Error::Unavailable(format!(
                "{}: directory {}: {e}",
                op.name,
                self.directory.join(",")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backoff;
    use tessera_routing::Error as E;

    fn direct(retry_busy: bool, timeout: Duration) -> Direct {
        let settings = Settings {
            timeout,
            connect_timeout: Duration::from_millis(100),
            backoff: Backoff {
                min: Duration::from_millis(1),
                max: Duration::from_millis(5),
            },
            security: tessera_security::Security::insecure(),
            retry_busy,
            batch_stream: true,
            throttle: None,
        };
        Direct::new(vec!["127.0.0.1:1".into()], settings).unwrap()
    }

    fn op(kind: OpKind) -> Op<'static> {
        Op {
            name: "put",
            keyspace: "",
            kind,
        }
    }

    #[tokio::test]
    async fn the_librarys_errors_become_the_sdks() {
        let d = direct(true, Duration::from_secs(1));
        let w = op(OpKind::Write);
        let refused = |code| E::Refused {
            code,
            message: "m".into(),
        };
        assert!(matches!(
            d.error(w, refused(tonic::Code::Unauthenticated)),
            Error::Unauthenticated(_)
        ));
        assert!(matches!(
            d.error(w, refused(tonic::Code::PermissionDenied)),
            Error::PermissionDenied(_)
        ));
        assert!(matches!(
            d.error(w, refused(tonic::Code::FailedPrecondition)),
            Error::Unavailable(_)
        ));
        match d.error(w, E::KeyspaceNotFound("x".into())) {
            Error::KeyspaceNotFound(name) => assert_eq!(name, "default"),
            other => panic!("{other:?}"),
        }
        match d.error(w, E::Indeterminate("lost".into())) {
            Error::Indeterminate(m) => assert!(m.contains("put may or may not"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            d.error(w, E::DirectoryUnreachable("x".into())),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            d.error(w, E::NoSpace("x".into())),
            Error::NoSpace(_)
        ));
        // Abandoned past the deadline: a read failed, a write is unknown.
        assert!(matches!(
            d.abandoned(op(OpKind::Read)),
            Error::Unavailable(_)
        ));
        assert!(matches!(d.abandoned(w), Error::Indeterminate(_)));
    }

    fn busy() -> tessera_routing::Result<()> {
        Err(E::Busy {
            message: "quota".into(),
            retry_after: Duration::from_millis(2),
        })
    }

    #[tokio::test]
    async fn busy_refusals_are_waited_out_or_returned() {
        // Returned at once without retry_busy.
        let d = direct(false, Duration::from_secs(5));
        let mut calls = 0;
        let r = d
            .run(op(OpKind::Write), |_| {
                calls += 1;
                async { busy() }
            })
            .await;
        assert!(matches!(r, Err(Error::ResourceExhausted(_))), "{r:?}");
        assert_eq!(calls, 1);

        // Waited out until it is accepted.
        let d = direct(true, Duration::from_secs(5));
        let mut calls = 0;
        let r = d
            .run(op(OpKind::Write), |_| {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1 | 2 => busy(),
                        _ => Ok(()),
                    }
                }
            })
            .await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(calls, 3);

        // Or until the deadline: nothing applied.
        let d = direct(true, Duration::from_millis(50));
        let r = d.run(op(OpKind::Write), |_| async { busy() }).await;
        match r {
            Err(Error::ResourceExhausted(m)) => assert!(m.contains("deadline"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
