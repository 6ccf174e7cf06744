//! Ollama's DNS-rebinding guard: a server listening on loopback only answers requests
//! whose `Host` is itself local (`localhost`, a loopback or private address, `*.local`,
//! ...), and says 403 to anything else. A proxy that forwards its client's `Host`
//! unchanged trips over this, so the sim reproduces it, and records the last `Host` it
//! saw so tests can check the rewrite.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::state::SimState;

/// Whether Ollama would serve a request carrying this `Host` (port included or not).
pub(super) fn is_allowed_host(host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let name = strip_port(&host);
    if let Ok(ip) = name.parse::<IpAddr>() {
        return ip.is_loopback() || ip.is_unspecified() || is_private(ip);
    }
    name.is_empty()
        || name == "localhost"
        || [".localhost", ".local", ".internal"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

fn strip_port(host: &str) -> &str {
    if let Some(bracketed) = host.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        // More than one colon without brackets is a bare IPv6 address, not a port.
        Some((name, _)) if !name.contains(':') => name,
        _ => host,
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        // fc00::/7, unique local addresses.
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Middleware: records the `Host` of every Ollama request and refuses foreign ones when
/// listening on loopback. `/sim` control routes are neither recorded nor guarded.
pub(super) async fn guard(
    State(sim): State<Arc<SimState>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/sim/") {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    sim.stats.record_host(&host);
    if request.headers().contains_key(header::AUTHORIZATION) {
        sim.stats.record_authorization();
    }
    if sim.listens_on_loopback && !is_allowed_host(&host) {
        return StatusCode::FORBIDDEN.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::is_allowed_host;

    #[test]
    fn local_hosts_pass_and_foreign_ones_do_not() {
        for host in [
            "localhost",
            "localhost:11434",
            "127.0.0.1:41234",
            "[::1]:11434",
            "10.0.0.7:11434",
            "box.local",
            "gpu1.internal:11434",
            "",
        ] {
            assert!(is_allowed_host(host), "{host} should be allowed");
        }
        for host in [
            "corral.example:11434",
            "8.8.8.8",
            "evil.com",
            "[2001:db8::1]:80",
        ] {
            assert!(!is_allowed_host(host), "{host} should be refused");
        }
    }
}
