//! Mutating admin endpoints: run-time backends (add, remove, heartbeat), drain and
//! undrain — carried out by the pool writer, locally or through Raft — maintenance mode
//! and "reload the config file now". All of them need the admin token when one is
//! configured.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::api_error::ApiError;
use crate::config::{parse_duration, BackendConfig};
use crate::pool::{Durability, Pool};

use super::views::BackendView;
use super::{auth, AdminState};

/// Passes when no admin token is configured or `headers` carry the right one;
/// otherwise a 401 (or a 500 when the configured token cannot be read — refusing
/// rather than opening up).
fn check_token(pool: &Pool, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = match auth::resolve(&pool.yaml_config().admin) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(()),
        Err(e) => return Err(ApiError::internal(format!("admin token unavailable: {e}"))),
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if expected.matches_bearer(given) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong admin token (Authorization: Bearer TOKEN)",
    ))
}

/// Middleware form of [`check_token`] for the mutating routes, the cluster's included.
pub(super) async fn require_token(
    State(s): State<AdminState>,
    req: Request,
    next: Next,
) -> Response {
    match check_token(&s.pool, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The backend as the pool shows it now; just its name while a replicated change has
/// not reached this replica's routing table yet.
fn view(s: &AdminState, name: &str) -> Value {
    s.pool
        .load()
        .get(name)
        .and_then(|b| serde_json::to_value(BackendView::of(b)).ok())
        .unwrap_or_else(|| json!({ "name": name }))
}

/// Adds where the change went to an answer: `persisted` on a single replica,
/// `replicated` in a cluster.
fn stamp(mut body: Value, durability: Durability) -> Json<Value> {
    match durability {
        Durability::Local { persisted } => body["persisted"] = json!(persisted),
        Durability::Replicated => body["replicated"] = json!(true),
    }
    Json(body)
}

/// A lease's `ttl`: a duration such as `"30s"`, or a number of seconds.
fn ttl(v: Option<&Value>) -> Result<Option<Duration>, ApiError> {
    let ttl = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| format!("invalid ttl {n}")),
        Some(Value::String(s)) => parse_duration(s).map_err(|e| format!("ttl: {e}")),
        Some(_) => Err("ttl must be a duration such as \"30s\" or a number of seconds".into()),
    };
    match ttl {
        Ok(t) if !t.is_zero() => Ok(Some(t)),
        Ok(_) => Err(ApiError::bad_request("ttl must be more than 0")),
        Err(e) => Err(ApiError::bad_request(e)),
    }
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))
}

/// `POST /api/v1/backends {"name","url","weight"?,"max_concurrency"?,"ttl"?}`: adds a
/// run-time backend, or updates one added earlier (idempotent: a retried call is
/// harmless).
pub(super) async fn add_backend(
    State(s): State<AdminState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut fields = json_body(&body)?;
    let lease = ttl(fields
        .as_object_mut()
        .and_then(|o| o.remove("ttl"))
        .as_ref())?;
    // The same validation as a YAML entry, with the same messages.
    let backend: BackendConfig = serde_json::from_value(fields)
        .map_err(|e| ApiError::bad_request(format!("invalid backend: {e}")))?;
    let name = backend.name.clone();
    let done = s.writer.upsert(backend, lease).await?;
    tracing::info!(backend = %name, created = done.created, durability = ?done.durability, "run-time backend added");
    let status = if done.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut body = json!({ "backend": view(&s, &name), "created": done.created });
    if done.durability == Durability::Replicated {
        body["applied"] = json!({ "existed": !done.created, "changed": done.changed });
    }
    Ok((status, stamp(body, done.durability)))
}

/// `DELETE /api/v1/backends/{name}`: removes a run-time backend. Its in-flight requests
/// finish (they hold its state); new ones go elsewhere at once.
pub(super) async fn remove_backend(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let in_flight = s.pool.load().get(&name).map_or(0, |b| b.state.in_flight());
    let durability = s.writer.remove(&name).await?;
    tracing::info!(backend = %name, in_flight, ?durability, "run-time backend removed");
    let body = json!({ "removed": name, "in_flight": in_flight });
    Ok(stamp(body, durability))
}

async fn set_draining(s: AdminState, name: String, on: bool) -> Result<Json<Value>, ApiError> {
    let durability = s.writer.set_draining(&name, on).await?;
    let mut backend = view(&s, &name);
    // A replicated flag may not have reached this replica's table yet.
    backend["draining"] = json!(on);
    tracing::info!(backend = %name, draining = on, in_flight = %backend["in_flight"], "backend drain changed");
    Ok(stamp(json!({ "backend": backend }), durability))
}

/// `POST /api/v1/backends/{name}/drain`: no new requests; in-flight ones finish.
pub(super) async fn drain(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_draining(s, name, true).await
}

pub(super) async fn undrain(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_draining(s, name, false).await
}

/// `POST /api/v1/backends/{name}/heartbeat {"ttl"?}`: renews a registration lease.
pub(super) async fn heartbeat(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let given = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        ttl(json_body(&body)?.get("ttl"))?
    };
    Ok(Json(match s.writer.heartbeat(&name, given).await? {
        Some(until) => json!({ "backend": name, "expires_at_ms": until, "replicated": true }),
        None => json!({ "backend": name, "lease": null }),
    }))
}

fn set_serving(s: &AdminState, on: bool) -> Json<Value> {
    s.pool.set_serving(on);
    if on {
        tracing::info!("serving enabled");
    } else {
        tracing::warn!("serving disabled: new proxied requests get 503 until enabled");
    }
    Json(json!({ "serving": on }))
}

/// `POST /api/v1/serving/enable`.
pub(super) async fn serving_enable(State(s): State<AdminState>) -> Json<Value> {
    set_serving(&s, true)
}

/// `POST /api/v1/serving/disable`: maintenance mode for this replica.
pub(super) async fn serving_disable(State(s): State<AdminState>) -> Json<Value> {
    set_serving(&s, false)
}

/// `POST /api/v1/reload`: re-reads the config file now through the reloader (the same
/// path as SIGHUP and file changes) and answers how it went: 200 when applied, 422 with
/// the `FILE:line:col: message` when the file is refused and the running config stays.
pub(super) async fn reload(State(s): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let Some(result) = s.reloads.reload_now().await else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_config_file",
            "this corral runs without a config file to reload (`corral demo` builds its \
             config in memory); start it with `corral serve -c FILE`",
        ));
    };
    match result {
        Ok(r) => Ok(Json(json!({
            "reloaded": true,
            "file": r.file,
            "backends": r.backends,
            "restart_needed": r.restart_needed,
        }))),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            e.code(),
            e.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_accepts_seconds_and_durations() {
        let ttl = |v: Value| ttl(Some(&v)).map_err(|e| e.message);
        assert_eq!(ttl(json!(2)), Ok(Some(Duration::from_secs(2))));
        assert_eq!(ttl(json!("500ms")), Ok(Some(Duration::from_millis(500))));
        // A bare number in a string (`--ttl 30` on the command line) is seconds too.
        assert_eq!(ttl(json!("1.5")), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(ttl(Value::Null), Ok(None));
        assert!(ttl(json!(0)).is_err());
        assert!(ttl(json!(-1)).is_err());
        assert!(ttl(json!("x"))
            .unwrap_err()
            .contains("invalid duration 'x'"));
        assert!(ttl(json!([])).is_err());
    }
}
