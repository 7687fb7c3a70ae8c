//! `tessera cert`: the cluster's CA and the certificates it signs, as PEM
//! files in a certificates directory (`--certs-dir`, `TESSERA_CERTS_DIR`,
//! by default `~/.tessera/certs`). The files and the identity convention
//! are described in `tessera_security` and the README.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use tessera_security::certs::{self, CertInfo, CertsDir, CA_DAYS, LEAF_DAYS};
use tessera_security::{Identity, Kind};

use crate::conn::Ctx;
use crate::output;

/// Certificate commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the cluster's certificate authority (ca.crt, ca.key).
    CreateCa(CaArgs),
    /// Create a node certificate (node.crt, node.key) for a store or a
    /// directory member, or with --kind router a router's (router.crt,
    /// router.key), valid for every --host it is reached at.
    CreateNode(NodeArgs),
    /// Create a client certificate for user NAME (client.NAME.crt,
    /// client.NAME.key).
    CreateClient(ClientArgs),
    /// List the certificates in the directory, with their identity, hosts
    /// and expiry.
    List,
}

#[derive(Args, Debug)]
pub struct CaArgs {
    /// Days the CA is valid.
    #[arg(long, default_value_t = CA_DAYS)]
    pub days: u32,
    /// Replace an existing CA (every certificate it signed stops being
    /// trusted by processes that load the new one).
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// A DNS name or IP address the process is reached at; repeat for
    /// each (e.g. --host 127.0.0.1 --host store-0.tessera.default.svc).
    #[arg(long = "host", required = true)]
    pub hosts: Vec<String>,
    /// The identity's name (default: the first --host).
    #[arg(long)]
    pub name: Option<String>,
    /// `node` (a store or a directory member) or `router` (may call the
    /// stores' Kv API and the directory's reads, never Raft or store
    /// administration).
    #[arg(long, value_enum, default_value_t = NodeKind::Node)]
    pub kind: NodeKind,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = LEAF_DAYS)]
    pub days: u32,
    /// Replace an existing certificate and key.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum NodeKind {
    Node,
    Router,
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// The user's name.
    pub name: String,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = LEAF_DAYS)]
    pub days: u32,
    /// Replace an existing certificate and key.
    #[arg(long)]
    pub overwrite: bool,
}

/// The default identity name: the first host, with what a name may not
/// hold (`*`, `:`) turned into `-` (`*.db.svc` -> `db.svc`, `::1` -> `1`).
fn name_from_host(host: &str, kind: Kind) -> String {
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    if name.is_empty() {
        kind.to_string()
    } else {
        name.chars().take(64).collect()
    }
}

/// `--certs-dir`, or by default `~/.tessera/certs`.
fn certs_dir(ctx: &Ctx) -> CertsDir {
    CertsDir::new(ctx.certs_dir.clone().unwrap_or_else(default_certs_dir))
}

/// `~/.tessera/certs`, or `./certs` without a home directory.
fn default_certs_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".tessera").join("certs"),
        None => PathBuf::from("certs"),
    }
}

pub fn run(ctx: &Ctx, command: Command) -> Result<()> {
    let created = match command {
        Command::CreateCa(a) => certs::create_ca(&certs_dir(ctx), a.days, a.overwrite)?,
        Command::CreateNode(a) => {
            let kind = match a.kind {
                NodeKind::Node => Kind::Node,
                NodeKind::Router => Kind::Router,
            };
            let name = match &a.name {
                Some(n) => n.clone(),
                None => name_from_host(&a.hosts[0], kind),
            };
            let id = Identity::new(kind, &name)?;
            certs::create(&certs_dir(ctx), &id, &a.hosts, a.days, a.overwrite)?
        }
        Command::CreateClient(a) => {
            let id = Identity::new(Kind::Client, &a.name)?;
            certs::create(&certs_dir(ctx), &id, &[], a.days, a.overwrite)?
        }
        Command::List => {
            let listed = certs::list(&certs_dir(ctx))?;
            if ctx.output.is_json() {
                return output::print_json(&listed);
            }
            print_table(&listed);
            return Ok(());
        }
    };
    if ctx.output.is_json() {
        return output::print_json(&created);
    }
    print_table(&[created]);
    Ok(())
}

fn print_table(certs: &[CertInfo]) {
    let mut t = output::table(&[
        "file",
        "kind",
        "identity",
        "hosts",
        "expires (UTC)",
        "days left",
    ]);
    for c in certs {
        t.add_row(vec![
            c.file.clone(),
            c.kind.clone(),
            c.identity.clone().unwrap_or_else(|| "-".into()),
            c.hosts.join(", "),
            c.not_after.clone(),
            c.days_left.to_string(),
        ]);
    }
    output::print_table(&t);
}
