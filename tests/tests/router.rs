//! The user's path end to end: the SDK talks to `tessera-router`
//! processes, which route to `tessera-store` processes found through the
//! `tessera-directory`, while the `tessera` CLI splits, moves and transfers
//! regions — all separate OS processes on 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tessera_client::{Backoff, Client};
use tessera_e2e::{E2eCluster, Options};

fn key(i: usize) -> String {
    format!("user{i:06}")
}

async fn client(c: &E2eCluster) -> Client {
    Client::builder()
        .endpoints(c.router_addrs())
        .security(c.security())
        .timeout(Duration::from_secs(30))
        .backoff(Backoff {
            min: Duration::from_millis(10),
            max: Duration::from_millis(300),
        })
        .build()
        .await
        .expect("client")
}

/// Runs the `tessera` CLI against the cluster; returns stdout, panics
/// with stderr on failure.
///
/// An admin command on a region the scheduler is working on is refused
/// ("operator ... in progress"), as it would be for a person; the command
/// is retried then, for up to a minute.
fn cli(c: &E2eCluster, args: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match c.try_cli(args) {
            Ok(out) => return out,
            Err(e) if e.contains("in progress") && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => panic!("tessera {args:?} failed: {e}"),
        }
    }
}

/// Runs the admin command `plan` builds from a fresh look at the cluster.
/// The scheduler moves regions too, so a command built from a view that
/// just went stale is refused ("already has a replica", "in progress"), or
/// its operator is dropped; it is then planned again. Returns whether a command succeeded.
fn admin(c: &E2eCluster, plan: impl Fn(&E2eCluster) -> Option<Vec<String>>) -> bool {
    for _ in 0..4 {
        let Some(args) = plan(c) else {
            std::thread::sleep(Duration::from_millis(300));
            continue;
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match c.try_cli(&args) {
            Ok(_) => return true,
            // Also an operator the directory gave up on (its timeout) is
            // planned again, as a person would.
            Err(e)
                if e.contains("in progress")
                    || e.contains("replica")
                    || e.contains("no longer runs operator")
                    || e.contains("gave up waiting") =>
            {
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => panic!("tessera {args:?} failed: {e}"),
        }
    }
    false
}

fn regions_json(c: &E2eCluster) -> Vec<serde_json::Value> {
    let text = cli(c, &["region", "list", "-o", "json"]);
    serde_json::from_str::<Vec<serde_json::Value>>(&text).expect("region list JSON")
}

/// Writes keys `range` with `writers` concurrent tasks; returns the value
/// acknowledged for each key. Every write must end acknowledged (the
/// SDK's deadline covers the operations going on).
async fn write_keys(
    client: &Client,
    range: std::ops::Range<usize>,
    writers: usize,
    done: Arc<AtomicUsize>,
) -> BTreeMap<String, String> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let client = client.clone();
        let next = next.clone();
        let done = done.clone();
        let end = range.end;
        tasks.push(tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= end {
                    return acked;
                }
                let (k, v) = (key(i), format!("value-{i}-{}", "x".repeat(200)));
                // This task is the only writer of `k`, so after an
                // indeterminate outcome putting the same value again is
                // safe: that is the application's call, not the SDK's.
                loop {
                    match client.put(&k, &v).await {
                        Ok(()) => {
                            acked.insert(k, v);
                            break;
                        }
                        Err(e) if e.is_indeterminate() => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("put {k}: {e}"),
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let mut acked = BTreeMap::new();
    for t in tasks {
        acked.extend(t.await.expect("writer"));
    }
    acked
}

/// Every acknowledged key reads back its value, and a full scan returns
/// exactly the written keys, once each, in order.
async fn check_reads(client: &Client, acked: &BTreeMap<String, String>) {
    for (k, v) in acked {
        let got = client.get(k).await.expect("get");
        assert_eq!(
            got.as_deref(),
            Some(v.as_bytes()),
            "{k} lost its acknowledged value"
        );
    }
    let mut scanned = Vec::new();
    let mut start = b"user".to_vec();
    loop {
        let page = client
            .scan(start.clone()..b"user~".to_vec(), 1000)
            .await
            .expect("scan");
        let Some(last) = page.last() else { break };
        start = last.key.clone();
        start.push(0);
        scanned.extend(page.into_iter().map(|p| p.key));
    }
    let want: Vec<Vec<u8>> = acked.keys().map(|k| k.as_bytes().to_vec()).collect();
    assert_eq!(scanned.len(), want.len(), "scan returns every key once");
    assert!(scanned == want, "scan returns the keys in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sdk_writes_while_regions_split_move_and_leaders_transfer() {
    let mut c = E2eCluster::start(Options {
        stores: 4,
        // Small regions: ~4.5 MB of data splits automatically several times.
        region_split_size_mib: 1,
        ..Default::default()
    })
    .await;
    c.add_router().await;
    c.add_router().await;
    let client = client(&c).await;
    let done = Arc::new(AtomicUsize::new(0));

    let writer = {
        let client = client.clone();
        let done = done.clone();
        tokio::spawn(async move { write_keys(&client, 0..20_000, 16, done).await })
    };

    // The admin's part, through the CLI, while the writes go on.
    let mut splits = 0;
    let mut moves = 0;
    let mut transfers = 0;
    let mut round = 0;
    while !writer.is_finished() && round < 6 {
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Split the region holding a key written a moment ago, at that
        // key (a key of no automatic split: it is not a written key).
        let at = format!("{}-split", key(done.load(Ordering::SeqCst) / 2));
        let holder: serde_json::Value =
            serde_json::from_str(&cli(&c, &["region", "show", "--key", &at, "-o", "json"]))
                .expect("region JSON");
        let id = holder["id"].as_u64().unwrap().to_string();
        cli(&c, &["region", "split", &id, "--at", &at]);
        splits += 1;

        // Move one replica to a store that lacks it.
        if admin(&c, |c| {
            let regions = regions_json(c);
            let region = &regions[round % regions.len()];
            let on: Vec<u64> = region["peers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["store_id"].as_u64().unwrap())
                .collect();
            let text = cli(c, &["store", "list", "-o", "json"]);
            let stores: Vec<serde_json::Value> = serde_json::from_str(&text).expect("store JSON");
            let to = stores
                .iter()
                .map(|s| s["id"].as_u64().unwrap())
                .find(|s| !on.contains(s))?;
            let from = on
                .iter()
                .find(|s| Some(**s) != region["leader_store"].as_u64())?;
            Some(vec![
                "region".into(),
                "move".into(),
                region["id"].as_u64().unwrap().to_string(),
                "--from".into(),
                from.to_string(),
                "--to".into(),
                to.to_string(),
                // Bounded: a move whose operator stalls is given up (and
                // planned again) instead of holding the test.
                "--wait-timeout".into(),
                "60".into(),
            ])
        }) {
            moves += 1;
        }

        // Hand its leadership to another replica.
        if admin(&c, |c| {
            let regions = regions_json(c);
            let region = &regions[round % regions.len()];
            let leader = region["leader_store"].as_u64();
            let to = region["peers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["role"] == "voter")
                .map(|p| p["store_id"].as_u64().unwrap())
                .find(|s| Some(*s) != leader)?;
            Some(vec![
                "region".into(),
                "transfer-leader".into(),
                region["id"].as_u64().unwrap().to_string(),
                "--to".into(),
                to.to_string(),
            ])
        }) {
            transfers += 1;
        }
    }
    let acked = writer.await.expect("writer");
    assert_eq!(acked.len(), 20_000);
    assert!(splits > 0 && moves > 0 && transfers > 0, "the admin ran");

    let regions = regions_json(&c);
    assert!(
        regions.len() > splits + 1,
        "regions also split on their own: {} regions after {splits} admin splits",
        regions.len()
    );
    check_reads(&client, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_router_killed_mid_load_fails_over_without_losing_writes() {
    let mut c = E2eCluster::start(Options::default()).await;
    let first = c.add_router().await;
    c.add_router().await;
    // The first router first: the SDK starts there and must move on.
    let client = client(&c).await;
    let done = Arc::new(AtomicUsize::new(0));
    let writer = {
        let client = client.clone();
        let done = done.clone();
        tokio::spawn(async move { write_keys(&client, 0..4_000, 8, done).await })
    };
    c.wait_for("a quarter of the writes", Duration::from_secs(60), |_| {
        let done = done.clone();
        async move { done.load(Ordering::SeqCst) >= 1_000 }
    })
    .await;
    c.routers.get_mut(&first).unwrap().proc.kill();
    let at_kill = done.load(Ordering::SeqCst);

    let acked = writer.await.expect("writer");
    assert!(
        at_kill < 4_000,
        "the router died while writes were going on"
    );
    assert_eq!(acked.len(), 4_000, "every write was acknowledged");
    check_reads(&client, &acked).await;
}

/// A scan or batch get over large values comes back in pages the router
/// bounds (4 MiB of keys and values, plus at most one value), each saying
/// where the next starts; the SDK follows them to the whole answer, and a
/// key named 300 times is read and answered once. (Once, one batch get
/// naming an 8 MiB value 300 times drove a server to 4.9 GB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_scans_and_batch_gets_come_back_in_bounded_pages() {
    use tessera_proto::routerpb::{router_client::RouterClient, BatchGetRequest, ScanRequest};

    let mut c = E2eCluster::start(Options::default()).await;
    c.add_router().await;
    let client = client(&c).await;
    let big = vec![7u8; 1 << 20];
    let names: Vec<String> = (0..12).map(|i| format!("big{i:02}")).collect();
    for k in &names {
        client.put(k, &big).await.unwrap();
    }
    let keys_of = |pairs: &[tessera_client::KvPair]| {
        pairs
            .iter()
            .map(|p| String::from_utf8(p.key.clone()).unwrap())
            .collect::<Vec<_>>()
    };
    // The SDK: whole answers, however many pages.
    let all = client.scan("big".."bih", 0).await.unwrap();
    assert_eq!(keys_of(&all), names);
    assert!(all.iter().all(|p| p.value == big));
    let reversed = client.scan_reverse("big".."bih", 0).await.unwrap();
    assert_eq!(
        keys_of(&reversed),
        names.iter().rev().cloned().collect::<Vec<_>>()
    );
    assert_eq!(
        keys_of(&client.scan("big".."bih", 7).await.unwrap()),
        names[..7]
    );
    let asked: Vec<String> = std::iter::repeat_n(names[3].clone(), 300)
        .chain(names.iter().cloned())
        .collect();
    let got = client.batch_get(&asked).await.unwrap();
    let mut expected = vec![names[3].clone()];
    expected.extend(names.iter().filter(|n| **n != names[3]).cloned());
    assert_eq!(
        keys_of(&got),
        expected,
        "each key once, in the order first named"
    );

    // The wire: one page is bounded and says where to go on.
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", c.router_addrs()[0])).unwrap();
    let mut router = RouterClient::new(c.security().connect(endpoint).await.unwrap())
        .max_decoding_message_size(64 << 20);
    let request = |resume: Option<Vec<u8>>| ScanRequest {
        keyspace: String::new(),
        start: Some(b"big".to_vec()),
        end: Some(b"bih".to_vec()),
        limit: 0,
        reverse: false,
        resume,
        consistency: 0,
        stale_max_age_ms: 0,
    };
    let mut resume = None;
    let mut pages = 0;
    let mut seen = vec![];
    loop {
        let page = router
            .scan(request(resume.take()))
            .await
            .unwrap()
            .into_inner();
        assert!(page.error.is_none(), "{:?}", page.error);
        let bytes: usize = page.pairs.iter().map(|p| p.key.len() + p.value.len()).sum();
        assert!(
            bytes <= (4 << 20) + (1 << 20) + 64,
            "a page of {bytes} bytes"
        );
        seen.extend(
            page.pairs
                .into_iter()
                .map(|p| String::from_utf8(p.key).unwrap()),
        );
        pages += 1;
        match page.resume {
            Some(r) => resume = Some(r),
            None => break,
        }
    }
    assert_eq!(seen, names);
    assert!(pages >= 3, "12 MiB came in {pages} page(s)");
    // A resume token from outside the range is refused, not followed.
    let bad = router
        .scan(request(Some(b"\xff\xff\xff\xff".to_vec())))
        .await
        .unwrap()
        .into_inner();
    let e = bad.error.expect("a foreign resume token was followed");
    assert_eq!(
        e.kind(),
        tessera_proto::routerpb::error::Kind::InvalidArgument,
        "{}",
        e.message
    );
    assert!(bad.pairs.is_empty());
    let page = router
        .batch_get(BatchGetRequest {
            keyspace: String::new(),
            keys: asked.iter().map(|k| k.as_bytes().to_vec()).collect(),
            consistency: 0,
            stale_max_age_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        page.pairs.len() < 12 && page.resume_index > 0,
        "{} pairs, resume at {}",
        page.pairs.len(),
        page.resume_index
    );
    // Too many keys in one batch: bad input, nothing read.
    let too_many = router
        .batch_get(BatchGetRequest {
            keyspace: String::new(),
            keys: vec![b"k".to_vec(); tessera_proto::limits::MAX_BATCH_KEYS + 1],
            consistency: 0,
            stale_max_age_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        too_many.error.map(|e| e.kind()),
        Some(tessera_proto::routerpb::error::Kind::InvalidArgument)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_deletes_ranges_with_progress_and_resume_and_runs_batches_and_cas() {
    let mut c = E2eCluster::start(Options::default()).await;
    c.add_router().await;
    let client = client(&c).await;
    for i in 0..48 {
        client.put(format!("dr{i:03}"), "gone").await.unwrap();
    }
    client.put("ds-kept", "stays").await.unwrap();
    client.put("dq-kept", "stays").await.unwrap();
    // The range over four regions.
    for at in ["dr010", "dr020", "dr030"] {
        let key =
            tessera_proto::keys::encode(tessera_proto::keys::DEFAULT_KEYSPACE_ID, at.as_bytes());
        let regions = tessera_e2e::scan_regions(&c.directory_conn())
            .await
            .unwrap();
        let id = regions
            .iter()
            .filter_map(|r| r.region.as_ref())
            .find(|r| r.start_key <= key && (r.end_key.is_empty() || key < r.end_key))
            .map(|r| r.id.to_string())
            .expect("a region holds the key");
        cli(&c, &["region", "split", &id, "--at", at]);
    }

    // One step by hand (the SDK), then the CLI resumes where it stopped.
    let ks = client.keyspace("default");
    let step = ks
        .delete_range_step("dr".."ds", None, 1)
        .await
        .expect("one step");
    assert_eq!(step.regions, 1);
    let resume = step.resume.expect("more regions remain");
    let hex: String = resume.iter().map(|b| format!("{b:02x}")).collect();
    let out = cli(
        &c,
        &[
            "-o",
            "json",
            "delete-range",
            "--start",
            "dr",
            "--end",
            "ds",
            "--resume",
            &hex,
        ],
    );
    let done: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(done["ok"], true, "{out}");
    assert!(done["regions"].as_u64().unwrap() >= 3, "{out}");
    assert!(client.scan("dr".."ds", 0).await.unwrap().is_empty());
    assert_eq!(
        client.get("ds-kept").await.unwrap().as_deref(),
        Some(&b"stays"[..])
    );
    assert_eq!(
        client.get("dq-kept").await.unwrap().as_deref(),
        Some(&b"stays"[..])
    );

    // A resume point that is not one is refused before anything is deleted.
    let err = c
        .try_cli(&[
            "delete-range",
            "--start",
            "a",
            "--end",
            "b",
            "--resume",
            "xyz",
        ])
        .unwrap_err();
    assert!(err.contains("--resume"), "{err}");
    let err = c
        .try_cli(&[
            "delete-range",
            "--start",
            "dq",
            "--end",
            "dr",
            "--resume",
            &hex,
        ])
        .unwrap_err();
    assert!(err.contains("resume"), "{err}");
    assert_eq!(
        client.get("dq-kept").await.unwrap().as_deref(),
        Some(&b"stays"[..])
    );

    // The batch commands and compare-and-swap, across the split regions.
    let out = cli(&c, &["batch-put", "dr005=a", "dr015=b=c", "dr025="]);
    assert!(out.contains("OK (3 keys)"), "{out}");
    let out = cli(
        &c,
        &["-o", "json", "batch-get", "dr025", "dr015", "nope", "dr005"],
    );
    let got: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        got,
        serde_json::json!([
            {"key": "dr025", "found": true, "value": ""},
            {"key": "dr015", "found": true, "value": "b=c"},
            {"key": "nope", "found": false},
            {"key": "dr005", "found": true, "value": "a"},
        ])
    );
    let table = cli(&c, &["batch-get", "nope", "dr005"]);
    assert!(
        table.contains("(not found)") && table.contains('a'),
        "{table}"
    );
    let err = c.try_cli(&["batch-put", "dr006=x", "novalue"]).unwrap_err();
    assert!(err.contains("\"novalue\" has no '='"), "{err}");
    assert_eq!(client.get("dr006").await.unwrap(), None, "nothing written");

    let err = c
        .try_cli(&["cas", "dr005", "--expect", "zzz", "--new", "b"])
        .unwrap_err();
    assert!(err.contains("holds \"a\""), "{err}");
    let out = cli(
        &c,
        &["-o", "json", "cas", "dr005", "--expect", "a", "--new", "b"],
    );
    let swapped: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        swapped,
        serde_json::json!({"key": "dr005", "succeeded": true, "previous": "a"})
    );
    let err = c
        .try_cli(&["cas", "dr005", "--expect-absent", "--new", "c"])
        .unwrap_err();
    assert!(err.contains("not swapped"), "{err}");
    cli(&c, &["cas", "dr005", "--expect", "b", "--delete"]);
    assert_eq!(client.get("dr005").await.unwrap(), None);
    cli(&c, &["cas", "dr005", "--expect-absent", "--new", "back"]);
    assert_eq!(
        client.get("dr005").await.unwrap().as_deref(),
        Some(&b"back"[..])
    );
}
