//! SIGHUP in the commands that have nothing to reload (`demo`, `sim`, the client
//! commands). Its default action ends the process, so the usual `kill -HUP $(pidof
//! corral)` meant for `corral serve` would also end a demo or a `backends --watch`
//! dashboard; these processes log it and carry on instead.

use tokio::signal::unix::{signal, SignalKind};

/// Replaces SIGHUP's default action for the whole process with a log line naming
/// `what`. Must be called inside a tokio runtime; the handler lives as long as it does.
pub fn ignore(what: &'static str) {
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP ignored: {what}");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP; it would end this process"),
    }
}
