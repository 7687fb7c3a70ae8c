//! A connection to the directory service that follows its leader.
//!
//! The directory is a Raft group of 3 or 5 members; only its leader
//! answers. A follower replies `NOT_LEADER` with the leader's address, which
//! [`DirectoryConn::call`] follows right away. When a member cannot be
//! reached it tries the next configured address, backing off ([`Backoff`]:
//! 50 ms up to 1 s) until the call's deadline. Following the directory's
//! leader is routing too: stores, routers, the SDK's tools, the CLI and
//! tests all talk to the directory through it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tessera_proto::directorypb::directory_client::DirectoryClient as Rpc;
use tessera_proto::directorypb::*;
use tessera_security::{Channel, Security};
use tonic::transport::Endpoint;

use crate::{Backoff, Error, Result};

/// Waits between rounds of unanswered calls.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));

/// Responses that carry a header.
pub trait Headed {
    fn header(&self) -> Option<&ResponseHeader>;
}

macro_rules! headed {
    ($($t:ty),*) => {$(
        impl Headed for $t {
            fn header(&self) -> Option<&ResponseHeader> {
                self.header.as_ref()
            }
        }
    )*};
}

headed!(
    IsBootstrappedResponse,
    BootstrapResponse,
    AllocIdsResponse,
    PutStoreResponse,
    GetStoreResponse,
    ListStoresResponse,
    StoreHeartbeatResponse,
    RegionHeartbeatResponse,
    GetRegionResponse,
    ScanRegionsResponse,
    CreateKeyspaceResponse,
    GetKeyspaceResponse,
    ListKeyspacesResponse,
    SplitRegionResponse,
    MoveRegionResponse,
    MergeRegionResponse,
    TransferLeaderResponse,
    RemoveStoreResponse,
    SetEvictLeadersResponse,
    ClusterStatusResponse,
    AddMemberResponse,
    RemoveMemberResponse,
    TransferDirectoryLeaderResponse,
    SetMemberRoleResponse,
    RotateJoinTokenResponse,
    CreateUserResponse,
    ListUsersResponse,
    RevokeUserResponse,
    UserTableResponse
);

/// Whether a gRPC status refuses the caller rather than reporting a failure
/// of the member: no or the wrong identity, join token or store secret
/// (`UNAUTHENTICATED`, `PERMISSION_DENIED`), or another cluster
/// (`FAILED_PRECONDITION`). Another member would answer the same.
pub fn is_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::FailedPrecondition
    )
}

/// The gRPC client type of the directory service.
pub type DirectoryRpc = Rpc<Channel>;

fn channel(addr: &str, security: &Security) -> Result<DirectoryRpc> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::Setup(format!("bad directory address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    Ok(Rpc::new(security.channel(endpoint)).max_decoding_message_size(64 * 1024 * 1024))
}

pub struct DirectoryConn {
    endpoints: Vec<String>,
    /// The member believed to lead, and a channel to it.
    leader: Mutex<Option<(String, DirectoryRpc)>>,
    /// A leader address learned outside `call` (a heartbeat stream).
    leader_hint: Arc<Mutex<Option<String>>>,
    next: Mutex<usize>,
    call_deadline: Duration,
    cluster_id: Mutex<u64>,
    security: Security,
}

impl DirectoryConn {
    /// A connection to the directory members at `endpoints` (`host:port`),
    /// secured by `security`. Nothing is dialed until the first call.
    pub fn new(
        endpoints: Vec<String>,
        call_deadline: Duration,
        security: Security,
    ) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::Setup("no directory address given".into()));
        }
        for e in &endpoints {
            channel(e, &security)?;
        }
        Ok(DirectoryConn {
            endpoints,
            security,
            leader: Mutex::new(None),
            leader_hint: Arc::new(Mutex::new(None)),
            next: Mutex::new(0),
            call_deadline,
            cluster_id: Mutex::new(0),
        })
    }

    /// The cluster id the directory reported, once known.
    pub fn cluster_id(&self) -> u64 {
        *self.cluster_id.lock()
    }

    /// Where a leader was learned from outside a call, to be used next.
    pub fn leader_hint(&self) -> Arc<Mutex<Option<String>>> {
        self.leader_hint.clone()
    }

    /// The member to try next: a hinted leader, the known leader, or the
    /// next configured address.
    pub fn pick(&self) -> Result<(String, DirectoryRpc)> {
        if let Some(addr) = self.leader_hint.lock().take() {
            let client = channel(&addr, &self.security)?;
            *self.leader.lock() = Some((addr.clone(), client.clone()));
            return Ok((addr, client));
        }
        if let Some(l) = self.leader.lock().clone() {
            return Ok(l);
        }
        let mut next = self.next.lock();
        let addr = self.endpoints[*next % self.endpoints.len()].clone();
        *next += 1;
        let client = channel(&addr, &self.security)?;
        *self.leader.lock() = Some((addr.clone(), client.clone()));
        Ok((addr, client))
    }

    /// Forgets the leader (it could not be reached).
    pub fn forget_leader(&self) {
        *self.leader.lock() = None;
    }

    /// Calls the leader, following NOT_LEADER answers and retrying
    /// unreachable members until the deadline. Other errors in the response
    /// header are returned as [`Error::Directory`]; a refusal of the caller
    /// (see [`is_refusal`]) at once as [`Error::Refused`].
    pub async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        T: Headed,
        F: FnMut(DirectoryRpc) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.call_deadline;
        let mut failures = 0;
        let mut last;
        loop {
            let (addr, client) = self.pick()?;
            match f(client).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    let header = resp.header().cloned().unwrap_or_default();
                    if header.cluster_id != 0 {
                        *self.cluster_id.lock() = header.cluster_id;
                    }
                    let Some(err) = header.error else {
                        return Ok(resp);
                    };
                    if err.kind == directory_error::Kind::NotLeader as i32 {
                        last = format!("{addr} is not the leader");
                        let leader = if err.leader_address.is_empty() || err.leader_address == addr
                        {
                            None
                        } else {
                            Some((
                                err.leader_address.clone(),
                                channel(&err.leader_address, &self.security)?,
                            ))
                        };
                        let known = leader.is_some();
                        *self.leader.lock() = leader;
                        if known {
                            continue;
                        }
                    } else {
                        return Err(Error::Directory {
                            kind: err.kind,
                            message: format!("{what}: {}", err.message),
                        });
                    }
                }
                Err(status) if is_refusal(status.code()) => {
                    return Err(Error::Refused {
                        code: status.code(),
                        message: format!("{what}: {}", status.message()),
                    });
                }
                Err(status) => {
                    last = format!("{addr}: {}", status.message());
                    self.forget_leader();
                }
            }
            failures += 1;
            let wait = BACKOFF.delay(failures);
            if Instant::now() + wait > deadline {
                return Err(Error::DirectoryUnreachable(format!(
                    "{what}: no directory leader answered within {:?} (last: {last})",
                    self.call_deadline
                )));
            }
            tokio::time::sleep(wait).await;
        }
    }
}
