//! Keeping a store's or a router's copy of the user table fresh: fetches
//! `UserTable` from the directory's leader (the process overview is in
//! `tessera_security::users`). Only the table's version travels when
//! nothing changed.

use std::sync::Arc;
use std::time::Duration;

use tessera_proto::directorypb::UserTableRequest;
use tessera_security::users::{Fetched, UserTable};
use tessera_security::Security;

use crate::directory::DirectoryConn;
use crate::Result;

/// How long one fetch may take, retries over the members included.
const FETCH_DEADLINE: Duration = Duration::from_secs(3);

/// Starts keeping `security`'s user table (its access check's) equal to
/// the directory's, over a connection of its own to the members at
/// `directory`. Without TLS nobody is checked and nothing is started.
pub fn spawn_refresh(directory: Vec<String>, security: &Security) -> Result<()> {
    if !security.is_tls() {
        return Ok(());
    }
    let conn = Arc::new(DirectoryConn::new(
        directory,
        FETCH_DEADLINE,
        security.clone(),
    )?);
    security.users().spawn_refresh(move |known| {
        let conn = conn.clone();
        async move { fetch(&conn, known).await }
    });
    Ok(())
}

/// The directory's table, or None when the one at `known_version` is
/// current.
pub async fn fetch(conn: &DirectoryConn, known_version: u64) -> Fetched {
    let r = conn
        .call("user table", |mut c| async move {
            c.user_table(UserTableRequest { known_version }).await
        })
        .await
        .map_err(|e| e.to_string())?;
    if r.unchanged {
        return Ok(None);
    }
    Ok(Some(UserTable::from_wire(
        r.version,
        r.users
            .iter()
            .map(|u| (u.name.as_str(), u.role, u.token_hash.as_slice())),
    )))
}
