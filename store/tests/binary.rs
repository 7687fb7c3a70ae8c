//! The `tessera-store` binary as an operator runs it: configuration,
//! status endpoints while it waits for a directory, and a clean stop on
//! SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_e2e::{free_port, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_tessera-store");

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prints_a_default_config_that_parses_back() {
    let out = Command::new(BIN)
        .arg("--print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let cfg: tessera_store::config::StoreConfig = toml::from_str(&text).unwrap();
    assert_eq!(cfg, tessera_store::config::StoreConfig::default());
}

#[test]
fn a_bad_config_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.toml");
    std::fs::write(&path, "listen = 'oops'\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field") && err.contains("listen"),
        "stderr: {err}"
    );

    let out = Command::new(BIN)
        .args(["--label", "zone"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("key=value"));

    // A join token that is not one, a token file that is not there, and
    // both at once: refused before anything starts.
    let missing = dir.path().join("no-such-token");
    for (args, says) in [
        (
            vec!["--insecure", "--join-token", "hunter2"],
            "64 hex digits",
        ),
        (
            vec!["--insecure", "--join-token-file", missing.to_str().unwrap()],
            "does not exist",
        ),
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("TESSERA_JOIN_TOKEN")
            .env_remove("TESSERA_JOIN_TOKEN_FILE")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let token = dir.path().join("token");
    std::fs::write(&token, "tessera-".to_string() + &"ab".repeat(32)).unwrap();
    let out = Command::new(BIN)
        .args(["--insecure", "--join-token"])
        .arg("tessera-".to_string() + &"ab".repeat(32))
        .arg("--join-token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn serves_status_while_waiting_for_the_directory_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let status = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("store.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten_addr = \"127.0.0.1:{}\"\nstatus_addr = {status:?}\ndirectory = [\"127.0.0.1:{}\"]\n",
            dir.path().join("data"),
            free_port(),
            free_port(),
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--insecure")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut proc = Process(child);

    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(r) = http_get(&status, "/health") {
            break r;
        }
        assert!(Instant::now() < deadline, "status server never came up");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(health.0, 200);
    // No directory answers, so the store is alive but not ready, and says why.
    let (code, body) = http_get(&status, "/ready").unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("directory"), "{body}");
    let (code, body) = http_get(&status, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("tessera_ready 0"), "{body}");
    assert!(
        dir.path().join("data").join("CURRENT").exists(),
        "RocksDB was opened"
    );

    // SIGTERM: a clean, prompt exit.
    let pid = proc.0.id() as i32;
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = proc.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
