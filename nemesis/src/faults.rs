//! Nemeses: the faults a run inflicts, one at a time, each undone before
//! the next.
//!
//! The schedule is driven by the run's seed: the mix is dealt in shuffled
//! rounds (every nemesis of the mix once per round, so a run long enough
//! for one round covers them all), and the seed picks which process or
//! store each one hits and for how long. Every fault and its
//! undoing is logged as an [`Event`] with its time, so a violation can be
//! read against what the cluster was going through.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use tessera_e2e::netns::HARNESS;

use crate::cluster::{NemesisCluster, ProcKind, LOW_SPACE_MIB};
use crate::degrade;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    /// SIGKILL a store, restart it after a while.
    KillStore,
    /// SIGKILL a directory member, restart it.
    KillDirectory,
    /// SIGKILL a router, restart it (the SDK fails over).
    KillRouter,
    /// SIGSTOP a store or a directory member, SIGCONT it.
    Pause,
    /// Split the stores into a majority and a minority.
    PartitionMajority,
    /// Two halves that cannot see each other, and one store that sees both.
    PartitionBridge,
    /// Cut the store leading a region off from every other store.
    IsolateLeader,
    /// Move region leaderships around, many times a second.
    TransferStorm,
    /// Split regions and move replicas between stores.
    SplitMove,
    /// Merge a region into its neighbour (moving its replicas onto the
    /// neighbour's stores first), after splitting one so there is
    /// something to merge.
    Merge,
    /// SIGKILL a store and start it at a new address: it registers the
    /// address itself, and the other stores and the routers must follow.
    MoveStore,
    /// Fill the disks of one store or of a majority below their free-space
    /// threshold (stores on a tmpfs: `--store-disk-mib`), then free them.
    DiskFull,
    /// Make every Raft write of one store take 0.5–5 s (a slow or stalled
    /// disk; the `raft_before_persist` failpoint), then let it go.
    DiskStall,
    /// Network hosts: cut every link between two random groups of
    /// processes (directory members, stores and routers mixed), from
    /// outside the processes; the clients still reach every process.
    PartitionLinks,
    /// Network hosts: cut one store off from every directory member; its
    /// links to the other stores, the routers and the clients stay.
    IsolateFromDirectory,
    /// Network hosts: cut one router off from the store leading a region.
    RouterStoreCut,
    /// Network hosts: cut the clients off from one router (the SDK fails
    /// over to another).
    ClientRouterCut,
    /// Hold every Raft batch between stores (all links, or every link of
    /// one store) 20–150 ms, plus jitter.
    Delay,
    /// Send 20–60% of the Raft batches between stores twice.
    Duplicate,
    /// Hold 20–60% of the Raft batches between stores back so that later
    /// ones overtake them.
    Reorder,
    /// Network hosts: skew one process's clock within the lease's drift
    /// bound, then slow a region leader's clock within it and cut the
    /// leader from the other stores and from one router (`crate::degrade`).
    ClockSkew,
}

impl Nemesis {
    /// Every nemesis that runs on any cluster (`disk-full` also needs its
    /// stores on a tmpfs).
    pub const ALL: [Nemesis; 15] = [
        Nemesis::KillStore,
        Nemesis::KillDirectory,
        Nemesis::KillRouter,
        Nemesis::Pause,
        Nemesis::PartitionMajority,
        Nemesis::PartitionBridge,
        Nemesis::IsolateLeader,
        Nemesis::TransferStorm,
        Nemesis::SplitMove,
        Nemesis::Merge,
        Nemesis::MoveStore,
        Nemesis::DiskStall,
        Nemesis::Delay,
        Nemesis::Duplicate,
        Nemesis::Reorder,
    ];

    /// The nemeses that need every process on a network host of its own
    /// (network namespaces, root), which a run whose mix has one of them
    /// starts: the link cuts from outside the processes, and `clock-skew`
    /// (it cuts a slowed leader from its followers and from one router).
    pub const NETWORK: [Nemesis; 5] = [
        Nemesis::PartitionLinks,
        Nemesis::IsolateFromDirectory,
        Nemesis::RouterStoreCut,
        Nemesis::ClientRouterCut,
        Nemesis::ClockSkew,
    ];

    /// Whether this nemesis needs network hosts ([`Nemesis::NETWORK`]).
    pub fn needs_network_hosts(self) -> bool {
        Nemesis::NETWORK.contains(&self)
    }
}

/// A fault inflicted or undone, at `at_ms` since the run started.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Event {
    pub at_ms: u64,
    /// The nemesis this event belongs to (`None`: healing).
    pub nemesis: Option<Nemesis>,
    pub what: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ScheduleSpec {
    pub mix: Vec<Nemesis>,
    /// How long one fault lasts (drawn between these bounds).
    pub fault_min: Duration,
    pub fault_max: Duration,
    /// Quiet time after a fault is undone.
    pub quiet: Duration,
    /// The negative control of clock skew: `clock-skew` slows the region
    /// leader it cuts off to this rate, beyond the drift bound (the suite
    /// uses 0.05), and the checker must report the stale lease reads that
    /// follow (`crate::degrade`).
    pub unsafe_clock_rate: Option<f64>,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        ScheduleSpec {
            mix: Nemesis::ALL.to_vec(),
            fault_min: Duration::from_secs(2),
            fault_max: Duration::from_secs(5),
            quiet: Duration::from_secs(1),
            unsafe_clock_rate: None,
        }
    }
}

pub(crate) struct Log {
    started: Instant,
    current: Option<Nemesis>,
    events: Vec<Event>,
}

impl Log {
    pub(crate) fn note(&mut self, what: impl Into<String>) {
        let what = what.into();
        tracing::info!(nemesis = %what);
        self.events.push(Event {
            at_ms: self.started.elapsed().as_millis() as u64,
            nemesis: self.current,
            what,
        });
    }
}

/// Inflicts faults from `spec.mix` until `stop` turns true, then leaves the
/// cluster healed. Returns the events.
pub async fn run(
    cluster: &mut NemesisCluster,
    spec: &ScheduleSpec,
    seed: u64,
    started: Instant,
    mut stop: watch::Receiver<bool>,
    current: watch::Sender<String>,
) -> anyhow::Result<Vec<Event>> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e656d65736973);
    let mut log = Log {
        started,
        current: None,
        events: vec![],
    };
    let mut round: Vec<Nemesis> = vec![];
    if spec.mix.is_empty() {
        let _ = stop.wait_for(|s| *s).await;
        return Ok(log.events);
    }
    while !*stop.borrow() {
        if round.is_empty() {
            round = spec.mix.clone();
            round.shuffle(&mut rng);
        }
        let nemesis = round.pop().expect("a non-empty round");
        let hold = rng.random_range(spec.fault_min..=spec.fault_max);
        log.current = Some(nemesis);
        let _ = current.send(format!("{nemesis:?}"));
        let inflicted = inflict(cluster, spec, nemesis, hold, &mut rng, &mut log, &mut stop).await;
        if let Err(e) = inflicted {
            log.note(format!("{nemesis:?} could not be carried out: {e:#}"));
        }
        cluster.heal().await?;
        log.current = None;
        log.note("healed");
        let _ = current.send("quiet".into());
        tokio::select! {
            _ = tokio::time::sleep(spec.quiet) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    Ok(log.events)
}

/// Sleeps `d`, or less if the run is stopping.
pub(crate) async fn hold_for(d: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

async fn inflict(
    c: &mut NemesisCluster,
    spec: &ScheduleSpec,
    nemesis: Nemesis,
    hold: Duration,
    rng: &mut StdRng,
    log: &mut Log,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut stores = c.store_indexes();
    stores.shuffle(rng);
    match nemesis {
        Nemesis::KillStore | Nemesis::KillDirectory | Nemesis::KillRouter => {
            let kind = match nemesis {
                Nemesis::KillStore => ProcKind::Store,
                Nemesis::KillDirectory => ProcKind::Directory,
                _ => ProcKind::Router,
            };
            let all = c.indexes(kind);
            let index = all[rng.random_range(0..all.len())];
            c.kill(kind, index)?;
            log.note(format!("kill -9 {kind:?} {index}"));
            hold_for(hold, stop).await;
            c.restart(kind, index)?;
            log.note(format!("restart {kind:?} {index}"));
        }
        Nemesis::MoveStore => {
            let index = stores[0];
            let addr = c.move_store(index)?;
            log.note(format!("kill -9 store {index}, restarted at {addr}"));
            hold_for(hold, stop).await;
        }
        Nemesis::Pause => {
            let kind = if rng.random_bool(0.7) {
                ProcKind::Store
            } else {
                ProcKind::Directory
            };
            let all = c.indexes(kind);
            let index = all[rng.random_range(0..all.len())];
            c.signal_pause(kind, index, true)?;
            log.note(format!("SIGSTOP {kind:?} {index}"));
            hold_for(hold, stop).await;
            c.signal_pause(kind, index, false)?;
            log.note(format!("SIGCONT {kind:?} {index}"));
        }
        Nemesis::PartitionMajority => {
            let cut = stores.len() / 2;
            let minority = stores[..cut].to_vec();
            let majority = stores[cut..].to_vec();
            note_errors(log, c.partition(&[majority.clone(), minority.clone()]));
            log.note(format!("partition stores {majority:?} | {minority:?}"));
            hold_for(hold, stop).await;
        }
        Nemesis::PartitionBridge => {
            let bridge = stores[0];
            let rest = &stores[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            note_errors(log, c.partition(&[a.to_vec(), b.to_vec()]));
            log.note(format!(
                "partition stores {a:?} | {b:?}, bridged by store {bridge}"
            ));
            hold_for(hold, stop).await;
        }
        Nemesis::IsolateLeader => {
            let index = random_leader_store(c, rng).await?;
            let others: Vec<usize> = stores.iter().copied().filter(|&s| s != index).collect();
            note_errors(log, c.partition(&[vec![index], others]));
            log.note(format!("isolate store {index} (a region leader)"));
            hold_for(hold, stop).await;
        }
        Nemesis::TransferStorm => {
            log.note("leader-transfer storm");
            let until = Instant::now() + hold;
            let mut transfers = 0;
            while Instant::now() < until && !*stop.borrow() {
                let regions = c.regions().await?;
                if let Some(r) = regions.get(rng.random_range(0..regions.len().max(1))) {
                    let region = r.region.clone().unwrap_or_default();
                    if let Some(p) = region
                        .peers
                        .get(rng.random_range(0..region.peers.len().max(1)))
                    {
                        // Refusals (an operator already running) are part of the storm.
                        if c.transfer_leader(region.id, p.store_id).await.is_ok() {
                            transfers += 1;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            log.note(format!("storm over: {transfers} transfers requested"));
        }
        Nemesis::DiskFull => {
            let n = if rng.random_bool(0.5) {
                1
            } else {
                stores.len() / 2 + 1
            };
            let full = &stores[..n];
            for &index in full {
                c.fill_disk(index, Some((LOW_SPACE_MIB / 2) << 20))?;
            }
            log.note(format!("fill the disks of stores {full:?}"));
            hold_for(hold, stop).await;
            for &index in full {
                c.fill_disk(index, None)?;
            }
            log.note(format!("free the disks of stores {full:?}"));
        }
        Nemesis::DiskStall => {
            let index = stores[0];
            let ms = rng.random_range(500..=5000);
            c.arm_failpoint(index, "raft_before_persist", &format!("sleep({ms})"))?;
            log.note(format!("every Raft write of store {index} takes {ms} ms"));
            hold_for(hold, stop).await;
            c.arm_failpoint(index, "raft_before_persist", "off")?;
            log.note(format!("store {index}'s disk is fast again"));
        }
        Nemesis::SplitMove => {
            let regions = c.regions().await?;
            if regions.is_empty() {
                anyhow::bail!("no regions");
            }
            let r = regions[rng.random_range(0..regions.len())]
                .region
                .clone()
                .unwrap_or_default();
            match c.split(r.id).await {
                Ok(()) => log.note(format!("split region {}", r.id)),
                Err(e) => log.note(format!("split region {} refused: {e:#}", r.id)),
            }
            let r = regions[rng.random_range(0..regions.len())]
                .region
                .clone()
                .unwrap_or_default();
            let on: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
            let free: Vec<u64> = stores
                .iter()
                .map(|&i| c.store_id(i))
                .filter(|id| !on.contains(id))
                .collect();
            if let (Some(&from), Some(&to)) = (on.first(), free.first()) {
                match c.move_region(r.id, from, to).await {
                    Ok(()) => log.note(format!("move region {} from store {from} to {to}", r.id)),
                    Err(e) => log.note(format!("move region {} refused: {e:#}", r.id)),
                }
            }
            hold_for(hold, stop).await;
        }
        Nemesis::Merge => {
            split_and_merge(c, rng, log).await?;
            hold_for(hold, stop).await;
        }
        Nemesis::PartitionLinks => {
            let mut hosts = c.hosts();
            hosts.shuffle(rng);
            let cut = rng.random_range(1..=hosts.len() / 2);
            let (a, b) = hosts.split_at(cut);
            c.cut_links(a, b)?;
            log.note(format!("cut every link between {a:?} and {b:?}"));
            hold_for(hold, stop).await;
        }
        Nemesis::IsolateFromDirectory => {
            let store = c.host(ProcKind::Store, stores[0]);
            let directories: Vec<String> = c
                .indexes(ProcKind::Directory)
                .into_iter()
                .map(|i| c.host(ProcKind::Directory, i))
                .collect();
            c.cut_links(std::slice::from_ref(&store), &directories)?;
            log.note(format!("cut {store} from every directory member"));
            hold_for(hold, stop).await;
        }
        Nemesis::RouterStoreCut => {
            let router = random_router(c, rng)?;
            let store = c.host(ProcKind::Store, random_leader_store(c, rng).await?);
            c.cut_links(std::slice::from_ref(&router), std::slice::from_ref(&store))?;
            log.note(format!("cut {router} from {store} (a region leader's)"));
            hold_for(hold, stop).await;
        }
        Nemesis::ClientRouterCut => {
            let router = random_router(c, rng)?;
            c.cut_links(&[HARNESS.to_string()], std::slice::from_ref(&router))?;
            log.note(format!("cut the clients from {router}"));
            hold_for(hold, stop).await;
        }
        Nemesis::Delay | Nemesis::Duplicate | Nemesis::Reorder => {
            degrade::message_fault(c, nemesis, hold, rng, log, stop).await?;
        }
        Nemesis::ClockSkew => {
            degrade::clock_skew(c, hold, spec.unsafe_clock_rate, rng, log, stop).await?;
        }
    }
    Ok(())
}

/// The index of the store leading a random region (as the directory
/// knows its leaders).
pub(crate) async fn random_leader_store(
    c: &NemesisCluster,
    rng: &mut StdRng,
) -> anyhow::Result<usize> {
    let leaders: Vec<u64> = c
        .regions()
        .await?
        .iter()
        .filter_map(|r| r.leader.as_ref().map(|l| l.store_id))
        .collect();
    let Some(&leader) = leaders.get(rng.random_range(0..leaders.len().max(1))) else {
        anyhow::bail!("no region has a known leader");
    };
    c.store_index(leader)
        .ok_or_else(|| anyhow::anyhow!("leader store {leader} unknown"))
}

/// A random router's network host.
pub(crate) fn random_router(c: &NemesisCluster, rng: &mut StdRng) -> anyhow::Result<String> {
    let routers = c.indexes(ProcKind::Router);
    anyhow::ensure!(!routers.is_empty(), "the cluster has no router");
    Ok(c.host(
        ProcKind::Router,
        routers[rng.random_range(0..routers.len())],
    ))
}

/// Splits a random region, then merges a random region into a neighbour
/// of the same keyspace (either side), and holds.
async fn split_and_merge(
    c: &NemesisCluster,
    rng: &mut impl rand::Rng,
    log: &mut Log,
) -> anyhow::Result<()> {
    let regions = c.regions().await?;
    if let Some(r) = regions.get(rng.random_range(0..regions.len().max(1))) {
        let id = r.region.as_ref().map(|r| r.id).unwrap_or_default();
        match c.split(id).await {
            Ok(()) => log.note(format!("split region {id} (to merge later)")),
            Err(e) => log.note(format!("split region {id} refused: {e:#}")),
        }
    }
    // Neighbours in key order; the directory refuses pairs across a
    // keyspace boundary (noted, not an error).
    let regions: Vec<_> = c
        .regions()
        .await?
        .into_iter()
        .filter_map(|r| r.region)
        .collect();
    if regions.len() < 2 {
        log.note("nothing to merge: one region");
        return Ok(());
    }
    let i = rng.random_range(0..regions.len() - 1);
    let (left, right) = (&regions[i], &regions[i + 1]);
    let (source, target) = if rng.random_bool(0.5) {
        (left.id, right.id)
    } else {
        (right.id, left.id)
    };
    match c.merge(source, target).await {
        Ok(()) => log.note(format!("merge region {source} into {target}")),
        Err(e) => log.note(format!(
            "merge of region {source} into {target} refused: {e:#}"
        )),
    }
    Ok(())
}

fn note_errors(log: &mut Log, errors: Vec<String>) {
    for e in errors {
        log.note(format!("fault endpoint: {e}"));
    }
}
