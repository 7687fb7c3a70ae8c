//! Network partitions injected into the gRPC transport by a test harness.
//!
//! [`NetFaults`] is a set of stores this store must not exchange Raft
//! traffic with. The transport drops outgoing messages and snapshots to a
//! blocked store, and the `Raft` service drops what arrives from one, so
//! blocking a store at either end cuts the link both ways — like a network
//! partition, with no error returned to either side (Raft sees silence).
//!
//! Nothing in a production process ever blocks a store: the switch is only
//! reachable through the store's fault endpoints, which exist only in
//! builds with the `failpoints` feature (see `tessera-store`). Without a
//! blocked store the check is one relaxed atomic load per batch.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
}

impl std::fmt::Debug for NetFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetFaults")
            .field("blocked", &self.blocked())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::NetFaults;

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
