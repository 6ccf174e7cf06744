//! The admin API on `admin.listen`: liveness, readiness and the live view of the pool.
//! Runs as a Pingora background service next to the proxy.

mod views;

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::pool::Pool;

pub use views::{BackendView, StatusView};

pub struct AdminService {
    pool: Arc<Pool>,
}

impl AdminService {
    pub fn new(pool: Arc<Pool>) -> AdminService {
        AdminService { pool }
    }

    pub fn router(pool: Arc<Pool>) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/api/v1/status", get(status))
            .route("/api/v1/backends", get(backends))
            .with_state(pool)
    }
}

async fn readyz(State(pool): State<Arc<Pool>>) -> (StatusCode, &'static str) {
    // Ready when at least one backend could take a request.
    if pool.load().backends.iter().any(|b| b.is_available()) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy backend")
    }
}

async fn status(State(pool): State<Arc<Pool>>) -> Json<StatusView> {
    Json(StatusView::of(&pool.load()))
}

async fn backends(State(pool): State<Arc<Pool>>) -> Json<Vec<BackendView>> {
    Json(
        pool.load()
            .backends
            .iter()
            .map(|b| BackendView::of(b))
            .collect(),
    )
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let addr = self.pool.load().config.admin.listen;
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "admin API cannot listen");
                return;
            }
        };
        tracing::info!(%addr, "admin API listening");
        let app = Self::router(self.pool.clone());
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "admin API stopped");
        }
    }
}
