//! The global flags and what they connect to.
//!
//! [`GlobalArgs`] are the flags every command takes (`--router`,
//! `--directory`, `--output`, `--timeout`, `-v`); [`Ctx`] is what a command
//! receives: the output format plus constructors for the two connections a
//! command may need — the SDK client (kv commands, through a router) and the
//! directory (admin commands). Nothing is dialed before a command asks.
//!
//! Every request is bounded by `--timeout`: the SDK and the directory
//! connection get it as their deadline, and the CLI adds an outer bound of
//! its own ([`Ctx::bound`]) so that an address that accepts connections but
//! never answers still fails in about that time, naming the address.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::directory::Directory;
use crate::output::Output;
use crate::playground;

/// Slack on top of `--timeout` before the CLI gives up on a request itself:
/// the connections' own deadlines should fire first, with better messages.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// Flags that every command accepts, before or after the subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Router address(es), HOST:PORT, comma-separated; the kv commands
    /// (get, put, delete, scan) go through them, failing over in turn.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "TESSERA_ROUTER",
        value_name = "ADDRS",
        default_value = playground::DEFAULT_ROUTER,
        value_parser = parse_addrs,
    )]
    pub router: Addrs,

    /// Directory member address(es), HOST:PORT, comma-separated; the admin
    /// commands (store, region, keyspace, cluster, user) talk to its leader.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "TESSERA_DIRECTORY",
        value_name = "ADDRS",
        default_value = playground::DEFAULT_DIRECTORY,
        value_parser = parse_addrs,
    )]
    pub directory: Addrs,

    /// Output format: `table` for people, `json` for scripts (one JSON
    /// document on stdout).
    #[arg(
        long,
        short = 'o',
        global = true,
        help_heading = "Global options",
        env = "TESSERA_OUTPUT",
        value_enum,
        default_value_t = Output::Table
    )]
    pub output: Output,

    /// Deadline of each request, in seconds (fractions allowed); an
    /// unreachable router or directory fails after about this long.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "SECONDS",
        default_value = "5",
        value_parser = parse_seconds
    )]
    pub timeout: Duration,

    /// Certificates directory: with it, every connection is TLS, checked
    /// against its ca.crt, presenting client.USER.crt (see `tessera cert`);
    /// without it, connections are plaintext (an --insecure cluster). The
    /// `cert` commands create certificates here (default ~/.tessera/certs).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "TESSERA_CERTS_DIR",
        value_name = "DIR"
    )]
    pub certs_dir: Option<std::path::PathBuf>,

    /// The client certificate to present: client.USER.crt in --certs-dir
    /// (ignored with --token).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "TESSERA_USER",
        value_name = "USER",
        default_value = "admin"
    )]
    pub user: String,

    /// A user's bearer token (from `tessera user create`): sent with every
    /// request instead of a client certificate. Needs --certs-dir for the
    /// cluster's ca.crt (a token never travels in plaintext).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "TESSERA_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Log what the CLI does to stderr (-v info, -vv debug, -vvv trace);
    /// RUST_LOG overrides it.
    #[arg(short, long, global = true, help_heading = "Global options", action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// A comma-separated list of `HOST:PORT` addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addrs(pub Vec<String>);

impl fmt::Display for Addrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// Parses `a:1, b:2` into addresses; a leading `http://` is dropped since
/// every connection adds it.
pub fn parse_addrs(s: &str) -> Result<Addrs, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let addr = part.strip_prefix("http://").unwrap_or(part);
        let Some((host, port)) = addr.rsplit_once(':') else {
            return Err(format!("{addr:?} is not HOST:PORT"));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("{addr:?} is not HOST:PORT"));
        }
        out.push(addr.to_string());
    }
    if out.is_empty() {
        return Err("no address given".into());
    }
    Ok(Addrs(out))
}

/// Parses a positive number of seconds (`5`, `0.5`).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("{s:?} is not a positive number of seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// What a command gets: the output format and the connections it may open.
pub struct Ctx {
    pub output: Output,
    pub timeout: Duration,
    pub router: Addrs,
    pub directory: Addrs,
    pub certs_dir: Option<std::path::PathBuf>,
    pub user: String,
    pub token: Option<String>,
    /// Key-value commands talk to the stores directly (`--direct`).
    pub direct: bool,
}

impl Ctx {
    pub fn new(args: &GlobalArgs) -> Self {
        Ctx {
            output: args.output,
            timeout: args.timeout,
            router: args.router.clone(),
            directory: args.directory.clone(),
            certs_dir: args.certs_dir.clone(),
            user: args.user.clone(),
            token: args.token.clone(),
            direct: false,
        }
    }

    /// How connections are secured: TLS with `--certs-dir` (as the user of
    /// `--token`, else of the certificate `--user`), else plaintext.
    pub fn security(&self) -> Result<tessera_security::Security> {
        use tessera_security::Security;
        match (&self.certs_dir, &self.token) {
            (None, None) => Ok(Security::insecure()),
            (None, Some(_)) => Err(anyhow!(
                "--token needs TLS: give --certs-dir (TESSERA_CERTS_DIR), the directory \
                 holding the cluster's ca.crt"
            )),
            (Some(dir), Some(token)) => Security::with_token(dir, token)
                .map_err(|e| anyhow!("--token with --certs-dir {}: {e}", dir.display())),
            (Some(dir), None) => Security::client(dir, Some(&self.user))
                .map_err(|e| anyhow!("--certs-dir {}: {e}", dir.display())),
        }
    }

    /// The directory, reached through its members from `--directory`.
    pub fn directory(&self) -> Result<Directory> {
        Directory::new(&self.directory, self.timeout, self.security()?)
    }

    /// The SDK client: through the routers from `--router`, or with
    /// `--direct` straight to the stores, regions found through the
    /// directory from `--directory`. Building it dials nothing; the first
    /// request does.
    pub async fn client(&self) -> Result<tessera_client::Client> {
        let builder = tessera_client::Client::builder();
        let builder = if self.direct {
            builder.directory(self.directory.0.clone())
        } else {
            builder.routers(self.router.0.clone())
        };
        let build = builder
            .timeout(self.timeout)
            .security(self.security()?)
            .build();
        self.bound(&self.kv_peer(), build)
            .await?
            .map_err(|e| self.kv_error(e))
    }

    /// Whom key-value commands talk to, for messages: `router at ...`, or
    /// with `--direct` `directory at ...`.
    pub fn kv_peer(&self) -> String {
        match self.direct {
            true => format!("directory at {}", self.directory),
            false => format!("router at {}", self.router),
        }
    }

    /// An SDK error as one line; errors about reaching the cluster name
    /// the addresses tried (the routers, or the directory with `--direct`).
    pub fn kv_error(&self, e: tessera_client::Error) -> anyhow::Error {
        use tessera_client::Error as E;
        let message = e.to_string();
        let addrs = if self.direct {
            &self.directory
        } else {
            &self.router
        };
        let named = addrs.0.iter().any(|a| message.contains(a.as_str()));
        match e {
            E::Unavailable(_) | E::Indeterminate(_) | E::Config(_) if !named => {
                anyhow!("{}: {message}", self.kv_peer())
            }
            _ => anyhow!(message),
        }
    }

    /// Runs `fut`, giving up [`TIMEOUT_GRACE`] after `--timeout` with an
    /// error naming `peer` (for example `router at 127.0.0.1:14000`).
    pub async fn bound<T>(&self, peer: &str, fut: impl Future<Output = T>) -> Result<T> {
        bound(self.timeout, peer, fut).await
    }
}

/// [`Ctx::bound`] for code without a context.
pub async fn bound<T>(timeout: Duration, peer: &str, fut: impl Future<Output = T>) -> Result<T> {
    match tokio::time::timeout(timeout + TIMEOUT_GRACE, fut).await {
        Ok(v) => Ok(v),
        Err(_) => Err(anyhow!(
            "no answer from the {peer} within {}",
            seconds(timeout)
        )),
    }
}

/// A duration as people write it on the command line: `5s`, `0.5s`.
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}s", s as u64)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addrs("a:1, http://b:2,").unwrap(),
            Addrs(vec!["a:1".into(), "b:2".into()])
        );
        assert_eq!(
            parse_addrs(playground::DEFAULT_DIRECTORY).unwrap().0.len(),
            playground::DEFAULT_DIRECTORY.split(',').count()
        );
        assert!(parse_addrs("").is_err());
        assert!(parse_addrs("nohost").is_err());
        assert!(parse_addrs("h:notaport").is_err());
        assert!(parse_addrs(":80").is_err());
        assert_eq!(parse_addrs("[::1]:80").unwrap().0, vec!["[::1]:80"]);
    }

    #[test]
    fn seconds_flag() {
        assert_eq!(parse_seconds("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_seconds("0.25").unwrap(), Duration::from_millis(250));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("inf").is_err());
        assert_eq!(seconds(Duration::from_secs(5)), "5s");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5s");
    }
}
