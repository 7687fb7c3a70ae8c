//! Who may join the cluster and who may change a store's registration:
//! the state machine's half of cluster identity.
//!
//! How a store joins (the whole process; the store's half is
//! `tessera-store`'s `bootstrap.rs`, the service's half `crate::join`):
//! 1. The directory's first leader chooses the cluster id and the join
//!    token (configured, or generated and written to its data directory)
//!    and records both, the token as a SHA-256 (`InitCluster`,
//!    `SetJoinToken`). `tessera cluster rotate-join-token` replaces it.
//! 2. A new store allocates its id, learns the cluster id from the answer's
//!    header, and creates its own secret; it keeps all three in its engine
//!    (`StoreIdent`).
//! 3. It registers (`PutStore` → `RegisterStore`) with the cluster id, its
//!    secret and the join token. Applying checks, in this order: the
//!    cluster id is this cluster's; for a store id not yet registered, the
//!    join token matches; for a registered one, the secret matches the hash
//!    recorded at its first registration. Anything else is refused and
//!    changes nothing.
//! 4. After a restart the store registers again with its secret only (its
//!    address may have changed); the join token is not needed any more.
//!
//! Invariants: a store record is created only with the current join token
//! and is changed afterwards only with the secret recorded with it; the
//! secret's hash never leaves the directory (it is not part of the store
//! record that `ListStores` returns). Checks run as the command applies, so
//! every member reaches the same outcome.

use prost::Message as _;
use tessera_proto::directorypb::{RegisterStore, SetJoinToken, StoreSecret};
use tessera_security::secret;

use super::{Applied, Change, DirectoryState};
use crate::{records, Error, Result};

impl DirectoryState {
    pub(super) fn set_join_token(
        &mut self,
        SetJoinToken {
            hash,
            only_if_unset,
        }: SetJoinToken,
        out: &mut Vec<Change>,
    ) -> Result<Applied> {
        if only_if_unset && !self.meta.join_token_hash.is_empty() {
            return Ok(Applied::Done);
        }
        if hash.len() != 32 {
            return Err(Error::InvalidArgument(
                "a join token hash is 32 bytes (SHA-256)".into(),
            ));
        }
        self.meta.join_token_hash = hash;
        self.put_meta(out);
        Ok(Applied::Done)
    }

    pub(super) fn register_store(
        &mut self,
        r: RegisterStore,
        out: &mut Vec<Change>,
    ) -> Result<Applied> {
        if r.cluster_id != self.meta.cluster_id {
            return Err(Error::ClusterMismatch {
                ours: self.meta.cluster_id,
                theirs: r.cluster_id,
            });
        }
        let Some(store) = r.store else {
            return Err(Error::InvalidArgument("no store given".into()));
        };
        self.refuse_if_removed(store.id)?;
        if r.secret_hash.len() != 32 {
            return Err(Error::Unauthenticated(format!(
                "store {} presented no store secret",
                store.id
            )));
        }
        match self.store_secrets.get(&store.id) {
            Some(known) if !secret::hashes_match(known, &r.secret_hash) => {
                return Err(Error::PermissionDenied(format!(
                    "store {} is registered by another process: only the store itself \
                     (the holder of its data directory) may change its registration",
                    store.id
                )));
            }
            Some(_) => {}
            // Registered before stores had secrets: the first to present
            // one is that store restarting with this version.
            None if self.stores.contains_key(&store.id) => {}
            None if r.join_token_hash.is_empty() => {
                return Err(Error::Unauthenticated(format!(
                    "store {} is new to the cluster and needs the cluster's join token \
                     (--join-token or TESSERA_JOIN_TOKEN); none was given",
                    store.id
                )));
            }
            None if !secret::hashes_match(&self.meta.join_token_hash, &r.join_token_hash) => {
                return Err(Error::PermissionDenied(format!(
                    "store {} gave a join token that is not this cluster's current one",
                    store.id
                )));
            }
            None => {}
        }
        let id = store.id;
        let applied = self.put_store(store, out)?;
        if let std::collections::btree_map::Entry::Vacant(slot) = self.store_secrets.entry(id) {
            let record = StoreSecret {
                store_id: id,
                hash: r.secret_hash.clone(),
            };
            out.push(Change::Put(
                records::store_secret(id),
                record.encode_to_vec(),
            ));
            slot.insert(r.secret_hash);
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use tessera_proto::directorypb::directory_command::Cmd;
    use tessera_proto::metapb::Store;

    use super::*;

    const CLUSTER: u64 = 77;

    fn set(token: &str) -> SetJoinToken {
        SetJoinToken {
            hash: secret::hash(token),
            only_if_unset: false,
        }
    }

    fn cluster(token: &str) -> DirectoryState {
        let mut s = DirectoryState::default();
        s.apply(Cmd::InitCluster(CLUSTER), &mut vec![]).unwrap();
        s.apply(Cmd::SetJoinToken(set(token)), &mut vec![]).unwrap();
        s
    }

    fn register(
        s: &mut DirectoryState,
        id: u64,
        address: &str,
        cluster_id: u64,
        store_secret: &str,
        token: &str,
    ) -> Result<Applied> {
        s.apply(
            Cmd::RegisterStore(RegisterStore {
                store: Some(Store {
                    id,
                    address: address.into(),
                    ..Default::default()
                }),
                cluster_id,
                secret_hash: secret::hash(store_secret),
                join_token_hash: if token.is_empty() {
                    vec![]
                } else {
                    secret::hash(token)
                },
            }),
            &mut vec![],
        )
    }

    #[test]
    fn a_new_store_needs_the_join_token_and_its_secret_guards_it_afterwards() {
        let token = secret::generate();
        let mine = secret::generate();
        let mut s = cluster(&token);

        let e = register(&mut s, 1, "a:1", CLUSTER, &mine, "").unwrap_err();
        assert!(matches!(e, Error::Unauthenticated(_)), "{e}");
        assert!(e.to_string().contains("join token"), "{e}");
        let e = register(&mut s, 1, "a:1", CLUSTER, &mine, &secret::generate()).unwrap_err();
        assert!(matches!(e, Error::PermissionDenied(_)), "{e}");
        assert!(s.stores.is_empty(), "a refused join registers nothing");

        register(&mut s, 1, "a:1", CLUSTER, &mine, &token).unwrap();
        // A restart: a new address, no token needed.
        register(&mut s, 1, "a:2", CLUSTER, &mine, "").unwrap();
        assert_eq!(s.stores[&1].address, "a:2");

        // Anyone else, even with the join token, cannot take it over.
        let e = register(&mut s, 1, "evil:1", CLUSTER, &secret::generate(), &token).unwrap_err();
        assert!(matches!(e, Error::PermissionDenied(_)), "{e}");
        assert!(e.to_string().contains("only the store itself"), "{e}");
        assert_eq!(s.stores[&1].address, "a:2");
    }

    #[test]
    fn the_first_token_does_not_replace_one_already_set() {
        let first = secret::generate();
        let mut s = cluster(&first);
        let late = SetJoinToken {
            hash: secret::hash(&secret::generate()),
            only_if_unset: true,
        };
        s.apply(Cmd::SetJoinToken(late), &mut vec![]).unwrap();
        assert!(secret::matches(&s.meta.join_token_hash, &first));
    }

    #[test]
    fn another_cluster_is_refused_naming_both_ids() {
        let token = secret::generate();
        let mut s = cluster(&token);
        let e = register(&mut s, 1, "a:1", 5, &secret::generate(), &token).unwrap_err();
        assert!(
            e.to_string().contains("77") && e.to_string().contains('5'),
            "{e}"
        );
        assert!(s.stores.is_empty());
    }

    #[test]
    fn a_rotated_token_admits_new_stores_and_the_old_one_no_longer() {
        let old = secret::generate();
        let mut s = cluster(&old);
        let new = secret::generate();
        s.apply(Cmd::SetJoinToken(set(&new)), &mut vec![]).unwrap();
        let e = register(&mut s, 1, "a:1", CLUSTER, &secret::generate(), &old).unwrap_err();
        assert!(matches!(e, Error::PermissionDenied(_)), "{e}");
        register(&mut s, 1, "a:1", CLUSTER, &secret::generate(), &new).unwrap();
    }

    #[test]
    fn a_store_registered_before_secrets_existed_adopts_the_first_one() {
        let token = secret::generate();
        let mut s = cluster(&token);
        s.apply(
            Cmd::PutStore(Store {
                id: 3,
                address: "old:1".into(),
                ..Default::default()
            }),
            &mut vec![],
        )
        .unwrap();
        let mine = secret::generate();
        register(&mut s, 3, "old:2", CLUSTER, &mine, "").unwrap();
        let e = register(&mut s, 3, "evil:1", CLUSTER, &secret::generate(), "").unwrap_err();
        assert!(matches!(e, Error::PermissionDenied(_)), "{e}");
    }

    #[test]
    fn the_secret_survives_a_reload_from_the_records() {
        let token = secret::generate();
        let mine = secret::generate();
        let mut s = cluster(&token);
        let mut out = vec![];
        s.apply(Cmd::SetJoinToken(set(&token)), &mut out).unwrap();
        s.apply(
            Cmd::RegisterStore(RegisterStore {
                store: Some(Store {
                    id: 4,
                    ..Default::default()
                }),
                cluster_id: CLUSTER,
                secret_hash: secret::hash(&mine),
                join_token_hash: secret::hash(&token),
            }),
            &mut out,
        )
        .unwrap();
        let secret_record = out
            .iter()
            .find_map(|c| match c {
                Change::Put(k, v) if *k == records::store_secret(4) => Some(v.clone()),
                _ => None,
            })
            .expect("the secret's hash is written");
        let back = StoreSecret::decode(secret_record.as_slice()).unwrap();
        assert_eq!(back.hash, secret::hash(&mine));
        let store_record = out
            .iter()
            .find_map(|c| match c {
                Change::Put(k, v) if *k == records::store(4) => Some(v.clone()),
                _ => None,
            })
            .unwrap();
        assert!(
            !store_record
                .windows(32)
                .any(|w| w == secret::hash(&mine).as_slice()),
            "the store record does not carry the hash"
        );
    }
}
