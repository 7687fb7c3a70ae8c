//! `tessera cluster ...`: the cluster at a glance, and directory
//! membership.
//!
//! `status` shows what the directory leader knows: the directory members
//! (which one leads), stores by state, the region count, regions with fewer
//! healthy voters than wanted, the operators in flight and the alarms of
//! live stores (`NOSPACE`: below its free-space threshold, user writes
//! refused; `SLOW_DISK`).
//! `add-member` / `remove-member` change the directory's own Raft group;
//! they do not touch stores. `rotate-join-token` replaces the token new
//! stores and members join with (stores already registered keep working).

use std::collections::BTreeMap;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;
use tessera_proto::directorypb::{ClusterStatusResponse, Member};

use crate::conn::Ctx;
use crate::operator::OperatorView;
use crate::output;

/// Cluster commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show directory members, stores by state, regions, under-replicated
    /// regions, operators in flight and store alarms (NOSPACE, SLOW_DISK).
    Status,
    /// Add a member to the directory's Raft group (start its process first,
    /// pointed at the current members); with --learner it does not vote.
    AddMember(AddMemberArgs),
    /// Make a non-voting member (a learner) a voter once it has caught up.
    PromoteMember(MemberArgs),
    /// Make a voting member a learner: it keeps a full copy of the log and
    /// stops voting (refused for the leader, and below three voters).
    DemoteMember(MemberArgs),
    /// Remove a member from the directory's Raft group.
    RemoveMember(RemoveMemberArgs),
    /// Hand the directory's leadership to another member (before
    /// restarting or removing the leader, which `remove-member` refuses).
    TransferLeader(TransferLeaderArgs),
    /// Replace the cluster's join token: new stores and directory members
    /// need the new one; registered stores are not affected. Prints the new
    /// token as the last line, once.
    RotateJoinToken,
}

#[derive(Args, Debug)]
pub struct AddMemberArgs {
    /// The new member's id (unique among directory members).
    #[arg(long, value_name = "N")]
    pub id: u64,
    /// The address the new member serves on, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub address: String,
    /// The cluster's join token.
    #[arg(
        long,
        env = "TESSERA_JOIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub join_token: String,
    /// Add it as a non-voting member: it follows the log (a standby in
    /// another zone, say) without counting towards the quorum; promote it
    /// later with `promote-member`.
    #[arg(long)]
    pub learner: bool,
}

#[derive(Args, Debug)]
pub struct MemberArgs {
    /// The member's id.
    pub id: u64,
}

#[derive(Args, Debug)]
pub struct TransferLeaderArgs {
    /// The member to lead (see `tessera cluster status`).
    #[arg(long, value_name = "N")]
    pub to: u64,
}

#[derive(Args, Debug)]
pub struct RemoveMemberArgs {
    /// The id of the member to remove (see `tessera cluster status`).
    #[arg(long, value_name = "N")]
    pub id: u64,
}

/// The order store states are shown in; others follow by name.
const STATE_ORDER: [&str; 5] = ["up", "disconnected", "down", "offline", "tombstone"];

pub async fn run(ctx: &Ctx, command: Command) -> Result<()> {
    let dir = ctx.directory()?;
    match command {
        Command::Status => {
            let status = StatusView::new(dir.cluster_status().await?);
            if ctx.output.is_json() {
                return output::print_json(&status);
            }
            print_status(&status);
            Ok(())
        }
        Command::AddMember(args) => {
            crate::conn::parse_addrs(&args.address)
                .map_err(|e| anyhow::anyhow!("--address: {e}"))?;
            dir.add_member(args.id, &args.address, &args.join_token, args.learner)
                .await?;
            let what = if args.learner {
                "added non-voting"
            } else {
                "added"
            };
            done(ctx, what, args.id, Some(&args.address))
        }
        Command::PromoteMember(args) => {
            dir.set_member_role(args.id, false).await?;
            done(ctx, "promoted", args.id, None)
        }
        Command::DemoteMember(args) => {
            dir.set_member_role(args.id, true).await?;
            done(ctx, "demoted", args.id, None)
        }
        Command::RotateJoinToken => {
            let token = dir.rotate_join_token().await?;
            if ctx.output.is_json() {
                return output::print_json(&serde_json::json!({ "join_token": token }));
            }
            output::say("the cluster's join token was replaced; new stores and members need:");
            output::say(&token);
            Ok(())
        }
        Command::RemoveMember(args) => {
            dir.remove_member(args.id).await?;
            done(ctx, "removed", args.id, None)
        }
        Command::TransferLeader(args) => {
            dir.transfer_directory_leader(args.to).await?;
            done(ctx, "leader is now", args.to, None)
        }
    }
}

fn done(ctx: &Ctx, what: &str, id: u64, address: Option<&str>) -> Result<()> {
    #[derive(Serialize)]
    struct Done<'a> {
        member: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        address: Option<&'a str>,
        result: &'a str,
    }
    if ctx.output.is_json() {
        return output::print_json(&Done {
            member: id,
            address,
            result: what,
        });
    }
    match address {
        Some(a) => output::say(format!("{what} directory member {id} at {a}")),
        None => output::say(format!("{what} directory member {id}")),
    }
    Ok(())
}

/// `cluster status` as the CLI shows it.
#[derive(Debug, Serialize)]
pub struct StatusView {
    pub cluster_id: u64,
    pub bootstrapped: bool,
    pub members: Vec<MemberView>,
    /// Store count by state.
    pub stores: BTreeMap<String, u32>,
    pub regions: u32,
    pub under_replicated_regions: u32,
    pub operators: Vec<OperatorView>,
    /// Conditions of live stores to act on (`NOSPACE`, `SLOW_DISK`).
    pub alarms: Vec<AlarmView>,
}

#[derive(Debug, Serialize)]
pub struct AlarmView {
    pub store_id: u64,
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct MemberView {
    pub id: u64,
    pub address: String,
    /// `leader`, `follower` or `learner`.
    pub role: &'static str,
}

fn member_role(m: &Member) -> &'static str {
    if m.is_leader {
        "leader"
    } else if m.is_learner {
        "learner"
    } else {
        "follower"
    }
}

impl StatusView {
    pub fn new(s: ClusterStatusResponse) -> Self {
        let mut members: Vec<MemberView> = s
            .members
            .iter()
            .map(|m| MemberView {
                id: m.id,
                address: m.address.clone(),
                role: member_role(m),
            })
            .collect();
        members.sort_by_key(|m| m.id);
        let operators = crate::operator::views(s.operators);
        StatusView {
            cluster_id: s.cluster_id,
            bootstrapped: s.bootstrapped,
            members,
            stores: s.stores.into_iter().collect(),
            regions: s.regions,
            under_replicated_regions: s.under_replicated_regions,
            operators,
            alarms: s
                .alarms
                .into_iter()
                .map(|a| AlarmView {
                    store_id: a.store_id,
                    kind: a.kind,
                    message: a.message,
                })
                .collect(),
        }
    }

    /// Stores by state, `3 up, 1 down`, in lifecycle order.
    pub fn stores_text(&self) -> String {
        let mut parts: Vec<String> = STATE_ORDER
            .iter()
            .filter_map(|st| self.stores.get(*st).map(|n| format!("{n} {st}")))
            .collect();
        parts.extend(
            self.stores
                .iter()
                .filter(|(st, _)| !STATE_ORDER.contains(&st.as_str()))
                .map(|(st, n)| format!("{n} {st}")),
        );
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

fn print_status(s: &StatusView) {
    let summary = output::details(vec![
        ("cluster id", s.cluster_id.to_string()),
        (
            "bootstrapped",
            if s.bootstrapped { "yes" } else { "no" }.into(),
        ),
        ("stores", s.stores_text()),
        ("regions", s.regions.to_string()),
        (
            "under-replicated regions",
            s.under_replicated_regions.to_string(),
        ),
        ("operators in flight", s.operators.len().to_string()),
        (
            "alarms",
            if s.alarms.is_empty() {
                "none".to_string()
            } else {
                s.alarms
                    .iter()
                    .map(|a| format!("{} on store {}", a.kind, a.store_id))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
    ]);
    output::print_table(&summary);

    if !s.alarms.is_empty() {
        output::say("\nAlarms");
        let mut alarms = output::table(&["STORE", "ALARM", "DETAIL"]);
        for a in &s.alarms {
            alarms.add_row(vec![
                a.store_id.to_string(),
                a.kind.clone(),
                a.message.clone(),
            ]);
        }
        output::print_table(&alarms);
    }

    output::say("\nDirectory members");
    let mut members = output::table(&["ID", "ADDRESS", "ROLE"]);
    for m in &s.members {
        let role = if m.role == "leader" {
            "leader *".to_string()
        } else {
            m.role.to_string()
        };
        members.add_row(vec![m.id.to_string(), m.address.clone(), role]);
    }
    output::print_table(&members);

    if !s.operators.is_empty() {
        output::say("\nOperators in flight");
        crate::operator::print_table(&s.operators);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_orders_members_and_states() {
        let mut stores = std::collections::HashMap::new();
        stores.insert("down".to_string(), 1);
        stores.insert("up".to_string(), 3);
        stores.insert("weird".to_string(), 2);
        let v = StatusView::new(ClusterStatusResponse {
            members: vec![
                Member {
                    id: 3,
                    address: "c:1".into(),
                    is_leader: true,
                    is_learner: false,
                },
                Member {
                    id: 1,
                    address: "a:1".into(),
                    is_leader: false,
                    is_learner: true,
                },
            ],
            stores,
            ..Default::default()
        });
        assert_eq!(v.members[0].id, 1);
        assert_eq!(v.members[0].role, "learner");
        assert_eq!(v.members[1].role, "leader");
        assert_eq!(v.stores_text(), "3 up, 1 down, 2 weird");
    }
}
