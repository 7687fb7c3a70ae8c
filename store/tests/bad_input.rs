//! Bad input gets a clear error and changes nothing; random and mutated
//! request bytes never crash or hang the store.

use std::time::Duration;
use tessera_proto::errorpb::region_error::Error as Kind;
use tessera_proto::keys::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

use tessera_proto::kvpb::{
    BatchGetRequest, BatchPutRequest, CompareAndSwapRequest, Context, DeleteRangeRequest,
    DeleteRequest, GetRequest, KvPair, PutRequest, ScanRequest,
};
use tessera_proto::limits::MAX_BATCH_KEYS;
use tessera_proto::metapb::RegionEpoch;
use tessera_store::Error;
use tessera_testkit::{key, Cluster, ClusterOptions, KvEndpoint, TransportKind};

async fn check(cluster: &Cluster, endpoint: &KvEndpoint, leader: u64, grpc: bool) {
    let region = cluster.regions()[0].clone();
    let ctx = Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: tessera_multiraft::region::find_peer_on_store(&region, leader).cloned(),
        follower_read: false,
        stale_max_age_ms: 0,
    };
    let put = |ctx: &Context, k: Vec<u8>, v: Vec<u8>| PutRequest {
        context: Some(*ctx),
        key: k,
        value: v,
    };
    let invalid = |r: tessera_store::Result<tessera_proto::kvpb::PutResponse>, what: &str| match r {
        Err(Error::InvalidArgument(m)) => {
            assert!(m.contains(what), "message {m:?} should mention {what:?}")
        }
        other => panic!("expected InvalidArgument about {what}, got {other:?}"),
    };

    invalid(
        endpoint.put(put(&ctx, key(""), b"v".to_vec())).await,
        "empty",
    );
    invalid(
        endpoint
            .put(put(&ctx, key(vec![b'k'; MAX_KEY_BYTES + 1]), b"v".to_vec()))
            .await,
        "limit",
    );
    invalid(
        endpoint
            .put(put(&ctx, key("big"), vec![0; MAX_VALUE_BYTES + 1]))
            .await,
        "limit",
    );
    invalid(
        endpoint.put(put(&ctx, vec![1, 2], b"v".to_vec())).await,
        "prefix",
    );

    // A stale read's bound: only on a follower read, 1 ms to an hour.
    for (follower_read, ms, what) in [
        (false, 5, "not a follower read"),
        (true, 3_600_001, "1 to 3600000 ms"),
    ] {
        let stale = Context {
            follower_read,
            stale_max_age_ms: ms,
            ..ctx
        };
        match endpoint
            .get(GetRequest {
                context: Some(stale),
                key: key("k"),
            })
            .await
        {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("expected InvalidArgument about {what}, got {other:?}"),
        }
    }

    // More keys than a batch may name, even the same key over and over.
    let too_many = endpoint
        .batch_get(BatchGetRequest {
            context: Some(ctx),
            keys: vec![key("k"); MAX_BATCH_KEYS + 1],
        })
        .await;
    match too_many {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("limit"), "{m}"),
        other => panic!("expected InvalidArgument for an oversized batch get, got {other:?}"),
    }
    let too_many = endpoint
        .batch_put(BatchPutRequest {
            context: Some(ctx),
            pairs: vec![
                KvPair {
                    key: key("k"),
                    value: b"v".to_vec(),
                };
                MAX_BATCH_KEYS + 1
            ],
        })
        .await;
    match too_many {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("limit"), "{m}"),
        other => panic!("expected InvalidArgument for an oversized batch put, got {other:?}"),
    }

    // Unknown region.
    let mut unknown = ctx;
    unknown.region_id = 999_999;
    let r = endpoint
        .put(put(&unknown, key("u"), b"v".to_vec()))
        .await
        .unwrap();
    assert!(matches!(
        r.region_error.unwrap().error,
        Some(Kind::RegionNotFound(_))
    ));

    // Stale epoch: refused with the current region.
    let mut stale = ctx;
    stale.region_epoch = Some(RegionEpoch::new(1, 0));
    let r = endpoint
        .put(put(&stale, key("s"), b"v".to_vec()))
        .await
        .unwrap();
    match r.region_error.unwrap().error {
        Some(Kind::EpochNotMatch(e)) => assert_eq!(e.current_regions, vec![region.clone()]),
        other => panic!("expected EpochNotMatch, got {other:?}"),
    }
    let r = endpoint
        .get(GetRequest {
            context: Some(stale),
            key: key("s"),
        })
        .await
        .unwrap();
    assert!(matches!(
        r.region_error.unwrap().error,
        Some(Kind::EpochNotMatch(_))
    ));

    // Wrong store.
    let mut wrong = ctx;
    let mut peer = wrong.peer.unwrap();
    peer.store_id = leader % 3 + 1;
    wrong.peer = Some(peer);
    let r = endpoint
        .put(put(&wrong, key("w"), b"v".to_vec()))
        .await
        .unwrap();
    match r.region_error.unwrap().error {
        Some(Kind::StoreNotMatch(s)) => assert_eq!(s.actual_store_id, leader),
        other => panic!("expected StoreNotMatch, got {other:?}"),
    }

    // Nothing of the above was written.
    let written = cluster.scan(&key(""), &[]).await.unwrap();
    assert!(
        written.is_empty(),
        "bad requests wrote {} keys ({grpc})",
        written.len()
    );
    // A request at the limits is fine.
    let ok = endpoint
        .put(put(
            &ctx,
            key(vec![b'k'; MAX_KEY_BYTES]),
            vec![7; MAX_VALUE_BYTES],
        ))
        .await
        .unwrap();
    assert!(ok.region_error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    for transport in [TransportKind::Memory, TransportKind::Grpc] {
        let cluster = Cluster::start(ClusterOptions::new(3).transport(transport))
            .await
            .unwrap();
        let regions = cluster.bootstrap_regions(&[]).await.unwrap();
        let leader = cluster.leader_of(regions[0].id).await.unwrap();
        let endpoint = cluster.endpoint(leader).unwrap();
        check(
            &cluster,
            &endpoint,
            leader,
            transport == TransportKind::Grpc,
        )
        .await;
        cluster.shutdown().await;
    }
}

/// How many random and mutated requests [`random_and_mutated_requests_never_crash_the_store`]
/// sends: `TESSERA_FUZZ_CASES`, or a CI-sized default.
fn fuzz_cases() -> usize {
    std::env::var("TESSERA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// One fuzz case: which Kv operation, and the bytes of its request —
/// random, or a valid request's bytes with some flipped, cut or added.
#[derive(Debug, Clone)]
enum Bytes {
    Random(Vec<u8>),
    Mutated {
        flips: Vec<(usize, u8)>,
        cut: Option<usize>,
        tail: Vec<u8>,
    },
}

fn bytes_strategy() -> impl proptest::strategy::Strategy<Value = (u8, Bytes)> {
    use proptest::prelude::*;
    let random = proptest::collection::vec(any::<u8>(), 0..600).prop_map(Bytes::Random);
    // One kind of damage at a time, so that many still decode and reach
    // the store.
    let flips = proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4).prop_map(|flips| {
        Bytes::Mutated {
            flips,
            cut: None,
            tail: vec![],
        }
    });
    let cut = any::<usize>().prop_map(|c| Bytes::Mutated {
        flips: vec![],
        cut: Some(c),
        tail: vec![],
    });
    let tail = proptest::collection::vec(any::<u8>(), 1..16).prop_map(|tail| Bytes::Mutated {
        flips: vec![],
        cut: None,
        tail,
    });
    (
        0u8..8,
        prop_oneof![1 => random, 3 => flips, 1 => cut, 1 => tail],
    )
}

/// A valid request of operation `op` in the cluster's region, encoded.
fn valid_request(op: u8, ctx: &Context) -> Vec<u8> {
    use prost::Message as _;
    let ctx = Some(*ctx);
    let pair = |k: &str| KvPair {
        key: key(k),
        value: b"v".to_vec(),
    };
    match op {
        0 => GetRequest {
            context: ctx,
            key: key("a"),
        }
        .encode_to_vec(),
        1 => PutRequest {
            context: ctx,
            key: key("a"),
            value: b"v".to_vec(),
        }
        .encode_to_vec(),
        2 => DeleteRequest {
            context: ctx,
            key: key("a"),
        }
        .encode_to_vec(),
        3 => BatchGetRequest {
            context: ctx,
            keys: vec![key("a"), key("b")],
        }
        .encode_to_vec(),
        4 => BatchPutRequest {
            context: ctx,
            pairs: vec![pair("a"), pair("b")],
        }
        .encode_to_vec(),
        5 => ScanRequest {
            context: ctx,
            start_key: key("a"),
            end_key: key("z"),
            limit: 10,
            ..Default::default()
        }
        .encode_to_vec(),
        6 => CompareAndSwapRequest {
            context: ctx,
            key: key("a"),
            expected_value: b"v".to_vec(),
            new_value: b"w".to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
        _ => DeleteRangeRequest {
            context: ctx,
            start_key: key("a"),
            end_key: key("b"),
        }
        .encode_to_vec(),
    }
}

/// Decodes `bytes` as operation `op`'s request and, if they decode, sends
/// it. Any answer will do; a panic fails the test.
async fn send_decoded(endpoint: &KvEndpoint, op: u8, bytes: &[u8]) -> bool {
    use prost::Message as _;
    macro_rules! send {
        ($req:ty, $call:ident) => {
            match <$req>::decode(bytes) {
                Ok(req) => {
                    let _ = tokio::time::timeout(Duration::from_secs(10), endpoint.$call(req))
                        .await
                        .expect("a request hung the store");
                    true
                }
                Err(_) => false,
            }
        };
    }
    match op {
        0 => send!(GetRequest, get),
        1 => send!(PutRequest, put),
        2 => send!(DeleteRequest, delete),
        3 => send!(BatchGetRequest, batch_get),
        4 => send!(BatchPutRequest, batch_put),
        5 => send!(ScanRequest, scan),
        6 => send!(CompareAndSwapRequest, compare_and_swap),
        _ => send!(DeleteRangeRequest, delete_range),
    }
}

/// The store's Kv API under random and mutated request bytes (decoded as
/// the gRPC layer would, then served): no panic, no hang, and the store
/// serves as before. `TESSERA_FUZZ_CASES=200000` runs it for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_requests_never_crash_the_store() {
    use proptest::strategy::{Strategy as _, ValueTree as _};
    let cluster = Cluster::start(ClusterOptions::new(3)).await.unwrap();
    let regions = cluster.bootstrap_regions(&[]).await.unwrap();
    let region = regions[0].clone();
    let leader = cluster.leader_of(region.id).await.unwrap();
    let endpoint = cluster.endpoint(leader).unwrap();
    let ctx = Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: tessera_multiraft::region::find_peer_on_store(&region, leader).cloned(),
        follower_read: false,
        stale_max_age_ms: 0,
    };
    let strategy = bytes_strategy();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut decoded, cases) = (0usize, fuzz_cases());
    for _ in 0..cases {
        let (op, plan) = strategy.new_tree(&mut runner).unwrap().current();
        let bytes = match plan {
            Bytes::Random(b) => b,
            Bytes::Mutated { flips, cut, tail } => {
                let mut b = valid_request(op, &ctx);
                for (at, x) in flips {
                    if !b.is_empty() {
                        let i = at % b.len();
                        b[i] ^= x;
                    }
                }
                if let Some(c) = cut {
                    b.truncate(c % (b.len() + 1));
                }
                b.extend(tail);
                b
            }
        };
        if send_decoded(&endpoint, op, &bytes).await {
            decoded += 1;
        }
    }
    eprintln!("{decoded} of {cases} random or mutated requests decoded and were served");
    assert!(
        decoded > cases / 10,
        "too few cases decoded ({decoded} of {cases}) to test anything"
    );
    // The store still serves.
    let put = endpoint
        .put(PutRequest {
            context: Some(ctx),
            key: key("after"),
            value: b"fuzz".to_vec(),
        })
        .await
        .unwrap();
    assert!(put.region_error.is_none(), "{put:?}");
    let got = endpoint
        .get(GetRequest {
            context: Some(ctx),
            key: key("after"),
        })
        .await
        .unwrap();
    assert_eq!(got.value, b"fuzz");
    cluster.shutdown().await;
}
