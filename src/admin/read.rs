//! Read-only admin endpoints: probes for orchestrators, the pool, the status of this
//! replica, and metrics (Prometheus text and JSON).

use std::borrow::Cow;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use crate::api_error::ApiError;
use crate::clients::{ClientView, ClientsView};
use crate::metrics::MetricsView;

use super::views::{BackendView, ModelPlacement, ReloadView, StatusView};
use super::AdminState;

pub(super) async fn readyz(State(s): State<AdminState>) -> (StatusCode, Cow<'static, str>) {
    if let Some(why) = s.writer.unready() {
        return (StatusCode::SERVICE_UNAVAILABLE, why.into());
    }
    if !s.pool.is_serving() {
        return (StatusCode::SERVICE_UNAVAILABLE, "serving disabled".into());
    }
    // Ready when at least one backend could take a request.
    if s.pool.load().backends.iter().any(|b| b.is_available()) {
        (StatusCode::OK, "ready".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy backend".into())
    }
}

pub(super) async fn status(State(s): State<AdminState>) -> Json<StatusView> {
    let mut view = StatusView::of(&s.pool.load(), s.queue.depth());
    view.serving = s.pool.is_serving();
    view.reloads = ReloadView::of(&s.reloads);
    view.placement = ModelPlacement::all(&s.pool.load(), &s.demand);
    Json(view)
}

pub(super) async fn backends(State(s): State<AdminState>) -> Json<Vec<BackendView>> {
    Json(
        s.pool
            .load()
            .backends
            .iter()
            .map(|b| BackendView::of(b))
            .collect(),
    )
}

/// The client keys' usage and limit state; `enabled: false` when the proxy port is
/// open (no `clients:` section).
pub(super) async fn clients(State(s): State<AdminState>) -> Json<ClientsView> {
    let table = s.pool.load();
    let clients = table.clients.as_ref().map_or_else(Vec::new, |t| {
        t.clients()
            .map(|(key, state)| ClientView::of(key, state))
            .collect()
    });
    Json(ClientsView {
        enabled: table.clients.is_some(),
        clients,
    })
}

pub(super) async fn prometheus() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::global().render_text(),
    )
}

pub(super) async fn metrics_json() -> Json<MetricsView> {
    Json(crate::metrics::global().render_json())
}

/// Any path the admin API does not serve. The cluster endpoints exist only with a
/// `cluster:` section, so on a single replica they say that rather than "not found".
pub(super) async fn no_such_endpoint(uri: axum::http::Uri) -> ApiError {
    let path = uri.path();
    if path.starts_with("/api/v1/cluster") {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "no_cluster",
            "this corral runs as a single replica (its config has no `cluster:` section), \
             so there is no Raft group to show or change; conf/cluster.yaml shows how to \
             run replicas that share their pool",
        );
    }
    ApiError::not_found(format!(
        "no such admin endpoint: {path} (the README's \"Admin API\" lists them)"
    ))
}
