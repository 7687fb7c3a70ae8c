//! Fuzzing the Raft message path of a poller: what arrives from a peer
//! stream (a `RaftMessage` and the raft-rs message inside it) is decoded,
//! bounded and checked by the poller, so random and mutated messages must
//! never take it down.
//!
//! One poller (in-memory engine, manual ticks) holds a region with peers on
//! stores 1, 2 and 3; it is fed messages that are random bytes, well-formed
//! raft-rs messages with random fields (any type, term, index, entries,
//! snapshot metadata), and those encodings with a byte flipped — for the
//! region, for unknown regions, from peers it has and peers it has not,
//! tombstones and hibernation messages of every kind included —
//! interleaved with ticks. After every batch the poller must still run its
//! rounds and answer for its region. A panic inside raft-rs is contained
//! by the poller (the peer is reloaded from its durable state); anything
//! else fails the test.
//!
//! `TESSERA_FUZZ_CASES` sets the number of batches (default 2,000; each
//! has up to 8 messages).

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use protobuf::{Message as _, ProtobufEnum as _};
use raft::eraftpb::{Entry, EntryType, Message, MessageType, Snapshot};
use tessera_multiraft::mailbox::PollerMsg;
use tessera_multiraft::snapshot::SnapManager;
use tessera_proto::metapb::{Peer, RegionEpoch};
use tessera_proto::raft_serverpb::{Hibernation, RaftMessage};

mod common;

use common::{peer, REGION};

/// A raft-rs message with random fields, encoded.
fn raft_message() -> impl Strategy<Value = Vec<u8>> {
    let entry = (
        0i32..4,
        0u64..12,
        0u64..60,
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(kind, term, index, data)| {
            let mut e = Entry::default();
            e.set_entry_type(EntryType::from_i32(kind).unwrap_or(EntryType::EntryNormal));
            e.term = term;
            e.index = index;
            e.data = data.into();
            e
        });
    (
        0i32..20,
        prop_oneof![Just(31u64), Just(32), Just(33), any::<u64>()],
        prop_oneof![Just(31u64), Just(32), Just(33), any::<u64>()],
        (0u64..12, 0u64..12, 0u64..60, 0u64..60, any::<bool>()),
        prop::collection::vec(entry, 0..4),
        prop::option::of((
            0u64..60,
            0u64..12,
            prop::collection::vec(any::<u8>(), 0..32),
        )),
    )
        .prop_map(
            |(kind, from, to, (term, log_term, index, commit, reject), entries, snap)| {
                let mut m = Message::default();
                m.set_msg_type(MessageType::from_i32(kind).unwrap_or(MessageType::MsgHup));
                m.from = from;
                m.to = to;
                m.term = term;
                m.log_term = log_term;
                m.index = index;
                m.commit = commit;
                m.reject = reject;
                m.set_entries(entries.into());
                if let Some((index, term, data)) = snap {
                    let mut s = Snapshot::default();
                    s.mut_metadata().index = index;
                    s.mut_metadata().term = term;
                    s.data = data.into();
                    m.set_snapshot(s);
                }
                m.write_to_bytes().unwrap_or_default()
            },
        )
}

/// The bytes of the inner message: random, well-formed, or well-formed
/// with one byte changed.
fn inner() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        raft_message(),
        (raft_message(), any::<usize>(), any::<u8>()).prop_map(|(mut b, at, byte)| {
            if !b.is_empty() {
                let i = at % b.len();
                b[i] ^= byte | 1;
            }
            b
        }),
    ]
}

fn raft_peer() -> impl Strategy<Value = Option<Peer>> {
    prop_oneof![
        4 => (1u64..4).prop_map(|s| Some(peer(s))),
        1 => Just(None),
        1 => (any::<u64>(), 0u64..6).prop_map(|(id, store_id)| Some(Peer { id, store_id, role: 0 })),
    ]
}

fn message() -> impl Strategy<Value = RaftMessage> {
    (
        prop_oneof![4 => Just(REGION), 1 => 0u64..50],
        raft_peer(),
        raft_peer(),
        prop::option::of((0u64..4, 0u64..4)),
        (
            prop::collection::vec(any::<u8>(), 0..6),
            prop::collection::vec(any::<u8>(), 0..6),
        ),
        inner(),
        prop::bool::weighted(0.05),
        any::<bool>(),
        // Hibernation requests, answers, pings and unknown kinds, at any
        // term and index.
        prop::option::of((0i32..6, 0u64..12, 0u64..60)),
    )
        .prop_map(
            |(
                region_id,
                from_peer,
                to_peer,
                epoch,
                (start_key, end_key),
                message,
                tomb,
                low,
                h,
            )| {
                RaftMessage {
                    region_id,
                    from_peer,
                    to_peer,
                    region_epoch: epoch.map(|(c, v)| RegionEpoch::new(c, v)),
                    start_key,
                    end_key,
                    message,
                    is_tombstone: tomb,
                    from_store_low_space: low,
                    hibernation: h.map(|(kind, term, index)| Hibernation { kind, term, index }),
                }
            },
        )
}

#[test]
fn random_and_mutated_peer_messages_never_take_the_poller_down() {
    let cases: usize = std::env::var("TESSERA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let dir = tempfile::tempdir().unwrap();
    let engine = common::engine_with_region3();
    let config = common::manual_ticks_config();
    let (mut poller, mailbox) = common::open_poller(
        1,
        config,
        engine,
        SnapManager::new(dir.path().join("snap")).unwrap(),
    );
    let batch = (prop::collection::vec(message(), 1..8), 0usize..12);
    let mut runner = TestRunner::deterministic();
    for case in 0..cases {
        let (messages, ticks) = batch.new_tree(&mut runner).unwrap().current();
        for m in messages {
            // A full mailbox drops the message, as the transport would.
            mailbox.send_raft_message(m);
        }
        if ticks > 0 {
            mailbox.send(PollerMsg::Tick { count: ticks }).unwrap();
        }
        poller.run_round();
        poller.run_round();
        let regions = poller.regions();
        assert!(
            regions.iter().any(|r| r.region.id == REGION),
            "case {case}: the poller lost its region: {regions:?}"
        );
    }
    // The messages got past decoding into Raft: higher terms were taken.
    let term = poller
        .regions()
        .into_iter()
        .find(|r| r.region.id == REGION)
        .map(|r| r.term)
        .unwrap_or(0);
    assert!(term > 5, "no message reached raft-rs (term {term})");
}
