//! [`ReadConsistency`]: which replica may serve a read, chosen per request
//! by the router's and the SDK's callers.
//!
//! - [`ReadConsistency::Linearizable`] (the default): the region's leader
//!   serves it, from its lease or after a ReadIndex round. The read sees
//!   every write acknowledged before it began.
//! - [`ReadConsistency::Follower`]: any voter serves it, as a follower
//!   read: the replica asks the leader for its commit index (a ReadIndex
//!   round trip) and answers once it has applied that far. Just as
//!   linearizable, at the cost of that round trip; it spreads reads over
//!   every replica instead of the leader alone (a hot region's reads, a
//!   replica in the reader's zone). The routing library sends these to the
//!   region's voters in turn, leader included, whatever it knows of the
//!   leader.
//!
//! Reads served from a follower's own state without asking the leader
//! (stale reads, bounded by an age) are not offered.

use tessera_proto::routerpb;

use crate::reaction::SendPolicy;
use crate::{Error, Result};

/// Which replica may serve a read; see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReadConsistency {
    /// The leader: linearizable.
    #[default]
    Linearizable,
    /// Any voter, after a ReadIndex round trip to the leader:
    /// linearizable.
    Follower,
}

impl ReadConsistency {
    /// How a read of this consistency is sent.
    pub(crate) fn policy(self) -> SendPolicy {
        match self {
            ReadConsistency::Linearizable => SendPolicy::Resendable,
            ReadConsistency::Follower => SendPolicy::AnyVoter,
        }
    }

    /// The consistency a router request names (`routerpb::ReadConsistency`
    /// as sent); a value this version does not know is bad input.
    pub fn from_wire(value: i32) -> Result<Self> {
        match routerpb::ReadConsistency::try_from(value) {
            Ok(routerpb::ReadConsistency::Linearizable) => Ok(ReadConsistency::Linearizable),
            Ok(routerpb::ReadConsistency::Follower) => Ok(ReadConsistency::Follower),
            Err(_) => Err(Error::InvalidArgument(format!(
                "read consistency {value} is unknown (0: linearizable, 1: follower)"
            ))),
        }
    }

    /// As a router request carries it.
    pub fn to_wire(self) -> i32 {
        match self {
            ReadConsistency::Linearizable => routerpb::ReadConsistency::Linearizable as i32,
            ReadConsistency::Follower => routerpb::ReadConsistency::Follower as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_round_trip_and_unknown_ones_are_refused() {
        for c in [ReadConsistency::Linearizable, ReadConsistency::Follower] {
            assert_eq!(ReadConsistency::from_wire(c.to_wire()).unwrap(), c);
        }
        assert_eq!(
            ReadConsistency::from_wire(0).unwrap(),
            ReadConsistency::default()
        );
        for bad in [2, -1, i32::MAX] {
            assert!(matches!(
                ReadConsistency::from_wire(bad),
                Err(Error::InvalidArgument(_))
            ));
        }
    }
}
