//! What the router does when one attempt at a region fails: one pure
//! function, [`react`], from (what came back, whether the request may have
//! been sent, whether the operation may be sent twice) to a [`Reaction`] —
//! how to correct the cache and whether, and when, to try again.
//!
//! The rules, in the words of DESIGN §4 ("routing errors are data"):
//!
//! | what came back | cache | next |
//! |---|---|---|
//! | `NotLeader` naming another peer of the cached region | that peer leads | at once |
//! | `NotLeader` naming a peer the cached region lacks | reload the region (membership changed) | at once |
//! | `NotLeader` naming nobody (or the peer asked) | forget the leader | after an election's wait |
//! | `EpochNotMatch` with the current regions | replace the cached ones | at once |
//! | `EpochNotMatch` without | reload the region | at once |
//! | `ServerIsBusy` | — | after the wait it asks, at least the backoff |
//! | gRPC `ResourceExhausted` with a retry-after (a store's admission refused it unread) | — | the same as `ServerIsBusy` |
//! | `StaleCommand` (not applied) | — | at once |
//! | `NoSpace` (the leader's store or a quorum's is low on disk space) | — | after an election's wait (the leadership may move to a store with space); after a few, fail: no space |
//! | `RegionNotFound`, `KeyNotInRegion`, `StoreNotMatch`, unknown | reload the region | after the backoff |
//! | gRPC `InvalidArgument`, `OutOfRange` | — | fail: bad input |
//! | gRPC `Unauthenticated`, `PermissionDenied` (the store's access check refused the caller before anything ran) | — | fail: refused |
//! | gRPC `DeadlineExceeded`, at-most-once operation | — | stop: indeterminate |
//! | any other gRPC error | forget the store's channel and the leader | at-most-once and maybe sent: stop, indeterminate; else after the backoff |
//!
//! A routing error is an answer: the store refused the request, so nothing
//! was applied and "sent" does not matter. A gRPC error is not: unless the
//! connection was never made ([`crate::sent`]), a write may have applied,
//! and sending it again could apply it twice around another client's write.

use std::time::Duration;

use tessera_proto::errorpb::region_error::Error as Kind;
use tessera_proto::errorpb::RegionError;
use tessera_proto::metapb::{Peer, Region};

use crate::sent::Sent;

/// The retry reason of a store that refused a request over its quotas.
pub const BUSY_REASON: &str = "server_is_busy";

/// Refusals for disk space (`NoSpace`) in a row after which the request
/// fails with [`crate::Error::NoSpace`].
pub const MAX_NO_SPACE_RETRIES: u32 = 2;

/// Whether an operation may be sent again once it may have arrived, and
/// to which replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendPolicy {
    /// Reads: sending twice changes nothing. To the leader.
    Resendable,
    /// Follower reads: resendable, to any voter (a follower read,
    /// [`crate::ReadConsistency::Follower`]).
    AnyVoter,
    /// Writes: a second copy could apply after another client's write.
    AtMostOnce,
}

/// How one attempt failed.
#[derive(Clone, Copy, Debug)]
pub enum Failure<'a> {
    /// The store answered with a routing error.
    Region(&'a RegionError),
    /// No answer: a gRPC error, and whether the request may have left.
    Status(&'a tonic::Status, Sent),
}

/// How the cache changes.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheUpdate {
    Keep,
    /// This peer leads the region.
    SetLeader(Peer),
    /// Nobody known leads it.
    ClearLeader,
    /// Forget the region; the next attempt asks the directory.
    Invalidate,
    /// These are the regions now (an epoch changed).
    Replace(Vec<Region>),
    /// The store did not answer: drop its channel and the region's leader.
    ForgetStore,
}

/// What happens next.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Try again at once: the answer said where to go.
    Now,
    /// Try again after the retry loop's backoff.
    Backoff,
    /// After the backoff, or `at_least` if that is longer (the store asked).
    BackoffAtLeast(Duration),
    /// After long enough for the region to elect a leader.
    Election,
    /// The write may have applied: stop and report it indeterminate.
    Indeterminate(String),
    /// Stop: the request is bad.
    InvalidArgument(String),
    /// Stop: the store's access check refused the caller (this gRPC code)
    /// before anything ran.
    Refused(tonic::Code, String),
    /// The region's stores are low on disk space: nothing was applied.
    /// Try again after an election's wait, a few times, then fail.
    NoSpace(String),
}

/// [`react`]'s answer; `reason` labels the retry in metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Reaction {
    pub cache: CacheUpdate,
    pub next: Next,
    pub reason: &'static str,
}

impl Reaction {
    fn new(cache: CacheUpdate, next: Next, reason: &'static str) -> Self {
        Reaction {
            cache,
            next,
            reason,
        }
    }
}

/// The reaction to `failure` of a request to `addressed` in `region`.
pub fn react(
    failure: Failure<'_>,
    policy: SendPolicy,
    region: &Region,
    addressed: &Peer,
) -> Reaction {
    match failure {
        Failure::Region(e) => react_to_region_error(e, region, addressed),
        Failure::Status(status, sent) => react_to_status(status, sent, policy),
    }
}

fn react_to_region_error(e: &RegionError, region: &Region, addressed: &Peer) -> Reaction {
    use CacheUpdate::*;
    match &e.error {
        Some(Kind::NotLeader(nl)) => match nl.leader {
            Some(l) if l.id != addressed.id && region.peers.iter().any(|p| p.id == l.id) => {
                Reaction::new(SetLeader(l), Next::Now, "not_leader")
            }
            // A leader the cached region does not list: the membership
            // changed; reload the region.
            Some(l) if l.id != addressed.id => Reaction::new(Invalidate, Next::Now, "not_leader"),
            _ => Reaction::new(ClearLeader, Next::Election, "no_leader"),
        },
        Some(Kind::EpochNotMatch(m)) if m.current_regions.is_empty() => {
            Reaction::new(Invalidate, Next::Now, "epoch_not_match")
        }
        Some(Kind::EpochNotMatch(m)) => Reaction::new(
            Replace(m.current_regions.clone()),
            Next::Now,
            "epoch_not_match",
        ),
        Some(Kind::ServerIsBusy(b)) => Reaction::new(
            Keep,
            Next::BackoffAtLeast(Duration::from_millis(b.backoff_ms.max(1))),
            BUSY_REASON,
        ),
        Some(Kind::StaleCommand(_)) => Reaction::new(Keep, Next::Now, "stale_command"),
        Some(Kind::NoSpace(_)) => Reaction::new(Keep, Next::NoSpace(e.message.clone()), "no_space"),
        Some(Kind::RegionNotFound(_))
        | Some(Kind::KeyNotInRegion(_))
        | Some(Kind::StoreNotMatch(_))
        | None => Reaction::new(Invalidate, Next::Backoff, "region_moved"),
    }
}

fn react_to_status(status: &tonic::Status, sent: Sent, policy: SendPolicy) -> Reaction {
    use tonic::Code;
    let message = || status.message().to_string();
    if let Some(wait) = tessera_proto::limits::busy_retry_after(status) {
        // Refused before it was read: nothing applied, whatever the policy.
        return Reaction::new(CacheUpdate::Keep, Next::BackoffAtLeast(wait), BUSY_REASON);
    }
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => Reaction::new(
            CacheUpdate::Keep,
            Next::InvalidArgument(message()),
            "invalid_argument",
        ),
        Code::Unauthenticated | Code::PermissionDenied => Reaction::new(
            CacheUpdate::Keep,
            Next::Refused(status.code(), message()),
            "refused",
        ),
        Code::DeadlineExceeded if policy == SendPolicy::AtMostOnce => Reaction::new(
            CacheUpdate::Keep,
            Next::Indeterminate(message()),
            "deadline_exceeded",
        ),
        // The store is unreachable or failed: forget the channel and the
        // leader.
        _ if policy == SendPolicy::AtMostOnce && sent == Sent::Maybe => Reaction::new(
            CacheUpdate::ForgetStore,
            Next::Indeterminate(message()),
            "store_unavailable",
        ),
        _ => Reaction::new(CacheUpdate::ForgetStore, Next::Backoff, "store_unavailable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::errorpb::*;
    use tessera_proto::metapb::RegionEpoch;

    fn peer(id: u64) -> Peer {
        Peer {
            id,
            store_id: id,
            role: 0,
        }
    }

    fn region() -> Region {
        Region {
            id: 1,
            start_key: vec![],
            end_key: vec![],
            region_epoch: Some(RegionEpoch::new(1, 1)),
            peers: vec![peer(1), peer(2), peer(3)],
        }
    }

    fn error(kind: Kind) -> RegionError {
        RegionError {
            message: String::new(),
            error: Some(kind),
        }
    }

    fn not_leader(leader: Option<u64>) -> RegionError {
        error(Kind::NotLeader(NotLeader {
            region_id: 1,
            leader: leader.map(peer),
        }))
    }

    /// Every routing error, under both send policies: an answer, so the
    /// policy never matters.
    #[test]
    fn routing_errors_correct_the_cache_and_retry() {
        let newer = Region {
            region_epoch: Some(RegionEpoch::new(1, 2)),
            ..region()
        };
        let table: Vec<(RegionError, CacheUpdate, Next)> = vec![
            (
                not_leader(Some(2)),
                CacheUpdate::SetLeader(peer(2)),
                Next::Now,
            ),
            (not_leader(Some(9)), CacheUpdate::Invalidate, Next::Now),
            (
                not_leader(Some(1)),
                CacheUpdate::ClearLeader,
                Next::Election,
            ),
            (not_leader(None), CacheUpdate::ClearLeader, Next::Election),
            (
                error(Kind::EpochNotMatch(EpochNotMatch {
                    current_regions: vec![newer.clone()],
                })),
                CacheUpdate::Replace(vec![newer]),
                Next::Now,
            ),
            (
                error(Kind::EpochNotMatch(EpochNotMatch {
                    current_regions: vec![],
                })),
                CacheUpdate::Invalidate,
                Next::Now,
            ),
            (
                error(Kind::ServerIsBusy(ServerIsBusy {
                    reason: "busy".into(),
                    backoff_ms: 70,
                })),
                CacheUpdate::Keep,
                Next::BackoffAtLeast(Duration::from_millis(70)),
            ),
            (
                error(Kind::ServerIsBusy(ServerIsBusy {
                    reason: "busy".into(),
                    backoff_ms: 0,
                })),
                CacheUpdate::Keep,
                Next::BackoffAtLeast(Duration::from_millis(1)),
            ),
            (
                error(Kind::StaleCommand(StaleCommand {})),
                CacheUpdate::Keep,
                Next::Now,
            ),
            (
                error(Kind::NoSpace(NoSpace {
                    region_id: 1,
                    store_ids: vec![2, 3],
                })),
                CacheUpdate::Keep,
                Next::NoSpace(String::new()),
            ),
            (
                error(Kind::RegionNotFound(RegionNotFound { region_id: 1 })),
                CacheUpdate::Invalidate,
                Next::Backoff,
            ),
            (
                error(Kind::KeyNotInRegion(KeyNotInRegion::default())),
                CacheUpdate::Invalidate,
                Next::Backoff,
            ),
            (
                error(Kind::StoreNotMatch(StoreNotMatch::default())),
                CacheUpdate::Invalidate,
                Next::Backoff,
            ),
            (
                RegionError::default(),
                CacheUpdate::Invalidate,
                Next::Backoff,
            ),
        ];
        for (e, cache, next) in table {
            for policy in [
                SendPolicy::Resendable,
                SendPolicy::AnyVoter,
                SendPolicy::AtMostOnce,
            ] {
                let r = react(Failure::Region(&e), policy, &region(), &peer(1));
                assert_eq!((&r.cache, &r.next), (&cache, &next), "{e:?} {policy:?}");
            }
        }
    }

    /// Every gRPC failure, sent or not, read or write.
    #[test]
    fn grpc_errors_stop_a_write_that_may_have_applied() {
        use tonic::Code;
        use CacheUpdate::*;
        use SendPolicy::*;
        use Sent::*;
        let unknown = |m: &str| Next::Indeterminate(m.into());
        let bad = |m: &str| Next::InvalidArgument(m.into());
        #[rustfmt::skip]
        let table: Vec<(Code, Sent, SendPolicy, CacheUpdate, Next)> = vec![
            (Code::InvalidArgument,  Maybe, Resendable, Keep,        bad("m")),
            (Code::InvalidArgument,  Maybe, AtMostOnce, Keep,        bad("m")),
            (Code::OutOfRange,       Maybe, AtMostOnce, Keep,        bad("m")),
            // The access check refused the caller: nothing ran, not retried.
            (Code::Unauthenticated,  Maybe, AtMostOnce, Keep,        Next::Refused(Code::Unauthenticated, "m".into())),
            (Code::PermissionDenied, Maybe, AtMostOnce, Keep,        Next::Refused(Code::PermissionDenied, "m".into())),
            (Code::PermissionDenied, Maybe, Resendable, Keep,        Next::Refused(Code::PermissionDenied, "m".into())),
            (Code::DeadlineExceeded, Maybe, AtMostOnce, Keep,        unknown("m")),
            (Code::DeadlineExceeded, No,    AtMostOnce, Keep,        unknown("m")),
            (Code::DeadlineExceeded, Maybe, Resendable, ForgetStore, Next::Backoff),
            // A follower read is a read: resent wherever it may have gone.
            (Code::DeadlineExceeded, Maybe, AnyVoter,   ForgetStore, Next::Backoff),
            (Code::Unavailable,      Maybe, AnyVoter,   ForgetStore, Next::Backoff),
            (Code::Unavailable,      Maybe, AtMostOnce, ForgetStore, unknown("m")),
            (Code::Unavailable,      No,    AtMostOnce, ForgetStore, Next::Backoff),
            (Code::Unavailable,      Maybe, Resendable, ForgetStore, Next::Backoff),
            (Code::Unavailable,      No,    Resendable, ForgetStore, Next::Backoff),
            (Code::Internal,         Maybe, AtMostOnce, ForgetStore, unknown("m")),
            (Code::Internal,         No,    AtMostOnce, ForgetStore, Next::Backoff),
            (Code::Unknown,          Maybe, Resendable, ForgetStore, Next::Backoff),
            (Code::Cancelled,        Maybe, AtMostOnce, ForgetStore, unknown("m")),
            // gRPC's own RESOURCE_EXHAUSTED (no retry-after): it may have run.
            (Code::ResourceExhausted, Maybe, AtMostOnce, ForgetStore, unknown("m")),
        ];
        for (code, sent, policy, cache, next) in table {
            let status = tonic::Status::new(code, "m");
            let r = react(Failure::Status(&status, sent), policy, &region(), &peer(1));
            assert_eq!(
                (&r.cache, &r.next),
                (&cache, &next),
                "{code:?} {sent:?} {policy:?}"
            );
        }
    }

    /// A store's admission refused the request before reading it: a write
    /// too is simply tried again after the wait the store asked.
    #[test]
    fn a_busy_refusal_is_waited_out_even_for_a_write() {
        let busy = tessera_proto::limits::busy_status("quota", Duration::from_millis(90));
        for sent in [Sent::Maybe, Sent::No] {
            for policy in [SendPolicy::Resendable, SendPolicy::AtMostOnce] {
                let r = react(Failure::Status(&busy, sent), policy, &region(), &peer(1));
                assert_eq!(r.cache, CacheUpdate::Keep);
                assert_eq!(r.next, Next::BackoffAtLeast(Duration::from_millis(90)));
                assert_eq!(r.reason, BUSY_REASON);
            }
        }
    }
}
