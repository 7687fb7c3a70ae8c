//! Cluster identity: the id the directory chose when the cluster was
//! created, which every store records and every store-to-store and
//! store-to-directory message carries. [`check`] is the one comparison,
//! counted in [`MISMATCHES`] by where the stranger came from.

/// Metric: messages, streams and registrations of another cluster refused,
/// by source (raft, snapshot, heartbeat, register, store_start).
pub const MISMATCHES: &str = "tessera_cluster_id_mismatch_total";

/// The sources [`check`] counts (exported at 0 by [`crate::tls::describe`]).
pub const SOURCES: &[&str] = &["raft", "snapshot", "heartbeat", "register", "store_start"];

/// Something of another cluster, naming both ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cluster id mismatch: this is cluster {ours}, the {from} is from cluster {theirs}")]
pub struct Mismatch {
    pub ours: u64,
    pub theirs: u64,
    pub from: &'static str,
}

impl From<Mismatch> for tonic::Status {
    fn from(m: Mismatch) -> Self {
        tonic::Status::failed_precondition(m.to_string())
    }
}

/// Whether `theirs` is this cluster (`ours`); a mismatch is counted and
/// logged.
pub fn check(ours: u64, theirs: u64, source: &'static str) -> Result<(), Mismatch> {
    if ours == theirs {
        return Ok(());
    }
    metrics::counter!(MISMATCHES, "source" => source).increment(1);
    tracing::warn!(
        ours,
        theirs,
        source,
        "refused a {source} of another cluster"
    );
    Err(Mismatch {
        ours,
        theirs,
        from: source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mismatch_names_both_ids_and_becomes_failed_precondition() {
        assert!(check(7, 7, "raft").is_ok());
        let m = check(7, 9, "raft").unwrap_err();
        let text = m.to_string();
        assert!(
            text.contains("cluster 7") && text.contains("cluster 9"),
            "{text}"
        );
        let status = tonic::Status::from(m);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    }
}
