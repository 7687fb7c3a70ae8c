//! The encoded key space (defined in `tessera_proto::keys`), with the
//! store's error type: bad keys and values are `InvalidArgument`.

pub use tessera_proto::keys::{
    decode, encode, is_hash_keyspace, key_hash, key_space_end, keyspace_range, DEFAULT_KEYSPACE_ID,
    HASH_KEYSPACE_BIT, MAX_KEY_BYTES, MAX_VALUE_BYTES,
};

use crate::Error;

pub fn validate_key(encoded: &[u8]) -> Result<(), Error> {
    tessera_proto::keys::validate_key(encoded).map_err(Error::InvalidArgument)
}

pub fn validate_value(value: &[u8]) -> Result<(), Error> {
    tessera_proto::keys::validate_value(value).map_err(Error::InvalidArgument)
}

pub fn validate_bound(encoded: &[u8]) -> Result<(), Error> {
    tessera_proto::keys::validate_bound(encoded).map_err(Error::InvalidArgument)
}
