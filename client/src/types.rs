//! The values operations return: [`KvPair`] and [`CasOutcome`].

use tessera_proto::routerpb;

/// A key and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvPair {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl From<routerpb::KvPair> for KvPair {
    fn from(p: routerpb::KvPair) -> Self {
        KvPair {
            key: p.key,
            value: p.value,
        }
    }
}

/// What a compare-and-swap did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the key held the expected value (or was absent, when absence
    /// was expected) and so was swapped.
    pub succeeded: bool,
    /// The value the key held before, if it existed. On failure this is the
    /// value that did not match.
    pub previous: Option<Vec<u8>>,
}
