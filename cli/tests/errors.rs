//! How the `tessera` binary fails: one `error:` line on stderr, a non-zero
//! exit status, and no hang when a router or the directory cannot be
//! reached. No cluster is needed; the end-to-end tests in `tests/` cover
//! the commands against real processes.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

/// Far above `--timeout` plus the CLI's grace: only a hang exceeds it.
const GENEROUS: Duration = Duration::from_secs(20);

fn tessera(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env_remove("TESSERA_ROUTER")
        .env_remove("TESSERA_DIRECTORY")
        .env_remove("TESSERA_OUTPUT")
        .env_remove("RUST_LOG")
        .output()
        .expect("run tessera");
    (out, started.elapsed())
}

/// A local address with nothing listening on it.
fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

/// A local address that accepts connections and never answers.
fn silent_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    addr
}

/// Checks the failure contract and returns the error line.
fn assert_one_error_line(out: &Output, took: Duration) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one stderr line, got: {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr:?}");
    assert!(took < GENEROUS, "took {took:?}");
    lines[0].to_string()
}

#[test]
fn unreachable_router() {
    let addr = dead_address();
    for args in [
        vec!["get", "k"],
        vec!["put", "k", "v"],
        vec!["scan", "--limit", "3"],
        vec!["delete-range", "--start", "a", "--end", "b"],
    ] {
        let mut all = vec!["--timeout", "1", "--router", &addr];
        all.extend(args);
        let (out, took) = tessera(&all);
        let line = assert_one_error_line(&out, took);
        assert!(line.contains(&addr), "names the router: {line}");
        assert!(out.stdout.is_empty(), "nothing on stdout");
    }
}

#[test]
fn unreachable_directory() {
    let addr = dead_address();
    for args in [
        vec!["store", "list"],
        vec!["region", "list"],
        vec!["region", "show", "999"],
        vec!["cluster", "status"],
        vec!["keyspace", "create", "x", "--range"],
    ] {
        let mut all = vec!["--timeout", "1", "--directory", &addr, "-o", "json"];
        all.extend(args);
        let (out, took) = tessera(&all);
        let line = assert_one_error_line(&out, took);
        assert!(line.contains(&addr), "names the directory: {line}");
        assert!(out.stdout.is_empty(), "nothing on stdout");
    }
}

#[test]
fn silent_servers_do_not_hang_the_cli() {
    let addr = silent_address();
    let (out, took) = tessera(&["--timeout", "1", "--directory", &addr, "store", "list"]);
    let line = assert_one_error_line(&out, took);
    assert!(line.contains(&addr), "{line}");
    let (out, took) = tessera(&["--timeout", "1", "--router", &addr, "get", "k"]);
    let line = assert_one_error_line(&out, took);
    assert!(line.contains(&addr), "{line}");
}

#[test]
fn malformed_arguments_are_usage_errors() {
    for (args, expect) in [
        (vec!["region", "split", "notanumber"], "notanumber"),
        (vec!["keyspace", "create", "x", "--hash"], "--regions"),
        (vec!["keyspace", "create", "x"], "--range"),
        (vec!["--output", "yaml", "store", "list"], "yaml"),
        (vec!["--router", "nohost", "get", "k"], "HOST:PORT"),
        (vec!["--timeout", "0", "get", "k"], "positive"),
        (vec!["region", "move", "1", "--to", "2"], "--from"),
        (vec!["frobnicate"], "frobnicate"),
        (vec!["cas", "k", "--new", "v"], "--expect"),
        (
            vec!["cas", "k", "--expect", "a", "--expect-absent", "--delete"],
            "--expect",
        ),
        (vec!["cas", "k", "--expect", "a"], "--new"),
        (vec!["batch-get"], "KEYS"),
        (vec!["batch-put"], "KEY=VALUE"),
        (vec!["store", "remove", "two"], "two"),
        (vec!["store", "evict-leaders"], "<ID>"),
        (vec!["cluster", "transfer-leader"], "--to"),
    ] {
        let (out, _) = tessera(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expect),
            "{args:?} should mention {expect}: {stderr}"
        );
    }
}

#[test]
fn help_teaches_every_command() {
    let (out, _) = tessera(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "playground",
        "get",
        "put",
        "delete",
        "scan",
        "delete-range",
        "cas",
        "batch-get",
        "batch-put",
        "store",
        "region",
        "keyspace",
        "cluster",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
    let (out, _) = tessera(&["region", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["list", "show", "split", "move", "transfer-leader"] {
        assert!(help.contains(cmd), "{cmd} missing from region --help");
    }
}
