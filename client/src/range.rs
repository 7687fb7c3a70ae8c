//! Key ranges: Rust's [`RangeBounds`] mapped onto the wire's optional
//! `start` (inclusive) and `end` (exclusive).
//!
//! The wire only knows half-open ranges `[start, end)`, so the other bounds
//! are turned into their half-open equivalent with the smallest key that
//! follows a key `k` in byte order, which is `k ‖ 0x00`:
//!
//! | bound | start | end |
//! |---|---|---|
//! | `Included(k)` | `k` | `k ‖ 0x00` |
//! | `Excluded(k)` | `k ‖ 0x00` | `k` |
//! | `Unbounded` | unset (keyspace start) | unset (keyspace end) |
//!
//! Nothing is validated here: an inverted or oversized range is the
//! router's to refuse.

use std::ops::{Bound, RangeBounds};

use tessera_proto::keys::successor;

/// A range as the wire carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct WireRange {
    /// First key, inclusive; `None`: the start of the keyspace.
    pub start: Option<Vec<u8>>,
    /// End key, exclusive; `None`: the end of the keyspace.
    pub end: Option<Vec<u8>>,
}

impl WireRange {
    pub(crate) fn from_bounds<K: AsRef<[u8]>>(range: &impl RangeBounds<K>) -> WireRange {
        let start = match range.start_bound() {
            Bound::Included(k) => Some(k.as_ref().to_vec()),
            Bound::Excluded(k) => Some(successor(k.as_ref())),
            Bound::Unbounded => None,
        };
        let end = match range.end_bound() {
            Bound::Included(k) => Some(successor(k.as_ref())),
            Bound::Excluded(k) => Some(k.as_ref().to_vec()),
            Bound::Unbounded => None,
        };
        WireRange { start, end }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire<K: AsRef<[u8]>>(r: impl RangeBounds<K>) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let w = WireRange::from_bounds(&r);
        (w.start, w.end)
    }

    fn v(s: &[u8]) -> Option<Vec<u8>> {
        Some(s.to_vec())
    }

    #[test]
    fn half_open() {
        assert_eq!(wire("a".."c"), (v(b"a"), v(b"c")));
    }

    #[test]
    fn inclusive_end_gets_a_zero_byte() {
        assert_eq!(wire("a"..="c"), (v(b"a"), v(b"c\0")));
        assert_eq!(wire(..="c"), (None, v(b"c\0")));
    }

    #[test]
    fn unbounded_sides_are_unset() {
        assert_eq!(wire::<&[u8]>(..), (None, None));
        assert_eq!(wire("b"..), (v(b"b"), None));
        assert_eq!(wire(.."b"), (None, v(b"b")));
    }

    #[test]
    fn excluded_start_gets_a_zero_byte() {
        let r = (
            Bound::Excluded(b"a".to_vec()),
            Bound::Excluded(b"c".to_vec()),
        );
        assert_eq!(wire(r), (v(b"a\0"), v(b"c")));
        let r = (Bound::Excluded(b"a".to_vec()), Bound::Unbounded);
        assert_eq!(wire(r), (v(b"a\0"), None));
    }

    #[test]
    fn owned_keys() {
        assert_eq!(wire(b"k1".to_vec()..b"k2".to_vec()), (v(b"k1"), v(b"k2")));
    }
}
