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
use crate::routing::AdmissionQueue;

pub use views::{BackendView, StatusView};

pub struct AdminService {
    pool: Arc<Pool>,
    queue: Arc<AdmissionQueue>,
}

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    pub pool: Arc<Pool>,
    pub queue: Arc<AdmissionQueue>,
}

impl AdminService {
    pub fn new(pool: Arc<Pool>, queue: Arc<AdmissionQueue>) -> AdminService {
        AdminService { pool, queue }
    }

    pub fn router(state: AdminState) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/api/v1/status", get(status))
            .route("/api/v1/backends", get(backends))
            .with_state(state)
    }
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, &'static str) {
    // Ready when at least one backend could take a request.
    if s.pool.load().backends.iter().any(|b| b.is_available()) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy backend")
    }
}

async fn status(State(s): State<AdminState>) -> Json<StatusView> {
    Json(StatusView::of(&s.pool.load(), s.queue.depth()))
}

async fn backends(State(s): State<AdminState>) -> Json<Vec<BackendView>> {
    Json(
        s.pool
            .load()
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
        let app = Self::router(AdminState {
            pool: self.pool.clone(),
            queue: self.queue.clone(),
        });
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
