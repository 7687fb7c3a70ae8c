//! Commands in a region's Raft log, and their results.
//!
//! A normal entry of a store region holds one encoded `RaftCommand`: a
//! header (region id, the proposer's epoch) and one or more data commands
//! that apply atomically. Their results come back to the proposer as a
//! [`KvOutput`].

use prost::Message as _;
use tessera_proto::errorpb::RegionError;
use tessera_proto::kvpb::Context;
use tessera_proto::metapb::{Region, RegionEpoch};
use tessera_proto::raft_serverpb::{
    admin_command, command, AdminCommand, Command, RaftCommand, RaftRequestHeader,
};

/// The result of one applied command.
#[derive(Clone, Debug, PartialEq)]
pub enum CmdResult {
    /// Put, delete and delete-range have nothing to report.
    Done,
    /// A compare-and-swap: whether it swapped, and the value it found.
    CompareAndSwap {
        succeeded: bool,
        previous: Option<Vec<u8>>,
    },
    /// A split: the region and the new regions, in key order.
    Split { regions: Vec<Region> },
    /// An admin command that was refused at apply, and why; nothing
    /// changed.
    Refused(String),
    /// A merge source froze: the source as it now is, and its merge state.
    MergePrepared {
        region: Region,
        state: tessera_proto::raft_serverpb::MergeState,
    },
    /// A merge target took its source's range (or had before).
    Merged { region: Region },
    /// A merge source whose merge was refused serves again.
    RolledBack { region: Region },
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
        admin: None,
    }
    .encode_to_vec()
}

/// An admin command for `region` at `epoch`.
pub fn encode_admin(region_id: u64, epoch: RegionEpoch, cmd: admin_command::Cmd) -> Vec<u8> {
    RaftCommand {
        header: Some(RaftRequestHeader {
            region_id,
            peer: None,
            region_epoch: Some(epoch),
        }),
        commands: vec![],
        admin: Some(AdminCommand { cmd: Some(cmd) }),
    }
    .encode_to_vec()
}

/// The regions a split output carries, or why it did not split.
pub fn split_regions(output: Vec<CmdResult>) -> Result<Vec<Region>, String> {
    match output.into_iter().next() {
        Some(CmdResult::Split { regions }) => Ok(regions),
        Some(CmdResult::Refused(reason)) => Err(reason),
        other => Err(format!("unexpected split result {other:?}")),
    }
}
