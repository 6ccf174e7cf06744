//! Telling systemd how corral is doing (`Type=notify`): READY=1 once every listener
//! accepts and the first probe round is done, then WATCHDOG=1 every half `WatchdogSec`.
//! A process started with `serve --upgrade` also names itself the main PID, so systemd
//! follows the new process when the old one exits. STOPPING=1 is sent by
//! `shutdown`, RELOADING=1 and READY=1 around a SIGHUP reload by `reload`. Without
//! `NOTIFY_SOCKET` (not under systemd) nothing is sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sd_notify::NotifyState;

use crate::readiness::Readiness;

pub struct SystemdNotify {
    pub readiness: Arc<Readiness>,
    /// Started as an upgrade's successor: announce this PID as the service's main one.
    pub successor: bool,
}

/// Whether a service manager listens for notifications.
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
}

/// READY=1 went out: a reload may report itself (before, its READY=1 would be early).
static READY_SENT: AtomicBool = AtomicBool::new(false);

/// Tells systemd a reload (`systemctl reload`, SIGHUP) has begun.
pub fn reloading() {
    if !READY_SENT.load(Ordering::Relaxed) {
        return;
    }
    // systemd 253+ wants the clock with RELOADING=1 to tell this reload from older ones.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Tells systemd the reload is over, whatever its result (the old config serves on).
pub fn reloaded() {
    if READY_SENT.load(Ordering::Relaxed) {
        notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    }
}

/// Sends `states`, logging (not failing) when the socket refuses them.
pub fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

#[async_trait]
impl BackgroundService for SystemdNotify {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if !under_systemd() {
            return;
        }
        tokio::select! {
            () = self.readiness.ready() => {}
            _ = shutdown.changed() => return,
        }
        let pid = std::process::id();
        let mut states = vec![NotifyState::Ready, NotifyState::Status("serving")];
        if self.successor {
            states.push(NotifyState::MainPid(pid));
        }
        notify(&states);
        READY_SENT.store(true, Ordering::Relaxed);
        tracing::info!(pid, "told systemd: ready");
        let Some(period) = sd_notify::watchdog_enabled() else {
            return;
        };
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tokio::select! {
                _ = tick.tick() => notify(&[NotifyState::Watchdog]),
                _ = shutdown.changed() => return,
            }
        }
    }
}
