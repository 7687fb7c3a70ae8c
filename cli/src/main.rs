//! `tessera`: the command-line tool of the tessera key-value store.
//!
//! - `tessera playground` runs a whole local cluster (`playground.rs`);
//! - `get`, `put`, `delete`, `scan`, `delete-range` read and write keys
//!   through a router (`kv.rs`, `delete_range.rs`);
//! - `store`, `region`, `keyspace`, `cluster` administer the cluster through
//!   the directory (one module each);
//! - `user` creates, lists and revokes users (`user.rs`);
//! - `cert` creates and lists certificates (`cert.rs`, over
//!   `tessera-security`).
//!
//! The defaults of `--router` and `--directory` point at the playground, so
//! `tessera playground` in one terminal and `tessera put k v` in another
//! just work.
//!
//! Every failure ends the same way: exactly one line `error: <message>` on
//! stderr and exit status 1 (usage errors keep clap's exit status 2).
//! Results go to stdout only, as a table or as one JSON document
//! (`--output`).

mod batch;
mod boundaries;
mod cert;
mod cluster;
mod conn;
mod delete_range;
mod directory;
mod keyspace;
mod kv;
mod merge;
mod operator;
mod output;
mod playground;
mod region;
mod serve;
mod store;
mod user;
mod wait;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::conn::{Ctx, GlobalArgs};

/// tessera: a partitioned multi-Raft key-value store.
///
/// Start a local cluster with `tessera playground`, then try
/// `tessera put greeting hello`, `tessera get greeting`,
/// `tessera region list` and `tessera cluster status`.
#[derive(Parser, Debug)]
#[command(
    name = "tessera",
    version = tessera_common::build_info::LONG_VERSION,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a local cluster (directory, stores and a router) in one command.
    ///
    /// Each server runs as its own process on 127.0.0.1; the command prints
    /// their addresses and runs until Ctrl-C, then stops them in order.
    Playground(playground::Args),
    /// Read a key (exit status 1 if it does not exist).
    Get(kv::GetArgs),
    /// Write a key.
    Put(kv::PutArgs),
    /// Delete a key.
    Delete(kv::DeleteArgs),
    /// List the keys and values in a range, in key order.
    Scan(kv::ScanArgs),
    /// Swap a key's value only if it holds what is expected (or is absent);
    /// exit status 1 if it did not.
    Cas(batch::CasArgs),
    /// Read many keys in one call; every key is listed, found or not.
    BatchGet(batch::BatchGetArgs),
    /// Write many KEY=VALUE pairs in one call (not atomic across regions).
    BatchPut(batch::BatchPutArgs),
    /// Delete every key in a range, region by region, with progress; a run
    /// that stops prints how to resume it (--resume).
    DeleteRange(delete_range::DeleteRangeArgs),
    /// Inspect stores (the storage processes).
    #[command(subcommand)]
    Store(store::Command),
    /// Inspect, split and move regions (the ranges of keys that are
    /// replicated as one Raft group).
    #[command(subcommand)]
    Region(region::Command),
    /// Create and list keyspaces (named parts of the key space).
    #[command(subcommand)]
    Keyspace(keyspace::Command),
    /// Cluster status and directory membership.
    #[command(subcommand)]
    Cluster(cluster::Command),
    /// The scheduler's operators in flight (splits, moves, merges,
    /// repairs, balancing) and why each exists.
    #[command(subcommand)]
    Operator(operator::Command),
    /// Create, list and revoke users: who may read, write or administer,
    /// with a bearer token or a client certificate (admin role).
    #[command(subcommand)]
    User(user::Command),
    /// Create and list certificates: the cluster's CA, node, router and
    /// client certificates (PEM files in --certs-dir).
    #[command(subcommand)]
    Cert(cert::Command),
    /// Run one server process (used by the playground).
    #[command(hide = true)]
    Serve(serve::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve(args) = cli.command {
        return match serve::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    // The playground sets up its own logging.
    if !matches!(cli.command, Command::Playground(_)) {
        init_logging(cli.global.verbose);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let plaintext = cli.global.certs_dir.is_none() && !matches!(cli.command, Command::Cert(_));
    run_command(cli).await.map_err(|e| {
        if plaintext && looks_like_tls_refusal(&e) {
            e.context(
                "no certificates given (--certs-dir / TESSERA_CERTS_DIR) and the server closed \
                 the plaintext connection: it probably runs TLS — the playground prints the \
                 `export TESSERA_CERTS_DIR=...` line to paste",
            )
        } else {
            e
        }
    })
}

/// Whether `e` is what a plaintext connection to a TLS server ends in:
/// the server reads no HTTP/2 preface and closes the connection.
fn looks_like_tls_refusal(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    [
        "broken pipe",
        "connection reset",
        "stream closed",
        "frame with invalid size",
    ]
    .iter()
    .any(|s| text.contains(s))
}

async fn run_command(cli: Cli) -> Result<()> {
    let mut ctx = Ctx::new(&cli.global);
    ctx.direct = match &cli.command {
        Command::Get(a) => a.keyspace.direct,
        Command::Put(a) => a.keyspace.direct,
        Command::Delete(a) => a.keyspace.direct,
        Command::Scan(a) => a.keyspace.direct,
        Command::DeleteRange(a) => a.keyspace.direct,
        Command::Cas(a) => a.keyspace.direct,
        Command::BatchGet(a) => a.keyspace.direct,
        Command::BatchPut(a) => a.keyspace.direct,
        _ => false,
    };
    match cli.command {
        Command::Playground(args) => playground::run(args).await,
        Command::Get(args) => kv::get(&ctx, args).await,
        Command::Put(args) => kv::put(&ctx, args).await,
        Command::Delete(args) => kv::delete(&ctx, args).await,
        Command::Scan(args) => kv::scan(&ctx, args).await,
        Command::DeleteRange(args) => delete_range::run(&ctx, args).await,
        Command::Cas(args) => batch::cas(&ctx, args).await,
        Command::BatchGet(args) => batch::batch_get(&ctx, args).await,
        Command::BatchPut(args) => batch::batch_put(&ctx, args).await,
        Command::Store(command) => store::run(&ctx, command).await,
        Command::Region(command) => region::run(&ctx, command).await,
        Command::Keyspace(command) => keyspace::run(&ctx, command).await,
        Command::Cluster(command) => cluster::run(&ctx, command).await,
        Command::Operator(command) => operator::run(&ctx, command).await,
        Command::User(command) => user::run(&ctx, command).await,
        Command::Cert(command) => cert::run(&ctx, command),
        Command::Serve(_) => unreachable!("served before the runtime starts"),
    }
}

/// Prints `error: <message>` as one line and returns exit status 1.
fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {}", one_line(&e));
    ExitCode::FAILURE
}

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Logs go to stderr and are off unless asked for with `-v` or RUST_LOG,
/// so a failing command prints only its one error line.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "off",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tessera").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_have_defaults_and_go_anywhere() {
        let cli = parse(&["get", "k"]).unwrap();
        assert_eq!(cli.global.router.0, vec![playground::DEFAULT_ROUTER]);
        assert_eq!(cli.global.timeout, Duration::from_secs(5));
        assert_eq!(cli.global.output, output::Output::Table);
        let cli = parse(&["get", "k", "--router", "a:1,b:2", "-o", "json"]).unwrap();
        assert_eq!(cli.global.router.0, vec!["a:1", "b:2"]);
        assert_eq!(cli.global.output, output::Output::Json);
        let cli = parse(&["--timeout", "0.5", "store", "list"]).unwrap();
        assert_eq!(cli.global.timeout, Duration::from_millis(500));
        assert!(parse(&["--output", "yaml", "store", "list"]).is_err());
        assert!(parse(&["--router", "nohost", "get", "k"]).is_err());
    }

    #[test]
    fn kv_commands() {
        let cli = parse(&["scan", "--start", "a", "--reverse", "-k", "users"]).unwrap();
        let Command::Scan(s) = cli.command else {
            panic!("not a scan")
        };
        assert_eq!(s.start.as_deref(), Some("a"));
        assert_eq!(s.end, None);
        assert_eq!(s.limit, 100);
        assert!(s.reverse);
        assert_eq!(s.keyspace.keyspace.as_deref(), Some("users"));
        assert!(parse(&["scan", "--limit", "0"]).is_err());
        assert!(parse(&["put", "k"]).is_err(), "a value is required");
    }

    #[test]
    fn region_commands() {
        let Command::Region(region::Command::Split(s)) =
            parse(&["region", "split", "7", "--at", "m"])
                .unwrap()
                .command
        else {
            panic!("not a split")
        };
        assert_eq!((s.id, s.at.as_deref()), (7, Some("m")));
        assert_eq!(s.wait_timeout, Duration::from_secs(60));
        assert!(parse(&["region", "split", "notanumber"]).is_err());
        assert!(
            parse(&["region", "split", "7", "--keyspace", "x"]).is_err(),
            "--keyspace needs --at"
        );

        let Command::Region(region::Command::Move(m)) =
            parse(&["region", "move", "7", "--from", "1", "--to", "4"])
                .unwrap()
                .command
        else {
            panic!("not a move")
        };
        assert_eq!((m.id, m.from, m.to), (7, 1, 4));
        assert_eq!(m.wait_timeout, Duration::from_secs(600));
        assert!(!m.no_wait);
        assert!(parse(&["region", "move", "7", "--from", "1"]).is_err());

        let Command::Region(region::Command::TransferLeader(t)) =
            parse(&["region", "transfer-leader", "7", "--to", "2", "--no-wait"])
                .unwrap()
                .command
        else {
            panic!("not a transfer")
        };
        assert_eq!((t.id, t.to, t.no_wait), (7, 2, true));

        assert!(parse(&["region", "show"]).is_err(), "an id or --key");
        assert!(parse(&["region", "show", "3", "--key", "k"]).is_err());
        assert!(parse(&["region", "show", "--key", "k", "-k", "users"]).is_ok());
        assert!(parse(&["region", "show", "3", "-k", "users"]).is_err());
        let Command::Region(region::Command::List(l)) = parse(&["region", "list"]).unwrap().command
        else {
            panic!("not a list")
        };
        assert_eq!((l.keyspace, l.limit), (None, 1000));
    }

    #[test]
    fn keyspace_and_cluster_commands() {
        assert!(parse(&["keyspace", "create", "x", "--range"]).is_ok());
        assert!(parse(&["keyspace", "create", "x", "--hash", "--regions", "16"]).is_ok());
        assert!(parse(&["keyspace", "create", "x"]).is_err(), "a kind");
        assert!(parse(&["keyspace", "create", "x", "--hash"]).is_err());
        assert!(parse(&["keyspace", "create", "x", "--range", "--hash"]).is_err());
        assert!(parse(&["keyspace", "create", "x", "--range", "--regions", "4"]).is_err());
        assert!(parse(&["keyspace", "create", "x", "--hash", "--regions", "0"]).is_err());
        assert!(parse(&["keyspace", "create", "x", "--hash", "--regions", "4097"]).is_err());
        assert!(parse(&[
            "cluster",
            "add-member",
            "--id",
            "4",
            "--address",
            "h:1",
            "--join-token",
            "t"
        ])
        .is_ok());
        assert!(parse(&["cluster", "rotate-join-token"]).is_ok());
        assert!(parse(&["cluster", "add-member", "--id", "4"]).is_err());
        assert!(parse(&["cluster", "remove-member", "--id", "x"]).is_err());
        assert!(parse(&["cluster", "status"]).is_ok());
        assert!(parse(&["store", "list", "--all"]).is_ok());
    }

    #[test]
    fn errors_print_on_one_line() {
        let e = anyhow::anyhow!("inner\nproblem").context("outer");
        assert_eq!(one_line(&e), "outer: inner problem");
    }
}
