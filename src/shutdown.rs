//! SIGTERM without cutting answers short and without waiting for nothing.
//!
//! Pingora's own graceful terminate sleeps the whole grace period even when idle. Here
//! SIGTERM puts the replica in maintenance mode — new requests get 503 with
//! `Retry-After`, so a load balancer or client moves on — and corral exits as soon as
//! nothing is in flight or queued, or when `shutdown_grace` runs out.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use crate::pool::Pool;
use crate::routing::AdmissionQueue;

/// How often the drain checks for remaining work; also how long the last answer has
/// to leave the socket after its backend finished.
const POLL: Duration = Duration::from_millis(200);

pub struct DrainOnTerm {
    pub pool: Arc<Pool>,
    pub queue: Arc<AdmissionQueue>,
    pub grace: Duration,
}

impl DrainOnTerm {
    fn busy(&self) -> bool {
        self.queue.depth() > 0
            || self
                .pool
                .load()
                .backends
                .iter()
                .any(|b| b.state.in_flight() > 0)
    }
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnTerm {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; SIGTERM will stop corral at once");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            // Zero-downtime binary upgrade: Pingora hands the listeners over.
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => {}
        }
        tracing::info!(
            grace = %humantime::format_duration(self.grace),
            "SIGTERM: refusing new requests, finishing those in flight"
        );
        self.pool.begin_shutdown();
        let deadline = Instant::now() + self.grace;
        // Idle for two polls in a row: the last answer's final bytes have gone out.
        let mut idle_polls = 0;
        while idle_polls < 2 && Instant::now() < deadline {
            idle_polls = if self.busy() { 0 } else { idle_polls + 1 };
            tokio::time::sleep(POLL).await;
        }
        if self.busy() {
            tracing::warn!("shutdown grace over: cutting requests still in flight");
        }
        ShutdownSignal::FastShutdown
    }
}
