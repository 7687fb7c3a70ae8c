//! Users and their roles: who a client identity is and what it may do.
//!
//! # How a client is authorized (process overview)
//!
//! 1. **Users live in the directory.** `tessera user create NAME --role R`
//!    asks the directory leader, which generates a bearer token (256
//!    random bits, [`crate::secret`]) and records the user — name, role
//!    and the token's SHA-256, never the token — through the directory's
//!    Raft log. The token is shown once, in the answer. `tessera user
//!    revoke NAME` deletes the record. Every change bumps the table's
//!    version.
//! 2. **Every process keeps a copy** ([`Users`]): the directory reads its
//!    own replicated state; stores and routers fetch the table from the
//!    directory (`UserTable`, node and router identities only) every
//!    [`REFRESH_EVERY`], and at once (at most every [`REFRESH_GAP`]) when
//!    a request presents a token they do not know, so a new user works
//!    at once and a revocation is in force everywhere within about
//!    2 s (5 s promised). A process that cannot reach the directory keeps
//!    its last table and counts the failed refreshes
//!    (`tessera_auth_refreshes_total{outcome="error"}`).
//! 3. **A request names its user** by a client certificate
//!    (`tessera://client/NAME`: the user NAME) or by a bearer token in the
//!    `authorization` metadata (`Bearer tessera-…`), not both. A token is
//!    hashed once (SHA-256: a hash of 256 random bits needs no salt or slow
//!    hash), looked up by the first 8 bytes of its hash and compared in
//!    full in constant time.
//! 4. **The role decides** ([`crate::policy`] gives each RPC the role it
//!    needs): `readonly` reads keys, `readwrite` also writes them, `admin`
//!    may also call every administrative RPC.
//!
//! The user `admin` is built in: it always exists with the role `admin`,
//! has no token, is reached with the client certificate `admin` alone (the
//! one `tessera playground` and `tessera cert create-client admin` make)
//! and can be neither created nor revoked — like CockroachDB's `root`, the
//! operator who holds the CA key is its holder.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;

use crate::{secret, Error, Result};

/// The user that always exists, with the role `admin` (client certificate
/// only).
pub const BUILTIN_ADMIN: &str = "admin";

/// How often stores and routers fetch the user table.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// The least time between two fetches, however many unknown tokens arrive.
pub const REFRESH_GAP: Duration = Duration::from_millis(200);

/// How long a request with an unknown token waits for a fresh table.
const MISS_WAIT: Duration = Duration::from_secs(2);

/// Metric: user-table fetches, by outcome (changed, unchanged, error).
pub const REFRESHES: &str = "tessera_auth_refreshes_total";
/// Metric: users in this process's table.
pub const USERS: &str = "tessera_auth_users";

/// What a user may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Get, batch get, scan, and the directory's reads.
    Readonly,
    /// And put, delete, batch put, compare-and-swap, delete range.
    Readwrite,
    /// And every administrative RPC.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Readonly, Role::Readwrite, Role::Admin];

    /// The role's number in `directorypb.Role` (the wire form).
    pub fn wire(self) -> i32 {
        match self {
            Role::Readonly => 1,
            Role::Readwrite => 2,
            Role::Admin => 3,
        }
    }

    /// A role from its wire form; `None` for unset or unknown numbers.
    pub fn from_wire(n: i32) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.wire() == n)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Readonly => "readonly",
            Role::Readwrite => "readwrite",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{s:?} is not a role: use readonly, readwrite or admin"
                ))
            })
    }
}

/// One user as the table holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    pub role: Role,
    /// SHA-256 of the user's token (32 bytes).
    pub token_hash: Vec<u8>,
}

impl UserEntry {
    /// An entry from the wire's fields; `None` for a role this version
    /// does not know (that user gets nothing rather than a guess).
    pub fn from_wire(name: &str, role: i32, token_hash: &[u8]) -> Option<UserEntry> {
        Some(UserEntry {
            name: name.to_string(),
            role: Role::from_wire(role)?,
            token_hash: token_hash.to_vec(),
        })
    }
}

/// Who a request is: a user and its role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// One version of the user table.
#[derive(Debug, Default)]
pub struct UserTable {
    version: u64,
    by_name: HashMap<String, UserEntry>,
    /// First 8 bytes of a token hash → user name.
    by_hash_prefix: HashMap<[u8; 8], String>,
}

fn prefix(hash: &[u8]) -> Option<[u8; 8]> {
    hash.get(..8)?.try_into().ok()
}

impl UserTable {
    /// The table at `version` (the directory's count of user changes)
    /// from the wire's users (name, role, token hash).
    pub fn from_wire<'a>(
        version: u64,
        users: impl IntoIterator<Item = (&'a str, i32, &'a [u8])>,
    ) -> Self {
        let entries = users
            .into_iter()
            .filter_map(|(name, role, hash)| UserEntry::from_wire(name, role, hash));
        UserTable::new(version, entries)
    }

    /// The table at `version` (the directory's count of user changes).
    pub fn new(version: u64, users: impl IntoIterator<Item = UserEntry>) -> Self {
        let mut t = UserTable {
            version,
            ..UserTable::default()
        };
        for u in users {
            if let Some(p) = prefix(&u.token_hash) {
                t.by_hash_prefix.insert(p, u.name.clone());
            }
            t.by_name.insert(u.name.clone(), u);
        }
        t
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The user NAME of a client certificate, if it is one.
    pub fn by_name(&self, name: &str) -> Option<Principal> {
        if name == BUILTIN_ADMIN {
            return Some(Principal {
                name: name.into(),
                role: Role::Admin,
            });
        }
        self.by_name.get(name).map(|u| Principal {
            name: u.name.clone(),
            role: u.role,
        })
    }

    /// The user whose token is `token`, compared in constant time.
    pub fn by_token(&self, token: &str) -> Option<Principal> {
        let hash = secret::hash(token);
        let name = self.by_hash_prefix.get(&prefix(&hash)?)?;
        let user = self.by_name.get(name)?;
        secret::hashes_match(&user.token_hash, &hash).then(|| Principal {
            name: user.name.clone(),
            role: user.role,
        })
    }
}

/// What fetching the table returned: a newer table, or none when the one
/// at the known version is current.
pub type Fetched = std::result::Result<Option<UserTable>, String>;

/// A process's copy of the user table, shared by its access check and
/// the task that refreshes it.
#[derive(Clone)]
pub struct Users {
    table: Arc<RwLock<Arc<UserTable>>>,
    /// Asks the refresh task for a fetch now.
    wake: Arc<tokio::sync::Notify>,
    /// Counts started fetches.
    started: Arc<std::sync::atomic::AtomicU64>,
    /// Counts finished fetches (changed or not, failed or not); fetch k
    /// (the k-th started) has finished once it reads k or more.
    fetched: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Users {
    fn default() -> Self {
        Users::new()
    }
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field("version", &self.current().version)
            .finish()
    }
}

impl Users {
    /// An empty table (only the built-in `admin`) until the first fetch.
    pub fn new() -> Self {
        Users {
            table: Arc::new(RwLock::new(Arc::new(UserTable::default()))),
            wake: Arc::new(tokio::sync::Notify::new()),
            started: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            fetched: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// The table in force.
    pub fn current(&self) -> Arc<UserTable> {
        self.table.read().clone()
    }

    /// Puts `table` in force (if it is not older than the current one).
    pub fn set(&self, table: UserTable) {
        let mut slot = self.table.write();
        if table.version >= slot.version {
            metrics::gauge!(USERS).set(table.len() as f64);
            *slot = Arc::new(table);
        }
    }

    /// Asks for a fetch now and waits (up to `wait`) until one that
    /// started after this call finished — a fetch already in flight may
    /// have read the table before the change the caller is looking for.
    pub async fn refresh_now(&self, wait: Duration) {
        let want = self.started.load(std::sync::atomic::Ordering::SeqCst) + 1;
        let mut fetched = self.fetched.subscribe();
        self.wake.notify_one();
        let _ = tokio::time::timeout(wait, fetched.wait_for(|n| *n >= want)).await;
    }

    /// Waits (up to [`MISS_WAIT`] in all) for the table to know `token`,
    /// asking for fresh fetches meanwhile; whether it does.
    pub async fn wait_for_token(&self, token: &str) -> bool {
        let deadline = tokio::time::Instant::now() + MISS_WAIT;
        loop {
            if self.current().by_token(token).is_some() {
                return true;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            self.refresh_now(left).await;
        }
    }

    /// Starts the task that keeps the table fresh: `fetch(known_version)`
    /// every [`REFRESH_EVERY`], and on [`Users::refresh_now`] no sooner
    /// than [`REFRESH_GAP`] after the previous fetch. Ends with the runtime.
    pub fn spawn_refresh<F, Fut>(&self, fetch: F)
    where
        F: Fn(u64) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Fetched> + Send,
    {
        describe();
        let users = self.clone();
        tokio::spawn(async move {
            loop {
                users
                    .started
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let outcome = match fetch(users.current().version).await {
                    Ok(Some(table)) => {
                        users.set(table);
                        "changed"
                    }
                    Ok(None) => "unchanged",
                    Err(e) => {
                        tracing::debug!(error = %e, "fetching the user table failed");
                        "error"
                    }
                };
                metrics::counter!(REFRESHES, "outcome" => outcome).increment(1);
                users.fetched.send_modify(|n| *n += 1);
                tokio::time::sleep(REFRESH_GAP).await;
                let _ = tokio::time::timeout(
                    REFRESH_EVERY.saturating_sub(REFRESH_GAP),
                    users.wake.notified(),
                )
                .await;
            }
        });
    }
}

/// Registers the help text of the user table's metrics and exports them
/// at 0.
pub fn describe() {
    metrics::describe_counter!(
        REFRESHES,
        "Fetches of the user table, by outcome (changed, unchanged, error)"
    );
    metrics::describe_gauge!(USERS, "Users in this process's copy of the user table");
    for outcome in ["changed", "unchanged", "error"] {
        metrics::counter!(REFRESHES, "outcome" => outcome).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, role: Role, token: &str) -> UserEntry {
        UserEntry {
            name: name.into(),
            role,
            token_hash: secret::hash(token),
        }
    }

    #[test]
    fn roles_parse_print_and_order() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!(Role::Readonly < Role::Readwrite && Role::Readwrite < Role::Admin);
        assert!("root".parse::<Role>().is_err());
        assert!("Admin".parse::<Role>().is_err());
    }

    #[test]
    fn tokens_and_names_find_their_user_and_nothing_else() {
        let (a, b) = (secret::generate(), secret::generate());
        let t = UserTable::new(
            3,
            [
                entry("ro", Role::Readonly, &a),
                entry("rw", Role::Readwrite, &b),
            ],
        );
        assert_eq!(t.by_token(&a).unwrap().name, "ro");
        assert_eq!(t.by_token(&b).unwrap().role, Role::Readwrite);
        assert_eq!(t.by_token(&secret::generate()), None);
        assert_eq!(t.by_token(""), None);
        assert_eq!(t.by_token(&a[..a.len() - 1]), None);
        assert_eq!(t.by_name("rw").unwrap().role, Role::Readwrite);
        assert_eq!(t.by_name("nobody"), None);
        // The built-in admin needs no record and has no token.
        assert_eq!(t.by_name(BUILTIN_ADMIN).unwrap().role, Role::Admin);
        assert_eq!(
            UserTable::default().by_name(BUILTIN_ADMIN).unwrap().role,
            Role::Admin
        );
    }

    /// Starts `users` refreshing from a fake directory whose table holds
    /// the user `new` (with `token`) from the version the returned counter
    /// is set to; each answer takes `latency` and reflects the version at
    /// the moment its fetch was sent.
    fn fake_directory(
        users: &Users,
        token: &str,
        latency: Duration,
    ) -> Arc<std::sync::atomic::AtomicU64> {
        let version = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let v = version.clone();
        let t = token.to_string();
        users.spawn_refresh(move |known| {
            let now = v.load(std::sync::atomic::Ordering::SeqCst);
            let t = t.clone();
            async move {
                tokio::time::sleep(latency).await;
                Ok((now > known).then(|| UserTable::new(now, [entry("new", Role::Readonly, &t)])))
            }
        });
        version
    }

    #[tokio::test]
    async fn a_refresh_brings_a_new_user_and_an_older_table_never_wins() {
        let users = Users::new();
        let token = secret::generate();
        let version = fake_directory(&users, &token, Duration::ZERO);
        assert_eq!(users.current().by_token(&token), None);
        version.store(1, std::sync::atomic::Ordering::SeqCst);
        assert!(users.wait_for_token(&token).await);
        assert_eq!(users.current().by_token(&token).unwrap().name, "new");
        users.set(UserTable::new(0, []));
        assert_eq!(
            users.current().version(),
            1,
            "an older table replaced a newer one"
        );
    }

    /// A fetch already in flight when a user is created read the table
    /// before it: waiting for a token must wait for a fetch that started
    /// later (found in the playground: a token created a moment before was
    /// refused as unknown).
    #[tokio::test]
    async fn a_fetch_in_flight_does_not_answer_for_a_newer_token() {
        let users = Users::new();
        let token = secret::generate();
        let version = fake_directory(&users, &token, Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(50)).await;
        version.store(1, std::sync::atomic::Ordering::SeqCst);
        assert!(users.wait_for_token(&token).await);
        assert!(!users.wait_for_token(&secret::generate()).await);
    }
}
