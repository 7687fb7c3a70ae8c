//! Fuzzing the framing of the store-to-store streams: what another store
//! sends on the `Raft` service (a stream of `RaftMessageBatch`es) and on the
//! `Snapshot` service (a stream of `SnapshotChunk`s) is gRPC frames inside
//! HTTP/2 DATA frames, and no shape of those bytes may take the receiving
//! store down.
//!
//! The `RaftService` of store 1 is served over gRPC on 127.0.0.1 in front of
//! one poller (in-memory engine, manual ticks, run by the test between
//! calls) holding region 3 with peers on stores 1, 2 and 3. Each call is
//! written byte by byte with a bare HTTP/2 client (tonic frames honestly,
//! and no HTTP/2 crate is a dependency here), so a call can carry: random
//! bytes, well-formed batches and snapshot chunks with random fields,
//! those with a byte flipped, gRPC length prefixes that lie (short, long,
//! over the server's 64 MiB limit, `u32::MAX`), the compressed flag or
//! another flag byte set, a body cut anywhere, and DATA frames of any size.
//! Snapshot streams come with or without their first message, with chunks
//! of declared and undeclared files in any order, more bytes than declared,
//! and checksums that do not match.
//!
//! Every call must end (an answer, a reset or a closed connection) within
//! seconds; no thread of the server may panic; the poller must keep its
//! region; a refused snapshot must leave nothing in the snapshot
//! directory; and after all of it a well-formed batch sent the same way
//! must still reach Raft.
//!
//! `TESSERA_FUZZ_CASES` sets the number of calls (default 5,000, half on
//! each service).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use prost::Message as _;
use protobuf::{Message as _, ProtobufEnum as _};
use raft::eraftpb::{Message, MessageType, Snapshot};
use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::transport::grpc::RaftService;
use tessera_proto::metapb::{Peer, Region, RegionEpoch};
use tessera_proto::raft_serverpb::{
    RaftMessage, RaftMessageBatch, SnapshotChunk, SnapshotData, SnapshotFile,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::{peer, region3, REGION};
const CLUSTER: u64 = 0x7e57;
/// How long one call may take before the test calls it a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The name of the server's threads, so that a panic on them is counted.
const SERVER_THREAD: &str = "hostile-streams-server";

/// A bare HTTP/2 client for one gRPC call whose body is exactly the bytes
/// given: the connection preface, a HEADERS frame (HPACK literals, never
/// indexed, never Huffman-coded) and DATA frames of a chosen size. Bodies
/// stay under the default flow-control windows (64 KiB), so it never has
/// to wait for a WINDOW_UPDATE.
mod wire {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const DATA: u8 = 0x0;
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const END_STREAM: u8 = 0x1;
    const ACK: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    /// The largest DATA payload a peer must accept before SETTINGS say more.
    pub const MAX_FRAME_BYTES: usize = 16_384;
    /// The call's stream.
    const STREAM: u32 = 1;

    /// How the server ended the call.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Outcome {
        /// Trailers (or a trailers-only answer) ended the stream.
        Answered,
        /// RST_STREAM with this error code.
        Reset(u32),
        /// GOAWAY: the server closed the connection in an orderly way.
        GoAway,
        /// The connection closed without either.
        Closed,
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An HPACK "literal header field without indexing — new name".
    fn header(block: &mut Vec<u8>, name: &str, value: &str) {
        block.push(0);
        for s in [name, value] {
            assert!(s.len() < 127, "one-byte HPACK string lengths only");
            block.push(s.len() as u8);
            block.extend_from_slice(s.as_bytes());
        }
    }

    pub struct Call {
        sock: TcpStream,
    }

    impl Call {
        /// Connects and opens the call to `path` (e.g. `/raft_serverpb.Raft/Raft`).
        pub async fn open(addr: SocketAddr, path: &str) -> std::io::Result<Call> {
            let mut sock = TcpStream::connect(addr).await?;
            sock.set_nodelay(true)?;
            let mut block = vec![];
            header(&mut block, ":method", "POST");
            header(&mut block, ":scheme", "http");
            header(&mut block, ":path", path);
            header(&mut block, ":authority", &addr.to_string());
            header(&mut block, "content-type", "application/grpc");
            header(&mut block, "te", "trailers");
            let mut out = PREFACE.to_vec();
            out.extend(frame(SETTINGS, 0, 0, &[]));
            out.extend(frame(HEADERS, END_HEADERS, STREAM, &block));
            sock.write_all(&out).await?;
            Ok(Call { sock })
        }

        /// Sends `body` in DATA frames of at most `split` bytes; the last
        /// one ends the stream if `end`.
        pub async fn send(&mut self, body: &[u8], split: usize, end: bool) -> std::io::Result<()> {
            let split = split.clamp(1, MAX_FRAME_BYTES);
            let mut out = vec![];
            let mut chunks = body.chunks(split).peekable();
            if chunks.peek().is_none() && end {
                out.extend(frame(DATA, END_STREAM, STREAM, &[]));
            }
            while let Some(c) = chunks.next() {
                let last = chunks.peek().is_none();
                let flags = if last && end { END_STREAM } else { 0 };
                out.extend(frame(DATA, flags, STREAM, c));
            }
            self.sock.write_all(&out).await
        }

        /// Reads until the server ends the call, acknowledging its
        /// SETTINGS and PINGs on the way.
        pub async fn outcome(mut self) -> Outcome {
            loop {
                let mut head = [0u8; 9];
                if self.sock.read_exact(&mut head).await.is_err() {
                    return Outcome::Closed;
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let (kind, flags) = (head[3], head[4]);
                let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                let mut payload = vec![0u8; len];
                if self.sock.read_exact(&mut payload).await.is_err() {
                    return Outcome::Closed;
                }
                let reply = match kind {
                    SETTINGS if flags & ACK == 0 => Some(frame(SETTINGS, ACK, 0, &[])),
                    PING if flags & ACK == 0 => Some(frame(PING, ACK, 0, &payload)),
                    GOAWAY => return Outcome::GoAway,
                    RST_STREAM if stream == STREAM => {
                        let code = payload
                            .get(..4)
                            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                            .unwrap_or(u32::MAX);
                        return Outcome::Reset(code);
                    }
                    DATA | HEADERS if stream == STREAM && flags & END_STREAM != 0 => {
                        return Outcome::Answered
                    }
                    _ => None,
                };
                if let Some(r) = reply {
                    if self.sock.write_all(&r).await.is_err() {
                        return Outcome::Closed;
                    }
                }
            }
        }
    }
}

/// A raft-rs message with random type and fields, from one of the
/// region's peers to store 1's, encoded.
fn raft_message() -> impl Strategy<Value = Vec<u8>> {
    (0i32..20, 31u64..34, 0u64..12, 0u64..60, 0u64..60).prop_map(
        |(kind, from, term, index, commit)| {
            let mut m = Message::default();
            m.set_msg_type(MessageType::from_i32(kind).unwrap_or(MessageType::MsgHup));
            m.from = from;
            m.to = 31;
            m.term = term;
            m.index = index;
            m.commit = commit;
            m.write_to_bytes().unwrap_or_default()
        },
    )
}

fn store_peer() -> impl Strategy<Value = Option<Peer>> {
    prop_oneof![
        6 => (1u64..4).prop_map(|s| Some(peer(s))),
        1 => Just(None),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(id, store_id)| Some(Peer { id, store_id, role: 0 })),
    ]
}

fn cluster_id() -> impl Strategy<Value = u64> {
    prop_oneof![9 => Just(CLUSTER), 1 => any::<u64>()]
}

/// A `RaftMessageBatch` with random fields, encoded.
fn batch() -> impl Strategy<Value = Vec<u8>> {
    let message = (
        prop_oneof![4 => Just(REGION), 1 => any::<u64>()],
        store_peer(),
        prop_oneof![4 => Just(Some(peer(1))), 1 => store_peer()],
        raft_message(),
    )
        .prop_map(|(region_id, from_peer, to_peer, message)| RaftMessage {
            region_id,
            from_peer,
            to_peer,
            region_epoch: Some(RegionEpoch::new(1, 1)),
            message,
            ..Default::default()
        });
    (0u64..5, prop::collection::vec(message, 0..4), cluster_id()).prop_map(
        |(from_store_id, messages, cluster_id)| {
            RaftMessageBatch {
                from_store_id,
                messages,
                cluster_id,
            }
            .encode_to_vec()
        },
    )
}

/// The names a snapshot declares and its chunks use: good ones, a path
/// escape, the meta file's name and the empty name.
fn file_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("a.sst".to_string()),
        4 => Just("b.sst".to_string()),
        1 => Just("../escape.sst".to_string()),
        1 => Just("meta".to_string()),
        1 => Just(String::new()),
    ]
}

/// A snapshot's first chunk: its message for region 3 (mostly) declaring
/// files of random sizes whose checksums never match what is sent (so no
/// stream is ever complete, and each must be refused).
fn first_chunk() -> impl Strategy<Value = Vec<u8>> {
    let file = (
        prop_oneof![8 => Just("default".to_string()), 1 => Just("raft".to_string())],
        file_name(),
        prop_oneof![4 => 0u64..600, 1 => any::<u64>()],
    )
        .prop_map(|(cf, name, size)| SnapshotFile {
            cf,
            name,
            size,
            crc32: 0xbad,
            ..Default::default()
        });
    (
        prop_oneof![6 => Just(REGION), 1 => 0u64..20],
        prop_oneof![6 => Just(Some(peer(1))), 1 => store_peer()],
        prop::bool::weighted(0.9),
        // At least one file: a snapshot of none would be complete.
        prop::collection::vec(file, 1..3),
        (0u64..12, 0u64..60),
        cluster_id(),
    )
        .prop_map(
            |(region_id, to_peer, is_snapshot, files, (term, index), cluster_id)| {
                let data = SnapshotData {
                    region: Some(Region {
                        id: region_id,
                        ..Default::default()
                    }),
                    files,
                    ..Default::default()
                };
                let mut snap = Snapshot::default();
                snap.set_data(data.encode_to_vec().into());
                snap.mut_metadata().term = term;
                snap.mut_metadata().index = index;
                let mut m = Message::default();
                if is_snapshot {
                    m.set_msg_type(MessageType::MsgSnapshot);
                }
                m.from = 32;
                m.to = 31;
                m.term = term;
                m.set_snapshot(snap);
                SnapshotChunk {
                    message: Some(RaftMessage {
                        region_id,
                        from_peer: Some(peer(2)),
                        to_peer,
                        message: m.write_to_bytes().unwrap_or_default(),
                        ..Default::default()
                    }),
                    cluster_id,
                    ..Default::default()
                }
                .encode_to_vec()
            },
        )
}

/// A later chunk: data for a declared file or not, in any order.
fn file_chunk() -> impl Strategy<Value = Vec<u8>> {
    (file_name(), prop::collection::vec(any::<u8>(), 0..400)).prop_map(|(file_name, data)| {
        SnapshotChunk {
            file_name,
            data,
            ..Default::default()
        }
        .encode_to_vec()
    })
}

/// Flips one byte of a well-formed message now and then.
fn damaged(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (valid, prop::option::weighted(0.2, (any::<usize>(), 1u8..))).prop_map(|(mut b, flip)| {
        if let (Some((at, x)), false) = (flip, b.is_empty()) {
            let i = at % b.len();
            b[i] ^= x;
        }
        b
    })
}

/// How one message is framed on the stream.
#[derive(Debug, Clone)]
enum Framing {
    Honest,
    /// The length prefix says `claimed` bytes, whatever follows.
    Lying(u32),
    /// A flag byte other than 0: 1 is "compressed" (no compression was
    /// agreed on), anything else is not gRPC at all.
    Flag(u8),
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        12 => Just(Framing::Honest),
        1 => Just(Framing::Lying(u32::MAX)),
        1 => ((64u32 << 20) + 1..u32::MAX).prop_map(Framing::Lying),
        1 => (0u32..70_000).prop_map(Framing::Lying),
        1 => Just(Framing::Flag(1)),
        1 => (2u8..).prop_map(Framing::Flag),
    ]
}

/// One call: its messages with their framing, then perhaps random bytes,
/// a cut, and the size of its DATA frames.
#[derive(Debug, Clone)]
struct Plan {
    messages: Vec<(Framing, Vec<u8>)>,
    trailing: Vec<u8>,
    cut: Option<usize>,
    split: usize,
}

impl Plan {
    fn body(&self) -> Vec<u8> {
        let mut body = vec![];
        for (framing, payload) in &self.messages {
            let (flag, len) = match framing {
                Framing::Honest => (0, payload.len() as u32),
                Framing::Lying(claimed) => (0, *claimed),
                Framing::Flag(flag) => (*flag, payload.len() as u32),
            };
            body.push(flag);
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(payload);
        }
        body.extend_from_slice(&self.trailing);
        if let Some(c) = self.cut {
            body.truncate(c % (body.len() + 1));
        }
        body
    }
}

fn plan(messages: BoxedStrategy<Vec<(Framing, Vec<u8>)>>) -> impl Strategy<Value = Plan> {
    (
        messages,
        prop_oneof![6 => Just(vec![]), 1 => prop::collection::vec(any::<u8>(), 1..40)],
        prop::option::weighted(0.15, any::<usize>()),
        prop_oneof![
            Just(wire::MAX_FRAME_BYTES),
            1usize..64,
            64usize..wire::MAX_FRAME_BYTES
        ],
    )
        .prop_map(|(messages, trailing, cut, split)| Plan {
            messages,
            trailing,
            cut,
            split,
        })
}

fn raft_plan() -> impl Strategy<Value = Plan> {
    let payload = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..200),
        4 => damaged(batch()),
    ];
    plan(prop::collection::vec((framing(), payload), 0..6).boxed())
}

fn snapshot_plan() -> impl Strategy<Value = Plan> {
    let first = prop_oneof![
        6 => damaged(first_chunk()),
        1 => file_chunk(),
        1 => prop::collection::vec(any::<u8>(), 0..100),
    ];
    let rest = prop::collection::vec(
        prop_oneof![6 => damaged(file_chunk()), 1 => first_chunk()],
        0..6,
    );
    let messages = (first, rest)
        .prop_map(|(first, rest)| std::iter::once(first).chain(rest).collect::<Vec<_>>())
        .prop_flat_map(|payloads| {
            let n = payloads.len();
            (Just(payloads), prop::collection::vec(framing(), n))
        })
        .prop_map(|(payloads, framings)| framings.into_iter().zip(payloads).collect());
    plan(messages.boxed())
}

/// The number of calls: `TESSERA_FUZZ_CASES`, or a CI-sized default.
fn fuzz_cases() -> usize {
    std::env::var("TESSERA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

/// Makes one call with `body` and returns how it ended; a call that does
/// not end within [`CALL_TIMEOUT`] fails the test.
async fn call(addr: SocketAddr, path: &str, body: &[u8], split: usize) -> wire::Outcome {
    let run = async {
        let mut c = wire::Call::open(addr, path).await.expect("connect");
        if c.send(body, split, true).await.is_err() {
            // The server closed the connection while we wrote: an answer too.
            return wire::Outcome::Closed;
        }
        c.outcome().await
    };
    tokio::time::timeout(CALL_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("a call to {path} hung ({} bytes)", body.len()))
}

fn honest(payload: &[u8]) -> Vec<u8> {
    Plan {
        messages: vec![(Framing::Honest, payload.to_vec())],
        trailing: vec![],
        cut: None,
        split: wire::MAX_FRAME_BYTES,
    }
    .body()
}

/// A batch with one heartbeat of `term` from store 2's peer to store 1's.
fn heartbeat(term: u64) -> Vec<u8> {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = 32;
    m.to = 31;
    m.term = term;
    RaftMessageBatch {
        from_store_id: 2,
        cluster_id: CLUSTER,
        messages: vec![RaftMessage {
            region_id: REGION,
            from_peer: Some(peer(2)),
            to_peer: Some(peer(1)),
            region_epoch: Some(RegionEpoch::new(1, 1)),
            message: m.write_to_bytes().unwrap(),
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn snap_entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn hostile_stream_framing_never_takes_the_store_down() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(SERVER_THREAD) {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        default_hook(info);
    }));

    let dir = tempfile::tempdir().unwrap();
    let snap_dir = dir.path().join("snap");
    let engine = common::engine_with_region3();
    let config = common::manual_ticks_config();
    let snap_mgr = SnapManager::new(&snap_dir).unwrap();
    let (mut poller, mailbox) = common::open_poller(1, config, engine, snap_mgr.clone());
    let term = |poller: &tessera_multiraft::Poller<common::Nothing>| {
        poller
            .regions()
            .into_iter()
            .find(|r| r.region.id == REGION)
            .map(|r| r.term)
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let service = RaftService::new(1, CLUSTER, mailbox, snap_mgr.clone()).into_server();
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    const RAFT: &str = "/raft_serverpb.Raft/Raft";
    const SNAPSHOT: &str = "/raft_serverpb.Raft/Snapshot";

    // Controls: the bare client's frames are understood. A heartbeat of
    // term 7 reaches Raft, cut into 1-byte DATA frames...
    let outcome = rt.block_on(call(addr, RAFT, &honest(&heartbeat(7)), 1));
    assert_eq!(outcome, wire::Outcome::Answered);
    poller.run_round();
    assert_eq!(
        term(&poller),
        Some(7),
        "the control heartbeat did not arrive"
    );
    // ... and a snapshot stream's files are written as they come: while the
    // stream is open, its directory exists.
    let first = SnapshotChunk {
        message: Some({
            let data = SnapshotData {
                region: Some(region3()),
                files: vec![SnapshotFile {
                    cf: "default".into(),
                    name: "a.sst".into(),
                    size: 10,
                    crc32: 0xbad,
                    ..Default::default()
                }],
                ..Default::default()
            };
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgSnapshot);
            m.mut_snapshot().set_data(data.encode_to_vec().into());
            m.mut_snapshot().mut_metadata().term = 7;
            m.mut_snapshot().mut_metadata().index = 9;
            RaftMessage {
                region_id: REGION,
                from_peer: Some(peer(2)),
                to_peer: Some(peer(1)),
                message: m.write_to_bytes().unwrap(),
                ..Default::default()
            }
        }),
        cluster_id: CLUSTER,
        ..Default::default()
    };
    let chunk = SnapshotChunk {
        file_name: "a.sst".into(),
        data: vec![1; 4],
        ..Default::default()
    };
    rt.block_on(async {
        let mut c = wire::Call::open(addr, SNAPSHOT).await.unwrap();
        let mut body = honest(&first.encode_to_vec());
        body.extend(honest(&chunk.encode_to_vec()));
        c.send(&body, wire::MAX_FRAME_BYTES, false).await.unwrap();
        let receiving = snap_mgr.recv_dir(REGION, 7, 9);
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        while !receiving.join("a.sst").exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the control snapshot's file was never written"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Six bytes of ten and a wrong checksum: refused once it ends.
        c.send(&[], 1, true).await.unwrap();
        tokio::time::timeout(CALL_TIMEOUT, c.outcome())
            .await
            .expect("the control snapshot call hung");
    });

    let (raft_plan, snapshot_plan) = (raft_plan(), snapshot_plan());
    let mut runner = TestRunner::deterministic();
    let cases = fuzz_cases();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for case in 0..cases {
        let (path, p) = if case % 2 == 0 {
            (RAFT, raft_plan.new_tree(&mut runner).unwrap().current())
        } else {
            (
                SNAPSHOT,
                snapshot_plan.new_tree(&mut runner).unwrap().current(),
            )
        };
        let body = p.body();
        let outcome = rt.block_on(call(addr, path, &body, p.split));
        *outcomes.entry(format!("{path} {outcome:?}")).or_default() += 1;
        poller.run_round();
        poller.run_round();
        assert!(
            term(&poller).is_some(),
            "case {case}: the poller lost its region after {p:?}"
        );
        if path == SNAPSHOT {
            // Every snapshot here is refused (no checksum matches), and a
            // refused one leaves nothing behind. The directory goes just
            // before the answer is sent; give the server a moment.
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while !snap_entries(&snap_dir).is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            assert_eq!(
                snap_entries(&snap_dir),
                Vec::<String>::new(),
                "case {case}: a refused snapshot left files after {p:?}"
            );
        }
        assert_eq!(
            panics.load(Ordering::SeqCst),
            0,
            "case {case}: the server panicked on {path} after {p:?}"
        );
    }
    eprintln!("{cases} hostile calls: {outcomes:#?}");

    // The fuzzed batches reached Raft (their terms went up to 11), and the
    // service still delivers a well-formed batch.
    let before = term(&poller).unwrap();
    assert!(
        before >= 8,
        "no fuzzed message reached Raft (term {before})"
    );
    let outcome = rt.block_on(call(addr, RAFT, &honest(&heartbeat(before + 1)), 100));
    assert_eq!(outcome, wire::Outcome::Answered);
    poller.run_round();
    assert_eq!(term(&poller), Some(before + 1));
    assert_eq!(panics.load(Ordering::SeqCst), 0);
    rt.shutdown_timeout(Duration::from_secs(1));
}
