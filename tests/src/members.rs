//! Directory members the way an operator changes them: a member replaced
//! (RemoveMember, a new process started with `join`, AddMember) or added,
//! as a voter or a non-voting learner.

use tessera_proto::directorypb::{AddMemberRequest, RemoveMemberRequest};

use crate::{free_port, E2eCluster};

impl E2eCluster {
    /// Replaces directory member `old` (killed for good) with a new member
    /// the way an operator would: RemoveMember, start the new process with
    /// `join`, AddMember. Returns the new member's id.
    pub async fn replace_directory(&mut self, old: u64) -> anyhow::Result<u64> {
        if let Some(mut d) = self.directories.remove(&old) {
            d.proc.kill();
        }
        let conn = self.directory_conn();
        conn.call("remove member", |mut c| async move {
            c.remove_member(RemoveMemberRequest { id: old }).await
        })
        .await?;
        self.join_directory(old, false).await
    }

    /// Starts one more directory member with `join` and adds it (with
    /// `learner`, as a non-voting member); returns its id.
    pub async fn add_directory(&mut self, learner: bool) -> anyhow::Result<u64> {
        self.join_directory(0, learner).await
    }

    /// [`E2eCluster::add_directory`] with an id above every member's and
    /// `floor` (a removed member's id is never reused).
    async fn join_directory(&mut self, floor: u64, learner: bool) -> anyhow::Result<u64> {
        let id = self
            .directories
            .keys()
            .copied()
            .max()
            .unwrap_or(0)
            .max(floor)
            + 1;
        // The members there are now: the new one does not answer yet.
        let conn = self.directory_conn();
        let port = free_port();
        let members: Vec<String> = self
            .directories
            .values()
            .map(|d| format!("{}={}", d.id, d.addr))
            .collect();
        let (ip, _) = self.host(&format!("directory-{id}"));
        self.spawn_directory(id, port, &members, true);
        let address = format!("{ip}:{port}");
        conn.call("add member", |mut c| {
            let address = address.clone();
            let join_token = self.join_token.clone();
            async move {
                c.add_member(AddMemberRequest {
                    id,
                    address,
                    join_token,
                    learner,
                })
                .await
            }
        })
        .await?;
        Ok(id)
    }
}
