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
//! - [`ReadConsistency::Stale`]: any voter serves it from its own state,
//!   without a round trip, if that state is recent enough (bounded
//!   staleness). A replica remembers the commit index each of its
//!   ReadIndex rounds brought back and when (its monotonic clock) it
//!   *sent* that round: every write acknowledged before that instant is at
//!   or below that index. A stale read with bound `max_age` is served at
//!   once if the replica has applied such an index learned at most
//!   `max_age` ago (or holds the leader lease); otherwise it is served as a
//!   follower read, whose round refreshes what the replica knows — under
//!   steady stale reads, about one round per `max_age` per replica.
//!
//! **What a stale read guarantees**: it sees every write acknowledged at
//! least `max_age` before the read was sent (precisely: before the serving
//! replica took it up, on that store's monotonic clock; a client's clock
//! that runs at another rate widens the bound by the difference — on one
//! host all processes read one clock), and a state the region really had
//! (a prefix of its log), so never a value that was not written. It may miss writes acknowledged more
//! recently, and two stale reads, even of one client, may see the region
//! go back in time (served by different replicas). Writes are unaffected.

use std::time::Duration;

use tessera_proto::kvpb::Context;
use tessera_proto::limits::{validate_staleness_ms, MAX_STALENESS_MS};
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
    /// Any voter, from its own state if that is at most `max_age` old:
    /// bounded staleness (1 ms to an hour, whole milliseconds).
    Stale { max_age: Duration },
}

impl ReadConsistency {
    /// How a read of this consistency is sent.
    pub(crate) fn policy(self) -> SendPolicy {
        match self {
            ReadConsistency::Linearizable => SendPolicy::Resendable,
            ReadConsistency::Follower | ReadConsistency::Stale { .. } => SendPolicy::AnyVoter,
        }
    }

    /// Refuses a stale bound outside 1 ms to an hour (as bad input): a
    /// bound under a millisecond would otherwise be sent as "not stale".
    pub fn validate(self) -> Result<Self> {
        if let ReadConsistency::Stale { max_age } = self {
            let ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
            validate_staleness_ms(ms).map_err(Error::InvalidArgument)?;
        }
        Ok(self)
    }

    /// The store request context `ctx` for a read of this consistency.
    pub(crate) fn stamp(self, mut ctx: Context) -> Context {
        if let ReadConsistency::Stale { max_age } = self {
            ctx.stale_max_age_ms = stale_ms(max_age);
        }
        ctx
    }

    /// The consistency a router request names (`routerpb::ReadConsistency`
    /// and `stale_max_age_ms` as sent); a value this version does not know,
    /// a stale bound out of range or one given without STALE is bad input.
    pub fn from_wire(value: i32, stale_max_age_ms: u64) -> Result<Self> {
        let c = match routerpb::ReadConsistency::try_from(value) {
            Ok(routerpb::ReadConsistency::Linearizable) => ReadConsistency::Linearizable,
            Ok(routerpb::ReadConsistency::Follower) => ReadConsistency::Follower,
            Ok(routerpb::ReadConsistency::Stale) => {
                validate_staleness_ms(stale_max_age_ms).map_err(Error::InvalidArgument)?;
                return Ok(ReadConsistency::Stale {
                    max_age: Duration::from_millis(stale_max_age_ms),
                });
            }
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "read consistency {value} is unknown (0: linearizable, 1: follower, 2: stale)"
                )))
            }
        };
        if stale_max_age_ms != 0 {
            return Err(Error::InvalidArgument(format!(
                "stale_max_age_ms is {stale_max_age_ms} on a read that is not stale"
            )));
        }
        Ok(c)
    }

    /// As a router request carries it: the consistency and the stale bound
    /// in milliseconds (0 unless stale).
    pub fn to_wire(self) -> (i32, u64) {
        match self {
            ReadConsistency::Linearizable => (routerpb::ReadConsistency::Linearizable as i32, 0),
            ReadConsistency::Follower => (routerpb::ReadConsistency::Follower as i32, 0),
            ReadConsistency::Stale { max_age } => {
                (routerpb::ReadConsistency::Stale as i32, stale_ms(max_age))
            }
        }
    }
}

/// A stale bound in whole milliseconds, clamped to what the wire allows
/// (checked by [`ReadConsistency::validate`] before anything is sent).
fn stale_ms(max_age: Duration) -> u64 {
    u64::try_from(max_age.as_millis())
        .unwrap_or(u64::MAX)
        .min(MAX_STALENESS_MS + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_round_trip_and_unknown_ones_are_refused() {
        for c in [
            ReadConsistency::Linearizable,
            ReadConsistency::Follower,
            ReadConsistency::Stale {
                max_age: Duration::from_millis(250),
            },
        ] {
            let (value, ms) = c.to_wire();
            assert_eq!(ReadConsistency::from_wire(value, ms).unwrap(), c);
        }
        assert_eq!(
            ReadConsistency::from_wire(0, 0).unwrap(),
            ReadConsistency::default()
        );
        for (bad, ms) in [
            (3, 0),
            (-1, 0),
            (i32::MAX, 0),
            (2, 0),
            (2, 3_600_001),
            (0, 5),
            (1, 5),
        ] {
            assert!(
                matches!(
                    ReadConsistency::from_wire(bad, ms),
                    Err(Error::InvalidArgument(_))
                ),
                "{bad} {ms}"
            );
        }
    }

    #[test]
    fn stale_bounds_outside_a_millisecond_to_an_hour_are_refused() {
        let stale = |max_age| ReadConsistency::Stale { max_age };
        assert!(stale(Duration::from_millis(1)).validate().is_ok());
        assert!(stale(Duration::from_secs(3600)).validate().is_ok());
        for bad in [
            Duration::ZERO,
            Duration::from_micros(999),
            Duration::from_secs(3601),
            Duration::MAX,
        ] {
            assert!(matches!(
                stale(bad).validate(),
                Err(Error::InvalidArgument(_))
            ));
        }
        let ctx = stale(Duration::from_millis(40)).stamp(Context::default());
        assert_eq!(ctx.stale_max_age_ms, 40);
        let ctx = ReadConsistency::Follower.stamp(Context::default());
        assert_eq!(ctx.stale_max_age_ms, 0);
    }
}
