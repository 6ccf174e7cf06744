//! SIGTERM without cutting answers short and without waiting for nothing.
//!
//! Pingora's own graceful terminate sleeps the whole grace period even when idle. Here
//! SIGTERM puts the replica in maintenance mode — new requests get 503 with
//! `Retry-After`, so a load balancer or client moves on — and corral exits as soon as
//! nothing is in flight or queued, or when `shutdown_grace` runs out.
//!
//! SIGQUIT hands the listening sockets to a waiting `corral serve --upgrade` (see
//! `upgrade`); SIGUSR2 first starts that successor itself, from the binary on disk. With
//! no successor waiting the signal is refused and corral serves on: Pingora alone would
//! shut down with nobody to take over. After the hand-over corral finishes what is in
//! flight and exits as soon as that is done, not after the whole grace period.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::pool::Pool;
use crate::routing::AdmissionQueue;

/// How often the drain checks for remaining work; also how long the last answer has
/// to leave the socket after its backend finished.
const POLL: Duration = Duration::from_millis(200);

/// How long SIGQUIT waits for a successor to listen on the upgrade socket (Pingora's
/// sender would give up after about 5 s).
const SUCCESSOR_WAIT: Duration = Duration::from_secs(30);

/// Where and how this process hands over in an upgrade.
pub struct UpgradeSetup {
    /// The unix socket a successor listens on (`upgrade::socket_path`).
    pub sock: PathBuf,
    /// Whether SIGUSR2 may start the successor (only `serve` knows its config file).
    pub relaunch: bool,
}

pub struct DrainOnTerm {
    pool: Arc<Pool>,
    queue: Arc<AdmissionQueue>,
    grace: Duration,
    upgrade: UpgradeSetup,
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

impl DrainOnTerm {
    /// `phases` is the server's execution-phase feed: after a hand-over, corral exits
    /// once Pingora stopped accepting and nothing is in flight.
    pub fn new(
        pool: Arc<Pool>,
        queue: Arc<AdmissionQueue>,
        grace: Duration,
        upgrade: UpgradeSetup,
        phases: broadcast::Receiver<ExecutionPhase>,
    ) -> DrainOnTerm {
        DrainOnTerm {
            pool,
            queue,
            grace,
            upgrade,
            phases: Mutex::new(Some(phases)),
        }
    }

    fn busy(&self) -> bool {
        busy(&self.pool, &self.queue)
    }

    /// Starts the successor when `spawn`, waits until one listens on the upgrade socket
    /// and arranges the exit after the drain; false (and corral serves on) when there is
    /// no successor.
    async fn prepare_hand_over(&self, spawn: bool) -> bool {
        let sock = self.upgrade.sock.display().to_string();
        let mut child = None;
        if spawn {
            if !self.upgrade.relaunch {
                tracing::warn!("SIGUSR2 ignored: only `corral serve` can start its successor");
                return false;
            }
            match crate::upgrade::spawn_successor() {
                Ok(c) => {
                    tracing::info!(pid = c.id(), "SIGUSR2: started the new corral");
                    child = Some(c);
                }
                Err(e) => {
                    tracing::error!(error = %e, "SIGUSR2: cannot start the new corral; still serving");
                    return false;
                }
            }
        }
        let deadline = Instant::now() + SUCCESSOR_WAIT;
        while !crate::upgrade::successor_waiting(&self.upgrade.sock) {
            if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
                tracing::error!(%status, "the new corral exited before taking over; still serving");
                return false;
            }
            if Instant::now() >= deadline {
                tracing::error!(
                    socket = %sock,
                    "no `corral serve --upgrade` is waiting on the upgrade socket; still serving"
                );
                if let Some(c) = child.as_mut() {
                    let _ = c.kill();
                }
                return false;
            }
            tokio::time::sleep(POLL / 4).await;
        }
        tracing::info!(socket = %sock, "handing the listening sockets over to the new corral");
        self.pool.begin_hand_over();
        self.exit_when_drained();
        true
    }

    /// Pingora sends the sockets, stops accepting 5 s later and then sleeps the whole
    /// grace period; this ends the process as soon as nothing is in flight instead.
    fn exit_when_drained(&self) {
        let taken = self.phases.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut phases) = taken else { return };
        let (pool, queue, grace) = (self.pool.clone(), self.queue.clone(), self.grace);
        let watcher = std::thread::Builder::new()
            .name("corral-upgrade-drain".into())
            .spawn(move || {
                loop {
                    match phases.blocking_recv() {
                        Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
                let deadline = std::time::Instant::now() + grace;
                let mut idle_polls = 0;
                while idle_polls < 2 && std::time::Instant::now() < deadline {
                    idle_polls = if busy(&pool, &queue) {
                        0
                    } else {
                        idle_polls + 1
                    };
                    std::thread::sleep(POLL);
                }
                tracing::info!("upgrade: the requests in flight have finished; exiting");
                std::process::exit(0)
            });
        if let Err(e) = watcher {
            tracing::warn!(error = %e, "cannot watch the drain; exiting after shutdown_grace");
        }
    }
}

fn busy(pool: &Pool, queue: &AdmissionQueue) -> bool {
    queue.depth() > 0 || pool.load().backends.iter().any(|b| b.state.in_flight() > 0)
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnTerm {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut usr2)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::error!("cannot install signal handlers; SIGTERM will stop corral at once");
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = int.recv() => {
                    crate::systemd::notify(&[NotifyState::Stopping]);
                    exit_now();
                }
                // Zero-downtime binary upgrade: Pingora hands the listeners over.
                _ = quit.recv() => if self.prepare_hand_over(false).await {
                    return ShutdownSignal::GracefulUpgrade;
                },
                _ = usr2.recv() => if self.prepare_hand_over(true).await {
                    return ShutdownSignal::GracefulUpgrade;
                },
                _ = term.recv() => break,
            }
        }
        crate::systemd::notify(&[NotifyState::Stopping]);
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
        exit_now()
    }
}

/// Ends the process once the drain is done (or on SIGINT), instead of handing back to
/// Pingora for its runtime teardown: with `work_stealing: false`, a listener's accept
/// loop on a single-threaded runtime that is shutting down retries its failing
/// `accept()` without yielding, so the teardown spun forever (seen in the systemd test,
/// about one run in twenty under load). Nothing is left to tear down: the listeners'
/// sockets close with the process, and nothing is in flight.
fn exit_now() -> ! {
    tracing::info!("exiting");
    crate::logging::flush();
    std::process::exit(0)
}
