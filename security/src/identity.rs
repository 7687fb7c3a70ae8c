//! The identity a certificate carries: one SAN URI `tessera://KIND/NAME`.
//!
//! Names are 1 to 64 characters from `[A-Za-z0-9._-]`, so an identity
//! prints and parses back unchanged and never needs escaping.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::{Error, Result};

/// The URI scheme of identities.
pub const SCHEME: &str = "tessera://";

/// What an identity may do depends first on its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A store or a directory member.
    Node,
    /// A router.
    Router,
    /// A user (its role is recorded by the directory).
    Client,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Router => "router",
            Kind::Client => "client",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Identity {
    pub kind: Kind,
    pub name: String,
}

impl Identity {
    /// An identity, if `name` is a valid name.
    pub fn new(kind: Kind, name: &str) -> Result<Self> {
        check_name(name)?;
        Ok(Identity {
            kind,
            name: name.to_string(),
        })
    }

    /// The SAN URI that carries this identity.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}/{}", self.kind, self.name)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl FromStr for Identity {
    type Err = Error;

    /// Parses a SAN URI `tessera://KIND/NAME`.
    fn from_str(uri: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidArgument(format!(
                "{uri:?} is not a tessera identity (tessera://node|router|client/NAME)"
            ))
        };
        let rest = uri.strip_prefix(SCHEME).ok_or_else(bad)?;
        let (kind, name) = rest.split_once('/').ok_or_else(bad)?;
        let kind = match kind {
            "node" => Kind::Node,
            "router" => Kind::Router,
            "client" => Kind::Client,
            _ => return Err(bad()),
        };
        Identity::new(kind, name)
    }
}

/// Checks a name: 1 to 64 characters from `[A-Za-z0-9._-]`, starting with
/// a letter or a digit.
pub fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{name:?} is not a valid name: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_print_and_parse_back() {
        for kind in [Kind::Node, Kind::Router, Kind::Client] {
            let id = Identity::new(kind, "a-b.c_1").unwrap();
            assert_eq!(id.uri().parse::<Identity>().unwrap(), id);
        }
    }

    #[test]
    fn hostile_uris_and_names_are_refused() {
        for bad in [
            "",
            "tessera://",
            "tessera://node",
            "tessera://node/",
            "tessera://admin/x",
            "tessera://client/a/b",
            "tessera://client/../x",
            "https://client/x",
            "tessera://client/white space",
            "tessera://client/é",
            "tessera://client/..",
            "tessera://client/-x",
        ] {
            assert!(bad.parse::<Identity>().is_err(), "{bad:?} parsed");
        }
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_name(&"x".repeat(64)).is_ok());
    }
}
