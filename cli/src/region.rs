//! `tessera region ...`: list, show, split, move and transfer-leader.
//!
//! Listing and showing read the directory's view of regions: their ranges
//! (decoded into `keyspace:user key`, see `keys.rs`), the leader the
//! directory last heard from, the peers with their roles, the approximate
//! size and the epoch (`conf_ver/version`).
//!
//! Split, move and transfer-leader ask the directory for an operator and,
//! unless `--no-wait`, then wait until the directory's view of the region
//! shows the result:
//!
//! - split: the region's epoch `version` grew; the regions now covering
//!   its old range are printed;
//! - move: the region has a voter on `--to` and no peer on `--from`;
//! - transfer-leader: the directory reports the leader on `--to`.
//!
//! While waiting, progress comes from the operator as `cluster status`
//! lists it. If the directory stops listing the operator but the region
//! does not show the result within [`OPERATOR_GONE_GRACE`], the operator
//! failed or was dropped (for example on a directory leader change) and the
//! command fails at once instead of waiting out `--wait-timeout`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::{ArgGroup, Args, Subcommand};
use serde::Serialize;
use tessera_proto::directorypb::RegionInfo;
use tessera_proto::keys::{self, DEFAULT_KEYSPACE_ID};
use tessera_proto::metapb::{PeerRole, Region};

use crate::boundaries::{hex, render_bound, Bound, Keyspaces};
use crate::conn::{parse_seconds, seconds, Ctx};
use crate::directory::Directory;
use crate::output::{self, human_bytes};
use crate::wait::{self, Poll};

/// How long an operator may be gone from the directory's list before the
/// region must show its result.
pub const OPERATOR_GONE_GRACE: Duration = Duration::from_secs(10);

/// Region commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List regions in key order: range, leader, peers, size and epoch.
    List(ListArgs),
    /// Show one region, by id or by a key it holds.
    Show(ShowArgs),
    /// Split a region in two, at a key or at its middle, and wait until the
    /// new regions exist.
    Split(SplitArgs),
    /// Move a region's replica from one store to another (add a learner,
    /// promote it, remove the old peer) and follow its progress.
    Move(MoveArgs),
    /// Make the region's replica on another store its leader, and wait
    /// until it leads.
    TransferLeader(TransferLeaderArgs),
    /// Merge a region into an adjacent one (moving its replicas onto the
    /// other's stores first) and wait until it is gone.
    Merge(crate::merge::MergeArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only the regions of this keyspace (including any region that spans
    /// its boundary).
    #[arg(long, short = 'k', value_name = "NAME")]
    pub keyspace: Option<String>,
    /// At most this many regions; 0 lists all.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub limit: u32,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("which").required(true).args(["id", "key"])))]
pub struct ShowArgs {
    /// The region's id.
    pub id: Option<u64>,
    /// Show the region holding this user key instead.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// The keyspace of --key [default: default].
    // `conflicts_with = "id"` rather than `requires = "key"`, which any
    // member of the `which` group would satisfy (clap-rs/clap#4707).
    #[arg(long, short = 'k', value_name = "NAME", conflicts_with = "id")]
    pub keyspace: Option<String>,
}

#[derive(Args, Debug)]
pub struct SplitArgs {
    /// The region to split.
    pub id: u64,
    /// Split at this user key: it becomes the first key of the right-hand
    /// region. Without it the region is split at its middle key.
    #[arg(long, value_name = "KEY")]
    pub at: Option<String>,
    /// The keyspace of --at [default: the keyspace the region starts in].
    #[arg(long, short = 'k', value_name = "NAME", requires = "at")]
    pub keyspace: Option<String>,
    /// Give up waiting for the split after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_seconds)]
    pub wait_timeout: Duration,
    /// Return as soon as the directory accepted the split.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
pub struct MoveArgs {
    /// The region to move.
    pub id: u64,
    /// The store whose replica is removed.
    #[arg(long, value_name = "STORE")]
    pub from: u64,
    /// The store that receives a new replica.
    #[arg(long, value_name = "STORE")]
    pub to: u64,
    /// Give up waiting for the move after this many seconds (the move
    /// itself goes on).
    #[arg(long, value_name = "SECONDS", default_value = "600", value_parser = parse_seconds)]
    pub wait_timeout: Duration,
    /// Return as soon as the directory accepted the move.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
pub struct TransferLeaderArgs {
    /// The region whose leadership moves.
    pub id: u64,
    /// The store whose replica (a voter) should lead.
    #[arg(long, value_name = "STORE")]
    pub to: u64,
    /// Give up waiting for the new leader after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value = "600", value_parser = parse_seconds)]
    pub wait_timeout: Duration,
    /// Return as soon as the directory accepted the transfer.
    #[arg(long)]
    pub no_wait: bool,
}

pub async fn run(ctx: &Ctx, command: Command) -> Result<()> {
    let dir = ctx.directory()?;
    match command {
        Command::List(args) => list(ctx, &dir, args).await,
        Command::Show(args) => show(ctx, &dir, args).await,
        Command::Split(args) => split(ctx, &dir, args).await,
        Command::Move(args) => move_region(ctx, &dir, args).await,
        Command::TransferLeader(args) => transfer_leader(ctx, &dir, args).await,
        Command::Merge(args) => crate::merge::run(ctx, &dir, args).await,
    }
}

/// A region as the CLI shows it (and as `--output json` prints it).
#[derive(Debug, Serialize)]
pub struct RegionView {
    pub id: u64,
    /// The first key, decoded (`-inf` when unbounded).
    pub start_key: String,
    /// The key after the last, decoded (`+inf` when unbounded).
    pub end_key: String,
    /// The encoded start key in hex (empty when unbounded).
    pub start_key_hex: String,
    pub end_key_hex: String,
    /// The store of the leader the directory last heard from.
    pub leader_store: Option<u64>,
    pub peers: Vec<PeerView>,
    pub approximate_size_bytes: u64,
    pub epoch: EpochView,
}

#[derive(Debug, Serialize)]
pub struct PeerView {
    pub id: u64,
    pub store_id: u64,
    pub role: &'static str,
    /// The leader has not heard from this peer recently.
    pub down: bool,
}

#[derive(Debug, Serialize)]
pub struct EpochView {
    pub conf_ver: u64,
    pub version: u64,
}

/// The name of a peer role as the CLI prints it.
pub fn role_name(role: i32) -> &'static str {
    match PeerRole::try_from(role) {
        Ok(PeerRole::Voter) => "voter",
        Ok(PeerRole::Learner) => "learner",
        Ok(PeerRole::IncomingVoter) => "incoming-voter",
        Ok(PeerRole::DemotingVoter) => "demoting-voter",
        Err(_) => "unknown",
    }
}

impl RegionView {
    pub fn new(info: &RegionInfo, keyspaces: &Keyspaces) -> Self {
        let region = info.region.clone().unwrap_or_default();
        let epoch = region.region_epoch.unwrap_or_default();
        let down: Vec<u64> = info.down_peers.iter().map(|p| p.id).collect();
        RegionView {
            id: region.id,
            start_key: render_bound(&region.start_key, Bound::Start, keyspaces),
            end_key: render_bound(&region.end_key, Bound::End, keyspaces),
            start_key_hex: hex(&region.start_key),
            end_key_hex: hex(&region.end_key),
            leader_store: info.leader.as_ref().map(|l| l.store_id),
            peers: region
                .peers
                .iter()
                .map(|p| PeerView {
                    id: p.id,
                    store_id: p.store_id,
                    role: role_name(p.role),
                    down: down.contains(&p.id),
                })
                .collect(),
            approximate_size_bytes: info.approximate_size_bytes,
            epoch: EpochView {
                conf_ver: epoch.conf_ver,
                version: epoch.version,
            },
        }
    }

    /// Peers as `store:role`, down peers marked.
    pub fn peers_text(&self) -> String {
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|p| {
                let down = if p.down { " (down)" } else { "" };
                format!("{}:{}{down}", p.store_id, p.role)
            })
            .collect();
        if peers.is_empty() {
            "-".into()
        } else {
            peers.join(", ")
        }
    }

    pub fn leader_text(&self) -> String {
        self.leader_store
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into())
    }

    pub fn epoch_text(&self) -> String {
        format!("{}/{}", self.epoch.conf_ver, self.epoch.version)
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.start_key.clone(),
            self.end_key.clone(),
            self.leader_text(),
            self.peers_text(),
            human_bytes(self.approximate_size_bytes),
            self.epoch_text(),
        ]
    }
}

/// Prints regions as `region list` does.
pub fn print_regions(ctx: &Ctx, regions: &[RegionView]) -> Result<()> {
    if ctx.output.is_json() {
        return output::print_json(regions);
    }
    let mut t = output::table(&[
        "ID",
        "START",
        "END",
        "LEADER STORE",
        "PEERS (STORE:ROLE)",
        "SIZE",
        "EPOCH (CONF/VER)",
    ]);
    for r in regions {
        t.add_row(r.row());
    }
    output::print_table(&t);
    Ok(())
}

/// Prints one region as `region show` does.
pub fn print_region(ctx: &Ctx, r: &RegionView) -> Result<()> {
    if ctx.output.is_json() {
        return output::print_json(r);
    }
    let t = output::details(vec![
        ("region", r.id.to_string()),
        ("start key", r.start_key.clone()),
        ("end key", r.end_key.clone()),
        ("leader store", r.leader_text()),
        ("peers (store:role)", r.peers_text()),
        ("approximate size", human_bytes(r.approximate_size_bytes)),
        ("epoch (conf_ver/version)", r.epoch_text()),
    ]);
    output::print_table(&t);
    Ok(())
}

async fn list(ctx: &Ctx, dir: &Directory, args: ListArgs) -> Result<()> {
    let keyspaces = dir.keyspaces().await?;
    let (start, end) = match &args.keyspace {
        Some(name) => keys::keyspace_range(keyspaces.by_name(name)?.id),
        None => (Vec::new(), Vec::new()),
    };
    let regions = dir.scan_regions(start, end, args.limit).await?;
    let views: Vec<RegionView> = regions
        .iter()
        .map(|r| RegionView::new(r, &keyspaces))
        .collect();
    print_regions(ctx, &views)?;
    if !ctx.output.is_json() && args.limit != 0 && views.len() == args.limit as usize {
        eprintln!(
            "note: showing the first {} regions; --limit 0 lists all",
            args.limit
        );
    }
    Ok(())
}

async fn show(ctx: &Ctx, dir: &Directory, args: ShowArgs) -> Result<()> {
    let keyspaces = dir.keyspaces().await?;
    let info = match (args.id, &args.key) {
        (Some(id), _) => dir.region_by_id(id).await?,
        (None, Some(key)) => {
            let id = keyspaces.id_of(args.keyspace.as_deref())?;
            let encoded = keys::encode(id, key.as_bytes());
            keys::validate_key(&encoded).map_err(|e| anyhow!("--key: {e}"))?;
            dir.region_by_key(encoded).await?
        }
        (None, None) => bail!("give a region id or --key"),
    };
    print_region(ctx, &RegionView::new(&info, &keyspaces))
}

/// The keyspace a region's range starts in (`default` for the first one).
pub fn keyspace_of(region: &Region) -> u32 {
    match region.start_key.get(..4) {
        Some(prefix) => u32::from_be_bytes(prefix.try_into().expect("4 bytes")),
        None => DEFAULT_KEYSPACE_ID,
    }
}

/// Whether encoded `key` lies strictly inside `region`, so that splitting
/// there leaves two non-empty ranges.
pub fn splits(region: &Region, key: &[u8]) -> bool {
    tessera_proto::region::check_split_keys(region, &[key.to_vec()]).is_ok()
}

fn region_of(info: &RegionInfo, id: u64) -> Result<Region> {
    info.region
        .clone()
        .ok_or_else(|| anyhow!("region {id} not found"))
}

async fn split(ctx: &Ctx, dir: &Directory, args: SplitArgs) -> Result<()> {
    let keyspaces = dir.keyspaces().await?;
    let before = region_of(&dir.region_by_id(args.id).await?, args.id)?;
    let mut split_keys = Vec::new();
    if let Some(at) = &args.at {
        let keyspace = match &args.keyspace {
            Some(name) => keyspaces.by_name(name)?.id,
            None => keyspace_of(&before),
        };
        let key = keys::encode(keyspace, at.as_bytes());
        keys::validate_key(&key).map_err(|e| anyhow!("--at: {e}"))?;
        if !splits(&before, &key) {
            bail!(
                "--at {} is not inside region {} [{}, {})",
                render_bound(&key, Bound::Start, &keyspaces),
                before.id,
                render_bound(&before.start_key, Bound::Start, &keyspaces),
                render_bound(&before.end_key, Bound::End, &keyspaces),
            );
        }
        split_keys.push(key);
    }
    let operator = dir.split_region(args.id, split_keys).await?;
    if args.no_wait {
        return print_started(ctx, args.id, &operator, "split");
    }
    let version = before.region_epoch.unwrap_or_default().version;
    let mut watch = OperatorWatch::new(args.id, &operator);
    let hint = format!(
        "the split may still happen: see `tessera region list` or `tessera region show {}`",
        args.id
    );
    wait::until(
        &format!("region {} to split", args.id),
        args.wait_timeout,
        &hint,
        async || {
            let info = dir.region_by_id(args.id).await?;
            let region = region_of(&info, args.id)?;
            let now = region.region_epoch.unwrap_or_default().version;
            if now > version {
                return Ok(Poll::Done(()));
            }
            let shown = format!("epoch version still {now}");
            watch.poll(dir, shown).await
        },
    )
    .await?;
    let regions = dir
        .scan_regions(before.start_key.clone(), before.end_key.clone(), 0)
        .await?;
    let views: Vec<RegionView> = regions
        .iter()
        .map(|r| RegionView::new(r, &keyspaces))
        .collect();
    print_regions(ctx, &views)
}

/// Whether the move of `region` from store `from` to store `to` is done.
pub fn moved(region: &Region, from: u64, to: u64) -> bool {
    let voter_on_to = region
        .peers
        .iter()
        .any(|p| p.store_id == to && p.role == PeerRole::Voter as i32);
    let on_from = region.peers.iter().any(|p| p.store_id == from);
    voter_on_to && !on_from
}

async fn move_region(ctx: &Ctx, dir: &Directory, args: MoveArgs) -> Result<()> {
    let keyspaces = dir.keyspaces().await?;
    let operator = dir.move_region(args.id, args.from, args.to).await?;
    if args.no_wait {
        return print_started(ctx, args.id, &operator, "move");
    }
    let mut watch = OperatorWatch::new(args.id, &operator);
    let hint = format!(
        "the move goes on in the background: see `tessera region show {}` and `tessera cluster status`",
        args.id
    );
    let info = wait::until(
        &format!(
            "region {} to move from store {} to store {}",
            args.id, args.from, args.to
        ),
        args.wait_timeout,
        &hint,
        async || {
            let info = dir.region_by_id(args.id).await?;
            let region = region_of(&info, args.id)?;
            if moved(&region, args.from, args.to) {
                return Ok(Poll::Done(info));
            }
            let shown = format!("peers {}", RegionView::new(&info, &keyspaces).peers_text());
            watch.poll(dir, shown).await
        },
    )
    .await?;
    print_region(ctx, &RegionView::new(&info, &keyspaces))
}

async fn transfer_leader(ctx: &Ctx, dir: &Directory, args: TransferLeaderArgs) -> Result<()> {
    let keyspaces = dir.keyspaces().await?;
    let operator = dir.transfer_leader(args.id, args.to).await?;
    if args.no_wait {
        return print_started(ctx, args.id, &operator, "transfer-leader");
    }
    let mut watch = OperatorWatch::new(args.id, &operator);
    let hint = format!(
        "see `tessera region show {}` for the current leader",
        args.id
    );
    let info = wait::until(
        &format!("store {} to lead region {}", args.to, args.id),
        args.wait_timeout,
        &hint,
        async || {
            let info = dir.region_by_id(args.id).await?;
            let leader = info.leader.as_ref().map(|l| l.store_id);
            if leader == Some(args.to) {
                return Ok(Poll::Done(info));
            }
            let shown = match leader {
                Some(s) => format!("leader on store {s}"),
                None => "leader unknown".into(),
            };
            watch.poll(dir, shown).await
        },
    )
    .await?;
    print_region(ctx, &RegionView::new(&info, &keyspaces))
}

/// What `--no-wait` prints: the operator the directory started.
pub(crate) fn print_started(ctx: &Ctx, region_id: u64, operator: &str, kind: &str) -> Result<()> {
    #[derive(Serialize)]
    struct Started<'a> {
        region_id: u64,
        kind: &'a str,
        operator: &'a str,
    }
    if ctx.output.is_json() {
        return output::print_json(&Started {
            region_id,
            kind,
            operator,
        });
    }
    output::say(format!(
        "{kind} of region {region_id} started: operator {operator}"
    ));
    Ok(())
}

/// Follows one operator in `cluster status` while a command waits for its
/// result.
pub(crate) struct OperatorWatch {
    region_id: u64,
    operator: String,
    gone_since: Option<Instant>,
}

impl OperatorWatch {
    pub(crate) fn new(region_id: u64, operator: &str) -> Self {
        OperatorWatch {
            region_id,
            operator: operator.to_string(),
            gone_since: None,
        }
    }

    /// The wait goes on with the operator's progress and `region` (what the
    /// region shows now), or fails if the operator has been gone for
    /// longer than [`OPERATOR_GONE_GRACE`].
    pub(crate) async fn poll<T>(&mut self, dir: &Directory, region: String) -> Result<Poll<T>> {
        let status = dir.cluster_status().await?;
        let op = status
            .operators
            .iter()
            .find(|o| o.id == self.operator)
            .or_else(|| {
                // An operator id the directory did not return: follow any
                // operator of this region.
                (self.operator.is_empty())
                    .then(|| {
                        status
                            .operators
                            .iter()
                            .find(|o| o.region_id == self.region_id)
                    })
                    .flatten()
            });
        match op {
            Some(op) => {
                self.gone_since = None;
                Ok(Poll::Pending(format!(
                    "operator {} step {}/{}: {}; {region}",
                    op.kind, op.step, op.steps, op.state
                )))
            }
            None => {
                let since = *self.gone_since.get_or_insert_with(Instant::now);
                if since.elapsed() > OPERATOR_GONE_GRACE {
                    return Ok(Poll::Failed(anyhow::anyhow!(
                        "the directory no longer runs operator {} for region {} \
                         (it finished, failed or was dropped), but the region does not \
                         show the result after {}: {region}",
                        self.operator,
                        self.region_id,
                        seconds(OPERATOR_GONE_GRACE)
                    )));
                }
                Ok(Poll::Pending(format!(
                    "operator ended; waiting for the region to report ({region})"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::metapb::{Peer, RegionEpoch};

    fn peer(id: u64, store_id: u64, role: PeerRole) -> Peer {
        Peer {
            id,
            store_id,
            role: role as i32,
        }
    }

    fn region(peers: Vec<Peer>) -> Region {
        Region {
            id: 5,
            start_key: keys::encode(0, b"b"),
            end_key: keys::encode(0, b"m"),
            region_epoch: Some(RegionEpoch {
                conf_ver: 3,
                version: 2,
            }),
            peers,
        }
    }

    #[test]
    fn move_is_done_with_a_voter_on_to_and_nothing_on_from() {
        let mut r = region(vec![
            peer(1, 1, PeerRole::Voter),
            peer(2, 2, PeerRole::Voter),
            peer(3, 3, PeerRole::Voter),
        ]);
        assert!(!moved(&r, 1, 4));
        r.peers.push(peer(4, 4, PeerRole::Learner));
        assert!(!moved(&r, 1, 4), "a learner is not enough");
        r.peers[3].role = PeerRole::Voter as i32;
        assert!(!moved(&r, 1, 4), "the old peer is still there");
        r.peers.remove(0);
        assert!(moved(&r, 1, 4));
    }

    #[test]
    fn split_keys_must_fall_strictly_inside() {
        let r = region(vec![]);
        assert!(splits(&r, &keys::encode(0, b"c")));
        assert!(!splits(&r, &keys::encode(0, b"b")), "the start key");
        assert!(!splits(&r, &keys::encode(0, b"m")), "the end key");
        assert!(!splits(&r, &keys::encode(0, b"a")));
        let unbounded = Region::default();
        assert!(splits(&unbounded, &keys::encode(3, b"x")));
        assert_eq!(keyspace_of(&unbounded), DEFAULT_KEYSPACE_ID);
        let other = Region {
            start_key: keys::encode(7, b"k"),
            ..Region::default()
        };
        assert_eq!(keyspace_of(&other), 7);
    }

    #[test]
    fn region_view_decodes_and_marks() {
        let info = RegionInfo {
            region: Some(Region {
                start_key: Vec::new(),
                ..region(vec![
                    peer(1, 1, PeerRole::Voter),
                    peer(2, 2, PeerRole::Learner),
                ])
            }),
            leader: Some(peer(1, 1, PeerRole::Voter)),
            approximate_size_bytes: 2048,
            down_peers: vec![peer(2, 2, PeerRole::Learner)],
        };
        let v = RegionView::new(&info, &Keyspaces::new(vec![]));
        assert_eq!(v.start_key, "-inf");
        assert_eq!(v.end_key, "default:m");
        assert_eq!(v.start_key_hex, "");
        assert_eq!(v.end_key_hex, "000000006d");
        assert_eq!(v.peers_text(), "1:voter, 2:learner (down)");
        assert_eq!(v.leader_text(), "1");
        assert_eq!(v.epoch_text(), "3/2");
        assert_eq!(
            v.row(),
            vec![
                "5",
                "-inf",
                "default:m",
                "1",
                "1:voter, 2:learner (down)",
                "2.0 KiB",
                "3/2"
            ]
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["leader_store"], 1);
        assert_eq!(json["peers"][1]["role"], "learner");
        assert_eq!(json["epoch"]["version"], 2);
    }
}
