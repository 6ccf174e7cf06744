//! The admin API on `admin.listen`: liveness, readiness, the live view of the pool,
//! metrics, and the operator's actions (add/remove/drain backends, maintenance mode).
//! Runs as a Pingora background service next to the proxy.

pub mod auth;
mod local;
pub mod persist;
mod read;
mod views;
mod write;

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::bounded_server::Limits;
use crate::pool::{Pool, PoolWriter};
use crate::reload::ReloadStatus;
use crate::routing::{AdmissionQueue, DemandTable};

use local::LocalWriter;
pub use views::{BackendView, StatusView};

/// Admin request bodies are a backend's name and URL: small.
const MAX_BODY: usize = 1024 * 1024;
/// Operators, a Prometheus scraper and the CLI: a few connections. More at once is
/// somebody holding them open.
const MAX_CONNECTIONS: usize = 64;

pub struct AdminService {
    state: AdminState,
    /// Bound at start-up (see `startup::listeners`); taken when the service starts.
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
    /// Endpoints another module adds (the cluster's): open ones, and ones that need
    /// the admin token.
    routes: Option<(Router, Router)>,
}

/// What the admin handlers read and change.
#[derive(Clone)]
pub struct AdminState {
    pub pool: Arc<Pool>,
    pub queue: Arc<AdmissionQueue>,
    pub reloads: Arc<ReloadStatus>,
    /// Per-model demand, as the placement loop samples it.
    pub demand: Arc<DemandTable>,
    /// Carries out backend writes: here, or through Raft with a cluster.
    pub writer: Arc<dyn PoolWriter>,
}

impl AdminService {
    pub fn new(
        pool: Arc<Pool>,
        queue: Arc<AdmissionQueue>,
        listener: std::net::TcpListener,
    ) -> AdminService {
        AdminService {
            listener: std::sync::Mutex::new(Some(listener)),
            state: AdminState {
                queue,
                reloads: Arc::new(ReloadStatus::default()),
                demand: Arc::new(DemandTable::default()),
                writer: Arc::new(LocalWriter::new(pool.clone())),
                pool,
            },
            routes: None,
        }
    }

    /// Carries out backend writes with `writer` (the cluster's, through Raft) instead
    /// of on this replica alone.
    pub fn with_writer(mut self, writer: Arc<dyn PoolWriter>) -> AdminService {
        self.state.writer = writer;
        self
    }

    /// Serves `open` endpoints as they are and `protected` ones behind the admin token.
    pub fn with_routes(mut self, open: Router, protected: Router) -> AdminService {
        self.routes = Some((open, protected));
        self
    }

    /// Shows each model's demand and placement in `/api/v1/status`.
    pub fn with_demand(mut self, demand: Arc<DemandTable>) -> AdminService {
        self.state.demand = demand;
        self
    }

    /// Shows the reloader's results in `/api/v1/status`.
    pub fn with_reloads(mut self, reloads: Arc<ReloadStatus>) -> AdminService {
        self.state.reloads = reloads;
        self
    }

    fn router(state: AdminState, routes: Option<(Router, Router)>) -> Router {
        let writes = Router::new()
            .route("/api/v1/backends", post(write::add_backend))
            .route(
                "/api/v1/backends/{name}",
                axum::routing::delete(write::remove_backend),
            )
            .route("/api/v1/backends/{name}/drain", post(write::drain))
            .route("/api/v1/backends/{name}/undrain", post(write::undrain))
            .route("/api/v1/backends/{name}/heartbeat", post(write::heartbeat))
            .route("/api/v1/serving/enable", post(write::serving_enable))
            .route("/api/v1/serving/disable", post(write::serving_disable))
            .route("/api/v1/reload", post(write::reload))
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                write::require_token,
            ));
        let mut app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(read::readyz))
            .route("/metrics", get(read::prometheus))
            .route("/api/v1/metrics", get(read::metrics_json))
            .route("/api/v1/status", get(read::status))
            .route("/api/v1/backends", get(read::backends))
            .route("/api/v1/clients", get(read::clients))
            .merge(writes)
            .fallback(read::no_such_endpoint)
            .with_state(state.clone());
        if let Some((open, protected)) = routes {
            let token = axum::middleware::from_fn_with_state(state.clone(), write::require_token);
            app = app.merge(open).merge(protected.route_layer(token));
        }
        app.layer(axum::middleware::map_response_with_state(
            state,
            close_in_hand_over,
        ))
    }
}

/// As on the proxy port: during an upgrade's hand-over, no connection is kept alive
/// for a request this process would not be there to answer.
async fn close_in_hand_over(
    State(state): State<AdminState>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    if state.pool.is_handing_over() {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let addr = self.state.pool.load().config.admin.listen;
        let taken = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(listener) = taken else {
            tracing::error!(%addr, "admin API started twice; its socket is gone");
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "admin API cannot listen");
                return;
            }
        };
        tracing::info!(%addr, "admin API listening");
        let limits = Limits::new(
            &self.state.pool.load().config.timeouts,
            MAX_BODY,
            MAX_CONNECTIONS,
        );
        let app = Self::router(self.state.clone(), self.routes.clone());
        // Outermost: admin bodies are small, and reads have none.
        let app = crate::bounded_server::limit_bodies(app, limits);
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        crate::bounded_server::serve(listener, app, limits, "admin", stop).await;
    }
}
