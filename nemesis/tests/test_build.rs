//! A test build (feature `failpoints`, what `scripts/test` runs) says so
//! everywhere a user could look, and keeps its fault endpoints off the
//! network: `--version` and `tessera_build_info` name the feature, the log
//! warns, and a non-loopback status address is refused — before anything is
//! written — unless `--allow-fault-endpoints` is given.
//!
//! The plain builds' side (features `none`, `PUT /fail/...` answering 404)
//! is `tests/tests/plain_binaries.rs`, which `scripts/test` runs after it
//! links the plain binaries back.
#![cfg(feature = "failpoints")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera_e2e::builds::{binary_features, SERVER_BINARIES};
use tessera_e2e::{bin_dir, free_port, http_get, http_request};

#[test]
fn every_server_binary_of_the_test_build_names_its_feature() {
    for name in SERVER_BINARIES {
        let bin = bin_dir().join(name);
        assert_eq!(
            binary_features(&bin).expect("features"),
            "failpoints",
            "{}",
            bin.display()
        );
    }
}

/// Runs `bin args` until it exits or `within` passes: (exited, stderr).
fn run_until_exit(name: &str, args: &[String], within: Duration) -> (Option<bool>, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut child = Command::new(bin_dir().join(name))
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn a_test_build_refuses_a_status_address_other_machines_reach() {
    let data = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<String>); 3] = [
        (
            "tessera-store",
            vec![
                "--data-dir".into(),
                data.path().join("store").display().to_string(),
                "--listen-addr".into(),
                format!("127.0.0.1:{}", free_port()),
                "--directory".into(),
                "127.0.0.1:1".into(),
            ],
        ),
        (
            "tessera-directory",
            vec![
                "--data-dir".into(),
                data.path().join("directory").display().to_string(),
                "--listen-addr".into(),
                format!("127.0.0.1:{}", free_port()),
            ],
        ),
        (
            "tessera-router",
            vec![
                "--listen-addr".into(),
                format!("127.0.0.1:{}", free_port()),
                "--directory".into(),
                "127.0.0.1:1".into(),
            ],
        ),
    ];
    for (name, mut args) in cases {
        args.extend(["--status-addr".into(), format!("0.0.0.0:{}", free_port())]);
        let (exited, stderr) = run_until_exit(name, &args, Duration::from_secs(20));
        assert_eq!(
            exited,
            Some(false),
            "{name} must exit with an error:\n{stderr}"
        );
        assert!(
            stderr.contains("not a loopback address") && stderr.contains("--allow-fault-endpoints"),
            "{name}: {stderr}"
        );
    }
    // Refused before anything was written.
    assert_eq!(
        std::fs::read_dir(data.path()).unwrap().count(),
        0,
        "a refused process created files"
    );
}

#[test]
fn allowed_fault_endpoints_serve_and_the_build_is_announced() {
    let data = tempfile::tempdir().unwrap();
    let status_port = free_port();
    let args: Vec<String> = vec![
        "--data-dir".into(),
        data.path().join("store").display().to_string(),
        "--listen-addr".into(),
        format!("127.0.0.1:{}", free_port()),
        "--status-addr".into(),
        format!("0.0.0.0:{status_port}"),
        "--directory".into(),
        "127.0.0.1:1".into(),
        "--allow-fault-endpoints".into(),
        "--insecure".into(),
    ];
    let log = data.path().join("stderr");
    let mut child = Command::new(bin_dir().join("tessera-store"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = format!("127.0.0.1:{status_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        if let Some((200, body)) = http_get(&status, "/metrics") {
            break body;
        }
        if let Some(s) = child.try_wait().unwrap() {
            panic!(
                "the store exited ({s}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "no /metrics within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let fault = http_request(&status, "GET", "/fault/partition", "");
    let faults_answer = message_and_clock_faults(&status);
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();

    let info = metrics
        .lines()
        .find(|l| l.starts_with("tessera_build_info{"))
        .unwrap_or_else(|| panic!("no tessera_build_info in:\n{metrics}"));
    assert!(info.contains("features=\"failpoints\""), "{info}");
    assert!(info.ends_with(" 1"), "{info}");
    assert!(stderr.contains("this is a test build"), "{stderr}");
    assert_eq!(fault.expect("fault endpoint").0, 200);
    if let Err(e) = faults_answer {
        panic!("{e}\n{stderr}");
    }
}

/// The message- and clock-fault endpoints of a test build's store: they
/// set what they are told, answer 400 to bad input and change nothing
/// then, and clear.
fn message_and_clock_faults(status: &str) -> Result<(), String> {
    let req = |method: &str, path: &str, body: &str| {
        http_request(status, method, path, body).map_err(|e| format!("{method} {path}: {e}"))
    };
    let expect = |got: (u16, String), code: u16, has: &str, what: &str| {
        if got.0 == code && got.1.contains(has) {
            Ok(())
        } else {
            Err(format!("{what}: expected {code} with {has:?}, got {got:?}"))
        }
    };
    let set = "stores=2,3 delay=10ms jitter=5ms duplicate=0.5 reorder=0.25";
    expect(
        req("PUT", "/fault/messages", set)?,
        200,
        "set",
        "PUT messages",
    )?;
    let listed = "stores=2 delay=10ms jitter=5ms duplicate=0.5 reorder=0.25";
    expect(
        req("GET", "/fault/messages", "")?,
        200,
        listed,
        "GET messages",
    )?;
    for bad in [
        "stores=2 delay=10",
        "delay=10ms",
        "stores=2 duplicate=2",
        "stores=x",
    ] {
        expect(req("PUT", "/fault/messages", bad)?, 400, "", bad)?;
    }
    expect(
        req("GET", "/fault/messages", "")?,
        200,
        listed,
        "GET after bad PUTs",
    )?;
    expect(
        req("DELETE", "/fault/messages", "")?,
        200,
        "cleared",
        "DELETE messages",
    )?;
    let (code, body) = req("GET", "/fault/messages", "")?;
    if code != 200 || !body.trim().is_empty() {
        return Err(format!("messages after DELETE: {code} {body:?}"));
    }

    expect(
        req("GET", "/fault/clock", "")?,
        200,
        "not skewed",
        "GET clock",
    )?;
    expect(
        req("PUT", "/fault/clock", "rate=0.5")?,
        200,
        "rate 0.5",
        "PUT clock",
    )?;
    for bad in ["rate=0", "rate=fast", "jump=-1s", "jump=2h", "slower"] {
        expect(req("PUT", "/fault/clock", bad)?, 400, "", bad)?;
    }
    expect(
        req("GET", "/fault/clock", "")?,
        200,
        "rate 0.5",
        "GET clock after bad PUTs",
    )?;
    expect(
        req("PUT", "/fault/clock", "jump=2s")?,
        200,
        "rate 0.5",
        "jump",
    )?;
    expect(
        req("PUT", "/fault/clock", "normal")?,
        200,
        "rate 1",
        "normal",
    )?;
    Ok(())
}
