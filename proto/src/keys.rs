//! The encoded key space, shared by everything that handles keys: the
//! store validates them, routers and clients encode them.
//!
//! Every key the engine stores (and every region boundary) is an encoded key:
//!
//! ```text
//! keyspace id (u32 BE) ‖ [hash of the user key (u16 BE), hash keyspaces only] ‖ user key
//! ```
//!
//! The top bit of the keyspace id says whether the keyspace is partitioned by
//! hash, so an encoded key describes itself: a store can validate it and
//! recover the user key without asking the directory. Range keyspaces use ids
//! below `0x8000_0000`, hash keyspaces ids at or above it. The `default`
//! keyspace is the range keyspace with id 0.
//!
//! Regions are ranges over encoded keys, so splits, moves and merges work the
//! same for both kinds of keyspace: a hash keyspace is pre-split along the
//! hash prefix and spreads sequential user keys evenly; a range keyspace
//! keeps them in order for scans.

/// The largest user key, in bytes.
pub const MAX_KEY_BYTES: usize = 8 * 1024;
/// The largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 8 * 1024 * 1024;
/// The keyspace id bit that marks a hash-partitioned keyspace.
pub const HASH_KEYSPACE_BIT: u32 = 0x8000_0000;
/// The id of the `default` keyspace (range-partitioned).
pub const DEFAULT_KEYSPACE_ID: u32 = 0;
const KEYSPACE_PREFIX_BYTES: usize = 4;
const HASH_PREFIX_BYTES: usize = 2;

/// A key above every valid encoded key: the exclusive end of "everything".
pub fn key_space_end() -> Vec<u8> {
    vec![0xff; KEYSPACE_PREFIX_BYTES + HASH_PREFIX_BYTES + MAX_KEY_BYTES + 1]
}

pub fn is_hash_keyspace(keyspace_id: u32) -> bool {
    keyspace_id & HASH_KEYSPACE_BIT != 0
}

/// The hash prefix of a user key in a hash keyspace: FNV-1a (64-bit) with
/// MurmurHash3's final mix (so nearby keys land far apart), top 16 bits.
/// Stable forever: it decides where keys live.
pub fn key_hash(user_key: &[u8]) -> u16 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in user_key {
        h ^= b as u64;
        h = h.wrapping_mul(PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> 48) as u16
}

/// Encodes `user_key` of keyspace `keyspace_id`.
pub fn encode(keyspace_id: u32, user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEYSPACE_PREFIX_BYTES + HASH_PREFIX_BYTES + user_key.len());
    out.extend_from_slice(&keyspace_id.to_be_bytes());
    if is_hash_keyspace(keyspace_id) {
        out.extend_from_slice(&key_hash(user_key).to_be_bytes());
    }
    out.extend_from_slice(user_key);
    out
}

/// The keyspace id and user key of an encoded key.
pub fn decode(encoded: &[u8]) -> Result<(u32, &[u8]), String> {
    let Some((prefix, mut rest)) = encoded.split_first_chunk::<KEYSPACE_PREFIX_BYTES>() else {
        return Err(format!(
            "encoded key of {} bytes is shorter than its keyspace prefix",
            encoded.len()
        ));
    };
    let keyspace_id = u32::from_be_bytes(*prefix);
    if is_hash_keyspace(keyspace_id) {
        if rest.len() < HASH_PREFIX_BYTES {
            return Err("encoded key of a hash keyspace has no hash prefix".into());
        }
        let (hash, user_key) = rest.split_at(HASH_PREFIX_BYTES);
        if hash != key_hash(user_key).to_be_bytes() {
            return Err("encoded key of a hash keyspace has a wrong hash prefix".into());
        }
        rest = user_key;
    }
    Ok((keyspace_id, rest))
}

/// Checks that `encoded` is a well-formed key whose user key is 1 byte to
/// [`MAX_KEY_BYTES`].
pub fn validate_key(encoded: &[u8]) -> Result<(), String> {
    let (_, user_key) = decode(encoded)?;
    if user_key.is_empty() {
        return Err("key is empty".into());
    }
    if user_key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            user_key.len()
        ));
    }
    Ok(())
}

/// The smallest key above `key` in byte order: `key ‖ 0x00`.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// Checks a value against [`MAX_VALUE_BYTES`].
pub fn validate_value(value: &[u8]) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        ));
    }
    Ok(())
}

/// Checks a range bound: empty (unbounded) or a keyspace prefix followed by
/// at most [`MAX_KEY_BYTES`] + 1 bytes (the [`successor`] of the longest
/// key bounds a range that ends with it).
pub fn validate_bound(encoded: &[u8]) -> Result<(), String> {
    if encoded.is_empty() {
        return Ok(());
    }
    if encoded.len() < KEYSPACE_PREFIX_BYTES {
        return Err("range bound is shorter than a keyspace prefix".into());
    }
    if encoded.len() > KEYSPACE_PREFIX_BYTES + HASH_PREFIX_BYTES + MAX_KEY_BYTES + 1 {
        return Err(format!(
            "range bound is {} bytes; the limit is {MAX_KEY_BYTES} + 1 plus the prefix",
            encoded.len()
        ));
    }
    Ok(())
}

/// The encoded range `[start, end)` that holds exactly keyspace
/// `keyspace_id`.
pub fn keyspace_range(keyspace_id: u32) -> (Vec<u8>, Vec<u8>) {
    let start = keyspace_id.to_be_bytes().to_vec();
    let end = match keyspace_id.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => Vec::new(),
    };
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn range_keyspaces_keep_user_key_order() {
        assert!(encode(0, b"a") < encode(0, b"b"));
        assert!(
            encode(0, b"zzzz") < encode(1, b"a"),
            "keyspaces do not interleave"
        );
        assert_eq!(decode(&encode(7, b"k")).unwrap(), (7, &b"k"[..]));
    }

    #[test]
    fn hash_keyspaces_carry_a_checked_hash() {
        let id = HASH_KEYSPACE_BIT | 3;
        let k = encode(id, b"user1");
        assert_eq!(k.len(), 4 + 2 + 5);
        assert_eq!(decode(&k).unwrap(), (id, &b"user1"[..]));
        let mut bad = k.clone();
        bad[4] ^= 0xff;
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn limits() {
        assert!(validate_key(&encode(0, b"")).is_err());
        assert!(validate_key(&encode(0, &[1; MAX_KEY_BYTES])).is_ok());
        assert!(validate_key(&encode(0, &[1; MAX_KEY_BYTES + 1])).is_err());
        assert!(validate_key(&encode(HASH_KEYSPACE_BIT, &[1; MAX_KEY_BYTES + 1])).is_err());
        assert!(validate_key(b"ab").is_err());
        assert!(validate_value(&vec![0; MAX_VALUE_BYTES]).is_ok());
        assert_eq!(successor(b"ab"), b"ab\0".to_vec());
        assert!(validate_value(&vec![0; MAX_VALUE_BYTES + 1]).is_err());
        assert!(encode(u32::MAX, &[0xff; MAX_KEY_BYTES]) < key_space_end());
    }

    #[test]
    fn keyspace_ranges_hold_their_keys() {
        let (s, e) = keyspace_range(5);
        let k = encode(5, &[0xff; 100]);
        assert!(s <= k && k < e);
        assert!(keyspace_range(u32::MAX).1.is_empty());
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(id in any::<u32>(), key in proptest::collection::vec(any::<u8>(), 0..64)) {
            let enc = encode(id, &key);
            let (id2, key2) = decode(&enc).unwrap();
            prop_assert_eq!(id2, id);
            prop_assert_eq!(key2, key.as_slice());
        }
    }

    #[test]
    fn sequential_keys_spread_evenly_over_16_hash_ranges() {
        for start in [0u64, 1_000_000, 4_000_000_000] {
            let mut buckets = [0u32; 16];
            for i in start..start + 10_000 {
                buckets[(key_hash(format!("user{i}").as_bytes()) >> 12) as usize] += 1;
            }
            for b in buckets {
                assert!(
                    (500..=750).contains(&b),
                    "{b} of 10000 keys in one of 16 ranges (start {start})"
                );
            }
        }
    }
}
