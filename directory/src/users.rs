//! The service's half of users (the process overview is in
//! `tessera_security::users`, the replicated half in the state's `users`
//! module): creating a user with a fresh token (shown once), listing
//! users without their token hashes, revoking, the user table for the
//! access checks of stores and routers, and this member's own copy of the
//! table for its own access check.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tessera_proto::directorypb::directory_command::Cmd;
use tessera_proto::directorypb::{Role, User, UserTableResponse};
use tessera_security::users::{UserTable, Users};
use tessera_security::{identity, secret};

use crate::core::Core;
use crate::state::DirectoryState;
use crate::{Error, Result};

/// The users of `state` as the access check holds them.
pub fn table(state: &DirectoryState) -> UserTable {
    UserTable::from_wire(
        state.meta.users_version,
        state
            .users
            .values()
            .map(|u| (u.name.as_str(), u.role, u.token_hash.as_slice())),
    )
}

/// Keeps `users` (this member's access check) equal to its replicated
/// state: each refresh reads the state, which the member applies itself.
pub fn spawn_refresh(core: Arc<Core>, users: &Users) {
    users.spawn_refresh(move |known| {
        let current = core.state().meta.users_version;
        let fresh = (current != known).then(|| table(&core.state()));
        async move { Ok(fresh) }
    });
}

impl Core {
    /// Creates a user; returns its record (without the hash) and its token.
    pub(crate) async fn create_user(&self, name: String, role: i32) -> Result<(User, String)> {
        identity::check_name(&name)
            .map_err(|e| Error::InvalidArgument(format!("user name: {e}")))?;
        if !matches!(
            Role::try_from(role),
            Ok(Role::Readonly | Role::Readwrite | Role::Admin)
        ) {
            return Err(Error::InvalidArgument(
                "a user needs a role: readonly, readwrite or admin".into(),
            ));
        }
        self.leading_term().await?;
        let token = secret::generate();
        let created_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let user = User {
            name,
            role,
            token_hash: secret::hash(&token),
            created_unix_ms,
        };
        self.node.propose(Cmd::CreateUser(user.clone())).await?;
        tracing::info!(user = %user.name, role, "user created");
        Ok((without_hash(user), token))
    }

    pub(crate) async fn revoke_user(&self, name: String) -> Result<()> {
        self.leading_term().await?;
        self.node.propose(Cmd::RevokeUser(name.clone())).await?;
        tracing::info!(user = %name, "user revoked");
        Ok(())
    }

    /// Every user, by name, without token hashes.
    pub(crate) async fn list_users(&self) -> Result<Vec<User>> {
        self.read(|s, _| s.users.values().cloned().map(without_hash).collect())
            .await
    }

    /// The table with token hashes, unless the caller's is current. Only
    /// the leader answers, after a read barrier: a follower may not have
    /// applied a user created a moment ago, and a store asking because it
    /// met that user's token must get it in one fetch.
    pub(crate) async fn user_table(&self, known_version: u64) -> Result<UserTableResponse> {
        self.read(|state, _| {
            let version = state.meta.users_version;
            let unchanged = version == known_version;
            UserTableResponse {
                header: None,
                version,
                unchanged,
                users: if unchanged {
                    vec![]
                } else {
                    state.users.values().cloned().collect()
                },
            }
        })
        .await
    }
}

fn without_hash(user: User) -> User {
    User {
        token_hash: vec![],
        ..user
    }
}

#[cfg(test)]
mod tests {
    use tessera_security::users::Role as SecurityRole;

    use super::*;

    /// The security crate's wire numbers are the proto's.
    #[test]
    fn roles_have_the_same_numbers_on_the_wire() {
        for (ours, wire) in [
            (SecurityRole::Readonly, Role::Readonly),
            (SecurityRole::Readwrite, Role::Readwrite),
            (SecurityRole::Admin, Role::Admin),
        ] {
            assert_eq!(ours.wire(), wire as i32);
        }
        assert_eq!(SecurityRole::from_wire(Role::Unspecified as i32), None);
    }

    #[test]
    fn the_table_finds_users_by_token_and_never_lists_a_hash() {
        let mut s = DirectoryState::default();
        let token = secret::generate();
        let user = User {
            name: "ro".into(),
            role: Role::Readonly as i32,
            token_hash: secret::hash(&token),
            created_unix_ms: 1,
        };
        s.apply(Cmd::CreateUser(user.clone()), &mut vec![]).unwrap();
        let t = table(&s);
        assert_eq!(t.version(), 1);
        assert_eq!(t.by_token(&token).unwrap().role, SecurityRole::Readonly);
        assert!(without_hash(user).token_hash.is_empty());
    }
}
