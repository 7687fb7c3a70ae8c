//! CI smoke of `tessera-bench ycsb` (no timing asserted): a few hundred
//! operations of workload A and of the scan workload E through the built
//! binary, against a small tessera cluster started here with the e2e
//! harness, and against a local etcd cluster (`scripts/deps` installs
//! Debian's etcd-server; without an `etcd` on the PATH the test fails).
//! Every run must finish with zero errors and JSON results that count the
//! operations asked for.
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

/// Runs `tessera-bench ycsb` with `extra` arguments; returns its JSON.
fn ycsb(dir: &Path, name: &str, extra: &[&str]) -> Value {
    let results = dir.join(format!("{name}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
        .arg("ycsb")
        .args(extra)
        .args(["--records", &RECORDS.to_string()])
        .args(["--operations", &OPERATIONS.to_string()])
        .args(["--threads", "8", "--connections", "2", "--no-series"])
        .arg("--results")
        .arg(&results)
        .output()
        .expect("run tessera-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tessera-bench ycsb {extra:?} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("READ") || stdout.contains("SCAN"),
        "{stdout}"
    );
    serde_json::from_str(&std::fs::read_to_string(&results).expect("results file"))
        .expect("results are JSON")
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
    let routers = c.router_addrs().join(",");
    let certs = c
        .certs
        .clone()
        .expect("a TLS cluster")
        .display()
        .to_string();
    let doc = tokio::task::spawn_blocking({
        let path = dir.path().to_path_buf();
        move || {
            ycsb(
                &path,
                "tessera",
                &[
                    "--system",
                    "tessera",
                    "--endpoints",
                    &routers,
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
    check(&doc, "tessera");
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
