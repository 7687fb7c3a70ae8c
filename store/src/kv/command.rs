//! Commands in a region's Raft log, and their results.
//!
//! A normal entry of a store region holds one encoded `RaftCommand`: a
//! header (region id, the proposer's epoch) and one or more data commands
//! that apply atomically. Their results come back to the proposer as a
//! [`KvOutput`].

use prost::Message as _;
use tessera_proto::errorpb::RegionError;
use tessera_proto::kvpb::Context;
use tessera_proto::raft_serverpb::{command, Command, RaftCommand, RaftRequestHeader};

/// The result of one applied command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdResult {
    /// Put, delete and delete-range have nothing to report.
    Done,
    /// A compare-and-swap: whether it swapped, and the value it found.
    CompareAndSwap {
        succeeded: bool,
        previous: Option<Vec<u8>>,
    },
}

/// What applying one `RaftCommand` returns: a result per command, or the
/// routing error that made the whole command a no-op.
pub type KvOutput = Result<Vec<CmdResult>, RegionError>;

pub fn encode(ctx: &Context, commands: Vec<command::Cmd>) -> Vec<u8> {
    RaftCommand {
        header: Some(RaftRequestHeader {
            region_id: ctx.region_id,
            peer: ctx.peer,
            region_epoch: ctx.region_epoch,
        }),
        commands: commands
            .into_iter()
            .map(|c| Command { cmd: Some(c) })
            .collect(),
    }
    .encode_to_vec()
}
