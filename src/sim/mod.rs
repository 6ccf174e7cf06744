//! `corral sim`: an Ollama simulator that speaks Ollama's wire format (native `/api`
//! and OpenAI `/v1`) and behaves like its scheduler (slots, serialized loads, LRU
//! eviction, per-slot prompt cache), with switchable faults and counters under `/sim`.
//! It exists to benchmark routing and to test failure handling without GPUs.

mod api;
mod faults;
mod generation;
mod host_check;
mod inference;
mod json_style;
mod keep_alive;
mod manage;
mod models;
mod openai;
mod respond;
mod scheduler;
mod slots;
mod state;
mod stats;
mod tls;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{delete, get, head, post};
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;

pub use faults::Fault;
pub use json_style::JsonStyle;
pub use stats::{ModelCounters, StatsSnapshot};

use state::SimState;

#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    #[arg(long, default_value = "127.0.0.1:11434")]
    pub listen: SocketAddr,
    /// models on disk, comma separated (e.g. llama3,qwen2.5:7b); names without a tag mean `:latest`
    #[arg(long, value_delimiter = ',', default_value = "llama3")]
    pub models: Vec<String>,
    /// models resident (loaded) at start, comma separated; default none
    #[arg(long, value_delimiter = ',')]
    pub resident: Vec<String>,
    /// slots per loaded model (OLLAMA_NUM_PARALLEL)
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// resident models at most (OLLAMA_MAX_LOADED_MODELS); the least recently used idle one is evicted
    #[arg(long, default_value_t = 3)]
    pub max_loaded: usize,
    /// time to load a model that is not resident: 2s, 500ms, or bare seconds (3) as in
    /// corral's YAML
    #[arg(long, default_value = "2s", value_parser = crate::config::parse_duration)]
    pub load_time: Duration,
    /// generation rate
    #[arg(long, default_value_t = 50.0)]
    pub tokens_per_sec: f64,
    /// prompt evaluation rate for tokens not in the slot's cache
    #[arg(long, default_value_t = 2000.0)]
    pub prefill_tokens_per_sec: f64,
    /// tokens generated when the request does not set options.num_predict / max_tokens
    #[arg(long, default_value_t = 16)]
    pub num_predict: usize,
    /// reported by /api/version
    #[arg(long, default_value = "0.12.6")]
    pub version: String,
    /// initial fault mode, named as in POST /sim/fault {"mode": ...}, which changes it at
    /// run time (die-mid-stream is accepted for die_mid_stream, and so on)
    #[arg(long, value_enum, default_value = "none")]
    pub fault: Fault,
    /// label used in logs, default = listen address
    #[arg(long)]
    pub name: Option<String>,
    /// how to spell the JSON written: `compact` like Ollama, `spaced` like Python's
    /// json.dumps (and keys reversed), `pretty` bodies over many lines (streams spaced)
    #[arg(long, value_enum, default_value = "compact")]
    pub json_style: JsonStyle,
    /// serve HTTPS with this PEM certificate chain (and --tls-key), to stand in for a
    /// backend behind TLS
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// the PEM private key of --tls-cert
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for SimArgs {
    /// The CLI defaults, for embedding a simulator in code.
    fn default() -> SimArgs {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            sim: SimArgs,
        }
        <Defaults as clap::Parser>::parse_from(["corral-sim"]).sim
    }
}

/// A bound simulator. `bind` binds the listener (port 0 allowed) and returns before serving.
pub struct SimServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<SimState>,
    tls: Option<pingora::tls::TlsAcceptor>,
}

impl SimServer {
    pub async fn bind(args: SimArgs) -> anyhow::Result<SimServer> {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding simulator to {}", args.listen))?;
        let local_addr = listener.local_addr()?;
        let name = args.name.clone().unwrap_or_else(|| local_addr.to_string());
        let state = SimState::new(&args, name)?;
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(&crate::config::TlsConfig {
                listen: local_addr,
                cert: cert.clone(),
                key: key.clone(),
            })?),
            _ => None,
        };
        Ok(SimServer {
            listener,
            local_addr,
            state,
            tls,
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> anyhow::Result<()> {
        tracing::info!(sim = %self.state.config.name, addr = %self.local_addr, "simulator serving");
        if let Some(acceptor) = self.tls {
            tls::serve(self.listener, router(self.state), acceptor).await;
            return Ok(());
        }
        // Tokens are tiny writes; Nagle would batch them and distort time-to-first-token
        // (Go's net/http, and so Ollama, sets TCP_NODELAY too).
        let listener = self.listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "could not set TCP_NODELAY");
            }
        });
        axum::serve(listener, router(self.state))
            .await
            .context("simulator server failed")
    }
}

/// `corral sim`: bind, announce the address on stdout (tests read this line to learn
/// an ephemeral port), serve.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    crate::hangup::ignore("corral sim has no config to reload");
    let server = SimServer::bind(args).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "corral sim listening on {}://{}",
        server.scheme(),
        server.local_addr()
    )?;
    stdout.flush()?;
    drop(stdout);
    server.serve().await
}

/// Generous, because chat histories get long; blob uploads stream and are not limited.
const MAX_JSON_BODY: usize = 64 * 1024 * 1024;

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/", get(api::root))
        .route("/api/version", get(api::version))
        .route("/api/tags", get(api::tags))
        .route("/api/ps", get(api::ps))
        .route("/api/show", post(api::show))
        .route("/api/generate", post(inference::generate))
        .route("/api/chat", post(inference::chat))
        .route("/api/embed", post(inference::embed))
        .route("/api/embeddings", post(inference::embeddings))
        .route("/api/pull", post(manage::pull))
        .route("/api/push", post(manage::push))
        .route("/api/create", post(manage::create))
        .route("/api/copy", post(manage::copy))
        .route("/api/delete", delete(manage::delete))
        .route(
            "/api/blobs/{digest}",
            head(manage::blob_exists).post(manage::upload_blob),
        )
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*model}", get(openai::retrieve_model))
        .route("/sim/fault", get(faults::current).post(faults::set))
        .route("/sim/stats", get(stats::report))
        // Ollama (gin) answers unknown routes and wrong methods alike with a plain 404.
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            host_check::guard,
        ))
        .with_state(state)
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404 page not found")
}
