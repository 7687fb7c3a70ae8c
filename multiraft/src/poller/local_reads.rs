//! What the poller publishes for lease reads served off its thread (the
//! state and the readers' side are in `crate::local_read`, with the
//! argument for each point below):
//! - every peer with a Ready, before the round's first message leaves, and
//!   again after the leader's own persistence moved its commit index,
//!   before the messages that carry it leave;
//! - every touched peer at the end of the round, once the applied state is
//!   written (the failpoint `local_read_before_publish` pauses just before,
//!   after the round's writes were acknowledged);
//! - a region whose epoch an apply changed (split, membership change) or
//!   that is reloaded is invalidated at once; one that takes a snapshot is
//!   marked replacing from its staging until its data is in place; a peer
//!   being destroyed is removed before its data is deleted; a leader about
//!   to step a message of a higher term, or that stepped down on a tick,
//!   ends its lease; an engine failure closes everything.
//!
//! Nothing is published without a [`LocalReaders`] (the directory, tests)
//! or under manual ticks (the poller's clock is then logical).

use crate::config::RaftConfig;
use crate::local_read::LocalReaders;
use crate::peer::Peer;
use crate::RegionId;

pub(super) struct Publisher(Option<LocalReaders>);

impl Publisher {
    pub fn new(readers: Option<LocalReaders>, cfg: &RaftConfig) -> Self {
        Publisher(readers.filter(|_| !cfg.manual_ticks))
    }

    pub fn publish<O: Send + 'static>(&self, peer: &Peer<O>) {
        if let Some(r) = &self.0 {
            if peer.is_initialized() {
                r.publish(peer.lease_view(), peer.region());
            }
        }
    }

    pub fn invalidate(&self, region_id: RegionId) {
        if let Some(r) = &self.0 {
            r.invalidate(region_id);
        }
    }

    pub fn begin_replace(&self, region_id: RegionId) {
        if let Some(r) = &self.0 {
            r.begin_replace(region_id);
        }
    }

    pub fn end_replace<O: Send + 'static>(&self, peer: &Peer<O>) {
        if let Some(r) = &self.0 {
            r.end_replace(peer.lease_view(), peer.region());
        }
    }

    pub fn end_lease(&self, region_id: RegionId) {
        if let Some(r) = &self.0 {
            r.end_lease(region_id);
        }
    }

    pub fn remove(&self, region_id: RegionId) {
        if let Some(r) = &self.0 {
            r.remove(region_id);
        }
    }

    pub fn close_all(&self) {
        if let Some(r) = &self.0 {
            r.close_all();
        }
    }
}
