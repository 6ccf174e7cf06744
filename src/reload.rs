//! Hot reload of the YAML config: a `notify` watch on the file's directory (editors and
//! config management replace files by rename, Kubernetes swaps a `..data` symlink, so
//! watching the file itself would lose it after the first swap) plus SIGHUP, debounced,
//! then parse → validate → `Pool::publish`. An invalid file changes nothing: the old
//! config keeps serving and the error is logged, counted and shown in the status.
//! The admin API's `POST /api/v1/reload` asks the same loop, so an operator never
//! needs the PID and every reload, whatever its trigger, runs one at a time.
//! The TLS certificate and key are part of the config: every reload reads them again,
//! and their own files are watched the same way (a renewal rewrites them, not the
//! config); a certificate that does not load keeps the running one, as bad YAML does.
//! Runs as a Pingora background service so it lives on Pingora's runtime.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::pool::Pool;

mod watch;
use watch::{settle, watch_files, CertWatch};

/// What the last reloads did, for `/api/v1/status`.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    pub successes: AtomicU64,
    pub failures: AtomicU64,
    /// The last failure's message (`file:line:col: ...`); cleared by a success.
    pub last_error: ArcSwapOption<String>,
    /// Settings changed in the file that only a restart applies; cleared when the file
    /// agrees with the running values again.
    pub restart_needed: ArcSwapOption<Vec<String>>,
    /// Where "reload now" requests go; unset when no config file is watched.
    requests: OnceLock<mpsc::Sender<oneshot::Sender<ReloadReply>>>,
}

/// What a reload asked for through [`ReloadStatus::reload_now`] did.
pub type ReloadReply = Result<Reloaded, ReloadError>;

/// A reload that applied.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub file: String,
    pub backends: usize,
    /// Changed settings that keep their running values until a restart.
    pub restart_needed: Vec<String>,
}

impl ReloadStatus {
    /// Re-reads the config file now, as SIGHUP does, and waits for the result. `None`
    /// when this corral watches no file (`corral demo`) or its reloader has stopped.
    pub async fn reload_now(&self) -> Option<ReloadReply> {
        let requests = self.requests.get()?;
        let (reply, answer) = oneshot::channel();
        requests.send(reply).await.ok()?;
        answer.await.ok()
    }
}

/// Why a reload did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The file as written is one `serve` would refuse at the next start.
    #[error("{path}: {source}")]
    Invalid {
        path: String,
        source: Box<crate::startup::StartupError>,
    },
    /// Fine as written, but not with the restart-only settings that keep their running
    /// values (an admin token removed while the running admin listener is public).
    #[error(
        "{path}: {source}; that is the running admin listener, the file's admin.listen \
         {requested} applies only after a restart"
    )]
    UnsafeWithRunning {
        path: String,
        requested: std::net::SocketAddr,
        source: Box<crate::startup::StartupError>,
    },
    /// The certificate or key files changed into something that does not load.
    #[error("{0}; the running certificate stays")]
    Certificate(#[from] crate::tls::TlsError),
}

impl ReloadError {
    /// The admin API's `code` for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            ReloadError::Config(crate::config::ConfigError::Read { .. }) => "config_unreadable",
            ReloadError::UnsafeWithRunning { .. } => "config_unsafe",
            _ => "config_invalid",
        }
    }
}

pub struct Reloader {
    pool: Arc<Pool>,
    path: PathBuf,
    status: Arc<ReloadStatus>,
    /// The text last read, so file events that change nothing (a touch, another file
    /// in the directory) do not count as reloads.
    last_text: std::sync::Mutex<Option<String>>,
    /// "Reload now" requests from the admin API; taken when the service starts.
    requests: std::sync::Mutex<Option<mpsc::Receiver<oneshot::Sender<ReloadReply>>>>,
    /// The TLS port's certificate, reloaded with the config and on its files' changes.
    server_cert: Option<Arc<crate::tls::ServerCert>>,
    /// The last failure was a certificate-only reload's: a good certificate clears it,
    /// but not a config error it did not fix.
    certificate_failed: std::sync::atomic::AtomicBool,
}

impl Reloader {
    pub fn new(pool: Arc<Pool>, path: PathBuf, status: Arc<ReloadStatus>) -> Reloader {
        // Absolute, so a later change of working directory cannot move the watch; not
        // canonical, so a symlinked config keeps being read through its link.
        let path = std::path::absolute(&path).unwrap_or(path);
        let (tx, rx) = mpsc::channel(8);
        let requests = match status.requests.set(tx) {
            Ok(()) => Some(rx),
            // Another reloader answers for this status already.
            Err(_) => None,
        };
        Reloader {
            pool,
            path,
            status,
            last_text: std::sync::Mutex::new(None),
            requests: std::sync::Mutex::new(requests),
            server_cert: None,
            certificate_failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Reloads `cert` too; `None` when the server has no TLS port.
    pub fn with_server_cert(mut self, cert: Option<Arc<crate::tls::ServerCert>>) -> Reloader {
        self.server_cert = cert;
        self
    }

    /// A reload on an operator's request: forced, like SIGHUP, and described.
    async fn reload_on_request(&self) -> ReloadReply {
        self.reload("admin API", true).await?;
        Ok(Reloaded {
            file: self.path.display().to_string(),
            backends: self.pool.yaml_config().backends.len(),
            restart_needed: self
                .status
                .restart_needed
                .load()
                .as_deref()
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// Reads, validates and publishes the file. `force` reloads even when the text is
    /// unchanged (SIGHUP: the operator asked). Returns whether anything was applied.
    pub async fn reload(&self, trigger: &str, force: bool) -> Result<bool, ReloadError> {
        let origin = self.path.display().to_string();
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(t) => t,
            Err(source) => {
                return self.fail(
                    trigger,
                    crate::config::ConfigError::Read {
                        path: origin,
                        source,
                    }
                    .into(),
                )
            }
        };
        {
            let mut last = self.last_text.lock().unwrap_or_else(|p| p.into_inner());
            if !force && last.as_deref() == Some(text.as_str()) {
                return Ok(false);
            }
            *last = Some(text.clone());
        }
        let new = match Config::parse(&text, &origin) {
            Ok(c) => c,
            Err(e) => return self.fail(trigger, e.into()),
        };
        if let Err(e) = crate::startup::validate(&new) {
            let (path, source) = (origin, Box::new(e));
            return self.fail(trigger, ReloadError::Invalid { path, source });
        }
        let requested = new.admin.listen;
        let running = self.pool.yaml_config();
        let (new, pending) = keep_restart_only(&running, new);
        // The token rule must hold for the listeners that keep serving, not only for
        // the file's: dropping the token while a public admin listener stays would open
        // the admin API to the network.
        if let Err(e) = crate::startup::validate(&new) {
            let (path, source) = (origin, Box::new(e));
            let e = ReloadError::UnsafeWithRunning {
                path,
                requested,
                source,
            };
            return self.fail(trigger, e);
        }
        if let Err(e) = self.swap_certificate(&new, trigger) {
            return self.fail(trigger, e.into());
        }
        if pending.is_empty() {
            self.status.restart_needed.store(None);
        } else {
            tracing::warn!(
                file = %origin,
                settings = %pending.join(", "),
                "config changes that need a restart were not applied; the running values stay"
            );
            self.status.restart_needed.store(Some(Arc::new(pending)));
        }
        let backends = new.backends.len();
        self.pool.publish(new);
        self.status.successes.fetch_add(1, Ordering::Relaxed);
        self.status.last_error.store(None);
        self.certificate_failed.store(false, Ordering::Relaxed);
        crate::metrics::global().config_reload(true);
        tracing::info!(file = %origin, trigger, backends, "config reloaded");
        Ok(true)
    }

    /// Serves the certificate `config` names to new connections if its files changed.
    /// Whether anything was swapped.
    fn swap_certificate(
        &self,
        config: &Config,
        trigger: &str,
    ) -> Result<bool, crate::tls::TlsError> {
        let (Some(cert), Some(tls)) = (&self.server_cert, &config.tls) else {
            return Ok(false);
        };
        match cert.reload(tls)? {
            Some(fingerprint) => {
                tracing::info!(
                    cert = %tls.cert.display(),
                    trigger,
                    certificate = %fingerprint,
                    "TLS certificate reloaded; new connections get it"
                );
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// After a change of the certificate or key file: reloads them alone (the config
    /// file did not change), counted like a config reload. Same bytes: nothing.
    async fn reload_certificate(&self, trigger: &str) -> Result<bool, ReloadError> {
        let running = self.pool.yaml_config();
        match self.swap_certificate(&running, trigger) {
            Ok(false) => Ok(false),
            Ok(true) => {
                self.status.successes.fetch_add(1, Ordering::Relaxed);
                if self.certificate_failed.swap(false, Ordering::Relaxed) {
                    self.status.last_error.store(None);
                }
                crate::metrics::global().config_reload(true);
                Ok(true)
            }
            Err(e) => self.fail(trigger, e.into()),
        }
    }

    fn fail(&self, trigger: &str, e: ReloadError) -> Result<bool, ReloadError> {
        let certificate = matches!(e, ReloadError::Certificate(_));
        self.certificate_failed
            .store(certificate, Ordering::Relaxed);
        let msg = e.to_string();
        tracing::error!(
            file = %self.path.display(),
            trigger,
            error = %msg,
            "config reload failed; keeping the running config"
        );
        self.status.failures.fetch_add(1, Ordering::Relaxed);
        self.status.last_error.store(Some(Arc::new(msg)));
        crate::metrics::global().config_reload(false);
        Err(e)
    }

    /// The certificate and key files the running config names, to watch.
    fn certificate_files(&self) -> Vec<PathBuf> {
        match (&self.server_cert, &self.pool.yaml_config().tls) {
            (Some(_), Some(tls)) => vec![tls.cert.clone(), tls.key.clone()],
            _ => Vec::new(),
        }
    }
}

/// Settings bound at start-up (sockets, threads, Pingora's server conf, the state
/// directory): when the file changes them, the new config keeps the running values and
/// the names of what changed are returned. Applying the rest is safe; applying these
/// would be a half-applied config.
pub fn keep_restart_only(running: &Config, mut new: Config) -> (Config, Vec<String>) {
    let mut pending = Vec::new();
    if new.listen != running.listen {
        pending.push("listen".to_string());
        new.listen = running.listen.clone();
    }
    if new.admin.listen != running.admin.listen {
        pending.push("admin.listen".to_string());
        new.admin.listen = running.admin.listen;
    }
    if new.threads != running.threads {
        pending.push("threads".to_string());
        new.threads = running.threads;
    }
    if new.work_stealing != running.work_stealing {
        pending.push("work_stealing".to_string());
        new.work_stealing = running.work_stealing;
    }
    if new.shutdown_grace != running.shutdown_grace {
        pending.push("shutdown_grace".to_string());
        new.shutdown_grace = running.shutdown_grace;
    }
    // Pingora caps retries per request at the start-up value.
    if new.routing.max_retries != running.routing.max_retries {
        pending.push("routing.max_retries".to_string());
        new.routing.max_retries = running.routing.max_retries;
    }
    if new.state_dir != running.state_dir {
        pending.push("state_dir".to_string());
        new.state_dir = running.state_dir.clone();
    }
    if new.upgrade_sock != running.upgrade_sock {
        pending.push("upgrade_sock".to_string());
        new.upgrade_sock = running.upgrade_sock.clone();
    }
    // The Raft member starts once with its node id, peers and data directory.
    if new.cluster != running.cluster {
        pending.push("cluster".to_string());
        new.cluster = running.cluster.clone();
    }
    // The TLS port is bound at start; its certificate and key reload, its address not.
    match (&running.tls, &mut new.tls) {
        (Some(r), Some(n)) if n.listen != r.listen => {
            pending.push("tls.listen".to_string());
            n.listen = r.listen;
        }
        (Some(_), Some(_)) | (None, None) => {}
        _ => {
            pending.push("tls".to_string());
            new.tls = running.tls.clone();
        }
    }
    // Pingora builds its upstream TLS connector once.
    if new.backend_tls != running.backend_tls {
        pending.push("backend_tls".to_string());
        new.backend_tls = running.backend_tls.clone();
    }
    (new, pending)
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The text the server started with: an event that changes nothing is no reload.
        if let Ok(t) = tokio::fs::read_to_string(&self.path).await {
            *self.last_text.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
        }
        let (tx, mut events) = mpsc::unbounded_channel();
        let _watcher = match watch_files(std::slice::from_ref(&self.path), tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "cannot watch the config file; reload with SIGHUP");
                None
            }
        };
        let (cert_tx, mut cert_events) = mpsc::unbounded_channel();
        let mut cert_watch = CertWatch::default();
        cert_watch.follow(self.certificate_files(), &cert_tx);
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP");
                None
            }
        };
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        tracing::info!(file = %self.path.display(), "watching the config file for changes (and SIGHUP)");
        loop {
            tokio::select! {
                Some(()) = events.recv() => {
                    settle(&mut events).await;
                    let _ = self.reload("file change", false).await;
                }
                Some(()) = cert_events.recv() => {
                    settle(&mut cert_events).await;
                    let _ = self.reload_certificate("certificate file change").await;
                }
                Some(()) = recv_hup(&mut hup) => {
                    // SIGHUP is `systemctl reload`: systemd waits for READY=1 again.
                    crate::systemd::reloading();
                    let _ = self.reload("SIGHUP", true).await;
                    crate::systemd::reloaded();
                }
                Some(reply) = recv_request(&mut requests) => {
                    // The asker may have gone; the reload stands either way.
                    let _ = reply.send(self.reload_on_request().await);
                }
                _ = shutdown.changed() => return,
            }
            // A reload may have named other certificate files.
            cert_watch.follow(self.certificate_files(), &cert_tx);
        }
    }
}

async fn recv_hup(hup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hup {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_request<T>(requests: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match requests {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn restart_only_settings_keep_running_values() {
        let running = Config::parse(
            "listen: 127.0.0.1:1\nthreads: 2\nbackends: [{name: a, url: 'h:1'}]",
            "t",
        )
        .unwrap();
        let new = Config::parse(
            "listen: 127.0.0.1:2\nthreads: 4\nhealth: {interval: 9s}\nbackends: [{name: b, url: 'h:2'}]",
            "t",
        )
        .unwrap();
        let (applied, pending) = keep_restart_only(&running, new);
        assert_eq!(pending, vec!["listen", "threads"]);
        assert_eq!(applied.listen, running.listen);
        assert_eq!(applied.threads, 2);
        assert_eq!(applied.health.interval, Duration::from_secs(9));
        assert_eq!(applied.backends[0].name, "b");
    }

    #[test]
    fn the_tls_port_needs_a_restart_but_its_files_do_not() {
        let tls = |listen: &str, cert: &str| {
            let yaml = format!("tls: {{listen: '{listen}', cert: {cert}, key: /k}}");
            Config::parse(&yaml, "t").unwrap()
        };
        let running = tls("127.0.0.1:1", "/a");
        let (applied, pending) = keep_restart_only(&running, tls("127.0.0.1:1", "/b"));
        assert!(pending.is_empty(), "{pending:?}");
        assert_eq!(applied.tls.unwrap().cert, PathBuf::from("/b"));
        let (applied, pending) = keep_restart_only(&running, tls("127.0.0.1:2", "/b"));
        assert_eq!(pending, vec!["tls.listen"]);
        let applied = applied.tls.unwrap();
        assert_eq!(applied.listen, "127.0.0.1:1".parse().unwrap());
        assert_eq!(applied.cert, PathBuf::from("/b"));
        // Removing it keeps the running port, certificate files included.
        let (applied, pending) = keep_restart_only(&running, Config::parse("{}", "t").unwrap());
        assert_eq!(pending, vec!["tls"]);
        assert_eq!(applied.tls, running.tls);
        let ca = Config::parse("backend_tls: {ca: /ca.pem}", "t").unwrap();
        let (applied, pending) = keep_restart_only(&running, ca);
        assert_eq!(pending, vec!["tls", "backend_tls"]);
        assert!(applied.backend_tls.is_none());
    }

    #[test]
    fn a_changed_cluster_secret_needs_a_restart() {
        // The secret never shows in `Debug`, so the change must be seen by value.
        let cluster = |secret: &str| {
            let yaml = format!(
                "cluster: {{node_id: 1, listen: '127.0.0.1:7001', data_dir: /tmp/x, \
                 peers: {{1: '127.0.0.1:7001'}}, secret: {secret}}}"
            );
            Config::parse(&yaml, "t").unwrap()
        };
        let running = cluster("first-secret");
        let (_, pending) = keep_restart_only(&running, cluster("first-secret"));
        assert!(pending.is_empty(), "{pending:?}");
        let (applied, pending) = keep_restart_only(&running, cluster("other-secret"));
        assert_eq!(pending, vec!["cluster"]);
        assert_eq!(applied.cluster, running.cluster);
    }

    #[tokio::test]
    async fn invalid_file_keeps_the_running_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "backends: [{name: a, url: 'h:1'}]\n").unwrap();
        let pool = Arc::new(Pool::new(Config::load(&path).unwrap()));
        let status = Arc::new(ReloadStatus::default());
        let r = Reloader::new(pool.clone(), path.clone(), status.clone());

        std::fs::write(&path, "backends:\n  - {name: a, url: 'h:1', weight: 0}\n").unwrap();
        let err = r.reload("test", false).await.unwrap_err().to_string();
        assert!(err.contains("c.yaml:2:"), "{err}");
        assert_eq!(status.failures.load(Ordering::Relaxed), 1);
        assert!(status.last_error.load().is_some());
        assert_eq!(pool.load().get("a").unwrap().config.weight, 1);

        std::fs::write(&path, "backends: [{name: a, url: 'h:1', weight: 5}]\n").unwrap();
        assert!(r.reload("test", false).await.unwrap());
        assert_eq!(pool.load().get("a").unwrap().config.weight, 5);
        assert!(status.last_error.load().is_none());
        // Same text again: nothing to do unless forced.
        assert!(!r.reload("test", false).await.unwrap());
        assert!(r.reload("test", true).await.unwrap());
    }

    /// A certificate-only reload reports its own failure and clears only that: a config
    /// file that is still broken stays reported.
    #[tokio::test]
    async fn a_certificate_reload_clears_its_own_error_only() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let write_pair = || {
            let made = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
            std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
            std::fs::write(&cert, made.cert.pem()).unwrap();
        };
        write_pair();
        let path = dir.path().join("c.yaml");
        let yaml = format!(
            "tls: {{listen: '127.0.0.1:1', cert: '{}', key: '{}'}}\n",
            cert.display(),
            key.display()
        );
        std::fs::write(&path, &yaml).unwrap();
        let config = Config::load(&path).unwrap();
        let served = Arc::new(crate::tls::ServerCert::load(config.tls.as_ref().unwrap()).unwrap());
        let pool = Arc::new(Pool::new(config));
        let status = Arc::new(ReloadStatus::default());
        let r = Reloader::new(pool, path.clone(), status.clone())
            .with_server_cert(Some(served.clone()));
        let error = || {
            status
                .last_error
                .load()
                .as_deref()
                .cloned()
                .unwrap_or_default()
        };

        std::fs::write(&path, format!("{yaml}threads: 0\n")).unwrap();
        assert!(r.reload("test", false).await.is_err());
        let first = served.fingerprint();
        write_pair();
        assert!(r.reload_certificate("test").await.unwrap());
        assert_ne!(served.fingerprint(), first);
        assert!(error().contains("c.yaml:2:"), "{}", error());

        std::fs::write(&cert, "").unwrap();
        let e = r.reload_certificate("test").await.unwrap_err().to_string();
        assert!(e.contains("the running certificate stays"), "{e}");
        assert_eq!(error(), e);
        write_pair();
        assert!(r.reload_certificate("test").await.unwrap());
        assert!(status.last_error.load().is_none());
        assert_eq!(status.failures.load(Ordering::Relaxed), 2);
    }

    /// The token rule holds for the admin listener that keeps serving: a file that
    /// moves `admin.listen` to loopback and drops the token is fine as written, but the
    /// public listener stays until a restart, so the reload is refused.
    #[tokio::test]
    async fn dropping_the_token_of_a_public_admin_listener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "admin: {listen: '0.0.0.0:1', token: s3cret}\n").unwrap();
        let pool = Arc::new(Pool::new(Config::load(&path).unwrap()));
        let status = Arc::new(ReloadStatus::default());
        let r = Reloader::new(pool.clone(), path.clone(), status.clone());

        std::fs::write(&path, "admin: {listen: '127.0.0.1:2'}\n").unwrap();
        let err = r.reload("test", false).await.unwrap_err();
        assert!(
            matches!(err, ReloadError::UnsafeWithRunning { .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("admin.listen 0.0.0.0:1 is not a loopback"),
            "{msg}"
        );
        assert!(
            msg.contains("127.0.0.1:2 applies only after a restart"),
            "{msg}"
        );
        assert_eq!(status.failures.load(Ordering::Relaxed), 1);
        assert_eq!(
            pool.yaml_config().admin.token.as_ref().map(|t| t.expose()),
            Some("s3cret")
        );

        // Keeping a token while moving the listener is a normal restart-only change.
        std::fs::write(&path, "admin: {listen: '127.0.0.1:2', token: other}\n").unwrap();
        assert!(r.reload("test", false).await.unwrap());
        let applied = pool.yaml_config();
        assert_eq!(applied.admin.listen, "0.0.0.0:1".parse().unwrap());
        assert_eq!(
            applied.admin.token.as_ref().map(|t| t.expose()),
            Some("other")
        );
        let pending = status.restart_needed.load_full().unwrap();
        assert_eq!(*pending, vec!["admin.listen".to_string()]);
    }
}
