//! The values operations return: [`KvPair`], [`CasOutcome`] and
//! [`DeleteRangeStep`].

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

/// How far one [`Keyspace::delete_range_step`](crate::Keyspace::delete_range_step) went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRangeStep {
    /// Regions whose part of the range this step deleted.
    pub regions: u32,
    /// Where the rest of the range begins: pass it to the next step.
    /// `None`: the whole range is deleted. Opaque (an encoded key).
    pub resume: Option<Vec<u8>>,
}
