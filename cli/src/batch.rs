//! `tessera cas | batch-get | batch-put`: the SDK's compare-and-swap and
//! batch operations from the command line, through a router (or, with
//! `--direct`, straight to the stores), like `get` and `put` (see
//! [`crate::kv`] for how keys, values and errors are shown).
//!
//! - `cas KEY (--expect V | --expect-absent) (--new V | --delete)` swaps
//!   only if the key holds the expected value (or is absent). A swap that
//!   did not happen because the key held something else is not an error of
//!   the command, but it exits with status 1 (as `get` of a missing key
//!   does) so scripts can branch on it; both outcomes print what the key
//!   held before.
//! - `batch-get K...` reads up to 10,000 keys in one call; every key asked
//!   for is listed, in the order given, found or not.
//! - `batch-put K=V...` writes pairs; a key may not contain the separator
//!   (`--separator`, `=` by default), a value may. A batch spanning several
//!   regions is applied region by region: not atomic (as in the SDK).

use anyhow::{bail, Result};
use clap::{ArgGroup, Args};
use serde::Serialize;

use crate::boundaries::text;
use crate::conn::Ctx;
use crate::kv::{keyspace, Consistency, GetView, KeyspaceArg};
use crate::output;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("expected").required(true).args(["expect", "expect_absent"])))]
#[command(group(ArgGroup::new("new").required(true).args(["new_value", "delete"])))]
pub struct CasArgs {
    /// The key to swap.
    pub key: String,
    /// Swap only if the key holds this value.
    #[arg(long, value_name = "VALUE")]
    pub expect: Option<String>,
    /// Swap only if the key does not exist.
    #[arg(long)]
    pub expect_absent: bool,
    /// The value to write if the key holds what was expected.
    #[arg(long = "new", value_name = "VALUE")]
    pub new_value: Option<String>,
    /// Delete the key if it holds what was expected.
    #[arg(long)]
    pub delete: bool,
    #[command(flatten)]
    pub keyspace: KeyspaceArg,
}

#[derive(Args, Debug)]
pub struct BatchGetArgs {
    /// The keys to read (1 to 10,000).
    #[arg(required = true, num_args = 1..)]
    pub keys: Vec<String>,
    /// Which replica serves each key: linearizable, follower or stale:<ms>
    /// (as for `get`).
    #[arg(long, value_name = "MODE", default_value_t = Consistency::default())]
    pub consistency: Consistency,
    #[command(flatten)]
    pub keyspace: KeyspaceArg,
}

#[derive(Args, Debug)]
pub struct BatchPutArgs {
    /// The pairs to write, each KEY=VALUE (split at the first separator).
    #[arg(required = true, num_args = 1.., value_name = "KEY=VALUE")]
    pub pairs: Vec<String>,
    /// What separates a key from its value in each pair.
    #[arg(long, value_name = "CHAR", default_value_t = '=')]
    pub separator: char,
    #[command(flatten)]
    pub keyspace: KeyspaceArg,
}

/// What `cas` prints with `--output json`.
#[derive(Debug, Serialize)]
pub struct CasView {
    pub key: String,
    pub succeeded: bool,
    /// What the key held before (absent: it did not exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

/// What `batch-put` prints with `--output json`.
#[derive(Debug, Serialize)]
pub struct BatchPutView {
    pub written: usize,
    pub ok: bool,
}

pub async fn cas(ctx: &Ctx, args: CasArgs) -> Result<()> {
    let ks = keyspace(ctx, &args.keyspace).await?;
    let expected = args.expect.as_deref().map(str::as_bytes);
    let new = args.new_value.as_deref().map(str::as_bytes);
    let outcome = ctx
        .bound(
            &ctx.kv_peer(),
            ks.compare_and_swap(args.key.as_bytes(), expected, new),
        )
        .await?
        .map_err(|e| ctx.kv_error(e))?;
    let previous = outcome.previous.as_deref().map(text);
    if ctx.output.is_json() {
        output::print_json(&CasView {
            key: args.key.clone(),
            succeeded: outcome.succeeded,
            previous: previous.clone(),
        })?;
    } else if outcome.succeeded {
        output::say("OK");
    }
    if !outcome.succeeded {
        match previous {
            Some(v) => bail!("not swapped: key {:?} holds {v:?}", args.key),
            None => bail!("not swapped: key {:?} does not exist", args.key),
        }
    }
    Ok(())
}

/// Every key asked for, in the order given (each once), with what was
/// found: shown as `get` shows one key.
fn found_views(keys: &[String], pairs: Vec<tessera_client::KvPair>) -> Vec<GetView> {
    let found: std::collections::HashMap<Vec<u8>, Vec<u8>> =
        pairs.into_iter().map(|p| (p.key, p.value)).collect();
    let mut seen = std::collections::HashSet::new();
    keys.iter()
        .filter(|k| seen.insert(k.as_str()))
        .map(|k| {
            let value = found.get(k.as_bytes()).map(|v| text(v));
            GetView {
                key: k.clone(),
                found: value.is_some(),
                value,
            }
        })
        .collect()
}

pub async fn batch_get(ctx: &Ctx, args: BatchGetArgs) -> Result<()> {
    let ks = keyspace(ctx, &args.keyspace)
        .await?
        .with_consistency(args.consistency.into());
    let pairs = ctx
        .bound(&ctx.kv_peer(), ks.batch_get(args.keys.iter()))
        .await?
        .map_err(|e| ctx.kv_error(e))?;
    let views = found_views(&args.keys, pairs);
    if ctx.output.is_json() {
        return output::print_json(&views);
    }
    let mut t = output::table(&["KEY", "VALUE"]);
    for v in &views {
        let value = v.value.clone().unwrap_or_else(|| "(not found)".into());
        t.add_row(vec![v.key.clone(), value]);
    }
    output::print_table(&t);
    Ok(())
}

/// `KEY=VALUE` arguments as pairs; a pair without the separator, or with
/// an empty key, is an error naming it.
pub fn parse_pairs(args: &[String], separator: char) -> Result<Vec<(String, String)>> {
    args.iter()
        .map(|a| match a.split_once(separator) {
            Some(("", _)) => bail!("pair {a:?} has an empty key"),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => bail!("pair {a:?} has no {separator:?}: expected KEY{separator}VALUE"),
        })
        .collect()
}

pub async fn batch_put(ctx: &Ctx, args: BatchPutArgs) -> Result<()> {
    let pairs = parse_pairs(&args.pairs, args.separator)?;
    let ks = keyspace(ctx, &args.keyspace).await?;
    let n = pairs.len();
    ctx.bound(&ctx.kv_peer(), ks.batch_put(pairs))
        .await?
        .map_err(|e| ctx.kv_error(e))?;
    if ctx.output.is_json() {
        return output::print_json(&BatchPutView {
            written: n,
            ok: true,
        });
    }
    output::say(format!("OK ({n} keys)"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_split_at_the_first_separator_and_bad_ones_are_named() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_pairs(&args(&["a=1", "b=x=y", "c="]), '=').unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x=y".into()),
                ("c".into(), "".into())
            ]
        );
        assert_eq!(
            parse_pairs(&args(&["k=v:1"]), ':').unwrap(),
            vec![("k=v".into(), "1".into())]
        );
        let e = parse_pairs(&args(&["a=1", "b"]), '=').unwrap_err();
        assert!(e.to_string().contains("\"b\" has no '='"), "{e}");
        let e = parse_pairs(&args(&["=1"]), '=').unwrap_err();
        assert!(e.to_string().contains("empty key"), "{e}");
    }

    #[test]
    fn batch_get_lists_every_key_once_in_the_order_given() {
        let pairs = vec![tessera_client::KvPair {
            key: b"b".to_vec(),
            value: b"2".to_vec(),
        }];
        let keys: Vec<String> = ["a", "b", "a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            found_views(&keys, pairs),
            vec![
                GetView {
                    key: "a".into(),
                    found: false,
                    value: None
                },
                GetView {
                    key: "b".into(),
                    found: true,
                    value: Some("2".into())
                },
            ]
        );
    }
}
