//! `tessera operator list`: the operators the directory's leader runs now
//! — splits, moves, merges, repairs, balancing — each with its region, its
//! progress (steps done of all and the step it is on), its age, and why it
//! exists (the scheduler rule and what it saw, or an administrator's
//! request). The same list is in `tessera cluster status`.
//!
//! Operators live in the directory leader's memory: a new leader starts
//! with none and its rules decide again (a merge the old leader started
//! goes on at the source's leader, which drives it to its end).

use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;
use tessera_proto::directorypb::OperatorInfo;

use crate::conn::Ctx;
use crate::output;

/// Operator commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the operators in flight: region, kind, progress, current step,
    /// age and why (`--output json` for scripts).
    List,
}

#[derive(Debug, Serialize)]
pub struct OperatorView {
    pub id: String,
    pub region_id: u64,
    pub kind: String,
    /// Steps done.
    pub step: u32,
    pub steps: u32,
    /// The step it is on (`finished` once all are done).
    pub state: String,
    pub age_ms: u64,
    pub reason: String,
}

/// The operators by region, then id.
pub fn views(ops: Vec<OperatorInfo>) -> Vec<OperatorView> {
    let mut views: Vec<OperatorView> = ops
        .into_iter()
        .map(|o| OperatorView {
            id: o.id,
            region_id: o.region_id,
            kind: o.kind,
            step: o.step,
            steps: o.steps,
            state: o.state,
            age_ms: o.age_ms,
            reason: o.reason,
        })
        .collect();
    views.sort_by(|a, b| (a.region_id, &a.id).cmp(&(b.region_id, &b.id)));
    views
}

pub fn print_table(ops: &[OperatorView]) {
    let mut t = output::table(&["ID", "REGION", "KIND", "STEP", "DOING", "AGE", "WHY"]);
    for o in ops {
        t.add_row(vec![
            o.id.clone(),
            o.region_id.to_string(),
            o.kind.clone(),
            format!("{}/{}", o.step, o.steps),
            o.state.clone(),
            output::human_seconds(o.age_ms / 1000),
            o.reason.clone(),
        ]);
    }
    output::print_table(&t);
}

pub async fn run(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::List => {
            let ops = views(ctx.directory()?.cluster_status().await?.operators);
            if ctx.output.is_json() {
                return output::print_json(&ops);
            }
            if ops.is_empty() {
                output::say("no operators in flight");
                return Ok(());
            }
            print_table(&ops);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_are_listed_by_region_with_their_reason() {
        let info = |id: &str, region_id, reason: &str| OperatorInfo {
            id: id.into(),
            region_id,
            kind: "merge".into(),
            step: 0,
            steps: 1,
            state: "merge into region 9".into(),
            age_ms: 1500,
            reason: reason.into(),
        };
        let v = views(vec![info("merge-2", 7, "b"), info("merge-1", 3, "a")]);
        assert_eq!(
            v.iter().map(|o| o.region_id).collect::<Vec<_>>(),
            vec![3, 7]
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json[0]["reason"], "a");
        assert_eq!(json[1]["state"], "merge into region 9");
    }
}
