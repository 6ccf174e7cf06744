//! The cluster's own admin endpoints, `/api/v1/cluster/*`: status, members, adding and
//! removing peers. Backend writes use the admin API's handlers with the Raft pool
//! writer (`writes`); this module hands both to the admin service.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ClusterError;
use super::node::ClusterSlot;
use super::ops::{Cluster, ClusterStatus, Members, MembershipChange};
use super::types::{Node, NodeId};
use super::writes::RaftWriter;
use crate::api_error::ApiError;
use crate::pool::{Pool, PoolWriter};

/// What the admin service needs from the cluster: its endpoints and its pool writer.
#[derive(Clone)]
pub struct ClusterAdmin {
    pub slot: Arc<ClusterSlot>,
    pub pool: Arc<Pool>,
}

impl ClusterAdmin {
    /// Backend writes through Raft.
    pub fn writer(&self) -> Arc<dyn PoolWriter> {
        Arc::new(RaftWriter {
            slot: self.slot.clone(),
            pool: self.pool.clone(),
        })
    }

    /// The endpoints anyone may read, and the ones that need the admin token.
    pub fn routes(&self) -> (Router, Router) {
        let open = Router::new()
            .route("/api/v1/cluster/status", get(status))
            .route("/api/v1/cluster/peers", get(peers))
            .with_state(self.slot.clone());
        let protected = Router::new()
            .route("/api/v1/cluster/peers", post(add_peer))
            .route("/api/v1/cluster/peers/{id}", delete(remove_peer))
            .with_state(self.slot.clone());
        (open, protected)
    }
}

/// The running member, or why there is none (503).
pub(super) fn member(slot: &ClusterSlot) -> Result<Arc<Cluster>, ApiError> {
    slot.get().ok_or_else(|| {
        let why = slot
            .failure()
            .unwrap_or_else(|| "the Raft member is starting".into());
        ClusterError::Unavailable(why).into()
    })
}

async fn status(State(slot): State<Arc<ClusterSlot>>) -> Result<Json<ClusterStatus>, ApiError> {
    Ok(Json(member(&slot)?.status_with_progress().await))
}

async fn peers(State(slot): State<Arc<ClusterSlot>>) -> Result<Json<Members>, ApiError> {
    let members = member(&slot)?.status().members;
    Ok(Json(Members { members }))
}

/// The body of `POST /api/v1/cluster/peers`, as `corral cluster add-peer` sends it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddPeer {
    pub(super) id: NodeId,
    pub(super) addr: String,
    #[serde(default)]
    pub(super) admin_addr: Option<String>,
}

async fn add_peer(
    State(slot): State<Arc<ClusterSlot>>,
    body: Bytes,
) -> Result<Json<MembershipChange>, ApiError> {
    let req: AddPeer =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if req.id == 0 {
        return Err(ApiError::bad_request("node ids start at 1"));
    }
    let addr = crate::config::check_peer_addr(&req.addr).map_err(ApiError::bad_request)?;
    let node = Node {
        raft_addr: addr,
        admin_addr: req.admin_addr,
    };
    Ok(Json(member(&slot)?.add_peer(req.id, node).await?))
}

async fn remove_peer(
    State(slot): State<Arc<ClusterSlot>>,
    Path(id): Path<NodeId>,
) -> Result<Json<MembershipChange>, ApiError> {
    Ok(Json(member(&slot)?.remove_peer(id).await?))
}
