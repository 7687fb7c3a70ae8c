//! Where the directory keeps its records in its engine's `default` column
//! family. One byte says the record kind; ids are big-endian so records of
//! a kind sort by id.

pub const CLUSTER_META: &[u8] = b"m";
const STORE: u8 = b's';
const REGION: u8 = b'r';
const KEYSPACE: u8 = b'k';
const PLACEMENT: u8 = b'p';
const MEMBER: u8 = b'n';
const STORE_SECRET: u8 = b'S';
const USER: u8 = b'u';

fn with_id(kind: u8, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(kind);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn store(id: u64) -> Vec<u8> {
    with_id(STORE, id)
}

/// The hash of a store's secret (kept apart from the store record).
pub fn store_secret(id: u64) -> Vec<u8> {
    with_id(STORE_SECRET, id)
}

pub fn region(id: u64) -> Vec<u8> {
    with_id(REGION, id)
}

pub fn placement(region_id: u64) -> Vec<u8> {
    with_id(PLACEMENT, region_id)
}

pub fn member(id: u64) -> Vec<u8> {
    with_id(MEMBER, id)
}

/// A user, by name.
pub fn user(name: &str) -> Vec<u8> {
    let mut k = vec![USER];
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn keyspace(name: &str) -> Vec<u8> {
    let mut k = vec![KEYSPACE];
    k.extend_from_slice(name.as_bytes());
    k
}

/// The `[start, end)` bounds of every record of one kind.
pub fn kind_bounds(kind: u8) -> ([u8; 1], [u8; 1]) {
    ([kind], [kind + 1])
}

pub const STORES: u8 = STORE;
pub const REGIONS: u8 = REGION;
pub const KEYSPACES: u8 = KEYSPACE;
pub const PLACEMENTS: u8 = PLACEMENT;
pub const MEMBERS: u8 = MEMBER;
pub const STORE_SECRETS: u8 = STORE_SECRET;
pub const USERS: u8 = USER;
