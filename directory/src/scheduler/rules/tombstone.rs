//! Rule 1, **tombstone**: a decommissioned (`Offline`) store that holds no
//! replica any more becomes `Tombstone`, through Raft. Its replicas left by
//! repair (rule 2), which treats an `Offline` store as bad; once it is a
//! tombstone nothing is ever placed on it again.

use tessera_proto::directorypb::directory_command::Cmd;
use tessera_proto::directorypb::SetStoreState;
use tessera_proto::metapb::StoreState;

use crate::scheduler::round::Round;

pub(in crate::scheduler) fn plan(round: &mut Round) {
    let empty: Vec<u64> = round
        .store_states
        .iter()
        .filter(|(id, s)| **s == StoreState::Offline && round.replicas_on(**id) == 0)
        .map(|(id, _)| *id)
        .collect();
    for store_id in empty {
        round.out.commands.push(Cmd::SetStoreState(SetStoreState {
            store_id,
            state: StoreState::Tombstone as i32,
        }));
    }
}
