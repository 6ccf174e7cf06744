//! Backend writes in cluster mode: `POST /api/v1/backends` (with an optional `ttl`
//! lease), `DELETE /api/v1/backends/{name}`, `.../drain|undrain|heartbeat`, validated
//! like the single-replica API and committed as Raft commands.

// Handlers return the error answer itself (`Result<_, Response>`); it is built once
// per admin call, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::admin::{cluster_error, error, ClusterAdmin};
use super::pool_state::DynamicBackend;
use super::types::Command;
use crate::config::BackendConfig;

/// Heartbeats of a lease registered without a `ttl` renew by this much.
const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// A backend write, recognised by method and path.
pub enum BackendWrite {
    Add,
    Remove(String),
    Drain(String),
    Undrain(String),
    Heartbeat(String),
}

pub fn classify(method: &Method, path: &str) -> Option<BackendWrite> {
    let rest = path.strip_prefix("/api/v1/backends")?;
    if rest.is_empty() || rest == "/" {
        return (method == Method::POST).then_some(BackendWrite::Add);
    }
    let rest = rest.strip_prefix('/')?;
    match rest.split_once('/') {
        None if method == Method::DELETE => Some(BackendWrite::Remove(rest.to_string())),
        Some((name, action)) if method == Method::POST => {
            let name = name.to_string();
            match action {
                "drain" => Some(BackendWrite::Drain(name)),
                "undrain" => Some(BackendWrite::Undrain(name)),
                "heartbeat" => Some(BackendWrite::Heartbeat(name)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn parse_ttl(v: &Value) -> Result<Option<Duration>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_f64()
            .filter(|s| *s > 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .map(Some)
            .ok_or_else(|| format!("invalid ttl {n}")),
        // A bare number in a string (`--ttl 30` on the command line) is seconds too.
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(secs) => parse_ttl(&json!(secs)),
            Err(_) => humantime::parse_duration(s.trim())
                .map(Some)
                .map_err(|e| format!("invalid ttl '{s}': {e} (e.g. 30s)")),
        },
        _ => Err("ttl must be a duration such as \"30s\" or a number of seconds".into()),
    }
}

pub async fn backend_write(
    a: &ClusterAdmin,
    write: BackendWrite,
    body: &[u8],
) -> Result<Response, Response> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "bad_request", m);
    let yaml = a.pool.yaml_config();
    let in_yaml = |name: &str| yaml.backends.iter().any(|b| b.name == name);
    let c = a.member()?;
    let now = super::unix_ms();
    let (command, name) = match write {
        BackendWrite::Add => {
            let mut fields: Value =
                serde_json::from_slice(body).map_err(|e| bad(format!("body is not JSON: {e}")))?;
            let ttl = match fields.as_object_mut().and_then(|o| o.remove("ttl")) {
                Some(v) => parse_ttl(&v).map_err(bad)?,
                None => None,
            };
            // The same validation as a YAML entry, with the same messages.
            let b: BackendConfig =
                serde_json::from_value(fields).map_err(|e| bad(format!("invalid backend: {e}")))?;
            if in_yaml(&b.name) {
                return Err(error(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "backend '{}' is defined in the config file; change it there",
                        b.name
                    ),
                ));
            }
            let ttl_ms = ttl.map(|t| t.as_millis() as u64);
            let name = b.name.clone();
            (
                Command::UpsertBackend(DynamicBackend {
                    backend: b,
                    expires_at_ms: ttl_ms.map(|t| now + t),
                    ttl_ms,
                }),
                name,
            )
        }
        BackendWrite::Remove(name) => {
            if in_yaml(&name) {
                return Err(error(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("backend '{name}' is defined in the config file; remove it there"),
                ));
            }
            if !c.pool().backends.contains_key(&name) {
                return Err(unknown(&name));
            }
            (Command::RemoveBackend { name: name.clone() }, name)
        }
        BackendWrite::Drain(name) | BackendWrite::Undrain(name)
            if !in_yaml(&name) && !c.pool().backends.contains_key(&name) =>
        {
            return Err(unknown(&name));
        }
        BackendWrite::Drain(name) => (Command::Drain { name: name.clone() }, name),
        BackendWrite::Undrain(name) => (Command::Undrain { name: name.clone() }, name),
        BackendWrite::Heartbeat(name) => {
            let pool = c.pool();
            let Some(b) = pool.backends.get(&name) else {
                return Err(unknown(&name));
            };
            let given = if body.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                let v: Value = serde_json::from_slice(body)
                    .map_err(|e| bad(format!("body is not JSON: {e}")))?;
                parse_ttl(v.get("ttl").unwrap_or(&Value::Null)).map_err(bad)?
            };
            let ttl = given
                .map(|t| t.as_millis() as u64)
                .or(b.ttl_ms)
                .unwrap_or(DEFAULT_TTL.as_millis() as u64);
            if b.expires_at_ms.is_none() {
                return Ok(Json(json!({ "backend": name, "lease": null })).into_response());
            }
            (
                Command::RenewLease {
                    name: name.clone(),
                    expires_at_ms: now + ttl,
                },
                name,
            )
        }
    };
    let kind = Kind::of(&command);
    let in_flight = a.pool.load().get(&name).map_or(0, |b| b.state.in_flight());
    let applied = c.write(command).await.map_err(cluster_error)?;
    let existed = applied.existed;
    // The answer mirrors the single-replica API's, plus what the cluster applied.
    let view = || {
        a.pool
            .load()
            .get(&name)
            .map(|b| serde_json::to_value(crate::admin::BackendView::of(b)).unwrap_or(Value::Null))
            .unwrap_or_else(|| json!({ "name": name }))
    };
    let (status, body) = match kind {
        Kind::Upsert => (
            if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            },
            json!({ "backend": view(), "created": !existed, "replicated": true, "applied": applied }),
        ),
        Kind::Remove => (
            StatusCode::OK,
            json!({ "removed": name, "in_flight": in_flight, "replicated": true }),
        ),
        Kind::Drain(on) => {
            let mut v = view();
            v["draining"] = json!(on);
            (StatusCode::OK, json!({ "backend": v, "replicated": true }))
        }
        Kind::Renew(until) => (
            StatusCode::OK,
            json!({ "backend": name, "expires_at_ms": until, "replicated": true }),
        ),
    };
    Ok((status, Json(body)).into_response())
}

enum Kind {
    Upsert,
    Remove,
    Drain(bool),
    Renew(u64),
}

impl Kind {
    fn of(c: &Command) -> Kind {
        match c {
            Command::UpsertBackend(_) => Kind::Upsert,
            Command::RemoveBackend { .. } | Command::ExpireLeases { .. } => Kind::Remove,
            Command::Drain { .. } => Kind::Drain(true),
            Command::Undrain { .. } => Kind::Drain(false),
            Command::RenewLease { expires_at_ms, .. } => Kind::Renew(*expires_at_ms),
        }
    }
}

fn unknown(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_backend",
        format!("unknown backend '{name}'"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_backend_writes() {
        assert!(matches!(
            classify(&Method::POST, "/api/v1/backends"),
            Some(BackendWrite::Add)
        ));
        assert!(matches!(
            classify(&Method::DELETE, "/api/v1/backends/a"),
            Some(BackendWrite::Remove(n)) if n == "a"
        ));
        assert!(matches!(
            classify(&Method::POST, "/api/v1/backends/a/heartbeat"),
            Some(BackendWrite::Heartbeat(n)) if n == "a"
        ));
        assert!(classify(&Method::GET, "/api/v1/backends").is_none());
        assert!(classify(&Method::POST, "/api/v1/backendsx").is_none());
    }

    #[test]
    fn ttl_accepts_seconds_and_durations() {
        assert_eq!(parse_ttl(&json!(2)), Ok(Some(Duration::from_secs(2))));
        assert_eq!(
            parse_ttl(&json!("500ms")),
            Ok(Some(Duration::from_millis(500)))
        );
        assert_eq!(
            parse_ttl(&json!("1.5")),
            Ok(Some(Duration::from_millis(1500)))
        );
        assert_eq!(parse_ttl(&Value::Null), Ok(None));
        assert!(parse_ttl(&json!(0)).is_err());
        assert!(parse_ttl(&json!("x")).is_err());
    }
}
