//! Raft RPC client: each RPC is one HTTP POST to the peer's `cluster.listen`, carrying
//! the shared secret as `Authorization: Bearer`, bounded by the RPC's deadline.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::metrics;
use super::types::{Node, NodeId, TypeConfig};
use crate::secret::Secret;

/// Paths of the peer RPC endpoints.
pub(crate) const APPEND: &str = "/raft/append";
pub(crate) const VOTE: &str = "/raft/vote";
pub(crate) const SNAPSHOT: &str = "/raft/snapshot";
pub(crate) const FORWARD: &str = "/cluster/forward";
pub(crate) const STATUS: &str = "/cluster/status";

/// An HTTP client for peer calls, holding the shared secret.
#[derive(Clone)]
pub struct PeerHttp {
    client: reqwest::Client,
    secret: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Could not connect: the peer is down or unreachable.
    #[error("cannot reach {addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error("{addr}: {message}")]
    Failed { addr: String, message: String },
}

impl PeerHttp {
    pub fn new(secret: Secret) -> PeerHttp {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        PeerHttp { client, secret }
    }

    /// POSTs `body` as JSON to `http://addr{path}` and decodes the JSON answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let failed = |message: String| CallError::Failed {
            addr: addr.to_string(),
            message,
        };
        let resp = self
            .client
            .post(format!("http://{addr}{path}"))
            .bearer_auth(self.secret.expose())
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    CallError::Unreachable {
                        addr: addr.to_string(),
                        message: e.to_string(),
                    }
                } else {
                    failed(e.to_string())
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(failed(format!("HTTP {status}: {}", text.trim())));
        }
        resp.json::<Resp>()
            .await
            .map_err(|e| failed(format!("bad answer: {e}")))
    }
}

/// Creates one client per peer.
pub(crate) struct Network {
    pub http: PeerHttp,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        PeerClient {
            http: self.http.clone(),
            target,
            node: node.clone(),
        }
    }
}

pub(crate) struct PeerClient {
    http: PeerHttp,
    target: NodeId,
    node: Node,
}

impl PeerClient {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Result<Resp, RaftError<NodeId, E>>, CallError> = self
            .http
            .call(&self.node.raft_addr, path, req, option.hard_ttl())
            .await;
        match answer {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))),
            Err(e) => {
                metrics::rpc_error(path);
                match e {
                    CallError::Unreachable { .. } => {
                        Err(RPCError::Unreachable(Unreachable::new(&e)))
                    }
                    CallError::Failed { .. } => Err(RPCError::Network(NetworkError::new(&e))),
                }
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.rpc(APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.rpc(VOTE, &rpc, &option).await
    }
}
