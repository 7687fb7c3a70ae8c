//! The access policy: which identity kinds may call which gRPC method.
//!
//! One table for every service of every process, by gRPC path
//! (`/package.Service/Method`). A method not listed is refused, so a new
//! RPC stays closed until it is given a rule here (a test checks that every
//! RPC in `proto/` has one).
//!
//! - Raft, snapshots, store administration, and what stores tell the
//!   directory (bootstrap, ids, store and region heartbeats, store
//!   registration): nodes only.
//! - The store's Kv API: nodes, routers and clients (the router forwards
//!   there; the SDK's direct mode will).
//! - The directory's reads (regions, stores, keyspaces, status): anyone
//!   with an identity.
//! - The directory's administration (split, move, transfer leader,
//!   keyspaces, stores, members) and the router's API: clients (roles
//!   narrow this further once users exist).
//! - gRPC health: anyone, even without a certificate (probes).

use crate::identity::Kind;

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No identity needed.
    Anyone,
    /// An identity of one of these kinds.
    Kinds(&'static [Kind]),
}

const NODE: Access = Access::Kinds(&[Kind::Node]);
const ANY_IDENTITY: Access = Access::Kinds(&[Kind::Node, Kind::Router, Kind::Client]);
const CLIENT: Access = Access::Kinds(&[Kind::Client]);

/// (service, method or `*`, access).
const TABLE: &[(&str, &str, Access)] = &[
    ("grpc.health.v1.Health", "*", Access::Anyone),
    ("raft_serverpb.Raft", "*", NODE),
    ("adminpb.StoreAdmin", "*", NODE),
    ("kvpb.Kv", "*", ANY_IDENTITY),
    ("routerpb.Router", "*", CLIENT),
    // What stores tell the directory.
    ("directorypb.Directory", "Bootstrap", NODE),
    ("directorypb.Directory", "AllocIds", NODE),
    ("directorypb.Directory", "PutStore", NODE),
    ("directorypb.Directory", "StoreHeartbeat", NODE),
    ("directorypb.Directory", "RegionHeartbeat", NODE),
    // Reads.
    ("directorypb.Directory", "IsBootstrapped", ANY_IDENTITY),
    ("directorypb.Directory", "GetStore", ANY_IDENTITY),
    ("directorypb.Directory", "ListStores", ANY_IDENTITY),
    ("directorypb.Directory", "GetRegion", ANY_IDENTITY),
    ("directorypb.Directory", "GetRegionById", ANY_IDENTITY),
    ("directorypb.Directory", "ScanRegions", ANY_IDENTITY),
    ("directorypb.Directory", "GetKeyspace", ANY_IDENTITY),
    ("directorypb.Directory", "ListKeyspaces", ANY_IDENTITY),
    ("directorypb.Directory", "ClusterStatus", ANY_IDENTITY),
    // Administration.
    ("directorypb.Directory", "CreateKeyspace", CLIENT),
    ("directorypb.Directory", "SplitRegion", CLIENT),
    ("directorypb.Directory", "MoveRegion", CLIENT),
    ("directorypb.Directory", "TransferLeader", CLIENT),
    ("directorypb.Directory", "RemoveStore", CLIENT),
    ("directorypb.Directory", "AddMember", CLIENT),
    ("directorypb.Directory", "RemoveMember", CLIENT),
    ("directorypb.Directory", "RotateJoinToken", CLIENT),
];

/// Who may call the method at `path` (`/package.Service/Method`); `None`
/// for a method the policy does not know.
pub fn access(path: &str) -> Option<Access> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    TABLE
        .iter()
        .find(|(s, m, _)| *s == service && (*m == "*" || *m == method))
        .map(|(_, _, a)| *a)
}

/// `node`, `node or router`, ... for messages.
pub fn kinds_text(kinds: &[Kind]) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    match names.as_slice() {
        [] => "no".into(),
        [one] => (*one).into(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every RPC declared in proto/ has a rule.
    #[test]
    fn every_rpc_in_the_protos_has_a_rule() {
        let protos = [
            include_str!("../../proto/proto/adminpb.proto"),
            include_str!("../../proto/proto/directorypb.proto"),
            include_str!("../../proto/proto/kvpb.proto"),
            include_str!("../../proto/proto/raft_serverpb.proto"),
            include_str!("../../proto/proto/routerpb.proto"),
        ];
        let mut checked = 0;
        for text in protos {
            let package = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("package "))
                .expect("package")
                .trim_end_matches(';');
            let mut service = None;
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next();
                }
                if let Some(rest) = line.strip_prefix("rpc ") {
                    let method = rest.split('(').next().unwrap().trim();
                    let path = format!("/{package}.{}/{method}", service.expect("service"));
                    assert!(access(&path).is_some(), "{path} has no rule in the policy");
                    checked += 1;
                }
            }
        }
        assert!(checked > 40, "only {checked} RPCs found");
    }

    #[test]
    fn nodes_alone_reach_raft_and_unknown_methods_are_closed() {
        assert_eq!(access("/raft_serverpb.Raft/Raft"), Some(NODE));
        assert_eq!(access("/directorypb.Directory/PutStore"), Some(NODE));
        assert_eq!(access("/directorypb.Directory/Nope"), None);
        assert_eq!(access("/evil.Service/Get"), None);
        assert_eq!(access("garbage"), None);
        assert_eq!(access("/grpc.health.v1.Health/Check"), Some(Access::Anyone));
        assert_eq!(
            kinds_text(&[Kind::Node, Kind::Router, Kind::Client]),
            "node, router or client"
        );
    }
}
