//! Bad input gets a clear error and changes nothing.

use tessera_proto::errorpb::region_error::Error as Kind;
use tessera_proto::keys::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use tessera_proto::kvpb::{
    BatchGetRequest, BatchPutRequest, Context, GetRequest, KvPair, PutRequest,
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
