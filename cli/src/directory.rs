//! The directory calls the admin commands make, typed and bounded.
//!
//! [`Directory`] wraps `tessera_routing::directory::DirectoryConn` (which
//! follows the directory leader and retries unreachable members until its
//! deadline) and turns each answer into what a command needs, and each
//! failure into one line for the user:
//!
//! - an error the directory answered with is shown as the directory phrased
//!   it (`region 999 not found`, `invalid argument: ...`);
//! - no answer at all names the configured addresses and the last failure;
//! - every call is additionally bounded by `--timeout` plus a little grace,
//!   so a member that accepts connections but never answers cannot hang the
//!   CLI.

use std::time::Duration;

use anyhow::{anyhow, Result};
use tessera_proto::directorypb::*;
use tessera_routing::directory::DirectoryConn;
use tessera_security::Security;

use crate::boundaries::Keyspaces;
use crate::conn::{bound, Addrs};

/// The directory, as the admin commands use it.
pub struct Directory {
    conn: DirectoryConn,
    addrs: Addrs,
    timeout: Duration,
}

/// One RPC through the leader-following connection: `what` names the call
/// in errors, `method` is the generated client method, `req` the request.
macro_rules! call {
    ($self:ident, $what:expr, $method:ident, $req:expr) => {{
        let what = $what;
        let req = $req;
        let fut = $self.conn.call(what, |mut client| {
            let req = req.clone();
            async move { client.$method(req).await }
        });
        $self.finish(what, fut).await
    }};
}

impl Directory {
    pub fn new(addrs: &Addrs, timeout: Duration, security: Security) -> Result<Self> {
        let conn =
            DirectoryConn::new(addrs.0.clone(), timeout, security).map_err(|e| anyhow!("{e}"))?;
        Ok(Directory {
            conn,
            addrs: addrs.clone(),
            timeout,
        })
    }

    /// Awaits a call and explains its failure in one line.
    async fn finish<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = tessera_routing::Result<T>>,
    ) -> Result<T> {
        let peer = format!("directory at {}", self.addrs);
        match bound(self.timeout, &peer, fut).await? {
            Ok(v) => Ok(v),
            Err(e) => Err(self.explain(what, e)),
        }
    }

    fn explain(&self, what: &str, e: tessera_routing::Error) -> anyhow::Error {
        use tessera_routing::Error as E;
        let strip = |m: String| match m.strip_prefix(&format!("{what}: ")) {
            Some(rest) => rest.to_string(),
            None => m,
        };
        match e {
            E::Directory { message, .. } => anyhow!(strip(message)),
            E::DirectoryUnreachable(message) => anyhow!(
                "no answer from the directory at {} ({what}): {}",
                self.addrs,
                strip(message)
            ),
            other => anyhow!("directory at {}: {other}", self.addrs),
        }
    }

    pub async fn list_stores(&self, include_tombstones: bool) -> Result<Vec<StoreInfo>> {
        let req = ListStoresRequest { include_tombstones };
        let resp = call!(self, "list stores", list_stores, req)?;
        let mut stores = resp.stores;
        stores.sort_by_key(|s| s.store.as_ref().map(|s| s.id).unwrap_or(0));
        Ok(stores)
    }

    pub async fn keyspaces(&self) -> Result<Keyspaces> {
        let resp = call!(
            self,
            "list keyspaces",
            list_keyspaces,
            ListKeyspacesRequest {}
        )?;
        Ok(Keyspaces::new(resp.keyspaces))
    }

    pub async fn create_keyspace(
        &self,
        name: &str,
        kind: KeyspaceKind,
        regions: u32,
    ) -> Result<Keyspace> {
        let req = CreateKeyspaceRequest {
            name: name.to_string(),
            kind: kind as i32,
            regions,
        };
        let resp = call!(self, "create keyspace", create_keyspace, req)?;
        resp.keyspace
            .ok_or_else(|| anyhow!("the directory created keyspace {name:?} but did not return it"))
    }

    /// Regions meeting `[start, end)` of the encoded key space in key order;
    /// `limit` 0 means all.
    pub async fn scan_regions(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    ) -> Result<Vec<RegionInfo>> {
        let req = ScanRegionsRequest {
            start_key: start,
            end_key: end,
            limit,
        };
        Ok(call!(self, "scan regions", scan_regions, req)?.regions)
    }

    pub async fn region_by_id(&self, region_id: u64) -> Result<RegionInfo> {
        self.find_region_by_id(region_id)
            .await?
            .ok_or_else(|| anyhow!("region {region_id} not found"))
    }

    /// The region with this id, or `None` when the directory does not know
    /// it (never was, or merged away).
    pub async fn find_region_by_id(&self, region_id: u64) -> Result<Option<RegionInfo>> {
        let what = "get region";
        let req = GetRegionByIdRequest { region_id };
        let fut = self.conn.call(what, |mut client| async move {
            client.get_region_by_id(req).await
        });
        let peer = format!("directory at {}", self.addrs);
        match bound(self.timeout, &peer, fut).await? {
            Ok(resp) => Ok(resp.region.filter(|r| r.region.is_some())),
            Err(tessera_routing::Error::Directory { kind, .. })
                if kind == directory_error::Kind::NotFound as i32 =>
            {
                Ok(None)
            }
            Err(e) => Err(self.explain(what, e)),
        }
    }

    /// The region holding encoded key `key`.
    pub async fn region_by_key(&self, key: Vec<u8>) -> Result<RegionInfo> {
        let req = GetRegionRequest { key };
        let resp = call!(self, "get region", get_region, req)?;
        resp.region
            .filter(|r| r.region.is_some())
            .ok_or_else(|| anyhow!("no region holds that key"))
    }

    /// Starts a split; returns the operator id.
    pub async fn split_region(&self, region_id: u64, split_keys: Vec<Vec<u8>>) -> Result<String> {
        let req = SplitRegionRequest {
            region_id,
            split_keys,
        };
        Ok(call!(self, "split region", split_region, req)?.operator)
    }

    /// Starts merging `source` into `target`; returns the operator id.
    pub async fn merge_region(&self, source: u64, target: u64) -> Result<String> {
        let req = MergeRegionRequest {
            source_region_id: source,
            target_region_id: target,
        };
        Ok(call!(self, "merge regions", merge_region, req)?.operator)
    }

    /// Starts moving a replica; returns the operator id.
    pub async fn move_region(&self, region_id: u64, from: u64, to: u64) -> Result<String> {
        let req = MoveRegionRequest {
            region_id,
            from_store_id: from,
            to_store_id: to,
        };
        Ok(call!(self, "move region", move_region, req)?.operator)
    }

    /// Starts decommissioning a store (it becomes `Offline`).
    pub async fn remove_store(&self, store_id: u64) -> Result<()> {
        let req = RemoveStoreRequest { store_id };
        call!(self, "remove store", remove_store, req)?;
        Ok(())
    }

    /// Evicts a store's leaders (`evict`) or lets it lead again.
    pub async fn set_evict_leaders(&self, store_id: u64, evict: bool) -> Result<()> {
        let req = SetEvictLeadersRequest { store_id, evict };
        call!(self, "set evict leaders", set_evict_leaders, req)?;
        Ok(())
    }

    /// Starts a leader transfer; returns the operator id.
    pub async fn transfer_leader(&self, region_id: u64, to: u64) -> Result<String> {
        let req = TransferLeaderRequest {
            region_id,
            to_store_id: to,
        };
        Ok(call!(self, "transfer leader", transfer_leader, req)?.operator)
    }

    pub async fn cluster_status(&self) -> Result<ClusterStatusResponse> {
        call!(
            self,
            "cluster status",
            cluster_status,
            ClusterStatusRequest {}
        )
    }

    pub async fn add_member(
        &self,
        id: u64,
        address: &str,
        join_token: &str,
        learner: bool,
    ) -> Result<()> {
        let req = AddMemberRequest {
            id,
            address: address.to_string(),
            join_token: join_token.to_string(),
            learner,
        };
        call!(self, "add member", add_member, req).map(|_| ())
    }

    /// Makes member `id` a learner, or with `learner` false a voter.
    pub async fn set_member_role(&self, id: u64, learner: bool) -> Result<()> {
        let req = SetMemberRoleRequest { id, learner };
        call!(self, "set member role", set_member_role, req).map(|_| ())
    }

    /// Replaces the cluster's join token; returns the new one.
    pub async fn rotate_join_token(&self) -> Result<String> {
        Ok(call!(
            self,
            "rotate the join token",
            rotate_join_token,
            RotateJoinTokenRequest {}
        )?
        .join_token)
    }

    pub async fn remove_member(&self, id: u64) -> Result<()> {
        let req = RemoveMemberRequest { id };
        call!(self, "remove member", remove_member, req).map(|_| ())
    }

    /// Hands the directory's leadership to member `id`.
    pub async fn transfer_directory_leader(&self, id: u64) -> Result<()> {
        let req = TransferDirectoryLeaderRequest { id };
        call!(
            self,
            "transfer directory leader",
            transfer_directory_leader,
            req
        )
        .map(|_| ())
    }

    /// Creates a user; returns it (without its token hash) and its token.
    pub async fn create_user(&self, name: &str, role: Role) -> Result<(User, String)> {
        let req = CreateUserRequest {
            name: name.to_string(),
            role: role as i32,
        };
        let r = call!(self, "create user", create_user, req)?;
        let user = r
            .user
            .ok_or_else(|| anyhow!("the directory created the user but did not return it"))?;
        Ok((user, r.token))
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        Ok(call!(self, "list users", list_users, ListUsersRequest {})?.users)
    }

    pub async fn revoke_user(&self, name: &str) -> Result<()> {
        let req = RevokeUserRequest {
            name: name.to_string(),
        };
        call!(self, "revoke user", revoke_user, req).map(|_| ())
    }
}
