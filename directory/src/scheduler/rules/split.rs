//! Rule 6, **split**: a region whose leader reports more than 1.5 × the
//! split size is split at its middle (the leader picks the key). The
//! stores' own split checker usually gets there first; this rule catches a
//! region whose leader's checker has not.

use tessera_proto::metapb::Region;

use crate::scheduler::operator::{OperatorKind, Step};
use crate::scheduler::round::Round;

pub(in crate::scheduler) fn plan_region(round: &mut Round, region: &Region) {
    let size = round
        .leader
        .regions
        .get(&region.id)
        .map(|s| s.approximate_size_bytes)
        .unwrap_or(0);
    if size * 2 > round.cfg.region_split_size_bytes * 3 {
        let from_version = region.region_epoch.unwrap_or_default().version;
        round.add_operator(
            region.id,
            OperatorKind::SizeSplit,
            vec![Step::Split {
                keys: vec![],
                from_version,
            }],
        );
    }
}
