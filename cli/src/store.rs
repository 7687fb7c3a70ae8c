//! `tessera store list`: the stores the directory knows, with their state
//! and the load they last reported; `tessera store remove N`: decommission
//! a store, following it until it is a tombstone; `tessera store
//! evict-leaders N` / `restore-leaders N`: drain a store of leaderships
//! for maintenance (recorded in the directory, so it holds across
//! restarts of the store and of directory leaders), and end that.
//!
//! The state is the directory leader's live view (`up`, `disconnected`,
//! `down`, `offline`, `tombstone`), not only what was last recorded through
//! Raft. Statistics come from store heartbeats and are missing for a store
//! the current directory leader has not heard from yet.
//!
//! A removed store is `offline` while the scheduler moves its replicas to
//! other stores (its repair rule treats an offline store's replicas as
//! lost, one region at a time), and `tombstone` once it holds none. The
//! directory refuses the removal when fewer working stores than a region's
//! replicas would remain. A removed store's process may be stopped once
//! it is a tombstone; it cannot register again.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;
use tessera_proto::directorypb::{RegionInfo, StoreInfo};
use tessera_proto::metapb::StoreState;

use crate::conn::{parse_seconds, Ctx};
use crate::directory::Directory;
use crate::output::{self, human_bytes, human_seconds};
use crate::wait::{self, Poll};

/// Store commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the stores: id, address, state, regions, leaders, space and the
    /// time since their last heartbeat.
    List(ListArgs),
    /// Decommission a store: its replicas move to other stores, then it
    /// becomes a tombstone (it can never rejoin). Shows progress until it
    /// is one. Refused when fewer stores than a region's replicas would
    /// remain. Admin role.
    Remove(RemoveArgs),
    /// Move every leadership off a store (before maintenance) and give it
    /// none until `restore-leaders`; shows progress until it leads no
    /// region. Admin role.
    EvictLeaders(EvictArgs),
    /// Let a store lead again after `evict-leaders` (the balancer moves
    /// leaderships back over the next minutes). Admin role.
    RestoreLeaders(RestoreArgs),
}

#[derive(Args, Debug)]
pub struct EvictArgs {
    /// The store to drain of leaders.
    pub id: u64,
    /// Give up waiting after this many seconds (the eviction goes on).
    #[arg(long, value_name = "SECONDS", default_value = "300", value_parser = parse_seconds)]
    pub wait_timeout: Duration,
    /// Return as soon as the directory recorded the eviction.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The store that may lead again.
    pub id: u64,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// The store to remove.
    pub id: u64,
    /// Give up waiting after this many seconds (the removal goes on).
    #[arg(long, value_name = "SECONDS", default_value = "1800", value_parser = parse_seconds)]
    pub wait_timeout: Duration,
    /// Return as soon as the directory accepted the removal.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Include removed (tombstone) stores.
    #[arg(long)]
    pub all: bool,
}

pub async fn run(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::List(args) => list(ctx, args).await,
        Command::Remove(args) => remove(ctx, args).await,
        Command::EvictLeaders(args) => evict_leaders(ctx, args).await,
        Command::RestoreLeaders(args) => restore_leaders(ctx, args).await,
    }
}

/// What `evict-leaders` and `restore-leaders` print at the end.
#[derive(Debug, Serialize)]
pub struct LeadersView {
    pub id: u64,
    pub evict_leaders: bool,
    /// Regions the directory last saw led from the store.
    pub leaders: usize,
}

async fn evict_leaders(ctx: &Ctx, args: EvictArgs) -> Result<()> {
    let dir = ctx.directory()?;
    let id = args.id;
    dir.set_evict_leaders(id, true).await?;
    let leaders = if args.no_wait {
        leaders_on(&dir, id).await?
    } else {
        wait::until(
            &format!("store {id} to lead no region"),
            args.wait_timeout,
            "the eviction goes on in the background: see `tessera store list` and \
             `tessera operator list`",
            async || {
                Ok(match leaders_on(&dir, id).await? {
                    0 => Poll::Done(0),
                    n => Poll::Pending(format!("store {id} still leads {n} region(s)")),
                })
            },
        )
        .await?
    };
    let view = LeadersView {
        id,
        evict_leaders: true,
        leaders,
    };
    if ctx.output.is_json() {
        return output::print_json(&view);
    }
    output::say(match leaders {
        0 => format!(
            "store {id} leads no region; `tessera store restore-leaders {id}` ends the eviction"
        ),
        n => format!("store {id} is handing over its leaderships ({n} left)"),
    });
    Ok(())
}

async fn restore_leaders(ctx: &Ctx, args: RestoreArgs) -> Result<()> {
    let dir = ctx.directory()?;
    dir.set_evict_leaders(args.id, false).await?;
    let view = LeadersView {
        id: args.id,
        evict_leaders: false,
        leaders: leaders_on(&dir, args.id).await?,
    };
    if ctx.output.is_json() {
        return output::print_json(&view);
    }
    output::say(format!(
        "store {} may lead again; the balancer moves leaderships back to it",
        args.id
    ));
    Ok(())
}

/// How many regions the directory last saw led from `store_id`.
async fn leaders_on(dir: &Directory, store_id: u64) -> Result<usize> {
    count_regions(dir, |r| r.leader.is_some_and(|l| l.store_id == store_id)).await
}

/// How many regions the directory knows that `keep` accepts.
async fn count_regions(dir: &Directory, keep: impl Fn(&RegionInfo) -> bool) -> Result<usize> {
    Ok(dir
        .scan_regions(vec![], vec![], 0)
        .await?
        .iter()
        .filter(|r| keep(r))
        .count())
}

/// What `store remove` prints at the end.
#[derive(Debug, Serialize)]
pub struct RemovedView {
    pub id: u64,
    pub state: &'static str,
    /// Replicas the directory still records on the store.
    pub replicas: usize,
}

async fn remove(ctx: &Ctx, args: RemoveArgs) -> Result<()> {
    let dir = ctx.directory()?;
    dir.remove_store(args.id).await?;
    let id = args.id;
    let view = if args.no_wait {
        RemovedView {
            id,
            state: "offline",
            replicas: replicas_on(&dir, id).await?,
        }
    } else {
        let hint = "the removal goes on in the background: see `tessera store list --all` and \
             `tessera operator list`";
        wait::until(
            &format!("store {id} to empty and become a tombstone"),
            args.wait_timeout,
            hint,
            async || {
                let stores = dir.list_stores(true).await?;
                let state = stores
                    .iter()
                    .filter_map(|s| s.store.as_ref())
                    .find(|s| s.id == id)
                    .map(|s| s.state);
                let replicas = replicas_on(&dir, id).await?;
                Ok(match state {
                    Some(s) if s == StoreState::Tombstone as i32 => Poll::Done(RemovedView {
                        id,
                        state: "tombstone",
                        replicas,
                    }),
                    Some(s) => Poll::Pending(format!(
                        "store {id} is {} and still holds {replicas} replica(s)",
                        state_name(s)
                    )),
                    None => Poll::Failed(anyhow::anyhow!("store {id} is not known any more")),
                })
            },
        )
        .await?
    };
    if ctx.output.is_json() {
        return output::print_json(&view);
    }
    output::say(match view.state {
        "tombstone" => format!("store {id} removed: it is a tombstone and holds no replica"),
        _ => format!(
            "store {id} is being removed ({} replica(s) to move); `tessera store list --all` shows when it is a tombstone",
            view.replicas
        ),
    });
    Ok(())
}

/// How many regions the directory records with a replica on `store_id`.
async fn replicas_on(dir: &Directory, store_id: u64) -> Result<usize> {
    count_regions(dir, |r| {
        r.region
            .as_ref()
            .is_some_and(|r| r.peers.iter().any(|p| p.store_id == store_id))
    })
    .await
}

/// A store as the CLI shows it.
#[derive(Debug, Serialize)]
pub struct StoreView {
    pub id: u64,
    pub address: String,
    pub status_address: String,
    pub state: &'static str,
    /// `tessera store evict-leaders` is in force: it leads nothing.
    pub evict_leaders: bool,
    pub labels: Vec<String>,
    /// From the last heartbeat; absent until the directory leader heard one.
    pub stats: Option<StatsView>,
}

#[derive(Debug, Serialize)]
pub struct StatsView {
    pub region_count: u32,
    pub leader_count: u32,
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub uptime_seconds: u64,
    pub seconds_since_heartbeat: u64,
    /// The store's poller rounds were slow lately (a slow disk): it gets
    /// no new replica or leadership.
    pub degraded: bool,
    /// The store is below its free-space threshold (the NOSPACE alarm):
    /// user writes to its regions are refused, it gets no new replica.
    pub low_space: bool,
}

/// The name of a store state as the CLI prints it.
pub fn state_name(state: i32) -> &'static str {
    match StoreState::try_from(state) {
        Ok(StoreState::Up) => "up",
        Ok(StoreState::Disconnected) => "disconnected",
        Ok(StoreState::Down) => "down",
        Ok(StoreState::Offline) => "offline",
        Ok(StoreState::Tombstone) => "tombstone",
        Err(_) => "unknown",
    }
}

impl StoreView {
    pub fn new(info: &StoreInfo) -> Self {
        let store = info.store.clone().unwrap_or_default();
        StoreView {
            id: store.id,
            address: store.address,
            status_address: store.status_address,
            state: state_name(store.state),
            evict_leaders: store.evict_leaders,
            labels: store
                .labels
                .iter()
                .map(|l| format!("{}={}", l.key, l.value))
                .collect(),
            stats: info.stats.map(|s| StatsView {
                region_count: s.region_count,
                leader_count: s.leader_count,
                capacity_bytes: s.capacity_bytes,
                available_bytes: s.available_bytes,
                used_bytes: s.used_bytes,
                uptime_seconds: s.uptime_seconds,
                seconds_since_heartbeat: info.seconds_since_heartbeat,
                degraded: s.degraded,
                low_space: s.low_space,
            }),
        }
    }

    fn row(&self) -> Vec<String> {
        let stat = |f: &dyn Fn(&StatsView) -> String| {
            self.stats.as_ref().map(f).unwrap_or_else(|| "-".into())
        };
        vec![
            self.id.to_string(),
            self.address.clone(),
            match &self.stats {
                Some(s) if s.low_space => format!("{} (NOSPACE)", self.state),
                Some(s) if s.degraded => format!("{} (slow disk)", self.state),
                _ if self.evict_leaders => format!("{} (leaders evicted)", self.state),
                _ => self.state.to_string(),
            },
            stat(&|s| s.region_count.to_string()),
            stat(&|s| s.leader_count.to_string()),
            stat(&|s| human_bytes(s.used_bytes)),
            stat(&|s| human_bytes(s.available_bytes)),
            stat(&|s| human_bytes(s.capacity_bytes)),
            stat(&|s| format!("{} ago", human_seconds(s.seconds_since_heartbeat))),
            if self.labels.is_empty() {
                "-".into()
            } else {
                self.labels.join(",")
            },
        ]
    }
}

async fn list(ctx: &Ctx, args: ListArgs) -> Result<()> {
    let dir = ctx.directory()?;
    let stores: Vec<StoreView> = dir
        .list_stores(args.all)
        .await?
        .iter()
        .map(StoreView::new)
        .collect();
    if ctx.output.is_json() {
        return output::print_json(&stores);
    }
    let mut t = output::table(&[
        "ID",
        "ADDRESS",
        "STATE",
        "REGIONS",
        "LEADERS",
        "USED",
        "AVAILABLE",
        "CAPACITY",
        "LAST HEARTBEAT",
        "LABELS",
    ]);
    for s in &stores {
        t.add_row(s.row());
    }
    output::print_table(&t);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::directorypb::StoreStats;
    use tessera_proto::metapb::{Store, StoreLabel};

    #[test]
    fn rows_with_and_without_stats() {
        let mut info = StoreInfo {
            store: Some(Store {
                id: 2,
                address: "127.0.0.1:14021".into(),
                state: StoreState::Down as i32,
                labels: vec![StoreLabel {
                    key: "zone".into(),
                    value: "a".into(),
                }],
                status_address: String::new(),
                evict_leaders: false,
            }),
            stats: None,
            seconds_since_heartbeat: 0,
        };
        let v = StoreView::new(&info);
        assert_eq!(v.state, "down");
        assert_eq!(v.row()[3], "-");
        assert_eq!(v.row()[9], "zone=a");
        info.stats = Some(StoreStats {
            region_count: 7,
            leader_count: 3,
            used_bytes: 2048,
            ..Default::default()
        });
        info.seconds_since_heartbeat = 4;
        let row = StoreView::new(&info).row();
        assert_eq!(row[3..6], ["7", "3", "2.0 KiB"]);
        assert_eq!(row[8], "4s ago");
        info.store.as_mut().unwrap().state = StoreState::Up as i32;
        info.store.as_mut().unwrap().evict_leaders = true;
        let v = StoreView::new(&info);
        assert!(v.evict_leaders);
        assert_eq!(v.row()[2], "up (leaders evicted)");
    }
}
