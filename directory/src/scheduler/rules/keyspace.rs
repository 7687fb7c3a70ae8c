//! Rule 4, **keyspace**: a keyspace's boundaries — and a hash keyspace's
//! hash ranges, `initial_regions` equal slices of the 16-bit hash prefix —
//! become region boundaries. A region that straddles a wanted boundary is
//! split there (once its leader has reported, so the split can run).
//! Until every boundary of a hash keyspace is in place its regions are not
//! placed (rule 5).

use std::collections::BTreeMap;

use tessera_proto::directorypb::{Keyspace, KeyspaceKind};
use tessera_proto::keys::keyspace_range;

use crate::scheduler::operator::{OperatorKind, Step};
use crate::scheduler::round::Round;

/// The boundaries keyspace `ks` wants: its range, and for a hash keyspace
/// the start of each hash slice.
fn boundaries(ks: &Keyspace) -> Vec<Vec<u8>> {
    let (start, end) = keyspace_range(ks.id);
    let mut bounds = vec![start.clone()];
    if !end.is_empty() {
        bounds.push(end);
    }
    if is_sliced(ks) {
        let n = ks.initial_regions as u64;
        for i in 1..n {
            let mut k = start.clone();
            k.extend_from_slice(&((i * 65536 / n) as u16).to_be_bytes());
            bounds.push(k);
        }
    }
    bounds
}

/// A hash keyspace cut into more than one region.
pub(in crate::scheduler) fn is_sliced(ks: &Keyspace) -> bool {
    ks.kind == KeyspaceKind::Hash as i32 && ks.initial_regions > 1
}

/// Plans the splits every keyspace still needs; returns the sliced hash
/// keyspaces whose boundaries are all in place.
pub(in crate::scheduler) fn plan<'a>(round: &mut Round<'a>) -> Vec<&'a Keyspace> {
    let mut complete = vec![];
    for ks in round.state.keyspaces.values() {
        let mut wanted: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
        for b in boundaries(ks) {
            if let Some(r) = round.state.region_for_key(&b) {
                if r.start_key != b {
                    wanted.entry(r.id).or_default().push(b);
                }
            }
        }
        if wanted.is_empty() && is_sliced(ks) {
            complete.push(ks);
        }
        for (region_id, mut keys) in wanted {
            if round.leader_store(region_id).is_none() {
                continue;
            }
            keys.sort();
            let from_version = round.state.regions[&region_id]
                .region_epoch
                .unwrap_or_default()
                .version;
            round.add_operator(
                region_id,
                OperatorKind::Keyspace,
                vec![Step::Split { keys, from_version }],
            );
        }
    }
    complete
}
