//! Wire-level rules about regions that every process applies the same
//! way: ranges, epochs and split keys.
//!
//! **Ranges.** A region covers `[start_key, end_key)` of the encoded key
//! space; an empty `end_key` is +∞.
//!
//! **Epochs.** `RegionEpoch { conf_ver, version }`: `conf_ver` +1 on every
//! membership change, `version` +1 on every split (or merge). Both only
//! grow along a region's Raft log, so two states of one region are always
//! ordered component-wise; which epoch "wins" depends on the question, and
//! each question has its own rule here:
//!
//! | question | rule | incomparable epochs |
//! |---|---|---|
//! | is this report of the *same* region newer than what I hold? ([`is_newer_report`]) | neither part lower, one higher | not newer: keep what you hold |
//! | did a report of the same region go back? ([`went_back`]) | either part lower | yes: refuse it |
//! | does region `a` supersede a *different* region `b` it overlaps? ([`supersedes`]) | `a.version > b.version` | — (conf_ver says nothing across regions) |
//!
//! Incomparable epochs of one region (one part higher, the other lower)
//! cannot come from one Raft log; they mean a forged or corrupt report, and
//! the holder keeps what it has. Overlapping different regions with equal
//! versions cannot come from a correct history either (a split gives both
//! halves a version above the parent's): neither supersedes the other.
//!
//! **Split keys.** A split of a region at keys `k1 < k2 < ...` needs every
//! key strictly inside the range, ascending and distinct.

use crate::metapb::{Peer, Region, RegionEpoch};

/// Whether `key` is in `[region.start_key, region.end_key)`.
pub fn contains_key(region: &Region, key: &[u8]) -> bool {
    key >= region.start_key.as_slice()
        && (region.end_key.is_empty() || key < region.end_key.as_slice())
}

/// Whether the ranges of two regions intersect.
pub fn overlaps(a: &Region, b: &Region) -> bool {
    ranges_overlap(&a.start_key, &a.end_key, &b.start_key, &b.end_key)
}

/// Whether `[s1, e1)` and `[s2, e2)` intersect; an empty end is +∞.
pub fn ranges_overlap(s1: &[u8], e1: &[u8], s2: &[u8], e2: &[u8]) -> bool {
    (e2.is_empty() || s1 < e2) && (e1.is_empty() || s2 < e1)
}

/// The region's epoch (zero when unset).
pub fn epoch(region: &Region) -> RegionEpoch {
    region.region_epoch.unwrap_or_default()
}

/// The peer of `region` on `store_id`, if any.
pub fn find_peer_on_store(region: &Region, store_id: u64) -> Option<&Peer> {
    region.peers.iter().find(|p| p.store_id == store_id)
}

/// The peer of `region` with id `peer_id`, if any.
pub fn find_peer(region: &Region, peer_id: u64) -> Option<&Peer> {
    region.peers.iter().find(|p| p.id == peer_id)
}

/// Whether `report`, an epoch of the same region as `held`, is strictly
/// newer: no part went back and at least one moved.
pub fn is_newer_report(report: &RegionEpoch, held: &RegionEpoch) -> bool {
    report.version >= held.version
        && report.conf_ver >= held.conf_ver
        && (report.version > held.version || report.conf_ver > held.conf_ver)
}

/// Whether `report`, an epoch of the same region as `held`, is older in
/// some part.
pub fn went_back(report: &RegionEpoch, held: &RegionEpoch) -> bool {
    report.version < held.version || report.conf_ver < held.conf_ver
}

/// Whether region `a` replaces a different region `b` that it overlaps:
/// it comes from a later split of their common range.
pub fn supersedes(a: &Region, b: &Region) -> bool {
    epoch(a).version > epoch(b).version
}

/// Checks that `keys` can split `region`: at least one and at most
/// [`crate::limits::MAX_BATCH_KEYS`] (every region a split creates rides on
/// the parent's reports until the directory records them), ascending,
/// distinct, strictly inside its range.
pub fn check_split_keys(region: &Region, keys: &[Vec<u8>]) -> Result<(), String> {
    if keys.is_empty() {
        return Err("no split key".into());
    }
    crate::limits::validate_batch_len(keys.len())?;
    let mut prev: &[u8] = &region.start_key;
    for k in keys {
        if k.is_empty() || k.as_slice() <= prev {
            return Err(format!(
                "split key {} is not above {} (keys must ascend inside the region)",
                crate::escape(k),
                crate::escape(prev)
            ));
        }
        if !region.end_key.is_empty() && k.as_slice() >= region.end_key.as_slice() {
            return Err(format!(
                "split key {} is not below the region's end {}",
                crate::escape(k),
                crate::escape(&region.end_key)
            ));
        }
        prev = k;
    }
    Ok(())
}

/// The split keys an operator asked for, sorted and without repeats, then
/// checked ([`check_split_keys`]). None at all is fine: the region's
/// leader then splits it at its middle key.
pub fn normalize_split_keys(region: &Region, keys: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    if !keys.is_empty() {
        check_split_keys(region, &keys)?;
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(conf_ver: u64, version: u64) -> RegionEpoch {
        RegionEpoch { conf_ver, version }
    }

    fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(e(1, version)),
            peers: vec![],
        }
    }

    #[test]
    fn a_report_is_newer_only_when_nothing_went_back() {
        assert!(is_newer_report(&e(1, 2), &e(1, 1)));
        assert!(is_newer_report(&e(2, 1), &e(1, 1)));
        assert!(is_newer_report(&e(2, 2), &e(1, 1)));
        assert!(
            !is_newer_report(&e(1, 1), &e(1, 1)),
            "the same is not newer"
        );
        assert!(!is_newer_report(&e(1, 0), &e(1, 1)));
        // Incomparable: one part up, one down.
        assert!(!is_newer_report(&e(0, 3), &e(1, 2)));
        assert!(!is_newer_report(&e(2, 1), &e(1, 2)));
        assert!(went_back(&e(0, 3), &e(1, 2)));
        assert!(went_back(&e(2, 1), &e(1, 2)));
        assert!(!went_back(&e(1, 2), &e(1, 2)));
        assert!(!went_back(&e(2, 3), &e(1, 2)));
    }

    #[test]
    fn across_regions_only_a_later_split_supersedes() {
        let parent = region(1, b"", b"", 1);
        let left = region(1, b"", b"m", 2);
        let right = region(2, b"m", b"", 2);
        assert!(supersedes(&right, &parent));
        assert!(supersedes(&left, &parent));
        assert!(!supersedes(&parent, &right));
        // Equal versions: neither replaces the other.
        let twin = region(3, b"k", b"p", 2);
        assert!(!supersedes(&twin, &right) && !supersedes(&right, &twin));
    }

    #[test]
    fn ranges() {
        let r = region(1, b"b", b"d", 1);
        assert!(contains_key(&r, b"b") && contains_key(&r, b"c"));
        assert!(!contains_key(&r, b"d") && !contains_key(&r, b"a"));
        let open = region(2, b"c", b"", 1);
        assert!(contains_key(&open, b"zzz"));
        assert!(overlaps(&r, &open));
        assert!(!overlaps(&r, &region(3, b"d", b"", 1)));
        assert!(ranges_overlap(b"", b"", b"x", b"y"));
    }

    #[test]
    fn split_keys_must_ascend_strictly_inside_the_region() {
        let r = region(7, b"b", b"m", 1);
        assert!(check_split_keys(&r, &[b"c".to_vec(), b"k".to_vec()]).is_ok());
        for bad in [
            vec![],
            vec![b"b".to_vec()],
            vec![b"m".to_vec()],
            vec![b"z".to_vec()],
            vec![b"k".to_vec(), b"c".to_vec()],
            vec![b"c".to_vec(), b"c".to_vec()],
            vec![vec![]],
        ] {
            assert!(check_split_keys(&r, &bad).is_err(), "{bad:?}");
        }
        let wide = region(8, b"", b"", 1);
        let many = |n: usize| -> Vec<Vec<u8>> {
            (0..n).map(|i| format!("k{i:08}").into_bytes()).collect()
        };
        let limit = crate::limits::MAX_BATCH_KEYS;
        assert!(check_split_keys(&wide, &many(limit)).is_ok());
        let too_many = check_split_keys(&wide, &many(limit + 1)).unwrap_err();
        assert!(too_many.contains("limit"), "{too_many}");
        assert_eq!(
            normalize_split_keys(&r, &[b"k".to_vec(), b"c".to_vec(), b"k".to_vec()]).unwrap(),
            vec![b"c".to_vec(), b"k".to_vec()]
        );
        assert_eq!(
            normalize_split_keys(&r, &[]).unwrap(),
            Vec::<Vec<u8>>::new()
        );
        assert!(normalize_split_keys(&r, &[b"a".to_vec()]).is_err());
    }
}
