//! Constructors and `Display` for the generated routing errors, so every crate
//! builds them the same way and prints them the same way.

use crate::errorpb::{self, region_error::Error as Kind, RegionError};
use crate::metapb;

impl RegionError {
    fn with(message: String, kind: Kind) -> Self {
        RegionError {
            message,
            error: Some(kind),
        }
    }

    /// The addressed peer is not the leader; `leader` is the one this store
    /// knows of, if any.
    pub fn not_leader(region_id: u64, leader: Option<metapb::Peer>) -> Self {
        let message = match &leader {
            Some(l) => format!(
                "peer is not the leader of region {region_id}; leader is peer {} on store {}",
                l.id, l.store_id
            ),
            None => format!("peer is not the leader of region {region_id}; leader unknown"),
        };
        Self::with(
            message,
            Kind::NotLeader(errorpb::NotLeader { region_id, leader }),
        )
    }

    /// The request's epoch is stale; `current_regions` are the regions that
    /// now cover the requested range on this store.
    pub fn epoch_not_match(message: String, current_regions: Vec<metapb::Region>) -> Self {
        Self::with(
            message,
            Kind::EpochNotMatch(errorpb::EpochNotMatch { current_regions }),
        )
    }

    pub fn key_not_in_region(key: &[u8], region: &metapb::Region) -> Self {
        Self::with(
            format!(
                "key {} is not in region {} [{}, {})",
                escape(key),
                region.id,
                escape(&region.start_key),
                escape(&region.end_key)
            ),
            Kind::KeyNotInRegion(errorpb::KeyNotInRegion {
                key: key.to_vec(),
                region_id: region.id,
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
            }),
        )
    }

    pub fn region_not_found(region_id: u64) -> Self {
        Self::with(
            format!("region {region_id} is not on this store"),
            Kind::RegionNotFound(errorpb::RegionNotFound { region_id }),
        )
    }

    pub fn server_is_busy(reason: impl Into<String>, backoff_ms: u64) -> Self {
        let reason = reason.into();
        Self::with(
            format!("server is busy: {reason}; retry in {backoff_ms} ms"),
            Kind::ServerIsBusy(errorpb::ServerIsBusy { reason, backoff_ms }),
        )
    }

    pub fn store_not_match(request_store_id: u64, actual_store_id: u64) -> Self {
        Self::with(
            format!("request is for store {request_store_id} but this is store {actual_store_id}"),
            Kind::StoreNotMatch(errorpb::StoreNotMatch {
                request_store_id,
                actual_store_id,
            }),
        )
    }

    pub fn stale_command(region_id: u64) -> Self {
        Self::with(
            format!("command of region {region_id} was replaced by a newer leader before commit; it was not applied"),
            Kind::StaleCommand(errorpb::StaleCommand {}),
        )
    }

    /// A write refused because `store_ids` (the leader's own store, or
    /// enough voters' stores that no quorum is left) are low on space.
    pub fn no_space(region_id: u64, store_ids: Vec<u64>) -> Self {
        let stores = store_ids
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Self::with(
            format!(
                "no space: region {region_id} cannot take writes, store(s) {stores} below their \
                 free-space threshold (disk.low_space_mib); nothing was applied, reads go on"
            ),
            Kind::NoSpace(errorpb::NoSpace {
                region_id,
                store_ids,
            }),
        )
    }

    pub fn is_not_leader(&self) -> bool {
        matches!(self.error, Some(Kind::NotLeader(_)))
    }

    pub fn is_epoch_not_match(&self) -> bool {
        matches!(self.error, Some(Kind::EpochNotMatch(_)))
    }
}

impl std::fmt::Display for RegionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RegionError {}

/// Renders a key for humans: printable ASCII as is, other bytes as `\xNN`.
pub fn escape(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_graphic() && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

impl metapb::RegionEpoch {
    pub fn new(conf_ver: u64, version: u64) -> Self {
        Self { conf_ver, version }
    }
}

impl std::fmt::Display for metapb::RegionEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conf_ver: {}, version: {}", self.conf_ver, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_shows_binary_bytes() {
        assert_eq!(escape(b"ab\x00\xff"), "ab\\x00\\xff");
    }

    #[test]
    fn not_leader_names_the_leader() {
        let leader = metapb::Peer {
            id: 7,
            store_id: 3,
            role: metapb::PeerRole::Voter as i32,
        };
        let err = RegionError::not_leader(5, Some(leader));
        assert!(err.is_not_leader());
        assert!(err.to_string().contains("peer 7 on store 3"));
    }
}
