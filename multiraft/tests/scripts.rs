//! Step-level scripts of the Raft side: election, a replicated write, group
//! commit across regions, a split with held votes, a bulk split spreading
//! its leaders, a leader transfer, a ReadIndex read and a lease read,
//! hibernation, each a goldenscript in
//! `tests/scripts/*.txt` run against real pollers stepped by hand (see
//! `scripts/cluster.rs`). A script states what it expects in comments; the
//! output under each command is the expectation, checked on every run.
//! After a deliberate change of behaviour, `UPDATE_GOLDENFILES=1 cargo test
//! -p tessera-multiraft --test scripts` rewrites the outputs; read the diff.
//!
//! Commands (stores are numbers, `r=` a region id):
//! - `cluster stores=N regions=M` — a new cluster (see `Cluster::new`);
//! - `tick STORE... [count=N]` — ticks every peer of the stores;
//! - `campaign STORE r=R`, `transfer-leader STORE r=R to=PEER`;
//! - `put STORE r=R KEY VALUE`, `split STORE r=R KEY[,KEY...] new=R2` —
//!   proposals (a split numbers its new regions from R2);
//! - `read STORE r=R KEY [policy=leader|follower]`;
//! - `round STORE...` — one poller round on each store (no delivery);
//! - `deliver [from=S] [to=S] [r=R]`, `drop [...]` — messages in flight;
//! - `stabilize` — rounds and deliveries until nothing moves; `stabilize
//!   quiet` prints only what finished, not every message;
//! - `status [STORE...]` — every region of the stores;
//! - `stats STORE` — the poller's synced writes and the regions they served.
//!
//! Every command also prints what finished meanwhile (proposals applied,
//! reads served) as `s1 r1 put a 1: ok at index 6`.

#[path = "scripts/cluster.rs"]
mod cluster;

use std::error::Error;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use cluster::{Cluster, InFlight};
use protobuf::Message as _;
use raft::eraftpb::{EntryType, Message, MessageType};
use tessera_multiraft::mailbox::{PollerMsg, ReadPolicy};

struct Runner {
    cluster: Option<Cluster>,
}

impl Runner {
    fn cluster(&mut self) -> Result<&mut Cluster, Box<dyn Error>> {
        self.cluster
            .as_mut()
            .ok_or_else(|| "no cluster: start with `cluster stores=N regions=M`".into())
    }
}

/// Parses a number (a store, a region, a count).
fn num(s: &str) -> Result<u64, Box<dyn Error>> {
    s.parse::<u64>()
        .map_err(|_| format!("not a number: {s:?}").into())
}

fn key_num(
    args: &mut goldenscript::ArgumentConsumer<'_>,
    key: &str,
) -> Result<Option<u64>, Box<dyn Error>> {
    args.take_key(key).map(num).transpose()
}

fn required(
    args: &mut goldenscript::ArgumentConsumer<'_>,
    key: &str,
) -> Result<u64, Box<dyn Error>> {
    key_num(args, key)?.ok_or_else(|| format!("{key}= is required").into())
}

/// The positional store numbers of a command (all stores if none).
fn stores(
    args: &mut goldenscript::ArgumentConsumer<'_>,
    cluster: &Cluster,
) -> Result<Vec<u64>, Box<dyn Error>> {
    let mut out = vec![];
    while let Some(s) = args.next_pos() {
        out.push(num(s)?);
    }
    if out.is_empty() {
        out = cluster.stores.keys().copied().collect();
    }
    Ok(out)
}

impl goldenscript::Runner for Runner {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        command: &goldenscript::Command,
        _context: &goldenscript::Context,
    ) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        let mut args = command.consume_args();
        match command.name.as_str() {
            "cluster" => {
                let stores = required(&mut args, "stores")?;
                let regions = key_num(&mut args, "regions")?.unwrap_or(1);
                let hibernate = match args.take_key("hibernate") {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(other) => return Err(format!("hibernate=true|false, not {other}").into()),
                };
                args.reject_next()?;
                self.cluster = Some(Cluster::new(stores, regions, hibernate)?);
            }
            "tick" => {
                let count = key_num(&mut args, "count")?.unwrap_or(1) as usize;
                let c = self.cluster()?;
                for s in stores(&mut args, c)? {
                    c.send(s, PollerMsg::Tick { count })?;
                    c.store(s)?.poller.run_round();
                }
                args.reject_next()?;
            }
            "campaign" | "transfer-leader" => {
                let store = num(args.next_pos().ok_or("a store is required")?)?;
                let region_id = required(&mut args, "r")?;
                let msg = if command.name == "campaign" {
                    PollerMsg::Campaign { region_id }
                } else {
                    let to_peer = required(&mut args, "to")?;
                    PollerMsg::TransferLeader { region_id, to_peer }
                };
                args.reject_next()?;
                let c = self.cluster()?;
                c.send(store, msg)?;
                c.store(store)?.poller.run_round();
            }
            "put" | "split" => {
                let store = num(args.next_pos().ok_or("a store is required")?)?;
                let region = required(&mut args, "r")?;
                let key = args.next_pos().ok_or("a key is required")?;
                let command_text = if command.name == "put" {
                    let value = args.next_pos().ok_or("a value is required")?;
                    format!("put {key} {value}")
                } else {
                    format!("split {key} {}", required(&mut args, "new")?)
                };
                args.reject_next()?;
                self.cluster()?.propose(store, region, command_text)?;
            }
            "read" => {
                let store = num(args.next_pos().ok_or("a store is required")?)?;
                let region = required(&mut args, "r")?;
                let key = args.next_pos().ok_or("a key is required")?.to_string();
                let policy = match args.take_key("policy").unwrap_or("leader") {
                    "leader" => ReadPolicy::Leader,
                    "follower" => ReadPolicy::Follower,
                    other => return Err(format!("unknown policy {other}").into()),
                };
                args.reject_next()?;
                self.cluster()?.read(store, region, key, policy)?;
            }
            "round" => {
                let c = self.cluster()?;
                for s in stores(&mut args, c)? {
                    c.store(s)?.poller.run_round();
                }
            }
            "deliver" | "drop" => {
                let from = key_num(&mut args, "from")?;
                let to = key_num(&mut args, "to")?;
                let region = key_num(&mut args, "r")?;
                args.reject_next()?;
                let dropping = command.name == "drop";
                let c = self.cluster()?;
                for m in c.take_messages(from, to, region) {
                    let verb = if dropping { "dropped " } else { "" };
                    let line = describe(&m);
                    let lost = !dropping && !c.deliver(m)?;
                    writeln!(out, "{verb}{line}{}", if lost { " (lost)" } else { "" })?;
                }
            }
            "stabilize" => {
                let quiet = match args.next_pos() {
                    None => false,
                    Some("quiet") => true,
                    Some(other) => return Err(format!("stabilize [quiet], not {other:?}").into()),
                };
                args.reject_next()?;
                stabilize(self.cluster()?, quiet, &mut out)?;
            }
            "hibernate-request" | "hibernate-ack" => {
                // A hibernation message as store `from`'s peer would send
                // it (forged or stale, for the hostile cases).
                let from = required(&mut args, "from")?;
                let to = required(&mut args, "to")?;
                let region = required(&mut args, "r")?;
                let term = required(&mut args, "term")?;
                let index = required(&mut args, "index")?;
                args.reject_next()?;
                use tessera_proto::raft_serverpb::{hibernation::Kind, Hibernation, RaftMessage};
                let kind = if command.name == "hibernate-request" {
                    Kind::Request
                } else {
                    Kind::Ack
                };
                let msg = RaftMessage {
                    region_id: region,
                    from_peer: Some(cluster::peer(region, from)),
                    to_peer: Some(cluster::peer(region, to)),
                    hibernation: Some(Hibernation {
                        kind: kind as i32,
                        term,
                        index,
                    }),
                    ..Default::default()
                };
                let c = self.cluster()?;
                c.deliver((from, to, msg))?;
                c.store(to)?.poller.run_round();
            }
            "kill" => {
                let store = num(args.next_pos().ok_or("a store is required")?)?;
                args.reject_next()?;
                self.cluster()?.kill(store)?;
            }
            "status" => {
                let c = self.cluster()?;
                for s in stores(&mut args, c)? {
                    for info in c.store(s)?.poller.regions() {
                        writeln!(out, "{}", status_line(s, &info))?;
                    }
                }
            }
            "stats" => {
                let store = num(args.next_pos().ok_or("a store is required")?)?;
                args.reject_next()?;
                let stats = self.cluster()?.store(store)?.poller.stats().clone();
                writeln!(
                    out,
                    "s{store}: {} synced writes for {} region writes, at most {} regions in one",
                    stats.synced_writes.load(Ordering::Relaxed),
                    stats.regions_in_synced_writes.load(Ordering::Relaxed),
                    stats.max_regions_per_synced_write.load(Ordering::Relaxed),
                )?;
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        if let Some(c) = &self.cluster {
            for e in c.take_events() {
                writeln!(out, "{e}")?;
            }
        }
        Ok(out)
    }
}

/// Rounds on every store and deliveries of everything in flight, until a
/// pass moves nothing; prints every delivered message unless `quiet`.
fn stabilize(c: &mut Cluster, quiet: bool, out: &mut String) -> Result<(), Box<dyn Error>> {
    for _ in 0..1000 {
        let mut moved = false;
        for store in c.stores.values_mut() {
            moved |= store.poller.run_round();
        }
        for m in c.take_messages(None, None, None) {
            moved = true;
            let line = describe(&m);
            let lost = !c.deliver(m)?;
            if !quiet {
                writeln!(out, "{line}{}", if lost { " (lost)" } else { "" })?;
            }
        }
        for e in c.take_events() {
            writeln!(out, "{e}")?;
        }
        if !moved {
            return Ok(());
        }
    }
    Err("the cluster did not settle in 1000 passes".into())
}

/// One region on one store, as `status` prints it.
fn status_line(store: u64, info: &tessera_multiraft::RegionInfo) -> String {
    let r = &info.region;
    let key = |k: &[u8]| String::from_utf8_lossy(k).to_string();
    let role = if info.is_leader {
        "leader".to_string()
    } else {
        match &info.leader {
            Some(l) => format!("follower of {}", l.id),
            None => "no leader".to_string(),
        }
    };
    let epoch = r.region_epoch.unwrap_or_default();
    let asleep = if info.hibernating { " asleep" } else { "" };
    format!(
        "s{store} r{} [{}..{}) v{} peer {} {role} term={} commit={} applied={} last={}{asleep}",
        r.id,
        key(&r.start_key),
        key(&r.end_key),
        epoch.version,
        info.peer_id,
        info.term,
        info.commit_index,
        info.applied_index,
        info.last_index,
    )
}

/// A message in flight, one line: stores, region, peers, type and the
/// fields that matter for its type.
fn describe((from, to, m): &InFlight) -> String {
    let head = format!("s{from}→s{to} r{}", m.region_id);
    if m.is_tombstone {
        return format!("{head} tombstone");
    }
    if let Some(h) = &m.hibernation {
        let kind = format!("{:?}", h.kind());
        let (from, to) = (
            m.from_peer.unwrap_or_default(),
            m.to_peer.unwrap_or_default(),
        );
        return match h.kind() {
            tessera_proto::raft_serverpb::hibernation::Kind::Ping => {
                format!("s{from}→s{to} ping", from = from.store_id, to = to.store_id)
            }
            _ => format!(
                "{head} {}→{} Hibernate{kind} term={} index={}",
                from.id, to.id, h.term, h.index
            ),
        };
    }
    let Ok(msg) = Message::parse_from_bytes(&m.message) else {
        return format!("{head} undecodable");
    };
    let kind = format!("{:?}", msg.get_msg_type());
    let kind = kind.trim_start_matches("Msg");
    let mut line = format!("{head} {}→{} {kind} term={}", msg.from, msg.to, msg.term);
    let read = if msg.context.is_empty() { "" } else { " read" };
    match msg.get_msg_type() {
        MessageType::MsgAppend => {
            let entries: Vec<String> = msg
                .entries
                .iter()
                .map(|e| match e.get_entry_type() {
                    EntryType::EntryNormal if e.data.is_empty() => {
                        format!("{}@{}", e.index, e.term)
                    }
                    EntryType::EntryNormal => format!(
                        "{}@{} {}",
                        e.index,
                        e.term,
                        String::from_utf8_lossy(&e.data)
                    ),
                    _ => format!("{}@{} conf change", e.index, e.term),
                })
                .collect();
            let _ = write!(
                line,
                " prev={}@{} commit={} [{}]",
                msg.index,
                msg.log_term,
                msg.commit,
                entries.join(", ")
            );
        }
        MessageType::MsgAppendResponse => {
            let verdict = if msg.reject { " rejected" } else { "" };
            let _ = write!(line, " index={}{verdict}", msg.index);
        }
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
            let _ = write!(line, " last={}@{}", msg.index, msg.log_term);
        }
        MessageType::MsgRequestVoteResponse | MessageType::MsgRequestPreVoteResponse => {
            line.push_str(if msg.reject { " rejected" } else { " granted" });
        }
        MessageType::MsgHeartbeat => {
            let _ = write!(line, " commit={}{read}", msg.commit);
        }
        MessageType::MsgHeartbeatResponse => line.push_str(read),
        _ => {}
    }
    line
}

fn run(script: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scripts")
        .join(script);
    goldenscript::run(&mut Runner { cluster: None }, &path).expect("the script runs");
}

#[test]
fn a_region_elects_the_store_whose_election_timeout_fires_first() {
    run("election.txt");
}

#[test]
fn a_write_applies_on_every_replica_once_a_quorum_persisted_it() {
    run("replicated_write.txt");
}

#[test]
fn writes_to_several_regions_in_one_round_share_one_synced_write() {
    run("group_commit.txt");
}

#[test]
fn votes_for_a_split_off_region_wait_for_the_split_to_apply() {
    run("split_held_votes.txt");
}

#[test]
fn a_bulk_split_spreads_its_new_leaders_over_the_stores() {
    run("bulk_split_spreads_leaders.txt");
}

#[test]
fn a_leader_transfer_hands_leadership_to_a_caught_up_follower() {
    run("leader_transfer.txt");
}

#[test]
fn a_read_index_read_waits_for_a_quorum_heartbeat_round() {
    run("read_index.txt");
}

#[test]
fn a_lease_read_is_served_without_messages_until_the_lease_runs_out() {
    run("lease_read.txt");
}

#[test]
fn idle_regions_hibernate_and_wake() {
    run("hibernation.txt");
}

#[test]
fn hibernation_messages_that_do_not_match_change_nothing() {
    run("hibernation_hostile.txt");
}
