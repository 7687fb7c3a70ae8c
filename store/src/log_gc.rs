//! Raft log compaction, the store's half: the command the poller proposes
//! when a leader's log has grown (the policy — how far, and when — lives in
//! `tessera-multiraft`), and what applying it does on every replica.

use tessera_multiraft::ApplyContext;
use tessera_proto::metapb::Region;
use tessera_proto::raft_serverpb::{admin_command, CompactLogCommand};

use crate::kv::command::{self, CmdResult};

/// The entry that drops the log of `region` up to `index`.
pub fn command(region: &Region, index: u64, term: u64) -> Vec<u8> {
    command::encode_admin(
        region.id,
        tessera_multiraft::region::epoch(region),
        admin_command::Cmd::CompactLog(CompactLogCommand {
            compact_index: index,
            compact_term: term,
        }),
    )
}

/// Applies a compaction: every replica drops the same prefix of its log.
/// Membership and range changes do not matter, so no epoch is checked.
pub fn apply(cx: &mut ApplyContext<'_>, cmd: CompactLogCommand) -> Vec<CmdResult> {
    if cmd.compact_index < cx.index() {
        cx.compact_log(cmd.compact_index, cmd.compact_term);
    }
    vec![]
}
