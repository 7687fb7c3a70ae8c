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
//!   there; the SDK's direct mode calls it itself).
//! - The directory's reads (regions, stores, keyspaces, status): anyone
//!   with an identity (users: `readonly` and up).
//! - The directory's administration (split, move, transfer leader,
//!   keyspaces, stores, members, users, the join token): users with the
//!   role `admin`.
//! - The router's API: users; reads need `readonly`, writes `readwrite`.
//! - The user table with token hashes (`UserTable`): nodes and routers,
//!   which enforce roles themselves.
//! - gRPC health: anyone, even without a certificate (probes).
//!
//! - Streams of requests (the store's `BatchCommands`): every carried
//!   request is checked as the RPC it stands for ([`STREAMS`]).
//!
//! A client identity's role comes from the user table
//! ([`crate::users`]); node and router identities have no role.

use crate::identity::Kind;
use crate::users::Role;

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No identity needed.
    Anyone,
    /// An identity of one of these kinds; a client (a user) needs at
    /// least `role`.
    Kinds(&'static [Kind], Role),
}

const NODE: Access = Access::Kinds(&[Kind::Node], Role::Admin);
const NODE_OR_ROUTER: Access = Access::Kinds(&[Kind::Node, Kind::Router], Role::Admin);
const ANY_READER: Access = Access::Kinds(&[Kind::Node, Kind::Router, Kind::Client], Role::Readonly);
const ANY_WRITER: Access =
    Access::Kinds(&[Kind::Node, Kind::Router, Kind::Client], Role::Readwrite);
const READER: Access = Access::Kinds(&[Kind::Client], Role::Readonly);
const WRITER: Access = Access::Kinds(&[Kind::Client], Role::Readwrite);
const ADMIN: Access = Access::Kinds(&[Kind::Client], Role::Admin);

/// (service, method or `*`, access).
const TABLE: &[(&str, &str, Access)] = &[
    ("grpc.health.v1.Health", "*", Access::Anyone),
    ("raft_serverpb.Raft", "*", NODE),
    ("adminpb.StoreAdmin", "*", NODE),
    // Keys, at a store (routers forward there; the SDK's direct mode calls
    // it) and at the router.
    ("kvpb.Kv", "Get", ANY_READER),
    ("kvpb.Kv", "BatchGet", ANY_READER),
    ("kvpb.Kv", "Scan", ANY_READER),
    ("kvpb.Kv", "Put", ANY_WRITER),
    ("kvpb.Kv", "Delete", ANY_WRITER),
    ("kvpb.Kv", "BatchPut", ANY_WRITER),
    ("kvpb.Kv", "CompareAndSwap", ANY_WRITER),
    ("kvpb.Kv", "DeleteRange", ANY_WRITER),
    // A stream of the requests above: opened at the weakest rule it may
    // carry; each request in it is then checked as its own RPC
    // (`STREAMS`).
    ("kvpb.Kv", "BatchCommands", ANY_READER),
    ("routerpb.Router", "Get", READER),
    ("routerpb.Router", "BatchGet", READER),
    ("routerpb.Router", "Scan", READER),
    ("routerpb.Router", "Put", WRITER),
    ("routerpb.Router", "Delete", WRITER),
    ("routerpb.Router", "BatchPut", WRITER),
    ("routerpb.Router", "CompareAndSwap", WRITER),
    ("routerpb.Router", "DeleteRange", WRITER),
    // What stores tell the directory.
    ("directorypb.Directory", "Bootstrap", NODE),
    ("directorypb.Directory", "AllocIds", NODE),
    ("directorypb.Directory", "PutStore", NODE),
    ("directorypb.Directory", "StoreHeartbeat", NODE),
    ("directorypb.Directory", "RegionHeartbeat", NODE),
    ("directorypb.Directory", "UserTable", NODE_OR_ROUTER),
    // Reads.
    ("directorypb.Directory", "IsBootstrapped", ANY_READER),
    ("directorypb.Directory", "GetStore", ANY_READER),
    ("directorypb.Directory", "ListStores", ANY_READER),
    ("directorypb.Directory", "GetRegion", ANY_READER),
    ("directorypb.Directory", "GetRegionById", ANY_READER),
    ("directorypb.Directory", "ScanRegions", ANY_READER),
    ("directorypb.Directory", "GetKeyspace", ANY_READER),
    ("directorypb.Directory", "ListKeyspaces", ANY_READER),
    ("directorypb.Directory", "ClusterStatus", ANY_READER),
    // Administration.
    ("directorypb.Directory", "CreateKeyspace", ADMIN),
    ("directorypb.Directory", "SplitRegion", ADMIN),
    ("directorypb.Directory", "MoveRegion", ADMIN),
    ("directorypb.Directory", "MergeRegion", ADMIN),
    ("directorypb.Directory", "TransferLeader", ADMIN),
    ("directorypb.Directory", "RemoveStore", ADMIN),
    ("directorypb.Directory", "SetEvictLeaders", ADMIN),
    ("directorypb.Directory", "AddMember", ADMIN),
    ("directorypb.Directory", "RemoveMember", ADMIN),
    ("directorypb.Directory", "TransferDirectoryLeader", ADMIN),
    ("directorypb.Directory", "SetMemberRole", ADMIN),
    ("directorypb.Directory", "RotateJoinToken", ADMIN),
    ("directorypb.Directory", "CreateUser", ADMIN),
    ("directorypb.Directory", "ListUsers", ADMIN),
    ("directorypb.Directory", "RevokeUser", ADMIN),
];

/// Streams that carry many requests, each standing for one of the RPCs
/// above. The guard lets such a stream open under its own rule (the
/// weakest of what it may carry) and hands the service an
/// [`Authority`](crate::tls::Authority), which checks every carried
/// request against its own RPC's rule with the user table as it is then:
/// a `readonly` user's stream reads but cannot write, and a user revoked
/// while a stream is open is refused from its next request on.
pub const STREAMS: &[&str] = &["/kvpb.Kv/BatchCommands"];

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
        assert_eq!(access("/kvpb.Kv/Get"), Some(ANY_READER));
        assert_eq!(access("/kvpb.Kv/Put"), Some(ANY_WRITER));
        assert_eq!(access("/routerpb.Router/DeleteRange"), Some(WRITER));
        assert_eq!(access("/directorypb.Directory/SplitRegion"), Some(ADMIN));
        assert_eq!(
            access("/directorypb.Directory/UserTable"),
            Some(NODE_OR_ROUTER)
        );
        assert_eq!(
            kinds_text(&[Kind::Node, Kind::Router, Kind::Client]),
            "node, router or client"
        );
    }
}
