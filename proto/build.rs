//! Generates the prost messages and tonic services from `proto/*.proto`.
//!
//! The descriptors are compiled by `protox` (pure Rust), so no system `protoc`
//! is needed and the `PROTOC` variable is never consulted.

const PROTOS: &[&str] = &[
    "proto/metapb.proto",
    "proto/errorpb.proto",
    "proto/kvpb.proto",
    "proto/raft_serverpb.proto",
    "proto/directorypb.proto",
    "proto/adminpb.proto",
    "proto/routerpb.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
