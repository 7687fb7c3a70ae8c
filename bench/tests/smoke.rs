//! CI smoke of `tessera-bench ycsb` and `overload` (no timing asserted).
//! `ycsb`: a few hundred operations of workload A and of the scan
//! workload E through the built binary, against a small tessera cluster
//! started here with the e2e harness (through its router, and with the
//! SDK in direct mode), and against a local etcd cluster (`scripts/deps` installs
//! Debian's etcd-server; without an `etcd` on the PATH the test fails).
//! Every run must finish with zero errors and JSON results that count the
//! operations asked for. `overload`: see its test.
//!
//! Needs the server binaries (`cargo build --release --bins`, as
//! `scripts/test` does). Every process started here is stopped: the
//! cluster when dropped, the etcd members by `tessera-bench` itself.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tessera_e2e::{E2eCluster, Options};

const RECORDS: u64 = 200;
const OPERATIONS: u64 = 300;

/// Runs `tessera-bench` with `args` (and `TESSERA_ALLOW_TEST_BUILD=1`:
/// `scripts/test` points the harness at the test build, and nothing is
/// measured here); fails unless it succeeds. Returns its standard output
/// and the JSON it wrote to `results`.
fn bench(args: &[&str], results: &Path) -> (String, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
        .env("TESSERA_ALLOW_TEST_BUILD", "1")
        .args(args)
        .arg("--results")
        .arg(results)
        .output()
        .expect("run tessera-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tessera-bench {args:?} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    let doc = serde_json::from_str(&std::fs::read_to_string(results).expect("results file"))
        .expect("results are JSON");
    (stdout, doc)
}

/// Runs `tessera-bench ycsb` with `extra` arguments; returns its JSON.
fn ycsb(dir: &Path, name: &str, extra: &[&str]) -> Value {
    let (records, operations) = (RECORDS.to_string(), OPERATIONS.to_string());
    let mut args = vec!["ycsb"];
    args.extend_from_slice(extra);
    args.extend(["--records", &records, "--operations", &operations]);
    args.extend(["--threads", "8", "--connections", "2", "--no-series"]);
    let (stdout, doc) = bench(&args, &dir.join(format!("{name}.json")));
    assert!(
        stdout.contains("READ") || stdout.contains("SCAN"),
        "{stdout}"
    );
    doc
}

fn count(phase: &Value, op: &str) -> u64 {
    phase["ops"]
        .as_array()
        .expect("ops")
        .iter()
        .find(|o| o["op"] == op)
        .map(|o| o["count"].as_u64().expect("count"))
        .unwrap_or(0)
}

/// Every workload in `doc` loaded RECORDS records and ran OPERATIONS
/// operations of its mix, without an error.
fn check(doc: &Value, system: &str) {
    let results = doc["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "workloads A and E");
    for r in results {
        let w = r["workload"].as_str().unwrap();
        assert_eq!(r["system"], system);
        let load = &r["load"];
        assert_eq!(load["operations"].as_u64(), Some(RECORDS), "{w} load");
        assert_eq!(load["errors"].as_u64(), Some(0), "{w} load errors");
        assert_eq!(count(load, "INSERT"), RECORDS);
        let run = &r["run"];
        assert_eq!(run["operations"].as_u64(), Some(OPERATIONS), "{w} run");
        assert_eq!(
            run["errors"].as_u64(),
            Some(0),
            "{w}: {}",
            run["first_errors"]
        );
        let ops = match w {
            "A" => count(run, "READ") + count(run, "UPDATE"),
            "E" => count(run, "SCAN") + count(run, "INSERT"),
            other => panic!("unexpected workload {other}"),
        };
        assert_eq!(ops, OPERATIONS, "{w}: every operation of the mix counted");
        assert!(run["series"].as_array().is_some_and(|s| !s.is_empty()));
        assert!(run["latency_us"]["p99"].as_u64().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ycsb_against_tessera() {
    // TLS, as the cluster runs by default: the bench presents the client
    // certificate admin from the cluster's certificates directory.
    let mut c = E2eCluster::start(Options::default()).await;
    c.add_router().await;
    c.wait_settled(1).await;
    let dir = tempfile::tempdir().unwrap();
    let certs = c
        .certs
        .clone()
        .expect("a TLS cluster")
        .display()
        .to_string();
    // Requests the stores were sent in `BatchCommands` streams.
    let streamed = |c: &E2eCluster| -> f64 {
        c.stores
            .values()
            .filter_map(|s| {
                tessera_e2e::metric_value(&s.status, "tessera_kv_stream_requests_total")
            })
            .sum()
    };
    // Through the router, then with the SDK in direct mode (no router in
    // the path: its endpoints are the directory's).
    for (system, endpoints) in [
        ("tessera", c.router_addrs().join(",")),
        ("tessera-direct", c.directory_addrs().join(",")),
    ] {
        let before = streamed(&c);
        let doc = tokio::task::spawn_blocking({
            let (path, certs) = (dir.path().to_path_buf(), certs.clone());
            move || {
                ycsb(
                    &path,
                    system,
                    &[
                        "--system",
                        system,
                        "--endpoints",
                        &endpoints,
                        "--certs-dir",
                        &certs,
                        "--workload",
                        "A,E",
                    ],
                )
            }
        })
        .await
        .unwrap();
        check(&doc, system);
        // The point requests went over the stores' streams, many per
        // message (the router's, then the SDK's own).
        let carried = streamed(&c) - before;
        assert!(
            carried >= OPERATIONS as f64,
            "{system}: {carried} requests came in BatchCommands streams"
        );
    }
}

#[test]
fn ycsb_against_etcd() {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("etcd").is_file()))
        .unwrap_or(false);
    assert!(
        on_path,
        "no etcd binary on the PATH: scripts/deps installs Debian's etcd-server"
    );
    let dir = tempfile::tempdir().unwrap();
    // Without --endpoints the bench starts (and stops) a 3-member etcd, by
    // default with client-certificate auth and peer TLS.
    let doc = ycsb(
        dir.path(),
        "etcd",
        &["--system", "etcd", "--workload", "A,E"],
    );
    check(&doc, "etcd");
}

/// `tessera-bench overload`, short: every phase — capacity, open loop at
/// 0.8× and 2×, the hostile mix — against a local tessera and a local
/// etcd cluster (TLS, as both run by default). No server process dies,
/// each phase has a row, every attack is tried, tessera answers a batch
/// get naming one key many times with that key once and an unbounded scan
/// with every value, and the plot is written. Every process is started
/// and stopped by `tessera-bench` itself.
#[test]
fn overload_runs_every_phase_against_tessera_and_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("overload.json");
    let plot = dir.path().join("overload.svg");
    let plot_arg = plot.display().to_string();
    let (stdout, doc) = bench(
        &[
            "overload",
            "--records",
            "300",
            "--threads",
            "8",
            "--capacity-secs",
            "2",
            "--multipliers",
            "0.8,2",
            "--step-secs",
            "2",
            "--hostile-secs",
            "4",
            "--batch-senders",
            "1",
            "--scan-senders",
            "1",
            "--slow-connections",
            "2",
            "--slow-streams",
            "2",
            "--idle-connections",
            "50",
            "--plot",
            &plot_arg,
        ],
        &results,
    );
    assert!(stdout.contains("no server process died"), "{stdout}");
    let systems = doc["results"].as_array().expect("results");
    assert_eq!(systems.len(), 2);
    for s in systems {
        let name = s["system"].as_str().unwrap();
        assert!(s["capacity_per_s"].as_f64().unwrap() > 0.0, "{name}");
        assert_eq!(s["dead"].as_array().unwrap().len(), 0, "{name}");
        let phases: Vec<&str> = s["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["phase"].as_str().unwrap())
            .collect();
        assert_eq!(
            phases,
            [
                "capacity (closed loop)",
                "0.8× open loop",
                "2× open loop",
                "hostile + 0.8× open loop"
            ],
            "{name}"
        );
        for r in s["rows"].as_array().unwrap() {
            assert!(r["ok"].as_u64().unwrap() > 0, "{name}: {r}");
            assert!(!r["peak_rss_mib"].as_object().unwrap().is_empty());
        }
        let attacks = s["attacks"].as_array().unwrap();
        assert_eq!(attacks.len(), 4, "{name}");
        for a in attacks {
            assert!(a["attempts"].as_u64().unwrap() > 0, "{name}: {a}");
        }
        if name == "tessera" {
            // Each distinct key once, every value of the scan, in pages.
            let outcomes = |i: usize| attacks[i]["outcomes"].as_object().unwrap().clone();
            let batch = outcomes(0);
            assert!(batch.contains_key("ok (1 value(s))"), "{batch:?}");
            let scan = outcomes(1);
            assert!(scan.contains_key("ok (64 values)"), "{scan:?}");
        }
    }
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(
        svg.contains("<svg") && svg.contains("goodput"),
        "an SVG plot"
    );
}
