//! The scheduling rules, one module each, in the order a round applies
//! them (see the scheduler's module docs for what each decides):
//! [`tombstone`], [`repair`], [`zone`], [`keyspace`], [`placement`],
//! [`split`], [`evict_leader`], [`merge`], [`hot_leader`], [`hot_region`],
//! [`balance_leader`], [`balance_region`].

pub(super) mod balance_leader;
pub(super) mod balance_region;
pub(super) mod evict_leader;
pub(super) mod hot_leader;
pub(super) mod hot_region;
pub(super) mod keyspace;
pub(super) mod merge;
pub(super) mod placement;
pub(super) mod repair;
pub(super) mod split;
pub(super) mod tombstone;
pub(super) mod zone;
