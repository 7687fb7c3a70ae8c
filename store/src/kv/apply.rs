//! The KV state machine: applies `RaftCommand`s to user data.
//!
//! Apply re-checks what the proposer checked, against the region as it is
//! when the entry applies (a split may have committed in between): the
//! command's epoch `version` must be the region's, and every key must be in
//! the region's range. If not, the whole command is a no-op and returns the
//! routing error. Otherwise every command of the entry is staged in the
//! round's apply batch, which the poller writes together with the region's
//! new apply state.
//!
//! Admin commands (split, log compaction, the merge's three) are handled by
//! their own modules.
//!
//! A compare-and-swap reads the current value, so it first flushes what the
//! round has staged so far (the poller's flush writes a consistent apply
//! state with it).

use prost::Message as _;
use tessera_multiraft::engine::Cf;
use tessera_multiraft::region;
use tessera_multiraft::{ApplyContext, StateMachine};
use tessera_proto::errorpb::RegionError;
use tessera_proto::metapb::Region;
use tessera_proto::raft_serverpb::{admin_command, command::Cmd, RaftCommand};

use super::command::{CmdResult, KvOutput};
use tessera_proto::keys;

use crate::{log_gc, merge, split};

#[derive(Default)]
pub struct KvStateMachine;

impl KvStateMachine {
    pub fn new() -> Self {
        KvStateMachine
    }
}

/// Clips `[start, end)` (empty end: unbounded) to the region; the result's
/// end is never empty.
pub fn clip_to_region(region: &Region, start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let start = start.max(region.start_key.as_slice()).to_vec();
    let end = match (end.is_empty(), region.end_key.is_empty()) {
        (true, true) => keys::key_space_end(),
        (true, false) => region.end_key.clone(),
        (false, true) => end.to_vec(),
        (false, false) => end.min(region.end_key.as_slice()).to_vec(),
    };
    (start, end)
}

fn check(region: &Region, cmd: &RaftCommand) -> Result<(), RegionError> {
    let current = region::epoch(region);
    let proposed = cmd
        .header
        .as_ref()
        .and_then(|h| h.region_epoch)
        .unwrap_or_default();
    if proposed.version != current.version {
        return Err(RegionError::epoch_not_match(
            format!(
                "region {} epoch is {current} at apply, command has {proposed}",
                region.id
            ),
            vec![region.clone()],
        ));
    }
    for c in &cmd.commands {
        let key = match &c.cmd {
            Some(Cmd::Put(p)) => &p.key,
            Some(Cmd::Delete(d)) => &d.key,
            Some(Cmd::CompareAndSwap(c)) => &c.key,
            Some(Cmd::DeleteRange(_)) | None => continue,
        };
        if !region::contains_key(region, key) {
            return Err(RegionError::key_not_in_region(key, region));
        }
    }
    Ok(())
}

impl StateMachine for KvStateMachine {
    type Output = KvOutput;

    fn compact_log_command(&self, region: &Region, index: u64, term: u64) -> Vec<u8> {
        log_gc::command(region, index, term)
    }

    fn apply(&mut self, cx: &mut ApplyContext<'_>, data: &[u8]) -> KvOutput {
        let mut cmd = match RaftCommand::decode(data) {
            Ok(cmd) => cmd,
            Err(e) => {
                // Every replica sees the same bytes, so skipping is consistent.
                tracing::error!(region_id = cx.region().id, index = cx.index(), error = %e, "undecodable command skipped");
                return Ok(vec![]);
            }
        };
        if let Some(admin) = cmd.admin.take().and_then(|a| a.cmd) {
            let proposed = cmd.header.and_then(|h| h.region_epoch).unwrap_or_default();
            return match admin {
                admin_command::Cmd::Split(s) => split::apply(cx, proposed, s),
                admin_command::Cmd::CompactLog(c) => Ok(log_gc::apply(cx, c)),
                admin_command::Cmd::PrepareMerge(c) => merge::apply_prepare(cx, proposed, c),
                admin_command::Cmd::CommitMerge(c) => merge::apply_commit(cx, c),
                admin_command::Cmd::RollbackMerge(c) => merge::apply_rollback(cx, c),
            };
        }
        check(cx.region(), &cmd)?;
        let mut results = Vec::with_capacity(cmd.commands.len());
        for c in cmd.commands {
            let result = match c.cmd {
                Some(Cmd::Put(p)) => {
                    cx.batch().put(Cf::Default, p.key, p.value);
                    CmdResult::Done
                }
                Some(Cmd::Delete(d)) => {
                    cx.batch().delete(Cf::Default, d.key);
                    CmdResult::Done
                }
                Some(Cmd::DeleteRange(r)) => {
                    let (start, end) = clip_to_region(cx.region(), &r.start_key, &r.end_key);
                    if start < end {
                        cx.batch().delete_range(Cf::Default, start, end);
                    }
                    CmdResult::Done
                }
                Some(Cmd::CompareAndSwap(c)) => {
                    if let Err(e) = cx.flush() {
                        panic!(
                            "region {}: flushing before compare-and-swap failed: {e}",
                            cx.region().id
                        );
                    }
                    let previous = match cx.engine().get(Cf::Default, &c.key) {
                        Ok(v) => v,
                        Err(e) => panic!(
                            "region {}: reading for compare-and-swap failed: {e}",
                            cx.region().id
                        ),
                    };
                    let succeeded = match &previous {
                        None => c.expect_absent,
                        Some(v) => !c.expect_absent && *v == c.expected_value,
                    };
                    if succeeded {
                        if c.delete {
                            cx.batch().delete(Cf::Default, c.key);
                        } else {
                            cx.batch().put(Cf::Default, c.key, c.new_value);
                        }
                    }
                    CmdResult::CompareAndSwap {
                        succeeded,
                        previous,
                    }
                }
                None => CmdResult::Done,
            };
            results.push(result);
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> Region {
        Region {
            id: 1,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn clipping_keeps_ranges_inside_the_region() {
        let r = region(b"b", b"m");
        assert_eq!(
            clip_to_region(&r, b"a", b""),
            (b"b".to_vec(), b"m".to_vec())
        );
        assert_eq!(
            clip_to_region(&r, b"c", b"d"),
            (b"c".to_vec(), b"d".to_vec())
        );
        assert_eq!(
            clip_to_region(&r, b"c", b"z"),
            (b"c".to_vec(), b"m".to_vec())
        );
        let open = region(b"b", b"");
        assert_eq!(
            clip_to_region(&open, b"", b""),
            (b"b".to_vec(), keys::key_space_end())
        );
    }
}
