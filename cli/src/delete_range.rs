//! `tessera delete-range`: deletes every key of a range, region by region,
//! with progress, and says how to resume if it stops.
//!
//! A range delete is not atomic across regions. The command deletes the
//! range's part in `--regions-per-step` regions per request
//! (`Keyspace::delete_range_step`), showing the regions done so far on a
//! spinner. If a step fails, everything before the last resume point is
//! deleted: the error names that point as `--resume HEX`, and running the
//! same command with it goes on from there (deleting a part again is safe;
//! it removes only keys written since). Each step has the whole
//! `--timeout`.

use anyhow::{anyhow, Context as _, Result};
use clap::Args;
use serde::Serialize;

use crate::boundaries::hex;
use crate::conn::Ctx;
use crate::kv::{keyspace, scan_range, KeyspaceArg};
use crate::output;
use crate::wait::Spinner;

#[derive(Args, Debug)]
pub struct DeleteRangeArgs {
    /// The first key of the range (inclusive) [default: the keyspace's
    /// first key].
    #[arg(long, value_name = "KEY")]
    pub start: Option<String>,
    /// The end of the range (exclusive) [default: the keyspace's end].
    #[arg(long, value_name = "KEY")]
    pub end: Option<String>,
    /// Go on from where an interrupted run stopped: the hex its error
    /// printed (same --start, --end and keyspace).
    #[arg(long, value_name = "HEX")]
    pub resume: Option<String>,
    /// Regions deleted per request.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub regions_per_step: u32,
    #[command(flatten)]
    pub keyspace: KeyspaceArg,
}

#[derive(Serialize)]
struct Done {
    regions: u32,
    ok: bool,
}

/// Bytes from hex, for `--resume`.
fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(anyhow!("--resume: {s:?} is not hex"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("--resume"))
        .collect()
}

pub async fn run(ctx: &Ctx, args: DeleteRangeArgs) -> Result<()> {
    let ks = keyspace(ctx, &args.keyspace).await?;
    let range = scan_range(args.start.as_deref(), args.end.as_deref());
    let mut resume = args.resume.as_deref().map(unhex).transpose()?;
    let spinner = Spinner::new("deleting the range".into());
    let mut regions = 0u32;
    loop {
        let step = ctx
            .bound(
                &ctx.kv_peer(),
                ks.delete_range_step(range.clone(), resume.as_deref(), args.regions_per_step),
            )
            .await
            .and_then(|r| r.map_err(|e| ctx.kv_error(e)));
        let step = match step {
            Ok(step) => step,
            Err(e) => {
                let from = match &resume {
                    Some(r) => format!("; resume with --resume {}", hex(r)),
                    None => "; run it again to retry".into(),
                };
                return Err(anyhow!(
                    "{e:#} (the range was deleted in {regions} region(s) before this step{from})"
                ));
            }
        };
        regions += step.regions;
        match step.resume {
            Some(r) => {
                spinner.set(format!(
                    "deleted the range in {regions} region(s); next at {}",
                    hex(&r)
                ));
                resume = Some(r);
            }
            None => break,
        }
    }
    drop(spinner);
    if ctx.output.is_json() {
        return output::print_json(&Done { regions, ok: true });
    }
    output::say(format!("OK: the range was deleted in {regions} region(s)"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_points_round_trip_through_hex_and_bad_ones_are_refused() {
        let r = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&r)).unwrap(), r);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }
}
