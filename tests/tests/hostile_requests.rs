//! Fuzzing the public API: no request a client can send takes a
//! `tessera-router` down or leaves it unable to serve.
//!
//! A real cluster of processes (one directory, three stores, one router;
//! plaintext, so the bytes below reach the service untouched) gets, for
//! every RPC of the `Router` service, bodies that are random bytes,
//! well-formed requests with random fields (empty, oversized and foreign
//! keyspaces; empty, oversized and random keys; values up to past the
//! limit; batches past 10,000 keys; scans and range deletes with random
//! bounds, limits and resume tokens), and well-formed requests with bytes
//! flipped, cut or added. The bodies are sent as they are through a tonic
//! client with a codec that does not encode: the router's own decoding
//! sees them.
//!
//! Every call must answer within the router's request deadline — a gRPC
//! status, or a response that decodes as the RPC's response type. The
//! processes abort on any panic (`tessera_common::abort_on_panic`), so the
//! router and the stores still running after the last case shows that no
//! request panicked anything; and the router must still serve a put and a
//! get correctly.
//!
//! `TESSERA_FUZZ_CASES` sets the number of calls (default 6,000).

use std::time::{Duration, Instant};

use prost::Message as _;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use tessera_e2e::{E2eCluster, Options, RawCodec};
use tessera_proto::routerpb::router_client::RouterClient;
use tessera_proto::routerpb::*;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Longer than the router's request deadline (20 s in the harness): a call
/// still unanswered then is a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The number of calls: `TESSERA_FUZZ_CASES`, or a CI-sized default.
fn fuzz_cases() -> usize {
    std::env::var("TESSERA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000)
}

/// A seeded, reproducible source of cases (rand's `SmallRng`); no
/// shrinking is needed: a failing case is printed whole.
struct Rng(SmallRng);

impl Rng {
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.0.random_range(0..n)
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let mut b = vec![0; self.below(max_len as u64 + 1) as usize];
        self.0.fill(&mut b[..]);
        b
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// The eight RPCs of the `Router` service.
const METHODS: [&str; 8] = [
    "Get",
    "Put",
    "Delete",
    "BatchGet",
    "BatchPut",
    "Scan",
    "CompareAndSwap",
    "DeleteRange",
];

fn keyspace(r: &mut Rng) -> String {
    match r.below(8) {
        0..=3 => String::new(),
        4 => "default".into(),
        5 => "no-such-keyspace".into(),
        6 => "k".repeat(r.below(400) as usize),
        _ => String::from_utf8_lossy(&r.bytes(12)).into_owned(),
    }
}

/// A key: mostly a few bytes from a small alphabet (so writes and reads
/// meet), sometimes empty, random, at the 8 KiB limit or past it.
fn key(r: &mut Rng) -> Vec<u8> {
    match r.below(20) {
        0 => vec![],
        1 => r.bytes(40),
        2 => vec![b'x'; tessera_proto::keys::MAX_KEY_BYTES],
        3 => vec![b'x'; tessera_proto::keys::MAX_KEY_BYTES + 1],
        4 => vec![0xff; 1 + r.below(4) as usize],
        _ => {
            let n = 1 + r.below(3) as usize;
            (0..n).map(|_| b'a' + r.below(6) as u8).collect()
        }
    }
}

fn value(r: &mut Rng) -> Vec<u8> {
    match r.below(300) {
        0 => vec![7; tessera_proto::keys::MAX_VALUE_BYTES + 1],
        1..=3 => vec![7; 64 * 1024],
        _ => r.bytes(32),
    }
}

fn opt(r: &mut Rng, f: impl FnOnce(&mut Rng) -> Vec<u8>) -> Option<Vec<u8>> {
    (!r.chance(3)).then(|| f(r))
}

/// Keys for a batch: a few, none, or past the 10,000-key limit.
/// A read consistency as sent: the known ones, and values no version knows.
fn consistency(r: &mut Rng) -> i32 {
    *r.pick(&[0, 1, 2, 3, -1, i32::MAX])
}

/// A stale read's age bound: mostly none, some valid, some out of range.
fn staleness(r: &mut Rng) -> u64 {
    *r.pick(&[0, 0, 0, 1, 500, 3_600_000, 3_600_001, u64::MAX])
}

fn keys(r: &mut Rng) -> Vec<Vec<u8>> {
    let n = match r.below(40) {
        0 => 10_001,
        1 => 0,
        _ => 1 + r.below(12),
    };
    (0..n).map(|_| key(r)).collect()
}

/// A well-formed request of `METHODS[method]` with random fields, encoded.
fn request(r: &mut Rng, method: usize) -> Vec<u8> {
    let ks = keyspace(r);
    match method {
        0 => GetRequest {
            keyspace: ks,
            key: key(r),
            consistency: consistency(r),
            stale_max_age_ms: staleness(r),
        }
        .encode_to_vec(),
        1 => PutRequest {
            keyspace: ks,
            key: key(r),
            value: value(r),
        }
        .encode_to_vec(),
        2 => DeleteRequest {
            keyspace: ks,
            key: key(r),
        }
        .encode_to_vec(),
        3 => BatchGetRequest {
            keyspace: ks,
            keys: keys(r),
            consistency: consistency(r),
            stale_max_age_ms: staleness(r),
        }
        .encode_to_vec(),
        4 => BatchPutRequest {
            keyspace: ks,
            pairs: keys(r)
                .into_iter()
                .map(|key| KvPair {
                    key,
                    value: r.bytes(16),
                })
                .collect(),
        }
        .encode_to_vec(),
        5 => ScanRequest {
            keyspace: ks,
            start: opt(r, key),
            end: opt(r, key),
            limit: *r.pick(&[0, 1, 3, 100, u32::MAX]),
            reverse: r.chance(2),
            resume: r.chance(3).then(|| r.bytes(24)),
            consistency: consistency(r),
            stale_max_age_ms: staleness(r),
        }
        .encode_to_vec(),
        6 => CompareAndSwapRequest {
            keyspace: ks,
            key: key(r),
            expected: opt(r, value),
            new_value: opt(r, value),
        }
        .encode_to_vec(),
        _ => DeleteRangeRequest {
            keyspace: ks,
            start: opt(r, key),
            end: opt(r, key),
            resume: r.chance(3).then(|| r.bytes(24)),
            max_regions: *r.pick(&[0, 1, 2, u32::MAX]),
        }
        .encode_to_vec(),
    }
}

/// A body for `METHODS[method]`: random bytes, a well-formed request, or a
/// well-formed request damaged one way (bytes flipped, cut, or added).
fn body(r: &mut Rng, method: usize) -> Vec<u8> {
    if r.chance(6) {
        return r.bytes(300);
    }
    let mut b = request(r, method);
    match r.below(5) {
        0 | 1 => {}
        2 => {
            for _ in 0..1 + r.below(3) {
                if !b.is_empty() {
                    let i = r.below(b.len() as u64) as usize;
                    b[i] ^= 1 + r.below(255) as u8;
                }
            }
        }
        3 => {
            let cut = r.below(b.len() as u64 + 1) as usize;
            b.truncate(cut);
        }
        _ => {
            let tail = r.bytes(16);
            b.extend(tail);
        }
    }
    b
}

/// Whether `answer` decodes as the response type of `METHODS[method]`.
fn decodes(method: usize, answer: &[u8]) -> bool {
    match method {
        0 => GetResponse::decode(answer).is_ok(),
        1 => PutResponse::decode(answer).is_ok(),
        2 => DeleteResponse::decode(answer).is_ok(),
        3 => BatchGetResponse::decode(answer).is_ok(),
        4 => BatchPutResponse::decode(answer).is_ok(),
        5 => ScanResponse::decode(answer).is_ok(),
        6 => CompareAndSwapResponse::decode(answer).is_ok(),
        _ => DeleteRangeResponse::decode(answer).is_ok(),
    }
}

fn check_alive(c: &mut E2eCluster, after: &str) {
    for r in c.routers.values_mut() {
        if r.proc.has_exited() {
            panic!("the router died after {after}:\n{}", r.proc.tail(40));
        }
    }
    for s in c.stores.values_mut() {
        if s.proc.has_exited() {
            panic!("a store died after {after}:\n{}", s.proc.tail(40));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_never_take_the_router_down() {
    let mut c = E2eCluster::start(Options {
        directories: 1,
        insecure: true,
        ..Default::default()
    })
    .await;
    c.add_router().await;
    let addr = c.router_addrs()[0].clone();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the router");
    let mut raw = tonic::client::Grpc::new(channel.clone());

    let cases = fuzz_cases();
    let mut rng = Rng(SmallRng::seed_from_u64(0x7e55_e7a0));
    let (mut answered, mut refused) = ([0usize; 8], [0usize; 8]);
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    let started = Instant::now();
    for case in 0..cases {
        let method = case % METHODS.len();
        let b = body(&mut rng, method);
        let len = b.len();
        let what = || {
            format!(
                "case {case}: {} with a {len}-byte body {:?}",
                METHODS[method],
                &b[..len.min(200)]
            )
        };
        raw.ready().await.expect("the router's channel");
        let path = PathAndQuery::try_from(format!("/routerpb.Router/{}", METHODS[method])).unwrap();
        let call = raw.unary(tonic::Request::new(b.clone()), path, RawCodec);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Err(_) => panic!("{} hung", what()),
            Ok(Ok(answer)) => {
                assert!(
                    decodes(method, answer.get_ref()),
                    "{}: the answer is not a {} response",
                    what(),
                    METHODS[method]
                );
                answered[method] += 1;
                // Every response has its `error` as field 1.
                let kind = PutResponse::decode(answer.get_ref().as_slice())
                    .ok()
                    .and_then(|r| r.error)
                    .map(|e| format!("{:?}", e.kind()))
                    .unwrap_or_else(|| "OK".into());
                *codes.entry(kind).or_default() += 1;
            }
            Ok(Err(status)) => {
                // A body that does not decode is refused by tonic; nothing
                // else may come back as a status from a healthy cluster,
                // but the kind of refusal is not the point here.
                refused[method] += 1;
                *codes
                    .entry(format!("status {:?}", status.code()))
                    .or_default() += 1;
                if status.code() == tonic::Code::Unavailable {
                    check_alive(&mut c, &what());
                }
            }
        }
        if case % 200 == 199 {
            check_alive(&mut c, &what());
        }
    }
    check_alive(&mut c, "the last case");
    eprintln!(
        "{cases} hostile calls in {:?}; answered {answered:?}, refused with a status {refused:?} (per RPC: {METHODS:?}); answers and statuses {codes:?}",
        started.elapsed()
    );
    // Enough of them decoded and were served by the router to test it.
    for (m, n) in answered.iter().enumerate() {
        assert!(
            *n * 3 > cases / METHODS.len(),
            "only {n} {} calls were served",
            METHODS[m]
        );
    }

    // The router serves as before.
    let mut client = RouterClient::new(channel);
    let put = client
        .put(PutRequest {
            keyspace: String::new(),
            key: b"after-the-fuzz".to_vec(),
            value: b"still here".to_vec(),
        })
        .await
        .expect("put after the fuzz")
        .into_inner();
    assert_eq!(put.error, None);
    let got = client
        .get(GetRequest {
            keyspace: String::new(),
            key: b"after-the-fuzz".to_vec(),
            consistency: 0,
            stale_max_age_ms: 0,
        })
        .await
        .expect("get after the fuzz")
        .into_inner();
    assert_eq!(
        (got.error, got.found, got.value.as_slice()),
        (None, true, &b"still here"[..])
    );
}
