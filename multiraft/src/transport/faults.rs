//! Network faults injected into the gRPC transport by a test harness.
//!
//! [`NetFaults`] holds two kinds:
//!
//! - **Partitions**: a set of stores this store must not exchange Raft
//!   traffic with. The transport drops outgoing messages and snapshots to
//!   a blocked store, and the `Raft` service drops what arrives from one,
//!   so blocking a store at either end cuts the link both ways — like a
//!   network partition, with no error returned to either side (Raft sees
//!   silence).
//! - **Message faults** ([`MessageFaults`]) on the batches of Raft
//!   messages this store sends to chosen stores: each batch is held back
//!   by a delay plus a random jitter, some are sent twice (the copy a
//!   little later), and some are held back longer so that later batches
//!   overtake them. The transport applies them just before a batch enters
//!   its destination's stream, so on the wire they look like a slow,
//!   duplicating, reordering network between two stores. They act on the
//!   sending side only (set them on both stores for both directions), and
//!   not on snapshots. A TCP stream never duplicates or reorders on its
//!   own, so this is the one place those faults can be made: at the
//!   message level, where a reconnect or a retransmission would make them.
//!
//! Nothing in a production process ever sets a fault: the switch is only
//! reachable through the store's fault endpoints, which exist only in
//! builds with the `failpoints` feature (see `tessera-store`). Without a
//! fault the check is one relaxed atomic load per batch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::StoreId;

#[derive(Clone, Default)]
pub struct NetFaults {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    any: AtomicBool,
    blocked: RwLock<BTreeSet<StoreId>>,
    any_messages: AtomicBool,
    messages: RwLock<BTreeMap<StoreId, MessageFaults>>,
}

/// The longest delay or jitter a message fault may add.
pub const MAX_MESSAGE_DELAY: Duration = Duration::from_secs(10);

/// What happens to the batches sent to one store.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MessageFaults {
    /// Every batch waits this long before it is sent…
    pub delay: Duration,
    /// …plus a uniformly random part of this.
    pub jitter: Duration,
    /// The chance that a batch is sent twice.
    pub duplicate: f64,
    /// The chance that a batch is held back until later ones have gone.
    pub reorder: f64,
}

/// How long a batch that is to be reordered is held back beyond its delay.
const REORDER_HOLD: Duration = Duration::from_millis(40);

impl MessageFaults {
    /// When to send a batch after it is queued, and when to send its copy
    /// if it is duplicated, drawn with `rng`.
    pub fn plan<R: rand::Rng>(&self, rng: &mut R) -> (Duration, Option<Duration>) {
        let mut first = self.delay + self.jitter.mul_f64(rng.random::<f64>());
        if self.reorder > 0.0 && rng.random_bool(self.reorder) {
            first += REORDER_HOLD + (REORDER_HOLD + self.jitter).mul_f64(rng.random::<f64>());
        }
        let copy = (self.duplicate > 0.0 && rng.random_bool(self.duplicate))
            .then(|| first + (REORDER_HOLD + self.jitter).mul_f64(rng.random::<f64>()));
        (first, copy)
    }

    fn is_none(&self) -> bool {
        self.delay.is_zero()
            && self.jitter.is_zero()
            && self.duplicate == 0.0
            && self.reorder == 0.0
    }
}

impl std::fmt::Display for MessageFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "delay={}ms jitter={}ms duplicate={} reorder={}",
            self.delay.as_millis(),
            self.jitter.as_millis(),
            self.duplicate,
            self.reorder
        )
    }
}

/// A message-fault setting: the stores it applies to and what it does.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageFaultSpec {
    pub stores: Vec<StoreId>,
    pub faults: MessageFaults,
}

impl std::str::FromStr for MessageFaultSpec {
    type Err = String;

    /// `stores=2,3 delay=50ms jitter=20ms duplicate=0.1 reorder=0.2`:
    /// `stores` is required, each other field defaults to none.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut stores = None;
        let mut faults = MessageFaults::default();
        for field in s.split_whitespace() {
            let (name, value) = field
                .split_once('=')
                .ok_or_else(|| format!("{field:?} is not name=value"))?;
            match name {
                "stores" => {
                    let ids = value
                        .split(',')
                        .map(|id| {
                            id.parse::<StoreId>()
                                .map_err(|_| format!("{id:?} is not a store id"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    stores = Some(ids);
                }
                "delay" | "jitter" => {
                    let d = value
                        .strip_suffix("ms")
                        .and_then(|ms| ms.parse::<u64>().ok())
                        .map(Duration::from_millis)
                        .filter(|d| *d <= MAX_MESSAGE_DELAY)
                        .ok_or_else(|| {
                            format!(
                                "{name} must be milliseconds like 50ms, at most {} ms, not {value:?}",
                                MAX_MESSAGE_DELAY.as_millis()
                            )
                        })?;
                    if name == "delay" {
                        faults.delay = d;
                    } else {
                        faults.jitter = d;
                    }
                }
                "duplicate" | "reorder" => {
                    let p = value
                        .parse::<f64>()
                        .ok()
                        .filter(|p| (0.0..=1.0).contains(p))
                        .ok_or_else(|| {
                            format!("{name} must be a probability from 0 to 1, not {value:?}")
                        })?;
                    if name == "duplicate" {
                        faults.duplicate = p;
                    } else {
                        faults.reorder = p;
                    }
                }
                other => {
                    return Err(format!(
                        "unknown field {other:?} (stores, delay, jitter, duplicate, reorder)"
                    ))
                }
            }
        }
        let stores = stores
            .filter(|s| !s.is_empty())
            .ok_or("stores=ID,ID… is required")?;
        Ok(MessageFaultSpec { stores, faults })
    }
}

impl NetFaults {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the set of blocked stores (empty heals every partition).
    pub fn set_blocked(&self, stores: impl IntoIterator<Item = StoreId>) {
        let mut blocked = self.inner.blocked.write();
        *blocked = stores.into_iter().collect();
        self.inner.any.store(!blocked.is_empty(), Ordering::SeqCst);
    }

    /// The stores currently blocked, in order.
    pub fn blocked(&self) -> Vec<StoreId> {
        self.inner.blocked.read().iter().copied().collect()
    }

    /// Whether traffic with `store` is cut.
    pub fn is_blocked(&self, store: StoreId) -> bool {
        self.inner.any.load(Ordering::Relaxed) && self.inner.blocked.read().contains(&store)
    }

    /// Sets the message faults of batches to `spec.stores` (replacing
    /// what they had; all-zero faults clear them).
    pub fn set_message_faults(&self, spec: &MessageFaultSpec) {
        let mut map = self.inner.messages.write();
        for id in &spec.stores {
            if spec.faults.is_none() {
                map.remove(id);
            } else {
                map.insert(*id, spec.faults);
            }
        }
        self.inner
            .any_messages
            .store(!map.is_empty(), Ordering::SeqCst);
    }

    /// Clears every message fault.
    pub fn clear_message_faults(&self) {
        self.inner.messages.write().clear();
        self.inner.any_messages.store(false, Ordering::SeqCst);
    }

    /// The message faults set, by destination store.
    pub fn message_faults(&self) -> Vec<(StoreId, MessageFaults)> {
        let map = self.inner.messages.read();
        map.iter().map(|(id, f)| (*id, *f)).collect()
    }

    /// The message faults on batches to `store`, if any.
    pub fn message_faults_to(&self, store: StoreId) -> Option<MessageFaults> {
        if !self.inner.any_messages.load(Ordering::Relaxed) {
            return None;
        }
        self.inner.messages.read().get(&store).copied()
    }
}

impl std::fmt::Debug for NetFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetFaults")
            .field("blocked", &self.blocked())
            .field("messages", &self.message_faults())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;

    use super::{MessageFaultSpec, MessageFaults, NetFaults};

    #[test]
    fn message_faults_parse_and_refuse_bad_input() {
        let spec: MessageFaultSpec = "stores=2,3 delay=50ms jitter=20ms duplicate=0.1 reorder=0.2"
            .parse()
            .unwrap();
        assert_eq!(spec.stores, vec![2, 3]);
        assert_eq!(spec.faults.delay, Duration::from_millis(50));
        assert_eq!(spec.faults.jitter, Duration::from_millis(20));
        assert_eq!((spec.faults.duplicate, spec.faults.reorder), (0.1, 0.2));
        for bad in [
            "",
            "delay=50ms",
            "stores=",
            "stores=x",
            "stores=2 delay=50",
            "stores=2 delay=10001ms",
            "stores=2 duplicate=1.5",
            "stores=2 reorder=-0.1",
            "stores=2 reorder=NaN",
            "stores=2 loss=0.1",
            "stores=2 delay",
        ] {
            assert!(bad.parse::<MessageFaultSpec>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn message_faults_are_per_destination_and_clear() {
        let f = NetFaults::new();
        assert_eq!(f.message_faults_to(2), None);
        let spec: MessageFaultSpec = "stores=2 delay=5ms".parse().unwrap();
        f.set_message_faults(&spec);
        assert_eq!(
            f.message_faults_to(2).unwrap().delay,
            Duration::from_millis(5)
        );
        assert_eq!(f.message_faults_to(3), None);
        f.set_message_faults(&"stores=2".parse().unwrap());
        assert_eq!(
            f.message_faults_to(2),
            None,
            "all-zero faults clear a store's"
        );
        f.set_message_faults(&spec);
        f.clear_message_faults();
        assert!(f.message_faults().is_empty());
    }

    #[test]
    fn plans_delay_duplicate_and_hold_back() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let f = MessageFaults {
            delay: Duration::from_millis(30),
            jitter: Duration::from_millis(10),
            duplicate: 0.5,
            reorder: 0.5,
        };
        let (mut dups, mut held) = (0, 0);
        for _ in 0..1000 {
            let (first, copy) = f.plan(&mut rng);
            assert!(first >= f.delay);
            if first > f.delay + f.jitter {
                held += 1;
            }
            if let Some(c) = copy {
                assert!(c >= first, "a copy goes after its original");
                dups += 1;
            }
        }
        assert!((400..600).contains(&dups), "{dups} duplicates of 1000");
        assert!((350..650).contains(&held), "{held} held back of 1000");
        let none = MessageFaults::default();
        assert_eq!(none.plan(&mut rng), (Duration::ZERO, None));
    }

    #[test]
    fn blocking_is_per_store_and_healing_clears_it() {
        let f = NetFaults::new();
        assert!(!f.is_blocked(2));
        let shared = f.clone();
        f.set_blocked([2, 3]);
        assert!(shared.is_blocked(2) && shared.is_blocked(3) && !shared.is_blocked(4));
        assert_eq!(shared.blocked(), vec![2, 3]);
        f.set_blocked([]);
        assert!(!shared.is_blocked(2));
        assert!(shared.blocked().is_empty());
    }
}
