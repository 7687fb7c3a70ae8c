//! `tessera keyspace ...`: create and list keyspaces.
//!
//! A keyspace is a named part of the key space, partitioned by range
//! (ordered scans; grows by splitting) or by hash (sequential keys spread
//! evenly; pre-split into `--regions` regions along the hash prefix). The
//! kind is fixed at creation. The `default` keyspace always exists and is a
//! range keyspace.

use anyhow::Result;
use clap::{ArgGroup, Args, Subcommand};
use serde::Serialize;
use tessera_proto::directorypb::{Keyspace, KeyspaceKind};
use tessera_proto::keys::HASH_KEYSPACE_BIT;

use crate::conn::Ctx;
use crate::output;

/// The most regions a hash keyspace can be created with.
pub const MAX_HASH_REGIONS: u32 = 4096;

/// Keyspace commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a keyspace partitioned by range or by hash.
    Create(CreateArgs),
    /// List the keyspaces with their id, kind and initial regions.
    List,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("kind").required(true).args(["range", "hash"])))]
pub struct CreateArgs {
    /// The new keyspace's name.
    pub name: String,
    /// Partition by key range: keys stay in order for scans; regions split
    /// as they grow.
    #[arg(long)]
    pub range: bool,
    /// Partition by a hash of the key: sequential keys spread evenly over
    /// --regions regions created up front.
    #[arg(long, requires = "regions")]
    pub hash: bool,
    /// How many regions a --hash keyspace starts with (1 to 4096).
    #[arg(
        long,
        value_name = "N",
        // Not `requires = "hash"`: clap lets any member of the `kind`
        // group satisfy that (clap-rs/clap#4707); with exactly one kind
        // required, refusing --range is the same rule.
        conflicts_with = "range",
        value_parser = clap::value_parser!(u32).range(1..=MAX_HASH_REGIONS as i64)
    )]
    pub regions: Option<u32>,
}

pub async fn run(ctx: &Ctx, command: Command) -> Result<()> {
    let dir = ctx.directory()?;
    match command {
        Command::Create(args) => {
            let (kind, regions) = if args.hash {
                (KeyspaceKind::Hash, args.regions.unwrap_or(1))
            } else {
                (KeyspaceKind::Range, 0)
            };
            let created = KeyspaceView::new(&dir.create_keyspace(&args.name, kind, regions).await?);
            if ctx.output.is_json() {
                return output::print_json(&created);
            }
            print_table(&[created]);
            Ok(())
        }
        Command::List => {
            let keyspaces = dir.keyspaces().await?;
            let views: Vec<KeyspaceView> = keyspaces.all().map(KeyspaceView::new).collect();
            if ctx.output.is_json() {
                return output::print_json(&views);
            }
            print_table(&views);
            Ok(())
        }
    }
}

/// A keyspace as the CLI shows it.
#[derive(Debug, Serialize)]
pub struct KeyspaceView {
    pub id: u32,
    pub name: String,
    /// `range` or `hash`.
    pub kind: &'static str,
    /// For hash keyspaces: the regions it was created with.
    pub initial_regions: u32,
    /// For hash keyspaces: the stores its placement ring is built over
    /// (empty until its regions are first placed).
    pub ring_stores: Vec<u64>,
}

impl KeyspaceView {
    pub fn new(k: &Keyspace) -> Self {
        // The id's top bit also says hash; trust either.
        let hash = k.kind == KeyspaceKind::Hash as i32 || k.id & HASH_KEYSPACE_BIT != 0;
        KeyspaceView {
            id: k.id,
            name: k.name.clone(),
            kind: if hash { "hash" } else { "range" },
            initial_regions: k.initial_regions,
            ring_stores: k.ring_stores.clone(),
        }
    }
}

fn print_table(keyspaces: &[KeyspaceView]) {
    let mut t = output::table(&["ID", "NAME", "KIND", "INITIAL REGIONS", "PLACED ON STORES"]);
    for k in keyspaces {
        let (regions, ring) = if k.kind == "hash" {
            let ring: Vec<String> = k.ring_stores.iter().map(u64::to_string).collect();
            let ring = if ring.is_empty() {
                "(not yet)".into()
            } else {
                ring.join(",")
            };
            (k.initial_regions.to_string(), ring)
        } else {
            ("-".into(), "-".into())
        };
        t.add_row(vec![
            k.id.to_string(),
            k.name.clone(),
            k.kind.into(),
            regions,
            ring,
        ]);
    }
    output::print_table(&t);
}
