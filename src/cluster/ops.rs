//! The running cluster member and what the admin API asks of it: pool writes (on the
//! leader, or passed on to it), membership changes, and the status view.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{ChangeMembers, ServerState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use super::error::ClusterError;
use super::network::{CallError, PeerHttp, FORWARD, STATUS};
use super::pool_state::PoolState;
use super::types::{Applied, Command, Node, NodeId, Raft, TypeConfig};

/// How long a write may wait for a quorum before it fails with `no quorum`.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// A new member must catch up within this time to be promoted to voter.
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(6);

/// A call that only the leader can carry out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Forward {
    Write {
        command: Command,
    },
    AddPeer {
        id: NodeId,
        node: Node,
    },
    RemovePeer {
        id: NodeId,
    },
    /// A member announcing its own addresses (its admin address, after a join).
    SetNode {
        id: NodeId,
        node: Node,
    },
}

/// This replica's Raft member.
pub struct Cluster {
    pub id: NodeId,
    pub raft: Raft,
    /// The Raft thread's runtime: every Raft call runs there.
    pub rt: tokio::runtime::Handle,
    pub http: PeerHttp,
    pub secret: crate::secret::Secret,
    pub pool: watch::Receiver<Arc<PoolState>>,
}

/// What a membership change did, as the cluster endpoints answer it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_voter: bool,
}

/// A leader's answer as it travels back to a follower that passed a call on.
fn answer(v: impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// One member as the status shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberView {
    pub id: NodeId,
    pub raft_addr: String,
    pub admin_addr: Option<String>,
    /// `voter` or `learner`.
    pub role: String,
    /// Last log index known replicated to it (leader's view; `None` elsewhere).
    pub matched: Option<u64>,
    /// Entries it is behind the leader's log.
    pub lag: Option<u64>,
}

/// `GET /api/v1/cluster/peers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Members {
    pub(super) members: Vec<MemberView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub state: String,
    pub leader: Option<NodeId>,
    pub leader_admin: Option<String>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot: Option<u64>,
    /// Log entries up to this index are deleted (covered by the snapshot).
    pub purged: Option<u64>,
    pub millis_since_quorum_ack: Option<u64>,
    pub members: Vec<MemberView>,
    /// On a follower: the leader whose view of replication `matched`/`lag` show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_from: Option<NodeId>,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Cluster {
    /// Runs `f` on the Raft runtime, whatever runtime the caller is on.
    async fn on_raft<T, F>(&self, f: F) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, ClusterError>> + Send + 'static,
    {
        self.rt
            .spawn(f)
            .await
            .map_err(|e| ClusterError::Unavailable(format!("raft task failed: {e}")))?
    }

    /// Commits `command` (through the leader) and returns what applying it did.
    pub async fn write(self: &Arc<Self>, command: Command) -> Result<Applied, ClusterError> {
        self.execute(Forward::Write { command }).await
    }

    pub async fn add_peer(
        self: &Arc<Self>,
        id: NodeId,
        node: Node,
    ) -> Result<MembershipChange, ClusterError> {
        self.execute(Forward::AddPeer { id, node }).await
    }

    pub async fn remove_peer(
        self: &Arc<Self>,
        id: NodeId,
    ) -> Result<MembershipChange, ClusterError> {
        self.execute(Forward::RemovePeer { id }).await
    }

    /// Carries out `call` here if this node leads, else passes it to the leader, and
    /// reads the answer as the `T` that call returns.
    pub async fn execute<T: DeserializeOwned>(
        self: &Arc<Self>,
        call: Forward,
    ) -> Result<T, ClusterError> {
        let r = match self.execute_local(call.clone()).await {
            Err(NotLeader(Some(leader))) => self.pass_on(&leader, call).await,
            other => other,
        };
        let answer = r.map_err(|e| match e {
            LocalError::Cluster(e) => e,
            LocalError::NotLeader(_) => ClusterError::NoQuorum(
                "no leader is elected (election in progress or no majority reachable)".into(),
            ),
        })?;
        serde_json::from_value(answer).map_err(|e| {
            ClusterError::Unavailable(format!("unexpected answer from the leader: {e}"))
        })
    }

    async fn pass_on(&self, leader: &Node, call: Forward) -> Result<Value, LocalError> {
        let answer: Result<Result<Value, LocalError>, CallError> = self
            .http
            .call(&leader.raft_addr, FORWARD, &call, forward_timeout(&call))
            .await;
        match answer {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(LocalError::NotLeader(_))) => Err(LocalError::Cluster(ClusterError::NoQuorum(
                "leadership is changing; retry".into(),
            ))),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(LocalError::Cluster(ClusterError::NoQuorum(format!(
                "the leader is unreachable: {e}"
            )))),
        }
    }

    /// Carries out `call` only if this node is the leader.
    pub async fn execute_local(self: &Arc<Self>, call: Forward) -> Result<Value, LocalError> {
        let raft = self.raft.clone();
        let me = self.clone();
        let out = self
            .on_raft(async move { Ok(me.run_call(raft, call).await) })
            .await;
        match out {
            Ok(r) => r,
            Err(e) => Err(LocalError::Cluster(e)),
        }
    }

    async fn run_call(&self, raft: Raft, call: Forward) -> Result<Value, LocalError> {
        match call {
            Forward::Write { command } => {
                let r = tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(command))
                    .await
                    .map_err(|_| no_quorum_timeout())?
                    .map_err(from_write_error)?;
                Ok(answer(r.data))
            }
            Forward::AddPeer { id, node } => {
                let members = raft.metrics().borrow().membership_config.clone();
                if members.membership().voter_ids().any(|v| v == id) {
                    return Ok(answer(MembershipChange {
                        id: Some(id),
                        already_voter: true,
                        ..Default::default()
                    }));
                }
                // Learner first: it catches up without counting toward the quorum.
                let caught_up = || {
                    LocalError::Cluster(ClusterError::Timeout(format!(
                        "node {id} was added as a learner but did not catch up within \
                         {JOIN_TIMEOUT:?} (is it running and reachable?); retry to promote it"
                    )))
                };
                membership(
                    || raft.add_learner(id, node.clone(), true),
                    JOIN_TIMEOUT,
                    caught_up,
                )
                .await?;
                let voters = BTreeSet::from([id]);
                let r = membership(
                    || raft.change_membership(ChangeMembers::AddVoterIds(voters.clone()), false),
                    WRITE_TIMEOUT,
                    no_quorum_timeout,
                )
                .await?;
                Ok(answer(MembershipChange {
                    id: Some(id),
                    log_index: Some(r.log_id.index),
                    ..Default::default()
                }))
            }
            Forward::RemovePeer { id } => {
                let members = raft.metrics().borrow().membership_config.clone();
                let m = members.membership();
                let change = if m.voter_ids().any(|v| v == id) {
                    if m.voter_ids().count() == 1 {
                        return Err(LocalError::Cluster(ClusterError::Conflict(
                            "cannot remove the last voter".into(),
                        )));
                    }
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else if m.get_node(&id).is_some() {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                } else {
                    return Err(LocalError::Cluster(ClusterError::NotFound(format!(
                        "node {id} is not a member"
                    ))));
                };
                let r = membership(
                    || raft.change_membership(change.clone(), false),
                    WRITE_TIMEOUT,
                    no_quorum_timeout,
                )
                .await?;
                Ok(answer(MembershipChange {
                    removed: Some(id),
                    log_index: Some(r.log_id.index),
                    ..Default::default()
                }))
            }
            Forward::SetNode { id, node } => {
                let members = raft.metrics().borrow().membership_config.clone();
                match members.membership().get_node(&id) {
                    None => {
                        return Err(LocalError::Cluster(ClusterError::NotFound(format!(
                            "node {id} is not a member"
                        ))))
                    }
                    Some(n) if *n == node => {
                        return Ok(answer(MembershipChange {
                            id: Some(id),
                            ..Default::default()
                        }))
                    }
                    Some(_) => {}
                }
                let nodes = BTreeMap::from([(id, node)]);
                let r = membership(
                    || raft.change_membership(ChangeMembers::SetNodes(nodes.clone()), false),
                    WRITE_TIMEOUT,
                    no_quorum_timeout,
                )
                .await?;
                Ok(answer(MembershipChange {
                    id: Some(id),
                    log_index: Some(r.log_id.index),
                    ..Default::default()
                }))
            }
        }
    }

    /// Leader, term, members and (on the leader) each member's replication progress.
    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last_log = m.last_log_index;
        let replication: BTreeMap<NodeId, Option<u64>> = m
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
            .unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched = if *id == m.id && m.state == ServerState::Leader {
                    last_log
                } else {
                    replication.get(id).copied().flatten()
                };
                MemberView {
                    id: *id,
                    raft_addr: node.raft_addr.clone(),
                    admin_addr: node.admin_addr.clone(),
                    role: if voters.contains(id) {
                        "voter"
                    } else {
                        "learner"
                    }
                    .into(),
                    matched,
                    lag: match (last_log, matched, m.state == ServerState::Leader) {
                        (Some(l), Some(x), true) => Some(l.saturating_sub(x)),
                        (Some(l), None, true) => Some(l),
                        _ => None,
                    },
                }
            })
            .collect();
        let leader_admin = m
            .current_leader
            .and_then(|l| membership.get_node(&l))
            .and_then(|n| n.admin_addr.clone());
        ClusterStatus {
            node_id: m.id,
            state: format!("{:?}", m.state).to_lowercase(),
            leader: m.current_leader,
            leader_admin,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            members,
            progress_from: None,
            healthy: m.running_state.is_ok(),
            error: m.running_state.err().map(|e| e.to_string()),
        }
    }

    /// `status`, and on a follower each member's progress as the leader sees it.
    pub async fn status_with_progress(&self) -> ClusterStatus {
        let mut view = self.status();
        let Some(leader) = view.leader.filter(|l| *l != view.node_id) else {
            return view;
        };
        let Some(addr) = view
            .members
            .iter()
            .find(|m| m.id == leader)
            .map(|m| m.raft_addr.clone())
        else {
            return view;
        };
        let answer: Result<ClusterStatus, CallError> = self
            .http
            .call(&addr, STATUS, &(), Duration::from_secs(1))
            .await;
        match answer {
            Ok(l) => {
                for m in &mut view.members {
                    if let Some(lm) = l.members.iter().find(|x| x.id == m.id) {
                        m.matched = lm.matched;
                        m.lag = lm.lag;
                    }
                }
                view.progress_from = Some(leader);
            }
            Err(e) => tracing::debug!(error = %e, "leader's replication view unavailable"),
        }
        view
    }

    /// The replicated pool as last applied here.
    pub fn pool(&self) -> Arc<PoolState> {
        self.pool.borrow().clone()
    }
}

/// An outcome of a leader-only call on one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalError {
    /// This node does not lead; the leader it knows, if any.
    NotLeader(Option<Node>),
    Cluster(ClusterError),
}

use LocalError::NotLeader;

type WriteResult =
    Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, Node>>>;

/// Runs a membership change within `budget`. While another change is still being
/// committed it retries for up to `WRITE_TIMEOUT`, then answers `change_in_progress`.
async fn membership<F, Fut>(
    mut change: F,
    budget: Duration,
    on_timeout: impl Fn() -> LocalError,
) -> Result<ClientWriteResponse<TypeConfig>, LocalError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = WriteResult>,
{
    let in_progress_until = tokio::time::Instant::now() + WRITE_TIMEOUT;
    loop {
        let r = tokio::time::timeout(budget, change())
            .await
            .map_err(|_| on_timeout())?;
        match r {
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            ))) if tokio::time::Instant::now() < in_progress_until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other.map_err(from_write_error),
        }
    }
}

/// How long a follower waits for the leader's answer: the leader's own deadline plus
/// a margin, so a leader that froze or was cut off fails the call in seconds.
fn forward_timeout(call: &Forward) -> Duration {
    let margin = Duration::from_secs(1);
    match call {
        Forward::Write { .. } => WRITE_TIMEOUT + margin,
        // A membership change may first wait out one in progress.
        Forward::RemovePeer { .. } | Forward::SetNode { .. } => WRITE_TIMEOUT * 2 + margin,
        Forward::AddPeer { .. } => JOIN_TIMEOUT + WRITE_TIMEOUT * 2 + margin,
    }
}

fn no_quorum_timeout() -> LocalError {
    LocalError::Cluster(ClusterError::NoQuorum(format!(
        "not committed within {WRITE_TIMEOUT:?}: a majority of the cluster is unreachable"
    )))
}

fn from_write_error(e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> LocalError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => NotLeader(f.leader_node),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            ChangeMembershipError::InProgress(p) => {
                LocalError::Cluster(ClusterError::ChangeInProgress(p.to_string()))
            }
            other => LocalError::Cluster(ClusterError::BadRequest(other.to_string())),
        },
        RaftError::Fatal(f) => LocalError::Cluster(ClusterError::Unavailable(f.to_string())),
    }
}
