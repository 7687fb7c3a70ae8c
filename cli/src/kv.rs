//! `tessera get | put | delete | scan`: key-value commands through a router.
//!
//! Keys and values are the UTF-8 bytes of the arguments. Results are shown
//! as text: bytes that are not valid UTF-8 are escaped with `escape_ascii`
//! (`\xff`), in the table and in JSON alike, so a value always prints on
//! one line and JSON strings stay valid.
//!
//! `get` of a missing key is an error (`error: key "k" not found`, exit 1),
//! so scripts can test for existence with the exit status; with
//! `--output json` it also prints `{"key": "k", "found": false}`.
//!
//! Every command goes through the SDK (`tessera-client`), which fails over
//! between the `--router` addresses within `--timeout`; with `--direct` it
//! runs the SDK's direct mode instead: regions found through the directory
//! (`--directory`), requests sent straight to their leaders' stores. A
//! write whose outcome is unknown is reported as such ("outcome unknown"),
//! never as failed.

use std::ops::Bound;

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;

use crate::boundaries::text;
use crate::conn::Ctx;
use crate::output;

/// The keyspace a kv command works in.
#[derive(Args, Debug, Clone)]
pub struct KeyspaceArg {
    /// The keyspace to use [default: default].
    #[arg(long, short = 'k', value_name = "NAME")]
    pub keyspace: Option<String>,
    /// Talk to the stores directly (the SDK's direct mode): find the key's
    /// region and its leader through the directory at --directory and send
    /// the request to that store, instead of through the router at
    /// --router.
    #[arg(long)]
    pub direct: bool,
}

/// Which replica serves a read (`--consistency`): `linearizable` (the
/// region's leader), `follower` (any voter, after a ReadIndex round trip to
/// the leader; still linearizable) or `stale:<ms>` (any voter from its own
/// state, if that is at most <ms> milliseconds old: bounded staleness, not
/// linearizable; 1 to 3600000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consistency(pub tessera_client::ReadConsistency);

impl std::str::FromStr for Consistency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        use tessera_client::ReadConsistency as C;
        let c = match s {
            "linearizable" => C::Linearizable,
            "follower" => C::Follower,
            _ => {
                let Some(age) = s.strip_prefix("stale:") else {
                    return Err(format!(
                        "`{s}`: expected linearizable, follower or stale:<ms> (e.g. stale:500)"
                    ));
                };
                let digits = age.strip_suffix("ms").unwrap_or(age);
                let ms: u64 = digits.parse().map_err(|_| {
                    format!("`{s}`: the age bound must be whole milliseconds (e.g. stale:500)")
                })?;
                tessera_proto::limits::validate_staleness_ms(ms)?;
                C::Stale {
                    max_age: std::time::Duration::from_millis(ms),
                }
            }
        };
        Ok(Consistency(c))
    }
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use tessera_client::ReadConsistency as C;
        match self.0 {
            C::Linearizable => f.write_str("linearizable"),
            C::Follower => f.write_str("follower"),
            C::Stale { max_age } => write!(f, "stale:{}", max_age.as_millis()),
        }
    }
}

impl Default for Consistency {
    fn default() -> Self {
        Consistency(tessera_client::ReadConsistency::Linearizable)
    }
}

impl From<Consistency> for tessera_client::ReadConsistency {
    fn from(c: Consistency) -> Self {
        c.0
    }
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// The key to read.
    pub key: String,
    /// Which replica serves the read: linearizable, follower (any voter,
    /// after a ReadIndex round trip; still linearizable) or stale:<ms> (any
    /// voter from its own state if at most <ms> old; may miss recent
    /// writes).
    #[arg(long, value_name = "MODE", default_value_t = Consistency::default())]
    pub consistency: Consistency,
    #[command(flatten)]
    pub keyspace: KeyspaceArg,
}

#[derive(Args, Debug)]
pub struct PutArgs {
    /// The key to write.
    pub key: String,
    /// The value to store under it.
    pub value: String,
    #[command(flatten)]
    pub keyspace: KeyspaceArg,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The key to delete (deleting a missing key succeeds).
    pub key: String,
    #[command(flatten)]
    pub keyspace: KeyspaceArg,
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// The first key of the range (inclusive) [default: the keyspace's
    /// first key].
    #[arg(long, value_name = "KEY")]
    pub start: Option<String>,
    /// The end of the range (exclusive) [default: the keyspace's end].
    #[arg(long, value_name = "KEY")]
    pub end: Option<String>,
    /// At most this many pairs.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// Return the pairs in descending key order, from the end of the range.
    #[arg(long)]
    pub reverse: bool,
    /// Which replica serves each region's part: linearizable, follower or
    /// stale:<ms> (as for `get`).
    #[arg(long, value_name = "MODE", default_value_t = Consistency::default())]
    pub consistency: Consistency,
    #[command(flatten)]
    pub keyspace: KeyspaceArg,
}

/// One pair as shown: key and value as text.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PairView {
    pub key: String,
    pub value: String,
}

/// What `get` prints with `--output json` (and `batch-get`, for each key).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct GetView {
    pub key: String,
    pub found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What `put` and `delete` print with `--output json`.
#[derive(Debug, Serialize)]
pub struct WriteView<'a> {
    pub key: String,
    /// `put` or `delete`.
    pub op: &'a str,
    pub ok: bool,
}

pub async fn keyspace(ctx: &Ctx, arg: &KeyspaceArg) -> Result<tessera_client::Keyspace> {
    let client = ctx.client().await?;
    // The empty name is the `default` keyspace on the wire.
    Ok(client.keyspace(arg.keyspace.clone().unwrap_or_default()))
}

pub async fn get(ctx: &Ctx, args: GetArgs) -> Result<()> {
    let ks = keyspace(ctx, &args.keyspace)
        .await?
        .with_consistency(args.consistency.into());
    let value = ctx
        .bound(&ctx.kv_peer(), ks.get(args.key.as_bytes()))
        .await?
        .map_err(|e| ctx.kv_error(e))?;
    let key = args.key;
    match value {
        Some(value) => {
            if ctx.output.is_json() {
                output::print_json(&GetView {
                    key,
                    found: true,
                    value: Some(text(&value)),
                })
            } else {
                output::say(text(&value));
                Ok(())
            }
        }
        None => {
            if ctx.output.is_json() {
                output::print_json(&GetView {
                    key: key.clone(),
                    found: false,
                    value: None,
                })?;
            }
            bail!("key {key:?} not found")
        }
    }
}

pub async fn put(ctx: &Ctx, args: PutArgs) -> Result<()> {
    let ks = keyspace(ctx, &args.keyspace).await?;
    ctx.bound(
        &ctx.kv_peer(),
        ks.put(args.key.as_bytes(), args.value.as_bytes()),
    )
    .await?
    .map_err(|e| ctx.kv_error(e))?;
    written(ctx, args.key, "put")
}

pub async fn delete(ctx: &Ctx, args: DeleteArgs) -> Result<()> {
    let ks = keyspace(ctx, &args.keyspace).await?;
    ctx.bound(&ctx.kv_peer(), ks.delete(args.key.as_bytes()))
        .await?
        .map_err(|e| ctx.kv_error(e))?;
    written(ctx, args.key, "delete")
}

fn written(ctx: &Ctx, key: String, op: &str) -> Result<()> {
    if ctx.output.is_json() {
        return output::print_json(&WriteView { key, op, ok: true });
    }
    output::say("OK");
    Ok(())
}

/// The scan range as bounds over key bytes.
pub fn scan_range(start: Option<&str>, end: Option<&str>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let bound = |k: Option<&str>, f: fn(Vec<u8>) -> Bound<Vec<u8>>| match k {
        Some(k) => f(k.as_bytes().to_vec()),
        None => Bound::Unbounded,
    };
    (bound(start, Bound::Included), bound(end, Bound::Excluded))
}

pub async fn scan(ctx: &Ctx, args: ScanArgs) -> Result<()> {
    let ks = keyspace(ctx, &args.keyspace)
        .await?
        .with_consistency(args.consistency.into());
    let range = scan_range(args.start.as_deref(), args.end.as_deref());
    let pairs = if args.reverse {
        ctx.bound(&ctx.kv_peer(), ks.scan_reverse(range, args.limit))
            .await?
    } else {
        ctx.bound(&ctx.kv_peer(), ks.scan(range, args.limit))
            .await?
    }
    .map_err(|e| ctx.kv_error(e))?;
    let views: Vec<PairView> = pairs
        .iter()
        .map(|p| PairView {
            key: text(&p.key),
            value: text(&p.value),
        })
        .collect();
    if ctx.output.is_json() {
        return output::print_json(&views);
    }
    if views.is_empty() {
        output::say("(no keys in range)");
        return Ok(());
    }
    let mut t = output::table(&["KEY", "VALUE"]);
    for v in &views {
        t.add_row(vec![v.key.clone(), v.value.clone()]);
    }
    output::print_table(&t);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_bounds() {
        assert_eq!(
            scan_range(Some("a"), Some("c")),
            (
                Bound::Included(b"a".to_vec()),
                Bound::Excluded(b"c".to_vec())
            )
        );
        assert_eq!(scan_range(None, None), (Bound::Unbounded, Bound::Unbounded));
        assert_eq!(
            scan_range(Some("é"), None),
            (Bound::Included("é".as_bytes().to_vec()), Bound::Unbounded)
        );
    }

    #[test]
    fn consistency_names_parse_and_bad_ones_say_what_is_expected() {
        use std::time::Duration;
        use tessera_client::ReadConsistency as C;
        let parse = |s: &str| s.parse::<Consistency>().map(|c| c.0);
        assert_eq!(parse("linearizable").unwrap(), C::Linearizable);
        assert_eq!(parse("follower").unwrap(), C::Follower);
        let stale = C::Stale {
            max_age: Duration::from_millis(500),
        };
        assert_eq!(parse("stale:500").unwrap(), stale);
        assert_eq!(parse("stale:500ms").unwrap(), stale);
        assert_eq!(Consistency(stale).to_string(), "stale:500");
        assert!(parse("eventual").unwrap_err().contains("stale:<ms>"));
        assert!(parse("stale:").unwrap_err().contains("whole milliseconds"));
        assert!(parse("stale:1.5")
            .unwrap_err()
            .contains("whole milliseconds"));
        assert!(parse("stale:0").unwrap_err().contains("1 to 3600000"));
        assert!(parse("stale:3600001").is_err());
    }

    #[test]
    fn json_shapes() {
        let missing = serde_json::to_string(&GetView {
            key: "k".into(),
            found: false,
            value: None,
        })
        .unwrap();
        assert_eq!(missing, r#"{"key":"k","found":false}"#);
        let found = serde_json::to_string(&GetView {
            key: "k".into(),
            found: true,
            value: Some(text(b"\xffv")),
        })
        .unwrap();
        assert_eq!(found, r#"{"key":"k","found":true,"value":"\\xffv"}"#);
    }
}
