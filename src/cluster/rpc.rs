//! The peer RPC server on `cluster.listen`: Raft's append/vote/snapshot RPCs and calls
//! forwarded from followers to the leader. Every request must carry the shared secret;
//! one that does not is refused with 401 and counted.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use super::metrics;
use super::network::{APPEND, FORWARD, SNAPSHOT, STATUS, VOTE};
use super::ops::{Cluster, Forward};
use super::types::{NodeId, TypeConfig};
use crate::bounded_server::Limits;

async fn authenticate(State(c): State<Arc<Cluster>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !c.secret.matches_bearer(given) {
        metrics::get().rpc_refused.inc();
        tracing::warn!(path = %req.uri().path(), "peer RPC refused: missing or wrong cluster secret");
        return (StatusCode::UNAUTHORIZED, "missing or wrong cluster secret").into_response();
    }
    next.run(req).await
}

/// The peer routes; bodies are read (within `limits`) only once the secret matched.
pub(crate) fn router(cluster: Arc<Cluster>, limits: Limits) -> Router {
    let routes = Router::new()
        .route(APPEND, post(append))
        .route(VOTE, post(vote))
        .route(SNAPSHOT, post(snapshot))
        .route(FORWARD, post(forward))
        .route(STATUS, post(status));
    crate::bounded_server::limit_bodies(routes, limits)
        .layer(axum::middleware::from_fn_with_state(
            cluster.clone(),
            authenticate,
        ))
        .with_state(cluster)
}

async fn append(
    State(c): State<Arc<Cluster>>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> impl IntoResponse {
    Json(c.raft.append_entries(req).await)
}

async fn vote(
    State(c): State<Arc<Cluster>>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> impl IntoResponse {
    Json(c.raft.vote(req).await)
}

async fn snapshot(
    State(c): State<Arc<Cluster>>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> impl IntoResponse {
    Json(c.raft.install_snapshot(req).await)
}

/// A write or membership change a follower passed on; runs only if this node leads
/// (no second hop: a stale follower view gets a clear error instead of a loop).
async fn forward(State(c): State<Arc<Cluster>>, Json(req): Json<Forward>) -> impl IntoResponse {
    Json(c.execute_local(req).await)
}

/// This member's status, for a follower showing the leader's replication progress.
async fn status(State(c): State<Arc<Cluster>>) -> impl IntoResponse {
    Json(c.status())
}

/// Raft batches and snapshots as JSON: axum's own default for `Json` bodies.
const MAX_BODY: usize = 2 * 1024 * 1024;
/// A handful of peers, each with a few pooled connections.
const MAX_CONNECTIONS: usize = 64;

/// Serves the peer RPC router on `listener` until `stop` resolves, with the proxy
/// port's header and body deadlines.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    cluster: Arc<Cluster>,
    timeouts: crate::config::TimeoutConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let limits = Limits::new(&timeouts, MAX_BODY, MAX_CONNECTIONS);
    let app = router(cluster, limits);
    crate::bounded_server::serve(listener, app, limits, "cluster", stop).await;
}
