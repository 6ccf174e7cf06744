//! The one internal configuration model every other module reads, and its loading from
//! YAML. Validation happens while deserializing so that every error carries the
//! `file:line:col` of the offending value.

mod clients;
mod cluster;
mod de;
mod error;

pub use clients::{ClientKey, ClientsConfig, ModelGlobs, Priority};
pub use cluster::{check_peer_addr, ClusterConfig};
pub use error::ConfigError;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A parsed, validated configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Addresses of the drop-in Ollama endpoint (one address or a list).
    #[serde(
        default = "defaults::listen",
        deserialize_with = "de::one_or_many_addrs"
    )]
    pub listen: Vec<SocketAddr>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub timeouts: TimeoutConfig,
    /// Worker threads of the proxy service.
    #[serde(default = "defaults::threads", deserialize_with = "de::positive_usize")]
    pub threads: usize,
    /// Let idle worker threads take tasks from busy ones (tokio's multi-threaded
    /// runtime). Off: each thread runs its own connections, as nginx's workers do —
    /// less CPU per request; on: a thread stalled by a slow task cannot hold up the
    /// connections it accepted.
    #[serde(default)]
    pub work_stealing: bool,
    /// On SIGTERM, or after an upgrade's hand-over, the longest wait for in-flight
    /// requests before corral exits anyway.
    #[serde(
        default = "defaults::shutdown_grace",
        deserialize_with = "de::duration"
    )]
    pub shutdown_grace: Duration,
    #[serde(default, deserialize_with = "de::unique_backends")]
    pub backends: Vec<BackendConfig>,
    /// Keys clients must present on the proxy port; absent = the port is open.
    #[serde(default)]
    pub clients: Option<ClientsConfig>,
    /// Replicated pool across corral replicas (Raft); absent = a single replica.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Where run-time state (backends added through the admin API, drain flags) is
    /// kept across restarts. Absent: systemd's `$STATE_DIRECTORY`, else memory only.
    #[serde(default)]
    pub state_dir: Option<std::path::PathBuf>,
    /// The unix socket through which a running corral hands its listening sockets to
    /// `corral serve --upgrade`. Absent: `upgrade.sock` in the state directory, else a
    /// name in the temp directory derived from the config file's path.
    #[serde(default)]
    pub upgrade_sock: Option<std::path::PathBuf>,
    /// The Ollama endpoint over TLS, on a port of its own beside `listen`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How `https://` backends' certificates are checked; absent = the system's roots.
    #[serde(default)]
    pub backend_tls: Option<BackendTlsConfig>,
}

/// TLS on the proxy port. The files are PEM; they are read at start and on every
/// reload (SIGHUP, a change of the config file or of either file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Trust for `https://` backends: the proxy, the health probes and fan-out calls alike.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsConfig {
    /// PEM file of the CA certificates that sign the backends' certificates; used
    /// instead of the system's roots (for a private CA or a self-signed backend).
    pub ca: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Resolved when the file is read (`${VAR}` included).
    pub token: Option<crate::secret::Secret>,
    pub token_file: Option<std::path::PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 11435)),
            token: None,
            token_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Conversation affinity with bounded load; falls back to least-loaded.
    #[default]
    Affinity,
    LeastLoaded,
    RoundRobin,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Affinity => "affinity",
            Strategy::LeastLoaded => "least_loaded",
            Strategy::RoundRobin => "round_robin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    pub strategy: Strategy,
    /// Request header carrying an explicit session key.
    pub affinity_header: String,
    /// Add `X-Corral-Backend` / `X-Corral-Route` to proxied responses.
    pub response_headers: bool,
    /// How many other backends a request may be retried on after a connect failure.
    pub max_retries: usize,
    /// `Retry-After` sent with 503 answers.
    #[serde(deserialize_with = "de::duration")]
    pub retry_after: Duration,
    /// Affinity keeps a conversation on its box until that box's load exceeds
    /// `bound` × the average load of the candidates.
    #[serde(deserialize_with = "de::load_bound")]
    pub bound: f64,
    /// Requests that may wait in corral for a free slot (0 = no queue: send anyway).
    pub queue_size: usize,
    /// Longest wait in the queue before a 503 (clients that hang up leave at once).
    #[serde(deserialize_with = "de::duration")]
    pub queue_timeout: Duration,
    /// Load a model ahead of need on an idle box when its demand exceeds the slots of
    /// the boxes holding it (`affinity` only).
    pub prewarm: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            strategy: Strategy::default(),
            affinity_header: "X-Corral-Session".to_string(),
            response_headers: true,
            max_retries: 2,
            retry_after: Duration::from_secs(2),
            bound: 1.25,
            queue_size: 1024,
            // As long as `first_byte`: a request waits in corral as long as plain Ollama
            // would have kept it waiting, unless its client gives up first.
            queue_timeout: Duration::from_secs(600),
            prewarm: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(deserialize_with = "de::positive_duration")]
    pub interval: Duration,
    /// Deadline of one probe request.
    #[serde(deserialize_with = "de::positive_duration")]
    pub timeout: Duration,
    /// Consecutive successes that bring an unhealthy backend back.
    #[serde(deserialize_with = "de::positive_u32")]
    pub healthy_threshold: u32,
    /// Consecutive failures that take a healthy backend out.
    #[serde(deserialize_with = "de::positive_u32")]
    pub unhealthy_threshold: u32,
    /// Live traffic: consecutive failed requests (5xx, connect errors, timeouts, streams
    /// cut before `done`) that eject a backend.
    #[serde(deserialize_with = "de::positive_u32")]
    pub eject_after: u32,
    /// First ejection time; doubles with each ejection in a row, up to `eject_max`.
    #[serde(deserialize_with = "de::duration")]
    pub eject_base: Duration,
    #[serde(deserialize_with = "de::duration")]
    pub eject_max: Duration,
    /// After Ollama answers 503 "server busy", how long its capacity counts as reduced.
    #[serde(deserialize_with = "de::duration")]
    pub busy_backoff: Duration,
    /// Passive ejection never takes out more than this share of the backends that
    /// could serve a model (but always may take one); when every candidate is out,
    /// requests are routed to them anyway ("panic mode").
    #[serde(deserialize_with = "de::percent")]
    pub max_ejection_percent: u8,
}

impl HealthConfig {
    pub fn eject_policy(&self) -> crate::pool::EjectPolicy {
        crate::pool::EjectPolicy {
            after_failures: self.eject_after,
            base: self.eject_base,
            max: self.eject_max,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            eject_after: 3,
            eject_base: Duration::from_secs(5),
            eject_max: Duration::from_secs(120),
            busy_backoff: Duration::from_secs(5),
            max_ejection_percent: 50,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// TCP connect to a backend.
    #[serde(deserialize_with = "de::positive_duration")]
    pub connect: Duration,
    /// From sending the request to the first response byte: covers model load, queueing
    /// inside Ollama and prompt evaluation, so it is long.
    #[serde(deserialize_with = "de::positive_duration")]
    pub first_byte: Duration,
    /// Longest silence between two chunks of a streaming response.
    #[serde(deserialize_with = "de::positive_duration")]
    pub idle: Duration,
    /// Longest wait for a client's next request header on a kept-alive connection and
    /// between two chunks of a request body.
    #[serde(deserialize_with = "de::positive_duration")]
    pub client: Duration,
    /// The whole request header, from accept (or, on a kept-alive connection, from its
    /// first byte) to its end — not per read, so a byte a second does not keep it open.
    #[serde(deserialize_with = "de::positive_duration")]
    pub header: Duration,
    /// The whole request body, from the end of its header. Blob uploads
    /// (`/api/blobs/*`, GB-size) are exempt and bounded per read by `client` only.
    #[serde(deserialize_with = "de::positive_duration")]
    pub client_body: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            connect: Duration::from_secs(3),
            first_byte: Duration::from_secs(600),
            idle: Duration::from_secs(120),
            client: Duration::from_secs(60),
            header: Duration::from_secs(10),
            client_body: Duration::from_secs(60),
        }
    }
}

/// A backend: a YAML entry, a run-time backend from the admin API, an entry of the
/// state file and of the replicated pool. Every one is made by deserializing, so every
/// one passed the same checks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    #[serde(deserialize_with = "de::backend_name")]
    pub name: String,
    pub url: de::BackendUrl,
    /// The box's `OLLAMA_NUM_PARALLEL`: requests beyond it wait inside Ollama.
    #[serde(
        default = "defaults::max_concurrency",
        deserialize_with = "de::positive_usize"
    )]
    pub max_concurrency: usize,
    #[serde(default = "defaults::weight", deserialize_with = "de::positive_u32")]
    pub weight: u32,
}

pub use de::{parse_duration, BackendUrl};

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses configuration text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // An empty file is a valid "all defaults" config; serde_norway calls it EOF.
        let text = if text.trim().is_empty() { "{}" } else { text };
        serde_norway::from_str(text).map_err(|e| ConfigError::from_yaml(origin, e))
    }
}

mod defaults {
    use std::net::SocketAddr;
    use std::time::Duration;

    pub(super) fn listen() -> Vec<SocketAddr> {
        vec![SocketAddr::from(([0, 0, 0, 0], 11434))]
    }
    pub(super) fn threads() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
    pub(super) fn shutdown_grace() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn max_concurrency() -> usize {
        1
    }
    pub(super) fn weight() -> u32 {
        1
    }
}

#[cfg(test)]
mod tests;
