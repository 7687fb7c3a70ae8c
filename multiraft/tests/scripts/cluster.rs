//! A cluster of pollers driven step by step on the test's thread.
//!
//! Every store is a real [`Poller`] (opened, not spawned) over its own
//! `MemoryEngine`, with `RaftConfig::manual_ticks`: election timeouts are
//! pinned, time moves only with `PollerMsg::Tick`, and a round runs only
//! when the script asks. Messages between stores do not go anywhere by
//! themselves: the transport puts them in one queue, and the script
//! delivers, drops or holds them. The same script therefore produces the
//! same messages, in the same order, on every run.
//!
//! The state machine is a toy key-value map with two commands, `put K V`
//! and `split K1[,K2...] REGION` (the new regions are numbered from
//! REGION, one per key; their peers are `REGION*10 + store`, as are the
//! first region's: peer 12 is region 1's peer on store 2).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_multiraft::engine::{Cf, Engine, MemoryEngine, WriteBatch};
use tessera_multiraft::mailbox::{EpochCheck, Mailbox, PollerMsg, ReadPolicy, WriteClass};
use tessera_multiraft::poller::{self, PollerSpec};
use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::transport::OutgoingSnapshot;
use tessera_multiraft::{region, ApplyContext, Poller, RaftConfig, StateMachine, Transport};
use tessera_proto::metapb::{Peer, Region, RegionEpoch};
use tessera_proto::raft_serverpb::RaftMessage;

pub type Error = Box<dyn std::error::Error>;

/// Lines the callbacks write as requests finish, printed by the command
/// that drove them.
pub type Events = Arc<Mutex<Vec<String>>>;

/// A message on the wire: from store, to store, the message.
pub type InFlight = (u64, u64, RaftMessage);

/// The toy state machine.
pub struct Kv;

impl StateMachine for Kv {
    type Output = String;

    fn apply(&mut self, cx: &mut ApplyContext<'_>, data: &[u8]) -> String {
        let text = String::from_utf8_lossy(data).to_string();
        let words: Vec<&str> = text.split(' ').collect();
        match words.as_slice() {
            ["put", key, value] => {
                cx.batch().put(Cf::Default, *key, *value);
                format!("ok at index {}", cx.index())
            }
            ["split", keys, id] => {
                let Ok(id) = id.parse::<u64>() else {
                    return format!("bad region id {id}");
                };
                let region = cx.region().clone();
                let keys: Vec<Vec<u8>> = keys.split(',').map(|k| k.as_bytes().to_vec()).collect();
                if let Err(e) = tessera_proto::region::check_split_keys(&region, &keys) {
                    return format!("refused: {e}");
                }
                let old = region::epoch(&region);
                let epoch = RegionEpoch::new(old.conf_ver, old.version + 1);
                let mut derived = region.clone();
                derived.end_key = keys[0].clone();
                derived.region_epoch = Some(epoch);
                let new = (0..keys.len())
                    .map(|i| {
                        let new_id = id + i as u64;
                        Region {
                            id: new_id,
                            start_key: keys[i].clone(),
                            end_key: keys.get(i + 1).unwrap_or(&region.end_key).clone(),
                            region_epoch: Some(epoch),
                            peers: region
                                .peers
                                .iter()
                                .map(|p| peer(new_id, p.store_id))
                                .collect(),
                        }
                    })
                    .collect();
                cx.split(derived, new);
                format!("split at index {}", cx.index())
            }
            _ => format!("unknown command {text:?}"),
        }
    }

    fn compact_log_command(&self, _region: &Region, _index: u64, _term: u64) -> Vec<u8> {
        // Log GC is off in scripts (log_gc_tick_interval = 0).
        b"noop".to_vec()
    }
}

/// Region `region`'s peer on `store`.
pub fn peer(region: u64, store: u64) -> Peer {
    Peer {
        id: region * 10 + store,
        store_id: store,
        ..Default::default()
    }
}

/// Queues what a store sends, for the script to deliver.
struct QueueTransport {
    from: u64,
    queue: Arc<Mutex<VecDeque<InFlight>>>,
    events: Events,
}

impl Transport for QueueTransport {
    fn send(&mut self, to_store: u64, msg: RaftMessage) {
        self.queue
            .lock()
            .unwrap()
            .push_back((self.from, to_store, msg));
    }

    fn send_snapshot(&mut self, to_store: u64, snap: OutgoingSnapshot) {
        // No script needs one; say so rather than lose it silently.
        self.events.lock().unwrap().push(format!(
            "s{}→s{to_store} r{} snapshot (scripts do not deliver snapshots)",
            self.from, snap.msg.region_id
        ));
    }

    fn flush(&mut self) {}
}

pub struct Store {
    pub poller: Poller<Kv>,
    pub mailbox: Mailbox<String>,
    pub engine: Arc<MemoryEngine>,
}

pub struct Cluster {
    pub stores: BTreeMap<u64, Store>,
    pub queue: Arc<Mutex<VecDeque<InFlight>>>,
    pub events: Events,
    /// Stores stopped by `kill`.
    pub killed: std::collections::BTreeSet<u64>,
    _dir: tempfile::TempDir,
}

/// The configuration every store runs: ticks only when told, an election
/// timeout of exactly 10 ticks, a heartbeat every 2, a lease of 8 ticks
/// (0.8 of the election timeout), no log GC; with `hibernate`, a leader
/// asks to hibernate after 4 idle ticks and a follower wakes after 6 ticks
/// without hearing from its leader's store (otherwise no region
/// hibernates).
pub fn config(hibernate: bool) -> RaftConfig {
    RaftConfig {
        tick_interval: Duration::from_millis(100),
        election_tick: 10,
        heartbeat_tick: 2,
        manual_ticks: true,
        log_gc_tick_interval: 0,
        hibernate_regions: hibernate,
        hibernate_after_ticks: 4,
        store_liveness_ticks: 6,
        ..RaftConfig::default()
    }
}

impl Cluster {
    /// `stores` stores holding `regions` regions, each on every store
    /// (hibernating when idle if `hibernate`):
    /// region 1 starts at the empty key, each next one at the next letter
    /// from `m` (`m`, `n`, ...), the last one ends at the end of the keys.
    pub fn new(stores: u64, regions: u64, hibernate: bool) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        let events = Events::default();
        let bounds: Vec<Vec<u8>> = (0..regions.saturating_sub(1))
            .map(|i| vec![b'm' + i as u8])
            .collect();
        let mut layout = vec![];
        for id in 1..=regions {
            let i = id as usize - 1;
            layout.push(Region {
                id,
                start_key: if i == 0 {
                    vec![]
                } else {
                    bounds[i - 1].clone()
                },
                end_key: bounds.get(i).cloned().unwrap_or_default(),
                region_epoch: Some(RegionEpoch::new(1, 1)),
                peers: (1..=stores).map(|s| peer(id, s)).collect(),
            });
        }
        let mut out = BTreeMap::new();
        for store_id in 1..=stores {
            let engine = Arc::new(MemoryEngine::new());
            let mut wb = WriteBatch::default();
            for r in &layout {
                region::write_initial_state(r, &mut wb);
            }
            engine.write(&wb, true)?;
            let (mailbox, inbox) = poller::mailbox::<String>(4096);
            let poller = Poller::open(
                PollerSpec {
                    store_id,
                    config: config(hibernate),
                    engine: engine.clone(),
                    snap_mgr: SnapManager::new(dir.path().join(format!("snap-{store_id}")))?,
                    state_machine: Kv,
                    transport: Box::new(QueueTransport {
                        from: store_id,
                        queue: queue.clone(),
                        events: events.clone(),
                    }),
                    inbox,
                    removal_reports: None,
                    local_reads: None,
                },
                mailbox.clone(),
            )?;
            out.insert(
                store_id,
                Store {
                    poller,
                    mailbox,
                    engine,
                },
            );
        }
        Ok(Cluster {
            stores: out,
            queue,
            events,
            killed: Default::default(),
            _dir: dir,
        })
    }

    pub fn store(&mut self, id: u64) -> Result<&mut Store, Error> {
        self.stores
            .get_mut(&id)
            .ok_or_else(|| format!("no store {id}").into())
    }

    pub fn send(&mut self, store: u64, msg: PollerMsg<String>) -> Result<(), Error> {
        self.store(store)?.mailbox.send(msg)?;
        Ok(())
    }

    /// Proposes `command` to `region` on `store`; its outcome becomes an
    /// event once it applies (or fails).
    pub fn propose(&mut self, store: u64, region: u64, command: String) -> Result<(), Error> {
        let events = self.events.clone();
        let label = format!("s{store} r{region} {command}");
        self.send(
            store,
            PollerMsg::Propose {
                region_id: region,
                epoch: EpochCheck::default(),
                data: command.into_bytes(),
                class: WriteClass::User,
                cb: Box::new(move |r| {
                    let line = match r {
                        Ok(out) => format!("{label}: {out}"),
                        Err(e) => format!("{label}: error: {e}"),
                    };
                    events.lock().unwrap().push(line);
                }),
            },
        )
    }

    /// Reads `key` from `region` on `store` with `policy`; the value (or
    /// the error) becomes an event once the read is served.
    pub fn read(
        &mut self,
        store: u64,
        region: u64,
        key: String,
        policy: ReadPolicy,
    ) -> Result<(), Error> {
        let events = self.events.clone();
        let engine = self.store(store)?.engine.clone();
        let label = format!("s{store} r{region} read {key}");
        self.send(
            store,
            PollerMsg::Read {
                region_id: region,
                epoch: EpochCheck::default(),
                policy,
                cb: Box::new(move |r| {
                    let line = match r {
                        Ok(_) => match engine.get(Cf::Default, key.as_bytes()) {
                            Ok(Some(v)) => format!("{label}: {}", String::from_utf8_lossy(&v)),
                            Ok(None) => format!("{label}: not found"),
                            Err(e) => format!("{label}: engine error: {e}"),
                        },
                        Err(e) => format!("{label}: error: {e}"),
                    };
                    events.lock().unwrap().push(line);
                }),
            },
        )
    }

    /// Takes the messages in flight that match (`None` matches any).
    pub fn take_messages(
        &mut self,
        from: Option<u64>,
        to: Option<u64>,
        region: Option<u64>,
    ) -> Vec<InFlight> {
        let mut queue = self.queue.lock().unwrap();
        let (taken, kept): (Vec<_>, Vec<_>) = queue.drain(..).partition(|(f, t, m)| {
            from.is_none_or(|x| x == *f)
                && to.is_none_or(|x| x == *t)
                && region.is_none_or(|x| x == m.region_id)
        });
        queue.extend(kept);
        taken
    }

    /// Hands a message to its destination store's mailbox; false when that
    /// store was killed (the message is lost).
    pub fn deliver(&mut self, (_, to, msg): InFlight) -> Result<bool, Error> {
        if self.killed.contains(&to) {
            return Ok(false);
        }
        if !self.store(to)?.mailbox.send_raft_message(msg) {
            return Err(format!("store {to}'s mailbox refused a message").into());
        }
        Ok(true)
    }

    /// Stops store `id` for good: its poller is dropped, and messages to it
    /// are lost from now on.
    pub fn kill(&mut self, id: u64) -> Result<(), Error> {
        self.stores
            .remove(&id)
            .ok_or_else(|| format!("no store {id}"))?;
        self.killed.insert(id);
        Ok(())
    }

    pub fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}
