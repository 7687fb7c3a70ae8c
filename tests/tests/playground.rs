//! `tessera playground` as a new user meets it: started with default flags,
//! used with the CLI's default addresses, stopped with Ctrl-C (SIGINT),
//! and restarted on the same data directory with the data still there.
//!
//! This test uses the playground's fixed default ports (14000–14025), so it
//! is the only test that may run a playground.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tessera_e2e::bin_dir;

/// The playground's certificates, once it made them: what the user
/// exports as `TESSERA_CERTS_DIR` after reading the banner.
static CERTS: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

fn tessera() -> Command {
    let mut cmd = Command::new(bin_dir().join("tessera"));
    for var in [
        "TESSERA_ROUTER",
        "TESSERA_DIRECTORY",
        "TESSERA_OUTPUT",
        "TESSERA_CERTS_DIR",
        "TESSERA_USER",
    ] {
        cmd.env_remove(var);
    }
    if let Some(dir) = CERTS.get() {
        cmd.env("TESSERA_CERTS_DIR", dir);
    }
    cmd
}

/// Runs a CLI command with default flags; (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = tessera()
        .args(["--timeout", "20"])
        .args(args)
        .output()
        .expect("run tessera");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn ok(args: &[&str]) -> String {
    let (success, stdout, stderr) = run(args);
    assert!(success, "tessera {args:?}: {stderr}");
    stdout
}

/// A running playground and its stdout so far.
struct Playground {
    child: Child,
    lines: mpsc::Receiver<String>,
    banner: Vec<String>,
}

impl Playground {
    fn start(data_dir: &std::path::Path) -> Playground {
        let mut child = tessera()
            .arg("playground")
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the playground");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut p = Playground {
            child,
            lines,
            banner: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match p.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains("Press Ctrl-C to stop");
                    p.banner.push(line);
                    if done {
                        return p;
                    }
                }
                Err(_) => {
                    let _ = p.child.kill();
                    panic!("the playground did not start: {:?}", p.banner);
                }
            }
        }
    }

    /// SIGINT, as Ctrl-C; returns once it exited, with its last lines.
    fn interrupt(mut self) -> (std::process::ExitStatus, Vec<String>) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let rest: Vec<String> = self.lines.try_iter().collect();
                return (status, rest);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the playground did not stop within 60 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Playground {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn the_playground_serves_the_cli_with_default_flags_and_stops_on_ctrl_c() {
    let data = tempfile::tempdir().expect("temp dir");
    let p = Playground::start(data.path());
    let banner = p.banner.join("\n");
    assert!(banner.contains("127.0.0.1:14000"), "router: {banner}");
    assert!(banner.contains("127.0.0.1:14010"), "directory: {banner}");
    assert!(banner.contains("/metrics"), "metrics: {banner}");
    assert!(banner.contains("tessera put"), "an example: {banner}");

    // Secure by default: the banner says how to point the CLI at the
    // playground's certificates, and without them nothing is served.
    let certs = data.path().join("certs");
    assert!(
        banner.contains(&format!("export TESSERA_CERTS_DIR={}", certs.display())),
        "{banner}"
    );
    let out = tessera()
        .args(["--timeout", "3", "get", "greeting"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a plaintext CLI was served: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    CERTS.set(certs).unwrap();

    ok(&["put", "greeting", "hello"]);
    assert_eq!(ok(&["get", "greeting"]).trim(), "hello");
    let (found, _, stderr) = run(&["get", "no-such-key"]);
    assert!(!found, "a missing key is a non-zero exit");
    assert!(stderr.starts_with("error: "), "{stderr}");

    // Failures are one clear line and a non-zero exit; nothing changes.
    for (args, says, code) in [
        (&["region", "show", "999999"][..], "999999", 1),
        (&["region", "split", "999999"][..], "999999", 1),
        (&["put", "", "v"][..], "key", 1),
        (&["region", "split", "not-a-number"][..], "invalid value", 2),
    ] {
        let out = tessera()
            .args(["--timeout", "20"])
            .args(args)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        if code == 1 {
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
            assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        }
    }
    assert_eq!(ok(&["get", "greeting"]).trim(), "hello");

    let regions: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["region", "list", "--output", "json"])).expect("JSON");
    let before = regions.len();
    let id = regions[0]["id"].as_u64().unwrap().to_string();
    ok(&["region", "split", &id, "--at", "m"]);
    let regions: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["region", "list", "--output", "json"])).expect("JSON");
    assert_eq!(regions.len(), before + 1, "the split shows in the list");
    assert_eq!(ok(&["get", "greeting"]).trim(), "hello");

    let (status, last) = p.interrupt();
    assert!(status.success(), "clean exit: {status:?} {last:?}");
    assert!(last.iter().any(|l| l == "stopped"), "{last:?}");
    for port in [14000, 14001, 14010, 14012, 14014, 14020, 14022, 14024] {
        assert!(
            port_is_free(port),
            "port {port} is still held after the stop"
        );
    }

    // The same data directory: the data is still there.
    let p = Playground::start(data.path());
    assert_eq!(ok(&["get", "greeting"]).trim(), "hello");
    let (status, _) = p.interrupt();
    assert!(status.success());
    // A different directory count is refused with one clear line.
    let out = tessera()
        .args(["playground", "--directories", "1", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--directories 3"), "{stderr}");
}
