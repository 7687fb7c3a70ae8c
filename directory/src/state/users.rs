//! Users in the replicated state: who may use the cluster with which role
//! (the process overview is in `tessera_security::users`).
//!
//! A user record holds its name, role, creation time and the SHA-256 of
//! its token — never the token. Creating refuses a taken name, the
//! built-in `admin`, an invalid name or role, and a hash that is not 32
//! bytes; revoking deletes the record (its token and its certificate stop
//! working). Every change bumps `ClusterMeta.users_version`, which the
//! processes' copies of the table compare to know whether they are
//! current. Checks run as the command applies, so every member reaches the
//! same outcome.

use prost::Message as _;
use tessera_proto::directorypb::{Role, User};
use tessera_security::identity::check_name;
use tessera_security::users::BUILTIN_ADMIN;

use super::{Applied, Change, DirectoryState};
use crate::{records, Error, Result};

impl DirectoryState {
    pub(super) fn create_user(&mut self, user: User, out: &mut Vec<Change>) -> Result<Applied> {
        check_name(&user.name).map_err(|e| Error::InvalidArgument(format!("user name: {e}")))?;
        if user.name == BUILTIN_ADMIN {
            return Err(Error::InvalidArgument(format!(
                "the user {BUILTIN_ADMIN} is built in (the client certificate {BUILTIN_ADMIN}); \
                 choose another name"
            )));
        }
        if !matches!(
            Role::try_from(user.role),
            Ok(Role::Readonly | Role::Readwrite | Role::Admin)
        ) {
            return Err(Error::InvalidArgument(
                "a user needs a role: readonly, readwrite or admin".into(),
            ));
        }
        if user.token_hash.len() != 32 {
            return Err(Error::InvalidArgument(
                "a token hash is 32 bytes (SHA-256)".into(),
            ));
        }
        if self.users.contains_key(&user.name) {
            return Err(Error::InvalidArgument(format!(
                "user {:?} already exists (revoke it first to issue a new token)",
                user.name
            )));
        }
        out.push(Change::Put(records::user(&user.name), user.encode_to_vec()));
        self.users.insert(user.name.clone(), user);
        self.bump_users_version(out);
        Ok(Applied::Done)
    }

    pub(super) fn revoke_user(&mut self, name: String, out: &mut Vec<Change>) -> Result<Applied> {
        if name == BUILTIN_ADMIN {
            return Err(Error::InvalidArgument(format!(
                "the user {BUILTIN_ADMIN} is built in and cannot be revoked \
                 (its certificate is issued with the CA key)"
            )));
        }
        if self.users.remove(&name).is_none() {
            return Err(Error::NotFound(format!("user {name:?}")));
        }
        out.push(Change::Delete(records::user(&name)));
        self.bump_users_version(out);
        Ok(Applied::Done)
    }

    fn bump_users_version(&mut self, out: &mut Vec<Change>) {
        self.meta.users_version += 1;
        self.put_meta(out);
    }
}

#[cfg(test)]
mod tests {
    use tessera_proto::directorypb::directory_command::Cmd;
    use tessera_security::secret;

    use super::*;

    fn user(name: &str, role: Role) -> User {
        User {
            name: name.into(),
            role: role as i32,
            token_hash: secret::hash(&secret::generate()),
            created_unix_ms: 1,
        }
    }

    #[test]
    fn users_are_created_once_revoked_once_and_each_change_bumps_the_version() {
        let mut s = DirectoryState::default();
        let mut out = vec![];
        s.apply(Cmd::CreateUser(user("ro", Role::Readonly)), &mut out)
            .unwrap();
        assert_eq!(s.meta.users_version, 1);
        assert!(out
            .iter()
            .any(|c| matches!(c, Change::Put(k, _) if *k == records::user("ro"))));
        let again = s.apply(Cmd::CreateUser(user("ro", Role::Admin)), &mut vec![]);
        assert!(matches!(again, Err(Error::InvalidArgument(m)) if m.contains("already exists")));
        assert_eq!(
            s.users["ro"].role,
            Role::Readonly as i32,
            "the refused create changed the user"
        );
        s.apply(Cmd::RevokeUser("ro".into()), &mut vec![]).unwrap();
        assert!(s.users.is_empty());
        assert_eq!(s.meta.users_version, 2);
        let gone = s.apply(Cmd::RevokeUser("ro".into()), &mut vec![]);
        assert!(matches!(gone, Err(Error::NotFound(_))));
        assert_eq!(s.meta.users_version, 2);
    }

    #[test]
    fn bad_users_are_refused_and_change_nothing() {
        let mut s = DirectoryState::default();
        let mut no_role = user("x", Role::Readonly);
        no_role.role = Role::Unspecified as i32;
        let mut bad_role = user("x", Role::Readonly);
        bad_role.role = 99;
        let mut short_hash = user("x", Role::Readonly);
        short_hash.token_hash.truncate(8);
        for bad in [
            user(BUILTIN_ADMIN, Role::Admin),
            user("../x", Role::Readonly),
            user("", Role::Readonly),
            no_role,
            bad_role,
            short_hash,
        ] {
            let mut out = vec![];
            assert!(
                s.apply(Cmd::CreateUser(bad.clone()), &mut out).is_err(),
                "{bad:?}"
            );
            assert!(out.is_empty());
        }
        let mut out = vec![];
        assert!(s
            .apply(Cmd::RevokeUser(BUILTIN_ADMIN.into()), &mut out)
            .is_err());
        assert!(out.is_empty() && s.users.is_empty() && s.meta.users_version == 0);
    }

    #[test]
    fn users_survive_a_reload() {
        use tessera_multiraft::engine::{Cf, Engine, MemoryEngine, WriteBatch};
        let mut s = DirectoryState::default();
        let mut out = vec![];
        s.apply(Cmd::CreateUser(user("rw", Role::Readwrite)), &mut out)
            .unwrap();
        let engine = MemoryEngine::default();
        let mut wb = WriteBatch::default();
        for c in out {
            if let Change::Put(k, v) = c {
                wb.put(Cf::Default, k, v);
            }
        }
        engine.write(&wb, true).unwrap();
        let loaded = DirectoryState::load(&engine).unwrap();
        assert_eq!(loaded.users["rw"], s.users["rw"]);
        assert_eq!(loaded.meta.users_version, 1);
    }
}
