//! `tessera region merge SOURCE TARGET`: merge a region into an adjacent
//! one. The directory checks the pair and starts a merge operator on the
//! source (move its replicas onto the target's stores, then the merge,
//! which the source's leader drives); the command follows it with a
//! spinner until the directory no longer knows the source and the target
//! covers both ranges, then prints the merged region.

use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;

use crate::conn::{parse_seconds, Ctx};
use crate::directory::Directory;
use crate::region::{print_region, print_started, OperatorWatch, RegionView};
use crate::wait::{self, Poll};

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The region that goes away (its keys move into TARGET).
    pub source: u64,
    /// The adjacent region that takes SOURCE's range.
    pub target: u64,
    /// Give up waiting for the merge after this many seconds (the merge
    /// itself goes on).
    #[arg(long, value_name = "SECONDS", default_value = "600", value_parser = parse_seconds)]
    pub wait_timeout: Duration,
    /// Return as soon as the directory accepted the merge.
    #[arg(long)]
    pub no_wait: bool,
}

pub async fn run(ctx: &Ctx, dir: &Directory, args: MergeArgs) -> Result<()> {
    let keyspaces = dir.keyspaces().await?;
    let operator = dir.merge_region(args.source, args.target).await?;
    if args.no_wait {
        return print_started(ctx, args.source, &operator, "merge");
    }
    let mut watch = OperatorWatch::new(args.source, &operator);
    let hint = format!(
        "the merge goes on in the background: see `tessera region show {}` and `tessera cluster status`",
        args.target
    );
    let info = wait::until(
        &format!(
            "region {} to merge into region {}",
            args.source, args.target
        ),
        args.wait_timeout,
        &hint,
        async || {
            let target = dir.region_by_id(args.target).await?;
            match dir.find_region_by_id(args.source).await? {
                None => Ok(Poll::Done(target)),
                Some(source) => {
                    let shown = format!(
                        "region {} still has peers {}",
                        args.source,
                        RegionView::new(&source, &keyspaces).peers_text()
                    );
                    match watch.poll(dir, shown).await? {
                        Poll::Failed(e) => Ok(Poll::Failed(anyhow!(
                            "{e:#} (a merge the target refused rolls back; try again)"
                        ))),
                        other => Ok(other),
                    }
                }
            }
        },
    )
    .await?;
    print_region(ctx, &RegionView::new(&info, &keyspaces))
}
