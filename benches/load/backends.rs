//! The one fast Ollama-shaped backend every system is measured against: an nginx
//! instance answering canned JSON for the non-streaming part, and this benchmark's own
//! NDJSON server (`stream_server.rs`, run as a child of the bench binary) for the
//! streaming part. Both answer corral's health probe (`/api/version`, `/api/tags`,
//! `/api/ps`) so that corral routes to them as to a real box.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::process::{free_port, Proc};
use crate::systems::{stop_tree, STARTUP};

pub const MODEL: &str = "llama3:latest";

/// A small chat request with a model, as the issue measured.
pub const CHAT_REQUEST: &str = r#"{"model":"llama3:latest","messages":[{"role":"user","content":"Say hello in five words."}],"stream":false}"#;

/// Ollama's non-streaming `/api/chat` answer, byte for byte in shape.
pub const CHAT_RESPONSE: &str = r#"{"model":"llama3:latest","created_at":"2026-11-26T00:00:00.000000000Z","message":{"role":"assistant","content":"Hello there, how are you?"},"done_reason":"stop","done":true,"total_duration":512345678,"load_duration":1234567,"prompt_eval_count":26,"prompt_eval_duration":12345678,"eval_count":8,"eval_duration":456789012}"#;

pub const VERSION: &str = r#"{"version":"0.12.0"}"#;

const DETAILS: &str = r#""digest":"365c0bd3c000a25d28ddbf732fe1c6add414de7275464c4e4d1c3b5fcb5d8ad1","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"8.0B","quantization_level":"Q4_0"}"#;

pub fn tags() -> String {
    format!(
        r#"{{"models":[{{"name":"{MODEL}","model":"{MODEL}","modified_at":"2026-11-01T00:00:00Z","size":4661224676,{DETAILS}}}]}}"#
    )
}

/// The model is loaded, so corral's residency belief matches and no prewarm fires.
pub fn ps() -> String {
    format!(
        r#"{{"models":[{{"name":"{MODEL}","model":"{MODEL}","size":6654289920,{DETAILS},"expires_at":"2099-01-01T00:00:00Z","size_vram":6654289920}}]}}"#
    )
}

/// A running backend; dropping it stops it.
pub struct Backend {
    pub addr: SocketAddr,
    proc: Proc,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        stop_tree(&mut self.proc, libc::SIGTERM);
    }
}

fn canned_nginx_config(port: u16, prefix: &Path) -> String {
    let head = crate::configs::nginx_head(prefix, 2, "off");
    let (tags, ps) = (tags(), ps());
    // Two workers, as every proxy gets; huge keep-alive limits so that no proxy's
    // upstream connections are recycled during a run.
    format!(
        "{head}    default_type application/json;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /api/chat {{ return 200 '{CHAT_RESPONSE}'; }}
        location = /api/version {{ return 200 '{VERSION}'; }}
        location = /api/tags {{ return 200 '{tags}'; }}
        location = /api/ps {{ return 200 '{ps}'; }}
        location / {{ return 404 '{{\"error\":\"not found\"}}'; }}
    }}
}}
"
    )
}

/// nginx answering canned JSON on an ephemeral loopback port, in its own directory.
pub fn start_canned_nginx(nginx: &Path) -> Result<Backend, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let port = free_port()?;
    let conf = dir.path().join("backend.conf");
    std::fs::write(&conf, canned_nginx_config(port, dir.path()))
        .map_err(|e| format!("write {}: {e}", conf.display()))?;
    let log = dir.path().join("stderr.log");
    let proc = crate::systems::spawn_nginx(nginx, &conf, dir.path(), &log, "backend nginx")?;
    Ok(Backend {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        proc,
        _dir: Some(dir),
    })
}

/// The NDJSON server: the bench binary itself with `stream-backend` (see
/// `stream_server.rs`), which prints its address once it listens.
pub fn start_stream_server(chunks: u32, interval: Duration) -> Result<Backend, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Command::new(&exe)
        .arg("stream-backend")
        .args(["--chunks", &chunks.to_string()])
        .args(["--interval-us", &interval.as_micros().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn {} stream-backend: {e}", exe.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or("stream backend: no stdout pipe")?;
    let mut proc = Proc::new(child, "stream backend", None);
    let (tx, rx) = mpsc::channel();
    // Keeps draining stdout so the server can never block on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("stream backend listening on ") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let line = rx.recv_timeout(STARTUP).map_err(|_| {
        let why = proc.check_alive().err().unwrap_or_default();
        format!("the stream backend did not print its address within {STARTUP:?} {why}")
    })?;
    let addr = line
        .parse()
        .map_err(|e| format!("stream backend printed a bad address {line:?}: {e}"))?;
    Ok(Backend {
        addr,
        proc,
        _dir: None,
    })
}
