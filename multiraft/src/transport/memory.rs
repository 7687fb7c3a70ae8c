//! An in-process network of stores for tests: messages go straight into the
//! destination poller's mailbox, through a chain of filters that can drop or
//! delay them. Never used by a binary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use raft::eraftpb::MessageType;
use tessera_proto::raft_serverpb::RaftMessage;

use super::{message_type, Feedback, FeedbackFn, OutgoingSnapshot, Transport};
use crate::snapshot::{receive, SnapManager};
use crate::{RegionId, StoreId};

/// What a filter does to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterAction {
    Pass,
    Drop,
    Delay(Duration),
}

/// Decides the fate of a message from `from` to `to`.
pub trait Filter: Send + Sync {
    fn action(&self, from: StoreId, to: StoreId, msg: &RaftMessage) -> FilterAction;
}

/// A filter that matches by stores, regions and message types (an empty
/// set matches everything) and applies one action to what matches.
#[derive(Clone, Debug)]
pub struct MessageFilter {
    pub from_stores: Vec<StoreId>,
    pub to_stores: Vec<StoreId>,
    pub regions: Vec<RegionId>,
    pub msg_types: Vec<MessageType>,
    pub action: FilterAction,
}

impl MessageFilter {
    pub fn new(action: FilterAction) -> Self {
        MessageFilter {
            from_stores: vec![],
            to_stores: vec![],
            regions: vec![],
            msg_types: vec![],
            action,
        }
    }

    /// Drops everything to and from `store`.
    pub fn isolate(store: StoreId) -> Vec<Self> {
        vec![
            MessageFilter {
                from_stores: vec![store],
                ..Self::new(FilterAction::Drop)
            },
            MessageFilter {
                to_stores: vec![store],
                ..Self::new(FilterAction::Drop)
            },
        ]
    }

    /// Drops everything between the two groups of stores, both ways.
    pub fn partition(a: &[StoreId], b: &[StoreId]) -> Vec<Self> {
        vec![
            MessageFilter {
                from_stores: a.to_vec(),
                to_stores: b.to_vec(),
                ..Self::new(FilterAction::Drop)
            },
            MessageFilter {
                from_stores: b.to_vec(),
                to_stores: a.to_vec(),
                ..Self::new(FilterAction::Drop)
            },
        ]
    }

    fn matches(&self, from: StoreId, to: StoreId, msg: &RaftMessage) -> bool {
        (self.from_stores.is_empty() || self.from_stores.contains(&from))
            && (self.to_stores.is_empty() || self.to_stores.contains(&to))
            && (self.regions.is_empty() || self.regions.contains(&msg.region_id))
            && (self.msg_types.is_empty()
                || message_type(msg).is_some_and(|t| self.msg_types.contains(&t)))
    }
}

impl Filter for MessageFilter {
    fn action(&self, from: StoreId, to: StoreId, msg: &RaftMessage) -> FilterAction {
        if self.matches(from, to, msg) {
            self.action
        } else {
            FilterAction::Pass
        }
    }
}

type Inbox = Arc<dyn Fn(RaftMessage) + Send + Sync>;

#[derive(Default)]
struct Inner {
    inboxes: HashMap<StoreId, Inbox>,
    feedback: HashMap<StoreId, FeedbackFn>,
    snap_mgrs: HashMap<StoreId, SnapManager>,
    filters: Vec<(u64, Arc<dyn Filter>)>,
    next_filter_id: u64,
}

/// The shared network; clone it into every store's transport.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<RwLock<Inner>>,
}

impl MemoryNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects a store: messages to it go to `inbox`; `feedback` learns of
    /// unreachable stores and of its snapshots' fate; snapshots sent to it
    /// land in `snap_mgr`'s directory.
    pub fn register(
        &self,
        store_id: StoreId,
        inbox: impl Fn(RaftMessage) + Send + Sync + 'static,
        feedback: FeedbackFn,
        snap_mgr: SnapManager,
    ) {
        let mut inner = self.inner.write();
        inner.inboxes.insert(store_id, Arc::new(inbox));
        inner.feedback.insert(store_id, feedback);
        inner.snap_mgrs.insert(store_id, snap_mgr);
    }

    /// Disconnects a store (it stopped): messages to it are lost.
    pub fn unregister(&self, store_id: StoreId) {
        let mut inner = self.inner.write();
        inner.inboxes.remove(&store_id);
        inner.feedback.remove(&store_id);
        inner.snap_mgrs.remove(&store_id);
    }

    /// Adds a filter; returns its id for [`MemoryNetwork::remove_filter`].
    pub fn add_filter(&self, filter: impl Filter + 'static) -> u64 {
        let mut inner = self.inner.write();
        inner.next_filter_id += 1;
        let id = inner.next_filter_id;
        inner.filters.push((id, Arc::new(filter)));
        id
    }

    pub fn remove_filter(&self, id: u64) {
        self.inner.write().filters.retain(|(f, _)| *f != id);
    }

    pub fn clear_filters(&self) {
        self.inner.write().filters.clear();
    }

    /// A transport for `store_id` on this network.
    pub fn transport(&self, store_id: StoreId) -> MemoryTransport {
        MemoryTransport {
            store_id,
            net: self.clone(),
            pending: vec![],
        }
    }

    fn action(&self, from: StoreId, to: StoreId, msg: &RaftMessage) -> FilterAction {
        let inner = self.inner.read();
        let mut action = FilterAction::Pass;
        for (_, f) in &inner.filters {
            match f.action(from, to, msg) {
                FilterAction::Pass => {}
                FilterAction::Drop => return FilterAction::Drop,
                FilterAction::Delay(d) => {
                    action = match action {
                        FilterAction::Delay(prev) => FilterAction::Delay(prev.max(d)),
                        _ => FilterAction::Delay(d),
                    }
                }
            }
        }
        action
    }

    /// Copies a snapshot's files into the receiver's directory and delivers
    /// its message; reports the outcome to the sender.
    fn deliver_snapshot(&self, from: StoreId, to: StoreId, snap: OutgoingSnapshot) {
        let (feedback, target, inbox) = {
            let inner = self.inner.read();
            (
                inner.feedback.get(&from).cloned(),
                inner.snap_mgrs.get(&to).cloned(),
                inner.inboxes.get(&to).cloned(),
            )
        };
        let region_id = snap.msg.region_id;
        let to_peer = snap.msg.to_peer.map(|p| p.id).unwrap_or_default();
        let delivered = match (self.action(from, to, &snap.msg), target, inbox) {
            (FilterAction::Drop, _, _) | (_, None, _) | (_, _, None) => false,
            (_, Some(mgr), Some(inbox)) => {
                let copied = (|| -> crate::Result<()> {
                    let expected = receive::Expected::of(&mgr, &snap.msg)?;
                    let dir = &expected.dir;
                    let _writing = match mgr.begin_receive(dir)? {
                        crate::snapshot::Receive::Write(guard) => guard,
                        crate::snapshot::Receive::Present => return Ok(()),
                    };
                    std::fs::create_dir_all(dir)
                        .map_err(|e| crate::Error::Engine(e.to_string()))?;
                    for f in &snap.files {
                        std::fs::copy(snap.dir.join(&f.name), dir.join(&f.name))
                            .map_err(|e| crate::Error::Engine(e.to_string()))?;
                    }
                    receive::complete(&expected)
                })();
                match copied {
                    Ok(()) => {
                        inbox(snap.msg);
                        true
                    }
                    Err(e) => {
                        tracing::warn!(region_id, error = %e, "snapshot copy failed");
                        false
                    }
                }
            }
        };
        if let Some(feedback) = feedback {
            feedback(Feedback::SnapshotStatus {
                region_id,
                to_peer,
                delivered,
            });
        }
    }

    fn deliver(&self, from: StoreId, to: StoreId, msg: RaftMessage) {
        let action = self.action(from, to, &msg);
        let (inbox, unreachable) = {
            let inner = self.inner.read();
            (
                inner.inboxes.get(&to).cloned(),
                inner.feedback.get(&from).cloned(),
            )
        };
        match (action, inbox) {
            (FilterAction::Drop, _) => {}
            (_, None) => {
                if let Some(report) = unreachable {
                    report(Feedback::Unreachable(to));
                }
            }
            (FilterAction::Pass, Some(inbox)) => inbox(msg),
            (FilterAction::Delay(d), Some(_)) => {
                let net = self.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(d);
                    // Deliver to whoever is registered then.
                    let inbox = net.inner.read().inboxes.get(&to).cloned();
                    if let Some(inbox) = inbox {
                        inbox(msg);
                    }
                });
            }
        }
    }
}

/// One store's end of a [`MemoryNetwork`].
pub struct MemoryTransport {
    store_id: StoreId,
    net: MemoryNetwork,
    pending: Vec<(StoreId, RaftMessage)>,
}

impl Transport for MemoryTransport {
    fn send(&mut self, to_store: StoreId, msg: RaftMessage) {
        self.pending.push((to_store, msg));
    }

    fn send_snapshot(&mut self, to_store: StoreId, snap: OutgoingSnapshot) {
        let net = self.net.clone();
        let from = self.store_id;
        std::thread::spawn(move || net.deliver_snapshot(from, to_store, snap));
    }

    fn flush(&mut self) {
        for (to, msg) in self.pending.drain(..) {
            self.net.deliver(self.store_id, to, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    fn msg(region_id: u64) -> RaftMessage {
        RaftMessage {
            region_id,
            ..Default::default()
        }
    }

    #[test]
    fn filters_drop_by_store_and_region() {
        let net = MemoryNetwork::new();
        let got = Arc::new(Mutex::new(vec![]));
        let dir = tempfile::tempdir().unwrap();
        for store in [1, 2, 3] {
            let got = got.clone();
            net.register(
                store,
                move |m: RaftMessage| got.lock().push((store, m.region_id)),
                Arc::new(|_| {}),
                SnapManager::new(dir.path().join(store.to_string())).unwrap(),
            );
        }
        let mut t1 = net.transport(1);
        let id = net.add_filter(MessageFilter {
            regions: vec![7],
            ..MessageFilter::new(FilterAction::Drop)
        });
        for f in MessageFilter::partition(&[1], &[3]) {
            net.add_filter(f);
        }
        t1.send(2, msg(7));
        t1.send(2, msg(8));
        t1.send(3, msg(8));
        t1.flush();
        assert_eq!(*got.lock(), vec![(2, 8)]);
        net.remove_filter(id);
        t1.send(2, msg(7));
        t1.flush();
        assert_eq!(got.lock().last(), Some(&(2, 7)));
        net.clear_filters();
        t1.send(3, msg(9));
        t1.flush();
        assert_eq!(got.lock().last(), Some(&(3, 9)));
    }

    #[test]
    fn an_unregistered_store_is_reported_unreachable() {
        let net = MemoryNetwork::new();
        let reported = Arc::new(Mutex::new(vec![]));
        let r = reported.clone();
        let dir = tempfile::tempdir().unwrap();
        net.register(
            1,
            |_| {},
            Arc::new(move |f| {
                if let Feedback::Unreachable(s) = f {
                    r.lock().push(s)
                }
            }),
            SnapManager::new(dir.path()).unwrap(),
        );
        let mut t1 = net.transport(1);
        t1.send(5, msg(1));
        t1.flush();
        assert_eq!(*reported.lock(), vec![5]);
    }

    #[test]
    fn delayed_messages_arrive_later() {
        let net = MemoryNetwork::new();
        let got = Arc::new(Mutex::new(0));
        let g = got.clone();
        let dir = tempfile::tempdir().unwrap();
        net.register(
            2,
            move |_| *g.lock() += 1,
            Arc::new(|_| {}),
            SnapManager::new(dir.path()).unwrap(),
        );
        net.add_filter(MessageFilter::new(FilterAction::Delay(
            Duration::from_millis(50),
        )));
        let mut t = net.transport(1);
        t.send(2, msg(1));
        t.flush();
        assert_eq!(*got.lock(), 0);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(*got.lock(), 1);
    }
}
