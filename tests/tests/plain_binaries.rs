//! The binaries users run are plain builds: right after `scripts/test`
//! (which builds and runs a test build with fault endpoints), the clusters
//! of `deploy/local/cluster` and of the benchmarks export
//! `tessera_build_info{features="none"}` from every process, and a store's
//! `PUT /fail/{name}` answers 404. `deploy/local/cluster` and the
//! benchmarks refuse the test build outright.
//!
//! Ignored in the main run, whose binaries are the test build:
//! `scripts/test` runs these last, after linking the plain binaries back,
//! with `TESSERA_FAILPOINTS_BIN_DIR` naming the test build's copies. By
//! hand: `cargo build --release --bins && cargo test --release -p
//! tessera-e2e --test plain_binaries -- --ignored` (the refusal tests need
//! `TESSERA_FAILPOINTS_BIN_DIR` too).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tessera_e2e::builds::binary_features;
use tessera_e2e::{
    bin_dir, ensure_plain_binaries_in, free_port, http_get, http_request, E2eCluster, Options,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The test build's binaries, which `scripts/test` copied aside.
fn failpoints_bin_dir() -> PathBuf {
    let dir = std::env::var_os("TESSERA_FAILPOINTS_BIN_DIR").map(PathBuf::from).expect(
        "TESSERA_FAILPOINTS_BIN_DIR is unset: scripts/test sets it to target/release/failpoints",
    );
    assert_eq!(
        binary_features(&dir.join("tessera-store")).expect("features"),
        "failpoints",
        "{} does not hold a test build",
        dir.display()
    );
    dir
}

/// The one line of `tessera_build_info` in a /metrics page.
fn build_info(metrics: &str) -> &str {
    metrics
        .lines()
        .find(|l| l.starts_with("tessera_build_info{"))
        .unwrap_or_else(|| panic!("no tessera_build_info in:\n{metrics}"))
}

/// A plain process's status port: its build info says features="none",
/// it has no clock fault endpoint, and, for a store, no other fault
/// endpoint either.
fn assert_plain(name: &str, status: &str, is_store: bool) {
    let (code, metrics) = http_get(status, "/metrics").expect("metrics");
    assert_eq!(code, 200, "{name} /metrics");
    let info = build_info(&metrics);
    assert!(info.contains("features=\"none\""), "{name}: {info}");
    assert!(info.contains("git_sha=\""), "{name}: {info}");
    assert!(info.ends_with(" 1"), "{name}: {info}");
    // No process's clock can be skewed.
    let (code, _) = http_request(status, "PUT", "/fault/clock", "rate=0.5").expect("status port");
    assert_eq!(code, 404, "{name}: PUT /fault/clock");
    if is_store {
        for (method, path, body) in [
            ("PUT", "/fail/raft_before_persist", "panic"),
            ("PUT", "/fault/unsafe-read", "on"),
            ("PUT", "/fault/partition", "1"),
            ("PUT", "/fault/messages", "stores=1 delay=10ms"),
        ] {
            let (code, _) = http_request(status, method, path, body).expect("status port");
            assert_eq!(code, 404, "{name}: {method} {path}");
        }
    }
}

/// A base port B for deploy/local/cluster with B, B+1, B+10..=B+15 and
/// B+20..=B+25 free.
fn free_base_port() -> u16 {
    loop {
        let b = free_port();
        if b > 32_000 {
            continue;
        }
        let ports = [0, 1]
            .into_iter()
            .chain(10..=15)
            .chain(20..=25)
            .map(|d| b + d);
        let listeners: Vec<_> = ports
            .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)))
            .collect();
        if listeners.iter().all(Result::is_ok) {
            return b;
        }
    }
}

/// deploy/local/cluster, stopped (SIGTERM: it stops its processes in
/// order) when dropped.
struct LocalCluster {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl LocalCluster {
    fn start(base: u16, extra: &[&str]) -> LocalCluster {
        let mut child = Command::new(repo().join("deploy/local/cluster"))
            .args(["--base-port", &base.to_string()])
            .args(extra)
            .env_remove("TESSERA_BIN_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start deploy/local/cluster");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        LocalCluster { child, lines }
    }

    /// Waits for `what` in the script's output; everything it printed.
    fn wait_for(&mut self, what: &str, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        let mut seen = String::new();
        loop {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains(what) {
                        return Ok(seen);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(seen),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() > deadline {
                return Err(seen);
            }
        }
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the script this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

#[test]
#[ignore = "run by scripts/test after it links the plain binaries back"]
fn deploy_local_cluster_runs_plain_binaries() {
    let base = free_base_port();
    let mut c = LocalCluster::start(base, &[]);
    let out = c
        .wait_for("is running", Duration::from_secs(180))
        .unwrap_or_else(|out| panic!("deploy/local/cluster did not start:\n{out}"));
    let from = std::fs::canonicalize(bin_dir()).unwrap();
    assert!(
        out.contains(&format!("separate processes from {})", from.display())),
        "deploy/local/cluster ran other binaries than {}:\n{out}",
        from.display()
    );
    assert_plain("router", &format!("127.0.0.1:{}", base + 1), false);
    for i in 0..3 {
        let p = base + 11 + 2 * i;
        assert_plain(
            &format!("directory {}", i + 1),
            &format!("127.0.0.1:{p}"),
            false,
        );
    }
    for j in 0..3 {
        let p = base + 21 + 2 * j;
        assert_plain(&format!("store {}", j + 1), &format!("127.0.0.1:{p}"), true);
    }
    let status = c.stop();
    assert!(status.code().is_some(), "deploy/local/cluster: {status}");
}

#[test]
#[ignore = "run by scripts/test after it links the plain binaries back"]
fn deploy_local_cluster_refuses_a_test_build() {
    let fp = failpoints_bin_dir();
    let base = free_base_port();
    let mut c = LocalCluster::start(base, &["--bin-dir", &fp.display().to_string()]);
    let out = c
        .wait_for("is a test build", Duration::from_secs(30))
        .unwrap_or_else(|out| panic!("deploy/local/cluster ran a test build:\n{out}"));
    let status = c.stop();
    assert!(!status.success(), "{status}\n{out}");
    // Nothing was started on the cluster's ports.
    assert!(http_get(&format!("127.0.0.1:{}", base + 21), "/health").is_none());
}

#[test]
#[ignore = "run by scripts/test after it links the plain binaries back"]
fn the_procfile_wrapper_refuses_a_test_build() {
    let fp = failpoints_bin_dir();
    let plain = repo().join("deploy/local/plain");
    let out = Command::new(&plain)
        .arg(fp.join("tessera-store"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a test build"));
    let out = Command::new(&plain)
        .arg(bin_dir().join("tessera-store"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("features: none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by scripts/test after it links the plain binaries back"]
async fn the_bench_cluster_runs_plain_binaries() {
    // What every benchmark does before it starts a cluster.
    ensure_plain_binaries_in(&bin_dir()).expect("the benchmarks' binaries are plain");
    let err = ensure_plain_binaries_in(&failpoints_bin_dir()).unwrap_err();
    assert!(err.to_string().contains("is a test build"), "{err}");

    // The cluster tessera-bench starts (LocalTessera).
    let mut c = E2eCluster::start(Options {
        default_timing: true,
        ..Options::default()
    })
    .await;
    c.add_router().await;
    for (name, status) in c.status_addrs() {
        assert_plain(&name, &status, name.starts_with("store"));
    }
}
