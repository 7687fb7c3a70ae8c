//! Shared secrets: the cluster's join token and each store's own secret.
//!
//! A secret is 256 random bits from the operating system, written as
//! `tessera-` followed by 64 hex digits so it reads as what it is in a
//! log or a shell history. Whoever checks a secret keeps only its SHA-256
//! ([`hash`]) and compares hashes in constant time ([`matches`]); a SHA-256
//! of 256 random bits needs no salt or slow hash.

use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

const PREFIX: &str = "tessera-";

/// A new secret.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random number generator failed");
    let mut s = String::with_capacity(PREFIX.len() + 64);
    s.push_str(PREFIX);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Whether `text` has the form of a secret (for clear errors on typos;
/// [`matches`] is what decides).
pub fn check_form(text: &str) -> Result<()> {
    let ok = text
        .strip_prefix(PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "not a tessera secret: expected {PREFIX} and 64 hex digits, got {} characters",
            text.len()
        )))
    }
}

/// The SHA-256 of a secret: what is stored in its place.
pub fn hash(secret: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, secret.trim().as_bytes())
        .as_ref()
        .to_vec()
}

/// Whether `secret` hashes to `stored`, compared in constant time. An
/// empty `stored` matches nothing.
pub fn matches(stored: &[u8], secret: &str) -> bool {
    hashes_match(stored, &hash(secret))
}

/// [`matches`] for a hash computed elsewhere (the directory's state
/// machine compares the hash a request carried).
pub fn hashes_match(stored: &[u8], presented: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    !stored.is_empty() && bool::from(stored.ct_eq(presented))
}

/// Writes `secret` to `path`, readable by its owner only (0600), synced.
pub fn save(path: &std::path::Path, secret: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io(path))?;
    writeln!(f, "{secret}").map_err(Error::io(path))?;
    f.sync_all().map_err(Error::io(path))
}

/// A secret given inline or as a file (never both): the configured value
/// of settings such as `join_token` / `join_token_file`. A named file that
/// does not exist is an error.
pub fn resolve(
    what: &str,
    inline: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
            "{what} is given both inline and as a file: choose one"
        ))),
        (Some(s), None) => {
            check_form(s).map_err(|e| Error::InvalidArgument(format!("{what}: {e}")))?;
            Ok(Some(s.trim().to_string()))
        }
        (None, Some(path)) => match load(path)? {
            Some(s) => Ok(Some(s)),
            None => Err(Error::InvalidArgument(format!(
                "{what}: {} does not exist",
                path.display()
            ))),
        },
        (None, None) => Ok(None),
    }
}

/// Reads a secret [`save`] wrote: `None` if there is no such file.
pub fn load(path: &std::path::Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim().to_string();
            check_form(&secret)
                .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
            Ok(Some(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_secret_is_private_and_loads_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("join-token");
        assert_eq!(load(&path).unwrap(), None);
        let s = generate();
        save(&path, &s).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap(), Some(s));
        std::fs::write(&path, "garbage").unwrap();
        assert!(
            load(&path).is_err(),
            "a damaged file is an error, not a new secret"
        );
    }

    #[test]
    fn a_secret_matches_its_hash_and_nothing_else() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        check_form(&a).unwrap();
        let h = hash(&a);
        assert_eq!(h.len(), 32);
        assert!(matches(&h, &a));
        assert!(
            matches(&h, &format!("{a}\n")),
            "a trailing newline from a file is ignored"
        );
        assert!(!matches(&h, &b));
        assert!(!matches(&h, ""));
        assert!(!matches(&[], &a), "no stored hash matches nothing");
        assert!(hashes_match(&h, &hash(&a)));
        assert!(!hashes_match(&h, &h[..31]));
    }

    #[test]
    fn a_secret_comes_inline_or_from_a_file_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let s = generate();
        assert_eq!(resolve("t", None, None).unwrap(), None);
        assert_eq!(resolve("t", Some(&s), None).unwrap(), Some(s.clone()));
        let e = resolve("t", None, Some(&path)).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        save(&path, &s).unwrap();
        assert_eq!(resolve("t", None, Some(&path)).unwrap(), Some(s.clone()));
        let e = resolve("t", Some(&s), Some(&path)).unwrap_err().to_string();
        assert!(e.contains("choose one"), "{e}");
        assert!(resolve("t", Some("nope"), None).is_err());
    }

    #[test]
    fn malformed_secrets_are_named() {
        for bad in ["", "tessera-", "tessera-xyz", &"a".repeat(72)] {
            let e = check_form(bad).unwrap_err().to_string();
            assert!(e.contains("64 hex digits"), "{e}");
        }
    }
}
