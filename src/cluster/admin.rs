//! The cluster's part of the admin API: `/api/v1/cluster/*`, and — when `cluster` is
//! configured — backend writes (add, remove, drain, undrain, heartbeat) carried out
//! through Raft instead of locally. A follower passes writes on to the leader; without
//! a quorum they fail with 503 `no_quorum`. Also adds the Raft metrics to `/metrics`
//! and takes the replica out of `/readyz` when its Raft member failed. The writes
//! themselves are in `writes`.

// Handlers return the error answer itself (`Result<_, Response>`); it is built once
// per admin call, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::{to_bytes, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::error::ClusterError;
use super::node::ClusterSlot;
use super::ops::Cluster;
use super::types::{Node, NodeId};
use super::writes;
use crate::pool::Pool;

const MAX_BODY: usize = 64 * 1024;

#[derive(Clone)]
pub struct ClusterAdmin {
    pub slot: Arc<ClusterSlot>,
    pub pool: Arc<Pool>,
}

pub(super) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": message.into(), "code": code })),
    )
        .into_response()
}

pub(super) fn cluster_error(e: ClusterError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut r = error(status, e.code(), e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    r
}

impl ClusterAdmin {
    pub(super) fn member(&self) -> Result<Arc<Cluster>, Response> {
        self.slot.get().ok_or_else(|| {
            let why = self
                .slot
                .failure()
                .unwrap_or_else(|| "the Raft member is starting".into());
            cluster_error(ClusterError::Unavailable(why))
        })
    }

    /// Mutating calls need the admin token when one is configured.
    pub(super) fn authorized(&self, headers: &axum::http::HeaderMap) -> Result<(), Response> {
        crate::admin::check_token(&self.pool, headers).map_err(IntoResponse::into_response)
    }
}

/// Adds the cluster endpoints to the admin router and routes backend writes through Raft.
pub fn wrap(app: Router, admin: ClusterAdmin) -> Router {
    let cluster = Router::new()
        .route("/api/v1/cluster/status", get(status))
        .route("/api/v1/cluster/peers", get(peers).post(add_peer))
        .route("/api/v1/cluster/peers/{id}", delete(remove_peer))
        .with_state(admin.clone());
    app.merge(cluster)
        .layer(axum::middleware::from_fn_with_state(admin, intercept))
}

async fn status(State(a): State<ClusterAdmin>) -> Response {
    match a.member() {
        Ok(c) => Json(c.status_with_progress().await).into_response(),
        Err(r) => r,
    }
}

async fn peers(State(a): State<ClusterAdmin>) -> Response {
    match a.member() {
        Ok(c) => Json(json!({ "members": c.status().members })).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddPeer {
    id: NodeId,
    addr: String,
    #[serde(default)]
    admin_addr: Option<String>,
}

async fn add_peer(
    State(a): State<ClusterAdmin>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = a.authorized(&headers) {
        return r;
    }
    let req: AddPeer = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("{e}")),
    };
    if req.id == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "node ids start at 1",
        );
    }
    let addr = match crate::config::check_peer_addr(&req.addr) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    let c = match a.member() {
        Ok(c) => c,
        Err(r) => return r,
    };
    let node = Node {
        raft_addr: addr,
        admin_addr: req.admin_addr,
    };
    match c.add_peer(req.id, node).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => cluster_error(e),
    }
}

async fn remove_peer(
    State(a): State<ClusterAdmin>,
    headers: axum::http::HeaderMap,
    Path(id): Path<NodeId>,
) -> Response {
    if let Err(r) = a.authorized(&headers) {
        return r;
    }
    let c = match a.member() {
        Ok(c) => c,
        Err(r) => return r,
    };
    match c.remove_peer(id).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => cluster_error(e),
    }
}

async fn intercept(State(a): State<ClusterAdmin>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path == "/readyz" {
        if let Some(why) = a.slot.failure() {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("cluster: {why}")).into_response();
        }
        return next.run(req).await;
    }
    let Some(write) = writes::classify(req.method(), &path) else {
        return next.run(req).await;
    };
    if let Err(r) = a.authorized(req.headers()) {
        return r;
    }
    let body = match to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    match writes::backend_write(&a, write, &body).await {
        Ok(r) => r,
        Err(r) => r,
    }
}
