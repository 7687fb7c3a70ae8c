//! The monitoring shipped in `deploy/` against a live cluster: 3
//! directories, 4 stores and a router as separate processes take writes,
//! reads, a split and a rebalance onto a new store; then every process's
//! `/metrics` must pass `promtool check metrics`, and every `tessera_*`
//! metric named in `deploy/grafana/*.json` and
//! `deploy/prometheus/rules/*.yml` must be exported by at least one
//! process. (`deploy/check` checks the same files offline: syntax, rule
//! unit tests.)

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera_client::Client;
use tessera_e2e::{http_get, scan_regions, E2eCluster, Options};

/// `promtool`, from `PATH`; a clear failure when it is not installed.
fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "promtool is not installed: run deploy/check (it installs what it needs) \
             or `apt-get install -y prometheus` (Debian's package ships promtool)"
        )
    })
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Files of `dir` whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

/// Every identifier starting `tessera_` in `text` (PromQL in rules and
/// dashboards). Recording rules are named `tessera:...`, which this skips.
fn metric_names(text: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tessera_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail.find(|c: char| !ident(c)).unwrap_or(tail.len());
        if !before.is_some_and(ident) {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// The metric names used by the dashboards and the alert rules, each with
/// the files that use it.
fn used_names() -> BTreeMap<String, BTreeSet<String>> {
    let deploy = deploy_dir();
    let mut sources = files(&deploy.join("grafana"), ".json");
    sources.extend(files(&deploy.join("prometheus/rules"), ".yml"));
    assert!(
        sources.len() >= 5,
        "expected the dashboards and rules in {}, found {sources:?}",
        deploy.display()
    );
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &sources {
        let text = std::fs::read_to_string(f).expect("read");
        let short = f.strip_prefix(&deploy).unwrap_or(f).display().to_string();
        for n in metric_names(&text) {
            used.entry(n).or_default().insert(short.clone());
        }
    }
    assert!(!used.is_empty(), "no tessera_ metric found in {sources:?}");
    used
}

/// Names in a Prometheus text exposition: every `# TYPE` name (a
/// histogram's base name) and every sample's name (`_bucket`, `_sum`,
/// `_count` included).
fn exported_names(body: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in body.lines() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix("# TYPE ") {
            if let Some(n) = t.split_whitespace().next() {
                names.insert(n.to_string());
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// Whether `name` (as written in PromQL) is exported: as is, or as a
/// histogram or summary series of an exported base name.
fn is_exported(name: &str, exported: &BTreeSet<String>) -> bool {
    if exported.contains(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|s| {
        name.strip_suffix(s)
            .is_some_and(|base| exported.contains(base))
    })
}

/// `promtool check metrics` on one scrape; Err with promtool's output.
fn promtool_check(promtool: &Path, body: &str) -> Result<(), String> {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "exit {:?}\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

async fn workload(client: &Client, from: usize, to: usize) {
    for i in from..to {
        let k = format!("deploy{i:05}");
        client
            .put(&k, format!("value-{i}-{}", "x".repeat(100)))
            .await
            .unwrap_or_else(|e| panic!("put {k}: {e}"));
        if i % 10 == 0 {
            client.get(&k).await.expect("get");
        }
    }
    let pairs: Vec<(String, String)> = (0..20)
        .map(|i| (format!("batch{i:03}"), format!("v{i}")))
        .collect();
    client.batch_put(pairs).await.expect("batch put");
    let keys: Vec<String> = (0..20).map(|i| format!("batch{i:03}")).collect();
    client.batch_get(keys).await.expect("batch get");
    client
        .scan(b"deploy".to_vec()..b"deploy~".to_vec(), 100)
        .await
        .expect("scan");
    client.delete("deploy00000").await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboards_and_rules_use_only_exported_metrics_and_scrapes_pass_promtool() {
    // Fail fast, before any process starts, when the tool or the files
    // are missing.
    let promtool = promtool();
    let used = used_names();

    let mut c = E2eCluster::start(Options::default()).await;
    c.add_router().await;
    c.wait_settled(1).await;
    let client = Client::builder()
        .endpoints(c.router_addrs())
        .security(c.security())
        .timeout(Duration::from_secs(30))
        .build()
        .await
        .expect("client");
    workload(&client, 0, 400).await;

    // A split (splits_total, operators), then a 4th store: the scheduler
    // moves replicas onto it (conf changes, snapshots, operators).
    let regions = scan_regions(&c.directory_conn()).await.expect("regions");
    let id = regions
        .iter()
        .filter_map(|r| r.region.as_ref())
        .map(|r| r.id)
        .next()
        .expect("a region");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match c.try_cli(&["region", "split", &id.to_string(), "--at", "deploy00200"]) {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("split refused, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("tessera region split: {e}"),
        }
    }
    let added = c.add_store();
    let new_status = c.stores[&added].status.clone();
    c.wait_for(
        "the new store to host a region",
        Duration::from_secs(120),
        |_| {
            let s = new_status.clone();
            async move {
                http_get(&s, "/metrics").is_some_and(|(_, body)| {
                    body.lines().any(|l| {
                        l.strip_prefix("tessera_regions ")
                            .and_then(|v| v.trim().parse::<f64>().ok())
                            .is_some_and(|v| v >= 1.0)
                    })
                })
            }
        },
    )
    .await;
    workload(&client, 400, 800).await;
    c.wait_settled(2).await;

    // Some series appear a moment after the event (log GC runs on a tick,
    // gauges on the next poller round): scrape until nothing is missing
    // or a minute passed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (scrapes, missing) = loop {
        let scrapes = c.metrics_pages().unwrap_or_else(|e| panic!("{e}"));
        let exported: BTreeSet<String> = scrapes
            .iter()
            .flat_map(|(_, body)| exported_names(body))
            .collect();
        let missing: Vec<(&String, &BTreeSet<String>)> = used
            .iter()
            .filter(|(n, _)| !is_exported(n, &exported))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (scrapes, missing);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };

    // promtool prints one problem a line, "<metric> <problem>"; group them
    // by problem so the failure names each metric once.
    let mut problems = Vec::new();
    let mut lint: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (name, body) in &scrapes {
        match promtool_check(&promtool, body) {
            Ok(()) => eprintln!("promtool check metrics: {name}: ok"),
            Err(e) => {
                for line in e.lines().skip_while(|l| l.starts_with("exit ")) {
                    match line.split_once(' ') {
                        Some((metric, problem)) if metric.starts_with("tessera_") => {
                            lint.entry(problem.trim().to_string())
                                .or_default()
                                .entry(metric.to_string())
                                .or_default()
                                .insert(name.clone());
                        }
                        _ if line.trim().is_empty() => {}
                        _ => problems.push(format!("promtool check metrics on {name}: {line}")),
                    }
                }
                if !e.lines().skip(1).any(|l| !l.trim().is_empty()) {
                    problems.push(format!("promtool check metrics on {name}: {e}"));
                }
            }
        }
    }
    for (problem, metrics) in &lint {
        problems.push(format!(
            "promtool check metrics: {problem} ({} metrics):",
            metrics.len()
        ));
        for (metric, procs) in metrics {
            let procs: Vec<&str> = procs.iter().map(String::as_str).collect();
            problems.push(format!("  {metric} (on {})", procs.join(", ")));
        }
    }
    for (n, files) in &missing {
        problems.push(format!(
            "{n} (used in {}) is exported by no process",
            files.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    eprintln!(
        "{} metric names used by deploy/grafana and deploy/prometheus/rules, {} missing",
        used.len(),
        missing.len()
    );
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        r#"sum(rate(tessera_router_request_seconds_bucket{op="get"}[5m])) by (le)
           / tessera_ready and on(instance) x_tessera_not "tessera:recorded" 1"#,
    );
    let want: BTreeSet<String> = ["tessera_router_request_seconds_bucket", "tessera_ready"]
        .map(String::from)
        .into();
    assert_eq!(names, want);
    let exported = exported_names(
        "# TYPE tessera_fsync_seconds histogram\ntessera_fsync_seconds_bucket{le=\"1\"} 1\n\
         tessera_ready 1\n",
    );
    assert!(is_exported("tessera_fsync_seconds_bucket", &exported));
    assert!(is_exported("tessera_fsync_seconds_count", &exported));
    assert!(is_exported("tessera_ready", &exported));
    assert!(!is_exported("tessera_leaders", &exported));
}
