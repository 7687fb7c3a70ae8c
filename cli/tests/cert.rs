//! `tessera cert`: what a user creating certificates sees: one table row or
//! one JSON document per command, keys private, a clear `error:` line and
//! nothing written on bad input.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn tessera(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("TESSERA_CERTS_DIR", dir)
        .env_remove("TESSERA_OUTPUT")
        .output()
        .expect("run tessera")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("one JSON document")
}

#[test]
fn create_a_ca_node_router_and_client_then_list_them() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("certs");
    let table = ok(&tessera(&d, &["cert", "create-ca"]));
    assert!(table.contains("ca.crt") && table.contains("ca"), "{table}");
    let node = json(&tessera(
        &d,
        &[
            "--output",
            "json",
            "cert",
            "create-node",
            "--host",
            "127.0.0.1",
            "--host",
            "localhost",
            "--name",
            "store-1",
        ],
    ));
    assert_eq!(node["identity"], "node/store-1");
    assert_eq!(node["hosts"], serde_json::json!(["127.0.0.1", "localhost"]));
    ok(&tessera(
        &d,
        &[
            "cert",
            "create-node",
            "--kind",
            "router",
            "--host",
            "10.1.2.3",
        ],
    ));
    ok(&tessera(
        &d,
        &["cert", "create-client", "alice", "--days", "30"],
    ));

    let listed = json(&tessera(&d, &["--output", "json", "cert", "list"]));
    let rows: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["file"].as_str().unwrap().to_string(),
                c["identity"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("ca.crt".into(), "-".into()),
            ("client.alice.crt".into(), "client/alice".into()),
            ("node.crt".into(), "node/store-1".into()),
            ("router.crt".into(), "router/10.1.2.3".into()),
        ]
    );
    let alice_days = listed[1]["days_left"].as_i64().unwrap();
    assert!((28..=30).contains(&alice_days), "{alice_days}");
    let table = ok(&tessera(&d, &["cert", "list"]));
    assert!(
        table.contains("days left") && table.contains("client/alice"),
        "{table}"
    );
    for key in ["ca.key", "node.key", "router.key", "client.alice.key"] {
        let mode = std::fs::metadata(d.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
}

#[test]
fn mistakes_get_one_error_line_and_write_nothing() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("certs");
    for (args, expect) in [
        (
            vec!["cert", "create-node", "--host", "localhost"],
            "create the CA first",
        ),
        (vec!["cert", "list"], "create-ca"),
    ] {
        let out = tessera(&d, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains(expect), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(!d.exists());

    ok(&tessera(&d, &["cert", "create-ca"]));
    let before = std::fs::read(d.join("ca.key")).unwrap();
    for (args, expect) in [
        (vec!["cert", "create-ca"], "--overwrite"),
        (
            vec!["cert", "create-client", "../../etc/x"],
            "not a valid name",
        ),
        (
            vec!["cert", "create-node", "--host", "not a host"],
            "neither an IP address",
        ),
    ] {
        let out = tessera(&d, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{err}");
    }
    assert_eq!(std::fs::read(d.join("ca.key")).unwrap(), before);
    let files: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
    assert_eq!(files.len(), 2, "only the CA's two files");
    // Without --host, clap refuses (usage error).
    assert_eq!(tessera(&d, &["cert", "create-node"]).status.code(), Some(2));
}
