//! Applying the directory's Raft log: each normal entry is one
//! `DirectoryCommand`, applied to the shared [`DirectoryState`] and written
//! to the engine in the same apply batch as the region's apply state.

use std::sync::Arc;

use parking_lot::RwLock;
use prost::Message as _;
use tessera_multiraft::engine::{Cf, Engine};
use tessera_multiraft::{ApplyContext, StateMachine};
use tessera_proto::directorypb::{directory_command::Cmd, DirectoryCommand, DirectoryCompactLog};
use tessera_proto::metapb::Region;

use crate::state::{Applied, Change, DirectoryState};
use crate::{Error, Result};

/// What a proposer of a directory command learns.
pub type DirOutput = Result<Applied>;

pub struct DirectoryStateMachine {
    state: Arc<RwLock<DirectoryState>>,
}

impl DirectoryStateMachine {
    pub fn new(state: Arc<RwLock<DirectoryState>>) -> Self {
        DirectoryStateMachine { state }
    }
}

pub fn encode(cmd: Cmd) -> Vec<u8> {
    DirectoryCommand { cmd: Some(cmd) }.encode_to_vec()
}

impl StateMachine for DirectoryStateMachine {
    type Output = DirOutput;

    fn apply(&mut self, cx: &mut ApplyContext<'_>, data: &[u8]) -> DirOutput {
        let cmd = match DirectoryCommand::decode(data) {
            Ok(DirectoryCommand { cmd: Some(cmd) }) => cmd,
            _ => {
                tracing::error!(index = cx.index(), "undecodable directory command skipped");
                return Err(Error::InvalidArgument("undecodable command".into()));
            }
        };
        if let Cmd::CompactLog(c) = &cmd {
            if c.index < cx.index() {
                cx.compact_log(c.index, c.term);
            }
            return Ok(Applied::Done);
        }
        let mut changes = vec![];
        let result = self.state.write().apply(cmd, &mut changes);
        for change in changes {
            match change {
                Change::Put(k, v) => cx.batch().put(Cf::Default, k, v),
                Change::Delete(k) => cx.batch().delete(Cf::Default, k),
            }
        }
        result
    }

    fn compact_log_command(&self, _region: &Region, index: u64, term: u64) -> Vec<u8> {
        encode(Cmd::CompactLog(DirectoryCompactLog { index, term }))
    }

    /// A member that joined (or fell far behind) received the whole state
    /// as a snapshot: the in-memory copy is rebuilt from the engine.
    fn on_snapshot_applied(&mut self, engine: &dyn Engine, _region: &Region) {
        match DirectoryState::load(engine) {
            Ok(state) => *self.state.write() = state,
            Err(e) => panic!("cannot load the directory state from a snapshot: {e}"),
        }
    }
}
