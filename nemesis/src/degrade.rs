//! The nemeses that degrade the cluster rather than cut it: message faults
//! on the Raft links between stores (`delay`, `duplicate`, `reorder`) and
//! clock skew (`clock-skew`).
//!
//! **Message faults** act in each store's Raft transport on the batches it
//! sends (`/fault/messages`, `tessera_multiraft::transport::MessageFaults`).
//! One time in three they strike every link between stores; otherwise
//! every link of one store, both ways. `delay` holds each batch 20–150 ms
//! plus up to as much again of jitter (so batches also overtake each
//! other); `duplicate` sends 20–60% of batches twice, the copy up to
//! 50 ms later; `reorder` holds 20–60% of batches back 40–100 ms so that
//! later ones overtake them. Raft must make progress through all three,
//! and no acknowledged write may be lost or read out of order.
//!
//! **Clock skew** (`/fault/clock`, `tessera_common::clock`) comes in two
//! steps, each for half the hold. First one process — a store, or one time
//! in three a directory member, whose clock drives its liveness decisions
//! — runs slow or fast within the drift bound the lease relies on (rate
//! 0.90–0.97 or 1.03–1.10) or jumps 0.2–3 s ahead. Then the store leading
//! a region runs slow within the bound and, on network hosts, is cut from
//! every other store and from one router: the followers elect a new
//! leader on their clocks, the cut router finds it once it has dropped its
//! dead connection to the old one (HTTP/2 keepalive, about 4 s) and its
//! clients write through it, while the other router's clients still read
//! from the old leader — which must have ended its lease, on its own slow
//! clock, before the new leader could take a write. The bound is
//! `RaftConfig::max_clock_drift`: a leader's clock may run at most 11%
//! slower than a follower's at the defaults. The negative control
//! ([`crate::faults::ScheduleSpec::unsafe_clock_rate`]) waits 3 s, then
//! slows the leader of the region holding the clients' keys beyond the
//! bound and holds the cut at least 12 s; with clients pinned to their
//! router and 1 s timeouts the checker must catch the stale lease reads
//! the old leader then serves.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio::sync::watch;

use crate::cluster::{NemesisCluster, ProcKind};
use crate::faults::{hold_for, random_leader_store, random_router, Log, Nemesis};

/// How long the clock-skew negative control holds its cut at least.
const UNSAFE_HOLD: Duration = Duration::from_secs(12);
/// How long the clock-skew negative control waits before it strikes.
const UNSAFE_WARM_UP: Duration = Duration::from_secs(3);

/// Strikes the Raft links between stores with `nemesis`'s message fault.
pub(crate) async fn message_fault(
    c: &NemesisCluster,
    nemesis: Nemesis,
    hold: Duration,
    rng: &mut StdRng,
    log: &mut Log,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let faults = match nemesis {
        Nemesis::Delay => {
            let delay = rng.random_range(20..=150);
            let jitter = rng.random_range(0..=delay);
            format!("delay={delay}ms jitter={jitter}ms")
        }
        Nemesis::Duplicate => {
            let p = rng.random_range(0.2..=0.6);
            format!("duplicate={p:.2} jitter={}ms", rng.random_range(0..=10))
        }
        Nemesis::Reorder => {
            let p = rng.random_range(0.2..=0.6);
            format!("reorder={p:.2} jitter={}ms", rng.random_range(5..=30))
        }
        other => anyhow::bail!("{other:?} is no message fault"),
    };
    let stores = c.store_indexes();
    let all = rng.random_bool(1.0 / 3.0);
    let one = stores[rng.random_range(0..stores.len())];
    for &from in &stores {
        let to: Vec<usize> = stores
            .iter()
            .copied()
            .filter(|&to| to != from && (all || from == one || to == one))
            .collect();
        if !to.is_empty() {
            c.set_message_faults(from, &to, &faults)?;
        }
    }
    let which = if all {
        "every link between stores".to_string()
    } else {
        format!("every link of store {one}")
    };
    log.note(format!("{faults} on {which}"));
    hold_for(hold, stop).await;
    Ok(())
}

/// Skews one process's clock within the drift bound, then slows a region
/// leader's clock and cuts it from the other stores and from one router
/// (network hosts).
pub(crate) async fn clock_skew(
    c: &mut NemesisCluster,
    hold: Duration,
    unsafe_rate: Option<f64>,
    rng: &mut StdRng,
    log: &mut Log,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if unsafe_rate.is_none() {
        let kind = if rng.random_bool(1.0 / 3.0) {
            ProcKind::Directory
        } else {
            ProcKind::Store
        };
        let all = c.indexes(kind);
        let index = all[rng.random_range(0..all.len())];
        let fault = match rng.random_range(0..3) {
            0 => format!("rate={:.2}", rng.random_range(0.90..=0.97)),
            1 => format!("rate={:.2}", rng.random_range(1.03..=1.10)),
            _ => format!("jump={}ms", rng.random_range(200..=3000)),
        };
        c.skew_clock(kind, index, &fault)?;
        log.note(format!("clock of {kind:?} {index}: {fault}"));
        hold_for(hold / 2, stop).await;
        c.skew_clock(kind, index, "normal")?;
        log.note(format!("clock of {kind:?} {index} at real speed"));
    }
    let leader = match unsafe_rate {
        None => random_leader_store(c, rng).await?,
        Some(_) => {
            // The control strikes where the clients are, once the run has
            // warmed up (the first region's third replica just added).
            hold_for(UNSAFE_WARM_UP, stop).await;
            workload_leader_store(c).await?
        }
    };
    let rate = unsafe_rate.unwrap_or_else(|| rng.random_range(0.90..=0.97));
    let fault = format!("rate={rate:.2}");
    c.skew_clock(ProcKind::Store, leader, &fault)?;
    let leader_host = c.host(ProcKind::Store, leader);
    let others: Vec<String> = c
        .store_indexes()
        .into_iter()
        .filter(|&s| s != leader)
        .map(|s| c.host(ProcKind::Store, s))
        .collect();
    c.cut_links(std::slice::from_ref(&leader_host), &others)?;
    // The clients of one router reach the new leader once it is elected;
    // the others' requests still go to the old one.
    let router = random_router(c, rng)?;
    c.cut_links(
        std::slice::from_ref(&leader_host),
        std::slice::from_ref(&router),
    )?;
    log.note(format!(
        "clock of store {leader} (a region leader): {fault}, cut from the other stores and {router}"
    ));
    // The negative control holds the cut long enough for the cut router to
    // drop its dead connection (HTTP/2 keepalive: about 4 s) and its
    // clients to write through the new leader while the old one's lease,
    // on its slow clock, still runs.
    let rest = match unsafe_rate {
        Some(_) => hold.max(UNSAFE_HOLD),
        None => hold / 2,
    };
    hold_for(rest, stop).await;
    Ok(())
}

/// The index of the store leading the region that holds the workload's
/// first key.
async fn workload_leader_store(c: &NemesisCluster) -> anyhow::Result<usize> {
    let key = tessera_proto::keys::encode(
        tessera_proto::keys::DEFAULT_KEYSPACE_ID,
        crate::workload::key_name(0).as_bytes(),
    );
    let leader = c
        .regions()
        .await?
        .into_iter()
        .find(|r| {
            r.region
                .as_ref()
                .is_some_and(|g| g.start_key <= key && (g.end_key.is_empty() || key < g.end_key))
        })
        .and_then(|r| r.leader)
        .ok_or_else(|| anyhow::anyhow!("the workload's region has no known leader"))?;
    c.store_index(leader.store_id)
        .ok_or_else(|| anyhow::anyhow!("leader store {} unknown", leader.store_id))
}
