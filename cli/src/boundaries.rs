//! How the CLI shows encoded keys: region boundaries as `keyspace:user key`.
//!
//! Region boundaries are encoded keys (`keyspace id ‖ [hash] ‖ user key`,
//! see `tessera_proto::keys`). Operators think in keyspace names and user
//! keys, so every boundary is decoded before it is shown:
//!
//! | encoded boundary | shown as |
//! |---|---|
//! | empty start / empty end | `-inf` / `+inf` |
//! | `id(orders) ‖ "k1"` (range keyspace) | `orders:k1` |
//! | `id(orders)` alone (where the keyspace begins) | `orders:-inf` |
//! | `id(orders) + 1` alone, that id unnamed (where `orders` ends) | `orders:+inf` |
//! | `id(users) ‖ 0x4000` (hash keyspace) | `users#4000` |
//! | `id(users) ‖ hash("k") ‖ "k"` | `users#a1b2:k` |
//!
//! So a region holding all of keyspace `orders` reads `orders:-inf` to
//! `orders:+inf`. A keyspace id the directory did not name (and that does
//! not end a named one) is shown as its number. Bytes that are not
//! printable ASCII are escaped with `escape_ascii` (`\xff`), so any
//! boundary prints on one line; JSON output adds the exact encoded bytes in
//! hex.
//!
//! [`Keyspaces`] is the id ↔ name table, loaded once per command with
//! `ListKeyspaces`.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use tessera_proto::directorypb::{Keyspace, KeyspaceKind};
use tessera_proto::keys::{is_hash_keyspace, DEFAULT_KEYSPACE_ID};

/// The name of the keyspace every cluster starts with.
pub const DEFAULT_KEYSPACE: &str = "default";
const KEYSPACE_PREFIX_BYTES: usize = 4;
const HASH_PREFIX_BYTES: usize = 2;

/// The cluster's keyspaces by id, as the directory listed them.
#[derive(Debug, Clone, Default)]
pub struct Keyspaces {
    by_id: BTreeMap<u32, Keyspace>,
}

impl Keyspaces {
    pub fn new(list: Vec<Keyspace>) -> Self {
        let mut by_id: BTreeMap<u32, Keyspace> = list.into_iter().map(|k| (k.id, k)).collect();
        // The default keyspace exists in every cluster even if a directory
        // left it out of the list.
        by_id
            .entry(DEFAULT_KEYSPACE_ID)
            .or_insert_with(|| Keyspace {
                id: DEFAULT_KEYSPACE_ID,
                name: DEFAULT_KEYSPACE.into(),
                kind: KeyspaceKind::Range as i32,
                initial_regions: 0,
                ring_stores: vec![],
            });
        Keyspaces { by_id }
    }

    /// All keyspaces in id order.
    pub fn all(&self) -> impl Iterator<Item = &Keyspace> {
        self.by_id.values()
    }

    /// The keyspace called `name`.
    pub fn by_name(&self, name: &str) -> Result<&Keyspace> {
        match self.by_id.values().find(|k| k.name == name) {
            Some(k) => Ok(k),
            None => bail!("keyspace {name:?} not found"),
        }
    }

    /// The id of keyspace `name`, or of `default` when `None`.
    pub fn id_of(&self, name: Option<&str>) -> Result<u32> {
        match name {
            None => Ok(DEFAULT_KEYSPACE_ID),
            Some(name) => Ok(self.by_name(name)?.id),
        }
    }

    /// Keyspace `id`, if the directory named it.
    pub fn get(&self, id: u32) -> Option<&Keyspace> {
        self.by_id.get(&id)
    }

    /// The name of keyspace `id`, or its number when unknown.
    pub fn name(&self, id: u32) -> String {
        match self.by_id.get(&id) {
            Some(k) => k.name.clone(),
            None => id.to_string(),
        }
    }
}

/// Which end of a range a key bounds; an empty key means unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Start,
    End,
}

/// An encoded region boundary as an operator reads it (see the module
/// docs for the forms).
pub fn render_bound(encoded: &[u8], bound: Bound, keyspaces: &Keyspaces) -> String {
    if encoded.is_empty() {
        return match bound {
            Bound::Start => "-inf".into(),
            Bound::End => "+inf".into(),
        };
    }
    let Some(prefix) = encoded.get(..KEYSPACE_PREFIX_BYTES) else {
        // Shorter than a keyspace prefix: not a key tessera writes, but a
        // valid boundary all the same; show its bytes.
        return format!("0x{}", hex(encoded));
    };
    let id = u32::from_be_bytes(prefix.try_into().expect("4 bytes"));
    let rest = &encoded[KEYSPACE_PREFIX_BYTES..];
    if rest.is_empty() {
        // A bare keyspace prefix: where a keyspace begins, or where the
        // one before it ends.
        return match (
            keyspaces.get(id),
            id.checked_sub(1).and_then(|p| keyspaces.get(p)),
        ) {
            (Some(k), _) => format!("{}:-inf", k.name),
            (None, Some(previous)) => format!("{}:+inf", previous.name),
            (None, None) => format!("{id}:-inf"),
        };
    }
    let name = keyspaces.name(id);
    if is_hash_keyspace(id) && rest.len() >= HASH_PREFIX_BYTES {
        let (hash, user_key) = rest.split_at(HASH_PREFIX_BYTES);
        let mut out = format!("{name}#{}", hex(hash));
        if !user_key.is_empty() {
            out.push(':');
            out.push_str(&escape(user_key));
        }
        return out;
    }
    format!("{name}:{}", escape(rest))
}

/// Bytes escaped with `escape_ascii`: printable ASCII stays, the rest
/// becomes `\xNN`, `\n`, ... .
pub fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Bytes as text: UTF-8 as is, anything else escaped like [`escape`].
pub fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => escape(bytes),
    }
}

/// Lower-case hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::keys::{encode, key_hash, keyspace_range, HASH_KEYSPACE_BIT};

    fn keyspaces() -> Keyspaces {
        Keyspaces::new(vec![
            Keyspace {
                id: 1,
                name: "orders".into(),
                kind: KeyspaceKind::Range as i32,
                initial_regions: 0,
                ring_stores: vec![],
            },
            Keyspace {
                id: HASH_KEYSPACE_BIT | 2,
                name: "users".into(),
                kind: KeyspaceKind::Hash as i32,
                initial_regions: 4,
                ring_stores: vec![],
            },
        ])
    }

    #[test]
    fn unbounded_ends() {
        let ks = keyspaces();
        assert_eq!(render_bound(b"", Bound::Start, &ks), "-inf");
        assert_eq!(render_bound(b"", Bound::End, &ks), "+inf");
    }

    #[test]
    fn range_keyspace_keys() {
        let ks = keyspaces();
        assert_eq!(
            render_bound(&encode(0, b"abc"), Bound::Start, &ks),
            "default:abc"
        );
        assert_eq!(
            render_bound(&encode(1, b"k1"), Bound::End, &ks),
            "orders:k1"
        );
        let (start, end) = keyspace_range(1);
        assert_eq!(render_bound(&start, Bound::Start, &ks), "orders:-inf");
        // The end of `orders` is the start of keyspace 2, which has no name.
        assert_eq!(render_bound(&end, Bound::End, &ks), "orders:+inf");
        assert_eq!(render_bound(&end, Bound::Start, &ks), "orders:+inf");
        assert_eq!(
            render_bound(&keyspace_range(0).0, Bound::End, &ks),
            "default:-inf"
        );
        // Neither named nor the end of a named keyspace.
        assert_eq!(
            render_bound(&keyspace_range(9).0, Bound::End, &ks),
            "9:-inf"
        );
        assert_eq!(render_bound(&encode(9, b"x"), Bound::End, &ks), "9:x");
    }

    #[test]
    fn hash_keyspace_keys() {
        let ks = keyspaces();
        let id = HASH_KEYSPACE_BIT | 2;
        let mut boundary = id.to_be_bytes().to_vec();
        boundary.extend_from_slice(&0x4000u16.to_be_bytes());
        assert_eq!(render_bound(&boundary, Bound::Start, &ks), "users#4000");
        let k = encode(id, b"k");
        let want = format!("users#{:04x}:k", key_hash(b"k"));
        assert_eq!(render_bound(&k, Bound::Start, &ks), want);
        // The keyspace start of a hash keyspace has no hash prefix yet.
        assert_eq!(
            render_bound(&keyspace_range(id).0, Bound::Start, &ks),
            "users:-inf"
        );
    }

    #[test]
    fn bytes_are_escaped() {
        let ks = keyspaces();
        assert_eq!(
            render_bound(&encode(0, b"a\xff\n"), Bound::Start, &ks),
            "default:a\\xff\\n"
        );
        assert_eq!(render_bound(b"\x01\x02", Bound::Start, &ks), "0x0102");
        assert_eq!(text("héllo".as_bytes()), "héllo");
        assert_eq!(text(b"\xff\x00ok"), "\\xff\\x00ok");
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }

    #[test]
    fn keyspace_lookup() {
        let ks = keyspaces();
        assert_eq!(ks.id_of(None).unwrap(), 0);
        assert_eq!(ks.id_of(Some("orders")).unwrap(), 1);
        assert_eq!(ks.id_of(Some(DEFAULT_KEYSPACE)).unwrap(), 0);
        let err = ks.id_of(Some("nope")).unwrap_err().to_string();
        assert_eq!(err, "keyspace \"nope\" not found");
        assert_eq!(ks.name(7), "7");
        assert_eq!(ks.all().count(), 3);
    }
}
