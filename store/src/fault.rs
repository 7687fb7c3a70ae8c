//! Fault injection for the nemesis harness: HTTP endpoints on a store's
//! status server, compiled in only with the `failpoints` cargo feature.
//!
//! | endpoint | effect |
//! |---|---|
//! | `GET /fail` | the failpoints set, one `name=actions` per line |
//! | `PUT /fail/{name}` (body: `fail` actions, e.g. `panic`, `sleep(100)`, `1*off->panic`) | arms a failpoint |
//! | `DELETE /fail/{name}` | disarms it |
//! | `GET /fault/partition` | the stores this store is cut off from |
//! | `PUT /fault/partition` (body: store ids, comma-separated) | cuts Raft traffic with them, both ways ([`NetFaults`]) |
//! | `DELETE /fault/partition` | heals |
//! | `GET /fault/messages` | the message faults set, one `stores=ID …` line per destination |
//! | `PUT /fault/messages` (body: `stores=2,3 delay=50ms jitter=20ms duplicate=0.1 reorder=0.2`) | delays, duplicates and reorders the Raft batches this store sends to those stores ([`tessera_multiraft::transport::MessageFaults`]) |
//! | `DELETE /fault/messages` | clears every message fault |
//! | `GET`/`PUT /fault/clock` (body: `rate=0.5`, `jump=1500ms`, `normal`) | skews this process's clock (`tessera_common::clock`; every process's status server has it) |
//! | `PUT /fault/unsafe-read` (body: `on` or `off`) | serves reads without lease or ReadIndex (the checker's negative control) |
//!
//! A store also arms failpoints from the `FAILPOINTS` environment variable
//! at start (`name=actions;name=actions`), so a test can crash it at a
//! point reached during start-up or the first writes.
//!
//! In a build without the feature, [`routes`] is empty and
//! [`arm_from_env`] does nothing: no process a user runs can be faulted.
//! The failpoints themselves are listed in `tessera-multiraft`'s crate docs.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tessera_multiraft::transport::NetFaults;

/// What the fault endpoints act on.
#[derive(Clone, Default)]
pub struct FaultHandles {
    pub net: NetFaults,
    pub unsafe_reads: Arc<AtomicBool>,
}

#[cfg(feature = "failpoints")]
mod enabled {
    use std::sync::atomic::Ordering;

    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::{get, put};
    use axum::Router;

    use tessera_multiraft::transport::MessageFaultSpec;

    use super::FaultHandles;

    type Reply = (StatusCode, String);

    pub fn routes(h: FaultHandles) -> Router {
        Router::new()
            .route("/fail", get(list_failpoints))
            .route("/fail/{name}", put(arm).delete(disarm))
            .route(
                "/fault/partition",
                get(partition).put(set_partition).delete(heal),
            )
            .route(
                "/fault/messages",
                get(message_faults)
                    .put(set_message_faults)
                    .delete(clear_message_faults),
            )
            .route("/fault/unsafe-read", put(set_unsafe_read))
            .with_state(h)
    }

    pub fn arm_from_env() -> Result<(), String> {
        let Ok(spec) = std::env::var("FAILPOINTS") else {
            return Ok(());
        };
        for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, actions) = item
                .split_once('=')
                .ok_or_else(|| format!("FAILPOINTS item {item:?} is not name=actions"))?;
            fail::cfg(name.trim(), actions.trim())
                .map_err(|e| format!("FAILPOINTS {name}: {e}"))?;
            tracing::warn!(failpoint = name, actions, "failpoint armed from FAILPOINTS");
        }
        Ok(())
    }

    async fn list_failpoints() -> String {
        fail::list()
            .into_iter()
            .map(|(name, actions)| format!("{name}={actions}\n"))
            .collect()
    }

    async fn arm(Path(name): Path<String>, actions: String) -> Reply {
        match fail::cfg(name.clone(), actions.trim()) {
            Ok(()) => {
                tracing::warn!(failpoint = %name, actions = actions.trim(), "failpoint armed");
                (StatusCode::OK, "armed\n".into())
            }
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        }
    }

    async fn disarm(Path(name): Path<String>) -> Reply {
        fail::remove(&name);
        (StatusCode::OK, "disarmed\n".into())
    }

    async fn partition(State(h): State<FaultHandles>) -> String {
        let ids: Vec<String> = h.net.blocked().iter().map(u64::to_string).collect();
        format!("{}\n", ids.join(","))
    }

    async fn set_partition(State(h): State<FaultHandles>, body: String) -> Reply {
        let mut ids = vec![];
        for part in body.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match part.parse::<u64>() {
                Ok(id) => ids.push(id),
                Err(_) => {
                    return (
                        StatusCode::BAD_REQUEST,
                        format!("{part:?} is not a store id\n"),
                    )
                }
            }
        }
        tracing::warn!(blocked = ?ids, "partition set");
        h.net.set_blocked(ids);
        (StatusCode::OK, "partitioned\n".into())
    }

    async fn heal(State(h): State<FaultHandles>) -> Reply {
        h.net.set_blocked([]);
        tracing::warn!("partition healed");
        (StatusCode::OK, "healed\n".into())
    }

    async fn message_faults(State(h): State<FaultHandles>) -> String {
        h.net
            .message_faults()
            .into_iter()
            .map(|(id, f)| format!("stores={id} {f}\n"))
            .collect()
    }

    async fn set_message_faults(State(h): State<FaultHandles>, body: String) -> Reply {
        match body.parse::<MessageFaultSpec>() {
            Ok(spec) => {
                tracing::warn!(stores = ?spec.stores, faults = %spec.faults, "message faults set");
                h.net.set_message_faults(&spec);
                (StatusCode::OK, "set\n".into())
            }
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        }
    }

    async fn clear_message_faults(State(h): State<FaultHandles>) -> Reply {
        h.net.clear_message_faults();
        tracing::warn!("message faults cleared");
        (StatusCode::OK, "cleared\n".into())
    }

    async fn set_unsafe_read(State(h): State<FaultHandles>, body: String) -> Reply {
        let on = match body.trim() {
            "on" => true,
            "off" => false,
            other => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("expected on or off, not {other:?}\n"),
                )
            }
        };
        tracing::warn!(on, "unsafe reads switched");
        h.unsafe_reads.store(on, Ordering::SeqCst);
        (StatusCode::OK, format!("unsafe reads {}\n", body.trim()))
    }
}

/// The fault endpoints (empty without the `failpoints` feature).
pub fn routes(h: FaultHandles) -> axum::Router {
    #[cfg(feature = "failpoints")]
    {
        enabled::routes(h)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = h;
        axum::Router::new()
    }
}

/// Arms the failpoints named in `FAILPOINTS` (nothing without the feature).
pub fn arm_from_env() -> Result<(), String> {
    #[cfg(feature = "failpoints")]
    {
        enabled::arm_from_env()
    }
    #[cfg(not(feature = "failpoints"))]
    {
        Ok(())
    }
}
