//! The layout of Raft state in the engine.
//!
//! - `raft` column family: `region id (u64 BE) ‖ log index (u64 BE)` → an
//!   encoded `eraftpb::Entry`. Big-endian keeps a region's log contiguous and
//!   in index order.
//! - `meta` column family: `0x01 ‖ region id (u64 BE) ‖ suffix` → the region's
//!   Raft hard state (`0x01`), apply state (`0x02`), region state (`0x03`),
//!   merge state while it is a merging source (`0x04`) and merge record as
//!   a target (`0x05`; see `crate::merge`); `0x02` → the store's identity.
//!
//! User data lives in the `default` column family under encoded keys, which
//! the store defines; this crate never looks inside them.

use crate::RegionId;

const REGION_META_PREFIX: u8 = 0x01;

/// Bytes of a `raft` key that name its region (the region id).
pub const RAFT_LOG_PREFIX_LEN: usize = 8;
/// Bytes of a region's `meta` key that name its region (`0x01 ‖ region id`).
pub const REGION_META_PREFIX_LEN: usize = 9;
const RAFT_STATE_SUFFIX: u8 = 0x01;
const APPLY_STATE_SUFFIX: u8 = 0x02;
const REGION_STATE_SUFFIX: u8 = 0x03;
const MERGE_STATE_SUFFIX: u8 = 0x04;
const MERGE_RECORD_SUFFIX: u8 = 0x05;

/// The key of the store's identity in the `meta` column family.
pub const STORE_IDENT_KEY: &[u8] = &[0x02];

/// A key above every key of the `default` column family (user keys are at
/// most a few KiB long): the end of an unbounded data range.
pub fn data_end_key() -> Vec<u8> {
    vec![0xff; 16 * 1024]
}

/// The exclusive end of a region's data range (`end_key`, or
/// [`data_end_key`] when the region is unbounded).
pub fn data_range_end(end_key: &[u8]) -> Vec<u8> {
    if end_key.is_empty() {
        data_end_key()
    } else {
        end_key.to_vec()
    }
}

pub fn raft_log_key(region_id: RegionId, index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&region_id.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The index of a key made by [`raft_log_key`].
pub fn raft_log_index(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

fn region_meta_key(region_id: RegionId, suffix: u8) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[0] = REGION_META_PREFIX;
    key[1..9].copy_from_slice(&region_id.to_be_bytes());
    key[9] = suffix;
    key
}

pub fn raft_state_key(region_id: RegionId) -> [u8; 10] {
    region_meta_key(region_id, RAFT_STATE_SUFFIX)
}

pub fn apply_state_key(region_id: RegionId) -> [u8; 10] {
    region_meta_key(region_id, APPLY_STATE_SUFFIX)
}

pub fn region_state_key(region_id: RegionId) -> [u8; 10] {
    region_meta_key(region_id, REGION_STATE_SUFFIX)
}

/// A merging source's `MergeState` (absent: not merging).
pub fn merge_state_key(region_id: RegionId) -> [u8; 10] {
    region_meta_key(region_id, MERGE_STATE_SUFFIX)
}

/// A target's `MergeRecord`.
pub fn merge_record_key(region_id: RegionId) -> [u8; 10] {
    region_meta_key(region_id, MERGE_RECORD_SUFFIX)
}

/// The bounds `[start, end)` of every region's meta keys.
pub fn region_meta_bounds() -> ([u8; 1], [u8; 1]) {
    ([REGION_META_PREFIX], [REGION_META_PREFIX + 1])
}

/// If `key` is a region state key, the region's id.
pub fn decode_region_state_key(key: &[u8]) -> Option<RegionId> {
    if key.len() != 10 || key[0] != REGION_META_PREFIX || key[9] != REGION_STATE_SUFFIX {
        return None;
    }
    Some(u64::from_be_bytes(key[1..9].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_region_then_index() {
        assert!(raft_log_key(1, u64::MAX) < raft_log_key(2, 0));
        assert!(raft_log_key(7, 255) < raft_log_key(7, 256));
        assert_eq!(raft_log_index(&raft_log_key(7, 300)), Some(300));
    }

    #[test]
    fn region_state_keys_round_trip() {
        let key = region_state_key(42);
        assert_eq!(decode_region_state_key(&key), Some(42));
        assert_eq!(decode_region_state_key(&apply_state_key(42)), None);
        let (start, end) = region_meta_bounds();
        assert!(start.as_slice() <= key.as_slice() && key.as_slice() < end.as_slice());
        assert!(STORE_IDENT_KEY >= end.as_slice());
    }
}
