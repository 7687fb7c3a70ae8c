//! tessera's protocol: the protobuf messages and gRPC services every process
//! speaks, generated at build time by `protox` + `tonic-prost-build`.
//!
//! Beside the generated code it holds the wire-level rules every crate
//! shares, so that each is written once: the encoded key space ([`keys`]),
//! region ranges, epochs and split keys ([`region`]), the routing errors'
//! constructors and the responses that carry them ([`KvResponse`]).
//! Behaviour lives in the crates that use it.

#![allow(clippy::large_enum_variant, clippy::doc_overindented_list_items)]

pub mod metapb {
    //! Stores, regions, peers and epochs.
    tonic::include_proto!("metapb");
}

pub mod errorpb {
    //! Routing errors carried as data in responses.
    tonic::include_proto!("errorpb");
}

pub mod kvpb {
    //! The store's Kv service.
    tonic::include_proto!("kvpb");
}

pub mod raft_serverpb {
    //! Store-to-store Raft messages, local states and Raft commands.
    tonic::include_proto!("raft_serverpb");
}

pub mod adminpb {
    //! The store's admin service: region operations.
    tonic::include_proto!("adminpb");
}

pub mod directorypb {
    //! The directory service: cluster metadata, placement and scheduling.
    tonic::include_proto!("directorypb");
}

pub mod routerpb {
    //! The public Kv API served by `tessera-router`: user keys in keyspaces.
    tonic::include_proto!("routerpb");
}

mod commands;
mod convert;
pub mod keys;
pub mod limits;
pub mod region;
mod responses;
pub use convert::*;
pub use responses::KvResponse;
